//! Delivering the outbox's Slack messages through the Web API (the shared
//! worker in [`crate::delivery`] claims them and records the outcome).
//!
//! A keyed message is posted once and edited in place afterwards
//! (`chat.update` on the stored `ts`); every part of a split card gets a key
//! of its own, so a retry after a partial success edits rather than posts
//! again. 429 waits out `Retry-After`; 5xx, time-outs and connection errors
//! back off. A DM channel is opened with `conversations.open` and a string
//! `users` ([`OpenDm`]), as Slack's API defines it.

use std::sync::Arc;
use std::time::Duration;

use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::lookup::{self, Lookup};
use super::{blocks, Slack, CALL_TIMEOUT};
use crate::chat::Destination;
use crate::delivery::{Deliver, Failure, Settled};
use crate::domain::Platform;
use crate::store::ClaimedMessage;

impl From<SlackClientError> for Failure {
    /// 429 waits out `Retry-After`; a server error or a broken connection
    /// may have come after Slack acted, so it is [`Failure::Uncertain`];
    /// Slack's own "try again" errors are retries; the rest are final.
    fn from(e: SlackClientError) -> Failure {
        match &e {
            SlackClientError::RateLimitError(r) => Failure::Retry {
                after: Some(r.retry_after.unwrap_or(Duration::from_secs(1))),
                reason: "rate limited (429)".into(),
            },
            SlackClientError::HttpError(h) if h.status_code.as_u16() == 408 => {
                Failure::retry(format!("HTTP {}", h.status_code))
            }
            SlackClientError::HttpError(h) if h.status_code.is_server_error() => {
                Failure::Uncertain(format!("HTTP {}", h.status_code))
            }
            // "It's possible some aspect of the operation succeeded before
            // the error was raised" (Slack, on fatal_error).
            SlackClientError::ApiError(a)
                if matches!(a.code.as_str(), "internal_error" | "fatal_error") =>
            {
                Failure::Uncertain(format!("Slack error {}", a.code))
            }
            SlackClientError::ApiError(a)
                if matches!(
                    a.code.as_str(),
                    "ratelimited" | "service_unavailable" | "request_timeout"
                ) =>
            {
                Failure::retry(format!("Slack error {}", a.code))
            }
            SlackClientError::HttpProtocolError(_)
            | SlackClientError::EndOfStream(_)
            | SlackClientError::SystemError(_) => Failure::Uncertain(e.to_string()),
            _ => Failure::Permanent(e.to_string()),
        }
    }
}

/// `conversations.open`'s arguments for a 1:1 DM. Slack's Web API takes
/// `users` as a comma-separated string; slack-morphism's
/// `SlackApiConversationsOpenRequest` holds a `Vec` and sends a JSON array,
/// which Slack refuses with `users_list_not_supplied`.
#[derive(serde::Serialize)]
struct OpenDm<'a> {
    users: &'a str,
}

/// Run a Web API call with a time-out (after which Slack may or may not
/// have acted on it).
pub(super) async fn call<T>(
    fut: impl std::future::Future<Output = Result<T, SlackClientError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(result) => result.map_err(Failure::from),
        Err(_) => Err(Failure::Uncertain(format!(
            "no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// Slack's side of the outbox worker.
pub struct SlackDelivery {
    slack: Arc<Slack>,
}

impl SlackDelivery {
    pub fn new(slack: Arc<Slack>) -> SlackDelivery {
        SlackDelivery { slack }
    }
}

impl Deliver for SlackDelivery {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    async fn deliver(&self, claimed: &ClaimedMessage) -> Result<(), Failure> {
        self.deliver_one(claimed).await
    }
}

impl SlackDelivery {
    async fn deliver_one(&self, claimed: &ClaimedMessage) -> Result<(), Failure> {
        let msg = &claimed.message;
        let parts = blocks::render(&msg.card, &self.slack.engine.config().directory);
        let key = msg
            .key
            .clone()
            .unwrap_or_else(|| format!("out:{}", claimed.id));
        match &msg.to {
            Destination::Channel { channel } => {
                self.post_or_update(claimed, channel, None, &key, parts)
                    .await
            }
            Destination::Thread { channel, root } => {
                let Some((thread_ts, _)) = self.lookup(root).await? else {
                    return Err(Failure::Permanent(format!(
                        "the thread's first message ({root}) was never posted"
                    )));
                };
                self.post_or_update(claimed, channel, Some(thread_ts), &key, parts)
                    .await
            }
            Destination::ThreadRef {
                channel,
                thread_ref,
            } => {
                self.post_or_update(claimed, channel, Some(thread_ref.clone()), &key, parts)
                    .await
            }
            Destination::Direct { person } => {
                let dir = &self.slack.engine.config().directory;
                let Some(user) = dir.person(person).and_then(|p| p.slack.clone()) else {
                    return Err(Failure::Permanent(format!("{person} has no Slack user id")));
                };
                let channel = self.dm_channel(&user).await?;
                self.post_or_update(claimed, &channel, None, &key, parts)
                    .await
            }
            Destination::Ephemeral {
                channel,
                user,
                thread_ref,
            } => {
                let session = self.slack.session();
                for part in parts {
                    let req = super::ephemeral(channel, user, thread_ref.as_ref(), part);
                    call(session.chat_post_ephemeral(&req)).await?;
                }
                Ok(())
            }
        }
    }

    async fn lookup(&self, key: &str) -> Result<Option<(String, Option<String>)>, Failure> {
        crate::delivery::posted(&self.slack.engine, key).await
    }

    async fn remember(
        &self,
        key: &str,
        channel: &str,
        ts: &str,
        thread: Option<&str>,
    ) -> Result<(), Failure> {
        crate::delivery::remember_posted(
            &self.slack.engine,
            Platform::Slack,
            key,
            channel,
            ts,
            thread,
        )
        .await
    }

    /// The DM channel with a user, opened once and remembered.
    async fn dm_channel(&self, user: &str) -> Result<String, Failure> {
        let key = format!("dm:slack:{user}");
        if let Some((channel, _)) = self.lookup(&key).await? {
            return Ok(channel);
        }
        let session = self.slack.session();
        // Through slack-morphism's generic POST, so its error mapping (429,
        // HTTP status, `ok: false`) and rate control stay those of every
        // other call; only the request body is ours.
        let opened: SlackApiConversationsOpenResponse<SlackBasicChannelInfo> =
            call(session.http_session_api.http_post(
                "conversations.open",
                &OpenDm { users: user },
                Some(&SLACK_TIER3_METHOD_CONFIG),
            ))
            .await
            .map_err(Failure::not_posted)?;
        let channel = opened.channel.id.0;
        self.remember(&key, &channel, &channel, None).await?;
        Ok(channel)
    }

    /// Post each part not yet posted, edit each part already posted. A
    /// message whose earlier attempt may have reached Slack is looked for
    /// first ([`super::lookup`]), so it is never posted twice.
    async fn post_or_update(
        &self,
        claimed: &ClaimedMessage,
        channel: &str,
        thread_ts: Option<String>,
        key: &str,
        parts: Vec<SlackMessageContent>,
    ) -> Result<(), Failure> {
        let session = self.slack.session();
        let settled = &crate::metrics::METRICS.uncertain_settled;
        for (i, mut content) in parts.into_iter().enumerate() {
            let part_key = crate::chat::keys::part(key, i);
            if let Some((ts, _)) = self.lookup(&part_key).await? {
                let req = SlackApiChatUpdateRequest::new(
                    SlackChannelId(channel.to_string()),
                    content,
                    SlackTs(ts),
                );
                call(session.chat_update(&req))
                    .await
                    .map_err(Failure::not_posted)?;
                continue;
            }
            let mut how = None;
            if let Some(since) = claimed.uncertain_since {
                let thread = thread_ts.as_deref();
                match self
                    .slack
                    .find_posted(channel, thread, since, claimed.id, i)
                    .await?
                {
                    Lookup::Found(ts) => {
                        self.remember(&part_key, channel, &ts, thread).await?;
                        settled.add(Platform::Slack, Settled::Found);
                        continue;
                    }
                    Lookup::Absent => how = Some(Settled::Posted),
                    Lookup::Unknown => how = Some(Settled::Unknown),
                }
            }
            content.metadata = Some(lookup::marker(claimed.id, i));
            let mut req =
                SlackApiChatPostMessageRequest::new(SlackChannelId(channel.to_string()), content);
            if let Some(ts) = &thread_ts {
                req = req.with_thread_ts(SlackTs(ts.clone()));
            }
            let posted = call(session.chat_post_message(&req)).await?;
            self.remember(
                &part_key,
                &posted.channel.0,
                &posted.ts.0,
                thread_ts.as_deref(),
            )
            .await?;
            if let Some(how) = how {
                settled.add(Platform::Slack, how);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dm_is_opened_with_users_as_a_string() {
        let body = serde_json::to_value(OpenDm { users: "U0EMEKA" }).unwrap();
        assert_eq!(body, serde_json::json!({"users": "U0EMEKA"}));
    }
}
