//! An in-memory runtime for control-loop tests: replicas are entries in a map.
//!
//! Tests can make starts fail (engine down), make replicas slow to get
//! ready, kill replicas (a death event), and add replicas behind the
//! scaler's back (to test adoption). Warm spares are replicas whose id is in
//! a set; promoting one takes it out. [`FakeRuntime::counting`] makes one
//! that keeps a replica count like Swarm: it converges to the count on each
//! listing, stopping its newest replicas and replacing dead ones itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Death, Listing, Replica, ReplicaSpec, Runtime, RuntimeError, Usage};

/// The fake runtime.
#[derive(Debug)]
pub struct FakeRuntime {
    replicas: Mutex<BTreeMap<String, Replica>>,
    /// Ids of the replicas that are warm spares.
    warm: Mutex<BTreeSet<String>>,
    next_port: AtomicU16,
    /// When set, `start` and `list` fail like an unreachable engine.
    pub down: AtomicBool,
    /// When set, new replicas do not report ready.
    pub slow: AtomicBool,
    /// When set, new replicas exit at once: started, but gone from the next list.
    pub crash: AtomicBool,
    /// Every start, promotion and stop, in order (`start <id>`,
    /// `start warm <id>`, `promote <id>`, `stop <id>`; counting: `scale <n>`).
    pub log: Mutex<Vec<String>>,
    /// The replica count of each pool, when this runtime keeps one.
    counts: Option<Mutex<BTreeMap<String, u32>>>,
    /// When set, the next `scale` is refused as a conflict (someone else
    /// changed the count since it was read).
    pub conflict: AtomicBool,
    deaths: broadcast::Sender<Death>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime {
            replicas: Mutex::new(BTreeMap::new()),
            warm: Mutex::new(BTreeSet::new()),
            next_port: AtomicU16::new(20000),
            down: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            crash: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            counts: None,
            conflict: AtomicBool::new(false),
            deaths: broadcast::channel(64).0,
        }
    }
}

impl FakeRuntime {
    /// A runtime with no replicas.
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    /// A runtime that keeps a replica count per pool (starting at 0), like Swarm.
    pub fn counting() -> FakeRuntime {
        FakeRuntime {
            counts: Some(Mutex::new(BTreeMap::new())),
            ..FakeRuntime::default()
        }
    }

    /// Sets `pool`'s count behind the scaler's back (`docker service scale`).
    pub fn set_count(&self, pool: &str, n: u32) {
        if let Some(counts) = &self.counts {
            counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pool.to_string(), n);
        }
    }

    /// `pool`'s count, when this runtime keeps one.
    pub fn count(&self, pool: &str) -> Option<u32> {
        let counts = self.counts.as_ref()?;
        let counts = counts.lock().unwrap_or_else(|e| e.into_inner());
        Some(counts.get(pool).copied().unwrap_or(0))
    }

    /// A counting runtime's own work: starts or stops (its newest) replicas
    /// of `pool` to meet its count.
    fn converge(&self, pool: &str) {
        let Some(want) = self.count(pool) else {
            return;
        };
        loop {
            let have: Vec<String> = self
                .map()
                .values()
                .filter(|r| r.pool == pool)
                .map(|r| r.id.clone())
                .collect();
            match have.len().cmp(&(want as usize)) {
                std::cmp::Ordering::Less => {
                    let r = self.make(pool);
                    self.map().insert(r.id.clone(), r.clone());
                    self.note(format!("start {}", r.id));
                }
                std::cmp::Ordering::Greater => {
                    // Ids are `fake-<port>`, ports counted up from 20000: the greatest is the newest.
                    let newest = have.iter().max().cloned().unwrap_or_default();
                    self.map().remove(&newest);
                    self.note(format!("stop {newest}"));
                }
                std::cmp::Ordering::Equal => return,
            }
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Replica>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, what: String) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    fn spare_ids(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.warm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serving replicas of `pool` now.
    pub fn running(&self, pool: &str) -> Vec<Replica> {
        self.listing(pool).serving
    }

    /// Warm spares of `pool` now.
    pub fn spares(&self, pool: &str) -> Vec<Replica> {
        self.listing(pool).warm
    }

    fn listing(&self, pool: &str) -> Listing {
        let warm = self.spare_ids().clone();
        let (warm, serving) = self
            .map()
            .values()
            .filter(|r| r.pool == pool)
            .cloned()
            .partition(|r| warm.contains(&r.id));
        Listing {
            serving,
            warm,
            desired: None,
        }
    }

    /// Adds a replica without telling the scaler (as if left by an earlier run).
    pub fn plant(&self, pool: &str) -> Replica {
        let r = self.make(pool);
        self.map().insert(r.id.clone(), r.clone());
        r
    }

    /// Adds a warm spare without telling the scaler (as if left by an earlier run).
    pub fn plant_spare(&self, pool: &str) -> Replica {
        let r = self.plant(pool);
        self.spare_ids().insert(r.id.clone());
        r
    }

    /// Kills a replica: it disappears and a death event is sent.
    pub fn kill(&self, id: &str) -> Option<Replica> {
        self.kill_with(id, "killed (fake)")
    }

    /// Kills a replica that leaves `reason` behind (its exit status, its last words).
    pub fn kill_with(&self, id: &str, reason: &str) -> Option<Replica> {
        let r = self.map().remove(id)?;
        self.spare_ids().remove(id);
        let _ = self.deaths.send(Death {
            replica: r.clone(),
            reason: reason.into(),
        });
        Some(r)
    }

    fn make(&self, pool: &str) -> Replica {
        let port = self.next_port.fetch_add(1, Ordering::Relaxed);
        Replica {
            id: format!("fake-{port}"),
            pool: pool.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn check_up(&self) -> Result<(), RuntimeError> {
        if self.down.load(Ordering::Relaxed) {
            Err(RuntimeError::Unreachable("fake engine down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn list(&self, pool: &str) -> Result<Listing, RuntimeError> {
        self.check_up()?;
        self.converge(pool);
        Ok(Listing {
            desired: self.count(pool),
            ..self.listing(pool)
        })
    }

    async fn scale(&self, spec: &ReplicaSpec, to: u32) -> Result<(), RuntimeError> {
        self.check_up()?;
        if self.counts.is_none() {
            return Err(RuntimeError::Other("fake: not a counting runtime".into()));
        }
        if self.conflict.swap(false, Ordering::Relaxed) {
            return Err(RuntimeError::Conflict("fake: count changed".into()));
        }
        self.set_count(&spec.pool, to);
        self.note(format!("scale {to}"));
        Ok(())
    }

    async fn start(&self, spec: &ReplicaSpec) -> Result<Replica, RuntimeError> {
        self.check_up()?;
        let r = self.make(&spec.pool);
        if spec.warm {
            self.spare_ids().insert(r.id.clone());
        }
        if !self.crash.load(Ordering::Relaxed) {
            self.map().insert(r.id.clone(), r.clone());
        }
        let role = if spec.warm { "start warm" } else { "start" };
        self.note(format!("{role} {}", r.id));
        Ok(r)
    }

    async fn promote(&self, warm: &Replica) -> Result<(), RuntimeError> {
        self.check_up()?;
        if !self.spare_ids().remove(&warm.id) || !self.map().contains_key(&warm.id) {
            return Err(RuntimeError::Other(format!("no warm spare {}", warm.id)));
        }
        self.note(format!("promote {}", warm.id));
        Ok(())
    }

    async fn stop(&self, replica: &Replica) -> Result<(), RuntimeError> {
        self.check_up()?;
        self.map().remove(&replica.id);
        self.spare_ids().remove(&replica.id);
        self.note(format!("stop {}", replica.id));
        Ok(())
    }

    async fn ready(&self, replica: &Replica) -> bool {
        !self.slow.load(Ordering::Relaxed) && self.map().contains_key(&replica.id)
    }

    async fn usage(&self, replicas: &[Replica]) -> Vec<Usage> {
        vec![Usage::default(); replicas.len()]
    }

    fn deaths(&self) -> broadcast::Receiver<Death> {
        self.deaths.subscribe()
    }
}
