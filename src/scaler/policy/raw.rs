//! A policy file as serde reads it (`policies/<pool>.yaml`): every field, its default, and why.
//!
//! Nothing here is checked beyond its type; [`super::validate`] turns a
//! [`RawPolicy`] into a [`super::Policy`]. A part that needs no conversion is
//! its own validated type ([`Behavior`], [`Panic`], [`ScaleToZero`], like
//! [`MetricKind`] and [`Day`]): validation checks it and the policy holds it as
//! is. The same types give the JSON Schema (`gantry schema`), so doc comments
//! here are what editors show.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// One pool's scaling policy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Gantry scaling policy")]
pub struct RawPolicy {
    /// Name of the proxy pool this policy scales (one policy per pool).
    pub pool: String,
    /// Fewest replicas while the pool is active. Default 1. May be 0 only with `scale_to_zero`.
    #[serde(default = "one")]
    pub min: u32,
    /// Most replicas. Required.
    pub max: u32,
    /// Warm spares: replicas started ahead and kept ready outside the pool,
    /// not counted as replicas. Scaling up takes a spare first (it joins the
    /// pool in milliseconds, not the seconds a start takes) and starts a new
    /// spare behind it. At most `max`. Default 0 (none).
    #[serde(default)]
    pub warm: u32,
    /// Time between evaluations. Default 5s.
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Metric values are averaged over this window (Knative's stable window). Default 30s.
    #[serde(default = "default_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
    /// What to measure and what to aim for; the largest recommendation wins (HPA). At least one.
    pub metrics: Vec<RawMetric>,
    /// Scale-up behaviour. Defaults: no stabilization, no cooldown, at most 4 replicas per 15s.
    #[serde(default = "Behavior::up")]
    pub scale_up: Behavior,
    /// Scale-down behaviour. Defaults: 300s stabilization, 60s cooldown, at most 1 replica per 60s.
    #[serde(default = "Behavior::down")]
    pub scale_down: Behavior,
    /// Panic mode for spikes (Knative): a short window, scale up only. Absent means off.
    #[serde(default)]
    pub panic: Option<Panic>,
    /// Scale to zero after an idle period; the proxy holds requests while a replica starts. Absent means off.
    #[serde(default)]
    pub scale_to_zero: Option<ScaleToZero>,
    /// Minimum floors by day and hour; the highest matching floor applies. Default none.
    #[serde(default)]
    pub schedule: Vec<RawFloor>,
    /// Offset of the schedule's clock from UTC, like `+02:00`. Default `+00:00`.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// Resource limits of each replica (Docker runtime only). Defaults: no CPU limit, 1024 MiB memory, 1024 pids.
    #[serde(default)]
    pub resources: RawResources,
    /// Model directory this pool's workers serve: their `--model` (local runtime), e.g. a
    /// new version in a canary pool beside the stable one. Default: the runtime's own arguments.
    #[serde(default)]
    pub model: Option<String>,
    /// Longest a new replica may take to answer `/ready` before it is discarded. Default 60s.
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ready_timeout: Duration,
    /// A ready replica that the proxy has not counted healthy (down or ejected)
    /// for this long is replaced, with the failed-start backoff. Default 2m;
    /// `0s` never replaces.
    #[serde(default = "default_replace_unhealthy_after", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub replace_unhealthy_after: Duration,
    /// Longest a replica being removed may take to finish its requests. Default 30s.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub drain_timeout: Duration,
}

/// Which number a metric rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// CPU use in percent: of each container's CPU limit (Docker), or of the host (local processes).
    CpuPercent,
    /// Memory use in percent: of each container's limit (Docker), or of the host (local processes).
    MemoryPercent,
    /// Mean response time seen by the proxy for the pool, in milliseconds.
    ResponseTimeAvgMs,
    /// 95th percentile response time seen by the proxy for the pool, in milliseconds.
    ResponseTimeP95Ms,
    /// Requests in flight per ready replica.
    InflightPerReplica,
    /// Requests per second per ready replica.
    RequestRatePerReplica,
    /// Worker queue length (`gantry_worker_queue_length`), averaged over ready replicas.
    QueueLength,
}

/// One metric and its rule: `target` (target tracking) or `threshold` (step rule), not both.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    /// The metric.
    pub metric: MetricKind,
    /// Target tracking: `desired = ceil(replicas * value / target)`.
    #[serde(default)]
    pub target: Option<f64>,
    /// Target tracking: no change while `value / target` is within this fraction of 1. Default 0.1.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Threshold rule: add `step` replicas while the value is above this.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Threshold rule: remove `step` replicas while the value is below this. Default `threshold / 2`.
    #[serde(default)]
    pub scale_down_below: Option<f64>,
    /// Threshold rule: replicas added or removed per evaluation. Default 1.
    #[serde(default = "one")]
    pub step: u32,
    /// Read the value from Prometheus instead of the proxy and runtime. Default: the proxy.
    #[serde(default)]
    pub prometheus: Option<RawPrometheus>,
}

/// A Prometheus instant query whose first sample is the metric's value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheus {
    /// Base URL of the Prometheus HTTP API, like `http://127.0.0.1:9091`.
    pub url: String,
    /// PromQL; its result must already be in the metric's unit (per replica where the name says so).
    pub query: String,
}

/// Settings for one direction of scaling.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    /// Act on the most conservative recommendation of this window (lowest going up, highest going down).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stabilization: Duration,
    /// After a scale event (up: a scale-up; down: any), no step this way for this long. The loop keeps observing.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "String")]
    pub cooldown: Duration,
    /// Most replicas added (or removed) within one `period`.
    #[serde(default = "one")]
    pub max_step: u32,
    /// The period `max_step` counts over.
    #[serde(default = "default_period", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub period: Duration,
}

impl Behavior {
    /// Scale-up defaults (HPA: fast up).
    pub fn up() -> Behavior {
        Behavior {
            stabilization: Duration::ZERO,
            cooldown: Duration::ZERO,
            max_step: 4,
            period: Duration::from_secs(15),
        }
    }

    /// Scale-down defaults (HPA: slow down).
    pub fn down() -> Behavior {
        Behavior {
            stabilization: Duration::from_secs(300),
            cooldown: Duration::from_secs(60),
            max_step: 1,
            period: Duration::from_secs(60),
        }
    }
}

/// Panic mode (Knative KPA).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Panic {
    /// Short averaging window for spikes. Default 6s.
    #[serde(default = "default_panic_window", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
    /// Panic when the short-window desired count is at least this many times the ready count. Default 2.
    #[serde(default = "default_panic_threshold")]
    pub threshold: f64,
}

/// Scale to zero when idle.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleToZero {
    /// Idle time (no request, nothing in flight) before the pool goes to zero. Default 300s.
    #[serde(default = "default_idle", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub after: Duration,
    /// How long the proxy holds a request while the first replica starts; then 503. Default 10s.
    #[serde(default = "default_hold_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub hold_timeout: Duration,
    /// Most requests held at once; more get 503 at once. Default 100.
    #[serde(default = "default_hold_queue")]
    pub hold_queue: u32,
}

/// Day of the week for a schedule floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A minimum that holds on some days between some hours.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFloor {
    /// Days it applies. Default every day.
    #[serde(default)]
    pub days: Vec<Day>,
    /// `HH:MM-HH:MM`, end exclusive; may wrap past midnight. Default all day.
    #[serde(default)]
    pub hours: Option<String>,
    /// The floor.
    pub min: u32,
}

/// Per-replica resource limits (Docker).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    /// CPU limit in cores, like 1.5. Default none.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory limit in MiB (no swap on top). At least 6. Default 1024.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Most processes and threads in a replica (a fork bomb stops there). Default 1024.
    #[serde(default = "default_pids")]
    pub pids: u32,
}

impl Default for RawResources {
    fn default() -> Self {
        RawResources {
            cpus: None,
            memory_mib: default_memory_mib(),
            pids: default_pids(),
        }
    }
}

/// Docker refuses a memory limit under 6 MiB.
pub const MIN_MEMORY_MIB: u64 = 6;
/// The worker holds its model (a few MiB), ONNX Runtime's arenas and the
/// batch queue; 1 GiB leaves room for a larger model and keeps one
/// replica from taking the host. `memory_percent` is measured against it.
const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Threads count as pids: tokio starts one worker thread per core it sees
/// (no `cpus` limit: every host core), plus session and blocking threads;
/// 1024 fits a 256-core host with room and still stops a fork bomb.
const DEFAULT_PIDS: u32 = 1024;

fn default_memory_mib() -> u64 {
    DEFAULT_MEMORY_MIB
}
fn default_pids() -> u32 {
    DEFAULT_PIDS
}
fn one() -> u32 {
    1
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_window() -> Duration {
    Duration::from_secs(30)
}
fn default_period() -> Duration {
    Duration::from_secs(15)
}
fn default_tolerance() -> f64 {
    0.1
}
fn default_offset() -> String {
    "+00:00".into()
}
fn default_replace_unhealthy_after() -> Duration {
    Duration::from_secs(120)
}

fn default_ready_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_panic_window() -> Duration {
    Duration::from_secs(6)
}
fn default_panic_threshold() -> f64 {
    2.0
}
fn default_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_hold_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_hold_queue() -> u32 {
    100
}
