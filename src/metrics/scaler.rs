//! Metrics of the auto-scaler: replicas, decisions, actions, start times, policy reloads.

use std::sync::LazyLock;

use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Replica start buckets in seconds, from 50 ms to 2 min.
pub const START_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Replicas per pool: `desired` (last decision), `current` (running or starting), `ready`,
/// and `warm` (spares outside the pool, not counted in the others).
pub static REPLICAS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_scaler_replicas",
        "Replicas per pool: desired, current (running or starting), ready, and warm spares outside the pool",
        &["pool", "state"]
    )
    .expect("metric registers once")
});

/// Evaluations by direction (`up`, `down`, `none`) and reason label.
pub static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_scaler_decisions_total",
        "Scaling evaluations by pool, direction and reason",
        &["pool", "direction", "reason"]
    )
    .expect("metric registers once")
});

/// Runtime actions by kind (`start`, `stop`, `adopt`, `replace`, `warm`: a spare started
/// and ready, `promote`: a spare joined the pool) and outcome (`ok`, `error`).
pub static ACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_scaler_actions_total",
        "Replica actions by pool, action and outcome",
        &["pool", "action", "outcome"]
    )
    .expect("metric registers once")
});

/// Time from asking the runtime for a replica to the replica taking traffic.
pub static START_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "gantry_scaler_replica_start_seconds",
        "Time from starting a replica to it joining the pool",
        &["pool"],
        START_BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// The last observed value of each policy metric, averaged over the policy window.
pub static METRIC_VALUE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "gantry_scaler_metric_value",
        "Policy metric values the scaler last decided on",
        &["pool", "metric"]
    )
    .expect("metric registers once")
});

/// 1 while a pool is in panic mode.
pub static PANIC: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_scaler_panic",
        "1 while the pool's scaler is in panic mode",
        &["pool"]
    )
    .expect("metric registers once")
});

/// Policy loads by outcome (`ok`, `error`).
pub static POLICY_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_scaler_policy_reloads_total",
        "Policy file loads by outcome",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// Replica starts that failed: the runtime refused, or the replica exited or
/// stayed unready within its start window (a crash loop shows here).
pub static START_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_scaler_start_failures_total",
        "Replica starts that failed (refused, exited or never ready) by pool",
        &["pool"]
    )
    .expect("metric registers once")
});

/// Ready replicas replaced because the proxy counted them down or ejected too long.
pub static REPLACED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_scaler_replaced_unhealthy_total",
        "Ready replicas replaced after staying unhealthy for replace_unhealthy_after, by pool",
        &["pool"]
    )
    .expect("metric registers once")
});

/// Failed starts in a row per pool; above 0 the pool is failing and backing off.
pub static START_FAILING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_scaler_start_failures_in_a_row",
        "Failed replica starts since a replica last stayed ready, by pool",
        &["pool"]
    )
    .expect("metric registers once")
});

/// The policy's `max` per pool: alert rules compare `desired` with it.
pub static MAX_REPLICAS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_scaler_max_replicas",
        "The policy's max replicas, by pool",
        &["pool"]
    )
    .expect("metric registers once")
});

/// Each policy metric's target (target tracking) or scale-up threshold (threshold rule).
pub static METRIC_TARGET: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "gantry_scaler_metric_target",
        "Policy metric targets (target tracking) or scale-up thresholds, by pool and metric",
        &["pool", "metric"]
    )
    .expect("metric registers once")
});

/// Policy files that failed to load at the last read of the directory (their
/// pools keep the previous policy).
pub static POLICY_ERRORS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gantry_scaler_policy_errors",
        "Invalid policy files at the last read of the policy directory"
    )
    .expect("metric registers once")
});
