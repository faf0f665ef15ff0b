//! An in-memory runtime for control-loop tests: replicas are entries in a map.
//!
//! Tests can make starts fail (engine down), make replicas slow to get
//! ready, kill replicas (a death event), and add replicas behind the
//! scaler's back (to test adoption).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Death, Replica, ReplicaSpec, Runtime, RuntimeError, Usage};

/// The fake runtime.
#[derive(Debug)]
pub struct FakeRuntime {
    replicas: Mutex<BTreeMap<String, Replica>>,
    next_port: AtomicU16,
    /// When set, `start` and `list` fail like an unreachable engine.
    pub down: AtomicBool,
    /// When set, new replicas do not report ready.
    pub slow: AtomicBool,
    /// When set, new replicas exit at once: started, but gone from the next list.
    pub crash: AtomicBool,
    /// Every start and stop, in order (`start <id>`, `stop <id>`).
    pub log: Mutex<Vec<String>>,
    deaths: broadcast::Sender<Death>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime {
            replicas: Mutex::new(BTreeMap::new()),
            next_port: AtomicU16::new(20000),
            down: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            crash: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            deaths: broadcast::channel(64).0,
        }
    }
}

impl FakeRuntime {
    /// A runtime with no replicas.
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
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

    /// Replicas of `pool` now.
    pub fn running(&self, pool: &str) -> Vec<Replica> {
        self.map()
            .values()
            .filter(|r| r.pool == pool)
            .cloned()
            .collect()
    }

    /// Adds a replica without telling the scaler (as if left by an earlier run).
    pub fn plant(&self, pool: &str) -> Replica {
        let r = self.make(pool);
        self.map().insert(r.id.clone(), r.clone());
        r
    }

    /// Kills a replica: it disappears and a death event is sent.
    pub fn kill(&self, id: &str) -> Option<Replica> {
        self.kill_with(id, "killed (fake)")
    }

    /// Kills a replica that leaves `reason` behind (its exit status, its last words).
    pub fn kill_with(&self, id: &str, reason: &str) -> Option<Replica> {
        let r = self.map().remove(id)?;
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

    async fn list(&self, pool: &str) -> Result<Vec<Replica>, RuntimeError> {
        self.check_up()?;
        Ok(self.running(pool))
    }

    async fn start(&self, spec: &ReplicaSpec) -> Result<Replica, RuntimeError> {
        self.check_up()?;
        let r = self.make(&spec.pool);
        if !self.crash.load(Ordering::Relaxed) {
            self.map().insert(r.id.clone(), r.clone());
        }
        self.note(format!("start {}", r.id));
        Ok(r)
    }

    async fn stop(&self, replica: &Replica) -> Result<(), RuntimeError> {
        self.check_up()?;
        self.map().remove(&replica.id);
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
