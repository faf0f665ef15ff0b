//! Where replicas run: the [`Runtime`] trait and its implementations.
//!
//! - [`docker`] — containers through the Docker Engine API (bollard);
//! - [`swarm`] — a Docker Swarm service per pool, scaled by its replica count;
//! - [`local`] — `gantry worker` child processes on loopback ports;
//! - [`fake`] — in memory, for tests of the control loop.
//!
//! Two shapes of runtime: most start and stop the replicas the control loop
//! picks ([`Runtime::start`], [`Runtime::stop`]); a *counting* runtime
//! (Swarm) keeps a replica count of its own ([`Listing::desired`]), which
//! the loop sets ([`Runtime::scale`]), and the runtime picks which replicas
//! come and go and replaces dead ones itself.
//!
//! **Invariant:** a runtime only ever lists, stops or watches replicas that
//! carry its marks (Docker: the `gantry.managed=true`, `gantry.deployment`
//! and `gantry.pool` labels; local: children it spawned itself).
//!
//! A replica is started either to serve or as a *warm spare* (the policy's
//! `warm`): running and loaded, outside the proxy's pool and not counted as a
//! replica, until [`Runtime::promote`] makes it a serving one, which takes
//! milliseconds instead of a start. Every runtime keeps the role where a
//! restart finds it again (Docker: in the container's name, which, unlike
//! its labels, can change; local: in memory, as its children die with it).

pub mod container;
pub mod docker;
pub mod fake;
pub mod local;
pub mod swarm;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::client::HttpClient;

/// Label marking containers the scaler owns.
pub const MANAGED_LABEL: &str = "gantry.managed";
/// Label naming the deployment (`scaler.deployment`) a container belongs
/// to: two deployments on one engine with pools of the same name never
/// touch each other's containers.
pub const DEPLOYMENT_LABEL: &str = "gantry.deployment";
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

/// A replica that died on its own, and what it left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// The replica (Docker events carry only its id and pool).
    pub replica: Replica,
    /// Its exit status and last output line, e.g.
    /// `exit status: 1: error: no ONNX Runtime library found at ...`.
    pub reason: String,
}

/// A pool's replicas as a runtime lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Replicas serving the pool (or started to serve it, not ready yet).
    pub serving: Vec<Replica>,
    /// Warm spares: started ahead, outside the pool, not counted as replicas.
    pub warm: Vec<Replica>,
    /// A counting runtime's replica count for the pool, which `serving`
    /// follows as the runtime converges; `None`: the replicas are the count.
    pub desired: Option<u32>,
}

/// What a new replica needs from the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    /// Pool it serves.
    pub pool: String,
    /// Start it as a warm spare rather than a serving replica.
    pub warm: bool,
    /// CPU limit, cores (none: no limit).
    pub cpus: Option<f64>,
    /// Memory limit, MiB (Docker; swap is not added to it).
    pub memory_mib: u64,
    /// Most processes and threads in the replica (Docker).
    pub pids: u32,
    /// The worker's `--model` (runtimes that honour it: [`Runtime::sets_model`]).
    pub model: Option<String>,
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
    /// The Docker engine refused.
    #[error("docker: {0}")]
    Docker(bollard::errors::Error),
    /// The engine could not be reached at all (its socket gone, the
    /// connection refused or timed out): an outage, not the replica's fault.
    #[error("the container engine is unreachable: {0}")]
    Unreachable(String),
    /// A process could not be started.
    #[error("cannot start `{command}`: {cause}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A replica came up without an address the proxy can reach.
    #[error("replica {id} has no reachable address: {why}")]
    NoAddress {
        /// The replica.
        id: String,
        /// What is missing.
        why: String,
    },
    /// Someone else changed the object between our read and our write (a
    /// Swarm service's version index moved): re-read and decide again.
    #[error("changed by someone else since it was read: {0}")]
    Conflict(String),
    /// Anything else, said plainly.
    #[error("{0}")]
    Other(String),
}

impl From<bollard::errors::Error> for RuntimeError {
    fn from(e: bollard::errors::Error) -> RuntimeError {
        use bollard::errors::Error as E;
        match e {
            E::SocketNotFoundError(_)
            | E::IOError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError => RuntimeError::Unreachable(e.to_string()),
            e => RuntimeError::Docker(e),
        }
    }
}

/// Starts, lists and stops the replicas of pools.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Short name for logs (`docker`, `local`, `fake`).
    fn name(&self) -> &'static str;

    /// Whether [`ReplicaSpec::model`] reaches the worker (its command line);
    /// where not, the model comes with the image.
    fn sets_model(&self) -> bool {
        false
    }

    /// The running replicas of `pool` that this runtime manages, serving and warm.
    async fn list(&self, pool: &str) -> Result<Listing, RuntimeError>;

    /// Starts one replica (a warm spare when `spec.warm`); returns once it
    /// has an address (it may not be ready yet).
    async fn start(&self, spec: &ReplicaSpec) -> Result<Replica, RuntimeError>;

    /// Turns a warm spare of this runtime into a serving replica: listed as
    /// serving from then on, same id and address.
    async fn promote(&self, warm: &Replica) -> Result<(), RuntimeError>;

    /// Stops and removes a replica; a replica already gone is not an error.
    async fn stop(&self, replica: &Replica) -> Result<(), RuntimeError>;

    /// Whether the replica answers its readiness check.
    async fn ready(&self, replica: &Replica) -> bool;

    /// Resource use of each replica, in the same order.
    async fn usage(&self, replicas: &[Replica]) -> Vec<Usage>;

    /// Replicas that died on their own (container exit, process exit).
    fn deaths(&self) -> broadcast::Receiver<Death>;

    /// A counting runtime ([`Listing::desired`] is `Some`) sets the pool's
    /// replica count to `to`, creating what it needs on first use; it picks
    /// which replicas start or stop. Others refuse: their caller starts and
    /// stops replicas one by one.
    async fn scale(&self, spec: &ReplicaSpec, to: u32) -> Result<(), RuntimeError> {
        let _ = (spec, to);
        Err(RuntimeError::Other(format!(
            "the {} runtime starts and stops replicas one by one",
            self.name()
        )))
    }

    /// The scaler is stopping: stop what must not outlive it. Local
    /// processes are stopped; containers stay for the next run to adopt.
    async fn shutdown(&self) {}
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

/// The line of a replica's last output that best says why it stopped: the
/// last one starting with `error` (the worker's `error: ...`), else the last
/// non-empty one; ANSI colours removed, at most [`WORDS_MAX`] bytes.
pub fn last_words<'a>(lines: impl DoubleEndedIterator<Item = &'a str> + Clone) -> Option<String> {
    let clean = |l: &str| strip_ansi(l).trim().to_string();
    let pick = lines
        .clone()
        .rev()
        .map(clean)
        .find(|l| l.to_ascii_lowercase().starts_with("error"))
        .or_else(|| lines.rev().map(clean).find(|l| !l.is_empty()))?;
    Some(truncate(pick, WORDS_MAX))
}

/// Longest reason kept from a replica's output.
pub const WORDS_MAX: usize = 1024;

/// `s` cut to at most `max` bytes on a character boundary, marked with `…`.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// `s` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(output: &str, want: Option<&str>) {
        assert_eq!(last_words(output.lines()).as_deref(), want, "{output:?}");
    }

    #[test]
    fn last_words_prefer_the_error_line() {
        check(
            "\u{1b}[2mINFO\u{1b}[0m loading\nerror: no ONNX Runtime library found at /x\nbye\n",
            Some("error: no ONNX Runtime library found at /x"),
        );
        check("starting\nsegfault here\n\n", Some("segfault here"));
        check("", None);
        check("\n  \n", None);
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let long = "é".repeat(WORDS_MAX);
        let got = last_words(std::iter::once(long.as_str())).unwrap();
        assert!(got.len() <= WORDS_MAX + '…'.len_utf8());
        assert!(got.ends_with('…'));
    }
}
