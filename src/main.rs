//! The `tminus` command line: parse arguments, build the app, run it.

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

fn init_tracing(json: bool, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `check-config --db`: each live run in `db` and what `config` means for
/// it; fails when one would be stranded.
fn check_live_runs(config: tminus::config::Config, db: &str) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(tminus::app::live_runs_report(config, db)));
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::CheckConfig { config, db } = &cli.command {
        return match tminus::config::Config::load(config) {
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
    init_tracing(cli.log_json, matches!(cli.command, Cmd::Shell { .. }));
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
            Cmd::Serve { config, db } => tminus::app::serve(&config, db).await,
            Cmd::Shell {
                config,
                as_person,
                db,
            } => tminus::app::shell(&config, db, as_person).await,
            Cmd::CheckConfig { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tminus: {e:#}");
            ExitCode::FAILURE
        }
    }
}
