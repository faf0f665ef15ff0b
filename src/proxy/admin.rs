//! The admin listener: the server side of the admin API ([`crate::admin`] has its wire types and routes).
//!
//! `GET /admin/pools` lists pools and backends; `GET /admin/targets` gives them
//! to Prometheus as HTTP service discovery; `POST /admin/pools/{pool}/backends`
//! with `{"addr": "host:port", "weight": 1}` adds one; `DELETE
//! /admin/pools/{pool}/backends/{addr}` drains one; `GET /admin/scaler` shows
//! the journal of a scaler in this process (through [`ScalerView`]; `{}` when
//! none). `GET /admin/cache` shows the cache tiers; `POST /admin/cache/purge`
//! with `{"key": "pool:/path:hash"}`, `{"prefix": "pool:/path:"}` or
//! `{"all": true}` purges every tier. Mutating calls always need
//! `Authorization: Bearer <token>` (configured, or generated at start: see
//! [`crate::admin::token`]); reads (`/metrics`, `/health`, the lists, the
//! status page `/` and `/status.json`: [`super::status`]) are open. Errors are an [`ErrorBody`] with a code.

use std::sync::Arc;
use std::time::Instant;

use super::pool::{BackendStatus, PoolError, Pools};
use crate::admin::{
    AddBackend, BackendView, ErrorBody, ErrorCode, PoolView, PurgeRequest, ScalerJournal,
    ScalerView,
};
use crate::metrics;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};

/// What admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The proxy's pools.
    pub pools: Arc<Pools>,
    /// The bearer token mutating calls need.
    pub token: Arc<str>,
    /// The response cache, when on.
    pub cache: Option<crate::cache::Cache>,
    /// The journal of a scaler running in this process, if one does.
    pub scaler: Option<Arc<dyn ScalerView>>,
    /// The status page's charts and worker scrapes.
    pub live: super::status::Live,
}

fn view(s: BackendStatus) -> BackendView {
    BackendView {
        addr: s.addr.to_string(),
        weight: s.weight,
        state: s.state,
        inflight: s.inflight,
    }
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(super::status::page))
        .route("/status.json", get(super::status::json))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(|| async { metrics::render() }))
        .route("/admin/pools", get(list_pools))
        .route("/admin/targets", get(scrape_targets))
        .route("/admin/scaler", get(scaler_journal))
        .route(
            "/admin/pools/{pool}/backends",
            axum::routing::post(add_backend),
        )
        .route(
            "/admin/pools/{pool}/backends/{addr}",
            delete(remove_backend),
        )
        .route("/admin/cache", get(cache_status))
        .route("/admin/cache/purge", axum::routing::post(purge_cache))
        .with_state(state)
}

fn error(status: StatusCode, code: ErrorCode, msg: impl std::fmt::Display) -> Response {
    let body = ErrorBody {
        error: msg.to_string(),
        code,
    };
    (status, Json(body)).into_response()
}

async fn scaler_journal(State(state): State<AdminState>) -> Json<ScalerJournal> {
    Json(
        state
            .scaler
            .as_ref()
            .map(|s| s.journal())
            .unwrap_or_default(),
    )
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| crate::admin::token::matches(g, &state.token)) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or wrong bearer token",
        )))
    }
}

/// The preamble of a mutating call with a JSON body: token, then body (400 with serde's message).
fn authorized_json<T>(
    state: &AdminState,
    headers: &HeaderMap,
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Box<Response>> {
    authorized(state, headers)?;
    body.map(|Json(req)| req).map_err(|e| {
        let e = error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            e.body_text(),
        );
        Box::new(e)
    })
}

/// `host:port` to an address; a name is looked up on a blocking thread, not
/// on the runtime the health checks and the scaler share.
async fn resolve(addr: String) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    tokio::task::spawn_blocking(move || crate::config::parse_addr(&addr))
        .await
        .unwrap_or_else(|e| Err(format!("address lookup failed: {e}")))
}

fn pool_error(e: PoolError) -> Response {
    let (status, code) = match e {
        PoolError::UnknownPool(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownPool),
        PoolError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotInPool),
        PoolError::Duplicate(_) => (StatusCode::CONFLICT, ErrorCode::AlreadyInPool),
    };
    error(status, code, e)
}

async fn list_pools(State(state): State<AdminState>) -> Json<Vec<PoolView>> {
    let now = Instant::now();
    Json(
        state
            .pools
            .iter()
            .map(|p| PoolView {
                name: p.name.to_string(),
                policy: p.config.policy,
                backends: p.status(now).into_iter().map(view).collect(),
            })
            .collect(),
    )
}

/// Prometheus HTTP service discovery: every pool member as a scrape target,
/// so workers the scaler starts are scraped without editing prometheus.yml.
async fn scrape_targets(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let now = Instant::now();
    let groups: Vec<serde_json::Value> = state
        .pools
        .iter()
        .map(|p| {
            let targets: Vec<String> = p.status(now).iter().map(|b| b.addr.to_string()).collect();
            serde_json::json!({ "targets": targets, "labels": { "pool": &*p.name } })
        })
        .collect();
    Json(serde_json::Value::Array(groups))
}

async fn add_backend(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AddBackend>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match authorized_json(&state, &headers, body) {
        Ok(req) => req,
        Err(r) => return *r,
    };
    let addr = match resolve(req.addr).await {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m),
    };
    if req.weight == 0 {
        let msg = "weight must be at least 1";
        return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, msg);
    }
    match state.pools.get(&pool).and_then(|p| p.add(addr, req.weight)) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"added": addr.to_string()})),
        )
            .into_response(),
        Err(e) => pool_error(e),
    }
}

async fn remove_backend(
    State(state): State<AdminState>,
    Path((pool, addr)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return *r;
    }
    let addr = match resolve(addr).await {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m),
    };
    match state.pools.get(&pool).and_then(|p| p.remove(addr)) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"draining": addr.to_string()})),
        )
            .into_response(),
        Err(e) => pool_error(e),
    }
}

async fn cache_status(State(state): State<AdminState>) -> Response {
    let Some(cache) = &state.cache else {
        return Json(serde_json::json!({ "enabled": false })).into_response();
    };
    let (entries, bytes) = cache.memory_usage();
    let disk = cache
        .disk_usage()
        .map(|(entries, bytes)| serde_json::json!({ "entries": entries, "bytes": bytes }));
    let circuit = cache
        .redis_circuit()
        .map(|c| format!("{c:?}").to_lowercase());
    Json(serde_json::json!({
        "enabled": true,
        "memory": { "entries": entries, "bytes": bytes },
        "disk": disk,
        "redis_circuit": circuit,
    }))
    .into_response()
}

async fn purge_cache(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<PurgeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match authorized_json(&state, &headers, body) {
        Ok(req) => req,
        Err(r) => return *r,
    };
    let what = match (req.key, req.prefix, req.all) {
        (Some(k), None, false) => crate::cache::Purge::Key(k),
        (None, Some(p), false) => crate::cache::Purge::Prefix(p),
        (None, None, true) => crate::cache::Purge::All,
        _ => {
            let msg = "give exactly one of `key`, `prefix`, `all: true`";
            return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, msg);
        }
    };
    let Some(cache) = &state.cache else {
        let msg = "the response cache is off";
        return error(StatusCode::NOT_FOUND, ErrorCode::CacheOff, msg);
    };
    tracing::info!(purge = ?what, "Cache purge");
    let report = cache.purge(what).await;
    let status = if report.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, Json(report)).into_response()
}
