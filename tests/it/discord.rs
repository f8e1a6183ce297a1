//! Discord, end to end: the real `tminus serve` on port 0, a fake Discord
//! REST API on 127.0.0.1, and interactions signed with a key pair the test
//! makes — on SQLite and on PostgreSQL. Plus gateway mode: the same handler
//! fed INTERACTION_CREATE payloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use tminus::config::Config;
use tminus::domain::{PersonId, Platform};
use tminus::store::Store;

use crate::fake_discord::{assert_valid_answer, Call, FakeDiscord, Fault, APP_ID, TOKEN};
use crate::helpers::{all_dbs, config, sqlite_db, ServeProcess, TestDb};

const GUILD: &str = "1100000000000000002";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn public_hex() -> String {
    tminus::hex::encode(key().verifying_key().as_bytes())
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1_200_000_000_000_000_000);

fn next_id() -> String {
    NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string()
}

fn discord_id(config: &Config, person: &str) -> String {
    config.directory.people[&PersonId::new(person)]
        .discord
        .clone()
        .unwrap()
}

/// The outer fields every interaction carries, for a member of the guild.
fn interaction(config: &Config, person: &str, kind: u64, channel: &str, data: Value) -> Value {
    json!({
        "id": next_id(), "application_id": APP_ID, "type": kind, "token": "interaction-token", "version": 1,
        "guild_id": GUILD, "channel_id": channel, "channel": {"id": channel, "type": 0},
        "member": {
            "user": {"id": discord_id(config, person), "username": person, "discriminator": "0", "global_name": null, "avatar": null},
            "roles": [], "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0,
            "permissions": "2147483647"
        },
        "app_permissions": "442368", "locale": "en-US", "entitlements": [],
        "authorizing_integration_owners": {"0": GUILD}, "context": 0, "attachment_size_limit": 8388608,
        "data": data
    })
}

fn deploy_command(sub: &str, options: Value) -> Value {
    json!({"id": "1100000000000000005", "name": "deploy", "type": 1,
           "options": [{"type": 1, "name": sub, "options": options}]})
}

struct DiscordEnv {
    fake: FakeDiscord,
    serve: ServeProcess,
    http: reqwest::Client,
    config: Arc<Config>,
    db: TestDb,
    channel: String,
}

impl DiscordEnv {
    async fn start(db: TestDb) -> DiscordEnv {
        let fake = FakeDiscord::start().await;
        let serve = ServeProcess::start(
            &db.url,
            &[
                ("DISCORD_TOKEN", TOKEN.to_string()),
                ("DISCORD_PUBLIC_KEY", public_hex()),
                ("DISCORD_APPLICATION_ID", APP_ID.to_string()),
                ("DISCORD_API_URL", fake.api_url()),
            ],
        );
        let config = config();
        let channel = config.channels["discord"].deployments.clone();
        DiscordEnv {
            fake,
            serve,
            http: reqwest::Client::new(),
            config,
            db,
            channel,
        }
    }

    async fn post(&self, body: &str, headers: &[(&str, String)]) -> (u16, String) {
        let mut req = self
            .http
            .post(self.serve.url("/discord/interactions"))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    fn sign(body: &str, ts: &str) -> Vec<(&'static str, String)> {
        let signature = key().sign(format!("{ts}{body}").as_bytes());
        vec![
            (
                "x-signature-ed25519",
                tminus::hex::encode(&signature.to_bytes()),
            ),
            ("x-signature-timestamp", ts.to_string()),
        ]
    }

    async fn send(&self, payload: &Value) -> Value {
        let body = payload.to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let (status, text) = self.post(&body, &Self::sign(&body, &ts)).await;
        assert_eq!(status, 200, "{text}");
        let answer = serde_json::from_str(&text).unwrap();
        assert_valid_answer(&answer);
        answer
    }

    async fn command(&self, person: &str, sub: &str, options: Value) -> Value {
        self.send(&interaction(
            &self.config,
            person,
            2,
            &self.channel,
            deploy_command(sub, options),
        ))
        .await
    }

    async fn click(&self, person: &str, card: &Call, label: &str) -> Value {
        let id = action(card, label);
        let channel = card.channel().unwrap().to_string();
        let mut payload = interaction(
            &self.config,
            person,
            3,
            &channel,
            json!({"component_type": 2, "custom_id": id}),
        );
        payload["message"] = json!({"id": card.id, "channel_id": channel});
        self.send(&payload).await
    }

    async fn submit_reason(
        &self,
        person: &str,
        modal: &Value,
        channel: &str,
        reason: &str,
    ) -> Value {
        let data = json!({
            "custom_id": modal["data"]["custom_id"],
            "components": [{"type": 1, "components": [{"type": 4, "custom_id": "reason", "value": reason}]}]
        });
        self.send(&interaction(&self.config, person, 5, channel, data))
            .await
    }

    /// `/deploy start SERVICE VERSION --runbook RUNBOOK` as alice.
    async fn start_run(&self, service: &str, version: &str, runbook: &str) -> Value {
        self.command(
            "alice",
            "start",
            json!([
            {"type": 3, "name": "service", "value": service},
            {"type": 3, "name": "version", "value": version},
            {"type": 3, "name": "runbook", "value": runbook}]),
        )
        .await
    }

    /// Wait until the root message of the channel's first run and a card in
    /// its thread are posted; the thread's id.
    async fn first_card(&self, what: &str) -> String {
        let calls = self
            .fake
            .wait_for(what, |c| {
                posts_in(c, &self.channel)
                    .first()
                    .and_then(|r| r.id.clone())
                    .is_some_and(|root| !posts_in(c, &root).is_empty())
            })
            .await;
        posts_in(&calls, &self.channel)[0].id.clone().unwrap()
    }

    async fn store(&self) -> Store {
        Store::connect(&self.db.url).await.unwrap()
    }
}

fn action(card: &Call, label: &str) -> String {
    card.buttons()
        .into_iter()
        .find(|(l, _)| l.starts_with(label))
        .map(|(_, id)| id)
        .unwrap_or_else(|| panic!("no button {label:?} on {:?}", card.buttons()))
}

fn posts_in(calls: &[Call], channel: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| {
            c.ok()
                && c.method == "POST"
                && c.path == format!("/api/v10/channels/{channel}/messages")
        })
        .cloned()
        .collect()
}

/// The newest phase card in the thread, at its latest content.
fn current_card(env: &DiscordEnv, thread: &str) -> Call {
    let posts = posts_in(&env.fake.calls(), thread);
    let card = posts
        .iter()
        .rev()
        .find(|c| c.all_text().contains(" · Phase "))
        .expect("a phase card");
    env.fake.latest(card.id.as_deref().unwrap()).unwrap()
}

/// Press a button on the current card and wait until `expect` shows up.
async fn press(env: &DiscordEnv, thread: &str, person: &str, label: &str, expect: &str) {
    let card = current_card(env, thread);
    let before = env.fake.calls().len();
    let answer = env.click(person, &card, label).await;
    assert_eq!(answer["type"], 6, "{label}: {answer}");
    env.fake
        .wait_for(&format!("{expect:?} after {label:?}"), |c| {
            c[before..]
                .iter()
                .any(|c| c.ok() && c.all_text().contains(expect))
        })
        .await;
}

async fn whole_run(db: TestDb) {
    let kind = db.kind;
    let env = DiscordEnv::start(db).await;
    let cfg = env.config.clone();

    // Commands were registered at start, idempotently (a bulk overwrite).
    let calls = env
        .fake
        .wait_for("command registration", |c| {
            c.iter().any(|c| c.method == "PUT")
        })
        .await;
    let put = calls.iter().find(|c| c.method == "PUT").unwrap();
    assert_eq!(put.path, format!("/api/v10/applications/{APP_ID}/commands"));
    assert_eq!(put.body[0]["name"], "deploy");
    assert!(put.body[0]["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "start"));

    // PING.
    assert_eq!(env.send(&json!({"id": next_id(), "application_id": APP_ID, "type": 1, "token": "t", "version": 1})).await, json!({"type": 1}));

    // Start: answered within the request, privately.
    let answer = env.start_run("checkout-api", "v1.2.3", "quickstart").await;
    assert_eq!(answer["type"], 4);
    assert_eq!(answer["data"]["flags"], 64);
    assert!(
        answer["data"]["content"]
            .as_str()
            .unwrap()
            .contains("Started deployment #1 of checkout-api v1.2.3"),
        "{answer}"
    );

    // Root message, a thread from it, the first card in the thread.
    let thread = env.first_card("root, thread and card").await;
    let calls = env.fake.calls();
    let root = posts_in(&calls, &env.channel)[0].clone();
    assert!(
        root.all_text()
            .contains("checkout-api v1.2.3 — deployment #1, started by Alice Moreau"),
        "{}",
        root.all_text()
    );
    assert!(root
        .all_text()
        .contains(&format!("<@{}>", discord_id(&cfg, "alice"))));
    let created = calls
        .iter()
        .position(|c| c.path.ends_with(&format!("/messages/{thread}/threads")))
        .expect("a thread from the root");
    let first_card = calls
        .iter()
        .position(|c| c.path == format!("/api/v10/channels/{thread}/messages"))
        .unwrap();
    assert!(
        created < first_card,
        "the thread exists before its first post"
    );
    assert_eq!(calls[created].body["name"], "checkout-api v1.2.3 #1");

    press(
        &env,
        &thread,
        "alice",
        "Done: Tests pass",
        "✅ Tests pass on the release commit — Alice Moreau",
    )
    .await;
    // A reason dialog for "not applicable".
    let card = current_card(&env, &thread);
    let modal = env.click("alice", &card, "N/A: New feature").await;
    assert_eq!(modal["type"], 9, "{modal}");
    assert!(modal["data"]["custom_id"]
        .as_str()
        .unwrap()
        .starts_with("checklist.na:"));
    assert_eq!(
        env.submit_reason("alice", &modal, &thread, "no flag this time")
            .await["type"],
        6
    );
    env.fake
        .wait_for("not applicable", |c| {
            c.iter()
                .any(|c| c.ok() && c.all_text().contains("not applicable: no flag this time"))
        })
        .await;

    // Advance too early: an ephemeral refusal with the reasons.
    let card = current_card(&env, &thread);
    let refusal = env.click("alice", &card, "Advance to").await;
    assert_eq!(
        (refusal["type"].clone(), refusal["data"]["flags"].clone()),
        (json!(4), json!(64)),
        "{refusal}"
    );
    assert!(
        refusal["data"]["content"]
            .as_str()
            .unwrap()
            .contains("not done: Release notes written"),
        "{refusal}"
    );

    press(
        &env,
        &thread,
        "alice",
        "Done: Release notes",
        "✅ Release notes written",
    )
    .await;
    press(
        &env,
        &thread,
        "alice",
        "Advance to",
        "Phase 2 of 3: Ship it",
    )
    .await;

    // Someone outside QA: refused privately, members named, nothing edited.
    let card = current_card(&env, &thread);
    let card_before = card.all_text();
    let refusal = env.click("zoe", &card, "Sign off as QA").await;
    assert_eq!(refusal["data"]["flags"], 64);
    assert!(
        refusal["data"]["content"]
            .as_str()
            .unwrap()
            .contains("Only members of QA can sign off for it; ask Chen Wei or Priya Raman"),
        "{refusal}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let card_after = env
        .fake
        .latest(card.id.as_deref().unwrap())
        .unwrap()
        .all_text();
    assert_eq!(
        card_after, card_before,
        "a refusal leaves the card as it was"
    );

    // The rest of the quickstart run, the same on every platform.
    for (who, label, expect) in crate::helpers::QUICKSTART_FINISH {
        press(&env, &thread, who, label, expect).await;
    }
    let calls = env
        .fake
        .wait_for("the report", |c| {
            c.iter().any(|c| {
                c.ok()
                    && c.all_text()
                        .contains("Deployment report: checkout-api v1.2.3 (#1)")
            })
        })
        .await;
    let report = calls
        .iter()
        .find(|c| c.ok() && c.all_text().contains("Deployment report: checkout-api"))
        .unwrap();
    assert_eq!(
        report.channel(),
        Some(thread.as_str()),
        "the report is in the thread"
    );
    env.fake
        .wait_for("root edited", |_| {
            env.fake
                .latest(&thread)
                .is_some_and(|r| r.all_text().contains("Status: completed"))
        })
        .await;

    assert_eq!(env.fake.violations(), Vec::<String>::new(), "{kind}");
    assert!(!env.fake.saw_a_bad_token(), "{kind}");
    let store = env.store().await;
    let run = store
        .run_by_number(Platform::Discord, &env.channel, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status.as_str(), "completed", "{kind}");
    let emeka = run
        .signoffs
        .iter()
        .find(|s| s.role.as_str() == "devops")
        .unwrap();
    assert_eq!(
        emeka.person.as_str(),
        "emeka",
        "{kind}: the Discord user resolved to the same person as on Slack"
    );
    assert!(cfg.directory.people[&PersonId::new("emeka")]
        .slack
        .is_some());
    assert_eq!(store.outbox_depth().await.unwrap(), 0, "{kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_through_discord() {
    for db in all_dbs().await {
        whole_run(db).await;
    }
}

/// Runbook text with inline code ("Unit tests (`npm run test`) …") shows
/// as code in the card's embed, not as escaped backticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_in_checklist_items_renders_as_code() {
    let env = DiscordEnv::start(sqlite_db()).await;
    env.start_run("workflow-app", "v3.1.0", "app-with-database")
        .await;
    let thread = env.first_card("the first card").await;
    let card = current_card(&env, &thread);
    let description = card.body["embeds"][0]["description"].as_str().unwrap();
    assert!(
        description.contains("Unit tests (`npm run test`) and integration tests pass"),
        "{description}"
    );
    assert!(!description.contains("\\`"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_get_401_and_change_nothing() {
    let env = DiscordEnv::start(sqlite_db()).await;
    let payload = interaction(&env.config, "alice", 2, &env.channel, deploy_command("start", json!([
        {"type": 3, "name": "service", "value": "api"}, {"type": 3, "name": "version", "value": "v1"}])))
    .to_string();
    let now = chrono::Utc::now().timestamp().to_string();
    let stale = (chrono::Utc::now().timestamp() - 600).to_string();
    let other_key = SigningKey::from_bytes(&[9u8; 32]).sign(format!("{now}{payload}").as_bytes());
    let cases: Vec<crate::helpers::SignedCase> = vec![
        ("no headers", payload.clone(), vec![]),
        (
            "no signature",
            payload.clone(),
            vec![("x-signature-timestamp", now.clone())],
        ),
        (
            "not hex",
            payload.clone(),
            vec![
                ("x-signature-ed25519", "zz".into()),
                ("x-signature-timestamp", now.clone()),
            ],
        ),
        (
            "another key",
            payload.clone(),
            vec![
                (
                    "x-signature-ed25519",
                    tminus::hex::encode(&other_key.to_bytes()),
                ),
                ("x-signature-timestamp", now.clone()),
            ],
        ),
        (
            "tampered body",
            payload.replace("\"api\"", "\"evil\""),
            DiscordEnv::sign(&payload, &now),
        ),
        ("timestamp changed", payload.clone(), {
            let mut h = DiscordEnv::sign(&payload, &now);
            h[1].1 = (now.parse::<i64>().unwrap() + 1).to_string();
            h
        }),
        ("stale", payload.clone(), DiscordEnv::sign(&payload, &stale)),
    ];
    for (what, body, headers) in &cases {
        let (status, _) = env.post(body, headers).await;
        assert_eq!(status, 401, "{what}");
    }
    // Signed but not an interaction: 400.
    let (status, _) = env
        .post("{not json", &DiscordEnv::sign("{not json", &now))
        .await;
    assert_eq!(status, 400);
    // Past the bound: 413, naming it.
    let huge = "x".repeat(2 << 20);
    let (status, text) = env.post(&huge, &DiscordEnv::sign(&huge, &now)).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("larger than 1048576 bytes"), "{text}");
    // PING is answered.
    let ping =
        json!({"id": next_id(), "application_id": APP_ID, "type": 1, "token": "t", "version": 1});
    assert_eq!(env.send(&ping).await, json!({"type": 1}));

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let store = env.store().await;
    assert!(store
        .recent_runs(Platform::Discord, &env.channel, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(
        env.fake.calls().iter().all(|c| c.method == "PUT"),
        "only command registration reached Discord"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_trouble_delays_messages_but_loses_none() {
    for db in all_dbs().await {
        let kind = db.kind;
        let env = DiscordEnv::start(db).await;
        env.fake
            .wait_for("registration", |c| c.iter().any(|c| c.method == "PUT"))
            .await;
        env.fake.fail_next([
            Fault::Status(500),
            Fault::RateLimited {
                retry_after_secs: 0.8,
            },
            Fault::Status(502),
            Fault::RateLimited {
                retry_after_secs: 0.5,
            },
        ]);
        env.start_run("checkout-api", "v2.0.0", "quickstart").await;
        let thread = env
            .first_card("root, thread and card despite trouble")
            .await;
        env.fake.fail_next([
            Fault::RateLimited {
                retry_after_secs: 0.5,
            },
            Fault::Status(503),
        ]);
        let card = current_card(&env, &thread);
        env.click("alice", &card, "Done: Tests pass").await;
        env.click("alice", &card, "Done: Release notes").await;
        let card_id = card.id.clone().unwrap();
        env.fake
            .wait_for("both items", |_| {
                env.fake.latest(&card_id).is_some_and(|c| {
                    c.all_text().contains("✅ Tests pass")
                        && c.all_text().contains("✅ Release notes")
                })
            })
            .await;
        let calls = env.fake.calls();
        assert_eq!(
            calls.iter().filter(|c| c.status == 429).count(),
            3,
            "{kind}"
        );
        assert_eq!(
            calls.iter().filter(|c| c.status >= 500).count(),
            3,
            "{kind}"
        );
        // Posted once each, in order: root, then thread, then card.
        assert_eq!(posts_in(&calls, &env.channel).len(), 1, "{kind}: one root");
        assert_eq!(posts_in(&calls, &thread).len(), 1, "{kind}: one card");
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.ok() && c.path.ends_with("/threads"))
                .count(),
            1,
            "{kind}"
        );
        let edits: Vec<String> = calls
            .iter()
            .filter(|c| c.ok() && c.method == "PATCH" && c.id.as_deref() == Some(card_id.as_str()))
            .map(|c| c.all_text())
            .collect();
        // A newer edit replaces one still waiting: they never go backwards,
        // and the last shows both items.
        assert!((1..=2).contains(&edits.len()), "{kind}: {edits:#?}");
        assert!(edits.iter().all(|e| e.contains("✅ Tests pass")), "{kind}");
        let both = |e: &String| e.contains("✅ Release notes");
        let first_both = edits
            .iter()
            .position(both)
            .expect("the last edit shows both");
        assert!(
            edits[first_both..].iter().all(both),
            "{kind}: edits in order"
        );
        assert_eq!(env.store().await.outbox_depth().await.unwrap(), 0, "{kind}");
        assert_eq!(env.fake.violations(), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_interaction_changes_state_once() {
    let env = DiscordEnv::start(sqlite_db()).await;
    let start = interaction(
        &env.config,
        "alice",
        2,
        &env.channel,
        deploy_command(
            "start",
            json!([
        {"type": 3, "name": "service", "value": "api"}, {"type": 3, "name": "version", "value": "v1"},
        {"type": 3, "name": "runbook", "value": "quickstart"}]),
        ),
    );
    env.send(&start).await;
    let again = env.send(&start).await;
    assert!(
        again["data"]["content"]
            .as_str()
            .unwrap()
            .contains("handled before"),
        "{again}"
    );
    let thread = env.first_card("card").await;
    let card = current_card(&env, &thread);
    let id = action(&card, "Done: Tests pass");
    let mut click = interaction(
        &env.config,
        "alice",
        3,
        &thread,
        json!({"component_type": 2, "custom_id": id}),
    );
    click["message"] = json!({"id": card.id, "channel_id": thread});
    assert_eq!(env.send(&click).await["type"], 6);
    assert_eq!(
        env.send(&click).await["type"],
        6,
        "a replay is acknowledged quietly"
    );
    let store = env.store().await;
    let run = store
        .run_by_number(Platform::Discord, &env.channel, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .recent_runs(Platform::Discord, &env.channel, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let done = store
        .audit_for_run(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "item.done")
        .count();
    assert_eq!(done, 1);
}

/// Gateway mode: an INTERACTION_CREATE, parsed by serenity as the gateway
/// client does, goes through the same handler as the HTTP endpoint.
#[tokio::test]
async fn gateway_interactions_go_through_the_same_handler() {
    let db = sqlite_db();
    let (engine, _clock) = crate::helpers::engine(&db).await;
    let settings = tminus::discord::DiscordSettings {
        token: tminus::config::Secret::new("unused".into()),
        public_key: None,
        application_id: None,
        api_url: tminus::discord::DEFAULT_API_URL.into(),
    };
    let discord = tminus::discord::Discord::new(engine.clone(), settings).unwrap();
    let cfg = config();
    let channel = cfg.channels["discord"].deployments.clone();
    let event = json!({"op": 0, "t": "INTERACTION_CREATE", "s": 3, "d": interaction(&cfg, "alice", 2, &channel, deploy_command("start", json!([
        {"type": 3, "name": "service", "value": "gw-api"}, {"type": 3, "name": "version", "value": "v7"},
        {"type": 3, "name": "runbook", "value": "quickstart"}])))});
    // What serenity's gateway client hands the event handler.
    let typed: serenity::all::Interaction =
        serde_json::from_value(event["d"].clone()).expect("serenity parses the interaction");
    let value = tminus::discord::gateway::interaction_value(&typed).expect("a command interaction");
    let answer = discord.respond(value).await.unwrap();
    assert_valid_answer(&answer);
    assert_eq!(answer["type"], 4);
    assert!(
        answer["data"]["content"]
            .as_str()
            .unwrap()
            .contains("Started deployment #1 of gw-api v7"),
        "{answer}"
    );
    let run = engine
        .store()
        .run_by_number(Platform::Discord, &channel, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.started_by.as_str(), "alice");
    // A button click from the gateway: serenity needs the whole message.
    let id = tminus::chat::buttons::encode(
        run.id,
        &tminus::domain::Action::ItemDone {
            phase: "prepare".into(),
            item: "tests".into(),
        },
    );
    let mut click = interaction(
        &cfg,
        "alice",
        3,
        &channel,
        json!({"component_type": 2, "custom_id": id}),
    );
    click["message"] = json!({
        "id": "1300000000000000001", "channel_id": channel, "content": "", "timestamp": "2026-11-23T09:00:00.000000+00:00",
        "edited_timestamp": null, "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "type": 0, "flags": 0, "components": [],
        "author": {"id": "1100000000000000000", "username": "tminus", "discriminator": "0", "global_name": null, "avatar": null, "bot": true}
    });
    let typed: serenity::all::Interaction =
        serde_json::from_value(click).expect("serenity parses the click");
    let answer = discord
        .respond(tminus::discord::gateway::interaction_value(&typed).unwrap())
        .await
        .unwrap();
    assert_eq!(answer, json!({"type": 6}));
    let run = engine.store().run(run.id).await.unwrap().unwrap();
    assert!(matches!(
        run.item_state("prepare", "tests"),
        tminus::domain::ItemState::Done { .. }
    ));
    // A PING over the endpoint path gets the same treatment from the same function.
    assert_eq!(
        discord.respond(json!({"type": 1})).await,
        Some(json!({"type": 1}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_open_the_dm_once() {
    let env = DiscordEnv::start(sqlite_db()).await;
    let store = env.store().await;
    for n in 1..=2 {
        let msg = tminus::chat::Outgoing {
            platform: Platform::Discord,
            to: tminus::chat::Destination::Direct {
                person: PersonId::new("chen"),
            },
            key: None,
            card: tminus::chat::Card::new(format!("Page {n} for Chen")),
        };
        let mut tx = store.begin().await.unwrap();
        tx.enqueue(None, &msg, chrono::Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
    }
    let calls = env
        .fake
        .wait_for("two DMs", |c| {
            c.iter()
                .filter(|c| c.ok() && c.method == "POST" && c.all_text().contains("for Chen"))
                .count()
                == 2
        })
        .await;
    let opens: Vec<&Call> = calls
        .iter()
        .filter(|c| c.path == "/api/v10/users/@me/channels")
        .collect();
    assert_eq!(
        opens.len(),
        1,
        "the DM channel is opened once and remembered"
    );
    assert_eq!(
        opens[0].body["recipient_id"],
        json!(discord_id(&env.config, "chen"))
    );
    let dms: Vec<&Call> = calls
        .iter()
        .filter(|c| c.ok() && c.all_text().contains("for Chen"))
        .collect();
    assert!(
        dms[0].all_text().contains("Page 1") && dms[1].all_text().contains("Page 2"),
        "in order"
    );
    assert_eq!(dms[0].channel(), dms[1].channel());
}

/// Discord's forms of mass mention, user and role mention and masked link,
/// typed into every command field that takes text, notify nobody and link
/// nowhere: every message tminus sends allows at most user mentions (and
/// only in content it writes itself), no content holds a typed form, and a
/// masked link shows as typed, its bracket escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_mentions_and_masked_links_reach_nobody() {
    let env = DiscordEnv::start(sqlite_db()).await;
    const FORMS: [&str; 5] = [
        "@everyone",
        "@here",
        "<@1100000000000009999>",
        "<@&1100000000000008888>",
        "[click-me](https://evil.example)",
    ];
    let mut answers = Vec::new();
    for form in FORMS {
        let text = |name: &str, value: String| json!({"type": 3, "name": name, "value": value});
        answers.push(
            env.command(
                "alice",
                "start",
                json!([
                    text("service", form.to_string()),
                    text("version", "v1".into())
                ]),
            )
            .await,
        );
        answers.push(
            env.command(
                "alice",
                "incident",
                json!([
                    text("summary", format!("{form} is down")),
                    text("severity", "medium".into())
                ]),
            )
            .await,
        );
        answers.push(
            env.command(
                "alice",
                "rollback",
                json!([text("reason", format!("{form} broke it"))]),
            )
            .await,
        );
    }
    let store = tminus::store::Store::connect(&env.db.url).await.unwrap();
    crate::fakes::drained(&store, "the mentions").await;
    let calls: Vec<_> = env
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.path.contains("/messages"))
        .collect();
    assert!(
        calls.len() > 5,
        "messages were sent: {:?}\n{answers:#?}",
        env.fake
            .calls()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect::<Vec<_>>()
    );
    let bodies = calls
        .iter()
        .map(|c| &c.body)
        .chain(answers.iter().map(|a| &a["data"]));
    for body in bodies {
        // Thread names and the like are not messages: they notify nobody.
        if body.get("content").is_none() && body.get("embeds").is_none() {
            continue;
        }
        let parse = &body["allowed_mentions"]["parse"];
        assert!(
            parse
                .as_array()
                .is_some_and(|p| p.iter().all(|v| v == "users")),
            "every message limits its mentions: {body}"
        );
        // Only a user mention could notify (the parse list never names
        // everyone or roles): the one typed must not be in content that
        // allows user mentions.
        let content = body["content"].as_str().unwrap_or_default();
        if !parse.as_array().unwrap().is_empty() {
            assert!(
                !content.contains(FORMS[2]),
                "content pings a typed user: {body}"
            );
        }
        // Masked links work in content and embed descriptions (an embed's
        // title is plain text there).
        let linked = body["embeds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["description"].as_str().unwrap_or_default())
            .chain([content]);
        for text in linked {
            let (all, escaped) = (
                text.matches("[click-me](").count(),
                text.matches("\\[click-me](").count(),
            );
            assert_eq!(all, escaped, "a live masked link: {body}");
        }
    }
}

/// A command typed in a run's thread without a number means that run, not
/// the channel's latest: `/deploy status` in run #1's thread shows #1 while
/// #2 is newer; typed in the channel it shows #2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_a_runs_thread_acts_on_that_run() {
    let env = DiscordEnv::start(sqlite_db()).await;
    env.start_run("first-svc", "v1", "web-service").await;
    let thread = env.first_card("run #1's thread").await;
    env.start_run("second-svc", "v2", "web-service").await;
    let env = &env;
    let status_in = |channel: String| async move {
        let payload = interaction(
            &env.config,
            "alice",
            2,
            &channel,
            deploy_command("status", json!([])),
        );
        crate::helpers::all_strings(&env.send(&payload).await)
    };
    let in_thread = status_in(thread.clone()).await;
    assert!(
        in_thread.contains("first-svc") && !in_thread.contains("second-svc"),
        "{in_thread}"
    );
    let in_channel = status_in(env.channel.clone()).await;
    assert!(in_channel.contains("second-svc"), "{in_channel}");
}
