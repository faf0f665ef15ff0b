//! Service-level objectives: the YAML file (`--slo`, or a scenario's `slo:`), the seed's targets as defaults, and the check of a report against them.
//!
//! Every field may be a number or `off`; a field left out takes the seed's
//! target. An objective the run could not measure (CPU without `--pid` or
//! `--metrics`, cache hits from a target that sends no `X-Cache`) is
//! reported as not measured, and does not fail the run.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::report::Report;
use crate::yaml::{self, ConfigError, ConfigErrors, Source};

/// One field of the file: a number, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// The limit.
    Value(f64),
    /// `off`: not checked.
    Off,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        // A visitor rather than an untagged enum, so a wrong value is reported where it is.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or `off`")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Limit, E> {
                Ok(Limit::Value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Limit, E> {
                Ok(Limit::Value(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Value(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Limit, E> {
                match v {
                    "off" => Ok(Limit::Off),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The SLO file as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    /// Mean latency of single requests, ms at most (seed: 200).
    pub mean_ms: Option<Limit>,
    /// p95 of single requests, ms at most (seed: 500).
    pub p95_ms: Option<Limit>,
    /// p99 of single requests, ms at most (seed: 1000).
    pub p99_ms: Option<Limit>,
    /// p99 of batch requests, ms at most (seed: a batch of 10 in under 2000).
    pub batch_p99_ms: Option<Limit>,
    /// Failed requests, percent at most (seed: 0.1).
    pub error_percent: Option<Limit>,
    /// Answers per second over the run, at least (seed: 100).
    pub sustained_rps: Option<Limit>,
    /// Answers in the best second, at least (seed: 500).
    pub peak_rps: Option<Limit>,
    /// Requests in flight at once, at least (seed: 1000 concurrent users).
    pub concurrent: Option<Limit>,
    /// The target's CPU, average percent of its host at most (seed: 70).
    pub cpu_percent: Option<Limit>,
    /// The target host's memory in use, percent at most at any sample (seed: 80).
    pub memory_percent: Option<Limit>,
    /// Cache hits among answers with `X-Cache`, percent at least (seed: 80).
    pub cache_hit_percent: Option<Limit>,
}

/// Which way an objective points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The value must not exceed the limit.
    AtMost,
    /// The value must reach the limit.
    AtLeast,
}

/// One objective to check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Field name in the file.
    pub name: String,
    /// The limit.
    pub limit: f64,
    /// Direction.
    pub bound: Bound,
}

/// The objectives in force.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slo {
    /// Enabled objectives, in file order.
    pub objectives: Vec<Objective>,
}

/// Outcome of one objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It held.
    Pass,
    /// It did not.
    Fail,
    /// The run had nothing to measure it with.
    NotMeasured,
}

impl Verdict {
    /// For tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NotMeasured => "n/a",
        }
    }
}

/// An objective with what the run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    /// The objective.
    pub objective: Objective,
    /// The run's value, when measured.
    pub actual: Option<f64>,
    /// The outcome.
    pub verdict: Verdict,
}

impl SloResult {
    /// `p99_ms 12.3 <= 1000`.
    pub fn describe(&self) -> String {
        let o = &self.objective;
        let op = match o.bound {
            Bound::AtMost => "<=",
            Bound::AtLeast => ">=",
        };
        match self.actual {
            Some(a) => format!("{} {a:.3} {op} {}", o.name, o.limit),
            None => format!("{} (not measured) {op} {}", o.name, o.limit),
        }
    }
}

/// The seed's targets: (field, limit, bound).
const SEED: [(&str, f64, Bound); 11] = [
    ("mean_ms", 200.0, Bound::AtMost),
    ("p95_ms", 500.0, Bound::AtMost),
    ("p99_ms", 1000.0, Bound::AtMost),
    ("batch_p99_ms", 2000.0, Bound::AtMost),
    ("error_percent", 0.1, Bound::AtMost),
    ("sustained_rps", 100.0, Bound::AtLeast),
    ("peak_rps", 500.0, Bound::AtLeast),
    ("concurrent", 1000.0, Bound::AtLeast),
    ("cpu_percent", 70.0, Bound::AtMost),
    ("memory_percent", 80.0, Bound::AtMost),
    ("cache_hit_percent", 80.0, Bound::AtLeast),
];

impl RawSlo {
    fn field(&self, name: &str) -> Option<Limit> {
        match name {
            "mean_ms" => self.mean_ms,
            "p95_ms" => self.p95_ms,
            "p99_ms" => self.p99_ms,
            "batch_p99_ms" => self.batch_p99_ms,
            "error_percent" => self.error_percent,
            "sustained_rps" => self.sustained_rps,
            "peak_rps" => self.peak_rps,
            "concurrent" => self.concurrent,
            "cpu_percent" => self.cpu_percent,
            "memory_percent" => self.memory_percent,
            _ => self.cache_hit_percent,
        }
    }

    /// The objectives, seed targets filling what is left out; `prefix` locates errors (`slo` in a scenario file).
    pub fn validate(&self, source: &Source, prefix: &str) -> Result<Slo, Vec<ConfigError>> {
        let mut objectives = Vec::new();
        let mut errors = Vec::new();
        for (name, seed, bound) in SEED {
            let limit = match self.field(name) {
                None => seed,
                Some(Limit::Off) => continue,
                Some(Limit::Value(v)) => v,
            };
            if !limit.is_finite() || limit < 0.0 {
                let field = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                };
                errors.push(source.error(field, "must be a number >= 0, or off"));
                continue;
            }
            objectives.push(Objective {
                name: name.to_string(),
                limit,
                bound,
            });
        }
        if errors.is_empty() {
            Ok(Slo { objectives })
        } else {
            Err(errors)
        }
    }
}

impl Slo {
    /// The seed's targets.
    pub fn seed() -> Slo {
        let source = Source {
            file: "<seed>".into(),
            index: yaml::LineIndex::default(),
        };
        RawSlo::default()
            .validate(&source, "")
            .expect("seed targets are valid")
    }

    /// Reads an SLO file.
    pub fn read(path: &Path) -> Result<Slo, ConfigErrors> {
        // An empty file is "every seed target".
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.trim().is_empty() && path.is_file() {
            return Ok(Slo::seed());
        }
        let (raw, source) = yaml::read::<RawSlo>(path)?;
        raw.validate(&source, "").map_err(ConfigErrors)
    }

    /// Checks `report`.
    pub fn check(&self, report: &Report) -> Vec<SloResult> {
        (self.objectives.iter())
            .map(|o| {
                let actual = measure(report, &o.name);
                let verdict = match (actual, o.bound) {
                    (None, _) => Verdict::NotMeasured,
                    (Some(a), Bound::AtMost) if a <= o.limit => Verdict::Pass,
                    (Some(a), Bound::AtLeast) if a >= o.limit => Verdict::Pass,
                    _ => Verdict::Fail,
                };
                SloResult {
                    objective: o.clone(),
                    actual,
                    verdict,
                }
            })
            .collect()
    }
}

/// The report's value for objective `name`.
fn measure(r: &Report, name: &str) -> Option<f64> {
    let single = r.latency_single.as_ref();
    let res = &r.observed.resources;
    match name {
        "mean_ms" => single.map(|l| l.mean_ms),
        "p95_ms" => single.map(|l| l.p95_ms),
        "p99_ms" => single.map(|l| l.p99_ms),
        "batch_p99_ms" => r.latency_batch.as_ref().map(|l| l.p99_ms),
        "error_percent" => (r.counts.requests > 0).then_some(r.counts.error_percent),
        "sustained_rps" => Some(r.throughput_rps),
        "peak_rps" => Some(r.peak_rps),
        "concurrent" => Some(r.max_in_flight as f64),
        "cpu_percent" => mean(res.iter().filter_map(|s| s.host_cpu_percent)),
        "memory_percent" => res
            .iter()
            .filter_map(|s| s.host_memory_percent)
            .reduce(f64::max),
        _ => r.counts.cache_hit_percent,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = values.fold((0u32, 0.0), |(n, s), v| (n + 1, s + v));
    (n > 0).then(|| sum / f64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Slo, ConfigErrors> {
        let (raw, source) = yaml::parse::<RawSlo>(Path::new("slo.yaml"), text)?;
        raw.validate(&source, "").map_err(ConfigErrors)
    }

    #[test]
    fn left_out_fields_take_the_seed_targets_and_off_drops_one() {
        let slo = parse("p99_ms: 250\ncpu_percent: off\n").unwrap();
        let p99 = slo.objectives.iter().find(|o| o.name == "p99_ms").unwrap();
        assert_eq!(p99.limit, 250.0);
        assert!(slo.objectives.iter().all(|o| o.name != "cpu_percent"));
        assert_eq!(slo.objectives.len(), SEED.len() - 1);
        assert_eq!(Slo::seed().objectives.len(), SEED.len());
    }

    #[test]
    fn bad_fields_are_located() {
        let err = parse("p99_ms: 250\nerror_percent: -1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "slo.yaml:2:1: error_percent: must be a number >= 0, or off"
        );
        let err = parse("p99_ms: 250\nerror_percent: lots\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("slo.yaml:2:16: error_percent: invalid value"),
            "{err}"
        );
        let err = parse("p99: 250\n").unwrap_err();
        assert!(err.to_string().starts_with("slo.yaml:1:"), "{err}");
        assert!(err.to_string().contains("unknown field `p99`"), "{err}");
    }
}
