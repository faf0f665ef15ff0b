//! L1: responses in process memory, bounded by bytes, under one of three eviction policies.
//!
//! The weigher charges an entry its body, headers, key and a fixed overhead,
//! so `max_bytes` bounds what responses hold. The default policy is
//! quick_cache's Clock-PRO variant (close to S3-FIFO); moka's TinyLFU and LRU
//! remain selectable. moka drops an entry once its last stale window ends
//! ([`Expiry`]); quick_cache has no expiry, so [`MemoryTier::maintain`] sweeps
//! out dead entries and a lookup drops a dead one it finds. Freshness itself
//! is judged by the caller with the cache [`Clock`].

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache as Moka;
use moka::notification::RemovalCause;
use moka::policy::{EvictionPolicy, Expiry};
use quick_cache::sync::Cache as Quick;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use super::clock::Clock;
use super::config::{EvictionPolicyKind, MemoryConfig};
use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use crate::metrics::cache as m;

/// The in-memory tier.
#[derive(Clone)]
pub struct MemoryTier {
    store: Store,
    clock: Arc<dyn Clock>,
}

#[derive(Clone)]
enum Store {
    Moka(Moka<CacheKey, Arc<CachedResponse>>),
    Quick(Arc<QuickStore>),
}

/// quick_cache keyed like moka, each value carrying the weight it was charged
/// (quick_cache asks for it while evicting, so it must be cheap and fixed).
type QuickStore = Quick<CacheKey, Weighed, ByWeight, DefaultHashBuilder, CountEvictions>;

#[derive(Clone)]
struct Weighed {
    entry: Arc<CachedResponse>,
    weight: u64,
}

#[derive(Clone)]
struct ByWeight;

impl Weighter<CacheKey, Weighed> for ByWeight {
    fn weight(&self, _key: &CacheKey, value: &Weighed) -> u64 {
        value.weight
    }
}

/// Counts size evictions into the L1 eviction metric (removals by hand are not evictions).
#[derive(Clone, Default)]
struct CountEvictions;

impl Lifecycle<CacheKey, Weighed> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, _value: Weighed) {
        m::EVICTIONS.with_label_values(&["l1"]).inc();
    }
}

/// The mean entry size quick_cache's history (its non-resident "ghost" keys)
/// is sized for. Analysis responses weigh 0.5-1 KiB with their headers; a
/// smaller guess keeps more history (each ghost costs tens of bytes, not an entry).
const ASSUMED_ENTRY_BYTES: u64 = 512;

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

fn weigh(key: &CacheKey, entry: &CachedResponse) -> u64 {
    entry.weight(key.as_str().len()) as u64
}

impl MemoryTier {
    /// An empty tier.
    pub fn new(config: &MemoryConfig, clock: Arc<dyn Clock>) -> MemoryTier {
        let moka = |policy| {
            Moka::builder()
                .name("gantry-l1")
                .max_capacity(config.max_bytes)
                .weigher(|k: &CacheKey, v: &Arc<CachedResponse>| {
                    u32::try_from(weigh(k, v)).unwrap_or(u32::MAX)
                })
                .eviction_policy(policy)
                .expire_after(UntilDead(clock.clone()))
                .eviction_listener(|_k, _v, cause| {
                    if cause == RemovalCause::Size {
                        m::EVICTIONS.with_label_values(&["l1"]).inc();
                    }
                })
                .build()
        };
        let store = match config.eviction {
            EvictionPolicyKind::ClockPro => {
                let items = (config.max_bytes / ASSUMED_ENTRY_BYTES).max(1);
                let options = OptionsBuilder::new()
                    .estimated_items_capacity(usize::try_from(items).unwrap_or(usize::MAX))
                    .weight_capacity(config.max_bytes)
                    .build()
                    .expect("estimated items and weight capacity are both set");
                Store::Quick(Arc::new(Quick::with_options(
                    options,
                    ByWeight,
                    DefaultHashBuilder::default(),
                    CountEvictions,
                )))
            }
            EvictionPolicyKind::TinyLfu => Store::Moka(moka(EvictionPolicy::tiny_lfu())),
            EvictionPolicyKind::Lru => Store::Moka(moka(EvictionPolicy::lru())),
        };
        MemoryTier { store, clock }
    }

    /// The entry under `key`, fresh or stale; a dead one is dropped.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let e = match &self.store {
            Store::Moka(c) => c.get(key).await?,
            Store::Quick(c) => c.get(key)?.entry,
        };
        if e.freshness(self.clock.now_ms()) == Freshness::Dead {
            self.remove(key).await;
            return None;
        }
        Some(e)
    }

    /// Stores or replaces an entry.
    pub async fn insert(&self, key: CacheKey, entry: Arc<CachedResponse>) {
        match &self.store {
            Store::Moka(c) => c.insert(key, entry).await,
            Store::Quick(c) => {
                let weight = weigh(&key, &entry);
                c.insert(key, Weighed { entry, weight });
            }
        }
    }

    /// Drops one entry; true when it was there.
    pub async fn remove(&self, key: &CacheKey) -> bool {
        match &self.store {
            Store::Moka(c) => c.remove(key).await.is_some(),
            Store::Quick(c) => c.remove(key).is_some(),
        }
    }

    /// Drops every entry whose key starts with `prefix`; returns how many.
    pub async fn remove_prefix(&self, prefix: &str) -> u64 {
        match &self.store {
            Store::Moka(c) => {
                let keys: Vec<Arc<CacheKey>> = c
                    .iter()
                    .filter(|(k, _)| k.as_str().starts_with(prefix))
                    .map(|(k, _)| k)
                    .collect();
                let mut n = 0;
                for k in keys {
                    n += u64::from(c.remove(&*k).await.is_some());
                }
                n
            }
            Store::Quick(c) => {
                // `retain` takes a `Fn` and calls it on this thread: a Cell counts.
                let n = Cell::new(0);
                c.retain(|k, _| {
                    let keep = !k.as_str().starts_with(prefix);
                    n.set(n.get() + u64::from(!keep));
                    keep
                });
                n.get()
            }
        }
    }

    /// Drops everything; returns the count before.
    pub async fn clear(&self) -> u64 {
        match &self.store {
            Store::Moka(c) => {
                c.run_pending_tasks().await;
                let n = c.entry_count();
                c.invalidate_all();
                c.run_pending_tasks().await;
                n
            }
            Store::Quick(c) => {
                let n = c.len() as u64;
                c.clear();
                n
            }
        }
    }

    /// Applies pending inserts and evictions (moka does this lazily) or drops
    /// dead entries (quick_cache has no expiry), and updates gauges.
    pub async fn maintain(&self) {
        match &self.store {
            Store::Moka(c) => c.run_pending_tasks().await,
            Store::Quick(c) => {
                let now = self.clock.now_ms();
                c.retain(|_, v| v.entry.freshness(now) != Freshness::Dead);
            }
        }
        m::ENTRIES
            .with_label_values(&["l1"])
            .set(self.entries() as i64);
        m::BYTES.with_label_values(&["l1"]).set(self.bytes() as i64);
    }

    /// Entries held (after the last [`maintain`](Self::maintain)).
    pub fn entries(&self) -> u64 {
        match &self.store {
            Store::Moka(c) => c.entry_count(),
            Store::Quick(c) => c.len() as u64,
        }
    }

    /// Weighed bytes held (after the last [`maintain`](Self::maintain)).
    pub fn bytes(&self) -> u64 {
        match &self.store {
            Store::Moka(c) => c.weighted_size(),
            Store::Quick(c) => c.weight(),
        }
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

    const POLICIES: [EvictionPolicyKind; 3] = [
        EvictionPolicyKind::ClockPro,
        EvictionPolicyKind::TinyLfu,
        EvictionPolicyKind::Lru,
    ];

    #[tokio::test]
    async fn entries_go_dead_by_the_cache_clock() {
        for policy in POLICIES {
            let (t, clock) = tier(1 << 20, policy);
            let mut e = sample("{}", clock.now_ms(), 1000);
            e.stale_if_error_ms = 500;
            t.insert(key(1), Arc::new(e)).await;
            clock.advance(Duration::from_millis(1400));
            assert!(
                t.get(&key(1)).await.is_some(),
                "{policy:?}: stale entries are kept"
            );
            clock.advance(Duration::from_millis(100));
            assert!(t.get(&key(1)).await.is_none(), "{policy:?}");
        }
    }

    #[tokio::test]
    async fn maintain_sweeps_out_dead_entries() {
        let (t, clock) = tier(1 << 20, EvictionPolicyKind::ClockPro);
        t.insert(key(1), Arc::new(sample("{}", clock.now_ms(), 1000)))
            .await;
        t.insert(key(2), Arc::new(sample("{}", clock.now_ms(), 60_000)))
            .await;
        t.maintain().await;
        assert_eq!(t.entries(), 2);
        clock.advance(Duration::from_secs(2));
        t.maintain().await;
        assert_eq!(t.entries(), 1, "the dead entry is gone without a lookup");
        assert!(t.get(&key(2)).await.is_some());
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound() {
        for policy in POLICIES {
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
        for policy in POLICIES {
            let (t, clock) = tier(1 << 20, policy);
            for (i, k) in ["a:/x:1", "a:/y:2", "b:/x:3"].into_iter().enumerate() {
                let k = CacheKey::from_stored(k);
                t.insert(k, Arc::new(sample(&i.to_string(), clock.now_ms(), 60_000)))
                    .await;
            }
            assert_eq!(t.remove_prefix("a:/x:").await, 1, "{policy:?}");
            assert_eq!(t.remove_prefix("a:").await, 1, "{policy:?}");
            assert!(t.get(&CacheKey::from_stored("b:/x:3")).await.is_some());
            assert_eq!(t.clear().await, 1, "{policy:?}");
            assert!(t.get(&CacheKey::from_stored("b:/x:3")).await.is_none());
        }
    }
}
