//! Scenarios: the built-in load, stress, spike, volume and soak plans, and scenario files (stages, request mix, SLOs) read through `yaml` with file:line errors.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::mix::{Bodies, MixSpec, Pick, MAX_BATCH};
use super::plan::{Model, Stage};
use super::slo::{RawSlo, Slo};
use crate::yaml::{self, ConfigError, ConfigErrors, Source};

/// Most stages in one plan (each keeps its own histogram).
pub const MAX_STAGES: usize = 100;

/// Which built-in scenario, or a file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Ramp up, hold, ramp down.
    Load,
    /// Step the load up until a step breaks the error or p99 objective.
    Stress,
    /// Normal, N times normal, normal again; how long p99 takes to recover.
    Spike,
    /// Batches of growing size to the batch API.
    Volume,
    /// One long steady stage; the target's memory over time.
    Soak,
    /// Stages from a scenario file.
    File,
}

impl Kind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Load => "load",
            Kind::Stress => "stress",
            Kind::Spike => "spike",
            Kind::Volume => "volume",
            Kind::Soak => "soak",
            Kind::File => "file",
        }
    }
}

/// A run to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Name in reports.
    pub name: String,
    /// What kind of scenario (decides the findings).
    pub kind: Kind,
    /// Open or closed loop.
    pub model: Model,
    /// Stages.
    pub stages: Vec<Stage>,
    /// Requests.
    pub mix: MixSpec,
    /// Objectives a scenario file brought (`--slo` wins).
    pub slo: Option<Slo>,
    /// Stop after the first stage that breaks the error or p99 objective (stress).
    pub stop_on_break: bool,
}

/// The knobs of the built-in scenarios.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Open loop at this rate (req/s)...
    pub rate: Option<f64>,
    /// ... or a closed loop of this many users (default 10).
    pub users: Option<u32>,
    /// Length of the whole run (defaults per scenario).
    pub duration: Option<Duration>,
    /// Stress: steps (default 10), each this long (default 10 s).
    pub steps: usize,
    /// Stress: one step's length.
    pub step_duration: Duration,
    /// Spike: the spike's multiple of the normal load (default 5).
    pub spike_factor: f64,
    /// Volume: batch sizes, one stage each.
    pub batches: Vec<usize>,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The plan of a built-in scenario.
pub fn builtin(kind: Kind, k: &Knobs, mix: MixSpec) -> Plan {
    let (model, base) = match (k.rate, k.users) {
        (Some(r), _) => (Model::Open, r),
        (None, u) => (Model::Closed, f64::from(u.unwrap_or(10))),
    };
    let d = |default: u64| k.duration.unwrap_or(secs(default));
    let stages = match kind {
        Kind::Load | Kind::File => {
            let total = d(60);
            let ramp = total / 6;
            vec![
                Stage::ramp("ramp up", ramp, 0.0, base),
                Stage::steady("steady", total - 2 * ramp, base),
                Stage::ramp("ramp down", ramp, base, 0.0),
            ]
        }
        Kind::Stress => (1..=k.steps.clamp(1, MAX_STAGES))
            .map(|i| Stage::steady(&format!("step {i}"), k.step_duration, base * i as f64))
            .collect(),
        Kind::Spike => {
            let total = d(60);
            vec![
                Stage::steady("normal", total / 3, base),
                Stage::steady("spike", total / 6, base * k.spike_factor),
                Stage::steady("recovery", total / 2, base),
            ]
        }
        Kind::Volume => {
            let each = d(60 * k.batches.len().max(1) as u64 / 4) / k.batches.len().max(1) as u32;
            (k.batches.iter().take(MAX_STAGES))
                .map(|b| Stage {
                    batch: Some(*b),
                    ..Stage::steady(&format!("batch {b}"), each, base)
                })
                .collect()
        }
        Kind::Soak => vec![Stage::steady("soak", d(1800), base)],
    };
    Plan {
        name: kind.as_str().to_string(),
        kind,
        model,
        stages,
        mix,
        slo: None,
        stop_on_break: kind == Kind::Stress,
    }
}

/// A scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    /// Name in reports (default: the file's stem).
    name: Option<String>,
    /// The stages, in order.
    stages: Vec<RawStage>,
    /// What to send (default: generated analysis bodies to `/v1/analyze`).
    #[serde(default)]
    request: RawRequest,
    /// Objectives (seed targets for left-out fields).
    slo: Option<RawSlo>,
    /// Stop at the first stage breaking the error or p99 objective.
    #[serde(default)]
    stop_on_break: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    #[serde(with = "humantime_serde")]
    duration: Duration,
    rate: Option<f64>,
    users: Option<f64>,
    /// The value at the stage's start, for a ramp (default: the same as its end).
    from: Option<f64>,
    label: Option<String>,
    batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: Option<String>,
    path: Option<String>,
    batch_path: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    body: Option<String>,
    file: Option<std::path::PathBuf>,
    distinct: Option<usize>,
    zipf: Option<f64>,
    batch: Option<usize>,
}

/// Reads and checks a scenario file; every problem is reported with its line.
pub fn read(path: &Path) -> Result<Plan, ConfigErrors> {
    let (raw, source) = yaml::read::<RawScenario>(path)?;
    let mut errors = Vec::new();
    let (model, stages) = stages(&raw.stages, &source, &mut errors);
    let mix = request(&raw.request, path, &source, &mut errors);
    let slo = raw.slo.as_ref().map(|s| s.validate(&source, "slo"));
    let slo = match slo {
        Some(Err(e)) => {
            errors.extend(e);
            None
        }
        Some(Ok(s)) => Some(s),
        None => None,
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    Ok(Plan {
        name: raw.name.or(stem).unwrap_or_else(|| "scenario".into()),
        kind: Kind::File,
        model,
        stages,
        mix,
        slo,
        stop_on_break: raw.stop_on_break,
    })
}

fn stages(raw: &[RawStage], source: &Source, errors: &mut Vec<ConfigError>) -> (Model, Vec<Stage>) {
    let mut model = None;
    let mut out = Vec::new();
    if raw.is_empty() || raw.len() > MAX_STAGES {
        errors.push(source.error("stages", format!("give 1 to {MAX_STAGES} stages")));
    }
    for (i, s) in raw.iter().enumerate() {
        let at = |f: &str| format!("stages[{i}].{f}");
        let (this, value, field) = match (s.rate, s.users) {
            (Some(r), None) => (Model::Open, r, "rate"),
            (None, Some(u)) => (Model::Closed, u, "users"),
            _ => {
                errors.push(
                    source.error(format!("stages[{i}]"), "give exactly one of rate or users"),
                );
                continue;
            }
        };
        if *model.get_or_insert(this) != this {
            errors.push(source.error(
                at(field),
                "every stage must use the same one of rate or users",
            ));
        }
        let from = s.from.unwrap_or(value);
        for (f, v) in [(field, value), ("from", from)] {
            if !v.is_finite() || v < 0.0 || (this == Model::Closed && v > 100_000.0) {
                errors.push(source.error(at(f), "must be a number >= 0 (users: at most 100000)"));
            }
        }
        if s.duration.is_zero() {
            errors.push(source.error(at("duration"), "must be longer than 0"));
        }
        if s.batch.is_some_and(|b| b == 0 || b > MAX_BATCH) {
            errors.push(source.error(at("batch"), format!("must be 1..={MAX_BATCH}")));
        }
        let label = s
            .label
            .clone()
            .unwrap_or_else(|| format!("stage {}", i + 1));
        out.push(Stage {
            batch: s.batch,
            ..Stage::ramp(&label, s.duration, from, value)
        });
    }
    (model.unwrap_or(Model::Closed), out)
}

fn request(r: &RawRequest, file: &Path, source: &Source, errors: &mut Vec<ConfigError>) -> MixSpec {
    let mut mix = MixSpec::default();
    if let Some(m) = &r.method {
        match m.parse() {
            Ok(m) => mix.method = m,
            Err(_) => errors.push(source.error("request.method", "not an HTTP method")),
        }
    }
    for (field, value, slot) in [
        ("path", &r.path, &mut mix.path),
        ("batch_path", &r.batch_path, &mut mix.batch_path),
    ] {
        if let Some(p) = value {
            if !p.starts_with('/') {
                errors.push(source.error(format!("request.{field}"), "must start with /"));
            }
            *slot = p.clone();
        }
    }
    mix.headers = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let given = [r.body.is_some(), r.file.is_some(), r.distinct.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        errors.push(source.error("request", "give at most one of body, file and distinct"));
    }
    mix.bodies = match (&r.body, &r.file, r.distinct) {
        (Some(b), _, _) => Bodies::Fixed(b.clone()),
        // A relative body file is next to the scenario file.
        (_, Some(f), _) => Bodies::File(file.parent().unwrap_or(Path::new(".")).join(f)),
        (_, _, Some(n)) => Bodies::Generated(n),
        _ => mix.bodies,
    };
    if let Some(s) = r.zipf {
        if !s.is_finite() || s < 0.0 {
            errors.push(source.error("request.zipf", "must be a number >= 0"));
        }
        mix.pick = Pick::Zipf(s);
    }
    if let Some(b) = r.batch {
        if b == 0 || b > MAX_BATCH {
            errors.push(source.error("request.batch", format!("must be 1..={MAX_BATCH}")));
        }
        mix.batch = b;
    }
    mix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Plan, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, text).unwrap();
        read(&path).map_err(|e| {
            // Paths of a temporary directory differ per run: keep the file name.
            ConfigErrors(
                e.0.into_iter()
                    .map(|mut x| {
                        x.file = "s.yaml".into();
                        x
                    })
                    .collect(),
            )
        })
    }

    #[test]
    fn a_scenario_file_gives_stages_mix_and_slo() {
        let plan = load(
            "stages:\n  - {duration: 10s, from: 0, rate: 50}\n  - {duration: 1m, rate: 50, batch: 10}\n\
             request: {distinct: 100, zipf: 1.1}\nslo: {p99_ms: 300}\n",
        )
        .unwrap();
        assert_eq!(plan.model, Model::Open);
        assert_eq!(plan.stages[0].from, 0.0);
        assert_eq!(plan.stages[1].batch, Some(10));
        assert_eq!(plan.mix.bodies, Bodies::Generated(100));
        assert_eq!(plan.mix.pick, Pick::Zipf(1.1));
        assert!(plan
            .slo
            .unwrap()
            .objectives
            .iter()
            .any(|o| o.name == "p99_ms" && o.limit == 300.0));
        assert_eq!(plan.name, "s");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let err = load(
            "stages:\n  - {duration: 10s, rate: 5}\n  - {duration: 0s, users: 3}\n  - {duration: 1s}\n\
             request: {body: x, distinct: 4, path: nope}\nslo: {p99_ms: -2}\n",
        )
        .unwrap_err()
        .to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            [
                "s.yaml:3:20: stages[1].users: every stage must use the same one of rate or users",
                "s.yaml:3:6: stages[1].duration: must be longer than 0",
                "s.yaml:4:5: stages[2]: give exactly one of rate or users",
                "s.yaml:5:33: request.path: must start with /",
                "s.yaml:5:1: request: give at most one of body, file and distinct",
                "s.yaml:6:7: slo.p99_ms: must be a number >= 0, or off",
            ]
        );
    }

    #[test]
    fn a_type_error_names_the_field() {
        let err = load("stages:\n  - {duration: soon, rate: 5}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:2:"), "{err}");
        assert!(err.contains("stages[0].duration"), "{err}");
    }
}
