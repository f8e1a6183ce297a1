//! A fake Slack Web API on 127.0.0.1, for the tests: it records every call,
//! answers as Slack does, can be told to fail (5xx, 429 with Retry-After)
//! for a while, and holds every request to what Slack publishes.
//!
//! Two checks, each refusing what Slack would refuse with the error Slack
//! names, and noting it in `violations`:
//!
//! - **Slack's OpenAPI document** (`../shared/specs/slack/
//!   slack_web_openapi_v2.json`, read once per test binary): the method must
//!   be one of its paths, every argument must be declared for that method,
//!   required arguments present, and each of the declared type. This is
//!   what caught DMs opened with `users` as a JSON array: the document says
//!   a comma-separated string, and Slack answers `users_list_not_supplied`.
//! - **Block Kit's limits** on every message (`invalid_blocks`).
//!
//! Three arguments postdate the document and are taken as Slack's method
//! reference describes them ([`DOCUMENTED_ELSEWHERE`]): `metadata` on
//! `chat.postMessage` and `chat.update`, `include_all_metadata` on
//! `conversations.history` and `conversations.replies`.
//!
//! Posted messages are kept per channel and thread, so the history methods
//! answer as Slack does: newest first at the top level, the parent then its
//! replies in a thread, `oldest` exclusive, paged by `limit` and `cursor`,
//! and each message's metadata only when `include_all_metadata` is true.
//! The fake can hold its answers to posts ([`FakeSlack::hold_posts`]): the
//! message is in the channel at once and its answer comes late, or never
//! reaches a client that died waiting — a call that took effect unseen.
//!
//! A request either check refuses fails the test that sent it: when the
//! last handle on the fake is dropped it asserts that there were no
//! violations and no wrong token (unless the test is already failing). A
//! test that sends bad requests on purpose says so with
//! [`FakeSlack::expect_violations`] and checks them itself.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// One request the bot made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// The arguments: a JSON body as sent, or form and query fields as strings.
    pub body: Value,
    /// What the fake answered.
    pub status: u16,
    /// For successful posts: the ts the fake gave the message.
    pub ts: Option<String>,
    /// The `error` of an `"ok": false` answer.
    pub error: Option<String>,
    /// One of the set-up checks (`doctor`, and `serve` at start), as the
    /// header they carry says.
    pub setup: bool,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
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
    RateLimited {
        retry_after_secs: u64,
    },
    /// The call takes effect (a post is in the channel), then the answer
    /// is this HTTP status instead of the result.
    AppliedThen(u16),
}

/// A message in a channel, as the history methods show it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    /// The fallback text, as last posted or updated.
    pub text: Value,
    /// The Block Kit blocks (buttons among them), as last posted or updated.
    pub blocks: Value,
    pub metadata: Option<Value>,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    faults: VecDeque<Fault>,
    next_ts: u64,
    violations: Vec<String>,
    ws_url: Option<String>,
    bad_token: bool,
    /// The test sends bad requests on purpose and checks them itself.
    expect_violations: bool,
    messages: Vec<Stored>,
    /// Answer posts this late (the message is in the channel at once).
    hold_posts: Option<std::time::Duration>,
    /// Posts whose answer is still held.
    held: usize,
    /// The token lacks the history scopes.
    no_history_scopes: bool,
    /// Scopes the token was not granted (besides the history ones above).
    withheld_scopes: HashSet<String>,
    /// Channels that are not as the bot file expects; any other id is a
    /// channel the bot is in.
    channels: HashMap<String, Channel>,
    /// User ids Slack does not know; any other is a person.
    unknown_users: HashSet<String>,
}

/// How a channel looks to `conversations.info`, when not as expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `channel_not_found`.
    Missing,
    /// It exists; the bot was never invited.
    WithoutTheBot,
    Archived,
}

/// The bot user `auth.test` names.
pub const BOT_USER: &str = "tminus";

fn lock(state: &Mutex<FakeState>) -> MutexGuard<'_, FakeState> {
    // A test that panicked while holding the lock must not hide its own
    // failure behind a poisoned mutex.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    /// Shared by the test's handles only (not the server): its drop, with
    /// the last handle, is where the test is held to the document.
    _guard: Arc<Guard>,
}

/// Fails the test when the fake it watched refused a request.
struct Guard {
    state: Arc<Mutex<FakeState>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let st = lock(&self.state);
        if st.expect_violations {
            return;
        }
        assert!(
            st.violations.is_empty(),
            "the bot sent Slack requests that Slack would refuse:\n  {}",
            st.violations.join("\n  ")
        );
        assert!(!st.bad_token, "the bot sent Slack a wrong or missing token");
    }
}

pub const BOT_TOKEN: &str = "xoxb-test-token";
pub const APP_TOKEN: &str = "xapp-test-token";

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        spec(); // a missing or broken document fails here, not mid-test
        let state = Arc::new(Mutex::new(FakeState {
            next_ts: 1,
            ..FakeState::default()
        }));
        let app = Router::new()
            .route("/api/{method}", post(handle).get(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSlack {
            addr,
            _guard: Arc::new(Guard {
                state: state.clone(),
            }),
            state,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Answer the next requests with these faults, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).faults.extend(faults);
    }

    /// Where `apps.connections.open` sends the bot.
    pub fn set_ws_url(&self, url: String) {
        lock(&self.state).ws_url = Some(url);
    }

    /// This test sends requests Slack would refuse on purpose: do not fail
    /// it for them (it checks [`FakeSlack::violations`] itself).
    pub fn expect_violations(&self) {
        lock(&self.state).expect_violations = true;
    }

    /// Hold the answer to every post (`chat.postMessage`, `chat.update`)
    /// for `hold`; `None` answers at once again.
    pub fn hold_posts(&self, hold: Option<std::time::Duration>) {
        lock(&self.state).hold_posts = hold;
    }

    /// Every message in Slack, in the order posted — including those whose
    /// answer the bot never saw.
    pub fn messages(&self) -> Vec<Stored> {
        lock(&self.state).messages.clone()
    }

    /// Posts that took effect and whose answer is still held.
    pub fn held(&self) -> usize {
        lock(&self.state).held
    }

    /// The bot token has no `channels:history`, `groups:history`,
    /// `im:history`: the history methods answer `missing_scope`.
    pub fn without_history_scopes(&self) {
        lock(&self.state).no_history_scopes = true;
    }

    /// The token lacks `scope` (as if the app was installed without it).
    pub fn withhold_scope(&self, scope: &str) {
        lock(&self.state).withheld_scopes.insert(scope.to_string());
    }

    /// Channel `id` looks like `how`.
    pub fn set_channel(&self, id: &str, how: Channel) {
        lock(&self.state).channels.insert(id.to_string(), how);
    }

    /// Slack knows no user `id`.
    pub fn forget_user(&self, id: &str) {
        lock(&self.state).unknown_users.insert(id.to_string());
    }

    /// The scopes the token has, as Slack's `x-oauth-scopes` header lists
    /// them: what tminus's manifest asks for, less what the test withheld.
    fn granted(st: &FakeState) -> String {
        let history = ["channels:history", "groups:history", "im:history"];
        tminus::slack::manifest::BOT_SCOPES
            .iter()
            .map(|s| s.name)
            .filter(|s| !(st.no_history_scopes && history.contains(s)))
            .filter(|s| !st.withheld_scopes.contains(*s))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The calls the bot made to do its work, in order: every call but
    /// the set-up checks ([`FakeSlack::setup_calls`]).
    pub fn calls(&self) -> Vec<Call> {
        let all = lock(&self.state).calls.clone();
        all.into_iter().filter(|c| !c.setup).collect()
    }

    /// The set-up checks' calls (`auth.test`, `conversations.info`,
    /// `users.info`), which only read.
    pub fn setup_calls(&self) -> Vec<Call> {
        let all = lock(&self.state).calls.clone();
        all.into_iter().filter(|c| c.setup).collect()
    }

    /// Successful calls of one method.
    pub fn ok_calls(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.ok())
            .collect()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    pub fn saw_a_bad_token(&self) -> bool {
        lock(&self.state).bad_token
    }

    /// Wait (up to 15 s) until `pred` holds for the recorded calls.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        crate::helpers::poll_until(
            what,
            || self.calls(),
            pred,
            |c| {
                format!(
                    "{} {} {:?} {} {}",
                    c.status,
                    c.method,
                    c.ts,
                    c.error.as_deref().unwrap_or("ok"),
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

// ---------------------------------------------------------------------------
// Slack's OpenAPI document

/// A parameter's declared type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    String,
    Boolean,
    Integer,
    Number,
}

#[derive(Debug)]
struct ParamSpec {
    kind: Kind,
    required: bool,
    /// The description says the string holds JSON (blocks, attachments,
    /// view, …): in a JSON body Slack takes the array or object itself.
    json: bool,
}

#[derive(Debug, Default)]
struct MethodSpec {
    /// Every formData and query parameter. The `token` header parameter is
    /// not among them: the token travels in the Authorization header.
    params: BTreeMap<String, ParamSpec>,
    /// The errors the document lists for the method.
    errors: Vec<String>,
}

impl MethodSpec {
    /// `preferred` if the document lists it for this method, else Slack's
    /// generic `invalid_arguments`.
    fn error(&self, preferred: &str) -> String {
        if self.errors.iter().any(|e| e == preferred) {
            preferred.to_string()
        } else {
            "invalid_arguments".to_string()
        }
    }
}

/// Socket Mode's `apps.connections.open` (slack-morphism's listener calls
/// it with the app-level token) is missing from the document, which
/// predates Socket Mode; it takes no arguments.
const UNDOCUMENTED: &[&str] = &["apps.connections.open"];

/// Arguments newer than the document, as Slack's method reference gives
/// them (docs.slack.dev/reference/methods/chat.postMessage, chat.update,
/// conversations.history, conversations.replies; message metadata at
/// docs.slack.dev/messaging/message-metadata): (method, argument, type,
/// holds JSON).
const DOCUMENTED_ELSEWHERE: &[(&str, &str, Kind, bool)] = &[
    ("chat.postMessage", "metadata", Kind::String, true),
    ("chat.update", "metadata", Kind::String, true),
    (
        "conversations.history",
        "include_all_metadata",
        Kind::Boolean,
        false,
    ),
    (
        "conversations.replies",
        "include_all_metadata",
        Kind::Boolean,
        false,
    ),
];

fn spec_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/slack/slack_web_openapi_v2.json")
}

/// The document's methods, by name, parsed once per test binary.
fn spec() -> &'static HashMap<String, MethodSpec> {
    static SPEC: OnceLock<HashMap<String, MethodSpec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = spec_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading Slack's OpenAPI document {}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        parse_spec(&doc)
    })
}

fn parse_spec(doc: &Value) -> HashMap<String, MethodSpec> {
    let mut methods = HashMap::new();
    for (path, ops) in doc["paths"].as_object().expect("paths").iter() {
        let name = path.trim_start_matches('/').to_string();
        let mut method = MethodSpec::default();
        // Slack takes every method's arguments as a form or JSON body (or
        // a query string) whichever verb the document names, so the verbs'
        // parameters are merged.
        for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if !matches!(p["in"].as_str(), Some("formData" | "query")) {
                    continue;
                }
                let kind = match p["type"].as_str() {
                    Some("boolean") => Kind::Boolean,
                    Some("integer") => Kind::Integer,
                    Some("number") => Kind::Number,
                    _ => Kind::String,
                };
                let description = p["description"].as_str().unwrap_or_default();
                let name = p["name"].as_str().expect("parameter name");
                // Slack takes the token in the Authorization header for
                // every method (checked above), also where the document
                // lists it as a required argument (`users.info`).
                let required = p["required"] == true && name != "token";
                method.params.insert(
                    name.to_string(),
                    ParamSpec {
                        kind,
                        required,
                        json: kind == Kind::String && description.to_lowercase().contains("json"),
                    },
                );
            }
            let errors = &op["responses"]["default"]["schema"]["properties"]["error"]["enum"];
            method.errors.extend(
                errors
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string),
            );
        }
        methods.insert(name, method);
    }
    for name in UNDOCUMENTED {
        methods.entry(name.to_string()).or_default();
    }
    for (method, name, kind, json) in DOCUMENTED_ELSEWHERE {
        let spec = methods.get_mut(*method).expect("a documented method");
        assert!(
            !spec.params.contains_key(*name),
            "the document has {method} {name} now: drop it from DOCUMENTED_ELSEWHERE"
        );
        spec.params.insert(
            name.to_string(),
            ParamSpec {
                kind: *kind,
                required: false,
                json: *json,
            },
        );
    }
    methods
}

/// Why Slack would refuse a request: its error code and a sentence.
#[derive(Debug)]
struct Refusal {
    error: String,
    why: String,
}

fn refuse(error: impl Into<String>, why: impl Into<String>) -> Refusal {
    Refusal {
        error: error.into(),
        why: why.into(),
    }
}

/// Whether a value has the parameter's type. `form` says it came from a
/// form body or query string, where every value is a string.
fn type_matches(param: &ParamSpec, value: &Value, form: bool) -> bool {
    match (param.kind, value) {
        (Kind::String, Value::String(s)) if param.json => serde_json::from_str::<Value>(s).is_ok(),
        (Kind::String, Value::String(_)) => true,
        (Kind::String, Value::Array(_) | Value::Object(_)) => param.json && !form,
        (Kind::Boolean, Value::Bool(_)) => true,
        (Kind::Boolean, Value::String(s)) => form && (s == "true" || s == "false"),
        (Kind::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Kind::Integer, Value::String(s)) => s.trim().parse::<i64>().is_ok(),
        (Kind::Number, Value::Number(_)) => true,
        (Kind::Number, Value::String(s)) => s.trim().parse::<f64>().is_ok(),
        _ => false,
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Check one request's arguments against the document's method.
fn check_against_spec(method: &str, args: &Map<String, Value>, form: bool) -> Result<(), Refusal> {
    let Some(spec) = spec().get(method) else {
        return Err(refuse(
            "unknown_method",
            format!("{method} is not a method of Slack's Web API"),
        ));
    };
    for (name, value) in args {
        let Some(param) = spec.params.get(name) else {
            return Err(refuse(
                spec.error("invalid_arg_name"),
                format!("{method} has no argument {name:?}"),
            ));
        };
        if !type_matches(param, value, form) {
            // What Slack says when `users` is not the comma-separated
            // string it expects (a JSON array, say).
            let error = if method == "conversations.open" && name == "users" {
                "users_list_not_supplied".to_string()
            } else {
                "invalid_arguments".to_string()
            };
            return Err(refuse(
                error,
                format!(
                    "{method}: {name} must be {:?}{}, not {}",
                    param.kind,
                    if param.json { " (JSON)" } else { "" },
                    describe(value)
                ),
            ));
        }
    }
    for (name, param) in &spec.params {
        if param.required && !args.contains_key(name) {
            let error = if name == "channel" {
                spec.error("channel_not_found")
            } else {
                "invalid_arguments".to_string()
            };
            return Err(refuse(error, format!("{method}: {name} is required")));
        }
    }
    // Rules the document states in words rather than in its schema.
    match method {
        "conversations.open" if !args.contains_key("users") && !args.contains_key("channel") => {
            Err(refuse(
                "users_list_not_supplied",
                "conversations.open needs users or channel",
            ))
        }
        "chat.postMessage" | "chat.postEphemeral" | "chat.update"
            if !["text", "blocks", "attachments"]
                .iter()
                .any(|k| args.contains_key(*k)) =>
        {
            Err(refuse(
                "no_text",
                format!("{method} needs text, blocks or attachments"),
            ))
        }
        "chat.postMessage" | "chat.update" if args.contains_key("metadata") => {
            let meta = match &args["metadata"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
                other => other.clone(),
            };
            if meta["event_type"].as_str().is_some_and(|t| !t.is_empty())
                && meta["event_payload"].is_object()
            {
                Ok(())
            } else {
                Err(refuse(
                    "invalid_metadata_format",
                    format!("{method}: metadata needs event_type and an event_payload object"),
                ))
            }
        }
        _ => Ok(()),
    }
}

/// The metadata argument as JSON (a JSON body holds the object, a form the
/// JSON text).
fn metadata_of(body: &Value) -> Option<Value> {
    match &body["metadata"] {
        Value::Null => None,
        Value::String(s) => serde_json::from_str(s).ok(),
        other => Some(other.clone()),
    }
}

/// A Slack timestamp as a number, for comparing.
fn ts_num(ts: &str) -> f64 {
    ts.trim().parse().unwrap_or(0.0)
}

/// `conversations.history` or `conversations.replies` over the stored
/// messages, as Slack answers them.
fn history(st: &FakeState, method: &str, body: &Value) -> Value {
    let arg = |name: &str| body[name].as_str().map(str::to_string);
    if st.no_history_scopes {
        return json!({
            "ok": false,
            "error": "missing_scope",
            "needed": "channels:history,groups:history,im:history,mpim:history",
            "provided": "chat:write,commands,im:write",
        });
    }
    let channel = arg("channel").unwrap_or_default();
    let oldest = arg("oldest").map_or(f64::MIN, |o| ts_num(&o));
    let latest = arg("latest").map_or(f64::MAX, |l| ts_num(&l));
    let with_metadata = arg("include_all_metadata").as_deref() == Some("true");
    let limit: usize = arg("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, 999);
    let offset: usize = arg("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let in_range =
        |m: &&Stored| m.channel == channel && ts_num(&m.ts) > oldest && ts_num(&m.ts) <= latest;
    let mut found: Vec<&Stored> = if method == "conversations.replies" {
        let parent = arg("ts").unwrap_or_default();
        let exists = st
            .messages
            .iter()
            .any(|m| m.channel == channel && m.ts == parent && m.thread_ts.is_none());
        if !exists {
            return json!({"ok": false, "error": "thread_not_found"});
        }
        st.messages
            .iter()
            .filter(|m| m.ts == parent || m.thread_ts.as_deref() == Some(parent.as_str()))
            .filter(in_range)
            .collect()
    } else {
        let mut top: Vec<&Stored> = st
            .messages
            .iter()
            .filter(|m| m.thread_ts.is_none())
            .filter(in_range)
            .collect();
        top.reverse();
        top
    };
    let rest = found.split_off(offset.min(found.len()));
    let more = rest.len() > limit;
    let page: Vec<Value> = rest
        .iter()
        .take(limit)
        .map(|m| {
            let mut v =
                json!({"type": "message", "ts": m.ts, "text": m.text, "bot_id": "B0TMINUS"});
            if let Some(t) = &m.thread_ts {
                v["thread_ts"] = t.clone().into();
            }
            if let (true, Some(meta)) = (with_metadata, &m.metadata) {
                v["metadata"] = meta.clone();
            }
            v
        })
        .collect();
    let next = if more {
        (offset + limit).to_string()
    } else {
        String::new()
    };
    json!({"ok": true, "messages": page, "has_more": more, "response_metadata": {"next_cursor": next}})
}

/// A request's arguments: the query string's and the body's. Returns
/// whether they came as strings (form or query) or as JSON.
fn arguments(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(Map<String, Value>, bool), Refusal> {
    let mut args = Map::new();
    let mut form = true;
    if let Some(q) = query {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|e| refuse("invalid_form_data", format!("query string: {e}")))?;
        args.extend(pairs.into_iter().map(|(k, v)| (k, Value::String(v))));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json") {
        form = false;
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => args.extend(o),
            Ok(_) => return Err(refuse("json_not_object", "the JSON body is not an object")),
            Err(e) => return Err(refuse("invalid_json", format!("the JSON body: {e}"))),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| refuse("invalid_form_data", format!("form body: {e}")))?;
        args.extend(pairs.into_iter().map(|(k, v)| (k, Value::String(v))));
    } else if !body.is_empty() {
        return Err(refuse(
            "invalid_post_type",
            format!("a body of type {content_type:?}"),
        ));
    }
    Ok((args, form))
}

/// Check a message payload against Block Kit's limits.
fn check_limits(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(text) = body["text"].as_str() {
        if text.chars().count() > 4000 {
            problems.push(format!("text is {} characters", text.chars().count()));
        }
    }
    // `blocks` may come as a JSON array or as a JSON-encoded string.
    let blocks = match &body["blocks"] {
        Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or_default(),
        other => other.clone(),
    };
    let blocks = blocks.as_array().cloned().unwrap_or_default();
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
    UrlPath(method): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let post = matches!(method.as_str(), "chat.postMessage" | "chat.update");
    let bot = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {BOT_TOKEN}"));
    let mut response = answer(&state, method, query, headers, body);
    if bot {
        // Slack names the token's scopes on every Web API answer.
        let granted = FakeSlack::granted(&lock(&state));
        if let Ok(v) = granted.parse() {
            response.headers_mut().insert("x-oauth-scopes", v);
        }
    }
    let hold = lock(&state)
        .hold_posts
        .filter(|_| post && response.status() == StatusCode::OK);
    if let Some(hold) = hold {
        // The call has taken effect; its answer waits. A client that dies
        // meanwhile never learns of it (this future is dropped with it).
        lock(&state).held += 1;
        let _release = Release(state.clone());
        tokio::time::sleep(hold).await;
    }
    response
}

/// The answer to one request.
fn answer(
    state: &Mutex<FakeState>,
    method: String,
    query: Option<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (check, value) = tminus::doctor::CHECK_HEADER;
    let setup = headers.get(check).and_then(|v| v.to_str().ok()) == Some(value);
    let parsed = arguments(&headers, query.as_deref(), &body);
    let body = match &parsed {
        Ok((args, _)) => Value::Object(args.clone()),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut st = lock(state);
    let refused = |st: &mut FakeState, method: String, body: Value, r: Refusal| {
        st.violations
            .push(format!("{method}: {} ({})", r.why, r.error));
        st.calls.push(Call {
            method,
            setup,
            body,
            status: 200,
            ts: None,
            error: Some(r.error.clone()),
        });
        Json(json!({
            "ok": false,
            "error": r.error,
            "response_metadata": {"messages": [format!("[ERROR] {}", r.why)]}
        }))
        .into_response()
    };
    // Slack answers an unknown method before it looks at the token.
    if !spec().contains_key(&method) {
        let r = refuse(
            "unknown_method",
            format!("{method} is not a method of Slack's Web API"),
        );
        return refused(&mut st, method, body, r);
    }
    if auth.is_empty() {
        let r = refuse("not_authed", "no Authorization header");
        return refused(&mut st, method, body, r);
    }
    let expected = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    if auth != format!("Bearer {expected}") {
        st.bad_token = true;
        st.calls.push(Call {
            method,
            setup,
            body,
            status: 200,
            ts: None,
            error: Some("invalid_auth".into()),
        });
        return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    let checked = parsed.and_then(|(args, form)| check_against_spec(&method, &args, form));
    if let Err(r) = checked {
        return refused(&mut st, method, body, r);
    }
    // Faults are for the calls that deliver; the set-up checks `serve`
    // makes at start (they only read) pass them by.
    let faulted = !setup;
    // A fault that lets the call take effect answers after it (below).
    let applied_then = match st.faults.front().filter(|_| faulted) {
        Some(Fault::AppliedThen(code)) => {
            let code = *code;
            st.faults.pop_front();
            Some(code)
        }
        _ => None,
    };
    if let Some(fault) = (applied_then.is_none() && faulted)
        .then(|| st.faults.pop_front())
        .flatten()
    {
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
            Fault::AppliedThen(_) => unreachable!("taken above"),
        };
        st.calls.push(Call {
            method,
            setup,
            body,
            status,
            ts: None,
            error: None,
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
            st.violations.extend(
                problems
                    .iter()
                    .map(|p| format!("{method}: {p} (invalid_blocks)")),
            );
            st.calls.push(Call {
                method,
                setup,
                body,
                status: 200,
                ts: None,
                error: Some("invalid_blocks".into()),
            });
            return Json(json!({"ok": false, "error": "invalid_blocks"})).into_response();
        }
    }
    let channel = body["channel"].as_str().unwrap_or_default().to_string();
    let (ts, answer) = match method.as_str() {
        "chat.postMessage" => {
            let n = st.next_ts;
            st.next_ts += 1;
            // Slack's ts is the message's time: the lookup reads from it.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let ts = format!("{now}.{n:06}");
            st.messages.push(Stored {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: body["thread_ts"].as_str().map(str::to_string),
                text: body["text"].clone(),
                blocks: body["blocks"].clone(),
                metadata: metadata_of(&body),
            });
            let answer = json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts, "text": body["text"]}});
            (Some(ts), answer)
        }
        "conversations.history" | "conversations.replies" => (None, history(&st, &method, &body)),
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or_default().to_string();
            let meta = metadata_of(&body);
            if let Some(m) = st
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            {
                m.text = body["text"].clone();
                m.blocks = body["blocks"].clone();
                if meta.is_some() {
                    m.metadata = meta;
                }
            }
            let answer = json!({"ok": true, "channel": channel, "ts": ts, "text": body["text"], "message": {"text": body["text"]}});
            (Some(ts), answer)
        }
        "chat.postEphemeral" => (None, json!({"ok": true, "message_ts": "1700000000.999999"})),
        "auth.test" => (
            None,
            json!({"ok": true, "url": "https://acme.slack.com/", "team": "Acme", "user": BOT_USER,
                   "team_id": "T0TEAM", "user_id": "U0TMINUS", "bot_id": "B0TMINUS", "is_enterprise_install": false}),
        ),
        "conversations.info" => {
            let withheld = |s: &str| st.withheld_scopes.contains(s);
            let answer = if withheld("channels:read") && withheld("groups:read") {
                json!({"ok": false, "error": "missing_scope", "needed": "channels:read,groups:read,im:read,mpim:read", "provided": FakeSlack::granted(&st)})
            } else {
                match st.channels.get(&channel).copied() {
                    Some(Channel::Missing) => json!({"ok": false, "error": "channel_not_found"}),
                    how => json!({"ok": true, "channel": {
                        "id": channel, "name": format!("ch-{}", channel.to_lowercase()),
                        "is_channel": true, "is_private": false,
                        "is_archived": how == Some(Channel::Archived),
                        "is_member": how != Some(Channel::WithoutTheBot),
                    }}),
                }
            };
            (None, answer)
        }
        "users.info" => {
            let user = body["user"].as_str().unwrap_or_default().to_string();
            let answer = if st.withheld_scopes.contains("users:read") {
                json!({"ok": false, "error": "missing_scope", "needed": "users:read", "provided": FakeSlack::granted(&st)})
            } else if st.unknown_users.contains(&user) {
                json!({"ok": false, "error": "user_not_found"})
            } else {
                json!({"ok": true, "user": {"id": user, "name": user.to_lowercase(), "deleted": false, "is_bot": false}})
            };
            (None, answer)
        }
        "conversations.open" => {
            // The document's check made `users` a string (or left it out
            // for `channel`): one user is a 1:1 DM, named after them here.
            let answer = match (body["users"].as_str(), body["channel"].as_str()) {
                (Some(users), _) if users.contains(',') => {
                    json!({"ok": true, "channel": {"id": format!("G{}", users.replace(',', ""))}})
                }
                (Some(user), _) => {
                    json!({"ok": true, "channel": {"id": format!("D{}", user.trim())}})
                }
                (None, Some(channel)) => json!({"ok": true, "channel": {"id": channel}}),
                (None, None) => json!({"ok": false, "error": "users_list_not_supplied"}),
            };
            (None, answer)
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
        // A documented method the fake has no answer for: loud, so that
        // the answer gets written here.
        _ => {
            st.violations
                .push(format!("{method}: the fake has no answer for it"));
            (
                None,
                json!({"ok": false, "error": "fake_slack_does_not_implement_this_method"}),
            )
        }
    };
    let error = answer["error"].as_str().map(str::to_string);
    st.calls.push(Call {
        method,
        setup,
        body,
        status: applied_then.unwrap_or(200),
        ts: ts.clone(),
        error,
    });
    if let Some(code) = applied_then {
        return (StatusCode::from_u16(code).unwrap(), "upstream trouble").into_response();
    }
    Json(answer).into_response()
}

/// Counts a held answer out when it is sent or its client is gone.
struct Release(Arc<Mutex<FakeState>>);

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.0).held -= 1;
    }
}

/// The fake itself: what it lets through and what it refuses, as Slack would.
mod checks {
    use super::*;

    async fn send(fake: &FakeSlack, method: &str, body: Body<'_>) -> Value {
        let http = reqwest::Client::new();
        let url = format!("{}/{method}", fake.api_url());
        let req = match body {
            Body::Json(v) => http.post(url).bearer_auth(BOT_TOKEN).json(&v),
            Body::Form(pairs) => http.post(url).bearer_auth(BOT_TOKEN).form(pairs),
            Body::NoToken(v) => http.post(url).json(&v),
        };
        req.send().await.unwrap().json().await.unwrap()
    }

    enum Body<'a> {
        Json(Value),
        Form(&'a [(&'a str, &'a str)]),
        NoToken(Value),
    }

    fn error(answer: &Value) -> &str {
        answer["error"].as_str().unwrap_or("ok")
    }

    #[test]
    fn the_document_is_read_as_slack_writes_it() {
        let spec = spec();
        let open = &spec["conversations.open"];
        assert_eq!(open.params["users"].kind, Kind::String);
        assert!(!open.params["users"].json);
        assert!(!open.params.contains_key("token"), "the token is a header");
        let post = &spec["chat.postMessage"];
        assert!(post.params["channel"].required);
        assert!(post.params["blocks"].json && post.params["attachments"].json);
        assert_eq!(post.params["unfurl_links"].kind, Kind::Boolean);
        assert!(spec["views.open"].params["view"].json);
        assert!(spec.contains_key("apps.connections.open"));
        assert!(!spec.contains_key("chat.postMessages"));
    }

    #[tokio::test]
    async fn requests_slack_would_refuse_are_refused_with_slacks_error() {
        let fake = FakeSlack::start().await;
        fake.expect_violations();
        let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]);
        let cases: Vec<(&str, Body, &str)> = vec![
            // The bug this check was written for.
            (
                "conversations.open",
                Body::Json(json!({"users": ["U0EMEKA"]})),
                "users_list_not_supplied",
            ),
            (
                "conversations.open",
                Body::Json(json!({})),
                "users_list_not_supplied",
            ),
            (
                "chat.postMessages",
                Body::Json(json!({"channel": "C1"})),
                "unknown_method",
            ),
            (
                "chat.postMessage",
                Body::Json(json!({"text": "hi"})),
                "channel_not_found",
            ),
            (
                "chat.postMessage",
                Body::Json(json!({"channel": "C1", "text": "hi", "colour": "red"})),
                "invalid_arg_name",
            ),
            (
                "chat.postMessage",
                Body::Json(json!({"channel": "C1", "text": "hi", "token": BOT_TOKEN})),
                "invalid_arg_name",
            ),
            (
                "chat.postMessage",
                Body::Json(json!({"channel": ["C1"], "text": "hi"})),
                "invalid_arguments",
            ),
            (
                "chat.postMessage",
                Body::Json(json!({"channel": "C1", "text": "hi", "unfurl_links": "yes"})),
                "invalid_arguments",
            ),
            (
                "chat.postMessage",
                Body::Json(json!({"channel": "C1", "blocks": "not json"})),
                "invalid_arguments",
            ),
            (
                "chat.postMessage",
                Body::Json(json!({"channel": "C1"})),
                "no_text",
            ),
            (
                "chat.update",
                Body::Json(json!({"channel": "C1", "text": "hi"})),
                "invalid_arguments",
            ),
            (
                "chat.postMessage",
                Body::NoToken(json!({"channel": "C1", "text": "hi"})),
                "not_authed",
            ),
            (
                "chat.postMessage",
                Body::Json(
                    json!({"channel": "C1", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]}),
                ),
                "invalid_blocks",
            ),
        ];
        let refused = cases.len();
        for (method, body, expected) in cases {
            let answer = send(&fake, method, body).await;
            assert_eq!(answer["ok"], false, "{method}: {answer}");
            assert_eq!(error(&answer), expected, "{method}: {answer}");
        }
        // What Slack takes: a string `users`, JSON blocks in a JSON body,
        // JSON-encoded strings and "true" in a form body, numbers as strings.
        let ok: Vec<(&str, Body)> = vec![
            (
                "conversations.open",
                Body::Json(json!({"users": "U0EMEKA"})),
            ),
            ("conversations.open", Body::Form(&[("users", "U0EMEKA")])),
            (
                "chat.postMessage",
                Body::Json(
                    json!({"channel": "C1", "text": "hi", "blocks": blocks, "unfurl_links": false}),
                ),
            ),
            (
                "chat.postMessage",
                Body::Form(&[
                    ("channel", "C1"),
                    (
                        "blocks",
                        r#"[{"type":"section","text":{"type":"mrkdwn","text":"hi"}}]"#,
                    ),
                    ("unfurl_links", "true"),
                ]),
            ),
            (
                "chat.update",
                Body::Json(json!({"channel": "C1", "ts": "1.2", "text": "hi"})),
            ),
        ];
        for (method, body) in ok {
            let answer = send(&fake, method, body).await;
            assert_eq!(answer["ok"], true, "{method}: {answer}");
        }
        let opened: Vec<Value> = fake
            .ok_calls("conversations.open")
            .iter()
            .map(|c| c.body["users"].clone())
            .collect();
        assert_eq!(opened, vec![json!("U0EMEKA"), json!("U0EMEKA")]);
        let violations = fake.violations();
        assert_eq!(violations.len(), refused, "{violations:#?}");
        assert!(
            violations[0].contains("conversations.open") && violations[0].contains("an array"),
            "{violations:#?}"
        );
    }

    #[tokio::test]
    async fn a_refused_request_fails_the_test_that_sent_it() {
        let fake = FakeSlack::start().await;
        let answer = send(
            &fake,
            "conversations.open",
            Body::Json(json!({"users": ["U0EMEKA"]})),
        )
        .await;
        assert_eq!(error(&answer), "users_list_not_supplied");
        let copy = fake.clone();
        drop(fake);
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(copy)));
        let message = dropped.expect_err("dropping the last handle fails the test");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("conversations.open") && message.contains("users_list_not_supplied"),
            "{message}"
        );
    }
}
