//! A consecutive-failures circuit breaker: closed -> open after N failures, one probe after a cool-down.
//!
//! Closed: every call goes through; `threshold` failures in a row open it.
//! Open: no call goes through until `cooldown` has passed on the [`Clock`].
//! Half-open: exactly one probe goes through; its success closes the circuit,
//! its failure opens it again for another cool-down. A probe dropped without
//! a verdict (its caller was cancelled) frees the slot for the next caller.

use std::sync::{Arc, Mutex, MutexGuard};

use super::clock::Clock;

/// What callers see of the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// One probe is allowed.
    HalfOpen,
    /// Calls are skipped.
    Open,
}

impl CircuitState {
    /// The `gantry_cache_redis_circuit_state` value.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until_ms: u64 },
    HalfOpen { probing: bool },
}

type Observer = Box<dyn Fn(CircuitState) + Send + Sync>;

/// The breaker, shared by every caller of one outside system.
pub struct Breaker {
    state: Mutex<State>,
    /// Consecutive failures that open the circuit (at least 1).
    threshold: u32,
    /// How long the circuit stays open before a probe.
    cooldown_ms: u64,
    clock: Arc<dyn Clock>,
    /// Told of every state change (metrics, logs).
    observer: Observer,
}

/// Leave to make one call; report how it went.
pub struct Permit {
    breaker: Arc<Breaker>,
    probe: bool,
    done: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(
        threshold: u32,
        cooldown: std::time::Duration,
        clock: Arc<dyn Clock>,
        observer: impl Fn(CircuitState) + Send + Sync + 'static,
    ) -> Arc<Breaker> {
        observer(CircuitState::Closed);
        Arc::new(Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown_ms: cooldown.as_millis() as u64,
            clock,
            observer: Box::new(observer),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state (an elapsed cool-down reads as half-open).
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until_ms } if self.clock.now_ms() < until_ms => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// A permit when a call may go through now, or `None` to skip the system.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut st = self.lock();
        let probe = match *st {
            State::Closed { .. } => false,
            State::Open { until_ms } if self.clock.now_ms() < until_ms => return None,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *st = State::HalfOpen { probing: true };
                (self.observer)(CircuitState::HalfOpen);
                true
            }
            State::HalfOpen { probing: true } => return None,
        };
        Some(Permit {
            breaker: self.clone(),
            probe,
            done: false,
        })
    }

    fn record(&self, probe: bool, ok: bool) {
        let mut st = self.lock();
        let next = match *st {
            State::Closed { .. } if ok => State::Closed { failures: 0 },
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Closed { .. } => self.open(),
            State::HalfOpen { .. } if probe && ok => State::Closed { failures: 0 },
            State::HalfOpen { .. } if probe => self.open(),
            // Late results of calls started before the circuit opened change nothing.
            other => other,
        };
        let before = state_of(*st);
        *st = next;
        let after = state_of(next);
        drop(st);
        if before != after {
            (self.observer)(after);
        }
    }

    fn open(&self) -> State {
        State::Open {
            until_ms: self.clock.now_ms() + self.cooldown_ms,
        }
    }

    fn release_probe(&self) {
        let mut st = self.lock();
        if let State::HalfOpen { probing: true } = *st {
            *st = State::HalfOpen { probing: false };
        }
    }
}

fn state_of(s: State) -> CircuitState {
    match s {
        State::Closed { .. } => CircuitState::Closed,
        State::Open { .. } => CircuitState::Open,
        State::HalfOpen { .. } => CircuitState::HalfOpen,
    }
}

impl Permit {
    /// The call succeeded.
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.probe, true);
    }

    /// The call failed or timed out.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(self.probe, false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::clock::ManualClock;
    use std::time::Duration;

    fn breaker() -> (
        Arc<Breaker>,
        Arc<ManualClock>,
        Arc<Mutex<Vec<CircuitState>>>,
    ) {
        let clock = Arc::new(ManualClock::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let b = Breaker::new(3, Duration::from_secs(2), clock.clone(), move |c| {
            s.lock().unwrap().push(c)
        });
        (b, clock, seen)
    }

    fn fail(b: &Arc<Breaker>, n: usize) {
        for _ in 0..n {
            b.try_acquire().expect("call allowed").failure();
        }
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let (b, _, _) = breaker();
        fail(&b, 2);
        b.try_acquire().unwrap().success();
        fail(&b, 2);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "a success resets the count"
        );
        fail(&b, 1);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire().is_none());
    }

    #[test]
    fn one_probe_after_cooldown_then_closes_on_success() {
        let (b, clock, seen) = breaker();
        fail(&b, 3);
        clock.advance(Duration::from_millis(1999));
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.try_acquire().expect("one probe");
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.try_acquire().is_some());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
                CircuitState::Closed
            ]
        );
    }

    #[test]
    fn failed_probe_reopens_for_another_cooldown() {
        let (b, clock, _) = breaker();
        fail(&b, 3);
        clock.advance(Duration::from_secs(2));
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        clock.advance(Duration::from_millis(1999));
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_millis(1));
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn dropped_probe_frees_the_slot() {
        let (b, clock, _) = breaker();
        fail(&b, 3);
        clock.advance(Duration::from_secs(2));
        drop(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn late_results_of_old_calls_do_not_close_an_open_circuit() {
        let (b, _, _) = breaker();
        let slow = b.try_acquire().unwrap();
        fail(&b, 3);
        slow.success();
        assert_eq!(b.state(), CircuitState::Open);
    }
}
