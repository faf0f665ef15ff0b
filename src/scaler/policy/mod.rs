//! Scaling policies: validated types, loading a directory, checking files, the JSON Schema.
//!
//! A policy file is read into [`raw::RawPolicy`] (serde, located type errors)
//! and checked into a [`Policy`]; every semantic error names file, line,
//! column and field path through [`Source::error`]. Loading never stops at the
//! first bad file: [`load_dir`] returns the good policies and every error.

pub mod raw;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::yaml::{self, ConfigError, ConfigErrors, Source};
pub use raw::{Behavior, Day, MetricKind, Panic, ScaleToZero};
pub use validate::{parse_hours, parse_offset, validate};

/// A validated scaling policy for one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The pool scaled.
    pub pool: String,
    /// Floor while active (at least 1 when scale-to-zero is on).
    pub min: u32,
    /// Ceiling.
    pub max: u32,
    /// Warm spares kept started outside the pool (0: none).
    pub warm: u32,
    /// Time between evaluations.
    pub interval: Duration,
    /// Averaging window of metric values.
    pub window: Duration,
    /// Metric rules, in file order.
    pub metrics: Vec<MetricRule>,
    /// Scale-up behaviour.
    pub up: Behavior,
    /// Scale-down behaviour.
    pub down: Behavior,
    /// Panic mode, if on.
    pub panic: Option<Panic>,
    /// Scale to zero, if on.
    pub scale_to_zero: Option<ScaleToZero>,
    /// Schedule floors.
    pub schedule: Vec<Floor>,
    /// Schedule clock offset from UTC, in minutes.
    pub utc_offset_minutes: i32,
    /// CPU limit per replica, cores.
    pub cpus: Option<f64>,
    /// The workers' `--model`, when the policy sets one.
    pub model: Option<String>,
    /// Memory limit per replica, MiB (Docker).
    pub memory_mib: u64,
    /// Process and thread limit per replica (Docker).
    pub pids: u32,
    /// Longest wait for a new replica's `/ready`.
    pub ready_timeout: Duration,
    /// A ready replica unhealthy this long is replaced; zero: never.
    pub replace_unhealthy_after: Duration,
    /// Longest drain of a removed replica.
    pub drain_timeout: Duration,
    /// The file it came from.
    pub file: PathBuf,
}

/// One metric with its rule.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRule {
    /// What is read.
    pub kind: MetricKind,
    /// How it turns into a replica count.
    pub rule: Rule,
    /// Where it is read from.
    pub source: MetricSource,
}

/// How a metric value becomes a recommendation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// `ceil(replicas * value / target)`, unchanged within `tolerance`.
    Target {
        /// Aimed-for value.
        target: f64,
        /// Dead band as a fraction.
        tolerance: f64,
    },
    /// `+step` above `up_above`, `-step` below `down_below`.
    Threshold {
        /// Scale-up threshold.
        up_above: f64,
        /// Scale-down threshold.
        down_below: f64,
        /// Replicas per step.
        step: u32,
    },
}

/// Where a metric is read.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// The proxy's counters, the runtime's stats and the workers' `/metrics`.
    Proxy,
    /// A Prometheus instant query.
    Prometheus {
        /// API base URL.
        url: String,
        /// PromQL.
        query: String,
    },
}

/// A schedule floor; minutes are of the day in the policy's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Floor {
    /// Days it applies (empty: all).
    pub days: Vec<Day>,
    /// Start minute, inclusive.
    pub from: u32,
    /// End minute, exclusive; `from == to` means all day.
    pub to: u32,
    /// The floor.
    pub min: u32,
}

/// Reads and validates one policy file.
pub fn load(path: &Path) -> Result<Policy, ConfigErrors> {
    let (raw, source) = yaml::read::<raw::RawPolicy>(path)?;
    validate(raw, &source)
}

/// Parses and validates policy text as if read from `file`.
pub fn from_str(file: &Path, text: &str) -> Result<Policy, ConfigErrors> {
    let (raw, source) = yaml::parse::<raw::RawPolicy>(file, text)?;
    validate(raw, &source)
}

/// The policies of a directory (`*.yaml`, `*.yml`, not recursive), by pool,
/// and every error found; a pool named twice keeps its first file.
pub fn load_dir(dir: &Path) -> (BTreeMap<String, Policy>, Vec<ConfigError>) {
    let mut policies = BTreeMap::new();
    let mut errors = Vec::new();
    let files = match yaml_files(dir, false) {
        Ok(f) => f,
        Err(e) => return (policies, vec![e]),
    };
    for file in files {
        match load(&file) {
            Ok(p) => {
                if let Some(first) = policies.get(&p.pool) {
                    let first: &Policy = first;
                    errors.push(duplicate(&file, &p.pool, &first.file));
                } else {
                    policies.insert(p.pool.clone(), p);
                }
            }
            Err(e) => errors.extend(e.0),
        }
    }
    (policies, errors)
}

fn duplicate(file: &Path, pool: &str, first: &Path) -> ConfigError {
    let src = yaml::read::<serde_yaml::Value>(file)
        .map(|(_, s)| s)
        .unwrap_or_else(|_| Source {
            file: file.to_path_buf(),
            index: Default::default(),
        });
    src.error(
        "pool",
        format!(
            "pool `{pool}` already has a policy in {}; one policy per pool",
            first.display()
        ),
    )
}

/// Checks every policy file under each path (directories recursively) and
/// returns how many files were read, and every error.
pub fn check(paths: &[PathBuf]) -> (usize, Vec<ConfigError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            match yaml_files(p, true) {
                Ok(f) => files.extend(f),
                Err(e) => errors.push(e),
            }
        } else {
            files.push(p.clone());
        }
    }
    for f in &files {
        if let Err(e) = load(f) {
            errors.extend(e.0);
        }
    }
    (files.len(), errors)
}

/// YAML files in `dir`, sorted; with `recursive`, in subdirectories too.
pub fn yaml_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError {
        file: dir.to_path_buf(),
        line: None,
        column: None,
        field: ".".into(),
        message: format!("cannot read policy directory: {e}"),
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if recursive {
                out.extend(yaml_files(&path, true)?);
            }
        } else if is_yaml(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a path names a policy file.
pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The JSON Schema of a policy file, pretty-printed.
pub fn schema() -> String {
    let schema = schemars::schema_for!(raw::RawPolicy);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}
