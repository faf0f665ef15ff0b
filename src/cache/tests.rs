//! Unit tests of the tiered front with the in-memory Redis stand-in, a real redb file and a manual clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::breaker::CircuitState;
use super::clock::{Clock, ManualClock};
use super::config::{DiskConfig, EvictionPolicyKind, MemoryConfig, RedisConfig};
use super::entry::tests::sample;
use super::entry::CachedResponse;
use super::key::CacheKey;
use super::redis::{MemoryRemote, RemoteError, RemoteMode, RemoteStore};
use super::tiered::{Cache, FillGuard, Lookup, Parts, Purge};

struct Rig {
    cache: Option<Cache>,
    worker: tokio::task::JoinHandle<()>,
    remote: Arc<MemoryRemote>,
    clock: Arc<ManualClock>,
}

fn redis_cfg() -> RedisConfig {
    RedisConfig {
        url: "redis://unused".into(),
        username: None,
        password: None,
        tls: None,
        pool_size: 1,
        connect_timeout: Duration::from_millis(100),
        command_timeout: Duration::from_millis(20),
        failure_threshold: 3,
        cooldown: Duration::from_secs(2),
        key_prefix: "g:".into(),
        purge_timeout: Duration::from_secs(1),
    }
}

fn rig_with(
    dir: &tempfile::TempDir,
    remote: Arc<MemoryRemote>,
    clock: Arc<ManualClock>,
    coalesce_wait: Duration,
) -> Rig {
    let parts = Parts {
        memory: MemoryConfig {
            max_bytes: 1 << 20,
            eviction: EvictionPolicyKind::TinyLfu,
        },
        redis: Some((remote.clone() as Arc<dyn RemoteStore>, redis_cfg())),
        disk: Some(DiskConfig {
            path: dir.path().join("l3.redb"),
            max_bytes: 1 << 20,
            zstd_level: 3,
            warm_entries: 0,
            max_entries: 1_000_000,
        }),
        coalesce_wait,
    };
    let (cache, worker) = Cache::from_parts(parts, 0, clock.clone()).unwrap();
    Rig {
        cache: Some(cache),
        worker: tokio::spawn(worker.run()),
        remote,
        clock,
    }
}

fn rig(dir: &tempfile::TempDir) -> Rig {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    rig_with(dir, Arc::default(), clock, Duration::from_secs(30))
}

impl Rig {
    fn cache(&self) -> &Cache {
        self.cache.as_ref().unwrap()
    }

    /// Drops the cache and waits for its worker, releasing the disk file.
    async fn close(mut self) -> (Arc<MemoryRemote>, Arc<ManualClock>) {
        self.cache.take();
        self.worker.await.unwrap();
        (self.remote, self.clock)
    }

    async fn lookup(&self, key: &CacheKey) -> Lookup {
        self.cache().lookup(key).await
    }

    /// Fills `key` as a proxy would after a backend answer.
    async fn fill(&self, key: &CacheKey, entry: CachedResponse) {
        match self.lookup(key).await {
            Lookup::Miss(m) => m.fill.expect("first miss fills").fill(entry).await,
            Lookup::Hit(_) => panic!("expected a miss for {key}"),
        }
        self.cache().sync_disk().await;
    }

    fn entry(&self, body: &str, ttl_ms: u64) -> CachedResponse {
        sample(body, self.clock.now_ms(), ttl_ms)
    }
}

fn key(s: &str) -> CacheKey {
    CacheKey::from_stored(&format!("pool:/v1:{s}"))
}

fn x_cache(l: &Lookup) -> &'static str {
    match l {
        Lookup::Hit(h) => h.x_cache().as_str(),
        Lookup::Miss(_) => "MISS",
    }
}

/// Polls until spawned work (L2 writes, a waiter queuing) shows; the pause
/// only paces the polling, and the bound only catches a hang.
async fn settle_until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("spawned work did not finish");
}

#[tokio::test]
async fn miss_fill_then_hit_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    r.fill(&key("a"), r.entry("one", 60_000)).await;
    let l = r.lookup(&key("a")).await;
    assert_eq!(x_cache(&l), "HIT-L1");
    let Lookup::Hit(h) = l else { unreachable!() };
    assert_eq!(h.entry.body, "one");
    settle_until(|| r.remote.keys() == vec!["g:pool:/v1:a"]).await;
    assert_eq!(
        r.cache().disk_usage().unwrap().0,
        1,
        "written through to disk"
    );
}

#[tokio::test]
async fn lower_tier_hits_are_promoted_upward() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    r.fill(&key("a"), r.entry("one", 60_000)).await;
    settle_until(|| r.remote.keys().len() == 1).await;
    let (remote, clock) = r.close().await;

    // A new process sharing the Redis: L2 answers, then L1 has it.
    let r = rig_with(&dir, remote, clock.clone(), Duration::from_secs(30));
    assert_eq!(x_cache(&r.lookup(&key("a")).await), "HIT-L2");
    assert_eq!(x_cache(&r.lookup(&key("a")).await), "HIT-L1");
    let (_, clock) = r.close().await;

    // A new process with an empty Redis: L3 answers and fills L1 and L2.
    let r = rig_with(&dir, Arc::default(), clock, Duration::from_secs(30));
    assert_eq!(x_cache(&r.lookup(&key("a")).await), "HIT-L3");
    settle_until(|| r.remote.keys().len() == 1).await;
    assert_eq!(x_cache(&r.lookup(&key("a")).await), "HIT-L1");
}

#[tokio::test]
async fn entries_expire_by_the_cache_clock_in_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    r.fill(&key("a"), r.entry("one", 1000)).await;
    r.clock.advance(Duration::from_millis(999));
    assert_eq!(x_cache(&r.lookup(&key("a")).await), "HIT-L1");
    r.clock.advance(Duration::from_millis(1));
    assert_eq!(x_cache(&r.lookup(&key("a")).await), "MISS");
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_hands_out_one_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    let mut e = r.entry("old", 1000);
    e.stale_while_revalidate_ms = 10_000;
    r.fill(&key("a"), e).await;
    r.clock.advance(Duration::from_secs(2));
    let Lookup::Hit(first) = r.lookup(&key("a")).await else {
        panic!("stale entry should be served")
    };
    assert_eq!(
        (first.x_cache().as_str(), first.revalidate.is_some()),
        ("STALE", true)
    );
    let Lookup::Hit(second) = r.lookup(&key("a")).await else {
        panic!("stale entry should be served")
    };
    assert!(second.revalidate.is_none(), "one refresh at a time");
    first.revalidate.unwrap().fill(r.entry("new", 1000)).await;
    let Lookup::Hit(h) = r.lookup(&key("a")).await else {
        panic!("refreshed")
    };
    assert_eq!(
        (h.x_cache().as_str(), &h.entry.body[..]),
        ("HIT-L1", &b"new"[..])
    );
}

/// An empty Redis that lands a pending refresh during the next read: after a
/// lookup has read the stale copy in L1, before it bids for the refresh.
#[derive(Default)]
struct LandsOnRead {
    landing: Mutex<Option<(FillGuard, CachedResponse)>>,
}

#[async_trait::async_trait]
impl RemoteStore for LandsOnRead {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, RemoteError> {
        let landing = self.landing.lock().unwrap().take();
        if let Some((refresh, entry)) = landing {
            refresh.fill(entry).await;
        }
        Ok(None)
    }

    async fn set_ex(&self, _key: &str, _value: Bytes, _ttl_secs: u64) -> Result<(), RemoteError> {
        Ok(())
    }

    async fn del(&self, _key: &str) -> Result<u64, RemoteError> {
        Ok(0)
    }

    async fn del_prefix(&self, _prefix: &str) -> Result<u64, RemoteError> {
        Ok(0)
    }
}

/// A cache of memory over `store` (no disk), whose Redis calls are never cut
/// short: the stand-ins do their work inside a read.
fn memory_over(store: Arc<dyn RemoteStore>, clock: &Arc<ManualClock>) -> Cache {
    let parts = Parts {
        memory: MemoryConfig {
            max_bytes: 1 << 20,
            eviction: EvictionPolicyKind::TinyLfu,
        },
        redis: Some((
            store,
            RedisConfig {
                command_timeout: Duration::from_secs(60),
                ..redis_cfg()
            },
        )),
        disk: None,
        coalesce_wait: Duration::from_secs(30),
    };
    Cache::from_parts(parts, 0, clock.clone()).unwrap().0
}

/// Refreshes a lookup hands out (0 or 1).
fn refreshes(l: &Lookup) -> usize {
    match l {
        Lookup::Hit(h) => usize::from(h.revalidate.is_some()),
        Lookup::Miss(_) => 0,
    }
}

#[tokio::test]
async fn many_stale_hits_start_one_refresh_even_as_it_lands() {
    let remote = Arc::new(LandsOnRead::default());
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let cache = memory_over(remote.clone(), &clock);
    let k = key("a");
    let swr = |body: &str| CachedResponse {
        stale_while_revalidate_ms: 10_000,
        ..sample(body, clock.now_ms(), 1000)
    };
    let Lookup::Miss(m) = cache.lookup(&k).await else {
        panic!("miss")
    };
    m.fill.expect("first miss fills").fill(swr("old")).await;
    clock.advance(Duration::from_secs(2));

    let Lookup::Hit(first) = cache.lookup(&k).await else {
        panic!("stale entry should be served")
    };
    assert_eq!(first.x_cache(), "STALE");
    let refresh = first.revalidate.expect("the first stale hit refreshes");

    // Many stale hits while the refresh runs: all served stale, none refreshes.
    let during = futures::future::join_all((0..100).map(|_| cache.lookup(&k))).await;
    assert!(during.iter().all(|l| x_cache(l) == "STALE"));
    assert_eq!(during.iter().map(refreshes).sum::<usize>(), 0);

    // The refresh lands (and frees the key) between a lookup's stale read and
    // its bid: that lookup serves the refreshed entry and starts nothing.
    *remote.landing.lock().unwrap() = Some((refresh, swr("new")));
    let racing = cache.lookup(&k).await;
    assert!(
        remote.landing.lock().unwrap().is_none(),
        "the refresh landed inside the lookup"
    );
    assert_eq!(refreshes(&racing), 0, "a second refresh was started");
    let Lookup::Hit(h) = racing else {
        panic!("the refreshed entry should be served")
    };
    assert_eq!(
        (h.x_cache().as_str(), &h.entry.body[..]),
        ("HIT-L1", &b"new"[..])
    );

    // And the key is free again: the next stale copy gets its one refresh.
    clock.advance(Duration::from_secs(2));
    let after = futures::future::join_all((0..100).map(|_| cache.lookup(&k))).await;
    assert!(after.iter().all(|l| x_cache(l) == "STALE"));
    assert_eq!(after.iter().map(refreshes).sum::<usize>(), 1);
}

#[tokio::test]
async fn stale_if_error_comes_back_with_the_miss() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    let mut e = r.entry("old", 1000);
    e.stale_if_error_ms = 10_000;
    r.fill(&key("a"), e).await;
    r.clock.advance(Duration::from_secs(2));
    let Lookup::Miss(m) = r.lookup(&key("a")).await else {
        panic!("past the TTL without swr is a miss")
    };
    assert_eq!(m.stale.unwrap().body, "old");
    drop(m.fill.expect("this miss fills")); // the backend failed
    r.clock.advance(Duration::from_secs(9));
    let Lookup::Miss(m) = r.lookup(&key("a")).await else {
        panic!("miss")
    };
    assert!(m.stale.is_none(), "past the stale-if-error window");
}

#[tokio::test]
async fn hundred_identical_misses_make_one_fill() {
    let dir = tempfile::tempdir().unwrap();
    let r = Arc::new(rig(&dir));
    let fills = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (r, fills) = (r.clone(), fills.clone());
        tasks.push(tokio::spawn(async move {
            match r.lookup(&key("hot")).await {
                Lookup::Miss(m) => {
                    fills.fetch_add(1, Ordering::SeqCst);
                    // Let the others queue up behind this fill before it lands.
                    for _ in 0..50 {
                        tokio::task::yield_now().await;
                    }
                    m.fill
                        .expect("the one miss fills")
                        .fill(r.entry("v", 60_000))
                        .await;
                    "MISS"
                }
                Lookup::Hit(h) => h.x_cache().as_str(),
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    assert_eq!(fills.load(Ordering::SeqCst), 1);
    assert_eq!(seen.iter().filter(|s| **s == "MISS").count(), 1);
    assert!(
        seen.iter().all(|s| *s == "MISS" || *s == "HIT-L1"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_abandoned_fill_releases_the_waiters_to_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let r = Arc::new(rig(&dir));
    let Lookup::Miss(lead) = r.lookup(&key("a")).await else {
        panic!("miss")
    };
    let r2 = r.clone();
    let follower = tokio::spawn(async move { r2.lookup(&key("a")).await });
    settle_until(|| r.cache().waiters(&key("a")) == 1).await;
    drop(lead); // e.g. the response was a 500
    let Lookup::Miss(m) = follower.await.unwrap() else {
        panic!("nothing was stored")
    };
    assert!(
        m.fill.is_none(),
        "a released waiter does not become a filler"
    );
}

#[tokio::test]
async fn the_coalescing_wait_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let r = rig_with(&dir, Arc::default(), clock, Duration::from_millis(10));
    let Lookup::Miss(_lead) = r.lookup(&key("a")).await else {
        panic!("miss")
    };
    let Lookup::Miss(m) = r.lookup(&key("a")).await else {
        panic!("the filler never finishes")
    };
    assert!(m.fill.is_none());
}

#[tokio::test]
async fn redis_down_or_hanging_is_bypassed() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    r.fill(&key("a"), r.entry("one", 60_000)).await;
    for mode in [RemoteMode::Down, RemoteMode::Hang] {
        r.remote.set_mode(mode);
        for i in 0..10 {
            let k = key(&format!("{mode:?}{i}"));
            assert_eq!(x_cache(&r.lookup(&k).await), "MISS");
        }
        assert_eq!(
            r.cache().redis_circuit(),
            Some(CircuitState::Open),
            "{mode:?}"
        );
        let calls = r.remote.calls.load(Ordering::SeqCst);
        assert_eq!(x_cache(&r.lookup(&key("a")).await), "HIT-L1");
        r.fill(&key(&format!("{mode:?}-new")), r.entry("x", 60_000))
            .await;
        assert_eq!(
            r.remote.calls.load(Ordering::SeqCst),
            calls,
            "open: Redis not called"
        );
        // Redis comes back: after the cool-down the probe closes the circuit.
        r.remote.set_mode(RemoteMode::Up);
        r.clock.advance(Duration::from_secs(2));
        assert_eq!(x_cache(&r.lookup(&key("b")).await), "MISS");
        assert_eq!(r.cache().redis_circuit(), Some(CircuitState::Closed));
    }
}

#[tokio::test]
async fn purge_by_key_prefix_and_all_reaches_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    let keys = ["a:/x:1", "a:/x:2", "a:/y:3", "b:/x:4"].map(CacheKey::from_stored);
    for k in &keys {
        r.fill(k, r.entry(k.as_str(), 60_000)).await;
    }
    settle_until(|| r.remote.keys().len() == 4).await;
    let rep = r.cache().purge(Purge::Key("a:/x:1".into())).await;
    assert_eq!((rep.l1, rep.l2, rep.l3), (1, Some(1), Some(1)), "{rep:?}");
    // Several keys in one purge; a key not stored counts nowhere.
    let two = Purge::Keys(vec!["a:/x:2".into(), "a:/gone:0".into()]);
    let rep = r.cache().purge(two).await;
    assert_eq!((rep.l1, rep.l2, rep.l3), (1, Some(1), Some(1)), "{rep:?}");
    let rep = r.cache().purge(Purge::Prefix("a:".into())).await;
    assert_eq!((rep.l1, rep.l2, rep.l3), (1, Some(1), Some(1)), "{rep:?}");
    assert_eq!(x_cache(&r.lookup(&keys[1]).await), "MISS");
    assert_eq!(x_cache(&r.lookup(&keys[3]).await), "HIT-L1");
    let rep = r.cache().purge(Purge::All).await;
    assert_eq!((rep.l1, rep.l2, rep.l3), (1, Some(1), Some(1)), "{rep:?}");
    assert!(rep.errors.is_empty());
    assert!(r.remote.keys().is_empty());
    assert_eq!(x_cache(&r.lookup(&keys[3]).await), "MISS");
}

#[tokio::test]
async fn purge_reports_a_failing_tier_and_still_clears_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    r.fill(&key("a"), r.entry("one", 60_000)).await;
    r.remote.set_mode(RemoteMode::Down);
    let rep = r.cache().purge(Purge::All).await;
    assert_eq!((rep.l1, rep.l2, rep.l3), (1, None, Some(1)));
    assert!(rep.errors[0].starts_with("l2:"), "{rep:?}");
}

#[tokio::test]
async fn memory_is_warmed_with_the_most_hit_disk_entries() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    for i in 0..3 {
        r.fill(&key(&i.to_string()), r.entry("v", 60_000)).await;
    }
    let (_, clock) = r.close().await;
    // Keys 1 and 2 are read from disk once each (an empty Redis, a cold L1).
    let r = rig_with(&dir, Arc::default(), clock, Duration::from_secs(30));
    assert_eq!(x_cache(&r.lookup(&key("1")).await), "HIT-L3");
    assert_eq!(x_cache(&r.lookup(&key("2")).await), "HIT-L3");
    let (_, clock) = r.close().await;
    let r = rig_with(&dir, Arc::default(), clock, Duration::from_secs(30));
    assert_eq!(r.cache().warm_from_disk(2).await, 2);
    assert_eq!(x_cache(&r.lookup(&key("1")).await), "HIT-L1");
    assert_eq!(x_cache(&r.lookup(&key("2")).await), "HIT-L1");
    assert_eq!(x_cache(&r.lookup(&key("0")).await), "HIT-L3");
}

#[tokio::test]
async fn a_purge_cancels_the_storing_of_fills_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let r = Arc::new(rig(&dir));
    let Lookup::Miss(lead) = r.lookup(&key("a")).await else {
        panic!("miss")
    };
    let r2 = r.clone();
    let follower = tokio::spawn(async move { r2.lookup(&key("a")).await });
    settle_until(|| r.cache().waiters(&key("a")) == 1).await;
    r.cache().purge(Purge::All).await;
    lead.fill.unwrap().fill(r.entry("old", 60_000)).await;
    let Lookup::Hit(h) = follower.await.unwrap() else {
        panic!("the waiter still gets the answer it waited for")
    };
    assert_eq!(h.entry.body, "old");
    assert_eq!(
        x_cache(&r.lookup(&key("a")).await),
        "MISS",
        "but it is not stored"
    );
}

/// A shared Redis whose reads can be held after reading (a slow `GET` racing a purge).
#[derive(Default)]
struct HeldRead {
    inner: MemoryRemote,
    hold: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
}

#[async_trait::async_trait]
impl RemoteStore for HeldRead {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, RemoteError> {
        let value = self.inner.get(key).await;
        let hold = self.hold.lock().unwrap().take();
        if let Some((reading, release)) = hold {
            let _ = reading.send(());
            let _ = release.await;
        }
        value
    }

    async fn set_ex(&self, key: &str, value: Bytes, ttl_secs: u64) -> Result<(), RemoteError> {
        self.inner.set_ex(key, value, ttl_secs).await
    }

    async fn del(&self, key: &str) -> Result<u64, RemoteError> {
        self.inner.del(key).await
    }

    async fn del_prefix(&self, prefix: &str) -> Result<u64, RemoteError> {
        self.inner.del_prefix(prefix).await
    }
}

/// Regression: a lookup that read Redis before a purge copied the purged
/// answer back into memory after it, where it was served for its TTL.
#[tokio::test]
async fn a_purge_holds_against_a_lookup_that_read_redis_before_it() {
    let store = Arc::new(HeldRead::default());
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let (this, other) = (
        memory_over(store.clone(), &clock),
        memory_over(store.clone(), &clock),
    );
    let k = key("purged");
    // Another proxy sharing Redis stored the answer: it is in L2 only here.
    other
        .store(k.clone(), sample("bad verdict", clock.now_ms(), 60_000))
        .await;
    for _ in 0..1000 {
        if !store.inner.keys().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        store.inner.keys().len(),
        1,
        "the other proxy's write landed"
    );

    let (reading_tx, reading) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    *store.hold.lock().unwrap() = Some((reading_tx, release_rx));
    let racing = {
        let (this, k) = (this.clone(), k.clone());
        tokio::spawn(async move { x_cache(&this.lookup(&k).await) })
    };
    reading.await.unwrap();
    let report = this.purge(Purge::Key(k.as_str().to_string())).await;
    assert_eq!(report.l2, Some(1));
    release.send(()).unwrap();
    // The lookup that read before the purge does not serve or keep its copy.
    assert_eq!(racing.await.unwrap(), "MISS");
    assert_eq!(x_cache(&this.lookup(&k).await), "MISS");
    assert!(
        store.inner.keys().is_empty(),
        "nothing wrote it back to Redis"
    );
}

/// Regression: a fill whose response was on its way during a purge is not stored after it.
#[tokio::test]
async fn a_fill_in_flight_during_a_purge_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(&dir);
    let k = key("inflight");
    let Lookup::Miss(m) = r.lookup(&k).await else {
        panic!("miss")
    };
    let guard = m.fill.expect("first miss fills");
    r.cache().purge(Purge::All).await;
    guard.fill(r.entry("from before the purge", 60_000)).await;
    r.cache().sync_disk().await;
    assert_eq!(x_cache(&r.lookup(&k).await), "MISS");
    assert!(r.remote.keys().is_empty());
    r.close().await;
}

/// A purge on one cache reaches another sharing the same Redis: it drops its
/// memory copy, which it would otherwise serve for the entry's TTL.
#[tokio::test]
async fn a_purge_reaches_the_other_caches_sharing_redis() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Arc::new(MemoryRemote::default());
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let a = rig_with(
        &dir_a,
        remote.clone(),
        clock.clone(),
        Duration::from_secs(30),
    );
    let b = rig_with(
        &dir_b,
        remote.clone(),
        clock.clone(),
        Duration::from_secs(30),
    );
    let k = key("shared");
    a.fill(&k, a.entry("bad verdict", 60_000)).await;
    for _ in 0..1000 {
        if !remote.keys().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(x_cache(&b.lookup(&k).await), "HIT-L2");
    assert_eq!(x_cache(&b.lookup(&k).await), "HIT-L1");
    a.cache().purge(Purge::Key(k.as_str().to_string())).await;
    let mut seen = "HIT-L1";
    for _ in 0..1000 {
        seen = x_cache(&b.lookup(&k).await);
        if seen == "MISS" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        seen, "MISS",
        "the other cache still serves the purged entry"
    );
    a.close().await;
    b.close().await;
}
