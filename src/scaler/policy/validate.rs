//! Checking a raw policy into a [`Policy`]: every semantic error at once, each located in the file.

use super::raw;
use super::{Floor, MetricRule, MetricSource, Policy, Rule};
use crate::yaml::{ConfigError, ConfigErrors, Source};

/// Checks a raw policy, collecting every error.
pub fn validate(raw: raw::RawPolicy, src: &Source) -> Result<Policy, ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |field: &str, msg: &str| errors.push(src.error(field, msg));
    if raw.pool.trim().is_empty() {
        err("pool", "must name a pool");
    }
    if raw.max == 0 {
        err("max", "must be at least 1");
    }
    if raw.min > raw.max {
        err("min", &format!("must be at most max ({})", raw.max));
    }
    if raw.warm > raw.max {
        err("warm", &format!("must be at most max ({})", raw.max));
    }
    if raw.min == 0 && raw.scale_to_zero.is_none() {
        err(
            "min",
            "0 needs `scale_to_zero` (nothing else brings an empty pool back)",
        );
    }
    if raw.interval.is_zero() {
        err("interval", "must be more than 0");
    }
    if raw.window < raw.interval {
        err("window", "must be at least `interval`");
    }
    if raw.metrics.is_empty() {
        err("metrics", "needs at least one metric");
    }
    for (name, b) in [("scale_up", &raw.scale_up), ("scale_down", &raw.scale_down)] {
        if b.max_step == 0 {
            err(&format!("{name}.max_step"), "must be at least 1");
        }
        if b.period.is_zero() {
            err(&format!("{name}.period"), "must be more than 0");
        }
    }
    if let Some(p) = &raw.panic {
        if p.window.is_zero() || p.window >= raw.window {
            err(
                "panic.window",
                "must be more than 0 and shorter than `window`",
            );
        }
        if !p.threshold.is_finite() || p.threshold <= 1.0 {
            err("panic.threshold", "must be more than 1");
        }
    }
    if let Some(z) = &raw.scale_to_zero {
        if z.hold_queue == 0 {
            err("scale_to_zero.hold_queue", "must be at least 1");
        }
        if z.hold_timeout.is_zero() {
            err("scale_to_zero.hold_timeout", "must be more than 0");
        }
    }
    if raw.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        err("model", "must name a model directory");
    }
    if raw
        .resources
        .cpus
        .is_some_and(|c| !c.is_finite() || c <= 0.0)
    {
        err("resources.cpus", "must be more than 0");
    }
    if raw.resources.memory_mib < raw::MIN_MEMORY_MIB {
        let msg = format!("must be at least {} (Docker's floor)", raw::MIN_MEMORY_MIB);
        err("resources.memory_mib", &msg);
    }
    if raw.resources.pids == 0 {
        err("resources.pids", "must be at least 1");
    }
    let offset = parse_offset(&raw.utc_offset)
        .map_err(|m| err("utc_offset", &m))
        .unwrap_or(0);
    let metrics = raw
        .metrics
        .iter()
        .enumerate()
        .filter_map(|(i, m)| validate_metric(i, m, src, &mut errors))
        .collect();
    let schedule = validate_schedule(&raw, src, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Policy {
        pool: raw.pool,
        min: raw.min,
        max: raw.max,
        warm: raw.warm,
        interval: raw.interval,
        window: raw.window,
        metrics,
        up: raw.scale_up,
        down: raw.scale_down,
        panic: raw.panic,
        scale_to_zero: raw.scale_to_zero,
        schedule,
        utc_offset_minutes: offset,
        cpus: raw.resources.cpus,
        model: raw.model.clone(),
        memory_mib: raw.resources.memory_mib,
        pids: raw.resources.pids,
        ready_timeout: raw.ready_timeout,
        replace_unhealthy_after: raw.replace_unhealthy_after,
        drain_timeout: raw.drain_timeout,
        file: src.file.clone(),
    })
}

fn validate_metric(
    i: usize,
    m: &raw::RawMetric,
    src: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<MetricRule> {
    let at = |f: &str| format!("metrics[{i}].{f}");
    let before = errors.len();
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let rule = match (m.target, m.threshold) {
        (Some(_), Some(_)) => {
            errors.push(src.error(at("threshold"), "give `target` or `threshold`, not both"));
            None
        }
        (None, None) => {
            errors.push(src.error(at("metric"), "needs a `target` or a `threshold`"));
            None
        }
        (Some(target), None) => {
            if !positive(target) {
                errors.push(src.error(at("target"), "must be more than 0"));
            }
            if !(0.0..1.0).contains(&m.tolerance) {
                errors.push(src.error(at("tolerance"), "must be at least 0 and below 1"));
            }
            if m.scale_down_below.is_some() {
                errors.push(src.error(at("scale_down_below"), "only applies to `threshold`"));
            }
            Some(Rule::Target {
                target,
                tolerance: m.tolerance,
            })
        }
        (None, Some(up_above)) => {
            let down_below = m.scale_down_below.unwrap_or(up_above / 2.0);
            if !positive(up_above) {
                errors.push(src.error(at("threshold"), "must be more than 0"));
            }
            if !(down_below >= 0.0 && down_below < up_above) {
                errors.push(src.error(
                    at("scale_down_below"),
                    "must be at least 0 and below `threshold`",
                ));
            }
            if m.step == 0 {
                errors.push(src.error(at("step"), "must be at least 1"));
            }
            Some(Rule::Threshold {
                up_above,
                down_below,
                step: m.step,
            })
        }
    };
    let source = match &m.prometheus {
        None => MetricSource::Proxy,
        Some(p) => {
            if !(p.url.starts_with("http://") && p.url.parse::<http::Uri>().is_ok()) {
                errors.push(src.error(
                    at("prometheus.url"),
                    "must be an http:// URL like http://127.0.0.1:9091",
                ));
            }
            if p.query.trim().is_empty() {
                errors.push(src.error(at("prometheus.query"), "must not be empty"));
            }
            MetricSource::Prometheus {
                url: p.url.trim_end_matches('/').to_string(),
                query: p.query.clone(),
            }
        }
    };
    (errors.len() == before).then_some(MetricRule {
        kind: m.metric,
        rule: rule?,
        source,
    })
}

fn validate_schedule(
    raw: &raw::RawPolicy,
    src: &Source,
    errors: &mut Vec<ConfigError>,
) -> Vec<Floor> {
    let mut out = Vec::new();
    for (i, f) in raw.schedule.iter().enumerate() {
        if f.min > raw.max {
            errors.push(src.error(
                format!("schedule[{i}].min"),
                format!("must be at most max ({})", raw.max),
            ));
        }
        let (from, to) = match f.hours.as_deref().map(parse_hours).transpose() {
            Ok(h) => h.unwrap_or((0, 0)),
            Err(m) => {
                errors.push(src.error(format!("schedule[{i}].hours"), m));
                (0, 0)
            }
        };
        out.push(Floor {
            days: f.days.clone(),
            from,
            to,
            min: f.min,
        });
    }
    out
}

/// `HH:MM-HH:MM` to minutes of the day.
pub fn parse_hours(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not `HH:MM-HH:MM` (like 08:00-18:30)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let minute = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let (from, to) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
    Ok((from % (24 * 60), to % (24 * 60)))
}

/// `+HH:MM` / `-HH:MM` to minutes.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    let bad = || format!("`{s}` is not an offset like +02:00 or -05:30");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaler::policy::from_str;
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = "pool: a\nmax: 3\nmetrics:\n  - {metric: inflight_per_replica, target: 4}\n";

    /// Validates `text`; `expected` lists `line:field` of every error, in order.
    fn check(text: &str, expected: &[&str]) {
        let got: Vec<String> = match from_str(Path::new("p.yaml"), text) {
            Ok(_) => vec![],
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}:{}", e.line.unwrap_or(0), e.field))
                    .collect()
            }
        };
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn valid_policies() {
        check(BASE, &[]);
        check(
            "pool: a\nmin: 0\nmax: 2\nmetrics: [{metric: cpu_percent, threshold: 80}]\nscale_to_zero: {after: 1m}\n",
            &[],
        );
        check(
            &format!("{BASE}schedule:\n  - {{days: [mon, fri], hours: '22:00-06:00', min: 2}}\npanic: {{window: 5s}}\n"),
            &[],
        );
    }

    #[test]
    fn every_error_is_located() {
        check(
            "pool: a\nmin: 5\nmax: 3\nmetrics: []\n",
            &["2:min", "4:metrics"],
        );
        check(
            "pool: a\nmin: 0\nmax: 3\nmetrics: [{metric: cpu_percent, target: 50}]\n",
            &["2:min"],
        );
        check(&format!("{BASE}warm: 4\n"), &["5:warm"]);
        check(&format!("{BASE}warm: 3\n"), &[]);
        check(
            "pool: a\nmax: 3\nmetrics:\n  - {metric: cpu_percent, target: 50, threshold: 80}\n  - metric: queue_length\n    threshold: 10\n    scale_down_below: 20\n",
            &["4:metrics[0].threshold", "7:metrics[1].scale_down_below"],
        );
        check(
            &format!("{BASE}schedule:\n  - {{hours: '8-18', min: 9}}\nutc_offset: CET\n"),
            &["7:utc_offset", "6:schedule[0].min", "6:schedule[0].hours"],
        );
        check(
            &format!("{BASE}interval: 10s\nwindow: 5s\npanic: {{window: 6s, threshold: 1}}\n"),
            &["6:window", "7:panic.window", "7:panic.threshold"],
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        check(
            &format!("{BASE}scale_up: {{cooldown: soon}}\n"),
            &["5:scale_up.cooldown"],
        );
        check(
            "pool: a\nmax: 3\nmetrics:\n  - {metric: gpu_percent, target: 4}\n",
            &["4:metrics[0].metric"],
        );
        check(&format!("{BASE}maximum: 4\n"), &["5:maximum"]);
    }

    #[test]
    fn threshold_defaults_to_half_for_scale_down() {
        let p = from_str(
            Path::new("p.yaml"),
            "pool: a\nmax: 3\nmetrics: [{metric: cpu_percent, threshold: 80}]\n",
        )
        .unwrap();
        assert_eq!(
            p.metrics[0].rule,
            Rule::Threshold {
                up_above: 80.0,
                down_below: 40.0,
                step: 1
            }
        );
        assert_eq!(p.down.stabilization, Duration::from_secs(300));
    }

    #[test]
    fn hours_and_offsets() {
        assert_eq!(parse_hours("08:00-18:30"), Ok((480, 1110)));
        assert_eq!(parse_hours("22:00-24:00"), Ok((1320, 0)));
        assert!(parse_hours("25:00-01:00").is_err());
        assert_eq!(parse_offset("-05:30"), Ok(-330));
        assert!(parse_offset("05:00").is_err());
    }
}
