//! The scaling decision: a pure function of policy, observation, fleet and time.
//!
//! [`decide`] does no I/O and keeps no state: what it needs to remember
//! (recent recommendations, scale events, panic mode) is in [`History`],
//! which the control loop owns and updates with [`History::record`]. Order of
//! the rules, first match wins:
//!
//! 1. activation: no replica and requests held by the proxy -> at least 1;
//! 2. bounds: below the floor (min, schedule, or 0 when idle) or above max;
//! 3. nothing ready yet -> hold (nothing measured);
//! 4. metrics: each rule recommends a count, the largest wins (HPA); a
//!    missing metric may hold or raise, never lower;
//! 5. panic (Knative): the short-window recommendation >= threshold x ready
//!    -> scale up at once, never down, until a stable window passes calmly;
//! 6. stabilization windows, cooldowns, then the step limit per period.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

mod reason;

pub use reason::{Direction, Driver, Reason};

use super::policy::{Behavior, Policy, Rule};

/// What was measured, averaged over the policy's windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Per metric rule, in policy order: mean over `policy.window`; `None` when missing.
    pub stable: Vec<Option<f64>>,
    /// Per metric rule: mean over the panic window; `None` when missing.
    pub panic: Vec<Option<f64>>,
    /// Last time a request arrived or was in flight (the loop's start before any).
    pub last_active: Instant,
    /// Requests the proxy holds waiting for a first replica.
    pub waiting: u32,
    /// Wall clock, seconds since the Unix epoch (for schedule floors).
    pub unix_secs: u64,
}

/// The replicas of a pool now, and what the scaler did to it lately.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    /// Replicas running or starting (draining ones excluded).
    pub current: u32,
    /// Replicas in the pool and passing health checks.
    pub ready: u32,
    /// Recent decisions.
    pub history: History,
}

/// The scaler's memory of recent decisions for one pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Raw recommendations with their time, oldest first.
    pub recommendations: VecDeque<(Instant, u32)>,
    /// Scale events with their time, oldest first: replicas added (positive) or removed.
    pub events: VecDeque<(Instant, i64)>,
    /// Panic mode lasts until this time.
    pub panic_until: Option<Instant>,
}

impl History {
    /// Remembers `d` (taken at `now`), forgetting what is older than `keep`.
    pub fn record(&mut self, d: &Decision, now: Instant, keep: Duration) {
        self.recommendations.push_back((now, d.recommendation));
        if d.to != d.from {
            self.events
                .push_back((now, i64::from(d.to) - i64::from(d.from)));
        }
        self.panic_until = d.panic_until;
        let cut = now.checked_sub(keep).unwrap_or(now);
        while self.recommendations.front().is_some_and(|r| r.0 < cut) {
            self.recommendations.pop_front();
        }
        while self.events.front().is_some_and(|e| e.0 < cut) {
            self.events.pop_front();
        }
    }

    /// How long `record` must keep entries for `policy`'s windows.
    pub fn keep_for(policy: &Policy) -> Duration {
        [
            policy.up.stabilization,
            policy.down.stabilization,
            policy.up.period,
            policy.down.period,
            policy.up.cooldown,
            policy.down.cooldown,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }

    fn last_event(&self, up_only: bool) -> Option<Instant> {
        self.events
            .iter()
            .rev()
            .find(|e| !up_only || e.1 > 0)
            .map(|e| e.0)
    }

    fn moved_within(&self, now: Instant, period: Duration, up: bool) -> u32 {
        self.events
            .iter()
            .filter(|e| now.duration_since(e.0) < period && (e.1 > 0) == up)
            .map(|e| e.1.unsigned_abs() as u32)
            .sum()
    }
}

/// A scaling decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas before.
    pub from: u32,
    /// Replicas wanted.
    pub to: u32,
    /// The raw recommendation, before windows and limits (kept in [`History`]).
    pub recommendation: u32,
    /// Why.
    pub reason: Reason,
    /// Panic mode lasts until then.
    pub panic_until: Option<Instant>,
}

impl Decision {
    /// Up, down or hold.
    pub fn direction(&self) -> Direction {
        match self.to.cmp(&self.from) {
            std::cmp::Ordering::Greater => Direction::Up,
            std::cmp::Ordering::Less => Direction::Down,
            std::cmp::Ordering::Equal => Direction::Hold,
        }
    }
}

/// Decides how many replicas the pool should have at `now`.
pub fn decide(p: &Policy, obs: &Observation, fleet: &Fleet, now: Instant) -> Decision {
    let current = fleet.current;
    let prior_panic = fleet.history.panic_until.filter(|t| *t > now);
    let make = |to: u32, recommendation: u32, reason: Reason| Decision {
        from: current,
        to,
        recommendation,
        reason,
        panic_until: prior_panic,
    };
    let (floor, schedule) = floor(p, obs, now);
    if current == 0 && obs.waiting > 0 {
        let to = floor.max(1).min(p.max);
        let waiting = obs.waiting;
        return make(to, to, Reason::Activation { waiting });
    }
    if current < floor {
        return make(floor, floor, Reason::BelowMin { floor, schedule });
    }
    if current > p.max {
        return make(p.max, p.max, Reason::AboveMax { max: p.max });
    }
    if floor < p.min.max(1) && current > floor {
        let idle = now.saturating_duration_since(obs.last_active);
        return make(floor, floor, Reason::Idle { idle });
    }
    if current == 0 {
        let idle = now.saturating_duration_since(obs.last_active);
        return make(0, 0, Reason::Idle { idle });
    }
    if fleet.ready == 0 {
        return make(current, current, Reason::Starting);
    }
    let Some(rec) = recommend(p, &obs.stable, fleet, p.window) else {
        return make(current, current, Reason::MissingMetrics);
    };
    if let Some(d) = panic(p, obs, fleet, &rec, now) {
        return d;
    }
    // Windows and limits work on recommendations within the bounds.
    let raw = rec.replicas;
    let bounded = raw.clamp(floor, p.max);
    if bounded == current {
        let reason = match () {
            _ if rec.missing => Reason::MissingMetrics,
            _ if raw > current => Reason::AtBound {
                bound: p.max,
                driver: rec.driver,
            },
            _ if raw < current => Reason::AtBound {
                bound: floor,
                driver: rec.driver,
            },
            _ => Reason::Steady { driver: rec.driver },
        };
        return make(current, bounded, reason);
    }
    let (to, hold) = limit(p, fleet, bounded, now);
    let reason = match hold {
        Some(reason) => reason,
        None => Reason::Metric {
            driver: rec.driver,
            missing: rec.missing,
            limited: to != bounded,
        },
    };
    make(to, bounded, reason)
}

/// The floor at `now` and whether the schedule set it: 0 when idle long enough.
fn floor(p: &Policy, obs: &Observation, now: Instant) -> (u32, bool) {
    let scheduled = schedule_floor(p, obs.unix_secs);
    let idle = p.scale_to_zero.is_some_and(|z| {
        obs.waiting == 0 && now.saturating_duration_since(obs.last_active) >= z.after
    });
    let min = match (idle, p.scale_to_zero.is_some()) {
        (true, _) => 0,
        (false, true) => p.min.max(1),
        (false, false) => p.min,
    };
    if scheduled > min {
        (scheduled.min(p.max), true)
    } else {
        (min, false)
    }
}

/// The highest schedule floor in force at `unix_secs`.
pub fn schedule_floor(p: &Policy, unix_secs: u64) -> u32 {
    let minutes = (unix_secs / 60) as i64 + i64::from(p.utc_offset_minutes);
    let minute = minutes.rem_euclid(1440) as u32;
    // 1970-01-01 was a Thursday; Monday is 0.
    let day = (minutes.div_euclid(1440) + 3).rem_euclid(7) as usize;
    use super::policy::Day::*;
    let today = [Mon, Tue, Wed, Thu, Fri, Sat, Sun][day];
    p.schedule
        .iter()
        .filter(|f| f.days.is_empty() || f.days.contains(&today))
        .filter(|f| match f.from.cmp(&f.to) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => (f.from..f.to).contains(&minute),
            std::cmp::Ordering::Greater => minute >= f.from || minute < f.to,
        })
        .map(|f| f.min)
        .max()
        .unwrap_or(0)
}

/// The largest recommendation of the metric rules.
struct Recommendation {
    replicas: u32,
    driver: Driver,
    missing: bool,
}

fn recommend(
    p: &Policy,
    values: &[Option<f64>],
    fleet: &Fleet,
    window: Duration,
) -> Option<Recommendation> {
    let current = fleet.current;
    let mut best: Option<(u32, Driver)> = None;
    let mut missing = false;
    for (rule, value) in p.metrics.iter().zip(values) {
        let Some(value) = value.filter(|v| v.is_finite()) else {
            missing = true;
            continue;
        };
        let replicas = match rule.rule {
            Rule::Target { target, tolerance } => {
                let ratio = value / target;
                if (ratio - 1.0).abs() <= tolerance {
                    current
                } else {
                    (f64::from(fleet.ready) * ratio)
                        .ceil()
                        .min(f64::from(u32::MAX)) as u32
                }
            }
            Rule::Threshold { up_above, step, .. } if value > up_above => {
                current.saturating_add(step)
            }
            Rule::Threshold {
                down_below, step, ..
            } if value < down_below => current.saturating_sub(step),
            Rule::Threshold { .. } => current,
        };
        let driver = Driver {
            kind: rule.kind,
            value,
            rule: rule.rule,
            window,
        };
        if best.as_ref().is_none_or(|b| replicas > b.0) {
            best = Some((replicas, driver));
        }
    }
    let (mut replicas, driver) = best?;
    // Missing data, or replicas still starting, never lower the count.
    if missing || fleet.ready < current {
        replicas = replicas.max(current);
    }
    Some(Recommendation {
        replicas,
        driver,
        missing,
    })
}

/// Panic mode: returns the decision when in (or entering) panic.
fn panic(
    p: &Policy,
    obs: &Observation,
    fleet: &Fleet,
    stable: &Recommendation,
    now: Instant,
) -> Option<Decision> {
    let cfg = p.panic?;
    let current = fleet.current;
    let mut panic_until = fleet.history.panic_until.filter(|t| *t > now);
    let targets: Vec<Option<f64>> = p
        .metrics
        .iter()
        .zip(&obs.panic)
        .map(|(m, v)| v.filter(|_| matches!(m.rule, Rule::Target { .. })))
        .collect();
    let short = recommend(p, &targets, fleet, cfg.window);
    if let Some(r) = &short {
        if f64::from(r.replicas) >= cfg.threshold * f64::from(fleet.ready) {
            panic_until = Some(now + p.window);
        }
    }
    panic_until?;
    let want = short.as_ref().map_or(0, |r| r.replicas);
    let to = want.max(stable.replicas).max(current).min(p.max);
    let driver = short.map_or(stable.driver, |r| r.driver);
    Some(Decision {
        from: current,
        to,
        recommendation: stable.replicas,
        reason: Reason::Panic {
            driver,
            ready: fleet.ready,
        },
        panic_until,
    })
}

/// Applies stabilization, cooldown and step limit to `raw`; returns the
/// count and, when it holds, why.
fn limit(p: &Policy, fleet: &Fleet, raw: u32, now: Instant) -> (u32, Option<Reason>) {
    let current = fleet.current;
    let h = &fleet.history;
    let within = |w: Duration| {
        h.recommendations
            .iter()
            .filter(move |r| now.duration_since(r.0) < w)
            .map(|r| r.1)
    };
    let up_rec = within(p.up.stabilization).chain([raw]).min().unwrap_or(raw);
    let down_rec = within(p.down.stabilization)
        .chain([raw])
        .max()
        .unwrap_or(raw);
    let stable = current.max(up_rec).min(down_rec);
    let (direction, b): (Direction, &Behavior) = match raw.cmp(&current) {
        std::cmp::Ordering::Equal => return (current, None),
        std::cmp::Ordering::Greater => (Direction::Up, &p.up),
        std::cmp::Ordering::Less => (Direction::Down, &p.down),
    };
    if stable == current {
        let window = b.stabilization;
        return (current, Some(Reason::Stabilizing { direction, window }));
    }
    let up = direction == Direction::Up;
    if let Some(last) = h.last_event(up) {
        let since = now.duration_since(last);
        if since < b.cooldown {
            let remaining = b.cooldown - since;
            return (
                current,
                Some(Reason::Cooldown {
                    direction,
                    remaining,
                }),
            );
        }
    }
    let allowed = b.max_step.saturating_sub(h.moved_within(now, b.period, up));
    if allowed == 0 {
        return (current, Some(Reason::StepLimit { direction }));
    }
    if up {
        (stable.min(current + allowed), None)
    } else {
        (stable.max(current.saturating_sub(allowed)), None)
    }
}

#[cfg(test)]
mod tests;
