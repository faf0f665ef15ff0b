//! The admin listener: `/metrics`, `/health`, and the backend API the scaler and operators use.
//!
//! `GET /admin/pools` lists pools and backends; `GET /admin/targets` gives them
//! to Prometheus as HTTP service discovery; `POST /admin/pools/{pool}/backends`
//! with `{"addr": "host:port", "weight": 1}` adds one; `DELETE
//! /admin/pools/{pool}/backends/{addr}` drains one; `GET /admin/scaler` lists
//! the scaler's last decisions per pool. `GET /admin/cache` shows the cache
//! tiers; `POST /admin/cache/purge` with `{"key": "pool:/path:hash"}`,
//! `{"prefix": "pool:/path:"}` or `{"all": true}` purges every tier. When a
//! token is set, mutating calls need `Authorization: Bearer <token>`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::pool::{BackendStatus, PoolError, Pools};
use crate::metrics;

/// What admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The proxy's pools.
    pub pools: Arc<Pools>,
    /// Required bearer token for mutating calls, if any.
    pub token: Option<Arc<str>>,
    /// The response cache, when on.
    pub cache: Option<crate::cache::Cache>,
}

/// Body of `POST /admin/cache/purge`: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// One key, as stored (`pool:/path:hash`).
    #[serde(default)]
    pub key: Option<String>,
    /// Every key starting with this (`pool:`, `pool:/path:`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Everything.
    #[serde(default)]
    pub all: bool,
}

/// One pool in `GET /admin/pools`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Routing policy.
    pub policy: crate::config::Policy,
    /// Members and draining backends.
    pub backends: Vec<BackendView>,
}

/// One backend in a [`PoolView`].
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendView {
    /// Address.
    pub addr: String,
    /// Weight.
    pub weight: u32,
    /// `up`, `down`, `ejected`, `draining`.
    pub state: String,
    /// In-flight requests.
    pub inflight: u64,
}

impl From<BackendStatus> for BackendView {
    fn from(s: BackendStatus) -> Self {
        BackendView {
            addr: s.addr.to_string(),
            weight: s.weight,
            state: s.state.into(),
            inflight: s.inflight,
        }
    }
}

/// Body of `POST /admin/pools/{pool}/backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBackend {
    /// `host:port`.
    pub addr: String,
    /// Weight, default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(|| async { metrics::render() }))
        .route("/admin/pools", get(list_pools))
        .route("/admin/targets", get(scrape_targets))
        .route(
            "/admin/scaler",
            get(|| async { Json(crate::scaler::journal::snapshot()) }),
        )
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

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": msg.to_string() })),
    )
        .into_response()
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(&**token) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
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
    body.map(|Json(req)| req)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.body_text())))
}

fn pool_error(e: PoolError) -> Response {
    let status = match e {
        PoolError::UnknownPool(_) | PoolError::NotFound(_) => StatusCode::NOT_FOUND,
        PoolError::Duplicate(_) => StatusCode::CONFLICT,
    };
    error(status, e)
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
                backends: p.status(now).into_iter().map(Into::into).collect(),
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
    let addr = match crate::config::parse_addr(&req.addr) {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if req.weight == 0 {
        return error(StatusCode::BAD_REQUEST, "weight must be at least 1");
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
    let addr = match crate::config::parse_addr(&addr) {
        Ok(a) => a,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
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
            return error(StatusCode::BAD_REQUEST, msg);
        }
    };
    let Some(cache) = &state.cache else {
        return error(StatusCode::NOT_FOUND, "the response cache is off");
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
