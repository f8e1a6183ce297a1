//! Button ids: how a click finds its way back to a run and an action.
//!
//! Every id starts with one of the contract's prefixes (`checklist.`,
//! `phase.`, `signoff.`, `deploy.`, `incident.`), then the verb, then
//! colon-separated arguments: `checklist.done:42:pre:tests`. Encoding and
//! decoding live together here so they cannot drift apart. Ids stay within
//! Discord's 100 characters because phase, item and role ids are at most 32.

use crate::domain::{Action, RoleId, RunId};

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

/// Whether the action behind a button needs a reason typed in.
pub fn needs_reason(action: &Action) -> bool {
    matches!(
        action,
        Action::ItemNotApplicable { .. }
            | Action::Reject { .. }
            | Action::Abort { .. }
            | Action::Rollback { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
