//! Loading and checking `bot-config/`: the bot file (`tminus.toml`) and every
//! `runbooks/*.toml`. Problems are collected, not stopped at, so
//! `tminus check-config` can list them all, each with file, line and key.

mod build;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::domain::{Directory, Policy, Rotation, Runbook};

pub use build::{pinned_runbook, BOT_FILE};

/// Deployments and incidents channel on one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPair {
    pub deployments: String,
    pub incidents: String,
}

/// Everything in `bot-config/`, checked and resolved.
#[derive(Clone, Debug)]
pub struct Config {
    pub dir: PathBuf,
    pub listen: String,
    /// Channels by platform name (`slack`, `discord`, `shell`).
    pub channels: BTreeMap<String, ChannelPair>,
    pub directory: Directory,
    pub rotations: BTreeMap<String, Rotation>,
    pub policies: BTreeMap<String, Policy>,
    pub runbooks: BTreeMap<String, Runbook>,
    pub default_runbook: String,
    pub default_env: String,
    /// The Discord guild to register commands in; globally when absent.
    pub discord_guild: Option<String>,
    /// Systems that may call the HTTP API, by key.
    pub integrations: BTreeMap<String, Integration>,
    /// Outgoing calls that start pipelines, by key.
    pub hooks: BTreeMap<String, Hook>,
    /// Endpoints subscribed to events, by key.
    pub webhooks: BTreeMap<String, Webhook>,
}

/// The events a webhook endpoint may subscribe to.
pub const WEBHOOK_EVENTS: [&str; 9] = [
    "run.started",
    "phase.advanced",
    "item.done",
    "run.completed",
    "run.aborted",
    "run.rolled_back",
    "incident.opened",
    "incident.acknowledged",
    "incident.resolved",
];

/// An endpoint subscribed to events: each is signed with the secret in
/// `secret_env` and delivered in order, through the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub secret_env: String,
    pub events: Vec<String>,
}

impl Config {
    /// The endpoints subscribed to `event`.
    pub fn subscribers<'a>(&'a self, event: &'a str) -> impl Iterator<Item = &'a Webhook> {
        self.webhooks
            .values()
            .filter(move |w| w.events.iter().any(|e| e == event))
    }
}

/// An outgoing call that starts a pipeline: where, how, and what to send.
/// Its URL comes from the bot file only, never from a message or a call.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub id: String,
    /// The name the pipeline reports back under, in cards and the audit log.
    pub name: String,
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    /// Header → environment variable holding its value.
    pub headers_env: BTreeMap<String, String>,
    /// JSON with `{{placeholders}}` in its strings.
    pub body: Option<serde_json::Value>,
}

/// A pipeline (GitHub Actions, GitLab CI, Jenkins, Argo CD…) or any other
/// system allowed to call `/api/v1`, with what it may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integration {
    pub id: String,
    /// The name it acts under in cards and the audit log.
    pub name: String,
    /// The environment variable its bearer token is read from.
    pub token_env: String,
    /// Services it may act on; `None` for all.
    pub services: Option<Vec<String>>,
    /// Runbooks it may start and report on; `None` for all.
    pub runbooks: Option<Vec<String>>,
}

impl Integration {
    /// Whether the integration may act on runs of `service` with `runbook`.
    pub fn may_act_on(&self, service: &str, runbook: &str) -> bool {
        let has = |list: &Option<Vec<String>>, v: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|x| x == v))
        };
        has(&self.services, service) && has(&self.runbooks, runbook)
    }
}

impl Config {
    /// Load and check every file under `dir`.
    pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
        build::load(dir)
    }

    pub fn channels_for(&self, platform: crate::domain::Platform) -> Option<&ChannelPair> {
        self.channels.get(platform.as_str())
    }

    /// One line for people: what was loaded.
    pub fn summary(&self) -> String {
        format!(
            "{} people, {} roles, {} runbooks ({}), {} rotations, {} escalation policies",
            self.directory.people.len(),
            self.directory.roles.len(),
            self.runbooks.len(),
            self.runbooks.keys().cloned().collect::<Vec<_>>().join(", "),
            self.rotations.len(),
            self.policies.len()
        )
    }
}

/// A secret from the environment: usable, never printed (its `Debug` hides it).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// Dotted path of the key, e.g. `phases[2].items[0].id`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every problem found; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The placeholders a hook's body may use, each `{{name}}` in a string.
pub const PLACEHOLDERS: [&str; 9] = [
    "service",
    "version",
    "env",
    "run_id",
    "run_number",
    "phase",
    "item",
    "callback_url",
    "callback_token",
];

/// Replace every `{{name}}` in the strings of `body` by its value.
pub fn fill(body: &serde_json::Value, values: &[(&str, String)]) -> serde_json::Value {
    match body {
        serde_json::Value::String(s) => {
            let mut out = s.clone();
            for (name, value) in values {
                out = out.replace(&format!("{{{{{name}}}}}"), value);
            }
            serde_json::Value::String(out)
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| fill(v, values)).collect())
        }
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The `{{names}}` a body uses that are not placeholders.
pub fn unknown_placeholders(body: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    match body {
        serde_json::Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("}}") else { break };
                let name = after[..end].trim();
                if !PLACEHOLDERS.contains(&name) {
                    found.push(name.to_string());
                }
                rest = &after[end + 2..];
            }
        }
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|v| found.extend(unknown_placeholders(v))),
        serde_json::Value::Object(map) => map
            .values()
            .for_each(|v| found.extend(unknown_placeholders(v))),
        _ => {}
    }
    found
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
