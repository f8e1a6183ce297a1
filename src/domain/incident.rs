//! An incident and its life: opened (triggered), acknowledged, resolved —
//! and re-opened when an acknowledgement times out. The decisions here are
//! pure: given the incident, who acts and the time, they return what
//! happened or why not. Paging itself (who, when) is in [`super::oncall`];
//! the engine does the rest.
//!
//! `generation` counts the climbs of the escalation ladder: it moves on
//! whenever paging stops (acknowledge, resolve) or starts again (an
//! acknowledgement timed out), so a timer set for an older climb finds a
//! different generation and does nothing.

use chrono::{DateTime, Utc};

use super::runbook::Severity;
use super::{Directory, Dur, PersonId, Platform, RunId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncidentStatus {
    /// Open, and paging climbs the ladder until someone acknowledges.
    Triggered,
    /// Someone is on it; paging has stopped.
    Acknowledged,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Triggered => "triggered",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
        }
    }

    /// `open` is how incidents were stored before acknowledgements existed.
    pub fn parse(s: &str) -> Option<IncidentStatus> {
        match s {
            "triggered" | "open" => Some(IncidentStatus::Triggered),
            "acknowledged" => Some(IncidentStatus::Acknowledged),
            "resolved" => Some(IncidentStatus::Resolved),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: i64,
    pub run: Option<RunId>,
    pub platform: Platform,
    pub severity: Severity,
    pub summary: String,
    pub status: IncidentStatus,
    /// The escalation policy it climbs, if its runbook names one.
    pub policy: Option<String>,
    /// A person's key, or `tminus` for a critical monitoring verdict.
    pub opened_by: String,
    pub opened_at: DateTime<Utc>,
    pub generation: u32,
    /// The next page of the ladder, counted from 0 in this generation.
    pub next_seq: u32,
    pub acked_by: Option<PersonId>,
    pub acked_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<PersonId>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

/// What a person can do to an incident (its buttons).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncidentAction {
    Acknowledge,
    Resolve { note: Option<String> },
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncidentEvent {
    Acknowledged {
        by: PersonId,
    },
    /// Acknowledged again: still on it, the acknowledgement time-out starts over.
    Reacknowledged {
        by: PersonId,
    },
    Resolved {
        by: PersonId,
        note: String,
    },
    /// The acknowledgement timed out: paging starts again from the first step.
    Reopened,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IncidentRefusal {
    #[error("incident #{0} is already resolved")]
    Resolved(i64),
    #[error("only the people its escalation pages can {action} incident #{id}: {}", .names.join(", "))]
    NotResponder {
        action: &'static str,
        id: i64,
        names: Vec<String>,
    },
    #[error("resolving needs a note: what was done")]
    NoteRequired,
}

/// An acknowledgement this soon after the last one is the same click again.
pub const REACK_AFTER: Dur = Dur::from_const_secs(60);

impl Incident {
    /// A new incident of `run`, triggered and not yet paged; the store gives
    /// it its id.
    pub fn open(
        run: &super::Run,
        severity: Severity,
        summary: &str,
        policy: Option<String>,
        opened_by: &str,
        now: DateTime<Utc>,
    ) -> Incident {
        Incident {
            id: 0,
            run: Some(run.id),
            platform: run.platform,
            severity,
            summary: summary.to_string(),
            status: IncidentStatus::Triggered,
            policy,
            opened_by: opened_by.to_string(),
            opened_at: now,
            generation: 0,
            next_seq: 0,
            acked_by: None,
            acked_at: None,
            resolved_by: None,
            resolved_at: None,
            resolution: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.status != IncidentStatus::Resolved
    }

    /// Decide an action by `who`; `responders` are those allowed to act
    /// (everyone the policy could page, and everyone paged). Changes `self`
    /// and returns what happened; nothing for a repeated acknowledgement.
    pub fn decide(
        &mut self,
        action: IncidentAction,
        who: &PersonId,
        responders: &[PersonId],
        dir: &Directory,
        now: DateTime<Utc>,
    ) -> Result<Vec<IncidentEvent>, IncidentRefusal> {
        if self.status == IncidentStatus::Resolved {
            return Err(IncidentRefusal::Resolved(self.id));
        }
        let verb = match action {
            IncidentAction::Acknowledge => "acknowledge",
            IncidentAction::Resolve { .. } => "resolve",
        };
        if !responders.contains(who) {
            return Err(IncidentRefusal::NotResponder {
                action: verb,
                id: self.id,
                names: responders.iter().map(|p| dir.name(p).to_string()).collect(),
            });
        }
        match action {
            IncidentAction::Acknowledge => {
                let again = self.status == IncidentStatus::Acknowledged;
                if again
                    && self
                        .acked_at
                        .is_some_and(|at| now - at < REACK_AFTER.to_chrono())
                {
                    return Ok(Vec::new());
                }
                self.status = IncidentStatus::Acknowledged;
                self.acked_by = Some(who.clone());
                self.acked_at = Some(now);
                self.generation += 1;
                self.next_seq = 0;
                Ok(vec![if again {
                    IncidentEvent::Reacknowledged { by: who.clone() }
                } else {
                    IncidentEvent::Acknowledged { by: who.clone() }
                }])
            }
            IncidentAction::Resolve { note } => {
                let note = note
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .ok_or(IncidentRefusal::NoteRequired)?;
                self.status = IncidentStatus::Resolved;
                self.resolved_by = Some(who.clone());
                self.resolved_at = Some(now);
                self.resolution = Some(note.clone());
                self.generation += 1;
                Ok(vec![IncidentEvent::Resolved {
                    by: who.clone(),
                    note,
                }])
            }
        }
    }

    /// The acknowledgement time-out of generation `generation` fired: if
    /// nobody acted since, paging starts again from the first step.
    pub fn ack_timed_out(&mut self, generation: u32) -> Vec<IncidentEvent> {
        if self.status != IncidentStatus::Acknowledged || self.generation != generation {
            return Vec::new();
        }
        self.status = IncidentStatus::Triggered;
        self.generation += 1;
        self.next_seq = 0;
        vec![IncidentEvent::Reopened]
    }

    /// Whether a page timer of `generation` for page `seq` is still the
    /// incident's next page.
    pub fn expects_page(&self, generation: u32, seq: u32) -> bool {
        self.status == IncidentStatus::Triggered
            && self.generation == generation
            && self.next_seq == seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident() -> Incident {
        Incident {
            id: 7,
            run: Some(RunId(1)),
            platform: Platform::Shell,
            severity: Severity::Critical,
            summary: "checkout down".into(),
            status: IncidentStatus::Triggered,
            policy: Some("go-live-critical".into()),
            opened_by: "alice".into(),
            opened_at: at(0),
            generation: 0,
            next_seq: 2,
            acked_by: None,
            acked_at: None,
            resolved_by: None,
            resolved_at: None,
            resolution: None,
        }
    }

    fn at(mins: i64) -> DateTime<Utc> {
        "2026-11-23T09:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(mins)
    }

    fn p(k: &str) -> PersonId {
        PersonId::new(k)
    }

    #[test]
    fn acknowledging_stops_the_climb_and_only_responders_may() {
        let dir = Directory::default();
        let responders = [p("alice"), p("bruno")];
        let mut i = incident();
        let refused = i
            .decide(
                IncidentAction::Acknowledge,
                &p("zoe"),
                &responders,
                &dir,
                at(7),
            )
            .unwrap_err();
        assert!(refused.to_string().contains("alice, bruno"), "{refused}");
        assert_eq!(i.status, IncidentStatus::Triggered);

        let events = i
            .decide(
                IncidentAction::Acknowledge,
                &p("bruno"),
                &responders,
                &dir,
                at(7),
            )
            .unwrap();
        assert_eq!(events, vec![IncidentEvent::Acknowledged { by: p("bruno") }]);
        assert_eq!(i.status, IncidentStatus::Acknowledged);
        assert_eq!(i.generation, 1);
        // The page timer of the old climb no longer matches.
        assert!(!i.expects_page(0, 2));
        // A double click changes nothing; a later acknowledgement restarts the time-out.
        assert_eq!(
            i.decide(
                IncidentAction::Acknowledge,
                &p("bruno"),
                &responders,
                &dir,
                at(7)
            )
            .unwrap(),
            vec![]
        );
        let again = i
            .decide(
                IncidentAction::Acknowledge,
                &p("alice"),
                &responders,
                &dir,
                at(20),
            )
            .unwrap();
        assert_eq!(
            again,
            vec![IncidentEvent::Reacknowledged { by: p("alice") }]
        );
        assert_eq!(i.generation, 2);
    }

    #[test]
    fn a_timed_out_acknowledgement_reopens_only_its_own_generation() {
        let dir = Directory::default();
        let responders = [p("bruno")];
        let mut i = incident();
        i.decide(
            IncidentAction::Acknowledge,
            &p("bruno"),
            &responders,
            &dir,
            at(7),
        )
        .unwrap();
        assert_eq!(i.ack_timed_out(0), vec![]);
        assert_eq!(i.ack_timed_out(1), vec![IncidentEvent::Reopened]);
        assert_eq!(i.status, IncidentStatus::Triggered);
        assert!(i.expects_page(2, 0));
        assert_eq!(i.ack_timed_out(1), vec![]);
    }

    #[test]
    fn resolving_needs_a_note_and_closes_for_good() {
        let dir = Directory::default();
        let responders = [p("bruno")];
        let mut i = incident();
        assert_eq!(
            i.decide(
                IncidentAction::Resolve {
                    note: Some("  ".into())
                },
                &p("bruno"),
                &responders,
                &dir,
                at(9)
            ),
            Err(IncidentRefusal::NoteRequired)
        );
        let events = i
            .decide(
                IncidentAction::Resolve {
                    note: Some("rolled back".into()),
                },
                &p("bruno"),
                &responders,
                &dir,
                at(9),
            )
            .unwrap();
        assert_eq!(
            events,
            vec![IncidentEvent::Resolved {
                by: p("bruno"),
                note: "rolled back".into()
            }]
        );
        assert!(!i.is_open());
        assert_eq!(
            i.decide(
                IncidentAction::Acknowledge,
                &p("bruno"),
                &responders,
                &dir,
                at(10)
            ),
            Err(IncidentRefusal::Resolved(7))
        );
    }
}
