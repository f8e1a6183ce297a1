//! Sign-off reminders: while a phase's gate is unmet, the thread is
//! reminded every `signoff_reminder`, naming (and mentioning) who may sign.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::effects::{audit_entry, To};
use super::{cards, timer_actor, Engine, BOT};
use crate::domain::{Run, Runbook};
use crate::store::{TimerKind, Tx};

impl Engine {
    /// Schedule the sign-off reminder of the run's current phase, if its
    /// runbook asks for one and the phase has a gate.
    pub(super) async fn schedule_reminder(
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

    pub(super) async fn remind(
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
        let runbook = self.runbook(run).await?;
        let runbook: &Runbook = &runbook;
        let Some(phase) = runbook.phase(phase_id) else {
            return Ok(());
        };
        let dir = &self.config().directory;
        // Everything the gate lacks, the four-eyes rule included.
        if !run.gate_unmet(phase, dir).is_empty() {
            let waited =
                crate::domain::Dur::from_millis((now - run.phase_entered_at).num_milliseconds());
            let card = cards::reminder_card(run, phase, dir, waited);
            let detail = format!("{} (reminder {seq})", card.plain_text().replace('\n', "; "));
            let timer_actor = timer_actor(run.platform);
            tx.audit(&audit_entry(
                Some(run.id),
                BOT,
                &timer_actor,
                "reminder.sent",
                detail,
                now,
            ))
            .await?;
            self.send(tx, To::Thread(run), None, card, now).await?;
        }
        // Keep watching the phase while the run stays in it; a later reject
        // can make its gate unmet again.
        self.schedule_reminder(tx, run, runbook, seq + 1, now).await
    }
}
