//! The request mix: method, path, headers, and which body each request carries (fixed, from a file, or generated analysis bodies), picked in turn or by Zipf(s), alone or in batches.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use rand::{Rng, RngCore};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use super::BenchError;

/// The analysis API's single-item path (`src/worker/http.rs`).
pub const ANALYZE_PATH: &str = "/v1/analyze";
/// The analysis API's batch path.
pub const BATCH_PATH: &str = "/v1/analyze/batch";
/// The largest body file read: every body is held in memory for the run.
const MAX_FILE_BYTES: u64 = 256 << 20;
/// The most distinct bodies, read or generated (100 k is the cache studies' size).
pub const MAX_ITEMS: usize = 10_000_000;
/// The largest batch: the worker accepts 256 items by default.
pub const MAX_BATCH: usize = 10_000;

/// Where request bodies come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bodies {
    /// No body (a GET).
    None,
    /// The same body every time.
    Fixed(String),
    /// One per line: a JSON object is sent as it is, anything else is a URL to analyse (`{"url": ...}`).
    File(PathBuf),
    /// `n` distinct generated analysis bodies (`{"url": ...}`).
    Generated(usize),
}

/// How the next body is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// In file order, round and round (each user or connection from its own offset).
    Cycle,
    /// Zipf(s) over the distinct bodies: rank 1 (the first) is the most frequent.
    Zipf(f64),
}

/// What requests look like, as the user described them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixSpec {
    /// HTTP method.
    #[serde(with = "method_str")]
    pub method: Method,
    /// Path and query for single requests.
    pub path: String,
    /// Path and query for batches.
    pub batch_path: String,
    /// Extra headers, `name: value`.
    pub headers: Vec<(String, String)>,
    /// Body source.
    pub bodies: Bodies,
    /// Body choice.
    pub pick: Pick,
    /// Items per request: above 1, `{"items": [body, ...]}` to the batch path.
    pub batch: usize,
}

impl Default for MixSpec {
    fn default() -> MixSpec {
        MixSpec {
            method: Method::POST,
            path: ANALYZE_PATH.into(),
            batch_path: BATCH_PATH.into(),
            headers: Vec::new(),
            bodies: Bodies::Generated(1000),
            pick: Pick::Cycle,
            batch: 1,
        }
    }
}

mod method_str {
    use http::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Body (empty for none).
    pub body: Bytes,
}

/// A mix ready to draw from: bodies in memory, headers parsed.
#[derive(Debug)]
pub struct Mix {
    spec: MixSpec,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    items: Vec<Bytes>,
    zipf: Option<Zipf<f64>>,
}

impl Mix {
    /// Reads the body file or generates bodies; checks headers and bounds.
    pub fn new(spec: MixSpec) -> Result<Mix, BenchError> {
        let usage = BenchError::Usage;
        if spec.batch == 0 || spec.batch > MAX_BATCH {
            return Err(usage(format!("batch size must be 1..={MAX_BATCH}")));
        }
        let headers = (spec.headers.iter())
            .map(|(k, v)| {
                let name = HeaderName::try_from(k.as_str())
                    .map_err(|_| usage(format!("bad header name {k:?}")))?;
                let value = HeaderValue::try_from(v.as_str())
                    .map_err(|_| usage(format!("bad value for header {k}")))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let items = match &spec.bodies {
            Bodies::None => vec![Bytes::new()],
            Bodies::Fixed(b) => vec![Bytes::from(b.clone())],
            Bodies::File(path) => read_bodies(path)?,
            Bodies::Generated(n) if *n == 0 || *n > MAX_ITEMS => {
                return Err(usage(format!("distinct bodies must be 1..={MAX_ITEMS}")));
            }
            Bodies::Generated(n) => (0..*n).map(generated).collect(),
        };
        let zipf = match spec.pick {
            Pick::Cycle => None,
            Pick::Zipf(s) => Some(
                Zipf::new(items.len() as f64, s)
                    .map_err(|e| usage(format!("zipf exponent {s}: {e}")))?,
            ),
        };
        Ok(Mix {
            spec,
            headers,
            items,
            zipf,
        })
    }

    /// What the user asked for.
    pub fn spec(&self) -> &MixSpec {
        &self.spec
    }

    /// Distinct bodies.
    pub fn distinct(&self) -> usize {
        self.items.len()
    }

    /// The next request of a user or connection: `turn` counts its own requests.
    pub fn next(&self, rng: &mut dyn RngCore, turn: u64, batch: Option<usize>) -> Request {
        let batch = batch.unwrap_or(self.spec.batch);
        let mut pick = |i: u64| self.item(rng, turn.wrapping_mul(batch as u64).wrapping_add(i));
        if batch <= 1 {
            return Request {
                method: self.spec.method.clone(),
                path: self.spec.path.clone(),
                body: pick(0),
            };
        }
        let mut body = Vec::with_capacity(16 + batch * 64);
        body.extend_from_slice(b"{\"items\":[");
        for i in 0..batch as u64 {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&pick(i));
        }
        body.extend_from_slice(b"]}");
        Request {
            method: self.spec.method.clone(),
            path: self.spec.batch_path.clone(),
            body: body.into(),
        }
    }

    fn item(&self, rng: &mut dyn RngCore, n: u64) -> Bytes {
        let i = match &self.zipf {
            // Zipf samples ranks 1..=len as floats.
            Some(z) => (z.sample(rng) as usize).saturating_sub(1),
            None => (n % self.items.len() as u64) as usize,
        };
        self.items[i.min(self.items.len() - 1)].clone()
    }

    /// A user's or connection's starting offset in a cycled file, so they do not all send the same body together.
    pub fn offset(&self, rng: &mut dyn RngCore) -> u64 {
        rng.random_range(0..self.items.len() as u64)
    }
}

/// The `i`-th generated analysis body: distinct URLs, some shaped like phishing, most not.
pub fn generated(i: usize) -> Bytes {
    let url = match i % 4 {
        0 => format!("http://secure-login-{i}.account-verify.example.ru/signin?session={i}"),
        1 => format!("https://www.shop{i}.example.com/products/{i}?ref=home"),
        2 => format!("https://news.example.org/{}/{i}/story.html", 2000 + i % 27),
        _ => format!(
            "http://{i}.192-0-2-{}.example.net/paypal/update.php",
            i % 250
        ),
    };
    Bytes::from(serde_json::json!({ "url": url }).to_string())
}

fn read_bodies(path: &Path) -> Result<Vec<Bytes>, BenchError> {
    let usage = |m: String| BenchError::Usage(format!("{}: {m}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| usage(e.to_string()))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(usage(format!("larger than {} MiB", MAX_FILE_BYTES >> 20)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if items.len() == MAX_ITEMS {
            return Err(usage(format!("more than {MAX_ITEMS} bodies")));
        }
        let body = if line.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(line)
                .map_err(|e| usage(format!("line {}: not JSON: {e}", n + 1)))?;
            line.to_string()
        } else {
            serde_json::json!({ "url": line }).to_string()
        };
        items.push(Bytes::from(body));
    }
    if items.is_empty() {
        return Err(usage("no bodies in it".into()));
    }
    Ok(items)
}

/// A random generator for user or connection `id` of a run seeded with `seed`.
pub fn rng_for(seed: u64, id: usize) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mix(bodies: Bodies, pick: Pick, batch: usize) -> Mix {
        Mix::new(MixSpec {
            bodies,
            pick,
            batch,
            ..MixSpec::default()
        })
        .unwrap()
    }

    #[test]
    fn zipf_favours_the_first_bodies_in_proportion() {
        let m = mix(Bodies::Generated(1000), Pick::Zipf(1.0), 1);
        let mut rng = rng_for(7, 0);
        let mut seen: HashMap<Bytes, u64> = HashMap::new();
        for t in 0..100_000 {
            *seen.entry(m.next(&mut rng, t, None).body).or_default() += 1;
        }
        let (first, second) = (seen[&generated(0)] as f64, seen[&generated(1)] as f64);
        // P(rank 1) / P(rank 2) = 2 for s = 1; H(1000) ≈ 7.49, so rank 1 is ≈ 13.4 %.
        assert!((first / second - 2.0).abs() < 0.2, "{first} {second}");
        assert!((first / 100_000.0 - 0.1336).abs() < 0.01, "{first}");
    }

    #[test]
    fn batches_wrap_items_and_go_to_the_batch_path() {
        let m = mix(Bodies::Generated(3), Pick::Cycle, 2);
        let r = m.next(&mut rng_for(1, 0), 1, None);
        assert_eq!(r.path, BATCH_PATH);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let items = v["items"].as_array().unwrap();
        // Turn 1 of a batch of 2 takes items 2 and 3 (3 wraps to 0).
        assert_eq!(
            items[0],
            serde_json::from_slice::<serde_json::Value>(&generated(2)).unwrap()
        );
        assert_eq!(
            items[1],
            serde_json::from_slice::<serde_json::Value>(&generated(0)).unwrap()
        );
        let single = m.next(&mut rng_for(1, 0), 0, Some(1));
        assert_eq!(single.path, ANALYZE_PATH);
    }

    #[test]
    fn a_body_file_takes_json_lines_and_urls_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bodies.txt");
        std::fs::write(&path, "# comment\n{\"url\": \"a\"}\nhttp://b.example/\n\n").unwrap();
        let m = mix(Bodies::File(path.clone()), Pick::Cycle, 1);
        assert_eq!(m.distinct(), 2);
        assert_eq!(
            m.next(&mut rng_for(0, 0), 1, None).body,
            r#"{"url":"http://b.example/"}"#
        );
        std::fs::write(&path, "{\"url\": \"a\"}\n{broken\n").unwrap();
        let err = Mix::new(MixSpec {
            bodies: Bodies::File(path),
            ..MixSpec::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("line 2: not JSON"), "{err}");
    }
}
