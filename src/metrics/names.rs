//! Metric names that other modules read back (from a remote `/metrics` text), spelled once.

/// Client requests answered, by pool and status class.
pub const REQUESTS: &str = "gantry_requests_total";
/// Client-observed request duration per pool (a histogram: `_bucket`, `_sum`, `_count`).
pub const REQUEST_DURATION: &str = "gantry_request_duration_seconds";
/// Requests of a pool that reached a backend (cache hits and requests
/// refused before one are not in it): what the scaler counts.
pub const POOL_UPSTREAM_REQUESTS: &str = "gantry_pool_upstream_requests_total";
/// Time from a pool's request leaving for a backend to its response finishing (a histogram).
pub const POOL_UPSTREAM_DURATION: &str = "gantry_pool_upstream_duration_seconds";
/// Items waiting in a worker's queue.
pub const WORKER_QUEUE_LENGTH: &str = "gantry_worker_queue_length";
/// Items a worker scored (the status page reads workers' `/metrics`).
pub const WORKER_INFERENCES: &str = "gantry_worker_inferences_total";
/// A worker's model executions; inferences / executions is the mean batch size.
pub const WORKER_BATCH_EXECUTIONS: &str = "gantry_worker_batch_executions_total";
/// Time items waited for their batch in a worker (a histogram).
pub const WORKER_QUEUE_WAIT: &str = "gantry_worker_queue_wait_seconds";
/// Time per batch in a worker's model (a histogram).
pub const WORKER_COMPUTE: &str = "gantry_worker_compute_seconds";
/// A worker's verdicts by class and model version.
pub const WORKER_VERDICTS: &str = "gantry_worker_verdicts_total";
/// The model a worker serves: `{model="<name>@<version>"} 1`.
pub const WORKER_MODEL_INFO: &str = "gantry_worker_model_info";
