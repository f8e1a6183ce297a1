//! The configuration files exactly as written, for serde. Every struct denies
//! unknown keys, and the values that later checks may complain about keep
//! their position in the file (`Spanned`) so a problem names its line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotFile {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub deploy: Deploy,
    #[serde(default)]
    pub discord: DiscordRaw,
    #[serde(default)]
    pub channels: BTreeMap<S<String>, Channels>,
    #[serde(default)]
    pub people: BTreeMap<S<String>, PersonRaw>,
    #[serde(default)]
    pub roles: BTreeMap<S<String>, RoleRaw>,
    #[serde(default)]
    pub rotations: BTreeMap<S<String>, RotationRaw>,
    #[serde(default)]
    pub policies: BTreeMap<S<String>, PolicyRaw>,
    #[serde(default)]
    pub integrations: BTreeMap<S<String>, IntegrationRaw>,
    #[serde(default)]
    pub hooks: BTreeMap<S<String>, HookRaw>,
    #[serde(default)]
    pub webhooks: BTreeMap<S<String>, WebhookRaw>,
}

/// An endpoint subscribed to events, signed as Standard Webhooks says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRaw {
    pub url: S<String>,
    /// The environment variable holding the `whsec_…` secret.
    pub secret_env: S<String>,
    pub events: S<Vec<S<String>>>,
}

/// An outgoing call that starts a pipeline (an item's `run`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRaw {
    /// The name the pipeline reports back under.
    pub name: S<String>,
    pub url: S<String>,
    #[serde(default = "post")]
    pub method: S<String>,
    /// Headers with fixed values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are read from the environment: header → variable.
    #[serde(default)]
    pub headers_env: BTreeMap<String, S<String>>,
    /// The JSON body, with `{{placeholders}}` in its strings.
    pub body: Option<toml::Value>,
}

fn post() -> S<String> {
    Spanned::new(0..0, "POST".to_string())
}

/// A pipeline or other system that calls the HTTP API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationRaw {
    /// The name it acts under in cards and the audit log.
    pub name: S<String>,
    /// The environment variable holding its bearer token.
    pub token_env: S<String>,
    /// Services it may act on; `["*"]` for all.
    pub services: S<Vec<String>>,
    /// Runbooks it may start and report on; all when absent.
    pub runbooks: Option<Vec<S<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub default_runbook: Option<S<String>>,
    pub default_env: Option<String>,
}

/// Discord settings that are not secrets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordRaw {
    /// Register the commands in this guild (instant) instead of globally.
    pub guild: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub deployments: String,
    pub incidents: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonRaw {
    pub name: String,
    pub slack: Option<String>,
    pub discord: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRaw {
    pub name: String,
    #[serde(default)]
    pub members: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationRaw {
    pub name: String,
    pub members: S<Vec<S<String>>>,
    pub handoff: S<String>,
    pub timezone: S<String>,
    pub period: S<String>,
    /// The first hand-off, as a date (`2026-01-05`); the rotation counts from it.
    pub start: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRaw {
    pub name: String,
    pub steps: S<Vec<StepRaw>>,
    pub ack_timeout: Option<S<String>>,
    pub repeat_from: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRaw {
    pub after: S<String>,
    #[serde(default)]
    pub page: Vec<S<String>>,
    pub advice: Option<String>,
    #[serde(default = "one")]
    pub repeat: S<u32>,
}

fn empty<T>() -> S<Vec<T>> {
    Spanned::new(0..0, Vec::new())
}

fn one() -> S<u32> {
    Spanned::new(0..0, 1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub escalation: Option<S<String>>,
    pub signoff_reminder: Option<S<String>>,
    #[serde(default)]
    pub abort_roles: Vec<S<String>>,
    #[serde(default = "empty")]
    pub phases: S<Vec<PhaseRaw>>,
    pub rollback: Option<RollbackRaw>,
    pub monitoring: Option<MonitoringRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseRaw {
    pub id: S<String>,
    pub title: String,
    #[serde(default = "empty")]
    pub items: S<Vec<ItemRaw>>,
    #[serde(default)]
    pub signoffs: Vec<SignoffRaw>,
    #[serde(default)]
    pub four_eyes: bool,
}

/// The rollback phase: a phase like the others plus the roles that may start it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRaw {
    pub roles: S<Vec<S<String>>>,
    pub id: S<String>,
    pub title: String,
    #[serde(default = "empty")]
    pub items: S<Vec<ItemRaw>>,
    #[serde(default)]
    pub signoffs: Vec<SignoffRaw>,
    #[serde(default)]
    pub four_eyes: bool,
}

impl RollbackRaw {
    pub fn into_parts(self) -> (S<Vec<S<String>>>, PhaseRaw) {
        let phase = PhaseRaw {
            id: self.id,
            title: self.title,
            items: self.items,
            signoffs: self.signoffs,
            four_eyes: self.four_eyes,
        };
        (self.roles, phase)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRaw {
    pub id: S<String>,
    pub text: String,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub production_deploy: bool,
    pub check: Option<CheckRaw>,
    /// The hook (bot file `[hooks.NAME]`) a "Run" button calls.
    pub run: Option<S<String>>,
    /// Who may press "Run" (required with `run`).
    #[serde(default)]
    pub roles: Vec<S<String>>,
    /// How long the pipeline has to report back before the item fails.
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRaw {
    pub url: S<String>,
    #[serde(default = "ok_status")]
    pub expect_status: u16,
    pub timeout: Option<S<String>>,
    pub body_contains: Option<String>,
}

fn ok_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignoffRaw {
    pub role: S<String>,
    #[serde(default = "one")]
    pub quorum: S<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringRaw {
    pub schedule: S<Vec<StageRaw>>,
    #[serde(default)]
    pub probes: Vec<ProbeRaw>,
    #[serde(default)]
    pub matrix: Vec<RuleRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRaw {
    pub every: S<String>,
    pub until: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRaw {
    pub name: S<String>,
    pub http: Option<CheckRaw>,
    pub prometheus: Option<PrometheusRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRaw {
    pub url: S<String>,
    pub query: String,
    pub measures: S<String>,
    pub bearer_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRaw {
    pub severity: S<String>,
    pub error_rate_above: Option<S<f64>>,
    pub latency_above: Option<S<String>>,
    pub action: String,
}
