//! The cache front: lookup through the tiers, coalescing of identical misses, staleness, store, purge, warm.
//!
//! **Lookup.** L1, then L2, then L3; the first fresh copy wins and is copied
//! into the tiers above it. A stale copy inside its stale-while-revalidate
//! window is served, and the first caller to see it gets a [`FillGuard`] to
//! refresh it; one inside only its stale-if-error window comes back with the
//! miss, for the proxy to serve if the backend fails. At most one refresh
//! per key runs at a time: the guard is the key's fill, and a caller that
//! wins it re-checks L1 first, since a refresh may have landed (and released
//! the key) between its stale read and its bid.
//!
//! **Coalescing.** The first caller to miss a key gets the key's
//! [`FillGuard`]; later callers wait on a watch channel for up to
//! `coalesce_wait`. `FillGuard::fill` stores the response and hands it to the
//! waiters; a guard dropped without a fill (the response was not cacheable,
//! the backend failed) releases them to try L1 once more and then go to the
//! backend themselves. A caller that becomes the filler re-checks L1 first,
//! closing the gap between its miss and a fill that finished meanwhile.
//!
//! **Store.** L1 at once; L2 on a spawned task (through the breaker); L3
//! through a bounded queue drained in batches by the [`Worker`]. A full
//! queue drops the write: the response path never waits on a lower tier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::clock::Clock;
use super::config::{CacheConfig, DiskConfig, MemoryConfig, RedisConfig};
use super::disk::{DiskError, DiskTier};
use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use super::memory::MemoryTier;
use super::redis::{Event, FredStore, RedisTier, RemoteLookup, RemoteStore};
use super::CacheError;
use crate::metrics::cache as m;

/// Most entries written to disk in one transaction.
const DISK_BATCH: usize = 1024;
/// How long the disk writer lets a short batch fill before committing it:
/// fewer, larger transactions rewrite fewer pages per entry (redb's B-tree
/// is copy-on-write) and wake the writer less often.
const DISK_LINGER: Duration = Duration::from_millis(20);
/// Disk writes queued before new ones are dropped.
const DISK_QUEUE: usize = 8192;

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Memory.
    L1,
    /// Redis.
    L2,
    /// Disk.
    L3,
}

impl Tier {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
            Tier::L3 => "l3",
        }
    }
}

/// A response to serve from cache.
pub struct Hit {
    /// The stored response.
    pub entry: Arc<CachedResponse>,
    /// The tier it was found in (L1 for a coalesced wait).
    pub tier: Tier,
    /// Past its TTL, served inside the stale-while-revalidate window.
    pub stale: bool,
    /// Got by waiting for another request's fill.
    pub coalesced: bool,
    /// Set on one stale hit: the caller should refresh the entry, then drop this.
    pub revalidate: Option<FillGuard>,
}

impl Hit {
    /// The `X-Cache` value.
    pub fn x_cache(&self) -> XCache {
        if self.stale {
            XCache::Stale
        } else {
            XCache::Hit(self.tier)
        }
    }
}

/// Where an answer came from, as the `X-Cache` response header says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XCache {
    /// Fresh from a tier.
    Hit(Tier),
    /// Stale within its window (being refreshed, or the backend failed).
    Stale,
    /// Not cached yet: from the backend, and stored.
    Miss,
    /// Not cacheable: from the backend, not stored.
    Bypass,
    /// Stale, and confirmed by the backend with a `304`: served from cache.
    Revalidated,
}

impl XCache {
    /// The header value: `HIT-L1`, `HIT-L2`, `HIT-L3`, `STALE`, `MISS`, `BYPASS`, `REVALIDATED`.
    pub fn as_str(self) -> &'static str {
        match self {
            XCache::Hit(Tier::L1) => "HIT-L1",
            XCache::Hit(Tier::L2) => "HIT-L2",
            XCache::Hit(Tier::L3) => "HIT-L3",
            XCache::Stale => "STALE",
            XCache::Miss => "MISS",
            XCache::Bypass => "BYPASS",
            XCache::Revalidated => "REVALIDATED",
        }
    }
}

impl PartialEq<&str> for XCache {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Nothing to serve: go to the backend.
pub struct Miss {
    /// Present when this caller fills the key for everyone waiting on it.
    pub fill: Option<FillGuard>,
    /// A stale copy past its stale-while-revalidate window: to revalidate
    /// when it has validators, to serve if the backend fails while inside
    /// its stale-if-error window.
    pub stale: Option<Arc<CachedResponse>>,
}

/// The answer of [`Cache::lookup`].
pub enum Lookup {
    /// Serve from cache.
    Hit(Hit),
    /// Go to the backend.
    Miss(Miss),
}

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One key, as stored (`pool:path:hash`).
    Key(String),
    /// Several keys at once (an unsafe request's invalidations): one purge.
    Keys(Vec<String>),
    /// Every key starting with this (`pool:`, `pool:/path:`).
    Prefix(String),
    /// Everything.
    All,
}

impl Purge {
    /// Its form on the invalidation channel: `key K`, `keys K1\nK2…`, `prefix P`, `all`.
    fn message(&self) -> String {
        match self {
            Purge::Key(k) => format!("key {k}"),
            Purge::Keys(ks) => format!("keys {}", ks.join("\n")),
            Purge::Prefix(p) => format!("prefix {p}"),
            Purge::All => "all".into(),
        }
    }

    /// The keys of a purge by key (one or several).
    fn keys(&self) -> Option<&[String]> {
        match self {
            Purge::Key(k) => Some(std::slice::from_ref(k)),
            Purge::Keys(ks) => Some(ks),
            Purge::Prefix(_) | Purge::All => None,
        }
    }

    /// The prefix of a purge by prefix (`""` for all).
    fn prefix(&self) -> Option<&str> {
        match self {
            Purge::Prefix(p) => Some(p),
            Purge::All => Some(""),
            Purge::Key(_) | Purge::Keys(_) => None,
        }
    }

    fn from_message(m: &str) -> Option<Purge> {
        match m.split_once(' ') {
            Some(("key", k)) => Some(Purge::Key(k.into())),
            Some(("keys", ks)) => Some(Purge::Keys(ks.split('\n').map(String::from).collect())),
            Some(("prefix", p)) => Some(Purge::Prefix(p.into())),
            None if m == "all" => Some(Purge::All),
            _ => None,
        }
    }
}

/// What a purge removed, per tier (`None`: tier off or failed, see `errors`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries removed from memory.
    pub l1: u64,
    /// Keys removed from Redis.
    pub l2: Option<u64>,
    /// Entries removed from disk.
    pub l3: Option<u64>,
    /// Tiers that could not be purged, and why.
    pub errors: Vec<String>,
}

/// When a search through the tiers began: the time and the purge generation.
#[derive(Clone, Copy)]
struct Search {
    now: u64,
    generation: u64,
}

/// Per-tier lookup results of one lookup, written to the counters when it ends.
#[derive(Default)]
struct Tally {
    seen: [(&'static str, &'static str); 4],
    len: usize,
}

impl Tally {
    fn push(&mut self, tier: &'static str, result: &'static str) {
        if let Some(slot) = self.seen.get_mut(self.len) {
            *slot = (tier, result);
            self.len += 1;
        }
    }

    fn record(&self) {
        for (tier, result) in &self.seen[..self.len] {
            m::lookup(tier, result);
        }
    }
}

/// Fills in flight: the leader's id (so only it ends its own fill) and the waiters' channel.
type Fills = HashMap<CacheKey, (u64, watch::Sender<Option<Arc<CachedResponse>>>)>;
type Inflight = Mutex<Fills>;

enum DiskOp {
    /// Written unless a purge began after the generation it carries.
    Put(CacheKey, Arc<CachedResponse>, u64),
    Barrier(oneshot::Sender<()>),
}

struct Inner {
    l1: MemoryTier,
    l2: Option<Arc<RedisTier>>,
    l3: Option<Arc<DiskTier>>,
    disk_tx: Option<mpsc::Sender<DiskOp>>,
    inflight: Inflight,
    coalesce_wait: Duration,
    clock: Arc<dyn Clock>,
    /// Bumped when a purge begins and when it ends: what was read or
    /// requested before a bump is neither stored nor promoted after it.
    generation: Arc<AtomicU64>,
    /// Ids of fill guards.
    next_fill: AtomicU64,
    /// This cache's id on the invalidation channel (its own messages are skipped).
    origin: u64,
    /// Dropped with the last `Cache` clone, which tells the worker to stop.
    _alive: oneshot::Sender<()>,
}

/// The tiered cache; cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// The right to fill one key; waiters are released when it is filled or dropped.
pub struct FillGuard {
    inner: Arc<Inner>,
    key: CacheKey,
    /// The purge generation when the fill began.
    generation: u64,
    /// Its registration in the in-flight map.
    id: u64,
    /// The key was released: dropping must not release it again, as it may
    /// be another caller's fill by then.
    released: bool,
}

/// The tiers to build a [`Cache`] from.
pub struct Parts {
    /// L1 settings.
    pub memory: MemoryConfig,
    /// L2: a store and its settings.
    pub redis: Option<(Arc<dyn RemoteStore>, RedisConfig)>,
    /// L3 settings.
    pub disk: Option<DiskConfig>,
    /// Bounded wait for an identical in-flight miss.
    pub coalesce_wait: Duration,
}

/// Background work of a cache: connects L2, warms L1, writes L3, keeps gauges.
pub struct Worker {
    cache: Cache,
    disk_rx: Option<mpsc::Receiver<DiskOp>>,
    /// Resolves when the cache is dropped.
    closed: oneshot::Receiver<()>,
    redis: Option<Arc<dyn RemoteStore>>,
    warm_entries: usize,
    maintain_every: Duration,
}

impl Cache {
    /// Builds the tiers `cfg` asks for (Redis through fred).
    pub fn open(cfg: &CacheConfig, clock: Arc<dyn Clock>) -> Result<(Cache, Worker), CacheError> {
        let redis = match &cfg.redis {
            Some(r) => Some((
                Arc::new(FredStore::connect(r)?) as Arc<dyn RemoteStore>,
                r.clone(),
            )),
            None => None,
        };
        let parts = Parts {
            memory: cfg.memory.clone(),
            redis,
            disk: cfg.disk.clone(),
            coalesce_wait: cfg.coalesce_wait,
        };
        let warm = cfg.disk.as_ref().map_or(0, |d| d.warm_entries);
        Cache::from_parts(parts, warm, clock)
    }

    /// Builds a cache from explicit tiers (tests, benchmarks).
    pub fn from_parts(
        parts: Parts,
        warm_entries: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<(Cache, Worker), CacheError> {
        let l3 = match &parts.disk {
            Some(d) => Some(Arc::new(DiskTier::open(d, clock.clone())?)),
            None => None,
        };
        let (disk_tx, disk_rx) = match l3 {
            Some(_) => {
                let (tx, rx) = mpsc::channel(DISK_QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let store = parts.redis.as_ref().map(|(s, _)| s.clone());
        let (alive, closed) = oneshot::channel();
        let l2 = parts
            .redis
            .map(|(s, c)| Arc::new(RedisTier::new(s, &c, clock.clone())));
        let cache = Cache {
            inner: Arc::new(Inner {
                l1: MemoryTier::new(&parts.memory, clock.clone()),
                l2,
                l3,
                disk_tx,
                inflight: Mutex::new(HashMap::new()),
                coalesce_wait: parts.coalesce_wait,
                clock,
                generation: Arc::new(AtomicU64::new(0)),
                next_fill: AtomicU64::new(0),
                origin: rand::random(),
                _alive: alive,
            }),
        };
        let worker = Worker {
            cache: cache.clone(),
            disk_rx,
            closed,
            redis: store,
            warm_entries,
            maintain_every: Duration::from_secs(5),
        };
        Ok((cache, worker))
    }

    /// The cache clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The Redis tier's circuit, when L2 is on.
    pub fn redis_circuit(&self) -> Option<super::breaker::CircuitState> {
        self.inner.l2.as_ref().map(|r| r.circuit())
    }

    /// Waits up to `within` for Redis to connect; true when it did or L2 is off.
    pub async fn redis_ready(&self, within: Duration) -> bool {
        match &self.inner.l2 {
            Some(l2) => l2.ready(within).await,
            None => true,
        }
    }

    /// Finds `key`, or makes the caller its filler, or waits for the filler.
    ///
    /// The per-tier lookup counters are written at the end, and not at all
    /// when the answer is a vary marker: the lookup of the variant it names
    /// is the one that counts.
    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        let mut tally = Tally::default();
        let found = self.lookup_counted(key, &mut tally).await;
        let marker = matches!(&found, Lookup::Hit(h) if h.entry.as_marker().is_some());
        if !marker {
            tally.record();
        }
        found
    }

    async fn lookup_counted(&self, key: &CacheKey, tally: &mut Tally) -> Lookup {
        let now = self.inner.clock.now_ms();
        let mut stale = None;
        if let Some((entry, tier)) = self.find(key, tally).await {
            match entry.freshness(now) {
                Freshness::Fresh => return Lookup::Hit(hit(entry, tier, false)),
                Freshness::StaleWhileRevalidate => {
                    let revalidate = match self.inner.lead(key) {
                        // The previous refresh may have landed since `find` read
                        // the stale copy: serve its answer, start no other.
                        Ok(guard) => match self.fresh_in_l1(key, tally).await {
                            Some(fresh) => {
                                guard.fill_l1_only(fresh.clone());
                                return Lookup::Hit(hit(fresh, Tier::L1, false));
                            }
                            None => Some(guard),
                        },
                        // A refresh is in flight.
                        Err(_) => None,
                    };
                    let mut h = hit(entry, tier, false);
                    h.stale = true;
                    h.revalidate = revalidate;
                    return Lookup::Hit(h);
                }
                Freshness::StaleIfError | Freshness::Revalidate => stale = Some(entry),
                Freshness::Dead => {}
            }
        }
        match self.inner.lead(key) {
            Ok(fill) => match self.fresh_in_l1(key, tally).await {
                Some(entry) => {
                    fill.fill_l1_only(entry.clone());
                    Lookup::Hit(hit(entry, Tier::L1, false))
                }
                None => Lookup::Miss(Miss {
                    fill: Some(fill),
                    stale,
                }),
            },
            Err(rx) => self.follow(key, rx, stale, tally).await,
        }
    }

    async fn follow(
        &self,
        key: &CacheKey,
        mut rx: watch::Receiver<Option<Arc<CachedResponse>>>,
        stale: Option<Arc<CachedResponse>>,
        tally: &mut Tally,
    ) -> Lookup {
        let waited = tokio::time::timeout(self.inner.coalesce_wait, rx.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|v| v.clone()));
        let filled = match waited {
            Ok(Ok(v)) => v,
            // The filler gave up: it may still have stored (a refresh does).
            Ok(Err(_)) => self.fresh_in_l1(key, tally).await,
            Err(_) => None,
        };
        match filled {
            Some(entry) => {
                if entry.as_marker().is_none() {
                    m::COALESCED.inc();
                }
                Lookup::Hit(hit(entry, Tier::L1, true))
            }
            None => Lookup::Miss(Miss { fill: None, stale }),
        }
    }

    /// A fresh L1 copy, looked at again after winning a fill; when found,
    /// the answer comes from memory and counts as an L1 hit.
    async fn fresh_in_l1(&self, key: &CacheKey, tally: &mut Tally) -> Option<Arc<CachedResponse>> {
        let e = self.inner.l1.get(key).await?;
        let fresh = e.freshness(self.inner.clock.now_ms()) == Freshness::Fresh;
        if fresh {
            tally.push("l1", "hit");
        }
        fresh.then_some(e)
    }

    /// The best copy in any tier: the first fresh one, else the first stale one.
    async fn find(&self, key: &CacheKey, tally: &mut Tally) -> Option<(Arc<CachedResponse>, Tier)> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let generation = self.generation();
        let at = Search { now, generation };
        let mut best: Option<(Arc<CachedResponse>, Tier)> = None;
        match inner.l1.get(key).await {
            Some(e) if e.freshness(now) == Freshness::Fresh => {
                tally.push("l1", "hit");
                return Some((e, Tier::L1));
            }
            Some(e) => {
                tally.push("l1", "stale");
                best = Some((e, Tier::L1));
            }
            None => tally.push("l1", "miss"),
        }
        if let Some(l2) = &inner.l2 {
            let found = match l2.get(key).await {
                RemoteLookup::Hit(e) => Some(Some(Arc::new(e))),
                RemoteLookup::Miss => Some(None),
                RemoteLookup::Error => {
                    tally.push("l2", "error");
                    None
                }
                RemoteLookup::Bypass => {
                    tally.push("l2", "bypass");
                    None
                }
            };
            if let Some(found) = found {
                let found = found.filter(|_| self.generation() == generation);
                if let Some(hit) = self
                    .consider(key, found, Tier::L2, &mut best, at, tally)
                    .await
                {
                    return Some(hit);
                }
            }
        }
        match &inner.l3 {
            // A miss the index knows of costs no hand-off to a blocking thread.
            Some(l3) if !l3.may_hold(key.as_str()) => tally.push("l3", "miss"),
            Some(l3) => {
                let (disk, k) = (l3.clone(), key.as_str().to_string());
                match tokio::task::spawn_blocking(move || disk.get(&k)).await {
                    Ok(Ok(found)) => {
                        let found = found
                            .map(Arc::new)
                            .filter(|_| self.generation() == generation);
                        if let Some(hit) = self
                            .consider(key, found, Tier::L3, &mut best, at, tally)
                            .await
                        {
                            return Some(hit);
                        }
                    }
                    Ok(Err(e)) => {
                        // Closed: said once when it closed; counted here.
                        if !matches!(e, DiskError::Closed(_)) {
                            tracing::warn!(error = %e, "Disk cache read failed");
                        }
                        tally.push("l3", "error");
                    }
                    Err(_) => tally.push("l3", "error"),
                }
            }
            None => {}
        }
        best
    }

    /// Counts a lower-tier answer (`None` after an error or bypass, already
    /// counted, is skipped), promotes it if newer (unless a purge began since
    /// the search's generation), returns it when fresh.
    async fn consider(
        &self,
        key: &CacheKey,
        found: Option<Arc<CachedResponse>>,
        tier: Tier,
        best: &mut Option<(Arc<CachedResponse>, Tier)>,
        Search { now, generation }: Search,
        tally: &mut Tally,
    ) -> Option<(Arc<CachedResponse>, Tier)> {
        let Some(e) = found.filter(|e| e.freshness(now) != Freshness::Dead) else {
            tally.push(tier.label(), "miss");
            return None;
        };
        let fresh = e.freshness(now) == Freshness::Fresh;
        tally.push(tier.label(), if fresh { "hit" } else { "stale" });
        let newer = best
            .as_ref()
            .is_none_or(|(b, _)| e.stored_at_ms > b.stored_at_ms);
        if newer {
            self.inner.promote(key, &e, generation).await;
            if tier == Tier::L3 {
                self.inner.spawn_l2_set(key, &e, generation);
            }
            *best = Some((e.clone(), tier));
        }
        fresh.then_some((e, tier))
    }

    /// Stores a response in every tier (L2 and L3 in the background).
    pub async fn store(&self, key: CacheKey, entry: CachedResponse) {
        let generation = self.generation();
        self.inner.store(key, Arc::new(entry), generation).await;
    }

    /// The purge generation: take it when a request starts, pass it to [`store_since`](Self::store_since).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Stores unless a purge ran since `generation` was taken.
    pub async fn store_since(&self, generation: u64, key: CacheKey, entry: CachedResponse) {
        self.inner.store(key, Arc::new(entry), generation).await;
    }

    /// Removes entries from every tier, lowest first. Once it returns, no
    /// tier of this cache serves them: stores, promotions and lower-tier
    /// reads that began before or during it are dropped (the generation is
    /// bumped at its start and at its end).
    /// With Redis, the other proxies sharing it are told to drop the same
    /// entries from their memory and disk tiers.
    pub async fn purge(&self, what: Purge) -> PurgeReport {
        let mut report = self.purge_tiers(what.clone(), true).await;
        if let Some(l2) = &self.inner.l2 {
            let message = format!("{} {}", self.inner.origin, what.message());
            if let Err(e) = l2.publish_invalidation(&message).await {
                report.errors.push(format!("l2 invalidation: {e}"));
            }
        }
        report
    }

    /// What another proxy's purge asks of this one: the same, in L1 and L3.
    async fn on_invalidation(&self, event: Event) {
        match event {
            Event::Message(m) => {
                let Some((from, what)) = m.split_once(' ') else {
                    return;
                };
                if from == self.inner.origin.to_string() {
                    return;
                }
                let Some(what) = Purge::from_message(what) else {
                    tracing::warn!(message = %m, "Unreadable cache invalidation");
                    return;
                };
                tracing::info!(purge = ?what, "Cache purge from another proxy");
                let _ = self.purge_tiers(what, false).await;
            }
            Event::Missed => {
                // Invalidations may have been lost: memory could hold purged answers.
                tracing::warn!("Cache invalidations may have been missed: memory tier cleared");
                self.inner.generation.fetch_add(1, Ordering::SeqCst);
                self.inner.l1.clear().await;
            }
        }
    }

    async fn purge_tiers(&self, what: Purge, with_l2: bool) -> PurgeReport {
        let inner = &self.inner;
        inner.generation.fetch_add(1, Ordering::SeqCst);
        let mut report = PurgeReport::default();
        if let Some(l3) = inner.l3.clone() {
            // Disk writes queued before the purge land first, then go with it.
            self.sync_disk().await;
            let what = what.clone();
            let r = tokio::task::spawn_blocking(move || match what.keys() {
                Some(keys) => l3.remove_keys(keys),
                None => l3.remove_prefix(what.prefix().unwrap_or_default()),
            })
            .await;
            match r {
                Ok(Ok(n)) => report.l3 = Some(n),
                Ok(Err(e)) => report.errors.push(format!("l3: {e}")),
                Err(e) => report.errors.push(format!("l3: {e}")),
            }
        }
        if let Some(l2) = inner.l2.as_ref().filter(|_| with_l2) {
            let r = match what.keys() {
                // Every key is tried; the last failure is reported.
                Some(keys) => {
                    let (mut n, mut failed) = (0, None);
                    for k in keys {
                        match l2.remove(k).await {
                            Ok(c) => n += c,
                            Err(e) => failed = Some(e),
                        }
                    }
                    failed.map_or(Ok(n), Err)
                }
                None => l2.remove_prefix(what.prefix().unwrap_or_default()).await,
            };
            match r {
                Ok(n) => report.l2 = Some(n),
                Err(e) => report.errors.push(format!("l2: {e}")),
            }
        }
        report.l1 = match &what {
            Purge::Prefix(p) => inner.l1.remove_prefix(p).await,
            Purge::All => inner.l1.clear().await,
            keyed => {
                let mut n = 0;
                for k in keyed.keys().unwrap_or_default() {
                    n += u64::from(inner.l1.remove(&CacheKey::from_stored(k)).await);
                }
                n
            }
        };
        inner.generation.fetch_add(1, Ordering::SeqCst);
        report
    }

    /// Waits until every disk write queued so far is committed.
    pub async fn sync_disk(&self) {
        if let Some(tx) = &self.inner.disk_tx {
            let (done, wait) = oneshot::channel();
            if tx.send(DiskOp::Barrier(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Copies the `n` most-hit disk entries into memory; returns how many.
    pub async fn warm_from_disk(&self, n: usize) -> usize {
        let Some(l3) = self.inner.l3.clone() else {
            return 0;
        };
        let hot = match tokio::task::spawn_blocking(move || l3.hottest(n)).await {
            Ok(Ok(hot)) => hot,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Cannot warm the memory cache from disk");
                return 0;
            }
            Err(_) => return 0,
        };
        let count = hot.len();
        // Coldest first, so the hottest are the most recent in L1.
        for (key, entry) in hot.into_iter().rev() {
            self.inner.l1.insert(key, Arc::new(entry)).await;
        }
        count
    }

    /// Applies pending L1 work, writes disk access stats, updates gauges.
    pub async fn maintain(&self) {
        self.inner.l1.maintain().await;
        if let Some(l3) = self.inner.l3.clone() {
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || l3.flush()).await {
                tracing::warn!(error = %e, "Disk cache stats flush failed");
            }
        }
    }

    /// Requests waiting on the fill of `key` (tests).
    #[cfg(test)]
    pub(crate) fn waiters(&self, key: &CacheKey) -> usize {
        self.inner
            .lock()
            .get(key)
            .map_or(0, |(_, tx)| tx.receiver_count())
    }

    /// L1 entries and weighed bytes (after [`maintain`](Self::maintain)).
    pub fn memory_usage(&self) -> (u64, u64) {
        (self.inner.l1.entries(), self.inner.l1.bytes())
    }

    /// L3 entries and bytes, when on.
    pub fn disk_usage(&self) -> Option<(u64, u64)> {
        self.inner.l3.as_ref().map(|d| (d.entries(), d.bytes()))
    }
}

fn hit(entry: Arc<CachedResponse>, tier: Tier, coalesced: bool) -> Hit {
    Hit {
        entry,
        tier,
        stale: false,
        coalesced,
        revalidate: None,
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Fills> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key's fill guard, or a receiver for the fill already in flight.
    fn lead(
        self: &Arc<Self>,
        key: &CacheKey,
    ) -> Result<FillGuard, watch::Receiver<Option<Arc<CachedResponse>>>> {
        let mut map = self.lock();
        if let Some((_, tx)) = map.get(key) {
            return Err(tx.subscribe());
        }
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        map.insert(key.clone(), (id, watch::channel(None).0));
        Ok(FillGuard {
            inner: self.clone(),
            key: key.clone(),
            generation: self.generation.load(Ordering::SeqCst),
            id,
            released: false,
        })
    }

    fn current(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) == generation
    }

    /// Stores in every tier unless a purge began since `generation`.
    async fn store(&self, key: CacheKey, entry: Arc<CachedResponse>, generation: u64) {
        if !self.current(generation) {
            return;
        }
        self.promote(&key, &entry, generation).await;
        self.spawn_l2_set(&key, &entry, generation);
        if let Some(tx) = &self.disk_tx {
            if tx.try_send(DiskOp::Put(key, entry, generation)).is_err() {
                m::writes("l3", "dropped", 1);
                tracing::debug!("Disk cache queue full: write dropped");
            }
        }
    }

    /// Puts `entry` in L1 unless a purge began since `generation`; one that
    /// began while inserting takes it out again.
    async fn promote(&self, key: &CacheKey, entry: &Arc<CachedResponse>, generation: u64) {
        if !self.current(generation) {
            return;
        }
        self.l1.insert(key.clone(), entry.clone()).await;
        if !self.current(generation) {
            self.l1.remove(key).await;
        }
    }

    /// Writes `entry` to L2 in the background, under the same rule as [`Inner::promote`].
    fn spawn_l2_set(&self, key: &CacheKey, entry: &Arc<CachedResponse>, generation: u64) {
        if let Some(l2) = &self.l2 {
            let (l2, key, entry) = (l2.clone(), key.clone(), entry.clone());
            let current = self.generation.clone();
            tokio::spawn(async move {
                if current.load(Ordering::SeqCst) != generation {
                    return;
                }
                l2.set(&key, &entry).await;
                if current.load(Ordering::SeqCst) != generation {
                    let _ = l2.remove(key.as_str()).await;
                }
            });
        }
    }

    /// Hands `entry` to the waiters of `key` and forgets the fill, if the
    /// fill registered for `key` is still fill `id`.
    fn release(&self, key: &CacheKey, id: u64, entry: Option<Arc<CachedResponse>>) {
        let mut map = self.lock();
        if map.get(key).is_none_or(|(current, _)| *current != id) {
            return;
        }
        if let Some((_, tx)) = map.remove(key) {
            drop(map);
            if let Some(e) = entry {
                tx.send_replace(Some(e));
            }
        }
    }
}

impl FillGuard {
    /// The key being filled.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Stores the response in every tier and hands it to everyone waiting
    /// (it is not stored when a purge ran since the fill began).
    pub async fn fill(mut self, entry: CachedResponse) {
        let entry = Arc::new(entry);
        let key = self.key.clone();
        self.inner.store(key, entry.clone(), self.generation).await;
        self.release(Some(entry));
    }

    /// Hands an entry already in L1 to the waiters.
    fn fill_l1_only(mut self, entry: Arc<CachedResponse>) {
        self.release(Some(entry));
    }

    /// Forgets the fill and hands `entry` to the waiters, once per guard.
    fn release(&mut self, entry: Option<Arc<CachedResponse>>) {
        if !std::mem::replace(&mut self.released, true) {
            self.inner.release(&self.key, self.id, entry);
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        // After a fill this does nothing; otherwise it releases the waiters empty-handed.
        self.release(None);
    }
}

impl Worker {
    /// Runs until the cache is dropped: connects L2, warms L1, drains disk writes, maintains.
    pub async fn run(mut self) {
        if let Some(store) = &self.redis {
            store.start();
        }
        if self.warm_entries > 0 {
            let n = self.cache.warm_from_disk(self.warm_entries).await;
            tracing::info!(entries = n, "Memory cache warmed from disk");
        }
        let maintain = {
            let cache = Arc::downgrade(&self.cache.inner);
            let every = self.maintain_every;
            let mut closed = self.closed;
            async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = &mut closed => return,
                        _ = tick.tick() => {}
                    }
                    let Some(inner) = cache.upgrade() else { return };
                    Cache { inner }.maintain().await;
                }
            }
        };
        let invalidations = {
            let events = self
                .cache
                .inner
                .l2
                .as_ref()
                .and_then(|l2| l2.invalidations());
            let cache = Arc::downgrade(&self.cache.inner);
            async move {
                let Some(mut events) = events else { return };
                while let Some(event) = events.recv().await {
                    let Some(inner) = cache.upgrade() else { return };
                    Cache { inner }.on_invalidation(event).await;
                }
            }
        };
        let disk = self.cache.inner.l3.clone();
        let generation = self.cache.inner.generation.clone();
        let rx = self.disk_rx.take();
        drop(self.cache);
        let writer = async move {
            if let (Some(disk), Some(rx)) = (disk, rx) {
                write_disk(disk, rx, generation).await;
            }
        };
        // Both end once every `Cache` clone is gone; the disk file is closed by then.
        let background = async {
            tokio::join!(maintain, writer);
        };
        tokio::pin!(background);
        tokio::select! {
            _ = &mut background => {}
            _ = invalidations => {
                (&mut background).await;
            }
        }
    }
}

/// Drains the disk queue in batches until every sender is gone; a write
/// from before a purge began is skipped.
async fn write_disk(
    disk: Arc<DiskTier>,
    mut rx: mpsc::Receiver<DiskOp>,
    generation: Arc<AtomicU64>,
) {
    let mut ops = Vec::with_capacity(DISK_BATCH);
    while rx.recv_many(&mut ops, DISK_BATCH).await > 0 {
        // A barrier has a waiter: commit at once.
        let waited_on = ops.iter().any(|op| matches!(op, DiskOp::Barrier(_)));
        if ops.len() < DISK_BATCH && !waited_on {
            tokio::time::sleep(DISK_LINGER).await;
            while ops.len() < DISK_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
        }
        let mut puts = Vec::with_capacity(ops.len());
        let mut barriers = Vec::new();
        for op in ops.drain(..) {
            match op {
                DiskOp::Put(k, e, g) if generation.load(Ordering::SeqCst) == g => puts.push((k, e)),
                DiskOp::Put(..) => {}
                DiskOp::Barrier(done) => barriers.push(done),
            }
        }
        if !puts.is_empty() {
            let (d, n) = (disk.clone(), puts.len());
            let result = tokio::task::spawn_blocking(move || d.put_batch(&puts)).await;
            match result {
                Ok(Ok(())) => m::writes("l3", "ok", n),
                Ok(Err(DiskError::Closed(_))) => m::writes("l3", "failed", n),
                Ok(Err(e)) => {
                    m::writes("l3", "failed", n);
                    tracing::warn!(error = %e, entries = n, "Disk cache write failed: serving without storing");
                }
                Err(e) => {
                    m::writes("l3", "failed", n);
                    tracing::warn!(error = %e, "Disk cache writer panicked");
                }
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
    // Keep the access stats gathered since the last write.
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || disk.flush()).await {
        tracing::warn!(error = %e, "Disk cache stats flush failed");
    }
}

#[cfg(test)]
mod message_tests {
    use super::Purge;

    #[test]
    fn purges_read_back_from_the_invalidation_channel() {
        for p in [
            Purge::Key("a:/x:1".into()),
            Purge::Keys(vec!["a:/x:1".into(), "a:/x:1~ab".into()]),
            Purge::Prefix("a:/x:".into()),
            Purge::All,
        ] {
            assert_eq!(Purge::from_message(&p.message()), Some(p.clone()), "{p:?}");
        }
    }
}
