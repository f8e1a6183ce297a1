//! What the engine shows: a run's root message, its phase cards, notices in
//! its thread, reminders, the monitoring card and the report. Platform-neutral ([`Card`]);
//! adapters draw them.

use chrono::{DateTime, Utc};

use crate::chat::buttons::encode;
use crate::chat::{Button, ButtonStyle, Card};
use crate::domain::{
    Action, Directory, ItemReport, ItemState, Phase, ReportStatus, Run, RunStatus, Runbook,
};

pub fn hhmm(t: DateTime<Utc>) -> String {
    t.format("%H:%M UTC").to_string()
}

/// "payments-api v2.4.0 #42"
pub fn run_label(run: &Run) -> String {
    format!("{} {} #{}", run.service, run.version, run.number)
}

const MAX_LABEL_TEXT: usize = 40;

fn short(text: &str) -> String {
    crate::chat::clip(text, MAX_LABEL_TEXT)
}

fn button(run: &Run, action: Action, label: String, style: ButtonStyle) -> Button {
    Button::new(encode(run.id, &action), label, style)
}

/// The message in the deployments channel that the run's thread hangs from.
pub fn root_card(run: &Run, runbook: &Runbook, dir: &Directory) -> Card {
    let mut card = Card::new(format!(
        "{} {} — deployment #{}, started by {}, runbook {}",
        run.service,
        run.version,
        run.number,
        dir.name(&run.started_by),
        runbook.id
    ));
    let mut lines = vec![format!("Environment: {}", run.env)];
    let state = match run.status {
        RunStatus::Active | RunStatus::RollingBack => {
            let title = runbook
                .phase(&run.phase)
                .map_or(run.phase.as_str(), |p| p.title.as_str());
            format!("Status: {} — {}", run.status.label(), title)
        }
        _ => match &run.end_reason {
            Some(reason) => format!("Status: {} — {reason}", run.status.label()),
            None => format!("Status: {}", run.status.label()),
        },
    };
    lines.push(state);
    card.mentions.push(run.started_by.clone());
    card.section(None, lines)
}

/// The card of one phase, with buttons if it is the run's current phase.
pub fn phase_card(run: &Run, runbook: &Runbook, phase: &Phase, dir: &Directory) -> Card {
    let current = run.status.is_open() && run.phase == phase.id;
    let title = match runbook.position(&phase.id) {
        Some(n) => format!(
            "{} · Phase {n} of {}: {}",
            run_label(run),
            runbook.phases.len(),
            phase.title
        ),
        None => format!("{} · Rollback: {}", run_label(run), phase.title),
    };
    let mut card = Card::new(title);
    let mut buttons = Vec::new();

    let mut lines = Vec::new();
    for item in &phase.items {
        let optional = if item.optional { " (optional)" } else { "" };
        let report = run.report(&phase.id, &item.id);
        let logs = |r: &ItemReport| {
            r.url
                .as_ref()
                .map_or(String::new(), |u| format!(" — logs: {u}"))
        };
        let line = match run.item_state(&phase.id, &item.id) {
            ItemState::Pending => match report {
                Some(r) if r.status == ReportStatus::Running => format!(
                    "🔄 {}{optional} — running in {} since {}{}{}",
                    item.text,
                    r.by,
                    hhmm(r.at),
                    r.note.as_ref().map_or(String::new(), |n| format!(", {n}")),
                    logs(r)
                ),
                Some(r) if r.status == ReportStatus::Failed => format!(
                    "❌ {}{optional} — failed in {}, {}{}{}",
                    item.text,
                    r.by,
                    hhmm(r.at),
                    r.note.as_ref().map_or(String::new(), |n| format!(": {n}")),
                    logs(r)
                ),
                _ => format!("⬜ {}{optional}", item.text),
            },
            ItemState::Done { by, at } => format!(
                "✅ {}{optional} — {}, {}{}",
                item.text,
                dir.name(by),
                hhmm(*at),
                report
                    .filter(|r| r.status == ReportStatus::Done && r.by == by.as_str())
                    .map_or(String::new(), logs)
            ),
            ItemState::NotApplicable { by, at, reason } => format!(
                "➖ {}{optional} — not applicable: {reason} ({}, {})",
                item.text,
                dir.name(by),
                hhmm(*at)
            ),
        };
        lines.push(line);
        if let Some(check) = &item.check {
            let result = match run.check(&phase.id, &item.id) {
                Some(c) if c.passed => format!("✅ passed: {}, at {}", c.detail, hhmm(c.at)),
                Some(c) => format!("❌ failing: {}, at {}", c.detail, hhmm(c.at)),
                None if current => "⏳ running".to_string(),
                None => "not run".to_string(),
            };
            lines.push(format!(
                "    automated check: GET {} expects {} — {result}",
                check.url, check.expect_status
            ));
        }
        if current {
            let (phase_id, item_id) = (phase.id.clone(), item.id.clone());
            match run.item_state(&phase.id, &item.id) {
                ItemState::Pending => {
                    let running = report.is_some_and(|r| r.status == ReportStatus::Running);
                    if item.pipeline.is_some() && !running {
                        buttons.push(button(
                            run,
                            Action::StartPipeline {
                                phase: phase_id.clone(),
                                item: item_id.clone(),
                                runner: String::new(),
                            },
                            format!("Run: {}", short(&item.text)),
                            ButtonStyle::Primary,
                        ));
                    }
                    buttons.push(button(
                        run,
                        Action::ItemDone {
                            phase: phase_id.clone(),
                            item: item_id.clone(),
                        },
                        format!("Done: {}", short(&item.text)),
                        ButtonStyle::Primary,
                    ));
                    if item.optional {
                        buttons.push(button(
                            run,
                            Action::ItemNotApplicable {
                                phase: phase_id,
                                item: item_id,
                                reason: None,
                            },
                            format!("N/A: {}", short(&item.text)),
                            ButtonStyle::Default,
                        ));
                    }
                }
                _ => buttons.push(button(
                    run,
                    Action::ItemUndo {
                        phase: phase_id,
                        item: item_id,
                    },
                    format!("Undo: {}", short(&item.text)),
                    ButtonStyle::Default,
                )),
            }
        }
    }
    card = card.section(Some("Checklist"), lines);

    if !phase.gate.is_empty() {
        let mut lines = Vec::new();
        for p in run.gate_progress(phase) {
            let role = dir.role_name(&p.role);
            let mut line = format!("{role}: {} of {}", p.approved.len(), p.quorum);
            let mut who: Vec<String> = p
                .approved
                .iter()
                .map(|a| format!("✅ {}", dir.name(a)))
                .collect();
            who.extend(
                p.rejected
                    .iter()
                    .map(|(r, why)| format!("❌ {} ({why})", dir.name(r))),
            );
            if !who.is_empty() {
                line.push_str(" — ");
                line.push_str(&who.join(", "));
            }
            lines.push(line);
            if current {
                buttons.push(button(
                    run,
                    Action::SignOff {
                        phase: phase.id.clone(),
                        role: p.role.clone(),
                    },
                    format!("Sign off as {}", short(role)),
                    ButtonStyle::Primary,
                ));
                buttons.push(button(
                    run,
                    Action::Reject {
                        phase: phase.id.clone(),
                        role: p.role.clone(),
                        reason: None,
                    },
                    format!("Reject as {}", short(role)),
                    ButtonStyle::Danger,
                ));
            }
        }
        if phase.gate.four_eyes {
            lines.push(format!(
                "Four-eyes rule: {} cannot be the only approver",
                dir.name(&run.started_by)
            ));
        }
        card = card.section(Some("Sign-offs"), lines);
    }

    if current {
        let next = if run.status == RunStatus::RollingBack {
            "Finish rollback".to_string()
        } else {
            match runbook.next_phase(&phase.id) {
                Some(next) => format!("Advance to {}", short(&next.title)),
                None => "Complete deployment".to_string(),
            }
        };
        buttons.push(button(
            run,
            Action::Advance {
                phase: phase.id.clone(),
            },
            next,
            ButtonStyle::Primary,
        ));
        if phase.items.iter().any(|i| i.check.is_some()) {
            buttons.push(Button::new(
                crate::chat::buttons::recheck(run.id, &phase.id),
                "Check again",
                ButtonStyle::Default,
            ));
        }
        if run.status == RunStatus::Active && run.t0.is_some() && runbook.rollback.is_some() {
            buttons.push(button(
                run,
                Action::Rollback { reason: None },
                "Roll back".into(),
                ButtonStyle::Danger,
            ));
        }
        if run.t0.is_some() && run.status.is_open() {
            buttons.push(super::incident_cards::open_incident_button(run));
        }
        buttons.push(button(
            run,
            Action::Abort { reason: None },
            "Abort".into(),
            ButtonStyle::Danger,
        ));
        card.footer = Some(format!(
            "Started by {} · runbook {}",
            dir.name(&run.started_by),
            runbook.label()
        ));
    } else {
        card.footer = Some(match run.status {
            RunStatus::Active | RunStatus::RollingBack => "Phase finished".to_string(),
            status => format!("Deployment {}", status.label()),
        });
    }
    card.buttons = buttons;
    card
}

/// A one-line message in the run's thread.
pub fn notice(text: impl Into<String>) -> Card {
    Card::new(text)
}

/// What a sign-off reminder says: the roles still missing and whom to ask.
pub fn reminder_card(
    run: &Run,
    phase: &Phase,
    dir: &Directory,
    waited: crate::domain::Dur,
) -> Card {
    let mut card = Card::new(format!(
        "⏰ {} has waited {waited} for sign-off",
        phase.title
    ));
    let mut lines = Vec::new();
    for p in run.gate_progress(phase).iter().filter(|p| !p.is_met()) {
        let role = dir.role_name(&p.role);
        let mut line = format!("{role}: {} of {}", p.approved.len(), p.quorum);
        for (who, why) in &p.rejected {
            line.push_str(&format!(" — rejected by {}: {why}", dir.name(who)));
        }
        line.push_str(&format!(" — ask {}", dir.member_names(&p.role).join(", ")));
        lines.push(line);
        if let Some(role) = dir.role(&p.role) {
            for m in &role.members {
                if !p.approved.contains(m) && !card.mentions.contains(m) {
                    card.mentions.push(m.clone());
                }
            }
        }
    }
    let four_eyes: Vec<String> = run
        .gate_unmet(phase, dir)
        .into_iter()
        .filter(|u| u.starts_with("four-eyes rule"))
        .collect();
    if !four_eyes.is_empty() {
        // Only the starter has signed: anyone else in the gate's roles may.
        lines.extend(four_eyes.iter().map(|u| super::capitalise(u)));
        for need in &phase.gate.signoffs {
            for m in dir.role(&need.role).map_or(&[][..], |r| &r.members[..]) {
                if *m != run.started_by && !card.mentions.contains(m) {
                    card.mentions.push(m.clone());
                }
            }
        }
    }
    card.section(None, lines)
}

/// The run's monitoring card, edited in place at every tick: each reading,
/// what changed since the last tick, the verdict and its advice.
#[allow(clippy::too_many_arguments)]
pub fn monitor_card(
    run: &Run,
    runbook: &Runbook,
    judgement: &crate::domain::monitor::Judgement,
    readings: &[(String, crate::domain::monitor::Reading)],
    previous: &[(String, crate::domain::monitor::Reading)],
    since_t0: chrono::Duration,
    tick: usize,
    total: usize,
) -> Card {
    use crate::domain::monitor::{describe, Reading};
    let offset = crate::domain::Dur::from_millis(since_t0.num_milliseconds());
    let mut card = Card::new(format!(
        "{} · Monitoring T+{offset} (check {tick} of {total})",
        run_label(run)
    ));
    let lines = readings
        .iter()
        .map(|(name, r)| {
            let change = previous
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, p)| match (p, r) {
                    (Reading::ErrorRate(a), Reading::ErrorRate(b))
                    | (Reading::Latency(a), Reading::Latency(b))
                        if a != b =>
                    {
                        Some(format!(
                            " ({} from {})",
                            if b > a { "▲" } else { "▼" },
                            describe(p)
                        ))
                    }
                    _ => None,
                });
            format!("{name}: {}{}", describe(r), change.unwrap_or_default())
        })
        .collect();
    card = card.section(Some("Readings"), lines);
    let mut verdict = vec![format!(
        "Verdict: {}",
        judgement.level.as_str().to_uppercase()
    )];
    if let Some(rule) = &judgement.rule {
        verdict.push(format!("Action: {}", rule.action));
    }
    verdict.extend(judgement.reasons.iter().cloned());
    if let Some(m) = &runbook.monitoring {
        for rule in &m.matrix {
            let mut bounds = Vec::new();
            if let Some(r) = rule.error_rate_above {
                bounds.push(format!("errors over {:.1}%", r * 100.0));
            }
            if let Some(l) = rule.latency_above {
                bounds.push(format!("latency over {l}"));
            }
            if !bounds.is_empty() {
                verdict.push(format!(
                    "{}: {}",
                    rule.severity.as_str(),
                    bounds.join(" or ")
                ));
            }
        }
    }
    card = card.section(Some("Verdict"), verdict);
    if judgement.level.is_alarming()
        && run.status == RunStatus::Active
        && runbook.rollback.is_some()
    {
        card.buttons.push(button(
            run,
            Action::Rollback { reason: None },
            "Roll back".into(),
            ButtonStyle::Danger,
        ));
        if judgement.level
            < crate::domain::monitor::Level::Severity(crate::domain::runbook::Severity::Critical)
        {
            card.buttons.push(button(
                run,
                Action::FixForward { reason: None },
                "Fix forward".into(),
                ButtonStyle::Default,
            ));
            // A critical verdict opens one by itself.
            card.buttons
                .push(super::incident_cards::open_incident_button(run));
        }
    }
    card
}

/// A run's Markdown report as a card, line by line (adapters split it over
/// as many messages as their platform needs), with the run page's link.
pub fn report_card(run: &Run, markdown: &str, link: Option<&str>) -> Card {
    let mut card = Card::new(format!("Deployment report — {}", run_label(run)))
        .section(None, markdown.lines().map(str::to_string).collect());
    card.footer = link.map(|l| format!("Run page: {l}"));
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::monitor::{judge, Reading};

    #[test]
    fn the_monitoring_card_offers_the_seed_actions_by_severity() {
        let config = crate::config::Config::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bot-config"),
        )
        .unwrap();
        let runbook = &config.runbooks["web-service"];
        let matrix = &runbook.monitoring.as_ref().unwrap().matrix;
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let mut run = Run::start(
            runbook,
            crate::domain::Platform::Shell,
            "#d",
            "api",
            "v1",
            "prod",
            &crate::domain::PersonId::new("alice"),
            now,
        );
        run.t0 = Some(now);
        let card_for = |rate: f64| {
            let readings = vec![("errors".to_string(), Reading::ErrorRate(rate))];
            let j = judge(matrix, &readings);
            let previous = vec![("errors".to_string(), Reading::ErrorRate(0.001))];
            monitor_card(
                &run,
                runbook,
                &j,
                &readings,
                &previous,
                chrono::Duration::minutes(5),
                1,
                53,
            )
        };
        let labels = |c: &Card| {
            c.buttons
                .iter()
                .map(|b| b.label.clone())
                .collect::<Vec<_>>()
        };
        let critical = card_for(0.08);
        assert_eq!(labels(&critical), vec!["Roll back"]);
        assert!(
            critical.plain_text().contains("errors: 8.0% (▲ from 0.1%)"),
            "{}",
            critical.plain_text()
        );
        assert!(critical.plain_text().contains("Verdict: CRITICAL"));
        assert_eq!(
            labels(&card_for(0.03)),
            vec!["Roll back", "Fix forward", "Open incident"]
        );
        assert!(card_for(0.001).buttons.is_empty());
        assert!(critical.buttons.iter().all(|b| b.id.starts_with("deploy.")));
    }
}
