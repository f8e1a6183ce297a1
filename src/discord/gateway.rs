//! Gateway mode: with `DISCORD_TOKEN` and no public key, interactions come
//! over serenity's gateway client instead of HTTP. Each INTERACTION_CREATE
//! goes through [`Discord::respond`], the handler the HTTP endpoint uses,
//! and its answer is sent to the interaction's callback.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use serenity::all::{Context, EventHandler, GatewayIntents, Interaction};
use serenity::client::ClientBuilder;
use serenity::http::{HttpBuilder, LightMethod, Route};
use serenity::model::id::InteractionId;
use tracing::{error, info, warn};

use super::Discord;

struct Handler {
    discord: Arc<Discord>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        let (id, token) = match &interaction {
            Interaction::Command(c) => (c.id, c.token.clone()),
            Interaction::Component(c) => (c.id, c.token.clone()),
            Interaction::Modal(m) => (m.id, m.token.clone()),
            _ => return,
        };
        let Some(value) = interaction_value(&interaction) else {
            return warn!("cannot read a gateway interaction");
        };
        if let Some(answer) = self.discord.respond(value).await {
            answer_interaction(&self.discord, id, &token, &answer).await;
        }
    }
}

/// A gateway interaction as the JSON the HTTP endpoint receives, for
/// [`Discord::respond`]. serenity leaves the type out when it serialises
/// the enum, so it is put back from the variant.
pub fn interaction_value(interaction: &Interaction) -> Option<serde_json::Value> {
    let kind = match interaction {
        Interaction::Ping(_) => 1,
        Interaction::Command(_) => 2,
        Interaction::Component(_) => 3,
        Interaction::Modal(_) => 5,
        _ => return None,
    };
    let mut value = serde_json::to_value(interaction).ok()?;
    value["type"] = kind.into();
    Some(value)
}

/// Send an interaction's answer to its callback.
pub async fn answer_interaction(
    discord: &Discord,
    id: InteractionId,
    token: &str,
    answer: &serde_json::Value,
) {
    let route = Route::InteractionResponse {
        interaction_id: id,
        token,
    };
    if let Err(e) = discord
        .rest
        .send(route, LightMethod::Post, Some(answer))
        .await
    {
        warn!(error = ?e, "cannot answer a gateway interaction");
    }
}

/// Connect to the gateway and serve interactions in the background.
pub async fn start(discord: Arc<Discord>) -> Result<tokio::task::JoinHandle<()>> {
    let token = discord.settings.token.expose().to_string();
    let mut http = HttpBuilder::new(&token);
    if let Some(proxy) = discord.settings.proxy()? {
        // serenity applies a proxy only with its own rate limiter off.
        http = http.proxy(proxy).ratelimiter_disabled(true);
    }
    let mut client = ClientBuilder::new_with_http(http.build(), GatewayIntents::empty())
        .event_handler(Handler { discord })
        .await
        .context("cannot build the Discord gateway client")?;
    info!("Discord gateway starting");
    Ok(tokio::spawn(async move {
        if let Err(e) = client.start().await {
            error!(error = %e, "Discord gateway stopped");
        }
    }))
}
