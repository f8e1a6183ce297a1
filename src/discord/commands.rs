//! The application commands tminus registers at start: `/deploy` and
//! `/oncall` with their subcommands and options, the same set the text
//! parser accepts. A bulk
//! overwrite (`PUT`) makes registration idempotent: starting twice leaves
//! the same commands.

use serde_json::{json, Value};
use serenity::http::{LightMethod, Route};
use serenity::model::id::{ApplicationId, GuildId};
use tracing::{info, warn};

use super::Discord;
use crate::delivery::Failure;
use crate::engine::command::SLASH_COMMANDS;

fn string(name: &str, description: &str, required: bool) -> Value {
    json!({"type": 3, "name": name, "description": description, "required": required})
}

fn number(name: &str, description: &str, required: bool) -> Value {
    json!({"type": 4, "name": name, "description": description, "required": required, "min_value": 1})
}

fn choice(name: &str, description: &str, choices: &[&str]) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .map(|c| json!({"name": c, "value": c}))
        .collect();
    json!({"type": 3, "name": name, "description": description, "required": false, "choices": choices})
}

fn sub(name: &str, description: &str, options: Vec<Value>) -> Value {
    json!({"type": 1, "name": name, "description": description, "options": options})
}

/// The command definitions, as Discord's API takes them.
pub fn definitions() -> Value {
    json!([{
        "name": SLASH_COMMANDS[0].name,
        "type": 1,
        "description": SLASH_COMMANDS[0].description,
        "options": [
            sub("start", "Start a deployment", vec![
                string("service", "The service to deploy", true),
                string("version", "The version to deploy", true),
                string("runbook", "The runbook to follow", false),
                string("env", "The environment", false),
            ]),
            sub("status", "Show a deployment's current phase", vec![number("run", "Deployment number", false)]),
            sub("list", "List recent deployments", vec![]),
            sub("abort", "Abort a deployment", vec![number("run", "Deployment number", true), string("reason", "Why", true)]),
            sub("rollback", "Roll a deployment back", vec![number("run", "Deployment number", false), string("reason", "Why", true)]),
            sub("report", "The deployment log as Markdown", vec![number("run", "Deployment number", false)]),
            sub("incident", "Open an incident and page the on-call people", vec![
                string("summary", "What is wrong", true),
                choice("severity", "How bad (default high)", &["critical", "high", "medium"]),
                number("run", "Deployment number (default: the latest open one)", false),
            ]),
            sub("help", "How to use tminus", vec![]),
        ]
    }, {
        "name": SLASH_COMMANDS[1].name,
        "type": 1,
        "description": SLASH_COMMANDS[1].description,
        "options": [
            sub("show", "Who holds each rotation now, and each escalation policy", vec![]),
            sub("override", "Let someone hold a rotation from now for a while", vec![
                json!({"type": 6, "name": "person", "description": "Who takes over", "required": true}),
                string("duration", "For how long, e.g. 2h or 30m", true),
                string("rotation", "Which rotation (default: the one you hold)", false),
            ]),
        ]
    }])
}

/// Register the commands for the application, in one guild if configured.
pub async fn register(discord: &Discord, guild: Option<&str>) -> Result<(), Failure> {
    let Some(app) = discord.settings.application_id.as_deref() else {
        warn!("DISCORD_APPLICATION_ID is not set: commands not registered");
        return Ok(());
    };
    let app: u64 = app
        .parse()
        .map_err(|_| Failure::Permanent("DISCORD_APPLICATION_ID is not an id".into()))?;
    let application_id = ApplicationId::new(app.max(1));
    let route = match guild.and_then(|g| g.parse::<u64>().ok()).filter(|g| *g > 0) {
        Some(g) => Route::GuildCommands {
            application_id,
            guild_id: GuildId::new(g),
        },
        None => Route::Commands { application_id },
    };
    discord
        .rest
        .send(route, LightMethod::Put, Some(&definitions()))
        .await?;
    info!(
        guild = guild.unwrap_or("global"),
        "Discord commands registered"
    );
    Ok(())
}
