//! Control-loop tests: the real in-process pools, a fake runtime and fake metrics, tokio's paused clock.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::proxy::Pools;
use crate::scaler::control::InProcess;
use crate::scaler::observe::FakeMetrics;
use crate::scaler::policy;
use crate::scaler::runtime::fake::FakeRuntime;
use crate::scaler::SystemClock;

struct Rig {
    journal: journal::Journal,
    runtime: Arc<FakeRuntime>,
    metrics: Arc<FakeMetrics>,
    pools: Arc<Pools>,
    pool: String,
    policy: watch::Sender<Arc<Policy>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A pool named `pool` with no backends, and a loop under `policy` (YAML
/// after `pool:`; interval 1 s, in-flight target 4 unless given).
fn policy_for(pool: &str, yaml: &str) -> Policy {
    let mut text = format!("pool: {pool}\ninterval: 1s\nwindow: 2s\n{yaml}");
    if !yaml.contains("metrics:") {
        text.push_str("metrics: [{metric: inflight_per_replica, target: 4}]\n");
    }
    policy::from_str(Path::new("t.yaml"), &text).unwrap()
}

fn rig_with(pool: &str, yaml: &str, runtime: Arc<FakeRuntime>) -> Rig {
    rig_on(pool, yaml, runtime, |pools| Arc::new(InProcess::new(pools)))
}

/// [`rig_with`] for a loop whose process does not hold the lease.
fn standby_rig(pool: &str, yaml: &str, runtime: Arc<FakeRuntime>) -> Rig {
    rig_as(
        pool,
        yaml,
        runtime,
        |pools| Arc::new(InProcess::new(pools)),
        crate::scaler::lease::Leader::standby(),
    )
}

/// [`rig_with`], reaching the pools through the control `control` makes of them.
fn rig_on(
    pool: &str,
    yaml: &str,
    runtime: Arc<FakeRuntime>,
    control: impl FnOnce(Arc<Pools>) -> Arc<dyn PoolControl>,
) -> Rig {
    let leader = crate::scaler::lease::Leader::alone();
    rig_as(pool, yaml, runtime, control, leader)
}

fn rig_as(
    pool: &str,
    yaml: &str,
    runtime: Arc<FakeRuntime>,
    control: impl FnOnce(Arc<Pools>) -> Arc<dyn PoolControl>,
    leader: crate::scaler::lease::Leader,
) -> Rig {
    let config = crate::config::from_str(
        Path::new("g.yaml"),
        &format!("pools:\n  {pool}: {{}}\nroutes: [{{prefix: /, pool: {pool}}}]\n"),
    )
    .unwrap();
    let pools = Arc::new(Pools::from_config(&config));
    let metrics = Arc::new(FakeMetrics::default());
    let parts = Parts {
        runtime: runtime.clone(),
        control: control(pools.clone()),
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
        journal: journal::Journal::new(),
        leader,
    };
    let journal = parts.journal.clone();
    let (policy, rx) = watch::channel(Arc::new(policy_for(pool, yaml)));
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(Autoscaler::new(parts, rx, stop).run());
    Rig {
        journal,
        runtime,
        metrics,
        pools,
        pool: pool.to_string(),
        policy,
        shutdown,
        task,
    }
}

fn rig(pool: &str, yaml: &str) -> Rig {
    rig_with(pool, yaml, Arc::new(FakeRuntime::new()))
}

impl Rig {
    fn running(&self) -> usize {
        self.runtime.running(&self.pool).len()
    }

    /// Backends of the pool that take traffic.
    fn in_pool(&self) -> usize {
        let p = self.pools.get(&self.pool).unwrap();
        p.eligible(std::time::Instant::now()).len()
    }

    fn log(&self) -> Vec<String> {
        self.runtime.log.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        self.task.await.unwrap();
    }
}

/// Waits (in paused time) until `f` holds, up to a minute.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn grows_under_load_and_shrinks_after_the_window() {
    let r = rig(
        "grow",
        "min: 1\nmax: 3\nscale_down: {stabilization: 5s, cooldown: 0s, max_step: 3}\n",
    );
    until("min replicas", || r.in_pool() == 1).await;
    r.metrics.set(&[Some(10.0)], true);
    until("three replicas", || r.in_pool() == 3 && r.running() == 3).await;
    let grown = tokio::time::Instant::now();
    r.metrics.set(&[Some(0.0)], false);
    until("back to min", || r.running() == 1).await;
    assert!(
        grown.elapsed() >= Duration::from_secs(5),
        "shrank before the window"
    );
    assert_eq!(r.in_pool(), 1);
    let stops = r.log().iter().filter(|l| l.starts_with("stop")).count();
    assert_eq!(stops, 2, "{:?}", r.log());
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dead_replica_leaves_the_pool_at_once_and_is_replaced() {
    let r = rig("death", "min: 2\nmax: 3\n");
    until("two replicas", || r.in_pool() == 2).await;
    let victim = r.runtime.running("death")[0].clone();
    r.runtime.kill(&victim.id);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let pool = r.pools.get("death").unwrap().clone();
    assert!(
        !pool.backends().iter().any(|b| b.addr == victim.addr),
        "dead replica still a member"
    );
    until("a replacement", || r.in_pool() == 2 && r.running() == 2).await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn adopts_running_replicas_without_duplicates() {
    let runtime = Arc::new(FakeRuntime::new());
    let a = runtime.plant("adopt");
    let b = runtime.plant("adopt");
    let r = rig_with("adopt", "min: 2\nmax: 3\n", runtime);
    until("both adopted", || r.in_pool() == 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(r.running(), 2);
    assert!(r.log().is_empty(), "started or stopped: {:?}", r.log());
    let pool = r.pools.get("adopt").unwrap().clone();
    let addrs: Vec<_> = pool.backends().iter().map(|b| b.addr).collect();
    assert!(addrs.contains(&a.addr) && addrs.contains(&b.addr));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unreachable_runtime_backs_off_then_recovers() {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.down.store(true, Ordering::Relaxed);
    let r = rig_with("down", "min: 2\nmax: 3\n", runtime);
    // A long outage: the back-off stays short, and it is no crash loop.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(r.running(), 0);
    let starts = |r: &Rig| {
        r.journal
            .snapshot()
            .get("down")
            .map(|p| p.starts.clone())
            .unwrap_or_default()
    };
    assert_eq!(starts(&r).failures_total, 0, "{:?}", starts(&r));
    r.runtime.down.store(false, Ordering::Relaxed);
    let back = tokio::time::Instant::now();
    until("recovered", || r.in_pool() == 2).await;
    // Seen within the 5 s runtime back-off (plus readiness), on the paused clock.
    assert!(
        back.elapsed() <= Duration::from_secs(6),
        "{:?}",
        back.elapsed()
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn policy_update_applies_without_restart() {
    let r = rig("reload", "min: 1\nmax: 5\n");
    until("min 1", || r.in_pool() == 1).await;
    r.policy
        .send_replace(Arc::new(policy_for("reload", "min: 3\nmax: 5\n")));
    until("min 3", || r.in_pool() == 3).await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replica_not_ready_in_time_is_removed_and_retried() {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.slow.store(true, Ordering::Relaxed);
    let r = rig_with("slow", "min: 1\nmax: 2\nready_timeout: 3s\n", runtime);
    until("a discarded replica", || {
        r.log().iter().any(|l| l.starts_with("stop"))
    })
    .await;
    assert_eq!(r.in_pool(), 0);
    r.runtime.slow.store(false, Ordering::Relaxed);
    until("a ready replica", || r.in_pool() == 1).await;
    until("only one left", || r.running() == 1).await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn scale_down_drains_the_least_busy_replica() {
    let r = rig(
        "busy",
        "min: 1\nmax: 2\nscale_down: {stabilization: 0s, cooldown: 0s}\n",
    );
    r.metrics.set(&[Some(6.0)], true);
    until("two replicas", || r.in_pool() == 2).await;
    let pool = r.pools.get("busy").unwrap().clone();
    let lease = pool.select(&[], std::time::Instant::now()).unwrap();
    let busy = lease.backend.addr;
    r.metrics.set(&[Some(0.5)], true);
    until("one replica", || r.running() == 1).await;
    assert_eq!(r.runtime.running("busy")[0].addr, busy);
    drop(lease);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn scales_to_zero_when_idle_and_back_for_a_held_request() {
    let r = rig(
        "zero",
        "min: 1\nmax: 2\nscale_to_zero: {after: 5s, hold_timeout: 30s}\n",
    );
    r.metrics.set(&[Some(0.0)], false);
    until("one replica", || r.in_pool() == 1).await;
    until("zero replicas", || r.running() == 0).await;
    let pool = r.pools.get("zero").unwrap().clone();
    let held = tokio::spawn(async move { pool.hold.wait(&pool).await });
    let start = tokio::time::Instant::now();
    let outcome = held.await.unwrap();
    assert_eq!(outcome, crate::proxy::hold::Held::Ready);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn held_requests_time_out_when_nothing_starts() {
    let runtime = Arc::new(FakeRuntime::new());
    let r = rig_with(
        "stuck",
        "min: 1\nmax: 2\nscale_to_zero: {after: 2s, hold_timeout: 3s, hold_queue: 1}\n",
        runtime,
    );
    r.metrics.set(&[Some(0.0)], false);
    until("zero replicas", || r.running() == 0 && r.log().len() >= 2).await;
    r.runtime.down.store(true, Ordering::Relaxed);
    let pool = r.pools.get("stuck").unwrap().clone();
    let p2 = pool.clone();
    let first = tokio::spawn(async move { p2.hold.wait(&p2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.hold.wait(&pool).await, crate::proxy::hold::Held::Full);
    assert_eq!(first.await.unwrap(), crate::proxy::hold::Held::TimedOut);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replicas_that_exit_at_once_back_off_then_recover() {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.crash.store(true, Ordering::Relaxed);
    let r = rig_with("crashloop", "min: 1\nmax: 2\n", runtime);
    tokio::time::sleep(Duration::from_secs(20)).await;
    // 1 s doubling: tries at about 0, 2, 5, 10 and 19 s; one a tick without backoff.
    let starts = r.log().iter().filter(|l| l.starts_with("start")).count();
    assert!((3..=6).contains(&starts), "{starts} starts: {:?}", r.log());
    let starts_seen = |j: &crate::admin::ScalerJournal| {
        j.get("crashloop")
            .map(|p| p.starts.clone())
            .unwrap_or_default()
    };
    let s = starts_seen(&r.journal.snapshot());
    assert!(s.failures_in_a_row as usize >= starts - 1, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("exited before it was ready")),
        "{s:?}"
    );
    assert!(s.retry_at_unix_ms.is_some(), "{s:?}");
    let failures = m::START_FAILURES.with_label_values(&["crashloop"]).get();
    assert_eq!(failures, u64::from(s.failures_in_a_row));
    // A failing pool answers at once instead of holding requests.
    let pool = r.pools.get("crashloop").unwrap().clone();
    assert_eq!(pool.hold.wait(&pool).await, crate::proxy::hold::Held::Off);

    r.runtime.crash.store(false, Ordering::Relaxed);
    until("a replica in the pool", || r.in_pool() == 1).await;
    tokio::time::sleep(START_WINDOW + Duration::from_secs(2)).await;
    let s = starts_seen(&r.journal.snapshot());
    assert_eq!(s.failures_in_a_row, 0, "{s:?}");
    let failures = m::START_FAILURES.with_label_values(&["crashloop"]).get();
    assert_eq!(s.failures_total, failures);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_warming_pool_holds_requests_until_its_first_replica_is_ready() {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.slow.store(true, Ordering::Relaxed);
    let r = rig_with("warm", "min: 1\nmax: 2\n", runtime);
    let pool = r.pools.get("warm").unwrap().clone();
    let p = pool.clone();
    let held = tokio::spawn(async move { p.hold.wait(&p).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!held.is_finished(), "the request was not held");
    r.runtime.slow.store(false, Ordering::Relaxed);
    assert_eq!(held.await.unwrap(), crate::proxy::hold::Held::Ready);
    // Warm: no more holding for a pool that does not scale to zero.
    assert_eq!(pool.hold.wait(&pool).await, crate::proxy::hold::Held::Off);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_replica_unhealthy_too_long_is_replaced_with_backoff() {
    let r = rig("hung", "min: 1\nmax: 2\nreplace_unhealthy_after: 10s\n");
    until("one replica", || r.in_pool() == 1).await;
    let hung = r.runtime.running("hung")[0].clone();
    let pool = r.pools.get("hung").unwrap().clone();
    let backends = pool.backends();
    let backend = backends.iter().find(|b| b.addr == hung.addr).unwrap();
    // Alive but failing its health checks: the proxy counts it down.
    assert!(backend.mark_down());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        r.runtime.running("hung").iter().any(|x| x.id == hung.id),
        "replaced too soon"
    );
    until("a replacement in the pool", || {
        r.in_pool() == 1 && !r.runtime.running("hung").iter().any(|x| x.id == hung.id)
    })
    .await;
    let s = r.journal.snapshot()["hung"].starts.clone();
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("unhealthy for")),
        "{s:?}"
    );
    assert_eq!(m::REPLACED.with_label_values(&["hung"]).get(), 1);
    r.stop().await;
}

/// The admin API as the standalone scaler meets it: an add is a request on the
/// wire that lands [`LateAdd::DELAY`] later, even if the caller stops waiting.
struct LateAdd(InProcess);

impl LateAdd {
    const DELAY: Duration = Duration::from_secs(2);
}

#[async_trait::async_trait]
impl PoolControl for LateAdd {
    async fn members(
        &self,
        pool: &str,
    ) -> Result<Vec<Member>, super::super::control::ControlError> {
        self.0.members(pool).await
    }

    async fn add(
        &self,
        pool: &str,
        addr: std::net::SocketAddr,
    ) -> Result<(), super::super::control::ControlError> {
        let (inner, pool) = (self.0.clone(), pool.to_string());
        let sent = tokio::spawn(async move {
            tokio::time::sleep(LateAdd::DELAY).await;
            inner.add(&pool, addr).await
        });
        sent.await.expect("the add lands")
    }

    async fn remove(
        &self,
        pool: &str,
        addr: std::net::SocketAddr,
    ) -> Result<(), super::super::control::ControlError> {
        self.0.remove(pool, addr).await
    }

    async fn counters(
        &self,
        pool: &str,
    ) -> Result<super::super::control::Counters, super::super::control::ControlError> {
        self.0.counters(pool).await
    }

    fn local_pool(&self, _pool: &str) -> Option<Arc<crate::proxy::Pool>> {
        None
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_dies_while_its_add_is_on_the_wire_is_not_re_added() {
    let r = rig_on(
        "late",
        "min: 1\nmax: 2\n",
        Arc::new(FakeRuntime::new()),
        |pools| Arc::new(LateAdd(InProcess::new(pools))),
    );
    until("a started replica", || r.running() == 1).await;
    // Ready at once; its add is on the way when it dies and is drained.
    let victim = r.runtime.running("late")[0].clone();
    r.runtime.kill(&victim.id);
    until("a replacement in the pool", || {
        r.in_pool() == 1 && r.running() == 1 && r.log().contains(&format!("stop {}", victim.id))
    })
    .await;
    tokio::time::sleep(LateAdd::DELAY * 3).await;
    let pool = r.pools.get("late").unwrap().clone();
    let addrs: Vec<_> = pool.backends().iter().map(|b| b.addr).collect();
    assert!(
        !addrs.contains(&victim.addr),
        "the stopped replica {} was added back: {addrs:?}",
        victim.addr
    );
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    r.stop().await;
}

impl Rig {
    fn spares(&self) -> usize {
        self.runtime.spares(&self.pool).len()
    }

    fn count(&self, prefix: &str) -> usize {
        self.log().iter().filter(|l| l.starts_with(prefix)).count()
    }
}

#[tokio::test(start_paused = true)]
async fn scaling_up_promotes_warm_spares_and_refills_them() {
    let r = rig(
        "spares",
        "min: 1\nmax: 3\nwarm: 1\nscale_down: {stabilization: 5s, cooldown: 0s, max_step: 3}\n",
    );
    until("one replica and one spare", || {
        r.in_pool() == 1 && r.spares() == 1
    })
    .await;
    let spare = r.runtime.spares("spares")[0].id.clone();
    assert_eq!(r.in_pool(), 1, "a spare is not in the pool");
    r.metrics.set(&[Some(10.0)], true);
    until("three replicas", || r.in_pool() == 3).await;
    assert!(
        r.log().contains(&format!("promote {spare}")),
        "{:?}",
        r.log()
    );
    // At the ceiling a spare could never be promoted: none is kept.
    until("no spare at max", || r.spares() == 0).await;
    assert_eq!(r.running(), 3);

    r.metrics.set(&[Some(0.0)], false);
    until("back to min with a spare", || {
        r.running() == 1 && r.spares() == 1
    })
    .await;
    assert_eq!(r.in_pool(), 1);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_held_request_at_zero_is_served_by_a_promoted_spare() {
    let r = rig(
        "zerowarm",
        "min: 1\nmax: 2\nwarm: 1\nscale_to_zero: {after: 5s, hold_timeout: 30s}\n",
    );
    r.metrics.set(&[Some(0.0)], false);
    until("one replica", || r.in_pool() == 1).await;
    until("zero replicas, one spare", || {
        r.running() == 0 && r.spares() == 1
    })
    .await;
    let starts = r.count("start fake");
    let spare = r.runtime.spares("zerowarm")[0].id.clone();
    let pool = r.pools.get("zerowarm").unwrap().clone();
    let outcome = pool.hold.wait(&pool).await;
    assert_eq!(outcome, crate::proxy::hold::Held::Ready);
    assert_eq!(r.runtime.running("zerowarm")[0].id, spare, "not the spare");
    assert_eq!(
        r.count("start fake"),
        starts,
        "a replica was started, not promoted"
    );
    until("a new spare", || r.spares() == 1).await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn spares_left_by_an_earlier_run_are_adopted_not_started_again() {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.plant("adoptwarm");
    let planted = runtime.plant_spare("adoptwarm");
    let r = rig_with("adoptwarm", "min: 1\nmax: 3\nwarm: 1\n", runtime);
    until("one replica", || r.in_pool() == 1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(r.log().is_empty(), "{:?}", r.log());
    assert_eq!(r.runtime.spares("adoptwarm")[0].id, planted.id);
    assert_eq!(
        m::REPLICAS.with_label_values(&["adoptwarm", "warm"]).get(),
        1
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn fewer_spares_in_a_new_policy_stops_the_extra_ones() {
    let r = rig("lesswarm", "min: 1\nmax: 4\nwarm: 2\n");
    until("two spares", || r.spares() == 2).await;
    r.policy
        .send_replace(Arc::new(policy_for("lesswarm", "min: 1\nmax: 4\n")));
    until("no spare", || r.spares() == 0).await;
    assert_eq!(r.count("stop"), 2, "{:?}", r.log());
    assert_eq!(r.in_pool(), 1, "the serving replica was touched");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn spares_that_die_young_back_off_like_failed_starts() {
    let runtime = Arc::new(FakeRuntime::new());
    let r = rig_with("crashwarm", "min: 1\nmax: 2\nwarm: 1\n", runtime);
    until("one replica and a spare", || {
        r.in_pool() == 1 && r.spares() == 1
    })
    .await;
    r.runtime.crash.store(true, Ordering::Relaxed);
    let spare = r.runtime.spares("crashwarm")[0].id.clone();
    r.runtime.kill(&spare);
    tokio::time::sleep(Duration::from_secs(20)).await;
    // 1 s doubling: a handful of tries, not one a tick.
    let tries = r.count("start warm");
    assert!((2..=6).contains(&tries), "{tries}: {:?}", r.log());
    let journal = r.journal.snapshot();
    let last = journal.get("crashwarm").unwrap().starts.last_error.clone();
    assert!(
        last.as_deref().is_some_and(|e| e.contains("warm spare")),
        "{last:?}"
    );
    assert_eq!(r.in_pool(), 1, "the serving replica was touched");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_standby_mirrors_the_leaders_replicas_and_never_acts() {
    let runtime = Arc::new(FakeRuntime::new());
    let a = runtime.plant("standby");
    runtime.plant("standby");
    runtime.plant_spare("standby");
    let r = standby_rig("standby", "min: 3\nmax: 4\nwarm: 1\n", runtime);
    until("the leader's two replicas in this pool", || {
        r.in_pool() == 2
    })
    .await;
    // Below min, a spare to promote: a leader would act; a standby does not.
    r.runtime.kill(&a.id);
    until("the dead one out of the pool", || r.in_pool() == 1).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(r.in_pool(), 1);
    assert!(r.log().is_empty(), "the standby acted: {:?}", r.log());
    let j = r.journal.snapshot();
    let pool = j.get("standby").unwrap();
    assert!(pool.decisions.is_empty(), "{:?}", pool.decisions);
    assert_eq!(
        pool.starts.failures_total, 0,
        "a death counted as a failure"
    );
    assert_eq!(pool.leader.as_ref().map(|l| l.leading), Some(false));
    r.stop().await;
}

/// A rig over a runtime that keeps the replica count itself (like Swarm).
fn counting_rig(pool: &str, yaml: &str) -> Rig {
    rig_with(pool, yaml, Arc::new(FakeRuntime::counting()))
}

#[tokio::test(start_paused = true)]
async fn a_counting_runtime_is_scaled_by_its_count_and_picks_its_own_replicas() {
    let r = counting_rig(
        "count",
        "min: 1\nmax: 3\nscale_down: {stabilization: 5s, cooldown: 0s, max_step: 3}\n",
    );
    until("min replicas", || r.in_pool() == 1).await;
    r.metrics.set(&[Some(10.0)], true);
    until("three replicas", || r.in_pool() == 3).await;
    assert_eq!(r.runtime.count("count"), Some(3));
    // Only the count is set: the runtime started the replicas itself.
    let scales: Vec<String> = r
        .log()
        .into_iter()
        .filter(|l| l.starts_with("scale"))
        .collect();
    assert_eq!(scales, ["scale 1", "scale 3"], "{:?}", r.log());

    // A dead replica is the runtime's to replace: the count stays.
    let victim = r.runtime.running("count")[0].clone();
    r.runtime.kill(&victim.id);
    until("the runtime's replacement in the pool", || {
        let pool = r.pools.get("count").unwrap();
        r.in_pool() == 3 && !pool.backends().iter().any(|b| b.addr == victim.addr)
    })
    .await;
    assert_eq!(r.runtime.count("count"), Some(3));

    // Load stops: the count goes down to min, and the replicas the runtime
    // stopped leave the pool.
    r.metrics.set(&[Some(0.0)], false);
    until("back to min", || r.in_pool() == 1 && r.running() == 1).await;
    assert_eq!(r.runtime.count("count"), Some(1));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_count_changed_by_hand_or_in_between_is_re_read_and_brought_back_to_the_policy() {
    let r = counting_rig("byhand", "min: 1\nmax: 2\n");
    until("min replicas", || r.in_pool() == 1).await;
    // `docker service scale` to 5, beyond max: brought back to max.
    r.runtime.set_count("byhand", 5);
    until("back to max", || {
        r.runtime.count("byhand") == Some(2) && r.running() == 2 && r.in_pool() == 2
    })
    .await;
    // A change between our read and our write is refused, re-read, decided again.
    r.runtime.conflict.store(true, Ordering::Relaxed);
    r.runtime.set_count("byhand", 4);
    until("back to max after the conflict", || {
        r.runtime.count("byhand") == Some(2) && r.running() == 2
    })
    .await;
    assert!(
        !r.runtime.conflict.load(Ordering::Relaxed),
        "scale was not retried"
    );
    r.stop().await;
}
