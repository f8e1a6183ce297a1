//! SQLite's connections: the one kept for writing (taken in turns, see
//! [`super::group`]), a few for reading outside a transaction, and one for
//! copying the write-ahead log back into the database.
//!
//! All of them are rusqlite connections used on the caller's thread: a
//! statement is a function call, not a message to a connection thread and a
//! wake-up back, and each connection keeps the statements it has run
//! prepared. Reads and writes here are short (an index lookup, a few rows
//! written into the log, no disk wait with `synchronous = NORMAL`), so they
//! run on the runtime's thread; the two things that wait for the disk run
//! elsewhere or are stated: the checkpoint runs on a blocking thread, and a
//! commit under `synchronous = FULL` waits for its fsync where it is.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

use super::group::Turns;
use super::sql::{lite_rows, Arg, Row};
use super::Durability;

/// Reading connections kept for the next read; more are opened while reads
/// overlap and closed after.
const READERS_KEPT: usize = 4;

/// How often the write-ahead log is copied back into a SQLite database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// One SQLite database file, as this process uses it.
pub(super) struct Lite {
    pub(super) turns: Turns,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    durability: Durability,
}

impl Lite {
    /// Open the database at `path` (its schema already migrated) and start
    /// the checkpoint task.
    pub(super) fn open(path: &Path, durability: Durability) -> Result<Arc<Lite>> {
        let writer = connect(path, durability)?;
        // The writer never waits in SQLite's busy handler (it would hold the
        // runtime's thread; `group` waits for the lock asleep instead), and
        // never copies the log back itself: the commit that filled the log
        // past its limit would do that and wait for the disk holding the
        // write lock.
        writer.busy_timeout(Duration::ZERO)?;
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        // Each member of a group works in a savepoint, and SQLite keeps the
        // pages a savepoint changes first in a sub-journal so it can roll
        // back to it: in memory, not in a temporary file written page by
        // page (a group's sub-journal is a few dozen pages).
        writer.execute_batch("PRAGMA temp_store = MEMORY")?;
        writer.set_prepared_statement_cache_capacity(128);
        let lite = Arc::new(Lite {
            turns: Turns::new(writer),
            readers: Mutex::new(Vec::new()),
            path: path.to_path_buf(),
            durability,
        });
        let checkpointer = connect(path, durability)?;
        tokio::spawn(checkpoints(checkpointer, Arc::downgrade(&lite)));
        Ok(lite)
    }

    /// Run one read statement on a reading connection.
    pub(super) fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        let kept = self.readers.lock().expect("readers lock").pop();
        let conn = match kept {
            Some(conn) => conn,
            None => connect(&self.path, self.durability)?,
        };
        let rows = lite_rows(&conn, sql, args);
        let mut readers = self.readers.lock().expect("readers lock");
        if readers.len() < READERS_KEPT {
            readers.push(conn);
        }
        rows
    }

    /// Close the reading connections (closing the store).
    pub(super) fn close_readers(&self) {
        self.readers.lock().expect("readers lock").clear();
    }
}

/// A connection to `path` with the settings every connection of the store
/// has: write-ahead logging, the commit durability asked for, foreign keys,
/// and up to 10 s of waiting for another process's lock.
fn connect(path: &Path, durability: Durability) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;",
        durability.pragma()
    ))
    .with_context(|| format!("cannot set up the database {}", path.display()))?;
    // The query planner's stability guarantee: a statement's plan does not
    // depend on the values bound to it. Without it SQLite prepares a
    // statement again whenever it is bound anew and a value could change
    // the plan — every `LIMIT $N` does — which would throw away most of
    // what keeping statements prepared saves (the outbox claim is a long
    // recursive statement).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Copy the write-ahead log back into the database now and then, on a
/// connection of its own and a blocking thread (the copy waits for the
/// disk): a passive checkpoint runs beside the writer and never waits for
/// it. Once it has copied everything, the next write starts the log over
/// from its beginning, so the log stays small. Each time it also commits a
/// group left with nobody to commit it ([`Turns::commit_orphan`]). Ends when
/// the last copy of the store is dropped.
async fn checkpoints(conn: Connection, lite: Weak<Lite>) {
    let mut conn = Some(conn);
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        match lite.upgrade() {
            Some(lite) => lite.turns.commit_orphan(),
            None => return,
        }
        let Some(c) = conn.take() else { return };
        let done = tokio::task::spawn_blocking(move || {
            let outcome = c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
            (c, outcome)
        })
        .await;
        match done {
            Ok((c, outcome)) => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "copying the write-ahead log into the database failed");
                }
                conn = Some(c);
            }
            // The runtime is shutting down.
            Err(_) => return,
        }
    }
}
