//! The proxy config file as serde reads it: every field, its default, and why it exists.
//!
//! These types mirror `gantry.yaml` one to one. Nothing here is checked beyond
//! its type; [`super::validate`] turns them into [`super::Config`]. A section
//! that needs no conversion is its own validated type ([`HealthConfig`],
//! [`OutlierConfig`]): validation checks it and moves it into the pool as is.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Top level of `gantry.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address the proxy accepts client traffic on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The admin listener: metrics, health and the backend API.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Worker threads for the proxy service. Default 2.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Limits on what a client may send.
    #[serde(default)]
    pub limits: Limits,
    /// Backend pools by name.
    #[serde(default)]
    pub pools: BTreeMap<String, RawPool>,
    /// Path-prefix routes, longest prefix wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// The response cache tiers (memory and disk by default; Redis with a URL).
    #[serde(default)]
    pub cache: crate::cache::config::RawCache,
    /// The auto-scaler (`gantry up`, `gantry scaler`): policies and runtime. Default none.
    #[serde(default)]
    pub scaler: Option<crate::scaler::config::ScalerConfig>,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plain listener, beside
    /// HTTP/1.1 (told apart by the connection preface). Default false.
    #[serde(default)]
    pub h2c: bool,
    /// HTTPS (and HTTP/2) on a second traffic listener. Default none.
    #[serde(default)]
    pub tls: Option<crate::tls::RawTls>,
}

/// Limits on what a client may send and how long it may take; the defaults
/// are nginx's and HAProxy's, so a client that works behind those works here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and every header, names and
    /// values); larger gets `431`. Default 32 KiB, nginx's `large_client_header_buffers`.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most request headers; more gets `431`. Default 100, as in HAProxy's
    /// `tune.http.maxhdr` (101).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Longest request target (path and query); longer gets `414`. Default
    /// 8 KiB, Apache's `LimitRequestLine` (8190) and nginx's 8 KiB line buffer.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Total time to receive a request head, from accept or from the first
    /// byte of a keep-alive request; past it the connection is closed. Per-read
    /// timeouts would let a client sending a header line every few seconds
    /// hold a socket forever. Default 30 s (nginx's `client_header_timeout`
    /// is 60 s, HAProxy's `timeout http-request` is usually 10-30 s).
    #[serde(default = "default_head_timeout", with = "humantime_serde")]
    pub head_timeout: Duration,
    /// Longest wait for the next piece of a request body; past it the request
    /// fails and the connection closes. Default 60 s, nginx's `client_body_timeout`.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Longest a keep-alive connection may wait idle for its next request
    /// (whole seconds). Default 75 s, nginx's `keepalive_timeout`.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; more are answered `503` and
    /// closed, and counted in `gantry_connections_refused_total`. Default
    /// 16384: above the 10,000 keep-alive connections we hold ourselves to,
    /// within the usual 65,536 file descriptors (two per proxied connection).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_bytes: default_max_uri_bytes(),
            head_timeout: default_head_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl Limits {
    /// The connection limits of the traffic listener.
    pub fn conn(&self) -> crate::conn::ConnLimits {
        crate::conn::ConnLimits {
            head_timeout: self.head_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }
}

fn default_max_header_bytes() -> usize {
    32 * 1024
}

fn default_max_headers() -> usize {
    100
}

fn default_max_uri_bytes() -> usize {
    8 * 1024
}

fn default_head_timeout() -> Duration {
    crate::conn::DEFAULT_HEAD_TIMEOUT
}

fn default_body_timeout() -> Duration {
    crate::conn::DEFAULT_BODY_TIMEOUT
}

fn default_idle_timeout() -> Duration {
    crate::conn::DEFAULT_IDLE_TIMEOUT
}

fn default_max_connections() -> usize {
    crate::conn::DEFAULT_MAX_CONNECTIONS
}

/// The admin listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin API. Default `127.0.0.1:9090` (loopback only).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer token for mutating admin calls. Default: none configured, so one
    /// is generated at start and written to a file only this user can read
    /// (its path is logged). Prefer `token_env` to a token in the file.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token, read at start (e.g.
    /// `GANTRY_ADMIN_TOKEN`). Default none.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Most admin connections open at once; more are closed and counted.
    /// Default 256: operators, Prometheus and a scaler, not client traffic.
    /// The admin listener takes its timeouts from `limits:`.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            token: None,
            token_env: None,
            max_connections: default_admin_max_connections(),
        }
    }
}

fn default_admin_max_connections() -> usize {
    256
}

/// One pool of interchangeable backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// How a backend is picked. Default `p2c` (power of two choices, least requests).
    #[serde(default)]
    pub policy: crate::config::Policy,
    /// Backends known at start; the admin API and the scaler add more.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Passive ejection of backends that fail requests.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Retries on another backend.
    #[serde(default)]
    pub retry: RawRetry,
    /// Largest request body accepted, in bytes; larger gets 413. Default 1 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// How long a removed backend may finish in-flight requests. Default 30 s.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// What the pool's backends speak: `http1` (default), `h2c` (HTTP/2
    /// with prior knowledge, e.g. gRPC servers) or, with `tls`, `h2` (HTTP/2
    /// over TLS); health checks use it too.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Reach the backends over TLS: CA, server name, client certificate.
    #[serde(default)]
    pub tls: Option<crate::tls::upstream::RawUpstreamTls>,
}

/// The protocol a pool's backends speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 over cleartext, with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`); needs the pool's `tls`.
    H2,
}

impl UpstreamProtocol {
    /// Requests and health checks use HTTP/2.
    pub fn is_http2(self) -> bool {
        self != UpstreamProtocol::Http1
    }
}

/// A backend address with its weight.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `host:port` of the backend.
    pub addr: String,
    /// Relative share for the `weighted` policy. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

/// Active health checking.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path probed with GET. Default `/health`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes. Default 1 s.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Probe timeout. Default 1 s.
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passes to mark a backend up. Default 1.
    #[serde(default = "one")]
    pub rise: u32,
    /// Consecutive failures to mark a backend down. Default 2.
    #[serde(default = "two")]
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: default_health_path(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            rise: 1,
            fall: 2,
        }
    }
}

/// Passive outlier ejection (Envoy-style).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive connect errors or 5xx that eject a backend. Default 5; 0 disables.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each repeat. Default 10 s.
    #[serde(default = "default_base_ejection", with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Longest ejection. Default 300 s.
    #[serde(default = "default_max_ejection", with = "humantime_serde")]
    pub max_ejection: Duration,
    /// Most of a pool that ejection alone may take out, in percent. Default 50.
    #[serde(default = "default_max_ejected")]
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: default_consecutive(),
            base_ejection: default_base_ejection(),
            max_ejection: default_max_ejection(),
            max_ejected_percent: default_max_ejected(),
        }
    }
}

/// Upstream timeouts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect. Default 1 s.
    #[serde(default = "default_connect", with = "humantime_serde")]
    pub connect: Duration,
    /// Waiting for response bytes; exceeding it gives 504. Default 30 s.
    #[serde(default = "default_io", with = "humantime_serde")]
    pub read: Duration,
    /// Sending the request. Default 30 s.
    #[serde(default = "default_io", with = "humantime_serde")]
    pub write: Duration,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            connect: default_connect(),
            read: default_io(),
            write: default_io(),
        }
    }
}

/// Retrying on another backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Total tries per request, the first included. Default 3.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            attempts: default_attempts(),
        }
    }
}

/// A path-prefix route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Requests whose path starts with this go to `pool`.
    pub prefix: String,
    /// Pool name.
    pub pool: String,
    /// Whether non-GET requests may be retried (analysis calls are). Default false.
    #[serde(default)]
    pub idempotent: bool,
    /// Response caching for this route; absent (the default) means not cached.
    #[serde(default)]
    pub cache: Option<crate::cache::config::RawRouteCache>,
    /// Send a share of the route's requests to another pool (a new model
    /// version, say). Default none.
    #[serde(default)]
    pub canary: Option<RawCanary>,
}

/// A route's canary: `weight` percent of its requests go to `pool`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    /// The canary pool.
    pub pool: String,
    /// Percent of the route's requests it gets, 1 to 99.
    pub weight: u32,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_threads() -> usize {
    2
}
fn default_max_body() -> u64 {
    1024 * 1024
}
fn default_drain() -> Duration {
    Duration::from_secs(30)
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_consecutive() -> u32 {
    5
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(10)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejected() -> u32 {
    50
}
fn default_connect() -> Duration {
    Duration::from_secs(1)
}
fn default_io() -> Duration {
    Duration::from_secs(30)
}
fn default_attempts() -> u32 {
    3
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
