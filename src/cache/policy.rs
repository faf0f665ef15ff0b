//! Cacheability rules: which requests may be answered from cache, which responses may be stored.
//!
//! Pure functions over methods, headers and sizes; the proxy calls them.
//! Never stored: non-2xx and `206`, `Set-Cookie`, `Cache-Control: no-store |
//! private | no-cache`, `max-age=0`, `Vary: *` or a `Vary` naming a request
//! header the key does not hold, bodies over the object limit, and responses
//! to requests carrying `Authorization` or `Cookie` unless the route allows it
//! (then they are part of the key). Requests with `Range` skip the cache.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method};

use super::config::RouteCache;

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
    /// Status outside 2xx.
    Status,
    /// It sets a cookie.
    SetCookie,
    /// Its `Cache-Control` forbids it, or gives it no lifetime.
    CacheControl,
    /// Body over the object limit.
    TooLarge,
    /// `Vary: *`, or it varies on a request header the key does not hold.
    Vary,
}

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
    if directives(headers).any(|(d, _)| d == "no-store") {
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

/// How long a response may be served fresh, or why it is not stored.
///
/// The response's own `s-maxage` or `max-age` wins over the route TTL.
pub fn response_ttl(
    route: &RouteCache,
    status: u16,
    headers: &HeaderMap,
    body_len: u64,
) -> Result<Duration, NotStored> {
    if !(200..300).contains(&status) || status == 206 {
        return Err(NotStored::Status);
    }
    if !vary_is_keyed(route, headers) {
        return Err(NotStored::Vary);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if body_len > route.max_object_bytes {
        return Err(NotStored::TooLarge);
    }
    let mut max_age = None;
    let mut s_maxage = None;
    for (name, value) in directives(headers) {
        match name.as_str() {
            "no-store" | "private" | "no-cache" => return Err(NotStored::CacheControl),
            "max-age" => max_age = value.and_then(|v| v.parse::<u64>().ok()),
            "s-maxage" => s_maxage = value.and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    match s_maxage.or(max_age) {
        Some(0) => Err(NotStored::CacheControl),
        Some(secs) => Ok(Duration::from_secs(secs).min(route.max_ttl)),
        None => Ok(route.ttl),
    }
}

/// Whether every header the response's `Vary` names is in the key (the
/// route's `vary` list, and the credentials when the route allows them).
fn vary_is_keyed(route: &RouteCache, headers: &HeaderMap) -> bool {
    let keyed = |name: &str| {
        route
            .vary
            .iter()
            .any(|h| h.as_str().eq_ignore_ascii_case(name))
            || (route.allow_authorized && CREDENTIALS.iter().any(|c| c.eq_ignore_ascii_case(name)))
    };
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .all(|n| n != "*" && keyed(n))
}

/// Request headers that carry credentials: in the key when a route allows them.
pub const CREDENTIALS: [&str; 2] = ["authorization", "cookie"];

/// Hop-by-hop and per-response headers that are not stored.
const NOT_KEPT: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "date",
    "age",
    "x-cache",
];

/// The response headers kept with a stored entry.
pub fn stored_headers(headers: &HeaderMap) -> Vec<(String, Bytes)> {
    headers
        .iter()
        .filter(|(n, _)| !NOT_KEPT.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

/// `Cache-Control` directives as (lower-case name, value without quotes).
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| {
            let mut parts = d.trim().splitn(2, '=');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let value = parts.next().map(|v| v.trim().trim_matches('"').to_string());
            (name, value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> RouteCache {
        RouteCache {
            ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(86_400),
            methods: vec![Method::GET, Method::POST],
            vary: vec![http::HeaderName::from_static("x-tenant")],
            allow_authorized: false,
            max_object_bytes: 100,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn check_request(method: Method, h: &[(&str, &str)], allow: bool, want: Result<(), Bypass>) {
        let r = RouteCache {
            allow_authorized: allow,
            ..route()
        };
        assert_eq!(request(&r, &method, &headers(h)), want, "{method} {h:?}");
    }

    #[test]
    fn request_rules() {
        check_request(Method::POST, &[], false, Ok(()));
        check_request(Method::PUT, &[], false, Err(Bypass::Method));
        check_request(Method::HEAD, &[], false, Err(Bypass::Method));
        check_request(
            Method::GET,
            &[("authorization", "Bearer x")],
            false,
            Err(Bypass::Authorized),
        );
        check_request(
            Method::GET,
            &[("cookie", "a=b")],
            false,
            Err(Bypass::Authorized),
        );
        check_request(Method::GET, &[("authorization", "Bearer x")], true, Ok(()));
        check_request(
            Method::GET,
            &[("cache-control", "no-store")],
            false,
            Err(Bypass::NoStore),
        );
        check_request(
            Method::POST,
            &[("content-length", "101")],
            false,
            Err(Bypass::TooLarge),
        );
        check_request(Method::POST, &[("content-length", "100")], false, Ok(()));
        check_request(
            Method::GET,
            &[("range", "bytes=0-9")],
            false,
            Err(Bypass::Range),
        );
    }

    fn check_response(status: u16, h: &[(&str, &str)], len: u64, want: Result<u64, NotStored>) {
        let got = response_ttl(&route(), status, &headers(h), len).map(|d| d.as_secs());
        assert_eq!(got, want, "{status} {h:?} {len}");
    }

    #[test]
    fn response_rules() {
        check_response(200, &[], 10, Ok(60));
        check_response(204, &[], 0, Ok(60));
        check_response(301, &[], 10, Err(NotStored::Status));
        check_response(404, &[], 10, Err(NotStored::Status));
        check_response(500, &[], 10, Err(NotStored::Status));
        check_response(200, &[("set-cookie", "a=b")], 10, Err(NotStored::SetCookie));
        check_response(206, &[], 10, Err(NotStored::Status));
        check_response(200, &[("vary", "*")], 10, Err(NotStored::Vary));
        check_response(
            200,
            &[("vary", "Accept-Language")],
            10,
            Err(NotStored::Vary),
        );
        // The test route keys on `x-tenant`; any spelling of it is fine.
        check_response(200, &[("vary", "X-Tenant")], 10, Ok(60));
        check_response(
            200,
            &[("vary", "x-tenant, cookie")],
            10,
            Err(NotStored::Vary),
        );
        check_response(200, &[], 101, Err(NotStored::TooLarge));
        check_response(
            200,
            &[("cache-control", "no-store")],
            10,
            Err(NotStored::CacheControl),
        );
        check_response(
            200,
            &[("cache-control", "public, Private")],
            10,
            Err(NotStored::CacheControl),
        );
        check_response(
            200,
            &[("cache-control", "max-age=0")],
            10,
            Err(NotStored::CacheControl),
        );
        check_response(200, &[("cache-control", "public, max-age=5")], 10, Ok(5));
        check_response(
            200,
            &[("cache-control", "max-age=5, s-maxage=\"7\"")],
            10,
            Ok(7),
        );
        check_response(200, &[("cache-control", "max-age=oops")], 10, Ok(60));
        // A huge max-age is clamped to the route's `max_ttl`, never overflows.
        let huge = [("cache-control", "max-age=18446744073709551615")];
        check_response(200, &huge, 10, Ok(86_400));
    }

    #[test]
    fn hop_by_hop_headers_are_not_stored() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("connection", "keep-alive"),
            ("content-length", "3"),
            ("x-model", "v1"),
            ("date", "now"),
        ]);
        let kept: Vec<String> = stored_headers(&h).into_iter().map(|(n, _)| n).collect();
        assert_eq!(kept, vec!["content-type", "x-model"]);
    }
}
