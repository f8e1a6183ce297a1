//! The Discord adapter — the only module that knows serenity. Interactions
//! arrive at `POST /discord/interactions` (Ed25519-verified) or over the
//! gateway; both go through [`Discord::respond`]. The outbox's Discord
//! messages go out through serenity-built requests to `DISCORD_API_URL`.

pub mod commands;
pub mod deliver;
pub mod doctor;
pub mod gateway;
pub mod inbound;
pub mod invite;
pub mod render;
pub mod rest;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serenity::interactions_endpoint::Verifier;

use crate::config::Secret;
use crate::engine::Engine;

/// Discord's API unless `DISCORD_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://discord.com/api/v10";

/// What the environment says about Discord (read by [`crate::settings`]).
#[derive(Clone, Debug)]
pub struct DiscordSettings {
    pub token: Secret,
    /// Interactions endpoint mode: verify requests with it.
    pub public_key: Option<String>,
    pub application_id: Option<String>,
    pub api_url: String,
}

impl DiscordSettings {
    /// serenity builds URLs on `https://discord.com/api/v10` and swaps the
    /// scheme and host for a proxy; this is that scheme and host, if not Discord's.
    pub fn proxy(&self) -> Result<Option<String>> {
        let url = self.api_url.trim_end_matches('/');
        if url == DEFAULT_API_URL {
            return Ok(None);
        }
        match url.strip_suffix("/api/v10") {
            Some(base) if base.starts_with("http://") || base.starts_with("https://") => {
                Ok(Some(base.to_string()))
            }
            _ => bail!("DISCORD_API_URL must look like http(s)://HOST/api/v10 (got {url})"),
        }
    }
}

/// Everything the Discord handlers share.
pub struct Discord {
    pub engine: Engine,
    pub settings: DiscordSettings,
    pub verifier: Option<Verifier>,
    pub rest: rest::Rest,
}

impl Discord {
    pub fn new(engine: Engine, settings: DiscordSettings) -> Result<Arc<Discord>> {
        let verifier = match &settings.public_key {
            Some(hex) => {
                let bytes: [u8; 32] = crate::hex::decode(hex)
                    .and_then(|b| b.try_into().ok())
                    .context("DISCORD_PUBLIC_KEY must be 64 hex characters")?;
                Some(
                    Verifier::try_new(bytes)
                        .map_err(|_| anyhow::anyhow!("DISCORD_PUBLIC_KEY is not an Ed25519 key"))?,
                )
            }
            None => None,
        };
        let rest = rest::Rest::new(&settings)?;
        Ok(Arc::new(Discord {
            engine,
            settings,
            verifier,
            rest,
        }))
    }
}
