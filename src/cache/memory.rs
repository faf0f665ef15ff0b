//! L1: a moka cache in process memory, bounded by bytes, each entry expiring with its own lifetime.
//!
//! The weigher charges an entry its body, headers, key and a fixed overhead,
//! so `max_bytes` bounds what responses hold. moka drops an entry once its
//! last stale window ends ([`Expiry`]); freshness itself is judged by the
//! caller with the cache [`Clock`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache as Moka;
use moka::notification::RemovalCause;
use moka::policy::{EvictionPolicy, Expiry};

use super::clock::Clock;
use super::config::{EvictionPolicyKind, MemoryConfig};
use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use crate::metrics::cache as m;

/// The in-memory tier.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Moka<CacheKey, Arc<CachedResponse>>,
    clock: Arc<dyn Clock>,
}

/// Expires each entry when its last stale window ends.
struct UntilDead(Arc<dyn Clock>);

impl Expiry<CacheKey, Arc<CachedResponse>> for UntilDead {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResponse>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(value.remaining_ms(self.0.now_ms())))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResponse>,
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_millis(value.remaining_ms(self.0.now_ms())))
    }
}

impl MemoryTier {
    /// An empty tier.
    pub fn new(config: &MemoryConfig, clock: Arc<dyn Clock>) -> MemoryTier {
        let policy = match config.eviction {
            EvictionPolicyKind::TinyLfu => EvictionPolicy::tiny_lfu(),
            EvictionPolicyKind::Lru => EvictionPolicy::lru(),
        };
        let cache = Moka::builder()
            .name("gantry-l1")
            .max_capacity(config.max_bytes)
            .weigher(|k: &CacheKey, v: &Arc<CachedResponse>| {
                u32::try_from(v.weight(k.as_str().len())).unwrap_or(u32::MAX)
            })
            .eviction_policy(policy)
            .expire_after(UntilDead(clock.clone()))
            .eviction_listener(|_k, _v, cause| {
                if cause == RemovalCause::Size {
                    m::EVICTIONS.with_label_values(&["l1"]).inc();
                }
            })
            .build();
        MemoryTier { cache, clock }
    }

    /// The entry under `key`, fresh or stale; a dead one is dropped.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let e = self.cache.get(key).await?;
        if e.freshness(self.clock.now_ms()) == Freshness::Dead {
            self.cache.invalidate(key).await;
            return None;
        }
        Some(e)
    }

    /// Stores or replaces an entry.
    pub async fn insert(&self, key: CacheKey, entry: Arc<CachedResponse>) {
        self.cache.insert(key, entry).await;
    }

    /// Drops one entry; true when it was there.
    pub async fn remove(&self, key: &CacheKey) -> bool {
        self.cache.remove(key).await.is_some()
    }

    /// Drops every entry whose key starts with `prefix`; returns how many.
    pub async fn remove_prefix(&self, prefix: &str) -> u64 {
        let keys: Vec<Arc<CacheKey>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        let mut n = 0;
        for k in keys {
            n += u64::from(self.remove(&k).await);
        }
        n
    }

    /// Drops everything; returns the count before.
    pub async fn clear(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        let n = self.cache.entry_count();
        self.cache.invalidate_all();
        self.cache.run_pending_tasks().await;
        n
    }

    /// Applies pending inserts and evictions (moka does this lazily) and updates gauges.
    pub async fn maintain(&self) {
        self.cache.run_pending_tasks().await;
        m::ENTRIES
            .with_label_values(&["l1"])
            .set(self.entries() as i64);
        m::BYTES.with_label_values(&["l1"]).set(self.bytes() as i64);
    }

    /// Entries held (after the last [`maintain`](Self::maintain)).
    pub fn entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Weighed bytes held (after the last [`maintain`](Self::maintain)).
    pub fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::clock::ManualClock;
    use crate::cache::entry::tests::sample;

    fn tier(max_bytes: u64, eviction: EvictionPolicyKind) -> (MemoryTier, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = MemoryTier::new(
            &MemoryConfig {
                max_bytes,
                eviction,
            },
            clock.clone(),
        );
        (t, clock)
    }

    fn key(i: usize) -> CacheKey {
        CacheKey::from_stored(&format!("p:/x:{i:064}"))
    }

    #[tokio::test]
    async fn entries_go_dead_by_the_cache_clock() {
        let (t, clock) = tier(1 << 20, EvictionPolicyKind::TinyLfu);
        let mut e = sample("{}", clock.now_ms(), 1000);
        e.stale_if_error_ms = 500;
        t.insert(key(1), Arc::new(e)).await;
        clock.advance(Duration::from_millis(1400));
        assert!(t.get(&key(1)).await.is_some(), "stale entries are kept");
        clock.advance(Duration::from_millis(100));
        assert!(t.get(&key(1)).await.is_none());
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound() {
        for policy in [EvictionPolicyKind::TinyLfu, EvictionPolicyKind::Lru] {
            let (t, clock) = tier(64 * 1024, policy);
            let body = "x".repeat(1000);
            for i in 0..500 {
                t.insert(key(i), Arc::new(sample(&body, clock.now_ms(), 60_000)))
                    .await;
                if i % 50 == 0 {
                    t.maintain().await;
                    assert!(t.bytes() <= 64 * 1024, "{policy:?}: {} bytes", t.bytes());
                }
            }
            t.maintain().await;
            assert!(t.bytes() <= 64 * 1024, "{policy:?}: {} bytes", t.bytes());
            assert!(
                t.entries() > 0 && t.entries() < 64,
                "{policy:?}: {}",
                t.entries()
            );
        }
    }

    #[tokio::test]
    async fn purge_by_prefix_and_all() {
        let (t, clock) = tier(1 << 20, EvictionPolicyKind::TinyLfu);
        for (i, k) in ["a:/x:1", "a:/y:2", "b:/x:3"].into_iter().enumerate() {
            let k = CacheKey::from_stored(k);
            t.insert(k, Arc::new(sample(&i.to_string(), clock.now_ms(), 60_000)))
                .await;
        }
        assert_eq!(t.remove_prefix("a:/x:").await, 1);
        assert_eq!(t.remove_prefix("a:").await, 1);
        assert!(t.get(&CacheKey::from_stored("b:/x:3")).await.is_some());
        assert_eq!(t.clear().await, 1);
        assert!(t.get(&CacheKey::from_stored("b:/x:3")).await.is_none());
    }
}
