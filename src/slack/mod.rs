//! The Slack adapter — the only module that knows slack-morphism. It turns
//! slash commands, button clicks, modal submissions and events (over HTTP
//! or Socket Mode) into engine requests, and delivers the outbox's Slack
//! messages through the Web API at `SLACK_API_URL`.

pub mod blocks;
pub mod deliver;
pub mod doctor;
pub mod inbound;
pub mod lookup;
pub mod manifest;
pub mod socket;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use slack_morphism::hyper_tokio::SlackClientHyperHttpsConnector;
use slack_morphism::prelude::*;

pub use crate::config::Secret;
use crate::engine::Engine;

/// Slack's Web API unless `SLACK_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

/// What the environment says about Slack (read by [`crate::settings`]).
#[derive(Clone, Debug)]
pub struct SlackSettings {
    pub bot_token: Secret,
    /// HTTP mode: verify requests with it. Without it the endpoints are off.
    pub signing_secret: Option<Secret>,
    /// Socket Mode: an app-level token (`xapp-…`).
    pub app_token: Option<Secret>,
    pub api_url: String,
}

pub type Connector = SlackClientHyperHttpsConnector;
pub type Client = SlackClient<Connector>;

/// A Web API client for `api_url`, over HTTPS or plain HTTP (tests, proxies).
pub fn client(api_url: &str) -> Result<Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .context("loading the system's CA certificates for Slack")?
        .https_or_http()
        .enable_http1()
        .build();
    let base = api_url.trim_end_matches('/');
    Ok(SlackClient::new(
        SlackClientHyperConnector::with_connector(https).with_slack_api_url(base),
    ))
}

/// How long one Web API call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the Slack handlers share.
pub struct Slack {
    pub engine: Engine,
    pub settings: SlackSettings,
    pub client: Arc<Client>,
    token: SlackApiToken,
}

impl Slack {
    pub fn new(engine: Engine, settings: SlackSettings) -> Result<Arc<Slack>> {
        let client = Arc::new(client(&settings.api_url)?);
        let token = SlackApiToken::new(SlackApiTokenValue(settings.bot_token.expose().to_string()));
        Ok(Arc::new(Slack {
            token,
            engine,
            settings,
            client,
        }))
    }

    pub fn session(&self) -> SlackClientSession<'_, Connector> {
        self.client.open_session(&self.token)
    }
}

/// A `chat.postEphemeral` of one message part for `user` in `channel`, in
/// its thread when there is one.
pub(crate) fn ephemeral(
    channel: &str,
    user: &str,
    thread_ref: Option<&String>,
    part: SlackMessageContent,
) -> SlackApiChatPostEphemeralRequest {
    let req = SlackApiChatPostEphemeralRequest::new(
        SlackChannelId(channel.to_string()),
        SlackUserId(user.to_string()),
        part,
    );
    match thread_ref {
        Some(ts) => req.with_thread_ts(SlackTs(ts.clone())),
        None => req,
    }
}
