//! Monitoring a run after its production deploy: each tick of the runbook's
//! window runs the probes, judges the readings, records the tick once,
//! edits the run's monitoring card in place and speaks up in the thread only
//! when the verdict gets worse or recovers. A critical verdict opens an
//! incident, which pages the runbook's escalation policy; the end of the
//! window ends monitoring and says what the run still needs (it never
//! completes a run: people do, by walking its last phase). Probes run before the tick's transaction, so a slow probe never
//! holds a lock; the transaction then marks the timer fired and records the
//! tick, which is what makes a tick count once across retries and restarts.

use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::info;

use super::effects::{audit_entry, To};
use super::{cards, Engine, BOT};
use crate::chat::keys;
use crate::domain::monitor::{change, due_tick, judge, tick_offsets, Change, Level, Reading};
use crate::domain::runbook::Severity;
use crate::domain::{Run, RunId, Runbook};
use crate::store::{ms, TimerKind, Tx};

type Readings = Vec<(String, Reading)>;

impl Engine {
    /// After the production deploy: schedule the window's first tick.
    pub(super) async fn schedule_first_tick(
        &self,
        tx: &mut Tx,
        run: &Run,
        runbook: &Runbook,
    ) -> Result<()> {
        let (Some(monitoring), Some(t0)) = (&runbook.monitoring, run.t0) else {
            return Ok(());
        };
        if let (_, Some(first)) = due_tick(monitoring, t0, t0) {
            tx.schedule(
                &TimerKind::MonitorTick {
                    run: run.id,
                    at: ms(first),
                },
                first,
            )
            .await?;
        }
        Ok(())
    }

    /// Fire one tick of a run's window.
    pub(super) async fn monitor_tick(&self, timer_id: i64, run_id: RunId, at: i64) -> Result<()> {
        let now = self.clock.now();
        // Probe first, outside any transaction.
        let plan = match self.store.run(run_id).await? {
            Some(run) if run.status.is_open() => {
                let runbook = self.runbook(&run).await?;
                let runbook: &Runbook = &runbook;
                match (&runbook.monitoring, run.t0) {
                    (Some(m), Some(t0))
                        if tick_offsets(m).iter().any(|d| ms(t0 + d.to_chrono()) == at) =>
                    {
                        Some(self.prober.run_all(&m.probes).await)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let mut tx = self.store.begin().await?;
        if !tx.mark_fired(timer_id, now).await? {
            return Ok(());
        }
        let (Some(readings), Some(run)) = (plan, tx.lock_run(run_id).await?) else {
            // The run closed or its production deploy was undone: the window is over.
            return tx.commit().await;
        };
        self.record(&mut tx, run, readings, now).await?;
        tx.commit().await
    }

    pub(super) async fn record(
        &self,
        tx: &mut Tx,
        run: Run,
        readings: Readings,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let runbook = self.runbook(&run).await?;
        let runbook: &Runbook = &runbook;
        let (Some(monitoring), Some(t0)) = (&runbook.monitoring, run.t0) else {
            return Ok(());
        };
        let (Some(tick), next) = due_tick(monitoring, t0, now) else {
            return Ok(());
        };
        let judgement = judge(&monitoring.matrix, &readings);
        let history = tx.ticks_for_run(run.id).await?;
        let previous = history.last().cloned();
        if !tx
            .record_tick(
                run.id,
                tick,
                judgement.level.as_str(),
                &serde_json::to_string(&readings)?,
                now,
            )
            .await?
        {
            return Ok(());
        }
        info!(run_id = %run.id, level = judgement.level.as_str(), "monitoring tick");
        let previous_readings: Readings = previous
            .as_ref()
            .and_then(|p| serde_json::from_str(&p.readings).ok())
            .unwrap_or_default();
        let total = tick_offsets(monitoring).len();
        let mut card = cards::monitor_card(
            &run,
            runbook,
            &judgement,
            &readings,
            &previous_readings,
            tick - t0,
            history.len() + 1,
            total,
        );
        if next.is_none() {
            card = card.section(
                None,
                vec!["The monitoring window has ended: this is the final verdict.".into()],
            );
        }
        self.send(tx, To::Thread(&run), Some(keys::monitor(run.id)), card, now)
            .await?;

        let before = previous.as_ref().map(|p| Level::parse(&p.level));
        let level = judgement.level;
        let reasons = judgement.reasons.join("; ");
        let notice = match change(before, level) {
            Change::Worsened { from, to } => Some(format!(
                "⚠️ Monitoring: the verdict worsened from {} to {}. {reasons}",
                from.as_str(),
                to.as_str()
            )),
            Change::Recovered { from, to } => Some(format!(
                "✅ Monitoring: recovered, from {} to {}.",
                from.as_str(),
                to.as_str()
            )),
            Change::AlarmingAtFirst(level) => Some(format!(
                "⚠️ Monitoring: {} at the first look. {reasons}",
                level.as_str()
            )),
            Change::Unchanged => None,
        };
        if let Some(text) = notice {
            let mut card = cards::notice(text);
            card.mentions.push(run.started_by.clone());
            self.send(tx, To::Thread(&run), None, card, now).await?;
        }
        let timer_actor = super::timer_actor(run.platform);
        if level == Level::Severity(Severity::Critical) && tx.open_incident(run.id).await?.is_none()
        {
            let summary = format!(
                "{} {} (deployment #{}): critical — {}",
                run.service,
                run.version,
                run.number,
                judgement.reasons.join("; ")
            );
            let incident = self
                .open_incident(
                    tx,
                    &run,
                    Severity::Critical,
                    &summary,
                    BOT,
                    &timer_actor,
                    now,
                )
                .await?;
            let action = judgement
                .rule
                .as_ref()
                .map_or("roll back", |r| r.action.as_str());
            let notice = cards::notice(format!(
                "🚨 Critical verdict: incident #{} opened. {action}.",
                incident.id
            ));
            self.send(tx, To::Thread(&run), None, notice, now).await?;
        }
        tx.audit(&audit_entry(
            Some(run.id),
            BOT,
            &timer_actor,
            "monitor.tick",
            format!(
                "T+{} verdict {}: {}",
                crate::domain::Dur::from_millis((tick - t0).num_milliseconds()),
                level.as_str(),
                judgement.reasons.join("; ")
            ),
            now,
        ))
        .await?;

        match next {
            Some(next) => {
                tx.schedule(
                    &TimerKind::MonitorTick {
                        run: run.id,
                        at: ms(next),
                    },
                    next,
                )
                .await
            }
            None => {
                let levels: Vec<Level> = history
                    .iter()
                    .map(|t| Level::parse(&t.level))
                    .chain([level])
                    .collect();
                self.window_ended(tx, &run, runbook, &levels, now).await
            }
        }
    }

    /// The last tick of the window has been recorded. The window's end ends
    /// monitoring, not the run: the thread hears the final verdict, what is
    /// still needed before the deployment can complete, and a warning when
    /// no reading of the whole window could be taken.
    pub(super) async fn window_ended(
        &self,
        tx: &mut Tx,
        run: &Run,
        runbook: &Runbook,
        levels: &[Level],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let dir = &self.config().directory;
        let last = levels.last().copied().unwrap_or(Level::Unknown);
        let mut lines = vec![format!(
            "⏱️ Monitoring: the window is over after {} checks; final verdict {}.",
            levels.len(),
            last.as_str().to_uppercase()
        )];
        if levels.iter().all(|l| *l == Level::Unknown) {
            lines.push(
                "⚠️ Not one reading of the window could be taken: nothing was verified. \
                 Check the runbook's probes."
                    .into(),
            );
        }
        let needed = run.still_needed(runbook, dir);
        if !needed.is_empty() {
            lines.push(format!(
                "Deployment #{} is not complete yet. Still needed:",
                run.number
            ));
            lines.extend(needed.iter().map(|n| format!("• {n}")));
        }
        let mut card = cards::notice(lines.join("\n"));
        card.mentions.push(run.started_by.clone());
        self.send(tx, To::Thread(run), None, card, now).await?;
        let timer_actor = super::timer_actor(run.platform);
        tx.audit(&audit_entry(
            Some(run.id),
            BOT,
            &timer_actor,
            "monitor.window_ended",
            format!(
                "final verdict {}; still needed: {}",
                last.as_str(),
                if needed.is_empty() {
                    "nothing".to_string()
                } else {
                    needed.join("; ")
                }
            ),
            now,
        ))
        .await
    }
}
