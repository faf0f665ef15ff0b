//! The result of a run as one serde value (`--json` writes it, the HTML report and the SLO check read it), built from the recorder's tallies, and its summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::observe::Observed;
use super::plan::{Model, Schedule, Stage};
use super::record::{ErrorCounts, Tally};
use super::slo::SloResult;

/// Version of the JSON layout.
pub const FORMAT: u32 = 1;

/// Latency figures, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean_ms: f64,
    /// Standard deviation.
    pub stdev_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Figures of a tally's histogram (µs) in ms; zeros when it is empty.
    pub fn of(t: &Tally) -> Latency {
        let h = &t.latency;
        if h.is_empty() {
            return Latency::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            mean_ms: h.mean() / 1000.0,
            stdev_ms: h.stdev() / 1000.0,
            min_ms: h.min() as f64 / 1000.0,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Counts of a whole run or a stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests that ended, answered or not (unsent ones included).
    pub requests: u64,
    /// 2xx/3xx answers.
    pub ok: u64,
    /// Failures by kind.
    pub errors: ErrorCounts,
    /// Failures over requests, percent.
    pub error_percent: f64,
    /// Response body bytes.
    pub bytes: u64,
    /// `X-Cache` value -> answers.
    pub cache: BTreeMap<String, u64>,
    /// Answers with a `HIT*` or `STALE`/`REVALIDATED` value over answers with any `X-Cache`, percent.
    pub cache_hit_percent: Option<f64>,
}

impl Counts {
    /// Counts of a tally.
    pub fn of(t: &Tally) -> Counts {
        let errors = t.errors();
        let with_header: u64 = t.cache.values().sum();
        let hits: u64 = (t.cache.iter())
            .filter(|(k, _)| is_hit(k))
            .map(|(_, n)| n)
            .sum();
        Counts {
            requests: t.requests,
            ok: t.ok,
            errors,
            error_percent: percent(errors.total(), t.requests),
            bytes: t.bytes,
            cache: t.cache.clone(),
            cache_hit_percent: (with_header > 0).then(|| percent(hits, with_header)),
        }
    }
}

/// Whether an `X-Cache` value means the answer came from a cache.
pub fn is_hit(value: &str) -> bool {
    value.starts_with("HIT") || value == "STALE" || value == "REVALIDATED"
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// One stage's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage as planned.
    pub stage: Stage,
    /// Start, seconds from the run's start.
    pub start_s: f64,
    /// Counts.
    pub counts: Counts,
    /// Answers per second over the stage.
    pub throughput_rps: f64,
    /// Latency.
    pub latency: Latency,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds from the start.
    pub t: u64,
    /// Rate or users planned at the middle of this second.
    pub planned: f64,
    /// Requests that ended in it.
    pub requests: u64,
    /// Of which answered 2xx/3xx.
    pub ok: u64,
    /// Failures by kind.
    pub errors: ErrorCounts,
    /// Median latency, ms (0 with no requests).
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// `X-Cache` value -> answers.
    pub cache: BTreeMap<String, u64>,
}

impl Second {
    /// Second `t` from its tally.
    pub fn of(t: u64, planned: f64, tally: &Tally) -> Second {
        let l = Latency::of(tally);
        Second {
            t,
            planned,
            requests: tally.requests,
            ok: tally.ok,
            errors: tally.errors(),
            p50_ms: l.p50_ms,
            p90_ms: l.p90_ms,
            p99_ms: l.p99_ms,
            max_ms: l.max_ms,
            cache: tally.cache.clone(),
        }
    }
}

/// What a scenario found beyond the numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    /// Stress: the first step that broke, and why.
    pub breaking_stage: Option<(usize, String)>,
    /// Stress: the last step that held.
    pub last_good_stage: Option<usize>,
    /// Spike: seconds from the end of the spike until p99 was back near the baseline (none: not within the run).
    pub spike_recovery_s: Option<f64>,
    /// Spike: the pre-spike p99 the recovery is measured against, ms.
    pub spike_baseline_p99_ms: Option<f64>,
    /// Soak: target memory at the end over the start, percent change.
    pub memory_growth_percent: Option<f64>,
}

/// Everything about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// JSON layout version ([`FORMAT`]).
    pub format: u32,
    /// Scenario name.
    pub scenario: String,
    /// The target URL.
    pub target: String,
    /// Open or closed loop.
    pub model: Model,
    /// When it started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it ran, seconds (the drain after the schedule included).
    pub duration_s: f64,
    /// What each request looked like, in words.
    pub mix: String,
    /// Connections (open loop) or peak users (closed loop).
    pub connections: usize,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// Whole-run counts.
    pub counts: Counts,
    /// Whole-run latency.
    pub latency: Latency,
    /// Latency of the stages sending single requests, if any did.
    pub latency_single: Option<Latency>,
    /// Latency of the stages sending batches, if any did.
    pub latency_batch: Option<Latency>,
    /// Answers per second over the run.
    pub throughput_rps: f64,
    /// The best second's answers.
    pub peak_rps: f64,
    /// Per stage.
    pub stages: Vec<StageReport>,
    /// Per second.
    pub timeline: Vec<Second>,
    /// The target's own numbers.
    pub observed: Observed,
    /// Scenario findings.
    pub findings: Findings,
    /// SLO results, when checked.
    pub slo: Vec<SloResult>,
}

/// The parts a report is built from.
pub struct Parts<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Target URL.
    pub target: &'a str,
    /// Model.
    pub model: Model,
    /// The plan's stages.
    pub schedule: &'a Schedule,
    /// Stage tallies (unsent requests already added).
    pub stages: &'a [Tally],
    /// Seconds with their tallies, oldest first.
    pub seconds: Vec<(u64, Tally)>,
    /// Start.
    pub started_unix_ms: u64,
    /// Length.
    pub duration_s: f64,
    /// Mix description.
    pub mix: String,
    /// The mix's batch size (a stage may set its own).
    pub mix_batch: usize,
    /// Connections or users.
    pub connections: usize,
    /// Most in flight.
    pub max_in_flight: usize,
    /// Sampled target numbers.
    pub observed: Observed,
}

impl Report {
    /// Builds the report (findings and SLOs are filled in afterwards).
    pub fn build(p: Parts<'_>) -> Report {
        let (mut all, mut single, mut batch) = (Tally::stage(), Tally::stage(), Tally::stage());
        for (i, s) in p.stages.iter().enumerate() {
            all.merge(s);
            match p.schedule.stages[i].batch.unwrap_or(p.mix_batch) {
                0 | 1 => single.merge(s),
                _ => batch.merge(s),
            }
        }
        let stages = (p.stages.iter().enumerate())
            .map(|(i, t)| {
                let stage = p.schedule.stages[i].clone();
                let secs = stage.duration.as_secs_f64().max(1e-9);
                StageReport {
                    start_s: p.schedule.start_of(i).as_secs_f64(),
                    counts: Counts::of(t),
                    throughput_rps: t.ok as f64 / secs,
                    latency: Latency::of(t),
                    stage,
                }
            })
            .collect();
        let timeline = fill(p.seconds, p.schedule);
        let peak_rps = timeline.iter().map(|s| s.ok).max().unwrap_or(0) as f64;
        let planned = p
            .schedule
            .duration()
            .as_secs_f64()
            .min(p.duration_s)
            .max(1e-9);
        Report {
            format: FORMAT,
            scenario: p.scenario.to_string(),
            target: p.target.to_string(),
            model: p.model,
            started_unix_ms: p.started_unix_ms,
            duration_s: p.duration_s,
            mix: p.mix,
            connections: p.connections,
            max_in_flight: p.max_in_flight,
            counts: Counts::of(&all),
            latency: Latency::of(&all),
            latency_single: (single.requests > 0).then(|| Latency::of(&single)),
            latency_batch: (batch.requests > 0).then(|| Latency::of(&batch)),
            throughput_rps: all.ok as f64 / planned,
            peak_rps,
            stages,
            timeline,
            observed: p.observed,
            findings: Findings::default(),
            slo: Vec::new(),
        }
    }

    /// The summary table printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.counts;
        let _ = writeln!(
            s,
            "{} against {} ({} loop, {})",
            self.scenario,
            self.target,
            self.model.as_str(),
            self.mix
        );
        let _ = writeln!(
            s,
            "  requests {}  ok {}  errors {} ({:.3} %)  {:.1} req/s  peak {:.0} req/s  {:.1} s",
            c.requests,
            c.ok,
            c.errors.total(),
            c.error_percent,
            self.throughput_rps,
            self.peak_rps,
            self.duration_s
        );
        let e = &c.errors;
        let _ = writeln!(
            s,
            "  errors: connect {}  timeout {}  transport {}  4xx {}  5xx {}  unsent {}",
            e.connect, e.timeout, e.transport, e.status_4xx, e.status_5xx, e.unsent
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  latency ms: mean {:.2}  p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.mean_ms, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if let Some(hit) = c.cache_hit_percent {
            let tiers: Vec<String> = c.cache.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "  cache: {hit:.1} % hits ({})", tiers.join(", "));
        }
        self.stage_table(&mut s);
        self.findings_lines(&mut s);
        for r in &self.slo {
            let _ = writeln!(s, "  SLO {:<4} {}", r.verdict.as_str(), r.describe());
        }
        s
    }

    fn stage_table(&self, s: &mut String) {
        if self.stages.len() < 2 {
            return;
        }
        let unit = self.model.unit();
        let _ = writeln!(
            s,
            "  {:<14} {:>14} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "stage", unit, "batch", "requests", "req/s", "p50 ms", "p99 ms", "errors %"
        );
        for st in &self.stages {
            let g = &st.stage;
            let planned = g.planned("->");
            let batch = g.batch.map_or("-".to_string(), |b| b.to_string());
            let _ = writeln!(
                s,
                "  {:<14} {:>14} {:>7} {:>9} {:>9.1} {:>9.2} {:>9.2} {:>8.3}",
                g.label,
                planned,
                batch,
                st.counts.requests,
                st.throughput_rps,
                st.latency.p50_ms,
                st.latency.p99_ms,
                st.counts.error_percent
            );
        }
    }

    fn findings_lines(&self, s: &mut String) {
        let f = &self.findings;
        if let Some((i, why)) = &f.breaking_stage {
            let _ = writeln!(
                s,
                "  breaking point: stage {} ({}): {why}",
                i + 1,
                self.stages[*i].stage.label
            );
            match f.last_good_stage {
                Some(g) => {
                    let _ = writeln!(
                        s,
                        "  last good step: stage {} ({})",
                        g + 1,
                        self.stages[g].stage.label
                    );
                }
                None => s.push_str("  last good step: none\n"),
            }
        }
        if let Some(base) = f.spike_baseline_p99_ms {
            match f.spike_recovery_s {
                Some(r) => {
                    let _ = writeln!(
                        s,
                        "  spike: p99 back near {base:.2} ms {r:.0} s after the spike"
                    );
                }
                None => {
                    let _ = writeln!(s, "  spike: p99 not back near {base:.2} ms before the end");
                }
            }
        }
        if let Some(g) = f.memory_growth_percent {
            let _ = writeln!(
                s,
                "  target memory: {g:+.1} % from the first to the last minute"
            );
        }
        for p in &self.observed.problems {
            let _ = writeln!(s, "  note: {p}");
        }
    }
}

/// Every second from 0 to the last seen, with empty ones where nothing ended.
fn fill(seconds: Vec<(u64, Tally)>, schedule: &Schedule) -> Vec<Second> {
    let last = seconds.last().map_or(0, |(t, _)| *t);
    let mut by: BTreeMap<u64, Tally> = seconds.into_iter().collect();
    (0..=last)
        .map(|t| {
            let planned = schedule.value_at(std::time::Duration::from_millis(t * 1000 + 500));
            match by.remove(&t) {
                Some(tally) => Second::of(t, planned, &tally),
                None => Second {
                    t,
                    planned,
                    ..Second::default()
                },
            }
        })
        .collect()
}
