//! Scripted `tminus shell` sessions, one per bundled runbook: the real
//! binary, driven line by line as people would type, from `/deploy start`
//! to the report — sign-offs by the right people, a refusal for someone
//! outside the role, an advance refused with its reasons, a reminder fired
//! by `wait`, an abort of a second run and a rollback of a third.

use tminus::config::Config;
use tminus::domain::{Dur, PersonId, Phase, RoleId, Runbook};

use crate::helpers::{config, sqlite_db, ShellSession};

/// The person who starts the deployments.
pub(crate) const STARTER: &str = "alice";

/// Someone not in `role`.
fn outsider(config: &Config, role: &RoleId) -> PersonId {
    config
        .directory
        .people
        .keys()
        .find(|p| !config.directory.is_member(p, role))
        .cloned()
        .expect("someone outside the role")
}

fn advance_label(runbook: &Runbook, phase: &Phase) -> &'static str {
    if runbook.is_rollback_phase(&phase.id) {
        "Finish rollback"
    } else if runbook.next_phase(&phase.id).is_some() {
        "Advance to"
    } else {
        "Complete deployment"
    }
}

/// Tick every item of the current phase (one optional item marked not
/// applicable), gather its sign-offs from the role members, and advance.
pub(crate) fn walk_phase(
    s: &mut ShellSession,
    config: &Config,
    runbook: &Runbook,
    phase: &Phase,
    stop_after_deploy: bool,
) {
    s.as_person(STARTER);
    let mut skipped_one = false;
    for item in &phase.items {
        let out = if item.optional && !skipped_one {
            skipped_one = true;
            s.press("N/A: ", Some("not needed for this release"))
        } else {
            s.press("Done: ", None)
        };
        assert!(
            out.contains(&item.text),
            "{}: item {} not shown:\n{out}",
            runbook.id,
            item.id
        );
        if item.production_deploy {
            assert!(out.contains("Production deploy done — T0 is"), "{out}");
            assert!(
                s.button("Roll back").is_some(),
                "{}: Roll back offered after production",
                runbook.id
            );
            if stop_after_deploy {
                return;
            }
        }
    }
    for need in &phase.gate.signoffs {
        let role = config.directory.role(&need.role).unwrap();
        // The starter signs last, so four-eyes gates see another approver.
        let mut members = role.members.clone();
        members.sort_by_key(|m| m.as_str() == STARTER);
        for member in members.iter().take(need.quorum as usize) {
            s.as_person(member.as_str());
            let out = s.press(&format!("Sign off as {}", role.name), None);
            assert!(
                out.contains("signed off"),
                "{}: {member} for {}:\n{out}",
                runbook.id,
                role.name
            );
        }
    }
    s.as_person(STARTER);
    let out = s.press(advance_label(runbook, phase), None);
    assert!(
        !out.contains("Cannot advance"),
        "{}: {} refused:\n{out}",
        runbook.id,
        phase.id
    );
}

fn whole_run(runbook_id: &str) {
    let config = config();
    let runbook = config.runbooks.get(runbook_id).unwrap().clone();
    let db = sqlite_db();
    let mut s = ShellSession::start(&db.url, STARTER);

    // Start: root message, thread, first phase card.
    let out = s.send(&format!(
        "/deploy start checkout-api v1.2.3 --runbook {runbook_id}"
    ));
    assert!(
        out.contains("Started deployment #1 of checkout-api v1.2.3"),
        "{out}"
    );
    assert!(
        out.contains("checkout-api v1.2.3 — deployment #1, started by Alice"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Phase 1 of {}: {}",
            runbook.phases.len(),
            runbook.phases[0].title
        )),
        "{out}"
    );

    // Advancing at once is refused with every reason.
    let first = &runbook.phases[0];
    let out = s.press(advance_label(&runbook, first), None);
    assert!(out.contains("Cannot advance yet"), "{out}");
    for item in first.items.iter().filter(|i| !i.optional) {
        assert!(out.contains(&format!("not done: {}", item.text)), "{out}");
    }
    for need in &first.gate.signoffs {
        let name = config.directory.role_name(&need.role);
        assert!(
            out.contains(&format!("{name} sign-off: 0 of {}", need.quorum)),
            "{out}"
        );
    }

    // Someone outside a role of the first gated phase is refused, and told whom to ask.
    let (gated_index, gated) = runbook
        .phases
        .iter()
        .enumerate()
        .find(|(_, p)| !p.gate.is_empty())
        .expect("every bundled runbook has a sign-off gate");
    let need = &gated.gate.signoffs[0];
    let role = config.directory.role(&need.role).unwrap();
    for phase in &runbook.phases[..gated_index] {
        walk_phase(&mut s, &config, &runbook, phase, false);
    }
    let stranger = outsider(&config, &need.role);
    s.as_person(stranger.as_str());
    let out = s.press(&format!("Sign off as {}", role.name), None);
    assert!(
        out.contains(&format!(
            "Only members of {} can sign off for it; ask",
            role.name
        )),
        "{out}"
    );
    for member in &role.members {
        assert!(out.contains(config.directory.name(member)), "{out}");
    }

    // Waiting past the runbook's limit reminds the thread.
    if let Some(after) = runbook.signoff_reminder {
        let out = s.send(&format!(
            "wait {}",
            Dur::from_millis(after.millis() + 60_000)
        ));
        assert!(
            out.contains(&format!("⏰ {} has waited", gated.title)),
            "{out}"
        );
        assert!(
            out.contains(&format!("{}: 0 of {}", role.name, need.quorum)),
            "{out}"
        );
    }

    for phase in &runbook.phases[gated_index..] {
        walk_phase(&mut s, &config, &runbook, phase, false);
    }
    assert!(
        s.transcript.contains("🎉 Deployment #1 completed."),
        "{}",
        s.transcript
    );
    assert!(
        s.transcript
            .contains("Deployment report — checkout-api v1.2.3 #1"),
        "{}",
        s.transcript
    );

    // The report, again on demand.
    let report = s.send("/deploy report 1");
    assert!(
        report.contains("# Deployment report: checkout-api v1.2.3 (#1)"),
        "{report}"
    );
    assert!(report.contains("**Deployed by:** Alice"), "{report}");
    assert!(report.contains("**Status:** completed"), "{report}");
    for phase in &runbook.phases {
        assert!(report.contains(&format!("## {}", phase.title)), "{report}");
        for need in &phase.gate.signoffs {
            let name = config.directory.role_name(&need.role);
            assert!(
                report.contains(&format!("for {name}: approved")),
                "{report}"
            );
        }
    }
    assert!(report.contains("## Timeline"), "{report}");

    // A second run, aborted: not by just anyone.
    let out = s.send(&format!(
        "/deploy start checkout-api v1.2.4 --runbook {runbook_id}"
    ));
    assert!(out.contains("Started deployment #2"), "{out}");
    let bystander = config
        .directory
        .people
        .keys()
        .find(|p| {
            p.as_str() != STARTER
                && !runbook
                    .abort_roles
                    .iter()
                    .any(|r| config.directory.is_member(p, r))
        })
        .cloned()
        .expect("someone who may not abort");
    s.as_person(bystander.as_str());
    let out = s.send("/deploy abort 2 wrong build");
    assert!(out.contains("may abort this deployment"), "{out}");
    s.as_person(STARTER);
    let out = s.send("/deploy abort 2 wrong build");
    assert!(
        out.contains("🛑 Alice Moreau aborted deployment #2: wrong build"),
        "{out}"
    );
    assert!(out.contains("Status: aborted — wrong build"), "{out}");
    let list = s.send("/deploy list");
    assert!(list.contains("#2 checkout-api v1.2.4 — aborted"), "{list}");
    assert!(
        list.contains("#1 checkout-api v1.2.3 — completed"),
        "{list}"
    );

    // A third run rolled back after the production deploy.
    if let Some(rollback) = &runbook.rollback {
        let out = s.send(&format!(
            "/deploy start checkout-api v1.2.5 --runbook {runbook_id}"
        ));
        assert!(out.contains("Started deployment #3"), "{out}");
        let prod = runbook
            .phases
            .iter()
            .position(|p| p.items.iter().any(|i| i.production_deploy))
            .expect("a production deploy item");
        for phase in &runbook.phases[..prod] {
            walk_phase(&mut s, &config, &runbook, phase, false);
        }
        walk_phase(&mut s, &config, &runbook, &runbook.phases[prod], true);
        let not_allowed = config
            .directory
            .people
            .keys()
            .find(|p| {
                !rollback
                    .roles
                    .iter()
                    .any(|r| config.directory.is_member(p, r))
            })
            .cloned()
            .expect("someone who may not roll back");
        s.as_person(not_allowed.as_str());
        let out = s.press("Roll back", Some("error rate up"));
        assert!(out.contains("may roll back"), "{out}");
        let member = config.directory.role(&rollback.roles[0]).unwrap().members[0].clone();
        s.as_person(member.as_str());
        let out = s.press("Roll back", Some("error rate up"));
        assert!(out.contains("started a rollback"), "{out}");
        assert!(
            out.contains(&format!("Rollback: {}", rollback.phase.title)),
            "{out}"
        );
        walk_phase(&mut s, &config, &runbook, &rollback.phase, false);
        assert!(
            s.transcript.contains("⏪ Deployment #3 rolled back."),
            "{}",
            s.transcript
        );
        let report = s.send("/deploy report 3");
        assert!(report.contains("**Rollback:** yes"), "{report}");
        assert!(report.contains("rolled back — error rate up"), "{report}");
    }
    s.quit();
}

#[test]
fn every_bundled_runbook_runs_start_to_report_in_the_shell() {
    let config = config();
    for id in config.runbooks.keys() {
        whole_run(id);
    }
}

#[test]
fn the_shell_explains_bad_input() {
    let db = sqlite_db();
    let mut s = ShellSession::start(&db.url, STARTER);
    assert!(s
        .send("/deploy launch")
        .contains("unknown command `launch`"));
    assert!(s
        .send("/deploy start onlyservice")
        .contains("say which service and version"));
    assert!(s
        .send("/deploy start a b --runbook nope")
        .contains("There is no runbook `nope`"));
    assert!(s.send("click 99").contains("No button [99]"));
    assert!(s.send("wait soon").contains("is not a duration"));
    assert!(s.send("as nobody").contains("No person `nobody`"));
    assert!(s.send("/deploy status").contains("can't find a deployment"));
    assert!(s.send("dance").contains("Unknown command `dance`"));
    let out = s.send("/deploy help");
    assert!(out.contains("/deploy start <service> <version>"), "{out}");
    s.send("/deploy start a b");
    let reject = s
        .button("Reject as")
        .expect("a reject button on the first card");
    assert!(s
        .send(&format!("click {reject}"))
        .contains("needs a reason"));
    // Nothing of run #1 reached production: there is nothing to roll back.
    let out = s.send("/deploy rollback errors everywhere");
    assert!(
        out.contains("No open deployment in this channel has reached production"),
        "{out}"
    );
    // Severity in any case.
    let out = s.send("/deploy incident checkout 500s --severity Critical");
    assert!(out.contains("Opened incident"), "{out}");
    s.quit();
}

#[test]
fn a_line_that_is_not_utf8_is_answered_and_the_shell_goes_on() {
    use std::io::Write as _;
    let db = sqlite_db();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tminus"))
        .args(["shell", "--config"])
        .arg(crate::helpers::bot_config())
        .args(["--db", &db.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"/deploy \xff\xfe list\n/deploy help\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not valid UTF-8"), "{text}");
    assert!(text.contains("/deploy start <service> <version>"), "{text}");
}

#[test]
fn a_gate_held_only_by_the_four_eyes_rule_is_reminded() {
    let runbook = r#"name = "Four eyes"
signoff_reminder = "10m"

[[phases]]
id = "prod"
title = "Production"
signoffs = [{ role = "devops", quorum = 1 }]
four_eyes = true
  [[phases.items]]
  id = "deploy"
  text = "Deploy"
"#;
    let dir = crate::helpers::config_with("", &[("foureyes", runbook)]);
    let db = sqlite_db();
    let mut s = ShellSession::start_with(&db.url, STARTER, dir.path());
    s.send("/deploy start shop v1 --runbook foureyes");
    s.press("Done: Deploy", None);
    let out = s.press("Sign off as", None);
    assert!(!out.contains("Only members"), "alice is in DevOps: {out}");
    let out = s.send("wait 11m");
    assert!(out.contains("has waited 10m for sign-off"), "{out}");
    assert!(out.contains("Four-eyes rule"), "{out}");
    s.quit();
}

#[test]
fn a_button_keeps_its_number_for_the_whole_session() {
    let db = sqlite_db();
    let mut s = ShellSession::start(&db.url, STARTER);
    let out = s.send("/deploy start checkout-api v1.2.3 --runbook quickstart");
    assert!(out.contains("[2] Done: Release notes written"), "{out}");
    assert!(out.contains("[5] Advance to Ship it"), "{out}");
    // The card comes back edited, and again with /deploy status and a help
    // answer in between: the same buttons under the same numbers.
    let out = s.send("click 1");
    assert!(out.contains("[2] Done: Release notes written"), "{out}");
    assert!(out.contains("[5] Advance to Ship it"), "{out}");
    assert!(
        out.contains("[7] Undo: Tests pass"),
        "a new button, a new number: {out}"
    );
    s.send("/deploy help");
    let out = s.send("/deploy status 1");
    assert!(out.contains("[5] Advance to Ship it"), "{out}");
    let out = s.send("click 2");
    assert!(out.contains("Release notes written — Alice"), "{out}");
    s.quit();
}
