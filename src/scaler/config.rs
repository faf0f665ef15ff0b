//! The `scaler:` section of `gantry.yaml`: where policies are and where replicas run.
//!
//! The serde types with their defaults are the validated types too: nothing
//! in the section needs converting. [`check`] reports what is wrong, located,
//! onto the list of the proxy config's own validation, so every error of the
//! file is reported at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::yaml::{ConfigError, Source};

/// `scaler:` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalerConfig {
    /// Directory of policy files, one per pool; relative to the working directory. Default `policies`.
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// Where replicas run: `local` (child processes) or `docker`. Default `local`.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Settings of the local-process runtime.
    #[serde(default)]
    pub local: LocalConfig,
    /// Settings of the Docker runtime.
    #[serde(default)]
    pub docker: DockerConfig,
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
        }
    }
}

/// Checks the section; errors are located under `scaler.`.
pub fn check(config: &ScalerConfig, src: &Source, errors: &mut Vec<ConfigError>) {
    let docker = &config.docker;
    if docker.image.trim().is_empty() {
        errors.push(src.error("scaler.docker.image", "must name an image"));
    }
    if docker.network.trim().is_empty() {
        errors.push(src.error("scaler.docker.network", "must name a network"));
    }
    if docker.port == 0 {
        errors.push(src.error("scaler.docker.port", "must be a port number"));
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
    }

    #[test]
    fn every_error_is_located() {
        let text =
            "scaler:\n  runtime: docker\n  docker:\n    image: ' '\n    network: ''\n    port: 0\n";
        let (_, errors) = load(text);
        assert_eq!(
            errors,
            [
                "g.yaml:4:5: scaler.docker.image: must name an image",
                "g.yaml:5:5: scaler.docker.network: must name a network",
                "g.yaml:6:5: scaler.docker.port: must be a port number",
            ]
        );
    }
}
