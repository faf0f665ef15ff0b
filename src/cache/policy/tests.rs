//! Table-driven checks of the cacheability rules: one row per rule, each naming the RFC section it follows.

use super::*;
use crate::cache::entry::Freshness;

const NOW: u64 = 1_700_000_000_000;
const DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT"; // NOW

/// Header pairs.
type H<'a> = &'a [(&'a str, &'a str)];

fn route(ttl: u64) -> RouteCache {
    RouteCache {
        ttl: Duration::from_secs(ttl),
        max_ttl: Duration::from_secs(86_400),
        methods: vec![Method::GET, Method::HEAD, Method::POST],
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

fn at(t: u64) -> Times {
    Times {
        requested_ms: t,
        received_ms: t,
    }
}

#[test]
fn request_rules() {
    let check = |method: Method, h: &[(&str, &str)], allow: bool, want: Result<(), Bypass>| {
        let r = RouteCache {
            allow_authorized: allow,
            ..route(60)
        };
        assert_eq!(request(&r, &method, &headers(h)), want, "{method} {h:?}");
    };
    check(Method::POST, &[], false, Ok(()));
    check(Method::PUT, &[], false, Err(Bypass::Method));
    let auth = [("authorization", "Bearer x")];
    check(Method::GET, &auth, false, Err(Bypass::Authorized));
    check(
        Method::GET,
        &[("cookie", "a=b")],
        false,
        Err(Bypass::Authorized),
    );
    check(Method::GET, &auth, true, Ok(()));
    let no_store = [("cache-control", "no-store")];
    check(Method::GET, &no_store, false, Err(Bypass::NoStore));
    let big = [("content-length", "101")];
    check(Method::POST, &big, false, Err(Bypass::TooLarge));
    check(Method::POST, &[("content-length", "100")], false, Ok(()));
    check(
        Method::GET,
        &[("range", "bytes=0-9")],
        false,
        Err(Bypass::Range),
    );
}

/// What `storable` says: `Ok((ttl s, age s, swr s, sie s, must_revalidate, no_cache))`.
type Judged = Result<(u64, u64, u64, u64, bool, bool), NotStored>;

fn judged(ttl: u64, method: Method, status: u16, h: &[(&str, &str)], times: Times) -> Judged {
    storable(&route(ttl), &method, status, &headers(h), 10, times).map(|s| {
        (
            s.ttl_ms / 1000,
            s.age_ms / 1000,
            s.swr_ms / 1000,
            s.sie_ms / 1000,
            s.flags.must_revalidate,
            s.flags.no_cache,
        )
    })
}

#[test]
fn storing_rules() {
    let fresh = |ttl| Ok((ttl, 0, 0, 0, false, false));
    // (route ttl, status, response headers, expected), received at NOW, GET.
    #[rustfmt::skip]
    let table: &[(u64, u16, H, Judged, &str)] = &[
        (60, 200, &[], fresh(60), "route ttl is the default freshness (2xx)"),
        (60, 204, &[], fresh(60), "204 too"),
        (60, 404, &[], Err(NotStored::CacheControl), "a route ttl is for 2xx only"),
        (60, 404, &[("cache-control", "max-age=30")], fresh(30), "explicit freshness: any understood status"),
        (60, 206, &[("cache-control", "max-age=30")], Err(NotStored::Status), "206 never (§3.4 not supported)"),
        (60, 304, &[], Err(NotStored::Status), "304 is not a whole response"),
        (60, 101, &[], Err(NotStored::Status), "1xx never"),
        (60, 503, &[("cache-control", "max-age=30")], Err(NotStored::Status), "failures never: stale-if-error answers them"),
        (60, 501, &[("cache-control", "max-age=30")], fresh(30), "501 is a heuristically cacheable answer"),
        (60, 200, &[("set-cookie", "a=b")], Err(NotStored::SetCookie), "cookies are not shared"),
        (60, 200, &[("vary", "*")], Err(NotStored::Vary), "Vary: * never matches (§4.1)"),
        (60, 200, &[("vary", "Accept-Language")], fresh(60), "other Vary: stored as a variant"),
        (60, 200, &[("cache-control", "no-store")], Err(NotStored::CacheControl), "no-store (§5.2.2.5)"),
        (60, 200, &[("cache-control", "public, Private")], Err(NotStored::CacheControl), "private: not in a shared cache (§5.2.2.7)"),
        (60, 200, &[("cache-control", "private=\"x-user\"")], fresh(60), "qualified private: stored without the field"),
        (60, 200, &[("cache-control", "max-age=0")], Err(NotStored::CacheControl), "no lifetime, no validator: of no use"),
        (60, 200, &[("cache-control", "max-age=0"), ("etag", "\"a\"")], fresh(0), "no lifetime but a validator: kept to revalidate"),
        (60, 200, &[("cache-control", "no-cache")], Err(NotStored::CacheControl), "no-cache without a validator"),
        (60, 200, &[("cache-control", "no-cache"), ("etag", "\"a\"")], Ok((0, 0, 0, 0, true, true)), "no-cache: revalidated on every use (§5.2.2.4)"),
        (60, 200, &[("cache-control", "public, max-age=5")], fresh(5), "max-age wins over the route"),
        (60, 200, &[("cache-control", "max-age=5, s-maxage=\"7\"")], Ok((7, 0, 0, 0, true, false)), "s-maxage wins, and implies proxy-revalidate (§5.2.2.10)"),
        (60, 200, &[("cache-control", "max-age=5, max-age=9")], Err(NotStored::CacheControl), "conflicting directives: stale (§4.2.1)"),
        (60, 200, &[("cache-control", "max-age=oops")], Err(NotStored::CacheControl), "unreadable max-age: stale"),
        (60, 200, &[("cache-control", "max-age=18446744073709551616")], fresh(86_400), "huge max-age is clamped to max_ttl"),
        (0, 200, &[("date", DATE), ("expires", "Tue, 14 Nov 2023 22:14:20 GMT")], fresh(60), "Expires - Date (§4.2.1)"),
        (60, 200, &[("date", DATE), ("expires", "0")], Err(NotStored::CacheControl), "invalid Expires: already expired"),
        (0, 200, &[("expires", "Tue, 14 Nov 2023 22:14:20 GMT"), ("cache-control", "max-age=10")], fresh(10), "max-age wins over Expires"),
        (0, 200, &[], Err(NotStored::CacheControl), "ttl 0s: nothing explicit, no Last-Modified"),
        (0, 200, &[("date", DATE), ("last-modified", "Tue, 14 Nov 2023 19:26:40 GMT")], Ok((1000, 0, 0, 0, false, false)), "heuristic: 10% of the time since Last-Modified (§4.2.2)"),
        (0, 302, &[("date", DATE), ("last-modified", "Tue, 14 Nov 2023 19:26:40 GMT")], Err(NotStored::CacheControl), "302 is not heuristically cacheable"),
        (0, 302, &[("cache-control", "max-age=9")], fresh(9), "but can be explicitly fresh"),
        (60, 200, &[("age", "20")], Ok((40, 20, 0, 0, false, false)), "Age counts against the lifetime (§4.2.3)"),
        (60, 200, &[("age", "20, 30")], Ok((40, 20, 0, 0, false, false)), "a list Age: its first member (§5.1)"),
        (60, 200, &[("age", "-5")], fresh(60), "an invalid Age is ignored"),
        (60, 200, &[("age", "99999999999999999999999")], Ok((0, 2_147_483_648, 0, 0, false, false)), "a huge Age saturates: stale"),
        (60, 200, &[("date", "Tue, 14 Nov 2023 22:12:20 GMT")], Ok((0, 60, 0, 0, false, false)), "apparent age from Date"),
        (60, 200, &[("date", DATE)], fresh(60), "Date has whole seconds: no apparent age within one"),
        (60, 200, &[("cache-control", "stale-while-revalidate=30, stale-if-error=90")], Ok((60, 0, 30, 90, false, false)), "the response's own stale windows (RFC 5861)"),
        (60, 200, &[("cache-control", "must-revalidate, stale-if-error=90")], Ok((60, 0, 0, 0, true, false)), "must-revalidate: never stale"),
        (60, 200, &[("cache-control", "proxy-revalidate")], Ok((60, 0, 0, 0, true, false)), "proxy-revalidate too"),
        (60, 200, &[("cdn-cache-control", "max-age=120"), ("cache-control", "no-store")], fresh(120), "CDN-Cache-Control wins over Cache-Control (RFC 9213)"),
        (60, 200, &[("gantry-cache-control", "max-age=5"), ("cdn-cache-control", "max-age=120")], fresh(5), "the gantry-targeted field wins over CDN-Cache-Control"),
        (60, 200, &[("cdn-cache-control", "max-age=\"1"), ("cache-control", "max-age=7")], fresh(7), "an invalid targeted field is ignored"),
        (60, 200, &[("cdn-cache-control", "no-store")], Err(NotStored::CacheControl), "a targeted no-store"),
        (0, 200, &[("cdn-cache-control", "public"), ("date", DATE), ("expires", "Tue, 14 Nov 2023 22:14:20 GMT")], Err(NotStored::CacheControl), "a targeted field means Expires is ignored"),
    ];
    for (ttl, status, h, want, why) in table {
        let got = judged(*ttl, Method::GET, *status, h, at(NOW));
        assert_eq!(&got, want, "{why}: {status} {h:?}");
    }
}

#[test]
fn storing_corrects_for_the_request_time() {
    let times = Times {
        requested_ms: NOW - 3_000,
        received_ms: NOW,
    };
    // corrected_age_value = Age + response_delay (§4.2.3).
    assert_eq!(
        judged(60, Method::GET, 200, &[("age", "10")], times),
        Ok((47, 13, 0, 0, false, false))
    );
}

#[test]
fn posts_need_a_lifetime_and_are_never_revalidated() {
    let etag = [("cache-control", "no-cache"), ("etag", "\"a\"")];
    assert_eq!(
        judged(60, Method::POST, 200, &etag, at(NOW)),
        Err(NotStored::CacheControl)
    );
    assert_eq!(
        judged(0, Method::POST, 200, &[], at(NOW)),
        Err(NotStored::CacheControl)
    );
    assert_eq!(
        judged(60, Method::POST, 200, &[], at(NOW)),
        Ok((60, 0, 0, 0, false, false))
    );
}

#[test]
fn stored_headers_drop_hop_by_hop_connection_named_and_qualified_fields() {
    let h = headers(&[
        ("content-type", "application/json"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("content-length", "3"),
        ("x-model", "v1"),
        ("x-user", "alice"),
        ("date", DATE),
        ("cache-control", "private=\"x-user\""),
        ("age", "3"),
    ]);
    let s = storable(&route(60), &Method::GET, 200, &h, 3, at(NOW)).unwrap();
    let kept: Vec<&str> = s.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(kept, ["content-type", "x-model", "date", "cache-control"]);
}

fn entry(h: &[(&str, &str)], ttl_s: u64) -> CachedResponse {
    let times = at(NOW);
    let mut s = storable(&route(ttl_s), &Method::GET, 200, &headers(h), 3, times).unwrap();
    s.swr_ms = 10_000;
    s.entry(200, Bytes::from_static(b"abc"), NOW, vec![])
}

#[test]
fn use_rules() {
    use Usable::*;
    let etag = ("etag", "\"v1\"");
    // (stored headers, route ttl, request headers, seconds after storing, expected)
    #[rustfmt::skip]
    let table: &[(H, u64, H, u64, Usable, &str)] = &[
        (&[], 60, &[], 0, Serve, "fresh"),
        (&[], 60, &[], 59, Serve, "still fresh"),
        (&[], 60, &[], 65, ServeStale, "stale inside stale-while-revalidate"),
        (&[etag], 60, &[], 75, Revalidate, "past every stale window: revalidate"),
        (&[], 60, &[("cache-control", "no-cache")], 0, Revalidate, "request no-cache (§5.2.1.4)"),
        (&[], 60, &[("pragma", "no-cache")], 0, Revalidate, "Pragma: no-cache without Cache-Control (§5.4)"),
        (&[], 60, &[("pragma", "no-cache"), ("cache-control", "max-age=100")], 0, Serve, "Pragma is ignored with Cache-Control"),
        (&[], 60, &[("cache-control", "max-age=10")], 20, Revalidate, "request max-age (§5.2.1.1)"),
        (&[], 60, &[("cache-control", "max-age=30")], 20, Serve, "within request max-age"),
        (&[], 60, &[("cache-control", "min-fresh=50")], 20, Revalidate, "request min-fresh (§5.2.1.3)"),
        (&[], 60, &[("cache-control", "max-stale")], 75, Serve, "request max-stale, any staleness (§5.2.1.2)"),
        (&[], 60, &[("cache-control", "max-stale=10")], 75, Revalidate, "max-stale too short"),
        (&[("cache-control", "must-revalidate")], 60, &[("cache-control", "max-stale")], 75, Revalidate, "must-revalidate beats max-stale (§5.2.2.2)"),
        (&[("cache-control", "no-cache"), etag], 60, &[], 0, Revalidate, "response no-cache: every use"),
        (&[("age", "50")], 60, &[], 15, ServeStale, "stored Age counts"),
    ];
    for (stored, ttl, req, after, want, why) in table {
        let e = entry(stored, *ttl);
        let got = usable(&headers(req), &e, NOW + after * 1000);
        assert_eq!(got, *want, "{why}");
    }
}

#[test]
fn client_conditionals_are_answered_from_cache() {
    let e = entry(
        &[
            ("etag", "W/\"v1\""),
            ("last-modified", "Tue, 14 Nov 2023 19:26:40 GMT"),
        ],
        60,
    );
    #[rustfmt::skip]
    let table: &[(Method, H, bool, &str)] = &[
        (Method::GET, &[("if-none-match", "\"v1\"")], true, "weak comparison (RFC 9110 §13.1.2)"),
        (Method::GET, &[("if-none-match", "\"v0\", W/\"v1\"")], true, "any member"),
        (Method::GET, &[("if-none-match", "*")], true, "*"),
        (Method::GET, &[("if-none-match", "\"v2\"")], false, "another tag"),
        (Method::GET, &[("if-none-match", "\"v2\""), ("if-modified-since", "Tue, 14 Nov 2023 22:00:00 GMT")], false, "If-None-Match wins over If-Modified-Since"),
        (Method::GET, &[("if-modified-since", "Tue, 14 Nov 2023 22:00:00 GMT")], true, "not modified since"),
        (Method::GET, &[("if-modified-since", "Tue, 14 Nov 2023 18:00:00 GMT")], false, "modified since"),
        (Method::GET, &[("if-modified-since", "yesterday")], false, "an invalid date is ignored"),
        (Method::POST, &[("if-none-match", "\"v1\"")], false, "only GET and HEAD"),
        (Method::HEAD, &[("if-none-match", "\"v1\"")], true, "HEAD too"),
    ];
    for (method, req, want, why) in table {
        assert_eq!(not_modified(method, &headers(req), &e), *want, "{why}");
    }
}

#[test]
fn a_304_refreshes_the_stored_headers_and_lifetime() {
    let mut e = entry(
        &[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=10"),
            ("x-model", "old"),
            ("content-encoding", "gzip"),
        ],
        60,
    );
    e.headers
        .push(("x-kept".into(), Bytes::from_static(b"yes")));
    let later = at(NOW + 100_000);
    let refreshed = |h: &[(&str, &str)]| refresh(&route(60), &Method::GET, &e, &headers(h), later);
    let r = refreshed(&[
        ("etag", "\"v1\""),
        ("cache-control", "max-age=30"),
        ("x-model", "new"),
        ("content-encoding", "br"),
        ("content-length", "0"),
    ])
    .expect("same strong validator");
    assert_eq!(r.body, e.body);
    assert_eq!(r.stored_at_ms, NOW + 100_000);
    assert_eq!(r.ttl_ms, 30_000);
    assert_eq!(r.freshness(NOW + 100_000), Freshness::Fresh);
    assert_eq!(r.header("x-model").unwrap(), "new");
    assert_eq!(r.header("x-kept").unwrap(), "yes");
    assert_eq!(
        r.header("content-encoding").unwrap(),
        "gzip",
        "the body depends on it"
    );
    assert_eq!(r.header("content-length"), None);
    // §4.3.4: a 304 naming another validator selects nothing.
    assert_eq!(refreshed(&[("etag", "\"v2\"")]), None);
    // Without a validator it updates the one stored response.
    assert!(refreshed(&[("cache-control", "max-age=5")]).is_some());
    // A 304 that makes it unstorable drops it.
    assert_eq!(refreshed(&[("cache-control", "no-store")]), None);
}

#[test]
fn validators_and_connection_fields() {
    let e = entry(
        &[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 14 Nov 2023 19:26:40 GMT"),
        ],
        60,
    );
    let v: Vec<&str> = validators(&e).iter().map(|(n, _)| *n).collect();
    assert_eq!(v, ["if-none-match", "if-modified-since"]);
    assert!(validators(&entry(&[], 60)).is_empty());
    let h = headers(&[
        ("connection", "Keep-Alive, X-Trace, close"),
        ("connection", "te"),
    ]);
    assert_eq!(connection_named(&h), ["x-trace", "te"]);
}

#[test]
fn vary_names_and_selecting_values_are_normalised() {
    let h = headers(&[
        ("vary", "Accept-Language, accept-encoding"),
        ("vary", "ACCEPT-language"),
    ]);
    assert_eq!(vary_names(&h), ["accept-language", "accept-encoding"]);
    let req = headers(&[("accept", "a ,b"), ("accept", " c"), ("x-empty", "")]);
    assert_eq!(
        selecting_value(&req, "accept"),
        Some(Bytes::from("a, b, c"))
    );
    assert_eq!(selecting_value(&req, "x-empty"), Some(Bytes::new()));
    assert_eq!(selecting_value(&req, "x-absent"), None);
}

#[test]
fn directives_split_outside_quotes() {
    assert_eq!(
        split_directives(r#"no-cache="a, b", max-age=5"#),
        [r#"no-cache="a, b""#, "max-age=5"]
    );
    let h = headers(&[("cache-control", r#"no-cache="Set-Cookie, X-A", max-age=5"#)]);
    let d = Directives::response(&h);
    assert_eq!(d.fields("no-cache").unwrap(), ["set-cookie", "x-a"]);
    assert_eq!(d.secs("max-age"), Some(5));
}
