//! The state machine of one deployment run.
//!
//! [`Run::decide`] takes an action by a person and either refuses it with a
//! reason written for that person, or changes the run and returns the
//! [`Event`]s that describe the change. An action that would change nothing
//! (a second click on "Done", a repeated sign-off) succeeds with no events,
//! which is how double clicks and retried requests count once.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Directory, PersonId, Phase, Platform, RoleId, RunId, Runbook};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Walking the runbook's regular phases.
    Active,
    /// Walking the rollback phase.
    RollingBack,
    Completed,
    Aborted,
    RolledBack,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Active,
        RunStatus::RollingBack,
        RunStatus::Completed,
        RunStatus::Aborted,
        RunStatus::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Active => "active",
            RunStatus::RollingBack => "rolling_back",
            RunStatus::Completed => "completed",
            RunStatus::Aborted => "aborted",
            RunStatus::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Active,
            RunStatus::RollingBack,
            RunStatus::Completed,
            RunStatus::Aborted,
            RunStatus::RolledBack,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        matches!(self, RunStatus::Active | RunStatus::RollingBack)
    }

    /// How the status reads in a sentence.
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Active => "in progress",
            RunStatus::RollingBack => "rolling back",
            RunStatus::Completed => "completed",
            RunStatus::Aborted => "aborted",
            RunStatus::RolledBack => "rolled back",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ItemState {
    Pending,
    Done {
        by: PersonId,
        at: DateTime<Utc>,
    },
    NotApplicable {
        by: PersonId,
        at: DateTime<Utc>,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Approved,
    Rejected { reason: String },
}

/// The latest result of an item's automated HTTP check: whether it
/// passed, what it saw (status and latency, or why it failed) and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub passed: bool,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// Who marks an item done when its automated check passes.
pub const AUTOMATED_CHECK: &str = "automated check";

/// What a pipeline said of an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Running,
    Done,
    Failed,
}

impl ReportStatus {
    pub const ALL: [ReportStatus; 3] = [
        ReportStatus::Running,
        ReportStatus::Done,
        ReportStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Running => "running",
            ReportStatus::Done => "done",
            ReportStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ReportStatus> {
        ReportStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The latest word from a pipeline (an integration of the bot file) on an
/// item: running, done or failed, with the job's page and a note. A failed
/// item blocks its phase until it is reported again or a person marks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemReport {
    pub status: ReportStatus,
    /// The integration's display name.
    pub by: String,
    pub url: Option<String>,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

/// A person's latest word on a role's sign-off for a phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignOff {
    pub phase: String,
    pub role: RoleId,
    pub person: PersonId,
    pub verdict: Verdict,
    pub at: DateTime<Utc>,
}

/// One deployment of one service version, walking one runbook.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: RunId,
    pub platform: Platform,
    /// The deployments channel the run belongs to (platform's channel id).
    pub channel: String,
    /// Counts up per channel: "deployment #42".
    pub number: i64,
    pub service: String,
    pub version: String,
    pub env: String,
    pub runbook: String,
    /// The hash of the runbook version the run follows (see
    /// `RunbookVersion`); `None` only for a run from before versions whose
    /// runbook file was gone when they were introduced.
    pub runbook_version: Option<String>,
    pub started_by: PersonId,
    pub started_at: DateTime<Utc>,
    pub status: RunStatus,
    pub phase: String,
    pub phase_entered_at: DateTime<Utc>,
    /// When the production deploy was marked done.
    pub t0: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    /// Item states keyed by (phase id, item id); absent means pending.
    pub items: BTreeMap<(String, String), ItemState>,
    pub signoffs: Vec<SignOff>,
    /// The latest automated check result of items that have a check,
    /// keyed by (phase id, item id); absent means not run yet.
    pub checks: BTreeMap<(String, String), CheckResult>,
    /// The run's incident that is not resolved yet, if any (read with the
    /// run; incidents are written elsewhere). A run cannot complete with one.
    pub open_incident: Option<i64>,
    /// The latest pipeline report of items a pipeline spoke of, keyed by
    /// (phase id, item id).
    pub reports: BTreeMap<(String, String), ItemReport>,
}

/// What a person asks of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    ItemDone {
        phase: String,
        item: String,
    },
    ItemUndo {
        phase: String,
        item: String,
    },
    ItemNotApplicable {
        phase: String,
        item: String,
        reason: Option<String>,
    },
    SignOff {
        phase: String,
        role: RoleId,
    },
    Reject {
        phase: String,
        role: RoleId,
        reason: Option<String>,
    },
    Advance {
        phase: String,
    },
    Abort {
        reason: Option<String>,
    },
    Rollback {
        reason: Option<String>,
    },
    /// Decide to fix a troubled release forward instead of rolling it back.
    FixForward {
        reason: Option<String>,
    },
    /// Record what an item's automated check saw (the bot's action).
    RecordCheck {
        phase: String,
        item: String,
        result: CheckResult,
    },
    /// A person presses "Run" on an item a pipeline carries out; `runner`
    /// is the name the pipeline reports under (its hook's), filled in by
    /// the engine.
    StartPipeline {
        phase: String,
        item: String,
        runner: String,
    },
    /// A pipeline reports on an item; `done` marks it done by the
    /// integration (the report's `by`).
    Report {
        phase: String,
        item: String,
        report: ItemReport,
    },
}

impl Action {
    /// Whether the action needs a reason typed by the person: the one list
    /// that [`Run::decide`] enforces, buttons mark and dialogs ask for.
    pub fn needs_reason(&self) -> bool {
        self.clone().reason_slot().is_some()
    }

    /// The reason typed for the action, for those that take one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Action::ItemNotApplicable { reason, .. }
            | Action::Reject { reason, .. }
            | Action::Abort { reason }
            | Action::Rollback { reason }
            | Action::FixForward { reason } => reason.as_deref(),
            _ => None,
        }
    }

    /// The action with the reason the person typed, for those that take one.
    pub fn with_reason(mut self, reason: Option<String>) -> Action {
        if let Some(slot) = self.reason_slot() {
            *slot = reason;
        }
        self
    }

    fn reason_slot(&mut self) -> Option<&mut Option<String>> {
        match self {
            Action::ItemNotApplicable { reason, .. }
            | Action::Reject { reason, .. }
            | Action::Abort { reason }
            | Action::Rollback { reason }
            | Action::FixForward { reason } => Some(reason),
            Action::ItemDone { .. }
            | Action::ItemUndo { .. }
            | Action::SignOff { .. }
            | Action::Advance { .. }
            | Action::RecordCheck { .. }
            | Action::StartPipeline { .. }
            | Action::Report { .. } => None,
        }
    }
}

/// What changed, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ItemDone {
        phase: String,
        item: String,
    },
    ItemUndone {
        phase: String,
        item: String,
    },
    ItemNotApplicable {
        phase: String,
        item: String,
        reason: String,
    },
    ProductionDeployed,
    SignedOff {
        phase: String,
        role: RoleId,
    },
    Rejected {
        phase: String,
        role: RoleId,
        reason: String,
    },
    PhaseEntered {
        from: String,
        to: String,
    },
    Completed,
    Aborted {
        reason: String,
    },
    RollbackStarted {
        from: String,
        reason: String,
    },
    FixForwardChosen {
        reason: String,
    },
    RolledBack,
    /// An item's automated check passed (and marked the item done if it was pending).
    CheckPassed {
        phase: String,
        item: String,
        detail: String,
    },
    /// An item's automated check failed; the phase cannot be left while it does.
    CheckFailed {
        phase: String,
        item: String,
        detail: String,
    },
    /// A person started the pipeline of an item.
    PipelineStarted {
        phase: String,
        item: String,
    },
    /// A pipeline reported an item running or failed (`done` is
    /// [`Event::ItemDone`], with the report kept on the run).
    ItemReported {
        phase: String,
        item: String,
        status: ReportStatus,
    },
}

impl Event {
    /// The audit log's name for the event.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ItemDone { .. } => "item.done",
            Event::ItemUndone { .. } => "item.undone",
            Event::ItemNotApplicable { .. } => "item.not_applicable",
            Event::ProductionDeployed => "run.production_deployed",
            Event::SignedOff { .. } => "signoff.approved",
            Event::Rejected { .. } => "signoff.rejected",
            Event::PhaseEntered { .. } => "phase.entered",
            Event::Completed => "run.completed",
            Event::Aborted { .. } => "run.aborted",
            Event::RollbackStarted { .. } => "run.rollback_started",
            Event::FixForwardChosen { .. } => "run.fix_forward",
            Event::RolledBack => "run.rolled_back",
            Event::CheckPassed { .. } => "check.passed",
            Event::CheckFailed { .. } => "check.failed",
            Event::PipelineStarted { .. } => "pipeline.started",
            Event::ItemReported {
                status: ReportStatus::Running,
                ..
            } => "item.running",
            Event::ItemReported { .. } => "item.failed",
        }
    }
}

/// Why an action was refused, written for the person who asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("deployment #{number} is {status}; nothing more can be done on it")]
    Closed { number: i64, status: &'static str },
    #[error("that button belongs to phase \"{phase}\", but the run is now in \"{current}\"")]
    NotCurrentPhase { phase: String, current: String },
    #[error("this runbook has no phase \"{0}\"")]
    UnknownPhase(String),
    #[error("phase \"{phase}\" has no item \"{item}\"")]
    UnknownItem { phase: String, item: String },
    #[error("\"{0}\" is required; only optional items can be marked not applicable")]
    RequiredItem(String),
    #[error("{0} needs a reason")]
    ReasonRequired(&'static str),
    #[error("phase \"{phase}\" does not ask {role} to sign off")]
    RoleNotInGate { phase: String, role: String },
    #[error("only members of {role} can sign off for it; ask {}", names(.members))]
    NotInRole { role: String, members: Vec<String> },
    #[error("only {} may {action}", allowed_list(.allowed))]
    NotAllowed {
        action: &'static str,
        /// (role name, its members' names); the starter is listed as a "role" too.
        allowed: Vec<(String, Vec<String>)>,
    },
    #[error("this runbook has no rollback phase")]
    NoRollback,
    #[error("the run is already rolling back")]
    AlreadyRollingBack,
    #[error("cannot advance yet:\n{}", .0.iter().map(|c| format!("• {c}")).collect::<Vec<_>>().join("\n"))]
    Unmet(Vec<String>),
    #[error("\"{0}\" is already done")]
    AlreadyDone(String),
    #[error("\"{0}\" has no pipeline to run")]
    NoPipeline(String),
}

impl Refusal {
    /// Whether the refusal is about the run's state now (closed, moved on,
    /// already done) rather than about what was asked: an API answers 409.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Refusal::Closed { .. }
                | Refusal::NotCurrentPhase { .. }
                | Refusal::AlreadyDone(_)
                | Refusal::AlreadyRollingBack
                | Refusal::Unmet(_)
        )
    }

    /// Whether the refusal names a phase or item the runbook lacks.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Refusal::UnknownPhase(_) | Refusal::UnknownItem { .. })
    }
}

fn names(members: &[String]) -> String {
    match members {
        [] => "an administrator to add members to the role".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

fn allowed_list(allowed: &[(String, Vec<String>)]) -> String {
    allowed
        .iter()
        .map(|(who, members)| {
            if members.is_empty() {
                who.clone()
            } else {
                format!("{who} ({})", members.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Approved => f.write_str("approved"),
            Verdict::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

/// How far a role's sign-off for a phase has come.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleProgress {
    pub role: RoleId,
    pub quorum: u32,
    pub approved: Vec<PersonId>,
    pub rejected: Vec<(PersonId, String)>,
}

impl RoleProgress {
    pub fn is_met(&self) -> bool {
        self.approved.len() as u32 >= self.quorum && self.rejected.is_empty()
    }
}

impl Run {
    /// A new run in the runbook's first phase. The store assigns `id` and
    /// `number` when it inserts the run.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        runbook: &Runbook,
        platform: Platform,
        channel: &str,
        service: &str,
        version: &str,
        env: &str,
        started_by: &PersonId,
        now: DateTime<Utc>,
    ) -> Run {
        Run {
            id: RunId(0),
            platform,
            channel: channel.to_string(),
            number: 0,
            service: service.to_string(),
            version: version.to_string(),
            env: env.to_string(),
            runbook: runbook.id.clone(),
            runbook_version: Some(runbook.version.hash.clone()),
            started_by: started_by.clone(),
            started_at: now,
            status: RunStatus::Active,
            phase: runbook.phases[0].id.clone(),
            phase_entered_at: now,
            t0: None,
            ended_at: None,
            end_reason: None,
            items: BTreeMap::new(),
            signoffs: Vec::new(),
            checks: BTreeMap::new(),
            open_incident: None,
            reports: BTreeMap::new(),
        }
    }

    /// The phases this run has reached, in the runbook's order: the current
    /// one, those before it, and any with items or sign-offs recorded (the
    /// rollback phase only once it was entered).
    pub fn reached_phases<'a>(&self, runbook: &'a Runbook) -> Vec<&'a Phase> {
        let current = runbook.position(&self.phase);
        runbook
            .all_phases()
            .filter(|p| {
                self.phase == p.id
                    || self.items.keys().any(|(ph, _)| *ph == p.id)
                    || self.signoffs.iter().any(|s| s.phase == p.id)
                    || matches!((runbook.position(&p.id), current), (Some(a), Some(c)) if a < c)
            })
            .collect()
    }

    pub fn item_state(&self, phase: &str, item: &str) -> &ItemState {
        const PENDING: ItemState = ItemState::Pending;
        self.items
            .get(&(phase.to_string(), item.to_string()))
            .unwrap_or(&PENDING)
    }

    /// Sign-off progress of every role the phase's gate names.
    pub fn gate_progress(&self, phase: &Phase) -> Vec<RoleProgress> {
        phase
            .gate
            .signoffs
            .iter()
            .map(|need| {
                let mut progress = RoleProgress {
                    role: need.role.clone(),
                    quorum: need.quorum,
                    approved: Vec::new(),
                    rejected: Vec::new(),
                };
                for s in self
                    .signoffs
                    .iter()
                    .filter(|s| s.phase == phase.id && s.role == need.role)
                {
                    match &s.verdict {
                        Verdict::Approved => progress.approved.push(s.person.clone()),
                        Verdict::Rejected { reason } => {
                            progress.rejected.push((s.person.clone(), reason.clone()))
                        }
                    }
                }
                progress
            })
            .collect()
    }

    /// Every reason the current phase cannot be left yet; empty when it can.
    pub fn unmet(&self, runbook: &Runbook, dir: &Directory) -> Vec<String> {
        let Some(phase) = runbook.phase(&self.phase) else {
            return vec![format!(
                "the runbook no longer has phase \"{}\"",
                self.phase
            )];
        };
        let mut unmet = Vec::new();
        for item in &phase.items {
            let state = self.item_state(&phase.id, &item.id);
            // A failing check blocks until it passes, or until a person marks
            // the item done by hand (or not applicable) and answers for it.
            let failed = self
                .report(&phase.id, &item.id)
                .filter(|r| r.status == ReportStatus::Failed);
            match self.check(&phase.id, &item.id) {
                Some(c) if !c.passed && matches!(state, ItemState::Pending) => {
                    unmet.push(format!("check failing: {} — {}", item.text, c.detail));
                }
                _ if failed.is_some() && matches!(state, ItemState::Pending) => {
                    let r = failed.expect("failed report");
                    let note = r
                        .note
                        .as_deref()
                        .map_or(String::new(), |n| format!(": {n}"));
                    unmet.push(format!("failed in {}: {}{note}", r.by, item.text));
                }
                _ if !item.optional && matches!(state, ItemState::Pending) => {
                    unmet.push(format!("not done: {}", item.text));
                }
                _ => {}
            }
        }
        unmet.extend(self.gate_unmet(phase, dir));
        let last = runbook.next_phase(&phase.id).is_none() && self.status == RunStatus::Active;
        if let (true, Some(id)) = (last, self.open_incident) {
            unmet.push(format!(
                "incident #{id} is still open: resolve it before the deployment can complete"
            ));
        }
        unmet
    }

    /// The latest automated check result of an item, if its check has run.
    pub fn check(&self, phase: &str, item: &str) -> Option<&CheckResult> {
        self.checks.get(&(phase.to_string(), item.to_string()))
    }

    /// The latest pipeline report on an item, if a pipeline spoke of it.
    pub fn report(&self, phase: &str, item: &str) -> Option<&ItemReport> {
        self.reports.get(&(phase.to_string(), item.to_string()))
    }

    /// What the phase's gate still lacks: rejections, missing sign-offs, and
    /// the four-eyes rule; empty when the gate is met.
    pub fn gate_unmet(&self, phase: &Phase, dir: &Directory) -> Vec<String> {
        let mut unmet = Vec::new();
        let progress = self.gate_progress(phase);
        for p in &progress {
            let role = dir.role_name(&p.role);
            for (who, reason) in &p.rejected {
                unmet.push(format!(
                    "{role} sign-off rejected by {}: {reason}",
                    dir.name(who)
                ));
            }
            let have = p.approved.len() as u32;
            if have < p.quorum {
                unmet.push(format!(
                    "{role} sign-off: {have} of {} (ask {})",
                    p.quorum,
                    names(&dir.member_names(&p.role))
                ));
            }
        }
        if phase.gate.four_eyes && progress.iter().all(|p| p.is_met()) {
            let approvers: Vec<&PersonId> = progress.iter().flat_map(|p| &p.approved).collect();
            if !approvers.is_empty() && approvers.iter().all(|p| **p == self.started_by) {
                unmet.push(format!(
                    "four-eyes rule: {} started this deployment and cannot be its only approver",
                    dir.name(&self.started_by)
                ));
            }
        }
        unmet
    }

    /// Apply `action` by `actor` at `now`: the events it caused, or why not.
    pub fn decide(
        &mut self,
        runbook: &Runbook,
        dir: &Directory,
        actor: &PersonId,
        action: Action,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, Refusal> {
        if !self.status.is_open() {
            // A second click on the button that closed the run counts once.
            let repeat = match &action {
                Action::Advance { phase } => {
                    *phase == self.phase
                        && matches!(self.status, RunStatus::Completed | RunStatus::RolledBack)
                }
                Action::Abort { .. } => self.status == RunStatus::Aborted,
                _ => false,
            };
            if repeat {
                return Ok(vec![]);
            }
            return Err(Refusal::Closed {
                number: self.number,
                status: self.status.label(),
            });
        }
        match action {
            Action::ItemDone { phase, item } => {
                let item_def = self.current_item(runbook, &phase, &item)?;
                let production = item_def.production_deploy;
                if matches!(self.item_state(&phase, &item), ItemState::Done { .. }) {
                    return Ok(vec![]);
                }
                Ok(self.mark_done(phase, item, actor.clone(), production, now))
            }
            Action::ItemUndo { phase, item } => {
                let item_def = self.current_item(runbook, &phase, &item)?;
                let production = item_def.production_deploy;
                if self.items.remove(&(phase.clone(), item.clone())).is_none() {
                    return Ok(vec![]);
                }
                if production {
                    self.t0 = None;
                }
                Ok(vec![Event::ItemUndone { phase, item }])
            }
            Action::ItemNotApplicable {
                phase,
                item,
                reason,
            } => {
                let item_def = self.current_item(runbook, &phase, &item)?;
                if !item_def.optional {
                    return Err(Refusal::RequiredItem(item_def.text.clone()));
                }
                let production = item_def.production_deploy;
                let reason = require_reason(reason, "marking an item not applicable")?;
                if let ItemState::NotApplicable { reason: had, .. } = self.item_state(&phase, &item)
                {
                    if *had == reason {
                        return Ok(vec![]);
                    }
                }
                let na = ItemState::NotApplicable {
                    by: actor.clone(),
                    at: now,
                    reason: reason.clone(),
                };
                self.items.insert((phase.clone(), item.clone()), na);
                if production {
                    self.t0 = None;
                }
                Ok(vec![Event::ItemNotApplicable {
                    phase,
                    item,
                    reason,
                }])
            }
            Action::SignOff { phase, role } => {
                self.check_signer(runbook, dir, actor, &phase, &role)?;
                self.record_verdict(phase, role, actor, Verdict::Approved, now)
            }
            Action::Reject {
                phase,
                role,
                reason,
            } => {
                self.check_signer(runbook, dir, actor, &phase, &role)?;
                let reason = require_reason(reason, "a rejection")?;
                self.record_verdict(phase, role, actor, Verdict::Rejected { reason }, now)
            }
            Action::Advance { phase } => {
                if phase != self.phase {
                    if self.phase_passed(runbook, &phase) {
                        // A second click on a phase already left: nothing to do.
                        return Ok(vec![]);
                    }
                    return Err(self.not_current(&phase));
                }
                let unmet = self.unmet(runbook, dir);
                if !unmet.is_empty() {
                    return Err(Refusal::Unmet(unmet));
                }
                if self.status == RunStatus::RollingBack {
                    self.finish(RunStatus::RolledBack, None, now);
                    return Ok(vec![Event::RolledBack]);
                }
                match runbook.next_phase(&phase) {
                    Some(next) => {
                        let to = next.id.clone();
                        self.phase = to.clone();
                        self.phase_entered_at = now;
                        Ok(vec![Event::PhaseEntered { from: phase, to }])
                    }
                    None => {
                        self.finish(RunStatus::Completed, None, now);
                        Ok(vec![Event::Completed])
                    }
                }
            }
            Action::Abort { reason } => {
                let may = *actor == self.started_by
                    || runbook.abort_roles.iter().any(|r| dir.is_member(actor, r));
                if !may {
                    let mut allowed = vec![(
                        format!("{} (who started it)", dir.name(&self.started_by)),
                        vec![],
                    )];
                    allowed.extend(role_list(dir, &runbook.abort_roles));
                    return Err(Refusal::NotAllowed {
                        action: "abort this deployment",
                        allowed,
                    });
                }
                let reason = require_reason(reason, "aborting a deployment")?;
                self.finish(RunStatus::Aborted, Some(reason.clone()), now);
                Ok(vec![Event::Aborted { reason }])
            }
            Action::FixForward { reason } => {
                // The same people who may roll back decide not to.
                let roles = runbook
                    .rollback
                    .as_ref()
                    .map_or(&runbook.abort_roles, |r| &r.roles);
                if !roles.iter().any(|r| dir.is_member(actor, r)) {
                    return Err(Refusal::NotAllowed {
                        action: "choose to fix forward",
                        allowed: role_list(dir, roles),
                    });
                }
                let reason = require_reason(reason, "fixing forward")?;
                Ok(vec![Event::FixForwardChosen { reason }])
            }
            Action::RecordCheck {
                phase,
                item,
                result,
            } => {
                if phase != self.phase {
                    // The run moved on while the check ran: it no longer matters.
                    return Ok(vec![]);
                }
                self.current_item(runbook, &phase, &item)?;
                let key = (phase.clone(), item.clone());
                self.checks.insert(key.clone(), result.clone());
                let detail = result.detail.clone();
                let state = self.item_state(&phase, &item).clone();
                // Every run of a check is an event: the card shows when it ran.
                let mut events = Vec::new();
                if result.passed {
                    events.push(Event::CheckPassed {
                        phase: phase.clone(),
                        item: item.clone(),
                        detail,
                    });
                    if matches!(state, ItemState::Pending) {
                        let by = PersonId::new(AUTOMATED_CHECK);
                        self.items
                            .insert(key, ItemState::Done { by, at: result.at });
                        events.push(Event::ItemDone { phase, item });
                    }
                } else {
                    // A failing check takes back what a passing one marked done.
                    if matches!(&state, ItemState::Done { by, .. } if by.as_str() == AUTOMATED_CHECK)
                    {
                        self.items.remove(&key);
                    }
                    events.push(Event::CheckFailed {
                        phase,
                        item,
                        detail,
                    });
                }
                Ok(events)
            }
            Action::StartPipeline {
                phase,
                item,
                runner,
            } => {
                let item_def = self.current_item(runbook, &phase, &item)?;
                let Some(step) = &item_def.pipeline else {
                    return Err(Refusal::NoPipeline(item_def.text.clone()));
                };
                if !step.roles.iter().any(|r| dir.is_member(actor, r)) {
                    return Err(Refusal::NotAllowed {
                        action: "start this pipeline",
                        allowed: role_list(dir, &step.roles),
                    });
                }
                if !matches!(self.item_state(&phase, &item), ItemState::Pending) {
                    return Err(Refusal::AlreadyDone(item_def.text.clone()));
                }
                if self
                    .report(&phase, &item)
                    .is_some_and(|r| r.status == ReportStatus::Running)
                {
                    // Running already: a second press starts nothing.
                    return Ok(vec![]);
                }
                let report = ItemReport {
                    status: ReportStatus::Running,
                    by: runner,
                    url: None,
                    note: Some(format!("started by {}", dir.name(actor))),
                    at: now,
                };
                self.reports.insert((phase.clone(), item.clone()), report);
                Ok(vec![Event::PipelineStarted { phase, item }])
            }
            Action::Report {
                phase,
                item,
                report,
            } => {
                let item_def = self.current_item(runbook, &phase, &item)?;
                match self.item_state(&phase, &item) {
                    ItemState::Pending => {}
                    // A pipeline that says done again is a retry.
                    ItemState::Done { .. } if report.status == ReportStatus::Done => {
                        return Ok(vec![])
                    }
                    _ => return Err(Refusal::AlreadyDone(item_def.text.clone())),
                }
                let production = item_def.production_deploy;
                let status = report.status;
                self.reports
                    .insert((phase.clone(), item.clone()), report.clone());
                if status != ReportStatus::Done {
                    return Ok(vec![Event::ItemReported {
                        phase,
                        item,
                        status,
                    }]);
                }
                let by = PersonId::new(report.by);
                Ok(self.mark_done(phase, item, by, production, now))
            }
            Action::Rollback { reason } => {
                let Some(rollback) = &runbook.rollback else {
                    return Err(Refusal::NoRollback);
                };
                if !rollback.roles.iter().any(|r| dir.is_member(actor, r)) {
                    return Err(Refusal::NotAllowed {
                        action: "roll back",
                        allowed: role_list(dir, &rollback.roles),
                    });
                }
                if self.status == RunStatus::RollingBack {
                    return Err(Refusal::AlreadyRollingBack);
                }
                let reason = require_reason(reason, "a rollback")?;
                let from = std::mem::replace(&mut self.phase, rollback.phase.id.clone());
                self.status = RunStatus::RollingBack;
                self.phase_entered_at = now;
                self.end_reason = Some(reason.clone());
                Ok(vec![Event::RollbackStarted { from, reason }])
            }
        }
    }

    /// What the run still needs before it can end, for the thread at the end
    /// of its monitoring window: what its current phase lacks, then the
    /// phases not walked yet. Empty for a closed run.
    pub fn still_needed(&self, runbook: &Runbook, dir: &Directory) -> Vec<String> {
        if !self.status.is_open() {
            return vec![];
        }
        let title = runbook
            .phase(&self.phase)
            .map_or(self.phase.as_str(), |p| p.title.as_str());
        let mut needed: Vec<String> = self
            .unmet(runbook, dir)
            .into_iter()
            .map(|u| format!("{title}: {u}"))
            .collect();
        needed.push(format!("finish {title}"));
        let after: Vec<&str> = match runbook.position(&self.phase) {
            Some(at) => runbook.phases[at..]
                .iter()
                .map(|p| p.title.as_str())
                .collect(),
            None => vec![],
        };
        if !after.is_empty() {
            needed.push(format!("walk {}", after.join(", then ")));
        }
        needed
    }

    /// Mark a pending item done by `by`; the production deploy's sets T0.
    fn mark_done(
        &mut self,
        phase: String,
        item: String,
        by: PersonId,
        production: bool,
        now: DateTime<Utc>,
    ) -> Vec<Event> {
        self.items.insert(
            (phase.clone(), item.clone()),
            ItemState::Done { by, at: now },
        );
        let mut events = vec![Event::ItemDone { phase, item }];
        if production && self.t0.is_none() {
            self.t0 = Some(now);
            events.push(Event::ProductionDeployed);
        }
        events
    }

    fn finish(&mut self, status: RunStatus, reason: Option<String>, now: DateTime<Utc>) {
        self.status = status;
        self.ended_at = Some(now);
        if reason.is_some() {
            self.end_reason = reason;
        }
    }

    fn not_current(&self, phase: &str) -> Refusal {
        Refusal::NotCurrentPhase {
            phase: phase.to_string(),
            current: self.phase.clone(),
        }
    }

    /// Whether `phase` is a regular phase the run has already left.
    fn phase_passed(&self, runbook: &Runbook, phase: &str) -> bool {
        match (runbook.position(phase), runbook.position(&self.phase)) {
            (Some(asked), Some(now)) => asked < now,
            (Some(_), None) => runbook.is_rollback_phase(&self.phase),
            _ => false,
        }
    }

    fn current_item<'r>(
        &self,
        runbook: &'r Runbook,
        phase: &str,
        item: &str,
    ) -> Result<&'r super::Item, Refusal> {
        let phase_def = runbook
            .phase(phase)
            .ok_or_else(|| Refusal::UnknownPhase(phase.to_string()))?;
        if phase != self.phase {
            return Err(self.not_current(phase));
        }
        phase_def.item(item).ok_or_else(|| Refusal::UnknownItem {
            phase: phase.to_string(),
            item: item.to_string(),
        })
    }

    fn check_signer(
        &self,
        runbook: &Runbook,
        dir: &Directory,
        actor: &PersonId,
        phase: &str,
        role: &RoleId,
    ) -> Result<(), Refusal> {
        let phase_def = runbook
            .phase(phase)
            .ok_or_else(|| Refusal::UnknownPhase(phase.to_string()))?;
        if phase != self.phase {
            return Err(self.not_current(phase));
        }
        if !phase_def.gate.signoffs.iter().any(|s| s.role == *role) {
            return Err(Refusal::RoleNotInGate {
                phase: phase_def.title.clone(),
                role: dir.role_name(role).to_string(),
            });
        }
        if !dir.is_member(actor, role) {
            return Err(Refusal::NotInRole {
                role: dir.role_name(role).to_string(),
                members: dir.member_names(role),
            });
        }
        Ok(())
    }

    fn record_verdict(
        &mut self,
        phase: String,
        role: RoleId,
        actor: &PersonId,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, Refusal> {
        let existing = self
            .signoffs
            .iter_mut()
            .find(|s| s.phase == phase && s.role == role && s.person == *actor);
        let event = match &verdict {
            Verdict::Approved => Event::SignedOff {
                phase: phase.clone(),
                role: role.clone(),
            },
            Verdict::Rejected { reason } => Event::Rejected {
                phase: phase.clone(),
                role: role.clone(),
                reason: reason.clone(),
            },
        };
        match existing {
            Some(s) if s.verdict == verdict => return Ok(vec![]),
            Some(s) => {
                s.verdict = verdict;
                s.at = now;
            }
            None => self.signoffs.push(SignOff {
                phase,
                role,
                person: actor.clone(),
                verdict,
                at: now,
            }),
        }
        Ok(vec![event])
    }
}

fn require_reason(reason: Option<String>, what: &'static str) -> Result<String, Refusal> {
    match reason.map(|r| r.trim().to_string()) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(Refusal::ReasonRequired(what)),
    }
}

fn role_list(dir: &Directory, roles: &[RoleId]) -> Vec<(String, Vec<String>)> {
    roles
        .iter()
        .map(|r| (dir.role_name(r).to_string(), dir.member_names(r)))
        .collect()
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
