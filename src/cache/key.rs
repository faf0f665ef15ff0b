//! The cache key: `pool:path:hash`, where the hash covers everything else that makes a request.
//!
//! The readable `pool:path:` part lets operators purge by prefix (a pool, or
//! one path of it). The blake3 hash covers method, pool, path, query and the
//! body. A JSON body is parsed and written back with sorted keys and no
//! whitespace, so `{"b":1, "a":2}` and `{"a":2,"b":1}` share a key; any
//! other body is hashed as it is, and so is a JSON body with an integer too
//! large for a float to hold exactly (two such bodies would otherwise share
//! a key).
//!
//! That is the **primary key**. Responses that vary on request headers (their
//! `Vary`, the route's `vary` list, the credentials when the route allows
//! them) are stored under a **variant key**, the primary key plus `~` and a
//! hash of a marker's epoch and the request's values of those headers
//! ([`CacheKey::variant`]); the marker under the primary key names them. So
//! invalidating a URL is removing one key, and variants sit side by side.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use serde_json::Value;

/// The selecting header names a route always adds: its `vary` list, then
/// the credentials when it caches requests that carry them.
pub fn route_selecting(vary: &[HeaderName], credentials: bool) -> Vec<String> {
    let creds = super::policy::CREDENTIALS
        .iter()
        .filter(|_| credentials)
        .map(|c| c.to_string());
    vary.iter()
        .map(|h| h.as_str().to_string())
        .chain(creds)
        .collect()
}

/// `names` followed by those of `more` not in it yet.
pub fn union(mut names: Vec<String>, more: &[String]) -> Vec<String> {
    for n in more {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// The request's normalised values of `names`.
pub fn selected(names: &[String], headers: &HeaderMap) -> Vec<(String, Option<Bytes>)> {
    names
        .iter()
        .map(|n| (n.clone(), super::policy::selecting_value(headers, n)))
        .collect()
}

/// A cache key, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Arc<str>);

impl CacheKey {
    /// The key as stored in every tier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key from its stored form (for purge by key and warming).
    pub fn from_stored(s: &str) -> CacheKey {
        CacheKey(Arc::from(s))
    }

    /// The key of the variant selected by `selected` under the marker stamped `epoch`.
    pub fn variant(&self, epoch: u64, selected: &[(String, Option<Bytes>)]) -> CacheKey {
        let mut h = blake3::Hasher::new();
        h.update(&epoch.to_le_bytes());
        for (name, value) in selected {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match value {
                Some(v) => {
                    h.update(&[1]);
                    h.update(&(v.len() as u64).to_le_bytes());
                    h.update(v);
                }
                None => {
                    h.update(&[0]);
                }
            }
        }
        let hash = h.finalize().to_hex();
        CacheKey(Arc::from(format!("{}~{}", self.0, &hash[..32])))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// Pool the route sends to.
    pub pool: &'a str,
    /// URI path.
    pub path: &'a str,
    /// URI query, without `?`.
    pub query: Option<&'a str>,
    /// Request body (empty for GET).
    pub body: &'a [u8],
}

impl KeyParts<'_> {
    /// The key for these parts.
    pub fn key(&self) -> CacheKey {
        let mut h = blake3::Hasher::new();
        let mut field = |b: &[u8]| {
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(self.method.as_bytes());
        field(self.pool.as_bytes());
        field(self.path.as_bytes());
        field(self.query.unwrap_or("").as_bytes());
        field(&normalise_body(self.body));
        let hash = h.finalize().to_hex();
        CacheKey(Arc::from(format!("{}:{}:{}", self.pool, self.path, hash)))
    }
}

/// A JSON body rewritten with sorted keys and no whitespace; other bodies unchanged.
pub fn normalise_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if !body.is_empty() && exact(&v) => {
            out.push(b'j');
            write_canonical(&v, &mut out);
        }
        _ => {
            out.push(b'r');
            out.extend_from_slice(body);
        }
    }
    out
}

/// Writes `v` with object keys sorted, whatever map type serde_json was built with.
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

/// No number in `v` lost digits on parsing: serde_json reads an integer
/// beyond 64 bits as the nearest float, so `2^64+1` and `2^64+2` would meet.
fn exact(v: &Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.abs() < EXACT),
        Value::Array(items) => items.iter().all(exact),
        Value::Object(map) => map.values().all(exact),
        _ => true,
    }
}

fn scalar(v: &Value, out: &mut Vec<u8>) {
    // Writing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: &str, path: &str, query: Option<&str>, body: &str) -> CacheKey {
        KeyParts {
            method,
            pool: "analysis",
            path,
            query,
            body: body.as_bytes(),
        }
        .key()
    }

    fn check_same(a: &str, b: &str, same: bool) {
        let (ka, kb) = (key("POST", "/v1", None, a), key("POST", "/v1", None, b));
        assert_eq!(ka == kb, same, "{a} vs {b}");
    }

    #[test]
    fn json_bodies_are_normalised() {
        check_same(r#"{"a":1,"b":2}"#, r#"{ "b": 2,  "a": 1 }"#, true);
        check_same(
            r#"{"x":{"b":[1,2],"a":null}}"#,
            "{\"x\":{\"a\":null,\n\"b\":[1, 2]}}",
            true,
        );
        check_same(r#"{"a":1}"#, r#"{"a":2}"#, false);
        check_same(r#"[1,2]"#, r#"[2,1]"#, false);
        check_same(r#"{"a":"1"}"#, r#"{"a":1}"#, false);
    }

    #[test]
    fn integers_past_64_bits_never_share_a_key() {
        check_same(
            r#"{"id":18446744073709551617}"#,
            r#"{"id":18446744073709551618}"#,
            false,
        );
        check_same(r#"{"x":[1e300]}"#, r#"{"x":[1e300]}"#, true);
        check_same(
            r#"{"id":18446744073709551615}"#,
            r#"{ "id": 18446744073709551615 }"#,
            true,
        );
    }

    /// Found by `fuzz/fuzz_targets/cache_key.rs`: without serde_json's
    /// `float_roundtrip`, the canonical `58.44679551673707` read back as a
    /// neighbouring float, so normalising twice gave another key.
    #[test]
    fn a_long_decimal_normalises_to_a_fixed_point() {
        for body in [
            "58.44679551673707955167367",
            r#"{"x":[0.1,2.5e-308,1234.5678e-3]}"#,
        ] {
            let once = normalise_body(body.as_bytes());
            assert_eq!(once[0], b'j', "{body}");
            assert_eq!(normalise_body(&once[1..]), once, "{body}");
        }
    }

    #[test]
    fn selected_values_hold_every_line_and_credentials_when_allowed() {
        let mut h = HeaderMap::new();
        h.append("x-tenant", "a".parse().unwrap());
        h.append("x-tenant", " b ,c".parse().unwrap());
        h.insert("authorization", "Bearer alice".parse().unwrap());
        let vary = [HeaderName::from_static("x-tenant")];
        assert_eq!(route_selecting(&vary, false), ["x-tenant"]);
        let names = route_selecting(&vary, true);
        assert_eq!(names, ["x-tenant", "authorization", "cookie"]);
        let got = selected(&names, &h);
        assert_eq!(got[0], ("x-tenant".into(), Some(Bytes::from("a, b, c"))));
        assert_eq!(got[1].1, Some(Bytes::from("Bearer alice")));
        assert_eq!(got[2], ("cookie".into(), None));
        assert_eq!(
            union(names, &["vary-me".into(), "cookie".into()]),
            ["x-tenant", "authorization", "cookie", "vary-me"]
        );
    }

    #[test]
    fn variants_of_one_key_sit_side_by_side() {
        let base = key("GET", "/v1/a", None, "");
        let v = |epoch, value: Option<&'static str>| {
            base.variant(epoch, &[("accept-language".into(), value.map(Bytes::from))])
        };
        assert_ne!(v(1, Some("en")), v(1, Some("de")));
        assert_ne!(v(1, None), v(1, Some("")));
        assert_ne!(v(1, Some("en")), v(2, Some("en")));
        assert_eq!(v(1, Some("en")), v(1, Some("en")));
        assert!(v(1, None).as_str().starts_with(&format!("{base}~")));
    }

    #[test]
    fn non_json_bodies_are_hashed_raw() {
        check_same("url=a b", "url=a b", true);
        check_same("url=a b", "url=a  b", false);
        // A raw body never collides with the JSON it might look like.
        check_same("", "\"\"", false);
    }

    #[test]
    fn method_path_and_query_separate_keys() {
        let base = key("GET", "/v1/a", Some("x=1"), "");
        assert_ne!(base, key("HEAD", "/v1/a", Some("x=1"), ""));
        assert_ne!(base, key("GET", "/v1/b", Some("x=1"), ""));
        assert_ne!(base, key("GET", "/v1/a", Some("x=2"), ""));
        assert_ne!(base, key("GET", "/v1/a", None, ""));
    }

    #[test]
    fn key_starts_with_pool_and_path_for_prefix_purge() {
        let k = key("POST", "/v1/analyze", None, "{}");
        assert!(k.as_str().starts_with("analysis:/v1/analyze:"), "{k}");
        assert_eq!(k.as_str().len(), "analysis:/v1/analyze:".len() + 64);
    }
}
