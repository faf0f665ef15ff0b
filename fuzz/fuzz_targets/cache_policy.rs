//! Fuzz target: the HTTP caching rules (Cache-Control, targeted fields, Vary, Age, dates, conditionals, 304 refresh) over arbitrary headers.
//!
//! Input, one header per line (`name: value`; invalid names or values are skipped):
//!
//! ```text
//! status method ttl_secs requested_ms received_ms now_ms   (any may be missing)
//! request headers
//! --
//! response headers
//! --
//! headers of a 304 that revalidates the stored response
//! ```
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use gantry::cache::key::{self, CacheKey};
use gantry::cache::policy::{self, Times};
use gantry::cache::{CachedResponse, RouteCache};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const MAX_TTL: Duration = Duration::from_secs(86_400);

fn headers(lines: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

struct Params {
    status: u16,
    method: Method,
    ttl_secs: u64,
    times: Times,
    now_ms: u64,
}

fn params(line: &[u8]) -> Params {
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    let mut num = |default: u64| words.next().and_then(|w| w.parse().ok()).unwrap_or(default);
    let status = u16::try_from(num(200)).unwrap_or(200);
    let method = match num(0) % 3 {
        0 => Method::GET,
        1 => Method::HEAD,
        _ => Method::POST,
    };
    let ttl_secs = num(60) % (10 * 86_400);
    let requested_ms = num(1_700_000_000_000);
    let received_ms = num(requested_ms);
    let now_ms = num(received_ms);
    Params {
        status,
        method,
        ttl_secs,
        times: Times {
            requested_ms,
            received_ms,
        },
        now_ms,
    }
}

fn check_entry(
    route: &RouteCache,
    p: &Params,
    req: &HeaderMap,
    upd: &HeaderMap,
    e: &CachedResponse,
) {
    let _ = policy::usable(req, e, p.now_ms);
    let _ = policy::not_modified(&p.method, req, e);
    let _ = policy::validators(e);
    assert!(e.age_secs(p.now_ms) <= 1 << 31);
    let later = Times {
        requested_ms: p.now_ms,
        received_ms: p.now_ms,
    };
    if let Some(r) = policy::refresh(route, &p.method, e, upd, later) {
        assert_eq!((r.status, &r.body), (e.status, &e.body));
        assert!(r.ttl_ms <= policy::millis(MAX_TTL));
    }
    assert_eq!(CachedResponse::decode(&e.encode()).as_ref(), Ok(e));
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let p = params(lines.next().unwrap_or_default());
    let rest: Vec<&[u8]> = lines.collect();
    let mut sections = rest.split(|l| l.trim_ascii() == b"--");
    let req = headers(sections.next().unwrap_or_default());
    let resp = headers(sections.next().unwrap_or_default());
    let upd = headers(sections.next().unwrap_or_default());

    let route = RouteCache {
        ttl: Duration::from_secs(p.ttl_secs),
        methods: vec![Method::GET, Method::HEAD, Method::POST],
        vary: vec![HeaderName::from_static("x-tenant")],
        allow_authorized: p.ttl_secs % 2 == 1,
        max_object_bytes: 1 << 20,
        stale_while_revalidate: Duration::from_secs(p.ttl_secs / 2),
        stale_if_error: Duration::from_secs(p.ttl_secs * 2),
        max_ttl: MAX_TTL,
    };
    let _ = policy::request(&route, &p.method, &req);
    let _ = policy::only_if_cached(&req);

    let vary = policy::vary_names(&resp);
    for (i, n) in vary.iter().enumerate() {
        assert!(!n.is_empty() && !vary[..i].contains(n), "{vary:?}");
        assert_eq!(*n, n.to_ascii_lowercase());
    }
    for n in policy::connection_named(&resp) {
        assert_eq!(n, n.to_ascii_lowercase());
    }
    let names = key::union(
        key::route_selecting(&route.vary, route.allow_authorized),
        &vary,
    );
    let selected = key::selected(&names, &req);
    for (name, value) in &selected {
        assert_eq!(value.is_some(), req.contains_key(name.as_str()), "{name}");
        assert_eq!(*value, policy::selecting_value(&req, name));
    }
    let primary = CacheKey::from_stored("analysis:/v1/analyze:x");
    let _ = primary.variant(p.ttl_secs, &selected);

    let body = Bytes::from_static(b"{\"score\":0.5}");
    match policy::storable(
        &route,
        &p.method,
        p.status,
        &resp,
        body.len() as u64,
        p.times,
    ) {
        Ok(storing) => {
            // A response's own lifetime and windows are capped by max_ttl; the route's windows are its own.
            let max = policy::millis(MAX_TTL);
            assert!(storing.ttl_ms <= max);
            assert!(storing.swr_ms <= max.max(policy::millis(route.stale_while_revalidate)));
            assert!(storing.sie_ms <= max.max(policy::millis(route.stale_if_error)));
            let e = storing.entry(p.status, body, p.times.received_ms, selected);
            check_entry(&route, &p, &req, &upd, &e);
        }
        Err(_) => {
            // The rules that read a stored entry still get these headers.
            let e = CachedResponse {
                status: p.status,
                headers: policy::stored_headers(&resp, &[]),
                body,
                stored_at_ms: p.times.received_ms,
                ttl_ms: p.ttl_secs.saturating_mul(1000),
                selected,
                ..CachedResponse::default()
            };
            check_entry(&route, &p, &req, &upd, &e);
        }
    }
});
