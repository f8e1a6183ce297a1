//! The two durable queues: the outbox of messages to deliver and the timers
//! to fire. Both are claimed with leases (`lease_owner`, `lease_until`) so a
//! worker that dies mid-way loses its claim when the lease runs out; on
//! PostgreSQL claims use `FOR UPDATE SKIP LOCKED` so several processes can
//! share the work. Exactly-once firing of a timer does not rest on the lease:
//! [`Tx::mark_fired`] flips `fired_at` in the same transaction as the
//! timer's effects, and only one transaction can flip it.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{col, from_ms, ms, Arg, Dialect, Row, Store, Tx};
use crate::chat::Outgoing;
use crate::domain::{Platform, RunId};

/// What a timer is for, with what it needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimerKind {
    /// Remind the thread that a phase is still waiting on sign-offs.
    SignoffReminder { run: RunId, phase: String, seq: u32 },
    /// Probe and judge one tick of a run's monitoring window (epoch ms).
    MonitorTick { run: RunId, at: i64 },
    /// Page number `seq` of an incident's climb, if it is still unanswered
    /// and still in climb `generation`.
    Escalate {
        incident: i64,
        generation: u32,
        seq: u32,
    },
    /// An acknowledgement (of climb `generation`) ran out: page again unless
    /// the incident was resolved or acknowledged since.
    AckTimeout { incident: i64, generation: u32 },
    /// Run the automated checks of a run's phase (asked at `at`, epoch ms:
    /// when the phase opened or someone pressed "Check again").
    ItemChecks { run: RunId, phase: String, at: i64 },
    /// Attempt `attempt` (from 0) of pipeline call `call` (`hook_calls`).
    HookCall { run: RunId, call: i64, attempt: u32 },
    /// The pipeline of call `call` has not reported back in time: its
    /// item fails unless it was reported since.
    HookTimeout { run: RunId, call: i64 },
}

impl TimerKind {
    fn name(&self) -> &'static str {
        match self {
            TimerKind::SignoffReminder { .. } => "signoff_reminder",
            TimerKind::MonitorTick { .. } => "monitor_tick",
            TimerKind::Escalate { .. } => "escalate",
            TimerKind::AckTimeout { .. } => "ack_timeout",
            TimerKind::ItemChecks { .. } => "item_checks",
            TimerKind::HookCall { .. } => "hook_call",
            TimerKind::HookTimeout { .. } => "hook_timeout",
        }
    }

    fn run(&self) -> Option<RunId> {
        match self {
            TimerKind::SignoffReminder { run, .. }
            | TimerKind::MonitorTick { run, .. }
            | TimerKind::ItemChecks { run, .. }
            | TimerKind::HookCall { run, .. }
            | TimerKind::HookTimeout { run, .. } => Some(*run),
            TimerKind::Escalate { .. } | TimerKind::AckTimeout { .. } => None,
        }
    }

    /// A key unique to this firing, so scheduling the same thing twice is harmless.
    pub fn key(&self) -> String {
        match self {
            TimerKind::SignoffReminder { run, phase, seq } => {
                format!("reminder:{run}:{phase}:{seq}")
            }
            TimerKind::MonitorTick { run, at } => format!("monitor:{run}:{at}"),
            TimerKind::Escalate {
                incident,
                generation,
                seq,
            } => format!("escalate:{incident}:{generation}:{seq}"),
            TimerKind::AckTimeout {
                incident,
                generation,
            } => format!("ack-timeout:{incident}:{generation}"),
            TimerKind::ItemChecks { run, phase, at } => format!("checks:{run}:{phase}:{at}"),
            TimerKind::HookCall { call, attempt, .. } => format!("hook:{call}:{attempt}"),
            TimerKind::HookTimeout { call, .. } => format!("hook-timeout:{call}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub id: i64,
    pub due_at: DateTime<Utc>,
    pub kind: TimerKind,
}

/// A claimed row of the outbox, with its message `T`.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed<T> {
    pub id: i64,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    /// When this claim began.
    pub claimed_at: DateTime<Utc>,
    /// Since when an earlier attempt may have reached the platform unseen:
    /// before posting, look for what it made (see [`Store::claim_messages`]).
    pub uncertain_since: Option<DateTime<Utc>>,
    /// The ordering lane: a channel, a person's DMs, a webhook endpoint.
    pub lane: String,
    pub message: T,
}

/// A chat message claimed for delivery.
pub type ClaimedMessage = Claimed<Outgoing>;

/// The outbox's `platform` of webhook events; their lane is the endpoint.
pub const WEBHOOK_LANES: &str = "webhook";

impl<T> Claimed<T> {
    fn map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Claimed<U>, E> {
        Ok(Claimed {
            id: self.id,
            attempts: self.attempts,
            created_at: self.created_at,
            claimed_at: self.claimed_at,
            uncertain_since: self.uncertain_since,
            lane: self.lane,
            message: f(self.message)?,
        })
    }
}

impl Tx {
    /// Queue a message for delivery when the transaction commits.
    ///
    /// On SQLite a card edit replaces the previous edit of the same card
    /// while that one still waits (not claimed, and no earlier attempt of
    /// it may have reached the platform — that one must finish as it was
    /// sent, so a lookup finds what it made): SQLite
    /// updates rows in place, so this saves the delivery worker a claim and
    /// a write under the one write lock per superseded edit. PostgreSQL
    /// would leave a dead row version per rewrite of that hot row, so there
    /// every edit is queued and [`Store::supersede`] skips the stale ones at
    /// claim time. Either way a platform gets the newest card, in order.
    pub async fn enqueue(
        &mut self,
        run: Option<RunId>,
        msg: &Outgoing,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !self.queued.contains(&msg.platform) {
            self.queued.push(msg.platform);
        }
        let payload = serde_json::to_string(msg)?;
        let insert = "INSERT INTO outbox (platform, channel, run_id, message_key, payload, created_at, next_attempt_at)";
        let args = [
            msg.platform.as_str().into(),
            msg.lane().into(),
            run.map(|r| r.0).into(),
            msg.key.as_deref().into(),
            payload.into(),
            ms(now).into(),
        ];
        if msg.key.is_some() && self.dialect() == Dialect::Sqlite {
            // The edit replaces the waiting one, if any; `changes()` tells
            // the insert after it whether it did.
            self.exec(
                "UPDATE outbox SET payload = $5 WHERE message_key = $4 AND platform = $1 \
                 AND channel = $2 AND delivered_at IS NULL AND failed_at IS NULL \
                 AND lease_until IS NULL AND uncertain_since IS NULL",
                &args,
            )
            .await
            .context("replacing a waiting edit")?;
            self.exec(
                &format!("{insert} SELECT $1, $2, $3, $4, $5, $6, $6 WHERE changes() = 0"),
                &args,
            )
            .await
            .context("queueing a message")?;
        } else {
            self.write(
                &format!("{insert} VALUES ($1, $2, $3, $4, $5, $6, $6)"),
                &args,
            )
            .await
            .context("queueing a message")?;
        }
        Ok(())
    }

    /// Queue a webhook event for `endpoint` when the transaction commits:
    /// `body` is sent as it is, after the endpoint's events before it.
    pub async fn enqueue_webhook(
        &mut self,
        run: Option<RunId>,
        endpoint: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.write(
            "INSERT INTO outbox (platform, channel, run_id, message_key, payload, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, NULL, $4, $5, $5)",
            &[
                WEBHOOK_LANES.into(),
                endpoint.into(),
                run.map(|r| r.0).into(),
                body.into(),
                ms(now).into(),
            ],
        )
        .await
        .context("queueing a webhook event")?;
        Ok(())
    }

    /// Schedule a timer; a timer with the same key already scheduled wins.
    pub async fn schedule(&mut self, kind: &TimerKind, due: DateTime<Utc>) -> Result<()> {
        self.write(
            "INSERT INTO timers (timer_key, kind, run_id, due_at, payload) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (timer_key) DO NOTHING",
            &[
                kind.key().into(),
                kind.name().into(),
                kind.run().map(|r| r.0).into(),
                ms(due).into(),
                serde_json::to_string(kind)?.into(),
            ],
        )
        .await
        .context("scheduling a timer")?;
        Ok(())
    }

    /// Mark a timer fired; false if another transaction already did, in
    /// which case the caller must do nothing.
    pub async fn mark_fired(&mut self, id: i64, now: DateTime<Utc>) -> Result<bool> {
        let done = self
            .exec(
                "UPDATE timers SET fired_at = $2 WHERE id = $1 AND fired_at IS NULL",
                &[id.into(), ms(now).into()],
            )
            .await?;
        Ok(done == 1)
    }
}

impl Store {
    /// Claim up to `limit` timers due at `now` for `lease`.
    pub async fn claim_timers(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<Timer>> {
        let skip_locked = self.skip_locked();
        let sql = format!(
            "UPDATE timers SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT id FROM timers WHERE fired_at IS NULL AND due_at <= $3 \
               AND (lease_until IS NULL OR lease_until < $3) \
               ORDER BY due_at, id LIMIT $4{skip_locked}) \
             RETURNING id, due_at, payload"
        );
        let rows = self
            .write_rows(
                &sql,
                &[
                    owner.into(),
                    ms(now + lease).into(),
                    ms(now).into(),
                    limit.into(),
                ],
            )
            .await
            .context("claiming timers")?;
        let mut timers = rows
            .iter()
            .map(timer_from_row)
            .collect::<Result<Vec<_>>>()?;
        timers.sort_by_key(|t| (t.due_at, t.id));
        Ok(timers)
    }

    /// Timers not yet fired, soonest first (for status and tests).
    pub async fn pending_timers(&self) -> Result<Vec<Timer>> {
        let rows = self
            .rows(
                "SELECT id, due_at, payload FROM timers WHERE fired_at IS NULL ORDER BY due_at, id",
                &[],
            )
            .await?;
        rows.iter().map(timer_from_row).collect()
    }

    /// The latest moment anything was recorded (a timer firing or an audit
    /// entry), for a virtual clock that must not run backwards.
    pub async fn latest_recorded_time(&self) -> Result<Option<DateTime<Utc>>> {
        let latest: Option<i64> = self
            .scalar(
                "SELECT MAX(t) FROM (SELECT MAX(fired_at) AS t FROM timers \
                 UNION ALL SELECT MAX(at) AS t FROM audit_log) AS times",
                &[],
            )
            .await?;
        Ok(latest.map(from_ms))
    }

    /// When the next unfired timer is due, if any.
    pub async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>> {
        let due: Option<i64> = self
            .scalar("SELECT MIN(due_at) FROM timers WHERE fired_at IS NULL", &[])
            .await?;
        Ok(due.map(from_ms))
    }

    /// Claim the next message of each lane of `platform` whose turn it is:
    /// the oldest undelivered message of the lane, when no other message of
    /// the lane is claimed by a live lease. This keeps each lane in order
    /// while lanes proceed independently.
    ///
    /// Edits superseded by a newer one of the same card are skipped (see
    /// [`Store::supersede`]); the lane's next message is claimed instead.
    pub async fn claim_messages(
        &self,
        platform: Platform,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>> {
        loop {
            let claimed = self
                .claim_heads(platform.as_str(), owner, now, lease, limit)
                .await?;
            let total = claimed.len();
            let mut live = Vec::with_capacity(total);
            for (m, superseded) in claimed {
                let m = m.map(|payload| serde_json::from_str::<Outgoing>(&payload))?;
                if superseded {
                    self.supersede(m.id, now).await?;
                } else {
                    live.push(m);
                }
            }
            if !live.is_empty() || live.len() == total {
                return Ok(live);
            }
        }
    }

    /// Claim the next event of each webhook endpoint whose turn it is (the
    /// outbox lanes of [`WEBHOOK_LANES`], one per endpoint): in order per
    /// endpoint, endpoints side by side. The message is the body to send.
    pub async fn claim_webhooks(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<Claimed<String>>> {
        let claimed = self
            .claim_heads(WEBHOOK_LANES, owner, now, lease, limit)
            .await?;
        Ok(claimed.into_iter().map(|(m, _)| m).collect())
    }

    async fn claim_heads(
        &self,
        platform: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<(Claimed<String>, bool)>> {
        let skip_locked = self.skip_locked();
        // The lanes with undelivered messages are found by hopping from one
        // channel to the next in the `outbox_pending` index (a recursive
        // query), and each lane's head is one more index lookup: the cost
        // follows the number of lanes, not the depth of the outbox. Comparing
        // every pending message with its lane's head instead cost
        // milliseconds per claim once thousands were queued.
        //
        // The head's own conditions are stated on `o` as well: when
        // PostgreSQL's `FOR UPDATE` waits for a row another worker just
        // changed, it re-checks only those against the new row, so a head
        // that worker delivered (its lease cleared) is not claimed again.
        let dialect = self.dialect();
        let first_lane = lane_after(dialect, ">=", "''");
        let next_lane = lane_after(dialect, ">", "lanes.channel");
        let head = lane_head(dialect, "lanes.channel", "0");
        let sql = format!(
            "{CLAIM_SET} WHERE id IN (\
               WITH RECURSIVE lanes (channel) AS (\
                 SELECT {first_lane} \
                 UNION ALL \
                 SELECT {next_lane} FROM lanes WHERE lanes.channel IS NOT NULL) \
               SELECT o.id FROM outbox o WHERE o.id IN (\
                 SELECT {head} FROM lanes WHERE lanes.channel IS NOT NULL) \
               AND o.delivered_at IS NULL AND o.failed_at IS NULL \
               AND o.next_attempt_at <= $4 AND (o.lease_until IS NULL OR o.lease_until < $4) \
               ORDER BY o.id LIMIT $5{skip_locked}) {returning}",
            returning = claim_returning(dialect)
        );
        let rows = self
            .write_rows(
                &sql,
                &[
                    owner.into(),
                    ms(now + lease).into(),
                    platform.into(),
                    ms(now).into(),
                    limit.into(),
                    lease.num_milliseconds().into(),
                ],
            )
            .await
            .context("claiming outgoing messages")?;
        let mut claimed = rows
            .iter()
            .map(claimed_from_row)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|(m, _)| m.id);
        Ok(claimed)
    }

    /// An edit of a card with a newer edit waiting behind it in its lane is
    /// not sent: it is marked delivered as superseded, and the newer one
    /// brings the card up to date. One call with the newest card instead of
    /// a queue of stale ones, which matters most while a platform
    /// rate-limits. The claim finds such edits (its `superseded` column).
    async fn supersede(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.write(SUPERSEDED_SQL, &[id.into(), ms(now).into()])
            .await
            .context("skipping a superseded edit")
    }

    pub async fn mark_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.write(DELIVERED_SQL, &[id.into(), ms(now).into()])
            .await
    }

    /// Record that claimed message `id` of `lane` was delivered and, in
    /// the same transaction, claim the lane's next message if it is due —
    /// one write per delivered message instead of a mark and a claim, and a
    /// look at one lane instead of a walk over all of them. Superseded
    /// edits met on the way are skipped as [`Store::claim_messages`] skips
    /// them.
    pub async fn delivered_then_next(
        &self,
        id: i64,
        platform: Platform,
        lane: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<ClaimedMessage>> {
        let mut done = (id, DELIVERED_SQL);
        loop {
            let claim: [Arg; 7] = [
                owner.into(),
                ms(now + lease).into(),
                platform.as_str().into(),
                ms(now).into(),
                lane.into(),
                lease.num_milliseconds().into(),
                done.0.into(),
            ];
            let rows = match self.dialect() {
                // One statement, committed on its own: the outcome is a
                // part of the claim ($8 the id, $9 now). The claim looks
                // only after the message just delivered, so the outcome's
                // change, which it does not see, cannot matter to it.
                Dialect::Postgres => {
                    let mut args = claim.to_vec();
                    args.extend([done.0.into(), ms(now).into()]);
                    self.write_rows(delivered_then_claim_sql(done.1), &args)
                        .await
                        .context("recording a delivery and claiming the lane's next message")?
                }
                Dialect::Sqlite => {
                    let mut tx = self.begin().await?;
                    tx.exec(done.1, &[done.0.into(), ms(now).into()])
                        .await
                        .context("recording a delivery")?;
                    let rows = tx
                        .rows(next_in_lane_sql(Dialect::Sqlite), &claim)
                        .await
                        .context("claiming the lane's next message")?;
                    tx.commit().await?;
                    rows
                }
            };
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let (next, superseded) = claimed_from_row(row)?;
            if superseded {
                done = (next.id, SUPERSEDED_SQL);
                continue;
            }
            return Ok(Some(
                next.map(|payload| serde_json::from_str::<Outgoing>(&payload))?,
            ));
        }
    }

    /// Put a message back for another attempt at `retry_at`; `uncertain`
    /// says this attempt may have reached the platform unseen.
    pub async fn retry_later(
        &self,
        id: i64,
        retry_at: DateTime<Utc>,
        error: &str,
        uncertain: bool,
    ) -> Result<()> {
        self.write(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3, \
             uncertain_since = CASE WHEN $4 = 1 THEN COALESCE(uncertain_since, claimed_at) \
               ELSE uncertain_since END, \
             lease_owner = NULL, lease_until = NULL WHERE id = $1",
            &[
                id.into(),
                ms(retry_at).into(),
                error.into(),
                i64::from(uncertain).into(),
            ],
        )
        .await
    }

    /// Give up on a message: it stays in the outbox, marked failed, with why.
    pub async fn mark_failed(&self, id: i64, now: DateTime<Utc>, error: &str) -> Result<()> {
        self.write(
            "UPDATE outbox SET attempts = attempts + 1, failed_at = $2, last_error = $3, \
             lease_owner = NULL, lease_until = NULL WHERE id = $1",
            &[id.into(), ms(now).into(), error.into()],
        )
        .await
    }

    /// Undelivered messages, all platforms.
    pub async fn outbox_depth(&self) -> Result<i64> {
        self.scalar(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
            &[],
        )
        .await
    }

    /// Messages given up on, with why: (outbox id, lane, last error).
    pub async fn failed_messages(&self) -> Result<Vec<(i64, String, String)>> {
        let rows = self
            .rows(
                "SELECT id, channel, COALESCE(last_error, '') AS last_error FROM outbox \
                 WHERE failed_at IS NOT NULL ORDER BY id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((col(r, "id")?, col(r, "channel")?, col(r, "last_error")?)))
            .collect()
    }

    /// Remember the platform's id for a posted message with a key.
    pub async fn remember_message(
        &self,
        key: &str,
        platform: Platform,
        channel: &str,
        platform_ref: &str,
        thread_ref: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.write(
            "INSERT INTO messages (message_key, platform, channel, platform_ref, thread_ref, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_key) DO UPDATE SET \
             platform_ref = excluded.platform_ref, thread_ref = excluded.thread_ref, updated_at = excluded.updated_at",
            &[
                key.into(),
                platform.as_str().into(),
                channel.into(),
                platform_ref.into(),
                thread_ref.into(),
                ms(now).into(),
            ],
        )
        .await?;
        self.refs.keep(
            key,
            (platform_ref.to_string(), thread_ref.map(str::to_string)),
        );
        Ok(())
    }

    /// The platform's ids (message, thread) for a keyed message, once
    /// posted: from memory when this process has seen them (see
    /// [`KnownRefs`]), else from the database.
    pub async fn message_ref(&self, key: &str) -> Result<Option<(String, Option<String>)>> {
        if let Some(known) = self.refs.get(key) {
            return Ok(Some(known));
        }
        self.message_ref_stored(key).await
    }

    /// [`Store::message_ref`] read from the database, for a thread another
    /// process may have started since this one saw the message.
    pub async fn message_ref_stored(&self, key: &str) -> Result<Option<(String, Option<String>)>> {
        let row = self
            .row(
                "SELECT platform_ref, thread_ref FROM messages WHERE message_key = $1",
                &[key.into()],
            )
            .await?;
        let found: Option<(String, Option<String>)> = row
            .map(|r| Ok::<_, anyhow::Error>((col(&r, "platform_ref")?, col(&r, "thread_ref")?)))
            .transpose()?;
        if let Some(found) = &found {
            self.refs.keep(key, found.clone());
        }
        Ok(found)
    }

    fn skip_locked(&self) -> &'static str {
        skip_locked(self.dialect())
    }
}

/// Message ids this process has read or recorded, so delivering an edit
/// does not read them from the database each time. A message's id never
/// changes once recorded (a keyed message is posted once, then edited);
/// what can come later is its thread (Discord starts one under a run's root
/// message on first use), which whoever starts threads reads with
/// [`Store::message_ref_stored`]. Bounded: past [`KnownRefs::MOST`] entries
/// it starts again empty.
#[derive(Default)]
pub(crate) struct KnownRefs {
    refs: std::sync::Mutex<std::collections::HashMap<String, (String, Option<String>)>>,
}

impl KnownRefs {
    const MOST: usize = 8_192;

    fn get(&self, key: &str) -> Option<(String, Option<String>)> {
        self.refs.lock().expect("the ids' lock").get(key).cloned()
    }

    fn keep(&self, key: &str, ids: (String, Option<String>)) {
        let mut refs = self.refs.lock().expect("the ids' lock");
        if refs.len() >= Self::MOST && !refs.contains_key(key) {
            refs.clear();
        }
        refs.insert(key.to_string(), ids);
    }
}

fn timer_from_row(row: &Row) -> Result<Timer> {
    Ok(Timer {
        id: col(row, "id")?,
        due_at: from_ms(col(row, "due_at")?),
        kind: serde_json::from_str(&col::<String>(row, "payload")?)?,
    })
}

/// Marks a claimed message delivered ($1 the id, $2 now).
const DELIVERED_SQL: &str =
    "UPDATE outbox SET delivered_at = $2, lease_owner = NULL, lease_until = NULL WHERE id = $1";

/// Marks a claimed edit skipped for a newer one ($1 the id, $2 now).
const SUPERSEDED_SQL: &str =
    "UPDATE outbox SET delivered_at = $2, last_error = 'superseded by a newer edit', \
     lease_owner = NULL, lease_until = NULL WHERE id = $1";

/// How a claim marks what it claims: $1 the owner, $2 the lease's end, $4
/// now, $6 the lease's length in ms. A head whose previous claim ran out
/// without an outcome (its worker died, or could not record what happened)
/// may have reached the platform: it is claimed as uncertain since that
/// claim began, and is neither superseded nor replaced until it is settled,
/// so the lookup before its next post searches for what it sent.
const CLAIM_SET: &str = "UPDATE outbox SET lease_owner = $1, lease_until = $2, claimed_at = $4, \
     uncertain_since = CASE WHEN lease_until IS NULL THEN uncertain_since \
       ELSE COALESCE(uncertain_since, claimed_at, lease_until - $6) END";

/// What a claim answers with, and whether the claimed message is an edit
/// of a card already posted with a newer edit of it waiting behind
/// (`superseded`). Only such an edit can be superseded: the card's first
/// post keeps its place in the lane (the incident card before the page
/// behind it), and the newer edit follows it.
fn claim_returning(dialect: Dialect) -> String {
    let newer = match dialect {
        Dialect::Sqlite => {
            "SELECT 1 FROM outbox n WHERE n.message_key = outbox.message_key \
             AND n.platform = outbox.platform AND n.channel = outbox.channel AND n.id > outbox.id \
             AND n.delivered_at IS NULL AND n.failed_at IS NULL"
        }
        // In the order of `outbox_pending_key` and nothing else's: stated
        // with equalities, PostgreSQL may walk the lane's backlog in
        // `outbox_pending` instead (see `lane_after`).
        Dialect::Postgres => {
            "SELECT 1 FROM (SELECT message_key, platform, channel FROM outbox n \
             WHERE (n.message_key, n.platform, n.channel, n.id) \
               > (outbox.message_key, outbox.platform, outbox.channel, outbox.id) \
             AND n.message_key IS NOT NULL AND n.delivered_at IS NULL AND n.failed_at IS NULL \
             ORDER BY n.message_key, n.platform, n.channel, n.id LIMIT 1) f \
             WHERE f.message_key = outbox.message_key AND f.platform = outbox.platform \
             AND f.channel = outbox.channel"
        }
    };
    format!(
        "RETURNING id, attempts, created_at, claimed_at, uncertain_since, channel, payload, \
         CAST(CASE WHEN message_key IS NOT NULL AND uncertain_since IS NULL AND EXISTS ({newer}) \
         AND EXISTS (SELECT 1 FROM messages p WHERE p.message_key = outbox.message_key) \
         THEN 1 ELSE 0 END AS BIGINT) AS superseded"
    )
}

/// Claims the head of one lane ($3 the platform, $5 the lane) if it is due
/// and not claimed, looking only after message $7, the one just delivered
/// there (the messages before it are delivered: the lane delivers its head
/// first; one committed late with a smaller id is the next claim's head).
/// The head's conditions are stated on the row itself, so a row PostgreSQL
/// re-checks after waiting for its lock is not claimed if another worker
/// delivered it meanwhile.
/// Built once per dialect: it runs for every delivered message.
pub(super) fn next_in_lane_sql(dialect: Dialect) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 2] = [const { std::sync::OnceLock::new() }; 2];
    SQL[dialect as usize].get_or_init(|| {
        format!(
            "{CLAIM_SET} WHERE id IN (SELECT o.id FROM outbox o WHERE o.id = {head} \
             AND o.delivered_at IS NULL AND o.failed_at IS NULL \
             AND o.next_attempt_at <= $4 AND (o.lease_until IS NULL OR o.lease_until < $4){skip}) \
             {returning}",
            head = lane_head(dialect, "$5", "$7"),
            skip = skip_locked(dialect),
            returning = claim_returning(dialect)
        )
    })
}

/// PostgreSQL's [`next_in_lane_sql`] with `outcome` ([`DELIVERED_SQL`] or
/// [`SUPERSEDED_SQL`], its arguments as $8 and $9) as a part of it: one
/// statement and one commit for what is otherwise three round trips.
fn delivered_then_claim_sql(outcome: &'static str) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 2] = [const { std::sync::OnceLock::new() }; 2];
    let at = usize::from(outcome == SUPERSEDED_SQL);
    SQL[at].get_or_init(|| {
        format!(
            "WITH done AS ({}) {}",
            super::batch::renumber(outcome, 7),
            next_in_lane_sql(Dialect::Postgres)
        )
    })
}

/// How a claim passes over rows another worker is claiming: PostgreSQL
/// skips their locks; SQLite has one writer at a time.
fn skip_locked(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    }
}

/// Which outbox rows are undelivered, as the `outbox_pending` index says.
const PENDING: &str = "delivered_at IS NULL AND failed_at IS NULL";

/// The first lane of platform $3 with an undelivered message whose channel
/// compares `op` (`>` or `>=`) with `after`, from the `outbox_pending`
/// index (platform, channel, id).
///
/// On PostgreSQL the index is walked with a row comparison, in its own
/// order. Written as `MIN(…)` with equalities, the query has a plan that
/// walks the primary key instead and filters out every delivered message;
/// the planner takes it while its statistics are older than the outbox's
/// last few thousand deliveries, and a prepared statement keeps that plan:
/// a claim then cost most of a millisecond of the server's time.
fn lane_after(dialect: Dialect, op: &str, after: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "(SELECT MIN(channel) FROM outbox WHERE platform = $3 AND {PENDING} \
             AND channel {op} {after})"
        ),
        Dialect::Postgres => format!(
            "(SELECT f.channel FROM (SELECT platform, channel FROM outbox \
             WHERE (platform, channel) {op} ($3, {after}) AND {PENDING} \
             ORDER BY platform, channel LIMIT 1) f WHERE f.platform = $3)"
        ),
    }
}

/// The id of the oldest undelivered message of platform $3 in lane
/// `channel` after message `after` (see [`lane_after`] for PostgreSQL's
/// form). On PostgreSQL the index keeps the entries of delivered messages
/// until the table is vacuumed, so starting after the message just
/// delivered is what keeps a claim from reading past all of them.
fn lane_head(dialect: Dialect, channel: &str, after: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "(SELECT MIN(id) FROM outbox WHERE platform = $3 AND channel = {channel} \
             AND id > {after} AND {PENDING})"
        ),
        Dialect::Postgres => format!(
            "(SELECT f.id FROM (SELECT platform, channel, id FROM outbox \
             WHERE (platform, channel, id) > ($3, {channel}, {after}) AND {PENDING} \
             ORDER BY platform, channel, id LIMIT 1) f \
             WHERE f.platform = $3 AND f.channel = {channel})"
        ),
    }
}

/// A claimed row, and whether it is a superseded edit.
fn claimed_from_row(row: &Row) -> Result<(Claimed<String>, bool)> {
    let message = Claimed {
        id: col(row, "id")?,
        attempts: col(row, "attempts")?,
        created_at: from_ms(col(row, "created_at")?),
        claimed_at: from_ms(col(row, "claimed_at")?),
        uncertain_since: col::<Option<i64>>(row, "uncertain_since")?.map(from_ms),
        lane: col(row, "channel")?,
        message: col::<String>(row, "payload")?,
    };
    Ok((message, col::<i64>(row, "superseded")? == 1))
}
