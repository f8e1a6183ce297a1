//! Percentiles and the closing table: every figure of the run, per
//! database, beside its target with PASS or MISS. Targets are set for
//! SQLite on this kind of machine; PostgreSQL figures are shown beside them
//! for comparison and judged only where a figure names a target of its own
//! for PostgreSQL. Tables are Markdown, so a run's output
//! can go into BENCHMARKS.md as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::setup::DbKind;

/// Latencies of one batch of requests or events.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut v: Vec<Duration>) -> Latencies {
        v.sort();
        Latencies(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1), nearest rank.
    pub fn q(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }

    pub fn sum(&self) -> Duration {
        self.0.iter().sum()
    }

    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A bound a figure must keep.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn holds(self, v: f64) -> bool {
        match self {
            Target::AtMost(b) => v <= b,
            Target::AtLeast(b) => v >= b,
        }
    }

    fn show(self, unit: &str) -> String {
        match self {
            Target::AtMost(b) => format!("≤ {} {unit}", num(b)),
            Target::AtLeast(b) => format!("≥ {} {unit}", num(b)),
        }
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

struct Figure {
    unit: &'static str,
    /// The target SQLite's figure is judged by.
    target: Option<Target>,
    /// Targets for other databases, judged too.
    other_targets: BTreeMap<&'static str, Target>,
    values: BTreeMap<&'static str, f64>,
}

/// Every figure of the run, in the order first recorded.
#[derive(Default)]
pub struct Report {
    order: Vec<String>,
    figures: BTreeMap<String, Figure>,
    notes: Vec<String>,
}

impl Report {
    pub fn add(
        &mut self,
        name: impl Into<String>,
        db: DbKind,
        value: f64,
        unit: &'static str,
        target: Option<Target>,
    ) {
        let name = name.into();
        if !self.figures.contains_key(&name) {
            self.order.push(name.clone());
        }
        let f = self.figures.entry(name).or_insert(Figure {
            unit,
            target,
            other_targets: BTreeMap::new(),
            values: BTreeMap::new(),
        });
        f.values.insert(db.name(), value);
    }

    /// A figure with a target for `db` itself (PostgreSQL included).
    pub fn add_judged(
        &mut self,
        name: impl Into<String>,
        db: DbKind,
        value: f64,
        unit: &'static str,
        target: Option<Target>,
    ) {
        let name = name.into();
        self.add(name.clone(), db, value, unit, None);
        let (f, Some(t)) = (self.figures.get_mut(&name).expect("just added"), target) else {
            return;
        };
        match db {
            DbKind::Sqlite => f.target = Some(t),
            _ => {
                f.other_targets.insert(db.name(), t);
            }
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        println!("  note: {note}");
        self.notes.push(note);
    }

    /// The closing table; returns how many targets were missed.
    pub fn print(&self) -> usize {
        let mut missed = 0;
        println!("\n## Summary\n");
        println!("| figure | SQLite | PostgreSQL | target | verdict |");
        println!("| --- | ---: | ---: | --- | --- |");
        for name in &self.order {
            let f = &self.figures[name];
            let show = |db: &str| {
                f.values
                    .get(db)
                    .map_or("–".to_string(), |v| format!("{} {}", num(*v), f.unit))
            };
            let mut judged: Vec<(&str, Target)> =
                f.target.map(|t| ("sqlite", t)).into_iter().collect();
            judged.extend(f.other_targets.iter().map(|(db, t)| (*db, *t)));
            let mut verdicts = Vec::new();
            let mut targets = Vec::new();
            for (db, t) in &judged {
                let Some(v) = f.values.get(db) else { continue };
                let pass = t.holds(*v);
                missed += usize::from(!pass);
                let word = if pass { "PASS" } else { "MISS" };
                if *db == "sqlite" {
                    verdicts.push(word.to_string());
                    targets.push(t.show(f.unit));
                } else {
                    verdicts.push(format!("{db}: {word}"));
                    targets.push(format!("{db}: {}", t.show(f.unit)));
                }
            }
            println!(
                "| {name} | {} | {} | {} | {} |",
                show("sqlite"),
                show("postgres"),
                targets.join("; "),
                verdicts.join("; "),
            );
        }
        if !self.notes.is_empty() {
            println!("\nNotes:");
            for n in &self.notes {
                println!("- {n}");
            }
        }
        missed
    }
}
