//! The HTTP side of `tminus serve`: an axum [`Router`] built from the app's
//! state, and [`serve`], which takes its listener so tests can bind port 0.
//! Platform endpoints join this router as their adapters arrive.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::engine::Engine;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Cleared when the scheduler stops, so readiness tells the truth.
    pub scheduler_alive: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Ready when the database answers and the scheduler runs.
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    if let Err(e) = state.engine.store().ping().await {
        tracing::warn!(error = format!("{e:#}"), "readiness: database unreachable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "database unreachable\n".into(),
        );
    }
    if !state.scheduler_alive.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "scheduler not running\n".into(),
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
