//! Pinned runbooks and live configuration: every run follows the runbook
//! version it started with, built against the bot file now in force; a
//! reload swaps the configuration at once for everything after it, unless
//! it would leave a live run unable to go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tracing::{info, warn};

use super::Engine;
use crate::config::{pinned_runbook, Config};
use crate::domain::runbook::short_hash;
use crate::domain::{Phase, Run, RunStatus, Runbook};
use crate::metrics::METRICS;

/// The configuration in force, with the runbooks of the versions runs pin,
/// built against it on first use. A reload replaces the whole value, so a
/// runbook built against an older bot file is never used after it.
pub(super) struct Current {
    pub(super) config: Arc<Config>,
    pinned: Mutex<HashMap<String, Arc<Runbook>>>,
}

impl Current {
    pub(super) fn new(config: Arc<Config>) -> Arc<Current> {
        Arc::new(Current {
            config,
            pinned: Mutex::new(HashMap::new()),
        })
    }
}

/// A run that cannot go on: its runbook version is gone or no longer fits
/// the run. It is answered with this message, never as an internal error,
/// and can still be aborted.
#[derive(Debug)]
pub struct Stranded(pub String);

impl std::fmt::Display for Stranded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stranded {}

/// What a reload did, for the log and the shell.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// One line per runbook whose text changed: its new version, and the
    /// live runs that stay on the one they pinned.
    pub changes: Vec<String>,
}

/// Why a reload was refused: the live runs it would strand, each named.
#[derive(Debug)]
pub struct Refused(pub Vec<String>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the new configuration would strand {} live run(s), so nothing changed:",
            self.0.len()
        )?;
        for line in &self.0 {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// How a live run fares under a configuration.
#[derive(Debug)]
pub struct LiveRun {
    pub run: Run,
    /// `web-service @ 1a2b3c4d`, or the runbook's name when the run follows
    /// no stored version.
    pub label: String,
    /// What the configuration means for it: nothing, a newer version that it
    /// does not follow, or why it cannot go on.
    pub fate: Fate,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its version is also the file's version now.
    Current,
    /// The file has another version; new runs follow that, this one stays.
    Newer(String),
    /// The file is gone; the run keeps its version.
    FileGone,
    /// It is from before versions and follows none yet; the next start of
    /// `serve` or `shell` pins it to this version of its file.
    WillPin(String),
    /// It cannot go on under this configuration: why.
    Stranded(String),
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fate::Current => f.write_str("follows the runbook file as it is"),
            Fate::Newer(file) => write!(
                f,
                "keeps its version; the file is now {file}, which new runs follow"
            ),
            Fate::FileGone => f.write_str("keeps its version; its runbook file is gone"),
            Fate::WillPin(file) => write!(f, "follows no version yet; will be pinned to {file}"),
            Fate::Stranded(why) => write!(f, "STRANDED: {why}"),
        }
    }
}

impl Engine {
    /// The runbook `run` follows: its pinned version, built against the bot
    /// file in force. A [`Stranded`] error when that cannot be.
    pub async fn runbook(&self, run: &Run) -> Result<Arc<Runbook>> {
        let current = self.current();
        let runbook = self.pinned_in(&current, run).await?;
        if runbook.phase(&run.phase).is_none() {
            return Err(stranded(
                run,
                &runbook.label(),
                &format!("its current phase `{}` is not in that runbook", run.phase),
            ));
        }
        Ok(runbook)
    }

    /// `run`'s pinned runbook as `current`'s bot file builds it.
    async fn pinned_in(&self, current: &Current, run: &Run) -> Result<Arc<Runbook>> {
        let Some(hash) = run.runbook_version.as_deref() else {
            return Err(stranded(
                run,
                &run.runbook,
                "its runbook file was gone when tminus began keeping versions",
            ));
        };
        if let Some(found) = current.pinned.lock().expect("pinned runbooks").get(hash) {
            return Ok(found.clone());
        }
        let runbook = match current.config.runbooks.get(&run.runbook) {
            Some(file) if file.version.hash == hash => Arc::new(file.clone()),
            _ => {
                let label = run_label(run);
                let Some((name, version)) = self.store.version(hash).await? else {
                    return Err(stranded(run, &label, "that version is not stored"));
                };
                match pinned_runbook(&current.config, &name, &version.source) {
                    Ok(runbook) => Arc::new(runbook),
                    Err(problems) => {
                        let problems = problems.to_string().replace('\n', "; ");
                        return Err(stranded(run, &label, &problems));
                    }
                }
            }
        };
        current
            .pinned
            .lock()
            .expect("pinned runbooks")
            .insert(hash.to_string(), runbook.clone());
        Ok(runbook)
    }

    /// The runbook to show `run` with (its run page, the report): the one it
    /// follows, or for a stranded run what [`Engine::abort_runbook`] gives,
    /// with the reason it cannot go on.
    pub async fn runbook_to_show(&self, run: &Run) -> Result<(Arc<Runbook>, Option<String>)> {
        match self.runbook(run).await {
            Ok(runbook) => Ok((runbook, None)),
            Err(e) if e.is::<Stranded>() => {
                Ok((self.abort_runbook(run).await?, Some(e.to_string())))
            }
            Err(e) => Err(e),
        }
    }

    /// What an abort of a stranded run acts on: its pinned runbook when it
    /// still builds (its abort roles hold) with the run's phase added back
    /// when it is missing, or an empty one-phase runbook that only lets the
    /// person who started the run abort it.
    pub(super) async fn abort_runbook(&self, run: &Run) -> Result<Arc<Runbook>> {
        let current = self.current();
        let mut runbook = match self.pinned_in(&current, run).await {
            Ok(runbook) => (*runbook).clone(),
            Err(_) => Runbook {
                id: run.runbook.clone(),
                name: run.runbook.clone(),
                description: String::new(),
                phases: Vec::new(),
                rollback: None,
                abort_roles: Vec::new(),
                signoff_reminder: None,
                monitoring: None,
                escalation: None,
                version: Default::default(),
            },
        };
        if runbook.phase(&run.phase).is_none() {
            runbook.phases.push(Phase {
                id: run.phase.clone(),
                title: format!("{} (no longer in the runbook)", run.phase),
                items: Vec::new(),
                gate: Default::default(),
            });
        }
        Ok(Arc::new(runbook))
    }

    /// Pin every run from before versions to its runbook file as it is now;
    /// runs whose file is gone stay unpinned and are shown as stranded.
    pub async fn pin_unpinned_runs(&self) -> Result<u64> {
        let config = self.config();
        let now = self.clock.now();
        let mut pinned = 0;
        for runbook in config.runbooks.values() {
            pinned += self.store.pin_unpinned(runbook, now).await?;
        }
        if pinned > 0 {
            info!(
                pinned,
                "runs from before runbook versions now follow their file as it is"
            );
        }
        Ok(pinned)
    }

    /// Every live run, with what `config` would mean for it.
    pub async fn live_runs_under(&self, config: &Arc<Config>) -> Result<Vec<LiveRun>> {
        let trial = Current::new(config.clone());
        let mut out = Vec::new();
        for run in self.live_runs().await? {
            let fate = self.fate(&trial, &run).await?;
            let label = run_label(&run);
            out.push(LiveRun { run, label, fate });
        }
        Ok(out)
    }

    async fn live_runs(&self) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        for id in self.store.open_run_ids().await? {
            runs.extend(self.store.run(id).await?);
        }
        Ok(runs)
    }

    /// What the configuration of `trial` means for `run`.
    async fn fate(&self, trial: &Current, run: &Run) -> Result<Fate> {
        if run.runbook_version.is_none() {
            if let Some(file) = trial.config.runbooks.get(&run.runbook) {
                if file.phase(&run.phase).is_some() {
                    return Ok(Fate::WillPin(file.label()));
                }
            }
        }
        Ok(match self.pinned_in(trial, run).await {
            Err(e) => Fate::Stranded(e.downcast::<Stranded>()?.0),
            Ok(runbook) if runbook.phase(&run.phase).is_none() => Fate::Stranded(format!(
                "its current phase `{}` is not in its runbook",
                run.phase
            )),
            Ok(_) => match trial.config.runbooks.get(&run.runbook) {
                None => Fate::FileGone,
                Some(file) if Some(&file.version.hash) == run.runbook_version.as_ref() => {
                    Fate::Current
                }
                Some(file) => Fate::Newer(file.label()),
            },
        })
    }

    /// Read `bot-config/` again and put it in force (SIGHUP, the shell's
    /// `reload`). With any problem nothing changes: every problem in the
    /// files is logged as `file:line: key: message`, or the runs the new
    /// files would strand are named. Counted in `/metrics` either way.
    pub async fn reload_files(&self) -> Result<Reloaded> {
        let dir = self.config().dir.clone();
        let outcome = match Config::load(&dir) {
            Err(problems) => {
                for problem in &problems.0 {
                    warn!(%problem, "reload refused: a problem in the configuration");
                }
                Err(anyhow::anyhow!(
                    "{problems}\n{} problem(s) in {}; the configuration in force is unchanged",
                    problems.0.len(),
                    dir.display()
                ))
            }
            Ok(config) => self.reload(config).await,
        };
        let at = self.clock.now().timestamp();
        match &outcome {
            Ok(done) => {
                METRICS.reloads.record(true, at);
                info!(changes = done.changes.len(), summary = %self.config().summary(), "configuration reloaded");
                for change in &done.changes {
                    info!(%change, "runbook changed");
                }
            }
            Err(e) => {
                METRICS.reloads.record(false, at);
                warn!(error = %e, "configuration not reloaded");
            }
        }
        outcome
    }

    /// Put `config` in force, unless a live run that can go on now could
    /// not under it: then nothing changes and every such run is named.
    pub async fn reload(&self, config: Config) -> Result<Reloaded> {
        let now = self.current();
        let trial = Current::new(Arc::new(config));
        let mut stranded = Vec::new();
        let mut changes = Vec::new();
        for run in self.live_runs().await? {
            let what = format!(
                "deployment #{} ({} {}, runbook {}, channel {})",
                run.number,
                run.service,
                run.version,
                run_label(&run),
                run.channel
            );
            if let Fate::Stranded(_) = self.fate(&now, &run).await? {
                // Already unable to go on; a reload can only help it.
                continue;
            }
            match self.fate(&trial, &run).await? {
                Fate::Stranded(why) => stranded.push(format!("{what}: {why}")),
                Fate::Newer(file) => changes.push(format!(
                    "{what} stays on its version; new runs follow {file}"
                )),
                Fate::Current | Fate::FileGone | Fate::WillPin(_) => {}
            }
        }
        if !stranded.is_empty() {
            warn!(
                runs = stranded.len(),
                "reload refused: it would strand live runs"
            );
            return Err(Refused(stranded).into());
        }
        *self.current.write().expect("configuration lock") = trial;
        Ok(Reloaded { changes })
    }
}

/// `web-service @ 1a2b3c4d`: the runbook and version `run` follows (only
/// the runbook's name for a run that follows no stored version).
pub fn run_label(run: &Run) -> String {
    run.runbook_version.as_deref().map_or_else(
        || run.runbook.clone(),
        |h| format!("{} @ {}", run.runbook, short_hash(h)),
    )
}

/// The refusal for a run that cannot go on, saying who can end it.
fn stranded(run: &Run, label: &str, why: &str) -> anyhow::Error {
    let status = if run.status == RunStatus::RollingBack {
        "rolling back"
    } else {
        "live"
    };
    Stranded(format!(
        "Deployment #{} ({} {}) is {status} but cannot go on: it follows runbook {label}, and {why}. \
         The person who started it, or anyone with one of its abort roles, can end it with \
         /deploy abort {} REASON.",
        run.number, run.service, run.version, run.number
    ))
    .into()
}
