//! On-call rotations and escalation policies as configured: who holds a
//! rotation at a given moment (overrides included), and the ladder of pages
//! an incident climbs — which step each page belongs to, how long to wait
//! before it, and whom it reaches.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Directory, Dur, PersonId, RoleId};

/// Someone holding a rotation in place of its schedule for a while
/// (`/oncall override bruno 2h primary`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub rotation: String,
    pub person: PersonId,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Order of creation: of two overrides covering one moment, the later one wins.
    pub order: i64,
}

/// Who holds a rotation now, until when, and whether an override put them there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub person: PersonId,
    pub until: DateTime<Utc>,
    pub by_override: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rotation {
    pub id: String,
    pub name: String,
    pub members: Vec<PersonId>,
    /// Local time of day at which the rotation hands over.
    pub handoff: NaiveTime,
    pub timezone: Tz,
    /// How long each member holds the rotation.
    pub period: Dur,
    /// The local date of the first hand-off; the rotation counts from it.
    pub start: NaiveDate,
}

impl Rotation {
    /// Who holds the rotation at `now`, and until when. Periods of whole days
    /// hand over at the local hand-off time, daylight saving or not.
    pub fn holder_at(&self, now: DateTime<Utc>) -> (PersonId, DateTime<Utc>) {
        const DAY: i64 = 86_400_000;
        let (turns, until) = if self.period.millis() % DAY == 0 && self.period.millis() > 0 {
            let days = self.period.millis() / DAY;
            let local = now.with_timezone(&self.timezone);
            let mut day = (local.date_naive() - self.start).num_days();
            if local.time() < self.handoff {
                day -= 1;
            }
            let turns = day.div_euclid(days);
            let next = self.start + chrono::Duration::days((turns + 1) * days);
            (turns, self.local_to_utc(next))
        } else {
            let first = self.local_to_utc(self.start);
            let period = self.period.millis().max(1);
            let turns = (now - first).num_milliseconds().div_euclid(period);
            (
                turns,
                first + chrono::Duration::milliseconds((turns + 1) * period),
            )
        };
        let index = turns.rem_euclid(self.members.len() as i64) as usize;
        (self.members[index].clone(), until)
    }

    /// Who holds the rotation at `now` once `overrides` (of any rotation;
    /// others are ignored) are applied. The latest-made override covering
    /// `now` wins; the holding ends at the earliest of its own end, the
    /// schedule's next hand-off (without an override), or the start of a
    /// newer override.
    pub fn holder(&self, overrides: &[Override], now: DateTime<Utc>) -> Holder {
        let mine: Vec<&Override> = overrides.iter().filter(|o| o.rotation == self.id).collect();
        let active = mine
            .iter()
            .filter(|o| o.from <= now && now < o.until)
            .max_by_key(|o| o.order);
        let (person, until, by_override, order) = match active {
            Some(o) => (o.person.clone(), o.until, true, o.order),
            None => {
                let (person, until) = self.holder_at(now);
                (person, until, false, i64::MIN)
            }
        };
        // A newer override starting before this holding ends cuts it short;
        // without an active override any override starting sooner does.
        let until = mine
            .iter()
            .filter(|o| o.order > order && o.from > now && o.from < until)
            .map(|o| o.from)
            .min()
            .unwrap_or(until);
        Holder {
            person,
            until,
            by_override,
        }
    }

    /// The hand-off moment on a local date (the earlier one when clocks go back).
    fn local_to_utc(&self, date: NaiveDate) -> DateTime<Utc> {
        let local = date.and_time(self.handoff);
        self.timezone
            .from_local_datetime(&local)
            .earliest()
            // A hand-off inside the spring-forward gap happens an hour later.
            .or_else(|| {
                self.timezone
                    .from_local_datetime(&(local + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc))
    }
}

/// Whom a step pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Person(PersonId),
    Role(RoleId),
    Rotation(String),
}

impl Target {
    /// How the bot file writes it: `rotation:primary`.
    pub fn key(&self) -> String {
        match self {
            Target::Person(p) => format!("person:{p}"),
            Target::Role(r) => format!("role:{r}"),
            Target::Rotation(r) => format!("rotation:{r}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// How long after the incident opened (or the previous step) this step pages.
    pub after: Dur,
    pub targets: Vec<Target>,
    pub advice: Option<String>,
    pub repeat: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub steps: Vec<Step>,
    /// After the last step, start again from this step (0-based).
    pub repeat_from: Option<usize>,
    /// An acknowledged incident neither resolved nor re-acknowledged in this
    /// time starts paging again.
    pub ack_timeout: Option<Dur>,
}

/// One page of a policy's climb: page number `seq` (from 0) belongs to
/// `step` (from 0), as its `round`-th time (from 0; steps with `repeat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub seq: u32,
    pub step: usize,
    pub round: u32,
    /// How long to wait after the previous page (or the incident opening,
    /// for the first) before this one.
    pub wait: Dur,
}

/// A person a step reaches, and through which target (`Primary on-call`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paged {
    pub person: PersonId,
    pub via: String,
}

impl Policy {
    /// The climb as a flat list: each step `repeat` times.
    fn ladder(&self) -> Vec<(usize, u32)> {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (0..s.repeat.max(1)).map(move |r| (i, r)))
            .collect()
    }

    /// Page number `seq` of the climb, or `None` once the last step has been
    /// paged (and the policy does not start over). With `repeat_from`, the
    /// climb goes on from that step after the last one; the wait before
    /// starting over is that step's `after`, or when that is zero the last
    /// step's (or the longest in the round), so starting over never pages in
    /// the same moment as the last step.
    pub fn position(&self, seq: u32) -> Option<Position> {
        let ladder = self.ladder();
        let n = ladder.len();
        let i = seq as usize;
        let (index, wrapped) = if i < n {
            (i, false)
        } else {
            let from = self.repeat_from?;
            let start = ladder.iter().position(|(s, _)| *s == from)?;
            let cycle = n - start;
            let k = (i - n) % cycle;
            (start + k, k == 0)
        };
        let (step, round) = ladder[index];
        let mut wait = self.steps[step].after;
        if wrapped && wait == Dur::ZERO {
            // Starting over must not page in the same moment as the last
            // step: wait the last step's time, or else the longest of the round's.
            let from = self.repeat_from.unwrap_or(0);
            wait = Some(self.steps.last().map_or(Dur::ZERO, |s| s.after))
                .filter(|w| *w > Dur::ZERO)
                .or_else(|| self.steps[from..].iter().map(|s| s.after).max())
                .unwrap_or(Dur::ZERO);
        }
        Some(Position {
            seq,
            step,
            round,
            wait,
        })
    }

    /// Whether a policy that starts over would page forever without waiting.
    pub fn cycle_waits(&self) -> bool {
        let Some(from) = self.repeat_from else {
            return true;
        };
        let n = self.ladder().len() as u32;
        let start = self
            .ladder()
            .iter()
            .position(|(s, _)| *s == from)
            .unwrap_or(0) as u32;
        (n..n + (n - start)).any(|seq| self.position(seq).is_some_and(|p| p.wait > Dur::ZERO))
    }
}

/// Whom a step pages at `now`: every member of its roles, the holder of
/// each rotation (overrides applied) and its people, each person once, in
/// the order the step names them.
pub fn resolve_targets(
    step: &Step,
    dir: &Directory,
    rotations: &BTreeMap<String, Rotation>,
    overrides: &[Override],
    now: DateTime<Utc>,
) -> Vec<Paged> {
    let mut out: Vec<Paged> = Vec::new();
    let mut add = |person: PersonId, via: String| {
        if !out.iter().any(|p| p.person == person) {
            out.push(Paged { person, via });
        }
    };
    for target in &step.targets {
        match target {
            Target::Person(p) => add(p.clone(), dir.name(p).to_string()),
            Target::Role(r) => {
                if let Some(role) = dir.role(r) {
                    for m in &role.members {
                        add(m.clone(), role.name.clone());
                    }
                }
            }
            Target::Rotation(id) => {
                if let Some(rotation) = rotations.get(id) {
                    add(
                        rotation.holder(overrides, now).person,
                        rotation.name.clone(),
                    );
                }
            }
        }
    }
    out
}

/// Everyone a policy could ever page: its people, its roles' members and
/// every member of its rotations (overrides included). They, and whoever
/// was paged, may acknowledge and resolve its incidents.
pub fn responders(
    policy: &Policy,
    dir: &Directory,
    rotations: &BTreeMap<String, Rotation>,
    overrides: &[Override],
) -> Vec<PersonId> {
    let mut out: Vec<PersonId> = Vec::new();
    let mut add = |p: &PersonId| {
        if !out.contains(p) {
            out.push(p.clone());
        }
    };
    for step in &policy.steps {
        for target in &step.targets {
            match target {
                Target::Person(p) => add(p),
                Target::Role(r) => dir
                    .role(r)
                    .into_iter()
                    .flat_map(|r| r.members.iter())
                    .for_each(&mut add),
                Target::Rotation(id) => {
                    if let Some(rotation) = rotations.get(id) {
                        rotation.members.iter().for_each(&mut add);
                    }
                    overrides
                        .iter()
                        .filter(|o| &o.rotation == id)
                        .for_each(|o| add(&o.person));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation() -> Rotation {
        Rotation {
            id: "primary".into(),
            name: "Primary".into(),
            members: vec![PersonId::new("a"), PersonId::new("b"), PersonId::new("c")],
            handoff: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            timezone: chrono_tz::Europe::Paris,
            period: Dur::from_mins(7 * 24 * 60),
            start: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
        }
    }

    #[test]
    fn hands_over_weekly_at_local_time() {
        let r = rotation();
        // 2026-01-05 09:00 in Paris is 08:00 UTC.
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(r.holder_at(at("2026-01-05T08:00:00Z")).0.as_str(), "a");
        assert_eq!(r.holder_at(at("2026-01-12T07:59:59Z")).0.as_str(), "a");
        assert_eq!(r.holder_at(at("2026-01-12T08:00:00Z")).0.as_str(), "b");
        assert_eq!(r.holder_at(at("2026-01-19T08:00:00Z")).0.as_str(), "c");
        assert_eq!(r.holder_at(at("2026-01-26T08:00:00Z")).0.as_str(), "a");
        let (_, until) = r.holder_at(at("2026-01-06T12:00:00Z"));
        assert_eq!(until, at("2026-01-12T08:00:00Z"));
        // Before the start the cycle runs backwards rather than panicking.
        assert_eq!(r.holder_at(at("2025-12-30T08:00:00Z")).0.as_str(), "c");
    }

    #[test]
    fn hand_off_follows_local_time_across_daylight_saving() {
        let mut r = rotation();
        r.period = Dur::from_mins(24 * 60);
        r.start = NaiveDate::from_ymd_opt(2026, 3, 28).unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // Paris moves to UTC+2 on 2026-03-29: 09:00 local is 07:00 UTC from then on.
        assert_eq!(r.holder_at(at("2026-03-28T08:00:00Z")).0.as_str(), "a");
        let (who, until) = r.holder_at(at("2026-03-29T06:59:00Z"));
        assert_eq!(who.as_str(), "a");
        assert_eq!(until, at("2026-03-29T07:00:00Z"));
        assert_eq!(r.holder_at(at("2026-03-29T07:00:00Z")).0.as_str(), "b");
    }

    #[test]
    fn weekly_hand_off_keeps_local_time_when_clocks_go_back() {
        let mut r = rotation();
        r.start = NaiveDate::from_ymd_opt(2026, 10, 19).unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // Paris leaves summer time on 2026-10-25: 09:00 local is 07:00 UTC
        // before and 08:00 UTC after.
        let (who, until) = r.holder_at(at("2026-10-20T12:00:00Z"));
        assert_eq!(who.as_str(), "a");
        assert_eq!(until, at("2026-10-26T08:00:00Z"));
        assert_eq!(r.holder_at(at("2026-10-26T07:59:59Z")).0.as_str(), "a");
        assert_eq!(r.holder_at(at("2026-10-26T08:00:00Z")).0.as_str(), "b");
        // New York leaves summer time a week later; a daily rotation there.
        r.timezone = chrono_tz::America::New_York;
        r.period = Dur::from_mins(24 * 60);
        r.start = NaiveDate::from_ymd_opt(2026, 10, 30).unwrap();
        // 2026-10-31 09:00 EDT is 13:00 UTC; 2026-11-01 09:00 EST is 14:00 UTC.
        assert_eq!(r.holder_at(at("2026-10-31T13:00:00Z")).0.as_str(), "b");
        let (who, until) = r.holder_at(at("2026-11-01T13:30:00Z"));
        assert_eq!(who.as_str(), "b");
        assert_eq!(until, at("2026-11-01T14:00:00Z"));
        assert_eq!(r.holder_at(at("2026-11-01T14:00:00Z")).0.as_str(), "c");
    }

    fn ovr(person: &str, from: &str, until: &str, order: i64) -> Override {
        Override {
            rotation: "primary".into(),
            person: PersonId::new(person),
            from: from.parse().unwrap(),
            until: until.parse().unwrap(),
            order,
        }
    }

    #[test]
    fn overrides_take_the_rotation_for_their_time() {
        let r = rotation();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let overrides = vec![
            ovr("c", "2026-01-06T10:00:00Z", "2026-01-06T14:00:00Z", 1),
            // A newer override inside the first one wins while it lasts.
            ovr("b", "2026-01-06T11:00:00Z", "2026-01-06T12:00:00Z", 2),
            // Another rotation's override is not this one's business.
            Override {
                rotation: "secondary".into(),
                ..ovr("b", "2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z", 3)
            },
        ];
        let h = r.holder(&overrides, at("2026-01-06T09:00:00Z"));
        assert_eq!(
            (h.person.as_str(), h.until, h.by_override),
            ("a", at("2026-01-06T10:00:00Z"), false)
        );
        let h = r.holder(&overrides, at("2026-01-06T10:30:00Z"));
        assert_eq!(
            (h.person.as_str(), h.until, h.by_override),
            ("c", at("2026-01-06T11:00:00Z"), true)
        );
        let h = r.holder(&overrides, at("2026-01-06T11:30:00Z"));
        assert_eq!(
            (h.person.as_str(), h.until),
            ("b", at("2026-01-06T12:00:00Z"))
        );
        let h = r.holder(&overrides, at("2026-01-06T12:00:00Z"));
        assert_eq!(
            (h.person.as_str(), h.until),
            ("c", at("2026-01-06T14:00:00Z"))
        );
        let h = r.holder(&overrides, at("2026-01-06T14:00:00Z"));
        assert_eq!(
            (h.person.as_str(), h.until, h.by_override),
            ("a", at("2026-01-12T08:00:00Z"), false)
        );
        // An override across a daylight-saving hand-off still ends when it says.
        let mut daily = rotation();
        daily.period = Dur::from_mins(24 * 60);
        daily.start = NaiveDate::from_ymd_opt(2026, 3, 28).unwrap();
        let over = vec![ovr("c", "2026-03-29T06:00:00Z", "2026-03-29T08:00:00Z", 1)];
        let h = daily.holder(&over, at("2026-03-29T07:30:00Z"));
        assert_eq!(
            (h.person.as_str(), h.until),
            ("c", at("2026-03-29T08:00:00Z"))
        );
        let h = daily.holder(&over, at("2026-03-29T08:00:00Z"));
        assert_eq!(
            (h.person.as_str(), h.until),
            ("b", at("2026-03-30T07:00:00Z"))
        );
    }

    fn step(after_mins: i64, repeat: u32) -> Step {
        Step {
            after: Dur::from_mins(after_mins),
            targets: vec![Target::Rotation("primary".into())],
            advice: None,
            repeat,
        }
    }

    fn policy(steps: Vec<Step>, repeat_from: Option<usize>) -> Policy {
        Policy {
            id: "p".into(),
            name: "P".into(),
            steps,
            repeat_from,
            ack_timeout: None,
        }
    }

    fn climb(p: &Policy, pages: u32) -> Vec<(usize, u32, i64)> {
        (0..pages)
            .map_while(|seq| p.position(seq))
            .map(|pos| (pos.step, pos.round, pos.wait.millis() / 60_000))
            .collect()
    }

    #[test]
    fn the_ladder_follows_steps_repeats_and_starts_over() {
        // Seed 003: at once, then 5, 10 and 15 minutes in.
        let seed = policy(vec![step(0, 1), step(5, 1), step(5, 1), step(5, 1)], None);
        assert_eq!(
            climb(&seed, 10),
            vec![(0, 0, 0), (1, 0, 5), (2, 0, 5), (3, 0, 5)]
        );
        // A repeated step pages `after` apart before the next one.
        let repeated = policy(vec![step(0, 1), step(10, 2)], None);
        assert_eq!(climb(&repeated, 5), vec![(0, 0, 0), (1, 0, 10), (1, 1, 10)]);
        // Starting over from step 1 after the last, whose first step waits 0:
        // the round starts over after the last step's wait instead.
        let round = policy(vec![step(0, 1), step(5, 1), step(10, 1)], Some(0));
        assert_eq!(
            climb(&round, 7),
            vec![
                (0, 0, 0),
                (1, 0, 5),
                (2, 0, 10),
                (0, 0, 10),
                (1, 0, 5),
                (2, 0, 10),
                (0, 0, 10)
            ]
        );
        assert!(round.cycle_waits());
        let from_second = policy(vec![step(0, 1), step(5, 1), step(10, 1)], Some(1));
        assert_eq!(
            climb(&from_second, 6),
            vec![
                (0, 0, 0),
                (1, 0, 5),
                (2, 0, 10),
                (1, 0, 5),
                (2, 0, 10),
                (1, 0, 5)
            ]
        );
        let forever = policy(vec![step(0, 1), step(0, 1)], Some(0));
        assert!(!forever.cycle_waits());
        // The last step waits nothing: starting over waits the round's longest.
        let last_zero = policy(vec![step(0, 1), step(5, 1), step(0, 1)], Some(0));
        assert_eq!(
            climb(&last_zero, 4),
            vec![(0, 0, 0), (1, 0, 5), (2, 0, 0), (0, 0, 5)]
        );
    }

    #[test]
    fn a_step_pages_each_person_once() {
        use crate::domain::{Person, Role};
        let mut dir = Directory::default();
        for k in ["a", "b", "c"] {
            dir.people.insert(
                PersonId::new(k),
                Person {
                    id: PersonId::new(k),
                    name: k.to_uppercase(),
                    slack: None,
                    discord: None,
                },
            );
        }
        dir.roles.insert(
            RoleId::new("leads"),
            Role {
                id: RoleId::new("leads"),
                name: "Leads".into(),
                members: vec![PersonId::new("a"), PersonId::new("c")],
            },
        );
        let mut rotations = BTreeMap::new();
        rotations.insert("primary".to_string(), rotation());
        let s = Step {
            after: Dur::ZERO,
            targets: vec![
                Target::Rotation("primary".into()),
                Target::Role(RoleId::new("leads")),
                Target::Person(PersonId::new("c")),
            ],
            advice: None,
            repeat: 1,
        };
        let now = "2026-01-06T12:00:00Z".parse().unwrap();
        let paged = resolve_targets(&s, &dir, &rotations, &[], now);
        let got: Vec<(&str, &str)> = paged
            .iter()
            .map(|p| (p.person.as_str(), p.via.as_str()))
            .collect();
        assert_eq!(got, vec![("a", "Primary"), ("c", "Leads")]);
        let over = vec![ovr("b", "2026-01-06T11:00:00Z", "2026-01-06T13:00:00Z", 1)];
        let paged = resolve_targets(&s, &dir, &rotations, &over, now);
        assert_eq!(paged[0].person.as_str(), "b");
        assert_eq!(paged.len(), 3);
        let p = policy(vec![s], None);
        let all: Vec<String> = responders(&p, &dir, &rotations, &[])
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(all, vec!["a", "b", "c"]);
    }
}
