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
//! On SQLite, writers of this process take turns on one connection kept for
//! writing, and writes that arrive while one is in progress are committed
//! together ([`group`]). A connection that finds the write lock taken waits
//! in SQLite's busy handler, which sleeps in steps of up to 100 ms instead
//! of waking when the lock is released, so under concurrent clicks a few
//! unlucky ones waited seconds; the turns hand the connection over at once
//! and in order. Keeping the connection out of the pool also saves each
//! write the pool's two health checks (on acquire and on release), each a
//! round trip to the connection's thread while the lock is held. Another
//! process on the same file still meets `busy_timeout`. Reads outside a
//! transaction use the pool.

mod api;
mod audit;
mod group;
mod hooks;
mod incidents;
mod monitor;
mod queue;
mod runs;
pub mod schema;
mod versions;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

use group::{Turn, Turns};

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

    fn pragma(self) -> &'static str {
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
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite: the write connection and the turns on it (see [`group`]);
    /// `None` on PostgreSQL.
    writer: Option<Arc<Turns>>,
    /// Rung after a commit that queued messages, per platform.
    bell: Arc<OutboxBell>,
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
    Sqlite(Turn, Arc<Turns>),
    Postgres(Transaction<'static, Any>),
    /// Committed.
    Done,
}

impl Deref for TxConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            TxConn::Sqlite(turn, _) => &turn.conn,
            TxConn::Postgres(tx) => tx,
            TxConn::Done => unreachable!("a committed transaction is not used"),
        }
    }
}

impl DerefMut for TxConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            TxConn::Sqlite(turn, _) => &mut turn.conn,
            TxConn::Postgres(tx) => tx,
            TxConn::Done => unreachable!("a committed transaction is not used"),
        }
    }
}

impl Drop for Tx {
    /// A SQLite transaction dropped without a commit (a refusal returns
    /// early, a request is cancelled) is rolled back to its savepoint at
    /// once, still in its turn, and the turn ended, so the group it was in
    /// is committed or passed on rather than left waiting. (Without a
    /// runtime the next writer rolls it back first.)
    fn drop(&mut self) {
        if let TxConn::Sqlite(mut turn, turns) = std::mem::replace(&mut self.tx, TxConn::Done) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    group::undo_member(&mut turn).await;
                    turns.end(turn).await;
                });
            }
        }
    }
}

/// A write transaction.
///
/// On SQLite, statements whose answer nobody waits for (see [`Tx::defer`])
/// are kept in `pending` and sent together with the next statement that
/// answers, or with the `COMMIT`: SQLite runs a string of statements in one
/// call to its connection's thread. Each call is a hand-over between threads
/// while the database's one write lock is held, and on a small virtual
/// machine waking a thread costs more than the statement, so a click costs
/// two calls instead of about ten. The statements that open the
/// transaction or the savepoint wait there too.
pub struct Tx {
    tx: TxConn,
    dialect: Dialect,
    pending: Batch,
    /// How long `pending` is with only the opening statements in it.
    opening: usize,
    bell: Arc<OutboxBell>,
    /// The platforms this transaction queued messages for.
    queued: Vec<Platform>,
}

/// One argument of a statement built with [`Batch`].
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(Some(v.clone()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_string))
    }
}

/// Statements joined into one string, their `$N` placeholders renumbered so
/// each statement's arguments follow the ones before.
#[derive(Default)]
struct Batch {
    sql: String,
    args: Vec<Arg>,
}

impl Batch {
    fn one(sql: &str, args: &[Arg]) -> Batch {
        let mut batch = Batch::default();
        batch.push(sql, args);
        batch
    }

    fn push(&mut self, sql: &str, args: &[Arg]) {
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        let offset = self.args.len();
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            self.sql.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if let Ok(n) = rest[..digits].parse::<usize>() {
                self.sql.push_str(&(n + offset).to_string());
                rest = &rest[digits..];
            }
        }
        self.sql.push_str(rest);
        self.args.extend_from_slice(args);
    }

    fn is_empty(&self) -> bool {
        self.sql.is_empty()
    }

    fn query(self) -> sqlx::query::Query<'static, Any, sqlx::any::AnyArguments> {
        self.args.into_iter().fold(
            sqlx::query(sqlx::AssertSqlSafe(self.sql)),
            |q, arg| match arg {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            },
        )
    }
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
        if Dialect::of(url)? == Dialect::Sqlite {
            schema::check_sqlite_files(url)?;
        }
        let (dialect, url) = match Dialect::of(url)? {
            Dialect::Sqlite if !url.contains('?') => (Dialect::Sqlite, format!("{url}?mode=rwc")),
            dialect => (dialect, url.to_string()),
        };
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            // A SQLite connection is a file handle: the check on acquire
            // would only cost a round trip to its thread.
            .test_before_acquire(dialect == Dialect::Postgres)
            .max_connections(match dialect {
                Dialect::Sqlite => 4,
                Dialect::Postgres => 10,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        let sql = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                            durability.pragma()
                        );
                        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            });
        let pool = options
            .connect(&url)
            .await
            .context("cannot open the database (check DATABASE_URL)")?;
        let mut store = Store {
            pool,
            dialect,
            writer: None,
            bell: Arc::default(),
        };
        store.migrate().await?;
        if dialect == Dialect::Sqlite {
            let mut conn = store.pool.acquire().await?.detach();
            // The commit that fills the write-ahead log past its limit would
            // copy it back into the database and wait for the disk (an fsync,
            // milliseconds here) while holding the write lock; instead a
            // background task does that beside the writers.
            conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
            let writer = Arc::new(Turns::new(conn));
            tokio::spawn(checkpoints(store.pool.clone(), Arc::downgrade(&writer)));
            store.writer = Some(writer);
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        schema::migrator(self.dialect)
            .run(&self.pool)
            .await
            .context("cannot apply database migrations")
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// One write outside a transaction, committed when this returns: on
    /// SQLite a member of the current group (one call to the connection's
    /// thread with its savepoint), on PostgreSQL (whose row locks need no
    /// queue) a statement that commits on its own.
    async fn write(&self, sql: &str, args: &[Arg]) -> Result<()> {
        self.write_fetch(sql, args).await.map(drop)
    }

    /// [`Store::write`] for a statement that answers with rows.
    async fn write_fetch(&self, sql: &str, args: &[Arg]) -> Result<Vec<AnyRow>> {
        if self.writer.is_none() {
            return Ok(Batch::one(sql, args).query().fetch_all(&self.pool).await?);
        }
        let mut tx = self.begin().await?;
        tx.pending.push(sql, args);
        tx.commit_rows().await
    }

    /// Start a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let (tx, pending) = match &self.writer {
            Some(turns) => {
                let turn = turns.take().await;
                let pending = group::start(&turn);
                (TxConn::Sqlite(turn, turns.clone()), pending)
            }
            None => (
                TxConn::Postgres(
                    self.pool
                        .begin()
                        .await
                        .context("cannot start a transaction")?,
                ),
                Batch::default(),
            ),
        };
        Ok(Tx {
            tx,
            dialect: self.dialect,
            opening: pending.sql.len(),
            pending,
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
        if let Some(turns) = &self.writer {
            turns.flush().await;
        }
        self.pool.close().await;
    }
}

/// How often the write-ahead log is copied back into a SQLite database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copy the write-ahead log back into the database now and then, on a
/// reading connection: a passive checkpoint runs beside the writer and never
/// waits for it. Once it has copied everything, the next write starts the
/// log over from its beginning, so the log stays small. Ends when the pool
/// is closed or the last copy of the store is dropped (`writer` is gone).
async fn checkpoints(pool: AnyPool, writer: std::sync::Weak<Turns>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if pool.is_closed() || writer.strong_count() == 0 {
            return;
        }
        if let Err(e) = pool.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "copying the write-ahead log into the database failed");
        }
    }
}

impl Tx {
    /// Commit, then wake the delivery of every platform a message was
    /// queued for.
    pub async fn commit(self) -> Result<()> {
        self.commit_rows().await.map(drop)
    }

    /// Commit, returning the rows of the deferred statements that answer
    /// with rows (on SQLite they go with the commit, in one call).
    async fn commit_rows(mut self) -> Result<Vec<AnyRow>> {
        let queued = std::mem::take(&mut self.queued);
        let bell = self.bell.clone();
        let rows = self.commit_writes().await?;
        for platform in queued {
            bell.ring(platform);
        }
        Ok(rows)
    }

    async fn commit_writes(&mut self) -> Result<Vec<AnyRow>> {
        let pending = std::mem::take(&mut self.pending);
        match std::mem::replace(&mut self.tx, TxConn::Done) {
            TxConn::Sqlite(turn, turns) => {
                let nothing_written = !turn.member && pending.sql.len() == self.opening;
                // Ending a turn is never cut half-way: a request cancelled
                // here (its client went away) must not leave a `COMMIT` run
                // but unrecorded, or a group without anyone to commit it, so
                // the work runs in a task of its own that finishes anyway.
                let ending = tokio::spawn(async move {
                    if nothing_written {
                        turns.end(turn).await;
                        return Ok(Vec::new());
                    }
                    turns.commit(turn, pending).await
                });
                ending.await.context("the commit task failed")?
            }
            TxConn::Postgres(tx) => {
                tx.commit().await.context("cannot commit")?;
                Ok(Vec::new())
            }
            TxConn::Done => Ok(Vec::new()),
        }
    }

    /// The connection, every deferred statement sent first.
    pub(crate) async fn conn(&mut self) -> Result<&mut AnyConnection> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.mark_open();
            pending
                .query()
                .execute(&mut *self.tx)
                .await
                .context("writing")?;
        }
        Ok(&mut self.tx)
    }

    fn mark_open(&mut self) {
        if let TxConn::Sqlite(turn, _) = &mut self.tx {
            group::sending(turn);
        }
    }

    /// A write whose answer nobody waits for. On SQLite it waits in this
    /// transaction and goes with the next statement sent (see [`Tx`]), so
    /// an error it meets shows there; on PostgreSQL it is sent at once.
    pub(crate) async fn defer(&mut self, sql: &str, args: &[Arg]) -> Result<()> {
        match self.dialect {
            Dialect::Sqlite => {
                self.pending.push(sql, args);
                Ok(())
            }
            Dialect::Postgres => {
                Batch::one(sql, args).query().execute(&mut *self.tx).await?;
                Ok(())
            }
        }
    }

    /// Statements that answer with rows, after every deferred one; on SQLite
    /// all in one call. Rows of all statements, in order.
    pub(crate) async fn fetch(&mut self, statements: &[(&str, &[Arg])]) -> Result<Vec<AnyRow>> {
        match self.dialect {
            Dialect::Sqlite => {
                let mut batch = std::mem::take(&mut self.pending);
                for (sql, args) in statements {
                    batch.push(sql, args);
                }
                self.mark_open();
                Ok(batch.query().fetch_all(&mut *self.tx).await?)
            }
            Dialect::Postgres => {
                let mut rows = Vec::new();
                for (sql, args) in statements {
                    rows.extend(
                        Batch::one(sql, args)
                            .query()
                            .fetch_all(&mut *self.tx)
                            .await?,
                    );
                }
                Ok(rows)
            }
        }
    }

    /// Record that a request with this key was handled; false if it already was.
    /// Keys come from the platforms (a Slack event id, a Discord interaction id).
    pub async fn first_time(&mut self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        let rows = self
            .fetch(&[(FIRST_TIME_SQL, &[key.into(), ms(now).into()])])
            .await?;
        Ok(rows.len() == 1)
    }
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
