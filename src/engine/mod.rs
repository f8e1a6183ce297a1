//! The one application service every adapter calls. An adapter turns what a
//! platform sent into an [`Actor`] and a [`Request`]; the engine checks who
//! the actor is, lets the domain decide, and commits the new state, its audit
//! entries, its outgoing messages and its timers in one transaction before it
//! returns the [`Reply`] the adapter shows the actor.

pub mod cards;
mod checks;
pub mod command;
mod incidents;
mod monitoring;
pub mod report;

use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tracing::{error, instrument};

use crate::chat::buttons::{self, Pressed};
use crate::chat::{Card, Destination, Outgoing};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Action, Event, Person, PersonId, Platform, Run, RunId, Runbook};
use crate::metrics::METRICS;
use crate::store::{AuditEntry, Store, Timer, TimerKind, Tx};

pub use command::Command;

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
    /// A button press, with the reason typed for buttons that need one.
    Click { id: String, reason: Option<String> },
}

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

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    prober: crate::monitor::Prober,
    /// Signs the run-page links posted in chat, when the web side is set up.
    web: Option<Arc<crate::web::access::WebAccess>>,
}

const BOT: &str = "tminus";

impl Engine {
    pub fn new(store: Store, config: Arc<Config>, clock: Arc<dyn Clock>) -> Engine {
        Engine {
            store,
            config,
            clock,
            prober: crate::monitor::Prober::new(),
            web: None,
        }
    }

    /// Post signed links to run pages in root messages and reports.
    pub fn with_web(mut self, web: Arc<crate::web::access::WebAccess>) -> Engine {
        self.web = Some(web);
        self
    }

    /// A run's root message, with a link to its page when links are on.
    fn root_card(&self, run: &Run, runbook: &Runbook, now: DateTime<Utc>) -> Card {
        let mut card = cards::root_card(run, runbook, &self.config.directory);
        if let Some(link) = self.run_link(run, now) {
            card = card.section(None, vec![format!("Run page: {link}")]);
        }
        card
    }

    fn run_link(&self, run: &Run, now: DateTime<Utc>) -> Option<String> {
        self.web.as_ref()?.run_link(run.id, now)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
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
            Request::Click { .. } => &METRICS.clicks,
        };
        counter.add(actor.platform, 1);
        let answer = self.try_handle(actor, request, request_key).await;
        METRICS.ack_latency.observe(watch.seconds());
        match answer {
            Ok(reply) => reply,
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
            .config
            .directory
            .resolve(actor.platform, &actor.user)
            .cloned()
        else {
            return Ok(Reply::refuse(format!(
                "I don't know you yet: ask an administrator to add your {} user id `{}` to the people in bot-config/tminus.toml.",
                actor.platform, actor.user
            )));
        };
        match request {
            Request::Command(cmd) => self.command(actor, &person, cmd, request_key).await,
            Request::Click { id, reason } => match buttons::pressed(&id, reason) {
                Some(Pressed::Run(run, action)) => {
                    self.act(actor, &person, run, action, request_key).await
                }
                Some(Pressed::OpenIncident { run, summary }) => {
                    let Some(run) = self.store.run(run).await? else {
                        return Ok(Reply::refuse("That deployment does not exist."));
                    };
                    let severity = crate::domain::runbook::Severity::High;
                    let summary = summary.unwrap_or_default();
                    self.open_incident_on(actor, &person, run, severity, summary, request_key)
                        .await
                }
                Some(Pressed::Incident(id, action)) => {
                    self.incident_action(actor, &person, id, action, request_key)
                        .await
                }
                Some(Pressed::Recheck { run, phase }) => {
                    self.recheck(actor, &person, run, &phase, request_key).await
                }
                None => Ok(Reply::refuse(
                    "That button is not one of mine, or it is out of date.",
                )),
            },
        }
    }

    /// The deployments channel runs started from `actor` belong to.
    fn deploy_channel(&self, actor: &Actor) -> String {
        self.config
            .channels_for(actor.platform)
            .map_or_else(|| actor.channel.clone(), |c| c.deployments.clone())
    }

    fn runbook(&self, run: &Run) -> Result<&Runbook> {
        self.config.runbooks.get(&run.runbook).with_context(|| {
            format!(
                "run {} uses runbook {:?}, which is no longer configured",
                run.id, run.runbook
            )
        })
    }

    async fn command(
        &self,
        actor: &Actor,
        person: &Person,
        cmd: Command,
        key: Option<&str>,
    ) -> Result<Reply> {
        let channel = self.deploy_channel(actor);
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
            Command::List => {
                let runs = self.store.recent_runs(actor.platform, &channel, 10).await?;
                if runs.is_empty() {
                    return Ok(Reply::private(
                        "No deployments yet. Start one with /deploy start <service> <version>.",
                    ));
                }
                let lines: Vec<String> = runs
                    .iter()
                    .map(|r| {
                        format!(
                            "#{} {} {} — {} — {}, {}",
                            r.number,
                            r.service,
                            r.version,
                            r.status.label(),
                            self.config.directory.name(&r.started_by),
                            r.started_at.format("%Y-%m-%d %H:%M UTC")
                        )
                    })
                    .collect();
                Ok(Reply::private(lines.join("\n")))
            }
            Command::Status { run } => {
                let Some(run) = self.find_run(actor.platform, &channel, run, false).await? else {
                    return Ok(no_run(run_number_text(None)));
                };
                let runbook = self.runbook(&run)?;
                let phase = runbook
                    .phase(&run.phase)
                    .context("current phase missing from runbook")?;
                let mut reply = Reply::private(format!(
                    "Deployment #{} of {} {} is {}.",
                    run.number,
                    run.service,
                    run.version,
                    run.status.label()
                ));
                reply.card = Some(cards::phase_card(
                    &run,
                    runbook,
                    phase,
                    &self.config.directory,
                ));
                Ok(reply)
            }
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
                )
                .await
            }
        }
    }

    /// The run `/deploy rollback <reason>` means when it names none: the one
    /// open run of the channel that has reached production. With none, or
    /// with several, the person is asked to say which, rather than rolling
    /// back a run that was never deployed or another team's release.
    async fn rollback_target(
        &self,
        platform: Platform,
        channel: &str,
    ) -> Result<std::result::Result<Run, Reply>> {
        let mut deployed = Vec::new();
        for r in self.store.recent_runs(platform, channel, 50).await? {
            if r.status.is_open() {
                if let Some(run) = self.store.run(r.id).await? {
                    if run.t0.is_some() {
                        deployed.push(run);
                    }
                }
            }
        }
        match deployed.len() {
            1 => Ok(Ok(deployed.remove(0))),
            0 => Ok(Err(Reply::refuse(
                "No open deployment in this channel has reached production, so there is nothing to roll back. \
                 To stop one, use /deploy abort <number> <reason>.",
            ))),
            _ => {
                let numbers: Vec<String> = deployed.iter().map(|r| format!("#{}", r.number)).collect();
                Ok(Err(Reply::refuse(format!(
                    "Several deployments are in production here ({}): say which, e.g. /deploy rollback {} <reason>.",
                    numbers.join(", "),
                    deployed[0].number
                ))))
            }
        }
    }

    /// A run by number, or the latest (the latest open one if `open_only`).
    async fn find_run(
        &self,
        platform: Platform,
        channel: &str,
        number: Option<i64>,
        open_only: bool,
    ) -> Result<Option<Run>> {
        if let Some(n) = number {
            return self.store.run_by_number(platform, channel, n).await;
        }
        let recent = self.store.recent_runs(platform, channel, 50).await?;
        let pick = if open_only {
            recent.into_iter().find(|r| r.status.is_open())
        } else {
            recent.into_iter().next()
        };
        match pick {
            Some(r) => self.store.run(r.id).await,
            None => Ok(None),
        }
    }

    /// Queue one message that belongs to no run: a help answer, a private
    /// refusal. With a `request_key` it is queued once however often the
    /// platform retries; returns whether it was queued.
    pub async fn post_message(&self, msg: &Outgoing, request_key: Option<&str>) -> Result<bool> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if let Some(key) = request_key {
            if !tx.first_time(key, now).await? {
                return Ok(false);
            }
        }
        tx.enqueue(None, msg, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The Markdown deployment log of a run.
    pub async fn report(&self, run: &Run) -> Result<String> {
        let audit = self.store.audit_for_run(run.id).await?;
        let ticks = self.store.ticks_for_run(run.id).await?;
        let incidents = self.store.incidents_for_run(run.id).await?;
        Ok(report::markdown(
            run,
            self.runbook(run)?,
            &self.config.directory,
            &audit,
            &ticks,
            &incidents,
        ))
    }

    /// The whole report of a run, for the person who asked: a direct
    /// message of as many parts as the platform needs (an answer to a
    /// command holds a few thousand characters at most; a report can hold
    /// tens of thousands), with the run page's link in the answer and the
    /// report.
    async fn send_report(
        &self,
        actor: &Actor,
        person: &Person,
        run: &Run,
        key: Option<&str>,
    ) -> Result<Reply> {
        let now = self.clock.now();
        let md = self.report(run).await?;
        let link = self.run_link(run, now);
        let mut tx = self.store.begin().await?;
        if let Some(key) = key {
            if !tx.first_time(key, now).await? {
                return Ok(Reply::private(
                    "Already sent: this request was handled before.",
                ));
            }
        }
        let msg = Outgoing {
            platform: actor.platform,
            to: Destination::Direct {
                person: person.id.clone(),
            },
            key: None,
            card: cards::report_card(run, &md, link.as_deref()),
        };
        tx.enqueue(Some(run.id), &msg, now).await?;
        tx.commit().await?;
        let mut text = format!(
            "The report of deployment #{} ({} lines) is on its way to you by direct message.",
            run.number,
            md.lines().count()
        );
        if let Some(link) = link {
            text.push_str(&format!(" Run page: {link}"));
        }
        Ok(Reply::private(text))
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        &self,
        actor: &Actor,
        person: &Person,
        channel: &str,
        service: &str,
        version: &str,
        runbook: Option<String>,
        env: Option<String>,
        key: Option<&str>,
    ) -> Result<Reply> {
        let name = runbook.unwrap_or_else(|| self.config.default_runbook.clone());
        let Some(runbook) = self.config.runbooks.get(&name) else {
            let known: Vec<&str> = self.config.runbooks.keys().map(String::as_str).collect();
            return Ok(Reply::refuse(format!(
                "There is no runbook `{name}`. Runbooks: {}.",
                known.join(", ")
            )));
        };
        let now = self.clock.now();
        let env = env.unwrap_or_else(|| self.config.default_env.clone());
        let mut tx = self.store.begin().await?;
        if let Some(key) = key {
            if !tx.first_time(key, now).await? {
                return Ok(Reply::private(
                    "Already started: this request was handled before.",
                ));
            }
        }
        let mut run = Run::start(
            runbook,
            actor.platform,
            channel,
            service,
            version,
            &env,
            &person.id,
            now,
        );
        tx.insert_run(&mut run).await?;
        let detail = format!(
            "started {} {} on {} with runbook {}",
            run.service, run.version, run.env, runbook.id
        );
        tx.audit(&self.audit_entry(
            &run,
            &person.id.to_string(),
            actor,
            "run.started",
            detail,
            now,
        ))
        .await?;
        let dir = &self.config.directory;
        self.send(
            &mut tx,
            &run,
            Destination::Channel {
                channel: run.channel.clone(),
            },
            Some(cards::root_key(&run)),
            self.root_card(&run, runbook, now),
            now,
        )
        .await?;
        let first = &runbook.phases[0];
        self.send_thread(
            &mut tx,
            &run,
            Some(cards::phase_key(&run, &first.id)),
            cards::phase_card(&run, runbook, first, dir),
            now,
        )
        .await?;
        self.schedule_reminder(&mut tx, &run, runbook, 1, now)
            .await?;
        self.schedule_checks(&mut tx, &run, runbook, now).await?;
        tx.commit().await?;
        Ok(Reply::changed(format!(
            "Started deployment #{} of {} {} with runbook {}; follow it in the thread.",
            run.number, run.service, run.version, runbook.id
        )))
    }

    /// Apply a domain action to a run: lock, decide, save, announce, commit.
    #[instrument(skip_all, fields(run_id = %run_id))]
    async fn act(
        &self,
        actor: &Actor,
        person: &Person,
        run_id: RunId,
        action: Action,
        key: Option<&str>,
    ) -> Result<Reply> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let (run, new) = tx.lock_run_once(run_id, key, now).await?;
        let Some(mut run) = run else {
            return Ok(Reply::refuse("That deployment does not exist."));
        };
        let runbook = self.runbook(&run)?;
        let before = run.clone();
        let events = match run.decide(runbook, &self.config.directory, &person.id, action, now) {
            Ok(events) => events,
            Err(refusal) => return Ok(Reply::refuse(capitalise(&refusal.to_string()))),
        };
        if events.is_empty() {
            return Ok(Reply::private("Nothing to change: that was already done."));
        }
        if !new {
            return Ok(Reply::private("Already handled."));
        }
        tx.save_run(&before, &run).await?;
        let summary = self
            .announce(
                &mut tx, &before, &run, runbook, &person.id, actor, &events, now,
            )
            .await?;
        tx.commit().await?;
        Ok(Reply::changed(summary))
    }

    /// Audit every event and queue what others should see; returns a summary for the actor.
    #[allow(clippy::too_many_arguments)]
    async fn announce(
        &self,
        tx: &mut Tx,
        before: &Run,
        run: &Run,
        runbook: &Runbook,
        who: &PersonId,
        actor: &Actor,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<String> {
        let dir = &self.config.directory;
        let name = dir.name(who).to_string();
        let item_text = |phase: &str, item: &str| {
            runbook
                .phase(phase)
                .and_then(|p| p.item(item))
                .map_or(item.to_string(), |i| i.text.clone())
        };
        let phase_title = |phase: &str| {
            runbook
                .phase(phase)
                .map_or(phase.to_string(), |p| p.title.clone())
        };
        let mut summary = Vec::new();
        let mut notices = Vec::new();
        for event in events {
            let detail = match event {
                Event::ItemDone { phase, item } => {
                    format!("{name} marked done: {}", item_text(phase, item))
                }
                Event::ItemUndone { phase, item } => {
                    format!("{name} undid: {}", item_text(phase, item))
                }
                Event::ItemNotApplicable {
                    phase,
                    item,
                    reason,
                } => {
                    format!(
                        "{name} marked not applicable: {} ({reason})",
                        item_text(phase, item)
                    )
                }
                Event::ProductionDeployed => {
                    let text = format!("🚀 Production deploy done — T0 is {}", cards::hhmm(now));
                    notices.push(text.clone());
                    format!(
                        "production deploy recorded by {name}; T0 {}",
                        now.to_rfc3339()
                    )
                }
                Event::SignedOff { phase, role } => {
                    format!(
                        "{name} signed off {} for {}",
                        phase_title(phase),
                        dir.role_name(role)
                    )
                }
                Event::Rejected {
                    phase,
                    role,
                    reason,
                } => {
                    let text = format!(
                        "❌ {name} rejected the {} sign-off for {}: {reason}",
                        dir.role_name(role),
                        phase_title(phase)
                    );
                    notices.push(text.clone());
                    text
                }
                Event::PhaseEntered { from, to } => {
                    format!(
                        "{name} finished {} and moved to {}",
                        phase_title(from),
                        phase_title(to)
                    )
                }
                Event::Completed => {
                    let mut text = format!("🎉 Deployment #{} completed.", run.number);
                    if let Some(cut) = monitoring_cut_short(run, runbook, now) {
                        text.push(' ');
                        text.push_str(&cut);
                    }
                    notices.push(text);
                    format!("{name} completed the deployment")
                }
                Event::CheckPassed {
                    phase,
                    item,
                    detail,
                } => {
                    format!(
                        "automated check passed: {} ({detail})",
                        item_text(phase, item)
                    )
                }
                Event::CheckFailed {
                    phase,
                    item,
                    detail,
                } => {
                    let text = format!(
                        "❌ Automated check failed: {} — {detail}",
                        item_text(phase, item)
                    );
                    // Said in the thread when it starts failing, not at every re-run.
                    if before.check(phase, item).is_none_or(|c| c.passed) {
                        notices.push(text.clone());
                    }
                    text
                }
                Event::Aborted { reason } => {
                    notices.push(format!(
                        "🛑 {name} aborted deployment #{}: {reason}",
                        run.number
                    ));
                    format!("{name} aborted the deployment: {reason}")
                }
                Event::RollbackStarted { from, reason } => {
                    notices.push(format!(
                        "⏪ {name} started a rollback during {}: {reason}",
                        phase_title(from)
                    ));
                    format!("{name} started a rollback: {reason}")
                }
                Event::FixForwardChosen { reason } => {
                    let text =
                        format!("🔧 {name} chose to fix forward instead of rolling back: {reason}");
                    notices.push(text.clone());
                    text
                }
                Event::RolledBack => {
                    notices.push(format!("⏪ Deployment #{} rolled back.", run.number));
                    format!("{name} finished the rollback")
                }
            };
            tx.audit(&self.audit_entry(
                run,
                who.as_str(),
                actor,
                event.name(),
                detail.clone(),
                now,
            ))
            .await?;
            summary.push(detail);
        }

        if events
            .iter()
            .any(|e| matches!(e, Event::ProductionDeployed))
        {
            self.schedule_first_tick(tx, run, runbook).await?;
        }
        // The card of the phase acted on, edited in place.
        if let Some(phase) = runbook.phase(&before.phase) {
            let card = cards::phase_card(run, runbook, phase, dir);
            self.send_thread(tx, run, Some(cards::phase_key(run, &phase.id)), card, now)
                .await?;
        }
        for text in notices {
            let mut card = cards::notice(text);
            if events.iter().any(|e| matches!(e, Event::Rejected { .. })) {
                card.mentions.push(run.started_by.clone());
            }
            self.send_thread(tx, run, None, card, now).await?;
        }
        if run.phase != before.phase && run.status.is_open() {
            if let Some(phase) = runbook.phase(&run.phase) {
                let card = cards::phase_card(run, runbook, phase, dir);
                self.send_thread(tx, run, Some(cards::phase_key(run, &phase.id)), card, now)
                    .await?;
                self.schedule_reminder(tx, run, runbook, 1, now).await?;
                self.schedule_checks(tx, run, runbook, now).await?;
            }
        }
        if run.status != before.status || run.phase != before.phase {
            let root = self.root_card(run, runbook, now);
            self.send(
                tx,
                run,
                Destination::Channel {
                    channel: run.channel.clone(),
                },
                Some(cards::root_key(run)),
                root,
                now,
            )
            .await?;
        }
        if !run.status.is_open() {
            // The report reads the audit log written above, in this transaction.
            let audit = tx.audit_for_run(run.id).await?;
            let ticks = tx.ticks_for_run(run.id).await?;
            let incidents = tx.incidents_for_run(run.id).await?;
            let md = report::markdown(run, runbook, dir, &audit, &ticks, &incidents);
            let card = cards::report_card(run, &md, self.run_link(run, now).as_deref());
            self.send_thread(tx, run, Some(format!("run:{}:report", run.id)), card, now)
                .await?;
        }
        Ok(summary.join("\n"))
    }

    fn audit_entry(
        &self,
        run: &Run,
        actor_key: &str,
        actor: &Actor,
        action: &str,
        detail: String,
        now: DateTime<Utc>,
    ) -> AuditEntry {
        AuditEntry {
            run: Some(run.id),
            at: now,
            actor: actor_key.to_string(),
            platform: actor.platform.to_string(),
            location: actor.channel.clone(),
            action: action.to_string(),
            detail,
        }
    }

    async fn send(
        &self,
        tx: &mut Tx,
        run: &Run,
        to: Destination,
        key: Option<String>,
        card: Card,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let msg = Outgoing {
            platform: run.platform,
            to,
            key,
            card,
        };
        tx.enqueue(Some(run.id), &msg, now).await
    }

    async fn send_thread(
        &self,
        tx: &mut Tx,
        run: &Run,
        key: Option<String>,
        card: Card,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let to = Destination::Thread {
            channel: run.channel.clone(),
            root: cards::root_key(run),
        };
        self.send(tx, run, to, key, card, now).await
    }

    /// Schedule the sign-off reminder of the run's current phase, if its
    /// runbook asks for one and the phase has a gate.
    async fn schedule_reminder(
        &self,
        tx: &mut Tx,
        run: &Run,
        runbook: &Runbook,
        seq: u32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (Some(after), Some(phase)) = (runbook.signoff_reminder, runbook.phase(&run.phase))
        else {
            return Ok(());
        };
        if phase.gate.is_empty() || !run.status.is_open() {
            return Ok(());
        }
        let kind = TimerKind::SignoffReminder {
            run: run.id,
            phase: phase.id.clone(),
            seq,
        };
        tx.schedule(&kind, now + after.to_chrono()).await
    }

    /// Fire one claimed timer. Exactly once: the timer is marked fired in the
    /// same transaction as its effects, and a timer already fired does nothing.
    #[instrument(skip_all, fields(timer_id = timer.id))]
    pub async fn fire(&self, timer: &Timer) -> Result<()> {
        match &timer.kind {
            TimerKind::MonitorTick { run, at } => {
                return self.monitor_tick(timer.id, *run, *at).await
            }
            TimerKind::ItemChecks { run, phase, .. } => {
                return self.run_checks(timer.id, *run, phase).await
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
            TimerKind::MonitorTick { .. } | TimerKind::ItemChecks { .. } => {
                unreachable!("handled above")
            }
        }
        tx.commit().await
    }

    async fn remind(
        &self,
        tx: &mut Tx,
        run: &Run,
        phase_id: &str,
        seq: u32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !run.status.is_open() || run.phase != phase_id {
            return Ok(());
        }
        let runbook = self.runbook(run)?;
        let Some(phase) = runbook.phase(phase_id) else {
            return Ok(());
        };
        let dir = &self.config.directory;
        // Everything the gate lacks, the four-eyes rule included.
        if !run.gate_unmet(phase, dir).is_empty() {
            let waited =
                crate::domain::Dur::from_millis((now - run.phase_entered_at).num_milliseconds());
            let card = cards::reminder_card(run, phase, dir, waited);
            let detail = format!("{} (reminder {seq})", card.plain_text().replace('\n', "; "));
            let timer_actor = timer_actor(run.platform);
            tx.audit(&self.audit_entry(run, BOT, &timer_actor, "reminder.sent", detail, now))
                .await?;
            self.send_thread(tx, run, None, card, now).await?;
        }
        // Keep watching the phase while the run stays in it; a later reject
        // can make its gate unmet again.
        self.schedule_reminder(tx, run, runbook, seq + 1, now).await
    }
}

/// Who acts when a timer fires: the bot itself.
fn timer_actor(platform: Platform) -> Actor {
    Actor {
        platform,
        user: BOT.into(),
        channel: "timer".into(),
    }
}

/// When a run completes before its monitoring window is over, the watch
/// ends with it: say so, and how far it got.
fn monitoring_cut_short(run: &Run, runbook: &Runbook, now: DateTime<Utc>) -> Option<String> {
    let (monitoring, t0) = (runbook.monitoring.as_ref()?, run.t0?);
    let window = *crate::domain::monitor::tick_offsets(monitoring).last()?;
    let since = crate::domain::Dur::from_millis((now - t0).num_milliseconds().max(0));
    (since < window)
        .then(|| format!("Monitoring stops with it, at T+{since} of its {window} window."))
}

fn no_run(which: String) -> Reply {
    Reply::refuse(format!(
        "I can't find {which} in this channel. /deploy list shows the recent ones."
    ))
}

fn run_number_text(n: Option<i64>) -> String {
    n.map_or("a deployment".to_string(), |n| format!("deployment #{n}"))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
