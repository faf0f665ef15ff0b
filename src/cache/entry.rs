//! A stored response: status, kept headers, body, when it was stored, how long it may be served and revalidated.
//!
//! The encoding is a small versioned length-prefixed layout (below) rather than
//! a serde format: bodies are raw bytes that serde formats would need an extra
//! crate to store compactly, and the layout is shared by the Redis and disk
//! tiers, so it is written down and tested here. Another version's bytes are
//! an error, which every tier treats as a miss.
//!
//! ```text
//! u8 version(2) | u16 status | u64 stored_at_ms | u64 ttl_ms | u64 swr_ms | u64 sie_ms
//! | u64 age_ms | u64 keep_ms | u8 flags
//! | u16 header count | (u16 name len, name, u32 value len, value)*
//! | u16 selected count | (u16 name len, name, u8 present, u32 value len, value)*
//! | u32 body len, body
//! ```
//! All integers little-endian.
//!
//! A **vary marker** is an entry with status 0 stored under a primary key
//! whose responses vary: its `vary` header lists the selecting header names
//! and its body is an 8-byte epoch; each variant lives under
//! [`CacheKey::variant`](super::key::CacheKey::variant) of the two.

use bytes::Bytes;

const VERSION: u8 = 2;
/// The status of a vary marker.
pub const MARKER_STATUS: u16 = 0;
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedResponse {
    /// HTTP status ([`MARKER_STATUS`] for a vary marker).
    pub status: u16,
    /// End-to-end response headers, lower-case names; no hop-by-hop or length headers.
    pub headers: Vec<(String, Bytes)>,
    /// The whole response body.
    pub body: Bytes,
    /// When it was stored (the response arrived), ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long it is fresh after `stored_at_ms`.
    pub ttl_ms: u64,
    /// After going stale, how long it may still be served while one refresh runs.
    pub stale_while_revalidate_ms: u64,
    /// After going stale, how long it may still be served when the backend fails.
    pub stale_if_error_ms: u64,
    /// Its age when stored (RFC 9111 corrected initial age).
    pub age_ms: u64,
    /// After going stale, how long it is kept to be revalidated (it has a validator).
    pub keep_ms: u64,
    /// Revalidation rules from its directives.
    pub flags: Flags,
    /// The request's values of the selecting headers this variant was stored
    /// for (`None`: the header was absent); empty when it does not vary.
    pub selected: Vec<(String, Option<Bytes>)>,
}

/// Revalidation rules a response set for itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`: never served stale.
    pub must_revalidate: bool,
    /// `no-cache`: revalidated before every use.
    pub no_cache: bool,
}

impl Flags {
    fn bits(self) -> u8 {
        u8::from(self.must_revalidate) | (u8::from(self.no_cache) << 1)
    }

    fn from_bits(b: u8) -> Flags {
        Flags {
            must_revalidate: b & 1 != 0,
            no_cache: b & 2 != 0,
        }
    }
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
    /// Stale, kept only to be revalidated with its validators.
    Revalidate,
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
        } else if age < self.ttl_ms.saturating_add(self.keep_ms) {
            Freshness::Revalidate
        } else {
            Freshness::Dead
        }
    }

    /// When the entry stops being of any use, ms since the epoch.
    pub fn dead_at_ms(&self) -> u64 {
        let windows = self
            .stale_while_revalidate_ms
            .max(self.stale_if_error_ms)
            .max(self.keep_ms);
        self.stored_at_ms
            .saturating_add(self.ttl_ms)
            .saturating_add(windows)
    }

    /// Within its stale-if-error window: may be served when the backend fails.
    pub fn serves_on_error(&self, now_ms: u64) -> bool {
        matches!(
            self.freshness(now_ms),
            Freshness::Fresh | Freshness::StaleWhileRevalidate | Freshness::StaleIfError
        ) && !self.flags.must_revalidate
    }

    /// The first value of a stored header (lower-case `name`).
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A vary marker for responses selected by `names`, stamped `epoch`, kept `ttl_ms`.
    pub fn marker(names: &[String], epoch: u64, now_ms: u64, ttl_ms: u64) -> CachedResponse {
        CachedResponse {
            status: MARKER_STATUS,
            headers: vec![("vary".into(), Bytes::from(names.join(", ")))],
            body: Bytes::copy_from_slice(&epoch.to_le_bytes()),
            stored_at_ms: now_ms,
            ttl_ms,
            ..CachedResponse::default()
        }
    }

    /// The selecting header names and epoch, when this is a vary marker.
    pub fn as_marker(&self) -> Option<(Vec<String>, u64)> {
        if self.status != MARKER_STATUS {
            return None;
        }
        let epoch = u64::from_le_bytes(self.body.as_ref().try_into().ok()?);
        let names = std::str::from_utf8(self.header("vary")?).ok()?;
        let names = names
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        Some((names, epoch))
    }

    /// Milliseconds of use left at `now_ms`.
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.dead_at_ms().saturating_sub(now_ms)
    }

    /// Its current age: the age it was stored with plus its time here.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        self.age_ms
            .saturating_add(now_ms.saturating_sub(self.stored_at_ms))
    }

    /// Age in whole seconds, for the `Age` header (at most 2^31, RFC 9111 §5.1).
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        (self.age_ms(now_ms) / 1000).min(1 << 31)
    }

    /// Approximate bytes this entry holds in memory under `key_len`.
    pub fn weight(&self, key_len: usize) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 16)
            .sum();
        let selected: usize = self
            .selected
            .iter()
            .map(|(n, v)| n.len() + v.as_ref().map_or(0, Bytes::len) + 16)
            .sum();
        OVERHEAD + key_len + headers + selected + self.body.len()
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
            self.age_ms,
            self.keep_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(self.flags.bits());
        out.extend_from_slice(&(self.headers.len() as u16).to_le_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&(self.selected.len() as u16).to_le_bytes());
        for (name, value) in &self.selected {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(u8::from(value.is_some()));
            let value = value.as_deref().unwrap_or_default();
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
        let mut times = [0u64; 6];
        for t in &mut times {
            *t = u64::from_le_bytes(r.array()?);
        }
        let flags = Flags::from_bits(r.take(1)?[0]);
        let count = u16::from_le_bytes(r.array()?);
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = u16::from_le_bytes(r.array()?) as usize;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| EntryError::HeaderName)?;
            let len = u32::from_le_bytes(r.array()?) as usize;
            let value = Bytes::copy_from_slice(r.take(len)?);
            headers.push((name.to_string(), value));
        }
        let count = u16::from_le_bytes(r.array()?);
        let mut selected = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = u16::from_le_bytes(r.array()?) as usize;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| EntryError::HeaderName)?;
            let present = r.take(1)?[0] != 0;
            let len = u32::from_le_bytes(r.array()?) as usize;
            let value = Bytes::copy_from_slice(r.take(len)?);
            selected.push((name.to_string(), present.then_some(value)));
        }
        let len = u32::from_le_bytes(r.array()?) as usize;
        let body = Bytes::copy_from_slice(r.take(len)?);
        if !r.0.is_empty() {
            return Err(EntryError::Trailing(r.0.len()));
        }
        let [stored_at_ms, ttl_ms, stale_while_revalidate_ms, stale_if_error_ms, age_ms, keep_ms] =
            times;
        Ok(CachedResponse {
            status,
            headers,
            body,
            stored_at_ms,
            ttl_ms,
            stale_while_revalidate_ms,
            stale_if_error_ms,
            age_ms,
            keep_ms,
            flags,
            selected,
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
            ..CachedResponse::default()
        }
    }

    #[test]
    fn encoding_round_trips() {
        let mut e = sample(r#"{"score":0.97}"#, 1_700_000_000_000, 60_000);
        e.headers
            .push(("x-model".into(), Bytes::from_static(b"v3")));
        e.stale_if_error_ms = 5;
        e.age_ms = 7;
        e.keep_ms = 9;
        e.flags.must_revalidate = true;
        e.selected = vec![
            ("accept-language".into(), Some(Bytes::from_static(b"de"))),
            ("x-tenant".into(), None),
            ("x-empty".into(), Some(Bytes::new())),
        ];
        assert_eq!(CachedResponse::decode(&e.encode()), Ok(e.clone()));
        let empty = CachedResponse {
            headers: vec![],
            body: Bytes::new(),
            selected: vec![],
            ..e
        };
        assert_eq!(CachedResponse::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn markers_round_trip_and_are_not_responses() {
        let names = vec!["accept-language".to_string(), "x-tenant".to_string()];
        let m = CachedResponse::marker(&names, 42, 1000, 60_000);
        let back = CachedResponse::decode(&m.encode()).unwrap();
        assert_eq!(back.as_marker(), Some((names, 42)));
        assert_eq!(sample("{}", 1, 2).as_marker(), None);
    }

    #[test]
    fn age_counts_the_age_it_came_with_and_is_capped() {
        let mut e = sample("{}", 10_000, 60_000);
        e.age_ms = 5_000;
        assert_eq!(e.age_secs(12_000), 7);
        e.age_ms = u64::MAX;
        assert_eq!(e.age_secs(12_000), 1 << 31);
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
        let check = |e: &CachedResponse, now, want| assert_eq!(e.freshness(now), want, "at {now}");
        check(&e, 1000, Freshness::Fresh);
        check(&e, 1099, Freshness::Fresh);
        check(&e, 1100, Freshness::StaleWhileRevalidate);
        check(&e, 1149, Freshness::StaleWhileRevalidate);
        check(&e, 1150, Freshness::StaleIfError);
        check(&e, 1299, Freshness::StaleIfError);
        check(&e, 1300, Freshness::Dead);
        assert_eq!(e.dead_at_ms(), 1300);
        assert_eq!(e.remaining_ms(1250), 50);
        // With a validator it is kept longer, to be revalidated only.
        e.keep_ms = 1000;
        check(&e, 1300, Freshness::Revalidate);
        check(&e, 2099, Freshness::Revalidate);
        check(&e, 2100, Freshness::Dead);
        assert!(e.serves_on_error(1299));
        assert!(!e.serves_on_error(1300));
        e.flags.must_revalidate = true;
        assert!(!e.serves_on_error(1120));
    }
}
