//! Scaling policies: validated types, loading a directory, checking files, the JSON Schema.
//!
//! A policy file is read into [`raw::RawPolicy`] (serde, located type errors)
//! and checked into a [`Policy`]; every semantic error names file, line,
//! column and field path through [`Source::error`]. Loading never stops at the
//! first bad file: [`load_dir`] returns the good policies and every error.

pub mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{ConfigError, ConfigErrors, Source};
pub use raw::{Day, MetricKind};

/// A validated scaling policy for one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The pool scaled.
    pub pool: String,
    /// Floor while active (at least 1 when scale-to-zero is on).
    pub min: u32,
    /// Ceiling.
    pub max: u32,
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
    /// Memory limit per replica, MiB.
    pub memory_mib: Option<u64>,
    /// Longest wait for a new replica's `/ready`.
    pub ready_timeout: Duration,
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

/// Validated settings for one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behavior {
    /// Stabilization window.
    pub stabilization: Duration,
    /// Cooldown.
    pub cooldown: Duration,
    /// Most replicas per period.
    pub max_step: u32,
    /// Period of `max_step`.
    pub period: Duration,
}

/// Validated panic mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Panic {
    /// Short window.
    pub window: Duration,
    /// desired/ready ratio that starts panic.
    pub threshold: f64,
}

/// Validated scale to zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleToZero {
    /// Idle time before zero.
    pub after: Duration,
    /// Proxy hold timeout.
    pub hold_timeout: Duration,
    /// Proxy hold queue bound.
    pub hold_queue: u32,
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
    let (raw, source) = crate::config::source::read::<raw::RawPolicy>(path)?;
    validate(raw, &source)
}

/// Parses and validates policy text as if read from `file`.
pub fn from_str(file: &Path, text: &str) -> Result<Policy, ConfigErrors> {
    let (raw, source) = crate::config::source::parse::<raw::RawPolicy>(file, text)?;
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
    let src = crate::config::source::read::<serde_yaml::Value>(file)
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

/// Checks a raw policy, collecting every error.
pub fn validate(raw: raw::RawPolicy, src: &Source) -> Result<Policy, ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |field: &str, msg: &str| errors.push(src.error(field, msg));
    if raw.pool.trim().is_empty() {
        err("pool", "must name a pool");
    }
    if raw.max == 0 {
        err("max", "must be at least 1");
    }
    if raw.min > raw.max {
        err("min", &format!("must be at most max ({})", raw.max));
    }
    if raw.min == 0 && raw.scale_to_zero.is_none() {
        err(
            "min",
            "0 needs `scale_to_zero` (nothing else brings an empty pool back)",
        );
    }
    if raw.interval.is_zero() {
        err("interval", "must be more than 0");
    }
    if raw.window < raw.interval {
        err("window", "must be at least `interval`");
    }
    if raw.metrics.is_empty() {
        err("metrics", "needs at least one metric");
    }
    for (name, b) in [("scale_up", &raw.scale_up), ("scale_down", &raw.scale_down)] {
        if b.max_step == 0 {
            err(&format!("{name}.max_step"), "must be at least 1");
        }
        if b.period.is_zero() {
            err(&format!("{name}.period"), "must be more than 0");
        }
    }
    if let Some(p) = &raw.panic {
        if p.window.is_zero() || p.window >= raw.window {
            err(
                "panic.window",
                "must be more than 0 and shorter than `window`",
            );
        }
        if !p.threshold.is_finite() || p.threshold <= 1.0 {
            err("panic.threshold", "must be more than 1");
        }
    }
    if let Some(z) = &raw.scale_to_zero {
        if z.hold_queue == 0 {
            err("scale_to_zero.hold_queue", "must be at least 1");
        }
        if z.hold_timeout.is_zero() {
            err("scale_to_zero.hold_timeout", "must be more than 0");
        }
    }
    if raw
        .resources
        .cpus
        .is_some_and(|c| !c.is_finite() || c <= 0.0)
    {
        err("resources.cpus", "must be more than 0");
    }
    if raw.resources.memory_mib == Some(0) {
        err("resources.memory_mib", "must be more than 0");
    }
    let offset = parse_offset(&raw.utc_offset)
        .map_err(|m| err("utc_offset", &m))
        .unwrap_or(0);
    let metrics = raw
        .metrics
        .iter()
        .enumerate()
        .filter_map(|(i, m)| validate_metric(i, m, src, &mut errors))
        .collect();
    let schedule = validate_schedule(&raw, src, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Policy {
        pool: raw.pool,
        min: raw.min,
        max: raw.max,
        interval: raw.interval,
        window: raw.window,
        metrics,
        up: behavior(&raw.scale_up),
        down: behavior(&raw.scale_down),
        panic: raw.panic.map(|p| Panic {
            window: p.window,
            threshold: p.threshold,
        }),
        scale_to_zero: raw.scale_to_zero.map(|z| ScaleToZero {
            after: z.after,
            hold_timeout: z.hold_timeout,
            hold_queue: z.hold_queue,
        }),
        schedule,
        utc_offset_minutes: offset,
        cpus: raw.resources.cpus,
        memory_mib: raw.resources.memory_mib,
        ready_timeout: raw.ready_timeout,
        drain_timeout: raw.drain_timeout,
        file: src.file.clone(),
    })
}

fn behavior(b: &raw::RawBehavior) -> Behavior {
    Behavior {
        stabilization: b.stabilization,
        cooldown: b.cooldown,
        max_step: b.max_step,
        period: b.period,
    }
}

fn validate_metric(
    i: usize,
    m: &raw::RawMetric,
    src: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<MetricRule> {
    let at = |f: &str| format!("metrics[{i}].{f}");
    let before = errors.len();
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let rule = match (m.target, m.threshold) {
        (Some(_), Some(_)) => {
            errors.push(src.error(at("threshold"), "give `target` or `threshold`, not both"));
            None
        }
        (None, None) => {
            errors.push(src.error(at("metric"), "needs a `target` or a `threshold`"));
            None
        }
        (Some(target), None) => {
            if !positive(target) {
                errors.push(src.error(at("target"), "must be more than 0"));
            }
            if !(0.0..1.0).contains(&m.tolerance) {
                errors.push(src.error(at("tolerance"), "must be at least 0 and below 1"));
            }
            if m.scale_down_below.is_some() {
                errors.push(src.error(at("scale_down_below"), "only applies to `threshold`"));
            }
            Some(Rule::Target {
                target,
                tolerance: m.tolerance,
            })
        }
        (None, Some(up_above)) => {
            let down_below = m.scale_down_below.unwrap_or(up_above / 2.0);
            if !positive(up_above) {
                errors.push(src.error(at("threshold"), "must be more than 0"));
            }
            if !(down_below >= 0.0 && down_below < up_above) {
                errors.push(src.error(
                    at("scale_down_below"),
                    "must be at least 0 and below `threshold`",
                ));
            }
            if m.step == 0 {
                errors.push(src.error(at("step"), "must be at least 1"));
            }
            Some(Rule::Threshold {
                up_above,
                down_below,
                step: m.step,
            })
        }
    };
    let source = match &m.prometheus {
        None => MetricSource::Proxy,
        Some(p) => {
            if !(p.url.starts_with("http://") && p.url.parse::<http::Uri>().is_ok()) {
                errors.push(src.error(
                    at("prometheus.url"),
                    "must be an http:// URL like http://127.0.0.1:9091",
                ));
            }
            if p.query.trim().is_empty() {
                errors.push(src.error(at("prometheus.query"), "must not be empty"));
            }
            MetricSource::Prometheus {
                url: p.url.trim_end_matches('/').to_string(),
                query: p.query.clone(),
            }
        }
    };
    (errors.len() == before).then_some(MetricRule {
        kind: m.metric,
        rule: rule?,
        source,
    })
}

fn validate_schedule(
    raw: &raw::RawPolicy,
    src: &Source,
    errors: &mut Vec<ConfigError>,
) -> Vec<Floor> {
    let mut out = Vec::new();
    for (i, f) in raw.schedule.iter().enumerate() {
        if f.min > raw.max {
            errors.push(src.error(
                format!("schedule[{i}].min"),
                format!("must be at most max ({})", raw.max),
            ));
        }
        let (from, to) = match f.hours.as_deref().map(parse_hours).transpose() {
            Ok(h) => h.unwrap_or((0, 0)),
            Err(m) => {
                errors.push(src.error(format!("schedule[{i}].hours"), m));
                (0, 0)
            }
        };
        out.push(Floor {
            days: f.days.clone(),
            from,
            to,
            min: f.min,
        });
    }
    out
}

/// `HH:MM-HH:MM` to minutes of the day.
pub fn parse_hours(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not `HH:MM-HH:MM` (like 08:00-18:30)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let minute = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let (from, to) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
    Ok((from % (24 * 60), to % (24 * 60)))
}

/// `+HH:MM` / `-HH:MM` to minutes.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    let bad = || format!("`{s}` is not an offset like +02:00 or -05:30");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "pool: a\nmax: 3\nmetrics:\n  - {metric: inflight_per_replica, target: 4}\n";

    /// Validates `text`; `expected` lists `line:field` of every error, in order.
    fn check(text: &str, expected: &[&str]) {
        let got: Vec<String> = match from_str(Path::new("p.yaml"), text) {
            Ok(_) => vec![],
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}:{}", e.line.unwrap_or(0), e.field))
                    .collect()
            }
        };
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn valid_policies() {
        check(BASE, &[]);
        check(
            "pool: a\nmin: 0\nmax: 2\nmetrics: [{metric: cpu_percent, threshold: 80}]\nscale_to_zero: {after: 1m}\n",
            &[],
        );
        check(
            &format!("{BASE}schedule:\n  - {{days: [mon, fri], hours: '22:00-06:00', min: 2}}\npanic: {{window: 5s}}\n"),
            &[],
        );
    }

    #[test]
    fn every_error_is_located() {
        check(
            "pool: a\nmin: 5\nmax: 3\nmetrics: []\n",
            &["2:min", "4:metrics"],
        );
        check(
            "pool: a\nmin: 0\nmax: 3\nmetrics: [{metric: cpu_percent, target: 50}]\n",
            &["2:min"],
        );
        check(
            "pool: a\nmax: 3\nmetrics:\n  - {metric: cpu_percent, target: 50, threshold: 80}\n  - metric: queue_length\n    threshold: 10\n    scale_down_below: 20\n",
            &["4:metrics[0].threshold", "7:metrics[1].scale_down_below"],
        );
        check(
            &format!("{BASE}schedule:\n  - {{hours: '8-18', min: 9}}\nutc_offset: CET\n"),
            &["7:utc_offset", "6:schedule[0].min", "6:schedule[0].hours"],
        );
        check(
            &format!("{BASE}interval: 10s\nwindow: 5s\npanic: {{window: 6s, threshold: 1}}\n"),
            &["6:window", "7:panic.window", "7:panic.threshold"],
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        check(
            &format!("{BASE}scale_up: {{cooldown: soon}}\n"),
            &["5:scale_up.cooldown"],
        );
        check(
            "pool: a\nmax: 3\nmetrics:\n  - {metric: gpu_percent, target: 4}\n",
            &["4:metrics[0].metric"],
        );
        check(&format!("{BASE}maximum: 4\n"), &["5:maximum"]);
    }

    #[test]
    fn threshold_defaults_to_half_for_scale_down() {
        let p = from_str(
            Path::new("p.yaml"),
            "pool: a\nmax: 3\nmetrics: [{metric: cpu_percent, threshold: 80}]\n",
        )
        .unwrap();
        assert_eq!(
            p.metrics[0].rule,
            Rule::Threshold {
                up_above: 80.0,
                down_below: 40.0,
                step: 1
            }
        );
        assert_eq!(p.down.stabilization, Duration::from_secs(300));
    }

    #[test]
    fn hours_and_offsets() {
        assert_eq!(parse_hours("08:00-18:30"), Ok((480, 1110)));
        assert_eq!(parse_hours("22:00-24:00"), Ok((1320, 0)));
        assert!(parse_hours("25:00-01:00").is_err());
        assert_eq!(parse_offset("-05:30"), Ok(-330));
        assert!(parse_offset("05:00").is_err());
    }
}
