//! Signed webhooks out: the worker that sends the events the engine queued
//! in the outbox (`crate::engine`'s `emit`) to the endpoints of the bot
//! file, one at a time per endpoint and in order, retried with a growing
//! backoff until they are taken (2xx) or the give-up time has passed. Each
//! request is signed as the Standard Webhooks specification says:
//! `webhook-id` (the event's id, the same on every retry), `webhook-timestamp`
//! (seconds) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
//! `id.timestamp.body` with the endpoint's `whsec_` secret).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Secret;
use crate::engine::Engine;
use crate::store::Claimed;

/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
const BATCH: i64 = 16;
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The Standard Webhooks signature of `body` sent as `id` at `timestamp`
/// (seconds): `v1,` and base64 of HMAC-SHA256. A `whsec_` secret is the
/// base64 of the key; any other secret is the key's bytes.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String> {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("a whsec_ secret is base64 after its prefix")?,
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).context("an HMAC key")?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(format!("v1,{sig}"))
}

/// Sends webhook events; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    engine: Engine,
    client: reqwest::Client,
    /// Secrets by the variable name an endpoint gives.
    secrets: Arc<BTreeMap<String, Secret>>,
    owner: String,
}

impl Sender {
    pub fn new(engine: Engine, secrets: BTreeMap<String, Secret>) -> Sender {
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let owner = format!(
            "webhooks-{}-{}",
            std::process::id(),
            engine.now().timestamp_millis()
        );
        Sender {
            engine,
            client,
            secrets: Arc::new(secrets),
            owner,
        }
    }

    /// Send the next event of every endpoint that is due; how many were claimed.
    pub async fn step(&self) -> Result<usize> {
        let now = self.engine.now();
        let lease = self.engine.queue().lease;
        let claimed = self
            .engine
            .store()
            .claim_webhooks(&self.owner, now, lease, BATCH)
            .await?;
        let count = claimed.len();
        let sends = claimed.into_iter().map(|c| self.send(c));
        for done in futures_util::future::join_all(sends).await {
            if let Err(e) = done {
                error!(
                    error = format!("{e:#}"),
                    "recording a webhook delivery failed"
                );
            }
        }
        Ok(count)
    }

    /// Send until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!("webhook delivery started");
        loop {
            let busy = match self.step().await {
                Ok(n) => n > 0,
                Err(e) => {
                    error!(error = format!("{e:#}"), "webhook step failed");
                    false
                }
            };
            if *shutdown.borrow() {
                return;
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    async fn send(&self, claimed: Claimed<String>) -> Result<()> {
        let store = self.engine.store();
        let now = self.engine.now();
        let config = self.engine.config();
        let endpoint = &claimed.lane;
        let Some(hook) = config.webhooks.get(endpoint) else {
            error!(%endpoint, "a webhook event for an endpoint no longer in the bot file; dropped");
            return store
                .mark_failed(claimed.id, now, "the endpoint is no longer in the bot file")
                .await;
        };
        let Some(secret) = self.secrets.get(&hook.secret_env) else {
            error!(%endpoint, variable = %hook.secret_env, "a webhook's secret is not set; event dropped");
            return store
                .mark_failed(
                    claimed.id,
                    now,
                    &format!("the secret variable {} is not set", hook.secret_env),
                )
                .await;
        };
        let body = &claimed.message;
        let id = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        let timestamp = now.timestamp();
        let signed = id
            .as_deref()
            .map(|id| sign(secret.expose(), id, timestamp, body));
        let (id, signature) = match (id.clone(), signed) {
            (Some(id), Some(Ok(sig))) => (id, sig),
            // Retrying cannot mend a broken event or secret: say so, move on.
            (_, Some(Err(e))) => {
                error!(%endpoint, variable = %hook.secret_env, error = %e, "a webhook's secret is not a whsec_ secret; event dropped");
                return store.mark_failed(claimed.id, now, &format!("{e:#}")).await;
            }
            _ => {
                error!(%endpoint, "a webhook event without its id; dropped");
                return store.mark_failed(claimed.id, now, "no event id").await;
            }
        };
        let sent = self
            .client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("user-agent", "tminus")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .send()
            .await;
        let reason = match sent {
            Ok(r) if r.status().is_success() => return store.mark_delivered(claimed.id, now).await,
            // The receiver says this endpoint is gone for good.
            Ok(r) if r.status().as_u16() == 410 => {
                warn!(%endpoint, "a webhook endpoint answered 410 Gone; event dropped");
                return store.mark_failed(claimed.id, now, "HTTP 410 Gone").await;
            }
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) => format!("request failed: {}", e.without_url()),
        };
        let give_up = self.engine.queue().give_up;
        if now - claimed.created_at > give_up {
            error!(%endpoint, reason = %reason, "webhook delivery kept failing; giving up");
            return store
                .mark_failed(claimed.id, now, &format!("gave up: {reason}"))
                .await;
        }
        let wait = crate::delivery::backoff(claimed.attempts);
        warn!(%endpoint, reason = %reason, retry_in_ms = wait.as_millis() as u64, "webhook delivery will be retried");
        let at = now + chrono::Duration::from_std(wait)?;
        store.retry_later(claimed.id, at, &reason, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signatures_match_the_specifications_example() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
