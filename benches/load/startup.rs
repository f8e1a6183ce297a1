//! Cold start and idle memory of the real binary: the time from spawning
//! `tminus serve` on a fresh database to `/readyz` answering 200 (the
//! migrations applied, Slack and Discord set up, the scheduler running),
//! and the resident set size once it has settled with nothing to do.

use std::time::Duration;

use anyhow::Result;

use crate::fake::Fake;
use crate::procs::Serve;
use crate::report::{ms, Latencies, Report, Target};
use crate::setup::{BenchConfig, Db, DbKind, Sizes};

pub async fn run(
    kind: DbKind,
    pg_admin: Option<&str>,
    cfg: &BenchConfig,
    fake: &Fake,
    sizes: &Sizes,
    report: &mut Report,
    logs: &std::path::Path,
) -> Result<()> {
    let name = kind.name();
    let mut starts = Vec::new();
    let mut idle = (0, 0);
    for i in 0..sizes.cold_starts {
        let db = Db::new(kind, pg_admin).await?;
        let serve = Serve::start(
            &cfg.path,
            &db.url,
            fake,
            logs.join(format!("start-{name}-{i}.log")),
        )
        .await?;
        starts.push(serve.ready_after);
        if i + 1 == sizes.cold_starts {
            // Let start-up allocations settle and the first scheduler and
            // delivery polls run before reading memory.
            tokio::time::sleep(Duration::from_secs(3)).await;
            idle = serve.memory_kib();
        }
        drop(serve);
        db.drop_db().await;
    }
    let starts = Latencies::new(starts);
    println!(
        "\n### Start-up, {name}\n\ncold start to ready: median {:.0} ms, max {:.0} ms over {} starts; idle RSS {:.1} MiB (peak {:.1} MiB)",
        ms(starts.q(0.5)),
        ms(starts.max()),
        starts.len(),
        idle.0 as f64 / 1024.0,
        idle.1 as f64 / 1024.0,
    );
    report.add(
        "cold start to ready, median",
        kind,
        ms(starts.q(0.5)),
        "ms",
        Some(Target::AtMost(200.0)),
    );
    report.add(
        "cold start to ready, max",
        kind,
        ms(starts.max()),
        "ms",
        None,
    );
    report.add(
        "idle RSS",
        kind,
        idle.0 as f64 / 1024.0,
        "MiB",
        Some(Target::AtMost(30.0)),
    );
    Ok(())
}
