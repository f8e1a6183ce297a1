//! Signed webhooks out, against the real `tminus serve`: an endpoint of the
//! bot file subscribed to every event receives what happens to a run and
//! its incident, in order, each event once under its id even when the
//! first attempts fail, and every request verifies with the published
//! Standard Webhooks package (PyPI `standardwebhooks`), an implementation
//! that is not ours.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tminus::domain::{PersonId, Platform};

use crate::fakes::Fake;
use crate::helpers::{config_with, slack_command, slack_post, sqlite_db, ServeProcess};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GITHUB_TOKEN: &str = "gh-webhook-test-token";
const SLACK_SECRET: &str = "exactly-once-secret";

/// What the receiver saw: every request, and how many to fail first.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, String, u16)>>>,
    fail_first: Arc<Mutex<usize>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let status = {
        let mut fail = r.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    };
    r.seen
        .lock()
        .unwrap()
        .push((headers, body, status.as_u16()));
    status
}

impl Receiver {
    async fn start(fail_first: usize) -> (Receiver, String) {
        let r = Receiver::default();
        *r.fail_first.lock().unwrap() = fail_first;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/tminus-events", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/tminus-events", post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    /// The events taken (2xx), in the order they came.
    fn taken(&self) -> Vec<(HeaderMap, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, s)| *s < 300)
            .map(|(h, b, _)| (h.clone(), b.clone()))
            .collect()
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_in_order_and_once() {
    let (receiver, url) = Receiver::start(2).await;
    let dir = config_with(
        &format!(
            r#"
[webhooks.audit]
url = "{url}"
secret_env = "TMINUS_AUDIT_WEBHOOK_SECRET"
events = ["run.started", "phase.advanced", "item.done", "run.completed", "run.aborted",
          "run.rolled_back", "incident.opened", "incident.acknowledged", "incident.resolved"]
"#
        ),
        &[],
    );
    let db = sqlite_db();
    let fake = Fake::start(Platform::Slack).await;
    let serve = ServeProcess::start_with(
        dir.path(),
        &db.url,
        &fake.env(&[
            ("TMINUS_AUDIT_WEBHOOK_SECRET", SECRET),
            ("TMINUS_GITHUB_TOKEN", GITHUB_TOKEN),
        ]),
    );
    let http = reqwest::Client::new();
    let started: Value = http
        .post(serve.url("/api/v1/runs"))
        .bearer_auth(GITHUB_TOKEN)
        .json(&json!({"platform": "slack", "service": "hello-app", "version": "v9", "runbook": "quickstart"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_i64().unwrap();
    for item in ["tests", "notes"] {
        let status = http
            .post(serve.url(&format!("/api/v1/runs/{id}/items/prepare/{item}")))
            .bearer_auth(GITHUB_TOKEN)
            .json(&json!({"status": "done"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    // Emeka moves the run on, opens an incident, and aborts.
    let config = crate::helpers::config();
    let user = config.directory.people[&PersonId::new("emeka")]
        .slack
        .clone()
        .unwrap();
    let channel = &config.channels["slack"].deployments;
    let action = format!("phase.advance:{id}:prepare");
    let payload = json!({
        "type": "block_actions", "user": {"id": user, "username": "emeka", "team_id": "T0TEAM"},
        "api_app_id": "A0APP", "team": {"id": "T0TEAM"},
        "container": {"type": "message", "message_ts": "1.1", "channel_id": channel, "is_ephemeral": false},
        "trigger_id": "advance-1", "channel": {"id": channel, "name": "deployments"},
        "message": {"type": "message", "ts": "1.1", "text": "card"},
        "response_url": "https://hooks.slack.invalid/actions/1",
        "actions": [{"action_id": action, "block_id": "b1", "type": "button",
                     "action_ts": "1700000001.000001", "text": {"type": "plain_text", "text": "x"}}]
    });
    slack_post(
        &http,
        &serve,
        SLACK_SECRET,
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap(),
    )
    .await;
    slack_command(
        &http,
        &serve,
        SLACK_SECRET,
        "emeka",
        "incident the database is slow --run 1",
    )
    .await;
    slack_command(
        &http,
        &serve,
        SLACK_SECRET,
        "emeka",
        "abort 1 webhook test over",
    )
    .await;

    let expected = [
        "run.started",
        "item.done",
        "item.done",
        "phase.advanced",
        "incident.opened",
        "run.aborted",
    ];
    let start = Instant::now();
    loop {
        let taken = receiver.taken();
        if taken.len() >= expected.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "events so far: {:?}",
            taken.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = receiver
        .taken()
        .into_iter()
        .chain(std::iter::empty())
        .collect::<Vec<_>>();
    let kinds: Vec<String> = taken
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<Value>(b).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, expected, "in order, each once");
    let ids: std::collections::BTreeSet<&str> =
        taken.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    assert_eq!(ids.len(), expected.len(), "one id per event");
    // The two refused attempts were the first event, tried again under its id.
    let all = receiver.seen.lock().unwrap().clone();
    assert_eq!(all[0].2, 500);
    assert_eq!(
        header(&all[0].0, "webhook-id"),
        header(&taken[0].0, "webhook-id")
    );
    assert_eq!(all[0].1, taken[0].1, "the same body on every retry");

    let first: Value = serde_json::from_str(&taken[0].1).unwrap();
    assert_eq!(first["data"]["run"]["service"], "hello-app");
    assert_eq!(first["data"]["by"], "GitHub Actions");
    let advanced: Value = serde_json::from_str(&taken[3].1).unwrap();
    assert_eq!(advanced["data"]["from"], "prepare");
    assert_eq!(advanced["data"]["by"], "Emeka Eze");
    let aborted: Value = serde_json::from_str(&taken[5].1).unwrap();
    assert_eq!(aborted["data"]["reason"], "webhook test over");

    verify_with_standardwebhooks(&all);
}

/// Every request the receiver saw, checked with the `standardwebhooks`
/// package: a signature made by anything but the secret fails there.
fn verify_with_standardwebhooks(seen: &[(HeaderMap, String, u16)]) {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("standardwebhooks is not installed; .ci/run installs it (pip)");
        }
        eprintln!(
            "standardwebhooks is not installed (pip install standardwebhooks): skipping that check"
        );
        return;
    }
    let cases: Vec<Value> = seen
        .iter()
        .map(|(h, body, _)| {
            json!({"body": body, "headers": {
                "webhook-id": header(h, "webhook-id"),
                "webhook-timestamp": header(h, "webhook-timestamp"),
                "webhook-signature": header(h, "webhook-signature"),
            }})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_string(&cases).unwrap()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, path = sys.argv[1], sys.argv[2]
wh = Webhook(secret)
cases = json.load(open(path))
for c in cases:
    wh.verify(c["body"], c["headers"])
# A tampered body must fail.
try:
    wh.verify(cases[0]["body"] + " ", cases[0]["headers"])
    sys.exit("a tampered body verified")
except Exception:
    pass
print(len(cases), "verified")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, SECRET])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused a request:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
}
