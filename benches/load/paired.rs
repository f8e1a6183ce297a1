//! The side-by-side setup: `tminus serve` pinned to the first core, this
//! process (the client and the fake Slack) pinned to the second, 50
//! clients each sending one signed request at a time. Each round sends 200
//! unmeasured requests and then 2,000 measured ones, first `/deploy start`
//! (each starts a run), then clicks on those runs (each marks an item done
//! or undoes it, or records a sign-off). After every batch the audit log is
//! counted: one row per answered request shows each answer followed its
//! commit. Several rounds give the run-to-run spread.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::ack::{
    drain, fire, measure, run_ids, Builder, ClickPlan, Kind, Measured, People, Prepared,
};
use crate::fake::Fake;
use crate::procs::{loadavg, Serve};
use crate::report::{ms, Report, Target};
use crate::setup::{BenchConfig, Db, DbKind, Sizes};

const CONCURRENCY: usize = 50;
const BOT_CORE: &str = "0";
const CLIENT_CORE: &str = "1";

/// Hold every thread of `pid` to `cores` (a `taskset` list such as `1` or `0,1`).
fn pin(pid: u32, cores: &str) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset could not pin process {pid}");
    Ok(())
}

/// The targets of the side-by-side figures, per database.
fn target(db: DbKind, kind: Kind, figure: &str) -> Option<Target> {
    match (db, kind.is_click(), figure) {
        (DbKind::Sqlite, true, "rate") => Some(Target::AtLeast(10_000.0)),
        (DbKind::Sqlite, true, "p99") => Some(Target::AtMost(8.0)),
        (DbKind::Sqlite, false, "rate") => Some(Target::AtLeast(5_000.0)),
        (DbKind::Postgres, true, "rate") => Some(Target::AtLeast(3_000.0)),
        _ => None,
    }
}

pub async fn run(
    db: &Db,
    cfg: &BenchConfig,
    fake: &Fake,
    sizes: &Sizes,
    report: &mut Report,
    logs: &std::path::Path,
) -> Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        report.note("the side-by-side figures need two cores; skipped");
        return Ok(());
    }
    let name = db.kind.name();
    let serve = Serve::start_on(
        &cfg.path,
        &db.url,
        fake,
        logs.join(format!("paired-{name}.log")),
        Some(BOT_CORE),
    )
    .await?;
    pin(std::process::id(), CLIENT_CORE)?;
    let result = rounds(db, cfg, &serve, sizes, report).await;
    pin(std::process::id(), "0,1")?;
    result
}

async fn rounds(
    db: &Db,
    cfg: &BenchConfig,
    serve: &Serve,
    sizes: &Sizes,
    report: &mut Report,
) -> Result<()> {
    let name = db.kind.name();
    let pool = db.pool().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut builder = Builder {
        serve,
        people: People {
            config: &cfg.config,
        },
        slack_channel: cfg.config.channels["slack"].deployments.clone(),
        discord_channel: cfg.config.channels["discord"].deployments.clone(),
        seq: 0,
        slack_clicks: None,
        discord_clicks: None,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_kib, _) = serve.memory_kib();
    report.add(
        "idle RSS of tminus serve",
        db.kind,
        idle_kib as f64 / 1024.0,
        "MiB",
        Some(Target::AtMost(30.0)),
    );

    println!(
        "\n### One core each, concurrency {CONCURRENCY}, {name} (load {})\n",
        loadavg()
    );
    println!(
        "Idle RSS before the first request: {:.1} MiB.\n",
        idle_kib as f64 / 1024.0
    );
    println!("| request | round | requests | p50 ms | p90 ms | p99 ms | max ms | per second | server CPU ms/request | audit rows written |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut budget = sizes.drain_budget;
    let mut figures: Vec<(Kind, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut clicked: std::collections::HashSet<i64> = std::collections::HashSet::new();
    for round in 1..=sizes.paired_rounds {
        for kind in [Kind::SlackCommand, Kind::SlackClick] {
            if kind == Kind::SlackClick {
                // The runs this round's starts made: every click on them is a change.
                let mut runs = run_ids(&pool, "slack").await?;
                runs.retain(|id| !clicked.contains(id));
                clicked.extend(&runs);
                builder.slack_clicks = Some(ClickPlan::new(runs));
            }
            let warm: Vec<Prepared> = (0..sizes.paired_warm)
                .map(|_| builder.build(kind))
                .collect();
            let reqs: Vec<Prepared> = (0..sizes.paired_requests)
                .map(|_| builder.build(kind))
                .collect();
            let n = reqs.len();
            drain(&pool, &mut budget).await?;
            fire(&client, kind, warm, CONCURRENCY).await;
            let Measured {
                cell,
                rate,
                written,
            } = measure(
                &pool,
                serve,
                &client,
                kind,
                reqs,
                CONCURRENCY,
                &round.to_string(),
            )
            .await?;
            let l = &cell.latencies;
            if written != n as i64 || cell.bad > 0 {
                report.note(format!(
                    "{name}, one core each: {} round {round}: {written} audit rows for {n} requests, {} unexpected answers",
                    kind.name(),
                    cell.bad
                ));
            }
            match figures.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, rates, p99s)) => {
                    rates.push(rate);
                    p99s.push(ms(l.q(0.99)));
                }
                None => figures.push((kind, vec![rate], vec![ms(l.q(0.99))])),
            }
        }
    }
    for (kind, rates, p99s) in &figures {
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            (lo, hi)
        };
        let (rate_lo, rate_hi) = spread(rates);
        let (p99_lo, p99_hi) = spread(p99s);
        println!(
            "\n{}: {rate_lo:.0}–{rate_hi:.0} per second, p99 {p99_lo:.2}–{p99_hi:.2} ms over {} rounds.",
            kind.name(),
            rates.len()
        );
        // The slowest round is the figure judged.
        report.add_judged(
            format!("{} per second, one core each, c{CONCURRENCY}", kind.name()),
            db.kind,
            rate_lo,
            "/s",
            target(db.kind, *kind, "rate"),
        );
        report.add_judged(
            format!("{} p99, one core each, c{CONCURRENCY}", kind.name()),
            db.kind,
            p99_hi,
            "ms",
            target(db.kind, *kind, "p99"),
        );
    }
    serve.note_errors(report, name, "the side-by-side runs");
    pool.close().await;
    Ok(())
}
