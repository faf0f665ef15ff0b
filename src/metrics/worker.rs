//! Metrics of the inference worker, named after Triton's so dashboards translate.
//!
//! Mean batch size is `gantry_worker_inferences_total /
//! gantry_worker_batch_executions_total` (Triton: `nv_inference_count /
//! nv_inference_exec_count`). Queue wait and compute time are per item and per
//! batch execution respectively.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Batch-size buckets: powers of two up to the largest batch the API accepts.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Queue-wait and compute buckets in seconds, finer than
/// [`LATENCY_BUCKETS`](super::LATENCY_BUCKETS) at the low end.
pub const FAST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// HTTP requests answered by the worker, by outcome (`ok`, `bad_request`,
/// `too_large`, `queue_full`, `error`).
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_worker_requests_total",
        "Analysis requests answered by the worker, by outcome",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// Items (URLs) scored; a batch request of n URLs counts n.
pub static INFERENCES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(super::names::WORKER_INFERENCES, "Items scored by the model")
        .expect("metric registers once")
});

/// Model executions; inferences / executions is the mean batch size.
pub static BATCH_EXECUTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        super::names::WORKER_BATCH_EXECUTIONS,
        "Model executions (one per batch)"
    )
    .expect("metric registers once")
});

/// Time each item spent queued before its batch started.
pub static QUEUE_WAIT: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        super::names::WORKER_QUEUE_WAIT,
        "Time from enqueue to the start of the item's batch",
        FAST_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Time per batch spent extracting features and running the model.
pub static COMPUTE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        super::names::WORKER_COMPUTE,
        "Time per batch to extract features and run the model",
        FAST_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Items per model execution.
pub static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "gantry_worker_batch_size",
        "Items per model execution",
        BATCH_SIZE_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Items waiting in the queue now.
pub static QUEUE_LENGTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        super::names::WORKER_QUEUE_LENGTH,
        "Items waiting in the queue"
    )
    .expect("metric registers once")
});

/// Verdicts given, by class (`phishing`, `legitimate`) and model
/// (`<name>@<version>`), so a canary's verdicts are told from the stable's.
pub static VERDICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        super::names::WORKER_VERDICTS,
        "Verdicts given, by class and model version",
        &["verdict", "model"]
    )
    .expect("metric registers once")
});

/// The model served, as a label (Prometheus joins it onto the other series
/// of the same instance): always 1.
pub static MODEL_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        super::names::WORKER_MODEL_INFO,
        "The model this worker serves (name@version), always 1",
        &["model"]
    )
    .expect("metric registers once")
});

/// One model's verdict counters, looked up once rather than by label for
/// every scored item; creating them shows both classes at zero.
#[derive(Debug, Clone)]
pub struct Verdicts {
    /// `verdict="phishing"`.
    pub phishing: IntCounter,
    /// `verdict="legitimate"`.
    pub legitimate: IntCounter,
}

impl Verdicts {
    /// The counters of `model` (`name@version`).
    pub fn of(model: &str) -> Verdicts {
        Verdicts {
            phishing: VERDICTS.with_label_values(&["phishing", model]),
            legitimate: VERDICTS.with_label_values(&["legitimate", model]),
        }
    }
}

/// Registers every worker metric, at zero, so the first scrape (Prometheus,
/// the status page) sees a worker that has not scored anything yet; `model`
/// is the served model's `name@version` (its verdicts are [`Verdicts::of`] it).
pub fn register(model: &str) {
    MODEL_INFO.with_label_values(&[model]).set(1);
    Verdicts::of(model);
    LazyLock::force(&INFERENCES);
    LazyLock::force(&BATCH_EXECUTIONS);
    LazyLock::force(&QUEUE_WAIT);
    LazyLock::force(&COMPUTE);
    LazyLock::force(&BATCH_SIZE);
    LazyLock::force(&QUEUE_LENGTH);
}
