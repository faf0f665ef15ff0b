//! Auto-scaler, the control path: observe -> decide (pure) -> actuate (runtime).
//!
//! - [`policy`] — policy files: raw serde types, validation, schema;
//! - [`decide`] — the pure decision function and its memory;
//! - [`observe`] — metric sources and the averaging window;
//! - [`control`] — the proxy seen from the scaler (in-process or admin API);
//! - [`runtime`] — where replicas run: Docker, local processes, fake;
//! - [`autoscaler`] — the control loop of one pool;
//! - [`reload`] — watching the policy directory;
//! - [`journal`] — the last decisions, for the admin API and `gantry status`;
//! - [`config`] — the `scaler:` section of `gantry.yaml`;
//! - [`exposition`], [`http`] — reading `/metrics` text, a small HTTP client.
//!
//! **Architecture invariant:** the scaler is never on the request path; the
//! proxy only reads a hold flag the scaler sets, and waits for its pool.
//! **Architecture invariant:** [`decide::decide`] does no I/O.

pub mod autoscaler;
pub mod config;
pub mod control;
pub mod decide;
pub mod exposition;
pub mod http;
pub mod journal;
pub mod observe;
pub mod policy;
pub mod reload;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use self::autoscaler::{Autoscaler, Parts};
use self::policy::Policy;
use crate::metrics::scaler as m;

/// The wall clock, for schedule floors; monotonic time comes from tokio.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn unix_secs(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_secs(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct FixedClock(pub AtomicU64);

impl Clock for FixedClock {
    fn unix_secs(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every pool's control loop, fed by the policy directory.
pub struct Scaler {
    parts: Parts,
    dir: PathBuf,
}

impl Scaler {
    /// A scaler for the policies in `dir`.
    pub fn new(parts: Parts, dir: PathBuf) -> Scaler {
        Scaler { parts, dir }
    }

    /// Loads the policies, runs a loop per pool, reloads on changes, until `shutdown`.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut loops = JoinSet::new();
        let mut senders: BTreeMap<String, watch::Sender<Arc<Policy>>> = BTreeMap::new();
        self.reload(&mut senders, &mut loops, &shutdown).await;
        let mut watch = match reload::DirWatch::new(&self.dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "Policy hot reload is off");
                None
            }
        };
        let mut stop = shutdown.clone();
        loop {
            let changed = async {
                match watch.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = changed => match c {
                    Some(()) => self.reload(&mut senders, &mut loops, &shutdown).await,
                    None => watch = None,
                },
                _ = stop.wait_for(|v| *v) => break,
            }
        }
        while loops.join_next().await.is_some() {}
    }

    /// Reads the directory: new pools get a loop, changed policies are sent
    /// to theirs, invalid files are logged and their pool keeps its policy.
    async fn reload(
        &self,
        senders: &mut BTreeMap<String, watch::Sender<Arc<Policy>>>,
        loops: &mut JoinSet<()>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let (policies, errors) = policy::load_dir(&self.dir);
        for e in &errors {
            tracing::error!(error = %e, "Invalid policy; the previous one stays in force");
        }
        let outcome = if errors.is_empty() { "ok" } else { "error" };
        m::POLICY_RELOADS.with_label_values(&[outcome]).inc();
        for (pool, p) in policies {
            if let Some(tx) = senders.get(&pool) {
                if **tx.borrow() != p {
                    tracing::info!(pool = %pool, file = %p.file.display(), "Policy changed");
                    tx.send_replace(Arc::new(p));
                }
                continue;
            }
            if let Err(e) = self.parts.control.members(&pool).await {
                tracing::error!(pool = %pool, file = %p.file.display(), error = %e, "Policy names a pool the proxy does not have");
                continue;
            }
            let (tx, rx) = watch::channel(Arc::new(p));
            loops.spawn(Autoscaler::new(self.parts.clone(), rx, shutdown.clone()).run());
            senders.insert(pool, tx);
        }
    }
}
