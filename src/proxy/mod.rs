//! The data path: a Pingora HTTP proxy in front of pools of inference backends.
//!
//! - `service` — the request phases (route, select, retry, record);
//! - `pool` — backends and their state (health, ejection, draining, in-flight);
//! - `balance` — the selection policies;
//! - `health` — active checks;
//! - `caching` — the response cache on the request path (key, hit, capture, stale);
//! - `hold` — requests held while the scaler starts a first backend;
//! - `respond` — answering a request ourselves (rejections, errors, cache hits);
//! - `tasks` — background tasks with a shutdown signal, awaited on shutdown;
//! - `admin` — the admin listener (metrics, health, backend API, cache purge);
//! - `status` — the status page and `/status.json` on the admin listener;
//! - `listener` — the traffic listener's connection cap and head deadline around Pingora.

pub mod admin;
pub mod balance;
pub mod caching;
pub mod health;
pub mod hold;
pub mod listener;
pub mod pool;
pub mod respond;
pub mod service;
pub mod status;
pub mod tasks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use self::tasks::{until_shutdown, Supervisor};
use crate::config::{AdminToken, Config};
use crate::metrics::system::SystemCollector;
pub use pool::{Pool, PoolError, Pools};

pub use tasks::{Shutdown, Task};

/// Longest the background tasks get to stop after the requests drained
/// (the scaler stops local workers: SIGTERM, then SIGKILL after 5 s).
const STOP_TASKS: Duration = Duration::from_secs(10);

/// Longest a SIGTERM waits for requests in flight to finish.
const MAX_SHUTDOWN_DRAIN: Duration = Duration::from_secs(60);
/// Time for requests accepted just before SIGTERM to be counted.
const SHUTDOWN_SETTLE: Duration = Duration::from_millis(100);
/// How often the shutdown drain looks at the requests in flight.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The admin address could not be bound.
    #[error("cannot listen on admin address {addr}: {cause}")]
    AdminBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
    /// Pingora refused to build the server.
    #[error("cannot start the proxy server: {0}")]
    Server(String),
    /// The response cache could not be opened.
    #[error("cannot open the response cache: {0}")]
    Cache(crate::cache::CacheError),
    /// The admin token could not be had.
    #[error("admin token: {0}")]
    AdminToken(String),
}

impl From<crate::cache::CacheError> for ProxyError {
    fn from(e: crate::cache::CacheError) -> ProxyError {
        ProxyError::Cache(e)
    }
}

/// Runs admin API, health checks, system metrics and extra tasks on Pingora's
/// background runtime, and the end of a graceful shutdown.
struct Control {
    admin: Mutex<Option<std::net::TcpListener>>,
    /// The admin listener's connection limits (timeouts from `limits:`).
    admin_limits: crate::conn::ConnLimits,
    state: admin::AdminState,
    extra: Mutex<Vec<(&'static str, Task)>>,
    /// Longest the shutdown waits for requests in flight.
    drain: Duration,
}

/// Resolves when no client request is in flight, or after `limit`.
async fn requests_done(limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while crate::metrics::ACTIVE_CONNECTIONS.get() > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    true
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = Supervisor::new();
        for pool in self.state.pools.iter() {
            let pool = pool.clone();
            tasks.spawn(
                "health checks",
                Box::new(|sd| Box::pin(until_shutdown(sd, health::run(pool)))),
            );
        }
        tasks.spawn(
            "host metrics",
            Box::new(|sd| {
                let every = Duration::from_secs(5);
                Box::pin(until_shutdown(sd, SystemCollector::new().run(every)))
            }),
        );
        let state = self.state.clone();
        tasks.spawn(
            "status samples",
            Box::new(|sd| Box::pin(until_shutdown(sd, status::run(state)))),
        );
        let extra = std::mem::take(&mut *self.extra.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, t) in extra {
            tasks.spawn(name, t);
        }
        let listener = self.admin.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(l) = listener.and_then(|l| tokio::net::TcpListener::from_std(l).ok()) {
            let app = admin::router(self.state.clone());
            let limits = self.admin_limits;
            tasks.spawn(
                "admin listener",
                Box::new(move |mut sd| {
                    Box::pin(async move {
                        let stop = async move { tasks::stopping(&mut sd).await };
                        let served = crate::conn::serve(l, app, limits, "admin", stop).await;
                        if let Err(e) = served {
                            tracing::error!(error = %e, "Admin listener failed");
                        }
                    })
                }),
            );
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            name = tasks.panicked() => {
                tracing::error!(task = name, "Background task panicked; stopping the proxy");
                std::process::exit(tasks::EXIT_PANIC);
            }
        }
        // SIGTERM: Pingora has stopped accepting. Let the requests in flight
        // finish (bounded), stop the tasks (the scaler stops its workers),
        // and exit rather than sit out the rest of Pingora's fixed grace period.
        // The listeners close on the same signal; a request they took just
        // before it is counted once its head is read.
        tokio::time::sleep(SHUTDOWN_SETTLE).await;
        let drained = requests_done(self.drain).await;
        let left = crate::metrics::ACTIVE_CONNECTIONS.get();
        tracing::info!(drained, requests_left = left, "Shutting down");
        let stopped = tasks.stop(STOP_TASKS).await;
        tracing::info!(tasks_stopped = stopped, "Stopped");
        std::process::exit(0);
    }
}

/// Everything needed to run a proxy, built before the server starts so bind
/// errors surface early.
pub struct Proxy {
    config: Config,
    pools: Arc<Pools>,
    admin: std::net::TcpListener,
    extra: Vec<(&'static str, Task)>,
    scaler: Option<Arc<dyn crate::admin::ScalerView>>,
    /// The bearer token of mutating admin calls.
    token: Arc<str>,
    /// The response cache, when enabled and some route uses it.
    cache: Option<crate::cache::Cache>,
}

/// The admin token: configured, from the environment, or generated and
/// written where local clients of this user find it.
fn admin_token(source: &AdminToken, port: u16) -> Result<Arc<str>, ProxyError> {
    use crate::admin::token;
    match source {
        AdminToken::Given(t) => Ok(Arc::from(t.as_str())),
        AdminToken::Env(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Ok(Arc::from(t.trim())),
            _ => Err(ProxyError::AdminToken(format!(
                "`admin.token_env` names {var}, which is not set"
            ))),
        },
        AdminToken::Generate => {
            let t = token::generate();
            let path = token::default_path(port);
            token::write(&path, &t).map_err(|e| {
                ProxyError::AdminToken(format!("cannot write {}: {e}", path.display()))
            })?;
            tracing::info!(file = %path.display(), "Admin token generated (mutating admin calls need it)");
            Ok(Arc::from(t))
        }
    }
}

impl Proxy {
    /// Builds pools and binds the admin listener.
    pub fn new(config: Config) -> Result<Proxy, ProxyError> {
        let admin = std::net::TcpListener::bind(config.admin_listen).map_err(|source| {
            ProxyError::AdminBind {
                addr: config.admin_listen,
                cause: source,
            }
        })?;
        admin
            .set_nonblocking(true)
            .map_err(|source| ProxyError::AdminBind {
                addr: config.admin_listen,
                cause: source,
            })?;
        let port = admin
            .local_addr()
            .map_or(config.admin_listen.port(), |a| a.port());
        let token = admin_token(&config.admin_token, port)?;
        let pools = Arc::new(Pools::from_config(&config));
        let mut extra: Vec<(&'static str, Task)> = Vec::new();
        let cached = config.routes.iter().any(|r| r.cache.is_some());
        let cache = if config.cache.enabled && cached {
            let clock = Arc::new(crate::cache::SystemClock);
            let (cache, worker) = crate::cache::Cache::open(&config.cache, clock)?;
            // Connects Redis, warms memory from disk, writes disk, keeps gauges.
            let task: Task = Box::new(|sd| Box::pin(tasks::until_shutdown(sd, worker.run())));
            extra.push(("cache worker", task));
            Some(cache)
        } else {
            None
        };
        Ok(Proxy {
            config,
            pools,
            admin,
            extra,
            scaler: None,
            token,
            cache,
        })
    }

    /// The pools, for a scaler running in the same process.
    pub fn pools(&self) -> Arc<Pools> {
        self.pools.clone()
    }

    /// Runs `task` beside the proxy as `name`; it gets the proxy's shutdown signal.
    pub fn spawn(&mut self, name: &'static str, task: Task) {
        self.extra.push((name, task));
    }

    /// Serves `view`'s journal on `GET /admin/scaler` (a scaler in this process).
    pub fn set_scaler_view(&mut self, view: Arc<dyn crate::admin::ScalerView>) {
        self.scaler = Some(view);
    }

    /// Serves until SIGINT (stop now) or SIGTERM (stop accepting, let the
    /// requests in flight finish for up to the longest pool `drain_timeout`,
    /// at most a minute, stop the background tasks, then exit).
    pub fn run(self) -> Result<(), ProxyError> {
        let drain = self
            .config
            .pools
            .iter()
            .map(|p| p.drain_timeout)
            .max()
            .unwrap_or_default()
            .min(MAX_SHUTDOWN_DRAIN);
        let conf = ServerConf {
            // Past the drain: the control service exits the process first.
            grace_period_seconds: Some(drain.as_secs() + 1),
            graceful_shutdown_timeout_seconds: Some(5),
            max_retries: self
                .config
                .pools
                .iter()
                .map(|p| p.attempts as usize)
                .max()
                .unwrap_or(1),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let mut handler = service::Gantry::new(&self.config, self.pools.clone());
        if let Some(cache) = &self.cache {
            let front = caching::CacheFront::new(cache.clone(), self.config.listen);
            handler = handler.with_cache(Arc::new(front));
        }
        let mut proxy = pingora::proxy::HttpProxy::new(handler, server.configuration.clone());
        proxy.handle_init_modules();
        // HTTP/2 (over TLS by ALPN, or h2c when enabled): idle connections end
        // like HTTP/1.1 keep-alive ones. Streams (100 at once) and decoded
        // header lists (64 KiB) keep Pingora's bounds.
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = self.config.h2c;
        options.h2_idle_timeout = Some(self.config.limits.conn().idle_timeout);
        proxy.server_options = Some(options);
        let app = listener::Limited::new(proxy, self.config.limits.conn());
        let mut svc = pingora::services::listening::Service::new("gantry proxy".into(), app);
        svc.add_tcp(&self.config.listen.to_string());
        let mut extra = self.extra;
        if let Some(tls) = &self.config.tls {
            let resolver = Arc::new(crate::tls::Resolver::new(tls.certs.clone()));
            // Paths unused: the resolver picks the certificate of each handshake.
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
                .map_err(|e| ProxyError::Server(format!("TLS: {e}")))?;
            settings.set_cert_resolver(resolver.clone());
            if tls.http2 {
                settings.enable_h2();
            }
            svc.add_tls_with_settings(&tls.listen.to_string(), None, settings);
            let files = tls.certificates.clone();
            let task: Task = Box::new(move |sd| Box::pin(crate::tls::watch(resolver, files, sd)));
            extra.push(("tls certificates", task));
            tracing::info!(listen = %tls.listen, http2 = tls.http2, "HTTPS listener");
        }
        let upstream: Vec<(String, crate::tls::upstream::UpstreamTls)> = self
            .config
            .pools
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.tls.clone()?)))
            .filter(|(_, t)| !t.files().is_empty())
            .collect();
        if !upstream.is_empty() {
            let task: Task =
                Box::new(move |sd| Box::pin(crate::tls::upstream::watch(upstream, sd)));
            extra.push(("upstream tls", task));
        }
        svc.threads = Some(self.config.threads);
        let control = Control {
            admin: Mutex::new(Some(self.admin)),
            admin_limits: crate::conn::ConnLimits {
                max_connections: self.config.admin_max_connections,
                ..self.config.limits.conn()
            },
            state: admin::AdminState {
                pools: self.pools.clone(),
                token: self.token.clone(),
                cache: self.cache.clone(),
                scaler: self.scaler.clone(),
                live: status::Live::default(),
            },
            extra: Mutex::new(extra),
            drain,
        };
        server.add_service(svc);
        server.add_service(background_service("gantry control", control));
        tracing::info!(listen = %self.config.listen, admin = %self.config.admin_listen, "Proxy starting");
        server.run(RunArgs::default());
        Ok(())
    }
}
