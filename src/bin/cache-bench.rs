//! Cache hit-ratio benchmark: Zipf-distributed analysis requests through the tiered cache, in process.
//!
//! Draws `--requests` keys from Zipf(s) over `--keys` distinct JSON bodies,
//! looks each up in a [`Cache`] (L1 sized for `--l1-entries` entries, L2 and
//! L3 large enough for all) and fills every miss as the proxy would. Prints
//! the overall and L1 hit ratios per eviction policy, as a Markdown table.
//! Run by `bench/cache.sh` (`make bench-cache`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use gantry::cache::config::{DiskConfig, EvictionPolicyKind, MemoryConfig, RedisConfig};
use gantry::cache::key::KeyParts;
use gantry::cache::redis::{FredStore, MemoryRemote, RemoteStore};
use gantry::cache::tiered::{Parts, Tier};
use gantry::cache::{Cache, CachedResponse, Clock, Lookup, SystemClock};
use rand::{Rng, SeedableRng};

/// Hit ratios of the tiered cache under a Zipf load.
#[derive(Parser)]
struct Args {
    /// Requests drawn.
    #[arg(long, default_value_t = 1_000_000)]
    requests: usize,
    /// Distinct request bodies.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// L1 capacity, in entries of the benchmark's (uniform) size.
    #[arg(long, default_value_t = 10_000)]
    l1_entries: u64,
    /// Policies to measure: `clock_pro`, `tiny_lfu`, `lru`.
    #[arg(long, value_delimiter = ',', default_value = "clock_pro,tiny_lfu,lru")]
    policies: Vec<String>,
    /// Redis for L2 (`redis://127.0.0.1:PORT`); without it L2 is the in-memory stand-in.
    #[arg(long)]
    redis: Option<String>,
    /// Directory for the L3 files.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Apply L1's pending work every this many lookups (0: never; moka then applies it lazily).
    #[arg(long, default_value_t = 0)]
    maintain_every: usize,
}

/// A body of fixed size, so every entry weighs the same and L1 holds exactly `l1_entries`.
fn response(rank: usize) -> Bytes {
    let s = format!("{{\"verdict\":\"legitimate\",\"score\":0.0123,\"rank\":{rank:>8},\"model\":\"gantry-url-v1\"}}");
    Bytes::from(format!("{s:<200}"))
}

fn request_body(rank: usize) -> String {
    format!("{{\"url\":\"http://site-{rank}.example/login?next=%2Faccount\",\"mode\":\"full\"}}")
}

/// Cumulative Zipf weights over ranks 1..=n.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(s);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

struct Outcome {
    policy: String,
    hits: usize,
    l1: usize,
    l2: usize,
    l3: usize,
    distinct: usize,
    secs: f64,
}

async fn run(args: &Args, policy: &str, draws: &[usize]) -> Outcome {
    let eviction = match policy {
        "lru" => EvictionPolicyKind::Lru,
        "tiny_lfu" => EvictionPolicyKind::TinyLfu,
        _ => EvictionPolicyKind::ClockPro,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sample_key = key_of(0);
    let weight = entry(0, clock.now_ms()).weight(sample_key.as_str().len()) as u64;
    let namespace = format!("bench:{policy}:{}:", clock.now_ms());
    let redis = RedisConfig {
        url: args
            .redis
            .clone()
            .unwrap_or_else(|| "redis://unused".into()),
        username: None,
        password: None,
        tls: None,
        pool_size: 4,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        failure_threshold: 3,
        cooldown: Duration::from_secs(1),
        key_prefix: namespace,
        purge_timeout: Duration::from_secs(30),
    };
    let store: Arc<dyn RemoteStore> = match &args.redis {
        Some(_) => Arc::new(FredStore::connect(&redis).expect("redis URL")),
        None => Arc::new(MemoryRemote::default()),
    };
    let parts = Parts {
        memory: MemoryConfig {
            max_bytes: weight * args.l1_entries,
            eviction,
        },
        redis: Some((store, redis)),
        disk: Some(DiskConfig {
            path: args.dir.join(format!("{policy}.redb")),
            max_bytes: 4 << 30,
            zstd_level: 3,
            warm_entries: 0,
            max_entries: 10_000_000,
        }),
        coalesce_wait: Duration::from_secs(5),
    };
    let (cache, worker) = Cache::from_parts(parts, 0, clock.clone()).expect("cache opens");
    let worker = tokio::spawn(worker.run());
    assert!(
        cache.redis_ready(Duration::from_secs(5)).await,
        "Redis connects"
    );
    let keys: Vec<_> = (0..args.keys).map(key_of).collect();
    let mut seen = vec![false; args.keys];
    let (mut hits, mut l1, mut l2, mut l3, mut distinct) = (0, 0, 0, 0, 0);
    let start = Instant::now();
    for (i, &rank) in draws.iter().enumerate() {
        if args.maintain_every > 0 && i % args.maintain_every == 0 {
            cache.maintain().await;
        }
        if !seen[rank] {
            seen[rank] = true;
            distinct += 1;
        }
        match cache.lookup(&keys[rank]).await {
            Lookup::Hit(h) => {
                hits += 1;
                match h.tier {
                    Tier::L1 => l1 += 1,
                    Tier::L2 => l2 += 1,
                    Tier::L3 => l3 += 1,
                }
            }
            Lookup::Miss(m) => {
                if let Some(f) = m.fill {
                    f.fill(entry(rank, clock.now_ms())).await;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    cache.purge(gantry::cache::Purge::All).await;
    drop(cache);
    let _ = worker.await;
    Outcome {
        policy: policy.to_string(),
        hits,
        l1,
        l2,
        l3,
        distinct,
        secs,
    }
}

fn key_of(rank: usize) -> gantry::cache::CacheKey {
    KeyParts {
        method: "POST",
        pool: "analysis",
        path: "/v1/analyze",
        query: None,
        body: request_body(rank).as_bytes(),
    }
    .key()
}

fn entry(rank: usize, now: u64) -> CachedResponse {
    CachedResponse {
        status: 200,
        headers: vec![(
            "content-type".into(),
            Bytes::from_static(b"application/json"),
        )],
        body: response(rank),
        stored_at_ms: now,
        ttl_ms: 3_600_000,
        stale_while_revalidate_ms: 0,
        stale_if_error_ms: 0,
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let cdf = zipf_cdf(args.keys, args.zipf_s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let draws: Vec<usize> = (0..args.requests)
        .map(|_| {
            let u: f64 = rng.random();
            cdf.partition_point(|&c| c < u).min(args.keys - 1)
        })
        .collect();
    let top: f64 = cdf[(args.l1_entries as usize).min(args.keys) - 1];
    println!(
        "{} requests, Zipf(s={}) over {} bodies, L1 = {} entries; L2 = {}",
        args.requests,
        args.zipf_s,
        args.keys,
        args.l1_entries,
        args.redis.as_deref().unwrap_or("in-memory stand-in")
    );
    println!();
    println!("| L1 policy | overall hit ratio | L1 hit ratio | L2 hits | L3 hits | bound (1 - first-time/all) | perfect-frequency L1 | lookups/s |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for policy in &args.policies {
        let o = run(&args, policy, &draws).await;
        let n = args.requests as f64;
        println!(
            "| {} | {:.3} | {:.3} | {} | {} | {:.3} | {:.3} | {:.0} |",
            o.policy,
            o.hits as f64 / n,
            o.l1 as f64 / n,
            o.l2,
            o.l3,
            1.0 - o.distinct as f64 / n,
            top,
            n / o.secs
        );
    }
}
