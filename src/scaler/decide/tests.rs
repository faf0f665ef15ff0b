//! Data-driven tests of [`decide`]: one `check` per case, a controllable clock.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::scaler::policy::{self, Policy};

/// min 1, max 10, window 10 s, in-flight target 4; no windows, cooldowns or step limits
/// unless `extra` sets them.
fn policy(extra: &str) -> Policy {
    let min = if extra.contains("min:") {
        ""
    } else {
        "min: 1\n"
    };
    let base = format!("pool: a\n{min}max: 10\ninterval: 1s\nwindow: 10s\n");
    let has_metrics = extra.contains("metrics:");
    let metrics = if has_metrics {
        ""
    } else {
        "metrics:\n  - {metric: inflight_per_replica, target: 4}\n"
    };
    let up = if extra.contains("scale_up:") {
        ""
    } else {
        "scale_up: {max_step: 100}\n"
    };
    let down = if extra.contains("scale_down:") {
        ""
    } else {
        "scale_down: {stabilization: 0s, cooldown: 0s, max_step: 100}\n"
    };
    let text = format!("{base}{metrics}{up}{down}{extra}");
    policy::from_str(Path::new("t.yaml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A moment to count from, far enough from any clock start to subtract from.
fn t0() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// An observation of `stable` values (panic window the same), active just now.
fn obs(stable: &[Option<f64>], now: Instant) -> Observation {
    Observation {
        stable: stable.to_vec(),
        panic: stable.to_vec(),
        last_active: now,
        waiting: 0,
        unix_secs: 0,
    }
}

fn fleet(current: u32, ready: u32) -> Fleet {
    Fleet {
        current,
        ready,
        history: History::default(),
    }
}

/// Decides and compares `(to, reason label)`.
fn check(p: &Policy, o: &Observation, f: &Fleet, now: Instant, expected: (u32, &str)) -> Decision {
    let d = decide(p, o, f, now);
    assert_eq!(
        (d.to, d.reason.label()),
        expected,
        "{} -> {}: {}",
        d.from,
        d.to,
        d.reason
    );
    d
}

#[test]
fn target_tracking() {
    let p = policy("");
    let now = t0();
    let d = check(
        &p,
        &obs(&[Some(9.1)], now),
        &fleet(2, 2),
        now,
        (5, "metric"),
    );
    assert_eq!(
        d.reason.to_string(),
        "in-flight per replica 9.1 > target 4 over 10 s"
    );
    // Within the 10 % tolerance: no change.
    check(
        &p,
        &obs(&[Some(4.3)], now),
        &fleet(2, 2),
        now,
        (2, "steady"),
    );
    check(
        &p,
        &obs(&[Some(1.0)], now),
        &fleet(4, 4),
        now,
        (1, "metric"),
    );
    check(
        &p,
        &obs(&[Some(0.0)], now),
        &fleet(4, 4),
        now,
        (1, "metric"),
    );
    let p = policy("metrics: [{metric: inflight_per_replica, target: 4, tolerance: 0.5}]\n");
    check(
        &p,
        &obs(&[Some(5.9)], now),
        &fleet(2, 2),
        now,
        (2, "steady"),
    );
}

#[test]
fn threshold_rules_step_up_above_and_down_below_half() {
    let p = policy("metrics: [{metric: cpu_percent, threshold: 80}]\n");
    let now = t0();
    for (value, current, to, label) in [
        (85.0, 2, 3, "metric"),
        (80.0, 2, 2, "steady"),
        (50.0, 2, 2, "steady"),
        (39.0, 2, 1, "metric"),
        (39.0, 1, 1, "at_bound"),
        (99.0, 10, 10, "at_bound"),
    ] {
        check(
            &p,
            &obs(&[Some(value)], now),
            &fleet(current, current),
            now,
            (to, label),
        );
    }
}

#[test]
fn largest_recommendation_wins() {
    let p = policy(
        "metrics:\n  - {metric: inflight_per_replica, target: 4}\n  - {metric: response_time_p95_ms, target: 100}\n",
    );
    let now = t0();
    let d = check(
        &p,
        &obs(&[Some(6.0), Some(300.0)], now),
        &fleet(2, 2),
        now,
        (6, "metric"),
    );
    assert!(d
        .reason
        .to_string()
        .starts_with("p95 response time ms 300 > target 100"));
    check(
        &p,
        &obs(&[Some(16.0), Some(10.0)], now),
        &fleet(2, 2),
        now,
        (8, "metric"),
    );
}

#[test]
fn missing_metrics_hold_and_never_scale_down() {
    let p = policy(
        "metrics:\n  - {metric: inflight_per_replica, target: 4}\n  - {metric: cpu_percent, target: 50}\n",
    );
    let now = t0();
    check(
        &p,
        &obs(&[None, None], now),
        &fleet(3, 3),
        now,
        (3, "missing_metrics"),
    );
    // The present metric says down; the missing one might say up: hold.
    check(
        &p,
        &obs(&[Some(0.5), None], now),
        &fleet(3, 3),
        now,
        (3, "missing_metrics"),
    );
    // Up is still allowed.
    check(
        &p,
        &obs(&[None, Some(100.0)], now),
        &fleet(3, 3),
        now,
        (6, "metric"),
    );
    check(
        &p,
        &obs(&[Some(f64::NAN), None], now),
        &fleet(3, 3),
        now,
        (3, "missing_metrics"),
    );
}

#[test]
fn bounds_come_first() {
    let p = policy("");
    let now = t0();
    check(&p, &obs(&[None], now), &fleet(0, 0), now, (1, "below_min"));
    check(
        &p,
        &obs(&[Some(0.0)], now),
        &fleet(12, 12),
        now,
        (10, "above_max"),
    );
    let d = check(
        &p,
        &obs(&[Some(80.0)], now),
        &fleet(2, 2),
        now,
        (10, "metric"),
    );
    assert_eq!(
        d.recommendation, 10,
        "recommendations are kept within bounds"
    );
    check(
        &p,
        &obs(&[Some(80.0)], now),
        &fleet(10, 10),
        now,
        (10, "at_bound"),
    );
}

#[test]
fn starting_replicas_are_not_measured_or_scaled_down() {
    let p = policy("");
    let now = t0();
    check(
        &p,
        &obs(&[Some(0.0)], now),
        &fleet(3, 0),
        now,
        (3, "starting"),
    );
    // One of three ready, little load: the others are still starting, no scale-down.
    check(
        &p,
        &obs(&[Some(1.0)], now),
        &fleet(3, 1),
        now,
        (3, "steady"),
    );
    // Load on the ready one is counted against what is ready: 1 x 16/4 = 4 > 3.
    check(
        &p,
        &obs(&[Some(16.0)], now),
        &fleet(3, 1),
        now,
        (4, "metric"),
    );
}

fn history(recs: &[(Duration, u32)], events: &[(Duration, i64)], now: Instant) -> History {
    History {
        recommendations: recs.iter().map(|(ago, r)| (now - *ago, *r)).collect(),
        events: events.iter().map(|(ago, e)| (now - *ago, *e)).collect(),
        panic_until: None,
    }
}

#[test]
fn stabilization_windows() {
    let now = t0();
    let down = policy("scale_down: {stabilization: 10s, cooldown: 0s, max_step: 100}\n");
    let mut f = fleet(5, 5);
    // 5 s ago the recommendation was 5: scale-down waits for the window.
    f.history = history(&[(s(5), 5)], &[], now);
    check(&down, &obs(&[Some(1.0)], now), &f, now, (5, "stabilizing"));
    // A recommendation of 3 within the window: go down to the highest, 3.
    f.history = history(&[(s(5), 3), (s(3), 2)], &[], now);
    check(&down, &obs(&[Some(1.0)], now), &f, now, (3, "metric"));
    // Once the window has passed, the low recommendation stands.
    f.history = history(&[(s(11), 5)], &[], now);
    check(&down, &obs(&[Some(1.0)], now), &f, now, (2, "metric"));

    let up = policy("scale_up: {stabilization: 10s, max_step: 100}\n");
    let mut f = fleet(2, 2);
    f.history = history(&[(s(5), 2)], &[], now);
    check(&up, &obs(&[Some(10.0)], now), &f, now, (2, "stabilizing"));
    f.history = history(&[(s(5), 4)], &[], now);
    check(&up, &obs(&[Some(10.0)], now), &f, now, (4, "metric"));
}

#[test]
fn cooldowns_are_per_direction() {
    let p = policy(
        "scale_up: {cooldown: 5s, max_step: 100}\nscale_down: {cooldown: 20s, max_step: 100}\n",
    );
    let now = t0();
    let mut f = fleet(3, 3);
    f.history = history(&[], &[(s(2), 1)], now);
    let d = check(&p, &obs(&[Some(8.0)], now), &f, now, (3, "cooldown"));
    assert_eq!(d.reason.to_string(), "wants up but cooling down for 3 s");
    // Scale-down waits 20 s after any event, up or down.
    f.history = history(&[], &[(s(10), 1)], now);
    check(&p, &obs(&[Some(1.0)], now), &f, now, (3, "cooldown"));
    check(&p, &obs(&[Some(8.0)], now), &f, now, (6, "metric"));
    f.history = history(&[], &[(s(21), 1)], now);
    check(&p, &obs(&[Some(1.0)], now), &f, now, (1, "metric"));
}

#[test]
fn step_limit_per_period() {
    let p = policy("scale_up: {max_step: 2, period: 10s}\nscale_down: {stabilization: 0s, max_step: 1, period: 30s}\n");
    let now = t0();
    let mut f = fleet(2, 2);
    let d = check(&p, &obs(&[Some(16.0)], now), &f, now, (4, "metric"));
    assert!(matches!(d.reason, Reason::Metric { limited: true, .. }));
    f.history = history(&[], &[(s(3), 1)], now);
    check(&p, &obs(&[Some(16.0)], now), &f, now, (3, "metric"));
    f.history = history(&[], &[(s(3), 2)], now);
    check(&p, &obs(&[Some(16.0)], now), &f, now, (2, "step_limit"));
    f.history = history(&[], &[(s(11), 2)], now);
    check(&p, &obs(&[Some(16.0)], now), &f, now, (4, "metric"));
    let mut f = fleet(6, 6);
    f.history = history(&[], &[(s(40), -1)], now);
    check(&p, &obs(&[Some(0.0)], now), &f, now, (5, "metric"));
    f.history = history(&[], &[(s(20), -1)], now);
    check(&p, &obs(&[Some(0.0)], now), &f, now, (6, "step_limit"));
}

#[test]
fn panic_mode_scales_up_at_once_and_never_down() {
    let p = policy(
        "panic: {window: 2s, threshold: 2}\nscale_up: {stabilization: 30s, cooldown: 30s, max_step: 1}\n",
    );
    let now = t0();
    let mut o = obs(&[Some(5.0)], now);
    o.panic = vec![Some(20.0)];
    let mut f = fleet(2, 2);
    f.history = history(&[(s(1), 2)], &[(s(1), 1)], now);
    // Short window: 2 x 20/4 = 10 >= 2 x 2 ready: panic ignores the window, cooldown and step.
    let d = check(&p, &o, &f, now, (10, "panic"));
    assert_eq!(d.panic_until, Some(now + s(10)));
    // Still in panic with calm load: hold, no scale-down.
    let mut f = fleet(10, 10);
    f.history.panic_until = d.panic_until;
    let later = now + s(5);
    check(&p, &obs(&[Some(0.5)], later), &f, later, (10, "panic"));
    // Panic over: normal rules again.
    let after = now + s(11);
    let d = check(&p, &obs(&[Some(0.5)], after), &f, after, (2, "metric"));
    assert_eq!(d.panic_until, None);
    // Below the threshold: no panic, the up window holds.
    let mut o = obs(&[Some(5.0)], now);
    o.panic = vec![Some(6.0)];
    let mut f = fleet(2, 2);
    f.history = history(&[(s(1), 2)], &[], now);
    check(&p, &o, &f, now, (2, "stabilizing"));
}

#[test]
fn scale_to_zero_when_idle_and_back_on_demand() {
    let p = policy("min: 1\nscale_to_zero: {after: 60s}\n");
    let now = t0();
    let mut o = obs(&[Some(0.0)], now);
    o.last_active = now - s(61);
    check(&p, &o, &fleet(2, 2), now, (0, "idle"));
    check(&p, &o, &fleet(0, 0), now, (0, "idle"));
    o.waiting = 3;
    check(&p, &o, &fleet(0, 0), now, (1, "activation"));
    // Active lately: the floor is min (at least 1).
    o.waiting = 0;
    o.last_active = now - s(30);
    check(&p, &o, &fleet(0, 0), now, (1, "below_min"));
    let p = policy("min: 0\nscale_to_zero: {after: 60s}\n");
    check(&p, &o, &fleet(0, 0), now, (1, "below_min"));
    check(&p, &o, &fleet(1, 1), now, (1, "at_bound"));
}

#[test]
fn schedule_floor_by_day_and_hour() {
    // 2024-01-01 was a Monday.
    let monday = 1_704_067_200;
    let p = policy("schedule:\n  - {days: [mon], hours: '08:00-18:00', min: 3}\n  - {hours: '22:00-02:00', min: 2}\n");
    let now = t0();
    let at = |unix: u64| {
        let mut o = obs(&[Some(4.0)], now);
        o.unix_secs = unix;
        o
    };
    check(
        &p,
        &at(monday + 9 * 3600),
        &fleet(1, 1),
        now,
        (3, "schedule"),
    );
    check(&p, &at(monday + 7 * 3600), &fleet(1, 1), now, (1, "steady"));
    check(
        &p,
        &at(monday + 86400 + 9 * 3600),
        &fleet(1, 1),
        now,
        (1, "steady"),
    );
    check(
        &p,
        &at(monday + 23 * 3600),
        &fleet(1, 1),
        now,
        (2, "schedule"),
    );
    check(
        &p,
        &at(monday + 86400 + 3600),
        &fleet(1, 1),
        now,
        (2, "schedule"),
    );
    // Low load does not go below the floor.
    let mut idle = at(monday + 9 * 3600);
    idle.stable = vec![Some(0.0)];
    check(&p, &idle, &fleet(5, 5), now, (3, "metric"));
    let p =
        policy("utc_offset: '+02:00'\nschedule: [{days: [mon], hours: '00:00-01:00', min: 4}]\n");
    // Sunday 22:30 UTC is Monday 00:30 at +02:00.
    check(&p, &at(monday - 5400), &fleet(1, 1), now, (4, "schedule"));
}

/// Replays a load that swings every few seconds through the loop's
/// bookkeeping: with a scale-down window the fleet follows the peaks only.
#[test]
fn oscillating_load_does_not_flap() {
    let p = policy("scale_down: {stabilization: 20s, cooldown: 10s, max_step: 1, period: 10s}\n");
    let mut f = fleet(2, 2);
    let start = t0();
    let mut changes = Vec::new();
    for tick in 0..60u64 {
        let now = start + s(tick);
        // Total in-flight alternates 12 and 4 every 3 s.
        let total = if (tick / 3) % 2 == 0 { 12.0 } else { 4.0 };
        let o = obs(&[Some(total / f64::from(f.ready))], now);
        let d = decide(&p, &o, &f, now);
        f.history.record(&d, now, History::keep_for(&p));
        if d.to != d.from {
            changes.push((tick, d.from, d.to));
            f.current = d.to;
            f.ready = d.to;
        }
    }
    assert_eq!(changes, vec![(0, 2, 3)], "fleet flapped");
}

/// Recommendations are recorded during a cooldown, so the first decision
/// after it acts on the latest data.
#[test]
fn cooldown_keeps_observing() {
    let p = policy("scale_up: {cooldown: 5s, max_step: 100}\n");
    let start = t0();
    let mut f = fleet(2, 2);
    f.history = history(&[], &[(s(0), 1)], start);
    let mut labels = Vec::new();
    let mut last = None;
    for tick in 1..=5u64 {
        let now = start + s(tick);
        let d = decide(&p, &obs(&[Some(4.0 * tick as f64)], now), &f, now);
        f.history.record(&d, now, History::keep_for(&p));
        labels.push(d.reason.label());
        last = Some(d);
    }
    assert_eq!(
        labels,
        ["steady", "cooldown", "cooldown", "cooldown", "metric"]
    );
    assert_eq!(f.history.recommendations.len(), 5);
    // Tick 5: 2 x 20/4 = 10, from the newest value.
    assert_eq!(last.unwrap().to, 10);
}
