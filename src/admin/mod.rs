//! The admin API as a boundary: its wire types, and the [`client`] that `gantry scaler`, `gantry status` and tests use.
//!
//! The proxy serves these types (`proxy::admin`); the scaler and the CLI read
//! and send them through [`client::AdminClient`]. Neither side imports the
//! other: both depend on this module only. Errors carry a machine-readable
//! [`ErrorCode`] so a client never matches on message text.
//!
//! Routes: `GET /admin/pools` ([`PoolView`]s); `POST /admin/pools/{pool}/backends`
//! ([`AddBackend`]); `DELETE /admin/pools/{pool}/backends/{addr}` (drain);
//! `GET /admin/scaler` ([`ScalerJournal`]); `GET /admin/cache`;
//! `POST /admin/cache/purge` ([`PurgeRequest`]); `GET /admin/targets`
//! (Prometheus HTTP service discovery); `GET /metrics`, `GET /health`;
//! `GET /` (the status page) and `GET /status.json` ([`status::Status`]).

pub mod client;
pub mod status;
pub mod token;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A backend's state in its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new requests.
    Up,
    /// Fails its active health checks.
    Down,
    /// Taken out for a while after consecutive failures.
    Ejected,
    /// Removed: finishes its requests, takes no new ones.
    Draining,
}

impl BackendState {
    /// The wire and label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Ejected => "ejected",
            BackendState::Draining => "draining",
        }
    }
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One pool in `GET /admin/pools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Balancing policy.
    pub policy: crate::config::Policy,
    /// Members and draining backends.
    pub backends: Vec<BackendView>,
}

/// One backend in a [`PoolView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    /// `host:port`.
    pub addr: String,
    /// Weight.
    pub weight: u32,
    /// Where it is in its life.
    pub state: BackendState,
    /// Requests in flight.
    pub inflight: u64,
}

/// Body of `POST /admin/pools/{pool}/backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBackend {
    /// `host:port`.
    pub addr: String,
    /// Weight, default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Body of `POST /admin/cache/purge`: exactly one of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// One key, as stored (`pool:/path:hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Every key starting with this (`pool:`, `pool:/path:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Everything.
    #[serde(default)]
    pub all: bool,
}

/// What went wrong, for programs: the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No pool of that name.
    UnknownPool,
    /// The backend is not in the pool.
    NotInPool,
    /// The backend is in the pool already.
    AlreadyInPool,
    /// The request is malformed (body, address, weight).
    BadRequest,
    /// Missing or wrong bearer token.
    Unauthorized,
    /// The response cache is off.
    CacheOff,
    /// A cache tier could not be purged.
    CacheTier,
}

/// The body of every admin error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// For people.
    pub error: String,
    /// For programs.
    pub code: ErrorCode,
}

/// One scaling decision (or a run of identical ones) in `GET /admin/scaler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Pool.
    pub pool: String,
    /// Milliseconds since the Unix epoch of the latest repeat.
    pub at_unix_ms: u64,
    /// Replicas before.
    pub from: u32,
    /// Replicas wanted.
    pub to: u32,
    /// Ready replicas when decided.
    pub ready: u32,
    /// Warm spares (outside the pool, not counted above) when decided.
    #[serde(default)]
    pub warm: u32,
    /// `up`, `down` or `none`.
    pub direction: String,
    /// Reason label.
    pub reason: String,
    /// The logged explanation.
    pub message: String,
    /// How many evaluations in a row came out like this.
    pub repeats: u32,
}

/// How a pool's replica starts are going: a crash-looping worker shows here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Starts {
    /// Failed starts since a replica last stayed ready; above 0 the pool is failing.
    pub failures_in_a_row: u32,
    /// Failed starts since the scaler started.
    pub failures_total: u64,
    /// Why the last start failed (the worker's exit status and last words).
    pub last_error: Option<String>,
    /// While backing off: when the next start may be tried (Unix ms).
    pub retry_at_unix_ms: Option<u64>,
}

/// What `GET /admin/scaler` shows of one pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolJournal {
    /// Recent decisions, oldest first.
    pub decisions: Vec<Decision>,
    /// Replica starts.
    pub starts: Starts,
    /// Who leads, when the scaler competes for a lease (`scaler.lease`).
    #[serde(default)]
    pub leader: Option<Leadership>,
}

/// Who leads, as one scaler process sees it (`scaler.lease`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// This process's lease id (`<host>-<pid>-<hex>`).
    pub me: String,
    /// Whether this process acts.
    pub leading: bool,
    /// The holder at the last look, when known.
    pub leader: Option<String>,
}

/// `GET /admin/scaler`: every scaled pool by name.
pub type ScalerJournal = BTreeMap<String, PoolJournal>;

/// The scaling policy a pool runs under, as the status page shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// The file it was read from.
    pub file: String,
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Each metric with its rule, like `inflight_per_replica target 8`.
    pub rules: Vec<String>,
}

/// The last read of the policy directory that found invalid files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RejectedEdit {
    /// When it was read (Unix ms).
    pub at_unix_ms: u64,
    /// Each error, `file:line:column: field: message` (at most a few).
    pub errors: Vec<String>,
}

/// The policies in force and whether the last edit was rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policies {
    /// By pool.
    pub in_force: BTreeMap<String, PolicyView>,
    /// Set while the directory's last read found invalid files (their pools
    /// keep the previous policy); cleared by a clean read.
    pub rejected: Option<RejectedEdit>,
}

/// Where the admin server reads the scaler's journal from, when a scaler
/// runs in the same process (the scaler implements it; the proxy holds it).
pub trait ScalerView: Send + Sync + 'static {
    /// The journal now.
    fn journal(&self) -> ScalerJournal;

    /// The policies in force and the last rejected edit.
    fn policies(&self) -> Policies {
        Policies::default()
    }
}
