//! Cacheability rules (RFC 9111, RFC 9110 conditionals, RFC 9213 targeted fields): what may be looked up, stored, served, revalidated.
//!
//! Pure functions over methods, headers, sizes and times; the proxy calls
//! them. This is a shared cache:
//!
//! - **Requests** skip the cache for a method the route does not cache,
//!   credentials the route does not allow, `Cache-Control: no-store`, a
//!   `Range`, or a declared body over the object limit ([`request`]).
//! - **Responses** ([`storable`]) are stored when the status is final and
//!   understood (never `1xx`, `206` or `304`; nor `500`, `502`, `503`, `504`:
//!   failures, which stale-if-error answers), nothing forbids it (`no-store`,
//!   `private`, `Vary: *`, `Set-Cookie`), and they can be of use: fresh for a
//!   while, or revalidatable. Freshness comes from `s-maxage`, `max-age`,
//!   `Expires − Date`, in that order; only without them is it heuristic: the
//!   route's `ttl` for a `2xx`, or (route `ttl: 0s`) a tenth of the time
//!   since `Last-Modified` for a heuristically cacheable status (§4.2.2).
//!   The directives come from the first targeted field with a valid value
//!   (`Gantry-Cache-Control`, then `CDN-Cache-Control`, RFC 9213), else from
//!   `Cache-Control` (and then `Expires`). Every lifetime is clamped to the
//!   route's `max_ttl`.
//! - **Age** (§4.2.3): the stored response's initial age corrects for the
//!   `Age` it came with and for the time the request took; a served response
//!   carries that plus its time in this cache.
//! - **Use** ([`usable`]): a fresh entry is served unless the request's own
//!   `no-cache`, `max-age` or `min-fresh` refuse it; a stale one only within
//!   the request's `max-stale` (never when it must be revalidated); else it is
//!   revalidated when it has a validator.
//! - **Revalidation**: [`validators`] are sent upstream, a `304` is merged
//!   into the stored headers by [`refresh`]; a client's own conditional
//!   request is answered `304` from cache when it matches ([`not_modified`]).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method};

use super::config::RouteCache;
use super::entry::{CachedResponse, Flags};

/// Why a request skips the cache (the `X-Cache: BYPASS` cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The route does not cache this method.
    Method,
    /// The request carries credentials and the route does not allow them.
    Authorized,
    /// The request says `Cache-Control: no-store`.
    NoStore,
    /// The declared body is over the route's object limit.
    TooLarge,
    /// A `Range` request: its partial answer is not what the key stands for.
    Range,
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// `1xx`, `206`, `304`: not a whole final response; `500`, `502`-`504`: a failure.
    Status,
    /// It sets a cookie.
    SetCookie,
    /// Its cache directives forbid it, or leave it of no use (no lifetime, no validator).
    CacheControl,
    /// Body over the object limit.
    TooLarge,
    /// `Vary: *`.
    Vary,
}

/// Request headers that carry credentials: selecting headers when a route allows them.
pub const CREDENTIALS: [&str; 2] = ["authorization", "cookie"];

/// Response fields that target this cache, in order of precedence (RFC 9213); never forwarded.
pub const TARGETED: [&str; 2] = ["gantry-cache-control", "cdn-cache-control"];

/// The largest age a cache may send (RFC 9111 §1.2.2).
const MAX_AGE_SECS: u64 = 1 << 31;

/// Statuses that may be given a heuristic lifetime (RFC 9110 §15.1).
const HEURISTIC: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Whether a request may be looked up and its response stored.
pub fn request(route: &RouteCache, method: &Method, headers: &HeaderMap) -> Result<(), Bypass> {
    if !route.methods.contains(method) {
        return Err(Bypass::Method);
    }
    let credentials =
        headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE);
    if credentials && !route.allow_authorized {
        return Err(Bypass::Authorized);
    }
    if Directives::request(headers).has("no-store") {
        return Err(Bypass::NoStore);
    }
    if headers.contains_key(header::RANGE) {
        return Err(Bypass::Range);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > route.max_object_bytes) {
        return Err(Bypass::TooLarge);
    }
    Ok(())
}

/// When a response was asked for and when it arrived, ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// The request went upstream.
    pub requested_ms: u64,
    /// The response header arrived.
    pub received_ms: u64,
}

/// A storable response, as [`storable`] judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storing {
    /// Fresh for this long from arrival (lifetime minus initial age).
    pub ttl_ms: u64,
    /// Its corrected initial age.
    pub age_ms: u64,
    /// Stale-while-revalidate window.
    pub swr_ms: u64,
    /// Stale-if-error window.
    pub sie_ms: u64,
    /// Kept past every window for conditional revalidation (it has a validator).
    pub keep_ms: u64,
    /// Revalidation rules.
    pub flags: Flags,
    /// The headers kept with it.
    pub headers: Vec<(String, Bytes)>,
    /// The header names of its `Vary`, lower case, in order, without repeats.
    pub vary: Vec<String>,
}

impl Storing {
    /// The entry to store for `body`, selected by `selected` (the request's values of the vary names).
    pub fn entry(
        self,
        status: u16,
        body: Bytes,
        received_ms: u64,
        selected: Vec<(String, Option<Bytes>)>,
    ) -> CachedResponse {
        CachedResponse {
            status,
            headers: self.headers,
            body,
            stored_at_ms: received_ms,
            ttl_ms: self.ttl_ms,
            stale_while_revalidate_ms: self.swr_ms,
            stale_if_error_ms: self.sie_ms,
            age_ms: self.age_ms,
            keep_ms: self.keep_ms,
            flags: self.flags,
            selected,
        }
    }
}

/// Whether a response to `method` may be stored, for how long and with what.
pub fn storable(
    route: &RouteCache,
    method: &Method,
    status: u16,
    headers: &HeaderMap,
    body_len: u64,
    times: Times,
) -> Result<Storing, NotStored> {
    if status < 200 || matches!(status, 206 | 304 | 500 | 502 | 503 | 504) || status > 599 {
        return Err(NotStored::Status);
    }
    let vary = vary_names(headers);
    if vary.iter().any(|n| n == "*") {
        return Err(NotStored::Vary);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if body_len > route.max_object_bytes {
        return Err(NotStored::TooLarge);
    }
    let cc = Directives::response(headers);
    if cc.has("no-store") || (cc.has("private") && cc.fields("private").is_none()) {
        return Err(NotStored::CacheControl);
    }
    // §3: something must allow storing: explicit freshness, `public`, a
    // heuristically cacheable status, or the route's default for a 2xx.
    let explicit = cc.has("max-age")
        || cc.has("s-maxage")
        || cc.has("public")
        || cc.has("private")
        || (!cc.targeted && headers.contains_key(header::EXPIRES));
    let by_default =
        HEURISTIC.contains(&status) || (!route.ttl.is_zero() && (200..300).contains(&status));
    if !explicit && !by_default {
        return Err(NotStored::CacheControl);
    }
    let validated = matches!(*method, Method::GET | Method::HEAD) && has_validator(headers);
    let no_cache = cc.has("no-cache") && cc.fields("no-cache").is_none();
    if no_cache && !validated {
        return Err(NotStored::CacheControl);
    }
    let must_revalidate =
        no_cache || cc.has("must-revalidate") || cc.has("proxy-revalidate") || cc.has("s-maxage");
    let lifetime = if no_cache {
        Duration::ZERO
    } else {
        lifetime(route, status, headers, &cc, times.received_ms)
    }
    .min(route.max_ttl);
    let age = initial_age(headers, times);
    let ttl = lifetime.saturating_sub(age);
    let window = |directive: &str, route_window: Duration| {
        if must_revalidate {
            return Duration::ZERO;
        }
        match cc.secs(directive) {
            Some(secs) => Duration::from_secs(secs).min(route.max_ttl),
            None => route_window,
        }
    };
    let swr = window("stale-while-revalidate", route.stale_while_revalidate);
    let sie = window("stale-if-error", route.stale_if_error);
    if lifetime.is_zero() && !validated && sie.is_zero() {
        return Err(NotStored::CacheControl);
    }
    // A POST is stored only with a lifetime of its own or the route's: it cannot be revalidated.
    if !matches!(*method, Method::GET | Method::HEAD) && ttl.is_zero() {
        return Err(NotStored::CacheControl);
    }
    let mut drop: Vec<String> = Vec::new();
    for qualified in ["no-cache", "private"] {
        drop.extend(cc.fields(qualified).unwrap_or_default());
    }
    Ok(Storing {
        ttl_ms: millis(ttl),
        age_ms: millis(age),
        swr_ms: millis(swr),
        sie_ms: millis(sie),
        keep_ms: if validated { millis(route.max_ttl) } else { 0 },
        flags: Flags {
            must_revalidate,
            no_cache,
        },
        headers: stored_headers(headers, &drop),
        vary,
    })
}

/// The freshness lifetime: explicit (RFC 9111 §4.2.1), else heuristic (§4.2.2).
fn lifetime(
    route: &RouteCache,
    status: u16,
    headers: &HeaderMap,
    cc: &Directives,
    received_ms: u64,
) -> Duration {
    if cc.conflicting {
        return Duration::ZERO;
    }
    if let Some(secs) = cc.secs("s-maxage").or_else(|| cc.secs("max-age")) {
        return Duration::from_secs(secs);
    }
    if cc.has("s-maxage") || cc.has("max-age") {
        // Present but unreadable: stale.
        return Duration::ZERO;
    }
    let served = date(headers, header::DATE).unwrap_or(received_ms);
    if !cc.targeted && headers.contains_key(header::EXPIRES) {
        // An invalid `Expires` (`0`, say) means already expired.
        return match date(headers, header::EXPIRES) {
            Some(expires) => Duration::from_millis(expires.saturating_sub(served)),
            None => Duration::ZERO,
        };
    }
    if !route.ttl.is_zero() {
        return if (200..300).contains(&status) {
            route.ttl
        } else {
            Duration::ZERO
        };
    }
    if !HEURISTIC.contains(&status) && !cc.has("public") {
        return Duration::ZERO;
    }
    match date(headers, header::LAST_MODIFIED) {
        Some(modified) => Duration::from_millis(served.saturating_sub(modified) / 10),
        None => Duration::ZERO,
    }
}

/// The corrected initial age (RFC 9111 §4.2.3).
fn initial_age(headers: &HeaderMap, times: Times) -> Duration {
    let age_value = age_header(headers).unwrap_or(0).saturating_mul(1000);
    // `Date` has whole seconds: compare at that resolution, so a response
    // sent in the same second as it arrived has no apparent age.
    let apparent = match date(headers, header::DATE) {
        Some(served) => (times.received_ms / 1000 * 1000).saturating_sub(served),
        None => 0,
    };
    let delay = times.received_ms.saturating_sub(times.requested_ms);
    Duration::from_millis(apparent.max(age_value.saturating_add(delay)))
}

/// The `Age` value in seconds: the first member; `None` when invalid; huge values capped (§5.1).
fn age_header(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::AGE)?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        first
            .parse::<u64>()
            .unwrap_or(MAX_AGE_SECS)
            .min(MAX_AGE_SECS),
    )
}

/// An HTTP date header as ms since the epoch.
fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let v = headers.get(name)?.to_str().ok()?;
    let t = httpdate::parse_http_date(v.trim()).ok()?;
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(millis(since))
}

/// Whether a response carries a validator (`ETag` or `Last-Modified`).
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// A `Vary`'s header names, lower case, in order, without repeats.
pub fn vary_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in list(headers, header::VARY) {
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The members of every field line of a list header, trimmed, empty ones skipped.
fn list(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|m| !m.is_empty())
}

/// A request's value of a selecting header, normalised as RFC 9111 §4.1
/// allows: every field line combined, whitespace around members removed.
/// `None` when absent (which is not the same as empty).
pub fn selecting_value(headers: &HeaderMap, name: &str) -> Option<Bytes> {
    let mut values = headers.get_all(name).into_iter().peekable();
    values.peek()?;
    let mut out = Vec::new();
    for v in values {
        for member in v.as_bytes().split(|b| *b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(member);
        }
    }
    Some(Bytes::from(out))
}

/// How a stored entry may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Serve it.
    Serve,
    /// Serve it stale and refresh it in the background.
    ServeStale,
    /// Ask the backend first: conditionally when it has a validator.
    Revalidate,
}

/// Whether `entry` may answer a request with `headers` at `now_ms` (RFC 9111 §4, §5.2.1).
pub fn usable(headers: &HeaderMap, entry: &CachedResponse, now_ms: u64) -> Usable {
    let cc = Directives::request(headers);
    let pragma = !headers.contains_key(header::CACHE_CONTROL)
        && list(headers, header::PRAGMA).any(|p| p.eq_ignore_ascii_case("no-cache"));
    if cc.has("no-cache") || pragma {
        return Usable::Revalidate;
    }
    let age = entry.age_ms(now_ms);
    if cc
        .secs("max-age")
        .is_some_and(|s| age > s.saturating_mul(1000))
    {
        return Usable::Revalidate;
    }
    let resident = now_ms.saturating_sub(entry.stored_at_ms);
    let fresh_left = entry.ttl_ms.saturating_sub(resident);
    if cc
        .secs("min-fresh")
        .is_some_and(|s| fresh_left < s.saturating_mul(1000))
    {
        return Usable::Revalidate;
    }
    match entry.freshness(now_ms) {
        super::entry::Freshness::Fresh => Usable::Serve,
        _ if entry.flags.must_revalidate => Usable::Revalidate,
        freshness => {
            let stale_for = resident.saturating_sub(entry.ttl_ms);
            let max_stale = cc.has("max-stale")
                && cc
                    .secs("max-stale")
                    .is_none_or(|s| stale_for <= s.saturating_mul(1000));
            if max_stale {
                Usable::Serve
            } else if freshness == super::entry::Freshness::StaleWhileRevalidate {
                Usable::ServeStale
            } else {
                Usable::Revalidate
            }
        }
    }
}

/// The request says `Cache-Control: only-if-cached`: answer `504` rather than go upstream.
pub fn only_if_cached(headers: &HeaderMap) -> bool {
    Directives::request(headers).has("only-if-cached")
}

/// Request headers that make a request conditional; replaced by the cache's own when it revalidates.
pub const CONDITIONALS: [&str; 5] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
];

/// The conditional headers to revalidate `entry` with (RFC 9111 §4.3.1).
pub fn validators(entry: &CachedResponse) -> Vec<(&'static str, Bytes)> {
    let mut out = Vec::new();
    if let Some(etag) = entry.header("etag") {
        out.push(("if-none-match", etag.clone()));
    }
    if let Some(modified) = entry.header("last-modified") {
        out.push(("if-modified-since", modified.clone()));
    }
    out
}

/// Whether a client's conditional GET/HEAD is satisfied by `entry`: answer `304` (RFC 9110 §13.2.2).
pub fn not_modified(method: &Method, headers: &HeaderMap, entry: &CachedResponse) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD) || !(200..300).contains(&entry.status) {
        return false;
    }
    if headers.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = entry
            .header("etag")
            .and_then(|e| std::str::from_utf8(e).ok())
        else {
            return list(headers, header::IF_NONE_MATCH).any(|t| t == "*");
        };
        return list(headers, header::IF_NONE_MATCH).any(|t| t == "*" || weak_eq(t, etag));
    }
    let Some(since) = date(headers, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified = entry
        .header("last-modified")
        .and_then(|v| httpdate::parse_http_date(std::str::from_utf8(v).ok()?.trim()).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    modified.is_some_and(|m| millis(m) <= since)
}

/// The headers a `304` from cache carries (RFC 9110 §15.4.5).
pub const NOT_MODIFIED_HEADERS: [&str; 7] = [
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
    "last-modified",
];

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2).
fn weak_eq(a: &str, b: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    opaque(a) == opaque(b)
}

/// `entry` refreshed by a `304` with `headers` (RFC 9111 §4.3.4, §3.2), or
/// `None` when the `304`'s validator does not select it (or it is no
/// longer storable: then it is dropped).
pub fn refresh(
    route: &RouteCache,
    method: &Method,
    entry: &CachedResponse,
    headers: &HeaderMap,
    times: Times,
) -> Option<CachedResponse> {
    let stored_etag = entry
        .header("etag")
        .and_then(|e| std::str::from_utf8(e).ok());
    let new_etag = headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    let stored_modified = entry.header("last-modified");
    let new_modified = headers.get(header::LAST_MODIFIED).map(|v| v.as_bytes());
    let selected = match (new_etag, stored_etag) {
        (Some(new), Some(old)) if !new.trim().starts_with("W/") => new.trim() == old.trim(),
        (Some(new), Some(old)) => weak_eq(new, old),
        (Some(_), None) => false,
        (None, _) => match (new_modified, stored_modified) {
            (Some(new), Some(old)) => new == &old[..],
            (Some(_), None) => false,
            (None, _) => true,
        },
    };
    if !selected {
        return None;
    }
    // The 304's fields replace the stored ones of the same name, except those the body depends on.
    let mut merged = HeaderMap::new();
    for (name, value) in &entry.headers {
        let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if !headers.contains_key(&n) || KEEP_ON_UPDATE.contains(&name.as_str()) {
            merged.append(n, v);
        }
    }
    for name in headers.keys() {
        if !KEEP_ON_UPDATE.contains(&name.as_str()) && !merged.contains_key(name) {
            for v in headers.get_all(name) {
                merged.append(name.clone(), v.clone());
            }
        }
    }
    let storing = storable(
        route,
        method,
        entry.status,
        &merged,
        entry.body.len() as u64,
        times,
    )
    .ok()?;
    Some(storing.entry(
        entry.status,
        entry.body.clone(),
        times.received_ms,
        entry.selected.clone(),
    ))
}

/// Stored fields a `304` does not replace: the body depends on them.
const KEEP_ON_UPDATE: [&str; 4] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1): neither stored nor forwarded.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The header names a message's `Connection` field lists, lower case (hop-by-hop too).
pub fn connection_named(headers: &HeaderMap) -> Vec<String> {
    list(headers, header::CONNECTION)
        .map(str::to_ascii_lowercase)
        .filter(|n| !matches!(n.as_str(), "close" | "keep-alive"))
        .collect()
}

/// Per-response headers that are not stored: recomputed or set when served.
const NOT_KEPT: [&str; 3] = ["content-length", "age", "x-cache"];

/// The response headers kept with a stored entry, without the fields named in `drop`.
pub fn stored_headers(headers: &HeaderMap, drop: &[String]) -> Vec<(String, Bytes)> {
    let named = connection_named(headers);
    headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !HOP_BY_HOP.contains(&n)
                && !NOT_KEPT.contains(&n)
                && !named.iter().any(|c| c == n)
                && !drop.iter().any(|d| d.eq_ignore_ascii_case(n))
        })
        .map(|(n, v)| (n.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

/// `d` in whole milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Cache directives: lower-case names with their unquoted values.
#[derive(Debug, Default)]
struct Directives {
    list: Vec<(String, Option<String>)>,
    /// A directive given twice with different values (RFC 9111 §4.2.1: stale).
    conflicting: bool,
    /// They came from a targeted field: `Expires` is ignored.
    targeted: bool,
}

impl Directives {
    /// A request's `Cache-Control`.
    fn request(headers: &HeaderMap) -> Directives {
        Directives::parse(headers, header::CACHE_CONTROL)
    }

    /// A response's directives for this cache: the first targeted field with a
    /// valid value (a structured dictionary, RFC 9213 §2.1), else `Cache-Control`.
    fn response(headers: &HeaderMap) -> Directives {
        for name in TARGETED {
            if let Some(d) = Directives::targeted(headers, name) {
                return d;
            }
        }
        Directives::parse(headers, header::CACHE_CONTROL)
    }

    fn targeted(headers: &HeaderMap, name: &str) -> Option<Directives> {
        let lines: Vec<&str> = headers
            .get_all(name)
            .into_iter()
            .map(|v| v.to_str().ok())
            .collect::<Option<_>>()?;
        if lines.is_empty() {
            return None;
        }
        let dict = sfv::Parser::parse_dictionary(lines.join(", ").as_bytes()).ok()?;
        let mut list = Vec::with_capacity(dict.len());
        for (key, entry) in dict {
            let sfv::ListEntry::Item(item) = entry else {
                continue;
            };
            let value = match item.bare_item {
                sfv::BareItem::Boolean(true) => None,
                sfv::BareItem::Boolean(false) => continue,
                sfv::BareItem::Integer(i) => Some(i.max(0).to_string()),
                sfv::BareItem::String(s) | sfv::BareItem::Token(s) => Some(s),
                _ => Some(String::new()),
            };
            list.push((key, value));
        }
        Some(Directives {
            list,
            conflicting: false,
            targeted: true,
        })
    }

    fn parse(headers: &HeaderMap, name: header::HeaderName) -> Directives {
        let mut d = Directives::default();
        for line in headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
        {
            for part in split_directives(line) {
                let mut kv = part.splitn(2, '=');
                let name = kv.next().unwrap_or("").trim().to_ascii_lowercase();
                if name.is_empty() {
                    continue;
                }
                let value = kv.next().map(|v| unquote(v.trim()));
                if let Some((_, old)) = d.list.iter().find(|(n, _)| *n == name) {
                    d.conflicting |= *old != value;
                    continue;
                }
                d.list.push((name, value));
            }
        }
        d
    }

    fn has(&self, name: &str) -> bool {
        self.list.iter().any(|(n, _)| n == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A delta-seconds value; too many digits saturate (RFC 9111 §1.2.2).
    fn secs(&self, name: &str) -> Option<u64> {
        let v = self.value(name)?;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(v.parse::<u64>().unwrap_or(u64::MAX))
    }

    /// The field names of a qualified `no-cache="a, b"` or `private="a"`.
    fn fields(&self, name: &str) -> Option<Vec<String>> {
        let v = self.value(name)?;
        let names: Vec<String> = v
            .split(',')
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect();
        (!names.is_empty()).then_some(names)
    }
}

/// Splits a directive list at commas outside quoted strings.
fn split_directives(line: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(line[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(line[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests;
