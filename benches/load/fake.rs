//! One fake server on 127.0.0.1 standing in for everything outside tminus:
//! the Slack Web API (`/slack/api/{method}`), the Discord REST API
//! (`/api/v10/…`, where serenity expects it) and the health endpoint the
//! bench runbook's monitoring probe asks (`/healthz`). It answers the way
//! the platforms do, with as little work as possible, so what is measured
//! is tminus; it counts deliveries so the outbox figure can be timed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const SLACK_TOKEN: &str = "xoxb-bench";
pub const DISCORD_TOKEN: &str = "discord-bench-token";
pub const DISCORD_APP_ID: &str = "1100000000000000000";

#[derive(Default)]
pub struct Counters {
    /// Slack chat.postMessage and chat.update calls answered.
    pub slack_messages: AtomicU64,
    pub discord_calls: AtomicU64,
    pub health: AtomicU64,
    next_id: AtomicU64,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

impl Fake {
    pub async fn start() -> anyhow::Result<Fake> {
        let counters = Arc::new(Counters::default());
        let app = Router::new()
            .route("/healthz", get(health))
            .route("/slack/api/{method}", post(slack))
            .route("/api/v10/{*rest}", any(discord))
            .with_state(counters.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Fake { addr, counters })
    }

    pub fn health_url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    pub fn slack_api_url(&self) -> String {
        format!("http://{}/slack/api", self.addr)
    }

    pub fn discord_api_url(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    pub fn slack_messages(&self) -> u64 {
        self.counters.slack_messages.load(Ordering::Relaxed)
    }
}

async fn health(State(c): State<Arc<Counters>>) -> &'static str {
    c.health.fetch_add(1, Ordering::Relaxed);
    "ok\n"
}

/// Slack sends JSON for chat.* and forms for some other methods.
fn slack_body(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    })
}

async fn slack(
    State(c): State<Arc<Counters>>,
    Path(method): Path<String>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let body = slack_body(&body);
    let channel = body["channel"].as_str().unwrap_or_default().to_string();
    Json(match method.as_str() {
        "chat.postMessage" => {
            c.slack_messages.fetch_add(1, Ordering::Relaxed);
            let n = c.next_id.fetch_add(1, Ordering::Relaxed);
            let ts = format!("1700000000.{n:06}");
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts}})
        }
        "chat.update" => {
            c.slack_messages.fetch_add(1, Ordering::Relaxed);
            json!({"ok": true, "channel": channel, "ts": body["ts"], "text": "", "message": {"text": ""}})
        }
        "chat.postEphemeral" => json!({"ok": true, "message_ts": "1700000000.999999"}),
        "conversations.open" => json!({"ok": true, "channel": {"id": "D0BENCH"}}),
        "views.open" => {
            json!({"ok": true, "view": {"id": "V0BENCH", "team_id": "T0", "type": "modal", "hash": "h", "blocks": []}})
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    })
}

async fn discord(
    State(c): State<Arc<Counters>>,
    method: Method,
    Path(rest): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    c.discord_calls.fetch_add(1, Ordering::Relaxed);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = rest.split('/').collect();
    let answer = match (method.as_str(), segments.as_slice()) {
        ("POST", ["channels", channel, "messages"]) => {
            let id = 1_300_000_000_000_000_000 + c.next_id.fetch_add(1, Ordering::Relaxed);
            json!({"id": id.to_string(), "channel_id": channel})
        }
        ("PATCH", ["channels", channel, "messages", id]) => {
            json!({"id": id, "channel_id": channel})
        }
        ("POST", ["channels", channel, "messages", id, "threads"]) => {
            json!({"id": id, "parent_id": channel, "type": 11, "name": body["name"]})
        }
        ("POST", ["users", "@me", "channels"]) => json!({"id": "1900000000000000001", "type": 1}),
        ("PUT", ["applications", ..]) => body,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"message": "404: Not Found", "code": 0})),
            )
                .into_response()
        }
    };
    Json(answer).into_response()
}
