//! The proxy as the scaler sees it: pool members, adding and draining backends, request counters.
//!
//! [`PoolControl`] has two implementations: [`InProcess`] over the proxy's
//! own [`Pools`] (`gantry up`), and [`Admin`] over the admin HTTP API
//! (`gantry scaler` running apart from the proxy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::exposition::{self, Sample};
use crate::admin::client::{AdminClient, AdminError};
use crate::admin::{BackendState, ErrorCode};
use crate::metrics::names;
use crate::proxy::pool::RequestStats;
use crate::proxy::{Pool, PoolError, Pools};

/// A backend of a pool as the proxy reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Address.
    pub addr: SocketAddr,
    /// Where it is in its life.
    pub state: BackendState,
    /// Requests in flight.
    pub inflight: u64,
}

/// The proxy's cumulative request counters for one pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests answered.
    pub requests: f64,
    /// Sum of request durations, seconds.
    pub duration_sum: f64,
    /// Number of durations observed.
    pub duration_count: f64,
    /// Cumulative histogram buckets: (upper bound in seconds, count), ascending.
    pub buckets: Vec<(f64, f64)>,
}

impl Counters {
    /// The counters of `pool` in a metrics text exposition.
    pub fn from_samples(samples: &[Sample], pool: &str) -> Counters {
        let with = [("pool", pool)];
        let get = |name| exposition::sum(samples, name, &with).unwrap_or(0.0);
        let bucket = format!("{}_bucket", names::POOL_UPSTREAM_DURATION);
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter(|s| s.label("pool") == Some(pool))
            .filter_map(|s| Some((s.label("le")?.parse::<f64>().ok()?, s.value)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Counters {
            requests: get(names::POOL_UPSTREAM_REQUESTS),
            duration_sum: get(&format!("{}_sum", names::POOL_UPSTREAM_DURATION)),
            duration_count: get(&format!("{}_count", names::POOL_UPSTREAM_DURATION)),
            buckets,
        }
    }
}

impl From<RequestStats> for Counters {
    fn from(s: RequestStats) -> Counters {
        Counters {
            requests: s.requests as f64,
            duration_sum: s.duration_sum,
            duration_count: s.duration_count as f64,
            buckets: s
                .buckets
                .into_iter()
                .map(|(le, n)| (le, n as f64))
                .collect(),
        }
    }
}

/// Errors talking to the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The in-process pool refused.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The admin API could not be reached or refused.
    #[error("{0}")]
    Admin(AdminError),
}

impl From<AdminError> for ControlError {
    fn from(e: AdminError) -> ControlError {
        ControlError::Admin(e)
    }
}

/// What the scaler needs from the proxy.
#[async_trait]
pub trait PoolControl: Send + Sync + 'static {
    /// Members of `pool`, draining ones included.
    async fn members(&self, pool: &str) -> Result<Vec<Member>, ControlError>;

    /// Adds a replica whose `/ready` passed; adding one already there is fine.
    async fn add(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError>;

    /// Drains a backend; removing one not there is fine.
    async fn remove(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError>;

    /// The pool's request counters.
    async fn counters(&self, pool: &str) -> Result<Counters, ControlError>;

    /// The in-process pool, for holding requests while scaling from zero; `None` over HTTP.
    fn local_pool(&self, pool: &str) -> Option<Arc<Pool>>;
}

/// Whether `addr` has finished draining: gone from the pool, or idle.
pub fn drained(members: &[Member], addr: SocketAddr) -> bool {
    members
        .iter()
        .find(|m| m.addr == addr)
        .is_none_or(|m| m.inflight == 0)
}

/// The proxy's own pools, in the same process.
#[derive(Debug, Clone)]
pub struct InProcess {
    pools: Arc<Pools>,
}

impl InProcess {
    /// Control over `pools`.
    pub fn new(pools: Arc<Pools>) -> InProcess {
        InProcess { pools }
    }
}

#[async_trait]
impl PoolControl for InProcess {
    async fn members(&self, pool: &str) -> Result<Vec<Member>, ControlError> {
        let p = self.pools.get(pool)?;
        Ok(p.status(Instant::now())
            .into_iter()
            .map(|s| Member {
                addr: s.addr,
                state: s.state,
                inflight: s.inflight,
            })
            .collect())
    }

    async fn add(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError> {
        let p = self.pools.get(pool)?;
        match p.add(addr, 1) {
            Ok(()) | Err(PoolError::Duplicate(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // The scaler's passing `/ready` probe counts as the first health check,
        // so the replica takes traffic now rather than at the next probe.
        let h = &p.config.health;
        if let Some(b) = p.backends().iter().find(|b| b.addr == addr) {
            b.record_check(true, h.rise, h.fall);
            p.refresh_metrics(Instant::now());
        }
        Ok(())
    }

    async fn remove(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError> {
        match self.pools.get(pool)?.remove(addr) {
            Ok(()) | Err(PoolError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn counters(&self, pool: &str) -> Result<Counters, ControlError> {
        Ok(self.pools.get(pool)?.metrics.snapshot().into())
    }

    fn local_pool(&self, pool: &str) -> Option<Arc<Pool>> {
        self.pools.get(pool).ok().cloned()
    }
}

/// A proxy reached through its admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    client: AdminClient,
}

impl Admin {
    /// Control through the admin API at `base` (like `http://127.0.0.1:9090`).
    pub fn new(base: &str, token: Option<String>) -> Admin {
        Admin {
            client: AdminClient::new(base, token),
        }
    }
}

#[async_trait]
impl PoolControl for Admin {
    async fn members(&self, pool: &str) -> Result<Vec<Member>, ControlError> {
        let pools = self.client.pools().await?;
        let p = pools
            .into_iter()
            .find(|p| p.name == pool)
            .ok_or_else(|| PoolError::UnknownPool(pool.to_string()))?;
        Ok(p.backends
            .into_iter()
            .filter_map(|b| {
                Some(Member {
                    addr: b.addr.parse().ok()?,
                    state: b.state,
                    inflight: b.inflight,
                })
            })
            .collect())
    }

    async fn add(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError> {
        match self.client.add_backend(pool, addr, 1).await {
            Err(e) if e.code() != Some(ErrorCode::AlreadyInPool) => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn remove(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError> {
        match self.client.remove_backend(pool, addr).await {
            Err(e) if e.code() != Some(ErrorCode::NotInPool) => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn counters(&self, pool: &str) -> Result<Counters, ControlError> {
        let text = self.client.metrics().await?;
        Ok(Counters::from_samples(&exposition::parse(&text), pool))
    }

    fn local_pool(&self, _pool: &str) -> Option<Arc<Pool>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The in-process snapshot says what `/metrics` says, without the text.
    #[tokio::test]
    async fn in_process_counters_match_the_text_exposition() {
        let config = crate::config::from_str(
            Path::new("g.yaml"),
            "pools:\n  snapshot_pool: {}\nroutes: [{prefix: /, pool: snapshot_pool}]\n",
        )
        .unwrap();
        let pools = Arc::new(Pools::from_config(&config));
        let pool = pools.get("snapshot_pool").unwrap();
        for secs in [0.003, 0.2, 0.04, 45.0] {
            pool.metrics.upstream_requests.inc();
            pool.metrics.upstream_duration.observe(secs);
        }
        // Cache hits are the client's view only: the scaler does not count them.
        pool.metrics.count_request(200);
        pool.metrics.duration.observe(0.0001);
        let typed = InProcess::new(pools.clone())
            .counters("snapshot_pool")
            .await
            .unwrap();
        let text = exposition::parse(&crate::metrics::render());
        assert_eq!(typed, Counters::from_samples(&text, "snapshot_pool"));
        assert_eq!(typed.requests, 4.0);
        assert_eq!(typed.buckets.last(), Some(&(f64::INFINITY, 4.0)));
    }
}
