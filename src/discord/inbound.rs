//! Interactions: slash commands, button clicks and reason dialogs, from
//! `POST /discord/interactions` or the gateway, answered within the request.
//!
//! Every HTTP interaction is verified (Ed25519 over timestamp + raw body,
//! serenity's `Verifier`, plus a five-minute freshness window) before it is
//! parsed; a bad or missing signature gets 401. The engine commits before
//! the answer: a click that changed the run is answered with a deferred
//! update (the card is edited through the outbox), a refusal with an
//! ephemeral message to the clicker. The interaction id makes a replay
//! change nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::instrument;

use super::{render, Discord};
use crate::chat::buttons::Pressed;
use crate::chat::{buttons, json_str as text};
use crate::domain::Platform;
use crate::engine::{command, Actor, Reply, Request, NOT_MY_BUTTON};
use crate::web::guard;

pub const MAX_BODY: usize = 1 << 20;
/// How far an interaction's timestamp may be from now.
pub const WINDOW_SECS: i64 = 5 * 60;
const REASON_INPUT: &str = "reason";
/// Discord's ephemeral message flag.
const EPHEMERAL: u64 = 1 << 6;
const MAX_CONTENT: usize = 2000;

pub fn routes(discord: Arc<Discord>) -> Router {
    Router::new()
        .route("/discord/interactions", post(interactions))
        .with_state(discord)
}

fn unauthorized(why: &str) -> Response {
    guard::refused(Platform::Discord, why);
    (StatusCode::UNAUTHORIZED, "invalid request signature\n").into_response()
}

async fn interactions(
    State(discord): State<Arc<Discord>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match guard::body(&headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(verifier), Some(sig), Some(ts)) = (
        &discord.verifier,
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) else {
        return unauthorized("missing signature headers");
    };
    if verifier.verify(sig, ts, &bytes).is_err() {
        return unauthorized("signature does not match");
    }
    match ts.parse::<i64>() {
        Ok(t) if (discord.engine.now().timestamp() - t).abs() <= WINDOW_SECS => {}
        _ => return unauthorized("stale or malformed timestamp"),
    }
    let interaction: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an interaction: {e}\n"),
            )
                .into_response()
        }
    };
    match discord.respond(interaction).await {
        Some(answer) => Json(answer).into_response(),
        None => (StatusCode::BAD_REQUEST, "unsupported interaction\n").into_response(),
    }
}

fn option_value(options: &Value, name: &str) -> Option<String> {
    options
        .as_array()?
        .iter()
        .find(|o| o["name"] == name)
        .map(|o| match &o["value"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

/// A `/deploy` or `/oncall` command's subcommand and options as the text
/// the command takes after its name.
pub fn command_text(data: &Value) -> Option<String> {
    let sub = data["options"].as_array()?.first()?;
    let name = sub["name"].as_str()?;
    let opts = &sub["options"];
    let get = |n: &str| option_value(opts, n);
    let mut words = vec![name.to_string()];
    match name {
        "start" => {
            words.extend(get("service"));
            words.extend(get("version"));
            if let Some(r) = get("runbook") {
                words.push(format!("--runbook={r}"));
            }
            if let Some(e) = get("env") {
                words.push(format!("--env={e}"));
            }
        }
        "incident" => {
            words.extend(get("summary"));
            if let Some(s) = get("severity") {
                words.push(format!("--severity={s}"));
            }
            if let Some(r) = get("run") {
                words.push(format!("--run={r}"));
            }
        }
        "override" => {
            // A user option's value is the user's id: a mention resolves it.
            words.extend(get("person").map(|p| format!("<@{p}>")));
            words.extend(get("duration"));
            words.extend(get("rotation"));
        }
        _ => {
            words.extend(get("run"));
            words.extend(get("reason"));
        }
    }
    Some(words.join(" "))
}

fn message(content: &str, reply: Option<&Reply>, discord: &Discord) -> Value {
    let mut data = json!({
        // Answers quote what was typed: escaped, so it links nothing.
        "content": crate::chat::clip(&render::escape(content), MAX_CONTENT),
        "flags": EPHEMERAL,
        "allowed_mentions": {"parse": []},
    });
    if let Some(card) = reply.and_then(|r| r.card.as_ref()) {
        if let Some(first) = render::render(card, &discord.engine.config().directory)
            .into_iter()
            .next()
        {
            data["embeds"] = first["embeds"].clone();
            data["components"] = first["components"].clone();
        }
    }
    json!({ "type": 4, "data": data })
}

impl Discord {
    /// The answer to one interaction (already verified, or from the gateway).
    #[instrument(skip_all, fields(interaction_id = interaction["id"].as_str().unwrap_or("")))]
    pub async fn respond(&self, interaction: Value) -> Option<Value> {
        let kind = interaction["type"].as_u64()?;
        if kind == 1 {
            return Some(json!({ "type": 1 }));
        }
        let user = text(&interaction, &["member", "user", "id"])
            .or_else(|| text(&interaction, &["user", "id"]))?;
        let channel = text(&interaction, &["channel_id"])
            .or_else(|| text(&interaction, &["channel", "id"]))?;
        let actor = Actor {
            platform: Platform::Discord,
            user: user.to_string(),
            channel: channel.to_string(),
        };
        let key = text(&interaction, &["id"]).map(|id| format!("discord:{id}"));
        let data = &interaction["data"];
        let answer = match kind {
            2 => {
                let name = data["name"].as_str().unwrap_or("?");
                if name != "deploy" && name != "oncall" {
                    return Some(message(
                        &format!("tminus answers /deploy and /oncall, not /{name}."),
                        None,
                        self,
                    ));
                }
                let text = command_text(data).unwrap_or_else(|| "help".into());
                match command::parse_slash(name, &text) {
                    Ok(cmd) => {
                        let reply = self
                            .engine
                            .handle(&actor, Request::Command(cmd), key.as_deref())
                            .await;
                        message(&reply.text, Some(&reply), self)
                    }
                    Err(e) => message(&e.to_string(), None, self),
                }
            }
            3 => {
                let id = text(data, &["custom_id"])?;
                // Decoded once, here: a button tminus did not make goes no further.
                match buttons::pressed(id, None) {
                    Some(p) if p.wants_reason() => {
                        return Some(reason_modal(id, p.reason_prompt()))
                    }
                    Some(p) => self.click(&actor, p, key).await,
                    None => message(NOT_MY_BUTTON, None, self),
                }
            }
            5 => {
                let id = text(data, &["custom_id"])?;
                let reason = data["components"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
                    .find(|c| c["custom_id"] == REASON_INPUT)
                    .and_then(|c| c["value"].as_str().map(str::to_string));
                match buttons::pressed(id, reason) {
                    Some(p) => self.click(&actor, p, key).await,
                    None => message(NOT_MY_BUTTON, None, self),
                }
            }
            _ => return None,
        };
        Some(answer)
    }

    async fn click(&self, actor: &Actor, pressed: Pressed, key: Option<String>) -> Value {
        let reply = self
            .engine
            .handle(actor, Request::Click(pressed), key.as_deref())
            .await;
        if reply.refused {
            message(&reply.text, None, self)
        } else {
            // The card itself is edited through the outbox.
            json!({ "type": 6 })
        }
    }
}

/// The dialog that asks why; its id is the button's, so the submission
/// finds its way back to the same action.
fn reason_modal(button_id: &str, (title, question): (&str, &str)) -> Value {
    json!({
        "type": 9,
        "data": {
            "custom_id": button_id,
            "title": title,
            "components": [{
                "type": 1,
                "components": [{
                    "type": 4, "custom_id": REASON_INPUT, "label": question, "style": 2,
                    "min_length": 1, "max_length": 500, "required": true
                }]
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_become_deploy_text() {
        let data = json!({"name": "deploy", "options": [{"type": 1, "name": "start", "options": [
            {"type": 3, "name": "service", "value": "api"},
            {"type": 3, "name": "version", "value": "v1"},
            {"type": 3, "name": "runbook", "value": "quickstart"}]}]});
        assert_eq!(
            command_text(&data).unwrap(),
            "start api v1 --runbook=quickstart"
        );
        let data = json!({"name": "deploy", "options": [{"type": 1, "name": "abort", "options": [
            {"type": 4, "name": "run", "value": 2}, {"type": 3, "name": "reason", "value": "bad build"}]}]});
        assert_eq!(
            command::parse(&command_text(&data).unwrap()),
            Ok(command::Command::Abort {
                run: 2,
                reason: "bad build".into()
            })
        );
        let data = json!({"name": "deploy", "options": [{"type": 1, "name": "list"}]});
        assert_eq!(command_text(&data).unwrap(), "list");
        let data = json!({"name": "deploy", "options": [{"type": 1, "name": "incident", "options": [
            {"type": 3, "name": "summary", "value": "checkout down"},
            {"type": 3, "name": "severity", "value": "critical"}]}]});
        assert_eq!(
            command::parse(&command_text(&data).unwrap()),
            Ok(command::Command::Incident {
                summary: "checkout down".into(),
                severity: crate::domain::runbook::Severity::Critical,
                run: None
            })
        );
        let data = json!({"name": "oncall", "options": [{"type": 1, "name": "override", "options": [
            {"type": 6, "name": "person", "value": "297305816240917352"},
            {"type": 3, "name": "duration", "value": "2h"}]}]});
        assert_eq!(
            command::parse_slash("oncall", &command_text(&data).unwrap()),
            Ok(command::Command::Override {
                person: "<@297305816240917352>".into(),
                duration: crate::domain::Dur::from_mins(120),
                rotation: None
            })
        );
        let data = json!({"name": "oncall", "options": [{"type": 1, "name": "show"}]});
        assert_eq!(
            command::parse_slash("oncall", &command_text(&data).unwrap()),
            Ok(command::Command::Oncall)
        );
    }
}
