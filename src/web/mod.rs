//! The HTTP side of `tminus serve`: an axum [`Router`] built from the app's
//! state, and [`serve`], which takes its listener so tests can bind port 0.
//! It answers health, readiness and metrics, and serves the run pages
//! (`/runs`, `/runs/{id}`, its Markdown report and JSON) to signed links or a
//! bearer token ([`access`]); platform endpoints join this router.

pub mod access;
pub mod api;
pub mod chart;
pub mod guard;
pub mod model;
pub mod pages;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::domain::RunId;
use crate::engine::Engine;
use access::{Scope, WebAccess};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Cleared when the scheduler stops, so readiness tells the truth.
    pub scheduler_alive: Arc<AtomicBool>,
    /// Cleared when an outbox worker stops.
    pub outbox_alive: Arc<AtomicBool>,
    pub access: Arc<WebAccess>,
    /// Values of the environment variables the configuration names, by
    /// name: the integrations' API tokens among them.
    pub tokens: Arc<std::collections::BTreeMap<String, crate::config::Secret>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/runs", get(run_list))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/report.md", get(run_report))
        .merge(api::routes())
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.engine.store().figures().await {
        Ok(figures) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::render(&figures),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "metrics: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

/// 403 with a plain reason; never says which part of a link was wrong.
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "this link is not valid (forged, altered or expired); ask tminus for a fresh one\n",
    )
        .into_response()
}

fn allowed(
    state: &AppState,
    scope: Scope,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    state.access.allows(
        scope,
        q.get("exp").map(String::as_str),
        q.get("sig").map(String::as_str),
        bearer,
        state.engine.now(),
    )
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = format!("{e:#}"), "a run page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "something went wrong on our side\n",
    )
        .into_response()
}

fn html(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        body,
    )
        .into_response()
}

async fn run_list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !allowed(&state, Scope::Runs, &q, &headers) {
        return forbidden();
    }
    let runs = match state.engine.store().latest_runs(50).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let until = state.engine.now() + state.access.ttl.to_chrono();
    let mut listed = Vec::with_capacity(runs.len());
    for r in runs {
        let link = state
            .access
            .query(Scope::Run(r.id), until)
            .map(|q| format!("/runs/{}?{q}", r.id));
        // The phase as the run's own runbook version names it.
        let phase = match state.engine.runbook_to_show(&r).await {
            Ok((runbook, _)) => runbook
                .phase(&r.phase)
                .map_or_else(|| r.phase.clone(), |p| p.title.clone()),
            Err(e) => return internal(e),
        };
        listed.push((r, link, phase));
    }
    html(pages::run_list(&listed, &state.engine.config()))
}

/// `/runs/{id}` and `/runs/{id}.json`.
async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (id, json) = match id.strip_suffix(".json") {
        Some(n) => (n, true),
        None => (id.as_str(), false),
    };
    let Ok(id) = id.parse::<i64>().map(RunId) else {
        return (StatusCode::BAD_REQUEST, "a run id is a number\n").into_response();
    };
    if !allowed(&state, Scope::Run(id), &q, &headers) {
        return forbidden();
    }
    let loaded = match Loaded::run(&state.engine, id).await {
        Ok(Some(v)) => v,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such run\n").into_response(),
        Err(e) => return internal(e),
    };
    let config = state.engine.config();
    let view = loaded.view(&config);
    if json {
        return axum::Json(model::RunModel::of(&view)).into_response();
    }
    let query = match (q.get("exp"), q.get("sig")) {
        (Some(exp), Some(sig)) => Some(format!("exp={exp}&sig={sig}")),
        _ => None,
    };
    html(pages::run_page(&view, query.as_deref()))
}

/// Everything recorded about a run, read for its page or the API.
pub struct Loaded {
    run: crate::domain::Run,
    runbook: std::sync::Arc<crate::domain::Runbook>,
    stranded: Option<String>,
    audit: Vec<crate::store::AuditEntry>,
    ticks: Vec<crate::store::TickRecord>,
    incidents: Vec<(crate::domain::Incident, Vec<crate::store::PageRecord>)>,
}

impl Loaded {
    /// Run `id` with its audit log, monitoring, incidents and runbook.
    pub async fn run(engine: &Engine, id: RunId) -> anyhow::Result<Option<Loaded>> {
        let store = engine.store();
        let Some(run) = store.run(id).await? else {
            return Ok(None);
        };
        let (runbook, stranded) = engine.runbook_to_show(&run).await?;
        Ok(Some(Loaded {
            audit: store.audit_for_run(id).await?,
            ticks: store.ticks_for_run(id).await?,
            incidents: store.incidents_for_run(id).await?,
            run,
            runbook,
            stranded,
        }))
    }

    pub fn view<'a>(&'a self, config: &'a crate::config::Config) -> pages::RunView<'a> {
        pages::RunView {
            run: &self.run,
            runbook: &self.runbook,
            stranded: self.stranded.as_deref(),
            config,
            audit: &self.audit,
            ticks: &self.ticks,
            incidents: &self.incidents,
        }
    }
}

async fn run_report(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !allowed(&state, Scope::Run(RunId(id)), &q, &headers) {
        return forbidden();
    }
    let engine = &state.engine;
    let run = match engine.store().run(RunId(id)).await {
        Ok(Some(run)) => run,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such run\n").into_response(),
        Err(e) => return internal(e),
    };
    match engine.report(&run).await {
        Ok(md) => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], md).into_response(),
        Err(e) => internal(e),
    }
}

/// Ready when the database takes a write (a full disk or a read-only file
/// answers reads and fails every click) and the scheduler and outbox
/// workers run.
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let now = state.engine.now();
    if let Err(e) = state.engine.store().check_writable(now).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "readiness: the database does not take writes"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not take writes\n".into(),
        );
    }
    if !state.scheduler_alive.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "scheduler not running\n".into(),
        );
    }
    if !state.outbox_alive.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "outbox worker not running\n".into(),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

/// How long a client has to send a request's headers, counted from when
/// the connection waits for them: a slow sender (slowloris) and a kept-alive
/// connection left idle are both closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutting down waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The most connections open at once: the file-descriptor limit less room
/// for the database, the platforms and the probes, between 64 and 4,096.
/// Past it, new connections wait in the kernel's queue until one closes,
/// instead of the process running out of descriptors.
pub fn max_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    soft.map_or(512, |n| n.saturating_sub(128).clamp(64, 4096))
}

/// Serve `router` on `listener` until `shutdown` completes: HTTP/1.1 with
/// [`HEADER_READ_TIMEOUT`] and at most [`max_connections`] open; on
/// shutdown, requests in progress are finished (for up to 10 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let cap = max_connections();
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let (closing, _) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was
                    // taken: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(
            |req: axum::http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
        ));
        let mut closing = closing.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.changed() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    let _ = closing.send(true);
    // Every connection holds a slot until it ends: all slots back means all
    // connections closed.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
    Ok(())
}
