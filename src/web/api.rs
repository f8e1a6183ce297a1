//! `/api/v1`: the HTTP API pipelines call — start a run, report on an item,
//! read runs — on the same listener as everything else. Callers are the
//! integrations of the bot file, each with a bearer token read from the
//! environment variable it names and the services and runbooks it may act
//! on. Missing or wrong token: 401; outside its scope: 403. Errors are RFC
//! 9457 problem details. The OpenAPI 3.1 document at
//! `/api/v1/openapi.json` is derived from the handlers' own types
//! ([`super::model`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use super::model::{
    ItemReported, Problem, ReportItem, RunList, RunModel, RunStarted, RunStatusName, StartRun,
};
use super::{AppState, Loaded};
use crate::config::Integration;
use crate::domain::{RunId, RunStatus};
use crate::engine::api::{ApiOutcome, ItemRequest, Keyed, StartRequest};

/// The largest request body the API reads.
pub const MAX_BODY: usize = 16 * 1024;
/// The longest service, version, env, phase or item name.
const MAX_NAME: usize = 80;
const MAX_NOTE: usize = 300;
const MAX_URL: usize = 2000;
const MAX_KEY: usize = 255;
/// How many runs `GET /api/v1/runs` answers with at most.
const LIST_LIMIT: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/runs", post(start_run).get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/items/{phase}/{item}", post(report_item))
        // Bodies are read to this size and no further; past it, 413.
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tminus API",
        description = "Start deployment runs and report what a pipeline did on their checklist items. \
            Every call but this document needs `Authorization: Bearer <token>` of an integration \
            named in the bot file. Errors are RFC 9457 problem details."
    ),
    paths(start_run, list_runs, get_run, report_item),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

/// An error as `application/problem+json`.
fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail: detail.into(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// A refusal before the engine is asked: its status and what to say.
struct ApiError(StatusCode, String);

fn refuse(status: StatusCode, detail: impl Into<String>) -> ApiError {
    ApiError(status, detail.into())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem(self.0, self.1)
    }
}

fn json_answer(status: u16, body: String, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn internal(e: anyhow::Error) -> Response {
    let id = format!("E{:x}", chrono::Utc::now().timestamp_millis());
    tracing::error!(error_id = %id, error = format!("{e:#}"), "an API call failed");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("something went wrong on our side (error {id}); nothing was changed"),
    )
}

/// The integration whose token the request carries. Every integration's
/// token is compared, in constant time, whichever matches.
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Integration, ApiError> {
    let Some(given) = bearer(headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "send the integration's token as `Authorization: Bearer <token>`",
        ));
    };
    let config = state.engine.config();
    let mut found = None;
    for integration in config.integrations.values() {
        let Some(token) = state.tokens.get(&integration.token_env) else {
            continue;
        };
        if super::access::constant_time_eq(token.expose().as_bytes(), given.as_bytes())
            && found.is_none()
        {
            found = Some(integration.clone());
        }
    }
    found.ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "that token belongs to no integration of the bot file",
        )
    })
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
}

/// The `Idempotency-Key` of a request, if it has one.
fn idempotency_key(
    who: &Integration,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Option<Keyed>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_KEY
                && key.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(Some(Keyed::new(&who.id, key, method, path, body)))
        }
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("an Idempotency-Key is 1 to {MAX_KEY} printable ASCII characters"),
        )),
    }
}

/// The body as `T`: 413 past the limit, 415 if it is not JSON, 400 if it
/// does not parse, 422 if it parses but is not what the call takes.
fn body<T: DeserializeOwned>(
    headers: &HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(T, Bytes), ApiError> {
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            ))
        }
        Err(e) => return Err(refuse(StatusCode::BAD_REQUEST, e.body_text())),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as application/json",
        ));
    }
    match serde_json::from_slice::<T>(&bytes) {
        Ok(v) => Ok((v, bytes)),
        Err(e) if e.is_data() => Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body is not what this call takes: {e}"),
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// A name people type (service, version, env, phase, item): 1 to 80
/// characters, none of them space or control.
fn name(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.chars().count() <= MAX_NAME
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{what}` is 1 to {MAX_NAME} characters without spaces"),
        ))
    }
}

fn outcome(result: anyhow::Result<ApiOutcome>) -> Response {
    match result {
        Ok(ApiOutcome::Answered(status, body)) => json_answer(status, body, false),
        Ok(ApiOutcome::Replayed(status, body)) => json_answer(status, body, true),
        Ok(ApiOutcome::KeyReused) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was first used for a different request",
        ),
        Ok(ApiOutcome::NotFound(detail)) => problem(StatusCode::NOT_FOUND, detail),
        Ok(ApiOutcome::Forbidden(detail)) => problem(StatusCode::FORBIDDEN, detail),
        Ok(ApiOutcome::Conflict(detail)) => problem(StatusCode::CONFLICT, detail),
        Ok(ApiOutcome::Unprocessable(detail)) => problem(StatusCode::UNPROCESSABLE_ENTITY, detail),
        Err(e) => internal(e),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("API answers serialise")
}

/// Start a run, as `/deploy start` would.
///
/// The run is posted in the platform's deployments channel under the
/// integration's name. With an `Idempotency-Key`, a repeat answers as the
/// first call did and starts nothing.
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    request_body = StartRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated call return the first answer and change nothing")),
    responses(
        (status = 201, description = "Started", body = RunStarted),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Outside the integration's services or runbooks", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown runbook, bad field, or a reused key", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn start_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    let who = match caller(&state, &headers) {
        Ok(who) => who,
        Err(r) => return r.into_response(),
    };
    let (req, raw): (StartRun, _) = match body(&headers, bytes) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    for (what, value) in [("service", &req.service), ("version", &req.version)] {
        if let Err(r) = name(what, value) {
            return r.into_response();
        }
    }
    for (what, value) in [("runbook", &req.runbook), ("env", &req.env)] {
        if let Some(Err(r)) = value.as_deref().map(|v| name(what, v)) {
            return r.into_response();
        }
    }
    let keyed = match idempotency_key(&who, &headers, "POST", "/api/v1/runs", &raw) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let engine = &state.engine;
    let answer =
        |run: &crate::domain::Run| (201, to_json(&RunStarted::of(run, engine.page_link(run))));
    let request = StartRequest {
        platform: req.platform.into(),
        service: req.service,
        version: req.version,
        runbook: req.runbook,
        env: req.env,
    };
    outcome(
        engine
            .api_start(&who, request, keyed.as_ref(), &answer)
            .await,
    )
}

/// Report what the pipeline did on an item: `running`, `done` or `failed`.
///
/// `done` marks the item done under the integration's name; `failed`
/// blocks the phase until it is reported again or a person marks it. The
/// card shows the report with its link.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/items/{phase}/{item}",
    request_body = ReportItem,
    params(
        ("id" = i64, Path, description = "The run's id"),
        ("phase" = String, Path, description = "The phase's id in the run's runbook"),
        ("item" = String, Path, description = "The item's id in that phase"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated call return the first answer and change nothing"),
    ),
    responses(
        (status = 200, description = "Recorded", body = ItemReported),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Outside the integration's services or runbooks", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run, phase or item", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is finished, in another phase, or the item is already done", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad field, or a reused key", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn report_item(
    State(state): State<AppState>,
    Path((id, phase, item)): Path<(String, String, String)>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    let run = run_id(&id);
    let who = match caller(&state, &headers) {
        Ok(who) => who,
        // A pipeline started from "Run" reports with its call's token.
        Err(refused) => match (run, bearer(&headers)) {
            (Some(run), Some(token)) => {
                match state.engine.callback(run, &phase, &item, token).await {
                    Ok(Some(who)) => who,
                    Ok(None) => return refused.into_response(),
                    Err(e) => return internal(e),
                }
            }
            _ => return refused.into_response(),
        },
    };
    let Some(id) = run else {
        return problem(StatusCode::NOT_FOUND, format!("there is no run {id}"));
    };
    let (req, raw): (ReportItem, _) = match body(&headers, bytes) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Some(url) = &req.url {
        let ok = url.len() <= MAX_URL
            && (url.starts_with("https://") || url.starts_with("http://"))
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`url` is an http or https address of up to {MAX_URL} characters"),
            );
        }
    }
    if let Some(note) = &req.note {
        if note.chars().count() > MAX_NOTE || note.chars().any(|c| c.is_control() && c != '\n') {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`note` is up to {MAX_NOTE} printable characters"),
            );
        }
    }
    let path = format!("/api/v1/runs/{id}/items/{phase}/{item}");
    let keyed = match idempotency_key(&who, &headers, "POST", &path, &raw) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let answer = |run: &crate::domain::Run| (200, to_json(&ItemReported::of(run, &phase, &item)));
    let request = ItemRequest {
        phase: phase.clone(),
        item: item.clone(),
        status: req.status.into(),
        url: req.url,
        note: req.note.filter(|n| !n.trim().is_empty()),
    };
    outcome(
        state
            .engine
            .api_report(&who, id, request, keyed.as_ref(), &answer)
            .await,
    )
}

fn run_id(text: &str) -> Option<RunId> {
    text.parse::<i64>().ok().filter(|n| *n > 0).map(RunId)
}

/// One run with everything recorded about it (the run page's JSON).
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunModel),
        (status = 401, description = "No or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Outside the integration's services or runbooks", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&state, &headers) {
        Ok(who) => who,
        Err(r) => return r.into_response(),
    };
    let Some(id) = run_id(&id) else {
        return problem(StatusCode::NOT_FOUND, format!("there is no run {id}"));
    };
    let loaded = match Loaded::run(&state.engine, id).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return problem(StatusCode::NOT_FOUND, format!("there is no run {id}")),
        Err(e) => return internal(e),
    };
    let config = state.engine.config();
    let view = loaded.view(&config);
    if !who.may_act_on(&view.run.service, &view.run.runbook) {
        return problem(
            StatusCode::FORBIDDEN,
            format!(
                "integration `{}` may not read {} runs with runbook {}",
                who.id, view.run.service, view.run.runbook
            ),
        );
    }
    axum::Json(RunModel::of(&view)).into_response()
}

/// Which runs `GET /api/v1/runs` lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only runs of this service.
    service: Option<String>,
    /// Only runs in this status.
    status: Option<RunStatusName>,
}

/// The latest runs the integration may see, newest first (at most 50).
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    params(ListQuery),
    responses(
        (status = 200, description = "The runs", body = RunList),
        (status = 400, description = "A bad filter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_runs(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&state, &headers) {
        Ok(who) => who,
        Err(r) => return r.into_response(),
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("{} (filters: service, status)", e.body_text()),
            )
        }
    };
    let status = query.status.map(RunStatus::from);
    let service = query.service.as_deref();
    let store = state.engine.store();
    let found = match store.find_runs(service, status, LIST_LIMIT * 4).await {
        Ok(runs) => runs,
        Err(e) => return internal(e),
    };
    let config = state.engine.config();
    let mut runs = Vec::new();
    for run in found
        .iter()
        .filter(|r| who.may_act_on(&r.service, &r.runbook))
        .take(LIST_LIMIT as usize)
    {
        match Loaded::run(&state.engine, run.id).await {
            Ok(Some(loaded)) => runs.push(RunModel::of(&loaded.view(&config))),
            Ok(None) => {}
            Err(e) => return internal(e),
        }
    }
    axum::Json(RunList { runs }).into_response()
}
