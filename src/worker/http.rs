//! The worker's HTTP API (axum): analyze one URL or a batch, model info, health, readiness, metrics.
//!
//! - `POST /v1/analyze` `{"url": "..."}` -> `{"verdict", "score", "model"}`
//! - `POST /v1/analyze/batch` `{"items": [{"url": "..."}, ...]}` -> `{"results": [...]}`, in order
//! - `GET /v1/model` -> `model.json` and the runtime settings
//! - `GET /health` (alive), `GET /ready` (sessions up and queue not full), `GET /metrics`
//!
//! Bodies are read as bytes whatever their content type (so `curl -d` works).
//! Any string is a URL to score, the empty one included (the feature spec
//! defines it; `golden.jsonl` pins its score).
//! Malformed JSON or a missing field is 400, a body over the limit or too many
//! items 413, a full queue 503 with `Retry-After`. Every error body is
//! `{"error": "..."}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Worker, WorkerError};
use crate::metrics;
use crate::metrics::worker as m;

/// Seconds a client is told to wait after a 503 for a full queue.
const RETRY_AFTER_SECONDS: &str = "1";

/// Body of `POST /v1/analyze`, and one item of a batch.
#[derive(Debug, Deserialize)]
pub struct AnalyzeRequest {
    /// The URL to judge.
    pub url: String,
}

/// Body of `POST /v1/analyze/batch`.
#[derive(Debug, Deserialize)]
pub struct BatchRequest {
    /// The URLs to judge, answered in the same order.
    pub items: Vec<AnalyzeRequest>,
}

/// One verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// `phishing` or `legitimate`.
    pub verdict: String,
    /// The model's phishing probability.
    pub score: f32,
    /// `name@version` of the model.
    pub model: String,
}

/// Answer to `POST /v1/analyze/batch`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResponse {
    /// One analysis per item, in order.
    pub results: Vec<Analysis>,
}

/// The worker's router.
pub fn router(worker: Arc<Worker>) -> Router {
    let limit = worker.limits.max_body_bytes;
    Router::new()
        .route("/v1/analyze", post(analyze))
        .route("/v1/analyze/batch", post(analyze_batch))
        .route("/v1/model", get(model_info))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(|| async { metrics::render() }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(worker)
}

/// An error answer: `{"error": message}`, counted under `outcome`.
struct ApiError {
    status: StatusCode,
    outcome: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        m::REQUESTS.with_label_values(&[self.outcome]).inc();
        let body = Json(serde_json::json!({ "error": self.message }));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let retry = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)];
            return (self.status, retry, body).into_response();
        }
        (self.status, body).into_response()
    }
}

fn error(status: StatusCode, outcome: &'static str, msg: impl std::fmt::Display) -> Response {
    ApiError {
        status,
        outcome,
        message: msg.to_string(),
    }
    .into_response()
}

/// Reads a JSON body: 413 past the size limit, 400 for anything malformed.
fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: r.status(),
                outcome: "too_large",
                message: "request body is too large".into(),
            }
        } else {
            ApiError {
                status: StatusCode::BAD_REQUEST,
                outcome: "bad_request",
                message: r.body_text(),
            }
        }
    })?;
    decode(&bytes).map_err(|message| ApiError {
        status: StatusCode::BAD_REQUEST,
        outcome: "bad_request",
        message,
    })
}

/// Decodes a request body ([`AnalyzeRequest`], [`BatchRequest`]) as the
/// handlers do; the error is the 400's message. Public for the fuzz targets.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Maps a scoring failure to its answer.
fn score_error(e: WorkerError) -> Response {
    match e {
        WorkerError::QueueFull => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            "queue full, retry later",
        ),
        e => {
            tracing::warn!(error = %e, "Scoring failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "error", e)
        }
    }
}

fn analysis(worker: &Worker, score: f32) -> Analysis {
    let (verdict, counter) = if score >= worker.spec.threshold {
        ("phishing", &worker.verdicts.phishing)
    } else {
        ("legitimate", &worker.verdicts.legitimate)
    };
    counter.inc();
    Analysis {
        verdict: verdict.to_string(),
        score,
        model: worker.spec.id().to_string(),
    }
}

async fn analyze(
    State(worker): State<Arc<Worker>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: AnalyzeRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match worker.batcher.score(vec![req.url]).await {
        Ok(scores) => {
            m::REQUESTS.with_label_values(&["ok"]).inc();
            Json(analysis(&worker, scores[0])).into_response()
        }
        Err(e) => score_error(e),
    }
}

async fn analyze_batch(
    State(worker): State<Arc<Worker>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: BatchRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let max = worker.limits.max_batch_items;
    if req.items.len() > max {
        let msg = format!(
            "batch has {} items; at most {max} are accepted",
            req.items.len()
        );
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg);
    }
    let urls = req.items.into_iter().map(|it| it.url).collect();
    match worker.batcher.score(urls).await {
        Ok(scores) => {
            m::REQUESTS.with_label_values(&["ok"]).inc();
            let results = scores.into_iter().map(|s| analysis(&worker, s)).collect();
            Json(BatchResponse { results }).into_response()
        }
        Err(e) => score_error(e),
    }
}

async fn model_info(State(worker): State<Arc<Worker>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "id": worker.spec.id(),
        "model": worker.spec.document,
        "runtime": worker.runtime,
    }))
}

async fn ready(State(worker): State<Arc<Worker>>) -> Response {
    let b = &worker.batcher;
    let reason = if b.sessions_alive() == 0 {
        "no inference session is running"
    } else if b.saturated() {
        "queue full"
    } else {
        return (StatusCode::OK, "ready\n").into_response();
    };
    let body = Json(serde_json::json!({ "ready": false, "reason": reason }));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

/// `gantry worker --probe URL`: GET `url`; Ok on a 2xx answer within 2 s.
pub fn probe(url: &str) -> Result<(), WorkerError> {
    let fail = |message: String| WorkerError::Io {
        context: format!("probe {url}"),
        message,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| fail(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<Bytes>>();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(2), client.get(uri))
            .await
            .map_err(|_| fail("no answer within 2 s".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(fail(format!("status {}", answer.status())))
        }
    })
}
