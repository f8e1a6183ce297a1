//! Finding a message an earlier, unanswered attempt may have posted.
//!
//! Every `chat.postMessage` carries metadata naming its outbox message and
//! part ([`marker`]). When an attempt may have reached Slack without tminus
//! learning of it, the next attempt first reads the conversation since that
//! attempt began — `conversations.history` at the top level (a channel or a
//! DM), `conversations.replies` in a thread — with `include_all_metadata`,
//! which Slack needs before it shows metadata. Found, the message's `ts` is
//! recorded and nothing is posted again; not found, the message is posted.
//!
//! The lookup needs the `channels:history`, `groups:history` and
//! `im:history` scopes. Without them Slack answers `missing_scope`: tminus
//! says so once, in the log, and posts anyway — at least once rather than
//! never — counting each such post as `unknown` in `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use slack_morphism::errors::{SlackClientApiError, SlackClientError};
use slack_morphism::prelude::*;
use tracing::warn;

use super::Slack;
use crate::delivery::Failure;

/// The metadata event type of every message tminus posts.
pub const EVENT_TYPE: &str = "tminus_outbox";

/// How far before the uncertain attempt's start the lookup reads, for the
/// difference between this machine's clock and Slack's.
const CLOCK_MARGIN_SECS: i64 = 60;
/// Messages per page (Slack's documented maximum is 999; it suggests 200).
const PAGE: &str = "200";
/// Pages read at most: a thousand messages since the attempt.
const PAGES: usize = 5;

/// The metadata naming outbox message `id`, part `part`. Slack's metadata
/// payload is a JSON object; slack-morphism holds it as strings.
pub fn marker(id: i64, part: usize) -> SlackMessageMetadata {
    SlackMessageMetadata {
        event_type: EVENT_TYPE.into(),
        event_payload: Some(HashMap::from([
            ("outbox_id".to_string(), id.to_string()),
            ("part".to_string(), part.to_string()),
        ])),
    }
}

/// What the lookup learned.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Slack has it, with this `ts`.
    Found(String),
    /// Not in the conversation since the attempt began.
    Absent,
    /// Slack would not say (scopes missing, channel not readable).
    Unknown,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    messages: Vec<Seen>,
    response_metadata: Option<Cursor>,
}

#[derive(Deserialize)]
struct Cursor {
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Seen {
    ts: String,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    event_type: String,
    #[serde(default)]
    event_payload: serde_json::Map<String, serde_json::Value>,
}

impl Seen {
    fn is(&self, id: i64, part: usize) -> bool {
        let Some(meta) = &self.metadata else {
            return false;
        };
        // Slack keeps the payload's values as they were sent (strings
        // here), but a number is as good.
        let field = |name: &str| match meta.event_payload.get(name) {
            Some(serde_json::Value::String(s)) => s.parse::<i64>().ok(),
            Some(v) => v.as_i64(),
            None => None,
        };
        meta.event_type == EVENT_TYPE
            && field("outbox_id") == Some(id)
            && field("part") == Some(part as i64)
    }
}

/// A Slack timestamp (`seconds.microseconds`) for a time.
fn slack_ts(at: DateTime<Utc>) -> String {
    format!("{}.{:06}", at.timestamp(), at.timestamp_subsec_micros())
}

/// Said once per process: the history scopes are missing.
static SAID_MISSING_SCOPE: AtomicBool = AtomicBool::new(false);

impl Slack {
    /// Look for part `part` of outbox message `id` in `channel` (in the
    /// thread under `thread_ts`, if any), posted since `since`.
    pub async fn find_posted(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        since: DateTime<Utc>,
        id: i64,
        part: usize,
    ) -> Result<Lookup, Failure> {
        let oldest = slack_ts(since - chrono::Duration::seconds(CLOCK_MARGIN_SECS));
        let method = match thread_ts {
            Some(_) => "conversations.replies",
            None => "conversations.history",
        };
        let session = self.session();
        let mut cursor: Option<String> = None;
        for _ in 0..PAGES {
            let mut params: Vec<(&str, Option<String>)> = vec![
                ("channel", Some(channel.to_string())),
                ("oldest", Some(oldest.clone())),
                ("limit", Some(PAGE.to_string())),
                ("include_all_metadata", Some("true".to_string())),
            ];
            if let Some(ts) = thread_ts {
                params.push(("ts", Some(ts.to_string())));
            }
            if let Some(c) = &cursor {
                params.push(("cursor", Some(c.clone())));
            }
            let answer = session.http_session_api.http_get(
                method,
                &params,
                Some(&SLACK_TIER3_METHOD_CONFIG),
            );
            let page: Page = match tokio::time::timeout(super::CALL_TIMEOUT, answer).await {
                Err(_) => {
                    let why = format!("{method}: no answer within {:?}", super::CALL_TIMEOUT);
                    return Err(Failure::retry(why));
                }
                Ok(Ok(page)) => page,
                Ok(Err(SlackClientError::ApiError(e))) if !retryable(&e.code) => {
                    self.cannot_look(method, channel, &e);
                    return Ok(Lookup::Unknown);
                }
                Ok(Err(e)) => return Err(Failure::from(e).not_posted()),
            };
            if let Some(found) = page.messages.iter().find(|m| m.is(id, part)) {
                return Ok(Lookup::Found(found.ts.clone()));
            }
            cursor = page
                .response_metadata
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.is_empty());
            if cursor.is_none() {
                break;
            }
        }
        Ok(Lookup::Absent)
    }

    /// Slack refused to show the conversation: say what it costs.
    fn cannot_look(&self, method: &str, channel: &str, e: &SlackClientApiError) {
        if e.code == "missing_scope" {
            if !SAID_MISSING_SCOPE.swap(true, Ordering::Relaxed) {
                let needed = e
                    .http_response_body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                    .and_then(|v| v["needed"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "channels:history, groups:history, im:history".into());
                warn!(
                    %needed,
                    "Slack refused {method} (missing_scope): the bot token lacks the scopes \
                     channels:history, groups:history and im:history. Without them tminus cannot \
                     check whether a message whose first attempt got no answer (a time-out, a lost \
                     connection, a crash) reached Slack, so it posts such a message again and it may \
                     show twice. Add the scopes and reinstall the app; this is said once."
                );
            }
        } else {
            warn!(
                %channel,
                error = %e.code,
                "Slack refused {method}: cannot check whether an unanswered attempt posted; posting again"
            );
        }
    }
}

/// Errors worth trying the lookup again for (the rest mean it cannot work).
fn retryable(code: &str) -> bool {
    matches!(
        code,
        "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_message_and_part_and_is_recognised() {
        let meta = serde_json::to_value(marker(42, 1)).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"event_type": "tminus_outbox", "event_payload": {"outbox_id": "42", "part": "1"}})
        );
        let seen: Seen =
            serde_json::from_value(serde_json::json!({"ts": "1.000001", "metadata": meta}))
                .unwrap();
        assert!(seen.is(42, 1));
        assert!(!seen.is(42, 0));
        assert!(!seen.is(4, 1));
        let bare: Seen = serde_json::from_value(serde_json::json!({"ts": "1.2"})).unwrap();
        assert!(!bare.is(42, 1));
    }

    #[test]
    fn slack_timestamps_have_microseconds() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        assert_eq!(slack_ts(at), "1700000000.123000");
    }
}
