//! What Slack sends tminus, over HTTP (`/slack/commands`, `/slack/interactions`,
//! `/slack/events`) or Socket Mode, turned into engine requests.
//!
//! Every HTTP request is verified against `SLACK_SIGNING_SECRET` before its
//! body is even parsed; a bad one gets 401 and changes nothing. The engine
//! commits before the answer goes back, and each request carries a key from
//! Slack (`trigger_id`, `event_id`) so a retry or a replay changes state once.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use slack_morphism::prelude::*;
use tracing::{info, instrument, warn};

use super::{blocks, verify, Slack};
use crate::chat::buttons::Pressed;
use crate::chat::{buttons, json_str as text, Destination, Outgoing};
use crate::domain::Platform;
use crate::engine::{command, Actor, Reply, Request, NOT_MY_BUTTON};
use crate::web::guard;

/// Slack's payloads are small; anything bigger is refused before parsing.
pub const MAX_BODY: usize = 1 << 20;
/// The modal that asks for a reason.
const REASON_CALLBACK: &str = "tminus.reason";
const REASON_BLOCK: &str = "reason";
const REASON_ACTION: &str = "reason";

/// The fields of a slash command tminus uses.
#[derive(Debug, Deserialize)]
pub struct CommandForm {
    pub command: String,
    #[serde(default)]
    pub text: String,
    pub user_id: String,
    pub channel_id: String,
    #[serde(default)]
    pub trigger_id: String,
}

/// Where Slack sends slash commands (both `/deploy` and `/oncall`).
pub const COMMANDS_PATH: &str = "/slack/commands";
/// Where Slack sends button presses and modal submissions.
pub const INTERACTIONS_PATH: &str = "/slack/interactions";
/// Where Slack sends events (`app_mention`).
pub const EVENTS_PATH: &str = "/slack/events";

/// The HTTP endpoints; mounted only when a signing secret is set.
pub fn routes(slack: Arc<Slack>) -> Router {
    Router::new()
        .route(COMMANDS_PATH, post(commands))
        .route(INTERACTIONS_PATH, post(interactions))
        .route(EVENTS_PATH, post(events))
        .with_state(slack)
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// Read the raw body (bounded) and check its signature.
async fn verified(slack: &Slack, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let bytes = guard::body(headers, body, MAX_BODY).await?;
    let secret = slack
        .settings
        .signing_secret
        .as_ref()
        .map(|s| s.expose().as_bytes())
        .unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = slack.engine.now().timestamp();
    match verify::verify(
        secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &bytes,
        now,
    ) {
        Ok(()) if !secret.is_empty() => Ok(bytes),
        Ok(()) => {
            guard::refused(Platform::Slack, "no signing secret");
            Err((StatusCode::UNAUTHORIZED, "signature required\n").into_response())
        }
        Err(e) => {
            guard::refused(Platform::Slack, &e.to_string());
            Err((StatusCode::UNAUTHORIZED, "invalid signature\n").into_response())
        }
    }
}

async fn commands(State(slack): State<Arc<Slack>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match verified(&slack, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form: CommandForm = match serde_urlencoded::from_bytes(&bytes) {
        Ok(f) => f,
        Err(e) => return bad_request(&format!("not a slash command payload: {e}")),
    };
    Json(slack.on_command(form).await).into_response()
}

async fn interactions(State(slack): State<Arc<Slack>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match verified(&slack, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    #[derive(Deserialize)]
    struct Form {
        payload: String,
    }
    let payload = match serde_urlencoded::from_bytes::<Form>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::from_str::<Value>(&f.payload).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => return bad_request(&format!("not an interaction payload: {e}")),
    };
    match slack.on_interaction(payload).await {
        Some(body) => Json(body).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

async fn events(State(slack): State<Arc<Slack>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match verified(&slack, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let event: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("not an Events API payload: {e}")),
    };
    if event["type"] == "url_verification" {
        return Json(json!({ "challenge": event["challenge"] })).into_response();
    }
    if let Some(retry) = headers
        .get("x-slack-retry-num")
        .and_then(|v| v.to_str().ok())
    {
        info!(retry, reason = ?headers.get("x-slack-retry-reason"), "Slack retried an event");
    }
    slack.on_event(&event).await;
    StatusCode::OK.into_response()
}

impl Slack {
    /// A slash command; the answer is shown to the person who typed it.
    #[instrument(skip_all, fields(user = %form.user_id, channel = %form.channel_id))]
    pub async fn on_command(&self, form: CommandForm) -> Value {
        let known = command::SLASH_COMMANDS
            .iter()
            .any(|c| form.command.strip_prefix('/') == Some(c.name));
        if !known {
            let text = format!("tminus answers /deploy and /oncall, not {}.", form.command);
            return json!({ "response_type": "ephemeral", "text": blocks::escape(&text) });
        }
        let cmd = match command::parse_slash(&form.command, &form.text) {
            Ok(cmd) => cmd,
            // The error quotes what was typed: escaped, so it links and
            // mentions nothing.
            Err(e) => {
                return json!({ "response_type": "ephemeral", "text": blocks::escape(&e.to_string()) })
            }
        };
        let actor = Actor {
            platform: Platform::Slack,
            user: form.user_id.clone(),
            channel: form.channel_id.clone(),
        };
        let key = (!form.trigger_id.is_empty()).then(|| format!("slack:cmd:{}", form.trigger_id));
        let reply = self
            .engine
            .handle(&actor, Request::Command(cmd), key.as_deref())
            .await;
        self.reply_json(&reply)
    }

    fn reply_json(&self, reply: &Reply) -> Value {
        // The top-level text carries the card too ("On call at …:" alone
        // tells a notification or a screen reader nothing).
        let mut text = reply.text.clone();
        if let Some(card) = &reply.card {
            text.push('\n');
            text.push_str(&card.plain_text());
        }
        let mut body = json!({
            "response_type": "ephemeral",
            "text": blocks::clip_escaped(&text, blocks::MAX_FALLBACK_TEXT),
        });
        let mut shown = vec![SlackBlock::from(SlackSectionBlock::new().with_text(
            SlackBlockText::MarkDown(SlackBlockMarkDownText::new(blocks::clip(
                &blocks::escape(&reply.text),
                blocks::MAX_SECTION_TEXT,
            ))),
        ))];
        if let Some(card) = &reply.card {
            if let Some(first) = blocks::render(card, &self.engine.config().directory)
                .into_iter()
                .next()
            {
                shown.extend(first.blocks.unwrap_or_default());
            }
        }
        shown.truncate(blocks::MAX_BLOCKS);
        body["blocks"] = serde_json::to_value(shown).unwrap_or(Value::Null);
        body
    }

    /// A button click or a modal submission. Returns a body for the HTTP
    /// answer when Slack expects one.
    pub async fn on_interaction(self: &Arc<Self>, payload: Value) -> Option<Value> {
        let user = text(&payload, &["user", "id"])?.to_string();
        match payload["type"].as_str()? {
            "block_actions" => {
                let action = payload["actions"].get(0)?;
                let id = text(action, &["action_id"])?.to_string();
                let channel = text(&payload, &["channel", "id"])
                    .or_else(|| text(&payload, &["container", "channel_id"]))?
                    .to_string();
                let thread = text(&payload, &["message", "thread_ts"])
                    .or_else(|| text(&payload, &["message", "ts"]))
                    .or_else(|| text(&payload, &["container", "message_ts"]))
                    .map(str::to_string);
                let trigger = text(&payload, &["trigger_id"])
                    .unwrap_or_default()
                    .to_string();
                // Decoded once, here: a button tminus did not make goes no further.
                let Some(pressed) = buttons::pressed(&id, None) else {
                    self.tell_privately(&user, &channel, thread, NOT_MY_BUTTON.into())
                        .await;
                    return None;
                };
                if pressed.wants_reason() && !trigger.is_empty() {
                    let this = self.clone();
                    let prompt = pressed.reason_prompt();
                    tokio::spawn(async move {
                        this.ask_reason(&trigger, &id, prompt, &channel, thread)
                            .await
                    });
                    return None;
                }
                let key = (!trigger.is_empty()).then(|| format!("slack:act:{trigger}"));
                self.click(&user, &channel, thread, pressed, key).await;
                None
            }
            "view_submission"
                if text(&payload, &["view", "callback_id"]) == Some(REASON_CALLBACK) =>
            {
                let meta: Value =
                    serde_json::from_str(text(&payload, &["view", "private_metadata"])?).ok()?;
                let id = text(&meta, &["id"])?.to_string();
                let channel = text(&meta, &["channel"])?.to_string();
                let thread = text(&meta, &["thread"]).map(str::to_string);
                let reason = text(
                    &payload["view"]["state"]["values"],
                    &[REASON_BLOCK, REASON_ACTION, "value"],
                )
                .map(str::to_string);
                let key = text(&payload, &["view", "id"]).map(|v| format!("slack:view:{v}"));
                match buttons::pressed(&id, reason) {
                    Some(pressed) => self.click(&user, &channel, thread, pressed, key).await,
                    None => {
                        self.tell_privately(&user, &channel, thread, NOT_MY_BUTTON.into())
                            .await
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Press a button for `user`; a refusal goes to them alone. A repeated
    /// click (a double click, a redelivered envelope) says nothing.
    async fn click(
        &self,
        user: &str,
        channel: &str,
        thread: Option<String>,
        pressed: Pressed,
        key: Option<String>,
    ) {
        let actor = Actor {
            platform: Platform::Slack,
            user: user.to_string(),
            channel: channel.to_string(),
        };
        let reply = self
            .engine
            .handle(&actor, Request::Click(pressed), key.as_deref())
            .await;
        if reply.refused {
            // Keyed by the press, so a press delivered twice is answered once.
            let answer_key = key.map(|k| format!("{k}:answer"));
            self.tell_privately_once(user, channel, thread, reply.text, answer_key)
                .await;
        }
    }

    /// An answer only `user` sees, where they clicked.
    async fn tell_privately(
        &self,
        user: &str,
        channel: &str,
        thread: Option<String>,
        text: String,
    ) {
        self.tell_privately_once(user, channel, thread, text, None)
            .await
    }

    /// An answer only `user` sees, queued at most once for `key`.
    async fn tell_privately_once(
        &self,
        user: &str,
        channel: &str,
        thread: Option<String>,
        text: String,
        key: Option<String>,
    ) {
        let msg = Outgoing {
            platform: Platform::Slack,
            to: Destination::Ephemeral {
                channel: channel.to_string(),
                user: user.to_string(),
                thread_ref: thread,
            },
            key: None,
            card: crate::chat::Card::new(text),
        };
        if let Err(e) = self.engine.post_message(&msg, key.as_deref()).await {
            // The database failed, so the outbox cannot hold the answer
            // (most often the apology for that very failure): it goes to
            // Slack directly, once, so the person learns their click did
            // not count.
            warn!(
                error = format!("{e:#}"),
                "could not queue a private answer; sending it directly"
            );
            let Destination::Ephemeral {
                channel,
                user,
                thread_ref,
            } = &msg.to
            else {
                return;
            };
            let session = self.session();
            for part in blocks::render(&msg.card, &self.engine.config().directory) {
                let req = super::ephemeral(channel, user, thread_ref.as_ref(), part);
                let sent =
                    tokio::time::timeout(super::CALL_TIMEOUT, session.chat_post_ephemeral(&req))
                        .await;
                if !matches!(sent, Ok(Ok(_))) {
                    warn!("the private answer could not be sent directly either");
                    return;
                }
            }
        }
    }

    /// Open a modal asking why (reject, not applicable, abort, roll back).
    async fn ask_reason(
        &self,
        trigger: &str,
        id: &str,
        (title, question): (&str, &str),
        channel: &str,
        thread: Option<String>,
    ) {
        let meta = json!({ "id": id, "channel": channel, "thread": thread }).to_string();
        let input = SlackInputBlock::new(
            SlackBlockPlainTextOnly::from(question),
            SlackInputBlockElement::PlainTextInput(
                SlackBlockPlainTextInputElement::new()
                    .with_action_id(SlackActionId(REASON_ACTION.into()))
                    .with_multiline(true)
                    .with_max_length(500),
            ),
        )
        .with_block_id(SlackBlockId(REASON_BLOCK.into()));
        let view = SlackView::Modal(
            SlackModalView::new(SlackBlockPlainTextOnly::from(title), vec![input.into()])
                .with_submit(SlackBlockPlainTextOnly::from("Submit"))
                .with_close(SlackBlockPlainTextOnly::from("Cancel"))
                .with_callback_id(SlackCallbackId(REASON_CALLBACK.into()))
                .with_private_metadata(meta),
        );
        let req = SlackApiViewsOpenRequest::new(SlackTriggerId(trigger.to_string()), view);
        let session = self.session();
        match tokio::time::timeout(super::CALL_TIMEOUT, session.views_open(&req)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "could not open the reason dialog"),
            Err(_) => warn!("views.open timed out"),
        }
    }

    /// An Events API callback: a mention gets the help text, in its thread.
    pub async fn on_event(&self, event: &Value) {
        if event["type"] != "event_callback" {
            return;
        }
        let inner = &event["event"];
        if inner["type"] != "app_mention" {
            return;
        }
        let (Some(channel), Some(ts)) = (
            text(inner, &["channel"]),
            text(inner, &["thread_ts"]).or_else(|| text(inner, &["ts"])),
        ) else {
            return;
        };
        let key = text(event, &["event_id"]).map(|id| format!("slack:evt:{id}"));
        let msg = Outgoing {
            platform: Platform::Slack,
            to: Destination::ThreadRef {
                channel: channel.to_string(),
                thread_ref: ts.to_string(),
            },
            key: None,
            card: crate::chat::Card::new("tminus runs deployment runbooks here.")
                .section(None, command::help().lines().map(str::to_string).collect()),
        };
        if let Err(e) = self.engine.post_message(&msg, key.as_deref()).await {
            warn!(error = format!("{e:#}"), "could not answer a mention");
        }
    }
}
