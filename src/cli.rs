//! The `tminus` command line: parse arguments, build the app, run it.
//! It lives in the library so that `main.rs` is one call: the binary crate
//! then compiles in a second instead of recompiling what the library's
//! code needs (a cold release build spent a minute there).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tminus",
    version,
    about = "Runs your deployment playbook in Slack, Discord or a terminal"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot: HTTP endpoints and the scheduler.
    Serve {
        #[arg(long, default_value = "bot-config")]
        config: PathBuf,
        /// Database URL; defaults to DATABASE_URL, then sqlite://tminus.db.
        #[arg(long)]
        db: Option<String>,
    },
    /// Try the bot in this terminal, on the embedded database.
    Shell {
        #[arg(long, default_value = "bot-config")]
        config: PathBuf,
        /// Who you are (a person's key in the bot file); defaults to the first person.
        #[arg(long = "as")]
        as_person: Option<String>,
        /// Database URL; defaults to DATABASE_URL, then sqlite://tminus.db.
        #[arg(long)]
        db: Option<String>,
    },
    /// Check a real set-up — configuration, database, and each platform's
    /// token, scopes, channels, people and commands — and print the fix for
    /// each failure; exits 0 only when all pass.
    Doctor {
        #[arg(long, default_value = "bot-config")]
        config: PathBuf,
        /// Database URL; defaults to DATABASE_URL, then sqlite://tminus.db.
        #[arg(long)]
        db: Option<String>,
    },
    /// Print a Slack app manifest (JSON) for "Create New App → From an app
    /// manifest": the commands, scopes, events and request URLs tminus uses.
    SlackManifest {
        /// tminus's public base URL, e.g. https://tminus.example.com
        /// (defaults to TMINUS_PUBLIC_URL).
        #[arg(long, env = "TMINUS_PUBLIC_URL")]
        url: Option<String>,
        /// Socket Mode: no request URLs (and no public URL needed).
        #[arg(long)]
        socket_mode: bool,
    },
    /// Print the link that adds the bot to a Discord server, with the
    /// scopes and permissions tminus needs.
    DiscordInvite {
        /// The application's id (defaults to DISCORD_APPLICATION_ID).
        #[arg(long, env = "DISCORD_APPLICATION_ID")]
        application_id: Option<String>,
        /// Preselect one server (its id).
        #[arg(long)]
        guild: Option<String>,
    },
    /// Ask a running `serve` whether it is ready (`GET /readyz`); exit 0 when
    /// it is. For container health checks.
    Healthcheck {
        /// What to ask; defaults to /readyz on 127.0.0.1 at TMINUS_LISTEN's
        /// port (3000).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "TMINUS_LISTEN", hide = true)]
        listen: Option<String>,
    },
    /// Check bot-config/ and list every problem with file, line and key;
    /// with --db, also what the files would mean for each live run there.
    CheckConfig {
        #[arg(long, default_value = "bot-config")]
        config: PathBuf,
        /// A database whose live runs to check the files against.
        #[arg(long)]
        db: Option<String>,
    },
}

/// Logs on stderr, filtered by `RUST_LOG` (a level, and `target=level`
/// pairs: `info,tminus=debug`); a filter that does not parse is said once
/// and the default used.
fn init_tracing(json: bool, quiet: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let default = Targets::new().with_default(if quiet {
        LevelFilter::WARN
    } else {
        LevelFilter::INFO
    });
    let mut unreadable = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => log_filter(&spec).unwrap_or_else(|e| {
            unreadable = Some(format!(
                "RUST_LOG={spec:?} does not parse ({e}); logging at the default level"
            ));
            default.clone()
        }),
        _ => default,
    };
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        tracing_subscriber::registry()
            .with(fmt.json().with_filter(filter))
            .init();
    } else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
    }
    if let Some(message) = unreadable {
        tracing::warn!("{message}");
    }
}

/// `check-config --db`: each live run in `db` and what `config` means for
/// it; fails when one would be stranded.
fn check_live_runs(config: crate::config::Config, db: &str) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(crate::app::live_runs_report(config, db)));
    match result {
        Ok((report, ok)) => {
            print!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("tminus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` as a filter: directives separated by commas, blanks around
/// them and empty ones ignored (as `EnvFilter` read them).
fn log_filter(spec: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    let directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    directives.join(",").parse().map_err(|e| format!("{e}"))
}

/// `healthcheck`: whether `serve` at `url` (or on this host at the port of
/// `listen`) says it is ready.
async fn healthcheck(url: Option<String>, listen: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let port = listen
            .as_deref()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(3000);
        format!("http://127.0.0.1:{port}/readyz")
    });
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tminus: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("tminus: {url} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tminus: {url}: {}", e.without_url());
            ExitCode::FAILURE
        }
    }
}

/// `slack-manifest`: the manifest on stdout, or why not.
fn slack_manifest(url: Option<String>, socket_mode: bool) -> ExitCode {
    use crate::slack::manifest::{check_base_url, manifest, Reach};
    let reach = match (socket_mode, url) {
        (true, _) => Reach::SocketMode,
        (false, Some(url)) => match check_base_url(&url) {
            Ok(base) => Reach::Http(base),
            Err(e) => {
                eprintln!("tminus: {e}");
                return ExitCode::FAILURE;
            }
        },
        (false, None) => {
            eprintln!(
                "tminus: give --url https://YOUR-HOST (or set TMINUS_PUBLIC_URL) for the HTTP \
                 endpoints, or --socket-mode"
            );
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string_pretty(&manifest(&reach)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tminus: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `discord-invite`: the link on stdout, or why not.
fn discord_invite(application_id: Option<String>, guild: Option<String>) -> ExitCode {
    use crate::discord::invite;
    let Some(id) = application_id else {
        eprintln!(
            "tminus: set DISCORD_APPLICATION_ID (or --application-id): the Application ID from \
             General Information at discord.com/developers/applications"
        );
        return ExitCode::FAILURE;
    };
    let guild = match guild.as_deref().map(|g| g.trim().parse::<u64>()) {
        None => None,
        Some(Ok(g)) if g > 0 => Some(g),
        Some(_) => {
            eprintln!(
                "tminus: --guild must be a server id (right-click the server → Copy Server ID)"
            );
            return ExitCode::FAILURE;
        }
    };
    match invite::check_application_id(&id) {
        Ok(app) => {
            println!("{}", invite::url(app, guild));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tminus: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run the command line; what `main` returns.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Cmd::SlackManifest { url, socket_mode } => {
            return slack_manifest(url.clone(), *socket_mode)
        }
        Cmd::DiscordInvite {
            application_id,
            guild,
        } => return discord_invite(application_id.clone(), guild.clone()),
        _ => {}
    }
    if let Cmd::CheckConfig { config, db } = &cli.command {
        return match crate::config::Config::load(config) {
            Ok(c) => {
                println!("{}: ok: {}", config.display(), c.summary());
                match db {
                    None => ExitCode::SUCCESS,
                    Some(db) => check_live_runs(c, db),
                }
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) in {}", errors.0.len(), config.display());
                ExitCode::FAILURE
            }
        };
    }
    let quiet = matches!(
        cli.command,
        Cmd::Shell { .. } | Cmd::Doctor { .. } | Cmd::Healthcheck { .. }
    );
    init_tracing(cli.log_json, quiet);
    // One process-wide TLS provider (ring), before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tminus: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Serve { config, db } => crate::app::serve(&config, db)
                .await
                .map(|()| ExitCode::SUCCESS),
            Cmd::Shell {
                config,
                as_person,
                db,
            } => crate::app::shell(&config, db, as_person)
                .await
                .map(|()| ExitCode::SUCCESS),
            Cmd::Healthcheck { url, listen } => Ok(healthcheck(url, listen).await),
            Cmd::Doctor { config, db } => {
                let report = crate::doctor::run(&config, db).await;
                print!("{}", report.render());
                Ok(if report.ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Cmd::CheckConfig { .. } | Cmd::SlackManifest { .. } | Cmd::DiscordInvite { .. } => {
                unreachable!("handled above")
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tminus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn rust_log_takes_a_level_and_targets_with_blanks_and_stray_commas() {
        let f = log_filter("info, tminus=debug,").unwrap();
        assert!(f.would_enable("tminus::app", &Level::DEBUG));
        assert!(f.would_enable("sqlx", &Level::INFO));
        assert!(!f.would_enable("sqlx", &Level::DEBUG));
        let f = log_filter("warn").unwrap();
        assert!(!f.would_enable("tminus", &Level::INFO));
        assert!(log_filter("tminus=loud").is_err());
    }
}
