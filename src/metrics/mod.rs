//! Every Prometheus metric Gantry exports, defined in one place.
//!
//! Metrics live in the process-wide default registry so `/metrics` on the
//! admin listener (and the worker) is one `gather()`. Labels are kept to low
//! cardinality: pool, backend address, outcome classes. Submodules hold the
//! metrics of the other parts (cache, worker, scaler) so names stay together.

pub mod cache;
pub mod exposition;
pub mod names;
pub mod scaler;
pub mod system;
pub mod worker;

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Latency buckets in seconds, from 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Client requests answered, by pool and status class (`2xx`, `4xx`, `5xx`).
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        names::REQUESTS,
        "Client requests answered by the proxy, by pool and status class",
        &["pool", "code_class"]
    )
    .expect("metric registers once")
});

/// Client-observed request duration per pool.
pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        names::REQUEST_DURATION,
        "Time from request received to response finished, per pool",
        &["pool"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Requests per pool that reached a backend: the scaler's request rate.
pub static POOL_UPSTREAM_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        names::POOL_UPSTREAM_REQUESTS,
        "Requests of a pool that reached a backend (not cache hits), by pool",
        &["pool"]
    )
    .expect("metric registers once")
});

/// Backend-side duration per pool: from leaving for a backend to the response's end.
pub static POOL_UPSTREAM_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        names::POOL_UPSTREAM_DURATION,
        "Time from a request leaving for a backend to its response finishing, per pool",
        &["pool"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Upstream attempts by pool, backend and outcome (`ok`, `http_5xx`, `connect_error`, `timeout`, `error`).
pub static UPSTREAM_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_upstream_requests_total",
        "Requests sent to backends, by pool, backend and outcome",
        &["pool", "backend", "outcome"]
    )
    .expect("metric registers once")
});

/// In-flight requests per backend.
pub static BACKEND_INFLIGHT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_backend_inflight",
        "Requests in flight to each backend",
        &["pool", "backend"]
    )
    .expect("metric registers once")
});

/// How long each attempt held its backend: selection to the response's end
/// (body included), or to the failure. Per backend, for the status page's p50/p99.
pub static BACKEND_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "gantry_backend_duration_seconds",
        "Time each attempt held its backend, from selection to the response's end, per backend",
        &["pool", "backend"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// 1 when a backend is eligible for traffic (healthy, not ejected, not draining).
pub static BACKEND_UP: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_backend_up",
        "1 if the backend receives new requests, else 0",
        &["pool", "backend"]
    )
    .expect("metric registers once")
});

/// Retries made on another backend.
pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_retries_total",
        "Requests retried on another backend",
        &["pool"]
    )
    .expect("metric registers once")
});

/// Passive ejections.
pub static EJECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_ejections_total",
        "Backends ejected after consecutive failures",
        &["pool", "backend"]
    )
    .expect("metric registers once")
});

/// Client requests currently being handled.
pub static ACTIVE_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gantry_active_connections",
        "Client requests being handled now"
    )
    .expect("metric registers once")
});

/// Requests rejected before reaching a backend, by reason (`no_route`, `too_large`, `no_backend`).
pub static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_rejected_total",
        "Requests answered by the proxy itself, by reason",
        &["pool", "reason"]
    )
    .expect("metric registers once")
});

/// Client connections refused because their listener was at its connection
/// cap (`limits.max_connections` on `traffic`, `admin.max_connections` on
/// `admin`, `--max-connections` on `worker`).
pub static REQUESTS_BY_PROTOCOL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_requests_by_protocol_total",
        "Client requests answered by the proxy, by HTTP version (http1, h2)",
        &["protocol"]
    )
    .expect("metric registers once")
});

pub static TLS_EXPIRY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_tls_certificate_expiry_seconds",
        "Seconds until each TLS certificate of the traffic listener expires (negative: expired)",
        &["file"]
    )
    .expect("metric registers once")
});

pub static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_connections_refused_total",
        "Client connections refused at the listener's connection cap, by listener",
        &["listener"]
    )
    .expect("metric registers once")
});

/// Config reloads and admin changes to backends.
pub static BACKEND_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gantry_backend_changes_total",
        "Backends added or removed at runtime"
    )
    .expect("metric registers once")
});

/// Status class label for a status code.
pub fn code_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Text exposition of the default registry.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    // Encoding our own well-formed families into a Vec cannot fail.
    let _ = encoder.encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
