//! Socket Mode: Slack pushes commands, clicks and events over a WebSocket
//! that tminus opens with `apps.connections.open` and an app-level token,
//! so no public URL is needed. slack-morphism's listener connects,
//! acknowledges each envelope once its callback returns, and reconnects with
//! backoff on disconnects, refresh requests and errors. The callbacks hand
//! the payloads to the same handlers the HTTP endpoints use; they commit and
//! return quickly, and the engine's request keys make a redelivered
//! envelope count once.

use std::sync::Arc;

use anyhow::{Context, Result};
use slack_morphism::prelude::*;
use tracing::{info, warn};

use super::inbound::CommandForm;
use super::{Client, Slack};

/// A running Socket Mode connection; dropping it does not stop it, `shutdown` does.
pub struct SocketMode {
    listener: SlackClientSocketModeListener<super::Connector>,
}

async fn slack_of(states: &SlackClientEventsUserState) -> Option<Arc<Slack>> {
    states.read().await.get_user_state::<Arc<Slack>>().cloned()
}

async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let slack = slack_of(&states).await.context("Slack state missing")?;
    let form: CommandForm = serde_json::from_value(serde_json::to_value(&event)?)?;
    let reply = slack.on_command(form).await;
    let text = reply["text"].as_str().unwrap_or_default().to_string();
    let mut content = SlackMessageContent::new().with_text(text);
    if let Ok(blocks) = serde_json::from_value::<Vec<SlackBlock>>(reply["blocks"].clone()) {
        content = content.with_blocks(blocks);
    }
    Ok(SlackCommandEventResponse::new(content)
        .with_response_type(SlackMessageResponseType::Ephemeral))
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let slack = slack_of(&states).await.context("Slack state missing")?;
    slack.on_interaction(serde_json::to_value(&event)?).await;
    Ok(())
}

async fn on_push(
    event: SlackPushEventCallback,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let slack = slack_of(&states).await.context("Slack state missing")?;
    let mut value = serde_json::to_value(&event)?;
    value["type"] = "event_callback".into();
    slack.on_event(&value).await;
    Ok(())
}

fn on_error(
    err: Box<dyn std::error::Error + Send + Sync + 'static>,
    _client: Arc<Client>,
    _states: SlackClientEventsUserState,
) -> HttpStatusCode {
    warn!(error = %err, "Socket Mode callback failed");
    HttpStatusCode::OK
}

impl SocketMode {
    /// Connect with the app-level token and start listening.
    pub async fn start(slack: Arc<Slack>) -> Result<SocketMode> {
        let token_value = slack
            .settings
            .app_token
            .as_ref()
            .context("SLACK_APP_TOKEN is not set")?
            .expose()
            .to_string();
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_command_events(on_command)
            .with_interaction_events(on_interaction)
            .with_push_events(on_push);
        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(slack.client.clone())
                .with_error_handler(on_error)
                .with_user_state(slack.clone()),
        );
        // One connection; when `apps.connections.open` fails (a wrong token,
        // Slack down) the listener keeps trying, every few seconds.
        let config = SlackClientSocketModeConfig::new()
            .with_max_connections_count(1)
            .with_initial_backoff_in_seconds(1)
            .with_reconnect_timeout_in_seconds(5);
        let listener = SlackClientSocketModeListener::new(&config, environment, callbacks);
        let token = SlackApiToken::new(SlackApiTokenValue(token_value));
        listener
            .listen_for(&token)
            .await
            .context("cannot register the Socket Mode token")?;
        // Connecting happens in the background; failures are logged and retried.
        listener.start().await;
        info!("Slack Socket Mode started");
        Ok(SocketMode { listener })
    }

    pub async fn shutdown(&self) {
        self.listener.shutdown().await;
    }
}
