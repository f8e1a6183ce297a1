//! A runbook as the engine uses it: validated, with every reference resolved.
//! The configuration loader builds these from `runbooks/*.toml`; nothing here
//! can be malformed once built (phase and item ids are unique, quorums fit
//! their roles, durations are positive).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Dur, RoleId};

/// Which text of a runbook file a runbook was built from: the SHA-256 of
/// the text, and the text. A run pins the version it started with; the same
/// text is the same version on every process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunbookVersion {
    /// Lowercase hex SHA-256 of `source`.
    pub hash: String,
    pub source: Arc<str>,
}

impl RunbookVersion {
    pub fn of(source: &str) -> RunbookVersion {
        RunbookVersion {
            hash: crate::hex::encode(&Sha256::digest(source.as_bytes())),
            source: Arc::from(source),
        }
    }

    /// The first 8 hex digits, as people see a version.
    pub fn short(&self) -> &str {
        short_hash(&self.hash)
    }
}

/// The first 8 hex digits of a version hash.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..8).unwrap_or(hash)
}

/// A deployment playbook: ordered phases, an optional rollback phase, the
/// monitoring plan and the escalation policy to page with.
#[derive(Clone, Debug, PartialEq)]
pub struct Runbook {
    pub id: String,
    pub name: String,
    pub description: String,
    pub phases: Vec<Phase>,
    pub rollback: Option<Rollback>,
    /// Roles whose members may abort a run; the person who started it may always.
    pub abort_roles: Vec<RoleId>,
    /// How long a phase may wait on its sign-offs before the thread is reminded.
    pub signoff_reminder: Option<Dur>,
    pub monitoring: Option<Monitoring>,
    pub escalation: Option<String>,
    /// The text this runbook was built from.
    pub version: RunbookVersion,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub id: String,
    pub title: String,
    pub items: Vec<Item>,
    pub gate: Gate,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: String,
    pub text: String,
    pub optional: bool,
    pub check: Option<HttpCheck>,
    /// Marking this item done records T0, the moment production got the release.
    pub production_deploy: bool,
    /// A pipeline a "Run" button starts, when the item has one.
    pub pipeline: Option<PipelineStep>,
}

/// An item a pipeline carries out: the hook that starts it, who may, and
/// how long it has to report back.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineStep {
    /// A hook of the bot file (`[hooks.NAME]`).
    pub hook: String,
    pub roles: Vec<RoleId>,
    pub timeout: Dur,
}

/// How long a pipeline has to report back unless the item says otherwise.
pub const DEFAULT_PIPELINE_TIMEOUT: Dur = Dur::from_const_secs(30 * 60);

/// An automated HTTP check attached to an item.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpCheck {
    pub url: String,
    pub expect_status: u16,
    pub timeout: Dur,
    pub body_contains: Option<String>,
}

/// The sign-offs a phase needs before it may be left.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Gate {
    pub signoffs: Vec<RoleQuorum>,
    /// The person who started the run cannot be the only approver.
    pub four_eyes: bool,
}

impl Gate {
    pub fn is_empty(&self) -> bool {
        self.signoffs.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RoleQuorum {
    pub role: RoleId,
    pub quorum: u32,
}

/// The phase a run switches to when someone rolls it back, and who may.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollback {
    pub roles: Vec<RoleId>,
    pub phase: Phase,
}

/// What to watch after T0 and how to judge it.
#[derive(Clone, Debug, PartialEq)]
pub struct Monitoring {
    pub schedule: Vec<Stage>,
    pub probes: Vec<Probe>,
    pub matrix: Vec<SeverityRule>,
}

/// Tick every `every` until `until` after T0.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub every: Dur,
    pub until: Dur,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    Http {
        name: String,
        check: HttpCheck,
    },
    Prometheus {
        name: String,
        url: String,
        query: String,
        measures: Measure,
        bearer_env: Option<String>,
    },
}

/// What a Prometheus query measures, so the matrix knows how to judge it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// A ratio between 0 and 1.
    ErrorRate,
    /// Seconds.
    Latency,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// A severity by name, in any case (`critical`, `Critical`, `CRITICAL`).
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// One row of a decision matrix: at or above these bounds, this severity.
#[derive(Clone, Debug, PartialEq)]
pub struct SeverityRule {
    pub severity: Severity,
    pub error_rate_above: Option<f64>,
    pub latency_above: Option<Dur>,
    pub action: String,
}

impl Runbook {
    /// `web-service @ 1a2b3c4d`: the runbook and its version, as cards,
    /// reports and run pages name it.
    pub fn label(&self) -> String {
        if self.version.hash.is_empty() {
            return self.id.clone();
        }
        format!("{} @ {}", self.id, self.version.short())
    }

    /// Every phase a run may be in, the rollback phase last.
    pub fn all_phases(&self) -> impl Iterator<Item = &Phase> {
        self.phases
            .iter()
            .chain(self.rollback.as_ref().map(|r| &r.phase))
    }

    pub fn phase(&self, id: &str) -> Option<&Phase> {
        self.all_phases().find(|p| p.id == id)
    }

    /// The 1-based position of a regular phase, for "Phase 2 of 5".
    pub fn position(&self, id: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.id == id).map(|i| i + 1)
    }

    pub fn is_rollback_phase(&self, id: &str) -> bool {
        self.rollback.as_ref().is_some_and(|r| r.phase.id == id)
    }

    /// The phase after `id` in the regular order, if any.
    pub fn next_phase(&self, id: &str) -> Option<&Phase> {
        let at = self.phases.iter().position(|p| p.id == id)?;
        self.phases.get(at + 1)
    }
}

impl Phase {
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }
}
