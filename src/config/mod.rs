//! Proxy configuration: raw serde types in, validated domain types out, every error at once.
//!
//! `load` reads `gantry.yaml`, deserializes it into [`raw::RawConfig`] and
//! checks it into a [`Config`]. Errors come back as [`ConfigErrors`], each
//! naming file, line, column and field path.

pub mod raw;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::yaml::{self, ConfigError, ConfigErrors, Source};
pub use raw::{HealthConfig, OutlierConfig};

/// The admin token's source (`admin.token`, `admin.token_env`, or neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// Written in the config.
    Given(String),
    /// Read from this environment variable at start.
    Env(String),
    /// Generated at start and kept in a file (loopback admin only).
    Generate,
}

/// How a pool picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Exact alternation over eligible backends.
    RoundRobin,
    /// Fewest in-flight requests; ties go round robin.
    LeastConnections,
    /// Smooth weighted round robin (nginx): weights 5:1:1 interleave.
    Weighted,
    /// Power of two choices: the less loaded of two random backends.
    #[default]
    P2c,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastConnections => "least_connections",
            Policy::Weighted => "weighted",
            Policy::P2c => "p2c",
        })
    }
}

/// The validated proxy configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Where the token for mutating admin calls comes from.
    pub admin_token: AdminToken,
    /// Proxy worker threads.
    pub threads: usize,
    /// Limits on client requests and connections.
    pub limits: raw::Limits,
    /// Most admin connections open at once.
    pub admin_max_connections: usize,
    /// Pools in name order.
    pub pools: Vec<PoolConfig>,
    /// Routes, longest prefix first.
    pub routes: Vec<RouteConfig>,
    /// Response cache tiers.
    pub cache: crate::cache::CacheConfig,
    /// The auto-scaler's settings, when the file has a `scaler:` section.
    pub scaler: Option<crate::scaler::config::ScalerConfig>,
    /// The HTTPS listener, if any.
    pub tls: Option<crate::tls::TlsConfig>,
    /// HTTP/2 with prior knowledge on the plain listener.
    pub h2c: bool,
}

/// A validated pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Pool name, used in routes, metrics and the admin API.
    pub name: String,
    /// Selection policy.
    pub policy: Policy,
    /// Backends at start.
    pub backends: Vec<BackendConfig>,
    /// Active health checks.
    pub health: HealthConfig,
    /// Passive ejection.
    pub outlier: OutlierConfig,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout waiting for upstream bytes (504 past it).
    pub read_timeout: Duration,
    /// Timeout sending to upstream.
    pub write_timeout: Duration,
    /// Total tries per request.
    pub attempts: u32,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// Time a removed backend gets to finish.
    pub drain_timeout: Duration,
    /// What the backends speak (requests and health checks).
    pub protocol: raw::UpstreamProtocol,
    /// TLS to the backends, loaded.
    pub tls: Option<crate::tls::upstream::UpstreamTls>,
}

/// A backend address and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendConfig {
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// Weight for the weighted policy (>= 1).
    pub weight: u32,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path prefix.
    pub prefix: String,
    /// Pool name (known to exist).
    pub pool: String,
    /// Non-GET requests may be retried.
    pub idempotent: bool,
    /// Caching rules, when the route is cached.
    pub cache: Option<crate::cache::RouteCache>,
    /// A share of the requests for another pool.
    pub canary: Option<Canary>,
}

/// A route's canary: `percent` of its requests go to `pool` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// Pool name (known to exist, not the route's own).
    pub pool: String,
    /// 1 to 99.
    pub percent: u32,
}

impl Canary {
    /// Whether request number `n` of the route (counting from 0) goes to the
    /// canary: exactly `percent` of every 100 consecutive requests, spread
    /// out (the ones where `n * percent / 100` steps up), not in a burst.
    pub fn takes(&self, n: u64) -> bool {
        let p = u64::from(self.percent);
        (n + 1) * p / 100 > n * p / 100
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let (raw, source) = yaml::read::<raw::RawConfig>(path)?;
    validate(raw, &source)
}

/// Parses and validates config text as if read from `file`.
pub fn from_str(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let (raw, source) = yaml::parse::<raw::RawConfig>(file, text)?;
    validate(raw, &source)
}

/// Resolves `host:port` to one socket address.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("`{s}` is not a host:port address ({e})"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// Checks a raw config, collecting every error.
pub fn validate(raw: raw::RawConfig, src: &Source) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut addr = |field: &str, s: &str| {
        parse_addr(s)
            .map_err(|m| errors.push(src.error(field, m)))
            .ok()
    };
    let listen = addr("listen", &raw.listen);
    let admin_listen = addr("admin.listen", &raw.admin.listen);
    let admin_token = admin_token(&raw.admin, admin_listen, src, &mut errors);
    if raw.threads == 0 {
        errors.push(src.error("threads", "must be at least 1"));
    }
    check_limits(&raw.limits, src, &mut errors);
    if raw.admin.max_connections == 0 {
        errors.push(src.error("admin.max_connections", "must be at least 1"));
    }
    let pools: Vec<PoolConfig> = raw
        .pools
        .into_iter()
        .map(|(name, p)| validate_pool(name, p, src, &mut errors))
        .collect();
    let cache = crate::cache::config::validate(raw.cache, src, &mut errors);
    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        if !r.prefix.starts_with('/') {
            errors.push(src.error(format!("routes[{i}].prefix"), "must start with `/`"));
        }
        if !pools.iter().any(|p| p.name == r.pool) {
            let msg = format!("no pool named `{}` (pools: {})", r.pool, names(&pools));
            errors.push(src.error(format!("routes[{i}].pool"), msg));
        }
        let route_cache = r.cache.map(|c| {
            let at = format!("routes[{i}].cache");
            crate::cache::config::validate_route(&at, c, &cache, src, &mut errors)
        });
        let canary = r.canary.map(|c| {
            if !pools.iter().any(|p| p.name == c.pool) {
                let msg = format!("no pool named `{}` (pools: {})", c.pool, names(&pools));
                errors.push(src.error(format!("routes[{i}].canary.pool"), msg));
            } else if c.pool == r.pool {
                let msg = "must be another pool than the route's own";
                errors.push(src.error(format!("routes[{i}].canary.pool"), msg));
            }
            if !(1..=99).contains(&c.weight) {
                let msg = "a percent of the route's requests, 1 to 99";
                errors.push(src.error(format!("routes[{i}].canary.weight"), msg));
            }
            Canary {
                pool: c.pool,
                percent: c.weight,
            }
        });
        routes.push(RouteConfig {
            prefix: r.prefix,
            pool: r.pool,
            idempotent: r.idempotent,
            cache: route_cache,
            canary,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    if let Some(s) = &raw.scaler {
        crate::scaler::config::check(s, src, &mut errors);
    }
    let tls = raw.tls.and_then(|t| crate::tls::check(t, src, &mut errors));
    match (listen, admin_listen, errors.is_empty()) {
        (Some(listen), Some(admin_listen), true) => Ok(Config {
            listen,
            admin_listen,
            admin_token,
            threads: raw.threads,
            limits: raw.limits,
            admin_max_connections: raw.admin.max_connections,
            pools,
            routes,
            cache,
            scaler: raw.scaler.map(|s| s.resolve(&src.file)),
            tls,
            h2c: raw.h2c,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Checks the `limits:` section.
fn check_limits(l: &raw::Limits, src: &Source, errors: &mut Vec<ConfigError>) {
    let mut check = |ok: bool, field: &str, msg: &str| {
        if !ok {
            errors.push(src.error(format!("limits.{field}"), msg));
        }
    };
    check(
        l.max_header_bytes >= 1024,
        "max_header_bytes",
        "must be at least 1024",
    );
    check(l.max_headers >= 1, "max_headers", "must be at least 1");
    check(
        l.max_uri_bytes >= 256,
        "max_uri_bytes",
        "must be at least 256",
    );
    check(
        l.max_uri_bytes <= l.max_header_bytes,
        "max_uri_bytes",
        "must not exceed `max_header_bytes` (the request line is part of the head)",
    );
    check(
        !l.head_timeout.is_zero(),
        "head_timeout",
        "must be more than 0",
    );
    check(
        !l.body_timeout.is_zero(),
        "body_timeout",
        "must be more than 0",
    );
    check(
        l.idle_timeout.as_secs() >= 1 && l.idle_timeout.subsec_nanos() == 0,
        "idle_timeout",
        "must be a whole number of seconds, at least 1s",
    );
    check(
        l.max_connections >= 1,
        "max_connections",
        "must be at least 1",
    );
}

/// Where the admin token comes from; a non-loopback admin address needs one
/// configured (a generated one would let anyone on the network race for it).
fn admin_token(
    admin: &raw::RawAdmin,
    listen: Option<SocketAddr>,
    src: &Source,
    errors: &mut Vec<ConfigError>,
) -> AdminToken {
    let token = match (&admin.token, &admin.token_env) {
        (Some(_), Some(_)) => {
            errors.push(src.error("admin.token_env", "give `token` or `token_env`, not both"));
            AdminToken::Generate
        }
        (Some(t), None) if t.trim().is_empty() => {
            errors.push(src.error("admin.token", "must not be empty"));
            AdminToken::Generate
        }
        (Some(t), None) => AdminToken::Given(t.trim().to_string()),
        (None, Some(var)) => AdminToken::Env(var.clone()),
        (None, None) => AdminToken::Generate,
    };
    if token == AdminToken::Generate && listen.is_some_and(|a| !a.ip().is_loopback()) {
        let msg = "a non-loopback admin address needs `admin.token_env` (or `admin.token`): \
                   mutating admin calls would be open to the network";
        errors.push(src.error("admin.listen", msg));
    }
    token
}

fn names(pools: &[PoolConfig]) -> String {
    let v: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn validate_pool(
    name: String,
    p: raw::RawPool,
    src: &Source,
    errors: &mut Vec<ConfigError>,
) -> PoolConfig {
    let at = |f: &str| format!("pools.{name}.{f}");
    let mut backends = Vec::new();
    for (i, b) in p.backends.iter().enumerate() {
        match parse_addr(&b.addr) {
            Ok(addr) => backends.push(BackendConfig {
                addr,
                weight: b.weight,
            }),
            Err(m) => errors.push(src.error(at(&format!("backends[{i}].addr")), m)),
        }
        if b.weight == 0 {
            errors.push(src.error(at(&format!("backends[{i}].weight")), "must be at least 1"));
        }
    }
    if !p.health.path.starts_with('/') {
        errors.push(src.error(at("health.path"), "must start with `/`"));
    }
    for (field, v) in [
        ("health.rise", p.health.rise),
        ("health.fall", p.health.fall),
    ] {
        if v == 0 {
            errors.push(src.error(at(field), "must be at least 1"));
        }
    }
    if p.health.interval.is_zero() {
        errors.push(src.error(at("health.interval"), "must be more than 0"));
    }
    if p.outlier.max_ejected_percent > 100 {
        errors.push(src.error(at("outlier.max_ejected_percent"), "must be at most 100"));
    }
    if p.retry.attempts == 0 {
        errors.push(src.error(at("retry.attempts"), "must be at least 1 (the first try)"));
    }
    match (p.protocol, p.tls.is_some()) {
        (raw::UpstreamProtocol::H2, false) => errors.push(src.error(
            at("protocol"),
            "`h2` is HTTP/2 over TLS and needs `tls:`; HTTP/2 without TLS is `h2c`",
        )),
        (raw::UpstreamProtocol::H2c, true) => errors.push(src.error(
            at("protocol"),
            "`h2c` is HTTP/2 without TLS; with `tls:` use `h2`",
        )),
        _ => {}
    }
    let tls = p
        .tls
        .and_then(|t| crate::tls::upstream::check(t, &at("tls"), src, errors));
    if tls.as_ref().is_some_and(|t| !t.verify) {
        tracing::warn!(pool = %name, "tls.verify is false: any certificate the backends send is accepted");
    }
    PoolConfig {
        name,
        policy: p.policy,
        backends,
        health: p.health,
        outlier: p.outlier,
        connect_timeout: p.timeouts.connect,
        read_timeout: p.timeouts.read,
        write_timeout: p.timeouts.write,
        attempts: p.retry.attempts,
        max_body_bytes: p.max_body_bytes,
        drain_timeout: p.drain_timeout,
        protocol: p.protocol,
        tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match from_str(Path::new("g.yaml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_canary_takes_exactly_its_percent_spread_out() {
        for percent in [1, 5, 10, 33, 50, 99] {
            let c = Canary {
                pool: "b".into(),
                percent,
            };
            let taken: Vec<u64> = (0..1000).filter(|&n| c.takes(n)).collect();
            assert_eq!(taken.len() as u32, 10 * percent, "{percent}%");
            // Never two in a row below half, never two apart above half.
            if percent <= 50 {
                assert!(taken
                    .windows(2)
                    .all(|w| w[1] - w[0] >= 100 / u64::from(percent) - 1));
            }
        }
    }

    #[test]
    fn canary_mistakes_are_located() {
        let e = errors(
            "pools:\n  a: {backends: [{addr: '127.0.0.1:1'}]}\nroutes:\n  - {prefix: /, pool: a, canary: {pool: b, weight: 5}}\n  - {prefix: /x, pool: a, canary: {pool: a, weight: 100}}\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("routes[0].canary.pool: no pool named `b`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("routes[1].canary.pool: must be another pool")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("routes[1].canary.weight: a percent")),
            "{e:?}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = from_str(
            Path::new("g.yaml"),
            "pools:\n  a:\n    backends: [{addr: '127.0.0.1:1'}]\nroutes: [{prefix: /, pool: a}]\n",
        )
        .unwrap();
        assert_eq!(c.pools[0].policy, Policy::P2c);
        assert_eq!(c.pools[0].attempts, 3);
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_line() {
        let text = "pools:\n  a:\n    backends:\n      - addr: nope\n        weight: 0\n    retry: {attempts: 0}\nroutes:\n  - prefix: v1\n    pool: b\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(errs[0].starts_with("g.yaml:4:"), "{}", errs[0]);
        assert!(errs[0].contains("pools.a.backends[0].addr"));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("g.yaml:9:")
                    && e.contains("routes[0].pool: no pool named `b`")),
            "{errs:#?}"
        );
    }

    #[test]
    fn cache_sections_are_checked_and_located() {
        let pool = "pools:\n  a:\n    backends: [{addr: '127.0.0.1:1'}]\n";
        let text = format!("{pool}routes:\n  - prefix: /\n    pool: a\n    cache:\n      max_object_bytes: 0\ncache:\n  memory: {{max_bytes: 0}}\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("g.yaml:10:") && errs[0].contains("cache.memory.max_bytes"));
        assert!(
            errs[1].starts_with("g.yaml:8:")
                && errs[1].contains("routes[0].cache.max_object_bytes")
        );
        let c = from_str(
            Path::new("g.yaml"),
            &format!("{pool}routes:\n  - {{prefix: /, pool: a, cache: {{ttl: 5s}}}}\n  - {{prefix: /b, pool: a}}\n"),
        )
        .unwrap();
        let cached: Vec<bool> = c.routes.iter().map(|r| r.cache.is_some()).collect();
        assert_eq!(cached, vec![false, true], "longest prefix first");
        assert!(c.cache.redis.is_none() && c.cache.disk.is_some());
    }

    #[test]
    fn limits_have_defaults_and_bad_ones_are_located() {
        let pool = "pools:\n  a:\n    backends: [{addr: '127.0.0.1:1'}]\n";
        let c = from_str(Path::new("g.yaml"), pool).unwrap();
        assert_eq!(c.limits.head_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.max_uri_bytes, 8192);
        assert_eq!(c.limits.max_connections, 16_384);
        assert_eq!(c.admin_max_connections, 256);
        let text = format!(
            "{pool}limits:\n  head_timeout: 0s\n  idle_timeout: 1500ms\n  max_connections: 0\n  max_uri_bytes: 65536\n"
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 4, "{errs:#?}");
        for (line, field) in [
            (5, "limits.head_timeout"),
            (6, "limits.idle_timeout"),
            (7, "limits.max_connections"),
            (8, "limits.max_uri_bytes"),
        ] {
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(&format!("g.yaml:{line}:")) && e.contains(field)),
                "{field} at line {line}: {errs:#?}"
            );
        }
        assert!(
            errors(&format!("{pool}limits: {{head_timeout: soon}}\n"))[0]
                .contains("limits.head_timeout")
        );
    }

    #[test]
    fn unknown_field_and_bad_policy_are_located() {
        let errs = errors("pools:\n  a:\n    policy: fastest\n");
        assert!(
            errs[0].starts_with("g.yaml:3:") && errs[0].contains("pools.a.policy"),
            "{errs:?}"
        );
        let errs = errors("pools:\n  a:\n    bakends: []\n");
        assert!(errs[0].contains("unknown field `bakends`"), "{errs:?}");
    }
}
