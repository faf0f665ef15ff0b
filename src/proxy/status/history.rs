//! The status page's charts: a bounded ring of samples of the last 15 minutes, in process.
//!
//! Every [`INTERVAL`] the sampler takes a [`Reading`] of cumulative counters;
//! the difference from the previous one is a [`Point`] (rates and ratios over
//! the interval). [`Ring`] keeps the last [`KEEP`] of them: 15 minutes, a few
//! kilobytes, whatever the traffic. Not Prometheus: `make run` has charts too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::admin::status::{History, Point};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept: 15 minutes of them.
pub const KEEP: usize = 15 * 60 / INTERVAL.as_secs() as usize;

/// Cumulative counters at one moment, all pools together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// When it was taken (for rates).
    pub at: Option<Instant>,
    /// Wall clock of it, Unix ms.
    pub at_unix_ms: u64,
    /// Client requests answered.
    pub requests: f64,
    /// Of them 5xx.
    pub errors: f64,
    /// Client-observed duration buckets, cumulative `(le, count)`.
    pub buckets: Vec<(f64, f64)>,
    /// Cache hits, any tier.
    pub hits: f64,
    /// Cache lookups (at L1, where every lookup starts).
    pub lookups: f64,
    /// Backends taking traffic now.
    pub replicas: u32,
    /// Replicas the scaler wants now, when one runs.
    pub desired: Option<u32>,
}

/// The point between `before` and `now`: rates and ratios over the time between.
pub fn point(before: &Reading, now: &Reading) -> Point {
    let secs = match (before.at, now.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let requests = (now.requests - before.requests).max(0.0);
    let buckets: Vec<(f64, f64)> = now
        .buckets
        .iter()
        .enumerate()
        .map(|(i, &(le, c))| (le, c - before.buckets.get(i).map_or(0.0, |b| b.1)))
        .collect();
    Point {
        at_unix_ms: now.at_unix_ms,
        rps: if secs > 0.0 { requests / secs } else { 0.0 },
        p99_ms: super::read::quantile_ms(0.99, &buckets),
        error_ratio: super::read::ratio(now.errors - before.errors, requests),
        hit_ratio: super::read::ratio(now.hits - before.hits, now.lookups - before.lookups),
        replicas: now.replicas,
        desired: now.desired,
    }
}

/// The last [`KEEP`] points and the reading they continue from.
#[derive(Debug, Default)]
pub struct Ring {
    points: VecDeque<Point>,
    last: Option<Reading>,
}

impl Ring {
    /// Adds the point from the previous reading to `now` (the first reading
    /// only sets the base), dropping the oldest beyond [`KEEP`].
    pub fn push(&mut self, now: Reading) {
        if let Some(before) = &self.last {
            if self.points.len() == KEEP {
                self.points.pop_front();
            }
            self.points.push_back(point(before, &now));
        }
        self.last = Some(now);
    }

    /// The points, oldest first.
    pub fn history(&self) -> History {
        History {
            interval_s: INTERVAL.as_secs(),
            points: self.points.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: Instant, secs: u64, requests: f64, errors: f64, hits: f64) -> Reading {
        Reading {
            at: Some(at + Duration::from_secs(secs)),
            at_unix_ms: secs * 1000,
            requests,
            errors,
            buckets: vec![(0.1, requests - errors), (f64::INFINITY, requests)],
            hits,
            lookups: requests,
            replicas: 2,
            desired: Some(3),
        }
    }

    #[test]
    fn points_are_rates_and_ratios_over_the_interval() {
        let t = Instant::now();
        let p = point(
            &reading(t, 0, 100.0, 0.0, 50.0),
            &reading(t, 5, 600.0, 5.0, 450.0),
        );
        assert_eq!(p.rps, 100.0);
        assert_eq!(p.error_ratio, Some(0.01));
        assert_eq!(p.hit_ratio, Some(0.8));
        assert_eq!(p.p99_ms, Some(100.0));
        assert_eq!((p.replicas, p.desired, p.at_unix_ms), (2, Some(3), 5000));
        // Nothing happened: no ratio to tell, not a zero one.
        let idle = point(
            &reading(t, 5, 600.0, 5.0, 450.0),
            &reading(t, 10, 600.0, 5.0, 450.0),
        );
        assert_eq!(
            (idle.rps, idle.error_ratio, idle.hit_ratio, idle.p99_ms),
            (0.0, None, None, None)
        );
    }

    #[test]
    fn ring_keeps_fifteen_minutes() {
        let t = Instant::now();
        let mut ring = Ring::default();
        ring.push(reading(t, 0, 0.0, 0.0, 0.0));
        assert!(ring.history().points.is_empty(), "one reading is no point");
        for i in 1..=(KEEP as u64 + 20) {
            ring.push(reading(t, i * 5, i as f64 * 10.0, 0.0, 0.0));
        }
        let h = ring.history();
        assert_eq!(h.points.len(), KEEP);
        assert_eq!(
            h.points.last().unwrap().at_unix_ms,
            (KEEP as u64 + 20) * 5000
        );
        assert_eq!(h.points[0].at_unix_ms, 21 * 5000);
    }
}
