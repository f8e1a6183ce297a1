//! What the engine shows of incidents: the incident's card in the incidents
//! channel (edited in place as it is paged, acknowledged and resolved), the
//! direct message of a page, their Acknowledge and Resolve buttons, and the
//! "Open incident" button of a run. Platform-neutral ([`Card`]).

use crate::chat::buttons;
use crate::chat::{Button, ButtonStyle, Card};
use crate::domain::{Directory, Incident, IncidentAction, IncidentStatus, Run};
use crate::store::PageRecord;

use super::cards::{hhmm, run_label};

/// The "Open incident" button of a run; the reason asked for is the summary.
pub fn open_incident_button(run: &Run) -> Button {
    Button::new(
        buttons::open_incident(run.id),
        "Open incident",
        ButtonStyle::Danger,
    )
}

fn incident_button(id: i64, action: IncidentAction, label: &str, style: ButtonStyle) -> Button {
    Button::new(buttons::incident(id, &action), label, style)
}

/// An incident's Acknowledge and Resolve buttons, while it is open.
pub fn incident_buttons(incident: &Incident) -> Vec<Button> {
    let ack = match incident.status {
        IncidentStatus::Triggered => "Acknowledge",
        IncidentStatus::Acknowledged => "Still on it",
        IncidentStatus::Resolved => return Vec::new(),
    };
    vec![
        incident_button(
            incident.id,
            IncidentAction::Acknowledge,
            ack,
            ButtonStyle::Primary,
        ),
        incident_button(
            incident.id,
            IncidentAction::Resolve { note: None },
            "Resolve",
            ButtonStyle::Default,
        ),
    ]
}

/// The incident's one card in the incidents channel, edited in place:
/// status, the run, who was paged and when, who acknowledged, the resolution.
pub fn incident_card(
    incident: &Incident,
    run: Option<&Run>,
    policy_name: Option<&str>,
    pages: &[PageRecord],
    dir: &Directory,
) -> Card {
    let status = match incident.status {
        IncidentStatus::Triggered => "🔴 triggered",
        IncidentStatus::Acknowledged => "🟡 acknowledged",
        IncidentStatus::Resolved => "🟢 resolved",
    };
    let mut card = Card::new(format!(
        "🚨 Incident #{} · {} — {}",
        incident.id,
        incident.severity.as_str(),
        incident.summary
    ));
    let opener = if incident.opened_by == "tminus" {
        "tminus (monitoring)".to_string()
    } else {
        dir.name(&crate::domain::PersonId::new(incident.opened_by.as_str()))
            .to_string()
    };
    let mut lines = vec![
        format!("Status: {status}"),
        format!("Opened by {opener} at {}", hhmm(incident.opened_at)),
    ];
    if let Some(run) = run {
        lines.push(format!(
            "Deployment: {} (thread in {})",
            run_label(run),
            run.channel
        ));
    }
    lines.push(match policy_name {
        Some(p) => format!("Escalation: {p}"),
        None => "Escalation: none (the runbook names no policy; nobody is paged)".into(),
    });
    // After a re-open the last acknowledgement no longer holds.
    if let (Some(by), Some(at), false) = (
        &incident.acked_by,
        incident.acked_at,
        incident.status == IncidentStatus::Triggered,
    ) {
        lines.push(format!("Acknowledged by {} at {}", dir.name(by), hhmm(at)));
    }
    if let (Some(by), Some(at)) = (&incident.resolved_by, incident.resolved_at) {
        lines.push(format!(
            "Resolved by {} at {}: {}",
            dir.name(by),
            hhmm(at),
            incident.resolution.as_deref().unwrap_or("")
        ));
    }
    card = card.section(None, lines);
    if !pages.is_empty() {
        let paged: Vec<String> = pages
            .iter()
            .map(|p| {
                format!(
                    "{} {} ({}) — step {}",
                    hhmm(p.at),
                    dir.name(&p.person),
                    p.via,
                    p.step + 1
                )
            })
            .collect();
        card = card.section(Some("Paged"), paged);
    }
    card.buttons = incident_buttons(incident);
    card
}

/// The direct message that pages one person.
pub fn page_card(
    incident: &Incident,
    run: Option<&Run>,
    step: usize,
    steps: usize,
    via: &str,
    advice: Option<&str>,
    dir: &Directory,
) -> Card {
    let mut lines = vec![format!(
        "You are paged as {via} (escalation step {} of {steps}).",
        step + 1
    )];
    match (incident.status, &incident.acked_by, &incident.resolved_by) {
        (IncidentStatus::Resolved, _, Some(by)) => lines.push(format!(
            "Now resolved by {}: {}",
            dir.name(by),
            incident.resolution.as_deref().unwrap_or("")
        )),
        (IncidentStatus::Acknowledged, Some(by), _) => {
            lines.push(format!("Now acknowledged by {}.", dir.name(by)))
        }
        _ => {}
    }
    if let Some(run) = run {
        lines.push(format!("Deployment: {}", run_label(run)));
    }
    if let Some(a) = advice {
        lines.push(format!("Advice: {a}"));
    }
    if incident.status == IncidentStatus::Triggered {
        lines.push("Acknowledge to stop the escalation.".into());
    }
    let mut card = Card::new(format!(
        "📟 Incident #{} · {} — {}",
        incident.id,
        incident.severity.as_str(),
        incident.summary
    ))
    .section(None, lines);
    card.buttons = incident_buttons(incident);
    card
}
