//! Group commit under a crash: the real `tminus serve` takes a storm of
//! signed Slack requests from 48 clients at once — `/deploy start` commands
//! and clicks that each mark a different item done — and is killed with
//! SIGKILL in the middle of it, while requests are in flight and writes of
//! several requests share an open transaction. Afterwards every request
//! that was answered is in the database whole, and every request that was
//! not answered is either whole or absent: its run, its audit entry, its
//! outgoing messages and its request key are all there or none are.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tminus::chat::buttons;
use tminus::domain::{Action, Platform, RunId};

use crate::fakes::{wait_until, Fake};
use crate::helpers::{all_dbs, config, first_items, slack_command, ServeProcess, TestDb};

const SECRET: &str = "exactly-once-secret";
const CLIENTS: usize = 48;
const RUNS: usize = 12;
const RUNBOOK: &str = "workflow-release";

/// One request the storm sent, and whether its answer came back.
#[derive(Clone, Debug)]
enum Sent {
    Start {
        service: String,
        trigger: String,
    },
    Click {
        run: i64,
        item: String,
        trigger: String,
    },
}

fn signed(http: &reqwest::Client, url: String, body: String) -> reqwest::RequestBuilder {
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = tminus::slack::verify::sign(SECRET.as_bytes(), &ts, body.as_bytes());
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .timeout(Duration::from_secs(10))
        .body(body)
}

fn request(http: &reqwest::Client, serve_url: &str, sent: &Sent) -> reqwest::RequestBuilder {
    let cfg = config();
    let alice = cfg.directory.people[&tminus::domain::PersonId::new("alice")]
        .slack
        .clone()
        .unwrap();
    let channel = cfg.channels["slack"].deployments.clone();
    match sent {
        Sent::Start { service, trigger } => {
            let body = serde_urlencoded::to_string([
                ("command", "/deploy"),
                ("text", &format!("start {service} v1 --runbook {RUNBOOK}")),
                ("user_id", &alice),
                ("channel_id", &channel),
                ("trigger_id", trigger),
            ])
            .unwrap();
            signed(http, format!("{serve_url}/slack/commands"), body)
        }
        Sent::Click { run, item, trigger } => {
            let action = Action::ItemDone {
                phase: "pre-deployment".into(),
                item: item.clone(),
            };
            let payload = json!({
                "type": "block_actions",
                "user": {"id": alice, "team_id": "T0TEAM"},
                "team": {"id": "T0TEAM"},
                "trigger_id": trigger,
                "channel": {"id": channel},
                "message": {"ts": "1700000000.000002", "thread_ts": "1700000000.000001"},
                "actions": [{"action_id": buttons::encode(RunId(*run), &action), "type": "button"}],
            });
            let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
            signed(http, format!("{serve_url}/slack/interactions"), body)
        }
    }
}

/// Whether the answer is the one a committed change gets.
fn answered_well(sent: &Sent, status: u16, body: &str) -> bool {
    status == 200
        && match sent {
            Sent::Start { .. } => body.contains("Started deployment"),
            Sent::Click { .. } => body.is_empty(),
        }
}

async fn scalar(pool: &sqlx::AnyPool, sql: &str, args: &[&str]) -> i64 {
    let q = args.iter().fold(
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string())),
        |q, a| q.bind(a.to_string()),
    );
    q.fetch_one(pool).await.unwrap()
}

async fn killed_mid_batch(db: TestDb) {
    let kind = db.kind;
    let fake = Fake::start(Platform::Slack).await;
    let mut serve = ServeProcess::start(&db.url, &fake.env(&[]));
    let http = reqwest::Client::new();
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();

    // Runs to click on, started before the storm.
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let text = slack_command(
            &http,
            &serve,
            SECRET,
            "alice",
            &format!("start pre-{i} v1 --runbook {RUNBOOK}"),
        )
        .await;
        assert!(text.contains("Started deployment"), "[{kind}] {text}");
        let id = scalar(
            &pool,
            "SELECT id FROM runs WHERE service = $1",
            &[&format!("pre-{i}")],
        )
        .await;
        runs.push(id);
    }
    let items = first_items(RUNBOOK, 8);
    // Every (run, item) pair once: 96 clicks, each a change of its own.
    let mut clicks: Vec<Sent> = Vec::new();
    for (k, item) in items.iter().enumerate() {
        for (r, run) in runs.iter().enumerate() {
            clicks.push(Sent::Click {
                run: *run,
                item: item.clone(),
                trigger: format!("storm-click-{r}-{k}"),
            });
        }
    }

    let answered = Arc::new(AtomicUsize::new(0));
    let sent: Arc<Mutex<Vec<(Sent, bool)>>> = Arc::default();
    let url = serve.url("");
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let mine: Vec<Sent> = clicks.iter().skip(t).step_by(CLIENTS).cloned().collect();
            let (http, url, answered, sent) =
                (http.clone(), url.clone(), answered.clone(), sent.clone());
            tokio::spawn(async move {
                let mut mine = mine.into_iter();
                for j in 0.. {
                    let next = match mine.next() {
                        Some(click) if j % 2 == 0 => click,
                        _ => Sent::Start {
                            service: format!("storm-{t}-{j}"),
                            trigger: format!("storm-start-{t}-{j}"),
                        },
                    };
                    let result = request(&http, &url, &next).send().await;
                    let ok = match result {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            match resp.text().await {
                                Ok(body) => answered_well(&next, status, &body),
                                Err(_) => false,
                            }
                        }
                        Err(_) => false,
                    };
                    sent.lock().unwrap().push((next, ok));
                    if !ok {
                        return;
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_until(&format!("[{kind}] 150 answers"), || {
        answered.load(Ordering::SeqCst) >= 150
    })
    .await;
    serve.kill();
    for t in tasks {
        t.await.unwrap();
    }

    let sent = sent.lock().unwrap().clone();
    let unanswered = sent.iter().filter(|(_, ok)| !ok).count();
    assert!(
        unanswered >= CLIENTS / 2,
        "[{kind}] the kill should catch requests in flight ({unanswered} unanswered)"
    );
    let mut whole_unanswered = 0;
    let mut seen = HashSet::new();
    for (req, ok) in &sent {
        let (key, pieces) = match req {
            Sent::Start { service, trigger } => {
                let run = scalar(
                    &pool,
                    "SELECT COUNT(*) FROM runs WHERE service = $1",
                    &[service],
                )
                .await;
                let audit = scalar(&pool, "SELECT COUNT(*) FROM audit_log a JOIN runs r ON r.id = a.run_id WHERE r.service = $1", &[service]).await;
                let outbox = scalar(&pool, "SELECT COUNT(*) FROM outbox o JOIN runs r ON r.id = o.run_id WHERE r.service = $1", &[service]).await;
                (
                    format!("slack:cmd:{trigger}"),
                    vec![
                        ("run", run),
                        ("audit", audit.min(1)),
                        ("outbox", outbox.min(1)),
                    ],
                )
            }
            Sent::Click { run, item, trigger } => {
                let run = run.to_string();
                let done = scalar(&pool, "SELECT COUNT(*) FROM run_items WHERE run_id = CAST($1 AS BIGINT) AND item = $2 AND state = 'done'", &[&run, item]).await;
                let text = config().runbooks[RUNBOOK].phases[0]
                    .items
                    .iter()
                    .find(|i| &i.id == item)
                    .unwrap()
                    .text
                    .clone();
                let audit = scalar(&pool, "SELECT COUNT(*) FROM audit_log WHERE run_id = CAST($1 AS BIGINT) AND action = 'item.done' AND detail LIKE $2", &[&run, &format!("%: {text}")]).await;
                (
                    format!("slack:act:{trigger}"),
                    vec![("item done", done), ("audit", audit)],
                )
            }
        };
        assert!(seen.insert(key.clone()), "[{kind}] {key} sent twice");
        let recorded = scalar(
            &pool,
            "SELECT COUNT(*) FROM processed_requests WHERE request_key = $1",
            &[&key],
        )
        .await;
        let all = std::iter::once(("request key", recorded)).chain(pieces);
        let counts: Vec<(&str, i64)> = all.collect();
        if *ok {
            assert!(
                counts.iter().all(|(_, n)| *n == 1),
                "[{kind}] {req:?} was answered but is not all in the database: {counts:?}"
            );
        } else {
            let whole = counts.iter().all(|(_, n)| *n == 1);
            let absent = counts.iter().all(|(_, n)| *n == 0);
            assert!(
                whole || absent,
                "[{kind}] {req:?} was not answered and is half applied: {counts:?}"
            );
            whole_unanswered += usize::from(whole);
        }
    }
    eprintln!(
        "[{kind}] {} requests sent, {unanswered} unanswered at the kill, {whole_unanswered} of those committed",
        sent.len()
    );

    // The database is whole: a new process starts on it and goes on.
    let serve = ServeProcess::start(&db.url, &fake.env(&[]));
    let text = slack_command(
        &http,
        &serve,
        SECRET,
        "alice",
        &format!("start after v1 --runbook {RUNBOOK}"),
    )
    .await;
    assert!(
        text.contains("Started deployment"),
        "[{kind}] after the restart: {text}"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_batch_keeps_every_answered_request_and_half_applies_none() {
    for db in all_dbs().await {
        killed_mid_batch(db).await;
    }
}
