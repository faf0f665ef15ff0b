//! The control loop of one pool: sync with the runtime, observe, decide, act.
//!
//! [`Autoscaler::run`] owns every piece of mutable state. Starting and
//! draining replicas run as tasks, so the loop keeps observing (and deciding)
//! while replicas start, drain or a cooldown runs. It is level-triggered:
//! each tick lists the runtime's replicas, adopts unknown ones and forgets
//! vanished ones, so a missed event costs one interval, not a leak. Death
//! events and requests held at zero replicas only make it act sooner.
//!
//! An unreachable runtime (the Docker socket gone) pauses listing and
//! starting, 1 s doubling to 5 s, and is no failed start: once it is back the
//! pool is reconciled within seconds.
//!
//! A replica that exits, or is not ready, within [`START_WINDOW`] of starting
//! is a failed start: the pool backs off (1 s doubling to [`MAX_START_BACKOFF`])
//! before starting another, and shows as failing with the replica's last
//! words until a replica started after the failure has stayed ready for
//! [`START_WINDOW`]. Until its first replica is ready, a pool holds requests
//! ([`startup_hold`]) rather than answering 503; a failing pool does not.
//!
//! A ready replica the proxy has counted down or ejected for the policy's
//! `replace_unhealthy_after` (a hung model, say) is drained and replaced;
//! that counts as a failed start, so a pool whose every new replica hangs
//! backs off like a crash loop instead of churning.
//!
//! A starting replica joins the pool through its [`Admission`]: the readiness
//! task adds it while holding it, and draining closes it first. So a replica
//! scaled away or dead while its add is on the wire (over the admin API, the
//! add is an HTTP request that aborting the task does not recall) is removed
//! after that add lands, never before; a stopped replica is never re-added.
//!
//! With `scaler.lease`, a loop whose process does not hold the lease only
//! mirrors: it lists the runtime and keeps its own proxy's pool in step with
//! the leader's replicas (a ready one joins through the usual admission, a
//! vanished one leaves), but never decides, starts, promotes or stops
//! anything, nor counts a failure; with a shared runtime (Docker) several
//! proxies so serve one scaler's replicas. On taking over it already tracks
//! them and adopts the rest, like a restarted scaler ([`super::lease`]).
//!
//! Warm spares (the policy's `warm`) are replicas started ahead and kept
//! outside the pool, not counted: each tick tops them up to
//! `min(warm, max - current)` (none once the pool is at its ceiling), after
//! acting, and scaling up promotes ready spares first, so a new replica
//! joins the pool in the time of a rename and a `/ready` probe. A spare
//! that dies young or never gets ready is a failed start like any other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::control::{drained, Member, PoolControl};
use super::decide::{decide, Decision, Direction, Fleet, History, Observation};
use super::journal;
use super::observe::{MetricsSource, Window};
use super::policy::{Policy, Rule};
use super::runtime::{Death, Listing, Replica, ReplicaSpec, Runtime, RuntimeError};
use super::Clock;
use crate::admin::BackendState;
use crate::metrics::scaler as m;
use crate::proxy::tasks::stopping;
use crate::proxy::Pool;

/// How often a starting replica's `/ready` is probed.
const READY_POLL: Duration = Duration::from_millis(50);
/// How often a draining replica is checked.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Longest pause after runtime errors: an engine back from an outage is
/// listed again, and the pool reconciled, within it.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A replica that dies this soon after starting or becoming ready is a failed
/// start; one that stays ready this long ends a run of failures.
pub const START_WINDOW: Duration = Duration::from_secs(10);
/// Longest pause between failing starts.
pub const MAX_START_BACKOFF: Duration = Duration::from_secs(300);
/// Most requests held while a pool starts its first replicas.
const STARTUP_HOLD_QUEUE: usize = 1024;

/// The hold of a pool whose first replicas are starting: a bounded queue, for
/// as long as a replica may take to get ready.
pub fn startup_hold(policy: &Policy) -> (usize, Duration) {
    let queue = policy
        .scale_to_zero
        .map_or(STARTUP_HOLD_QUEUE, |z| z.hold_queue as usize);
    (queue, policy.ready_timeout)
}

/// The outside systems a loop talks to.
#[derive(Clone)]
pub struct Parts {
    /// Where replicas run.
    pub runtime: Arc<dyn Runtime>,
    /// The proxy.
    pub control: Arc<dyn PoolControl>,
    /// Where metrics come from.
    pub metrics: Arc<dyn MetricsSource>,
    /// Wall clock for schedules.
    pub clock: Arc<dyn Clock>,
    /// Where decisions and start failures are recorded for people to read.
    pub journal: journal::Journal,
    /// Whether this process may act (`scaler.lease`; always without one).
    pub leader: super::lease::Leader,
}

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started or adopted, waiting for `/ready`.
    Starting,
    /// In the pool.
    Ready,
    /// Leaving: draining in the proxy, then stopped.
    Draining,
}

#[derive(Debug)]
struct Tracked {
    replica: Replica,
    phase: Phase,
    /// When it was started (or adopted), then when it became ready.
    since: Instant,
    /// Whether the readiness task may still add it to the pool.
    admission: Admission,
    /// Since when the proxy has not counted it up (while ready).
    unhealthy_since: Option<Instant>,
}

/// Whether a starting replica may still join the pool. The readiness task
/// adds it only while holding the lock with the gate open; a drain closes
/// the gate (waiting for an add in progress) before it removes the replica.
#[derive(Debug, Clone, Default)]
struct Admission(Arc<tokio::sync::Mutex<bool>>);

impl Admission {
    /// Closes the gate: no add starts after this returns, and one in
    /// progress has finished.
    async fn close(&self) {
        *self.0.lock().await = true;
    }

    fn closed(&self) -> bool {
        self.0.try_lock().is_ok_and(|closed| *closed)
    }
}

/// A warm spare: started, outside the pool.
#[derive(Debug)]
struct Spare {
    replica: Replica,
    /// When it was started or adopted.
    since: Instant,
    /// Whether it has answered `/ready`.
    ready: bool,
}

/// What a replica task reports back.
#[derive(Debug)]
enum Done {
    /// A warm spare answered `/ready`.
    SpareReady(Replica),
    /// A warm spare did not get ready in time.
    SpareNotReady(Replica, String),
    Ready(Replica, Duration, &'static str),
    NotReady(Replica, String),
    /// Drained before it joined the pool: nothing to do.
    Withdrawn(Replica),
    Stopped(Replica),
    StopFailed(Replica, String),
}

/// Exponential pause after errors: 1 s, doubling up to `cap`.
#[derive(Debug)]
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(cap: Duration) -> Backoff {
        Backoff {
            until: None,
            delay: Duration::ZERO,
            cap,
        }
    }

    fn fail(&mut self, now: Instant) -> Duration {
        self.delay = (self.delay * 2).clamp(Duration::from_secs(1), self.cap);
        self.until = Some(now + self.delay);
        self.delay
    }

    fn ok(&mut self) {
        *self = Backoff::new(self.cap);
    }

    fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| u > now)
    }
}

/// Failed replica starts of a pool.
#[derive(Debug)]
struct Starts {
    backoff: Backoff,
    in_a_row: u32,
    total: u64,
    last_error: Option<String>,
    /// When the last failure happened: only replicas ready after it end the run.
    last_failure: Option<Instant>,
}

impl Default for Starts {
    fn default() -> Starts {
        Starts {
            backoff: Backoff::new(MAX_START_BACKOFF),
            in_a_row: 0,
            total: 0,
            last_error: None,
            last_failure: None,
        }
    }
}

/// The control loop of one pool.
pub struct Autoscaler {
    pool: String,
    policy: Arc<Policy>,
    policies: watch::Receiver<Arc<Policy>>,
    parts: Parts,
    local_pool: Option<Arc<Pool>>,
    replicas: BTreeMap<String, Tracked>,
    /// Warm spares by id.
    spares: BTreeMap<String, Spare>,
    /// Spares being stopped (too many, or never ready): not adopted again.
    retiring: std::collections::BTreeSet<String>,
    history: History,
    window: Window,
    last_active: Instant,
    last_reason: &'static str,
    tasks: JoinSet<Done>,
    deaths: broadcast::Receiver<Death>,
    backoff: Backoff,
    starts: Starts,
    /// No replica of this loop has been ready yet: requests are held.
    warming: bool,
    /// A counting runtime's replica count (Swarm's), from the last listing
    /// or our last change; `None`: the tracked replicas are the count.
    desired: Option<u32>,
    /// The policy asks for warm spares that this runtime cannot keep (said once).
    said_no_spares: bool,
    /// The warning that this runtime ignores the policy's `model` was given.
    said_no_model: bool,
    shutdown: watch::Receiver<bool>,
}

impl Autoscaler {
    /// A loop for the pool of `policies`' current policy; it follows policy
    /// updates and stops when `shutdown` turns true (or its sender is dropped).
    pub fn new(
        parts: Parts,
        policies: watch::Receiver<Arc<Policy>>,
        shutdown: watch::Receiver<bool>,
    ) -> Autoscaler {
        let policy = policies.borrow().clone();
        let pool = policy.pool.clone();
        Autoscaler {
            local_pool: parts.control.local_pool(&pool),
            deaths: parts.runtime.deaths(),
            pool,
            policy,
            policies,
            parts,
            replicas: BTreeMap::new(),
            spares: BTreeMap::new(),
            retiring: Default::default(),
            history: History::default(),
            window: Window::default(),
            last_active: Instant::now(),
            last_reason: "",
            tasks: JoinSet::new(),
            backoff: Backoff::new(MAX_BACKOFF),
            starts: Starts::default(),
            warming: true,
            desired: None,
            said_no_spares: false,
            said_no_model: false,
            shutdown,
        }
    }

    /// Runs until shutdown. Replicas are left running for the next run to adopt.
    pub async fn run(mut self) {
        self.apply_policy();
        tracing::info!(pool = %self.pool, runtime = self.parts.runtime.name(), "Scaler started");
        let mut next = Instant::now();
        loop {
            let pool = self.local_pool.clone();
            let demand = async move {
                match pool {
                    Some(p) => p.hold.demanded().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    self.tick().await;
                    next = Instant::now() + self.policy.interval;
                }
                _ = demand => self.tick().await,
                Some(done) = self.tasks.join_next() => {
                    if let Ok(done) = done {
                        self.finish(done).await;
                    }
                }
                death = self.deaths.recv() => match death {
                    Ok(d) if d.replica.pool == self.pool => {
                        self.on_death(d.replica, &d.reason).await;
                        self.tick().await;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.tick().await,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.deaths = broadcast::channel(1).1;
                    }
                },
                changed = self.policies.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.policy = self.policies.borrow_and_update().clone();
                    self.apply_policy();
                    tracing::info!(pool = %self.pool, file = %self.policy.file.display(), "Policy applied");
                }
                _ = stopping(&mut self.shutdown) => break,
            }
        }
        self.tasks.abort_all();
        tracing::info!(pool = %self.pool, "Scaler stopped");
    }

    fn apply_policy(&mut self) {
        self.window.clear();
        self.set_hold();
    }

    /// Holds requests while the pool warms up (unless failing) or scales from zero.
    fn set_hold(&self) {
        let Some(p) = &self.local_pool else {
            return;
        };
        let hold = match self.policy.scale_to_zero {
            Some(z) => Some((z.hold_queue as usize, z.hold_timeout)),
            None if self.warming && self.starts.in_a_row == 0 => Some(startup_hold(&self.policy)),
            None => None,
        };
        p.hold.set(hold);
    }

    /// One evaluation: sync, observe, decide, act; while another scaler
    /// holds the lease, only [`Autoscaler::mirror`].
    async fn tick(&mut self) {
        let leader = &self.parts.leader;
        self.parts.journal.set_leader(&self.pool, leader.view());
        if !leader.leading() {
            self.mirror().await;
            return;
        }
        let now = Instant::now();
        if !self.backoff.active(now) {
            self.sync(now).await;
        }
        self.check_recovered(now);
        let members = match self.parts.control.members(&self.pool).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(pool = %self.pool, error = %e, "Cannot read the pool");
                return;
            }
        };
        self.replace_unhealthy(&members, now);
        let ready = self.ready(&members);
        let reading = self
            .parts
            .metrics
            .read(&self.policy, &ready, &members)
            .await;
        let waiting = self.local_pool.as_ref().map_or(0, |p| p.hold.waiting()) as u32;
        if reading.active || waiting > 0 {
            self.last_active = now;
        }
        let p = self.policy.clone();
        let keep = p.window + p.interval;
        self.window.push(now, reading.values, keep);
        let (stable, panic) = self.window.means(&p, now);
        let obs = Observation {
            stable,
            panic,
            last_active: self.last_active,
            waiting,
            unix_secs: self.parts.clock.unix_secs(),
        };
        let fleet = Fleet {
            current: self
                .desired
                .unwrap_or_else(|| self.count(|p| p != Phase::Draining)),
            ready: ready.len() as u32,
            history: self.history.clone(),
        };
        let d = decide(&p, &obs, &fleet, now);
        self.history.record(&d, now, History::keep_for(&p));
        self.report(&d, &obs, fleet.ready);
        if self.backoff.active(now) {
            return;
        }
        match d.direction() {
            Direction::Up if self.starts.backoff.active(now) => {}
            Direction::Up | Direction::Down if self.desired.is_some() => {
                self.set_count(d.from, d.to, now).await
            }
            Direction::Up => self.scale_up(d.to - d.from, now).await,
            Direction::Down => self.scale_down(d.from - d.to, &members),
            Direction::Hold => {}
        }
        self.keep_spares(now).await;
    }

    /// Standby: keeps this proxy's pool in step with the runtime's serving
    /// replicas (the leader's), without acting on the runtime.
    async fn mirror(&mut self) {
        let listed = match self.parts.runtime.list(&self.pool).await {
            Ok(l) => l.serving,
            Err(e) => {
                tracing::debug!(pool = %self.pool, error = %e, "Standby: runtime unreachable");
                return;
            }
        };
        // Spares are the leader's to keep: not tracked here.
        self.spares.clear();
        let gone: Vec<String> = self
            .replicas
            .keys()
            .filter(|id| !listed.iter().any(|r| &r.id == *id))
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id).await;
        }
        for r in listed {
            if !self.replicas.contains_key(&r.id) {
                tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, "Standby: following the leader's replica");
                self.track_starting(r, Instant::now(), "mirror");
            }
        }
    }

    /// Standby: a replica the leader stopped (or that died) leaves this
    /// proxy's pool; nothing is stopped or counted.
    async fn forget(&mut self, id: &str) {
        let Some(t) = self.replicas.remove(id) else {
            return;
        };
        t.admission.close().await;
        if let Err(e) = self.parts.control.remove(&self.pool, t.replica.addr).await {
            tracing::warn!(pool = %self.pool, error = %e, "Cannot remove a replica from the pool");
        }
        tracing::info!(pool = %self.pool, replica = %id, addr = %t.replica.addr, "Standby: the leader's replica is gone; out of this proxy's pool");
    }

    /// Starts or stops warm spares to have `min(warm, max - current)`.
    async fn keep_spares(&mut self, now: Instant) {
        if self.policy.model.is_some() && !self.said_no_model && !self.parts.runtime.sets_model() {
            self.said_no_model = true;
            let runtime = self.parts.runtime.name();
            tracing::warn!(pool = %self.pool, runtime, "The policy's `model` is ignored: with this runtime the model comes with the image (build one per version)");
        }
        if self.desired.is_some() {
            if self.policy.warm > 0 && !self.said_no_spares {
                self.said_no_spares = true;
                let runtime = self.parts.runtime.name();
                tracing::warn!(pool = %self.pool, runtime, "The policy's `warm` is ignored: this runtime keeps no warm spares");
            }
            return;
        }
        let current = self.count(|p| p != Phase::Draining);
        let want = self
            .policy
            .warm
            .min(self.policy.max.saturating_sub(current)) as usize;
        let have = self.spares.len();
        if have > want {
            // The youngest go first: the oldest are the likeliest ready.
            let mut extra: Vec<(Instant, String)> = self
                .spares
                .values()
                .map(|s| (s.since, s.replica.id.clone()))
                .collect();
            extra.sort();
            for (_, id) in extra.into_iter().skip(want) {
                self.retire(&id);
            }
            return;
        }
        if have == want || self.backoff.active(now) || self.starts.backoff.active(now) {
            return;
        }
        for r in self.start_many((want - have) as u32, true, now).await {
            self.track_spare(r, now);
        }
    }

    /// Tracks a warm spare and waits for its `/ready` in a task.
    fn track_spare(&mut self, r: Replica, since: Instant) {
        let runtime = self.parts.runtime.clone();
        let timeout = self.policy.ready_timeout;
        let replica = r.clone();
        self.tasks.spawn(async move {
            match wait_ready(&*runtime, &replica, since + timeout, || false).await {
                Wait::Ready | Wait::Withdrawn => Done::SpareReady(replica),
                Wait::TimedOut => {
                    Done::SpareNotReady(replica, format!("not ready within {timeout:?}"))
                }
            }
        });
        self.spares.insert(
            r.id.clone(),
            Spare {
                replica: r,
                since,
                ready: false,
            },
        );
    }

    /// Stops a warm spare (no drain: it never served).
    fn retire(&mut self, id: &str) {
        let Some(spare) = self.spares.remove(id) else {
            return;
        };
        let (r, runtime) = (spare.replica, self.parts.runtime.clone());
        tracing::info!(pool = %self.pool, replica = %r.id, "Stopping a warm spare");
        self.retiring.insert(r.id.clone());
        self.tasks.spawn(async move {
            match runtime.stop(&r).await {
                Ok(()) => Done::Stopped(r),
                Err(e) => Done::StopFailed(r, e.to_string()),
            }
        });
    }

    /// What a new replica of this pool needs.
    fn spec(&self) -> ReplicaSpec {
        ReplicaSpec {
            pool: self.pool.clone(),
            warm: false,
            cpus: self.policy.cpus,
            memory_mib: self.policy.memory_mib,
            pids: self.policy.pids,
            model: self.policy.model.clone(),
        }
    }

    fn count(&self, f: impl Fn(Phase) -> bool) -> u32 {
        self.replicas.values().filter(|t| f(t.phase)).count() as u32
    }

    /// Replicas in the pool that pass health checks.
    fn ready(&self, members: &[Member]) -> Vec<Replica> {
        self.replicas
            .values()
            .filter(|t| t.phase == Phase::Ready)
            .filter(|t| {
                members
                    .iter()
                    .any(|m| m.addr == t.replica.addr && m.state == BackendState::Up)
            })
            .map(|t| t.replica.clone())
            .collect()
    }

    /// Drains ready replicas the proxy has not counted up for the policy's
    /// `replace_unhealthy_after`; the next decisions start their replacements.
    fn replace_unhealthy(&mut self, members: &[Member], now: Instant) {
        let limit = self.policy.replace_unhealthy_after;
        let mut replace = Vec::new();
        for t in self
            .replicas
            .values_mut()
            .filter(|t| t.phase == Phase::Ready)
        {
            let state = members
                .iter()
                .find(|m| m.addr == t.replica.addr)
                .map(|m| m.state);
            match state {
                Some(BackendState::Down | BackendState::Ejected) => {
                    let since = *t.unhealthy_since.get_or_insert(now);
                    let for_ = now.saturating_duration_since(since);
                    if !limit.is_zero() && for_ >= limit {
                        replace.push((t.replica.id.clone(), for_));
                    }
                }
                _ => t.unhealthy_since = None,
            }
        }
        for (id, for_) in replace {
            let why = format!("unhealthy for {}s: replaced", for_.as_secs());
            tracing::warn!(pool = %self.pool, replica = %id, reason = %why, "Replacing an unhealthy replica");
            m::REPLACED.with_label_values(&[&self.pool]).inc();
            self.start_failed(why, now);
            self.drain(&id);
        }
    }

    /// Lists the runtime: adopts unknown replicas and spares, forgets vanished ones.
    async fn sync(&mut self, now: Instant) {
        let Listing {
            serving: listed,
            warm,
            desired,
        } = match self.parts.runtime.list(&self.pool).await {
            Ok(l) => l,
            Err(e) => {
                let delay = self.backoff.fail(now);
                tracing::warn!(pool = %self.pool, error = %e, retry_in = ?delay, "Runtime unreachable");
                return;
            }
        };
        self.backoff.ok();
        self.desired = desired;
        // Deaths already reported carry their reason: take them before
        // calling the rest of the missing replicas merely gone.
        loop {
            match self.deaths.try_recv() {
                Ok(d) if d.replica.pool == self.pool => self.on_death(d.replica, &d.reason).await,
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let gone: Vec<Replica> = self
            .replicas
            .values()
            .filter(|t| !listed.iter().any(|r| r.id == t.replica.id))
            .filter(|t| t.phase != Phase::Draining)
            .map(|t| t.replica.clone())
            .collect();
        for r in gone {
            if self.desired.is_some() {
                // The runtime's pick of a scale-down, or a dead replica it
                // replaces itself: out of the pool, its requests drained.
                tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, "Replica left the runtime (scaled away or replaced there)");
                self.drain(&r.id);
            } else {
                self.on_death(r, "gone from the runtime").await;
            }
        }
        for r in listed {
            if !self.replicas.contains_key(&r.id) {
                // A spare promoted behind our back (by an earlier run) serves now.
                self.spares.remove(&r.id);
                tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, "Adopting replica");
                self.track_starting(r, Instant::now(), "adopt");
            }
        }
        let vanished: Vec<Replica> = self
            .spares
            .values()
            .filter(|s| !warm.iter().any(|r| r.id == s.replica.id))
            .map(|s| s.replica.clone())
            .collect();
        for r in vanished {
            self.on_death(r, "gone from the runtime").await;
        }
        for r in warm {
            if !self.spares.contains_key(&r.id) && !self.retiring.contains(&r.id) {
                tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, "Adopting warm spare");
                self.track_spare(r, Instant::now());
            }
        }
    }

    /// A counting runtime: sets its replica count `from` -> `to`; the
    /// replicas it starts are adopted by the next listings, those it stops
    /// leave with them. A conflict (someone else changed the count since it
    /// was read) is left for the next round to re-read and decide again.
    async fn set_count(&mut self, from: u32, to: u32, now: Instant) {
        let action = if to > from { "start" } else { "stop" };
        match self.parts.runtime.scale(&self.spec(), to).await {
            Ok(()) => {
                self.desired = Some(to);
                m::ACTIONS
                    .with_label_values(&[&self.pool, action, "ok"])
                    .inc_by(u64::from(from.abs_diff(to)));
                tracing::info!(pool = %self.pool, from, to, runtime = self.parts.runtime.name(), "Replica count set");
            }
            Err(RuntimeError::Conflict(e)) => {
                tracing::info!(pool = %self.pool, error = %e, "The replica count changed elsewhere; re-reading it next round");
            }
            Err(RuntimeError::Unreachable(e)) => {
                let delay = self.backoff.fail(now);
                tracing::warn!(pool = %self.pool, error = %e, retry_in = ?delay, "Runtime unreachable: cannot set the replica count");
            }
            Err(e) => {
                m::ACTIONS
                    .with_label_values(&[&self.pool, action, "error"])
                    .inc();
                if to > from {
                    self.start_failed(format!("cannot set the replica count to {to}: {e}"), now);
                } else {
                    let delay = self.backoff.fail(now);
                    tracing::error!(pool = %self.pool, error = %e, retry_in = ?delay, "Cannot set the replica count");
                }
            }
        }
    }

    /// Adds `n` replicas at once: warm spares first (ready ones, oldest
    /// first), new starts for the rest.
    async fn scale_up(&mut self, n: u32, now: Instant) {
        let n = n - self.promote(n).await;
        if n == 0 {
            return;
        }
        let started = Instant::now();
        for r in self.start_many(n, false, now).await {
            self.track_starting(r, started, "start");
        }
    }

    /// Starts `n` replicas at once (warm spares when `warm`); returns those
    /// that started. A refusal counts once per attempt, however many it
    /// asked for; an unreachable engine is an outage, not a crash loop:
    /// retried with the runtime's short back-off, not the start back-off.
    async fn start_many(&mut self, n: u32, warm: bool, now: Instant) -> Vec<Replica> {
        let spec = ReplicaSpec {
            warm,
            ..self.spec()
        };
        let (what, action) = if warm {
            ("a warm spare", "warm")
        } else {
            ("a replica", "start")
        };
        let runtime = self.parts.runtime.clone();
        let results = futures::future::join_all((0..n).map(|_| runtime.start(&spec))).await;
        let mut started = Vec::new();
        let mut refused = None;
        for result in results {
            match result {
                Ok(r) => {
                    let said = if warm {
                        "Warm spare started"
                    } else {
                        "Replica started"
                    };
                    tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, "{said}");
                    started.push(r);
                }
                Err(e) => {
                    m::ACTIONS
                        .with_label_values(&[&self.pool, action, "error"])
                        .inc();
                    refused = Some(e);
                }
            }
        }
        match refused {
            Some(RuntimeError::Unreachable(e)) => {
                let delay = self.backoff.fail(now);
                tracing::warn!(pool = %self.pool, error = %e, retry_in = ?delay, "Runtime unreachable: cannot start {what}");
            }
            Some(e) => self.start_failed(format!("cannot start {what}: {e}"), now),
            None => {}
        }
        started
    }

    /// Promotes up to `n` warm spares to serving replicas; returns how many.
    async fn promote(&mut self, n: u32) -> u32 {
        let mut order: Vec<(bool, Instant, String)> = self
            .spares
            .values()
            .map(|s| (!s.ready, s.since, s.replica.id.clone()))
            .collect();
        order.sort();
        let mut promoted = 0;
        for (_, _, id) in order.into_iter().take(n as usize) {
            let Some(spare) = self.spares.remove(&id) else {
                continue;
            };
            let r = spare.replica;
            match self.parts.runtime.promote(&r).await {
                Ok(()) => {
                    tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, ready = spare.ready, "Warm spare promoted");
                    self.track_starting(r, Instant::now(), "promote");
                    promoted += 1;
                }
                Err(e) => {
                    // Listed again by the next sync if it is still a spare.
                    m::ACTIONS
                        .with_label_values(&[&self.pool, "promote", "error"])
                        .inc();
                    tracing::warn!(pool = %self.pool, replica = %r.id, error = %e, "Cannot promote a warm spare");
                }
            }
        }
        promoted
    }

    /// Counts a failed start and backs off before the next one.
    fn start_failed(&mut self, why: String, now: Instant) {
        let delay = self.starts.backoff.fail(now);
        self.starts.in_a_row += 1;
        self.starts.total += 1;
        self.starts.last_failure = Some(now);
        m::START_FAILURES.with_label_values(&[&self.pool]).inc();
        tracing::warn!(pool = %self.pool, failures_in_a_row = self.starts.in_a_row, retry_in = ?delay, reason = %why, "Replica failed to start; backing off");
        self.starts.last_error = Some(why);
        self.publish_starts();
        self.set_hold();
    }

    /// Ends a run of failed starts once a replica started after the last
    /// failure has stayed ready for [`START_WINDOW`].
    fn check_recovered(&mut self, now: Instant) {
        let Some(failed_at) = self.starts.last_failure else {
            return;
        };
        let stable = self.replicas.values().any(|t| {
            t.phase == Phase::Ready
                && t.since > failed_at
                && now.saturating_duration_since(t.since) >= START_WINDOW
        });
        if stable {
            tracing::info!(pool = %self.pool, after = self.starts.in_a_row, "Replicas start again");
            self.starts.in_a_row = 0;
            self.starts.last_failure = None;
            self.starts.backoff.ok();
            self.publish_starts();
            self.set_hold();
        }
    }

    fn publish_starts(&self) {
        let now = Instant::now();
        let retry_at = self.starts.backoff.until.filter(|u| *u > now).map(|u| {
            let ms = u64::try_from((u - now).as_millis()).unwrap_or(u64::MAX);
            (self.parts.clock.unix_secs() * 1000).saturating_add(ms)
        });
        m::START_FAILING
            .with_label_values(&[&self.pool])
            .set(i64::from(self.starts.in_a_row));
        self.parts.journal.set_starts(
            &self.pool,
            crate::admin::Starts {
                failures_in_a_row: self.starts.in_a_row,
                failures_total: self.starts.total,
                last_error: self.starts.last_error.clone(),
                retry_at_unix_ms: retry_at,
            },
        );
    }

    /// Tracks a replica as starting and waits for its `/ready` in a task.
    fn track_starting(&mut self, r: Replica, since: Instant, action: &'static str) {
        let runtime = self.parts.runtime.clone();
        let control = self.parts.control.clone();
        let timeout = self.policy.ready_timeout;
        let replica = r.clone();
        let admission = Admission::default();
        let gate = admission.clone();
        self.tasks.spawn(async move {
            match wait_ready(&*runtime, &replica, since + timeout, || gate.closed()).await {
                Wait::Ready => {}
                Wait::Withdrawn => return Done::Withdrawn(replica),
                Wait::TimedOut => {
                    return Done::NotReady(replica, format!("not ready within {timeout:?}"))
                }
            }
            let closed = gate.0.lock().await;
            if *closed {
                return Done::Withdrawn(replica);
            }
            let added = control.add(&replica.pool, replica.addr).await;
            drop(closed);
            match added {
                Ok(()) => Done::Ready(replica, since.elapsed(), action),
                Err(e) => Done::NotReady(replica, format!("cannot add to the pool: {e}")),
            }
        });
        self.replicas.insert(
            r.id.clone(),
            Tracked {
                replica: r,
                phase: Phase::Starting,
                since,
                admission,
                unhealthy_since: None,
            },
        );
    }

    /// Drains and stops `n` replicas: starting ones first, then the least busy.
    fn scale_down(&mut self, n: u32, members: &[Member]) {
        let inflight = |t: &Tracked| {
            members
                .iter()
                .find(|m| m.addr == t.replica.addr)
                .map_or(0, |m| m.inflight)
        };
        let mut candidates: Vec<(u8, u64, String)> = self
            .replicas
            .values()
            .filter(|t| t.phase != Phase::Draining)
            .map(|t| {
                (
                    u8::from(t.phase == Phase::Ready),
                    inflight(t),
                    t.replica.id.clone(),
                )
            })
            .collect();
        candidates.sort();
        for (_, _, id) in candidates.into_iter().take(n as usize) {
            self.drain(&id);
        }
    }

    fn drain(&mut self, id: &str) {
        let Some(t) = self.replicas.get_mut(id) else {
            return;
        };
        t.phase = Phase::Draining;
        let (r, control, runtime, admission) = (
            t.replica.clone(),
            self.parts.control.clone(),
            self.parts.runtime.clone(),
            t.admission.clone(),
        );
        let timeout = self.policy.drain_timeout;
        tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, "Draining replica");
        self.tasks.spawn(async move {
            admission.close().await;
            drain_and_stop(r, control, runtime, timeout).await
        });
    }

    async fn finish(&mut self, done: Done) {
        match done {
            Done::SpareReady(r) => {
                if let Some(s) = self.spares.get_mut(&r.id) {
                    s.ready = true;
                    m::ACTIONS
                        .with_label_values(&[&self.pool, "warm", "ok"])
                        .inc();
                    tracing::info!(pool = %self.pool, replica = %r.id, ms = s.since.elapsed().as_millis() as u64, "Warm spare ready");
                }
            }
            Done::SpareNotReady(r, why) => {
                if self.spares.contains_key(&r.id) {
                    m::ACTIONS
                        .with_label_values(&[&self.pool, "warm", "error"])
                        .inc();
                    tracing::warn!(pool = %self.pool, replica = %r.id, reason = %why, "Warm spare failed to start; removing it");
                    self.start_failed(format!("warm spare: {why}"), Instant::now());
                    self.retire(&r.id);
                }
            }
            Done::Ready(r, took, action) => {
                m::ACTIONS
                    .with_label_values(&[&self.pool, action, "ok"])
                    .inc();
                if action == "start" {
                    m::START_SECONDS
                        .with_label_values(&[&self.pool])
                        .observe(took.as_secs_f64());
                }
                match self.replicas.get_mut(&r.id) {
                    Some(t) if t.phase == Phase::Starting => {
                        t.phase = Phase::Ready;
                        t.since = Instant::now();
                        tracing::info!(pool = %self.pool, replica = %r.id, addr = %r.addr, ms = took.as_millis() as u64, "Replica ready, in the pool");
                        if self.warming {
                            self.warming = false;
                            self.set_hold();
                        }
                    }
                    // Died or scaled away while its add was on the way: its
                    // drain waited for the add and takes it out.
                    _ => {}
                }
            }
            Done::Withdrawn(r) => {
                tracing::debug!(pool = %self.pool, replica = %r.id, "Drained before it joined the pool");
            }
            // Already draining (scaled away, dead): its drain stops it.
            Done::NotReady(r, _)
                if self
                    .replicas
                    .get(&r.id)
                    .is_none_or(|t| t.phase != Phase::Starting) => {}
            Done::NotReady(r, _) if !self.parts.leader.leading() => self.forget(&r.id).await,
            Done::NotReady(r, why) => {
                m::ACTIONS
                    .with_label_values(&[&self.pool, "start", "error"])
                    .inc();
                tracing::warn!(pool = %self.pool, replica = %r.id, reason = %why, "Replica failed to start; removing it");
                self.start_failed(why, Instant::now());
                self.drain(&r.id);
            }
            Done::Stopped(r) => {
                m::ACTIONS
                    .with_label_values(&[&self.pool, "stop", "ok"])
                    .inc();
                tracing::info!(pool = %self.pool, replica = %r.id, "Replica stopped");
                self.replicas.remove(&r.id);
                self.retiring.remove(&r.id);
            }
            Done::StopFailed(r, why) => {
                m::ACTIONS
                    .with_label_values(&[&self.pool, "stop", "error"])
                    .inc();
                tracing::error!(pool = %self.pool, replica = %r.id, error = %why, "Cannot stop replica; will retry");
                self.backoff.fail(Instant::now());
                // A spare: the next sync lists it again, and it is stopped again.
                self.retiring.remove(&r.id);
                // Still tracked as draining: never re-adopted; retried now.
                self.drain(&r.id);
            }
        }
    }

    /// A replica died on its own: out of the pool at once, and cleaned up;
    /// a failed start if it had not been ready for [`START_WINDOW`].
    async fn on_death(&mut self, r: Replica, reason: &str) {
        if !self.parts.leader.leading() {
            // The leader's to replace; this proxy only stops sending to it.
            self.forget(&r.id).await;
            return;
        }
        if let Some(spare) = self.spares.get(&r.id) {
            let lived = spare.since.elapsed();
            tracing::warn!(pool = %self.pool, replica = %r.id, reason = %reason, "Warm spare died");
            if !spare.ready || lived < START_WINDOW {
                let secs = lived.as_secs_f64();
                let why = format!("warm spare exited after {secs:.1}s: {reason}");
                self.start_failed(why, Instant::now());
            }
            // Stopping removes what is left of it (a Docker container).
            self.retire(&r.id);
            return;
        }
        // Events carry only the id: use the tracked replica's address.
        let (r, phase, since) = match self.replicas.get(&r.id) {
            Some(t) if t.phase != Phase::Draining => (t.replica.clone(), t.phase, t.since),
            _ => return,
        };
        tracing::warn!(pool = %self.pool, replica = %r.id, addr = %r.addr, reason = %reason, "Replica died; removing it from the pool");
        let now = Instant::now();
        let lived = now.saturating_duration_since(since);
        if phase == Phase::Starting {
            self.start_failed(format!("exited before it was ready: {reason}"), now);
        } else if lived < START_WINDOW {
            let secs = lived.as_secs_f64();
            self.start_failed(
                format!("exited {secs:.1}s after it was ready: {reason}"),
                now,
            );
        }
        if let Err(e) = self.parts.control.remove(&self.pool, r.addr).await {
            tracing::warn!(pool = %self.pool, error = %e, "Cannot remove dead replica from the pool");
        }
        m::ACTIONS
            .with_label_values(&[&self.pool, "replace", "ok"])
            .inc();
        // Drain is immediate for a dead replica; stopping removes the container.
        self.drain(&r.id);
    }

    fn report(&mut self, d: &Decision, obs: &Observation, ready: u32) {
        let p = &self.policy;
        let label = d.reason.label();
        let dir = d.direction();
        m::DECISIONS
            .with_label_values(&[&self.pool, dir.as_str(), label])
            .inc();
        m::REPLICAS
            .with_label_values(&[&self.pool, "desired"])
            .set(d.to.into());
        m::REPLICAS
            .with_label_values(&[&self.pool, "current"])
            .set(d.from.into());
        m::REPLICAS
            .with_label_values(&[&self.pool, "ready"])
            .set(ready.into());
        m::REPLICAS
            .with_label_values(&[&self.pool, "warm"])
            .set(self.spares.len() as i64);
        m::PANIC
            .with_label_values(&[&self.pool])
            .set(i64::from(d.panic_until.is_some()));
        m::MAX_REPLICAS
            .with_label_values(&[&self.pool])
            .set(p.max.into());
        let mut inputs = String::new();
        for (rule, v) in p.metrics.iter().zip(&obs.stable) {
            let name = rule.kind.as_str();
            let target = match rule.rule {
                Rule::Target { target, .. } => target,
                Rule::Threshold { up_above, .. } => up_above,
            };
            m::METRIC_TARGET
                .with_label_values(&[self.pool.as_str(), name])
                .set(target);
            if let Some(v) = v {
                m::METRIC_VALUE
                    .with_label_values(&[self.pool.as_str(), name])
                    .set(*v);
            }
            let v = v.map_or("missing".to_string(), |v| format!("{v:.2}"));
            inputs.push_str(&format!("{name}={v} "));
        }
        let message = format!("{} {} -> {}: {}", self.pool, d.from, d.to, d.reason);
        if dir != Direction::Hold || label != self.last_reason {
            tracing::info!(pool = %self.pool, from = d.from, to = d.to, ready, waiting = obs.waiting, inputs = inputs.trim_end(), reason = label, "{message}");
        } else {
            tracing::debug!(pool = %self.pool, inputs = inputs.trim_end(), "{message}");
        }
        self.last_reason = label;
        self.parts.journal.record(crate::admin::Decision {
            pool: self.pool.clone(),
            at_unix_ms: self.parts.clock.unix_secs() * 1000,
            from: d.from,
            to: d.to,
            ready,
            warm: self.spares.len() as u32,
            direction: dir.as_str().into(),
            reason: label.into(),
            message,
            repeats: 1,
        });
    }
}

/// How waiting for a replica's `/ready` ended.
enum Wait {
    Ready,
    /// `withdrawn` turned true first.
    Withdrawn,
    /// Not ready by the deadline.
    TimedOut,
}

/// Probes `replica`'s `/ready` every [`READY_POLL`] until it answers, the
/// deadline passes, or `withdrawn` says to stop.
async fn wait_ready(
    runtime: &dyn Runtime,
    replica: &Replica,
    deadline: Instant,
    withdrawn: impl Fn() -> bool,
) -> Wait {
    loop {
        if withdrawn() {
            return Wait::Withdrawn;
        }
        if runtime.ready(replica).await {
            return Wait::Ready;
        }
        if Instant::now() >= deadline {
            return Wait::TimedOut;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Takes a replica out of the pool, waits for its requests, then stops it.
async fn drain_and_stop(
    r: Replica,
    control: Arc<dyn PoolControl>,
    runtime: Arc<dyn Runtime>,
    timeout: Duration,
) -> Done {
    if let Err(e) = control.remove(&r.pool, r.addr).await {
        tracing::warn!(pool = %r.pool, replica = %r.id, error = %e, "Cannot drain replica in the proxy");
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match control.members(&r.pool).await {
            Ok(members) if !drained(&members, r.addr) => tokio::time::sleep(DRAIN_POLL).await,
            _ => break,
        }
    }
    let mut delay = Duration::from_millis(500);
    for _ in 0..3 {
        match runtime.stop(&r).await {
            Ok(()) => return Done::Stopped(r),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    match runtime.stop(&r).await {
        Ok(()) => Done::Stopped(r),
        Err(e) => Done::StopFailed(r, e.to_string()),
    }
}

#[cfg(test)]
mod tests;
