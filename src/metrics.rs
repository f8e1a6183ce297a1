//! What `GET /metrics` reports, in Prometheus' text format. The process
//! counts what passes through it — commands and clicks per platform, how
//! long each took to answer, deliveries, retries and failures, timer
//! lateness, pages and acknowledgements — in lock-free counters; figures
//! that belong to the database (runs by status, outbox depth, open
//! incidents) are read from it at scrape time, so every process behind a
//! load balancer reports the same totals for them.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::delivery::Settled;
use crate::domain::Platform;

/// A counter per platform.
pub struct PerPlatform([AtomicU64; 3]);

impl PerPlatform {
    const fn new() -> PerPlatform {
        PerPlatform([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)])
    }

    pub fn add(&self, platform: Platform, n: u64) {
        self.0[index(platform)].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, platform: Platform) -> u64 {
        self.0[index(platform)].load(Ordering::Relaxed)
    }
}

fn index(p: Platform) -> usize {
    match p {
        Platform::Slack => 0,
        Platform::Discord => 1,
        Platform::Shell => 2,
    }
}

const PLATFORMS: [Platform; 3] = [Platform::Slack, Platform::Discord, Platform::Shell];

/// Upper bounds of a histogram's buckets, in seconds.
const ACK_BOUNDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 3.0];
const LATENESS_BOUNDS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0];

/// A histogram of seconds with ten fixed buckets (plus `+Inf`).
pub struct Histogram {
    bounds: &'static [f64; 10],
    buckets: [AtomicU64; 10],
    count: AtomicU64,
    /// Sum in microseconds, so it can be an integer counter.
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new(bounds: &'static [f64; 10]) -> Histogram {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; 10],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything this process counts.
pub struct Metrics {
    pub commands: PerPlatform,
    pub clicks: PerPlatform,
    /// From a request reaching the engine to its answer, state committed.
    pub ack_latency: Histogram,
    pub delivered: PerPlatform,
    pub retries: PerPlatform,
    pub failures: PerPlatform,
    /// Attempts that may have reached the platform without an answer.
    pub uncertain_attempts: PerPlatform,
    /// Deliveries made after such an attempt (or a lease that ran out).
    pub uncertain_retries: PerPlatform,
    /// How those were settled, per message part.
    pub uncertain_settled: Settlements,
    pub timers_fired: AtomicU64,
    /// How late a timer fired after it fell due.
    pub timer_lateness: Histogram,
    pub pages: PerPlatform,
    pub acknowledgements: PerPlatform,
    pub reloads: Reloads,
    /// Platform requests refused before reaching the engine (signature,
    /// timestamp).
    pub refused: PerPlatform,
}

/// Uncertain deliveries settled, by platform and by how.
pub struct Settlements([[AtomicU64; 3]; 3]);

impl Settlements {
    const fn new() -> Settlements {
        Settlements([const { [const { AtomicU64::new(0) }; 3] }; 3])
    }

    pub fn add(&self, platform: Platform, how: Settled) {
        self.0[index(platform)][how as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, platform: Platform, how: Settled) -> u64 {
        self.0[index(platform)][how as usize].load(Ordering::Relaxed)
    }
}

/// Configuration reloads: how many succeeded and failed, and when each
/// last happened (Unix seconds, 0 for never).
pub struct Reloads {
    ok: AtomicU64,
    failed: AtomicU64,
    last_ok: AtomicI64,
    last_failed: AtomicI64,
}

impl Reloads {
    const fn new() -> Reloads {
        Reloads {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ok: AtomicI64::new(0),
            last_failed: AtomicI64::new(0),
        }
    }

    pub fn record(&self, ok: bool, at_unix: i64) {
        let (count, last) = if ok {
            (&self.ok, &self.last_ok)
        } else {
            (&self.failed, &self.last_failed)
        };
        count.fetch_add(1, Ordering::Relaxed);
        last.store(at_unix, Ordering::Relaxed);
    }
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    commands: PerPlatform::new(),
    clicks: PerPlatform::new(),
    ack_latency: Histogram::new(&ACK_BOUNDS),
    delivered: PerPlatform::new(),
    retries: PerPlatform::new(),
    failures: PerPlatform::new(),
    uncertain_attempts: PerPlatform::new(),
    uncertain_retries: PerPlatform::new(),
    uncertain_settled: Settlements::new(),
    timers_fired: AtomicU64::new(0),
    timer_lateness: Histogram::new(&LATENESS_BOUNDS),
    pages: PerPlatform::new(),
    acknowledgements: PerPlatform::new(),
    reloads: Reloads::new(),
    refused: PerPlatform::new(),
};

/// Figures read from the database at scrape time.
#[derive(Clone, Debug, Default)]
pub struct DbFigures {
    /// (status, how many runs)
    pub runs: Vec<(String, i64)>,
    pub outbox_depth: i64,
    pub outbox_failed: i64,
    /// (status, how many incidents)
    pub incidents: Vec<(String, i64)>,
    pub timers_pending: i64,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn per_platform(out: &mut String, name: &str, help: &str, c: &PerPlatform) {
    header(out, name, "counter", help);
    for p in PLATFORMS {
        let _ = writeln!(out, "{name}{{platform=\"{p}\"}} {}", c.get(p));
    }
}

/// The whole exposition.
pub fn render(db: &DbFigures) -> String {
    let m = &METRICS;
    let mut out = String::new();
    header(&mut out, "tminus_runs", "gauge", "Runs by status.");
    for status in crate::domain::RunStatus::ALL {
        let n = db
            .runs
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "tminus_runs{{status=\"{}\"}} {n}", status.as_str());
    }
    per_platform(
        &mut out,
        "tminus_commands_total",
        "Slash commands handled.",
        &m.commands,
    );
    per_platform(
        &mut out,
        "tminus_clicks_total",
        "Button clicks and dialog submissions handled.",
        &m.clicks,
    );
    header(
        &mut out,
        "tminus_ack_latency_seconds",
        "histogram",
        "Time from a command or click reaching the engine to its answer, with its state committed.",
    );
    m.ack_latency
        .write(&mut out, "tminus_ack_latency_seconds", "");
    header(
        &mut out,
        "tminus_outbox_depth",
        "gauge",
        "Messages waiting to be delivered.",
    );
    let _ = writeln!(out, "tminus_outbox_depth {}", db.outbox_depth);
    header(
        &mut out,
        "tminus_outbox_failed",
        "gauge",
        "Messages given up on after retries.",
    );
    let _ = writeln!(out, "tminus_outbox_failed {}", db.outbox_failed);
    per_platform(
        &mut out,
        "tminus_outbox_delivered_total",
        "Messages delivered.",
        &m.delivered,
    );
    per_platform(
        &mut out,
        "tminus_outbox_retries_total",
        "Delivery attempts that will be retried (5xx, 429, time-outs).",
        &m.retries,
    );
    per_platform(
        &mut out,
        "tminus_requests_refused_total",
        "Platform requests refused before reaching the engine: a bad or missing signature, or a timestamp outside the window.",
        &m.refused,
    );
    per_platform(
        &mut out,
        "tminus_outbox_failures_total",
        "Messages this process gave up on.",
        &m.failures,
    );
    per_platform(
        &mut out,
        "tminus_outbox_uncertain_attempts_total",
        "Delivery attempts that may have reached the platform without an answer (time-out, broken connection, server error, outcome not recorded).",
        &m.uncertain_attempts,
    );
    per_platform(
        &mut out,
        "tminus_outbox_uncertain_retries_total",
        "Deliveries retried after an uncertain attempt or a lease that ran out.",
        &m.uncertain_retries,
    );
    header(
        &mut out,
        "tminus_outbox_uncertain_settled_total",
        "counter",
        "Message parts of uncertain deliveries, by how they were settled: found on the platform, posted because it was not there, or posted without knowing (the lookup was refused).",
    );
    for p in [Platform::Slack, Platform::Discord] {
        for how in Settled::ALL {
            let _ = writeln!(
                out,
                "tminus_outbox_uncertain_settled_total{{platform=\"{p}\",outcome=\"{}\"}} {}",
                how.as_str(),
                m.uncertain_settled.get(p, how)
            );
        }
    }
    header(
        &mut out,
        "tminus_timers_pending",
        "gauge",
        "Timers not yet fired.",
    );
    let _ = writeln!(out, "tminus_timers_pending {}", db.timers_pending);
    header(
        &mut out,
        "tminus_timers_fired_total",
        "counter",
        "Timers this process fired.",
    );
    let _ = writeln!(
        out,
        "tminus_timers_fired_total {}",
        m.timers_fired.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "tminus_config_reloads_total",
        "counter",
        "Reloads of bot-config/ (SIGHUP or the shell's reload), by outcome.",
    );
    let r = &m.reloads;
    let _ = writeln!(
        out,
        "tminus_config_reloads_total{{outcome=\"ok\"}} {}\ntminus_config_reloads_total{{outcome=\"failed\"}} {}",
        r.ok.load(Ordering::Relaxed),
        r.failed.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "tminus_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When bot-config/ was last reloaded successfully (Unix time; 0 for never).",
    );
    let _ = writeln!(
        out,
        "tminus_config_last_reload_success_timestamp_seconds {}",
        r.last_ok.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "tminus_config_last_reload_failure_timestamp_seconds",
        "gauge",
        "When a reload of bot-config/ was last refused (Unix time; 0 for never).",
    );
    let _ = writeln!(
        out,
        "tminus_config_last_reload_failure_timestamp_seconds {}",
        r.last_failed.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "tminus_timer_lateness_seconds",
        "histogram",
        "How long after falling due a timer fired.",
    );
    m.timer_lateness
        .write(&mut out, "tminus_timer_lateness_seconds", "");
    header(
        &mut out,
        "tminus_incidents",
        "gauge",
        "Incidents by status.",
    );
    for status in ["triggered", "acknowledged", "resolved"] {
        let n = db
            .incidents
            .iter()
            .filter(|(s, _)| {
                crate::domain::IncidentStatus::parse(s).map(|s| s.as_str()) == Some(status)
            })
            .map(|(_, n)| n)
            .sum::<i64>();
        let _ = writeln!(out, "tminus_incidents{{status=\"{status}\"}} {n}");
    }
    per_platform(
        &mut out,
        "tminus_pages_total",
        "People paged (one per person per escalation step).",
        &m.pages,
    );
    per_platform(
        &mut out,
        "tminus_acknowledgements_total",
        "Incidents acknowledged.",
        &m.acknowledgements,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_cumulative_buckets() {
        static H: Histogram = Histogram::new(&ACK_BOUNDS);
        H.observe(0.0005);
        H.observe(0.004);
        H.observe(10.0);
        let mut out = String::new();
        H.write(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"3\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 10.0045\n"), "{out}");
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = render(&DbFigures::default());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
    }
}
