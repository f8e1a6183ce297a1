//! What the engine writes besides state: audit entries, and the messages it
//! queues in the outbox. Nothing here talks to a platform; a message queued in
//! a transaction goes out after that transaction commits.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::{Actor, Engine};
use crate::chat::{keys, Card, Destination, Outgoing};
use crate::domain::{PersonId, Platform, Run, RunId};
use crate::store::{AuditEntry, Tx};

/// The audit entry for `action` by `actor_key` (a person's key, or `tminus`),
/// where `actor` is; of `run` when it belongs to one.
pub(super) fn audit_entry(
    run: Option<RunId>,
    actor_key: &str,
    actor: &Actor,
    action: &str,
    detail: String,
    now: DateTime<Utc>,
) -> AuditEntry {
    AuditEntry {
        run,
        at: now,
        actor: actor_key.to_string(),
        platform: actor.platform.to_string(),
        location: actor.channel.clone(),
        action: action.to_string(),
        detail,
    }
}

/// Where a message the engine writes goes.
pub(super) enum To<'a> {
    /// The run's channel, top level.
    Channel(&'a Run),
    /// The run's thread.
    Thread(&'a Run),
    /// The platform's incidents channel; the run's channel when the bot
    /// file names none.
    Incidents(Platform, Option<&'a Run>),
    /// A person's direct messages, as part of a run when it belongs to one.
    Person(Platform, &'a PersonId, Option<RunId>),
}

impl Engine {
    /// Queue one message that belongs to no run: a help answer, a private
    /// refusal. With a `request_key` it is queued once however often the
    /// platform retries; returns whether it was queued.
    pub async fn post_message(&self, msg: &Outgoing, request_key: Option<&str>) -> Result<bool> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if let Some(key) = request_key {
            if !tx.first_time(key, now).await? {
                return Ok(false);
            }
        }
        tx.enqueue(None, msg, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queue one message in the transaction; it goes out after the commit.
    pub(super) async fn send(
        &self,
        tx: &mut Tx,
        to: To<'_>,
        key: Option<String>,
        card: Card,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (platform, run, to) = match to {
            To::Channel(run) => (
                run.platform,
                Some(run.id),
                Destination::Channel {
                    channel: run.channel.clone(),
                },
            ),
            To::Thread(run) => (
                run.platform,
                Some(run.id),
                Destination::Thread {
                    channel: run.channel.clone(),
                    root: keys::root(run.id),
                },
            ),
            To::Incidents(platform, run) => {
                let channel = self.config().channels_for(platform).map_or_else(
                    || run.map_or_else(|| "incidents".to_string(), |r| r.channel.clone()),
                    |c| c.incidents.clone(),
                );
                (
                    platform,
                    run.map(|r| r.id),
                    Destination::Channel { channel },
                )
            }
            To::Person(platform, person, run) => (
                platform,
                run,
                Destination::Direct {
                    person: person.clone(),
                },
            ),
        };
        let msg = Outgoing {
            platform,
            to,
            key,
            card,
        };
        tx.enqueue(run, &msg, now).await
    }
}
