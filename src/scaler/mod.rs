//! Auto-scaler, the control path: observe -> decide (pure) -> actuate (runtime).
//!
//! - [`policy`] — policy files: raw serde types, validation, schema;
//! - [`decide`] — the pure decision function and its memory;
//! - [`observe`] — metric sources and the averaging window;
//! - [`control`] — the proxy seen from the scaler (in-process or admin API);
//! - [`runtime`] — where replicas run: Docker, local processes, fake;
//! - [`autoscaler`] — the control loop of one pool;
//! - [`journal`] — the last decisions and start failures, for the admin API and `gantry status`;
//! - [`status`] — what `gantry status` prints;
//! - [`config`] — the `scaler:` section of `gantry.yaml`;
//! - [`exposition`] — reading `/metrics` text of remote sources (in `metrics`, shared with the status page);
//!
//! **Architecture invariant:** the scaler is never on the request path; the
//! proxy only reads a hold flag the scaler sets, and waits for its pool.
//! **Architecture invariant:** [`decide::decide`] does no I/O.

pub mod autoscaler;
pub mod config;
pub mod control;
pub mod decide;
pub use crate::metrics::exposition;
pub mod journal;
pub mod lease;
pub mod observe;
pub mod policy;
pub mod runtime;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use self::autoscaler::{Autoscaler, Parts};
use self::policy::Policy;
use crate::metrics::scaler as m;

/// Most connections to `gantry scaler --listen` (metrics and the journal for
/// Prometheus and operators; the admin listener's default).
const STATUS_MAX_CONNECTIONS: usize = 256;

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
        let mut watch = match crate::watch::DirWatch::with_filter(
            std::slice::from_ref(&self.dir),
            policy::is_yaml,
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "Policy hot reload is off");
                None
            }
        };
        let mut stop = shutdown.clone();
        loop {
            let changed = crate::watch::changed(watch.as_mut());
            tokio::select! {
                c = changed => match c {
                    Some(()) => self.reload(&mut senders, &mut loops, &shutdown).await,
                    None => watch = None,
                },
                _ = crate::proxy::tasks::stopping(&mut stop) => break,
            }
        }
        while loops.join_next().await.is_some() {}
        // Every loop has stopped: nothing starts a replica any more.
        self.parts.runtime.shutdown().await;
        // A standby may take over at once instead of after the lease's ttl.
        self.parts.leader.released().await;
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
        m::POLICY_ERRORS.set(errors.len() as i64);
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let journal = &self.parts.journal;
        journal.set_policy_errors(self.parts.clock.unix_secs() * 1000, &texts);
        for (pool, p) in policies {
            if let Some(tx) = senders.get(&pool) {
                if **tx.borrow() != p {
                    tracing::info!(pool = %pool, file = %p.file.display(), "Policy changed");
                    journal.set_policy(&pool, journal::policy_view(&p));
                    tx.send_replace(Arc::new(p));
                }
                continue;
            }
            match self.parts.control.members(&pool).await {
                Ok(_) => {}
                Err(e @ control::ControlError::Pool(crate::proxy::PoolError::UnknownPool(_))) => {
                    tracing::error!(pool = %pool, file = %p.file.display(), error = %e, "Policy names a pool the proxy does not have");
                    continue;
                }
                // The proxy is not reachable yet: the loop retries with backoff.
                Err(e) => {
                    tracing::warn!(pool = %pool, error = %e, "Proxy not reachable yet; the pool's loop will retry")
                }
            }
            journal.set_policy(&pool, journal::policy_view(&p));
            let (tx, rx) = watch::channel(Arc::new(p));
            loops.spawn(Autoscaler::new(self.parts.clone(), rx, shutdown.clone()).run());
            senders.insert(pool, tx);
        }
    }
}

/// Errors starting or running the scaler.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    /// The config has no `scaler:` section.
    #[error("the config has no `scaler:` section")]
    NotConfigured,
    /// The runtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The proxy could not be reached.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The lease's Redis settings are unusable.
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// Binding a listener or starting the async runtime failed.
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ScalerError {
    fn from(e: std::io::Error) -> ScalerError {
        ScalerError::Io(e)
    }
}

/// The runtime, observer and clock for `config`, over `control`. Call
/// within a tokio runtime (the Docker runtime starts its event watch).
pub fn parts(
    config: &config::ScalerConfig,
    control: Arc<dyn control::PoolControl>,
    journal: journal::Journal,
    shutdown: &watch::Receiver<bool>,
) -> Result<Parts, ScalerError> {
    let leader = match &config.lease {
        Some(l) => lease::Lease::connect(l, config.deployment())?.spawn(shutdown.clone()),
        None => lease::Leader::alone(),
    };
    let runtime: Arc<dyn runtime::Runtime> = match config.runtime {
        config::RuntimeKind::Local => Arc::new(runtime::local::LocalRuntime::new(&config.local)?),
        config::RuntimeKind::Docker => {
            let d = Arc::new(runtime::docker::DockerRuntime::new(
                config.docker.clone(),
                config.deployment(),
            ));
            d.watch_events();
            tracing::info!(deployment = %config.deployment(), "Docker runtime: managing this deployment's containers");
            d
        }
        config::RuntimeKind::Swarm => {
            tracing::info!(deployment = %config.deployment(), "Swarm runtime: a service per pool");
            Arc::new(runtime::swarm::SwarmRuntime::new(
                config.docker.clone(),
                config.swarm.clone(),
                config.deployment(),
            ))
        }
    };
    let metrics = Arc::new(observe::Observer::new(control.clone(), runtime.clone()));
    Ok(Parts {
        runtime,
        control,
        metrics,
        clock: Arc::new(SystemClock),
        journal,
        leader,
    })
}

/// `gantry up`: the scaler as a task beside the proxy, over its own pools,
/// stopped with the proxy: local workers stop with it ([`Runtime::shutdown`]),
/// containers stay for the next run to adopt.
///
/// [`Runtime::shutdown`]: runtime::Runtime::shutdown
pub fn spawn_in_proxy(proxy: &mut crate::proxy::Proxy, config: config::ScalerConfig) {
    // Before the listener opens: the first requests wait for the first replicas.
    let pools = proxy.pools();
    for (name, policy) in policy::load_dir(&config.policies).0 {
        if let Ok(pool) = pools.get(&name) {
            pool.hold.set(Some(autoscaler::startup_hold(&policy)));
        }
    }
    let control: Arc<dyn control::PoolControl> = Arc::new(control::InProcess::new(pools));
    let journal = journal::Journal::new();
    proxy.set_scaler_view(Arc::new(journal.clone()));
    proxy.spawn(
        "scaler",
        Box::new(move |shutdown| {
            Box::pin(async move {
                let parts = match parts(&config, control, journal, &shutdown) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "Scaler cannot start; the proxy runs without it");
                        return;
                    }
                };
                Scaler::new(parts, config.policies).run(shutdown).await;
            })
        }),
    );
}

/// `gantry scaler`: the scaler alone against a proxy's admin API, until
/// SIGINT/SIGTERM. With `listen`, serves `/metrics` and `/admin/scaler` there.
pub fn run_standalone(
    config: config::ScalerConfig,
    admin: &str,
    token: Option<String>,
    listen: Option<std::net::SocketAddr>,
) -> Result<(), ScalerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let control: Arc<dyn control::PoolControl> = Arc::new(control::Admin::new(admin, token));
    let result = rt.block_on(async move {
        let journal = journal::Journal::new();
        let (tx, shutdown) = watch::channel(false);
        let parts = parts(&config, control, journal.clone(), &shutdown)?;
        if let Some(addr) = listen {
            let l = tokio::net::TcpListener::bind(addr).await?;
            let app = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(|| async { crate::metrics::render() }),
                )
                .route(
                    "/admin/scaler",
                    axum::routing::get(move || async move { axum::Json(journal.snapshot()) }),
                );
            let limits = crate::conn::ConnLimits {
                max_connections: STATUS_MAX_CONNECTIONS,
                ..crate::conn::ConnLimits::default()
            };
            let forever = std::future::pending::<()>();
            tokio::spawn(crate::conn::serve(l, app, limits, "admin", forever));
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            tx.send_replace(true);
        });
        Scaler::new(parts, config.policies).run(shutdown).await;
        Ok(())
    });
    result
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
