//! On-call rotations and escalation policies as configured: who holds a
//! rotation at a given moment, and the ladder of pages an incident climbs.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Dur, PersonId, RoleId};

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
}
