//! The `scaler:` section of `gantry.yaml`: where policies are and where replicas run.
//!
//! The serde types with their defaults are the validated types too: nothing
//! in the section needs converting. [`check`] reports what is wrong, located,
//! onto the list of the proxy config's own validation, so every error of the
//! file is reported at once. The one value filled in after reading is the
//! deployment name, whose default comes from where the file is
//! ([`ScalerConfig::resolve`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::yaml::{ConfigError, Source};

/// `scaler:` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalerConfig {
    /// Directory of policy files, one per pool; relative to the working directory. Default `policies`.
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// Where replicas run: `local` (child processes), `docker` (containers)
    /// or `swarm` (a Docker Swarm service per pool). Default `local`.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Name of this deployment, the `gantry.deployment` label of every
    /// container it starts. The scaler lists, adopts, drains, stops and
    /// cleans only containers with its own name, so two deployments on one
    /// engine with pools of the same name leave each other alone. Letters,
    /// digits, `.`, `_`, `-`; at most 63. Default: derived from the config
    /// file's canonical path (`<directory name>-<8 hex digits>`; the embedded
    /// config: the working directory's), the same on every run from the same
    /// file. Set it to keep a deployment's containers when the file moves.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Settings of the local-process runtime.
    #[serde(default)]
    pub local: LocalConfig,
    /// Settings of the Docker runtime; the Swarm runtime's tasks take their
    /// image, port, command, environment and user from here too.
    #[serde(default)]
    pub docker: DockerConfig,
    /// Settings of the Swarm runtime.
    #[serde(default)]
    pub swarm: SwarmConfig,
    /// One scaler in charge when several processes run the scaler of this
    /// deployment: they compete for a lease in Redis and only its holder acts.
    /// Absent: every process acts (run one scaler per deployment).
    #[serde(default)]
    pub lease: Option<LeaseConfig>,
}

/// The scaler lease (see `scaler::lease`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// Redis URL: `redis://[user:password@]host:port[/db]` (no TLS yet). Required.
    pub redis: String,
    /// How long a lease lasts unrenewed: a leader that dies without
    /// releasing is replaced within it. Renewed every third. Default 10s; at least 1s.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub ttl: std::time::Duration,
}

/// Which runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// `gantry worker` child processes on loopback ports.
    #[default]
    Local,
    /// Containers through the Docker Engine API.
    Docker,
    /// A Docker Swarm service per pool, scaled by its replica count.
    Swarm,
}

/// A Swarm service per pool (see `scaler::runtime::swarm`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    /// Overlay network the tasks join (created, attachable, if missing). Default `gantry-swarm`.
    #[serde(default = "default_swarm_network")]
    pub network: String,
    /// Publish the worker port in host mode and send traffic to each task's
    /// `<node address>:<published port>`: for a proxy outside the overlay
    /// network. `false`: the tasks' addresses on `network`, from the
    /// `tasks.<service>` DNS name, for a proxy running as a Swarm service on
    /// that network (docker/swarm/stack.yml). Default true.
    #[serde(default = "yes")]
    pub publish: bool,
    /// Time a task gets to finish its requests between SIGTERM and SIGKILL
    /// when the service shrinks. Default 30s.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub stop_grace_period: std::time::Duration,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            network: default_swarm_network(),
            publish: true,
            stop_grace_period: default_grace(),
        }
    }
}

/// Local processes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Program to run. Default: this `gantry` binary.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// Arguments; `{port}` is replaced by a free loopback port, else
    /// `--listen 127.0.0.1:<port>` is appended.
    /// Default `[worker, --model, models/phishing-url]`.
    #[serde(default = "default_local_args")]
    pub args: Vec<String>,
    /// Extra environment variables. Default none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            program: None,
            args: default_local_args(),
            env: BTreeMap::new(),
        }
    }
}

/// Docker containers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Worker image. Default `gantry-worker:0.1.0`.
    #[serde(default = "default_image")]
    pub image: String,
    /// User-defined network the containers join (created if missing). Default `gantry`.
    #[serde(default = "default_network")]
    pub network: String,
    /// Port the worker listens on inside the container. Default 8000.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Publish the port on 127.0.0.1 (random host port) and send traffic
    /// there: for a proxy on the host. `false`: use the container's address on
    /// `network`, for a proxy in a container on that network. Default true.
    #[serde(default = "yes")]
    pub publish: bool,
    /// Arguments after the image's entrypoint. Default: the image's own.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Extra environment variables. Default none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `uid:gid` the worker runs as; never root. Default `65534:65534` (nobody).
    #[serde(default = "default_user")]
    pub user: String,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            image: default_image(),
            network: default_network(),
            port: default_port(),
            publish: true,
            cmd: None,
            env: BTreeMap::new(),
            user: default_user(),
        }
    }
}

impl ScalerConfig {
    /// The deployment name: the configured one, else the default for a
    /// config that was never read from a file (`default`).
    pub fn deployment(&self) -> &str {
        self.deployment.as_deref().unwrap_or("default")
    }

    /// Fills in the default deployment name for a config read from `file`.
    pub fn resolve(mut self, file: &Path) -> ScalerConfig {
        if self.deployment.is_none() {
            self.deployment = Some(default_deployment(file));
        }
        self
    }
}

/// `<directory name>-<8 hex digits of blake3(canonical path)>`: readable in
/// `docker ps`, different for two checkouts with the same directory name,
/// and the same on every run from the same file. A file that cannot be
/// canonicalized (the embedded config) counts from the working directory.
pub fn default_deployment(file: &Path) -> String {
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| {
        let cwd = std::env::current_dir().unwrap_or_default();
        std::fs::canonicalize(&cwd).unwrap_or(cwd).join(file)
    });
    let hash = blake3::hash(path.as_os_str().as_encoded_bytes()).to_hex();
    let dir: String = path
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().chars().map(label_char).collect())
        .unwrap_or_default();
    let dir = dir.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let dir: String = dir.chars().take(DEPLOYMENT_MAX - 9).collect();
    if dir.is_empty() {
        format!("gantry-{}", &hash[..8])
    } else {
        format!("{dir}-{}", &hash[..8])
    }
}

/// Longest deployment name (a DNS label's length: it fits anywhere).
const DEPLOYMENT_MAX: usize = 63;

fn label_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
        c
    } else {
        '-'
    }
}

/// Why `name` is not a deployment name, if it is not.
fn bad_deployment(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > DEPLOYMENT_MAX {
        return Some("must be 1 to 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("must start with a letter or digit");
    }
    if name.chars().any(|c| label_char(c) != c) {
        return Some("may hold only letters, digits, `.`, `_` and `-`");
    }
    None
}

/// Whether `user` (`uid[:gid]` or a name) is root.
fn is_root(user: &str) -> bool {
    let who = user.split(':').next().unwrap_or_default().trim();
    who.is_empty() || who == "root" || who.parse::<u32>() == Ok(0)
}

/// Checks the section; errors are located under `scaler.`.
pub fn check(config: &ScalerConfig, src: &Source, errors: &mut Vec<ConfigError>) {
    if let Some(why) = config.deployment.as_deref().and_then(bad_deployment) {
        errors.push(src.error("scaler.deployment", why));
    }
    let docker = &config.docker;
    if docker.image.trim().is_empty() {
        errors.push(src.error("scaler.docker.image", "must name an image"));
    }
    let network = docker.network.trim();
    if network.is_empty() {
        errors.push(src.error("scaler.docker.network", "must name a network"));
    } else if matches!(network, "host" | "none") || network.starts_with("container:") {
        let msg = "must be a user-defined network (not `host`, `none` or `container:`)";
        errors.push(src.error("scaler.docker.network", msg));
    }
    if docker.port == 0 {
        errors.push(src.error("scaler.docker.port", "must be a port number"));
    }
    if is_root(&docker.user) {
        let msg = "must name a user other than root, like `65534:65534`";
        errors.push(src.error("scaler.docker.user", msg));
    }
    if config.swarm.network.trim().is_empty() {
        errors.push(src.error("scaler.swarm.network", "must name a network"));
    }
    if let Some(lease) = &config.lease {
        let expected =
            "expected redis://[user:password@]host:port[/db] (TLS is not supported here yet)";
        if let Some(why) = crate::cache::config::redis_url_problem(&lease.redis, expected) {
            errors.push(src.error("scaler.lease.redis", why));
        }
        if lease.ttl < std::time::Duration::from_secs(1) {
            errors.push(src.error("scaler.lease.ttl", "must be at least 1s"));
        }
    }
}

fn default_swarm_network() -> String {
    "gantry-swarm".into()
}
fn default_grace() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_lease_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn default_policies() -> PathBuf {
    PathBuf::from("policies")
}
fn default_local_args() -> Vec<String> {
    ["worker", "--model", "models/phishing-url"]
        .map(String::from)
        .to_vec()
}
fn default_image() -> String {
    format!("gantry-worker:{}", env!("CARGO_PKG_VERSION"))
}
fn default_network() -> String {
    "gantry".into()
}
fn default_port() -> u16 {
    8000
}
fn yes() -> bool {
    true
}
/// `nobody`: owns nothing in the image, can read what the image ships.
fn default_user() -> String {
    "65534:65534".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        scaler: ScalerConfig,
    }

    /// The section of `text` and every error `check` reports for it.
    fn load(text: &str) -> (ScalerConfig, Vec<String>) {
        let (doc, src) = crate::yaml::parse::<Doc>(Path::new("g.yaml"), text).unwrap();
        let mut errors = Vec::new();
        check(&doc.scaler, &src, &mut errors);
        (doc.scaler, errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn an_empty_section_gets_the_defaults() {
        let (c, errors) = load("scaler: {}\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.policies, PathBuf::from("policies"));
        assert_eq!(c.runtime, RuntimeKind::Local);
        assert_eq!(c.local.args, default_local_args());
        assert_eq!((c.docker.port, c.docker.publish), (8000, true));
        assert_eq!(c.docker.user, "65534:65534");
        assert_eq!(c.swarm, SwarmConfig::default());
        assert_eq!(c.swarm.network, "gantry-swarm");
        assert_eq!(c.deployment, None);
    }

    #[test]
    fn the_default_deployment_is_stable_and_differs_by_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a/gantry"), dir.path().join("b/gantry"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("gantry.yaml"), "").unwrap();
        }
        let name = |d: &Path| default_deployment(&d.join("gantry.yaml"));
        assert_eq!(name(&a), name(&a));
        assert_ne!(name(&a), name(&b));
        assert!(name(&a).starts_with("gantry-"), "{}", name(&a));
        assert_eq!(bad_deployment(&name(&a)), None);
        let embedded = default_deployment(Path::new("<embedded gantry.yaml>"));
        assert_eq!(bad_deployment(&embedded), None, "{embedded}");
        let c = load("scaler: {deployment: prod}\n").0.resolve(&a);
        assert_eq!(c.deployment(), "prod");
    }

    /// The last part of the first error for `scaler: <section>`, if any.
    fn check_section(section: &str, want: Option<&str>) {
        let (_, errors) = load(&format!("scaler: {section}\n"));
        let got = errors
            .first()
            .map(|e| e.rsplit(": ").next().unwrap().to_string());
        assert_eq!(got.as_deref(), want, "{section}");
    }

    #[test]
    fn deployment_names_and_users() {
        let long = format!("{{deployment: {}}}", "x".repeat(64));
        let length = Some("must be 1 to 63 characters");
        check_section("{deployment: prod-2.eu_west}", None);
        check_section("{deployment: ''}", length);
        check_section(&long, length);
        check_section(
            "{deployment: -x}",
            Some("must start with a letter or digit"),
        );
        let chars = Some("may hold only letters, digits, `.`, `_` and `-`");
        check_section("{deployment: 'a=b'}", chars);
        let root = Some("must name a user other than root, like `65534:65534`");
        check_section("{docker: {user: '1000:1000'}}", None);
        check_section("{docker: {user: '0'}}", root);
        check_section("{docker: {user: '0:65534'}}", root);
        check_section("{docker: {user: root}}", root);
    }

    #[test]
    fn every_error_is_located() {
        let text =
            "scaler:\n  runtime: docker\n  docker:\n    image: ' '\n    network: ''\n    port: 0\n    user: '0:0'\n";
        let (_, errors) = load(text);
        assert_eq!(
            errors,
            [
                "g.yaml:4:5: scaler.docker.image: must name an image",
                "g.yaml:5:5: scaler.docker.network: must name a network",
                "g.yaml:6:5: scaler.docker.port: must be a port number",
                "g.yaml:7:5: scaler.docker.user: must name a user other than root, like `65534:65534`",
            ]
        );
        let (c, errors) =
            load("scaler:\n  runtime: swarm\n  swarm: {network: '', stop_grace_period: 5s}\n");
        assert_eq!(c.runtime, RuntimeKind::Swarm);
        assert_eq!(c.swarm.stop_grace_period, std::time::Duration::from_secs(5));
        assert_eq!(
            errors,
            ["g.yaml:3:11: scaler.swarm.network: must name a network"]
        );
        let (_, errors) = load("scaler:\n  docker: {network: host}\n");
        assert_eq!(
            errors,
            ["g.yaml:2:12: scaler.docker.network: must be a user-defined network (not `host`, `none` or `container:`)"]
        );
    }

    #[test]
    fn a_lease_needs_a_redis_url_and_a_ttl_of_a_second() {
        let (c, errors) = load("scaler:\n  lease: {redis: 'redis://127.0.0.1:6379'}\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.lease.unwrap().ttl, std::time::Duration::from_secs(10));
        let (_, errors) = load("scaler:\n  lease:\n    redis: 'http://x'\n    ttl: 500ms\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("g.yaml:3:5: scaler.lease.redis: not a Redis URL"),
            "{errors:?}"
        );
        assert_eq!(
            errors[1],
            "g.yaml:4:5: scaler.lease.ttl: must be at least 1s"
        );
    }
}
