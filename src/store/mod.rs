//! The durable store: runs, items, sign-offs, the audit log, the outbox of
//! outgoing messages and timers, incidents, pages and rotation overrides,
//! on SQLite or PostgreSQL through one code path (statements with `$N`
//! placeholders, rows read through [`sql::Row`], times as epoch
//! milliseconds).
//!
//! Every change goes through a [`Tx`]: the engine loads a run with a write
//! lock, applies a domain decision, and writes the run, its audit entries,
//! its outgoing messages and its timers before one commit. On PostgreSQL the
//! lock is `SELECT … FOR UPDATE`; on SQLite every write transaction starts
//! with `BEGIN IMMEDIATE`, which takes the database's single write lock.
//!
//! On SQLite (rusqlite, see [`lite`]), writers of this process take turns
//! on one connection kept for writing, and writes that arrive while one is
//! in progress are committed together ([`group`]). The turns hand the
//! connection over at once and in order, where SQLite's own busy handler
//! sleeps in steps of up to 100 ms. Statements run on the caller's thread
//! and stay prepared on their connection. Reads outside a transaction use
//! reading connections of their own, which in WAL mode never wait for the
//! writer. PostgreSQL goes through a pool of tokio-postgres connections, which
//! sends a transaction's statements together where it can ([`pg`]).

mod api;
mod audit;
mod batch;
mod group;
mod hooks;
mod incidents;
mod lite;
mod monitor;
mod pg;
mod queue;
mod runs;
pub mod schema;
mod sql;
mod versions;

use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::Connection as _;

use group::Turn;
use lite::Lite;
pub(crate) use sql::{Arg, FromValue, Row};

use crate::domain::Platform;

pub use api::ApiAnswer;
pub use audit::AuditEntry;
pub use hooks::HookCall;
pub use incidents::PageRecord;
pub use monitor::TickRecord;
pub use queue::{Claimed, ClaimedMessage, Timer, TimerKind, WEBHOOK_LANES};
pub use runs::RunPlace;

/// Which SQL dialect the database speaks, for the few statements that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect a database URL names.
    pub fn of(url: &str) -> Result<Dialect> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got another scheme)"
            )
        }
    }
}

/// What a SQLite commit survives (`TMINUS_SQLITE_SYNCHRONOUS`). In WAL
/// mode with `NORMAL`, a commit is in the write-ahead log when it returns
/// and survives the process being killed; the log reaches the disk at the
/// next checkpoint, so a power cut or an operating-system crash can lose
/// the last commits before it. `FULL` waits for the disk at every commit
/// and survives those too, at the cost BENCHMARKS.md gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    ProcessCrash,
    PowerCut,
}

impl Durability {
    /// From the variable's value: `normal` or `full`, as SQLite names them.
    pub fn parse(value: &str) -> Result<Durability, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(Durability::ProcessCrash),
            "full" => Ok(Durability::PowerCut),
            other => Err(format!(
                "TMINUS_SQLITE_SYNCHRONOUS must be normal or full (got {other:?})"
            )),
        }
    }

    pub(super) fn pragma(self) -> &'static str {
        match self {
            Durability::ProcessCrash => "NORMAL",
            Durability::PowerCut => "FULL",
        }
    }
}

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://tminus.db";

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Rung after a commit that queued messages, per platform.
    bell: Arc<OutboxBell>,
    /// The platform ids of messages already posted ([`Store::message_ref`]).
    refs: Arc<queue::KnownRefs>,
}

/// The database behind a [`Store`].
#[derive(Clone)]
enum Db {
    Sqlite(Arc<Lite>),
    Postgres(Arc<pg::Pg>),
}

/// How a commit that queued messages wakes the platform's delivery worker at
/// once instead of at its next idle poll. Ringing happens in one place,
/// [`Tx::commit`], whoever wrote the transaction (a command, a click, a
/// timer), so no adapter has to remember it.
#[derive(Default)]
pub struct OutboxBell {
    bells: [tokio::sync::Notify; 3],
}

impl OutboxBell {
    fn index(platform: Platform) -> usize {
        match platform {
            Platform::Slack => 0,
            Platform::Discord => 1,
            Platform::Shell => 2,
        }
    }

    /// Wake `platform`'s worker (or let its next wait return at once).
    pub fn ring(&self, platform: Platform) {
        self.bells[Self::index(platform)].notify_one();
    }

    /// Wait until a commit queues a message for `platform`.
    pub async fn wait(&self, platform: Platform) {
        self.bells[Self::index(platform)].notified().await
    }
}

/// The connection a [`Tx`] runs on.
enum TxConn {
    /// SQLite's write connection, in this writer's turn, inside its
    /// savepoint of the group's transaction.
    Sqlite(Turn, Arc<Lite>),
    Postgres(Box<pg::Tx>),
    /// Committed.
    Done,
    /// SQLite rolled the whole transaction back on its own; the turn is
    /// ended and every statement and the commit fail with the reason.
    Lost(String),
}

impl Drop for Tx {
    /// A SQLite transaction dropped without a commit (a refusal returns
    /// early, a request is cancelled, a statement failed) is rolled back to
    /// its savepoint at once, still in its turn, and the turn ended, so the
    /// group it was in is committed or passed on rather than left waiting.
    fn drop(&mut self) {
        if let TxConn::Sqlite(mut turn, lite) = std::mem::replace(&mut self.conn, TxConn::Done) {
            group::undo_member(&mut turn);
            lite.turns.end(turn);
        }
    }
}

/// A write transaction.
pub struct Tx {
    conn: TxConn,
    bell: Arc<OutboxBell>,
    /// The platforms this transaction queued messages for.
    queued: Vec<Platform>,
}

impl Store {
    /// Connect to `url` (`sqlite://…` or `postgres://…`), creating a SQLite
    /// file if missing, and apply the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, Durability::default()).await
    }

    /// [`Store::connect`], with SQLite's commits as durable as `durability`
    /// says (PostgreSQL's follow the server's own settings).
    pub async fn connect_with(url: &str, durability: Durability) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let db = match Dialect::of(url)? {
            Dialect::Sqlite => {
                schema::check_sqlite_params(url)?;
                schema::check_sqlite_files(url)?;
                let path = schema::sqlite_path(url).context(
                    "tminus keeps its state in a SQLite file, not in memory: \
                     give DATABASE_URL a path, such as sqlite://tminus.db",
                )?;
                let path = std::path::Path::new(&path);
                migrate_sqlite(path).await?;
                Db::Sqlite(Lite::open(path, durability)?)
            }
            Dialect::Postgres => {
                let pool = pg::Pg::new(url)?;
                migrate_postgres(url).await?;
                pool.open_first()
                    .await
                    .context("cannot open the database (check DATABASE_URL)")?;
                Db::Postgres(pool)
            }
        };
        Ok(Store {
            db,
            bell: Arc::default(),
            refs: Arc::default(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.db {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Rows of one read outside a transaction: it sees what was committed.
    pub(crate) async fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        match &self.db {
            Db::Sqlite(lite) => lite.rows(sql, args),
            Db::Postgres(pool) => Ok(pg::once(pool, pg::Step::rows(sql, args)).await?.rows),
        }
    }

    /// The first row of a read, if any.
    pub(crate) async fn row(&self, sql: &str, args: &[Arg]) -> Result<Option<Row>> {
        Ok(self.rows(sql, args).await?.into_iter().next())
    }

    /// The first column of a read's first row.
    pub(crate) async fn scalar<T: FromValue>(&self, sql: &str, args: &[Arg]) -> Result<T> {
        self.row(sql, args)
            .await?
            .context("a query answered with no row")?
            .first()
    }

    /// One write outside a transaction, committed when this returns: on
    /// SQLite a member of the current group, on PostgreSQL (whose row locks
    /// need no queue) a statement that commits on its own.
    async fn write(&self, sql: &str, args: &[Arg]) -> Result<()> {
        self.write_rows(sql, args).await.map(drop)
    }

    /// [`Store::write`] for a statement that answers with rows.
    async fn write_rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        if let Db::Postgres(pool) = &self.db {
            return Ok(pg::once(pool, pg::Step::rows(sql, args)).await?.rows);
        }
        let mut tx = self.begin().await?;
        let rows = tx.rows(sql, args).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Start a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let conn = match &self.db {
            Db::Sqlite(lite) => TxConn::Sqlite(lite.turns.begin().await?, lite.clone()),
            Db::Postgres(pool) => TxConn::Postgres(Box::new(
                pg::Tx::begin(pool)
                    .await
                    .context("cannot start a transaction")?,
            )),
        };
        Ok(Tx {
            conn,
            bell: self.bell.clone(),
            queued: Vec::new(),
        })
    }

    /// The bell a commit rings when it queued messages.
    pub fn outbox_bell(&self) -> Arc<OutboxBell> {
        self.bell.clone()
    }

    /// Whether the database takes a write, committed: one row of its own
    /// in `processed_requests`, rewritten each time (readiness).
    pub async fn check_writable(&self, now: DateTime<Utc>) -> Result<()> {
        self.write(
            "INSERT INTO processed_requests (request_key, at) VALUES ('tminus:readiness', $1) \
             ON CONFLICT (request_key) DO UPDATE SET at = excluded.at",
            &[ms(now).into()],
        )
        .await
    }

    /// The figures `/metrics` reads from the database.
    pub async fn figures(&self) -> Result<crate::metrics::DbFigures> {
        let pairs = |rows: Vec<Row>| -> Result<Vec<(String, i64)>> {
            rows.iter()
                .map(|r| Ok((r.get("status")?, r.get("n")?)))
                .collect()
        };
        let runs = self
            .rows(
                "SELECT status, COUNT(*) AS n FROM runs GROUP BY status",
                &[],
            )
            .await?;
        let incidents = self
            .rows(
                "SELECT status, COUNT(*) AS n FROM incidents GROUP BY status",
                &[],
            )
            .await?;
        Ok(crate::metrics::DbFigures {
            runs: pairs(runs)?,
            incidents: pairs(incidents)?,
            outbox_depth: self.outbox_depth().await?,
            outbox_failed: self
                .scalar(
                    "SELECT COUNT(*) FROM outbox WHERE failed_at IS NOT NULL",
                    &[],
                )
                .await?,
            timers_pending: self
                .scalar("SELECT COUNT(*) FROM timers WHERE fired_at IS NULL", &[])
                .await?,
        })
    }

    /// Commit what is open and close the connections.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(lite) => {
                lite.turns.flush().await;
                lite.close_readers();
            }
            Db::Postgres(pool) => pool.close(),
        }
    }
}

/// Apply the migrations to the SQLite database at `path` (creating the
/// file when missing) on a connection used for that alone and closed
/// after; the store's own connections open the same path.
async fn migrate_sqlite(path: &std::path::Path) -> Result<()> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .context("cannot open the database (check DATABASE_URL)")?;
    schema::migrator(Dialect::Sqlite)
        .run(&mut conn)
        .await
        .context("cannot apply database migrations")?;
    conn.close().await.ok();
    Ok(())
}

/// Apply the migrations to the PostgreSQL database at `url` on a
/// connection used for that alone (sqlx's migrator, which takes an
/// advisory lock so processes starting together apply them once).
async fn migrate_postgres(url: &str) -> Result<()> {
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .context("cannot open the database (check DATABASE_URL)")?;
    schema::migrator(Dialect::Postgres)
        .run(&mut conn)
        .await
        .context("cannot apply database migrations")?;
    conn.close().await.ok();
    Ok(())
}

/// What a transaction can read from: [`Tx`] sees its own writes; [`Store`]
/// sees what was committed. Lets one function load the same things in and
/// out of a transaction.
pub(crate) trait Reads {
    async fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>>;
}

impl Reads for Tx {
    async fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        Tx::rows(self, sql, args).await
    }
}

impl Reads for &Store {
    async fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        Store::rows(self, sql, args).await
    }
}

impl Tx {
    fn dialect(&self) -> Dialect {
        match self.conn {
            TxConn::Postgres(_) => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    /// Commit, then wake the delivery of every platform a message was
    /// queued for.
    pub async fn commit(mut self) -> Result<()> {
        let queued = std::mem::take(&mut self.queued);
        match std::mem::replace(&mut self.conn, TxConn::Done) {
            TxConn::Sqlite(turn, lite) => lite.turns.commit(turn).await?,
            TxConn::Postgres(tx) => (*tx).commit().await?,
            TxConn::Lost(reason) => anyhow::bail!("cannot commit: {reason}"),
            TxConn::Done => {}
        }
        for platform in queued {
            self.bell.ring(platform);
        }
        Ok(())
    }

    /// A write whose answer nobody reads: run at once on SQLite; on
    /// PostgreSQL sent with the transaction's next statement or its commit,
    /// in the same round trip ([`pg`]). Its failure fails that.
    pub(crate) async fn write(&mut self, sql: &str, args: &[Arg]) -> Result<()> {
        if let TxConn::Postgres(tx) = &mut self.conn {
            tx.write(sql, args);
            return Ok(());
        }
        self.exec(sql, args).await.map(drop)
    }

    /// Run a statement that answers with no rows; how many rows it changed.
    pub(crate) async fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        match &mut self.conn {
            TxConn::Sqlite(turn, _) => {
                let done = sql::lite_exec(&turn.conn, sql, args);
                self.check_lost(done)
            }
            TxConn::Postgres(tx) => Ok(one(tx.run(&[pg::Step::exec(sql, args)]).await?).changed),
            TxConn::Lost(reason) => Err(anyhow::anyhow!("{reason}")),
            TxConn::Done => unreachable!("a committed transaction is not used"),
        }
    }

    /// Run a statement and read the rows it answers with.
    pub(crate) async fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        match &mut self.conn {
            TxConn::Sqlite(turn, _) => {
                let rows = sql::lite_rows(&turn.conn, sql, args);
                self.check_lost(rows)
            }
            TxConn::Postgres(tx) => Ok(one(tx.run(&[pg::Step::rows(sql, args)]).await?).rows),
            TxConn::Lost(reason) => Err(anyhow::anyhow!("{reason}")),
            TxConn::Done => unreachable!("a committed transaction is not used"),
        }
    }

    /// After a SQLite statement failed: if SQLite rolled the whole
    /// transaction back with it, the group is told and this transaction
    /// ends here, so nothing after runs outside a transaction.
    fn check_lost<T>(&mut self, outcome: Result<T>) -> Result<T> {
        let Err(e) = outcome else { return outcome };
        if let TxConn::Sqlite(turn, _) = &mut self.conn {
            let reason = format!("{e:#}");
            if group::lost(turn, &reason) {
                if let TxConn::Sqlite(turn, lite) = std::mem::replace(
                    &mut self.conn,
                    TxConn::Lost(format!("the transaction was rolled back: {reason}")),
                ) {
                    lite.turns.end(turn);
                }
            }
        }
        Err(e)
    }

    /// The first row a statement answers with, if any.
    pub(crate) async fn row(&mut self, sql: &str, args: &[Arg]) -> Result<Option<Row>> {
        Ok(self.rows(sql, args).await?.into_iter().next())
    }

    /// The first column of the first row a statement answers with.
    pub(crate) async fn scalar<T: FromValue>(&mut self, sql: &str, args: &[Arg]) -> Result<T> {
        self.row(sql, args)
            .await?
            .context("a statement answered with no row")?
            .first()
    }

    /// Statements that answer with rows, one after the other; the rows of
    /// all of them, in order.
    pub(crate) async fn fetch(&mut self, statements: &[(&str, &[Arg])]) -> Result<Vec<Row>> {
        if let TxConn::Postgres(tx) = &mut self.conn {
            // Sent together: each statement still starts after the one
            // before it has finished (and taken its locks).
            let steps: Vec<pg::Step> = statements
                .iter()
                .map(|(sql, args)| pg::Step::rows(sql, args))
                .collect();
            let answers = tx.run(&steps).await?;
            return Ok(answers.into_iter().flat_map(|a| a.rows).collect());
        }
        let mut rows = Vec::new();
        for (sql, args) in statements {
            rows.extend(self.rows(sql, args).await?);
        }
        Ok(rows)
    }

    /// Record that a request with this key was handled; false if it already was.
    /// Keys come from the platforms (a Slack event id, a Discord interaction id).
    pub async fn first_time(&mut self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        let rows = self
            .rows(FIRST_TIME_SQL, &[key.into(), ms(now).into()])
            .await?;
        Ok(rows.len() == 1)
    }
}

/// The one answer of a pipeline of one statement.
fn one(mut answers: Vec<pg::Answered>) -> pg::Answered {
    answers.pop().expect("one answer per statement")
}

/// Records a request key; answers with a row only if the key is new.
const FIRST_TIME_SQL: &str = "INSERT INTO processed_requests (request_key, at) VALUES ($1, $2) \
     ON CONFLICT (request_key) DO NOTHING RETURNING request_key";

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
pub(crate) fn col<T: FromValue>(row: &Row, name: &str) -> Result<T> {
    row.get(name)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
