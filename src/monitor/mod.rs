//! Probes: what monitoring measures at each tick. HTTP health checks (status,
//! latency, optional body match) and Prometheus instant queries (error rate,
//! latency), run side by side, each with its own time-out. A health check
//! that times out, is refused or answers wrongly is *failing*; a query that
//! cannot run or returns no data is *unknown* — neither is ever healthy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::clock::Stopwatch;
use crate::config::Secret;

use crate::domain::monitor::Reading;
use crate::domain::runbook::{HttpCheck, Measure, Probe};

/// How a pipeline's hook answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAnswer {
    /// 2xx: the pipeline took the call.
    Taken(u16),
    /// Worth another try later (5xx, 408, 429, no connection, no answer).
    Retry(String),
    /// Another try would fail the same way (4xx, a header missing).
    Refused(String),
}

/// Runs probes, and calls pipelines' hooks with the same client.
#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
    /// For pipelines' hooks: no redirects, so a call goes only to the URL
    /// the bot file names.
    hooks: reqwest::Client,
    /// Bearer tokens for Prometheus, by the variable name a probe gives.
    tokens: Arc<BTreeMap<String, Secret>>,
}

impl Default for Prober {
    fn default() -> Self {
        Prober::new()
    }
}

impl Prober {
    pub fn new() -> Prober {
        // Redirects are followed (a health URL behind a load balancer), but
        // never to another scheme than the one configured.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        let hooks = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Prober {
            client,
            hooks,
            tokens: Arc::default(),
        }
    }

    /// Authenticate Prometheus queries with these tokens (from
    /// [`crate::settings::Settings::named`]), by the `bearer_env` a probe names.
    pub fn with_tokens(mut self, tokens: BTreeMap<String, Secret>) -> Prober {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Call a pipeline's hook: its method and URL from the bot file, its
    /// headers (those from the environment looked up by variable name),
    /// `body` as JSON and `Idempotency-Key: key`. Waits 10 s at most.
    pub async fn call_hook(
        &self,
        hook: &crate::config::Hook,
        body: Option<&Value>,
        key: &str,
    ) -> HookAnswer {
        let method =
            reqwest::Method::from_bytes(hook.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut req = self
            .hooks
            .request(method, &hook.url)
            .timeout(Duration::from_secs(10))
            .header("idempotency-key", key)
            .header("user-agent", "tminus");
        for (name, value) in &hook.headers {
            req = req.header(name, value);
        }
        for (name, var) in &hook.headers_env {
            match self.tokens.get(var) {
                Some(value) => req = req.header(name, value.expose()),
                None => {
                    return HookAnswer::Refused(format!(
                        "the environment variable {var} for header {name} is not set"
                    ))
                }
            }
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => HookAnswer::Taken(r.status().as_u16()),
            Ok(r) => {
                let status = r.status().as_u16();
                let text: String = r
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                let reason = format!("HTTP {status} {}", text.trim());
                if status >= 500 || status == 408 || status == 429 {
                    HookAnswer::Retry(reason)
                } else {
                    HookAnswer::Refused(reason)
                }
            }
            Err(e) if e.is_connect() => {
                HookAnswer::Retry("connection refused or unreachable".into())
            }
            Err(e) if e.is_timeout() => HookAnswer::Retry("no answer within 10 s".into()),
            Err(e) => HookAnswer::Retry(format!("request failed: {}", e.without_url())),
        }
    }

    /// Every probe, concurrently; readings in the probes' order.
    pub async fn run_all(&self, probes: &[Probe]) -> Vec<(String, Reading)> {
        let runs = probes.iter().map(|p| async move {
            match p {
                Probe::Http { name, check } => (name.clone(), self.health(check).await),
                Probe::Prometheus {
                    name,
                    url,
                    query,
                    measures,
                    bearer_env,
                } => {
                    let token = bearer_env
                        .as_deref()
                        .and_then(|v| self.tokens.get(v))
                        .map(Secret::expose);
                    (
                        name.clone(),
                        self.prometheus(url, query, *measures, token).await,
                    )
                }
            }
        });
        futures_util::future::join_all(runs).await
    }

    /// An HTTP health check.
    pub async fn health(&self, check: &HttpCheck) -> Reading {
        let started = Stopwatch::start();
        let timeout = check.timeout.to_std();
        let sent = tokio::time::timeout(timeout, async {
            let response = self.client.get(&check.url).send().await?;
            let status = response.status().as_u16();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        let ms = started.millis();
        match sent {
            Err(_) => Reading::Health {
                ok: false,
                detail: format!("no answer within {}", check.timeout),
            },
            Ok(Err(e)) if e.is_connect() => Reading::Health {
                ok: false,
                detail: "connection refused or unreachable".into(),
            },
            Ok(Err(e)) => Reading::Health {
                ok: false,
                detail: format!("request failed: {}", e.without_url()),
            },
            Ok(Ok((status, _))) if status != check.expect_status => Reading::Health {
                ok: false,
                detail: format!("HTTP {status}, expected {} ({ms} ms)", check.expect_status),
            },
            Ok(Ok((_, body)))
                if check
                    .body_contains
                    .as_ref()
                    .is_some_and(|want| !body.contains(want.as_str())) =>
            {
                Reading::Health {
                    ok: false,
                    detail: format!(
                        "the body lacks {:?}",
                        check.body_contains.as_deref().unwrap_or("")
                    ),
                }
            }
            Ok(Ok((status, _))) => Reading::Health {
                ok: true,
                detail: format!("HTTP {status} in {ms} ms"),
            },
        }
    }

    /// A Prometheus instant query (`/api/v1/query`) read as one number.
    pub async fn prometheus(
        &self,
        base: &str,
        query: &str,
        measures: Measure,
        token: Option<&str>,
    ) -> Reading {
        let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
        let mut request = self
            .client
            .get(&url)
            .query(&[("query", query)])
            .timeout(Duration::from_secs(10));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body: Value = match request.send().await {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(v) => v,
                Err(_) => {
                    return Reading::Unknown(
                        "Prometheus answered something that is not JSON".into(),
                    )
                }
            },
            Ok(r) => {
                return Reading::Unknown(format!(
                    "Prometheus answered HTTP {}",
                    r.status().as_u16()
                ))
            }
            Err(e) if e.is_timeout() => {
                return Reading::Unknown("Prometheus did not answer in time".into())
            }
            Err(_) => return Reading::Unknown("Prometheus is unreachable".into()),
        };
        match first_value(&body) {
            Some(v) if v.is_finite() => match measures {
                Measure::ErrorRate => Reading::ErrorRate(v),
                Measure::Latency => Reading::Latency(v),
            },
            Some(_) => Reading::Unknown("no data (NaN)".into()),
            None => Reading::Unknown("no data".into()),
        }
    }
}

/// The first sample of a query result: a vector's first element or a scalar.
fn first_value(body: &Value) -> Option<f64> {
    if body["status"] != "success" {
        return None;
    }
    let data = &body["data"];
    let sample = match data["resultType"].as_str()? {
        "vector" => &data["result"].as_array()?.first()?["value"],
        "scalar" => &data["result"],
        _ => return None,
    };
    sample.get(1)?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Dur;
    use axum::routing::get;
    use axum::Router;

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn check(url: String) -> HttpCheck {
        HttpCheck {
            url,
            expect_status: 200,
            timeout: Dur::from_millis(300),
            body_contains: Some("ok".into()),
        }
    }

    #[tokio::test]
    async fn health_checks_fail_unless_the_service_answers_well() {
        let base = serve(
            Router::new()
                .route("/good", get(|| async { "ok" }))
                .route(
                    "/broken",
                    get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "ok") }),
                )
                .route("/wrong-body", get(|| async { "degraded" }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "ok"
                    }),
                ),
        )
        .await;
        let p = Prober::new();
        assert!(matches!(
            p.health(&check(format!("{base}/good"))).await,
            Reading::Health { ok: true, .. }
        ));
        for (path, expect) in [
            ("/broken", "HTTP 500"),
            ("/wrong-body", "body lacks"),
            ("/slow", "no answer within 300ms"),
        ] {
            match p.health(&check(format!("{base}{path}"))).await {
                Reading::Health { ok: false, detail } => {
                    assert!(detail.contains(expect), "{path}: {detail}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        // Nothing listening: refused, failing.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            drop(l);
            format!("http://{addr}/health")
        };
        assert!(matches!(
            p.health(&check(refused)).await,
            Reading::Health { ok: false, .. }
        ));
    }

    #[tokio::test]
    async fn prometheus_answers_become_readings_or_unknown() {
        let base = serve(Router::new().route(
            "/api/v1/query",
            get(|q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                let body = match q.get("query").map(String::as_str) {
                    Some("rate") => r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.0,"0.08"]}]}}"#,
                    Some("p95") => r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.0,"1.25"]}}"#,
                    Some("nan") => r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.0,"NaN"]}]}}"#,
                    _ => r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                };
                ([("content-type", "application/json")], body)
            }),
        ))
        .await;
        let p = Prober::new();
        assert_eq!(
            p.prometheus(&base, "rate", Measure::ErrorRate, None).await,
            Reading::ErrorRate(0.08)
        );
        assert_eq!(
            p.prometheus(&base, "p95", Measure::Latency, Some("t"))
                .await,
            Reading::Latency(1.25)
        );
        assert!(matches!(
            p.prometheus(&base, "nan", Measure::ErrorRate, None).await,
            Reading::Unknown(_)
        ));
        assert!(matches!(
            p.prometheus(&base, "empty", Measure::ErrorRate, None).await,
            Reading::Unknown(_)
        ));
        assert!(matches!(
            p.prometheus("http://127.0.0.1:1", "rate", Measure::ErrorRate, None)
                .await,
            Reading::Unknown(_)
        ));
    }
}
