//! Pipelines started from a "Run" button (`hook_calls`): one row per press,
//! with the one-time token the pipeline reports back with, and what became
//! of the call. The call itself is a timer ([`super::TimerKind::HookCall`]),
//! so a press is never lost across a restart.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{col, ms, opt_from_ms, Row, Store, Tx};
use crate::domain::RunId;

/// One call of a hook for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCall {
    pub id: i64,
    pub run: RunId,
    pub phase: String,
    pub item: String,
    pub hook: String,
    pub token: String,
    pub attempts: i64,
    /// When the latest attempt began.
    pub attempt_at: Option<DateTime<Utc>>,
    /// When the pipeline answered a call with success.
    pub called_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, run_id, phase, item, hook, token, attempts, attempt_at, called_at";

fn from_row(r: &Row) -> Result<HookCall> {
    Ok(HookCall {
        id: col(r, "id")?,
        run: RunId(col(r, "run_id")?),
        phase: col(r, "phase")?,
        item: col(r, "item")?,
        hook: col(r, "hook")?,
        token: col(r, "token")?,
        attempts: col(r, "attempts")?,
        attempt_at: opt_from_ms(col(r, "attempt_at")?),
        called_at: opt_from_ms(col(r, "called_at")?),
    })
}

impl Tx {
    /// Record a press of "Run"; returns the call's id.
    pub async fn insert_hook_call(
        &mut self,
        run: RunId,
        phase: &str,
        item: &str,
        hook: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        self.scalar(
            "INSERT INTO hook_calls (run_id, phase, item, hook, token, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                run.0.into(),
                phase.into(),
                item.into(),
                hook.into(),
                token.into(),
                ms(now).into(),
            ],
        )
        .await
        .context("recording a pipeline call")
    }

    /// The pipeline took the call.
    pub async fn hook_called(&mut self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.exec(
            "UPDATE hook_calls SET called_at = $2, last_error = NULL WHERE id = $1",
            &[id.into(), ms(now).into()],
        )
        .await?;
        Ok(())
    }

    /// The call failed this time, for this reason.
    pub async fn hook_failed(&mut self, id: i64, error: &str) -> Result<()> {
        self.exec(
            "UPDATE hook_calls SET last_error = $2 WHERE id = $1",
            &[id.into(), error.into()],
        )
        .await?;
        Ok(())
    }
}

impl Store {
    pub async fn hook_call(&self, id: i64) -> Result<Option<HookCall>> {
        let sql = format!("SELECT {COLUMNS} FROM hook_calls WHERE id = $1");
        let row = self.row(&sql, &[id.into()]).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The latest call for an item, if "Run" was ever pressed on it.
    pub async fn latest_hook_call(
        &self,
        run: RunId,
        phase: &str,
        item: &str,
    ) -> Result<Option<HookCall>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM hook_calls WHERE run_id = $1 AND phase = $2 AND item = $3 \
             ORDER BY id DESC LIMIT 1"
        );
        let row = self
            .row(&sql, &[run.0.into(), phase.into(), item.into()])
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Note that an attempt of the call begins now (committed before the
    /// request goes, so a process that dies in it leaves a trace).
    pub async fn hook_attempt(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.write(
            "UPDATE hook_calls SET attempts = attempts + 1, attempt_at = $2 WHERE id = $1",
            &[id.into(), ms(now).into()],
        )
        .await
    }
}
