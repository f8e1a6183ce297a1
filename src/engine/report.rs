//! The deployment log of a run as Markdown: what seed 004 asks a team to
//! fill in by hand — date, who deployed, version, every item with who and
//! when, sign-offs, aborts and rollbacks, incidents with their pages —
//! plus the audit timeline.

use std::fmt::Write;

use crate::domain::monitor::{describe, Reading};
use crate::domain::Incident;
use crate::domain::{Directory, ItemState, ReportStatus, Run, RunStatus, Runbook, Verdict};
use crate::store::{AuditEntry, PageRecord, TickRecord};

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Escape what would break a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(
    run: &Run,
    runbook: &Runbook,
    dir: &Directory,
    audit: &[AuditEntry],
    ticks: &[TickRecord],
    incidents: &[(Incident, Vec<PageRecord>)],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Deployment report: {} {} (#{})",
        run.service, run.version, run.number
    );
    let _ = writeln!(md);
    let _ = writeln!(md, "- **Date:** {}", when(run.started_at));
    let _ = writeln!(md, "- **Deployed by:** {}", dir.name(&run.started_by));
    let _ = writeln!(md, "- **Service:** {}", run.service);
    let _ = writeln!(md, "- **Version:** {}", run.version);
    let _ = writeln!(md, "- **Environment:** {}", run.env);
    let _ = writeln!(md, "- **Runbook:** {} ({})", runbook.name, runbook.label());
    let status = match (&run.status, &run.end_reason) {
        (RunStatus::Aborted, Some(r)) => format!("aborted — {r}"),
        (RunStatus::RolledBack | RunStatus::RollingBack, Some(r)) => {
            format!("{} — {r}", run.status.label())
        }
        (s, _) => s.label().to_string(),
    };
    let _ = writeln!(md, "- **Status:** {status}");
    let _ = writeln!(
        md,
        "- **Production deploy (T0):** {}",
        run.t0.map_or("not reached".to_string(), when)
    );
    let rolled_back = matches!(run.status, RunStatus::RollingBack | RunStatus::RolledBack);
    let _ = writeln!(
        md,
        "- **Rollback:** {}",
        if rolled_back { "yes" } else { "no" }
    );
    if let Some(end) = run.ended_at {
        let minutes = (end - run.started_at).num_minutes();
        let _ = writeln!(md, "- **Finished:** {} ({minutes} min)", when(end));
    }

    for phase in run.reached_phases(runbook) {
        let _ = writeln!(md);
        let _ = writeln!(md, "## {}", phase.title);
        let _ = writeln!(md);
        let _ = writeln!(md, "| Item | State | By | When |");
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for item in &phase.items {
            let (state, by, at) = match run.item_state(&phase.id, &item.id) {
                ItemState::Pending if item.optional => {
                    ("skipped (optional)".to_string(), "", String::new())
                }
                ItemState::Pending => match run.report(&phase.id, &item.id) {
                    Some(r) if r.status != ReportStatus::Done => (
                        format!("not done ({} in {})", r.status.as_str(), r.by),
                        "",
                        when(r.at),
                    ),
                    _ => ("not done".to_string(), "", String::new()),
                },
                ItemState::Done { by, at } => {
                    let logs = run
                        .report(&phase.id, &item.id)
                        .filter(|r| r.status == ReportStatus::Done && r.by == by.as_str())
                        .and_then(|r| r.url.as_deref())
                        .map_or(String::new(), |u| format!(" ([logs]({u}))"));
                    (format!("done{logs}"), dir.name(by), when(*at))
                }
                ItemState::NotApplicable { by, at, reason } => {
                    (format!("not applicable: {reason}"), dir.name(by), when(*at))
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(&item.text),
                cell(&state),
                cell(by),
                at
            );
        }
        let signoffs: Vec<_> = run
            .signoffs
            .iter()
            .filter(|s| s.phase == phase.id)
            .collect();
        if !signoffs.is_empty() {
            let _ = writeln!(md);
            let _ = writeln!(md, "Sign-offs:");
            for s in signoffs {
                let verdict = match &s.verdict {
                    Verdict::Approved => "approved".to_string(),
                    Verdict::Rejected { reason } => format!("rejected: {reason}"),
                };
                let _ = writeln!(
                    md,
                    "- {} for {}: {verdict} ({})",
                    dir.name(&s.person),
                    dir.role_name(&s.role),
                    when(s.at)
                );
            }
        }
    }

    if !ticks.is_empty() {
        let _ = writeln!(md);
        let _ = writeln!(md, "## Monitoring");
        let _ = writeln!(md);
        let _ = writeln!(md, "| When | Verdict | Readings |");
        let _ = writeln!(md, "| --- | --- | --- |");
        for t in ticks {
            let readings: Vec<(String, Reading)> =
                serde_json::from_str(&t.readings).unwrap_or_default();
            let text: Vec<String> = readings
                .iter()
                .map(|(n, r)| format!("{n}: {}", describe(r)))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                when(t.tick_at),
                t.level,
                cell(&text.join("; "))
            );
        }
    }

    if !incidents.is_empty() {
        let _ = writeln!(md);
        let _ = writeln!(md, "## Incidents");
        for (i, pages) in incidents {
            let _ = writeln!(md);
            let _ = writeln!(
                md,
                "### #{} {} — {}",
                i.id,
                i.severity.as_str(),
                cell(&i.summary)
            );
            let _ = writeln!(md);
            let _ = writeln!(md, "- **Opened:** {}", when(i.opened_at));
            let _ = writeln!(md, "- **Status:** {}", i.status.as_str());
            for p in pages {
                let _ = writeln!(
                    md,
                    "- **Paged:** {} ({}, step {}) at {}",
                    dir.name(&p.person),
                    p.via,
                    p.step + 1,
                    when(p.at)
                );
            }
            if let (Some(by), Some(at)) = (&i.acked_by, i.acked_at) {
                let _ = writeln!(md, "- **Acknowledged:** {} at {}", dir.name(by), when(at));
            }
            if let (Some(by), Some(at)) = (&i.resolved_by, i.resolved_at) {
                let _ = writeln!(
                    md,
                    "- **Resolved:** {} at {}: {}",
                    dir.name(by),
                    when(at),
                    i.resolution.as_deref().unwrap_or("")
                );
            }
        }
    }

    let _ = writeln!(md);
    let _ = writeln!(md, "## Timeline");
    let _ = writeln!(md);
    for e in audit {
        let who = if e.actor == "tminus" {
            "tminus".to_string()
        } else {
            dir.name(&crate::domain::PersonId::new(e.actor.as_str()))
                .to_string()
        };
        let _ = writeln!(
            md,
            "- {} — {who} ({}): {}",
            when(e.at),
            e.platform,
            e.detail
        );
    }
    md
}
