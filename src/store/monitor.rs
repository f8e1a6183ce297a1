//! Monitoring records: one row per tick of a run's window (its verdict and
//! readings).

use super::{col, from_ms, ms, Reads, Store, Tx};
use crate::domain::RunId;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

/// One recorded tick.
#[derive(Clone, Debug, PartialEq)]
pub struct TickRecord {
    pub tick_at: DateTime<Utc>,
    pub level: String,
    /// `[(probe name, Reading)]` as JSON.
    pub readings: String,
}

impl Tx {
    /// Record a tick; false if it was recorded before (it must then do nothing).
    pub async fn record_tick(
        &mut self,
        run: RunId,
        tick_at: DateTime<Utc>,
        level: &str,
        readings: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = self
            .exec(
                "INSERT INTO monitor_ticks (run_id, tick_at, level, readings, recorded_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (run_id, tick_at) DO NOTHING",
                &[
                    run.0.into(),
                    ms(tick_at).into(),
                    level.into(),
                    readings.into(),
                    ms(now).into(),
                ],
            )
            .await
            .context("recording a monitoring tick")?;
        Ok(done == 1)
    }

    pub async fn ticks_for_run(&mut self, run: RunId) -> Result<Vec<TickRecord>> {
        ticks(self, run).await
    }
}

impl Store {
    pub async fn ticks_for_run(&self, run: RunId) -> Result<Vec<TickRecord>> {
        ticks(&mut &*self, run).await
    }
}

async fn ticks(db: &mut impl Reads, run: RunId) -> Result<Vec<TickRecord>> {
    let rows = db
        .rows(
            "SELECT tick_at, level, readings FROM monitor_ticks WHERE run_id = $1 ORDER BY tick_at",
            &[run.0.into()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TickRecord {
                tick_at: from_ms(col(r, "tick_at")?),
                level: col(r, "level")?,
                readings: col(r, "readings")?,
            })
        })
        .collect()
}
