//! The proxy as the scaler sees it: pool members, adding and draining backends, request counters.
//!
//! [`PoolControl`] has two implementations: [`InProcess`] over the proxy's
//! own [`Pools`] (`gantry up`), and [`Admin`] over the admin HTTP API
//! (`gantry scaler` running apart from the proxy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::exposition::{self, Sample};
use super::http::{encode, HttpClient, HttpError};
use crate::proxy::admin::PoolView;
use crate::proxy::{Pool, PoolError, Pools};

/// A backend of a pool as the proxy reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Address.
    pub addr: SocketAddr,
    /// `up`, `down`, `ejected` or `draining`.
    pub state: String,
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
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == "gantry_request_duration_seconds_bucket")
            .filter(|s| s.label("pool") == Some(pool))
            .filter_map(|s| Some((s.label("le")?.parse::<f64>().ok()?, s.value)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Counters {
            requests: get("gantry_requests_total"),
            duration_sum: get("gantry_request_duration_seconds_sum"),
            duration_count: get("gantry_request_duration_seconds_count"),
            buckets,
        }
    }
}

/// Errors talking to the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The in-process pool refused.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The admin API could not be reached.
    #[error("admin API: {0}")]
    Http(HttpError),
    /// The admin API answered with an error.
    #[error("admin API answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The admin API answered something unexpected.
    #[error("admin API: {0}")]
    Decode(String),
}

impl From<HttpError> for ControlError {
    fn from(e: HttpError) -> ControlError {
        ControlError::Http(e)
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
                state: s.state.to_string(),
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
        self.pools.get(pool)?;
        let samples = exposition::parse(&crate::metrics::render());
        Ok(Counters::from_samples(&samples, pool))
    }

    fn local_pool(&self, pool: &str) -> Option<Arc<Pool>> {
        self.pools.get(pool).ok().cloned()
    }
}

/// A proxy reached through its admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    token: Option<String>,
    client: HttpClient,
}

impl Admin {
    /// Control through the admin API at `base` (like `http://127.0.0.1:9090`).
    pub fn new(base: &str, token: Option<String>) -> Admin {
        Admin {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: HttpClient::new(Duration::from_secs(5)),
        }
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<super::http::Reply, ControlError> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let url = format!("{}{path}", self.base);
        Ok(self.client.send(method, &url, body, &headers).await?)
    }
}

fn status_error(r: &super::http::Reply) -> ControlError {
    ControlError::Status {
        status: r.status,
        body: r.text().trim().to_string(),
    }
}

#[async_trait]
impl PoolControl for Admin {
    async fn members(&self, pool: &str) -> Result<Vec<Member>, ControlError> {
        let r = self.call(http::Method::GET, "/admin/pools", None).await?;
        if !r.ok() {
            return Err(status_error(&r));
        }
        let pools: Vec<PoolView> =
            serde_json::from_slice(&r.body).map_err(|e| ControlError::Decode(e.to_string()))?;
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
        let body = serde_json::json!({"addr": addr.to_string(), "weight": 1});
        let path = format!("/admin/pools/{}/backends", encode(pool));
        let r = self.call(http::Method::POST, &path, Some(&body)).await?;
        match r.status {
            s if (200..300).contains(&s) || s == 409 => Ok(()),
            _ => Err(status_error(&r)),
        }
    }

    async fn remove(&self, pool: &str, addr: SocketAddr) -> Result<(), ControlError> {
        let path = format!(
            "/admin/pools/{}/backends/{}",
            encode(pool),
            encode(&addr.to_string())
        );
        let r = self.call(http::Method::DELETE, &path, None).await?;
        match r.status {
            s if (200..300).contains(&s) => Ok(()),
            404 if r.text().contains("not in the pool") => Ok(()),
            _ => Err(status_error(&r)),
        }
    }

    async fn counters(&self, pool: &str) -> Result<Counters, ControlError> {
        let r = self.call(http::Method::GET, "/metrics", None).await?;
        if !r.ok() {
            return Err(status_error(&r));
        }
        Ok(Counters::from_samples(&exposition::parse(&r.text()), pool))
    }

    fn local_pool(&self, _pool: &str) -> Option<Arc<Pool>> {
        None
    }
}
