//! Acknowledgement latency and throughput: signed Slack slash commands and
//! button clicks, and signed Discord interactions, sent to the real `tminus
//! serve` over HTTP at several concurrencies. Every request changes state —
//! a command starts a run, a click toggles an item or records a sign-off on
//! a live run — and the engine commits it before it answers; after each
//! batch the audit log is counted to show every change is on disk.
//!
//! Requests are built and signed before the clock starts, so the figures
//! are the server's (plus loopback HTTP), not the benchmark's signing.

use std::time::{Duration, Instant};

use anyhow::Result;
use ed25519_dalek::Signer;
use serde_json::{json, Value};
use tminus::chat::buttons;
use tminus::config::Config;
use tminus::domain::{Action, PersonId, RoleId, RunId};
use tminus::slack::verify::sign;

use crate::fake::{Fake, DISCORD_APP_ID};
use crate::procs::{discord_key, loadavg, Serve, SLACK_SECRET};
use crate::report::{ms, Latencies, Report, Target};
use crate::setup::{count, BenchConfig, Db, Sizes, ITEMS, SIGNERS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SlackCommand,
    DiscordCommand,
    SlackClick,
    DiscordClick,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::SlackCommand => "Slack /deploy start",
            Kind::DiscordCommand => "Discord /deploy start",
            Kind::SlackClick => "Slack click",
            Kind::DiscordClick => "Discord click",
        }
    }

    pub fn is_click(self) -> bool {
        matches!(self, Kind::SlackClick | Kind::DiscordClick)
    }

    /// Whether an answer is the one a change gets.
    fn answered_well(self, body: &str) -> bool {
        match self {
            Kind::SlackCommand | Kind::DiscordCommand => body.contains("Started deployment"),
            // A refusal would be queued as an ephemeral message; the HTTP answer is empty.
            Kind::SlackClick => body.is_empty(),
            // Type 6: deferred update, the answer to a click that changed the run.
            Kind::DiscordClick => body == r#"{"type":6}"#,
        }
    }
}

/// A request ready to send.
pub struct Prepared {
    url: String,
    content_type: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

pub struct People<'a> {
    pub config: &'a Config,
}

impl People<'_> {
    fn slack(&self, person: &str) -> String {
        self.config.directory.people[&PersonId::new(person)]
            .slack
            .clone()
            .unwrap_or_default()
    }

    fn discord(&self, person: &str) -> String {
        self.config.directory.people[&PersonId::new(person)]
            .discord
            .clone()
            .unwrap_or_default()
    }
}

fn slack_signed(url: String, body: String) -> Prepared {
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = sign(SLACK_SECRET.as_bytes(), &ts, body.as_bytes());
    Prepared {
        url,
        content_type: "application/x-www-form-urlencoded",
        body,
        headers: vec![
            ("x-slack-request-timestamp", ts),
            ("x-slack-signature", sig),
        ],
    }
}

fn discord_signed(url: String, payload: &Value) -> Prepared {
    let body = payload.to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = discord_key().sign(format!("{ts}{body}").as_bytes());
    Prepared {
        url,
        content_type: "application/json",
        body,
        headers: vec![
            (
                "x-signature-ed25519",
                tminus::hex::encode(&signature.to_bytes()),
            ),
            ("x-signature-timestamp", ts),
        ],
    }
}

/// Every interaction's outer fields, as Discord sends them for a guild member.
fn interaction(id: u64, user: &str, channel: &str, kind: u64, data: Value) -> Value {
    json!({
        "id": id.to_string(), "application_id": DISCORD_APP_ID, "type": kind, "token": "interaction-token",
        "version": 1, "guild_id": "1100000000000000002", "channel_id": channel,
        "channel": {"id": channel, "type": 0},
        "member": {
            "user": {"id": user, "username": "bench", "discriminator": "0", "global_name": null, "avatar": null},
            "roles": [], "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false,
            "flags": 0, "permissions": "2147483647"
        },
        "app_permissions": "442368", "locale": "en-US", "entitlements": [],
        "authorizing_integration_owners": {"0": "1100000000000000002"}, "context": 0,
        "attachment_size_limit": 8388608, "data": data
    })
}

/// Which click each live run gets next, so that every click changes it:
/// mark the eight items done, take the twelve sign-offs, undo the items,
/// then keep toggling items.
pub struct ClickPlan {
    runs: Vec<i64>,
    next_op: Vec<usize>,
    cursor: usize,
}

impl ClickPlan {
    pub fn new(runs: Vec<i64>) -> ClickPlan {
        let next_op = vec![0; runs.len()];
        ClickPlan {
            runs,
            next_op,
            cursor: 0,
        }
    }

    /// The next click: (run, action, person key). Consecutive clicks go to
    /// consecutive runs, so concurrent requests rarely wait on one run's lock.
    fn next(&mut self) -> (RunId, Action, &'static str) {
        let i = self.cursor % self.runs.len();
        self.cursor += 1;
        let op = self.next_op[i];
        self.next_op[i] += 1;
        let phase = "work".to_string();
        let item = |k: usize| ITEMS[k % ITEMS.len()].to_string();
        let n = ITEMS.len();
        let (action, who) = if op < n {
            (
                Action::ItemDone {
                    phase,
                    item: item(op),
                },
                "alice",
            )
        } else if op < n + SIGNERS.len() {
            let (role, person) = SIGNERS[op - n];
            (
                Action::SignOff {
                    phase,
                    role: RoleId::new(role),
                },
                person,
            )
        } else {
            let k = op - n - SIGNERS.len();
            let undo = (k / n).is_multiple_of(2);
            let item = item(k);
            let action = if undo {
                Action::ItemUndo { phase, item }
            } else {
                Action::ItemDone { phase, item }
            };
            (action, "alice")
        };
        (RunId(self.runs[i]), action, who)
    }
}

pub struct Builder<'a> {
    pub serve: &'a Serve,
    pub people: People<'a>,
    pub slack_channel: String,
    pub discord_channel: String,
    pub seq: u64,
    pub slack_clicks: Option<ClickPlan>,
    pub discord_clicks: Option<ClickPlan>,
}

impl Builder<'_> {
    pub fn build(&mut self, kind: Kind) -> Prepared {
        self.seq += 1;
        let n = self.seq;
        match kind {
            Kind::SlackCommand => {
                let body = serde_urlencoded::to_string([
                    ("token", "unused"),
                    ("team_id", "T0TEAM"),
                    ("channel_id", self.slack_channel.as_str()),
                    ("user_id", &self.people.slack("alice")),
                    ("command", "/deploy"),
                    ("text", &format!("start svc-{n} v{n} --runbook bench")),
                    ("response_url", "https://hooks.slack.invalid/commands/1"),
                    ("trigger_id", &format!("bench-cmd-{n}")),
                ])
                .unwrap_or_default();
                slack_signed(self.serve.url("/slack/commands"), body)
            }
            Kind::SlackClick => {
                let plan = self.slack_clicks.as_mut().expect("runs to click on");
                let (run, action, who) = plan.next();
                let payload = json!({
                    "type": "block_actions",
                    "user": {"id": self.people.slack(who), "username": who, "team_id": "T0TEAM"},
                    "api_app_id": "A0APP", "team": {"id": "T0TEAM"},
                    "container": {"type": "message", "message_ts": "1700000000.000002", "channel_id": self.slack_channel, "is_ephemeral": false},
                    "trigger_id": format!("bench-click-{n}"),
                    "channel": {"id": self.slack_channel, "name": "deployments"},
                    "message": {"type": "message", "ts": "1700000000.000002", "thread_ts": "1700000000.000001", "text": "card"},
                    "response_url": "https://hooks.slack.invalid/actions/1",
                    "actions": [{"action_id": buttons::encode(run, &action), "block_id": "b1", "type": "button",
                                 "action_ts": "1700000001.000001", "text": {"type": "plain_text", "text": "x"}}]
                });
                let body = serde_urlencoded::to_string([("payload", payload.to_string())])
                    .unwrap_or_default();
                slack_signed(self.serve.url("/slack/interactions"), body)
            }
            Kind::DiscordCommand => {
                let data = json!({"id": "1100000000000000005", "name": "deploy", "type": 1,
                    "options": [{"type": 1, "name": "start", "options": [
                        {"type": 3, "name": "service", "value": format!("svc-{n}")},
                        {"type": 3, "name": "version", "value": format!("v{n}")},
                        {"type": 3, "name": "runbook", "value": "bench"}]}]});
                let payload = interaction(
                    1_200_000_000_000_000_000 + n,
                    &self.people.discord("alice"),
                    &self.discord_channel,
                    2,
                    data,
                );
                discord_signed(self.serve.url("/discord/interactions"), &payload)
            }
            Kind::DiscordClick => {
                let plan = self.discord_clicks.as_mut().expect("runs to click on");
                let (run, action, who) = plan.next();
                let data = json!({"custom_id": buttons::encode(run, &action), "component_type": 2});
                let payload = interaction(
                    1_200_000_000_000_000_000 + n,
                    &self.people.discord(who),
                    &self.discord_channel,
                    3,
                    data,
                );
                discord_signed(self.serve.url("/discord/interactions"), &payload)
            }
        }
    }
}

pub struct Cell {
    pub latencies: Latencies,
    pub wall: Duration,
    pub bad: usize,
}

/// Send `reqs` from `c` concurrent clients, each one request at a time.
pub async fn fire(client: &reqwest::Client, kind: Kind, reqs: Vec<Prepared>, c: usize) -> Cell {
    let mut lanes: Vec<Vec<Prepared>> = (0..c).map(|_| Vec::new()).collect();
    for (i, r) in reqs.into_iter().enumerate() {
        lanes[i % c].push(r);
    }
    let start = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(lane.len());
                let mut bad = 0;
                for r in lane {
                    let t = Instant::now();
                    let mut req = client
                        .post(&r.url)
                        .header("content-type", r.content_type)
                        .body(r.body);
                    for (k, v) in r.headers {
                        req = req.header(k, v);
                    }
                    match req.send().await {
                        Ok(resp) => {
                            let ok = resp.status().is_success();
                            let text = resp.text().await.unwrap_or_default();
                            lat.push(t.elapsed());
                            if !ok || !kind.answered_well(&text) {
                                bad += 1;
                            }
                        }
                        Err(_) => bad += 1,
                    }
                }
                (lat, bad)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut bad = 0;
    for t in tasks {
        if let Ok((lat, b)) = t.await {
            all.extend(lat);
            bad += b;
        }
    }
    Cell {
        latencies: Latencies::new(all),
        wall: start.elapsed(),
        bad,
    }
}

/// What one measured batch came to.
pub struct Measured {
    pub cell: Cell,
    pub rate: f64,
    /// Audit rows written while it ran.
    pub written: i64,
}

/// Send `reqs` from `c` clients and print the table row: `label`, the
/// latencies, the rate, the server's CPU per request and the audit rows
/// the batch wrote (one per request shows each answer followed its commit).
pub async fn measure(
    pool: &sqlx::AnyPool,
    serve: &Serve,
    client: &reqwest::Client,
    kind: Kind,
    reqs: Vec<Prepared>,
    c: usize,
    label: &str,
) -> Result<Measured> {
    let n = reqs.len();
    let audit0 = count(pool, "SELECT COUNT(*) FROM audit_log").await?;
    let cpu0 = serve.cpu();
    let cell = fire(client, kind, reqs, c).await;
    let cpu = serve.cpu().saturating_sub(cpu0);
    let written = count(pool, "SELECT COUNT(*) FROM audit_log").await? - audit0;
    let rate = n as f64 / cell.wall.as_secs_f64();
    let l = &cell.latencies;
    println!(
        "| {} | {label} | {n} | {:.2} | {:.2} | {:.2} | {:.2} | {rate:.0} | {:.2} | {written} of {n}{} |",
        kind.name(),
        ms(l.q(0.5)),
        ms(l.q(0.9)),
        ms(l.q(0.99)),
        ms(l.max()),
        ms(cpu) / n as f64,
        if cell.bad > 0 {
            format!(", {} bad answers", cell.bad)
        } else {
            String::new()
        },
    );
    Ok(Measured {
        cell,
        rate,
        written,
    })
}

/// Undelivered messages.
async fn queued(pool: &sqlx::AnyPool) -> Result<i64> {
    count(
        pool,
        "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
    )
    .await
}

/// Wait until every queued message is delivered, spending at most what is
/// left of `budget`; returns how many were still queued when it stopped.
pub async fn drain(pool: &sqlx::AnyPool, budget: &mut Duration) -> Result<i64> {
    let started = Instant::now();
    let mut left = queued(pool).await?;
    while left > 0 && started.elapsed() < *budget {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = queued(pool).await?;
    }
    *budget = budget.saturating_sub(started.elapsed());
    Ok(left)
}

pub async fn run_ids(pool: &sqlx::AnyPool, platform: &str) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT id FROM runs WHERE platform = $1 AND runbook = 'bench' ORDER BY id",
    )
    .bind(platform)
    .fetch_all(pool)
    .await?)
}

pub async fn run(
    db: &Db,
    cfg: &BenchConfig,
    fake: &Fake,
    sizes: &Sizes,
    report: &mut Report,
    logs: &std::path::Path,
) -> Result<()> {
    let name = db.kind.name();
    let serve = Serve::start(
        &cfg.path,
        &db.url,
        fake,
        logs.join(format!("ack-{name}.log")),
    )
    .await?;
    let pool = db.pool().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut builder = Builder {
        serve: &serve,
        people: People {
            config: &cfg.config,
        },
        slack_channel: cfg.config.channels["slack"].deployments.clone(),
        discord_channel: cfg.config.channels["discord"].deployments.clone(),
        seq: 0,
        slack_clicks: None,
        discord_clicks: None,
    };
    // Warm the connection pool and the server's caches with commands that
    // start runs too (they are counted nowhere).
    let warm: Vec<Prepared> = (0..32).map(|_| builder.build(Kind::SlackCommand)).collect();
    fire(&client, Kind::SlackCommand, warm, 16).await;

    println!("\n### Acknowledgements, {name} (load {})\n", loadavg());
    println!("| request | concurrency | requests | p50 ms | p90 ms | p99 ms | max ms | per second | server CPU ms/request | audit rows written |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let total_budget = sizes.drain_budget;
    let mut budget = total_budget;
    let mut undrained = Vec::new();
    for kind in [
        Kind::SlackCommand,
        Kind::DiscordCommand,
        Kind::SlackClick,
        Kind::DiscordClick,
    ] {
        if kind == Kind::SlackClick {
            builder.slack_clicks = Some(ClickPlan::new(run_ids(&pool, "slack").await?));
        }
        if kind == Kind::DiscordClick {
            builder.discord_clicks = Some(ClickPlan::new(run_ids(&pool, "discord").await?));
        }
        for (i, &c) in sizes.concurrency.iter().enumerate() {
            let reqs: Vec<Prepared> = (0..sizes.ack_requests[i])
                .map(|_| builder.build(kind))
                .collect();
            let n = reqs.len();
            // Each batch starts with nothing left to deliver from the one
            // before (thousands of root messages and cards after the start
            // batches) while the drain budget lasts; the messages it queues
            // itself are delivered during it.
            let left = drain(&pool, &mut budget).await?;
            if left > 0 {
                undrained.push(format!("{} at {c}: {left}", kind.name()));
            }
            let Measured {
                cell,
                rate,
                written,
            } = measure(&pool, &serve, &client, kind, reqs, c, &c.to_string()).await?;
            let l = &cell.latencies;
            let p99_target = (c == 16).then_some(Target::AtMost(5.0));
            report.add(
                format!("{} p99, concurrency {c}", kind.name()),
                db.kind,
                ms(l.q(0.99)),
                "ms",
                p99_target,
            );
            let rate_target = (kind.is_click() && c >= 16).then_some(Target::AtLeast(2000.0));
            report.add(
                format!("{} per second, concurrency {c}", kind.name()),
                db.kind,
                rate,
                "/s",
                rate_target,
            );
            if written != n as i64 || cell.bad > 0 {
                report.note(format!(
                    "{name}: {} at concurrency {c}: {written} audit rows for {n} requests, {} unexpected answers",
                    kind.name(),
                    cell.bad
                ));
            }
        }
    }
    println!(
        "\nWaiting for the outbox to drain before each batch took {:.1} s in all (at most {} s).",
        (total_budget - budget).as_secs_f64(),
        total_budget.as_secs()
    );
    if !undrained.is_empty() {
        println!(
            "Batches that started with messages still queued: {}.",
            undrained.join("; ")
        );
    }
    serve.note_errors(report, name, "the acknowledgement runs");
    pool.close().await;
    Ok(())
}
