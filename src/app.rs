//! Building and running the whole bot: configuration, store, engine,
//! scheduler, HTTP server, or the shell. `main.rs` only parses arguments
//! and calls in here.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::{Clock, SystemClock, VirtualClock};
use crate::config::Config;
use crate::delivery::Worker;
use crate::discord::{self, Discord};
use crate::domain::PersonId;
use crate::engine::Engine;
use crate::monitor::Prober;
use crate::scheduler::Scheduler;
use crate::settings::Settings;
use crate::shell::Shell;
use crate::slack::{self, socket::SocketMode, Slack};
use crate::store::{Store, DEFAULT_URL};
use crate::web::{self, AppState};

/// The database URL: the flag, else `DATABASE_URL`, else the SQLite default.
pub fn database_url(flag: Option<String>, settings: &Settings) -> String {
    flag.or_else(|| settings.database_url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

fn load_config(dir: &Path) -> Result<Arc<Config>> {
    Config::load(dir)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("{e}\n{} problem(s) in {}", e.0.len(), dir.display()))
}

/// The store at `url`, as durable as the environment asks.
async fn open_store(url: &str, settings: &Settings) -> Result<Store> {
    let durability = settings.durability.clone().map_err(anyhow::Error::msg)?;
    Store::connect_with(url, durability).await
}

/// `tminus serve`: the HTTP server and the scheduler until SIGINT or SIGTERM.
pub async fn serve(config_dir: &Path, db: Option<String>) -> Result<()> {
    let config = load_config(config_dir)?;
    let settings = Settings::from_env(&config);
    let db_url = database_url(db, &settings);
    let store = open_store(&db_url, &settings).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let access = Arc::new(settings.web.clone());
    let engine = Engine::new(store.clone(), config.clone(), clock)
        .with_links(access.clone())
        .with_prober(Prober::new().with_tokens(settings.named.clone()))
        .with_queue(settings.queue);
    engine.pin_unpinned_runs().await?;
    let listen = settings
        .listen
        .clone()
        .unwrap_or_else(|| config.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let alive = Arc::new(AtomicBool::new(true));
    let scheduler = watched(
        Scheduler::new(engine.clone()).run(stop_rx.clone()),
        alive.clone(),
    );
    info!(
        %addr,
        database = %crate::doctor::redact(&db_url),
        live_runs = store.open_run_ids().await?.len(),
        runbooks = config.runbooks.len(),
        "tminus listening"
    );
    let outbox_alive = Arc::new(AtomicBool::new(true));
    let mut router = web::router(AppState {
        engine: engine.clone(),
        scheduler_alive: alive,
        outbox_alive: outbox_alive.clone(),
        access: access.clone(),
        tokens: Arc::new(settings.named.clone()),
    });
    info!(
        run_pages = access.secret.is_some(),
        links_in_chat = access.secret.is_some() && access.public_url.is_some(),
        bearer_token = access.token.is_some(),
        "web"
    );

    let mut workers = vec![scheduler];
    let mut socket_mode = None;
    match settings.slack.clone() {
        None => info!(
            platform = "slack",
            "off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN (Socket Mode)"
        ),
        Some(settings) => {
            let http = settings.signing_secret.is_some();
            let socket = settings.app_token.is_some();
            let slack = Slack::new(engine.clone(), settings)?;
            if http {
                router = router.merge(slack::inbound::routes(slack.clone()));
            }
            if socket {
                socket_mode = Some(SocketMode::start(slack.clone()).await?);
            }
            let delivery = Worker::new(engine.clone(), Arc::new(slack::deliver::SlackDelivery::new(slack)));
            workers.push(watched(delivery.run(stop_rx.clone()), outbox_alive.clone()));
            info!(platform = "slack", http, socket_mode = socket, "on");
        }
    }
    match settings.discord.clone() {
        None => info!(
            platform = "discord",
            "off: set DISCORD_TOKEN (and DISCORD_PUBLIC_KEY for the interactions endpoint)"
        ),
        Some(settings) => {
            let endpoint = settings.public_key.is_some();
            let discord = Discord::new(engine.clone(), settings)?;
            if endpoint {
                router = router.merge(discord::inbound::routes(discord.clone()));
            } else {
                workers.push(discord::gateway::start(discord.clone()).await?);
            }
            if let Err(e) =
                discord::commands::register(&discord, config.discord_guild.as_deref()).await
            {
                tracing::error!(error = ?e, "registering Discord commands failed; /deploy may be missing in Discord");
            }
            let delivery = Worker::new(
                engine.clone(),
                Arc::new(discord::deliver::DiscordDelivery::new(discord)),
            );
            workers.push(watched(delivery.run(stop_rx.clone()), outbox_alive.clone()));
            info!(platform = "discord", endpoint, gateway = !endpoint, "on");
        }
    }
    tokio::spawn(startup_checks(config.clone(), settings.clone()));
    // Always on: a reload may subscribe endpoints; idle, it is one cheap
    // query four times a second.
    let sender = crate::webhooks::Sender::new(engine.clone(), settings.named.clone());
    workers.push(watched(sender.run(stop_rx.clone()), outbox_alive.clone()));
    info!(endpoints = config.webhooks.len(), "webhooks");

    // Printed for scripts and tests that start the server on port 0.
    println!("tminus listening on http://{addr}");

    let mut shutdown_rx = stop_rx;
    let shutdown = async move {
        let _ = shutdown_rx.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(web::serve(listener, router, shutdown));
    let reloads = tokio::spawn(reload_on_hangup(engine.clone()));
    wait_for_signal().await;
    reloads.abort();
    info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(socket) = socket_mode {
        socket.shutdown().await;
    }
    server.await??;
    for worker in workers {
        let _ = worker.await;
    }
    store.close().await;
    Ok(())
}

/// The platform checks of `tminus doctor`, once at start, beside the
/// serving: the first problem of each platform (one left off because a
/// variable is missing, too) is logged with its fix.
async fn startup_checks(config: Arc<Config>, settings: Settings) {
    use crate::doctor::{platforms, Depth};
    for section in platforms(Some(&config), &settings, Depth::Startup).await {
        match section.checks.iter().find(|c| !c.passed()) {
            Some(problem) => warn!(
                platform = %section.title,
                problem = %problem.what,
                fix = problem.fix.as_deref().unwrap_or_default(),
                "set-up problem (`tminus doctor` checks everything)"
            ),
            None => {
                info!(platform = %section.title, checks = section.checks.len(), "set-up checks passed")
            }
        }
    }
}

/// What `config` would mean for each live run in database `db`, one line
/// each, and whether none would be stranded (`check-config --db`).
pub async fn live_runs_report(config: Config, db: &str) -> Result<(String, bool)> {
    use std::fmt::Write;
    let store = Store::connect(db).await?;
    let config = Arc::new(config);
    let engine = Engine::new(store.clone(), config.clone(), Arc::new(SystemClock));
    let live = engine.live_runs_under(&config).await?;
    store.close().await;
    let mut out = String::new();
    let _ = writeln!(out, "{} live run(s) in {db}:", live.len());
    let mut ok = true;
    for l in &live {
        ok &= !matches!(l.fate, crate::engine::Fate::Stranded(_));
        let r = &l.run;
        let _ = writeln!(
            out,
            "  #{} {} {} ({} {}, phase {}): runbook {}: {}",
            r.number, r.service, r.version, r.platform, r.channel, r.phase, l.label, l.fate
        );
    }
    Ok((out, ok))
}

/// Run a worker; `alive` turns false when it stops (or panics), so
/// readiness can say so.
fn watched(
    work: impl std::future::Future<Output = ()> + Send + 'static,
    alive: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let task = tokio::spawn(work);
        let _ = task.await;
        alive.store(false, Ordering::Relaxed);
    })
}

/// Re-read `bot-config/` on every SIGHUP; a refused reload keeps the
/// configuration in force (the engine logs why).
async fn reload_on_hangup(engine: Engine) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
            return;
        };
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading bot-config/");
            let _ = engine.reload_files().await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `tminus shell`: the bot in this terminal, or reading a script from stdin.
pub async fn shell(config_dir: &Path, db: Option<String>, as_person: Option<String>) -> Result<()> {
    let config = load_config(config_dir)?;
    let me = match as_person {
        Some(p) => {
            let id = PersonId::new(p.as_str());
            if config.directory.person(&id).is_none() {
                let known: Vec<&str> = config.directory.people.keys().map(|k| k.as_str()).collect();
                anyhow::bail!(
                    "no person `{p}` in the bot file; people: {}",
                    known.join(", ")
                );
            }
            id
        }
        None => config
            .directory
            .people
            .keys()
            .next()
            .cloned()
            .context("the bot file lists no people")?,
    };
    let settings = Settings::from_env(&config);
    let store = open_store(&database_url(db, &settings), &settings).await?;
    let clock = Arc::new(VirtualClock::starting_now());
    // The shell's clock may have been moved past the real time by an earlier
    // session; start no earlier than the last thing recorded.
    if let Some(due) = store.latest_recorded_time().await? {
        if due > clock.now() {
            clock.set(due);
        }
    }
    let engine = Engine::new(store.clone(), config, clock.clone())
        .with_prober(Prober::new().with_tokens(settings.named))
        .with_queue(settings.queue);
    engine.pin_unpinned_runs().await?;
    let interactive = std::io::stdin().is_terminal();
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut shell = Shell::new(engine, clock, me, std::io::stdout());
    shell.run(stdin, interactive).await?;
    store.close().await;
    Ok(())
}
