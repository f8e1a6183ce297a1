//! Button ids: how a click finds its way back to a run and an action, or
//! to an incident.
//!
//! Every id starts with one of the contract's prefixes (`checklist.`,
//! `phase.`, `signoff.`, `deploy.`, `incident.`), then the verb, then
//! colon-separated arguments: `checklist.done:42:pre:tests`. Encoding and
//! decoding live together here so they cannot drift apart. Ids stay within
//! Discord's 100 characters because phase, item and role ids are at most 32.

use crate::domain::{Action, IncidentAction, RoleId, RunId};

/// What a button press asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pressed {
    /// An action on a run.
    Run(RunId, Action),
    /// Open an incident for a run; the reason typed is its summary.
    OpenIncident { run: RunId, summary: Option<String> },
    /// Acknowledge or resolve an incident.
    Incident(i64, IncidentAction),
    /// Run the automated checks of a run's phase again ("Check again").
    Recheck { run: RunId, phase: String },
}

impl Pressed {
    /// Whether pressing it asks the person for a reason first (the run
    /// actions the domain lists, opening an incident, resolving one).
    pub fn wants_reason(&self) -> bool {
        match self {
            Pressed::Run(_, action) => action.needs_reason(),
            Pressed::OpenIncident { .. } => true,
            Pressed::Incident(_, action) => matches!(action, IncidentAction::Resolve { .. }),
            Pressed::Recheck { .. } => false,
        }
    }

    /// The same press with the reason the person typed.
    pub fn with_reason(self, reason: Option<String>) -> Pressed {
        match self {
            Pressed::Run(run, action) => Pressed::Run(run, action.with_reason(reason)),
            Pressed::OpenIncident { run, .. } => Pressed::OpenIncident {
                run,
                summary: reason,
            },
            Pressed::Incident(id, IncidentAction::Resolve { .. }) => {
                Pressed::Incident(id, IncidentAction::Resolve { note: reason })
            }
            other => other,
        }
    }

    /// The title and the question of the dialog that asks for its reason.
    pub fn reason_prompt(&self) -> (&'static str, &'static str) {
        match self {
            Pressed::OpenIncident { .. } => ("Open an incident", "What is wrong?"),
            Pressed::Incident(..) => ("Resolve the incident", "What was done?"),
            _ => ("Give a reason", "Why?"),
        }
    }
}

/// The id of a phase's "Check again" button.
pub fn recheck(run: RunId, phase: &str) -> String {
    format!("checklist.recheck:{run}:{phase}")
}

/// The id of the "Open incident" button of a run.
pub fn open_incident(run: RunId) -> String {
    format!("incident.open:{run}")
}

/// The id of an incident's Acknowledge or Resolve button.
pub fn incident(id: i64, action: &IncidentAction) -> String {
    match action {
        IncidentAction::Acknowledge => format!("incident.ack:{id}"),
        IncidentAction::Resolve { .. } => format!("incident.resolve:{id}"),
    }
}

/// What a button id stands for, with the reason the person typed. `None`
/// for ids tminus did not make.
pub fn pressed(id: &str, reason: Option<String>) -> Option<Pressed> {
    let (verb, arg) = id.split_once(':')?;
    match verb {
        "incident.open" => Some(Pressed::OpenIncident {
            run: RunId(arg.parse().ok()?),
            summary: reason,
        }),
        "incident.ack" => Some(Pressed::Incident(
            arg.parse().ok()?,
            IncidentAction::Acknowledge,
        )),
        "incident.resolve" => Some(Pressed::Incident(
            arg.parse().ok()?,
            IncidentAction::Resolve { note: reason },
        )),
        "checklist.recheck" => {
            let (run, phase) = arg.split_once(':')?;
            Some(Pressed::Recheck {
                run: RunId(run.parse().ok()?),
                phase: phase.to_string(),
            })
        }
        _ => decode(id, reason).map(|(run, action)| Pressed::Run(run, action)),
    }
}

/// The prefixes every button id starts with (the interface contract).
pub const PREFIXES: [&str; 5] = ["checklist.", "phase.", "signoff.", "deploy.", "incident."];

/// The id of the button that performs `action` on `run`.
pub fn encode(run: RunId, action: &Action) -> String {
    match action {
        Action::ItemDone { phase, item } => format!("checklist.done:{run}:{phase}:{item}"),
        Action::ItemUndo { phase, item } => format!("checklist.undo:{run}:{phase}:{item}"),
        Action::ItemNotApplicable { phase, item, .. } => {
            format!("checklist.na:{run}:{phase}:{item}")
        }
        Action::SignOff { phase, role } => format!("signoff.approve:{run}:{phase}:{role}"),
        Action::Reject { phase, role, .. } => format!("signoff.reject:{run}:{phase}:{role}"),
        Action::Advance { phase } => format!("phase.advance:{run}:{phase}"),
        Action::Abort { .. } => format!("deploy.abort:{run}"),
        Action::Rollback { .. } => format!("deploy.rollback:{run}"),
        Action::FixForward { .. } => format!("deploy.fixforward:{run}"),
        // A check's result comes from the bot; the button behind it asks
        // for the phase's checks to run again.
        Action::RecordCheck { phase, .. } => recheck(run, phase),
        // A pipeline's report comes through the API; by hand, a person
        // marks the item done.
        Action::Report { phase, item, .. } => format!("checklist.done:{run}:{phase}:{item}"),
        Action::StartPipeline { phase, item, .. } => format!("checklist.run:{run}:{phase}:{item}"),
    }
}

/// The run and action behind a button id, with the reason the person typed
/// (if the action takes one). `None` for ids tminus did not make.
pub fn decode(id: &str, reason: Option<String>) -> Option<(RunId, Action)> {
    let (verb, args) = id.split_once(':')?;
    let args: Vec<&str> = args.split(':').collect();
    let run = RunId(args.first()?.parse().ok()?);
    let s = |i: usize| args.get(i).map(|a| a.to_string());
    let action = match (verb, args.len()) {
        ("checklist.done", 3) => Action::ItemDone {
            phase: s(1)?,
            item: s(2)?,
        },
        ("checklist.run", 3) => Action::StartPipeline {
            phase: s(1)?,
            item: s(2)?,
            runner: String::new(),
        },
        ("checklist.undo", 3) => Action::ItemUndo {
            phase: s(1)?,
            item: s(2)?,
        },
        ("checklist.na", 3) => Action::ItemNotApplicable {
            phase: s(1)?,
            item: s(2)?,
            reason,
        },
        ("signoff.approve", 3) => Action::SignOff {
            phase: s(1)?,
            role: RoleId::new(s(2)?),
        },
        ("signoff.reject", 3) => Action::Reject {
            phase: s(1)?,
            role: RoleId::new(s(2)?),
            reason,
        },
        ("phase.advance", 2) => Action::Advance { phase: s(1)? },
        ("deploy.abort", 1) => Action::Abort { reason },
        ("deploy.rollback", 1) => Action::Rollback { reason },
        ("deploy.fixforward", 1) => Action::FixForward { reason },
        _ => return None,
    };
    Some((run, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants_reason(id: &str) -> bool {
        pressed(id, None).is_some_and(|p| p.wants_reason())
    }

    fn all_actions() -> Vec<Action> {
        let (p, i) = ("pre-deploy".to_string(), "tests".to_string());
        vec![
            Action::ItemDone {
                phase: p.clone(),
                item: i.clone(),
            },
            Action::ItemUndo {
                phase: p.clone(),
                item: i.clone(),
            },
            Action::ItemNotApplicable {
                phase: p.clone(),
                item: i.clone(),
                reason: Some("no".into()),
            },
            Action::SignOff {
                phase: p.clone(),
                role: RoleId::new("qa"),
            },
            Action::Reject {
                phase: p.clone(),
                role: RoleId::new("qa"),
                reason: Some("flaky".into()),
            },
            Action::Advance { phase: p },
            Action::Abort {
                reason: Some("bad".into()),
            },
            Action::Rollback {
                reason: Some("errors".into()),
            },
            Action::FixForward {
                reason: Some("a one-line fix is ready".into()),
            },
        ]
    }

    #[test]
    fn every_action_round_trips_with_a_contract_prefix() {
        for action in all_actions() {
            let id = encode(RunId(42), &action);
            assert!(PREFIXES.iter().any(|p| id.starts_with(p)), "{id}");
            let reason = match &action {
                Action::ItemNotApplicable { reason, .. }
                | Action::Reject { reason, .. }
                | Action::Abort { reason }
                | Action::Rollback { reason }
                | Action::FixForward { reason } => reason.clone(),
                _ => None,
            };
            assert_eq!(decode(&id, reason), Some((RunId(42), action)), "{id}");
        }
    }

    #[test]
    fn incident_buttons_round_trip() {
        let ack = incident(12, &IncidentAction::Acknowledge);
        let resolve = incident(12, &IncidentAction::Resolve { note: None });
        let open = open_incident(RunId(3));
        for id in [&ack, &resolve, &open] {
            assert!(id.starts_with("incident."), "{id}");
        }
        assert_eq!(
            pressed(&ack, None),
            Some(Pressed::Incident(12, IncidentAction::Acknowledge))
        );
        assert_eq!(
            pressed(&resolve, Some("fixed".into())),
            Some(Pressed::Incident(
                12,
                IncidentAction::Resolve {
                    note: Some("fixed".into())
                }
            ))
        );
        assert_eq!(
            pressed(&open, Some("500s".into())),
            Some(Pressed::OpenIncident {
                run: RunId(3),
                summary: Some("500s".into())
            })
        );
        assert!(!wants_reason(&ack));
        assert!(wants_reason(&resolve));
        assert!(wants_reason(&open));
        assert!(wants_reason("deploy.abort:1"));
        assert!(!wants_reason("phase.advance:1:pre"));
        assert_eq!(
            pressed(&recheck(RunId(7), "pre"), None),
            Some(Pressed::Recheck {
                run: RunId(7),
                phase: "pre".into()
            })
        );
        assert!(wants_reason("deploy.fixforward:1"));
        assert_eq!(pressed("incident.ack:x", None), None);
        assert_eq!(pressed("incident.nope:1", None), None);
    }

    #[test]
    fn longest_ids_fit_discord() {
        let long = "x".repeat(32);
        let id = encode(
            RunId(i64::MAX),
            &Action::ItemNotApplicable {
                phase: long.clone(),
                item: long,
                reason: None,
            },
        );
        assert!(id.len() <= 100, "{} chars", id.len());
    }

    #[test]
    fn foreign_or_mangled_ids_are_ignored() {
        for id in [
            "",
            "checklist.done",
            "checklist.done:x:pre:tests",
            "checklist.done:1:pre",
            "checklist.done:1:pre:tests:extra",
            "phase.launch:1:pre",
            "other.thing:1",
        ] {
            assert_eq!(decode(id, None), None, "{id}");
        }
    }
}
