//! Group commit on SQLite: writes that arrive while another is in progress
//! share one transaction and one `COMMIT`.
//!
//! The process keeps one connection for writing and hands it from writer to
//! writer in arrival order (a fair async mutex, a *turn*). The first writer
//! of a group opens the transaction with `BEGIN IMMEDIATE`, which takes the
//! database's write lock; every writer, the first included, works inside a
//! savepoint of its own. When a writer finishes, its savepoint is released
//! into the open transaction, and then one of two things happens:
//!
//! - another writer is waiting and the group is not full: the turn passes to
//!   it, in the same transaction, and the finished writer waits for the
//!   group's commit;
//! - nobody is waiting (or the group is full): the writer commits, and every
//!   member of the group learns the outcome of that one `COMMIT`.
//!
//! So nobody is answered before their writes are committed, a writer whose
//! statements fail is rolled back to its savepoint without touching the
//! others, and a quiet process commits each write at once, as before. The
//! commit that took thirty clicks costs what one click's did: SQLite writes
//! each changed page once per commit, and the pages a click changes (the
//! end of the audit log, the outbox, their indexes) are mostly the same
//! pages for every click.
//!
//! Every statement runs on the caller's thread (rusqlite, statements kept
//! prepared), so a writer's turn holds no hand-over to another thread and
//! ending a turn cannot be cut half-way by a cancelled request: the only
//! waits are for the turn itself, for the write lock another process holds,
//! and for the group's commit.
//!
//! If SQLite itself drops the transaction (it may on a full disk or an I/O
//! error), every member waiting for it is told the commit failed; none of
//! them has been answered yet, so each gets its apology and nothing is
//! half applied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

/// The most writers one commit takes. A member waits for every writer
/// after it in its group, so a cap bounds the wait.
const MAX_GROUP: usize = 32;

/// How long a member waits for its group's commit before it takes a turn
/// to commit the group itself: the turn was handed to a writer that gave up
/// waiting in the meantime (a cancelled request), so nobody else will.
const COMMIT_WAIT: Duration = Duration::from_millis(20);

/// How long a writer waits for another process to let go of the
/// database's write lock before it gives up (as `busy_timeout` would).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What a member learns of its group's commit.
type Outcome = Result<(), String>;

/// SQLite's write connection and the queue for it.
pub(super) struct Turns {
    conn: Arc<Mutex<WriteConn>>,
    /// Writers waiting for a turn. Counted by a guard, so a writer that
    /// stops waiting (its request was cancelled) stops counting.
    waiting: AtomicUsize,
}

/// The write connection and what is open on it.
pub(super) struct WriteConn {
    pub(super) conn: rusqlite::Connection,
    /// `BEGIN` was run and neither `COMMIT` nor `ROLLBACK` since.
    open: bool,
    /// A member's savepoint is on the stack: neither released nor rolled
    /// back yet.
    member: bool,
    /// Members released into the open transaction, waiting for its commit.
    group: Vec<oneshot::Sender<Outcome>>,
    /// Counts the transactions ended, so a member that stopped waiting can
    /// tell whether its group is still the open one.
    generation: u64,
}

/// A writer's turn on the connection.
pub(super) type Turn = OwnedMutexGuard<WriteConn>;

/// Decrements the waiting count when a wait ends, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Turns {
    pub(super) fn new(conn: rusqlite::Connection) -> Turns {
        Turns {
            conn: Arc::new(Mutex::new(WriteConn {
                conn,
                open: false,
                member: false,
                group: Vec::new(),
                generation: 0,
            })),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Wait for a turn.
    async fn take(&self) -> Turn {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let counted = Waiting(&self.waiting);
        let turn = self.conn.clone().lock_owned().await;
        drop(counted);
        turn
    }

    /// Wait for a turn and open a member's savepoint in it, opening the
    /// group's transaction first when none is open.
    pub(super) async fn begin(&self) -> Result<Turn> {
        let mut turn = self.take().await;
        if !turn.open {
            if !turn.conn.is_autocommit() {
                // A rollback that failed left a transaction behind.
                turn.conn.execute_batch("ROLLBACK").ok();
            }
            begin_immediate(&mut turn.conn).await?;
            turn.open = true;
        }
        if let Err(e) = run(&turn.conn, "SAVEPOINT member") {
            fail_group(&mut turn, format!("{e}"));
            return Err(e).context("cannot start a transaction");
        }
        turn.member = true;
        Ok(turn)
    }

    /// Whether a turn ending now passes the open transaction on: another
    /// writer waits and the group has room.
    fn passes_on(&self, turn: &Turn) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0 && turn.group.len() < MAX_GROUP
    }

    /// End a turn: pass it on inside the open transaction, or commit what
    /// is open. Every turn ends here, so an open group is never left
    /// without someone to commit it.
    pub(super) fn end(&self, mut turn: Turn) {
        if turn.open && !self.passes_on(&turn) {
            commit_group(&mut turn);
        }
    }

    /// Commit a member: release its savepoint into the group, then commit
    /// the group when the turn would not be passed on, or wait for the
    /// writer after it to. A member whose savepoint cannot be released is
    /// rolled back and the group goes on without it.
    pub(super) async fn commit(&self, mut turn: Turn) -> Result<()> {
        if let Err(e) = run(&turn.conn, "RELEASE member") {
            undo_member(&mut turn);
            self.end(turn);
            return Err(e).context("cannot commit");
        }
        turn.member = false;
        if !self.passes_on(&turn) && turn.group.len() < MAX_GROUP {
            // Statements run on this thread, so a writer goes from its
            // first statement to here without letting any other task run:
            // nobody could be waiting yet. A yield (two if the first
            // brought nobody) lets the requests that are ready run up to
            // their own turn and join this group rather than each commit
            // alone. Cut off here, the turn is still ended.
            let mut held = Held(self, Some(turn));
            tokio::task::yield_now().await;
            if !self.passes_on(held.1.as_ref().expect("held")) {
                tokio::task::yield_now().await;
            }
            turn = held.1.take().expect("the turn is held until here");
        }
        if self.passes_on(&turn) {
            return self.join(turn).await;
        }
        match run(&turn.conn, "COMMIT") {
            Ok(()) => {
                committed(&mut turn);
                Ok(())
            }
            Err(e) => {
                fail_group(&mut turn, format!("{e}"));
                Err(e).context("cannot commit")
            }
        }
    }

    /// End a member whose writes were released into the group: join it,
    /// end the turn, and wait for the group's commit.
    async fn join(&self, mut turn: Turn) -> Result<()> {
        let (told, mut outcome) = oneshot::channel();
        turn.group.push(told);
        let generation = turn.generation;
        self.end(turn);
        loop {
            match tokio::time::timeout(COMMIT_WAIT, &mut outcome).await {
                Ok(Ok(result)) => return result.map_err(|e| anyhow!(e)).context("cannot commit"),
                Ok(Err(_)) => return Err(anyhow!("the write connection closed before the commit")),
                Err(_) => {
                    let mut turn = self.take().await;
                    if turn.open && turn.generation == generation {
                        commit_group(&mut turn);
                    }
                    self.end(turn);
                }
            }
        }
    }

    /// Commit a group nobody is left to commit: every member was cut off
    /// (their requests cancelled) after the turn was handed to a writer
    /// that was cut off too, so the lock is free and the transaction open,
    /// holding SQLite's write lock. Only such a group finds the turn free
    /// with a transaction open; its members' writes are whole (each was
    /// released), and a member still waiting is told as at any commit. The checkpoint task calls
    /// this, so such a group is committed within its period.
    pub(super) fn commit_orphan(&self) {
        if let Ok(mut turn) = self.conn.clone().try_lock_owned() {
            if turn.open {
                commit_group(&mut turn);
            }
        }
    }

    /// Commit whatever is open (closing the store).
    pub(super) async fn flush(&self) {
        let mut turn = self.take().await;
        if turn.open {
            commit_group(&mut turn);
        }
    }
}

/// A turn held across a wait, ended if the wait is cut off.
struct Held<'a>(&'a Turns, Option<Turn>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(turn) = self.1.take() {
            self.0.end(turn);
        }
    }
}

/// `BEGIN IMMEDIATE`, which takes the database's write lock. The writer's
/// connection does not wait in SQLite's busy handler (it would hold the
/// runtime's thread): while another process holds the lock, this sleeps
/// and tries again, for up to [`LOCK_WAIT`].
async fn begin_immediate(conn: &mut rusqlite::Connection) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => return Ok(()),
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && started.elapsed() < LOCK_WAIT =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("cannot start a transaction"),
        }
    }
}

/// One transaction statement, kept prepared.
fn run(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.raw_execute().map(drop)
}

/// SQLite rolled back the whole transaction on its own (it may on a full
/// disk or an I/O error): nothing of the group is left, so every member
/// waiting for it is told, and this writer's statements must not go on
/// outside any transaction. Returns whether that happened.
pub(super) fn lost(turn: &mut Turn, reason: &str) -> bool {
    if !turn.open || !turn.conn.is_autocommit() {
        return false;
    }
    fail_group(turn, format!("the transaction was rolled back: {reason}"));
    true
}

/// Roll back the member on the connection, if any. If its savepoint is gone,
/// SQLite dropped the whole transaction: the group fails.
pub(super) fn undo_member(turn: &mut Turn) {
    if !turn.member {
        return;
    }
    let undone =
        run(&turn.conn, "ROLLBACK TO member").and_then(|()| run(&turn.conn, "RELEASE member"));
    match undone {
        Ok(()) => turn.member = false,
        Err(e) => fail_group(turn, format!("the transaction was lost: {e}")),
    }
}

/// Commit the open transaction and tell every member.
fn commit_group(turn: &mut Turn) {
    match run(&turn.conn, "COMMIT") {
        Ok(()) => committed(turn),
        Err(e) => fail_group(turn, format!("{e}")),
    }
}

/// The open transaction was committed: tell every member.
fn committed(turn: &mut Turn) {
    turn.open = false;
    turn.generation += 1;
    for member in turn.group.drain(..) {
        let _ = member.send(Ok(()));
    }
}

/// Roll back what is open and tell every member it was not committed.
fn fail_group(turn: &mut Turn, reason: String) {
    if !turn.conn.is_autocommit() {
        turn.conn.execute_batch("ROLLBACK").ok();
    }
    turn.open = false;
    turn.member = false;
    turn.generation += 1;
    if !turn.group.is_empty() {
        tracing::error!(members = turn.group.len(), reason = %reason, "a group commit failed");
    }
    for member in turn.group.drain(..) {
        let _ = member.send(Err(reason.clone()));
    }
}

#[cfg(test)]
impl Turns {
    /// Leave `sql`'s writes released into an open transaction with the
    /// turn free, as two requests cut off at the wrong moments can.
    pub(super) async fn leave_orphan(&self, sql: &str) {
        let mut turn = self.begin().await.expect("a turn");
        super::sql::lite_exec(&turn.conn, sql, &[]).expect("the write");
        run(&turn.conn, "RELEASE member").expect("the release");
        turn.member = false;
    }
}
