//! Tiered response cache (memory, Redis, disk) for analysis responses.
//!
//! Read path: [`Cache::lookup`] asks L1 ([`memory`]), then L2 ([`redis`],
//! behind a [`breaker`]), then L3 ([`disk`]); a hit in a lower tier is copied
//! into the tiers above it. Identical concurrent misses are coalesced: one
//! caller fills, the others wait (bounded) for its answer. Writes go to L1 at
//! once and to L2/L3 off the response path.
//!
//! - [`key`] — the cache key: pool, path, and a blake3 hash of method, query,
//!   normalised body and vary headers;
//! - [`entry`] — a stored response, its freshness and its binary encoding;
//! - [`policy`] — what may be stored and for how long;
//! - [`config`] — the `cache:` sections of `gantry.yaml`, raw and validated;
//! - [`memory`] — L1, quick_cache (Clock-PRO) or moka (TinyLFU, LRU), bounded by bytes;
//! - [`redis`] — L2, any [`redis::RemoteStore`] (fred in production) behind
//!   timeouts and a circuit breaker;
//! - [`breaker`] — the circuit breaker state machine;
//! - [`disk`] — L3, a redb file of zstd-compressed entries, bounded by bytes;
//! - [`tiered`] — the front: lookup, coalescing, staleness, store, purge, warm;
//! - [`clock`] — wall-clock time behind a trait, so tests can move it;
//! - [`warm`] — `gantry cache warm FILE`: replays requests through a proxy.
//!
//! **Invariant:** nothing on the request path waits on Redis longer than the
//! command timeout, or at all while the circuit is open.
//! **Invariant:** this module knows nothing about Pingora or HTTP sessions:
//! the proxy (`proxy::caching`) hands it keys and responses.

pub mod breaker;
pub mod clock;
pub mod config;
pub mod disk;
pub mod entry;
pub mod key;
pub mod memory;
pub mod policy;
pub mod redis;
pub mod tiered;
pub mod warm;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CacheConfig, EvictionPolicyKind, RouteCache};
pub use entry::CachedResponse;
pub use key::CacheKey;
pub use tiered::{Cache, FillGuard, Hit, Lookup, Miss, Purge, PurgeReport, Tier, XCache};

/// Errors building or running the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The disk tier could not be opened or used.
    #[error("disk cache: {0}")]
    Disk(disk::DiskError),
    /// The Redis tier could not be set up (a bad URL; an unreachable server is not an error).
    #[error("redis cache: {0}")]
    Redis(redis::RemoteError),
}

impl From<disk::DiskError> for CacheError {
    fn from(e: disk::DiskError) -> CacheError {
        CacheError::Disk(e)
    }
}

impl From<redis::RemoteError> for CacheError {
    fn from(e: redis::RemoteError) -> CacheError {
        CacheError::Redis(e)
    }
}

#[cfg(test)]
mod tests;
