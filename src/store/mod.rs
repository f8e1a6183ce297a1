//! The durable store: runs, items, sign-offs, the audit log, the outbox of
//! outgoing messages and timers, incidents, pages and rotation overrides,
//! on SQLite or PostgreSQL through one code path (sqlx's `Any` driver, times
//! as epoch milliseconds).
//!
//! Every change goes through a [`Tx`]: the engine loads a run with a write
//! lock, applies a domain decision, and writes the run, its audit entries,
//! its outgoing messages and its timers before one commit. On PostgreSQL the
//! lock is `SELECT … FOR UPDATE`; on SQLite every write transaction starts
//! with `BEGIN IMMEDIATE`, which takes the database's single write lock.
//!
//! On SQLite, writers of this process first queue on an async mutex: a
//! connection that finds the write lock taken waits in SQLite's busy handler,
//! which sleeps in steps of up to 100 ms instead of waking when the lock is
//! released, so under concurrent clicks a few unlucky ones waited seconds.
//! The mutex hands the turn over at once and in order; another process on
//! the same file still meets `busy_timeout`.

mod audit;
mod incidents;
mod monitor;
mod queue;
mod runs;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use audit::AuditEntry;
pub use incidents::PageRecord;
pub use monitor::TickRecord;
pub use queue::{lease, ClaimedMessage, Timer, TimerKind};

/// Which SQL dialect the database speaks, for the few statements that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://tminus.db";

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite: one writer at a time in this process (see the module comment).
    writer: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dialect", &self.dialect)
            .finish()
    }
}

/// A write transaction.
pub struct Tx {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    /// Held until the transaction ends; declared after `tx` so it is released
    /// only once the transaction has committed or rolled back.
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Store {
    /// Connect to `url` (`sqlite://…` or `postgres://…`), creating a SQLite
    /// file if missing, and apply the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if url.starts_with("sqlite:") {
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got another scheme)"
            );
        };
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .max_connections(match dialect {
                Dialect::Sqlite => 4,
                Dialect::Postgres => 10,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options
            .connect(&url)
            .await
            .context("cannot open the database (check DATABASE_URL)")?;
        let store = Store {
            pool,
            dialect,
            writer: Arc::new(Mutex::new(())),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&self.pool)
            .await
            .context("cannot apply database migrations")
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Wait for this process's turn to write (SQLite); `None` on PostgreSQL,
    /// whose row locks need no queue. Taken before a pool connection, so a
    /// waiting writer holds none.
    pub(crate) async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.writer.clone().lock_owned().await),
            Dialect::Postgres => None,
        }
    }

    /// Start a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let turn = self.write_turn().await;
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
        .context("cannot start a transaction")?;
        Ok(Tx {
            tx,
            dialect: self.dialect,
            _turn: turn,
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The figures `/metrics` reads from the database.
    pub async fn figures(&self) -> Result<crate::metrics::DbFigures> {
        let pairs = |rows: Vec<AnyRow>| -> Result<Vec<(String, i64)>> {
            rows.iter()
                .map(|r| Ok((col(r, "status")?, col(r, "n")?)))
                .collect()
        };
        let runs = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let incidents = sqlx::query("SELECT status, COUNT(*) AS n FROM incidents GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let scalar = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool);
        Ok(crate::metrics::DbFigures {
            runs: pairs(runs)?,
            incidents: pairs(incidents)?,
            outbox_depth: self.outbox_depth().await?,
            outbox_failed: scalar("SELECT COUNT(*) FROM outbox WHERE failed_at IS NOT NULL")
                .await?,
            timers_pending: scalar("SELECT COUNT(*) FROM timers WHERE fired_at IS NULL").await?,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await.context("cannot commit")
    }

    /// Record that a request with this key was handled; false if it already was.
    /// Keys come from the platforms (a Slack event id, a Discord interaction id).
    pub async fn first_time(&mut self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2) \
             ON CONFLICT (request_key) DO NOTHING",
        )
        .bind(key)
        .bind(ms(now))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn opt_from_ms(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(from_ms)
}

/// Read a column, naming it in the error.
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    use sqlx::Row;
    row.try_get(name).with_context(|| format!("column {name}"))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
