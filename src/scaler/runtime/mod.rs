//! Where replicas run: the [`Runtime`] trait and its implementations.
//!
//! - [`docker`] — containers through the Docker Engine API (bollard);
//! - [`local`] — `gantry worker` child processes on loopback ports;
//! - [`fake`] — in memory, for tests of the control loop.
//!
//! **Invariant:** a runtime only ever lists, stops or watches replicas that
//! carry its marks (Docker: the `gantry.managed=true` and `gantry.pool`
//! labels; local: children it spawned itself).

pub mod docker;
pub mod fake;
pub mod local;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::http::HttpClient;

/// Label marking containers the scaler owns.
pub const MANAGED_LABEL: &str = "gantry.managed";
/// Label naming a container's pool.
pub const POOL_LABEL: &str = "gantry.pool";

/// One replica of a pool: a container or a process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Replica {
    /// Runtime id: container id, or `local-<pid>`.
    pub id: String,
    /// Pool it serves.
    pub pool: String,
    /// Where the proxy reaches it.
    pub addr: SocketAddr,
}

/// What a new replica needs from the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    /// Pool it serves.
    pub pool: String,
    /// CPU limit, cores.
    pub cpus: Option<f64>,
    /// Memory limit, MiB.
    pub memory_mib: Option<u64>,
}

/// Resource use of one replica, in percent of its limit (or of the host).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU %.
    pub cpu_percent: Option<f64>,
    /// Memory %.
    pub memory_percent: Option<f64>,
}

/// Errors from a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The Docker engine refused or could not be reached.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// A process could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A replica came up without an address the proxy can reach.
    #[error("replica {id} has no reachable address: {why}")]
    NoAddress {
        /// The replica.
        id: String,
        /// What is missing.
        why: String,
    },
    /// Anything else, said plainly.
    #[error("{0}")]
    Other(String),
}

/// Starts, lists and stops the replicas of pools.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Short name for logs (`docker`, `local`, `fake`).
    fn name(&self) -> &'static str;

    /// The running replicas of `pool` that this runtime manages.
    async fn list(&self, pool: &str) -> Result<Vec<Replica>, RuntimeError>;

    /// Starts one replica; returns once it has an address (it may not be ready yet).
    async fn start(&self, spec: &ReplicaSpec) -> Result<Replica, RuntimeError>;

    /// Stops and removes a replica; a replica already gone is not an error.
    async fn stop(&self, replica: &Replica) -> Result<(), RuntimeError>;

    /// Whether the replica answers its readiness check.
    async fn ready(&self, replica: &Replica) -> bool;

    /// Resource use of each replica, in the same order.
    async fn usage(&self, replicas: &[Replica]) -> Vec<Usage>;

    /// Replicas that died on their own (container exit, process exit).
    fn deaths(&self) -> broadcast::Receiver<Replica>;
}

/// `GET http://addr/ready` answers 2xx within a second.
pub async fn http_ready(client: &HttpClient, addr: SocketAddr) -> bool {
    client
        .get(&format!("http://{addr}/ready"))
        .await
        .is_ok_and(|r| r.ok())
}

/// A client for readiness probes.
pub fn probe_client() -> HttpClient {
    HttpClient::new(Duration::from_secs(1))
}
