//! Durable timers, fired by whichever process claims them. [`Scheduler::run_due`]
//! is one deterministic step — fire everything due at `now` — that tests and
//! the shell drive by hand; [`Scheduler::run`] repeats it in production.
//!
//! After a restart the first step finds every timer that fell due while the
//! process was down and fires each once: the claim is a lease that expires
//! if the claimant dies, and the firing transaction marks the timer fired.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{error, info, instrument};

use crate::engine::Engine;

const BATCH: i64 = 100;
/// How often a running scheduler looks for due timers at most. Other
/// processes may schedule timers, so it never sleeps longer than this.
const MAX_SLEEP: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Scheduler {
    engine: Engine,
    owner: String,
    /// How long a claim lasts before another process may take the timer.
    lease: chrono::Duration,
}

impl Scheduler {
    pub fn new(engine: Engine) -> Scheduler {
        let owner = format!("{}-{}", std::process::id(), engine.now().timestamp_millis());
        Scheduler {
            lease: engine.queue().lease,
            engine,
            owner,
        }
    }

    /// Fire every timer due at `now`; returns how many fired.
    #[instrument(skip_all)]
    pub async fn run_due(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut fired = 0;
        loop {
            let due = self
                .engine
                .store()
                .claim_timers(&self.owner, now, self.lease, BATCH)
                .await?;
            if due.is_empty() {
                return Ok(fired);
            }
            for timer in &due {
                if let Err(e) = self.engine.fire(timer).await {
                    // The lease runs out and a later step tries again.
                    error!(
                        timer_id = timer.id,
                        error = format!("{e:#}"),
                        "timer failed"
                    );
                } else {
                    fired += 1;
                    let m = &crate::metrics::METRICS;
                    m.timers_fired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let late = (self.engine.now() - timer.due_at).num_milliseconds();
                    m.timer_lateness.observe(late as f64 / 1000.0);
                }
            }
            if due.len() < BATCH as usize {
                return Ok(fired);
            }
        }
    }

    /// Step until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!("scheduler started");
        loop {
            let now = self.engine.now();
            if let Err(e) = self.run_due(now).await {
                error!(error = format!("{e:#}"), "scheduler step failed");
            }
            let sleep = match self.engine.store().next_timer_due().await {
                Ok(Some(due)) => (due - self.engine.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_SLEEP),
                _ => MAX_SLEEP,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                info!("scheduler stopped");
                return;
            }
        }
    }
}
