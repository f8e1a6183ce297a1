//! A fake Discord REST API on 127.0.0.1 for the tests: records every call,
//! answers as Discord does, can fail (5xx, 429 with `Retry-After` and
//! `X-RateLimit-*`) for a while, and refuses what Discord would.
//!
//! Every request is checked against Discord's OpenAPI document
//! ([`crate::openapi`]): the path must match one of its templates under
//! `/api/v10` (404 if none does, 405 if the method is not the path's), the
//! bot token must be there where the operation wants one (401), and path
//! parameters, query and JSON body must fit the operation's schemas (400
//! with Discord's 50035 "Invalid Form Body" and its nested `errors`).
//! Messages are also held to the limits Discord's docs give and the document
//! does not (2000 characters of content, 5 action rows, 6000 characters of
//! embeds, unique custom ids, non-empty labels).
//!
//! Message ids are snowflakes made from the time, as Discord's are. A post
//! with a `nonce` and `enforce_nonce: true` that repeats one the bot made in
//! the last few minutes gets back that message, not a new one; starting a
//! thread from a message twice is refused with code 160004. The fake can
//! hold its answers to posts ([`FakeDiscord::hold_posts`]): the message is
//! in the channel at once and its answer comes late, or never reaches a
//! client that died waiting.
//!
//! Each refusal is recorded in `violations`, and the test that sent it
//! fails: when the last handle on the fake is dropped with violations left,
//! the drop panics (unless the test is already panicking). A test that sends
//! bad requests on purpose takes them with [`FakeDiscord::take_violations`].
//! Keep the fake in the test's own task, so that panic is the test's.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::openapi::{self, Problem, Route};

pub const TOKEN: &str = "discord-test-token";
/// Where the fake serves the API, as Discord does (`https://discord.com/api/v10`).
pub const API_BASE: &str = "/api/v10";
pub const APP_ID: &str = "1100000000000000000";
/// The bot's user, its server and its role there.
pub const BOT_USER_ID: &str = "1100000000000000001";
pub const GUILD_ID: &str = "1200000000000000000";
pub const BOT_ROLE_ID: &str = "1200000000000000001";
const OWNER_ID: &str = "1200000000000000002";

/// How a channel looks to `GET /channels/{id}`, when not as expected; any
/// other id is a text channel of [`GUILD_ID`] the bot may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// 404, Unknown Channel.
    Missing,
    /// 403, Missing Access: the bot may not see it.
    Hidden,
    /// A voice channel.
    Voice,
    /// `@everyone` is denied these permission bits in it.
    Denied(u64),
}

/// The application and server as the tests set them up.
struct World {
    verify_key: String,
    interactions_url: Option<String>,
    bot_role_permissions: u64,
    bot_in_guild: bool,
    channels: std::collections::HashMap<String, Channel>,
    unknown_users: HashSet<String>,
    /// Registered commands by route (global or one guild's).
    commands: std::collections::HashMap<String, Value>,
}

impl Default for World {
    fn default() -> World {
        World {
            verify_key: crate::fakes::discord_public_key(),
            interactions_url: Some("https://tminus.example.com/discord/interactions".into()),
            bot_role_permissions: tminus::discord::invite::permissions().bits(),
            bot_in_guild: true,
            channels: Default::default(),
            unknown_users: HashSet::new(),
            commands: Default::default(),
        }
    }
}

fn discord_error(status: u16, code: u32, message: &str) -> (u16, Value) {
    (status, json!({"code": code, "message": message}))
}

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
    /// The id of the message created or edited.
    pub id: Option<String>,
    /// One of the set-up checks (`doctor`, and `serve` at start), as the
    /// header they carry says.
    pub setup: bool,
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
            .strip_prefix(API_BASE)?
            .strip_prefix("/channels/")?
            .split('/')
            .next()
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Status(u16),
    RateLimited {
        retry_after_secs: f64,
    },
    /// The call takes effect (a post is in the channel), then the answer
    /// is this HTTP status instead of the result.
    AppliedThen(u16),
}

/// A message in a channel.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: String,
    pub channel: String,
    /// The content as last posted or edited.
    pub content: Value,
    pub nonce: Option<String>,
    made: std::time::Instant,
}

/// How long Discord remembers a nonce: "the past few minutes".
const NONCE_WINDOW: std::time::Duration = std::time::Duration::from_secs(180);
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    faults: VecDeque<Fault>,
    last_id: u64,
    violations: Vec<String>,
    bad_token: bool,
    messages: Vec<Stored>,
    /// Messages a thread was started from.
    threads: HashSet<String>,
    hold_posts: Option<std::time::Duration>,
    held: usize,
    world: World,
}

impl FakeState {
    /// A new snowflake: milliseconds since Discord's epoch in the top 42
    /// bits, a sequence below, always increasing.
    fn snowflake(&mut self) -> String {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let id = ((ms - DISCORD_EPOCH_MS) << 22).max(self.last_id + 1);
        self.last_id = id;
        id.to_string()
    }
}

#[derive(Clone)]
pub struct FakeDiscord {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    _guard: Arc<Guard>,
}

/// Fails the test when the last handle on the fake goes while Discord would
/// have refused something the bot sent.
struct Guard(Arc<Mutex<FakeState>>);

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let violations =
            std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).violations);
        assert!(
            violations.is_empty(),
            "Discord would have refused what the bot sent:\n{}",
            violations.join("\n")
        );
    }
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeDiscord {
            addr,
            _guard: Arc::new(Guard(state.clone())),
            state,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}{API_BASE}", self.addr)
    }

    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// The calls the bot made to do its work, in order: every call but
    /// the set-up checks `serve` makes at start ([`FakeDiscord::setup_calls`]).
    pub fn calls(&self) -> Vec<Call> {
        let all = self.state.lock().unwrap().calls.clone();
        all.into_iter().filter(|c| !c.setup).collect()
    }

    /// The set-up checks' calls, which only read.
    pub fn setup_calls(&self) -> Vec<Call> {
        let all = self.state.lock().unwrap().calls.clone();
        all.into_iter().filter(|c| c.setup).collect()
    }

    /// The application's public key, and where it sends interactions
    /// (`None`: over the gateway).
    pub fn set_application(&self, verify_key: &str, interactions_url: Option<&str>) {
        let world = &mut self.state.lock().unwrap().world;
        world.verify_key = verify_key.to_string();
        world.interactions_url = interactions_url.map(str::to_string);
    }

    /// Channel `id` looks like `how`.
    pub fn set_channel(&self, id: &str, how: Channel) {
        let world = &mut self.state.lock().unwrap().world;
        world.channels.insert(id.to_string(), how);
    }

    /// What the bot's role may do in the server.
    pub fn set_bot_role_permissions(&self, bits: u64) {
        self.state.lock().unwrap().world.bot_role_permissions = bits;
    }

    /// The bot was never added to the server.
    pub fn remove_bot_from_guild(&self) {
        self.state.lock().unwrap().world.bot_in_guild = false;
    }

    /// Discord knows no user `id`.
    pub fn forget_user(&self, id: &str) {
        self.state
            .lock()
            .unwrap()
            .world
            .unknown_users
            .insert(id.to_string());
    }

    /// Every message in Discord, in the order made — including those whose
    /// answer the bot never saw.
    pub fn messages(&self) -> Vec<Stored> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Hold the answer to every message post and edit for `hold`; `None`
    /// answers at once again.
    pub fn hold_posts(&self, hold: Option<std::time::Duration>) {
        self.state.lock().unwrap().hold_posts = hold;
    }

    /// Posts that took effect and whose answer is still held.
    pub fn held(&self) -> usize {
        self.state.lock().unwrap().held
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// The violations so far, which the test then answers for: for tests
    /// that send bad requests on purpose.
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().violations)
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

/// A problem at a path of field names and indexes.
fn problem(path: &[&dyn ToString], code: &'static str, message: impl Into<String>) -> Problem {
    let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
    Problem::new(&path, code, message)
}

/// The limits Discord's docs set on a message (create, edit, or an
/// interaction's message) beyond what the document says.
fn check_limits(body: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let too_long = |max: usize| format!("Must be {max} or fewer in length.");
    if len(&body["content"]) > 2000 {
        problems.push(problem(
            &[&"content"],
            "BASE_TYPE_MAX_LENGTH",
            too_long(2000),
        ));
    }
    let embeds = body["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.len() > 10 {
        problems.push(problem(&[&"embeds"], "BASE_TYPE_MAX_LENGTH", too_long(10)));
    }
    let mut total = 0;
    for (i, e) in embeds.iter().enumerate() {
        for (field, value, max) in [
            ("title", &e["title"], 256),
            ("description", &e["description"], 4096),
            ("footer", &e["footer"]["text"], 2048),
        ] {
            let n = len(value);
            if n > max {
                problems.push(problem(
                    &[&"embeds", &i, &field],
                    "BASE_TYPE_MAX_LENGTH",
                    too_long(max),
                ));
            }
            total += n;
        }
    }
    if total > 6000 {
        problems.push(problem(
            &[&"embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            format!("Embed size exceeds maximum size of 6000 ({total})"),
        ));
    }
    let rows = body["components"].as_array().cloned().unwrap_or_default();
    if rows.len() > 5 {
        problems.push(problem(
            &[&"components"],
            "BASE_TYPE_MAX_LENGTH",
            too_long(5),
        ));
    }
    let mut ids = HashSet::new();
    for (r, row) in rows.iter().enumerate() {
        let buttons = row["components"].as_array().cloned().unwrap_or_default();
        if row["type"] != 1 || buttons.is_empty() || buttons.len() > 5 {
            problems.push(problem(
                &[&"components", &r],
                "COMPONENT_LAYOUT_INVALID",
                format!(
                    "An action row of 1 to 5 buttons, not {} components.",
                    buttons.len()
                ),
            ));
        }
        for (b, button) in buttons.iter().enumerate() {
            let id = button["custom_id"].as_str().unwrap_or_default();
            if id.is_empty() || id.chars().count() > 100 || !ids.insert(id.to_string()) {
                problems.push(problem(
                    &[&"components", &r, &"components", &b, &"custom_id"],
                    "COMPONENT_CUSTOM_ID_INVALID",
                    format!(
                        "A custom id of 1 to 100 characters used once per message, not {id:?}."
                    ),
                ));
            }
            let label = len(&button["label"]);
            if label == 0 || label > 80 {
                problems.push(problem(
                    &[&"components", &r, &"components", &b, &"label"],
                    "BASE_TYPE_BAD_LENGTH",
                    format!("Must be between 1 and 80 in length, not {label}."),
                ));
            }
        }
    }
    problems
}

/// Add the limits' problems the schema did not already find.
fn merge(problems: &mut Vec<Problem>, limits: Vec<Problem>) {
    for p in limits {
        if !problems
            .iter()
            .any(|q| q.path == p.path && q.code == p.code)
        {
            problems.push(p);
        }
    }
}

/// What Discord would refuse in an interaction's answer: the body of
/// `create_interaction_response`, whether the bot gives it as the HTTP
/// endpoint's response or posts it to the callback from the gateway.
pub fn answer_problems(answer: &Value) -> Vec<String> {
    let doc = openapi::discord();
    let Route::Found(op) = doc.route("POST", "/interactions/1/token/callback") else {
        panic!("Discord's document has no interaction callback")
    };
    let schema = op
        .body_schema("application/json")
        .expect("the callback takes JSON");
    let mut problems = doc.validate(schema, answer);
    if matches!(answer["type"].as_u64(), Some(4 | 7)) {
        let limits = check_limits(&answer["data"]).into_iter().map(|mut p| {
            p.path.insert(0, "data".into());
            p
        });
        merge(&mut problems, limits.collect());
    }
    problems.iter().map(|p| p.to_string()).collect()
}

/// Fail unless Discord would take `answer` as an interaction's answer.
pub fn assert_valid_answer(answer: &Value) {
    let problems = answer_problems(answer);
    assert!(
        problems.is_empty(),
        "Discord would refuse this interaction answer: {problems:#?}\n{answer}"
    );
}

/// Record a refused call and answer it.
fn refuse(
    st: &mut FakeState,
    mut call: Call,
    status: u16,
    answer: Value,
    violations: Vec<String>,
) -> Response {
    st.violations.extend(violations);
    call.status = status;
    st.calls.push(call);
    (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let path = uri.path();
    let is_post = (method == Method::POST && path.ends_with("/messages"))
        || (method == Method::PATCH && path.contains("/messages/"));
    let response = answer(&state, method, uri, headers, bytes);
    let hold = state
        .lock()
        .unwrap()
        .hold_posts
        .filter(|_| is_post && response.status().is_success());
    if let Some(hold) = hold {
        // The call has taken effect; its answer waits. A client that dies
        // meanwhile never learns of it (this future is dropped with it).
        state.lock().unwrap().held += 1;
        let _release = Release(state.clone());
        tokio::time::sleep(hold).await;
    }
    response
}

/// Counts a held answer out when it is sent or its client is gone.
struct Release(Arc<Mutex<FakeState>>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).held -= 1;
    }
}

/// The answer to one request.
fn answer(
    state: &Mutex<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let mut call = Call {
        method: method.to_string(),
        path: uri.path().to_string(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        status: 0,
        id: None,
        setup: false,
    };
    let what = format!("{} {}", call.method, call.path);
    let mut st = state.lock().unwrap();
    let doc = openapi::discord();
    let route = match call.path.strip_prefix(API_BASE) {
        Some(rest) => doc.route(&call.method, rest),
        None => Route::NoSuchPath,
    };
    let not_found = json!({"message": "404: Not Found", "code": 0});
    let op = match route {
        Route::Found(op) => op,
        Route::NoSuchPath => {
            let why = format!("{what}: no such route in Discord's API");
            return refuse(&mut st, call, 404, not_found, vec![why]);
        }
        Route::NoSuchMethod(template) => {
            let why = format!("{what}: {template} has no {method}");
            let answer = json!({"message": "405: Method Not Allowed", "code": 0});
            return refuse(&mut st, call, 405, answer, vec![why]);
        }
    };
    let what = format!("{what} ({})", op.id);
    let (name, value) = tminus::doctor::CHECK_HEADER;
    call.setup = headers.get(name).and_then(|v| v.to_str().ok()) == Some(value);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let token_ok = match auth {
        Some(auth) => auth == format!("Bot {TOKEN}"),
        None => !op.needs_auth(),
    };
    if !token_ok {
        st.bad_token = true;
        let answer = json!({"message": "401: Unauthorized", "code": 0});
        let why = format!("{what}: no bot token, or not the bot's");
        return refuse(&mut st, call, 401, answer, vec![why]);
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let (body, mut problems) = op.check_body(content_type, &bytes);
    call.body = body;
    problems.extend(op.check_path());
    problems.extend(op.check_query(uri.query().unwrap_or_default()));
    if matches!(op.id, "create_message" | "update_message") {
        merge(&mut problems, check_limits(&call.body));
    }
    if !problems.is_empty() {
        let answer = json!({
            "code": 50035,
            "message": "Invalid Form Body",
            "errors": openapi::errors_json(&problems),
        });
        let why = problems.iter().map(|p| format!("{what}: {p}")).collect();
        return refuse(&mut st, call, 400, answer, why);
    }
    // Faults are for the calls that deliver; the set-up checks `serve`
    // makes at start (they only read) pass them by.
    let faulted = !call.setup;
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
            Fault::AppliedThen(_) => unreachable!("taken above"),
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
        call.status = status;
        st.calls.push(call);
        return response;
    }
    let param = |name: &str| op.params.get(name).cloned().unwrap_or_default();
    let body = &call.body;
    // The answer's body; `None` for 204 No Content.
    let (id, answer): (Option<String>, Option<Value>) = match op.id {
        "create_message" => {
            let channel = param("channel_id");
            let nonce = match &body["nonce"] {
                Value::String(n) => Some(n.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            // enforce_nonce: the same author's nonce within the window
            // returns the message made then.
            let repeated = match (&nonce, body["enforce_nonce"] == true) {
                (Some(n), true) => st
                    .messages
                    .iter()
                    .rfind(|m| m.nonce.as_ref() == Some(n) && m.made.elapsed() < NONCE_WINDOW)
                    .cloned(),
                _ => None,
            };
            let message = match repeated {
                Some(m) => m,
                None => {
                    let m = Stored {
                        id: st.snowflake(),
                        channel: channel.clone(),
                        content: body.clone(),
                        nonce: nonce.clone(),
                        made: std::time::Instant::now(),
                    };
                    st.messages.push(m.clone());
                    m
                }
            };
            let answer = json!({
                "id": message.id,
                "channel_id": message.channel,
                "content": message.content["content"],
                "nonce": message.nonce,
            });
            (Some(message.id), Some(answer))
        }
        "update_message" => {
            let id = param("message_id");
            if let Some(m) = st.messages.iter_mut().find(|m| m.id == id) {
                m.content = body.clone();
            }
            let answer =
                json!({"id": id, "channel_id": param("channel_id"), "content": body["content"]});
            (Some(id), Some(answer))
        }
        // The thread started from a message has the message's id; a
        // second start is refused with Discord's 160004.
        "create_thread_from_message" => {
            let message = param("message_id");
            if !st.threads.insert(message.clone()) {
                let answer = json!({"message": "A thread has already been created for this message", "code": 160004});
                call.status = 400;
                st.calls.push(call);
                return (StatusCode::BAD_REQUEST, Json(answer)).into_response();
            }
            (
                None,
                Some(
                    json!({"id": message, "parent_id": param("channel_id"), "type": 11, "name": body["name"]}),
                ),
            )
        }
        "create_dm" => {
            let user = body["recipient_id"].as_str().unwrap_or("0");
            let channel = format!("9{}", &user[user.len().saturating_sub(17)..]);
            (None, Some(json!({"id": channel, "type": 1})))
        }
        "bulk_set_application_commands" | "bulk_set_guild_application_commands" => {
            st.world.commands.insert(call.path.clone(), body.clone());
            (None, Some(body.clone()))
        }
        "list_application_commands" | "list_guild_application_commands" => {
            let list = st.world.commands.get(&call.path).cloned();
            (None, Some(list.unwrap_or_else(|| json!([]))))
        }
        "get_my_user" => (
            None,
            Some(json!({
                "id": BOT_USER_ID, "username": "tminus", "discriminator": "0", "global_name": null,
                "avatar": null, "bot": true, "flags": 0, "public_flags": 0,
            })),
        ),
        "get_my_oauth2_application" => (
            None,
            Some(json!({
                "id": APP_ID, "name": "tminus", "description": "", "icon": null, "bot_public": true,
                "bot_require_code_grant": false, "verify_key": st.world.verify_key,
                "interactions_endpoint_url": st.world.interactions_url, "flags": 0,
            })),
        ),
        "get_channel" | "get_guild" | "get_guild_member" | "get_user" => {
            let (status, answer) = world_answer(&st.world, op.id, &param);
            if status != 200 {
                call.status = status;
                st.calls.push(call);
                return (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response();
            }
            (None, Some(answer))
        }
        "create_interaction_response" => (None, None),
        other => {
            let why = format!("{what}: the fake does not serve {other} ({})", op.template);
            return refuse(&mut st, call, 404, not_found, vec![why]);
        }
    };
    let status = match answer {
        Some(_) => op.success_status(),
        None => 204,
    };
    call.status = applied_then.unwrap_or(status);
    call.id = id;
    st.calls.push(call);
    if let Some(code) = applied_then {
        return (StatusCode::from_u16(code).unwrap(), "upstream trouble").into_response();
    }
    match answer {
        Some(answer) => (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The server, its channels, members and users, as `GET` shows them.
fn world_answer(world: &World, op: &str, param: &dyn Fn(&str) -> String) -> (u16, Value) {
    match op {
        "get_channel" => {
            let id = param("channel_id");
            let how = world.channels.get(&id).copied();
            let mut overwrites = Vec::new();
            // A bot outside the server sees none of its channels.
            let how = if world.bot_in_guild {
                how
            } else {
                Some(Channel::Hidden)
            };
            match how {
                Some(Channel::Missing) => return discord_error(404, 10003, "Unknown Channel"),
                Some(Channel::Hidden) => return discord_error(403, 50001, "Missing Access"),
                Some(Channel::Denied(bits)) => overwrites.push(
                    json!({"id": GUILD_ID, "type": 0, "allow": "0", "deny": bits.to_string()}),
                ),
                Some(Channel::Voice) | None => {}
            }
            let kind = if how == Some(Channel::Voice) { 2 } else { 0 };
            (
                200,
                json!({
                    "id": id, "type": kind, "guild_id": GUILD_ID, "name": format!("ch-{}", &id[id.len().saturating_sub(4)..]),
                    "position": 0, "permission_overwrites": overwrites, "nsfw": false, "parent_id": null,
                    "last_message_id": null, "flags": 0,
                }),
            )
        }
        "get_guild" => (
            200,
            json!({
                "id": param("guild_id"), "name": "Acme", "icon": null, "owner_id": OWNER_ID,
                "roles": [
                    {"id": param("guild_id"), "name": "@everyone", "permissions": "3072", "position": 0,
                     "color": 0, "hoist": false, "managed": false, "mentionable": false, "flags": 0},
                    {"id": BOT_ROLE_ID, "name": "tminus", "permissions": world.bot_role_permissions.to_string(),
                     "position": 1, "color": 0, "hoist": false, "managed": true, "mentionable": false, "flags": 0},
                ],
            }),
        ),
        "get_guild_member" => {
            let user = param("user_id");
            let bot = user == BOT_USER_ID;
            if (bot && !world.bot_in_guild) || world.unknown_users.contains(&user) {
                return discord_error(404, 10007, "Unknown Member");
            }
            let roles = if bot { vec![BOT_ROLE_ID] } else { Vec::new() };
            (
                200,
                json!({
                    "user": {"id": user, "username": if bot { "tminus" } else { "someone" }, "bot": bot},
                    "roles": roles, "joined_at": "2026-01-01T00:00:00.000000+00:00",
                    "deaf": false, "mute": false, "flags": 0, "pending": false,
                }),
            )
        }
        _ => {
            let id = param("user_id");
            if world.unknown_users.contains(&id) {
                return discord_error(404, 10013, "Unknown User");
            }
            (
                200,
                json!({"id": id, "username": format!("user{}", &id[id.len().saturating_sub(4)..]), "discriminator": "0", "avatar": null}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's content type and body.
    type Body = Option<(&'static str, String)>;

    async fn send(
        fake: &FakeDiscord,
        method: &str,
        path: &str,
        token: bool,
        body: Body,
    ) -> (u16, Value) {
        let url = format!("http://{}{path}", fake.addr);
        let mut req = reqwest::Client::new().request(method.parse().unwrap(), url);
        if token {
            req = req.header("authorization", format!("Bot {TOKEN}"));
        }
        if let Some((content_type, body)) = body {
            req = req.header("content-type", content_type).body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn json_body(v: Value) -> Body {
        Some(("application/json", v.to_string()))
    }

    #[tokio::test]
    async fn refuses_what_discord_would_and_records_it() {
        let fake = FakeDiscord::start().await;
        let messages = "/api/v10/channels/1100000000000000010/messages";
        let ok = json!({"content": "", "embeds": [{"title": "t"}], "components": [],
                        "allowed_mentions": {"parse": ["users"]}});
        let (status, posted) = send(&fake, "POST", messages, true, json_body(ok.clone())).await;
        assert_eq!(status, 200, "{posted}");
        let edit = format!("{messages}/{}", posted["id"].as_str().unwrap());
        assert_eq!(
            send(&fake, "PATCH", &edit, true, json_body(ok)).await.0,
            200
        );
        let threads = format!("{edit}/threads");
        let (status, _) = send(
            &fake,
            "POST",
            &threads,
            true,
            json_body(json!({"name": "n", "auto_archive_duration": 60})),
        )
        .await;
        assert_eq!(status, 201, "Discord answers a new thread with 201");
        // The interaction callback wants no token and answers 204.
        let callback = "/api/v10/interactions/1100000000000000011/tok/callback";
        assert_eq!(
            send(
                &fake,
                "POST",
                callback,
                false,
                json_body(json!({"type": 6}))
            )
            .await
            .0,
            204
        );
        assert_eq!(fake.violations(), Vec::<String>::new());

        let cases: Vec<(&str, String, bool, Body, u16)> = vec![
            (
                "POST",
                "/api/v10/channels/1/massages".into(),
                true,
                json_body(json!({})),
                404,
            ),
            (
                "POST",
                "/channels/1/messages".into(),
                true,
                json_body(json!({})),
                404,
            ),
            ("PUT", edit.clone(), true, json_body(json!({})), 405),
            (
                "POST",
                "/api/v10/users/@me/channels".into(),
                false,
                json_body(json!({"recipient_id": "1"})),
                401,
            ),
            (
                "POST",
                messages.into(),
                true,
                json_body(json!({"embeds": [{"title": "t".repeat(257)}], "allowed_mention": {}})),
                400,
            ),
            (
                "POST",
                messages.into(),
                true,
                json_body(json!({"content": "c".repeat(2001)})),
                400,
            ),
            (
                "POST",
                "/api/v10/channels/general/messages".into(),
                true,
                json_body(json!({"content": "x"})),
                400,
            ),
            (
                "POST",
                threads.clone(),
                true,
                json_body(json!({"auto_archive_duration": 1440})),
                400,
            ),
            (
                "POST",
                format!("{messages}?wait=true"),
                true,
                json_body(json!({"content": "x"})),
                400,
            ),
            (
                "POST",
                messages.into(),
                true,
                Some(("multipart/form-data; boundary=b", "--b--".into())),
                400,
            ),
            (
                "POST",
                messages.into(),
                true,
                Some(("application/json", "{nope".into())),
                400,
            ),
            (
                "POST",
                callback.into(),
                false,
                json_body(json!({"type": 4, "data": {"content": "c".repeat(2001)}})),
                400,
            ),
            // A route of Discord's that the fake does not serve.
            ("GET", "/api/v10/gateway/bot".into(), true, None, 404),
        ];
        let mut answers = Vec::new();
        for (method, path, token, body, want) in cases {
            let (status, answer) = send(&fake, method, &path, token, body).await;
            assert_eq!(status, want, "{method} {path}: {answer}");
            answers.push(answer);
        }
        assert_eq!(answers[0], json!({"message": "404: Not Found", "code": 0}));
        assert_eq!(
            answers[2],
            json!({"message": "405: Method Not Allowed", "code": 0})
        );
        assert_eq!(answers[4]["code"], 50035);
        assert_eq!(answers[4]["message"], "Invalid Form Body");
        assert_eq!(
            answers[4]["errors"]["embeds"]["0"]["title"]["_errors"][0]["code"],
            "BASE_TYPE_MAX_LENGTH"
        );
        assert_eq!(
            answers[4]["errors"]["allowed_mention"]["_errors"][0]["code"],
            "UNKNOWN_FIELD"
        );
        assert_eq!(
            answers[6]["errors"]["channel_id"]["_errors"][0]["code"],
            "NUMBER_TYPE_COERCE"
        );
        assert_eq!(
            answers[7]["errors"]["name"]["_errors"][0]["code"],
            "BASE_TYPE_REQUIRED"
        );
        assert!(fake.saw_a_bad_token());
        let violations = fake.take_violations();
        let expect = [
            "massages: no such route",
            "POST /channels/1/messages: no such route",
            "has no PUT",
            "no bot token",
            "embeds.0.title: BASE_TYPE_MAX_LENGTH",
            "allowed_mention: UNKNOWN_FIELD",
            "content: BASE_TYPE_MAX_LENGTH Must be 2000",
            "channel_id: NUMBER_TYPE_COERCE",
            "name: BASE_TYPE_REQUIRED",
            "wait: UNKNOWN_FIELD",
            "the fake checks JSON bodies only",
            "JSON_INVALID",
            "data.content: BASE_TYPE_MAX_LENGTH",
            "does not serve get_bot_gateway",
        ];
        for e in expect {
            assert!(
                violations.iter().any(|v| v.contains(e)),
                "{e:?} not in {violations:#?}"
            );
        }
        assert_eq!(violations.len(), expect.len(), "{violations:#?}");
        let refused = fake.calls().iter().filter(|c| c.status >= 400).count();
        assert_eq!(refused, 13, "every refusal is recorded as a call");
    }

    #[tokio::test]
    #[should_panic(expected = "Discord would have refused what the bot sent")]
    async fn a_test_whose_bot_sent_a_bad_request_fails() {
        let fake = FakeDiscord::start().await;
        let body = json_body(json!({"content": "x", "embed": {}}));
        let (status, _) = send(&fake, "POST", "/api/v10/channels/1/messages", true, body).await;
        assert_eq!(status, 400);
        drop(fake);
    }

    #[test]
    fn interaction_answers_are_checked_too() {
        assert_eq!(answer_problems(&json!({"type": 1})), Vec::<String>::new());
        assert_eq!(answer_problems(&json!({"type": 6})), Vec::<String>::new());
        let modal = |title: &str| {
            json!({"type": 9, "data": {"custom_id": "c", "title": title, "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": "reason", "label": "Why?", "style": 2}]}]}})
        };
        assert_eq!(
            answer_problems(&modal("Give a reason")),
            Vec::<String>::new()
        );
        let problems = answer_problems(&modal(&"t".repeat(46)));
        assert!(
            problems[0].contains("data.title: BASE_TYPE_MAX_LENGTH"),
            "{problems:?}"
        );
        assert!(!answer_problems(&json!({"type": 3})).is_empty());
        let problems = answer_problems(&json!({"type": 4, "data": {"content": "x", "flag": 64}}));
        assert!(
            problems[0].contains("data.flag: UNKNOWN_FIELD"),
            "{problems:?}"
        );
    }
}
