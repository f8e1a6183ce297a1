//! The one application service every adapter calls. An adapter turns what a
//! platform sent into an [`Actor`] and a [`Request`]; the engine checks who
//! the actor is, lets the domain decide, and commits the new state, its audit
//! entries, its outgoing messages and its timers in one transaction before it
//! returns the [`Reply`] the adapter shows the actor.

pub mod api;
pub mod cards;
mod checks;
pub mod command;
mod effects;
mod escalation;
pub mod hooks;
mod incident_cards;
mod incidents;
mod monitoring;
mod oncall;
mod reminders;
pub mod report;
mod runs;
mod versions;
mod views;
mod webhooks;

use std::sync::{Arc, RwLock};

use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::{error, instrument};

use crate::chat::buttons::{self, Pressed};
use crate::chat::Card;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Action, Person, Platform, Run, RunId, Runbook};
use crate::metrics::METRICS;
use crate::monitor::Prober;
use crate::settings::QueueSettings;
use crate::store::{Store, Timer, TimerKind};

pub use command::Command;
pub use versions::{run_label, Fate, LiveRun, Refused, Reloaded, Stranded};

/// Who acted, on which platform, in which channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub platform: Platform,
    /// The platform's user id (the person's key in the shell).
    pub user: String,
    /// Where the command was typed or the button clicked.
    pub channel: String,
}

/// What a person asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// A `/deploy …` command, already parsed.
    Command(Command),
    /// A button press, decoded once at the edge from the button's id, with
    /// the reason typed for buttons that need one.
    Click(Pressed),
}

impl Request {
    /// The press behind button `id`, with `reason`; `None` for an id tminus
    /// did not make, which the adapter refuses itself.
    pub fn click(id: &str, reason: Option<String>) -> Option<Request> {
        buttons::pressed(id, reason).map(Request::Click)
    }
}

/// The answer to a button id tminus did not make (or no longer knows).
pub const NOT_MY_BUTTON: &str = "That button is not one of mine, or it is out of date.";

/// The answer for the person who acted. Everything others see goes through
/// the outbox instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub text: String,
    /// A card to show with the answer (status shows the phase card).
    pub card: Option<Card>,
    /// True for refusals and answers meant for the actor alone.
    pub private: bool,
    /// Whether state changed.
    pub changed: bool,
    /// Whether the request was refused (not allowed, not possible, failed):
    /// the person should be told. A repeated click is neither changed nor refused.
    pub refused: bool,
}

impl Reply {
    fn private(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            card: None,
            private: true,
            changed: false,
            refused: false,
        }
    }

    fn refuse(text: impl Into<String>) -> Reply {
        Reply {
            refused: true,
            ..Reply::private(text)
        }
    }

    fn changed(text: impl Into<String>) -> Reply {
        Reply {
            changed: true,
            ..Reply::private(text)
        }
    }
}

/// Makes the signed link to a run's page that chat messages carry; the web
/// side implements it, and the engine is given one like its clock.
pub trait LinkSigner: Send + Sync {
    /// The link, or `None` when links are off (no public URL or no secret).
    fn run_link(&self, run: crate::domain::RunId, now: DateTime<Utc>) -> Option<String>;

    /// Where people and pipelines reach the server (`https://tminus.example.com`).
    fn base_url(&self) -> Option<String> {
        None
    }
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    /// The configuration in force; a reload replaces it.
    current: Arc<RwLock<Arc<versions::Current>>>,
    clock: Arc<dyn Clock>,
    prober: Prober,
    /// Signs the run-page links posted in chat, when the web side is set up.
    links: Option<Arc<dyn LinkSigner>>,
    /// Leases and give-up time for the scheduler and the outbox workers.
    queue: QueueSettings,
    /// When set (the shell), pipeline calls are written here instead of sent.
    dry_hooks: Option<Arc<std::sync::Mutex<Vec<String>>>>,
}

const BOT: &str = "tminus";

impl Engine {
    pub fn new(store: Store, config: Arc<Config>, clock: Arc<dyn Clock>) -> Engine {
        Engine {
            store,
            current: Arc::new(RwLock::new(versions::Current::new(config))),
            clock,
            prober: Prober::new(),
            links: None,
            queue: QueueSettings::default(),
            dry_hooks: None,
        }
    }

    /// Write pipeline calls to `log` as they would be sent, and send none
    /// (the shell, where there is no pipeline to call).
    pub fn with_dry_hooks(mut self, log: Arc<std::sync::Mutex<Vec<String>>>) -> Engine {
        self.dry_hooks = Some(log);
        self
    }

    /// Claim timers and messages for `queue.lease`, give up after `queue.give_up`.
    pub fn with_queue(mut self, queue: QueueSettings) -> Engine {
        self.queue = queue;
        self
    }

    pub fn queue(&self) -> &QueueSettings {
        &self.queue
    }

    /// Post signed links to run pages in root messages and reports.
    pub fn with_links(mut self, links: Arc<dyn LinkSigner>) -> Engine {
        self.links = Some(links);
        self
    }

    /// Probe with `prober` (checks and monitoring) instead of a default one.
    pub fn with_prober(mut self, prober: Prober) -> Engine {
        self.prober = prober;
        self
    }

    /// A run's root message, with a link to its page when links are on.
    fn root_card(&self, run: &Run, runbook: &Runbook, now: DateTime<Utc>) -> Card {
        let mut card = cards::root_card(run, runbook, &self.config().directory);
        if let Some(link) = self.run_link(run, now) {
            card = card.section(None, vec![format!("Run page: {link}")]);
        }
        card
    }

    fn run_link(&self, run: &Run, now: DateTime<Utc>) -> Option<String> {
        self.links.as_ref()?.run_link(run.id, now)
    }

    /// A signed link to a run's page, valid from now, when links are on.
    pub fn page_link(&self, run: &Run) -> Option<String> {
        self.run_link(run, self.clock.now())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    fn current(&self) -> Arc<versions::Current> {
        self.current.read().expect("configuration lock").clone()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Handle one request. `request_key`, when the platform gives one (an
    /// event id, an interaction id), makes a retried delivery change nothing
    /// the second time. Internal failures are logged whole and answered with
    /// a short apology that carries an id to find the log line by.
    #[instrument(skip_all, fields(platform = %actor.platform, user = %actor.user))]
    pub async fn handle(
        &self,
        actor: &Actor,
        request: Request,
        request_key: Option<&str>,
    ) -> Reply {
        let watch = crate::clock::Stopwatch::start();
        let counter = match request {
            Request::Command(_) => &METRICS.commands,
            Request::Click(_) => &METRICS.clicks,
        };
        counter.add(actor.platform, 1);
        let answer = self.try_handle(actor, request, request_key).await;
        METRICS.ack_latency.observe(watch.seconds());
        match answer {
            Ok(reply) => reply,
            Err(e) if e.is::<Stranded>() => Reply::refuse(e.to_string()),
            Err(e) => {
                let id = format!("E{:x}", self.clock.now().timestamp_millis());
                error!(error_id = %id, error = format!("{e:#}"), "request failed");
                Reply::refuse(format!(
                    "Sorry, something went wrong on my side (error {id}). Nothing was changed."
                ))
            }
        }
    }

    async fn try_handle(
        &self,
        actor: &Actor,
        request: Request,
        request_key: Option<&str>,
    ) -> Result<Reply> {
        let Some(person) = self
            .config()
            .directory
            .resolve(actor.platform, &actor.user)
            .cloned()
        else {
            return Ok(Reply::refuse(format!(
                "I don't know you yet: ask an administrator to add your {} user id `{}` to the people in bot-config/tminus.toml.",
                actor.platform, actor.user
            )));
        };
        if let Request::Click(pressed) = &request {
            if let Some(problem) = typed_problem(pressed) {
                return Ok(Reply::refuse(capitalise(&problem)));
            }
            // A run's own buttons are checked under its lock, with the run
            // loaded (`act`), which spares a read.
            if !matches!(pressed, Pressed::Run(..)) {
                if let Some(refusal) = self.out_of_place(actor, pressed).await? {
                    return Ok(refusal);
                }
            }
        }
        match request {
            Request::Command(cmd) => self.command(actor, &person, cmd, request_key).await,
            Request::Click(pressed) => match pressed {
                Pressed::Run(run, action) => {
                    self.act(actor, &person, run, action, request_key, true)
                        .await
                }
                Pressed::OpenIncident { run, summary } => {
                    let Some(run) = self.store.run(run).await? else {
                        return Ok(Reply::refuse("That deployment does not exist."));
                    };
                    let severity = crate::domain::runbook::Severity::High;
                    let summary = summary.unwrap_or_default();
                    self.open_incident_on(actor, &person, run, severity, summary, request_key)
                        .await
                }
                Pressed::Incident(id, action) => {
                    self.incident_action(actor, &person, id, action, request_key)
                        .await
                }
                Pressed::Recheck { run, phase } => {
                    self.recheck(actor, &person, run, &phase, request_key).await
                }
            },
        }
    }

    /// A click on a run's card must come from where the run lives: its
    /// platform, and its channel or its thread. Channel ids are unique
    /// across Slack workspaces and Discord servers, so this also keeps a
    /// click from another workspace or server (the same app installed
    /// twice) off the run. Incident buttons are left alone: pages are
    /// acknowledged from direct messages by design.
    async fn out_of_place(&self, actor: &Actor, pressed: &Pressed) -> Result<Option<Reply>> {
        let run = match pressed {
            Pressed::Run(run, _) => *run,
            Pressed::OpenIncident { run, .. } | Pressed::Recheck { run, .. } => *run,
            Pressed::Incident(..) => return Ok(None),
        };
        self.place_refusal(actor, run).await
    }

    /// [`Engine::out_of_place`] for a run already loaded: a click from the
    /// run's own channel needs nothing more; from elsewhere (a Discord
    /// thread is a channel of its own), the run's thread is read.
    pub(super) async fn misplaced(&self, actor: &Actor, run: &Run) -> Result<Option<Reply>> {
        if actor.platform == run.platform && actor.channel == run.channel {
            return Ok(None);
        }
        self.place_refusal(actor, run.id).await
    }

    async fn place_refusal(&self, actor: &Actor, run: RunId) -> Result<Option<Reply>> {
        // A run that does not exist is refused by the action itself.
        let Some(place) = self.store.run_place(run).await? else {
            return Ok(None);
        };
        let here = actor.platform == place.platform
            && (actor.channel == place.channel || place.thread.as_deref() == Some(&actor.channel));
        if here {
            return Ok(None);
        }
        tracing::warn!(run = run.0, from_channel = %actor.channel, "refused a click from outside the run's channel");
        Ok(Some(Reply::refuse(format!(
            "That button belongs to deployment #{} in another channel: use it there.",
            place.number
        ))))
    }

    /// The number of the run whose thread `actor` typed in, when the
    /// thread is a channel of its own (Discord) and the run lives in
    /// `channel`.
    async fn thread_run(&self, actor: &Actor, channel: &str) -> Result<Option<i64>> {
        if actor.channel == channel {
            return Ok(None);
        }
        let Some(id) = self
            .store
            .run_in_thread(actor.platform, &actor.channel)
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .store
            .run_place(id)
            .await?
            .filter(|p| p.platform == actor.platform && p.channel == channel)
            .map(|p| p.number))
    }

    /// The deployments channel runs started from `actor` belong to.
    fn deploy_channel(&self, actor: &Actor) -> String {
        self.config()
            .channels_for(actor.platform)
            .map_or_else(|| actor.channel.clone(), |c| c.deployments.clone())
    }

    async fn command(
        &self,
        actor: &Actor,
        person: &Person,
        cmd: Command,
        key: Option<&str>,
    ) -> Result<Reply> {
        let channel = self.deploy_channel(actor);
        // Typed in a run's thread without a number, a command means that run.
        let cmd = match cmd {
            Command::Status { run: None } => Command::Status {
                run: self.thread_run(actor, &channel).await?,
            },
            Command::Report { run: None } => Command::Report {
                run: self.thread_run(actor, &channel).await?,
            },
            Command::Rollback { run: None, reason } => Command::Rollback {
                run: self.thread_run(actor, &channel).await?,
                reason,
            },
            other => other,
        };
        match cmd {
            Command::Help => Ok(Reply::private(command::help())),
            Command::Oncall => self.oncall(actor.platform).await,
            Command::Override {
                person: who,
                duration,
                rotation,
            } => {
                self.override_rotation(actor, person, &who, duration, rotation, key)
                    .await
            }
            Command::Incident {
                summary,
                severity,
                run,
            } => {
                self.incident_command(actor, person, summary, severity, run, key)
                    .await
            }
            Command::Start {
                service,
                version,
                runbook,
                env,
            } => {
                self.start(
                    actor, person, &channel, &service, &version, runbook, env, key,
                )
                .await
            }
            Command::List => self.list(actor.platform, &channel).await,
            Command::Status { run } => self.status(actor.platform, &channel, run).await,
            Command::Report { run } => {
                let Some(run) = self.find_run(actor.platform, &channel, run, false).await? else {
                    return Ok(no_run(run_number_text(run)));
                };
                self.send_report(actor, person, &run, key).await
            }
            Command::Abort { run, reason } => {
                let Some(found) = self
                    .find_run(actor.platform, &channel, Some(run), false)
                    .await?
                else {
                    return Ok(no_run(run_number_text(Some(run))));
                };
                self.act(
                    actor,
                    person,
                    found.id,
                    Action::Abort {
                        reason: Some(reason),
                    },
                    key,
                    false,
                )
                .await
            }
            Command::Rollback { run, reason } => {
                let found = match run {
                    Some(_) => self.find_run(actor.platform, &channel, run, true).await?,
                    None => match self.rollback_target(actor.platform, &channel).await? {
                        Ok(found) => Some(found),
                        Err(refusal) => return Ok(refusal),
                    },
                };
                let Some(found) = found else {
                    return Ok(no_run(run_number_text(run)));
                };
                self.act(
                    actor,
                    person,
                    found.id,
                    Action::Rollback {
                        reason: Some(reason),
                    },
                    key,
                    false,
                )
                .await
            }
        }
    }

    /// Fire one claimed timer. Exactly once: the timer is marked fired in the
    /// same transaction as its effects, and a timer already fired does nothing.
    #[instrument(skip_all, fields(timer_id = timer.id))]
    pub async fn fire(&self, timer: &Timer) -> Result<()> {
        match self.fire_timer(timer).await {
            // A run that cannot go on has nothing to remind or probe: the
            // timer is done, not retried.
            Err(e) if e.is::<Stranded>() => {
                tracing::warn!(timer_id = timer.id, error = %e, "timer of a stranded run dropped");
                let mut tx = self.store.begin().await?;
                tx.mark_fired(timer.id, self.clock.now()).await?;
                tx.commit().await
            }
            other => other,
        }
    }

    async fn fire_timer(&self, timer: &Timer) -> Result<()> {
        match &timer.kind {
            TimerKind::MonitorTick { run, at } => {
                return self.monitor_tick(timer.id, *run, *at).await
            }
            TimerKind::ItemChecks { run, phase, .. } => {
                return self.run_checks(timer.id, *run, phase).await
            }
            TimerKind::HookCall { call, attempt, .. } => {
                return self.call_pipeline(timer.id, *call, *attempt).await
            }
            TimerKind::HookTimeout { call, .. } => {
                return self.pipeline_timeout(timer.id, *call).await
            }
            _ => {}
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx.mark_fired(timer.id, now).await? {
            return Ok(());
        }
        match &timer.kind {
            TimerKind::SignoffReminder { run, phase, seq } => {
                if let Some(run) = tx.lock_run(*run).await? {
                    self.remind(&mut tx, &run, phase, *seq, now).await?;
                }
            }
            TimerKind::Escalate {
                incident,
                generation,
                seq,
            } => {
                self.fire_escalation(&mut tx, *incident, *generation, *seq, now)
                    .await?
            }
            TimerKind::AckTimeout {
                incident,
                generation,
            } => {
                self.fire_ack_timeout(&mut tx, *incident, *generation, now)
                    .await?
            }
            TimerKind::MonitorTick { .. }
            | TimerKind::ItemChecks { .. }
            | TimerKind::HookCall { .. }
            | TimerKind::HookTimeout { .. } => {
                unreachable!("handled above")
            }
        }
        tx.commit().await
    }
}

/// Who acts when a timer fires: the bot itself.
pub(super) fn timer_actor(platform: Platform) -> Actor {
    Actor {
        platform,
        user: BOT.into(),
        channel: "timer".into(),
    }
}

/// What is wrong with the text typed in a button's dialog (a reason, an
/// incident's summary, a resolution note), if anything: the same limits
/// the typed commands have.
fn typed_problem(pressed: &Pressed) -> Option<String> {
    use crate::domain::incident::IncidentAction;
    let (what, text, max) = match pressed {
        Pressed::Run(_, action) => ("reason", action.reason()?, command::MAX_REASON),
        Pressed::OpenIncident { summary, .. } => {
            ("summary", summary.as_deref()?, command::MAX_SUMMARY)
        }
        Pressed::Incident(_, IncidentAction::Resolve { note }) => {
            ("note", note.as_deref()?, command::MAX_REASON)
        }
        _ => return None,
    };
    command::text_problem(what, text, max)
}

pub(super) fn no_run(which: String) -> Reply {
    Reply::refuse(format!(
        "I can't find {which} in this channel. /deploy list shows the recent ones."
    ))
}

pub(super) fn run_number_text(n: Option<i64>) -> String {
    n.map_or("a deployment".to_string(), |n| format!("deployment #{n}"))
}

pub(super) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
