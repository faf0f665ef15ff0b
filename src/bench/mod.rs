//! `gantry bench`: a load generator for gantry (or any HTTP target) with the seed's scenarios, HDR latency, SLO exit codes and reports.
//!
//! - [`plan`] — load models and stages, the schedule maths;
//! - [`scenario`] — built-in scenarios and scenario files;
//! - [`mix`] — what each request carries;
//! - [`driver`] — connections, the closed and the open loop;
//! - [`record`] — histograms and per-second tallies;
//! - [`observe`] — the target's CPU, memory, replicas and decisions during a run;
//! - [`report`], [`findings`], [`slo`] — the result, what it means, whether it passes;
//! - [`html`] and [`chart`] — the self-contained HTML report;
//! - [`args`] — the command line, [`calibrate`] — the generator's own ceiling.
//!
//! No Pingora here: the generator is a plain hyper client, so it measures
//! gantry from the outside like any other target.

pub mod args;
pub mod calibrate;
pub mod chart;
pub mod driver;
pub mod findings;
pub mod html;
pub mod mix;
pub mod observe;
pub mod plan;
pub mod record;
pub mod report;
pub mod scenario;
pub mod slo;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use driver::{Connector, Ctx};
use findings::Breaking;
use observe::Sources;
use plan::{Model, Schedule};
use record::{ErrorKind, Recorder, Tally};
use report::{Counts, Latency, Parts, Report};
use scenario::{Kind, Plan};

/// Exit code: every objective held (or none was checked).
pub const EXIT_OK: u8 = 0;
/// Exit code: an objective failed.
pub const EXIT_SLO_FAILED: u8 = 1;
/// Exit code: a usage or config error.
pub const EXIT_USAGE: u8 = 2;

/// Shards of the recorder: enough that runtime threads rarely share one.
const SHARDS: usize = 8;

/// Errors of a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad arguments or input files.
    #[error("{0}")]
    Usage(String),
    /// A config file with located problems.
    #[error("{0}")]
    Config(#[from] crate::yaml::ConfigErrors),
    /// Writing a report, starting a runtime, running a tool.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Everything one run needs.
pub struct Setup {
    /// What to do.
    pub plan: Plan,
    /// The target URL, for the report.
    pub target: String,
    /// How to reach it.
    pub connector: Connector,
    /// Its `Host` header.
    pub host: String,
    /// Open loop: connections at most (closed loop: one per user).
    pub connections: usize,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Stop after this many requests.
    pub limit: Option<u64>,
    /// Random seed.
    pub seed: u64,
    /// What to sample from the target.
    pub sources: Sources,
    /// Draw a progress bar.
    pub progress: bool,
    /// End the run early (and still report) on Ctrl-C.
    pub interrupt: bool,
    /// Stress steps are held to these.
    pub breaking: Breaking,
}

/// Runs `setup` to the end (or to a broken stress step, or Ctrl-C) and reports.
pub async fn execute(setup: Setup) -> Result<Report, BenchError> {
    let mix = Arc::new(mix::Mix::new(setup.plan.mix.clone())?);
    let schedule = Schedule::new(setup.plan.stages.clone());
    let stages = schedule.stages.len();
    let ctx = Arc::new(Ctx::new(
        setup.connector.clone(),
        &setup.host,
        mix.clone(),
        schedule.clone(),
        Recorder::new(SHARDS, stages),
        setup.timeout,
        setup.limit,
        setup.seed,
    ));
    let started_unix_ms = observe::unix_ms();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(observe::sample(setup.sources.clone(), ctx.start, stop_rx));
    let connections = match setup.plan.model {
        Model::Open => setup.connections.max(1),
        Model::Closed => schedule.peak().ceil() as usize,
    };
    let mut driver = tokio::spawn(driver::run(ctx.clone(), setup.plan.model, connections));
    let bar = setup.progress.then(|| progress_bar(&schedule));
    let mut watch = Watch {
        seconds: Vec::new(),
        evaluated: 0,
        broke: None,
        stopped_at: None,
    };
    let mut ticker =
        tokio::time::interval_at(ctx.start + Duration::from_secs(1), Duration::from_secs(1));
    let interrupted = interrupt(setup.interrupt);
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut driver => break,
            _ = ticker.tick() => watch.tick(&ctx, &setup, connections, bar.as_ref()),
            _ = &mut interrupted, if watch.stopped_at.is_none() => {
                ctx.stop.store(true, Ordering::Relaxed);
                watch.stopped_at = Some(ctx.elapsed());
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    watch.evaluate(&ctx, &setup, connections, true);
    watch.seconds.extend(ctx.recorder.harvest(u64::MAX));
    let _ = stop_tx.send(true);
    let observed = sampler.await.unwrap_or_default();
    let mut tallies = ctx.recorder.stages();
    let unsent = count_unsent(&ctx, &setup, &mut tallies, watch.stopped_at);
    let mut report = Report::build(Parts {
        scenario: &setup.plan.name,
        target: &setup.target,
        model: setup.plan.model,
        schedule: &schedule,
        stages: &tallies,
        seconds: std::mem::take(&mut watch.seconds),
        started_unix_ms,
        duration_s: ctx.elapsed().as_secs_f64(),
        mix: describe(&mix),
        mix_batch: mix.spec().batch,
        connections,
        max_in_flight: ctx.max_in_flight.load(Ordering::Relaxed),
        observed,
    });
    if let Some(last) = report.timeline.last_mut() {
        last.errors.unsent += unsent;
    }
    conclude(&mut report, &setup.plan, watch.broke);
    Ok(report)
}

/// Resolves on Ctrl-C when `enabled`, else never.
async fn interrupt(enabled: bool) {
    if !enabled || tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The per-second loop's state: harvested seconds and the stress watch.
struct Watch {
    seconds: Vec<(u64, Tally)>,
    evaluated: usize,
    broke: Option<(usize, String)>,
    stopped_at: Option<Duration>,
}

impl Watch {
    fn tick(&mut self, ctx: &Ctx, setup: &Setup, connections: usize, bar: Option<&ProgressBar>) {
        let now = ctx.elapsed();
        let fresh = ctx.recorder.harvest(now.as_secs());
        if let (Some(bar), Some((_, last))) = (bar, fresh.last()) {
            let l = Latency::of(last);
            bar.set_position(now.as_secs());
            bar.set_message(format!(
                "{} req/s  p99 {:.1} ms  errors {}  in flight {}",
                last.ok,
                l.p99_ms,
                last.errors().total(),
                ctx.in_flight.load(Ordering::Relaxed)
            ));
        }
        self.seconds.extend(fresh);
        self.evaluate(ctx, setup, connections, false);
    }

    /// Stress: checks every stage that has ended; the first broken one stops the run.
    fn evaluate(&mut self, ctx: &Ctx, setup: &Setup, connections: usize, at_end: bool) {
        if !setup.plan.stop_on_break || self.broke.is_some() {
            return;
        }
        let schedule = &ctx.schedule;
        let now = ctx.elapsed();
        while self.evaluated < schedule.stages.len()
            && (at_end || now >= schedule.start_of(self.evaluated + 1))
        {
            let i = self.evaluated;
            let tally = &ctx.recorder.stages()[i];
            if tally.requests == 0 && at_end {
                break; // never ran: the run stopped before it
            }
            let backlog = match setup.plan.model {
                Model::Open => schedule.due_before(now)[i].saturating_sub(tally.requests),
                Model::Closed => 0,
            };
            let why = findings::breaks(
                &Counts::of(tally),
                &Latency::of(tally),
                setup.breaking,
                backlog,
                connections,
            );
            self.evaluated += 1;
            if let Some(why) = why {
                self.broke = Some((i, why));
                self.stopped_at.get_or_insert(now);
                ctx.stop.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Open loop: requests due before the end (or the stop) that were never sent, added to their stages.
fn count_unsent(ctx: &Ctx, setup: &Setup, tallies: &mut [Tally], stopped: Option<Duration>) -> u64 {
    if setup.plan.model != Model::Open || setup.limit.is_some() {
        return 0;
    }
    let until = stopped
        .unwrap_or(ctx.schedule.duration())
        .min(ctx.schedule.duration());
    let due = ctx.schedule.due_before(until);
    let mut total = 0;
    for (tally, due) in tallies.iter_mut().zip(due) {
        let missing = due.saturating_sub(tally.requests);
        tally.add_errors(ErrorKind::Unsent, missing);
        total += missing;
    }
    total
}

/// Scenario findings onto the report.
fn conclude(report: &mut Report, plan: &Plan, broke: Option<(usize, String)>) {
    match plan.kind {
        Kind::Spike => {
            let (recovery, baseline) = findings::spike_recovery(report);
            report.findings.spike_recovery_s = recovery;
            report.findings.spike_baseline_p99_ms = baseline;
        }
        Kind::Soak => {
            report.findings.memory_growth_percent =
                findings::memory_growth(&report.observed.resources)
        }
        _ => {}
    }
    if plan.stop_on_break {
        let last_ran = report.stages.iter().rposition(|s| s.counts.requests > 0);
        report.findings.last_good_stage = match &broke {
            Some((i, _)) => i.checked_sub(1),
            None => last_ran,
        };
        report.findings.breaking_stage = broke;
    }
}

fn describe(mix: &mix::Mix) -> String {
    let s = mix.spec();
    let bodies = match &s.bodies {
        mix::Bodies::None => "no body".to_string(),
        mix::Bodies::Fixed(_) => "a fixed body".to_string(),
        mix::Bodies::File(p) => format!("{} bodies from {}", mix.distinct(), p.display()),
        mix::Bodies::Generated(n) => format!("{n} generated analysis bodies"),
    };
    let pick = match s.pick {
        mix::Pick::Cycle => "in turn".to_string(),
        mix::Pick::Zipf(z) => format!("Zipf({z})"),
    };
    let batch = if s.batch > 1 {
        format!(", batches of {} to {}", s.batch, s.batch_path)
    } else {
        String::new()
    };
    format!("{} {}, {bodies} {pick}{batch}", s.method, s.path)
}

fn progress_bar(schedule: &Schedule) -> ProgressBar {
    let bar = ProgressBar::new(schedule.duration().as_secs().max(1));
    let style = ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} s  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests;
