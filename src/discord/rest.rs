//! Calls to Discord's REST API. Requests are built by serenity (its routes,
//! headers and proxy rewriting for `DISCORD_API_URL`) and sent here, because
//! serenity's own client drops the response headers of a failed request when
//! its rate limiter is off — and it must be off for a proxy to take effect.
//! Reading them ourselves lets the outbox honour 429 `Retry-After` and the
//! `X-RateLimit-*` buckets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use serenity::http::{LightMethod, Request, Route};

use super::DiscordSettings;
use crate::clock::Deadline;
use crate::delivery::Failure;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Rest {
    client: reqwest::Client,
    token: String,
    proxy: Option<String>,
    /// When each exhausted rate-limit bucket (keyed by route path) opens again.
    buckets: Mutex<HashMap<String, Deadline>>,
}

fn header_secs(headers: &reqwest::header::HeaderMap, name: &str) -> Option<Duration> {
    let secs: f64 = headers.get(name)?.to_str().ok()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

impl Rest {
    pub fn new(settings: &DiscordSettings) -> Result<Rest> {
        let client = reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?;
        Ok(Rest {
            client,
            token: format!("Bot {}", settings.token.expose()),
            proxy: settings.proxy()?,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// A read for `doctor`: the status and JSON body of `GET route`, with
    /// none of the outbox's rate-limit book-keeping; `Err` when Discord
    /// could not be reached.
    pub async fn get(&self, route: Route<'_>) -> Result<(u16, Value), String> {
        let request = Request::new(route, LightMethod::Get)
            .build(&self.client, &self.token, self.proxy.as_deref())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let (name, value) = crate::doctor::CHECK_HEADER;
        let response = request
            .header(name, value)
            .send()
            .await
            .map_err(|e| format!("cannot reach Discord: {}", e.without_url()))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Send one request; the JSON answer, or why not.
    pub async fn send(
        &self,
        route: Route<'_>,
        method: LightMethod,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let bucket = route.path().into_owned();
        let closed_for = self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&bucket)
            .and_then(Deadline::remaining);
        if let Some(left) = closed_for {
            return Err(Failure::Retry {
                after: Some(left),
                reason: "rate-limit bucket exhausted".into(),
            });
        }
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let request = Request::new(route, method)
            .body(body)
            .build(&self.client, &self.token, self.proxy.as_deref())
            .map_err(|e| Failure::Permanent(format!("cannot build the request: {e}")))?;
        let response = match request.send().await {
            Ok(r) => r,
            // Not connected: the request never left. Anything later may
            // have reached Discord before the answer was lost.
            Err(e) if e.is_connect() => {
                return Err(Failure::retry(format!("connection: {}", e.without_url())))
            }
            Err(e) if e.is_timeout() => {
                return Err(Failure::Uncertain(format!(
                    "no answer within {CALL_TIMEOUT:?}"
                )))
            }
            Err(e) => {
                return Err(Failure::Uncertain(format!(
                    "connection: {}",
                    e.without_url()
                )))
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        if headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            == Some("0")
        {
            if let Some(reset) = header_secs(&headers, "x-ratelimit-reset-after") {
                self.buckets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(bucket, Deadline::after(reset));
            }
        }
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if status.is_success() => {
                return Err(Failure::Uncertain(format!(
                    "the answer broke off: {}",
                    e.without_url()
                )))
            }
            Err(_) => String::new(),
        };
        if status.is_success() {
            return Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::Null)
            });
        }
        if status.as_u16() == 429 {
            let body_after = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["retry_after"].as_f64())
                .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)));
            let after = header_secs(&headers, "retry-after")
                .or(body_after)
                .unwrap_or(Duration::from_secs(1));
            return Err(Failure::Retry {
                after: Some(after),
                reason: "rate limited (429)".into(),
            });
        }
        if status.as_u16() == 408 {
            return Err(Failure::retry(format!("HTTP {status}")));
        }
        if status.is_server_error() {
            return Err(Failure::Uncertain(format!("HTTP {status}")));
        }
        Err(Failure::Permanent(format!(
            "HTTP {status}: {}",
            crate::chat::clip(&text, 300)
        )))
    }
}
