//! Response cache metrics: lookups per tier, size per tier, evictions, coalescing, Redis circuit.
//!
//! `tier` is `l1`, `l2` or `l3`. Lookup `result` is `hit`, `stale` (found
//! but past its TTL), `miss`, `error` (the tier failed or timed out) or
//! `bypass` (the tier was skipped: Redis circuit open). Write `result` is
//! `ok`, `failed` (the tier refused or timed out: a full or read-only disk,
//! Redis down), `bypass` (Redis circuit open) or `dropped` (the disk write
//! queue was full).

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Lookups by tier and result.
pub static LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_cache_lookups_total",
        "Cache lookups by tier and result (hit, stale, miss, error, bypass)",
        &["tier", "result"]
    )
    .expect("metric registers once")
});

/// Writes (stores) by tier and result: how a failing tier shows while requests still succeed.
pub static WRITES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_cache_writes_total",
        "Cache writes by tier and result (ok, failed, bypass, dropped)",
        &["tier", "result"]
    )
    .expect("metric registers once")
});

/// Entries held per tier (L1 and L3; Redis is shared and not counted).
pub static ENTRIES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_cache_entries",
        "Entries held by a cache tier",
        &["tier"]
    )
    .expect("metric registers once")
});

/// Bytes held per tier (L1: weighed size; L3: compressed size).
pub static BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gantry_cache_bytes",
        "Bytes held by a cache tier",
        &["tier"]
    )
    .expect("metric registers once")
});

/// Entries dropped to stay within a tier's byte bound.
pub static EVICTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_cache_evictions_total",
        "Entries evicted from a cache tier to stay within its size",
        &["tier"]
    )
    .expect("metric registers once")
});

/// Requests answered by waiting for an identical in-flight miss.
pub static COALESCED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gantry_cache_coalesced_total",
        "Requests that waited for an identical in-flight fill instead of calling the backend"
    )
    .expect("metric registers once")
});

/// Redis circuit breaker: 0 closed, 1 half-open, 2 open.
pub static REDIS_CIRCUIT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gantry_cache_redis_circuit_state",
        "Redis tier circuit breaker: 0 closed, 1 half-open, 2 open"
    )
    .expect("metric registers once")
});

/// 1 once this proxy listens for other proxies' purges on Redis.
pub static INVALIDATIONS_SUBSCRIBED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gantry_cache_invalidations_subscribed",
        "1 while the proxy is subscribed to the Redis invalidation channel"
    )
    .expect("metric registers once")
});

/// Counts `n` writes to `tier` with `result`.
pub fn writes(tier: &str, result: &str, n: usize) {
    WRITES.with_label_values(&[tier, result]).inc_by(n as u64);
}

/// Counts one lookup.
pub fn lookup(tier: &str, result: &str) {
    LOOKUPS.with_label_values(&[tier, result]).inc();
}
