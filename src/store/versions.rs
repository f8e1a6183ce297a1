//! Runbook versions: every runbook text a run has followed, stored once per
//! content and shared by every process that has the same files.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{ms, Store, Tx};
use crate::domain::{Runbook, RunbookVersion};

const SAVE_VERSION_SQL: &str =
    "INSERT INTO runbook_versions (hash, runbook, source, first_seen) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (hash) DO NOTHING";

impl Tx {
    /// Record `runbook`'s version, once however often it is recorded.
    pub async fn save_version(&mut self, runbook: &Runbook, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(SAVE_VERSION_SQL)
            .bind(&runbook.version.hash)
            .bind(&runbook.id)
            .bind(&*runbook.version.source)
            .bind(ms(now))
            .execute(self.conn().await?)
            .await
            .context("recording a runbook version")?;
        Ok(())
    }
}

impl Store {
    /// The runbook name and text of the version `hash`.
    pub async fn version(&self, hash: &str) -> Result<Option<(String, RunbookVersion)>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT runbook, source FROM runbook_versions WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .context("reading a runbook version")?;
        Ok(row.map(|(runbook, source)| {
            let version = RunbookVersion::of(&source);
            (runbook, version)
        }))
    }

    /// Pin every run of `runbook` that follows no version (runs from before
    /// versions) to `runbook`'s version; how many were pinned.
    pub async fn pin_unpinned(&self, runbook: &Runbook, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let unpinned: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE runbook = $1 AND runbook_version IS NULL",
        )
        .bind(&runbook.id)
        .fetch_one(tx.conn().await?)
        .await?;
        if unpinned == 0 {
            return Ok(0);
        }
        tx.save_version(runbook, now).await?;
        let pinned = sqlx::query(
            "UPDATE runs SET runbook_version = $1 WHERE runbook = $2 AND runbook_version IS NULL",
        )
        .bind(&runbook.version.hash)
        .bind(&runbook.id)
        .execute(tx.conn().await?)
        .await
        .context("pinning runs to their runbook")?
        .rows_affected();
        tx.commit().await?;
        Ok(pinned)
    }
}
