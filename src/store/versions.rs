//! Runbook versions: every runbook text a run has followed, stored once per
//! content and shared by every process that has the same files.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{col, ms, Store, Tx};
use crate::domain::{Runbook, RunbookVersion};

const SAVE_VERSION_SQL: &str =
    "INSERT INTO runbook_versions (hash, runbook, source, first_seen) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (hash) DO NOTHING";

impl Tx {
    /// Record `runbook`'s version, once however often it is recorded.
    pub async fn save_version(&mut self, runbook: &Runbook, now: DateTime<Utc>) -> Result<()> {
        self.write(
            SAVE_VERSION_SQL,
            &[
                (&runbook.version.hash).into(),
                (&runbook.id).into(),
                (&*runbook.version.source).into(),
                ms(now).into(),
            ],
        )
        .await
        .context("recording a runbook version")?;
        Ok(())
    }
}

impl Store {
    /// The runbook name and text of the version `hash`.
    pub async fn version(&self, hash: &str) -> Result<Option<(String, RunbookVersion)>> {
        let row = self
            .row(
                "SELECT runbook, source FROM runbook_versions WHERE hash = $1",
                &[hash.into()],
            )
            .await
            .context("reading a runbook version")?;
        row.map(|r| {
            let source: String = col(&r, "source")?;
            Ok((col(&r, "runbook")?, RunbookVersion::of(&source)))
        })
        .transpose()
    }

    /// Pin every run of `runbook` that follows no version (runs from before
    /// versions) to `runbook`'s version; how many were pinned.
    pub async fn pin_unpinned(&self, runbook: &Runbook, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let unpinned: i64 = tx
            .scalar(
                "SELECT COUNT(*) FROM runs WHERE runbook = $1 AND runbook_version IS NULL",
                &[(&runbook.id).into()],
            )
            .await?;
        if unpinned == 0 {
            return Ok(0);
        }
        tx.save_version(runbook, now).await?;
        let pinned = tx
            .exec(
                "UPDATE runs SET runbook_version = $1 WHERE runbook = $2 AND runbook_version IS NULL",
                &[(&runbook.version.hash).into(), (&runbook.id).into()],
            )
            .await
            .context("pinning runs to their runbook")?;
        tx.commit().await?;
        Ok(pinned)
    }
}
