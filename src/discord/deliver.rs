//! Delivering the outbox's Discord messages. The root message goes to the
//! deployments channel; the first message for its thread starts a thread
//! from it (the thread's id is the root message's id); keyed messages are
//! posted once and edited in place afterwards; direct messages go through
//! `POST /users/@me/channels`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use serde_json::{json, Value};
use serenity::http::{LightMethod, Route};
use serenity::model::id::{ChannelId, MessageId};

use super::{render, Discord};
use crate::chat::clip;
use crate::chat::Destination;
use crate::delivery::{Deliver, Failure, Settled};
use crate::domain::Platform;
use crate::store::ClaimedMessage;

/// Discord's "a thread has already been created for this message".
const THREAD_EXISTS: &str = "160004";

fn snowflake(id: &str) -> Result<u64, Failure> {
    id.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Failure::Permanent(format!("`{id}` is not a Discord id")))
}

pub struct DiscordDelivery {
    discord: Arc<Discord>,
}

impl DiscordDelivery {
    pub fn new(discord: Arc<Discord>) -> DiscordDelivery {
        DiscordDelivery { discord }
    }
}

impl Deliver for DiscordDelivery {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    async fn deliver(&self, claimed: &ClaimedMessage) -> Result<(), Failure> {
        let msg = &claimed.message;
        let parts = render::render(&msg.card, &self.discord.engine.config().directory);
        let key = msg
            .key
            .clone()
            .unwrap_or_else(|| format!("out:{}", claimed.id));
        match &msg.to {
            Destination::Channel { channel } => {
                self.post_or_edit(claimed, channel, &key, parts).await
            }
            Destination::Thread { channel, root } => {
                let thread = self.thread_of(channel, root, &msg.card.title).await?;
                self.post_or_edit(claimed, &thread, &key, parts).await
            }
            Destination::ThreadRef { thread_ref, .. } => {
                self.post_or_edit(claimed, thread_ref, &key, parts).await
            }
            Destination::Direct { person } => {
                let dir = &self.discord.engine.config().directory;
                let Some(user) = dir.person(person).and_then(|p| p.discord.clone()) else {
                    return Err(Failure::Permanent(format!(
                        "{person} has no Discord user id"
                    )));
                };
                let channel = self.dm_channel(&user).await?;
                self.post_or_edit(claimed, &channel, &key, parts).await
            }
            Destination::Ephemeral { .. } => Err(Failure::Permanent(
                "Discord shows private answers only in reply to an interaction".into(),
            )),
        }
    }
}

impl DiscordDelivery {
    async fn lookup(&self, key: &str) -> Result<Option<(String, Option<String>)>, Failure> {
        crate::delivery::posted(&self.discord.engine, key).await
    }

    async fn remember(
        &self,
        key: &str,
        channel: &str,
        id: &str,
        thread: Option<&str>,
    ) -> Result<(), Failure> {
        crate::delivery::remember_posted(
            &self.discord.engine,
            Platform::Discord,
            key,
            channel,
            id,
            thread,
        )
        .await
    }

    /// The thread under the run's root message, started on first use.
    async fn thread_of(&self, channel: &str, root: &str, title: &str) -> Result<String, Failure> {
        let Some((root_id, thread)) = self.lookup(root).await? else {
            return Err(Failure::Permanent(format!(
                "the thread's first message ({root}) was never posted"
            )));
        };
        if let Some(thread) = thread {
            return Ok(thread);
        }
        // Another process may have started the thread since this one saw
        // the root message.
        let stored = crate::delivery::posted_stored(&self.discord.engine, root).await?;
        if let Some((_, Some(thread))) = stored {
            return Ok(thread);
        }
        // "payments-api v2.4.0 #42 · Phase 1 of 5: …" → "payments-api v2.4.0 #42".
        let name = clip(title.split(" · ").next().unwrap_or("deployment"), 100);
        let route = Route::ChannelMessageThreads {
            channel_id: ChannelId::new(snowflake(channel)?),
            message_id: MessageId::new(snowflake(&root_id)?),
        };
        let body = json!({ "name": name, "auto_archive_duration": 1440 });
        // Started twice (an earlier attempt's answer was lost), Discord
        // says 160004: the thread is there, with the message's id.
        let started = self
            .discord
            .rest
            .send(route, LightMethod::Post, Some(&body))
            .await
            .map_err(Failure::not_posted);
        let thread = match started {
            Ok(created) => created["id"].as_str().unwrap_or(&root_id).to_string(),
            Err(Failure::Permanent(why)) if why.contains(THREAD_EXISTS) => root_id.clone(),
            Err(e) => return Err(e),
        };
        self.remember(root, channel, &root_id, Some(&thread))
            .await?;
        Ok(thread)
    }

    /// The DM channel with a user, opened once and remembered.
    async fn dm_channel(&self, user: &str) -> Result<String, Failure> {
        let key = format!("dm:discord:{user}");
        if let Some((channel, _)) = self.lookup(&key).await? {
            return Ok(channel);
        }
        let body = json!({ "recipient_id": user });
        let opened = self
            .discord
            .rest
            .send(Route::UserMeDmChannels, LightMethod::Post, Some(&body))
            .await
            .map_err(Failure::not_posted)?;
        let Some(channel) = opened["id"].as_str().map(str::to_string) else {
            return Err(Failure::Permanent(
                "Discord opened a DM without an id".into(),
            ));
        };
        self.remember(&key, &channel, &channel, None).await?;
        Ok(channel)
    }

    /// Post each part not yet posted, edit each part already posted. Every
    /// post carries a nonce made from its outbox message and part, with
    /// `enforce_nonce`: a post repeated after an unanswered attempt gets
    /// back the message the first one made instead of a second one.
    async fn post_or_edit(
        &self,
        claimed: &ClaimedMessage,
        channel: &str,
        key: &str,
        parts: Vec<Value>,
    ) -> Result<(), Failure> {
        let channel_id = ChannelId::new(snowflake(channel)?);
        for (i, mut body) in parts.into_iter().enumerate() {
            let part_key = crate::chat::keys::part(key, i);
            match self.lookup(&part_key).await? {
                Some((id, _)) => {
                    let route = Route::ChannelMessage {
                        channel_id,
                        message_id: MessageId::new(snowflake(&id)?),
                    };
                    self.discord
                        .rest
                        .send(route, LightMethod::Patch, Some(&body))
                        .await
                        .map_err(Failure::not_posted)?;
                }
                None => {
                    body["nonce"] = nonce(claimed.id, i).into();
                    body["enforce_nonce"] = true.into();
                    let posted = self
                        .discord
                        .rest
                        .send(
                            Route::ChannelMessages { channel_id },
                            LightMethod::Post,
                            Some(&body),
                        )
                        .await?;
                    let Some(id) = posted["id"].as_str() else {
                        return Err(Failure::Permanent(
                            "Discord answered a post without a message id".into(),
                        ));
                    };
                    self.remember(&part_key, channel, id, None).await?;
                    if claimed.uncertain_since.is_some() {
                        let how = match created_at(id) {
                            Some(at) if at < claimed.claimed_at => Settled::Found,
                            _ => Settled::Posted,
                        };
                        crate::metrics::METRICS
                            .uncertain_settled
                            .add(Platform::Discord, how);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The nonce of part `part` of outbox message `id`: at most 25 characters
/// (Discord's limit), unique per message part.
fn nonce(id: i64, part: usize) -> String {
    format!("tm{id}p{part}")
}

/// When Discord made the message with this id (a snowflake's top 42 bits
/// are milliseconds since 2015): older than the claim means the nonce
/// returned what an earlier attempt made.
fn created_at(id: &str) -> Option<DateTime<Utc>> {
    const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;
    let n: u64 = id.parse().ok()?;
    DateTime::from_timestamp_millis((n >> 22) as i64 + DISCORD_EPOCH_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_fit_discords_limit_and_differ_per_part() {
        assert!(nonce(i64::MAX, 9).len() <= 25);
        assert_ne!(nonce(12, 1), nonce(121, 0));
        assert_ne!(nonce(1, 21), nonce(12, 1));
    }

    #[test]
    fn a_snowflake_tells_when_its_message_was_made() {
        // Discord's documented example: 175928847299117063 is 2016-04-30 11:18:25.796 UTC.
        let at = created_at("175928847299117063").unwrap();
        assert_eq!(at.timestamp_millis(), 1_462_015_105_796);
        assert_eq!(created_at("not a number"), None);
    }
}
