//! What every part of the benchmark starts from: how big each part is (full
//! or smoke), the bot configuration with one extra runbook written at run
//! time (its probe must point at this process's fake health endpoint), and
//! fresh databases — a SQLite file in a temporary directory, or a
//! PostgreSQL database made for the run and dropped after it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::Connection;
use tminus::config::Config;

/// How much of everything a run does.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub concurrency: [usize; 3],
    /// Requests per acknowledgement cell, by concurrency.
    pub ack_requests: [usize; 3],
    pub cold_starts: usize,
    /// Active runs in monitoring windows for the scheduler and memory figures.
    pub runs: usize,
    /// The smaller population the per-step cost is compared against.
    pub small_runs: usize,
    /// Timers due in one measured scheduler step.
    pub due_per_step: usize,
    pub lateness_window: Duration,
    pub rss_window: Duration,
    pub outbox_messages: usize,
    /// The longest the acknowledgement runs wait, in all, for the outbox to
    /// drain before their batches.
    pub drain_budget: Duration,
    /// Side by side: rounds, unmeasured and measured requests per batch.
    pub paired_rounds: usize,
    pub paired_warm: usize,
    pub paired_requests: usize,
}

impl Sizes {
    pub fn new(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                concurrency: [1, 16, 64],
                ack_requests: [20, 64, 128],
                cold_starts: 2,
                runs: 400,
                small_runs: 40,
                due_per_step: 10,
                lateness_window: Duration::from_secs(3),
                rss_window: Duration::from_secs(2),
                outbox_messages: 128,
                drain_budget: Duration::from_secs(10),
                paired_rounds: 1,
                paired_warm: 50,
                paired_requests: 200,
            }
        } else {
            Sizes {
                concurrency: [1, 16, 64],
                ack_requests: [500, 3000, 4000],
                cold_starts: 5,
                runs: 10_000,
                small_runs: 1_000,
                due_per_step: 100,
                lateness_window: Duration::from_secs(45),
                rss_window: Duration::from_secs(15),
                outbox_messages: 4_000,
                drain_budget: Duration::from_secs(90),
                paired_rounds: 3,
                paired_warm: 200,
                paired_requests: 2_000,
            }
        }
    }
}

/// The bench runbook. Its one working phase has items to toggle and a gate
/// with twelve (role, person) sign-offs, so every click the benchmark sends
/// changes the run and is written; `deploy` starts a 24-hour monitoring
/// window ticking every 5 minutes, probing only the fake on 127.0.0.1.
const BENCH_RUNBOOK: &str = r#"# Written by the load benchmark; see benches/load/setup.rs.
name = "Bench"
description = "Load benchmark: items to toggle, a wide gate, a 24-hour watch."

[[phases]]
id = "work"
title = "Work"
signoffs = [
  { role = "developer", quorum = 2 }, { role = "qa", quorum = 2 }, { role = "devops", quorum = 2 },
  { role = "product", quorum = 1 }, { role = "devops-lead", quorum = 1 }, { role = "tech-lead", quorum = 1 },
  { role = "senior-engineer", quorum = 2 }, { role = "security", quorum = 1 },
]
  [[phases.items]]
  id = "a"
  text = "Check a"
  [[phases.items]]
  id = "b"
  text = "Check b"
  [[phases.items]]
  id = "c"
  text = "Check c"
  [[phases.items]]
  id = "d"
  text = "Check d"
  [[phases.items]]
  id = "e"
  text = "Check e"
  [[phases.items]]
  id = "f"
  text = "Check f"
  [[phases.items]]
  id = "g"
  text = "Check g"
  [[phases.items]]
  id = "h"
  text = "Check h"
  [[phases.items]]
  id = "deploy"
  text = "Ship it"
  production_deploy = true

[[phases]]
id = "wrap"
title = "Wrap up"
  [[phases.items]]
  id = "done"
  text = "Tell the team"

[monitoring]
schedule = [{ every = "5m", until = "24h" }]
[[monitoring.probes]]
name = "health"
http = { url = "HEALTH_URL", expect_status = 200, timeout = "2s" }
[[monitoring.matrix]]
severity = "critical"
latency_above = "2s"
action = "Roll back."
"#;

/// The items clicks toggle, and the (role, person) pairs that may sign.
pub const ITEMS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
pub const SIGNERS: [(&str, &str); 12] = [
    ("developer", "alice"),
    ("developer", "bruno"),
    ("qa", "chen"),
    ("qa", "priya"),
    ("devops", "alice"),
    ("devops", "emeka"),
    ("product", "farah"),
    ("devops-lead", "emeka"),
    ("tech-lead", "bruno"),
    ("senior-engineer", "bruno"),
    ("senior-engineer", "emeka"),
    ("security", "priya"),
];

/// The bundled configuration plus the bench runbook, in a temporary directory.
pub struct BenchConfig {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub config: Arc<Config>,
}

pub fn bench_config(health_url: &str) -> Result<BenchConfig> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("bot-config");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bot-config");
    std::fs::create_dir_all(path.join("runbooks"))?;
    std::fs::copy(src.join("tminus.toml"), path.join("tminus.toml"))?;
    for entry in std::fs::read_dir(src.join("runbooks"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), path.join("runbooks").join(entry.file_name()))?;
    }
    std::fs::write(
        path.join("runbooks/bench.toml"),
        BENCH_RUNBOOK.replace("HEALTH_URL", health_url),
    )?;
    let config = Config::load(&path)
        .map_err(|e| anyhow::anyhow!("the bench configuration does not load:\n{e}"))?;
    Ok(BenchConfig {
        _dir: dir,
        path,
        config: Arc::new(config),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub fn name(self) -> &'static str {
        match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
        }
    }
}

/// A fresh, empty database.
pub struct Db {
    pub kind: DbKind,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the server's admin URL and the database's name, to drop it.
    pg: Option<(String, String)>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Db {
    pub async fn new(kind: DbKind, pg_admin: Option<&str>) -> Result<Db> {
        match kind {
            DbKind::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("tminus.db").display());
                Ok(Db {
                    kind,
                    url,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            DbKind::Postgres => {
                let admin = pg_admin.context("no PostgreSQL URL")?;
                let name = format!(
                    "tminus_bench_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                let mut conn = sqlx::PgConnection::connect(admin).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await?;
                let (base, query) = match admin.split_once('?') {
                    Some((b, q)) => (b, format!("?{q}")),
                    None => (admin, String::new()),
                };
                let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
                Ok(Db {
                    kind,
                    url: format!("{base}/{name}{query}"),
                    _dir: None,
                    pg: Some((admin.to_string(), name)),
                })
            }
        }
    }

    /// Remove a PostgreSQL database (a SQLite file goes with its directory).
    pub async fn drop_db(self) {
        if let Some((admin, name)) = &self.pg {
            if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                {
                    eprintln!("could not drop {name}: {e}");
                }
            }
        }
    }

    /// A plain connection pool for the benchmark's own checks (counts).
    pub async fn pool(&self) -> Result<sqlx::AnyPool> {
        sqlx::any::install_default_drivers();
        Ok(sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await?)
    }
}

/// One number from the database.
pub async fn count(pool: &sqlx::AnyPool, sql: &'static str) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await?)
}

/// Whether PostgreSQL answers at `url`.
pub async fn postgres_reachable(url: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(url)).await,
        Ok(Ok(_))
    )
}
