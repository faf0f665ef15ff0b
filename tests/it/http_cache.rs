//! Standard HTTP caching on a GET route through the real proxy (RFC 9111): freshness from the
//! response, Age, conditional revalidation, must-revalidate, Vary, invalidation, hop-by-hop
//! and targeted fields, against an origin scripted per path.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::{client, Gantry};

/// Header pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// What the origin answers for one path: status, headers, a body; with an
/// `etag` it answers `304` to a matching `If-None-Match`.
#[derive(Clone, Default)]
struct Script {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    etag: Option<String>,
}

/// The origin's state: scripts by path, and what it was asked.
#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    /// Requests per path (health checks not counted).
    hits: HashMap<String, u64>,
    /// The `If-None-Match` of each request, by path, in order.
    conditionals: HashMap<String, Vec<Option<String>>>,
}

struct Origin {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, s.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            state,
            _task: task,
        }
    }

    /// From now on, `path` is answered `200` with `body` and `headers`.
    fn script(&self, path: &str, headers: &[(&str, &str)], body: &str) {
        let etag = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
            .map(|(_, v)| v.to_string());
        let script = Script {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            etag,
        };
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.into(), script);
    }

    /// From now on, `path` is answered with `status` and no headers (so never `304`).
    fn fail(&self, path: &str, status: u16) {
        let mut s = self.state.lock().unwrap();
        let script = s.scripts.entry(path.into()).or_default();
        script.status = status;
        script.etag = None;
        script.headers.clear();
    }

    fn hits(&self, path: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn conditionals(&self, path: &str) -> Vec<Option<String>> {
        let s = self.state.lock().unwrap();
        s.conditionals.get(path).cloned().unwrap_or_default()
    }
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    let inm = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let script = {
        let mut s = state.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        s.conditionals
            .entry(path.clone())
            .or_default()
            .push(inm.clone());
        s.scripts.get(&path).cloned().unwrap_or(Script {
            status: 404,
            ..Script::default()
        })
    };
    let matched = matches!((&inm, &script.etag), (Some(i), Some(e)) if i.contains(e.as_str()));
    let (status, body) = if matched {
        (304, Bytes::new())
    } else {
        (script.status, Bytes::from(script.body.clone()))
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for (n, v) in &script.headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    Ok(resp)
}

/// A proxy with one GET/HEAD route caching as a standard shared cache (`ttl: 0s`).
async fn proxy(origin: &Origin, extra: &str) -> Gantry {
    let yaml = format!(
        "pools:
  web:
    policy: round_robin
    health: {{interval: 100ms, rise: 1, fall: 1}}
    backends: [{{addr: '{}'}}]
routes:
  - prefix: /
    pool: web
    cache: {{ttl: 0s, methods: [GET, HEAD]{extra}}}
",
        origin.addr
    );
    Gantry::proxy(&yaml).start().await
}

struct Reply {
    status: u16,
    x_cache: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(g: &Gantry, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, format!("{}{path}", g.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("the proxy answers");
    let headers = r.headers().clone();
    Reply {
        status: r.status().as_u16(),
        x_cache: headers
            .get("x-cache")
            .map_or("none".into(), |v| v.to_str().unwrap().to_string()),
        headers,
        body: r.text().await.unwrap(),
    }
}

async fn get(g: &Gantry, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(g, "GET", path, headers).await
}

/// Gets `path` until it is a hit (the store lands just after the first answer).
async fn until_hit(g: &Gantry, path: &str, headers: &[(&str, &str)]) -> Reply {
    g.until(
        format!("{path} cached"),
        Duration::from_secs(10),
        || async {
            let r = get(g, path, headers).await;
            if r.x_cache.starts_with("HIT") {
                Ok(r)
            } else {
                Err(r.x_cache)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_response_allows_is_stored() {
    let origin = Origin::start().await;
    let g = proxy(&origin, "").await;
    let cases: [(&str, Headers, bool); 8] = [
        ("/max-age", &[("cache-control", "max-age=600")], true),
        (
            "/s-maxage",
            &[("cache-control", "s-maxage=600, max-age=0")],
            true,
        ),
        ("/public", &[("cache-control", "public, max-age=600")], true),
        (
            "/no-store",
            &[("cache-control", "no-store, max-age=600")],
            false,
        ),
        (
            "/private",
            &[("cache-control", "private, max-age=600")],
            false,
        ),
        ("/nothing", &[], false),
        (
            "/vary-star",
            &[("cache-control", "max-age=600"), ("vary", "*")],
            false,
        ),
        (
            "/cdn",
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ],
            true,
        ),
    ];
    for (path, headers, _) in &cases {
        origin.script(path, headers, path);
        let first = get(&g, path, &[]).await;
        assert_eq!((first.status, first.body.as_str()), (200, *path));
    }
    for (path, _, stored) in &cases {
        if *stored {
            let hit = until_hit(&g, path, &[]).await;
            assert_eq!(hit.body, *path);
        } else {
            for _ in 0..3 {
                assert!(
                    !get(&g, path, &[]).await.x_cache.starts_with("HIT"),
                    "{path}"
                );
            }
        }
        let want = if *stored { 1 } else { 4 };
        assert_eq!(origin.hits(path), want, "{path} reached the origin");
    }
    // The targeted field steered this cache and is not passed on.
    let cdn = get(&g, "/cdn", &[]).await;
    assert!(cdn.headers.get("cdn-cache-control").is_none());
    assert_eq!(cdn.headers["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_and_hop_by_hop_fields() {
    let origin = Origin::start().await;
    let g = proxy(&origin, "").await;
    origin.script(
        "/aged",
        &[
            ("cache-control", "max-age=600"),
            ("age", "100"),
            ("connection", "x-secret"),
            ("x-secret", "hop"),
            ("x-model", "v1"),
        ],
        "aged",
    );
    let first = get(&g, "/aged", &[]).await;
    assert!(
        first.headers.get("x-secret").is_none(),
        "named by Connection"
    );
    let hit = until_hit(&g, "/aged", &[]).await;
    let age: u64 = hit.headers["age"].to_str().unwrap().parse().unwrap();
    assert!(age >= 100, "the Age it arrived with counts: {age}");
    assert!(hit.headers.get("x-secret").is_none(), "never stored");
    assert_eq!(hit.headers["x-model"], "v1");
    // Arriving older than its lifetime: stale at once, so not served from cache.
    origin.script(
        "/too-old",
        &[
            ("cache-control", "max-age=60"),
            ("age", "99999999999999999999"),
        ],
        "old",
    );
    for _ in 0..3 {
        assert!(!get(&g, "/too-old", &[]).await.x_cache.starts_with("HIT"));
    }
    assert_eq!(origin.hits("/too-old"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_revalidated_and_304_refreshes_them() {
    let origin = Origin::start().await;
    let g = proxy(&origin, "").await;
    // Stale at once, with a validator: every use asks the origin, which says 304.
    let headers = [
        ("cache-control", "max-age=0"),
        ("etag", "\"v1\""),
        ("x-version", "1"),
    ];
    origin.script("/doc", &headers, "version one");
    let first = get(&g, "/doc", &[]).await;
    assert_eq!(first.x_cache, "MISS");
    let again = g
        .until("a revalidated answer", Duration::from_secs(10), || async {
            let r = get(&g, "/doc", &[]).await;
            (r.x_cache == "REVALIDATED").then_some(r)
        })
        .await;
    assert_eq!((again.status, again.body.as_str()), (200, "version one"));
    assert_eq!(
        origin.conditionals("/doc").last().unwrap().as_deref(),
        Some("\"v1\"")
    );
    // The 304's fields refresh the stored ones.
    origin.script(
        "/doc",
        &[
            ("cache-control", "max-age=0"),
            ("etag", "\"v1\""),
            ("x-version", "1b"),
        ],
        "never sent: the 304 has no body",
    );
    let refreshed = get(&g, "/doc", &[]).await;
    assert_eq!(refreshed.x_cache, "REVALIDATED");
    assert_eq!(refreshed.headers["x-version"], "1b");
    assert_eq!(refreshed.body, "version one");
    // A changed resource: the conditional request gets a 200, which replaces it.
    origin.script(
        "/doc",
        &[("cache-control", "max-age=0"), ("etag", "\"v2\"")],
        "version two",
    );
    let changed = get(&g, "/doc", &[]).await;
    assert_eq!(changed.body, "version two");
    assert_eq!(changed.x_cache, "MISS");
    let conditionals = origin.conditionals("/doc");
    assert_eq!(
        conditionals[0], None,
        "the first request was not conditional"
    );

    // no-cache: stored, but confirmed before every use.
    origin.script(
        "/nc",
        &[("cache-control", "no-cache"), ("etag", "\"n\"")],
        "nc",
    );
    get(&g, "/nc", &[]).await;
    let mut revalidated = 0;
    for _ in 0..3 {
        let r = get(&g, "/nc", &[]).await;
        assert!(
            !r.x_cache.starts_with("HIT"),
            "no-cache is never served unchecked"
        );
        revalidated += u32::from(r.x_cache == "REVALIDATED");
    }
    assert!(revalidated >= 2, "{revalidated}");
    assert_eq!(origin.hits("/nc"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_conditionals_are_answered_from_cache() {
    let origin = Origin::start().await;
    let g = proxy(&origin, "").await;
    origin.script(
        "/tagged",
        &[
            ("cache-control", "max-age=600"),
            ("etag", "\"t1\""),
            ("last-modified", "Tue, 14 Nov 2023 19:26:40 GMT"),
        ],
        "tagged",
    );
    get(&g, "/tagged", &[]).await;
    until_hit(&g, "/tagged", &[]).await;
    let not_modified = get(&g, "/tagged", &[("if-none-match", "W/\"t1\"")]).await;
    assert_eq!((not_modified.status, not_modified.body.as_str()), (304, ""));
    assert_eq!(not_modified.headers["etag"], "\"t1\"");
    let since = [("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")];
    assert_eq!(get(&g, "/tagged", &since).await.status, 304);
    let other = get(&g, "/tagged", &[("if-none-match", "\"t0\"")]).await;
    assert_eq!((other.status, other.body.as_str()), (200, "tagged"));
    assert_eq!(origin.hits("/tagged"), 1, "all answered from cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_is_honoured_unless_it_must_revalidate() {
    let origin = Origin::start().await;
    let g = proxy(&origin, "").await;
    let lenient = [
        ("cache-control", "max-age=0, stale-if-error=600"),
        ("etag", "\"s\""),
    ];
    let strict = [
        (
            "cache-control",
            "max-age=0, stale-if-error=600, must-revalidate",
        ),
        ("etag", "\"s\""),
    ];
    origin.script("/lenient", &lenient, "kept");
    origin.script("/strict", &strict, "kept");
    get(&g, "/lenient", &[]).await;
    get(&g, "/strict", &[]).await;
    origin.fail("/lenient", 503);
    origin.fail("/strict", 503);
    let served = g
        .until("a stale answer", Duration::from_secs(10), || async {
            let r = get(&g, "/lenient", &[]).await;
            if r.x_cache == "STALE" {
                Ok(r)
            } else {
                Err(format!("{} {} {}", r.status, r.x_cache, r.body))
            }
        })
        .await;
    assert_eq!((served.status, served.body.as_str()), (200, "kept"));
    for _ in 0..3 {
        let r = get(&g, "/strict", &[]).await;
        assert_eq!(r.status, 503, "must-revalidate: never served stale");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_of_one_url_sit_side_by_side() {
    let origin = Origin::start().await;
    let g = proxy(&origin, "").await;
    let vary = |lang: &str| [("accept-language", lang.to_string())];
    origin.script(
        "/greeting",
        &[
            ("cache-control", "max-age=600"),
            ("vary", "Accept-Language"),
        ],
        "first",
    );
    let en = get(&g, "/greeting", &[("accept-language", "en")]).await;
    assert_eq!(en.body, "first");
    until_hit(&g, "/greeting", &[("accept-language", "en")]).await;
    origin.script(
        "/greeting",
        &[
            ("cache-control", "max-age=600"),
            ("vary", "Accept-Language"),
        ],
        "second",
    );
    let de = get(&g, "/greeting", &[("accept-language", "de")]).await;
    assert_eq!((de.x_cache.as_str(), de.body.as_str()), ("MISS", "second"));
    let de_hit = until_hit(&g, "/greeting", &[("accept-language", "de")]).await;
    assert_eq!(de_hit.body, "second");
    let [(n, v)] = vary("en");
    let en_hit = get(&g, "/greeting", &[(n, &v)]).await;
    assert_eq!(
        (en_hit.x_cache.as_str(), en_hit.body.as_str()),
        ("HIT-L1", "first")
    );
    // Absent is a value of its own; header lines are combined as the RFC allows.
    let none = get(&g, "/greeting", &[]).await;
    assert_eq!(none.x_cache, "MISS");
    assert_eq!(origin.hits("/greeting"), 3);

    // A route's `vary` and the credentials it allows select too, Vary or not.
    let origin2 = Origin::start().await;
    let g2 = proxy(&origin2, ", allow_authorized: true").await;
    origin2.script("/me", &[("cache-control", "public, max-age=600")], "me");
    for user in ["Bearer alice", "Bearer bob"] {
        let r = get(&g2, "/me", &[("authorization", user)]).await;
        assert_eq!(r.x_cache, "MISS", "{user} never gets another user's answer");
        until_hit(&g2, "/me", &[("authorization", user)]).await;
    }
    assert_eq!(origin2.hits("/me"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_requests_invalidate_the_url_and_its_locations() {
    let origin = Origin::start().await;
    let g = proxy(&origin, "").await;
    let fresh = [("cache-control", "max-age=600"), ("vary", "accept")];
    origin.script("/item", &fresh, "item");
    origin.script("/list", &[("cache-control", "max-age=600")], "list");
    for path in ["/item", "/list"] {
        get(&g, path, &[]).await;
        until_hit(&g, path, &[]).await;
    }
    get(&g, "/item", &[("accept", "text/plain")]).await;
    until_hit(&g, "/item", &[("accept", "text/plain")]).await;
    // A PUT to /item that says the collection changed too.
    origin.script("/item", &[("content-location", "/list")], "updated");
    let put = send(&g, "PUT", "/item", &[]).await;
    assert_eq!(put.status, 200);
    origin.script("/item", &fresh, "item v2");
    origin.script("/list", &[("cache-control", "max-age=600")], "list v2");
    assert_eq!(get(&g, "/item", &[]).await.body, "item v2");
    assert_eq!(
        get(&g, "/item", &[("accept", "text/plain")]).await.body,
        "item v2",
        "every variant went"
    );
    assert_eq!(get(&g, "/list", &[]).await.body, "list v2");
    // A failed unsafe request invalidates nothing.
    until_hit(&g, "/list", &[]).await;
    origin.fail("/list", 500);
    let _ = send(&g, "DELETE", "/list", &[]).await;
    assert_eq!(get(&g, "/list", &[]).await.body, "list v2");
}
