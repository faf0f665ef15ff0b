//! Metric names that other modules read back (from a remote `/metrics` text), spelled once.

/// Client requests answered, by pool and status class.
pub const REQUESTS: &str = "gantry_requests_total";
/// Client-observed request duration per pool (a histogram: `_bucket`, `_sum`, `_count`).
pub const REQUEST_DURATION: &str = "gantry_request_duration_seconds";
/// Items waiting in a worker's queue.
pub const WORKER_QUEUE_LENGTH: &str = "gantry_worker_queue_length";
