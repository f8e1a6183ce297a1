//! The JSON a run is shown as — on its page (`/runs/{id}.json`) and in the
//! API (`/api/v1/runs…`) — and the API's requests, answers and problem
//! details. These types are what the handlers serialise and parse, and the
//! OpenAPI document is derived from them ([`super::api::ApiDoc`]), so the
//! document cannot drift from what is served.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::pages::RunView;
use crate::domain::{ItemState, Platform, ReportStatus, Run, RunStatus, Verdict};

/// A run with everything recorded about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunModel {
    pub id: i64,
    /// Counts up per deployments channel: "deployment #42".
    pub number: i64,
    pub service: String,
    pub version: String,
    pub env: String,
    pub runbook: String,
    /// SHA-256 of the runbook text the run follows.
    pub runbook_version: Option<String>,
    /// Why the run cannot go on, when its runbook version is gone.
    pub stranded: Option<String>,
    pub platform: PlatformName,
    pub channel: String,
    pub status: RunStatusName,
    /// The current phase's id.
    pub phase: String,
    /// A person's key, or an integration's name.
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    /// When the production deploy was marked done.
    pub t0: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    /// Items that are done or not applicable; the others are pending.
    pub items: Vec<ItemModel>,
    /// The latest pipeline report of each item a pipeline spoke of.
    pub reports: Vec<ReportModel>,
    pub signoffs: Vec<SignoffModel>,
    pub monitoring: Vec<TickModel>,
    pub incidents: Vec<IncidentModel>,
    pub audit: Vec<AuditModel>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemModel {
    pub phase: String,
    pub item: String,
    pub state: ItemStateName,
    pub by: Option<String>,
    pub at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportModel {
    pub phase: String,
    pub item: String,
    pub status: ReportStatusName,
    /// The integration's name.
    pub by: String,
    /// The job's page.
    pub url: Option<String>,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignoffModel {
    pub phase: String,
    pub role: String,
    pub person: String,
    pub verdict: VerdictName,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TickModel {
    pub at: DateTime<Utc>,
    /// The matrix's verdict for the tick (`ok`, `low` … `critical`).
    pub verdict: String,
    /// Each probe's reading, as `[name, reading]` pairs.
    pub readings: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentModel {
    pub id: i64,
    pub severity: String,
    pub summary: String,
    pub status: String,
    pub opened_by: String,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
    pub pages: Vec<PageModel>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageModel {
    pub person: String,
    /// The rotation, role or person the page went through.
    pub via: String,
    /// The escalation step, from 1.
    pub step: usize,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditModel {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub platform: String,
    pub action: String,
    pub detail: String,
}

/// A chat platform.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlatformName {
    Slack,
    Discord,
    Shell,
}

impl From<Platform> for PlatformName {
    fn from(p: Platform) -> Self {
        match p {
            Platform::Slack => PlatformName::Slack,
            Platform::Discord => PlatformName::Discord,
            Platform::Shell => PlatformName::Shell,
        }
    }
}

impl From<PlatformName> for Platform {
    fn from(p: PlatformName) -> Self {
        match p {
            PlatformName::Slack => Platform::Slack,
            PlatformName::Discord => Platform::Discord,
            PlatformName::Shell => Platform::Shell,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatusName {
    Active,
    RollingBack,
    Completed,
    Aborted,
    RolledBack,
}

impl From<RunStatus> for RunStatusName {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Active => RunStatusName::Active,
            RunStatus::RollingBack => RunStatusName::RollingBack,
            RunStatus::Completed => RunStatusName::Completed,
            RunStatus::Aborted => RunStatusName::Aborted,
            RunStatus::RolledBack => RunStatusName::RolledBack,
        }
    }
}

impl From<RunStatusName> for RunStatus {
    fn from(s: RunStatusName) -> Self {
        match s {
            RunStatusName::Active => RunStatus::Active,
            RunStatusName::RollingBack => RunStatus::RollingBack,
            RunStatusName::Completed => RunStatus::Completed,
            RunStatusName::Aborted => RunStatus::Aborted,
            RunStatusName::RolledBack => RunStatus::RolledBack,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStateName {
    Pending,
    Done,
    NotApplicable,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatusName {
    Running,
    Done,
    Failed,
}

impl From<ReportStatus> for ReportStatusName {
    fn from(s: ReportStatus) -> Self {
        match s {
            ReportStatus::Running => ReportStatusName::Running,
            ReportStatus::Done => ReportStatusName::Done,
            ReportStatus::Failed => ReportStatusName::Failed,
        }
    }
}

impl From<ReportStatusName> for ReportStatus {
    fn from(s: ReportStatusName) -> Self {
        match s {
            ReportStatusName::Running => ReportStatus::Running,
            ReportStatusName::Done => ReportStatus::Done,
            ReportStatusName::Failed => ReportStatus::Failed,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictName {
    Approved,
    Rejected,
}

impl RunModel {
    /// Everything a run's page shows, as JSON.
    pub fn of(v: &RunView<'_>) -> RunModel {
        let run = v.run;
        let items = run
            .items
            .iter()
            .map(|((phase, item), state)| {
                let (state, by, at, reason) = match state {
                    ItemState::Pending => (ItemStateName::Pending, None, None, None),
                    ItemState::Done { by, at } => {
                        (ItemStateName::Done, Some(by.to_string()), Some(*at), None)
                    }
                    ItemState::NotApplicable { by, at, reason } => (
                        ItemStateName::NotApplicable,
                        Some(by.to_string()),
                        Some(*at),
                        Some(reason.clone()),
                    ),
                };
                ItemModel {
                    phase: phase.clone(),
                    item: item.clone(),
                    state,
                    by,
                    at,
                    reason,
                }
            })
            .collect();
        let signoffs = run
            .signoffs
            .iter()
            .map(|s| {
                let (verdict, reason) = match &s.verdict {
                    Verdict::Approved => (VerdictName::Approved, None),
                    Verdict::Rejected { reason } => (VerdictName::Rejected, Some(reason.clone())),
                };
                SignoffModel {
                    phase: s.phase.clone(),
                    role: s.role.to_string(),
                    person: s.person.to_string(),
                    verdict,
                    reason,
                    at: s.at,
                }
            })
            .collect();
        let monitoring = v
            .ticks
            .iter()
            .map(|t| TickModel {
                at: t.tick_at,
                verdict: t.level.clone(),
                readings: serde_json::from_str(&t.readings).unwrap_or(Value::Null),
            })
            .collect();
        let incidents = v
            .incidents
            .iter()
            .map(|(i, pages)| IncidentModel {
                id: i.id,
                severity: i.severity.as_str().to_string(),
                summary: i.summary.clone(),
                status: i.status.as_str().to_string(),
                opened_by: i.opened_by.clone(),
                opened_at: i.opened_at,
                acknowledged_by: i.acked_by.as_ref().map(|p| p.to_string()),
                acknowledged_at: i.acked_at,
                resolved_by: i.resolved_by.as_ref().map(|p| p.to_string()),
                resolved_at: i.resolved_at,
                resolution: i.resolution.clone(),
                pages: pages
                    .iter()
                    .map(|p| PageModel {
                        person: p.person.to_string(),
                        via: p.via.clone(),
                        step: p.step + 1,
                        at: p.at,
                    })
                    .collect(),
            })
            .collect();
        let audit = v
            .audit
            .iter()
            .map(|e| AuditModel {
                at: e.at,
                actor: e.actor.clone(),
                platform: e.platform.clone(),
                action: e.action.clone(),
                detail: e.detail.clone(),
            })
            .collect();
        RunModel {
            id: run.id.0,
            number: run.number,
            service: run.service.clone(),
            version: run.version.clone(),
            env: run.env.clone(),
            runbook: run.runbook.clone(),
            runbook_version: run.runbook_version.clone(),
            stranded: v.stranded.map(str::to_string),
            platform: run.platform.into(),
            channel: run.channel.clone(),
            status: run.status.into(),
            phase: run.phase.clone(),
            started_by: run.started_by.to_string(),
            started_at: run.started_at,
            t0: run.t0,
            ended_at: run.ended_at,
            end_reason: run.end_reason.clone(),
            items,
            reports: reports(run),
            signoffs,
            monitoring,
            incidents,
            audit,
        }
    }
}

fn reports(run: &Run) -> Vec<ReportModel> {
    run.reports
        .iter()
        .map(|((phase, item), r)| ReportModel {
            phase: phase.clone(),
            item: item.clone(),
            status: r.status.into(),
            by: r.by.clone(),
            url: r.url.clone(),
            note: r.note.clone(),
            at: r.at,
        })
        .collect()
}

/// `POST /api/v1/runs`: start a run, as `/deploy start` does. It is posted
/// in the platform's deployments channel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    pub platform: PlatformName,
    /// 1 to 80 characters, no spaces.
    pub service: String,
    /// 1 to 80 characters, no spaces.
    pub version: String,
    /// A runbook id; the bot file's default when absent.
    pub runbook: Option<String>,
    /// The environment; the bot file's default when absent.
    pub env: Option<String>,
}

/// The answer to a started run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    pub id: i64,
    pub number: i64,
    pub status: RunStatusName,
    /// The first phase's id.
    pub phase: String,
    /// A signed link to the run's page, when the server has a public URL
    /// and a link secret.
    pub url: Option<String>,
}

impl RunStarted {
    pub fn of(run: &Run, url: Option<String>) -> RunStarted {
        RunStarted {
            id: run.id.0,
            number: run.number,
            status: run.status.into(),
            phase: run.phase.clone(),
            url,
        }
    }
}

/// `POST /api/v1/runs/{id}/items/{phase}/{item}`: what the pipeline did.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportItem {
    pub status: ReportStatusName,
    /// The job's page (http or https), shown on the card as its logs.
    pub url: Option<String>,
    /// A short note, up to 300 characters.
    pub note: Option<String>,
}

/// The item as it now stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemReported {
    pub run: i64,
    pub phase: String,
    pub item: String,
    /// Done once a pipeline reports done; running and failed leave it pending.
    pub state: ItemStateName,
    pub report: Option<ReportModel>,
    pub run_status: RunStatusName,
}

impl ItemReported {
    pub fn of(run: &Run, phase: &str, item: &str) -> ItemReported {
        let state = match run.item_state(phase, item) {
            ItemState::Pending => ItemStateName::Pending,
            ItemState::Done { .. } => ItemStateName::Done,
            ItemState::NotApplicable { .. } => ItemStateName::NotApplicable,
        };
        ItemReported {
            run: run.id.0,
            phase: phase.to_string(),
            item: item.to_string(),
            state,
            report: reports(run)
                .into_iter()
                .find(|r| r.phase == phase && r.item == item),
            run_status: run.status.into(),
        }
    }
}

/// `GET /api/v1/runs`: the latest runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunModel>,
}

/// An error, as RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `about:blank`: the status code says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status code's phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
}
