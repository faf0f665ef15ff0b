//! A run's plan: the load model and its stages (rate or users over time), and the schedule maths both loops use.
//!
//! A stage goes linearly from `from` to `to` over its duration (equal for a
//! steady stage). In the open loop the value is requests per second and
//! request `k` is due when the integral of the rate reaches `k` (so a ramp's
//! sends thin out or thicken smoothly); in the closed loop it is the number
//! of users, user `u` running while `u < users(t)`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// A constant arrival rate whatever the answers take; latency from the intended send time.
    Open,
    /// N users, each sending its next request when the last one is answered.
    Closed,
}

impl Model {
    /// `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Open => "open",
            Model::Closed => "closed",
        }
    }

    /// The unit of a stage's value.
    pub fn unit(self) -> &'static str {
        match self {
            Model::Open => "req/s",
            Model::Closed => "users",
        }
    }
}

/// One stage of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Shown in tables and on charts (`ramp up`, `step 3`, `spike`...).
    pub label: String,
    /// How long it lasts.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Rate or users at its start.
    pub from: f64,
    /// Rate or users at its end.
    pub to: f64,
    /// Items per request for this stage (a batch), instead of the mix's own.
    pub batch: Option<usize>,
}

impl Stage {
    /// The planned rate or users, `from{arrow}to` when the stage ramps.
    pub fn planned(&self, arrow: &str) -> String {
        if self.from == self.to {
            format!("{:.0}", self.to)
        } else {
            format!("{:.0}{arrow}{:.0}", self.from, self.to)
        }
    }

    /// A steady stage.
    pub fn steady(label: &str, duration: Duration, value: f64) -> Stage {
        Stage::ramp(label, duration, value, value)
    }

    /// A linear ramp.
    pub fn ramp(label: &str, duration: Duration, from: f64, to: f64) -> Stage {
        Stage {
            label: label.to_string(),
            duration,
            from,
            to,
            batch: None,
        }
    }

    /// Requests due in this stage (open loop).
    fn count(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.duration.as_secs_f64()
    }

    /// The value `t` into the stage.
    fn value(&self, t: f64) -> f64 {
        let d = self.duration.as_secs_f64();
        if d <= 0.0 {
            return self.to;
        }
        self.from + (self.to - self.from) * (t / d).clamp(0.0, 1.0)
    }

    /// When, into the stage, the integral of the rate reaches `k` (open loop).
    fn time_of(&self, k: f64) -> f64 {
        if k <= 0.0 {
            return 0.0;
        }
        let d = self.duration.as_secs_f64();
        let (a, b) = ((self.to - self.from) / (2.0 * d), self.from);
        // a t² + b t = k, solved in the form that is stable for a ramp up or down.
        2.0 * k / (b + (b * b + 4.0 * a * k).max(0.0).sqrt())
    }
}

/// The stages of a run and where each begins.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Start offset of each stage, seconds.
    starts: Vec<f64>,
    /// Requests due before each stage (open loop).
    before: Vec<f64>,
    total: f64,
}

impl Schedule {
    /// A schedule over `stages`.
    pub fn new(stages: Vec<Stage>) -> Schedule {
        let (mut starts, mut before) = (Vec::new(), Vec::new());
        let (mut t, mut n) = (0.0, 0.0);
        for s in &stages {
            starts.push(t);
            before.push(n);
            t += s.duration.as_secs_f64();
            n += s.count();
        }
        Schedule {
            stages,
            starts,
            before,
            total: t,
        }
    }

    /// The whole length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.total)
    }

    /// Start offset of stage `i`.
    pub fn start_of(&self, i: usize) -> Duration {
        Duration::from_secs_f64(self.starts.get(i).copied().unwrap_or(self.total))
    }

    /// The stage running `t` into the run (the last one after the end).
    pub fn stage_at(&self, t: Duration) -> usize {
        let t = t.as_secs_f64();
        self.starts
            .iter()
            .rposition(|s| *s <= t)
            .unwrap_or(0)
            .min(self.stages.len().saturating_sub(1))
    }

    /// Rate or users `t` into the run (0 after the end).
    pub fn value_at(&self, t: Duration) -> f64 {
        if t.as_secs_f64() >= self.total || self.stages.is_empty() {
            return 0.0;
        }
        let i = self.stage_at(t);
        self.stages[i].value(t.as_secs_f64() - self.starts[i])
    }

    /// The highest value of any stage.
    pub fn peak(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| s.from.max(s.to))
            .fold(0.0, f64::max)
    }

    /// Open loop: when request `k` (from 0) is due, or `None` if after the end.
    pub fn due(&self, k: u64) -> Option<Duration> {
        let k = k as f64;
        let i = self.stage_of_request(k)?;
        let t = self.starts[i] + self.stages[i].time_of(k - self.before[i]);
        (t < self.total).then(|| Duration::from_secs_f64(t))
    }

    /// Open loop: the stage request `k` is due in.
    fn stage_of_request(&self, k: f64) -> Option<usize> {
        let i = self.before.iter().rposition(|b| *b <= k)?;
        // A stage with a zero rate holds no requests: the next one with room takes `k`.
        (i..self.stages.len()).find(|j| k < self.before[*j] + self.stages[*j].count())
    }

    /// Open loop: requests due before `t`, counted per stage.
    pub fn due_before(&self, t: Duration) -> Vec<u64> {
        let t = t.as_secs_f64();
        (self.stages.iter().enumerate())
            .map(|(i, s)| {
                let into = (t - self.starts[i]).clamp(0.0, s.duration.as_secs_f64());
                let integral = s.from * into
                    + (s.to - s.from) / (2.0 * s.duration.as_secs_f64().max(1e-9)) * into * into;
                // Request k is due at integral k: requests 0..=floor(x) are due by the time it reaches x.
                let upto = (self.before[i] + integral).ceil() - self.before[i].ceil();
                upto.max(0.0) as u64
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Request `k` of `s` is due at `at` seconds (to a microsecond).
    fn due_at(s: &Schedule, k: u64, at: f64) {
        let got = s.due(k).map(|d| d.as_secs_f64());
        assert!(
            got.is_some_and(|g| (g - at).abs() < 1e-6),
            "request {k}: {got:?}, want {at}"
        );
    }

    #[test]
    fn a_steady_rate_spaces_requests_evenly() {
        let s = Schedule::new(vec![Stage::steady("a", secs(2.0), 10.0)]);
        due_at(&s, 0, 0.0);
        due_at(&s, 5, 0.5);
        due_at(&s, 19, 1.9);
        assert_eq!(s.due(20), None);
        assert_eq!(s.due_before(secs(2.0)), [20]);
        assert_eq!(s.due_before(secs(1.0)), [10]);
    }

    #[test]
    fn a_ramp_thickens_sends_and_stages_follow_each_other() {
        let s = Schedule::new(vec![
            Stage::ramp("up", secs(10.0), 0.0, 20.0),
            Stage::steady("hold", secs(1.0), 20.0),
        ]);
        // 0 -> 20 req/s over 10 s: 100 requests; the 25th is due at 5 s (t² = 25·10/20·2).
        due_at(&s, 25, 5.0);
        due_at(&s, 100, 10.0);
        due_at(&s, 110, 10.5);
        assert_eq!(s.due(120), None);
        assert_eq!(s.due_before(secs(11.0)), [100, 20]);
        assert_eq!(s.stage_at(secs(10.2)), 1);
        assert_eq!(s.value_at(secs(5.0)), 10.0);
        assert_eq!(s.value_at(secs(11.0)), 0.0);
    }

    #[test]
    fn a_ramp_down_and_an_idle_stage_are_skipped_over_correctly() {
        let s = Schedule::new(vec![
            Stage::ramp("down", secs(2.0), 10.0, 0.0),
            Stage::steady("idle", secs(3.0), 0.0),
            Stage::steady("end", secs(1.0), 4.0),
        ]);
        // 10 requests in the ramp down, none idle, then 4 from 5 s.
        assert!(s.due(9).unwrap() < secs(2.0));
        due_at(&s, 10, 5.0);
        due_at(&s, 13, 5.75);
        assert_eq!(s.due(14), None);
    }
}
