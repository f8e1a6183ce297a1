//! Runs: starting one, applying a person's action to it (lock, decide,
//! save, announce, commit), and what others see of each change: the audit
//! entries, the edited cards, the notices, the root message, the report.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::instrument;

use super::effects::{audit_entry, To};
use super::{capitalise, cards, report, Actor, Engine, Reply, Stranded};
use crate::chat::keys;
use crate::domain::runbook::Phase;
use crate::domain::{Action, Event, Person, PersonId, ReportStatus, Run, RunId, Runbook};
use crate::store::Tx;

/// What [`Engine::act_in`] did.
pub(super) enum Acted {
    /// No such run.
    Missing,
    /// The domain refused, for this reason.
    Refused(crate::domain::Refusal),
    /// Allowed, but it was already so: nothing written.
    Unchanged(Run),
    /// The request's key was handled before.
    Repeat,
    /// A click from outside the run's channel and thread, refused with this
    /// answer (only when the caller asked for the check).
    Misplaced(Reply),
    /// Saved and announced in the transaction, not committed yet.
    Changed { run: Run, summary: String },
}

impl Engine {
    /// A phase opened: its card in the thread, its first sign-off reminder
    /// and its automated checks.
    async fn open_phase(
        &self,
        tx: &mut Tx,
        run: &Run,
        runbook: &Runbook,
        phase: &Phase,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.send_phase_card(tx, run, runbook, phase, now).await?;
        self.schedule_reminder(tx, run, runbook, 1, now).await?;
        self.schedule_checks(tx, run, runbook, now).await?;
        Ok(())
    }

    /// Queue `phase`'s card in the run's thread; its key makes it an edit
    /// of the card posted before.
    async fn send_phase_card(
        &self,
        tx: &mut Tx,
        run: &Run,
        runbook: &Runbook,
        phase: &Phase,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let card = cards::phase_card(run, runbook, phase, &self.config().directory);
        let key = keys::phase(run.id, &phase.id);
        self.send(tx, To::Thread(run), Some(key), card, now).await
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start(
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
        let config = self.config();
        let name = runbook.unwrap_or_else(|| config.default_runbook.clone());
        let Some(runbook) = config.runbooks.get(&name) else {
            let known: Vec<&str> = config.runbooks.keys().map(String::as_str).collect();
            return Ok(Reply::refuse(format!(
                "There is no runbook `{name}`. Runbooks: {}.",
                known.join(", ")
            )));
        };
        let now = self.clock.now();
        let env = env.unwrap_or_else(|| self.config().default_env.clone());
        let mut tx = self.store.begin().await?;
        if let Some(key) = key {
            if !tx.first_time(key, now).await? {
                return Ok(Reply::private(
                    "Already started: this request was handled before.",
                ));
            }
        }
        let run = Run::start(
            runbook,
            actor.platform,
            channel,
            service,
            version,
            &env,
            &person.id,
            now,
        );
        let run = self.open_run(&mut tx, actor, run, runbook, now).await?;
        tx.commit().await?;
        Ok(Reply::changed(format!(
            "Started deployment #{} of {} {} with runbook {}; follow it in the thread.",
            run.number, run.service, run.version, runbook.id
        )))
    }

    /// Insert a new run with its runbook version, audit it, and queue its
    /// root message and first phase; the caller commits.
    pub(super) async fn open_run(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        mut run: Run,
        runbook: &Runbook,
        now: DateTime<Utc>,
    ) -> Result<Run> {
        tx.save_version(runbook, now).await?;
        tx.insert_run(&mut run).await?;
        let detail = format!(
            "started {} {} on {} with runbook {}",
            run.service,
            run.version,
            run.env,
            runbook.label()
        );
        tx.audit(&audit_entry(
            Some(run.id),
            run.started_by.as_str(),
            actor,
            "run.started",
            detail,
            now,
        ))
        .await?;
        self.send(
            tx,
            To::Channel(&run),
            Some(keys::root(run.id)),
            self.root_card(&run, runbook, now),
            now,
        )
        .await?;
        self.open_phase(tx, &run, runbook, &runbook.phases[0], now)
            .await?;
        let data = json!({"run": self.run_data(&run), "by": run.started_by.as_str()});
        self.emit(tx, "run.started", Some(&run), data, now).await?;
        Ok(run)
    }

    /// Apply a domain action to a run: lock, decide, save, announce, commit.
    #[instrument(skip_all, fields(run_id = %run_id))]
    pub(super) async fn act(
        &self,
        actor: &Actor,
        person: &Person,
        run_id: RunId,
        action: Action,
        key: Option<&str>,
        clicked: bool,
    ) -> Result<Reply> {
        let mut tx = self.store.begin().await?;
        match self
            .act_in(&mut tx, actor, &person.id, run_id, action, key, clicked)
            .await?
        {
            Acted::Missing => Ok(Reply::refuse("That deployment does not exist.")),
            Acted::Misplaced(refusal) => Ok(refusal),
            Acted::Refused(refusal) => Ok(Reply::refuse(capitalise(&refusal.to_string()))),
            Acted::Unchanged(_) => Ok(Reply::private("Nothing to change: that was already done.")),
            Acted::Repeat => Ok(Reply::private("Already handled.")),
            Acted::Changed { summary, .. } => {
                tx.commit().await?;
                Ok(Reply::changed(summary))
            }
        }
    }

    /// Lock the run, let the domain decide, and save and announce what
    /// changed in `tx`; the caller commits a change, and drops `tx`
    /// otherwise (which forgets `key` again). With `clicked`, a click from
    /// outside the run's channel and thread is refused first (see
    /// [`Engine::misplaced`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn act_in(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        who: &PersonId,
        run_id: RunId,
        action: Action,
        key: Option<&str>,
        clicked: bool,
    ) -> Result<Acted> {
        let now = self.clock.now();
        let (run, new) = tx.lock_run_once(run_id, key, now).await?;
        let Some(mut run) = run else {
            return Ok(Acted::Missing);
        };
        if clicked {
            if let Some(refusal) = self.misplaced(actor, &run).await? {
                return Ok(Acted::Misplaced(refusal));
            }
        }
        let runbook = match self.runbook(&run).await {
            Ok(runbook) => runbook,
            // A run that cannot go on can still be ended.
            Err(e) if e.is::<Stranded>() && matches!(action, Action::Abort { .. }) => {
                self.abort_runbook(&run).await?
            }
            Err(e) => return Err(e),
        };
        let runbook: &Runbook = &runbook;
        let action = with_runner(action, runbook, &self.config());
        let before = run.clone();
        // A request seen before is answered as such, whatever the run's
        // state now: its first answer stands.
        if !new {
            return Ok(Acted::Repeat);
        }
        let events = match run.decide(runbook, &self.config().directory, who, action, now) {
            Ok(events) => events,
            Err(refusal) => return Ok(Acted::Refused(refusal)),
        };
        if events.is_empty() {
            return Ok(Acted::Unchanged(run));
        }
        tx.save_run(&before, &run).await?;
        let summary = self
            .announce(tx, &before, &run, runbook, who, actor, &events, now)
            .await?;
        Ok(Acted::Changed { run, summary })
    }

    /// Audit every event and queue what others should see; returns a summary for the actor.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn announce(
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
        let dir = &self.config().directory;
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
        // A pipeline's link to its job, said with what it just reported.
        let link = |phase: &str, item: &str| {
            run.report(phase, item)
                .filter(|r| Some(*r) != before.report(phase, item))
                .and_then(|r| r.url.as_deref())
                .map_or(String::new(), |u| format!(" — logs: {u}"))
        };
        for event in events {
            let detail = match event {
                Event::ItemDone { phase, item } => {
                    format!(
                        "{name} marked done: {}{}",
                        item_text(phase, item),
                        link(phase, item)
                    )
                }
                Event::PipelineStarted { phase, item } => {
                    self.queue_pipeline(tx, run, runbook, phase, item, now)
                        .await?;
                    let runner = run.report(phase, item).map_or("", |r| r.by.as_str());
                    format!("{name} started {runner}: {}", item_text(phase, item))
                }
                Event::ItemReported {
                    phase,
                    item,
                    status: ReportStatus::Running,
                } => {
                    format!(
                        "{name} reports running: {}{}",
                        item_text(phase, item),
                        link(phase, item)
                    )
                }
                Event::ItemReported { phase, item, .. } => {
                    let note = run
                        .report(phase, item)
                        .and_then(|r| r.note.as_deref())
                        .map_or(String::new(), |n| format!(": {n}"));
                    let text = format!(
                        "❌ {} failed in {name}{note}{}",
                        item_text(phase, item),
                        link(phase, item)
                    );
                    notices.push(text.clone());
                    text
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
            tx.audit(&audit_entry(
                Some(run.id),
                who.as_str(),
                actor,
                event.name(),
                detail.clone(),
                now,
            ))
            .await?;
            self.emit_run_event(tx, run, event, &name, now).await?;
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
            self.send_phase_card(tx, run, runbook, phase, now).await?;
        }
        for text in notices {
            let mut card = cards::notice(text);
            if events.iter().any(|e| matches!(e, Event::Rejected { .. })) {
                card.mentions.push(run.started_by.clone());
            }
            self.send(tx, To::Thread(run), None, card, now).await?;
        }
        if run.phase != before.phase && run.status.is_open() {
            if let Some(phase) = runbook.phase(&run.phase) {
                self.open_phase(tx, run, runbook, phase, now).await?;
            }
        }
        if run.status != before.status || run.phase != before.phase {
            let root = self.root_card(run, runbook, now);
            self.send(tx, To::Channel(run), Some(keys::root(run.id)), root, now)
                .await?;
        }
        if !run.status.is_open() {
            // The report reads the audit log written above, in this transaction.
            let audit = tx.audit_for_run(run.id).await?;
            let ticks = tx.ticks_for_run(run.id).await?;
            let incidents = tx.incidents_for_run(run.id).await?;
            let md = report::markdown(run, runbook, dir, &audit, &ticks, &incidents);
            let card = cards::report_card(run, &md, self.run_link(run, now).as_deref());
            self.send(tx, To::Thread(run), Some(keys::report(run.id)), card, now)
                .await?;
        }
        Ok(summary.join("\n"))
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

/// "Run" as pressed, with the name the item's pipeline reports under.
fn with_runner(action: Action, runbook: &Runbook, config: &crate::config::Config) -> Action {
    match action {
        Action::StartPipeline { phase, item, .. } => {
            let runner = runbook
                .phase(&phase)
                .and_then(|p| p.item(&item))
                .and_then(|i| i.pipeline.as_ref())
                .and_then(|p| config.hooks.get(&p.hook))
                .map_or_else(String::new, |h| h.name.clone());
            Action::StartPipeline {
                phase,
                item,
                runner,
            }
        }
        other => other,
    }
}
