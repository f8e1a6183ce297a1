//! A fake Discord REST API on 127.0.0.1 for the tests: records every call,
//! answers as Discord does, can fail (5xx, 429 with `Retry-After` and
//! `X-RateLimit-*`) for a while, and checks every message against Discord's
//! content, embed and component limits (refusing with 400 as Discord would).

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};

pub const TOKEN: &str = "discord-test-token";
pub const APP_ID: &str = "1100000000000000000";

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
    /// The id of the message created or edited.
    pub id: Option<String>,
}

impl Call {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn all_text(&self) -> String {
        crate::helpers::all_strings(&self.body)
    }

    /// Buttons: (label, custom_id).
    pub fn buttons(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for row in self.body["components"].as_array().into_iter().flatten() {
            for b in row["components"].as_array().into_iter().flatten() {
                out.push((
                    b["label"].as_str().unwrap_or_default().into(),
                    b["custom_id"].as_str().unwrap_or_default().into(),
                ));
            }
        }
        out
    }

    /// The channel in `/channels/{id}/…`.
    pub fn channel(&self) -> Option<&str> {
        self.path
            .strip_prefix("/api/v10/channels/")?
            .split('/')
            .next()
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Status(u16),
    RateLimited { retry_after_secs: f64 },
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    faults: VecDeque<Fault>,
    next_id: u64,
    violations: Vec<String>,
    bad_token: bool,
}

#[derive(Clone)]
pub struct FakeDiscord {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let state = Arc::new(Mutex::new(FakeState {
            next_id: 1_300_000_000_000_000_000,
            ..FakeState::default()
        }));
        let app = Router::new()
            .route("/api/v10/{*rest}", any(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeDiscord { addr, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
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
            |c| format!("{} {} {} {:?}", c.status, c.method, c.path, c.id),
        )
        .await
    }

    /// The latest content of message `id` (its post or last edit).
    pub fn latest(&self, id: &str) -> Option<Call> {
        self.calls()
            .into_iter()
            .rfind(|c| c.ok() && c.id.as_deref() == Some(id))
    }
}

fn check_limits(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    if len(&body["content"]) > 2000 {
        problems.push("content over 2000".into());
    }
    let embeds = body["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.len() > 10 {
        problems.push("more than 10 embeds".into());
    }
    let mut total = 0;
    for e in &embeds {
        let (t, d, f) = (
            len(&e["title"]),
            len(&e["description"]),
            len(&e["footer"]["text"]),
        );
        if t > 256 || d > 4096 || f > 2048 {
            problems.push(format!("embed title {t} description {d} footer {f}"));
        }
        total += t + d + f;
    }
    if total > 6000 {
        problems.push(format!("embeds total {total}"));
    }
    let rows = body["components"].as_array().cloned().unwrap_or_default();
    if rows.len() > 5 {
        problems.push(format!("{} action rows", rows.len()));
    }
    let mut ids = HashSet::new();
    for row in rows {
        let buttons = row["components"].as_array().cloned().unwrap_or_default();
        if row["type"] != 1 || buttons.is_empty() || buttons.len() > 5 {
            problems.push(format!("a row of {} components", buttons.len()));
        }
        for b in buttons {
            let id = b["custom_id"].as_str().unwrap_or_default();
            if id.is_empty() || id.len() > 100 || !ids.insert(id.to_string()) {
                problems.push(format!("custom_id {id:?}"));
            }
            let label = len(&b["label"]);
            if label == 0 || label > 80 {
                problems.push(format!("label of {label}"));
            }
        }
    }
    problems
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = format!("/api/v10/{rest}");
    let method = method.to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = state.lock().unwrap();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bot {TOKEN}") {
        st.bad_token = true;
        st.calls.push(Call {
            method,
            path,
            body,
            status: 401,
            id: None,
        });
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401: Unauthorized", "code": 0})),
        )
            .into_response();
    }
    if let Some(fault) = st.faults.pop_front() {
        let (status, response) = match fault {
            Fault::Status(code) => (code, (StatusCode::from_u16(code).unwrap(), "upstream trouble").into_response()),
            Fault::RateLimited { retry_after_secs } => (
                429,
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        ("retry-after", format!("{}", retry_after_secs.ceil() as u64)),
                        ("x-ratelimit-limit", "5".to_string()),
                        ("x-ratelimit-remaining", "0".to_string()),
                        ("x-ratelimit-reset-after", format!("{retry_after_secs:.3}")),
                        ("x-ratelimit-bucket", "abcd1234".to_string()),
                        ("x-ratelimit-scope", "user".to_string()),
                    ],
                    Json(json!({"message": "You are being rate limited.", "retry_after": retry_after_secs, "global": false})),
                )
                    .into_response(),
            ),
        };
        st.calls.push(Call {
            method,
            path,
            body,
            status,
            id: None,
        });
        return response;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let is_message = matches!(
        (method.as_str(), segments.as_slice()),
        ("POST", ["channels", _, "messages"]) | ("PATCH", ["channels", _, "messages", _])
    );
    if is_message {
        let problems = check_limits(&body);
        if !problems.is_empty() {
            st.violations
                .extend(problems.iter().map(|p| format!("{method} {path}: {p}")));
            st.calls.push(Call {
                method,
                path,
                body,
                status: 400,
                id: None,
            });
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "Invalid Form Body", "code": 50035})),
            )
                .into_response();
        }
    }
    let (id, answer): (Option<String>, Value) = match (method.as_str(), segments.as_slice()) {
        ("POST", ["channels", channel, "messages"]) => {
            st.next_id += 1;
            let id = st.next_id.to_string();
            (
                Some(id.clone()),
                json!({"id": id, "channel_id": channel, "content": body["content"]}),
            )
        }
        ("PATCH", ["channels", channel, "messages", id]) => (
            Some(id.to_string()),
            json!({"id": id, "channel_id": channel, "content": body["content"]}),
        ),
        ("POST", ["channels", channel, "messages", id, "threads"]) => (
            None,
            json!({"id": id, "parent_id": channel, "type": 11, "name": body["name"]}),
        ),
        ("POST", ["users", "@me", "channels"]) => {
            let user = body["recipient_id"].as_str().unwrap_or("0");
            (
                None,
                json!({"id": format!("9{}", &user[user.len().saturating_sub(17)..]), "type": 1}),
            )
        }
        ("PUT", ["applications", _, "commands"])
        | ("PUT", ["applications", _, "guilds", _, "commands"]) => (None, body.clone()),
        _ => {
            st.calls.push(Call {
                method,
                path,
                body,
                status: 404,
                id: None,
            });
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"message": "404: Not Found", "code": 0})),
            )
                .into_response();
        }
    };
    st.calls.push(Call {
        method,
        path,
        body,
        status: 200,
        id: id.clone(),
    });
    Json(answer).into_response()
}
