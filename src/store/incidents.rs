//! Incidents, the pages sent for them, and rotation overrides.
//!
//! A page is one row per incident, generation, page number and person,
//! inserted in the transaction that sends it: a retried timer, a restarted
//! process or a second process trying the same page finds the row there and
//! sends nothing. Incidents are loaded with their write lock (`FOR UPDATE`
//! on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the database's).

use super::{col, from_ms, ms, opt_from_ms, Dialect, Reads, Row, Store, Tx};
use crate::domain::runbook::Severity;
use crate::domain::{Incident, IncidentStatus, Override, PersonId, Platform, RunId};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

const INCIDENT_COLUMNS: &str = "id, run_id, platform, severity, summary, status, policy, \
    opened_by, opened_at, generation, next_seq, acked_by, acked_at, resolved_by, resolved_at, resolution";

/// One page as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRecord {
    pub generation: u32,
    pub seq: u32,
    /// The policy step (from 0).
    pub step: usize,
    pub person: PersonId,
    /// Through which target: a rotation's or role's name, or the person's.
    pub via: String,
    pub at: DateTime<Utc>,
}

impl Tx {
    /// Insert a new incident; returns its id.
    pub async fn insert_incident(&mut self, i: &Incident) -> Result<i64> {
        self.scalar(
            "INSERT INTO incidents (run_id, platform, severity, summary, status, policy, opened_by, \
             opened_at, generation, next_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            &[
                i.run.map(|r| r.0).into(),
                i.platform.as_str().into(),
                i.severity.as_str().into(),
                (&i.summary).into(),
                i.status.as_str().into(),
                i.policy.as_deref().into(),
                (&i.opened_by).into(),
                ms(i.opened_at).into(),
                i64::from(i.generation).into(),
                i64::from(i.next_seq).into(),
            ],
        )
        .await
        .context("opening an incident")
    }

    /// Load an incident and hold its write lock until the transaction ends.
    pub async fn lock_incident(&mut self, id: i64) -> Result<Option<Incident>> {
        let lock = if self.dialect() == Dialect::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1{lock}");
        let row = self
            .row(&sql, &[id.into()])
            .await
            .context("loading an incident")?;
        row.as_ref().map(incident_from_row).transpose()
    }

    pub async fn save_incident(&mut self, i: &Incident) -> Result<()> {
        self.write(
            "UPDATE incidents SET status = $2, generation = $3, next_seq = $4, acked_by = $5, \
             acked_at = $6, resolved_by = $7, resolved_at = $8, resolution = $9 WHERE id = $1",
            &[
                i.id.into(),
                i.status.as_str().into(),
                i64::from(i.generation).into(),
                i64::from(i.next_seq).into(),
                i.acked_by.as_ref().map(PersonId::as_str).into(),
                i.acked_at.map(ms).into(),
                i.resolved_by.as_ref().map(PersonId::as_str).into(),
                i.resolved_at.map(ms).into(),
                i.resolution.as_deref().into(),
            ],
        )
        .await
        .context("saving an incident")?;
        Ok(())
    }

    /// The run's unresolved incident, if any.
    pub async fn open_incident(&mut self, run: RunId) -> Result<Option<i64>> {
        self.row(
            "SELECT id FROM incidents WHERE run_id = $1 AND status <> 'resolved' ORDER BY id LIMIT 1",
            &[run.0.into()],
        )
        .await?
        .map(|r| r.first())
        .transpose()
    }

    /// Record a page; false if this person was already paged for this page
    /// of this climb (the caller must then send nothing).
    pub async fn record_page(&mut self, incident: i64, page: &PageRecord) -> Result<bool> {
        let done = self
            .exec(
                "INSERT INTO pages (incident_id, generation, seq, person, step, via, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (incident_id, generation, seq, person) DO NOTHING",
                &[
                    incident.into(),
                    i64::from(page.generation).into(),
                    i64::from(page.seq).into(),
                    page.person.as_str().into(),
                    (page.step as i64).into(),
                    (&page.via).into(),
                    ms(page.at).into(),
                ],
            )
            .await
            .context("recording a page")?;
        Ok(done == 1)
    }

    pub async fn pages_for(&mut self, incident: i64) -> Result<Vec<PageRecord>> {
        pages(self, incident).await
    }

    /// Overrides that have not ended by `now`.
    pub async fn overrides(&mut self, now: DateTime<Utc>) -> Result<Vec<Override>> {
        overrides(self, now).await
    }

    pub async fn insert_override(
        &mut self,
        o: &Override,
        created_by: &PersonId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.write(
            "INSERT INTO rotation_overrides (rotation, person, starts_at, ends_at, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                (&o.rotation).into(),
                o.person.as_str().into(),
                ms(o.from).into(),
                ms(o.until).into(),
                created_by.as_str().into(),
                ms(now).into(),
            ],
        )
        .await
        .context("saving an override")?;
        Ok(())
    }
}

impl Store {
    /// A run's incidents, oldest first, each with its pages.
    pub async fn incidents_for_run(&self, run: RunId) -> Result<Vec<(Incident, Vec<PageRecord>)>> {
        incidents_for_run(&mut &*self, run).await
    }

    /// Incidents not yet resolved, oldest first.
    pub async fn unresolved_incidents(&self) -> Result<Vec<Incident>> {
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status <> 'resolved' ORDER BY id"
        );
        let rows = self.rows(&sql, &[]).await?;
        rows.iter().map(incident_from_row).collect()
    }

    /// Every page ever sent, in the order sent (for tests and status).
    pub async fn all_pages(&self) -> Result<Vec<(i64, PageRecord)>> {
        let rows = self
            .rows(
                "SELECT incident_id, generation, seq, person, step, via, at FROM pages \
                 ORDER BY at, incident_id, generation, seq, person",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((col(r, "incident_id")?, page_from_row(r)?)))
            .collect()
    }

    pub async fn overrides(&self, now: DateTime<Utc>) -> Result<Vec<Override>> {
        overrides(&mut &*self, now).await
    }
}

impl Tx {
    pub async fn incidents_for_run(
        &mut self,
        run: RunId,
    ) -> Result<Vec<(Incident, Vec<PageRecord>)>> {
        incidents_for_run(self, run).await
    }
}

async fn incidents_for_run(
    db: &mut impl Reads,
    run: RunId,
) -> Result<Vec<(Incident, Vec<PageRecord>)>> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE run_id = $1 ORDER BY id");
    let rows = db.rows(&sql, &[run.0.into()]).await?;
    let mut out = Vec::new();
    for row in &rows {
        let incident = incident_from_row(row)?;
        let pages = pages(db, incident.id).await?;
        out.push((incident, pages));
    }
    Ok(out)
}

async fn pages(db: &mut impl Reads, incident: i64) -> Result<Vec<PageRecord>> {
    let rows = db
        .rows(
            "SELECT generation, seq, person, step, via, at FROM pages WHERE incident_id = $1 \
             ORDER BY generation, seq, at, person",
            &[incident.into()],
        )
        .await?;
    rows.iter().map(page_from_row).collect()
}

async fn overrides(db: &mut impl Reads, now: DateTime<Utc>) -> Result<Vec<Override>> {
    let rows = db
        .rows(
            "SELECT id, rotation, person, starts_at, ends_at FROM rotation_overrides \
             WHERE ends_at > $1 ORDER BY id",
            &[ms(now).into()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Override {
                rotation: col(r, "rotation")?,
                person: PersonId::new(col::<String>(r, "person")?),
                from: from_ms(col(r, "starts_at")?),
                until: from_ms(col(r, "ends_at")?),
                order: col(r, "id")?,
            })
        })
        .collect()
}

fn page_from_row(r: &Row) -> Result<PageRecord> {
    Ok(PageRecord {
        generation: col::<i64>(r, "generation")? as u32,
        seq: col::<i64>(r, "seq")? as u32,
        step: col::<i64>(r, "step")? as usize,
        person: PersonId::new(col::<String>(r, "person")?),
        via: col(r, "via")?,
        at: from_ms(col(r, "at")?),
    })
}

fn incident_from_row(r: &Row) -> Result<Incident> {
    let status: String = col(r, "status")?;
    let severity: String = col(r, "severity")?;
    let platform: String = col(r, "platform")?;
    let person = |name: &str| -> Result<Option<PersonId>> {
        Ok(col::<Option<String>>(r, name)?.map(PersonId::new))
    };
    Ok(Incident {
        id: col(r, "id")?,
        run: col::<Option<i64>>(r, "run_id")?.map(RunId),
        platform: Platform::parse(&platform)
            .with_context(|| format!("unknown platform {platform:?}"))?,
        severity: Severity::parse(&severity)
            .with_context(|| format!("unknown severity {severity:?}"))?,
        summary: col(r, "summary")?,
        status: IncidentStatus::parse(&status)
            .with_context(|| format!("unknown incident status {status:?}"))?,
        policy: col(r, "policy")?,
        opened_by: col(r, "opened_by")?,
        opened_at: from_ms(col(r, "opened_at")?),
        generation: col::<i64>(r, "generation")? as u32,
        next_seq: col::<i64>(r, "next_seq")? as u32,
        acked_by: person("acked_by")?,
        acked_at: opt_from_ms(col(r, "acked_at")?),
        resolved_by: person("resolved_by")?,
        resolved_at: opt_from_ms(col(r, "resolved_at")?),
        resolution: col(r, "resolution")?,
    })
}
