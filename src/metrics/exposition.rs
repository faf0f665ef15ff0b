//! Reading the Prometheus text format: the proxy's and the workers' `/metrics`.
//!
//! Only what the scaler and the status page need: `name{labels} value` lines;
//! comments, types and timestamps are skipped. A line that does not parse is
//! ignored. [`quantile`] is `histogram_quantile` over cumulative buckets.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with any `_bucket`/`_sum`/`_count` suffix.
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Every sample in `text`.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (n, r) = line.split_once(char::is_whitespace)?;
            (n, BTreeMap::new(), r)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim().to_string(), value);
    }
}

/// Sum of the samples named `name` whose labels include every pair of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in samples.iter().filter(|s| s.name == name) {
        if with.iter().all(|(k, v)| s.label(k) == Some(v)) {
            *found.get_or_insert(0.0) += s.value;
        }
    }
    found
}

/// `histogram_quantile`: linear interpolation within cumulative buckets.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|b| b.1 >= rank)?;
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let (upper, count) = buckets[i];
    if upper.is_infinite() {
        return Some(lower);
    }
    if count <= below {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / (count - below))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Name, labels, value.
    type Expected<'a> = Option<(&'a str, &'a [(&'a str, &'a str)], f64)>;

    fn check(line: &str, expected: Expected<'_>) {
        let got = parse_line(line);
        let want = expected.map(|(n, l, v)| Sample {
            name: n.into(),
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: v,
        });
        assert_eq!(got, want, "{line}");
    }

    #[test]
    fn lines() {
        check("# HELP x y", None);
        check(
            "gantry_worker_queue_length 3",
            Some(("gantry_worker_queue_length", &[], 3.0)),
        );
        check(
            r#"gantry_requests_total{pool="a",code_class="2xx"} 12 1700000000"#,
            Some((
                "gantry_requests_total",
                &[("pool", "a"), ("code_class", "2xx")],
                12.0,
            )),
        );
        check(
            r#"h_bucket{le="+Inf",pool="a\"b"} 4"#,
            Some(("h_bucket", &[("le", "+Inf"), ("pool", "a\"b")], 4.0)),
        );
        check("broken{a=1} 2", None);
        check("x NaNope", None);
    }

    #[test]
    fn sums_by_labels() {
        let s = parse(
            "r{pool=\"a\",c=\"2xx\"} 3\nr{pool=\"a\",c=\"5xx\"} 1\nr{pool=\"b\",c=\"2xx\"} 7\n",
        );
        assert_eq!(sum(&s, "r", &[("pool", "a")]), Some(4.0));
        assert_eq!(sum(&s, "r", &[("pool", "c")]), None);
    }
}
