//! Automated checks of checklist items: an item with `check = { url = … }`
//! is checked when its phase opens and again when someone presses "Check
//! again". Each check is a durable timer due at once, so a check asked for
//! is never lost, and the probes run outside any transaction, with their
//! time-outs, as monitoring's do. The results then go through the domain
//! (`Action::RecordCheck`): a pass marks the item done by "automated
//! check", a failure says why on the card and keeps the phase from being
//! left.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::effects::audit_entry;
use super::{Actor, Engine, Reply};
use crate::domain::{Action, CheckResult, Person, PersonId, Run, RunId, Runbook, AUTOMATED_CHECK};
use crate::store::{ms, TimerKind, Tx};

impl Engine {
    /// Ask for the checks of the run's current phase to run now, if it has any.
    pub(super) async fn schedule_checks(
        &self,
        tx: &mut Tx,
        run: &Run,
        runbook: &Runbook,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let has_checks = runbook
            .phase(&run.phase)
            .is_some_and(|p| p.items.iter().any(|i| i.check.is_some()));
        if !has_checks || !run.status.is_open() {
            return Ok(false);
        }
        let kind = TimerKind::ItemChecks {
            run: run.id,
            phase: run.phase.clone(),
            at: unique_ms(now),
        };
        tx.schedule(&kind, now).await?;
        Ok(true)
    }

    /// "Check again" on a phase card.
    pub(super) async fn recheck(
        &self,
        actor: &Actor,
        person: &Person,
        run_id: RunId,
        phase: &str,
        key: Option<&str>,
    ) -> Result<Reply> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let (run, new) = tx.lock_run_once(run_id, key, now).await?;
        let Some(run) = run else {
            return Ok(Reply::refuse("That deployment does not exist."));
        };
        if !run.status.is_open() {
            return Ok(Reply::refuse(format!(
                "Deployment #{} is {}; its checks no longer run.",
                run.number,
                run.status.label()
            )));
        }
        if run.phase != phase {
            return Ok(Reply::refuse(
                "That card's phase is over; its checks no longer run.",
            ));
        }
        if !new {
            return Ok(Reply::private("Already handled."));
        }
        let runbook = self.runbook(&run).await?;
        let runbook: &Runbook = &runbook;
        if !self.schedule_checks(&mut tx, &run, runbook, now).await? {
            return Ok(Reply::refuse("This phase has no automated checks."));
        }
        let detail = format!("{} asked the checks of {} to run again", person.name, phase);
        tx.audit(&audit_entry(
            Some(run.id),
            person.id.as_str(),
            actor,
            "check.requested",
            detail,
            now,
        ))
        .await?;
        tx.commit().await?;
        Ok(Reply::changed(
            "Checking again; the card shows the results in a moment.",
        ))
    }

    /// Fire an `ItemChecks` timer: probe, then record every result at once.
    pub(super) async fn run_checks(&self, timer_id: i64, run_id: RunId, phase: &str) -> Result<()> {
        // Probe first, outside any transaction.
        let plan = match self.store.run(run_id).await? {
            Some(run) if run.status.is_open() && run.phase == phase => {
                let runbook = self.runbook(&run).await?;
                let runbook: &Runbook = &runbook;
                let checks: Vec<_> = runbook
                    .phase(phase)
                    .into_iter()
                    .flat_map(|p| &p.items)
                    .filter_map(|i| Some((i.id.clone(), i.check.clone()?)))
                    .collect();
                let probes = checks.iter().map(|(item, check)| async move {
                    (item.clone(), self.prober.health(check).await)
                });
                futures_util::future::join_all(probes).await
            }
            _ => vec![],
        };
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx.mark_fired(timer_id, now).await? {
            return Ok(());
        }
        let run = match tx.lock_run(run_id).await? {
            Some(run) if !plan.is_empty() && run.phase == phase && run.status.is_open() => run,
            _ => return tx.commit().await,
        };
        let runbook = self.runbook(&run).await?;
        let runbook: &Runbook = &runbook;
        let before = run.clone();
        let mut run = run;
        let who = PersonId::new(AUTOMATED_CHECK);
        let mut events = Vec::new();
        for (item, reading) in plan {
            let (passed, detail) = match reading {
                crate::domain::monitor::Reading::Health { ok, detail } => (ok, detail),
                other => (false, crate::domain::monitor::describe(&other)),
            };
            let action = Action::RecordCheck {
                phase: phase.to_string(),
                item,
                result: CheckResult {
                    passed,
                    detail,
                    at: now,
                },
            };
            // A refusal means the runbook no longer has the item: skip it.
            if let Ok(more) = run.decide(runbook, &self.config().directory, &who, action, now) {
                events.extend(more);
            }
        }
        if !events.is_empty() {
            tx.save_run(&before, &run).await?;
            let actor = super::timer_actor(run.platform);
            self.announce(&mut tx, &before, &run, runbook, &who, &actor, &events, now)
                .await?;
        }
        tx.commit().await
    }
}

/// `now` in epoch milliseconds, but later than any this process gave
/// before: two requests for checks within one millisecond (or at one
/// moment of a virtual clock) are two timers, not one. The click that asks
/// is made once by its request key, not by this.
fn unique_ms(now: DateTime<Utc>) -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let want = ms(now);
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(want.max(last + 1))
        })
        .unwrap_or(want);
    want.max(prev + 1)
}
