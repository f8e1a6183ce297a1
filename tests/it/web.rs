//! Run pages and metrics, seen from outside: a run walked through its
//! phases, sign-offs and a monitoring window (readings from a fake
//! Prometheus), with a critical verdict's incident acknowledged; then the
//! real `tminus serve` on that database shows it. Debian's Chromium opens
//! the page through a signed link, the rendered page is checked for the
//! phases, sign-offs, verdicts and charts, and its screenshot must not be
//! blank. Forged, altered and expired links get 403. `/metrics` passes
//! `promtool check metrics` and its counters move when a run is driven.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use tminus::chat::buttons;
use tminus::clock::{Clock, VirtualClock};
use tminus::config::{Config, Secret};
use tminus::domain::{Action, IncidentAction, Platform, RoleId, RunId};
use tminus::engine::{command, Actor, Engine, Request};
use tminus::scheduler::Scheduler;
use tminus::store::Store;
use tminus::web::access::{Scope, WebAccess};

use crate::fake_slack::{FakeSlack, BOT_TOKEN};
use crate::helpers::{config_with, slack_command, slack_post, sqlite_db, tool, ServeProcess};

const WEB_SECRET: &str = "web-test-secret";
const WEB_TOKEN: &str = "web-test-token";

/// A fake Prometheus answering instant queries `errors` and `latency`
/// with whatever the test set last.
pub(crate) async fn fake_prometheus(values: Arc<Mutex<(f64, f64)>>) -> String {
    let app = Router::new().route(
        "/api/v1/query",
        get(move |Query(q): Query<BTreeMap<String, String>>| {
            let values = values.clone();
            async move {
                let (errors, latency) = *values.lock().unwrap();
                let v = match q.get("query").map(String::as_str) {
                    Some("errors") => errors,
                    _ => latency,
                };
                axum::Json(
                    serde_json::json!({"status": "success", "data": {"resultType": "vector",
                    "result": [{"metric": {}, "value": [1_700_000_000.0, v.to_string()]}]}}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

pub(crate) fn watched_runbook(prometheus: &str) -> String {
    format!(
        r#"name = "Watched release"
escalation = "go-live-critical"

[[phases]]
id = "prepare"
title = "Prepare the release"
signoffs = [{{ role = "qa", quorum = 1 }}]
  [[phases.items]]
  id = "tests"
  text = "Tests pass on the release commit"

[[phases]]
id = "production"
title = "Ship to production"
signoffs = [{{ role = "devops", quorum = 1 }}]
  [[phases.items]]
  id = "deploy"
  text = "Deploy to production"
  production_deploy = true

[[phases]]
id = "watch"
title = "Watch the first half hour"
  [[phases.items]]
  id = "dashboards"
  text = "Dashboards look normal"

[rollback]
roles = ["devops"]
id = "rollback"
title = "Roll back"
  [[rollback.items]]
  id = "redeploy"
  text = "Deploy the previous version again"

[monitoring]
schedule = [{{ every = "5m", until = "30m" }}]
[[monitoring.probes]]
name = "error rate"
prometheus = {{ url = "{prometheus}", query = "errors", measures = "error_rate" }}
[[monitoring.probes]]
name = "p95 latency"
prometheus = {{ url = "{prometheus}", query = "latency", measures = "latency" }}
[[monitoring.matrix]]
severity = "critical"
error_rate_above = 0.05
latency_above = "2s"
action = "Roll back at once"
[[monitoring.matrix]]
severity = "high"
error_rate_above = 0.02
latency_above = "1s"
action = "Roll back or fix forward"
"#
    )
}

/// Walk run #1 of the `watched` runbook in the shell's channel with a
/// virtual clock: every phase, both sign-offs, the whole window (a critical
/// spike at T+20m opens an incident, which Bruno acknowledges).
async fn walk_a_run(config_dir: &Path, db_url: &str) {
    let config = Arc::new(Config::load(config_dir).unwrap());
    let store = Store::connect(db_url).await.unwrap();
    let start: DateTime<Utc> = "2026-11-23T09:00:00Z".parse().unwrap();
    let clock = Arc::new(VirtualClock::new(start));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let engine = Engine::new(store.clone(), config, dyn_clock);
    let scheduler = Scheduler::new(engine.clone());
    let act = |who: &'static str, request: Request| {
        let engine = engine.clone();
        let actor = Actor {
            platform: Platform::Shell,
            user: who.to_string(),
            channel: "#deployments".into(),
        };
        async move {
            let reply = engine.handle(&actor, request, None).await;
            assert!(!reply.refused, "{who}: {}", reply.text);
            reply
        }
    };
    let click = |action: Action| Request::click(&buttons::encode(RunId(1), &action), None).unwrap();
    let cmd = |text: &str| Request::Command(command::parse(text).unwrap());
    act("alice", cmd("start storefront v4.2.0 --runbook watched")).await;
    let (p, q) = ("prepare".to_string(), "production".to_string());
    act(
        "alice",
        click(Action::ItemDone {
            phase: p.clone(),
            item: "tests".into(),
        }),
    )
    .await;
    act(
        "chen",
        click(Action::SignOff {
            phase: p.clone(),
            role: RoleId::new("qa"),
        }),
    )
    .await;
    act("alice", click(Action::Advance { phase: p })).await;
    clock.set(start + Duration::minutes(12));
    act(
        "alice",
        click(Action::ItemDone {
            phase: q.clone(),
            item: "deploy".into(),
        }),
    )
    .await;
    act(
        "emeka",
        click(Action::SignOff {
            phase: q.clone(),
            role: RoleId::new("devops"),
        }),
    )
    .await;
    act("alice", click(Action::Advance { phase: q })).await;
    // The window: T+5 … T+30, with a spike at T+15 (high) and T+20 (critical).
    let t0 = start + Duration::minutes(12);
    for (minute, errors, latency) in [
        (5, 0.004, 0.31),
        (10, 0.006, 0.35),
        (15, 0.03, 0.9),
        (20, 0.08, 2.4),
        (25, 0.012, 0.6),
        (30, 0.005, 0.4),
    ] {
        *VALUES.lock().unwrap() = (errors, latency);
        clock.set(t0 + Duration::minutes(minute));
        scheduler.run_due(clock.now()).await.unwrap();
        if minute == 20 {
            clock.set(t0 + Duration::minutes(22));
            let ack =
                Request::click(&buttons::incident(1, &IncidentAction::Acknowledge), None).unwrap();
            act("bruno", ack).await;
        }
    }
    let run = store.run(RunId(1)).await.unwrap().unwrap();
    assert_eq!(
        run.status.as_str(),
        "active",
        "the window's end ends monitoring, not the run"
    );
    let w = "watch".to_string();
    act(
        "alice",
        click(Action::ItemDone {
            phase: w.clone(),
            item: "dashboards".into(),
        }),
    )
    .await;
    let actor = Actor {
        platform: Platform::Shell,
        user: "alice".into(),
        channel: "#deployments".into(),
    };
    let refused = engine
        .handle(&actor, click(Action::Advance { phase: w.clone() }), None)
        .await;
    assert!(
        refused.refused && refused.text.contains("incident #1 is still open"),
        "an open incident keeps the run from completing: {}",
        refused.text
    );
    let resolve = Request::click(
        &buttons::incident(1, &IncidentAction::Resolve { note: None }),
        Some("spike from a cache flush; recovered".into()),
    )
    .unwrap();
    act("bruno", resolve).await;
    act("alice", click(Action::Advance { phase: w })).await;
    let run = store.run(RunId(1)).await.unwrap().unwrap();
    assert_eq!(run.status.as_str(), "completed", "its last phase walked");
    store.close().await;
}

/// The fake Prometheus's answers, set by `walk_a_run` tick by tick.
static VALUES: std::sync::LazyLock<Arc<Mutex<(f64, f64)>>> =
    std::sync::LazyLock::new(|| Arc::new(Mutex::new((0.0, 0.0))));

fn access() -> WebAccess {
    WebAccess {
        secret: Some(Secret::new(WEB_SECRET.into())),
        token: None,
        public_url: None,
        ttl: tminus::domain::Dur::from_mins(60),
    }
}

async fn fetch(url: &str, bearer: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, kind, resp.text().await.unwrap())
}

/// Headless Chromium as the machine's probe starts it: no sandbox as root,
/// no background connections (the network is closed), a fresh profile.
fn chromium(binary: &Path, profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// Whether a PNG shows something: many colours, and a fair share of
/// pixels that are not the background.
fn not_blank(png_path: &Path) -> (usize, f64) {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    let mut background = 0usize;
    let pixels: Vec<&[u8]> = bytes.chunks(step).collect();
    let first = pixels[0][..3].to_vec();
    for px in &pixels {
        colours.insert(px[..3].to_vec());
        if px[..3] == first[..] {
            background += 1;
        }
    }
    (colours.len(), 1.0 - background as f64 / pixels.len() as f64)
}

#[tokio::test]
async fn a_run_page_opens_through_a_signed_link_in_a_browser() {
    let browser = tool("chromium");
    let prometheus = fake_prometheus(VALUES.clone()).await;
    let dir = config_with("", &[("watched", &watched_runbook(&prometheus))]);
    let db = sqlite_db();
    walk_a_run(dir.path(), &db.url).await;
    let serve = ServeProcess::start_with(
        dir.path(),
        &db.url,
        &[
            ("TMINUS_WEB_SECRET", WEB_SECRET.to_string()),
            ("TMINUS_WEB_TOKEN", WEB_TOKEN.to_string()),
        ],
    );
    let now = Utc::now();
    let query = access()
        .query(Scope::Run(RunId(1)), now + Duration::minutes(30))
        .unwrap();
    let page_url = serve.url(&format!("/runs/1?{query}"));

    // What the server answers.
    let (status, kind, html) = fetch(&page_url, None).await;
    assert_eq!(status, 200, "{html}");
    assert!(kind.starts_with("text/html"), "{kind}");
    for expected in [
        "storefront v4.2.0",
        "Prepare the release",
        "Ship to production",
        "Watch the first half hour",
        "Chen Wei",
        "Emeka Eze",
        "critical",
        "<svg",
        "error rate",
        "p95 latency",
        "Acknowledged by Bruno Ferreira",
        "Resolved by Bruno Ferreira",
        "Timeline",
    ] {
        assert!(html.contains(expected), "the page lacks {expected:?}");
    }
    assert!(!html.contains(WEB_SECRET) && !html.contains(WEB_TOKEN));
    // The page names the runbook version the run follows and shows its text.
    let version = tminus::config::Config::load(dir.path()).unwrap().runbooks["watched"]
        .version
        .clone();
    let label = format!("watched @ {}", version.short());
    assert!(
        html.contains(&format!("<a href=\"#runbook\">{label}</a>")),
        "{html}"
    );
    assert!(
        html.contains(&format!("<h2>Runbook {label}</h2>")),
        "{html}"
    );
    let first_line = version
        .source
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap();
    assert!(
        html.contains(&tminus::web::pages::escape(first_line)),
        "the page lacks the runbook text {first_line:?}"
    );
    let (status, kind, md) = fetch(&serve.url(&format!("/runs/1/report.md?{query}")), None).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/markdown"), "{kind}");
    assert!(
        md.starts_with("# Deployment report: storefront v4.2.0 (#1)"),
        "{md}"
    );
    let (status, _, json) = fetch(&serve.url(&format!("/runs/1.json?{query}")), None).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["status"], "completed");
    assert_eq!(json["runbook_version"], version.hash.as_str());
    assert_eq!(json["monitoring"].as_array().unwrap().len(), 6);
    assert_eq!(json["incidents"][0]["acknowledged_by"], "bruno");
    assert_eq!(json["signoffs"].as_array().unwrap().len(), 2);

    // Forged, altered, expired, missing: 403. The bearer token opens pages.
    let forged = tminus::web::access::sign(
        &Secret::new("not-the-secret".into()),
        Scope::Run(RunId(1)),
        (now + Duration::minutes(30)).timestamp(),
    );
    let exp = (now + Duration::minutes(30)).timestamp();
    let good_sig = query.split("sig=").nth(1).unwrap().to_string();
    let expired_exp = (now - Duration::minutes(1)).timestamp();
    let expired_sig = tminus::web::access::sign(
        &Secret::new(WEB_SECRET.into()),
        Scope::Run(RunId(1)),
        expired_exp,
    );
    for (what, path) in [
        ("forged", format!("/runs/1?exp={exp}&sig={forged}")),
        ("another run", format!("/runs/2?{query}")),
        (
            "a later expiry",
            format!("/runs/1?exp={}&sig={good_sig}", exp + 3600),
        ),
        (
            "expired",
            format!("/runs/1?exp={expired_exp}&sig={expired_sig}"),
        ),
        ("unsigned", "/runs/1".to_string()),
        ("the list with a run's link", format!("/runs?{query}")),
        ("the report, unsigned", "/runs/1/report.md".to_string()),
        (
            "the JSON, forged",
            format!("/runs/1.json?exp={exp}&sig={forged}"),
        ),
    ] {
        let (status, _, body) = fetch(&serve.url(&path), None).await;
        assert_eq!(status, 403, "{what}: {body}");
    }
    let (status, _, _) = fetch(&serve.url("/runs/1"), Some("wrong-token")).await;
    assert_eq!(status, 403);
    let (status, _, list) = fetch(&serve.url("/runs"), Some(WEB_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        list.contains("storefront v4.2.0 #1") && list.contains("/runs/1?exp="),
        "{list}"
    );

    // What a person sees: Chromium renders the page from the signed link.
    let Some(browser) = browser else {
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(&browser, profile.path(), &["--dump-dom", &page_url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "<h3>Prepare the release</h3>",
        "Ship to production",
        "✓ Chen Wei",
        "✓ Emeka Eze",
        "s-critical",
        "<polyline",
        "critical above 5.0%",
        "critical above 2.00 s",
    ] {
        assert!(
            dom.contains(expected),
            "the rendered page lacks {expected:?}"
        );
    }
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        &browser,
        profile.path(),
        &[
            "--window-size=480,2600",
            &format!("--screenshot={}", shot.display()),
            &page_url,
        ],
    );
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (colours, drawn) = not_blank(&shot);
    assert!(colours > 50, "the screenshot has only {colours} colours");
    assert!(
        drawn > 0.05,
        "only {:.1}% of the screenshot is drawn",
        drawn * 100.0
    );
    if let Some(keep) = std::env::var_os("TMINUS_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// Values of one metric family, by its label set, from Prometheus text.
fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn metric(text: &str, name: &str, labels: &str) -> f64 {
    *samples(text, name)
        .get(labels)
        .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
}

async fn scrape(serve: &ServeProcess) -> String {
    let (status, kind, text) = fetch(&serve.url("/metrics"), None).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    if let Some(promtool) = tool("promtool") {
        use std::io::Write;
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool rejects /metrics:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text
}

#[tokio::test]
async fn metrics_parse_and_move_when_a_run_is_driven() {
    const SECRET: &str = "metrics-signing-secret";
    let db = sqlite_db();
    let fake = FakeSlack::start().await;
    let serve = ServeProcess::start(
        &db.url,
        &[
            ("SLACK_BOT_TOKEN", BOT_TOKEN.to_string()),
            ("SLACK_SIGNING_SECRET", SECRET.to_string()),
            ("SLACK_API_URL", fake.api_url()),
        ],
    );
    let before = scrape(&serve).await;
    let slack = "platform=\"slack\"";
    assert_eq!(metric(&before, "tminus_commands_total", slack), 0.0);
    assert_eq!(metric(&before, "tminus_runs", "status=\"active\""), 0.0);

    let http = reqwest::Client::new();
    let answer = slack_command(
        &http,
        &serve,
        SECRET,
        "alice",
        "start api v1 --runbook quickstart",
    )
    .await;
    assert!(answer.contains("Started deployment #1"), "{answer}");
    let click = serde_json::json!({
        "type": "block_actions",
        "user": {"id": "U0ALICE"},
        "channel": {"id": "C0DEPLOYS"},
        "trigger_id": "metrics-click-1",
        "message": {"ts": "1.1"},
        "actions": [{"action_id": buttons::encode(RunId(1), &Action::ItemDone {
            phase: "prepare".into(), item: "tests".into() }), "type": "button"}]
    });
    let body = serde_urlencoded::to_string([("payload", click.to_string())]).unwrap();
    slack_post(
        &http,
        &serve,
        SECRET,
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        body,
    )
    .await;
    let answer = slack_command(
        &http,
        &serve,
        SECRET,
        "alice",
        "incident api down --severity critical",
    )
    .await;
    assert!(answer.contains("Opened incident #1"), "{answer}");
    fake.wait_for("the page", |calls| {
        calls.iter().any(|c| c.all_text().contains("You are paged"))
    })
    .await;

    // Until the outbox has drained.
    let mut after = scrape(&serve).await;
    for _ in 0..100 {
        if metric(&after, "tminus_outbox_depth", "") == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = scrape(&serve).await;
    }
    assert_eq!(metric(&after, "tminus_commands_total", slack), 2.0);
    assert_eq!(metric(&after, "tminus_clicks_total", slack), 1.0);
    assert_eq!(metric(&after, "tminus_ack_latency_seconds_count", ""), 3.0);
    assert_eq!(
        metric(&after, "tminus_ack_latency_seconds_bucket", "le=\"+Inf\""),
        3.0
    );
    assert_eq!(metric(&after, "tminus_runs", "status=\"active\""), 1.0);
    assert_eq!(
        metric(&after, "tminus_incidents", "status=\"triggered\""),
        1.0
    );
    assert_eq!(metric(&after, "tminus_pages_total", slack), 1.0);
    assert_eq!(metric(&after, "tminus_outbox_depth", ""), 0.0);
    let delivered = metric(&after, "tminus_outbox_delivered_total", slack);
    let posts = fake
        .calls()
        .iter()
        .filter(|c| c.ok() && (c.method == "chat.postMessage" || c.method == "chat.update"))
        .count() as f64;
    assert!(delivered >= 5.0, "{delivered} delivered");
    assert_eq!(
        delivered, posts,
        "one delivery per message the fake Slack received"
    );
    assert!(
        metric(&after, "tminus_timers_pending", "") >= 1.0,
        "the next escalation step waits"
    );
}
