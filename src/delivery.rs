//! The outbox worker every platform shares: claim the head message of each
//! lane that is due, hand it to the platform's [`Deliver`], and record what
//! happened — delivered, retry later (after `Retry-After` or a growing
//! backoff), or failed for good. A lane's next message waits until its head
//! is through, so every channel keeps its order; lanes proceed side by side.
//! After the give-up time a message that keeps failing is marked failed and
//! logged, never retried forever and never dropped silently.
//!
//! Exactly once: an attempt that may have reached the platform without an
//! answer ([`Failure::Uncertain`], or a claim whose lease ran out) marks the
//! message uncertain, and each platform's [`Deliver`] settles an uncertain
//! message without posting it twice — Slack by looking for the message's
//! metadata in the conversation, Discord by the nonce it was sent with.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, instrument, warn};

use crate::domain::Platform;
use crate::engine::Engine;
use crate::store::ClaimedMessage;

/// Why a delivery did not go through.
#[derive(Debug)]
pub enum Failure {
    /// Try again, after `after` if the platform said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The request may have taken effect without tminus learning of it (no
    /// answer in time, a connection that broke after the request went, a
    /// server error, an outcome that could not be recorded). Tried again
    /// like [`Failure::Retry`], but the message is marked uncertain first,
    /// so the next attempt looks for what this one made before posting.
    Uncertain(String),
    /// Retrying would not help.
    Permanent(String),
}

impl Failure {
    pub fn retry(reason: impl Into<String>) -> Failure {
        Failure::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    /// A failed call that cannot have made a message (an edit, a lookup,
    /// opening a DM): an unanswered one is an ordinary retry.
    pub fn not_posted(self) -> Failure {
        match self {
            Failure::Uncertain(reason) => Failure::retry(reason),
            other => other,
        }
    }

    /// After the platform took a message, a failure to record that (or
    /// anything else in between) leaves its fate unknown to the database.
    pub fn after_sending(self) -> Failure {
        match self {
            Failure::Retry { reason, .. } => Failure::Uncertain(reason),
            other => other,
        }
    }
}

/// How a message whose earlier attempt may have reached the platform was
/// settled, for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The platform had it: its id was recorded, nothing posted again.
    Found,
    /// The platform did not have it: posted now.
    Posted,
    /// tminus could not tell (the lookup was refused): posted again.
    Unknown,
}

impl Settled {
    pub const ALL: [Settled; 3] = [Settled::Found, Settled::Posted, Settled::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Found => "found",
            Settled::Posted => "posted",
            Settled::Unknown => "unknown",
        }
    }
}

/// The platform's ids (message, thread) stored for a message key, once posted.
pub async fn posted(
    engine: &Engine,
    key: &str,
) -> Result<Option<(String, Option<String>)>, Failure> {
    engine.store().message_ref(key).await.map_err(database)
}

/// [`posted`], read from the database: for a thread that another process
/// may have started since this one last saw the message.
pub async fn posted_stored(
    engine: &Engine,
    key: &str,
) -> Result<Option<(String, Option<String>)>, Failure> {
    engine
        .store()
        .message_ref_stored(key)
        .await
        .map_err(database)
}

/// Store the platform's ids for a message key, so later deliveries edit it.
pub async fn remember_posted(
    engine: &Engine,
    platform: Platform,
    key: &str,
    channel: &str,
    id: &str,
    thread: Option<&str>,
) -> Result<(), Failure> {
    engine
        .store()
        .remember_message(key, platform, channel, id, thread, engine.now())
        .await
        .map_err(|e| database(e).after_sending())
}

/// A database hiccup during delivery: try again.
fn database(e: anyhow::Error) -> Failure {
    Failure::retry(format!("database: {e:#}"))
}

/// How one platform delivers one message.
pub trait Deliver: Send + Sync + 'static {
    fn platform(&self) -> Platform;
    fn deliver(&self, message: &ClaimedMessage)
        -> impl Future<Output = Result<(), Failure>> + Send;
}

const BATCH: i64 = 32;

/// The most messages of one lane a worker delivers in a row before the
/// lane waits for the next claim with the others.
const LANE_RUN: usize = 32;
const IDLE_POLL: Duration = Duration::from_millis(200);

/// 250 ms, doubling per attempt, at most 30 s.
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(0, 7) as u32;
    Duration::from_millis(250 * 2u64.pow(exp)).min(Duration::from_secs(30))
}

/// The outbox worker for one platform.
pub struct Worker<D: Deliver> {
    engine: Engine,
    platform: Arc<D>,
    owner: String,
    give_up: chrono::Duration,
    lease: chrono::Duration,
}

impl<D: Deliver> Clone for Worker<D> {
    fn clone(&self) -> Self {
        Worker {
            engine: self.engine.clone(),
            platform: self.platform.clone(),
            owner: self.owner.clone(),
            give_up: self.give_up,
            lease: self.lease,
        }
    }
}

impl<D: Deliver> Worker<D> {
    pub fn new(engine: Engine, platform: Arc<D>) -> Worker<D> {
        let owner = format!(
            "{}-{}-{}",
            platform.platform(),
            std::process::id(),
            engine.now().timestamp_millis()
        );
        Worker {
            give_up: engine.queue().give_up,
            lease: engine.queue().lease,
            engine,
            platform,
            owner,
        }
    }

    /// Deliver the head of every lane that is due; returns how many were claimed.
    pub async fn step(&self) -> Result<usize> {
        let now = self.engine.now();
        let claimed = self
            .engine
            .store()
            .claim_messages(
                self.platform.platform(),
                &self.owner,
                now,
                self.lease,
                BATCH,
            )
            .await?;
        let count = claimed.len();
        let mut tasks = JoinSet::new();
        for message in claimed {
            let this = self.clone();
            tasks.spawn(async move { this.settle(message).await });
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                error!(error = format!("{e:#}"), "recording a delivery failed");
            }
        }
        Ok(count)
    }

    /// Deliver until `shutdown` turns true; a commit that queued a message
    /// for this platform cuts the idle wait short (the store's bell).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let platform = self.platform.platform();
        let bell = self.engine.store().outbox_bell();
        info!(%platform, "delivery started");
        loop {
            let busy = match self.step().await {
                Ok(n) => n > 0,
                Err(e) => {
                    error!(%platform, error = format!("{e:#}"), "delivery step failed");
                    false
                }
            };
            if *shutdown.borrow() {
                return;
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = bell.wait(platform) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    /// Deliver a claimed message and, while each goes through, the next
    /// ones of its lane, claimed in the transaction that records the one
    /// before (up to [`LANE_RUN`], so a busy lane leaves room for the
    /// others at the next claim).
    async fn settle(&self, mut claimed: ClaimedMessage) -> Result<()> {
        for run in 1..=LANE_RUN {
            match self.settle_one(claimed, run < LANE_RUN).await? {
                Some(next) => claimed = next,
                None => break,
            }
        }
        Ok(())
    }

    /// Deliver one claimed message and record what happened; with
    /// `then_next`, the lane's next message, claimed, when this one was
    /// delivered.
    #[instrument(skip_all, fields(platform = %self.platform.platform(), outbox_id = claimed.id, attempts = claimed.attempts))]
    async fn settle_one(
        &self,
        claimed: ClaimedMessage,
        then_next: bool,
    ) -> Result<Option<ClaimedMessage>> {
        let store = self.engine.store();
        let result = self.platform.deliver(&claimed).await;
        let now = self.engine.now();
        let lane = claimed.message.lane();
        let platform = self.platform.platform();
        let counters = &crate::metrics::METRICS;
        if claimed.uncertain_since.is_some() {
            counters.uncertain_retries.add(platform, 1);
        }
        let (after, reason, uncertain) = match result {
            Ok(()) => {
                counters.delivered.add(platform, 1);
                if !then_next {
                    return store.mark_delivered(claimed.id, now).await.map(|()| None);
                }
                return store
                    .delivered_then_next(
                        claimed.id,
                        platform,
                        &claimed.lane,
                        &self.owner,
                        now,
                        self.lease,
                    )
                    .await;
            }
            Err(Failure::Permanent(reason)) => {
                error!(reason = %reason, %lane, "the platform refused a message; giving up on it");
                counters.failures.add(platform, 1);
                return store
                    .mark_failed(claimed.id, now, &reason)
                    .await
                    .map(|()| None);
            }
            Err(Failure::Retry { after, reason }) => (after, reason, false),
            Err(Failure::Uncertain(reason)) => {
                counters.uncertain_attempts.add(platform, 1);
                (None, format!("{reason} (it may have gone out)"), true)
            }
        };
        if now - claimed.created_at > self.give_up {
            error!(reason = %reason, %lane, "delivery kept failing; giving up");
            counters.failures.add(platform, 1);
            return store
                .mark_failed(claimed.id, now, &format!("gave up: {reason}"))
                .await
                .map(|()| None);
        }
        counters.retries.add(platform, 1);
        let wait = after.unwrap_or_else(|| backoff(claimed.attempts));
        warn!(reason = %reason, retry_in_ms = wait.as_millis() as u64, "delivery will be retried");
        let at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60));
        store
            .retry_later(claimed.id, at, &reason, uncertain)
            .await
            .map(|()| None)
    }
}
