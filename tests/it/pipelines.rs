//! Items that start a pipeline, end to end: a fake CI server inside the
//! suite, a hook in the bot file pointing at it, and a runbook item that
//! names the hook. CI starts the run through the API and reports the tests
//! done; a person in the item's role presses "Run"; the fake CI receives
//! the dispatch (its secret header from the environment, the placeholders
//! filled) and calls back with the one-time token; the run completes, and
//! the card and the report say who did what. Also: a restart between "Run"
//! and the callback loses nothing and calls the pipeline once; a pipeline
//! that never reports fails the item in the thread.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tminus::domain::{PersonId, Platform, RunId, RunStatus};
use tminus::store::Store;

use crate::fakes::Fake;
use crate::helpers::{config_with, slack_post, sqlite_db, ServeProcess};

const GITHUB_TOKEN: &str = "gh-pipeline-token-0123456789";
const CI_AUTH: &str = "Bearer fake-ci-dispatch-secret";
const SLACK_SECRET: &str = "exactly-once-secret";

/// What the fake CI received: each dispatch's headers and body.
#[derive(Clone, Default)]
struct FakeCi {
    dispatches: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    addr: String,
}

impl FakeCi {
    async fn start() -> FakeCi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut ci = FakeCi {
            addr: listener.local_addr().unwrap().to_string(),
            ..FakeCi::default()
        };
        let app = Router::new()
            .route("/repos/acme/shop/dispatches", post(dispatch))
            .with_state(ci.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ci.addr = format!("http://{}", ci.addr);
        ci
    }

    fn dispatches(&self) -> Vec<(HeaderMap, Value)> {
        self.dispatches.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Value)> {
        let start = Instant::now();
        loop {
            let got = self.dispatches();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no dispatch arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// GitHub's `workflow_dispatch` answers 204 with no body.
async fn dispatch(
    State(ci): State<FakeCi>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::http::StatusCode {
    ci.dispatches.lock().unwrap().push((headers, body));
    axum::http::StatusCode::NO_CONTENT
}

/// The bundled configuration plus a hook to the fake CI and a runbook
/// whose deploy item names it.
fn pipeline_config(ci: &FakeCi, timeout: &str) -> tempfile::TempDir {
    let hook = format!(
        r#"
[hooks.deploy-shop]
name = "Fake CI"
url = "{}/repos/acme/shop/dispatches"
headers = {{ Accept = "application/vnd.github+json" }}
headers_env = {{ Authorization = "TMINUS_FAKE_CI_AUTH" }}

[hooks.deploy-shop.body]
ref = "main"
inputs = {{ service = "{{{{service}}}}", version = "{{{{version}}}}", run = "{{{{run_id}}}}", callback_url = "{{{{callback_url}}}}", callback_token = "{{{{callback_token}}}}" }}
"#,
        ci.addr
    );
    let runbook = format!(
        r#"name = "Piped"
[[phases]]
id = "ship"
title = "Ship"
  [[phases.items]]
  id = "tests"
  text = "Tests pass on the release commit"

  [[phases.items]]
  id = "scan"
  text = "Security scan clean"

  [[phases.items]]
  id = "deploy"
  text = "Deploy to production"
  production_deploy = true
  run = "deploy-shop"
  roles = ["devops"]
  timeout = "{timeout}"
"#
    );
    config_with(&hook, &[("piped", &runbook)])
}

fn serve(dir: &std::path::Path, db_url: &str, fake: &Fake) -> ServeProcess {
    ServeProcess::start_with(
        dir,
        db_url,
        &fake.env(&[
            ("TMINUS_GITHUB_TOKEN", GITHUB_TOKEN),
            ("TMINUS_FAKE_CI_AUTH", CI_AUTH),
            ("TMINUS_WEB_SECRET", "pipeline-link-secret"),
            ("TMINUS_WEB_TOKEN", "pipeline-web-token"),
        ]),
    )
}

async fn api(serve: &ServeProcess, path: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(serve.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Every press is a new request (its own trigger id).
static PRESSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Click `action_id` on the Slack message `ts` as `person`.
async fn click(serve: &ServeProcess, person: &str, ts: &str, root: &str, action_id: &str) {
    let config = crate::helpers::config();
    let user = config.directory.people[&PersonId::new(person)]
        .slack
        .clone()
        .unwrap();
    let channel = &config.channels["slack"].deployments;
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": person, "team_id": "T0TEAM"},
        "api_app_id": "A0APP", "team": {"id": "T0TEAM"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": format!("trigger-{action_id}-{person}-{}", PRESSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        "channel": {"id": channel, "name": "deployments"},
        "message": {"type": "message", "ts": ts, "thread_ts": root, "text": "card"},
        "response_url": "https://hooks.slack.invalid/actions/1",
        "actions": [{"action_id": action_id, "block_id": "b1", "type": "button",
                     "action_ts": "1700000001.000001", "text": {"type": "plain_text", "text": "x"}}]
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    slack_post(
        &reqwest::Client::new(),
        serve,
        SLACK_SECRET,
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        body,
    )
    .await;
}

/// The phase card once it shows `text`: its message id (Slack's ts), its
/// place (Slack's thread ts; Discord's thread, a channel) and all its text
/// with its buttons.
async fn card_showing(fake: &Fake, text: &str) -> (String, String, String) {
    let start = Instant::now();
    loop {
        let cards: Vec<(String, String, String)> = match fake {
            Fake::Slack(f) => f
                .messages()
                .into_iter()
                .filter_map(|m| {
                    let all = crate::helpers::all_strings(&m.text)
                        + &crate::helpers::all_strings(&m.blocks);
                    Some((m.ts, m.thread_ts?, all))
                })
                .collect(),
            Fake::Discord(f) => f
                .messages()
                .into_iter()
                .map(|m| (m.id, m.channel, crate::helpers::all_strings(&m.content)))
                .collect(),
        };
        if let Some(found) = cards
            .into_iter()
            .find(|(_, _, all)| all.contains(text) && all.contains("Phase 1 of 1"))
        {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no card shows {text:?}: {:#?}",
            fake.shown()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Press button `id` on card `message` (in `place`) as `person`, on the
/// fake's platform.
async fn press(
    fake: &Fake,
    serve: &ServeProcess,
    person: &str,
    message: &str,
    place: &str,
    id: &str,
) {
    match fake {
        Fake::Slack(_) => click(serve, person, message, place, id).await,
        Fake::Discord(_) => discord_click(serve, person, message, place, id).await,
    }
}

/// A signed Discord button press (the key `Fake::env` gives serve).
async fn discord_click(serve: &ServeProcess, person: &str, message: &str, channel: &str, id: &str) {
    use ed25519_dalek::Signer;
    let config = crate::helpers::config();
    let user = config.directory.people[&PersonId::new(person)]
        .discord
        .clone()
        .unwrap();
    static NEXT: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(1_300_000_000_000_000_000);
    let interaction = NEXT
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let guild = "1100000000000000002";
    let payload = json!({
        "id": interaction, "application_id": crate::fake_discord::APP_ID, "type": 3,
        "token": "interaction-token", "version": 1, "guild_id": guild, "channel_id": channel,
        "channel": {"id": channel, "type": 11},
        "member": {
            "user": {"id": user, "username": person, "discriminator": "0", "global_name": null, "avatar": null},
            "roles": [], "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false,
            "flags": 0, "permissions": "2147483647"
        },
        "app_permissions": "442368", "locale": "en-US", "entitlements": [],
        "authorizing_integration_owners": {"0": guild}, "context": 0, "attachment_size_limit": 8388608,
        "data": {"component_type": 2, "custom_id": id},
        "message": {"id": message, "channel_id": channel}
    });
    let body = payload.to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let signature = key.sign(format!("{ts}{body}").as_bytes());
    let resp = reqwest::Client::new()
        .post(serve.url("/discord/interactions"))
        .header("content-type", "application/json")
        .header(
            "x-signature-ed25519",
            tminus::hex::encode(&signature.to_bytes()),
        )
        .header("x-signature-timestamp", ts)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// CI starts the run, reports the tests; Emeka presses "Run"; the fake CI
/// gets the dispatch and calls back done; with `restart`, serve is killed
/// between the press and the callback and started again.
async fn walk(platform: Platform, db: crate::helpers::TestDb, restart: bool) {
    let ci = FakeCi::start().await;
    let dir = pipeline_config(&ci, "10m");
    let fake = Fake::start(platform).await;
    let mut serve_a = serve(dir.path(), &db.url, &fake);
    fake.ready().await;

    let (status, started) = api(
        &serve_a,
        "/api/v1/runs",
        GITHUB_TOKEN,
        json!({"platform": platform.as_str(), "service": "shop", "version": "v5.0.0", "runbook": "piped"}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_i64().unwrap();
    for (item, logs) in [
        ("tests", "https://ci.example.com/runs/1"),
        ("scan", "https://ci.example.com/runs/3"),
    ] {
        let (status, body) = api(
            &serve_a,
            &format!("/api/v1/runs/{id}/items/ship/{item}"),
            GITHUB_TOKEN,
            json!({"status": "done", "url": logs}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    let (ts, root, card) = card_showing(&fake, "Security scan clean — GitHub Actions").await;
    assert!(
        card.contains("Tests pass on the release commit — GitHub Actions")
            && card.contains("logs: https://ci.example.com/runs/3"),
        "{card}"
    );
    assert!(
        card.contains(&format!("checklist.run:{id}:ship:deploy")),
        "a Run button: {card}"
    );
    assert!(card.contains("Run: Deploy to production"), "{card}");

    // Zoe is not in DevOps: refused, nothing called.
    press(
        &fake,
        &serve_a,
        "zoe",
        &ts,
        &root,
        &format!("checklist.run:{id}:ship:deploy"),
    )
    .await;
    press(
        &fake,
        &serve_a,
        "emeka",
        &ts,
        &root,
        &format!("checklist.run:{id}:ship:deploy"),
    )
    .await;
    let dispatched = ci.wait_for(1).await;
    let (headers, body) = &dispatched[0];
    assert_eq!(
        headers["authorization"], CI_AUTH,
        "the secret header from the environment"
    );
    assert_eq!(headers["accept"], "application/vnd.github+json");
    assert_eq!(headers["idempotency-key"], format!("tminus-call-1"));
    assert_eq!(body["ref"], "main");
    assert_eq!(body["inputs"]["service"], "shop");
    assert_eq!(body["inputs"]["version"], "v5.0.0");
    assert_eq!(body["inputs"]["run"], id.to_string());
    let callback = body["inputs"]["callback_url"].as_str().unwrap().to_string();
    assert!(
        callback.ends_with(&format!("/api/v1/runs/{id}/items/ship/deploy")),
        "{callback}"
    );
    let token = body["inputs"]["callback_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 64);

    let (_, _, card) = card_showing(&fake, "running in Fake CI").await;
    assert!(card.contains("started by Emeka Eze"), "{card}");
    assert!(
        !card.contains("checklist.run:"),
        "no Run button while it runs: {card}"
    );

    if restart {
        serve_a.kill();
        serve_a = serve(dir.path(), &db.url, &fake);
    }
    // The pipeline reports back with its one-time token, as the workflow's
    // `curl` does; the callback URL names this server's path.
    let path = format!("/api/v1/runs/{id}/items/ship/deploy");
    let (status, body) = api(&serve_a, &path, "not-the-token", json!({"status": "done"})).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api(
        &serve_a,
        &path,
        &token,
        json!({"status": "done", "url": "https://ci.example.com/runs/2"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["by"], "Fake CI");
    // Used: the token no longer opens anything.
    let (status, _) = api(&serve_a, &path, &token, json!({"status": "failed"})).await;
    assert_eq!(status, 401);

    let (ts, root, card) = card_showing(&fake, "Deploy to production — Fake CI").await;
    assert!(
        card.contains("logs: https://ci.example.com/runs/2"),
        "{card}"
    );
    press(
        &fake,
        &serve_a,
        "emeka",
        &ts,
        &root,
        &format!("phase.advance:{id}:ship"),
    )
    .await;

    let store = Store::connect(&db.url).await.unwrap();
    let start = Instant::now();
    let run = loop {
        let run = store.run(RunId(id)).await.unwrap().unwrap();
        if run.status == RunStatus::Completed {
            break run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the run never completed: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(run.t0.is_some(), "the deploy item set T0");
    // Called once, restart or not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ci.dispatches().len(), 1, "the pipeline was called once");

    let audit = store.audit_for_run(run.id).await.unwrap();
    let by = |action: &str| -> Vec<String> {
        audit
            .iter()
            .filter(|e| e.action == action)
            .map(|e| e.actor.clone())
            .collect()
    };
    assert_eq!(by("run.started"), ["GitHub Actions"]);
    assert_eq!(
        by("item.done"),
        ["GitHub Actions", "GitHub Actions", "Fake CI"]
    );
    assert_eq!(by("pipeline.started"), ["emeka"]);
    let report = crate::helpers::report_md(&serve_a, id, "pipeline-web-token").await;
    assert!(
        report.contains(
            "| Deploy to production | done ([logs](https://ci.example.com/runs/2)) | Fake CI |"
        ),
        "{report}"
    );
    assert!(report.contains("| Tests pass on the release commit | done ([logs](https://ci.example.com/runs/1)) | GitHub Actions |"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_item_runs_from_its_button_and_reports_back_on_slack() {
    walk(Platform::Slack, sqlite_db(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_item_runs_from_its_button_and_reports_back_on_discord() {
    walk(Platform::Discord, sqlite_db(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_run_and_the_callback_calls_the_pipeline_once() {
    for db in crate::helpers::all_dbs().await {
        walk(Platform::Slack, db, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_never_reports_fails_its_item_in_the_thread() {
    let ci = FakeCi::start().await;
    let dir = pipeline_config(&ci, "2s");
    let db = sqlite_db();
    let fake = Fake::start(Platform::Slack).await;
    let serve = serve(dir.path(), &db.url, &fake);
    let (_, started) = api(
        &serve,
        "/api/v1/runs",
        GITHUB_TOKEN,
        json!({"platform": "slack", "service": "shop", "version": "v6", "runbook": "piped"}),
    )
    .await;
    let id = started["id"].as_i64().unwrap();
    let (ts, root, _) = card_showing(&fake, "Deploy to production").await;
    press(
        &fake,
        &serve,
        "alice",
        &ts,
        &root,
        &format!("checklist.run:{id}:ship:deploy"),
    )
    .await;
    ci.wait_for(1).await;
    let (_, _, card) = card_showing(&fake, "Deploy to production — failed in Fake CI").await;
    assert!(card.contains("no report from Fake CI within"), "{card}");
    assert!(
        card.contains(&format!("checklist.run:{id}:ship:deploy")),
        "Run can be pressed again: {card}"
    );
    // The notice follows the card in the thread's lane.
    let start = Instant::now();
    while !fake
        .shown()
        .iter()
        .any(|m| m.text.contains("❌ Deploy to production failed in Fake CI"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the thread is never told"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Run again: a new call with a new token; the first token is dead.
    let first_token = ci.dispatches()[0].1["inputs"]["callback_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (ts, root, _) = card_showing(&fake, "failed in Fake CI").await;
    press(
        &fake,
        &serve,
        "alice",
        &ts,
        &root,
        &format!("checklist.run:{id}:ship:deploy"),
    )
    .await;
    let dispatched = ci.wait_for(2).await;
    let second_token = dispatched[1].1["inputs"]["callback_token"]
        .as_str()
        .unwrap();
    assert_ne!(second_token, first_token);
    let path = format!("/api/v1/runs/{id}/items/ship/deploy");
    let (status, _) = api(&serve, &path, &first_token, json!({"status": "done"})).await;
    assert_eq!(status, 401, "the first call's token no longer reports");
    let (status, body) = api(&serve, &path, second_token, json!({"status": "done"})).await;
    assert_eq!(status, 200, "{body}");
}

/// The shell plays the pipeline: `ci` reports as an integration or a hook
/// would, and pressing "Run" prints the call instead of making it.
#[test]
fn the_shell_plays_the_pipeline() {
    let ci = FakeCi {
        addr: "http://127.0.0.1:9".into(),
        ..FakeCi::default()
    };
    let dir = pipeline_config(&ci, "10m");
    let db = sqlite_db();
    let mut s = crate::helpers::ShellSession::start_with(&db.url, "emeka", dir.path());
    s.send("/deploy start shop v7 --runbook piped");
    let out = s.send("ci github 1 ship/tests done https://ci.example.com/runs/9 all green");
    assert!(
        out.contains("GitHub Actions reported ship/tests done."),
        "{out}"
    );
    assert!(
        out.contains("Tests pass on the release commit — GitHub Actions"),
        "the card shows it: {out}"
    );
    assert!(out.contains("logs: https://ci.example.com/runs/9"), "{out}");
    let out = s.press("Run: Deploy to production", None);
    assert!(
        out.contains("(pipeline call, not sent from the shell)"),
        "{out}"
    );
    assert!(
        out.contains("POST http://127.0.0.1:9/repos/acme/shop/dispatches"),
        "{out}"
    );
    assert!(
        out.contains("Authorization: (from $TMINUS_FAKE_CI_AUTH)"),
        "{out}"
    );
    assert!(out.contains("\"version\": \"v7\""), "{out}");
    assert!(out.contains("running in Fake CI"), "{out}");
    assert!(out.contains("started by Emeka Eze"), "{out}");
    let out = s.send("ci deploy-shop 1 ship/deploy done");
    assert!(out.contains("Fake CI reported ship/deploy done."), "{out}");
    assert!(out.contains("Deploy to production — Fake CI"), "{out}");
    let out = s.send("ci nobody 1 ship/deploy done");
    assert!(out.contains("No integration or hook `nobody`"), "{out}");
    let out = s.send("ci github 1 ship/deploy running");
    assert!(
        out.contains("Refused:") && out.contains("already done"),
        "{out}"
    );
    s.quit();
}
