//! `GET /status.json`: what the status page shows, as wire types scripts can read too.
//!
//! Counts are since the proxy started (per backend: since it joined); rates,
//! p99 and ratios over time are in [`History`], one [`Point`] per sample.
//! Durations are milliseconds, ratios are 0..1, times are Unix milliseconds;
//! a value that cannot be known yet (no requests) is `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Decision, PolicyView, RejectedEdit, Starts};

/// The whole page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Gantry's version.
    pub version: String,
    /// When this was taken.
    pub at_unix_ms: u64,
    /// Seconds since the proxy started.
    pub uptime_s: u64,
    /// Every pool.
    pub pools: Vec<PoolStatus>,
    /// The response cache; `None` when off.
    pub cache: Option<CacheStatus>,
    /// The scaler in this process; `None` when none runs here.
    pub scaler: Option<ScalerStatus>,
    /// The pools' backends that serve worker metrics, as last scraped.
    pub workers: Vec<WorkerStatus>,
    /// Samples of the last 15 minutes.
    pub history: History,
}

/// One pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Name.
    pub name: String,
    /// Balancing policy (`p2c`, `round_robin`, ...).
    pub balancing: String,
    /// Client requests answered (cache hits included).
    pub requests: u64,
    /// Of them, answered with a 5xx.
    pub errors: u64,
    /// Client-observed latency, median.
    pub p50_ms: Option<f64>,
    /// Client-observed latency, 99th percentile.
    pub p99_ms: Option<f64>,
    /// Members, then draining backends.
    pub backends: Vec<BackendStatus>,
}

/// One backend of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `host:port`.
    pub addr: String,
    /// `up`, `down`, `ejected`, `draining` or `starting` (added, never up yet).
    pub state: String,
    /// While ejected: seconds left.
    pub ejected_for_s: Option<f64>,
    /// Requests in flight.
    pub inflight: u64,
    /// Weight.
    pub weight: u32,
    /// Attempts sent to it.
    pub requests: u64,
    /// Attempts that failed (5xx, connect error, timeout, error).
    pub errors: u64,
    /// `errors / requests`.
    pub error_ratio: Option<f64>,
    /// Time per attempt, median.
    pub p50_ms: Option<f64>,
    /// Time per attempt, 99th percentile.
    pub p99_ms: Option<f64>,
    /// The last active health check.
    pub last_check: Option<Check>,
}

/// An active health check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Seconds ago.
    pub ago_s: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// The response cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStatus {
    /// Hits in any tier over lookups (every lookup starts at L1).
    pub hit_ratio: Option<f64>,
    /// `l1` (memory), `l2` (Redis), `l3` (disk), those configured.
    pub tiers: Vec<TierStatus>,
    /// Requests that waited for an identical request's fill.
    pub coalesced: u64,
    /// Redis circuit: `closed`, `half_open` or `open`; `None` without Redis.
    pub redis_circuit: Option<String>,
}

/// One cache tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TierStatus {
    /// `l1`, `l2`, `l3`.
    pub tier: String,
    /// `memory`, `redis`, `disk`.
    pub kind: String,
    /// Lookups that reached it.
    pub lookups: u64,
    /// Of them, hits.
    pub hits: u64,
    /// `hits / lookups`.
    pub hit_ratio: Option<f64>,
    /// Entries held (not known for the shared Redis tier).
    pub entries: Option<u64>,
    /// Bytes held (not known for the shared Redis tier).
    pub bytes: Option<u64>,
    /// Entries evicted to stay within the tier's size.
    pub evictions: u64,
}

/// The scaler running in this process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalerStatus {
    /// By pool.
    pub pools: BTreeMap<String, ScalerPool>,
    /// Set while the last read of the policy directory found invalid files.
    pub rejected: Option<RejectedEdit>,
}

/// One scaled pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalerPool {
    /// Replicas the last decision wanted.
    pub desired: u32,
    /// Replicas running or starting at the last decision.
    pub current: u32,
    /// Replicas ready at the last decision.
    pub ready: u32,
    /// Warm spares at the last decision (outside the pool).
    #[serde(default)]
    pub warm: u32,
    /// Who leads, with `scaler.lease`.
    #[serde(default)]
    pub leader: Option<super::Leadership>,
    /// The policy in force.
    pub policy: Option<PolicyView>,
    /// Replica starts: failures and backoff.
    pub starts: Starts,
    /// Last decisions, newest first.
    pub decisions: Vec<Decision>,
}

/// One worker's own metrics (its `/metrics`), counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its pool.
    pub pool: String,
    /// `host:port`.
    pub addr: String,
    /// Why the last scrape failed, if it did (the numbers are from the one before).
    pub error: Option<String>,
    /// Items scored.
    pub inferences: u64,
    /// Model executions.
    pub batches: u64,
    /// `inferences / batches`.
    pub mean_batch: Option<f64>,
    /// Mean time an item waited for its batch.
    pub queue_ms: Option<f64>,
    /// Mean time per batch in the model (features included).
    pub inference_ms: Option<f64>,
    /// Items waiting now.
    pub queue_length: u64,
    /// Verdicts by class (`phishing`, `legitimate`).
    pub verdicts: BTreeMap<String, u64>,
    /// The model it serves (`name@version`), when it says.
    #[serde(default)]
    pub model: Option<String>,
}

/// Samples, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Seconds between samples.
    pub interval_s: u64,
    /// At most 15 minutes of them.
    pub points: Vec<Point>,
}

/// One sample: rates over the interval before it, counts at it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When it was taken.
    pub at_unix_ms: u64,
    /// Client requests per second, all pools.
    pub rps: f64,
    /// Client-observed p99 over the interval, all pools.
    pub p99_ms: Option<f64>,
    /// 5xx over answered requests in the interval.
    pub error_ratio: Option<f64>,
    /// Cache hits over lookups in the interval.
    pub hit_ratio: Option<f64>,
    /// Backends taking traffic, all pools.
    pub replicas: u32,
    /// Replicas the scaler wants, all scaled pools (`None` without a scaler).
    pub desired: Option<u32>,
}
