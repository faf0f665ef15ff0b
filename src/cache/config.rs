//! The `cache:` sections of `gantry.yaml`: raw serde types with defaults, then validated types.
//!
//! The top-level `cache:` sets the tiers up; a route opts in with its own
//! `cache:` block (TTL, methods, vary headers, ...). Validation pushes every
//! problem, located by file, line and field path, onto the caller's list.
//! [`MemoryConfig`] needs no conversion, so it is read and used as is; Redis
//! and disk become `Option`s (on with a URL, on unless disabled) and a route's
//! methods and headers are parsed, so those have validated types of their own.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::yaml::{ConfigError, Source};

/// L1 eviction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictionPolicyKind {
    /// quick_cache's Clock-PRO variant (close to S3-FIFO): a hot and a cold
    /// queue with a history of recently evicted keys; scan resistant, the
    /// best hit ratio of the three on a skewed load. The default.
    #[default]
    ClockPro,
    /// LRU with frequency-based admission (moka's TinyLFU).
    TinyLfu,
    /// Plain least-recently-used.
    Lru,
}

/// Top-level `cache:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Master switch; off means no route is cached. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// L1, in process memory.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// L2, Redis; on only when `url` is set.
    #[serde(default)]
    pub redis: RawRedis,
    /// L3, a file on local disk.
    #[serde(default)]
    pub disk: RawDisk,
    /// How long a request waits for an identical in-flight miss before going to
    /// the backend itself. Default 5 s.
    #[serde(default = "default_coalesce_wait", with = "humantime_serde")]
    pub coalesce_wait: Duration,
    /// Largest response body stored, in bytes, unless a route says otherwise. Default 1 MiB.
    #[serde(default = "default_max_object")]
    pub max_object_bytes: u64,
}

/// L1 settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Bytes of responses (body, headers, key, overhead) held in memory. Default 256 MiB.
    #[serde(default = "default_memory_bytes")]
    pub max_bytes: u64,
    /// `clock_pro` (default), `tiny_lfu` or `lru`.
    #[serde(default)]
    pub eviction: EvictionPolicyKind,
}

/// L2 settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port/db`, or `rediss://` for TLS; none (the default) turns L2 off.
    #[serde(default)]
    pub url: Option<String>,
    /// ACL user name (Redis 6+). Default none: the `default` user.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding the password (`AUTH`); the password
    /// itself never goes in this file and is never logged. Default none.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS to Redis: on with a `rediss://` URL or this block.
    #[serde(default)]
    pub tls: Option<RawRedisTls>,
    /// Connections in the pool. Default 4.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// TCP connect timeout. Default 500 ms.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest any request waits on one Redis command. Default 50 ms.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Consecutive failures or timeouts that open the circuit. Default 3.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Time the circuit stays open before one probe is let through. Default 2 s.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// Prefix of every key Gantry writes, so a shared Redis is safe to purge. Default `gantry:cache:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Longest an admin purge waits on Redis. Default 10 s.
    #[serde(default = "default_purge_timeout", with = "humantime_serde")]
    pub purge_timeout: Duration,
}

/// L3 settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    /// Whether L3 is used. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The redb file; its directory is created. Default `var/cache/gantry-cache.redb`.
    #[serde(default = "default_disk_path")]
    pub path: PathBuf,
    /// Compressed bytes kept on disk before the least recently used go. Default 1 GiB.
    #[serde(default = "default_disk_bytes")]
    pub max_bytes: u64,
    /// zstd level, 1 (fast) to 19 (small). Default 3.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Most-hit entries copied into L1 at start. Default 10 000; 0 disables.
    #[serde(default = "default_warm_entries")]
    pub warm_entries: usize,
    /// Most entries kept (the in-memory index holds one line each). Default 1 000 000.
    #[serde(default = "default_disk_entries")]
    pub max_entries: usize,
}

fn default_disk_entries() -> usize {
    1_000_000
}

/// A route's `cache:` block: its presence turns caching on for the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    /// How long a 2xx response is fresh when it says nothing itself (no
    /// `max-age`, `s-maxage`, `Expires`). Default 60 s. `0s`: a standard
    /// shared cache, storing only what responses allow (RFC 9111).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Methods cached. Default `[GET, POST]` (analysis calls are POST; the body is in the key).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Request headers that are part of the key. Default none.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Cache requests carrying `Authorization` or `Cookie`. Default false.
    #[serde(default)]
    pub allow_authorized: bool,
    /// Largest body stored for this route; default the top-level `max_object_bytes`.
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
    /// After the TTL, serve stale while one refresh runs, for this long. Default 0 (off).
    #[serde(default, with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// After the TTL, serve stale when the backend fails, for this long. Default 0 (off).
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Longest freshness a response's own `max-age`/`s-maxage` may claim. Default 1 day.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
}

/// Validated top-level cache settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Master switch.
    pub enabled: bool,
    /// L1.
    pub memory: MemoryConfig,
    /// L2, when a URL is set.
    pub redis: Option<RedisConfig>,
    /// L3, when enabled.
    pub disk: Option<DiskConfig>,
    /// Bounded wait for an in-flight identical miss.
    pub coalesce_wait: Duration,
    /// Default per-object body limit.
    pub max_object_bytes: u64,
}

/// Validated L2 settings; `Debug` shows the URL [`redacted`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Server URL (`redis://` or `rediss://`); may hold credentials: show it [`redacted`].
    pub url: String,
    /// ACL user name.
    pub username: Option<String>,
    /// Password, from the environment.
    pub password: Option<Secret>,
    /// TLS settings, when TLS is on.
    pub tls: Option<RedisTls>,
    /// Pool size.
    pub pool_size: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-command timeout on the request path.
    pub command_timeout: Duration,
    /// Failures that open the circuit.
    pub failure_threshold: u32,
    /// Open time before a probe.
    pub cooldown: Duration,
    /// Key namespace.
    pub key_prefix: String,
    /// Admin purge timeout.
    pub purge_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted(&self.url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls", &self.tls.is_some())
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// `cache.redis.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    /// PEM file of the CA certificates that sign the server's; default the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// A password: never shown by `Debug`, so never in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The password itself, to hand to the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// TLS to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// Roots other than the system's: the PEM certificates read from `ca_file`.
    pub ca_pem: Option<Vec<u8>>,
}

/// A Redis URL with any password in it replaced by `***`, for logs and errors.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// Validated L3 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Database file.
    pub path: PathBuf,
    /// Byte bound (compressed).
    pub max_bytes: u64,
    /// zstd level.
    pub zstd_level: i32,
    /// Entries warmed into L1 at start.
    pub warm_entries: usize,
    /// Entry bound.
    pub max_entries: usize,
}

/// Validated per-route cache rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Fresh time of a 2xx that gives none itself; zero: only what responses allow.
    pub ttl: Duration,
    /// Cached methods.
    pub methods: Vec<http::Method>,
    /// Request headers in the key.
    pub vary: Vec<http::HeaderName>,
    /// Cache requests with credentials.
    pub allow_authorized: bool,
    /// Body limit.
    pub max_object_bytes: u64,
    /// Stale-while-revalidate window.
    pub stale_while_revalidate: Duration,
    /// Stale-if-error window.
    pub stale_if_error: Duration,
    /// Cap on a response's own freshness lifetime.
    pub max_ttl: Duration,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            enabled: true,
            memory: MemoryConfig::default(),
            redis: RawRedis::default(),
            disk: RawDisk::default(),
            coalesce_wait: default_coalesce_wait(),
            max_object_bytes: default_max_object(),
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_bytes: default_memory_bytes(),
            eviction: EvictionPolicyKind::default(),
        }
    }
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: None,
            username: None,
            password_env: None,
            tls: None,
            pool_size: default_pool_size(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
            failure_threshold: default_failure_threshold(),
            cooldown: default_cooldown(),
            key_prefix: default_key_prefix(),
            purge_timeout: default_purge_timeout(),
        }
    }
}

impl Default for RawDisk {
    fn default() -> Self {
        RawDisk {
            enabled: true,
            path: default_disk_path(),
            max_bytes: default_disk_bytes(),
            zstd_level: default_zstd_level(),
            warm_entries: default_warm_entries(),
            max_entries: default_disk_entries(),
        }
    }
}

impl Default for CacheConfig {
    /// The embedded default: L1 + L3, no Redis.
    fn default() -> Self {
        let src = Source {
            file: PathBuf::from("<default>"),
            index: Default::default(),
        };
        validate(RawCache::default(), &src, &mut Vec::new())
    }
}

/// Checks the top-level section; problems are pushed onto `errors` under `cache.`.
pub fn validate(raw: RawCache, src: &Source, errors: &mut Vec<ConfigError>) -> CacheConfig {
    let positive = |errors: &mut Vec<ConfigError>, field: &str, ok: bool| {
        if !ok {
            errors.push(src.error(format!("cache.{field}"), "must be more than 0"));
        }
    };
    positive(errors, "memory.max_bytes", raw.memory.max_bytes > 0);
    positive(errors, "max_object_bytes", raw.max_object_bytes > 0);
    positive(errors, "coalesce_wait", !raw.coalesce_wait.is_zero());
    let r = &raw.redis;
    if r.url.is_some() {
        positive(errors, "redis.pool_size", r.pool_size > 0);
        positive(
            errors,
            "redis.command_timeout",
            !r.command_timeout.is_zero(),
        );
        positive(
            errors,
            "redis.connect_timeout",
            !r.connect_timeout.is_zero(),
        );
        positive(errors, "redis.failure_threshold", r.failure_threshold > 0);
    }
    let mut tls = None;
    let mut password = None;
    if let Some(url) = r.url.as_deref() {
        let plain = url
            .strip_prefix("rediss://")
            .map(|rest| format!("redis://{rest}"));
        let expected = "expected redis://host:port[/db] or rediss://";
        if let Some(why) = redis_url_problem(plain.as_deref().unwrap_or(url), expected) {
            errors.push(src.error("cache.redis.url", why));
        }
        if plain.is_some() || r.tls.is_some() {
            tls = Some(redis_tls(r.tls.as_ref(), src, errors));
        }
        if let Some(var) = &r.password_env {
            match std::env::var(var) {
                Ok(p) if !p.is_empty() => password = Some(Secret(p)),
                _ => errors.push(src.error(
                    "cache.redis.password_env",
                    format!("environment variable {var} is not set"),
                )),
            }
        }
    }
    let d = &raw.disk;
    if d.enabled {
        positive(errors, "disk.max_bytes", d.max_bytes > 0);
        positive(errors, "disk.max_entries", d.max_entries > 0);
        if !(1..=19).contains(&d.zstd_level) {
            errors.push(src.error("cache.disk.zstd_level", "must be between 1 and 19"));
        }
    }
    CacheConfig {
        enabled: raw.enabled,
        memory: raw.memory,
        redis: raw.redis.url.clone().map(|url| RedisConfig {
            url,
            username: r.username.clone(),
            password,
            tls,
            pool_size: r.pool_size,
            connect_timeout: r.connect_timeout,
            command_timeout: r.command_timeout,
            failure_threshold: r.failure_threshold,
            cooldown: r.cooldown,
            key_prefix: r.key_prefix.clone(),
            purge_timeout: r.purge_timeout,
        }),
        disk: d.enabled.then(|| DiskConfig {
            path: d.path.clone(),
            max_bytes: d.max_bytes,
            zstd_level: d.zstd_level,
            warm_entries: d.warm_entries,
            max_entries: d.max_entries,
        }),
        coalesce_wait: raw.coalesce_wait,
        max_object_bytes: raw.max_object_bytes,
    }
}

/// Checks a route's block at field path `at` (like `routes[0].cache`).
pub fn validate_route(
    at: &str,
    raw: RawRouteCache,
    top: &CacheConfig,
    src: &Source,
    errors: &mut Vec<ConfigError>,
) -> RouteCache {
    if raw.max_object_bytes == Some(0) {
        errors.push(src.error(format!("{at}.max_object_bytes"), "must be more than 0"));
    }
    let mut methods = Vec::new();
    for (i, m) in raw.methods.iter().enumerate() {
        match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => errors.push(src.error(format!("{at}.methods[{i}]"), "not an HTTP method")),
        }
    }
    let mut vary = Vec::new();
    for (i, h) in raw.vary.iter().enumerate() {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(h) => vary.push(h),
            Err(_) => errors.push(src.error(format!("{at}.vary[{i}]"), "not a header name")),
        }
    }
    RouteCache {
        ttl: raw.ttl,
        methods,
        vary,
        allow_authorized: raw.allow_authorized,
        max_object_bytes: raw.max_object_bytes.unwrap_or(top.max_object_bytes),
        stale_while_revalidate: raw.stale_while_revalidate,
        stale_if_error: raw.stale_if_error,
        max_ttl: raw.max_ttl,
    }
}

/// Reads the CA file of `cache.redis.tls`, if any.
fn redis_tls(raw: Option<&RawRedisTls>, src: &Source, errors: &mut Vec<ConfigError>) -> RedisTls {
    let Some(path) = raw.and_then(|t| t.ca_file.as_ref()) else {
        return RedisTls { ca_pem: None };
    };
    let at = "cache.redis.tls.ca_file";
    match std::fs::read(path) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
            RedisTls { ca_pem: Some(pem) }
        }
        Ok(_) => {
            errors.push(src.error(at, format!("{}: no PEM certificate in it", path.display())));
            RedisTls { ca_pem: None }
        }
        Err(e) => {
            errors.push(src.error(at, format!("{}: {e}", path.display())));
            RedisTls { ca_pem: None }
        }
    }
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(86_400)
}

fn yes() -> bool {
    true
}
fn default_coalesce_wait() -> Duration {
    Duration::from_secs(5)
}
fn default_max_object() -> u64 {
    1024 * 1024
}
fn default_memory_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_pool_size() -> usize {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_command_timeout() -> Duration {
    Duration::from_millis(50)
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_cooldown() -> Duration {
    Duration::from_secs(2)
}
fn default_key_prefix() -> String {
    "gantry:cache:".into()
}
fn default_purge_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_disk_path() -> PathBuf {
    PathBuf::from("var/cache/gantry-cache.redb")
}
fn default_disk_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_zstd_level() -> i32 {
    3
}
fn default_warm_entries() -> usize {
    10_000
}
fn default_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_methods() -> Vec<String> {
    vec!["GET".into(), "POST".into()]
}

/// Why `url` is not a plain `redis://` URL fred can use (`expected` says
/// what is accepted), or `None` when it is one.
pub fn redis_url_problem(url: &str, expected: &'static str) -> Option<String> {
    let parsed = match url {
        u if u.starts_with("redis://") => fred::types::config::Config::from_url(u).map(|_| ()),
        _ => Err(fred::error::Error::new(
            fred::error::ErrorKind::Config,
            expected,
        )),
    };
    parsed.err().map(|e| format!("not a Redis URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        cache: RawCache,
        #[serde(default)]
        routes: Vec<Route>,
    }

    #[derive(Deserialize)]
    struct Route {
        cache: RawRouteCache,
    }

    fn load(text: &str) -> Result<(CacheConfig, Vec<RouteCache>), Vec<String>> {
        let (doc, src) = crate::yaml::parse::<Doc>(Path::new("g.yaml"), text)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        let mut errors = Vec::new();
        let top = validate(doc.cache, &src, &mut errors);
        let routes = doc
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                validate_route(
                    &format!("routes[{i}].cache"),
                    r.cache,
                    &top,
                    &src,
                    &mut errors,
                )
            })
            .collect();
        if errors.is_empty() {
            Ok((top, routes))
        } else {
            Err(errors.iter().map(|e| e.to_string()).collect())
        }
    }

    #[test]
    fn defaults_are_memory_and_disk_without_redis() {
        let (c, _) = load("{}").unwrap();
        assert_eq!(c, CacheConfig::default());
        assert!(c.redis.is_none() && c.disk.is_some());
        assert_eq!(c.memory.eviction, EvictionPolicyKind::ClockPro);
        let (c, r) =
            load("cache: {redis: {url: 'redis://127.0.0.1:1'}}\nroutes: [{cache: {}}]\n").unwrap();
        assert_eq!(c.redis.unwrap().command_timeout, Duration::from_millis(50));
        assert_eq!(r[0].methods, vec![http::Method::GET, http::Method::POST]);
        assert_eq!(r[0].max_object_bytes, 1024 * 1024);
    }

    #[test]
    fn redis_credentials_come_from_the_environment_and_never_show() {
        std::env::set_var("GANTRY_TEST_REDIS_PW", "hunter2");
        let (c, _) = load(
            "cache:\n  redis:\n    url: 'rediss://cache.example:6380/1'\n    username: gantry\n    password_env: GANTRY_TEST_REDIS_PW\n",
        )
        .unwrap();
        let r = c.redis.unwrap();
        assert_eq!(r.password.as_ref().map(Secret::expose), Some("hunter2"));
        assert_eq!(r.username.as_deref(), Some("gantry"));
        assert_eq!(
            r.tls,
            Some(RedisTls { ca_pem: None }),
            "rediss:// means TLS"
        );
        assert!(!format!("{r:?}").contains("hunter2"));
        let errs = load(
            "cache:\n  redis:\n    url: 'redis://h'\n    password_env: GANTRY_TEST_UNSET_VAR\n    tls: {ca_file: /nonexistent/ca.pem}\n",
        )
        .unwrap_err();
        assert!(
            errs[0].starts_with("g.yaml:5:11: cache.redis.tls.ca_file: /nonexistent/ca.pem:"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains(
                "cache.redis.password_env: environment variable GANTRY_TEST_UNSET_VAR is not set"
            ),
            "{errs:?}"
        );
        assert_eq!(redacted("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redacted("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn every_error_is_located() {
        let text = "cache:\n  memory:\n    max_bytes: 0\n  redis:\n    url: 'http://x'\n  disk:\n    zstd_level: 40\nroutes:\n  - cache:\n      max_object_bytes: 0\n      methods: [GET, 'B AD']\n      vary: ['a b']\n";
        let errs = load(text).unwrap_err();
        let want = [
            "g.yaml:3:5: cache.memory.max_bytes: must be more than 0",
            "g.yaml:5:5: cache.redis.url: not a Redis URL",
            "g.yaml:7:5: cache.disk.zstd_level: must be between 1 and 19",
            "g.yaml:10:7: routes[0].cache.max_object_bytes: must be more than 0",
            "g.yaml:11:22: routes[0].cache.methods[1]: not an HTTP method",
            "g.yaml:12:14: routes[0].cache.vary[0]: not a header name",
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (e, w) in errs.iter().zip(want) {
            assert!(e.starts_with(w), "{e} should start with {w}");
        }
    }

    #[test]
    fn unknown_fields_and_policies_are_rejected() {
        let errs = load("cache:\n  memory:\n    eviction: fifo\n").unwrap_err();
        assert!(errs[0].contains("cache.memory.eviction"), "{errs:?}");
        let errs = load("routes:\n  - cache:\n      tll: 5s\n").unwrap_err();
        assert!(errs[0].contains("unknown field `tll`"), "{errs:?}");
    }
}
