//! The `scaler:` section of `gantry.yaml`: where policies are and where replicas run.
//!
//! Raw serde types with their defaults, validated into [`ScalerConfig`] by
//! [`validate`], which the proxy config's own validation calls so every
//! error of the file is reported at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::yaml::{ConfigError, Source};

/// `scaler:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaler {
    /// Directory of policy files, one per pool; relative to the working directory. Default `policies`.
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// Where replicas run: `local` (child processes) or `docker`. Default `local`.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Settings of the local-process runtime.
    #[serde(default)]
    pub local: RawLocal,
    /// Settings of the Docker runtime.
    #[serde(default)]
    pub docker: RawDocker,
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
}

/// Local processes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
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

impl Default for RawLocal {
    fn default() -> Self {
        RawLocal {
            program: None,
            args: default_local_args(),
            env: BTreeMap::new(),
        }
    }
}

/// Docker containers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
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
}

impl Default for RawDocker {
    fn default() -> Self {
        RawDocker {
            image: default_image(),
            network: default_network(),
            port: default_port(),
            publish: true,
            cmd: None,
            env: BTreeMap::new(),
        }
    }
}

/// The validated scaler section.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerConfig {
    /// Policy directory.
    pub policies: PathBuf,
    /// Which runtime.
    pub runtime: RuntimeKind,
    /// Local-process settings.
    pub local: LocalConfig,
    /// Docker settings.
    pub docker: DockerConfig,
}

/// Validated local-process settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// Program; `None` is this binary.
    pub program: Option<PathBuf>,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
}

/// Validated Docker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// Image.
    pub image: String,
    /// Network.
    pub network: String,
    /// Container port.
    pub port: u16,
    /// Publish on loopback.
    pub publish: bool,
    /// Command override.
    pub cmd: Option<Vec<String>>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
}

/// Checks the raw section; errors are located under `scaler.`.
pub fn validate(raw: RawScaler, src: &Source, errors: &mut Vec<ConfigError>) -> ScalerConfig {
    if raw.docker.image.trim().is_empty() {
        errors.push(src.error("scaler.docker.image", "must name an image"));
    }
    if raw.docker.network.trim().is_empty() {
        errors.push(src.error("scaler.docker.network", "must name a network"));
    }
    if raw.docker.port == 0 {
        errors.push(src.error("scaler.docker.port", "must be a port number"));
    }
    ScalerConfig {
        policies: raw.policies,
        runtime: raw.runtime,
        local: LocalConfig {
            program: raw.local.program,
            args: raw.local.args,
            env: raw.local.env,
        },
        docker: DockerConfig {
            image: raw.docker.image,
            network: raw.docker.network,
            port: raw.docker.port,
            publish: raw.docker.publish,
            cmd: raw.docker.cmd,
            env: raw.docker.env,
        },
    }
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
