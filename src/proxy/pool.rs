//! Pools of backends and each backend's long-lived state: health, ejection, draining, in-flight.
//!
//! The backend list of a pool is swapped atomically (`ArcSwap`) on add or
//! remove, but each [`Backend`] is an `Arc` carried from one list to the next,
//! so its counters survive every change of the set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::balance::Selector;
use crate::admin::BackendState;
use crate::config::{Config, PoolConfig};
use crate::metrics;

/// One backend and everything the proxy knows about it.
#[derive(Debug)]
pub struct Backend {
    /// Where requests go.
    pub addr: SocketAddr,
    /// Share for the weighted policy.
    pub weight: u32,
    /// Requests in flight now; survives backend-set changes.
    pub(super) inflight: AtomicU64,
    /// Smooth weighted round robin's running value.
    pub(super) swrr_current: AtomicI64,
    /// Active health verdict.
    healthy: AtomicBool,
    /// Removed from its pool; finishing what it has.
    draining: AtomicBool,
    /// Passive ejection and health-check streaks.
    state: Mutex<Record>,
    /// Consecutive passive failures (connect errors, 5xx).
    consecutive_failures: AtomicU32,
    /// Has been up at least once; a new backend needs one pass, a fallen one `rise`.
    ever_up: AtomicBool,
    /// Metric handles resolved once, not per request.
    metrics: Option<BackendMetrics>,
}

/// A backend's labelled metric handles.
#[derive(Debug)]
struct BackendMetrics {
    inflight: prometheus::IntGauge,
    ok: prometheus::IntCounter,
    /// `gantry_backend_duration_seconds`: how long each lease on it lasted.
    duration: prometheus::Histogram,
    pool: Arc<str>,
}

/// A pool's labelled metric handles for the per-request path.
#[derive(Debug)]
pub struct PoolMetrics {
    /// `gantry_requests_total` by status class, indexed by `status / 100 - 1`.
    requests: [prometheus::IntCounter; 5],
    /// `gantry_request_duration_seconds` for this pool.
    pub duration: prometheus::Histogram,
    /// `gantry_retries_total` for this pool.
    pub retries: prometheus::IntCounter,
    /// `gantry_pool_upstream_requests_total`: requests that reached a backend.
    pub upstream_requests: prometheus::IntCounter,
    /// `gantry_pool_upstream_duration_seconds`: their backend-side time.
    pub upstream_duration: prometheus::Histogram,
}

impl PoolMetrics {
    fn new(pool: &str) -> PoolMetrics {
        let class = |c: &str| metrics::REQUESTS.with_label_values(&[pool, c]);
        PoolMetrics {
            requests: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics::REQUEST_DURATION.with_label_values(&[pool]),
            retries: metrics::RETRIES.with_label_values(&[pool]),
            upstream_requests: metrics::POOL_UPSTREAM_REQUESTS.with_label_values(&[pool]),
            upstream_duration: metrics::POOL_UPSTREAM_DURATION.with_label_values(&[pool]),
        }
    }

    /// Counts one answered request with `status`.
    pub fn count_request(&self, status: u16) {
        let i = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.requests[i].inc();
    }

    /// The backend-side counters as numbers, read from the metric handles
    /// (no text): cache hits and held time are not in them.
    pub fn snapshot(&self) -> RequestStats {
        use prometheus::core::Metric;
        let m = self.upstream_duration.metric();
        let count = self.upstream_duration.get_sample_count();
        let mut buckets: Vec<(f64, u64)> = m
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        // As in the text exposition: the last bucket is +Inf and holds every sample.
        if buckets.last().is_none_or(|b| b.0.is_finite()) {
            buckets.push((f64::INFINITY, count));
        }
        RequestStats {
            requests: self.upstream_requests.get(),
            duration_sum: self.upstream_duration.get_sample_sum(),
            duration_count: count,
            buckets,
        }
    }
}

/// A pool's cumulative backend-side counters (what
/// `gantry_pool_upstream_requests_total` and `gantry_pool_upstream_duration_seconds` say of it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestStats {
    /// Requests answered.
    pub requests: u64,
    /// Sum of request durations, seconds.
    pub duration_sum: f64,
    /// Durations observed.
    pub duration_count: u64,
    /// Cumulative buckets: (upper bound in seconds, count), ascending, the last +Inf.
    pub buckets: Vec<(f64, u64)>,
}

/// Ejection and check streaks of a backend.
#[derive(Debug, Default)]
struct Record {
    ejected_until: Option<Instant>,
    times_ejected: u32,
    check_passes: u32,
    check_failures: u32,
    /// When the last active check ended, and whether it passed.
    last_check: Option<(Instant, bool)>,
}

/// What the status page shows of a backend beyond its [`BackendStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendDetail {
    /// Time left of its ejection, while ejected.
    pub ejected_for: Option<Duration>,
    /// When its last active check ended, and whether it passed.
    pub last_check: Option<(Instant, bool)>,
    /// Never up yet: added and waiting for its first passing check.
    pub starting: bool,
}

/// How one attempt on a backend ended (the `outcome` label of
/// `gantry_upstream_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Ok,
    /// A 5xx response.
    Http5xx,
    /// No connection (refused, no route, connect timeout, socket error).
    ConnectError,
    /// Connected, but no answer in time.
    Timeout,
    /// Anything else on the way.
    Error,
    /// `503` with `Retry-After`: the backend sheds load (its queue is full).
    /// Load, not a failure: never counted toward ejection.
    Shed,
    /// The client went away: not the backend's doing, never counted.
    ClientGone,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Http5xx => "http_5xx",
            Outcome::ConnectError => "connect_error",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Shed => "shed",
            Outcome::ClientGone => "client_gone",
        }
    }

    /// Whether it says anything about the backend's health (a streak of
    /// failures ejects it; a success ends the streak).
    pub fn judges_backend(self) -> bool {
        !matches!(self, Outcome::Shed | Outcome::ClientGone)
    }
}

/// A snapshot of one backend for the admin API and the scaler.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackendStatus {
    /// Address.
    pub addr: SocketAddr,
    /// Weight.
    pub weight: u32,
    /// `up`, `down`, `ejected` or `draining`.
    pub state: BackendState,
    /// Requests in flight.
    pub inflight: u64,
}

impl Backend {
    /// A backend, healthy or waiting for its first passing check.
    pub fn new(addr: SocketAddr, weight: u32, healthy: bool) -> Backend {
        Backend {
            addr,
            weight: weight.max(1),
            inflight: AtomicU64::new(0),
            swrr_current: AtomicI64::new(0),
            healthy: AtomicBool::new(healthy),
            draining: AtomicBool::new(false),
            state: Mutex::new(Record::default()),
            consecutive_failures: AtomicU32::new(0),
            ever_up: AtomicBool::new(healthy),
            metrics: None,
        }
    }

    /// Resolves this backend's metric handles under `pool`.
    fn with_metrics(mut self, pool: &Arc<str>) -> Backend {
        let addr = self.addr.to_string();
        self.metrics = Some(BackendMetrics {
            inflight: metrics::BACKEND_INFLIGHT.with_label_values(&[&**pool, &addr]),
            ok: metrics::UPSTREAM_REQUESTS.with_label_values(&[&**pool, &addr, "ok"]),
            duration: metrics::BACKEND_DURATION.with_label_values(&[&**pool, &addr]),
            pool: pool.clone(),
        });
        self
    }

    /// Counts one upstream attempt with `outcome`.
    pub fn count_outcome(&self, outcome: Outcome) {
        match &self.metrics {
            Some(m) if outcome == Outcome::Ok => m.ok.inc(),
            Some(m) => metrics::UPSTREAM_REQUESTS
                .with_label_values(&[&*m.pool, &self.addr.to_string(), outcome.as_str()])
                .inc(),
            None => {}
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Record> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Active checks pass.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Being removed.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.state().ejected_until.is_some_and(|t| t > now)
    }

    /// May take new requests at `now`.
    pub fn is_eligible(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_draining() && !self.is_ejected(now)
    }

    fn state_at(&self, now: Instant) -> BackendState {
        if self.is_draining() {
            BackendState::Draining
        } else if !self.is_healthy() {
            BackendState::Down
        } else if self.is_ejected(now) {
            BackendState::Ejected
        } else {
            BackendState::Up
        }
    }

    /// Records an active check; returns the new health when it flipped.
    pub fn record_check(&self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        let mut s = self.state();
        s.last_check = Some((Instant::now(), passed));
        if passed {
            s.check_failures = 0;
            s.check_passes += 1;
            let need = if self.ever_up.load(Ordering::Relaxed) {
                rise
            } else {
                1
            };
            if !self.is_healthy() && s.check_passes >= need {
                self.healthy.store(true, Ordering::Relaxed);
                self.ever_up.store(true, Ordering::Relaxed);
                self.consecutive_failures.store(0, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            s.check_passes = 0;
            s.check_failures += 1;
            if self.is_healthy() && s.check_failures >= fall {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Forces the active-health verdict (a connect refusal is proof enough).
    pub fn mark_down(&self) -> bool {
        let was = self.healthy.swap(false, Ordering::Relaxed);
        self.state().check_passes = 0;
        was
    }

    /// Records a request outcome for passive ejection. Returns `true` when
    /// the failure streak reached `threshold` and the backend should be ejected.
    pub fn record_outcome(&self, ok: bool, threshold: u32) -> bool {
        if ok {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        threshold > 0 && n >= threshold
    }

    /// Ejects for `base * 2^(times-1)`, capped at `max`; returns the duration.
    fn eject(&self, now: Instant, base: Duration, max: Duration) -> Duration {
        let mut s = self.state();
        s.times_ejected += 1;
        let factor = 1u32.checked_shl(s.times_ejected - 1).unwrap_or(u32::MAX);
        let d = base.saturating_mul(factor).min(max);
        s.ejected_until = Some(now + d);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        d
    }

    /// Ejection time left, last check, and whether it has ever been up.
    pub fn detail(&self, now: Instant) -> BackendDetail {
        let s = self.state();
        BackendDetail {
            ejected_for: s.ejected_until.and_then(|t| t.checked_duration_since(now)),
            last_check: s.last_check,
            starting: !self.ever_up.load(Ordering::Relaxed),
        }
    }

    /// Snapshot for reports.
    pub fn status(&self, now: Instant) -> BackendStatus {
        BackendStatus {
            addr: self.addr,
            weight: self.weight,
            state: self.state_at(now),
            inflight: self.inflight(),
        }
    }
}

/// Holds one in-flight slot on a backend; released on drop.
#[derive(Debug)]
pub struct Lease {
    /// The leased backend.
    pub backend: Arc<Backend>,
    /// When it was selected: the lease's length is the backend's time on the attempt.
    since: Instant,
}

impl Lease {
    fn new(backend: Arc<Backend>) -> Lease {
        backend.inflight.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &backend.metrics {
            m.inflight.inc();
        }
        Lease {
            backend,
            since: Instant::now(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.inflight.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.backend.metrics {
            m.inflight.dec();
            m.duration.observe(self.since.elapsed().as_secs_f64());
        }
    }
}

/// Errors from runtime changes to a pool.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// No such pool in the config.
    #[error("no pool named `{0}`")]
    UnknownPool(String),
    /// The backend is already in the pool.
    #[error("backend {0} is already in the pool")]
    Duplicate(SocketAddr),
    /// The backend is not in the pool.
    #[error("backend {0} is not in the pool")]
    NotFound(SocketAddr),
}

/// A named pool: its settings, its backends and its selector.
#[derive(Debug)]
pub struct Pool {
    /// Validated settings.
    pub config: PoolConfig,
    /// Name as a shared string for metric labels.
    pub name: Arc<str>,
    backends: ArcSwap<Vec<Arc<Backend>>>,
    /// Removed backends still finishing requests, with their deadline.
    draining: Mutex<Vec<(Arc<Backend>, Instant)>>,
    selector: Selector,
    changes: Mutex<()>,
    /// Requests held while the scaler starts a first backend (scale from zero).
    pub hold: super::hold::Hold,
    /// Per-request metric handles.
    pub metrics: PoolMetrics,
}

impl Pool {
    /// A pool with its configured backends, assumed up until checked.
    pub fn new(config: PoolConfig) -> Pool {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| Arc::new(Backend::new(b.addr, b.weight, true).with_metrics(&name)))
            .collect();
        for b in &backends {
            set_up_metric(&name, b, Instant::now());
        }
        Pool {
            config,
            // Resolved at start, so every series exists from the first scrape.
            metrics: PoolMetrics::new(&name),
            name,
            backends: ArcSwap::from_pointee(backends),
            draining: Mutex::new(Vec::new()),
            selector: Selector::default(),
            changes: Mutex::new(()),
            hold: Default::default(),
        }
    }

    /// The current member list (draining ones excluded).
    pub fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.load_full()
    }

    /// Whether any member may take a new request now.
    pub fn has_eligible(&self, now: Instant) -> bool {
        self.backends.load().iter().any(|b| b.is_eligible(now))
    }

    /// Members that may take a new request now.
    pub fn eligible(&self, now: Instant) -> Vec<Arc<Backend>> {
        self.backends
            .load()
            .iter()
            .filter(|b| b.is_eligible(now))
            .cloned()
            .collect()
    }

    /// Picks a backend not in `exclude` and leases it. When every eligible
    /// backend was tried already, a tried one is better than none.
    pub fn select(&self, exclude: &[SocketAddr], now: Instant) -> Option<Lease> {
        let mut candidates = self.eligible(now);
        // Retries avoid backends already tried; first tries (no exclusions)
        // keep the one list, with no second allocation on the hot path.
        if candidates.iter().any(|b| exclude.contains(&b.addr)) {
            let fresh: Vec<Arc<Backend>> = candidates
                .iter()
                .filter(|b| !exclude.contains(&b.addr))
                .cloned()
                .collect();
            if !fresh.is_empty() {
                candidates = fresh;
            }
        }
        let b = self.selector.pick(self.config.policy, &candidates)?;
        Some(Lease::new(b))
    }

    /// Adds a backend; it takes traffic after its first passing health check.
    pub fn add(&self, addr: SocketAddr, weight: u32) -> Result<(), PoolError> {
        let _g = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.backends.load_full();
        if current.iter().any(|b| b.addr == addr) {
            return Err(PoolError::Duplicate(addr));
        }
        let b = Arc::new(Backend::new(addr, weight, false).with_metrics(&self.name));
        set_up_metric(&self.name, &b, Instant::now());
        let mut next = (*current).clone();
        next.push(b);
        self.backends.store(Arc::new(next));
        metrics::BACKEND_CHANGES.inc();
        tracing::info!(pool = %self.name, backend = %addr, weight, "Backend added");
        Ok(())
    }

    /// Removes a backend at once for new requests; in-flight ones finish.
    pub fn remove(&self, addr: SocketAddr) -> Result<(), PoolError> {
        let _g = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.backends.load_full();
        let Some(b) = current.iter().find(|b| b.addr == addr).cloned() else {
            return Err(PoolError::NotFound(addr));
        };
        b.draining.store(true, Ordering::Relaxed);
        let next: Vec<Arc<Backend>> = current.iter().filter(|x| x.addr != addr).cloned().collect();
        self.backends.store(Arc::new(next));
        let deadline = Instant::now() + self.config.drain_timeout;
        self.draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((b, deadline));
        metrics::BACKEND_UP
            .with_label_values(&[&*self.name, &addr.to_string()])
            .set(0);
        metrics::BACKEND_CHANGES.inc();
        tracing::info!(pool = %self.name, backend = %addr, "Backend draining");
        Ok(())
    }

    /// Forgets drained backends (idle, or past their drain deadline).
    pub fn reap_drained(&self, now: Instant) -> Vec<SocketAddr> {
        let mut d = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = Vec::new();
        d.retain(|(b, deadline)| {
            let keep = b.inflight() > 0 && *deadline > now;
            if !keep {
                done.push(b.addr);
                let labels = [&*self.name, &b.addr.to_string()[..]];
                let _ = metrics::BACKEND_UP.remove_label_values(&labels);
                let _ = metrics::BACKEND_INFLIGHT.remove_label_values(&labels);
                let _ = metrics::BACKEND_DURATION.remove_label_values(&labels);
            }
            keep
        });
        done
    }

    /// Whether `addr` is draining with requests still in flight.
    pub fn is_draining(&self, addr: SocketAddr) -> bool {
        self.draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(b, _)| b.addr == addr)
    }

    /// Records a request outcome; ejects when the streak says so and the cap allows.
    pub fn record_outcome(&self, backend: &Backend, ok: bool, now: Instant) {
        let o = &self.config.outlier;
        if !backend.record_outcome(ok, o.consecutive_failures) {
            return;
        }
        let members = self.backends.load();
        let ejected = members.iter().filter(|b| b.is_ejected(now)).count();
        let cap = members.len() * o.max_ejected_percent as usize / 100;
        if ejected >= cap || backend.is_ejected(now) {
            return;
        }
        let d = backend.eject(now, o.base_ejection, o.max_ejection);
        metrics::EJECTIONS
            .with_label_values(&[&*self.name, &backend.addr.to_string()])
            .inc();
        set_up_metric(&self.name, backend, now);
        tracing::warn!(pool = %self.name, backend = %backend.addr, seconds = d.as_secs_f64(), "Backend ejected");
    }

    /// Snapshot of members and draining backends.
    pub fn status(&self, now: Instant) -> Vec<BackendStatus> {
        let mut v: Vec<BackendStatus> =
            self.backends.load().iter().map(|b| b.status(now)).collect();
        let d = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        v.extend(d.iter().map(|(b, _)| b.status(now)));
        v
    }

    /// Members, then removed backends still draining.
    pub fn all_backends(&self) -> Vec<Arc<Backend>> {
        let mut v: Vec<Arc<Backend>> = self.backends.load().iter().cloned().collect();
        let d = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        v.extend(d.iter().map(|(b, _)| b.clone()));
        v
    }

    /// Refreshes `gantry_backend_up` for every member.
    pub fn refresh_metrics(&self, now: Instant) {
        for b in self.backends.load().iter() {
            set_up_metric(&self.name, b, now);
        }
    }
}

fn set_up_metric(pool: &str, b: &Backend, now: Instant) {
    metrics::BACKEND_UP
        .with_label_values(&[pool, &b.addr.to_string()])
        .set(i64::from(b.is_eligible(now)));
}

/// Every pool of a config, by name.
#[derive(Debug, Default)]
pub struct Pools {
    by_name: BTreeMap<String, Arc<Pool>>,
}

impl Pools {
    /// Pools built from a validated config.
    pub fn from_config(config: &Config) -> Pools {
        let by_name = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Pool::new(p.clone()))))
            .collect();
        Pools { by_name }
    }

    /// A pool by name.
    pub fn get(&self, name: &str) -> Result<&Arc<Pool>, PoolError> {
        self.by_name
            .get(name)
            .ok_or_else(|| PoolError::UnknownPool(name.to_string()))
    }

    /// Every pool.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;
    use std::path::Path;

    fn pool(n: usize, extra: &str) -> Pool {
        let mut yaml = String::from("pools:\n  p:\n    backends:\n");
        for i in 0..n {
            yaml.push_str(&format!("      - addr: 127.0.0.1:{}\n", 2000 + i));
        }
        yaml.push_str(extra);
        let c = from_str(Path::new("t.yaml"), &yaml).unwrap();
        Pool::new(c.pools[0].clone())
    }

    #[test]
    fn inflight_survives_adding_and_removing_others() {
        let p = pool(2, "");
        let now = Instant::now();
        let lease = p.select(&[], now).unwrap();
        p.add(([127, 0, 0, 1], 3000).into(), 1).unwrap();
        let other = p
            .backends()
            .iter()
            .find(|b| b.addr != lease.backend.addr)
            .unwrap()
            .addr;
        p.remove(other).unwrap();
        let same = p
            .backends()
            .iter()
            .find(|b| b.addr == lease.backend.addr)
            .unwrap()
            .clone();
        assert_eq!(same.inflight(), 1);
        drop(lease);
        assert_eq!(same.inflight(), 0);
    }

    #[test]
    fn added_backend_waits_for_a_passing_check() {
        let p = pool(0, "");
        let addr: SocketAddr = ([127, 0, 0, 1], 3001).into();
        p.add(addr, 1).unwrap();
        assert!(p.select(&[], Instant::now()).is_none());
        assert_eq!(p.backends()[0].record_check(true, 3, 2), Some(true));
        assert_eq!(p.select(&[], Instant::now()).unwrap().backend.addr, addr);
        assert_eq!(p.add(addr, 1), Err(PoolError::Duplicate(addr)));
    }

    #[test]
    fn removed_backend_takes_no_new_requests_but_drains() {
        let p = pool(2, "");
        let now = Instant::now();
        let lease = p.select(&[], now).unwrap();
        let addr = lease.backend.addr;
        p.remove(addr).unwrap();
        for _ in 0..20 {
            assert_ne!(p.select(&[], now).unwrap().backend.addr, addr);
        }
        assert!(p.reap_drained(now).is_empty(), "still in flight");
        drop(lease);
        assert_eq!(p.reap_drained(now), vec![addr]);
    }

    #[test]
    fn ejection_never_empties_the_pool_and_grows() {
        let p = pool(
            2,
            "    outlier: {consecutive_failures: 2, base_ejection: 10s}\n",
        );
        let now = Instant::now();
        let [a, b] = [p.backends()[0].clone(), p.backends()[1].clone()];
        for _ in 0..2 {
            p.record_outcome(&a, false, now);
            p.record_outcome(&b, false, now);
        }
        // 50% of 2 = 1 may be ejected.
        assert_eq!(p.eligible(now).len(), 1);
        let later = now + Duration::from_secs(11);
        assert_eq!(p.eligible(later).len(), 2);
        for _ in 0..2 {
            p.record_outcome(&a, false, later);
        }
        // Second ejection lasts 20 s.
        assert!(!a.is_eligible(later + Duration::from_secs(15)));
        assert!(a.is_eligible(later + Duration::from_secs(21)));
    }

    #[test]
    fn health_needs_fall_failures_and_rise_passes() {
        let b = Backend::new(([127, 0, 0, 1], 1).into(), 1, true);
        assert_eq!(b.record_check(false, 2, 2), None);
        assert_eq!(b.record_check(false, 2, 2), Some(false));
        assert_eq!(b.record_check(true, 2, 2), None);
        assert_eq!(b.record_check(true, 2, 2), Some(true));
    }
}
