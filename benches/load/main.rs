//! The load benchmark, `cargo bench --bench load` (about 11 minutes; add
//! `-- --smoke` for a run of seconds that only shows everything works, as CI
//! does). It measures what decides whether tminus answers inside Slack's and
//! Discord's 3-second limit while it records every click durably:
//! acknowledgement latency through the real `tminus serve` with signed
//! requests, the scheduler with thousands of runs in monitoring windows,
//! outbox delivery, memory and cold start — on SQLite and on PostgreSQL —
//! and prints every figure beside its target. BENCHMARKS.md keeps the
//! latest figures and what limits each.
//!
//! Nothing leaves 127.0.0.1: Slack, Discord and the monitoring probe's
//! target are one fake server in this process ([`fake`]).
//!
//! Options: `--smoke` (or `TMINUS_BENCH_SMOKE=1`); `--only start,ack,paired,scheduler,outbox`;
//! `--sqlite-only` or `--pg-only`; PostgreSQL at `TMINUS_BENCH_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`; its user must create databases).

mod ack;
mod fake;
mod outbox;
mod paired;
mod procs;
mod report;
mod scheduler;
mod setup;
mod startup;

use std::time::Instant;

use anyhow::Result;

use report::Report;
use setup::{Db, DbKind, Sizes};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const SECTIONS: [&str; 5] = ["start", "ack", "paired", "scheduler", "outbox"];

struct Options {
    smoke: bool,
    sqlite_only: bool,
    pg_only: bool,
    only: Vec<String>,
}

fn options() -> Result<Options> {
    let mut opts = Options {
        smoke: std::env::var("TMINUS_BENCH_SMOKE").is_ok_and(|v| v == "1"),
        sqlite_only: false,
        pg_only: false,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => opts.smoke = true,
            "--sqlite-only" => opts.sqlite_only = true,
            "--pg-only" => opts.pg_only = true,
            "--only" => {
                let list = args.next().unwrap_or_default();
                opts.only = list.split(',').map(str::to_string).collect();
                if let Some(bad) = opts.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    anyhow::bail!("unknown section {bad}; sections: {}", SECTIONS.join(","));
                }
            }
            // `cargo bench` passes `--bench`; filters and other flags mean nothing here.
            _ => {}
        }
    }
    Ok(opts)
}

fn main() -> Result<()> {
    let opts = options()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench(opts))
}

async fn bench(opts: Options) -> Result<()> {
    let started = Instant::now();
    let sizes = Sizes::new(opts.smoke);
    let on = |s: &str| opts.only.iter().any(|o| o == s);
    println!(
        "# tminus load benchmark{}\n",
        if opts.smoke { " (smoke run)" } else { "" }
    );
    println!("| machine | |\n| --- | --- |");
    for (k, v) in procs::machine() {
        println!("| {k} | {v} |");
    }

    let pg_url = std::env::var("TMINUS_BENCH_PG").unwrap_or_else(|_| DEFAULT_PG.to_string());
    let mut report = Report::default();
    let mut kinds = if opts.pg_only {
        vec![]
    } else {
        vec![DbKind::Sqlite]
    };
    if !opts.sqlite_only {
        if setup::postgres_reachable(&pg_url).await {
            kinds.push(DbKind::Postgres);
        } else {
            report.note(format!(
                "PostgreSQL is not reachable at {pg_url}: its figures are missing"
            ));
        }
    }
    let fake = fake::Fake::start().await?;
    let cfg = setup::bench_config(&fake.health_url())?;
    let logs = tempfile::tempdir()?;
    let logs_path = logs.path().to_path_buf();

    for &kind in &kinds {
        let pg = (kind == DbKind::Postgres).then_some(pg_url.as_str());
        if on("start") {
            startup::run(kind, pg, &cfg, &fake, &sizes, &mut report, &logs_path).await?;
        }
        if on("ack") {
            let db = Db::new(kind, pg).await?;
            let result = ack::run(&db, &cfg, &fake, &sizes, &mut report, &logs_path).await;
            db.drop_db().await;
            result?;
        }
        if on("paired") {
            let db = Db::new(kind, pg).await?;
            let result = paired::run(&db, &cfg, &fake, &sizes, &mut report, &logs_path).await;
            db.drop_db().await;
            result?;
        }
        if on("outbox") {
            let db = Db::new(kind, pg).await?;
            let result = outbox::run(&db, &cfg, &fake, &sizes, &mut report).await;
            db.drop_db().await;
            result?;
        }
        if on("scheduler") {
            let db = Db::new(kind, pg).await?;
            let result = scheduler::run(&db, &cfg, &fake, &sizes, &mut report, &logs_path).await;
            db.drop_db().await;
            result?;
        }
    }
    let missed = report.print();
    println!(
        "\nload average at the end: {}; the whole run took {:.0} s; {missed} target(s) missed.",
        procs::loadavg(),
        started.elapsed().as_secs_f64()
    );
    if std::env::var("TMINUS_BENCH_KEEP_LOGS").is_ok() {
        println!("serve logs kept in {}", logs.keep().display());
    }
    Ok(())
}
