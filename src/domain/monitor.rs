//! The judging half of monitoring, pure: when a runbook's monitoring window
//! ticks, and what a set of probe readings means under its decision matrix.
//! A probe that could not run is *unknown*, and unknown is never reported
//! as healthy.

use chrono::{DateTime, Utc};

use super::runbook::{Measure, Monitoring, Severity, SeverityRule};
use super::Dur;

/// Every tick of the window, as offsets from T0: each stage ticks every
/// `every` from the end of the stage before it up to its own `until`.
pub fn tick_offsets(monitoring: &Monitoring) -> Vec<Dur> {
    let mut ticks = Vec::new();
    let mut start = Dur::ZERO;
    for stage in &monitoring.schedule {
        let mut at = start.millis() + stage.every.millis();
        while at <= stage.until.millis() {
            ticks.push(Dur::from_millis(at));
            at += stage.every.millis();
        }
        start = stage.until;
    }
    ticks
}

/// The tick to fire at `now`: the latest one due (earlier missed ticks are
/// folded into it, one catch-up rather than a burst), and the next after it.
pub fn due_tick(
    monitoring: &Monitoring,
    t0: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let ticks: Vec<DateTime<Utc>> = tick_offsets(monitoring)
        .into_iter()
        .map(|d| t0 + d.to_chrono())
        .collect();
    let due = ticks.iter().rev().find(|t| **t <= now).copied();
    let next = ticks.iter().find(|t| **t > now).copied();
    (due, next)
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Reading {
    /// A ratio between 0 and 1.
    ErrorRate(f64),
    /// Seconds.
    Latency(f64),
    /// An HTTP health check: whether it passed, and what it saw.
    Health { ok: bool, detail: String },
    /// The probe could not run (time-out, refused, no data): why.
    Unknown(String),
}

impl Reading {
    pub fn measure(&self) -> Option<Measure> {
        match self {
            Reading::ErrorRate(_) => Some(Measure::ErrorRate),
            Reading::Latency(_) => Some(Measure::Latency),
            _ => None,
        }
    }
}

/// The verdict of one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing could be measured, or what could was fine but something could not:
    /// not confirmed healthy.
    Unknown,
    Severity(Severity),
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Severity(s) => s.as_str(),
        }
    }

    pub fn parse(s: &str) -> Level {
        Severity::parse(s).map_or(Level::Unknown, Level::Severity)
    }

    /// High or critical: time to consider rolling back.
    pub fn is_alarming(self) -> bool {
        self >= Level::Severity(Severity::High)
    }
}

/// What a tick's verdict means next to the one before it: whether the
/// thread should hear about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Worse than before, and worse than low.
    Worsened { from: Level, to: Level },
    /// Back from high or critical to something that is not.
    Recovered { from: Level, to: Level },
    /// The first tick, and already high or critical.
    AlarmingAtFirst(Level),
    /// Nothing worth a message.
    Unchanged,
}

/// How the verdict `now` compares with the previous tick's, if any.
pub fn change(before: Option<Level>, now: Level) -> Change {
    match before {
        Some(b) if now > b && now > Level::Severity(Severity::Low) => {
            Change::Worsened { from: b, to: now }
        }
        Some(b) if b.is_alarming() && !now.is_alarming() => Change::Recovered { from: b, to: now },
        None if now.is_alarming() => Change::AlarmingAtFirst(now),
        _ => Change::Unchanged,
    }
}

/// How bad a tick is, and why, line by line.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub level: Level,
    /// The matrix row that matched, if any.
    pub rule: Option<SeverityRule>,
    pub reasons: Vec<String>,
}

fn rule_matches(rule: &SeverityRule, reading: &Reading) -> bool {
    match reading {
        Reading::ErrorRate(r) => rule.error_rate_above.is_some_and(|bound| *r > bound),
        Reading::Latency(secs) => rule
            .latency_above
            .is_some_and(|bound| secs * 1000.0 > bound.millis() as f64),
        _ => false,
    }
}

/// Judge readings against a decision matrix: the most severe row any reading
/// exceeds; a failing health check is at least high; below every bound is
/// low; anything unknown keeps a fine result from counting as healthy.
pub fn judge(matrix: &[SeverityRule], readings: &[(String, Reading)]) -> Judgement {
    let mut reasons = Vec::new();
    let mut worst: Option<(Severity, Option<SeverityRule>)> = None;
    let raise = |sev: Severity,
                 rule: Option<SeverityRule>,
                 worst: &mut Option<(Severity, Option<SeverityRule>)>| {
        if worst.as_ref().is_none_or(|(w, _)| sev > *w) {
            *worst = Some((sev, rule));
        }
    };
    let mut unknown = false;
    let mut measured = false;
    for (name, reading) in readings {
        match reading {
            Reading::Unknown(why) => {
                unknown = true;
                reasons.push(format!("{name}: unknown ({why})"));
            }
            Reading::Health { ok: false, detail } => {
                measured = true;
                reasons.push(format!("{name}: failing ({detail})"));
                let rule = matrix
                    .iter()
                    .find(|r| r.severity == Severity::High)
                    .cloned();
                raise(Severity::High, rule, &mut worst);
            }
            Reading::Health { ok: true, .. } => measured = true,
            other => {
                measured = true;
                let mut rules: Vec<&SeverityRule> =
                    matrix.iter().filter(|r| rule_matches(r, other)).collect();
                rules.sort_by_key(|r| std::cmp::Reverse(r.severity));
                if let Some(rule) = rules.first() {
                    reasons.push(format!(
                        "{name}: {} is over the {:?} bound",
                        describe(other),
                        rule.severity
                    ));
                    raise(rule.severity, Some((*rule).clone()), &mut worst);
                }
            }
        }
    }
    let level = match worst {
        Some((sev, _)) if sev > Severity::Low => Level::Severity(sev),
        _ if unknown || !measured => Level::Unknown,
        _ => Level::Severity(Severity::Low),
    };
    let rule = match (&level, worst) {
        (Level::Severity(s), Some((w, rule))) if *s == w => rule,
        (Level::Severity(Severity::Low), _) => {
            matrix.iter().find(|r| r.severity == Severity::Low).cloned()
        }
        _ => None,
    };
    Judgement {
        level,
        rule,
        reasons,
    }
}

/// A reading in words: `8.0%`, `1.25 s`.
pub fn describe(reading: &Reading) -> String {
    match reading {
        Reading::ErrorRate(r) => format!("{:.1}%", r * 100.0),
        Reading::Latency(s) => format!("{s:.2} s"),
        Reading::Health { ok: true, detail } => format!("ok ({detail})"),
        Reading::Health { ok: false, detail } => format!("failing ({detail})"),
        Reading::Unknown(why) => format!("unknown ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_worse_verdict_a_recovery_or_a_first_alarm_is_news() {
        let (unknown, low, medium, high, critical) = (
            Level::Unknown,
            Level::Severity(Severity::Low),
            Level::Severity(Severity::Medium),
            Level::Severity(Severity::High),
            Level::Severity(Severity::Critical),
        );
        assert_eq!(
            change(Some(low), high),
            Change::Worsened {
                from: low,
                to: high
            }
        );
        assert_eq!(
            change(Some(high), critical),
            Change::Worsened {
                from: high,
                to: critical
            }
        );
        // Unknown to low is better knowledge, not worse health.
        assert_eq!(change(Some(unknown), low), Change::Unchanged);
        assert_eq!(change(Some(medium), medium), Change::Unchanged);
        assert_eq!(
            change(Some(high), medium),
            Change::Recovered {
                from: high,
                to: medium
            }
        );
        assert_eq!(
            change(Some(critical), unknown),
            Change::Recovered {
                from: critical,
                to: unknown
            }
        );
        assert_eq!(change(Some(critical), high), Change::Unchanged);
        assert_eq!(change(None, high), Change::AlarmingAtFirst(high));
        assert_eq!(change(None, medium), Change::Unchanged);
    }
    use crate::domain::runbook::Stage;

    fn seed_001_matrix() -> Vec<SeverityRule> {
        let rule = |severity, rate: Option<f64>, ms: Option<i64>, action: &str| SeverityRule {
            severity,
            error_rate_above: rate,
            latency_above: ms.map(Dur::from_millis),
            action: action.into(),
        };
        vec![
            rule(Severity::Critical, Some(0.05), Some(2000), "Roll back now"),
            rule(
                Severity::High,
                Some(0.02),
                Some(1000),
                "Roll back or fix forward",
            ),
            rule(
                Severity::Medium,
                Some(0.01),
                Some(500),
                "Monitor, fix forward",
            ),
            rule(Severity::Low, None, None, "Fix in the next release"),
        ]
    }

    fn window() -> Monitoring {
        let stage = |every: i64, until: i64| Stage {
            every: Dur::from_mins(every),
            until: Dur::from_mins(until),
        };
        Monitoring {
            schedule: vec![stage(5, 60), stage(15, 240), stage(30, 1440)],
            probes: vec![],
            matrix: seed_001_matrix(),
        }
    }

    #[test]
    fn the_seed_schedule_names_its_ticks_exactly() {
        let ticks = tick_offsets(&window());
        // 12 five-minute ticks to 1 h, 12 quarter-hours to 4 h, 40 half-hours to 24 h.
        assert_eq!(ticks.len(), 12 + 12 + 40);
        assert_eq!(ticks[0], Dur::from_mins(5));
        assert_eq!(ticks[11], Dur::from_mins(60));
        assert_eq!(ticks[12], Dur::from_mins(75));
        assert_eq!(ticks[23], Dur::from_mins(240));
        assert_eq!(ticks[24], Dur::from_mins(270));
        assert_eq!(*ticks.last().unwrap(), Dur::from_mins(1440));
        assert!(ticks.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_late_tick_folds_the_missed_ones_into_one() {
        let t0: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let m = |mins: i64| t0 + chrono::Duration::minutes(mins);
        assert_eq!(due_tick(&window(), t0, m(4)), (None, Some(m(5))));
        assert_eq!(due_tick(&window(), t0, m(5)), (Some(m(5)), Some(m(10))));
        // Down from minute 12 to minute 47: one catch-up at 45, then 50.
        assert_eq!(due_tick(&window(), t0, m(47)), (Some(m(45)), Some(m(50))));
        assert_eq!(due_tick(&window(), t0, m(2000)), (Some(m(1440)), None));
    }

    #[test]
    fn the_decision_matrix_picks_the_worst_row() {
        let matrix = seed_001_matrix();
        let j = |readings: Vec<(&str, Reading)>| {
            judge(
                &matrix,
                &readings
                    .into_iter()
                    .map(|(n, r)| (n.to_string(), r))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            j(vec![
                ("errors", Reading::ErrorRate(0.002)),
                ("p95", Reading::Latency(0.2))
            ])
            .level,
            Level::Severity(Severity::Low)
        );
        assert_eq!(
            j(vec![("errors", Reading::ErrorRate(0.015))]).level,
            Level::Severity(Severity::Medium)
        );
        assert_eq!(
            j(vec![
                ("errors", Reading::ErrorRate(0.03)),
                ("p95", Reading::Latency(0.7))
            ])
            .level,
            Level::Severity(Severity::High)
        );
        let critical = j(vec![
            ("errors", Reading::ErrorRate(0.08)),
            ("p95", Reading::Latency(0.3)),
        ]);
        assert_eq!(critical.level, Level::Severity(Severity::Critical));
        assert_eq!(critical.rule.unwrap().action, "Roll back now");
        assert!(
            critical.reasons[0].contains("8.0%"),
            "{:?}",
            critical.reasons
        );
        assert_eq!(
            j(vec![("p95", Reading::Latency(2.5))]).level,
            Level::Severity(Severity::Critical)
        );
        // Exactly on a bound is not over it.
        assert_eq!(
            j(vec![("errors", Reading::ErrorRate(0.05))]).level,
            Level::Severity(Severity::High)
        );
    }

    #[test]
    fn what_cannot_be_measured_is_never_healthy() {
        let matrix = seed_001_matrix();
        let r = |v: Vec<(&str, Reading)>| {
            v.into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect::<Vec<_>>()
        };
        assert_eq!(judge(&matrix, &[]).level, Level::Unknown);
        assert_eq!(
            judge(
                &matrix,
                &r(vec![("health", Reading::Unknown("timed out".into()))])
            )
            .level,
            Level::Unknown
        );
        let mixed = judge(
            &matrix,
            &r(vec![
                ("errors", Reading::ErrorRate(0.001)),
                ("health", Reading::Unknown("refused".into())),
            ]),
        );
        assert_eq!(
            mixed.level,
            Level::Unknown,
            "fine figures plus an unknown probe are not healthy"
        );
        let failing = judge(
            &matrix,
            &r(vec![(
                "health",
                Reading::Health {
                    ok: false,
                    detail: "HTTP 500".into(),
                },
            )]),
        );
        assert_eq!(failing.level, Level::Severity(Severity::High));
        // A real problem still shows even when another probe is unknown.
        let bad = judge(
            &matrix,
            &r(vec![
                ("errors", Reading::ErrorRate(0.09)),
                ("health", Reading::Unknown("refused".into())),
            ]),
        );
        assert_eq!(bad.level, Level::Severity(Severity::Critical));
    }
}
