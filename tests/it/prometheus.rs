//! Monitoring against a real Prometheus (Debian's package): it scrapes, every
//! second, a test target whose request and error counters and latency
//! histogram the test controls. Healthy traffic judges low; errors at 8%
//! turn critical within two ticks, open an incident and offer "Roll back";
//! lowering them again shows recovery.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;

use crate::helpers::{bot_config, sqlite_db, tool, ShellSession};

/// Counters the target exposes; traffic adds to them ten times a second.
#[derive(Default)]
struct Traffic {
    total: AtomicU64,
    errors: AtomicU64,
    /// Errors per 1000 requests.
    error_permille: AtomicU64,
}

impl Traffic {
    fn metrics(&self) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        // Latency: every request under 100 ms.
        format!(
            "# TYPE http_requests_total counter\n\
             http_requests_total{{status=\"200\"}} {ok}\n\
             http_requests_total{{status=\"500\"}} {errors}\n\
             # TYPE http_request_duration_seconds histogram\n\
             http_request_duration_seconds_bucket{{le=\"0.1\"}} {total}\n\
             http_request_duration_seconds_bucket{{le=\"0.5\"}} {total}\n\
             http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
             http_request_duration_seconds_sum {sum}\n\
             http_request_duration_seconds_count {total}\n",
            ok = total - errors,
            sum = total as f64 * 0.05,
        )
    }
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_prometheus(binary: &Path, dir: &Path, target: &str) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: target\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !reqwest::get(format!("{url}/-/ready"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Prometheus { child, url }
}

/// A copy of the bundled configuration with a runbook watching this target.
fn config_dir(dir: &Path, prometheus: &str, target: &str) -> PathBuf {
    let out = dir.join("bot-config");
    std::fs::create_dir_all(out.join("runbooks")).unwrap();
    let bot = std::fs::read_to_string(bot_config().join("tminus.toml")).unwrap();
    let bot = bot.replace(
        "default_runbook = \"web-service\"",
        "default_runbook = \"watched\"",
    );
    std::fs::write(out.join("tminus.toml"), bot).unwrap();
    std::fs::write(
        out.join("runbooks/watched.toml"),
        format!(
            r#"name = "Watched"
abort_roles = ["devops"]

[[phases]]
id = "ship"
title = "Ship"
  [[phases.items]]
  id = "deploy"
  text = "Deploy to production"
  production_deploy = true

[rollback]
roles = ["devops"]
id = "rollback"
title = "Roll back"
  [[rollback.items]]
  id = "redeploy"
  text = "Deploy the previous version"

[monitoring]
schedule = [{{ every = "2s", until = "10m" }}]
[[monitoring.probes]]
name = "health"
http = {{ url = "http://{target}/health", expect_status = 200, timeout = "2s" }}
[[monitoring.probes]]
name = "error rate"
prometheus = {{ url = "{prometheus}", query = 'sum(rate(http_requests_total{{status="500"}}[4s])) / sum(rate(http_requests_total[4s]))', measures = "error_rate" }}
[[monitoring.probes]]
name = "p95 latency"
prometheus = {{ url = "{prometheus}", query = 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[4s])))', measures = "latency" }}
[[monitoring.matrix]]
severity = "critical"
error_rate_above = 0.05
latency_above = "2s"
action = "Roll back now"
[[monitoring.matrix]]
severity = "high"
error_rate_above = 0.02
latency_above = "1s"
action = "Roll back or fix forward"
[[monitoring.matrix]]
severity = "medium"
error_rate_above = 0.01
latency_above = "500ms"
action = "Monitor and fix forward"
[[monitoring.matrix]]
severity = "low"
action = "Fix in the next release"
"#
        ),
    )
    .unwrap();
    out
}

/// Let Prometheus see a few seconds of the current traffic, then tick.
async fn tick(s: &mut ShellSession) -> String {
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.send("wait 2s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_turns_eight_percent_errors_into_a_critical_verdict() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let traffic = Arc::new(Traffic::default());
    traffic.error_permille.store(1, Ordering::Relaxed);
    let app = {
        let t = traffic.clone();
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/metrics",
                get(move || {
                    let t = t.clone();
                    async move { t.metrics() }
                }),
            )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    {
        let t = traffic.clone();
        tokio::spawn(async move {
            loop {
                t.total.fetch_add(1000, Ordering::Relaxed);
                t.errors
                    .fetch_add(t.error_permille.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let tmp = tempfile::tempdir().unwrap();
    let prometheus = start_prometheus(&binary, tmp.path(), &target).await;
    // Wait until Prometheus has scraped enough for a rate.
    let started = Instant::now();
    loop {
        let body: serde_json::Value = reqwest::get(format!(
            "{}/api/v1/query?query=sum(rate(http_requests_total[4s]))",
            prometheus.url
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if body["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus never scraped the target: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dir = config_dir(tmp.path(), &prometheus.url, &target);
    let db = sqlite_db();
    let mut s = ShellSession::start_with(&db.url, "emeka", &dir);
    s.send("/deploy start payments-api v2.4.0 --runbook watched");
    s.press("Done: Deploy to production", None);

    // Healthy traffic: low.
    let out = tick(&mut s).await;
    assert!(out.contains("Verdict: LOW"), "{out}");
    assert!(out.contains("error rate: 0.1%"), "{out}");

    // Errors up to 8%: critical within two ticks, an incident, "Roll back".
    traffic.error_permille.store(80, Ordering::Relaxed);
    let mut seen = String::new();
    for _ in 0..2 {
        seen.push_str(&tick(&mut s).await);
        if seen.contains("Verdict: CRITICAL") {
            break;
        }
    }
    assert!(seen.contains("Verdict: CRITICAL"), "{seen}");
    assert!(seen.contains("Incident #1"), "{seen}");
    assert!(
        seen.contains("#incidents"),
        "the incident is announced in the incidents channel: {seen}"
    );
    assert!(
        s.button("Roll back").is_some(),
        "Roll back is offered: {seen}"
    );

    // Errors down again: recovery is said.
    traffic.error_permille.store(1, Ordering::Relaxed);
    let mut seen = String::new();
    for _ in 0..3 {
        seen.push_str(&tick(&mut s).await);
        if seen.contains("recovered") {
            break;
        }
    }
    assert!(seen.contains("✅ Monitoring: recovered"), "{seen}");
    s.quit();
    drop(prometheus);
}
