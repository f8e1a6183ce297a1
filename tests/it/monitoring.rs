//! Monitoring windows through the shell and its virtual clock: the seed
//! schedule's ticks, exactly; failing probes never reported healthy; and a
//! SIGKILL in the middle of a window losing and doubling nothing.

use tminus::domain::monitor::tick_offsets;
use tminus::store::Store;

use crate::helpers::{config, sqlite_db, ShellSession};
use crate::shell::{walk_phase, STARTER};

/// Walk a run of `runbook` up to its production deploy.
fn to_production(s: &mut ShellSession, runbook_id: &str) {
    let config = config();
    let runbook = config.runbooks[runbook_id].clone();
    let out = s.send(&format!(
        "/deploy start checkout-api v5.0.0 --runbook {runbook_id}"
    ));
    assert!(out.contains("Started deployment #1"), "{out}");
    let prod = runbook
        .phases
        .iter()
        .position(|p| p.items.iter().any(|i| i.production_deploy))
        .unwrap();
    for phase in &runbook.phases[..prod] {
        walk_phase(s, &config, &runbook, phase, false);
    }
    walk_phase(s, &config, &runbook, &runbook.phases[prod], true);
}

#[tokio::test]
async fn the_seed_window_ticks_exactly_as_it_says_and_its_end_leaves_the_run_open() {
    let config = config();
    let monitoring = config.runbooks["web-service"].monitoring.clone().unwrap();
    let expected = tick_offsets(&monitoring).len();
    assert_eq!(
        expected,
        6 + 47,
        "every 5 minutes to 30 minutes, then every 30 to 24 hours"
    );
    let db = sqlite_db();
    let mut s = ShellSession::start(&db.url, STARTER);
    to_production(&mut s, "web-service");
    let out = s.send("wait 24h");
    for n in 1..=expected {
        assert!(
            out.contains(&format!("(check {n} of {expected})")),
            "tick {n} not shown"
        );
    }
    assert!(
        out.contains("Monitoring T+5m (check 1 of"),
        "the first tick is five minutes after T0"
    );
    assert!(
        out.contains("Monitoring T+1d (check 53 of 53)"),
        "the last is at 24 hours"
    );
    // Nothing answers the probes here: the verdict is never healthy.
    assert!(!out.contains("Verdict: LOW"), "{out}");
    assert!(
        !out.contains("Deployment #1 completed."),
        "the window's end does not complete the run: {out}"
    );
    assert!(
        out.contains("the window is over after 53 checks"),
        "the thread is told: {out}"
    );
    assert!(
        out.contains("Deployment #1 is not complete yet. Still needed:"),
        "{out}"
    );
    assert!(
        out.contains("This is the final verdict") || out.contains("this is the final verdict"),
        "the monitoring card shows the window ended: {out}"
    );
    s.quit();

    let store = Store::connect(&db.url).await.unwrap();
    let run = crate::helpers::shell_run(&store, 1).await;
    assert_eq!(store.ticks_for_run(run.id).await.unwrap().len(), expected);
    assert_eq!(run.status.as_str(), "active", "still open, in its phase");
    assert_eq!(run.end_reason, None);
    let report = crate::helpers::engine(&db)
        .await
        .0
        .report(&run)
        .await
        .unwrap();
    assert!(report.contains("## Monitoring"), "{report}");
    assert_eq!(
        report.matches("| high |").count() + report.matches("| unknown |").count(),
        expected,
        "{report}"
    );
}

#[tokio::test]
async fn a_sigkill_mid_window_loses_no_tick_and_doubles_none() {
    let config = config();
    let expected = tick_offsets(config.runbooks["quickstart"].monitoring.as_ref().unwrap()).len();
    let db = sqlite_db();
    let mut s = ShellSession::start(&db.url, STARTER);
    to_production(&mut s, "quickstart");
    let out = s.send("wait 12m");
    assert!(out.contains(&format!("(check 2 of {expected})")), "{out}");
    s.kill();

    // Back after a while: one catch-up tick for the missed stretch, then on time.
    let mut s = ShellSession::start(&db.url, STARTER);
    let out = s.send("wait 1h");
    s.quit();
    assert!(
        out.contains(&format!("(check {expected} of {expected})")) || out.contains("completed"),
        "{out}"
    );
    let store = Store::connect(&db.url).await.unwrap();
    let run = crate::helpers::shell_run(&store, 1).await;
    let ticks = store.ticks_for_run(run.id).await.unwrap();
    assert_eq!(ticks.len(), expected, "every tick recorded once");
    // A tick whose effects were applied twice would write its audit entry
    // twice (the audit log has no key that could stop it).
    let audit = store.audit_for_run(run.id).await.unwrap();
    let applied = audit.iter().filter(|a| a.action == "monitor.tick").count();
    assert_eq!(applied, expected, "no tick applied twice");
}
