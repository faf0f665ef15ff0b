//! A stored response: status, kept headers, body, when it was stored and how long it may be served.
//!
//! The encoding is a small versioned length-prefixed layout (below) rather than
//! a serde format: the entry is seven fields, bodies are raw bytes that serde
//! formats would need an extra crate to store compactly, and the layout is
//! shared by the Redis and disk tiers, so it is written down and tested here.
//!
//! ```text
//! u8 version(1) | u16 status | u64 stored_at_ms | u64 ttl_ms | u64 swr_ms | u64 sie_ms
//! | u16 header count | (u16 name len, name, u32 value len, value)* | u32 body len, body
//! ```
//! All integers little-endian.

use bytes::Bytes;

const VERSION: u8 = 1;
/// Fixed cost charged per entry on top of its bytes when weighing it.
const OVERHEAD: usize = 96;

/// Errors decoding a stored entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    /// The bytes end before the layout does.
    #[error("entry truncated")]
    Truncated,
    /// Written by another version of this layout.
    #[error("unknown entry version {0}")]
    Version(u8),
    /// A header name is not UTF-8.
    #[error("header name is not UTF-8")]
    HeaderName,
    /// Bytes left over after the body.
    #[error("{0} trailing bytes after entry")]
    Trailing(usize),
}

/// A cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    /// HTTP status (2xx: nothing else is stored).
    pub status: u16,
    /// End-to-end response headers, lower-case names; no hop-by-hop or length headers.
    pub headers: Vec<(String, Bytes)>,
    /// The whole response body.
    pub body: Bytes,
    /// When it was stored, ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long it is fresh.
    pub ttl_ms: u64,
    /// After going stale, how long it may still be served while one refresh runs.
    pub stale_while_revalidate_ms: u64,
    /// After going stale, how long it may still be served when the backend fails.
    pub stale_if_error_ms: u64,
}

/// How usable an entry is at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Within its TTL.
    Fresh,
    /// Stale, inside the stale-while-revalidate window: serve and refresh.
    StaleWhileRevalidate,
    /// Stale, inside only the stale-if-error window: serve only if the backend fails.
    StaleIfError,
    /// Past every window: gone.
    Dead,
}

impl CachedResponse {
    /// How usable the entry is at `now_ms`.
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        let age = now_ms.saturating_sub(self.stored_at_ms);
        if age < self.ttl_ms {
            Freshness::Fresh
        } else if age < self.ttl_ms.saturating_add(self.stale_while_revalidate_ms) {
            Freshness::StaleWhileRevalidate
        } else if age < self.ttl_ms.saturating_add(self.stale_if_error_ms) {
            Freshness::StaleIfError
        } else {
            Freshness::Dead
        }
    }

    /// When the entry stops being of any use, ms since the epoch.
    pub fn dead_at_ms(&self) -> u64 {
        self.stored_at_ms
            .saturating_add(self.ttl_ms)
            .saturating_add(self.stale_while_revalidate_ms.max(self.stale_if_error_ms))
    }

    /// Milliseconds of use left at `now_ms`.
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.dead_at_ms().saturating_sub(now_ms)
    }

    /// Age in whole seconds, for the `Age` header.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Approximate bytes this entry holds in memory under `key_len`.
    pub fn weight(&self, key_len: usize) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 16)
            .sum();
        OVERHEAD + key_len + headers + self.body.len()
    }

    /// The binary layout shared by the Redis and disk tiers.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.weight(0));
        out.push(VERSION);
        out.extend_from_slice(&self.status.to_le_bytes());
        for v in [
            self.stored_at_ms,
            self.ttl_ms,
            self.stale_while_revalidate_ms,
            self.stale_if_error_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.headers.len() as u16).to_le_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads [`encode`](Self::encode)'s layout back.
    pub fn decode(bytes: &[u8]) -> Result<CachedResponse, EntryError> {
        let mut r = Reader(bytes);
        let version = r.take(1)?[0];
        if version != VERSION {
            return Err(EntryError::Version(version));
        }
        let status = u16::from_le_bytes(r.array()?);
        let mut times = [0u64; 4];
        for t in &mut times {
            *t = u64::from_le_bytes(r.array()?);
        }
        let count = u16::from_le_bytes(r.array()?);
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = u16::from_le_bytes(r.array()?) as usize;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| EntryError::HeaderName)?;
            let len = u32::from_le_bytes(r.array()?) as usize;
            let value = Bytes::copy_from_slice(r.take(len)?);
            headers.push((name.to_string(), value));
        }
        let len = u32::from_le_bytes(r.array()?) as usize;
        let body = Bytes::copy_from_slice(r.take(len)?);
        if !r.0.is_empty() {
            return Err(EntryError::Trailing(r.0.len()));
        }
        let [stored_at_ms, ttl_ms, stale_while_revalidate_ms, stale_if_error_ms] = times;
        Ok(CachedResponse {
            status,
            headers,
            body,
            stored_at_ms,
            ttl_ms,
            stale_while_revalidate_ms,
            stale_if_error_ms,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        if self.0.len() < n {
            return Err(EntryError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 200 JSON entry stored at `at` with `ttl_ms`.
    pub(crate) fn sample(body: &str, at: u64, ttl_ms: u64) -> CachedResponse {
        CachedResponse {
            status: 200,
            headers: vec![(
                "content-type".into(),
                Bytes::from_static(b"application/json"),
            )],
            body: Bytes::copy_from_slice(body.as_bytes()),
            stored_at_ms: at,
            ttl_ms,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
        }
    }

    #[test]
    fn encoding_round_trips() {
        let mut e = sample(r#"{"score":0.97}"#, 1_700_000_000_000, 60_000);
        e.headers
            .push(("x-model".into(), Bytes::from_static(b"v3")));
        e.stale_if_error_ms = 5;
        assert_eq!(CachedResponse::decode(&e.encode()), Ok(e.clone()));
        let empty = CachedResponse {
            headers: vec![],
            body: Bytes::new(),
            ..e
        };
        assert_eq!(CachedResponse::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let bytes = sample("{}", 1, 2).encode();
        for cut in 0..bytes.len() {
            assert_eq!(
                CachedResponse::decode(&bytes[..cut]),
                Err(EntryError::Truncated),
                "cut at {cut}"
            );
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(CachedResponse::decode(&other), Err(EntryError::Version(9)));
        let mut long = bytes;
        long.push(0);
        assert_eq!(CachedResponse::decode(&long), Err(EntryError::Trailing(1)));
    }

    #[test]
    fn freshness_windows() {
        let mut e = sample("{}", 1000, 100);
        e.stale_while_revalidate_ms = 50;
        e.stale_if_error_ms = 200;
        let check = |now, want| assert_eq!(e.freshness(now), want, "at {now}");
        check(1000, Freshness::Fresh);
        check(1099, Freshness::Fresh);
        check(1100, Freshness::StaleWhileRevalidate);
        check(1149, Freshness::StaleWhileRevalidate);
        check(1150, Freshness::StaleIfError);
        check(1299, Freshness::StaleIfError);
        check(1300, Freshness::Dead);
        assert_eq!(e.dead_at_ms(), 1300);
        assert_eq!(e.remaining_ms(1250), 50);
    }
}
