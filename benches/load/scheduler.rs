//! The scheduler with many active runs in monitoring windows (a tick every
//! 5 minutes, probing the fake on 127.0.0.1), in compressed time.
//!
//! Runs are seeded through the engine — `/deploy start`, then the
//! production-deploy click — with their T0s spread evenly over five minutes
//! of a virtual clock, so their ticks fall due evenly as they would in
//! production. Then three things are measured:
//!
//! 1. The cost of one scheduler step (`Scheduler::run_due`) with nothing due
//!    and with a fixed number due, for a small and the full population: if
//!    the cost follows the due timers and not the runs, the rows agree.
//! 2. Lateness: the production loop (`Scheduler::run`) on a clock that runs
//!    at real speed from the virtual present, so the ticks of the full
//!    population fall due at their real rate; lateness is `fired_at -
//!    due_at` as the database recorded them, and CPU per tick is this
//!    process's CPU over the window (it includes the fake health endpoint
//!    the probes ask).
//! 3. Memory: the real `tminus serve` on the same database, sampled while
//!    it fires the overdue and the next ticks of every run and delivers
//!    their cards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use tminus::chat::buttons;
use tminus::clock::{Clock, SystemClock, VirtualClock};
use tminus::config::Config;
use tminus::domain::{Action, Platform};
use tminus::engine::{Actor, Command, Engine, Request};
use tminus::scheduler::Scheduler;
use tminus::store::{ms as epoch_ms, Store};
use tokio::sync::watch;

use crate::fake::Fake;
use crate::procs::{loadavg, self_cpu, Serve};
use crate::report::{ms, Latencies, Report, Target};
use crate::setup::{count, BenchConfig, Db, DbKind, Sizes};

/// Ticks are 5 minutes apart, so T0s spread over 5 minutes make them due evenly.
const SPREAD_MS: i64 = 5 * 60 * 1000;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The real time moved by a fixed offset: the virtual present, running at
/// real speed, for the production scheduler loop.
struct OffsetClock {
    offset: chrono::Duration,
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + self.offset
    }
}

/// Start one run per slot and mark its production deploy done at
/// `base + slot * gap`, from `workers` engines side by side (each with its
/// own virtual clock).
async fn seed(
    store: &Store,
    config: &Arc<Config>,
    slots: &[usize],
    base: i64,
    gap: i64,
    workers: usize,
) -> Result<()> {
    let channel = config.channels["slack"].deployments.clone();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mine: Vec<usize> = slots.iter().copied().skip(w).step_by(workers).collect();
        let clock = Arc::new(VirtualClock::new(at(base)));
        let engine = Engine::new(store.clone(), config.clone(), clock.clone());
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let actor = Actor {
                platform: Platform::Slack,
                user: "U0ALICE".into(),
                channel: channel.clone(),
            };
            for slot in mine {
                let t0 = base + slot as i64 * gap;
                clock.set(at(t0 - 1000));
                let start = Command::Start {
                    service: format!("sched-{slot}"),
                    version: "v1".into(),
                    runbook: Some("bench".into()),
                    env: None,
                };
                let reply = engine.handle(&actor, Request::Command(start), None).await;
                let number: i64 = reply
                    .text
                    .split_once('#')
                    .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
                    .with_context(|| format!("no run number in {:?}", reply.text))?;
                let run = engine
                    .store()
                    .run_by_number(Platform::Slack, &channel, number)
                    .await?
                    .context("the run just started")?;
                clock.set(at(t0));
                let deploy = Action::ItemDone {
                    phase: "work".into(),
                    item: "deploy".into(),
                };
                let id = buttons::encode(run.id, &deploy);
                let reply = engine
                    .handle(&actor, Request::click(&id, None).unwrap(), None)
                    .await;
                ensure!(reply.changed, "deploy click: {}", reply.text);
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// What steps of `run_due` cost at one population.
struct Steps {
    runs: usize,
    caught_up: usize,
    caught_up_in: Duration,
    empty_wall: Duration,
    empty_cpu: Duration,
    due_wall: Latencies,
    fired: usize,
    due_cpu: Duration,
}

async fn steps(
    scheduler: &Scheduler,
    store: &Store,
    clock: &VirtualClock,
    pos: &mut i64,
    runs: usize,
    due: usize,
) -> Result<Steps> {
    // Whatever fell due before `pos` while runs were being added.
    clock.set(at(*pos));
    let t = Instant::now();
    let caught_up = scheduler.run_due(at(*pos)).await?;
    let caught_up_in = t.elapsed();

    const EMPTY: u32 = 50;
    let cpu0 = self_cpu();
    let t = Instant::now();
    for _ in 0..EMPTY {
        ensure!(scheduler.run_due(at(*pos)).await? == 0, "a timer was due");
    }
    let empty_wall = t.elapsed() / EMPTY;
    let empty_cpu = self_cpu().saturating_sub(cpu0) / EMPTY;

    let mut walls = Vec::new();
    let mut fired = 0;
    let mut due_cpu = Duration::ZERO;
    for _ in 0..5 {
        let pending = store.pending_timers().await?;
        let Some(last) = pending.get(due - 1) else {
            break;
        };
        let now = last.due_at;
        clock.set(now);
        let cpu0 = self_cpu();
        let t = Instant::now();
        fired += scheduler.run_due(now).await?;
        walls.push(t.elapsed());
        due_cpu += self_cpu().saturating_sub(cpu0);
        *pos = epoch_ms(now);
    }
    Ok(Steps {
        runs,
        caught_up,
        caught_up_in,
        empty_wall,
        empty_cpu,
        due_wall: Latencies::new(walls),
        fired,
        due_cpu,
    })
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
    let config = cfg.config.clone();
    let store = Store::connect(&db.url).await?;
    let n = sizes.runs;
    let gap = SPREAD_MS / n as i64;
    // T0s lie between ten and five minutes ago. The virtual clock walks
    // from the first ticks (five minutes ago) for a few minutes; when the
    // real `serve` starts at the end, the real time has passed where it
    // stopped, so serve catches up on the overdue ticks and then fires the
    // rest as they fall due, as after a restart.
    let base = epoch_ms(SystemClock.now()) - 2 * SPREAD_MS;
    let stride = (n / sizes.small_runs).max(1);
    let small: Vec<usize> = (0..n).step_by(stride).collect();
    let rest: Vec<usize> = (0..n).filter(|s| s % stride != 0).collect();
    // SQLite takes one writer at a time, PostgreSQL overlaps its commits.
    let workers = match db.kind {
        DbKind::Sqlite => 2,
        DbKind::Postgres => 8,
    };
    println!("\n### Scheduler, {name} (load {})\n", loadavg());

    let t = Instant::now();
    seed(&store, &config, &small, base, gap, workers).await?;
    let clock = Arc::new(VirtualClock::new(at(base)));
    let engine = Engine::new(store.clone(), config.clone(), clock.clone());
    let scheduler = Scheduler::new(engine.clone());
    let mut pos = base + SPREAD_MS - 1;
    let few = steps(
        &scheduler,
        &store,
        &clock,
        &mut pos,
        small.len(),
        sizes.due_per_step,
    )
    .await?;
    seed(&store, &config, &rest, base, gap, workers).await?;
    let seeded_in = t.elapsed();
    let all = steps(&scheduler, &store, &clock, &mut pos, n, sizes.due_per_step).await?;
    println!(
        "seeded {n} runs (start + production deploy, through the engine) in {:.1} s: {:.0} runs/s\n",
        seeded_in.as_secs_f64(),
        n as f64 / seeded_in.as_secs_f64()
    );
    println!("| active runs | step with nothing due ms | its CPU ms | step with {} due ms (median) | CPU per fired tick ms | wall per fired tick ms |", sizes.due_per_step);
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in [&few, &all] {
        let per_tick = |d: Duration| ms(d) / s.fired.max(1) as f64;
        let total_wall = s.due_wall.sum();
        println!(
            "| {} | {:.3} | {:.3} | {:.1} | {:.2} | {:.2} |",
            s.runs,
            ms(s.empty_wall),
            ms(s.empty_cpu),
            ms(s.due_wall.q(0.5)),
            per_tick(s.due_cpu),
            per_tick(total_wall),
        );
        report.add(
            format!("scheduler step, nothing due, {} runs", s.runs),
            db.kind,
            ms(s.empty_wall),
            "ms",
            None,
        );
        report.add(
            format!(
                "scheduler step, {} due, {} runs",
                sizes.due_per_step, s.runs
            ),
            db.kind,
            ms(s.due_wall.q(0.5)),
            "ms",
            None,
        );
        report.add(
            format!("CPU per fired tick in a step, {} runs", s.runs),
            db.kind,
            per_tick(s.due_cpu),
            "ms",
            None,
        );
    }
    if all.caught_up > 0 {
        let rate = all.caught_up as f64 / all.caught_up_in.as_secs_f64();
        println!(
            "\ncatch-up: {} ticks overdue while runs were added fired in {:.2} s ({rate:.0}/s)",
            all.caught_up,
            all.caught_up_in.as_secs_f64()
        );
        report.add(
            "overdue ticks caught up per second",
            db.kind,
            rate,
            "/s",
            None,
        );
    }
    let _ = few.caught_up;

    // Lateness: the production loop on a real-speed clock from `pos`.
    let pool = db.pool().await?;
    let offset = at(pos) - SystemClock.now();
    let live = Engine::new(
        store.clone(),
        config.clone(),
        Arc::new(OffsetClock { offset }),
    );
    let start_v = pos;
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu0 = self_cpu();
    let looping = tokio::spawn(Scheduler::new(live.clone()).run(stop_rx));
    tokio::time::sleep(sizes.lateness_window).await;
    let end_v = epoch_ms(live.now());
    let _ = stop_tx.send(true);
    let _ = looping.await;
    let cpu = self_cpu().saturating_sub(cpu0);
    // Timers due in the window, but not in its last second (they may still be running).
    let rows: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT due_at, fired_at FROM timers WHERE due_at > $1 AND due_at <= $2")
            .bind(start_v)
            .bind(end_v - 1000)
            .fetch_all(&pool)
            .await?;
    let fired: Vec<Duration> = rows
        .iter()
        .filter_map(|(due, fired)| fired.map(|f| Duration::from_millis((f - due).max(0) as u64)))
        .collect();
    let missed = rows.len() - fired.len();
    let fired_all = count(
        &pool,
        "SELECT COUNT(*) FROM timers WHERE fired_at IS NOT NULL",
    )
    .await?;
    let late = Latencies::new(fired);
    let per_tick = ms(cpu) / late.len().max(1) as f64;
    println!(
        "\nlateness over {:.0} s with {n} active runs: {} ticks due, fired {} ({:.1}/s), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {missed} not fired; CPU {:.2} ms per tick",
        sizes.lateness_window.as_secs_f64(),
        rows.len(),
        late.len(),
        late.len() as f64 / sizes.lateness_window.as_secs_f64(),
        ms(late.q(0.5)),
        ms(late.q(0.99)),
        ms(late.max()),
        per_tick,
    );
    report.add(
        format!("timer lateness p50, {n} runs"),
        db.kind,
        ms(late.q(0.5)),
        "ms",
        None,
    );
    report.add(
        format!("timer lateness p99, {n} runs"),
        db.kind,
        ms(late.q(0.99)),
        "ms",
        Some(Target::AtMost(250.0)),
    );
    report.add(
        format!("timer lateness max, {n} runs"),
        db.kind,
        ms(late.max()),
        "ms",
        None,
    );
    report.add(
        format!("CPU per tick (live loop, incl. probe target), {n} runs"),
        db.kind,
        per_tick,
        "ms",
        None,
    );
    if missed > 0 {
        report.note(format!(
            "{name}: {missed} ticks due in the lateness window were not fired by its end"
        ));
    }
    store.close().await;

    // Memory: the real binary on this database, doing the work of N runs.
    let serve = Serve::start(
        &cfg.path,
        &db.url,
        fake,
        logs.join(format!("rss-{name}.log")),
    )
    .await?;
    let active = count(&pool, "SELECT COUNT(*) FROM runs WHERE status = 'active'").await?;
    let t = Instant::now();
    let mut peak = 0;
    while t.elapsed() < sizes.rss_window {
        peak = peak.max(serve.memory_kib().0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rss, hwm) = serve.memory_kib();
    let fired_by_serve = count(
        &pool,
        "SELECT COUNT(*) FROM timers WHERE fired_at IS NOT NULL",
    )
    .await?
        - fired_all;
    let delivered = count(
        &pool,
        "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL",
    )
    .await?;
    println!(
        "\ntminus serve with {active} active runs, over {:.0} s: RSS {:.1} MiB now, {:.1} MiB peak sampled, VmHWM {:.1} MiB; it fired {fired_by_serve} ticks and {delivered} messages are delivered",
        sizes.rss_window.as_secs_f64(),
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
    report.add(
        format!("RSS with {n} active runs (VmHWM)"),
        db.kind,
        hwm.max(peak) as f64 / 1024.0,
        "MiB",
        Some(Target::AtMost(100.0)),
    );
    drop(serve);
    pool.close().await;
    Ok(())
}
