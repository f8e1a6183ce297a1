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
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check bot-config/ and list every problem with file, line and key.
    CheckConfig {
        #[arg(long, default_value = "bot-config")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::CheckConfig { config } => match tminus::config::Config::load(&config) {
            Ok(c) => {
                println!("{}: ok: {}", config.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) in {}", errors.0.len(), config.display());
                ExitCode::FAILURE
            }
        },
    }
}
