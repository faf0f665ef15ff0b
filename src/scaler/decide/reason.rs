//! Why a decision came out as it did: [`Reason`], its metric [`Driver`], and how both read in logs.

use std::fmt;
use std::time::Duration;

use crate::scaler::policy::{MetricKind, Rule};

/// Which way a decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
    /// No change.
    Hold,
}

impl Direction {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Hold => "none",
        }
    }
}

/// The metric that drove a decision, with its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Driver {
    /// Which metric.
    pub kind: MetricKind,
    /// Its value.
    pub value: f64,
    /// Its rule.
    pub rule: Rule,
    /// The window it was averaged over.
    pub window: Duration,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Requests are held and no replica exists.
    Activation {
        /// Held requests.
        waiting: u32,
    },
    /// No request for the scale-to-zero idle period.
    Idle {
        /// Time since the last request.
        idle: Duration,
    },
    /// Fewer replicas than the floor.
    BelowMin {
        /// The floor.
        floor: u32,
        /// The floor comes from the schedule.
        schedule: bool,
    },
    /// More replicas than max.
    AboveMax {
        /// The ceiling.
        max: u32,
    },
    /// Replicas exist but none is ready: nothing to measure.
    Starting,
    /// Every metric is missing.
    MissingMetrics,
    /// A metric asks for a change (possibly limited by the step limit or a bound).
    Metric {
        /// The winning metric.
        driver: Driver,
        /// Some other metric was missing (so no scale-down).
        missing: bool,
        /// The step limit cut the change short.
        limited: bool,
    },
    /// Metrics ask for the current count (or within tolerance).
    Steady {
        /// The largest recommendation's metric.
        driver: Driver,
    },
    /// Panic mode: the short window asks for much more than is ready.
    Panic {
        /// The panic-window driver.
        driver: Driver,
        /// Ready replicas it is compared with.
        ready: u32,
    },
    /// A change is wanted but the stabilization window disagrees.
    Stabilizing {
        /// The wanted direction.
        direction: Direction,
        /// The window.
        window: Duration,
    },
    /// A change is wanted but the cooldown is running.
    Cooldown {
        /// The wanted direction.
        direction: Direction,
        /// Time left.
        remaining: Duration,
    },
    /// A change is wanted but this period's steps are used up.
    StepLimit {
        /// The wanted direction.
        direction: Direction,
    },
    /// A change is wanted but the pool is at its bound.
    AtBound {
        /// The bound.
        bound: u32,
        /// The metric asking to cross it.
        driver: Driver,
    },
}

impl Reason {
    /// Low-cardinality label for `gantry_scaler_decisions_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Activation { .. } => "activation",
            Reason::Idle { .. } => "idle",
            Reason::BelowMin { schedule: true, .. } => "schedule",
            Reason::BelowMin { .. } => "below_min",
            Reason::AboveMax { .. } => "above_max",
            Reason::Starting => "starting",
            Reason::MissingMetrics => "missing_metrics",
            Reason::Metric { .. } => "metric",
            Reason::Steady { .. } => "steady",
            Reason::Panic { .. } => "panic",
            Reason::Stabilizing { .. } => "stabilizing",
            Reason::Cooldown { .. } => "cooldown",
            Reason::StepLimit { .. } => "step_limit",
            Reason::AtBound { .. } => "at_bound",
        }
    }
}

impl MetricKind {
    /// The policy spelling (`inflight_per_replica`), for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::CpuPercent => "cpu_percent",
            MetricKind::MemoryPercent => "memory_percent",
            MetricKind::ResponseTimeAvgMs => "response_time_avg_ms",
            MetricKind::ResponseTimeP95Ms => "response_time_p95_ms",
            MetricKind::InflightPerReplica => "inflight_per_replica",
            MetricKind::RequestRatePerReplica => "request_rate_per_replica",
            MetricKind::QueueLength => "queue_length",
        }
    }
}

fn metric_label(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::CpuPercent => "CPU %",
        MetricKind::MemoryPercent => "memory %",
        MetricKind::ResponseTimeAvgMs => "mean response time ms",
        MetricKind::ResponseTimeP95Ms => "p95 response time ms",
        MetricKind::InflightPerReplica => "in-flight per replica",
        MetricKind::RequestRatePerReplica => "requests/s per replica",
        MetricKind::QueueLength => "worker queue length",
    }
}

fn num(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn secs(d: Duration) -> String {
    format!("{} s", num(d.as_secs_f64()))
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (label, v) = (metric_label(self.kind), num(self.value));
        match self.rule {
            Rule::Target { target, .. } => {
                let cmp = if self.value > target {
                    ">"
                } else if self.value < target {
                    "<"
                } else {
                    "="
                };
                write!(
                    f,
                    "{label} {v} {cmp} target {} over {}",
                    num(target),
                    secs(self.window)
                )
            }
            Rule::Threshold { up_above, .. } if self.value > up_above => {
                write!(
                    f,
                    "{label} {v} > threshold {} over {}",
                    num(up_above),
                    secs(self.window)
                )
            }
            Rule::Threshold { down_below, .. } if self.value < down_below => {
                write!(
                    f,
                    "{label} {v} < {} over {}",
                    num(down_below),
                    secs(self.window)
                )
            }
            Rule::Threshold {
                up_above,
                down_below,
                ..
            } => write!(
                f,
                "{label} {v} within {}..{} over {}",
                num(down_below),
                num(up_above),
                secs(self.window)
            ),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = |d: &Direction| if *d == Direction::Up { "up" } else { "down" };
        match self {
            Reason::Activation { waiting } => {
                write!(f, "{waiting} request(s) held, starting from zero")
            }
            Reason::Idle { idle } => write!(f, "idle for {}", secs(*idle)),
            Reason::BelowMin {
                floor,
                schedule: true,
            } => write!(f, "below the schedule floor {floor}"),
            Reason::BelowMin { floor, .. } => write!(f, "below min {floor}"),
            Reason::AboveMax { max } => write!(f, "above max {max}"),
            Reason::Starting => write!(f, "no replica ready yet"),
            Reason::MissingMetrics => write!(f, "metrics missing, holding"),
            Reason::Metric {
                driver,
                missing,
                limited,
            } => {
                write!(f, "{driver}")?;
                if *limited {
                    write!(f, " (step limited)")?;
                }
                if *missing {
                    write!(f, " (some metrics missing: no scale-down)")?;
                }
                Ok(())
            }
            Reason::Steady { driver } => write!(f, "steady: {driver}"),
            Reason::Panic { driver, ready } => write!(f, "panic: {driver}, {ready} ready"),
            Reason::Stabilizing { direction, window } => {
                write!(
                    f,
                    "wants {} but stabilizing over {}",
                    dir(direction),
                    secs(*window)
                )
            }
            Reason::Cooldown {
                direction,
                remaining,
            } => {
                write!(
                    f,
                    "wants {} but cooling down for {}",
                    dir(direction),
                    secs(*remaining)
                )
            }
            Reason::StepLimit { direction } => {
                write!(f, "wants {} but the step limit is used", dir(direction))
            }
            Reason::AtBound { bound, driver } => write!(f, "{driver}, held at bound {bound}"),
        }
    }
}
