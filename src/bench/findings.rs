//! What scenarios conclude from the numbers, as pure functions: a stress step that broke, a spike's recovery time, a soak's memory growth.

use super::observe::Resources;
use super::report::{Counts, Latency, Report};

/// The limits a stress step is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breaking {
    /// Failed requests, percent at most.
    pub error_percent: f64,
    /// p99, ms at most.
    pub p99_ms: f64,
}

/// Why a finished stage broke the limits, if it did. `backlog` is what an
/// open loop had due in it but not yet answered; more than the connections
/// can hold means the target fell behind the rate.
pub fn breaks(
    c: &Counts,
    l: &Latency,
    limits: Breaking,
    backlog: u64,
    connections: usize,
) -> Option<String> {
    if c.requests > 0 && c.error_percent > limits.error_percent {
        return Some(format!(
            "errors {:.3} % > {} %",
            c.error_percent, limits.error_percent
        ));
    }
    if l.p99_ms > limits.p99_ms {
        return Some(format!("p99 {:.1} ms > {} ms", l.p99_ms, limits.p99_ms));
    }
    if backlog > connections as u64 {
        return Some(format!(
            "{backlog} requests due but not answered: the target fell behind the rate"
        ));
    }
    None
}

/// p99 counts as recovered within this multiple of the pre-spike p99...
const RECOVERED_FACTOR: f64 = 1.5;
/// ... or this many ms above it (a fast target's p99 jitters by more than 50 %).
const RECOVERED_SLACK_MS: f64 = 5.0;

/// Spike (stages normal, spike, after): seconds from the spike's end to the
/// first second whose p99 is back near the first stage's and has no errors;
/// the baseline p99 beside it.
pub fn spike_recovery(r: &Report) -> (Option<f64>, Option<f64>) {
    let (Some(base), Some(spike)) = (r.stages.first(), r.stages.get(1)) else {
        return (None, None);
    };
    let baseline = base.latency.p99_ms;
    let end = spike.start_s + spike.stage.duration.as_secs_f64();
    let limit = (baseline * RECOVERED_FACTOR).max(baseline + RECOVERED_SLACK_MS);
    let recovered = (r.timeline.iter())
        .filter(|s| s.t as f64 >= end.floor() && s.requests > 0)
        .find(|s| s.p99_ms <= limit && s.errors.total() == 0)
        .map(|s| (s.t as f64 - end).max(0.0));
    (recovered, Some(baseline))
}

/// Soak: the target's resident memory over the last tenth of the run
/// against the first tenth (at most a minute each), percent change.
pub fn memory_growth(resources: &[Resources]) -> Option<f64> {
    let rss: Vec<(f64, f64)> = (resources.iter())
        .filter_map(|r| r.process_rss_bytes.map(|m| (r.t, m)))
        .collect();
    let (first, last) = (rss.first()?.0, rss.last()?.0);
    let window = ((last - first) / 10.0).min(60.0);
    if window <= 0.0 {
        return None;
    }
    let avg = |from: f64, to: f64| {
        let v: Vec<f64> = rss
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, m)| *m)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (a, b) = (avg(first, first + window)?, avg(last - window, last)?);
    (a > 0.0).then(|| (b - a) / a * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_breaks_on_errors_then_latency_then_backlog() {
        let limits = Breaking {
            error_percent: 1.0,
            p99_ms: 100.0,
        };
        let c = |errors: f64| Counts {
            requests: 100,
            error_percent: errors,
            ..Counts::default()
        };
        let l = |p99: f64| Latency {
            p99_ms: p99,
            ..Latency::default()
        };
        assert_eq!(breaks(&c(0.5), &l(50.0), limits, 3, 8), None);
        assert!(breaks(&c(2.0), &l(50.0), limits, 0, 8)
            .unwrap()
            .starts_with("errors 2.000 %"));
        assert!(breaks(&c(0.0), &l(150.0), limits, 0, 8)
            .unwrap()
            .starts_with("p99 150.0 ms"));
        assert!(breaks(&c(0.0), &l(10.0), limits, 9, 8)
            .unwrap()
            .contains("fell behind"));
    }

    #[test]
    fn memory_growth_compares_the_first_and_last_tenth() {
        let r: Vec<Resources> = (0..=100)
            .map(|t| Resources {
                t: f64::from(t),
                process_rss_bytes: Some(100.0 + f64::from(t)),
                ..Resources::default()
            })
            .collect();
        // First 10 s average 105, last 10 s average 195.
        let g = memory_growth(&r).unwrap();
        assert!((g - 85.714).abs() < 0.01, "{g}");
        assert_eq!(memory_growth(&r[..1]), None);
    }
}
