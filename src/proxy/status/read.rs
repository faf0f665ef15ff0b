//! Reading this process's own metrics by label, without creating series (`Collector::collect`).

use prometheus::core::Collector;
use prometheus::proto::Metric;

/// Whether `m` carries every `(name, value)` of `with`.
fn matches(m: &Metric, with: &[(&str, &str)]) -> bool {
    with.iter().all(|(k, v)| {
        m.get_label()
            .iter()
            .any(|l| l.name() == *k && l.value() == *v)
    })
}

/// Every series of `c` carrying the labels of `with`.
pub fn series(c: &dyn Collector, with: &[(&str, &str)]) -> Vec<Metric> {
    c.collect()
        .into_iter()
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| matches(m, with))
        .collect()
}

/// The sum of the counters (or gauges) of `c` carrying the labels of `with`.
pub fn sum(c: &dyn Collector, with: &[(&str, &str)]) -> f64 {
    series(c, with)
        .iter()
        .map(|m| m.get_counter().value() + m.get_gauge().value())
        .sum()
}

/// `sum` as a count.
pub fn count(c: &dyn Collector, with: &[(&str, &str)]) -> u64 {
    sum(c, with).max(0.0) as u64
}

/// The cumulative buckets of the histograms of `c` carrying the labels of
/// `with`, summed: `(upper bound, count)`, ascending, the last `+Inf`.
pub fn buckets(c: &dyn Collector, with: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for m in series(c, with) {
        let h = m.get_histogram();
        let mut these: Vec<(f64, f64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count() as f64))
            .collect();
        these.push((f64::INFINITY, h.get_sample_count() as f64));
        if out.is_empty() {
            out = these;
        } else {
            for (o, t) in out.iter_mut().zip(these) {
                o.1 += t.1;
            }
        }
    }
    out
}

/// Quantile `q` of cumulative buckets, in milliseconds.
pub fn quantile_ms(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    crate::metrics::exposition::quantile(q, buckets).map(|s| s * 1e3)
}

/// `part / whole`, or `None` when `whole` is zero.
pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

    #[test]
    fn sums_and_buckets_by_label_without_creating_series() {
        let c = IntCounterVec::new(Opts::new("c", "c"), &["pool", "class"]).unwrap();
        c.with_label_values(&["a", "2xx"]).inc_by(3);
        c.with_label_values(&["a", "5xx"]).inc();
        c.with_label_values(&["b", "2xx"]).inc_by(7);
        assert_eq!(count(&c, &[("pool", "a")]), 4);
        assert_eq!(count(&c, &[]), 11);
        assert_eq!(count(&c, &[("pool", "z")]), 0);
        assert_eq!(c.collect()[0].get_metric().len(), 3, "no series made");

        let h = HistogramVec::new(
            HistogramOpts::new("h", "h").buckets(vec![0.1, 1.0]),
            &["pool"],
        )
        .unwrap();
        h.with_label_values(&["a"]).observe(0.05);
        h.with_label_values(&["b"]).observe(0.5);
        let b = buckets(&h, &[]);
        assert_eq!(b, vec![(0.1, 1.0), (1.0, 2.0), (f64::INFINITY, 2.0)]);
        assert_eq!(quantile_ms(0.5, &b), Some(100.0));
        assert_eq!(buckets(&h, &[("pool", "z")]), vec![]);
    }
}
