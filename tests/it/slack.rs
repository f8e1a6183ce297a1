//! Slack, end to end: the real `tminus serve` on port 0, a fake Slack Web
//! API on 127.0.0.1, and signed HTTP requests from several Slack users —
//! on SQLite and on PostgreSQL.

use std::sync::Arc;

use serde_json::{json, Value};
use tminus::config::Config;
use tminus::domain::Platform;
use tminus::slack::verify::sign;
use tminus::store::Store;

use crate::fake_slack::{Call, FakeSlack, Fault, BOT_TOKEN};
use crate::helpers::{all_dbs, config, sqlite_db, ServeProcess, TestDb};

const SECRET: &str = "test-signing-secret";

struct SlackEnv {
    fake: FakeSlack,
    serve: ServeProcess,
    http: reqwest::Client,
    config: Arc<Config>,
    db: TestDb,
    channel: String,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn slack_id(config: &Config, person: &str) -> String {
    config.directory.people[&tminus::domain::PersonId::new(person)]
        .slack
        .clone()
        .unwrap()
}

impl SlackEnv {
    async fn start(db: TestDb) -> SlackEnv {
        let fake = FakeSlack::start().await;
        let serve = ServeProcess::start(
            &db.url,
            &[
                ("SLACK_BOT_TOKEN", BOT_TOKEN.to_string()),
                ("SLACK_SIGNING_SECRET", SECRET.to_string()),
                ("SLACK_API_URL", fake.api_url()),
                ("TMINUS_DELIVERY_GIVE_UP", "5m".to_string()),
            ],
        );
        let config = config();
        let channel = config.channels["slack"].deployments.clone();
        SlackEnv {
            fake,
            serve,
            http: reqwest::Client::new(),
            config,
            db,
            channel,
        }
    }

    async fn post(
        &self,
        path: &str,
        body: &str,
        content_type: &str,
        headers: &[(&str, String)],
    ) -> (u16, String) {
        let mut req = self
            .http
            .post(self.serve.url(path))
            .header("content-type", content_type)
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.expect("request to tminus");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    async fn signed(&self, path: &str, body: &str, content_type: &str) -> (u16, String) {
        let ts = now_secs().to_string();
        let sig = sign(SECRET.as_bytes(), &ts, body.as_bytes());
        self.post(
            path,
            body,
            content_type,
            &[
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", sig),
            ],
        )
        .await
    }

    fn command_body(&self, person: &str, text: &str, trigger: &str) -> String {
        self.slash_body("/deploy", person, text, trigger)
    }

    fn slash_body(&self, command: &str, person: &str, text: &str, trigger: &str) -> String {
        serde_urlencoded::to_string([
            ("token", "legacy-unused"),
            ("team_id", "T0TEAM"),
            ("channel_id", self.channel.as_str()),
            ("user_id", &slack_id(&self.config, person)),
            ("command", command),
            ("text", text),
            ("response_url", "https://hooks.slack.invalid/commands/1"),
            ("trigger_id", trigger),
        ])
        .unwrap()
    }

    async fn command(&self, person: &str, text: &str, trigger: &str) -> Value {
        let body = self.command_body(person, text, trigger);
        let (status, text) = self
            .signed(
                "/slack/commands",
                &body,
                "application/x-www-form-urlencoded",
            )
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn interaction_body(payload: &Value) -> String {
        serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
    }

    /// Click a button on the message `ts`, as `person`.
    async fn click(
        &self,
        person: &str,
        message_ts: &str,
        root_ts: &str,
        action_id: &str,
        trigger: &str,
    ) {
        self.click_in(
            &self.channel,
            person,
            message_ts,
            root_ts,
            action_id,
            trigger,
        )
        .await
    }

    /// [`SlackEnv::click`], as Slack would send it from `channel`.
    async fn click_in(
        &self,
        channel: &str,
        person: &str,
        message_ts: &str,
        root_ts: &str,
        action_id: &str,
        trigger: &str,
    ) {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": slack_id(&self.config, person), "username": person, "team_id": "T0TEAM"},
            "api_app_id": "A0APP",
            "team": {"id": "T0TEAM"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": false},
            "trigger_id": trigger,
            "channel": {"id": channel, "name": "deployments"},
            "message": {"type": "message", "ts": message_ts, "thread_ts": root_ts, "text": "card"},
            "response_url": "https://hooks.slack.invalid/actions/1",
            "actions": [{"action_id": action_id, "block_id": "b1", "type": "button", "action_ts": "1700000001.000001",
                         "text": {"type": "plain_text", "text": "x"}}]
        });
        let (status, text) = self
            .signed(
                "/slack/interactions",
                &Self::interaction_body(&payload),
                "application/x-www-form-urlencoded",
            )
            .await;
        assert_eq!(status, 200, "{text}");
    }

    /// Submit the reason dialog the latest views.open showed.
    /// Submit the reason dialog that the `nth` views.open (counting from 1) showed.
    async fn submit_reason(&self, person: &str, reason: &str, nth: usize) {
        let dialogs = |c: &[Call]| {
            c.iter()
                .filter(|c| c.method == "views.open" && c.ok())
                .cloned()
                .collect::<Vec<_>>()
        };
        let opened = self
            .fake
            .wait_for("a reason dialog", |c| dialogs(c).len() >= nth)
            .await;
        let view = &dialogs(&opened)[nth - 1].body["view"];
        let view: Value = if view.is_string() {
            serde_json::from_str(view.as_str().unwrap()).unwrap()
        } else {
            view.clone()
        };
        let payload = json!({
            "type": "view_submission",
            "user": {"id": slack_id(&self.config, person), "username": person, "team_id": "T0TEAM"},
            "api_app_id": "A0APP",
            "team": {"id": "T0TEAM"},
            "trigger_id": format!("trigger-view-{reason}"),
            "view": {
                "id": format!("V-{reason}"), "team_id": "T0TEAM", "type": "modal", "hash": "h",
                "callback_id": view["callback_id"], "private_metadata": view["private_metadata"],
                "title": view["title"], "blocks": view["blocks"],
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}
            }
        });
        let (status, text) = self
            .signed(
                "/slack/interactions",
                &Self::interaction_body(&payload),
                "application/x-www-form-urlencoded",
            )
            .await;
        assert_eq!(status, 200, "{text}");
    }

    async fn store(&self) -> Store {
        Store::connect(&self.db.url).await.unwrap()
    }

    /// Wait for the first run's root message and the first card in its
    /// thread; the root message.
    async fn first_card(&self) -> Call {
        let calls = self
            .fake
            .wait_for("root and first card", |c| {
                root(c, &self.channel)
                    .is_some_and(|r| !thread_posts(c, r.ts.as_deref().unwrap()).is_empty())
            })
            .await;
        root(&calls, &self.channel).unwrap()
    }
}

/// The run's root message and the phase cards posted in its thread.
fn root(calls: &[Call], channel: &str) -> Option<Call> {
    calls
        .iter()
        .find(|c| {
            c.method == "chat.postMessage"
                && c.ok()
                && c.str("channel") == Some(channel)
                && c.str("thread_ts").is_none()
        })
        .cloned()
}

fn thread_posts(calls: &[Call], root_ts: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.ok() && c.str("thread_ts") == Some(root_ts))
        .cloned()
        .collect()
}

/// The newest phase card posted in the thread, at its latest content.
fn current_card(env: &SlackEnv, root_ts: &str) -> Call {
    let posts = thread_posts(&env.fake.calls(), root_ts);
    let card = posts
        .iter()
        .rev()
        .find(|c| c.all_text().contains(" · Phase ") || c.all_text().contains(" · Rollback: "))
        .expect("a phase card");
    env.fake.latest(card.ts.as_deref().unwrap()).unwrap()
}

fn action(card: &Call, label_prefix: &str) -> String {
    card.buttons()
        .into_iter()
        .find(|(label, _)| label.starts_with(label_prefix))
        .map(|(_, id)| id)
        .unwrap_or_else(|| panic!("no button {label_prefix:?} on {:?}", card.buttons()))
}

static TRIGGER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn trigger() -> String {
    format!(
        "trigger-{}",
        TRIGGER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Press a button on the current card and wait until that card changes.
async fn press(env: &SlackEnv, root_ts: &str, person: &str, label: &str, expect: &str) -> Call {
    let card = current_card(env, root_ts);
    let ts = card.ts.clone().unwrap();
    let id = action(&card, label);
    let before = env.fake.calls().len();
    env.click(person, &ts, root_ts, &id, &trigger()).await;
    let calls = env
        .fake
        .wait_for(&format!("{expect:?} after {label:?}"), |calls| {
            calls[before..]
                .iter()
                .any(|c| c.ok() && c.all_text().contains(expect))
        })
        .await;
    calls[before..]
        .iter()
        .find(|c| c.ok() && c.all_text().contains(expect))
        .unwrap()
        .clone()
}

async fn whole_run(db: TestDb) {
    let kind = db.kind;
    let env = SlackEnv::start(db).await;
    let cfg = env.config.clone();

    // Start: the slash command is answered at once, privately.
    let answer = env
        .command(
            "alice",
            "start checkout-api v1.2.3 --runbook quickstart",
            &trigger(),
        )
        .await;
    assert_eq!(answer["response_type"], "ephemeral");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("Started deployment #1 of checkout-api v1.2.3"),
        "{answer}"
    );

    // Root message in the deployments channel, then the first card in its thread.
    let root_msg = env.first_card().await;
    let root_ts = root_msg.ts.clone().unwrap();
    assert!(root_msg.all_text().contains(
        "checkout-api v1.2.3 — deployment #1, started by Alice Moreau, runbook quickstart"
    ));
    assert!(
        root_msg
            .all_text()
            .contains(&format!("<@{}>", slack_id(&cfg, "alice"))),
        "the starter is mentioned"
    );
    let first = current_card(&env, &root_ts);
    assert!(
        first.all_text().contains("Phase 1 of 3: Prepare"),
        "{}",
        first.all_text()
    );
    assert!(first.buttons().iter().all(|(_, id)| [
        "checklist.",
        "phase.",
        "signoff.",
        "deploy.",
        "incident."
    ]
    .iter()
    .any(|p| id.starts_with(p))));

    // Items: done, and not applicable through the reason dialog.
    let updated = press(
        &env,
        &root_ts,
        "alice",
        "Done: Tests pass",
        "✅ Tests pass on the release commit — Alice Moreau",
    )
    .await;
    assert_eq!(updated.method, "chat.update", "the card is edited in place");
    assert_eq!(updated.str("ts"), first.ts.as_deref());
    let card = current_card(&env, &root_ts);
    let na = action(&card, "N/A: New feature");
    env.click(
        "alice",
        card.ts.as_deref().unwrap(),
        &root_ts,
        &na,
        &trigger(),
    )
    .await;
    env.submit_reason("alice", "no flag this time", 1).await;
    env.fake
        .wait_for("not applicable", |c| {
            c.iter()
                .any(|c| c.ok() && c.all_text().contains("not applicable: no flag this time"))
        })
        .await;

    // Advancing too early is refused, privately, with the reason.
    let card = current_card(&env, &root_ts);
    env.click(
        "alice",
        card.ts.as_deref().unwrap(),
        &root_ts,
        &action(&card, "Advance to"),
        &trigger(),
    )
    .await;
    let calls = env
        .fake
        .wait_for("a refusal", |c| {
            c.iter().any(|c| {
                c.method == "chat.postEphemeral" && c.all_text().contains("Cannot advance yet")
            })
        })
        .await;
    let refusal = calls
        .iter()
        .find(|c| c.method == "chat.postEphemeral")
        .unwrap();
    assert_eq!(refusal.str("user"), Some(slack_id(&cfg, "alice").as_str()));
    assert!(
        refusal
            .all_text()
            .contains("not done: Release notes written"),
        "{}",
        refusal.all_text()
    );

    press(
        &env,
        &root_ts,
        "alice",
        "Done: Release notes",
        "✅ Release notes written",
    )
    .await;
    press(
        &env,
        &root_ts,
        "alice",
        "Advance to",
        "Phase 2 of 3: Ship it",
    )
    .await;
    let second = current_card(&env, &root_ts);
    assert_ne!(second.ts, first.ts, "a new card for the new phase");
    let old = env.fake.latest(first.ts.as_deref().unwrap()).unwrap();
    assert!(
        old.buttons().is_empty(),
        "the finished phase keeps no buttons"
    );

    // Someone outside QA is refused, told whom to ask, and nothing changes.
    let card = current_card(&env, &root_ts);
    let card_before = card.all_text();
    env.click(
        "zoe",
        card.ts.as_deref().unwrap(),
        &root_ts,
        &action(&card, "Sign off as QA"),
        &trigger(),
    )
    .await;
    let calls = env
        .fake
        .wait_for("refusal for zoe", |c| {
            c.iter()
                .any(|c| c.method == "chat.postEphemeral" && c.str("user") == Some("U0ZOE"))
        })
        .await;
    let refusal = calls
        .iter()
        .find(|c| c.method == "chat.postEphemeral" && c.str("user") == Some("U0ZOE"))
        .unwrap();
    assert!(
        refusal
            .all_text()
            .contains("Only members of QA can sign off for it; ask Chen Wei or Priya Raman"),
        "{}",
        refusal.all_text()
    );
    assert_eq!(
        refusal.str("thread_ts"),
        Some(root_ts.as_str()),
        "the refusal stays in the thread"
    );
    let card_after = env
        .fake
        .latest(card.ts.as_deref().unwrap())
        .unwrap()
        .all_text();
    assert_eq!(
        card_after, card_before,
        "a refused sign-off leaves the card as it was"
    );

    // A rejection (through the dialog) is announced in the thread.
    let card = current_card(&env, &root_ts);
    env.click(
        "chen",
        card.ts.as_deref().unwrap(),
        &root_ts,
        &action(&card, "Reject as QA"),
        &trigger(),
    )
    .await;
    env.submit_reason("chen", "smoke test flaky", 2).await;
    env.fake
        .wait_for("rejection notice", |c| {
            c.iter().any(|c| {
                c.method == "chat.postMessage"
                    && c.all_text()
                        .contains("Chen Wei rejected the QA sign-off for Ship it: smoke test flaky")
            })
        })
        .await;

    // The rest of the quickstart run, the same on every platform.
    for (who, label, expect) in crate::helpers::QUICKSTART_FINISH {
        press(&env, &root_ts, who, label, expect).await;
    }

    // The report, in the thread; the root message says how it ended.
    let calls = env
        .fake
        .wait_for("the report", |c| {
            c.iter().any(|c| {
                c.ok()
                    && c.all_text()
                        .contains("# Deployment report: checkout-api v1.2.3 (#1)")
            })
        })
        .await;
    let report = calls
        .iter()
        .find(|c| c.ok() && c.all_text().contains("# Deployment report"))
        .unwrap();
    assert_eq!(report.str("thread_ts"), Some(root_ts.as_str()));
    let text = report.all_text();
    for expected in [
        "Chen Wei for QA: approved",
        "Emeka Eze for DevOps: approved",
        "not applicable: no flag this time",
        "**Status:** completed",
    ] {
        assert!(
            text.contains(expected),
            "{kind}: report lacks {expected:?}:\n{text}"
        );
    }
    env.fake
        .wait_for("root updated", |_| {
            env.fake
                .latest(&root_ts)
                .is_some_and(|r| r.all_text().contains("Status: completed"))
        })
        .await;

    // Message by message: every thread post hangs off the root, edits hit
    // messages that were posted, nothing broke Block Kit's limits.
    let calls = env.fake.calls();
    let posted: Vec<String> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.ok())
        .filter_map(|c| c.ts.clone())
        .collect();
    for c in calls.iter().filter(|c| c.ok()) {
        match c.method.as_str() {
            "chat.postMessage" if c.ts.as_deref() != Some(root_ts.as_str()) => {
                assert_eq!(
                    c.str("thread_ts"),
                    Some(root_ts.as_str()),
                    "{kind}: a post outside the thread: {}",
                    c.all_text()
                )
            }
            "chat.update" => assert!(
                posted.contains(&c.str("ts").unwrap().to_string()),
                "{kind}: update of an unknown message"
            ),
            _ => {}
        }
    }
    assert_eq!(env.fake.violations(), Vec::<String>::new(), "{kind}");
    assert!(!env.fake.saw_a_bad_token(), "{kind}");

    // And the database agrees.
    let store = env.store().await;
    let run = store
        .run_by_number(Platform::Slack, &env.channel, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status.as_str(), "completed", "{kind}");
    assert_eq!(
        store.outbox_depth().await.unwrap(),
        0,
        "{kind}: everything delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_through_slack() {
    for db in all_dbs().await {
        whole_run(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badly_signed_requests_get_401_and_change_nothing() {
    let env = SlackEnv::start(sqlite_db()).await;
    let body = env.command_body("alice", "start api v1", "trigger-sig");
    let form = "application/x-www-form-urlencoded";
    let now = now_secs().to_string();
    let stale = (now_secs() - 301).to_string();
    // Slack's published worked example: a genuine signature, five years old.
    let example_body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let cases: Vec<crate::helpers::SignedCase> = vec![
        (
            "worked example replayed",
            example_body.to_string(),
            vec![
                ("x-slack-request-timestamp", "1531420618".into()),
                (
                    "x-slack-signature",
                    "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".into(),
                ),
            ],
        ),
        (
            "wrong secret",
            body.clone(),
            vec![
                ("x-slack-request-timestamp", now.clone()),
                (
                    "x-slack-signature",
                    sign(b"not-the-secret", &now, body.as_bytes()),
                ),
            ],
        ),
        (
            "stale timestamp",
            body.clone(),
            vec![
                ("x-slack-request-timestamp", stale.clone()),
                (
                    "x-slack-signature",
                    sign(SECRET.as_bytes(), &stale, body.as_bytes()),
                ),
            ],
        ),
        ("no headers", body.clone(), vec![]),
        (
            "no signature",
            body.clone(),
            vec![("x-slack-request-timestamp", now.clone())],
        ),
        (
            "body changed after signing",
            body.replace("start+api", "start+evil"),
            vec![
                ("x-slack-request-timestamp", now.clone()),
                (
                    "x-slack-signature",
                    sign(SECRET.as_bytes(), &now, body.as_bytes()),
                ),
            ],
        ),
    ];
    for path in ["/slack/commands", "/slack/interactions", "/slack/events"] {
        for (what, body, headers) in &cases {
            let (status, _) = env.post(path, body, form, headers).await;
            assert_eq!(status, 401, "{path}: {what}");
        }
    }
    // Signed but malformed: 400 with a reason, never a panic.
    let (status, text) = env.signed("/slack/commands", "user_id=U0ALICE", form).await;
    assert_eq!(status, 400);
    assert!(text.contains("not a slash command payload"), "{text}");
    let (status, _) = env
        .signed("/slack/interactions", "payload=%7Bnot+json", form)
        .await;
    assert_eq!(status, 400);
    let (status, _) = env.signed("/slack/events", "{", "application/json").await;
    assert_eq!(status, 400);
    // Past the bound: 413, naming it, signed or not.
    let huge = "x".repeat(2 << 20);
    let (status, text) = env.signed("/slack/events", &huge, "application/json").await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("larger than 1048576 bytes"), "{text}");
    let (status, _) = env.post("/slack/commands", &huge, form, &[]).await;
    assert_eq!(status, 413);
    // Every refusal is counted, and none reached the engine.
    let metrics = env
        .http
        .get(env.serve.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = format!(
        "tminus_requests_refused_total{{platform=\"slack\"}} {}",
        3 * cases.len()
    );
    assert!(metrics.contains(&refused), "want {refused} in:\n{metrics}");

    // Nothing changed: no run, no call to Slack.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let store = env.store().await;
    assert!(store
        .recent_runs(Platform::Slack, &env.channel, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(env.fake.calls().len(), 0, "{:?}", env.fake.calls());

    // The Events API handshake works when signed.
    let challenge =
        json!({"type": "url_verification", "token": "x", "challenge": "c-123"}).to_string();
    let (status, text) = env
        .signed("/slack/events", &challenge, "application/json")
        .await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap()["challenge"].clone()
        ),
        (200, json!("c-123"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_trouble_delays_messages_but_loses_none() {
    for db in all_dbs().await {
        let kind = db.kind;
        let env = SlackEnv::start(db).await;
        env.fake.fail_next([
            Fault::Status(500),
            Fault::Status(502),
            Fault::Status(503),
            Fault::RateLimited {
                retry_after_secs: 1,
            },
            Fault::RateLimited {
                retry_after_secs: 1,
            },
        ]);
        env.command(
            "alice",
            "start checkout-api v2.0.0 --runbook quickstart",
            &trigger(),
        )
        .await;
        let calls = env
            .fake
            .wait_for("root and card despite failures", |c| {
                root(c, &env.channel)
                    .is_some_and(|r| !thread_posts(c, r.ts.as_deref().unwrap()).is_empty())
            })
            .await;
        let root_ts = root(&calls, &env.channel).unwrap().ts.unwrap();
        // More trouble while people click.
        env.fake.fail_next([
            Fault::Status(500),
            Fault::RateLimited {
                retry_after_secs: 1,
            },
            Fault::Status(503),
        ]);
        let card = current_card(&env, &root_ts);
        let card_ts = card.ts.clone().unwrap();
        for label in ["Done: Tests pass", "Done: Release notes"] {
            env.click(
                "alice",
                &card_ts,
                &root_ts,
                &action(&card, label),
                &trigger(),
            )
            .await;
        }
        env.fake
            .wait_for("both items on the card", |_| {
                env.fake.latest(&card_ts).is_some_and(|c| {
                    let t = c.all_text();
                    t.contains("✅ Tests pass") && t.contains("✅ Release notes")
                })
            })
            .await;
        let calls = env.fake.calls();
        let failures = calls.iter().filter(|c| c.status != 200).count();
        assert_eq!(failures, 8, "{kind}: every fault was hit");
        assert!(calls.iter().any(|c| c.status == 429), "{kind}");
        // Each message was posted once: one root, one card, in that order.
        let posts: Vec<&Call> = calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.ok())
            .collect();
        assert_eq!(
            posts.len(),
            2,
            "{kind}: {:#?}",
            posts.iter().map(|c| c.all_text()).collect::<Vec<_>>()
        );
        assert_eq!(posts[0].ts.as_deref(), Some(root_ts.as_str()));
        assert_eq!(posts[1].str("thread_ts"), Some(root_ts.as_str()));
        // The card's edits arrived in order: the last one shows both items.
        let updates: Vec<String> = calls
            .iter()
            .filter(|c| {
                c.method == "chat.update" && c.ok() && c.str("ts") == Some(card_ts.as_str())
            })
            .map(|c| c.all_text())
            .collect();
        // A newer edit replaces one still waiting, so there may be one or
        // two; they never go backwards, and the last shows both items.
        assert!((1..=2).contains(&updates.len()), "{kind}: {updates:#?}");
        assert!(
            updates.iter().all(|u| u.contains("✅ Tests pass")),
            "{kind}"
        );
        let both = |u: &String| u.contains("✅ Release notes");
        assert!(updates.last().is_some_and(both), "{kind}");
        let first_both = updates.iter().position(both).unwrap();
        assert!(updates[first_both..].iter().all(both), "{kind}: in order");
        let store = env.store().await;
        assert_eq!(store.outbox_depth().await.unwrap(), 0, "{kind}");
        assert_eq!(env.fake.violations(), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_double_clicks_count_once() {
    for db in all_dbs().await {
        let kind = db.kind;
        let env = SlackEnv::start(db).await;
        // The same slash command twice, the second as Slack's retry.
        let body = env.command_body(
            "alice",
            "start checkout-api v3.0.0 --runbook quickstart",
            "trigger-once",
        );
        let ts = now_secs().to_string();
        let sig = sign(SECRET.as_bytes(), &ts, body.as_bytes());
        let form = "application/x-www-form-urlencoded";
        let headers = vec![
            ("x-slack-request-timestamp", ts.clone()),
            ("x-slack-signature", sig.clone()),
        ];
        let (first, _) = env.post("/slack/commands", &body, form, &headers).await;
        let mut retry = headers.clone();
        retry.push(("x-slack-retry-num", "1".into()));
        retry.push(("x-slack-retry-reason", "http_timeout".into()));
        let (second, text) = env.post("/slack/commands", &body, form, &retry).await;
        assert_eq!((first, second), (200, 200));
        assert!(text.contains("handled before"), "{kind}: {text}");
        let store = env.store().await;
        assert_eq!(
            store
                .recent_runs(Platform::Slack, &env.channel, 10)
                .await
                .unwrap()
                .len(),
            1,
            "{kind}"
        );

        let calls = env
            .fake
            .wait_for("root and card", |c| {
                root(c, &env.channel)
                    .is_some_and(|r| !thread_posts(c, r.ts.as_deref().unwrap()).is_empty())
            })
            .await;
        let root_ts = root(&calls, &env.channel).unwrap().ts.unwrap();
        // Walk to the gated phase, then double-click a sign-off.
        press(&env, &root_ts, "alice", "Done: Tests pass", "✅ Tests pass").await;
        press(
            &env,
            &root_ts,
            "alice",
            "Done: Release notes",
            "✅ Release notes",
        )
        .await;
        press(&env, &root_ts, "alice", "Advance to", "Phase 2 of 3").await;
        let card = current_card(&env, &root_ts);
        let id = action(&card, "Sign off as QA");
        let ts = card.ts.clone().unwrap();
        let (a, b) = tokio::join!(
            env.click("chen", &ts, &root_ts, &id, "trigger-dbl-1"),
            env.click("chen", &ts, &root_ts, &id, "trigger-dbl-2")
        );
        let _ = (a, b);
        // A replay of the very same interaction, too.
        env.click("chen", &ts, &root_ts, &id, "trigger-dbl-1").await;
        env.fake
            .wait_for("sign-off shown", |_| {
                env.fake
                    .latest(&ts)
                    .is_some_and(|c| c.all_text().contains("QA: 1 of 1 — ✅ Chen Wei"))
            })
            .await;
        let drained = std::time::Instant::now();
        while store.outbox_depth().await.unwrap() > 0 {
            assert!(
                drained.elapsed() < std::time::Duration::from_secs(15),
                "{kind}: outbox never drained"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            !env.fake
                .calls()
                .iter()
                .any(|c| c.method == "chat.postEphemeral" && c.str("user") == Some("U0CHEN")),
            "{kind}: a repeated click tells the clicker nothing"
        );
        let run = store
            .run_by_number(Platform::Slack, &env.channel, 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.signoffs.len(), 1, "{kind}");
        let approvals = store
            .audit_for_run(run.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "signoff.approved")
            .count();
        assert_eq!(approvals, 1, "{kind}");
        assert_eq!(
            root(&env.fake.calls(), &env.channel).map(|r| r.ts),
            Some(Some(root_ts.clone()))
        );
        assert_eq!(
            env.fake
                .ok_calls("chat.postMessage")
                .iter()
                .filter(|c| c.str("thread_ts").is_none())
                .count(),
            1,
            "{kind}: one root"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_is_answered_with_help_once() {
    let env = SlackEnv::start(sqlite_db()).await;
    let event = json!({
        "type": "event_callback", "team_id": "T0TEAM", "api_app_id": "A0APP", "event_id": "Ev0MENTION",
        "event_time": 1700000000,
        "event": {"type": "app_mention", "user": "U0ALICE", "text": "<@U0BOT> help", "ts": "1700000000.000100", "channel": env.channel}
    })
    .to_string();
    for _ in 0..2 {
        let (status, _) = env
            .signed("/slack/events", &event, "application/json")
            .await;
        assert_eq!(status, 200);
    }
    let calls = env
        .fake
        .wait_for("help", |c| {
            c.iter()
                .any(|c| c.ok() && c.all_text().contains("/deploy start"))
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let help: Vec<Call> = env
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.ok() && c.all_text().contains("/deploy start"))
        .collect();
    assert_eq!(help.len(), 1, "{calls:?}");
    assert_eq!(help[0].str("thread_ts"), Some("1700000000.000100"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oncall_answer_names_who_is_on_call_in_its_top_level_text() {
    let env = SlackEnv::start(sqlite_db()).await;
    let holders = |at: chrono::DateTime<chrono::Utc>| -> Vec<(String, String)> {
        env.config
            .rotations
            .values()
            .map(|r| {
                let person = r.holder(&[], at).person;
                (
                    r.name.clone(),
                    env.config.directory.name(&person).to_string(),
                )
            })
            .collect()
    };
    let before = holders(chrono::Utc::now());
    let body = env.slash_body("/oncall", "zoe", "", &trigger());
    let (status, answer) = env
        .signed(
            "/slack/commands",
            &body,
            "application/x-www-form-urlencoded",
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let after = holders(chrono::Utc::now());
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let text = answer["text"].as_str().unwrap();
    assert!(text.starts_with("On call at "), "{text}");
    assert!(text.chars().count() <= 4000, "{} characters", text.len());
    assert!(!before.is_empty());
    // What a notification or a screen reader gets: every rotation and who
    // holds it (read before and after, should a hand-over fall between).
    for (rotation, person) in before.iter().chain(&after) {
        assert!(
            text.contains(rotation.as_str()),
            "{rotation} missing: {text}"
        );
        let named = before
            .iter()
            .chain(&after)
            .filter(|(r, _)| r == rotation)
            .any(|(_, p)| text.contains(&format!("{rotation}: {p}")));
        assert!(named, "{rotation}'s holder {person} missing: {text}");
    }
    // The blocks say the same.
    let shown = crate::helpers::all_strings(&answer["blocks"]);
    for (_, person) in &before {
        assert!(
            text.contains(person.as_str()) && shown.contains(person.as_str()),
            "{text}\n---\n{shown}"
        );
    }
}

/// Queue a message as the engine would, straight into the shared database.
async fn enqueue(store: &Store, msg: &tminus::chat::Outgoing) {
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(None, msg, chrono::Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
}

fn card(title: &str) -> tminus::chat::Card {
    tminus::chat::Card::new(title)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_open_the_dm_once() {
    let env = SlackEnv::start(sqlite_db()).await;
    let store = env.store().await;
    for n in 1..=2 {
        let msg = tminus::chat::Outgoing {
            platform: Platform::Slack,
            to: tminus::chat::Destination::Direct {
                person: tminus::domain::PersonId::new("chen"),
            },
            key: None,
            card: card(&format!("Page {n} for Chen")),
        };
        enqueue(&store, &msg).await;
    }
    let calls = env
        .fake
        .wait_for("two DMs", |c| {
            c.iter()
                .filter(|c| c.method == "chat.postMessage" && c.ok())
                .count()
                == 2
        })
        .await;
    let opens: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "conversations.open")
        .collect();
    assert_eq!(
        opens.len(),
        1,
        "the DM channel is opened once and remembered"
    );
    assert_eq!(
        opens[0].str("users"),
        Some("U0CHEN"),
        "users as the comma-separated string Slack takes: {:?}",
        opens[0].body
    );
    let posts: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect();
    assert!(
        posts.iter().all(|c| c.str("channel") == Some("DU0CHEN")),
        "posted to the D… channel"
    );
    assert!(
        posts[0].all_text().contains("Page 1") && posts[1].all_text().contains("Page 2"),
        "in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_slack_keeps_refusing_is_recorded_as_failed_and_the_lane_moves_on() {
    let fake = FakeSlack::start().await;
    let db = sqlite_db();
    let _serve = ServeProcess::start(
        &db.url,
        &[
            ("SLACK_BOT_TOKEN", BOT_TOKEN.to_string()),
            ("SLACK_SIGNING_SECRET", SECRET.to_string()),
            ("SLACK_API_URL", fake.api_url()),
            ("TMINUS_DELIVERY_GIVE_UP", "2s".to_string()),
        ],
    );
    fake.fail_next(std::iter::repeat_n(Fault::Status(503), 10_000));
    let store = Store::connect(&db.url).await.unwrap();
    let channel = config().channels["slack"].deployments.clone();
    for title in ["first, doomed", "second, also doomed"] {
        let msg = tminus::chat::Outgoing {
            platform: Platform::Slack,
            to: tminus::chat::Destination::Channel {
                channel: channel.clone(),
            },
            key: None,
            card: card(title),
        };
        enqueue(&store, &msg).await;
    }
    // Give up on the first after two seconds of 503s; the second follows.
    let start = std::time::Instant::now();
    loop {
        let failed = store.failed_messages().await.unwrap();
        if failed.len() == 2 {
            assert!(
                failed.iter().all(|(_, lane, err)| lane == &channel
                    && err.contains("gave up")
                    && err.contains("503")),
                "{failed:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "not given up: {failed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
    assert!(fake.calls().len() > 2, "it retried before giving up");
    assert!(fake.calls().iter().all(|c| c.status == 503));
}

/// Every form of Slack mention and link, typed by a person into every
/// command field that takes text — service, version, environment,
/// incident summary, abort and rollback reasons, an unknown command, a bad
/// run number — reaches nobody: no field of any message tminus sends (top
/// level `text`, blocks, ephemeral answers, direct messages) and no HTTP
/// answer holds one live. The only mentions are the ones tminus makes for
/// the people it knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_mentions_and_links_reach_nobody() {
    let env = SlackEnv::start(sqlite_db()).await;
    const FORMS: [&str; 8] = [
        "<!channel>",
        "<!everyone>",
        "<!here>",
        "<!subteam^S0EVIL>",
        "<@U0EVIL>",
        "<#C0EVIL>",
        "<https://evil.example|click-me>",
        "<mailto:a@evil.example|mail>",
    ];
    let mut answers = Vec::new();
    for (i, form) in FORMS.iter().enumerate() {
        let say = |text: String, n: usize| {
            let trigger = format!("mention-{i}-{n}");
            (text, trigger)
        };
        let sends = [
            say(format!("start {form} {form} --env {form}"), 0),
            say(format!("incident {form} is down --severity medium"), 1),
            say(format!("rollback {form} broke it"), 2),
            say(form.to_string(), 3),
            say(format!("status {form}"), 4),
            say(format!("start svc-{i} v{i}"), 5),
        ];
        for (text, trigger) in sends {
            answers.push(env.command("alice", &text, &trigger).await);
        }
        let started = answers.last().unwrap()["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let number: String = started
            .split('#')
            .nth(1)
            .unwrap_or_default()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert!(!number.is_empty(), "no run number in {started:?}");
        answers.push(
            env.command(
                "alice",
                &format!("abort {number} {form} says so"),
                &format!("mention-{i}-abort"),
            )
            .await,
        );
    }
    let store = Store::connect(&env.db.url).await.unwrap();
    crate::fakes::drained(&store, "the mentions").await;
    let calls = env.fake.calls();
    assert!(calls.len() > 20, "messages were sent: {}", calls.len());
    let sent: Vec<String> = calls
        .iter()
        .map(|c| crate::helpers::all_strings(&c.body))
        .chain(answers.iter().map(crate::helpers::all_strings))
        .collect();
    for form in FORMS {
        let escaped = form.replace('<', "&lt;").replace('>', "&gt;");
        assert!(
            sent.iter().any(|s| s.contains(&escaped)),
            "{form} should be shown, escaped, somewhere"
        );
        for (s, call) in sent.iter().zip(
            calls
                .iter()
                .map(|c| c.method.as_str())
                .chain(std::iter::repeat("answer")),
        ) {
            assert!(!s.contains(form), "{call} holds a live {form}:\n{s}");
        }
    }
}

/// A signed click on a run's button from another channel (a copied
/// button, or the same app in another workspace) changes nothing and tells
/// the person where the run lives; the same click in the run's channel works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_from_another_channel_is_refused() {
    let env = SlackEnv::start(sqlite_db()).await;
    let answer = env
        .command("alice", "start checkout-api v1.2.3", "trigger-place")
        .await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("Started deployment #1"),
        "{answer}"
    );
    let root_msg = env.first_card().await;
    let root_ts = root_msg.ts.unwrap();
    let card = current_card(&env, &root_ts);
    let id = action(&card, "Done:");
    let ts = card.ts.clone().unwrap();
    env.click_in(
        "C0ELSEWHERE",
        "alice",
        &ts,
        &root_ts,
        &id,
        "trigger-elsewhere",
    )
    .await;
    env.fake
        .wait_for("the refusal", |c| {
            c.iter().any(|c| {
                c.method == "chat.postEphemeral"
                    && c.all_text()
                        .contains("belongs to deployment #1 in another channel")
            })
        })
        .await;
    let store = env.store().await;
    let run = store
        .recent_runs(Platform::Slack, &env.channel, 1)
        .await
        .unwrap()
        .remove(0);
    let audit = store.audit_for_run(run.id).await.unwrap();
    assert!(
        audit.iter().all(|e| e.action != "item.done"),
        "nothing was marked done: {audit:?}"
    );
    // From the run's own channel the same button works.
    press(&env, &root_ts, "alice", "Done:", "✅").await;
    let audit = store.audit_for_run(run.id).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "item.done").count(), 1);
}

/// When the database stops taking writes, a click cannot be recorded and
/// its apology cannot be queued in the outbox either: it reaches the
/// person anyway, straight from the request, with the error id to find the
/// log line by. (PostgreSQL turned read-only, as after a fail-over.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_the_database_cannot_record_gets_an_apology() {
    // PostgreSQL only; `postgres_db` says when it skips, and fails under CI.
    let Some(db) = crate::helpers::postgres_db().await else {
        return;
    };
    let env = SlackEnv::start(db).await;
    env.command("alice", "start checkout-api v1.2.3", "trigger-apology")
        .await;
    let root_msg = env.first_card().await;
    let root_ts = root_msg.ts.unwrap();
    let card = current_card(&env, &root_ts);
    let (id, ts) = (action(&card, "Done:"), card.ts.clone().unwrap());

    env.db.set_read_only(true).await;

    env.click("alice", &ts, &root_ts, &id, "trigger-apology-click")
        .await;
    let calls = env
        .fake
        .wait_for("the apology", |c| {
            c.iter().any(|c| {
                c.method == "chat.postEphemeral"
                    && c.all_text()
                        .contains("something went wrong on my side (error E")
            })
        })
        .await;
    let apology = calls
        .iter()
        .find(|c| c.method == "chat.postEphemeral" && c.all_text().contains("went wrong"))
        .unwrap();
    assert_eq!(
        apology.str("user"),
        Some(slack_id(&env.config, "alice").as_str())
    );
    assert_eq!(apology.str("channel"), Some(env.channel.as_str()));
    env.db.set_read_only(false).await;
}
