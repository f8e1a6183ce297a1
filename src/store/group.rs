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
//! If SQLite itself drops the transaction (it may on a full disk or an I/O
//! error), every member waiting for it is told the commit failed; none of
//! them has been answered yet, so each gets its apology and nothing is
//! half applied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Executor};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use super::Batch;

/// The most writers one commit takes. A member waits for every writer
/// after it in its group, so a cap bounds the wait.
const MAX_GROUP: usize = 32;

/// How long a member waits for its group's commit before it takes a turn
/// to commit the group itself: the turn was handed to a writer that gave up
/// waiting in the meantime (a cancelled request), so nobody else will.
const COMMIT_WAIT: Duration = Duration::from_millis(20);

/// How a member's writes start: inside the open transaction, or opening it.
const SAVEPOINT: &str = "SAVEPOINT member";
const BEGIN: &str = "BEGIN IMMEDIATE";

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
    pub(super) conn: AnyConnection,
    /// `BEGIN` was sent and neither `COMMIT` nor `ROLLBACK` since.
    open: bool,
    /// A member's savepoint may be on the stack: it was sent and neither
    /// released nor rolled back.
    pub(super) member: bool,
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
    pub(super) fn new(conn: AnyConnection) -> Turns {
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

    /// Wait for a turn. A member left on the connection by a writer dropped
    /// without a runtime to roll it back is rolled back first.
    pub(super) async fn take(&self) -> Turn {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let counted = Waiting(&self.waiting);
        let mut turn = self.conn.clone().lock_owned().await;
        drop(counted);
        if turn.member {
            // In a task of its own, so a cancelled wait cannot cut the
            // rollback half-way.
            turn = tokio::spawn(async move {
                undo_member(&mut turn).await;
                turn
            })
            .await
            .expect("rolling back a member does not panic");
        }
        turn
    }

    /// Whether a turn ending now passes the open transaction on: another
    /// writer waits and the group has room.
    fn passes_on(&self, turn: &Turn) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0 && turn.group.len() < MAX_GROUP
    }

    /// End a turn: pass it on inside the open transaction, or commit what
    /// is open. Every turn ends here, so an open group is never left
    /// without someone to commit it.
    pub(super) async fn end(&self, mut turn: Turn) {
        if turn.open && !self.passes_on(&turn) {
            commit_group(&mut turn).await;
        }
    }

    /// Commit a member: send its last statements and release its savepoint
    /// into the group, with the group's `COMMIT` in the same call when the
    /// turn would not be passed on (so a write with nobody else about costs
    /// one call, as it did before groups). Rows of the statements that
    /// answer with rows are returned. On failure the member is rolled back
    /// and the group goes on without it.
    pub(super) async fn commit(&self, mut turn: Turn, mut pending: Batch) -> Result<Vec<AnyRow>> {
        pending.push("RELEASE member", &[]);
        let last = !self.passes_on(&turn);
        if last {
            pending.push("COMMIT", &[]);
        }
        sending(&mut turn);
        match pending.query().fetch_all(&mut turn.conn).await {
            Ok(rows) if last => {
                turn.member = false;
                committed(&mut turn);
                Ok(rows)
            }
            Ok(rows) => {
                turn.member = false;
                self.join(turn).await?;
                Ok(rows)
            }
            Err(e) => {
                // If the statements failed, the member is rolled back and
                // the group goes on; if the `COMMIT` did, its savepoint is
                // gone and the whole group fails.
                undo_member(&mut turn).await;
                self.end(turn).await;
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
        self.end(turn).await;
        loop {
            match tokio::time::timeout(COMMIT_WAIT, &mut outcome).await {
                Ok(Ok(result)) => return result.map_err(|e| anyhow!(e)).context("cannot commit"),
                Ok(Err(_)) => return Err(anyhow!("the write connection closed before the commit")),
                Err(_) => {
                    let mut turn = self.take().await;
                    if turn.open && turn.generation == generation {
                        commit_group(&mut turn).await;
                    }
                    self.end(turn).await;
                }
            }
        }
    }

    /// Commit whatever is open (closing the store).
    pub(super) async fn flush(&self) {
        let mut turn = self.take().await;
        if turn.open {
            commit_group(&mut turn).await;
        }
    }
}

/// The statement a member's writes start with.
pub(super) fn start(turn: &Turn) -> Batch {
    let mut batch = Batch::default();
    if !turn.open {
        batch.push(BEGIN, &[]);
    }
    batch.push(SAVEPOINT, &[]);
    batch
}

/// Note that a member's statements are about to be sent: from here on a
/// transaction and the member's savepoint may be open.
pub(super) fn sending(turn: &mut Turn) {
    turn.open = true;
    turn.member = true;
}

/// Roll back the member on the connection, if any. If its savepoint is gone,
/// SQLite dropped the whole transaction: the group fails.
pub(super) async fn undo_member(turn: &mut Turn) {
    if !turn.member {
        return;
    }
    // The flag clears only once both statements ran: repeated after a
    // cut, the rollback is harmless, or it fails and so does the group.
    match turn
        .conn
        .execute("ROLLBACK TO member; RELEASE member")
        .await
    {
        Ok(_) => turn.member = false,
        Err(e) => fail_group(turn, format!("the transaction was lost: {e}")).await,
    }
}

/// Commit the open transaction and tell every member.
async fn commit_group(turn: &mut Turn) {
    match turn.conn.execute("COMMIT").await {
        Ok(_) => committed(turn),
        Err(e) => fail_group(turn, format!("{e}")).await,
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
async fn fail_group(turn: &mut Turn, reason: String) {
    turn.conn.execute("ROLLBACK").await.ok();
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
