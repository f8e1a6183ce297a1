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

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

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

/// Serve `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
