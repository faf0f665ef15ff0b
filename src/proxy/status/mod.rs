//! The status page on the admin listener: `GET /` (one self-contained page) and `GET /status.json`.
//!
//! The page is HTML, CSS and script in one file ([`PAGE`], `page.html`),
//! nothing loaded from elsewhere; it polls `/status.json` ([`Status`]) every
//! two seconds. Like the admin API's other reads, both are open: they change
//! nothing, and the admin listener binds loopback unless configured
//! otherwise. The JSON is built per request from the pools, the cache, the
//! scaler's journal and this process's metrics; the charts' [`history`] and
//! the workers' numbers ([`workers`]) come from one background task
//! ([`run`]), so a page view never waits on a worker. Workers are the members
//! of the pools the scaler here runs, scraped only while someone watches
//! (`/status.json` read in the last [`WATCHED`]): no other backend is sent
//! requests it did not ask for.

pub mod history;
mod read;
pub mod workers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::admin::AdminState;
use super::pool::{Backend, Pool, Pools};
use crate::admin::status::{
    BackendStatus, CacheStatus, Check, PoolStatus, ScalerPool, ScalerStatus, Status, TierStatus,
};
use crate::metrics;

/// The page: HTML, CSS and script, no outside resources.
pub const PAGE: &str = include_str!("page.html");
/// How long after the last read of `/status.json` the workers are still scraped.
pub const WATCHED: Duration = Duration::from_secs(60);
/// Decisions shown per pool.
const DECISIONS_SHOWN: usize = 10;
/// What the page may load: itself and its JSON, nothing else.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; frame-ancestors 'none'";

/// What the status page keeps between requests; clones share it.
#[derive(Clone)]
pub struct Live {
    started: Instant,
    ring: Arc<Mutex<history::Ring>>,
    workers: workers::Workers,
    /// Milliseconds after `started` of the last `/status.json` read, plus one (0: never).
    viewed: Arc<AtomicU64>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            started: Instant::now(),
            ring: Arc::default(),
            workers: workers::Workers::default(),
            viewed: Arc::default(),
        }
    }
}

/// Samples for the charts and scrapes the workers every [`history::INTERVAL`], forever.
pub async fn run(state: AdminState) {
    let mut tick = tokio::time::interval(history::INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reading = reading(&state);
        state
            .live
            .ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reading);
        let since = state.live.started.elapsed().as_millis() as u64;
        let viewed = state.live.viewed.load(Ordering::Relaxed);
        let watched = viewed > 0 && since.saturating_sub(viewed) < WATCHED.as_millis() as u64;
        if let (true, Some(scaler)) = (watched, &state.scaler) {
            let scaled: Vec<String> = scaler.journal().into_keys().collect();
            state.live.workers.scrape(&state.pools, &scaled).await;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The counters the charts are made of, now.
fn reading(state: &AdminState) -> history::Reading {
    let now = Instant::now();
    let desired = state.scaler.as_ref().map(|s| {
        s.journal()
            .values()
            .filter_map(|j| j.decisions.last().map(|d| d.to))
            .sum()
    });
    history::Reading {
        at: Some(now),
        at_unix_ms: unix_ms(),
        requests: read::sum(&*metrics::REQUESTS, &[]),
        errors: read::sum(&*metrics::REQUESTS, &[("code_class", "5xx")]),
        buckets: read::buckets(&*metrics::REQUEST_DURATION, &[]),
        hits: read::sum(&*metrics::cache::LOOKUPS, &[("result", "hit")]),
        lookups: read::sum(&*metrics::cache::LOOKUPS, &[("tier", "l1")]),
        replicas: state
            .pools
            .iter()
            .map(|p| p.eligible(now).len() as u32)
            .sum(),
        desired,
    }
}

/// `GET /`: the page.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        PAGE,
    )
}

/// `GET /status.json`.
pub async fn json(State(state): State<AdminState>) -> impl IntoResponse {
    let now = state.live.started.elapsed().as_millis() as u64 + 1;
    state.live.viewed.store(now, Ordering::Relaxed);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(snapshot(&state)),
    )
}

/// Everything the page shows, now.
pub fn snapshot(state: &AdminState) -> Status {
    let history = state
        .live
        .ring
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .history();
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        at_unix_ms: unix_ms(),
        uptime_s: state.live.started.elapsed().as_secs(),
        pools: pools(&state.pools),
        cache: state.cache.as_ref().map(cache),
        scaler: state.scaler.as_deref().map(scaler),
        workers: state.live.workers.snapshot(),
        history,
    }
}

fn pools(pools: &Pools) -> Vec<PoolStatus> {
    let now = Instant::now();
    pools
        .iter()
        .map(|p| {
            let with = [("pool", &*p.name)];
            let b = read::buckets(&*metrics::REQUEST_DURATION, &with);
            PoolStatus {
                name: p.name.to_string(),
                balancing: p.config.policy.to_string(),
                requests: read::count(&*metrics::REQUESTS, &with),
                errors: read::count(&*metrics::REQUESTS, &[with[0], ("code_class", "5xx")]),
                p50_ms: read::quantile_ms(0.5, &b),
                p99_ms: read::quantile_ms(0.99, &b),
                backends: p
                    .all_backends()
                    .iter()
                    .map(|b| backend(p, b, now))
                    .collect(),
            }
        })
        .collect()
}

/// Upstream outcomes that count as the backend failing.
const FAILED: [&str; 4] = ["http_5xx", "connect_error", "timeout", "error"];

fn backend(pool: &Pool, b: &Backend, now: Instant) -> BackendStatus {
    let addr = b.addr.to_string();
    let with = [("pool", &*pool.name), ("backend", addr.as_str())];
    let status = b.status(now);
    let detail = b.detail(now);
    let state = match status.state {
        crate::admin::BackendState::Down if detail.starting => "starting",
        s => s.as_str(),
    };
    let requests = read::count(&*metrics::UPSTREAM_REQUESTS, &with);
    let errors: u64 = FAILED
        .iter()
        .map(|o| {
            read::count(
                &*metrics::UPSTREAM_REQUESTS,
                &[with[0], with[1], ("outcome", o)],
            )
        })
        .sum();
    let buckets = read::buckets(&*metrics::BACKEND_DURATION, &with);
    BackendStatus {
        addr,
        state: state.to_string(),
        ejected_for_s: detail.ejected_for.map(|d| d.as_secs_f64()),
        inflight: status.inflight,
        weight: status.weight,
        requests,
        errors,
        error_ratio: read::ratio(errors as f64, requests as f64),
        p50_ms: read::quantile_ms(0.5, &buckets),
        p99_ms: read::quantile_ms(0.99, &buckets),
        last_check: detail.last_check.map(|(at, passed)| Check {
            ago_s: now.saturating_duration_since(at).as_secs_f64(),
            passed,
        }),
    }
}

fn cache(c: &crate::cache::Cache) -> CacheStatus {
    use crate::cache::breaker::CircuitState;
    let all = &*metrics::cache::LOOKUPS;
    let tier = |tier: &str, kind: &str, held: Option<(u64, u64)>| {
        let lookups = read::count(all, &[("tier", tier)]);
        let hits = read::count(all, &[("tier", tier), ("result", "hit")]);
        TierStatus {
            tier: tier.into(),
            kind: kind.into(),
            lookups,
            hits,
            hit_ratio: read::ratio(hits as f64, lookups as f64),
            entries: held.map(|h| h.0),
            bytes: held.map(|h| h.1),
            evictions: read::count(&*metrics::cache::EVICTIONS, &[("tier", tier)]),
        }
    };
    let mut tiers = vec![tier("l1", "memory", Some(c.memory_usage()))];
    let circuit = c.redis_circuit();
    if circuit.is_some() {
        tiers.push(tier("l2", "redis", None));
    }
    if let Some(held) = c.disk_usage() {
        tiers.push(tier("l3", "disk", Some(held)));
    }
    let all_hits: u64 = tiers.iter().map(|t| t.hits).sum();
    CacheStatus {
        hit_ratio: read::ratio(all_hits as f64, tiers[0].lookups as f64),
        tiers,
        coalesced: metrics::cache::COALESCED.get(),
        redis_circuit: circuit.map(|s| {
            match s {
                CircuitState::Closed => "closed",
                CircuitState::HalfOpen => "half_open",
                CircuitState::Open => "open",
            }
            .to_string()
        }),
    }
}

fn scaler(view: &dyn crate::admin::ScalerView) -> ScalerStatus {
    let policies = view.policies();
    let pools = view
        .journal()
        .into_iter()
        .map(|(name, j)| {
            let last = j.decisions.last();
            let pool = ScalerPool {
                desired: last.map_or(0, |d| d.to),
                current: last.map_or(0, |d| d.from),
                ready: last.map_or(0, |d| d.ready),
                warm: last.map_or(0, |d| d.warm),
                leader: j.leader.clone(),
                policy: policies.in_force.get(&name).cloned(),
                starts: j.starts,
                decisions: j
                    .decisions
                    .into_iter()
                    .rev()
                    .take(DECISIONS_SHOWN)
                    .collect(),
            };
            (name, pool)
        })
        .collect();
    ScalerStatus {
        pools,
        rejected: policies.rejected,
    }
}
