//! The audit log: who did what, when and where. Append-only — the database
//! itself refuses updates and deletes (a trigger on each backend).

use super::{col, from_ms, ms, Reads, Store, Tx};
use crate::domain::RunId;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub run: Option<RunId>,
    pub at: DateTime<Utc>,
    /// A person's key, or `tminus` for what the bot did on its own.
    pub actor: String,
    pub platform: String,
    /// The channel (or "timer") where it happened.
    pub location: String,
    /// A stable name such as `signoff.approved`.
    pub action: String,
    /// A sentence for people.
    pub detail: String,
}

impl Tx {
    pub async fn audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.write(
            "INSERT INTO audit_log (run_id, at, actor, platform, location, action, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                e.run.map(|r| r.0).into(),
                ms(e.at).into(),
                (&e.actor).into(),
                (&e.platform).into(),
                (&e.location).into(),
                (&e.action).into(),
                (&e.detail).into(),
            ],
        )
        .await
        .context("writing the audit log")?;
        Ok(())
    }
}

impl Tx {
    /// A run's audit entries as this transaction sees them, its own included.
    pub async fn audit_for_run(&mut self, run: RunId) -> Result<Vec<AuditEntry>> {
        entries(self, run).await
    }
}

impl Store {
    /// A run's audit entries in the order they were written.
    pub async fn audit_for_run(&self, run: RunId) -> Result<Vec<AuditEntry>> {
        entries(&mut &*self, run).await
    }
}

async fn entries(db: &mut impl Reads, run: RunId) -> Result<Vec<AuditEntry>> {
    let rows = db
        .rows(
            "SELECT run_id, at, actor, platform, location, action, detail FROM audit_log \
             WHERE run_id = $1 ORDER BY id",
            &[run.0.into()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditEntry {
                run: col::<Option<i64>>(row, "run_id")?.map(RunId),
                at: from_ms(col(row, "at")?),
                actor: col(row, "actor")?,
                platform: col(row, "platform")?,
                location: col(row, "location")?,
                action: col(row, "action")?,
                detail: col(row, "detail")?,
            })
        })
        .collect()
}
