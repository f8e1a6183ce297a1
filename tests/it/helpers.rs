//! Helpers for the integration tests: fresh databases, the bundled
//! configuration, and a driver for a real `tminus shell` process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use tminus::clock::{Clock, VirtualClock};
use tminus::config::Config;
use tminus::engine::Engine;
use tminus::store::Store;

/// The repository's bundled configuration directory.
pub fn bot_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bot-config")
}

pub fn config() -> Arc<Config> {
    Arc::new(Config::load(&bot_config()).expect("the bundled configuration loads"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database of one kind. SQLite files go with their temporary
/// directory; PostgreSQL databases (`tminus_it_*`) are left for inspection
/// and dropped by `.ci/run` before the next CI run.
pub struct TestDb {
    pub kind: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A new empty SQLite database file.
pub fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("tminus.db").display());
    TestDb {
        kind: "sqlite",
        url,
        _dir: Some(dir),
    }
}

/// A new empty PostgreSQL database, or `None` when `TEST_DATABASE_URL` is
/// not set (the test says it skips its PostgreSQL half). When it is set, an
/// unreachable server fails the test; under CI (`CI` set) an unset one does.
pub async fn postgres_db() -> Option<TestDb> {
    let admin_url = match std::env::var("TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but TEST_DATABASE_URL is not: CI runs the PostgreSQL tests"
            );
            eprintln!("TEST_DATABASE_URL is not set: skipping the PostgreSQL half of this test");
            return None;
        }
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("TEST_DATABASE_URL is set but PostgreSQL is unreachable");
    let name = format!(
        "tminus_it_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_millis()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (admin_url.clone(), String::new()),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => base[..i].to_string(),
        _ => base,
    };
    Some(TestDb {
        kind: "postgres",
        url: format!("{base}/{name}{query}"),
        _dir: None,
    })
}

impl TestDb {
    /// PostgreSQL: make the database read-only for new sessions and end
    /// the open ones, as a fail-over to a replica would (`on`), or writable
    /// again; the pools that used it reconnect to reads that work and
    /// writes that fail.
    pub async fn set_read_only(&self, on: bool) {
        use sqlx::Connection;
        let name = self
            .url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap();
        let admin_url = std::env::var("TEST_DATABASE_URL").expect("a PostgreSQL test");
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        let setting = if on { "on" } else { "off" };
        let mut statements = vec![format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = {setting}"
        )];
        if on {
            statements.push(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ));
        }
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}

/// The ids of the first `n` required items of a bundled runbook's first
/// phase (asserting it has that many).
pub fn first_items(runbook: &str, n: usize) -> Vec<String> {
    let items: Vec<String> = config().runbooks[runbook].phases[0]
        .items
        .iter()
        .filter(|i| !i.optional)
        .take(n)
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(
        items.len(),
        n,
        "the test wants {n} items in {runbook}'s first phase"
    );
    items
}

/// SQLite always, PostgreSQL when configured.
pub async fn all_dbs() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db()];
    dbs.extend(postgres_db().await);
    dbs
}

/// An engine on a fresh store with the bundled configuration and a virtual clock.
pub async fn engine(db: &TestDb) -> (Engine, Arc<VirtualClock>) {
    let store = Store::connect(&db.url).await.expect("connect");
    let clock = Arc::new(VirtualClock::new("2026-11-23T09:00:00Z".parse().unwrap()));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    (Engine::new(store, config(), dyn_clock), clock)
}

/// A `tminus shell` process driven line by line, as a person would type.
pub struct ShellSession {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    step: u32,
    /// Everything the shell printed so far.
    pub transcript: String,
    /// The buttons of the latest output that drew any: (number, label).
    pub buttons: Vec<(usize, String)>,
}

impl ShellSession {
    pub fn start(db_url: &str, as_person: &str) -> ShellSession {
        ShellSession::start_with(db_url, as_person, &bot_config())
    }

    /// With another configuration directory.
    pub fn start_with(db_url: &str, as_person: &str, config_dir: &Path) -> ShellSession {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tminus"))
            .args(["shell", "--config"])
            .arg(config_dir)
            .args(["--db", db_url, "--as", as_person])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tminus shell");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = ShellSession {
            child,
            stdin,
            lines,
            step: 0,
            transcript: String::new(),
            buttons: Vec::new(),
        };
        s.send("# ready");
        s
    }

    /// Type one line and return what the shell printed in answer.
    pub fn send(&mut self, line: &str) -> String {
        self.step += 1;
        let marker = format!("# step {}", self.step);
        writeln!(self.stdin, "{line}\n{marker}").expect("write to the shell");
        self.stdin.flush().unwrap();
        let mut out = String::new();
        loop {
            let got = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("the shell stopped answering after {line:?}:\n{out}"));
            if got.ends_with(&marker) {
                break;
            }
            out.push_str(&got);
            out.push('\n');
        }
        self.transcript.push_str(&out);
        let buttons: Vec<(usize, String)> = out
            .lines()
            .filter_map(|l| {
                let l = l.trim_start();
                let rest = l.strip_prefix('[')?;
                let (n, label) = rest.split_once("] ")?;
                Some((n.parse().ok()?, label.to_string()))
            })
            .collect();
        if !buttons.is_empty() {
            self.buttons = buttons;
        }
        out
    }

    /// The number of the first live button whose label starts with `prefix`.
    pub fn button(&self, prefix: &str) -> Option<usize> {
        self.buttons
            .iter()
            .find(|(_, label)| label.starts_with(prefix))
            .map(|(n, _)| *n)
    }

    /// Press the first button whose label starts with `prefix`.
    pub fn press(&mut self, prefix: &str, reason: Option<&str>) -> String {
        let n = self.button(prefix).unwrap_or_else(|| {
            panic!("no button starting {prefix:?}; buttons: {:?}", self.buttons)
        });
        let line = match reason {
            Some(r) => format!("click {n} {r}"),
            None => format!("click {n}"),
        };
        self.send(&line)
    }

    pub fn as_person(&mut self, who: &str) -> String {
        self.send(&format!("as {who}"))
    }

    /// End with `quit` and wait for a clean exit.
    pub fn quit(mut self) -> String {
        writeln!(self.stdin, "quit").unwrap();
        let status = self.child.wait().expect("wait for the shell");
        assert!(status.success(), "the shell exited with {status}");
        self.transcript
    }

    /// SIGKILL the process, as a crash or an OOM kill would.
    pub fn kill(mut self) {
        self.child.kill().expect("kill the shell");
        let _ = self.child.wait();
    }
}

/// Run `number` of the shell's deployments channel, read from the database.
pub async fn shell_run(store: &Store, number: i64) -> tminus::domain::Run {
    store
        .run_by_number(tminus::domain::Platform::Shell, "#deployments", number)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the shell has no deployment #{number}"))
}

/// Run the `tminus` binary with `args`, the variables of `unset` taken out
/// of its environment and those of `env` put in: its exit status, standard
/// output and standard error.
pub fn run_tminus(args: &[&str], unset: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tminus"));
    cmd.args(args);
    for var in unset {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tminus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `tminus serve`, stopped (SIGKILL) when dropped.
pub struct ServeProcess {
    child: Child,
    pub addr: String,
}

impl ServeProcess {
    /// Start `tminus serve` on port 0 with the bundled configuration, the
    /// given database and extra environment.
    pub fn start(db_url: &str, env: &[(&str, String)]) -> ServeProcess {
        ServeProcess::start_with(&bot_config(), db_url, env)
    }

    /// With another configuration directory.
    pub fn start_with(config_dir: &Path, db_url: &str, env: &[(&str, String)]) -> ServeProcess {
        ServeProcess::spawn(config_dir, db_url, env, Stdio::inherit())
    }

    /// With its log (stderr) written to `log`.
    pub fn start_logged(
        config_dir: &Path,
        db_url: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> ServeProcess {
        let file = std::fs::File::create(log).expect("log file");
        ServeProcess::spawn(config_dir, db_url, env, Stdio::from(file))
    }

    fn spawn(
        config_dir: &Path,
        db_url: &str,
        env: &[(&str, String)],
        stderr: Stdio,
    ) -> ServeProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tminus"));
        cmd.args(["serve", "--config"])
            .arg(config_dir)
            .env("DATABASE_URL", db_url)
            .env("TMINUS_LISTEN", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .env_remove("SLACK_BOT_TOKEN")
            .env_remove("SLACK_SIGNING_SECRET")
            .env_remove("SLACK_APP_TOKEN")
            .env_remove("DISCORD_TOKEN")
            .env_remove("DISCORD_PUBLIC_KEY")
            .env_remove("DISCORD_APPLICATION_ID")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tminus serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("tminus listening on http://")
            .unwrap_or_else(|| panic!("tminus serve did not start: {line:?}"))
            .to_string();
        ServeProcess { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGHUP: read bot-config/ again.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A copy of the bundled configuration with `bot_extra` appended to the bot
/// file and extra runbooks (`(id, toml)`), for tests that need their own.
pub fn config_with(bot_extra: &str, runbooks: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("runbooks")).unwrap();
    let src = bot_config();
    let mut bot = std::fs::read_to_string(src.join("tminus.toml")).unwrap();
    bot.push_str(bot_extra);
    std::fs::write(dir.path().join("tminus.toml"), bot).unwrap();
    for entry in std::fs::read_dir(src.join("runbooks")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("runbooks").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    for (id, text) in runbooks {
        std::fs::write(dir.path().join(format!("runbooks/{id}.toml")), text).unwrap();
    }
    dir
}

/// The bundled configuration with an extra runbook `fast`, whose policy
/// `fast` climbs in seconds (primary on-call, then the backend lead and the
/// CTO three seconds apart), for tests that run on the real clock.
pub fn fast_escalation_config() -> tempfile::TempDir {
    config_with(
        r#"
[policies.fast]
name = "Fast"
ack_timeout = "1h"
[[policies.fast.steps]]
after = "0s"
page = ["rotation:primary"]
[[policies.fast.steps]]
after = "3s"
page = ["role:backend-lead"]
[[policies.fast.steps]]
after = "3s"
page = ["role:cto"]
"#,
        &[(
            "fast",
            r#"name = "Fast escalation"
escalation = "fast"

[[phases]]
id = "ship"
title = "Ship"
  [[phases.items]]
  id = "deploy"
  text = "Deploy"
  production_deploy = true
"#,
        )],
    )
}

/// A signed Slack slash command from `person` to a `tminus serve` whose
/// signing secret is `secret`; returns the answer's text.
pub async fn slack_command(
    http: &reqwest::Client,
    to: &ServeProcess,
    secret: &str,
    person: &str,
    text: &str,
) -> String {
    let config = config();
    let user = config.directory.people[&tminus::domain::PersonId::new(person)]
        .slack
        .clone()
        .unwrap();
    let channel = config.channels["slack"].deployments.clone();
    let trigger = format!("{person}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let body = serde_urlencoded::to_string([
        ("command", "/deploy"),
        ("text", text),
        ("user_id", user.as_str()),
        ("channel_id", channel.as_str()),
        ("trigger_id", trigger.as_str()),
    ])
    .unwrap();
    let v = slack_post(
        http,
        to,
        secret,
        "/slack/commands",
        "application/x-www-form-urlencoded",
        body,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    v["text"].as_str().unwrap_or_default().to_string()
}

/// POST a Slack-signed body; asserts 200 and returns the answer.
pub async fn slack_post(
    http: &reqwest::Client,
    to: &ServeProcess,
    secret: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> String {
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = tminus::slack::verify::sign(secret.as_bytes(), &ts, body.as_bytes());
    let resp = http
        .post(to.url(path))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .expect("request to tminus");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

/// A program a test needs from Debian's packages (`prometheus`, `promtool`,
/// `chromium`). CI installs them (`.ci/run`) and sets `CI`, where a missing
/// one fails the test; elsewhere the test says so and is skipped, so
/// `cargo test` works on a machine with only the Rust toolchain.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("`{name}` is not installed; .ci/run installs it (Debian's package)");
        }
        eprintln!("`{name}` is not installed (apt-get install it): skipping this test");
    }
    found
}

/// A request a signature test sends: what it is, its body, its headers.
pub type SignedCase<'a> = (&'a str, String, Vec<(&'a str, String)>);

/// The quickstart run from its second phase to the end, as (person, button,
/// what then shows): the part every platform's whole-run test shares.
/// Emeka signs for DevOps: one person, whichever platform he clicks on.
pub const QUICKSTART_FINISH: &[(&str, &str, &str)] = &[
    ("alice", "Done: Tell #deployments", "✅ Tell #deployments"),
    (
        "alice",
        "Done: Ship the release",
        "Production deploy done — T0 is",
    ),
    ("alice", "Done: Open the app", "✅ Open the app"),
    ("chen", "Sign off as QA", "QA: 1 of 1 — ✅ Chen Wei"),
    (
        "emeka",
        "Sign off as DevOps",
        "DevOps: 1 of 1 — ✅ Emeka Eze",
    ),
    ("alice", "Advance to", "Phase 3 of 3: Watch and wrap up"),
    ("alice", "Done: Error rate", "✅ Error rate"),
    ("alice", "Done: Tell the team", "✅ Tell the team"),
    ("alice", "Complete deployment", "Deployment #1 completed"),
];

/// Poll `fetch` until `pred` holds, up to 15 s; on time-out, panic with
/// `what` and every item as `show` prints it.
pub async fn poll_until<T>(
    what: &str,
    fetch: impl Fn() -> Vec<T>,
    pred: impl Fn(&[T]) -> bool,
    show: impl Fn(&T) -> String,
) -> Vec<T> {
    let start = std::time::Instant::now();
    loop {
        let items = fetch();
        if pred(&items) {
            return items;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let summary: Vec<String> = items.iter().map(&show).collect();
            panic!(
                "timed out waiting for {what}; calls so far:\n{}",
                summary.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every string in a JSON value, one per line, for searching payloads.
pub fn all_strings(v: &serde_json::Value) -> String {
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(v, &mut out);
    out
}

/// A run's Markdown report, opened with the web's bearer token.
pub async fn report_md(serve: &ServeProcess, run: i64, token: &str) -> String {
    reqwest::Client::new()
        .get(serve.url(&format!("/runs/{run}/report.md")))
        .bearer_auth(token)
        .send()
        .await
        .expect("the report answers")
        .text()
        .await
        .unwrap()
}
