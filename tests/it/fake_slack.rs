//! A fake Slack Web API on 127.0.0.1, for the tests: it records every call,
//! answers as Slack does, can be told to fail (5xx, 429 with Retry-After)
//! for a while, and checks every message against Block Kit's limits —
//! a message over a limit is refused with `invalid_blocks`, as Slack would,
//! and noted in `violations`.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// One request the bot made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// What the fake answered.
    pub status: u16,
    /// For successful posts: the ts the fake gave the message.
    pub ts: Option<String>,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.body.get("__refused").is_none()
    }

    pub fn str(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }

    /// Every text in the message (fallback text and blocks), for searching.
    pub fn all_text(&self) -> String {
        crate::helpers::all_strings(&self.body)
    }

    /// Buttons in the message: (label, action_id).
    pub fn buttons(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for block in self.body["blocks"].as_array().into_iter().flatten() {
            for el in block["elements"].as_array().into_iter().flatten() {
                if el["type"] == "button" {
                    out.push((
                        el["text"]["text"].as_str().unwrap_or_default().to_string(),
                        el["action_id"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        out
    }
}

/// A failure to answer with instead of success.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Status(u16),
    RateLimited { retry_after_secs: u64 },
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    faults: VecDeque<Fault>,
    next_ts: u64,
    violations: Vec<String>,
    ws_url: Option<String>,
    bad_token: bool,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

pub const BOT_TOKEN: &str = "xoxb-test-token";
pub const APP_TOKEN: &str = "xapp-test-token";

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let state = Arc::new(Mutex::new(FakeState {
            next_ts: 1,
            ..FakeState::default()
        }));
        let app = Router::new()
            .route("/api/{method}", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSlack { addr, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Answer the next requests with these faults, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Where `apps.connections.open` sends the bot.
    pub fn set_ws_url(&self, url: String) {
        self.state.lock().unwrap().ws_url = Some(url);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Successful calls of one method.
    pub fn ok_calls(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.ok())
            .collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn saw_a_bad_token(&self) -> bool {
        self.state.lock().unwrap().bad_token
    }

    /// Wait (up to 15 s) until `pred` holds for the recorded calls.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        crate::helpers::poll_until(
            what,
            || self.calls(),
            pred,
            |c| {
                format!(
                    "{} {} {:?} {}",
                    c.status,
                    c.method,
                    c.ts,
                    c.str("text").unwrap_or_default()
                )
            },
        )
        .await
    }

    /// The latest content of the message with `ts` (its post or last update).
    pub fn latest(&self, ts: &str) -> Option<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.ok() && (c.method == "chat.postMessage" || c.method == "chat.update"))
            .rfind(|c| c.ts.as_deref() == Some(ts))
    }
}

/// Check a message payload against Block Kit's limits.
fn check_limits(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(text) = body["text"].as_str() {
        if text.chars().count() > 4000 {
            problems.push(format!("text is {} characters", text.chars().count()));
        }
    }
    let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
    if blocks.len() > 50 {
        problems.push(format!("{} blocks", blocks.len()));
    }
    let mut ids = HashSet::new();
    for block in &blocks {
        if let Some(id) = block["block_id"].as_str() {
            if id.len() > 255 {
                problems.push("block_id over 255".into());
            }
        }
        match block["type"].as_str() {
            Some("section") => {
                let len = block["text"]["text"]
                    .as_str()
                    .map_or(0, |t| t.chars().count());
                if len == 0 || len > 3000 {
                    problems.push(format!("section text of {len} characters"));
                }
                for f in block["fields"].as_array().into_iter().flatten() {
                    if f["text"].as_str().map_or(0, |t| t.chars().count()) > 2000 {
                        problems.push("field over 2000".into());
                    }
                }
            }
            Some("actions") => {
                let elements = block["elements"].as_array().cloned().unwrap_or_default();
                if elements.is_empty() || elements.len() > 25 {
                    problems.push(format!("actions block with {} elements", elements.len()));
                }
                for el in elements {
                    let text = el["text"]["text"].as_str().unwrap_or_default();
                    if el["text"]["type"] != "plain_text"
                        || text.is_empty()
                        || text.chars().count() > 75
                    {
                        problems.push(format!("button text {text:?}"));
                    }
                    let id = el["action_id"].as_str().unwrap_or_default();
                    if id.is_empty() || id.len() > 255 {
                        problems.push(format!("action_id {id:?}"));
                    }
                    if !ids.insert(id.to_string()) {
                        problems.push(format!("duplicate action_id {id}"));
                    }
                    if el["value"].as_str().map_or(0, str::len) > 2000 {
                        problems.push("button value over 2000".into());
                    }
                }
            }
            Some("context") => {
                for el in block["elements"].as_array().into_iter().flatten() {
                    if el["text"].as_str().map_or(0, |t| t.chars().count()) > 3000 {
                        problems.push("context text over 3000".into());
                    }
                }
            }
            Some("header" | "divider" | "image" | "input") => {}
            other => problems.push(format!("unexpected block type {other:?}")),
        }
    }
    problems
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    });
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut st = state.lock().unwrap();
    let expected = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    if auth != format!("Bearer {expected}") {
        st.bad_token = true;
        st.calls.push(Call {
            method,
            body,
            status: 200,
            ts: None,
        });
        return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    if let Some(fault) = st.faults.pop_front() {
        let (status, response) = match fault {
            Fault::Status(code) => (
                code,
                (StatusCode::from_u16(code).unwrap(), "upstream trouble").into_response(),
            ),
            Fault::RateLimited { retry_after_secs } => (
                429,
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        ("retry-after", retry_after_secs.to_string()),
                        ("content-type", "application/json".into()),
                    ],
                    json!({"ok": false, "error": "ratelimited"}).to_string(),
                )
                    .into_response(),
            ),
        };
        st.calls.push(Call {
            method,
            body,
            status,
            ts: None,
        });
        return response;
    }
    let is_message = matches!(
        method.as_str(),
        "chat.postMessage" | "chat.update" | "chat.postEphemeral"
    );
    if is_message {
        let problems = check_limits(&body);
        if !problems.is_empty() {
            st.violations
                .extend(problems.iter().map(|p| format!("{method}: {p}")));
            let mut refused = body.clone();
            refused["__refused"] = Value::Bool(true);
            st.calls.push(Call {
                method,
                body: refused,
                status: 200,
                ts: None,
            });
            return Json(json!({"ok": false, "error": "invalid_blocks"})).into_response();
        }
    }
    let channel = body["channel"].as_str().unwrap_or_default().to_string();
    let (ts, answer) = match method.as_str() {
        "chat.postMessage" => {
            let n = st.next_ts;
            st.next_ts += 1;
            let ts = format!("1700000000.{n:06}");
            let answer = json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts, "text": body["text"]}});
            (Some(ts), answer)
        }
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or_default().to_string();
            let answer = json!({"ok": true, "channel": channel, "ts": ts, "text": body["text"], "message": {"text": body["text"]}});
            (Some(ts), answer)
        }
        "chat.postEphemeral" => (None, json!({"ok": true, "message_ts": "1700000000.999999"})),
        "conversations.open" => {
            let users = body["users"].as_str().map(str::to_string).or_else(|| {
                body["users"].as_array().map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
            });
            let user = users.unwrap_or_default();
            (
                None,
                json!({"ok": true, "channel": {"id": format!("D{user}")}}),
            )
        }
        "views.open" => {
            let mut view = body["view"].clone();
            if view.is_string() {
                view = serde_json::from_str(view.as_str().unwrap()).unwrap_or_default();
            }
            view["id"] = "V0REASON".into();
            view["team_id"] = "T0TEAM".into();
            view["hash"] = "h1".into();
            (None, json!({"ok": true, "view": view}))
        }
        "apps.connections.open" => match &st.ws_url {
            Some(url) => (None, json!({"ok": true, "url": url})),
            None => (None, json!({"ok": false, "error": "not_configured"})),
        },
        _ => (None, json!({"ok": false, "error": "unknown_method"})),
    };
    st.calls.push(Call {
        method,
        body,
        status: 200,
        ts: ts.clone(),
    });
    Json(answer).into_response()
}
