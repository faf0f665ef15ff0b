//! The tiered cache against a real redis-server (started per test on a free port) and real redb files.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use gantry::cache::breaker::CircuitState;
use gantry::cache::config::{DiskConfig, EvictionPolicyKind, MemoryConfig, RedisConfig};
use gantry::cache::key::KeyParts;
use gantry::cache::redis::{FredStore, RemoteStore};
use gantry::cache::tiered::{Parts, Worker};
use gantry::cache::{Cache, CacheKey, CachedResponse, Clock, Lookup, ManualClock, Purge};

use crate::support::redis_server::RedisServer;
use crate::support::until;

const START: u64 = 1_700_000_000_000;

struct Opts<'a> {
    redis: &'a RedisServer,
    /// Redis key namespace: a new one stands for an empty Redis.
    namespace: &'a str,
    disk: &'a std::path::Path,
    memory_bytes: u64,
    clock: Arc<dyn Clock>,
}

impl<'a> Opts<'a> {
    /// Namespace `g:`, 1 MiB of memory, a manual clock at `START`.
    fn new(redis: &'a RedisServer, disk: &'a std::path::Path) -> Opts<'a> {
        Opts {
            redis,
            namespace: "g:",
            disk,
            memory_bytes: 1 << 20,
            clock: Arc::new(ManualClock::new(START)),
        }
    }
}

fn redis_cfg(url: String, namespace: &str) -> RedisConfig {
    RedisConfig {
        url,
        username: None,
        password: None,
        tls: None,
        pool_size: 2,
        connect_timeout: Duration::from_millis(200),
        command_timeout: Duration::from_millis(100),
        failure_threshold: 3,
        cooldown: Duration::from_millis(200),
        key_prefix: namespace.into(),
        purge_timeout: Duration::from_secs(5),
    }
}

struct Running {
    cache: Option<Cache>,
    worker: tokio::task::JoinHandle<()>,
}

impl Running {
    fn cache(&self) -> &Cache {
        self.cache.as_ref().unwrap()
    }

    async fn close(mut self) {
        self.cache.take();
        self.worker.await.unwrap();
    }
}

async fn open(o: Opts<'_>) -> Running {
    let rc = redis_cfg(o.redis.url(), o.namespace);
    let store: Arc<dyn RemoteStore> = Arc::new(FredStore::connect(&rc).unwrap());
    let parts = Parts {
        memory: MemoryConfig {
            max_bytes: o.memory_bytes,
            eviction: EvictionPolicyKind::TinyLfu,
        },
        redis: Some((store, rc)),
        disk: Some(DiskConfig {
            path: o.disk.join("l3.redb"),
            max_bytes: 64 << 20,
            zstd_level: 3,
            warm_entries: 0,
            max_entries: 1_000_000,
        }),
        coalesce_wait: Duration::from_secs(10),
    };
    let (cache, worker): (Cache, Worker) = Cache::from_parts(parts, 0, o.clock).unwrap();
    let worker = tokio::spawn(worker.run());
    assert!(cache.redis_ready(Duration::from_secs(5)).await, "connects");
    Running {
        cache: Some(cache),
        worker,
    }
}

/// A raw client for checking what Redis holds.
async fn raw(redis: &RedisServer) -> Client {
    let c = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    c.init().await.unwrap();
    c
}

async fn count_keys(c: &Client, pattern: &str) -> usize {
    use futures::StreamExt;
    let keys: Vec<Key> = c
        .scan_buffered(pattern, Some(1000), None)
        .map(|k| k.unwrap())
        .collect()
        .await;
    keys.len()
}

fn entry(body: &str, at: u64, ttl_ms: u64) -> CachedResponse {
    CachedResponse {
        status: 200,
        headers: vec![(
            "content-type".into(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::copy_from_slice(body.as_bytes()),
        stored_at_ms: at,
        ttl_ms,
        stale_while_revalidate_ms: 0,
        stale_if_error_ms: 0,
        ..Default::default()
    }
}

fn key(body: &str) -> CacheKey {
    KeyParts {
        method: "POST",
        pool: "analysis",
        path: "/v1/analyze",
        query: None,
        body: body.as_bytes(),
    }
    .key()
}

fn x_cache(l: &Lookup) -> &'static str {
    match l {
        Lookup::Hit(h) => h.x_cache().as_str(),
        Lookup::Miss(_) => "MISS",
    }
}

async fn fill(c: &Cache, k: &CacheKey, body: &str) {
    let now = c.clock().now_ms();
    match c.lookup(k).await {
        Lookup::Miss(m) => m.fill.expect("filler").fill(entry(body, now, 60_000)).await,
        Lookup::Hit(_) => panic!("expected a miss"),
    }
}

/// Waits for spawned Redis writes to land.
async fn until_keys(c: &Client, pattern: &str, n: usize) {
    let what = format!("{n} Redis keys matching {pattern}");
    until(what, Duration::from_secs(10), || async move {
        let got = count_keys(c, pattern).await;
        if got == n {
            Ok(())
        } else {
            Err(format!("{got} keys"))
        }
    })
    .await;
}

#[tokio::test]
async fn hits_and_misses_per_tier_with_promotion() {
    let redis = RedisServer::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(START));
    let opts = |ns, dir| Opts {
        namespace: ns,
        clock: clock.clone(),
        ..Opts::new(&redis, dir)
    };
    let rc = raw(&redis).await;
    let k = key(r#"{"url":"http://a.example/"}"#);

    let a = open(opts("g:", da.path())).await;
    assert_eq!(x_cache(&a.cache().lookup(&k).await), "MISS");
    // That lookup's fill guard is gone: the next miss fills.
    fill(a.cache(), &k, "verdict").await;
    assert_eq!(x_cache(&a.cache().lookup(&k).await), "HIT-L1");
    a.cache().sync_disk().await;
    until_keys(&rc, "g:*", 1).await;
    a.close().await;

    // Another instance on the same Redis, its own disk: L2, promoted to L1.
    let b = open(opts("g:", db.path())).await;
    assert_eq!(x_cache(&b.cache().lookup(&k).await), "HIT-L2");
    assert_eq!(x_cache(&b.cache().lookup(&k).await), "HIT-L1");
    b.close().await;

    // The first instance restarted against an empty Redis: L3, promoted to L1 and L2.
    let a = open(opts("fresh:", da.path())).await;
    assert_eq!(x_cache(&a.cache().lookup(&k).await), "HIT-L3");
    until_keys(&rc, "fresh:*", 1).await;
    assert_eq!(x_cache(&a.cache().lookup(&k).await), "HIT-L1");
    a.close().await;
}

#[tokio::test]
async fn json_bodies_differing_in_spacing_and_key_order_share_an_entry() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = open(Opts::new(&redis, dir.path())).await;
    fill(c.cache(), &key(r#"{"url":"http://a/","mode":"fast"}"#), "v").await;
    let same = key("{\n  \"mode\": \"fast\",\n  \"url\": \"http://a/\"\n}");
    assert_eq!(x_cache(&c.cache().lookup(&same).await), "HIT-L1");
    let other = key(r#"{"url":"http://b/","mode":"fast"}"#);
    assert_eq!(x_cache(&c.cache().lookup(&other).await), "MISS");
    c.close().await;
}

#[tokio::test]
async fn entries_expire_in_every_tier() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let c = open(Opts {
        clock: clock.clone(),
        ..Opts::new(&redis, dir.path())
    })
    .await;
    let k = key("{}");
    fill(c.cache(), &k, "v").await;
    clock.advance(Duration::from_secs(59));
    assert_eq!(x_cache(&c.cache().lookup(&k).await), "HIT-L1");
    clock.advance(Duration::from_secs(1));
    // Redis still holds it (its own EX is real time), but it is dead by the cache clock.
    assert_eq!(x_cache(&c.cache().lookup(&k).await), "MISS");
    c.close().await;
}

#[tokio::test]
async fn memory_tier_stays_within_its_byte_bound() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = open(Opts {
        memory_bytes: 100 * 1024,
        ..Opts::new(&redis, dir.path())
    })
    .await;
    let body = "x".repeat(1000);
    for i in 0..1000 {
        fill(c.cache(), &key(&format!("{{\"i\":{i}}}")), &body).await;
    }
    c.cache().maintain().await;
    let (entries, bytes) = c.cache().memory_usage();
    assert!(bytes <= 100 * 1024, "{bytes} bytes in {entries} entries");
    assert!(entries > 10, "{entries}");
    c.close().await;
}

#[tokio::test]
async fn redis_killed_mid_stream_is_bypassed_and_used_again_when_back() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = open(Opts {
        clock: Arc::new(gantry::cache::SystemClock),
        ..Opts::new(&redis, dir.path())
    })
    .await;
    let cache = c.cache().clone();
    let mut answered = 0;
    for i in 0..300 {
        if i == 100 {
            redis.kill();
        }
        let k = key(&format!("{{\"n\":{i}}}"));
        match cache.lookup(&k).await {
            Lookup::Hit(_) => {}
            Lookup::Miss(m) => {
                if let Some(f) = m.fill {
                    f.fill(entry("v", cache.clock().now_ms(), 60_000)).await;
                }
            }
        }
        answered += 1;
        if i == 150 {
            assert_ne!(cache.redis_circuit(), Some(CircuitState::Closed));
        }
    }
    assert_eq!(answered, 300);
    // Misses while Redis is down still answer (from disk or as misses).
    assert_eq!(x_cache(&cache.lookup(&key("{\"new\":1}")).await), "MISS");

    redis.restart();
    let k = key("{\"after\":1}");
    let cache_ref = &cache;
    // The circuit closes once Redis is back.
    until("closed circuit", Duration::from_secs(10), || async move {
        let _ = cache_ref.lookup(&key("{\"probe\":1}")).await;
        cache_ref.redis_circuit() == Some(CircuitState::Closed)
    })
    .await;
    fill(&cache, &k, "v").await;
    let (rc, stored) = (&raw(&redis).await, &format!("g:{k}"));
    until(
        "the entry in Redis",
        Duration::from_secs(10),
        || async move { rc.exists::<u64, _>(stored).await.unwrap() == 1 },
    )
    .await;
    drop(cache);
    c.close().await;
}

#[tokio::test]
async fn hundred_concurrent_identical_misses_make_one_fill() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = open(Opts::new(&redis, dir.path())).await;
    let fills = Arc::new(AtomicUsize::new(0));
    let k = key(r#"{"url":"http://hot/"}"#);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, fills, k) = (c.cache().clone(), fills.clone(), k.clone());
            tokio::spawn(async move {
                match cache.lookup(&k).await {
                    Lookup::Miss(m) => {
                        fills.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await; // the backend
                        let e = entry("v", cache.clock().now_ms(), 60_000);
                        m.fill.expect("one filler").fill(e).await;
                    }
                    Lookup::Hit(h) => assert_eq!(h.entry.body, "v"),
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(fills.load(Ordering::SeqCst), 1);
    c.close().await;
}

#[tokio::test]
async fn purge_by_key_prefix_and_all_uses_scan_and_spares_foreign_keys() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = open(Opts {
        memory_bytes: 4 << 20,
        ..Opts::new(&redis, dir.path())
    })
    .await;
    let rc = raw(&redis).await;
    rc.set::<(), _, _>("someone-else", "keep", None, None, false)
        .await
        .unwrap();
    let cache = c.cache();
    // More keys than one SCAN page, over two pools.
    for i in 0..1500 {
        let pool = if i % 3 == 0 { "other" } else { "analysis" };
        let k = KeyParts {
            method: "POST",
            pool,
            path: "/v1/analyze",
            query: None,
            body: format!("{{\"i\":{i}}}").as_bytes(),
        }
        .key();
        fill(cache, &k, "v").await;
    }
    cache.sync_disk().await;
    until_keys(&rc, "g:*", 1500).await;

    let one = key(r#"{"i":1}"#);
    let r = cache.purge(Purge::Key(one.to_string())).await;
    assert_eq!((r.l1, r.l2, r.l3), (1, Some(1), Some(1)), "{r:?}");
    let r = cache.purge(Purge::Prefix("analysis:".into())).await;
    assert_eq!((r.l1, r.l2, r.l3), (999, Some(999), Some(999)), "{r:?}");
    assert_eq!(count_keys(&rc, "g:*").await, 500);
    let r = cache.purge(Purge::All).await;
    assert_eq!((r.l2, r.l3), (Some(500), Some(500)), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(
        count_keys(&rc, "*").await,
        1,
        "only the foreign key is left"
    );
    c.close().await;
}

#[tokio::test]
async fn responses_that_are_not_stored_leave_every_tier_empty() {
    use gantry::cache::policy;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = open(Opts::new(&redis, dir.path())).await;
    let route = gantry::cache::RouteCache {
        ttl: Duration::from_secs(60),
        methods: vec![http::Method::POST],
        vary: vec![],
        allow_authorized: false,
        max_object_bytes: 10,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        max_ttl: Duration::from_secs(86_400),
    };
    let mut set_cookie = http::HeaderMap::new();
    set_cookie.insert("set-cookie", "a=b".parse().unwrap());
    let cases: [(u16, http::HeaderMap, u64); 3] = [
        (500, http::HeaderMap::new(), 2),
        (200, set_cookie, 2),
        (200, http::HeaderMap::new(), 11),
    ];
    for (i, (status, headers, len)) in cases.into_iter().enumerate() {
        let k = key(&format!("{{\"case\":{i}}}"));
        let Lookup::Miss(m) = c.cache().lookup(&k).await else {
            panic!("miss")
        };
        // The proxy's rule: fill only what policy allows; otherwise drop the guard.
        let guard = m.fill.unwrap();
        let times = policy::Times {
            requested_ms: START,
            received_ms: START,
        };
        let method = http::Method::POST;
        if policy::storable(&route, &method, status, &headers, len, times).is_ok() {
            guard.fill(entry("v", START, 60_000)).await;
        } else {
            drop(guard);
        }
        assert_eq!(x_cache(&c.cache().lookup(&k).await), "MISS", "case {i}");
    }
    c.cache().sync_disk().await;
    assert_eq!(c.cache().disk_usage(), Some((0, 0)));
    assert_eq!(count_keys(&raw(&redis).await, "*").await, 0);
    c.close().await;
}
