//! The response cache through the real proxy binary: X-Cache progression, restarts, Redis loss,
//! coalescing, staleness, purge and the responses that are never stored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::support::gantry::command;
use crate::support::redis_server::RedisServer;
use crate::support::{client, metric, Gantry};

/// A backend whose answer is steered by request headers: `x-status`,
/// `x-set-cookie`, `x-cache-control`, `x-delay-ms`, `x-size`. The body says
/// which request number it was, so a test can tell fresh answers from cached ones.
struct Origin {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    /// `Cache-Control` sent when the request has no `x-cache-control`.
    cache_control: Arc<Mutex<Option<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut o = Origin {
            addr,
            hits: Arc::default(),
            cache_control: Arc::default(),
            task: None,
        };
        o.serve(listener);
        o
    }

    fn serve(&mut self, listener: TcpListener) {
        let (hits, cache_control) = (self.hits.clone(), self.cache_control.clone());
        self.task = Some(tokio::spawn(async move {
            // Dropped with this task: every open connection closes with it.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (hits, cache_control) = (hits.clone(), cache_control.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        answer(req, hits.clone(), cache_control.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    /// Closes the listener and every connection.
    async fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// From now on, answers say `Cache-Control: cc` (unless the request steers it).
    fn send_cache_control(&self, cc: &str) {
        *self.cache_control.lock().unwrap() = Some(cc.to_string());
    }
}

async fn answer(
    req: Request<Incoming>,
    hits: Arc<AtomicU64>,
    cache_control: Arc<Mutex<Option<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let h = req.headers().clone();
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(String::from);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if let Some(ms) = get("x-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut text = format!("{{\"n\":{n},\"len\":{}}}", body.len());
    if let Some(size) = get("x-size").and_then(|v| v.parse::<usize>().ok()) {
        text = "x".repeat(size);
    }
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    let status = get("x-status").and_then(|v| v.parse().ok()).unwrap_or(200);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    let rh = resp.headers_mut();
    rh.insert("content-type", "application/json".parse().unwrap());
    if get("x-set-cookie").is_some() {
        rh.insert("set-cookie", "session=1".parse().unwrap());
    }
    let sent = cache_control.lock().unwrap().clone();
    if let Some(cc) = get("x-cache-control").or(sent) {
        rh.insert("cache-control", cc.parse().unwrap());
    }
    Ok(resp)
}

/// Proxy config: one pool, a cached `/v1/analyze` route, an uncached `/` route.
fn config(origin: &Origin, disk: &std::path::Path, route_cache: &str, top: &str) -> String {
    format!(
        "pools:
  analysis:
    policy: round_robin
    health: {{interval: 100ms, rise: 1, fall: 1}}
    backends: [{{addr: '{addr}'}}]
routes:
  - prefix: /v1/analyze
    pool: analysis
    idempotent: true
    cache: {{{route_cache}}}
  - prefix: /
    pool: analysis
cache:
  disk: {{path: '{disk}'}}
{top}",
        addr = origin.addr,
        disk = disk.join("cache.redb").display(),
    )
}

struct Reply {
    status: u16,
    x_cache: String,
    body: String,
}

async fn post(g: &Gantry, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client()
        .post(format!("{}/v1/analyze", g.url))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("the proxy answers");
    let status = r.status().as_u16();
    let x_cache = r
        .headers()
        .get("x-cache")
        .map_or("none".into(), |v| v.to_str().unwrap().to_string());
    Reply {
        status,
        x_cache,
        body: r.text().await.unwrap(),
    }
}

async fn x_caches(g: &Gantry, body: &str, headers: &[(&str, &str)], n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(post(g, body, headers).await.x_cache);
    }
    out
}

/// Posts `body` until the reply's `X-Cache` is `want`, checking each reply
/// before it with `meanwhile`.
async fn until_x_cache(g: &Gantry, body: &str, want: &str, meanwhile: impl Fn(&Reply)) -> Reply {
    let meanwhile = &meanwhile;
    let what = format!("X-Cache {want}");
    g.until(what, Duration::from_secs(20), || async move {
        let r = post(g, body, &[]).await;
        if r.x_cache == want {
            return Ok(r);
        }
        meanwhile(&r);
        Err(r.x_cache)
    })
    .await
}

/// `GET /admin/cache`.
async fn cache_status(g: &Gantry) -> serde_json::Value {
    client()
        .get(format!("{}/admin/cache", g.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the admin API until the disk tier holds `n` entries (writes are asynchronous).
async fn until_on_disk(g: &Gantry, n: u64) {
    let what = format!("{n} entries on disk");
    g.until(what, Duration::from_secs(10), || async move {
        let entries = cache_status(g).await["disk"]["entries"].as_u64();
        if entries == Some(n) {
            Ok(())
        } else {
            Err(format!("{entries:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_cache_goes_miss_then_hit_and_json_bodies_are_normalised() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", ""))
        .start()
        .await;
    let first = post(&g, r#"{"url":"http://a.example/","mode":"fast"}"#, &[]).await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    assert_eq!(
        first.body, r#"{"n":1,"len":41}"#,
        "the body reached the backend"
    );
    let again = post(
        &g,
        "{ \"mode\": \"fast\",\n \"url\": \"http://a.example/\" }",
        &[],
    )
    .await;
    assert_eq!(again.x_cache, "HIT-L1");
    assert_eq!(again.body, first.body);
    assert_eq!(origin.hits(), 1);
    let other = post(&g, r#"{"url":"http://b.example/"}"#, &[]).await;
    assert_eq!(
        (other.x_cache.as_str(), other.body.as_str()),
        ("MISS", r#"{"n":2,"len":27}"#)
    );
    // An uncached route has no X-Cache header.
    let plain = client()
        .get(format!("{}/other", g.url))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("x-cache").is_none());
    // Counters are written as each request is logged, just after its answer:
    // wait until all four are in. Then read again: one rendering is not a
    // snapshot (gantry_pool_upstream_* is rendered before gantry_requests_*,
    // so the last request's logging can land between the two).
    g.until("four requests counted", Duration::from_secs(10), || async {
        let answered = "gantry_requests_total{code_class=\"2xx\",pool=\"analysis\"}";
        metric(&g.metrics().await, answered) == 4.0
    })
    .await;
    let m = g.metrics().await;
    // The second answer came from memory: a lookup hit, or, when it arrived
    // before the first answer's fill had finished, a wait for that fill.
    let hits = metric(&m, "gantry_cache_lookups_total{result=\"hit\",tier=\"l1\"}");
    let coalesced = metric(&m, "gantry_cache_coalesced_total");
    assert_eq!(hits + coalesced, 1.0, "{m}");
    // The scaler's request count is what reached the backend: the hit is not in it.
    let upstream = metric(&m, "gantry_pool_upstream_requests_total{pool=\"analysis\"}");
    assert_eq!(upstream, 3.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_tier_survives_a_proxy_restart_and_warms_memory() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"url":"http://a.example/"}"#;
    let mut g = Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", ""))
        .start()
        .await;
    assert_eq!(post(&g, body, &[]).await.x_cache, "MISS");
    until_on_disk(&g, 1).await;
    g.crash(); // SIGKILL

    let cold = config(&origin, dir.path(), "ttl: 60s", "");
    let cold = cold.replace("disk: {path:", "disk: {warm_entries: 0, path:");
    let mut g = Gantry::proxy(&cold).start().await;
    assert_eq!(x_caches(&g, body, &[], 2).await, ["HIT-L3", "HIT-L1"]);
    g.crash();

    // With warming (the default), the most-hit disk entries are in memory at start.
    let g = Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", ""))
        .start()
        .await;
    // Warming runs in the background.
    let g = &g;
    g.until(
        "HIT-L1 from warming",
        Duration::from_secs(10),
        || async move {
            let seen = post(g, body, &[]).await.x_cache;
            if seen == "HIT-L1" {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await;
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_a_stream_fails_no_request() {
    let origin = Origin::start().await;
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "  redis: {{url: '{}', command_timeout: 50ms, cooldown: 200ms}}\n",
        redis.url()
    );
    let g = Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", &top))
        .start()
        .await;
    let mut statuses = Vec::new();
    for i in 0..400 {
        if i == 100 {
            redis.kill();
        }
        // Every request a miss in memory, so every one asks Redis.
        statuses.push(post(&g, &format!("{{\"i\":{i}}}"), &[]).await.status);
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let m = g.metrics().await;
    assert!(
        m.contains("gantry_cache_lookups_total{result=\"bypass\",tier=\"l2\"}")
            || m.contains("gantry_cache_lookups_total{result=\"error\",tier=\"l2\"}"),
        "Redis failures were seen: {m}"
    );
    // Redis back: the circuit closes by itself.
    redis.restart();
    let mut i = 0;
    g.until("closed circuit", Duration::from_secs(10), || {
        i += 1;
        let body = format!("{{\"after\":{i}}}");
        let g = &g;
        async move {
            post(g, &body, &[]).await;
            let state = cache_status(g).await["redis_circuit"].clone();
            if state == "closed" {
                Ok(())
            } else {
                Err(state)
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_identical_misses_reach_the_backend_once() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(
        Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", ""))
            .start()
            .await,
    );
    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let g = g.clone();
        tasks.spawn(
            async move { post(&g, r#"{"url":"http://hot/"}"#, &[("x-delay-ms", "300")]).await },
        );
    }
    let mut replies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        replies.push(r.unwrap());
    }
    assert_eq!(origin.hits(), 1);
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.body == replies[0].body));
    assert_eq!(replies.iter().filter(|r| r.x_cache == "MISS").count(), 1);
    let m = g.metrics().await;
    assert!(m.contains("gantry_cache_coalesced_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_when_the_only_backend_is_down() {
    let mut origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = "ttl: 100ms, stale_if_error: 1h";
    let g = Gantry::proxy(&config(&origin, dir.path(), rules, ""))
        .start()
        .await;
    let first = post(&g, "{}", &[]).await;
    assert_eq!(first.x_cache, "MISS");
    origin.kill().await;
    tokio::time::sleep(Duration::from_millis(150)).await; // past the TTL
    let r = post(&g, "{}", &[]).await;
    assert_eq!((r.status, r.x_cache.as_str()), (200, "STALE"));
    assert_eq!(r.body, first.body);
    // Without a stale copy the failure shows.
    let r = post(&g, r#"{"never":"seen"}"#, &[]).await;
    assert!(r.status >= 500, "{}", r.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_then_the_refreshed_answer() {
    const FIRST: &str = r#"{"n":1,"len":2}"#;
    const REFRESHED: &str = r#"{"n":2,"len":2}"#;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = "ttl: 1h, stale_while_revalidate: 1h";
    let g = Gantry::proxy(&config(&origin, dir.path(), rules, ""))
        .start()
        .await;
    // The first answer is fresh for a second, the refreshed one for an hour:
    // nothing below depends on how fast this machine polls.
    origin.send_cache_control("max-age=1");
    let first = post(&g, "{}", &[]).await;
    assert_eq!(
        (first.x_cache.as_str(), first.body.as_str()),
        ("MISS", FIRST)
    );
    origin.send_cache_control("max-age=3600");
    // Fresh hits until the first answer goes stale; none reaches the backend.
    let stale = until_x_cache(&g, "{}", "STALE", |r| {
        assert_eq!((r.x_cache.as_str(), r.body.as_str()), ("HIT-L1", FIRST));
    })
    .await;
    assert_eq!(stale.body, FIRST);
    // That stale hit started the one refresh: stale hits until it lands, starting no
    // other (a lookup that read memory just before it landed may find it on disk).
    let fresh = until_x_cache(&g, "{}", "HIT-L1", |r| {
        let seen = (r.x_cache.as_str(), r.body.as_str());
        assert!(
            seen == ("STALE", FIRST) || seen == ("HIT-L3", REFRESHED),
            "{seen:?}"
        );
    })
    .await;
    assert_eq!(fresh.body, REFRESHED, "refreshed with the body forwarded");
    assert_eq!(origin.hits(), 2, "one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_via_admin_api_needs_the_token_and_reaches_every_tier() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Continues the `admin:` block the harness writes last.
    let text = format!(
        "  token: s3cret\n{}",
        config(&origin, dir.path(), "ttl: 60s", "")
    );
    let g = Gantry::proxy(&text).start().await;
    for i in 0..3 {
        assert_eq!(
            post(&g, &format!("{{\"i\":{i}}}"), &[]).await.x_cache,
            "MISS"
        );
    }
    until_on_disk(&g, 3).await;
    let purge = |body: serde_json::Value, token: Option<&str>| {
        let mut r = client()
            .post(format!("{}/admin/cache/purge", g.admin))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let denied = purge(serde_json::json!({"all": true}), None).await.unwrap();
    assert_eq!(denied.status(), 401);
    let bad = purge(
        serde_json::json!({"all": true, "prefix": "x"}),
        Some("s3cret"),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);

    let key = gantry::cache::key::KeyParts {
        method: "POST",
        pool: "analysis",
        path: "/v1/analyze",
        query: None,
        body: br#"{"i":0}"#,
    }
    .key();
    let r = purge(serde_json::json!({"key": key.to_string()}), Some("s3cret"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (report["l1"].as_u64(), report["l3"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(post(&g, r#"{"i":0}"#, &[]).await.x_cache, "MISS");
    assert_eq!(post(&g, r#"{"i":1}"#, &[]).await.x_cache, "HIT-L1");

    let r = purge(
        serde_json::json!({"prefix": "analysis:/v1/"}),
        Some("s3cret"),
    )
    .await
    .unwrap();
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["l1"].as_u64(), Some(3), "{report}");
    assert_eq!(post(&g, r#"{"i":1}"#, &[]).await.x_cache, "MISS");
    let r = purge(serde_json::json!({"all": true}), Some("s3cret"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(post(&g, r#"{"i":1}"#, &[]).await.x_cache, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_requests_that_are_never_stored() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = "ttl: 60s, max_object_bytes: 1000";
    let g = Gantry::proxy(&config(&origin, dir.path(), rules, ""))
        .start()
        .await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], [&'a str; 2]);
    let cases: [Case; 7] = [
        ("500", &[("x-status", "500")], ["MISS", "MISS"]),
        ("404", &[("x-status", "404")], ["MISS", "MISS"]),
        ("cookie", &[("x-set-cookie", "1")], ["MISS", "MISS"]),
        (
            "no-store",
            &[("x-cache-control", "no-store")],
            ["MISS", "MISS"],
        ),
        ("big", &[("x-size", "1001")], ["MISS", "MISS"]),
        (
            "auth",
            &[("authorization", "Bearer t")],
            ["BYPASS", "BYPASS"],
        ),
        ("cookie-req", &[("cookie", "a=b")], ["BYPASS", "BYPASS"]),
    ];
    for (name, headers, want) in cases {
        let before = origin.hits();
        let body = format!("{{\"case\":\"{name}\"}}");
        assert_eq!(x_caches(&g, &body, headers, 2).await, want, "{name}");
        assert_eq!(
            origin.hits() - before,
            2,
            "{name}: both reached the backend"
        );
    }
    // max-age from the response is honoured; a body at the limit is stored.
    let sized = [("x-size", "1000"), ("x-cache-control", "max-age=30")];
    assert_eq!(
        x_caches(&g, r#"{"case":"ok"}"#, &sized, 2).await,
        ["MISS", "HIT-L1"]
    );
    // A chunked request body (no length) is passed through, and still forwarded.
    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
        b"{\"a\":1}",
    ))]);
    let r = client()
        .post(format!("{}/v1/analyze", g.url))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    assert!(r.text().await.unwrap().ends_with("\"len\":7}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_warm_replays_a_file_through_the_proxy() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", ""))
        .start()
        .await;
    let file = dir.path().join("warm.jsonl");
    std::fs::write(
        &file,
        "{\"path\":\"/v1/analyze\",\"body\":{\"url\":\"http://a/\"}}\n{\"path\":\"/v1/analyze\",\"body\":{\"url\":\"http://b/\"}}\n",
    )
    .unwrap();
    let warm = || {
        let out = command()
            .args(["cache", "warm", "--proxy", &g.url])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(warm()["x_cache"], serde_json::json!({"MISS": 2}));
    assert_eq!(warm()["x_cache"], serde_json::json!({"HIT-L1": 2}));
    assert_eq!(
        post(&g, r#"{"url":"http://b/"}"#, &[]).await.x_cache,
        "HIT-L1"
    );
    std::fs::write(&file, "{\"path\":\"nope\"}\n").unwrap();
    let out = command()
        .args(["cache", "warm", "--proxy", &g.url])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warm.jsonl:1:"));
}

/// Two proxies sharing one Redis: a purge on one drops the other's memory
/// and disk copies too (the invalidation travels on a Redis channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_proxy_reaches_another_sharing_redis() {
    let origin = Origin::start().await;
    let redis = RedisServer::start();
    let top = format!("  redis: {{url: '{}'}}\n", redis.url());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |dir: &std::path::Path| {
        let text = format!(
            "  token: s3cret\n{}",
            config(&origin, dir, "ttl: 60s", &top)
        );
        async move { Gantry::proxy(&text).start().await }
    };
    let (a, b) = (start(dir_a.path()).await, start(dir_b.path()).await);
    for g in [&a, &b] {
        g.until("subscribed to purges", Duration::from_secs(10), || async {
            let m = g.metrics().await;
            (metric(&m, "gantry_cache_invalidations_subscribed ") == 1.0).then_some(())
        })
        .await;
    }
    let body = r#"{"url":"http://bad-verdict.example/"}"#;
    assert_eq!(post(&a, body, &[]).await.x_cache, "MISS");
    // B holds a copy in memory (from Redis, or its own miss if it asked
    // before A's write landed there).
    let first = b
        .until("a copy in B's memory", Duration::from_secs(10), || async {
            let r = post(&b, body, &[]).await;
            (r.x_cache == "HIT-L1").then_some(r)
        })
        .await;
    let before = origin.hits();
    let purged = client()
        .post(format!("{}/admin/cache/purge", a.admin))
        .bearer_auth("s3cret")
        .json(&serde_json::json!({"prefix": "analysis:"}))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    // B drops its own copy: its next answer comes from the backend again.
    let again = b
        .until("B's copy purged", Duration::from_secs(10), || async {
            let r = post(&b, body, &[]).await;
            (r.x_cache == "MISS").then_some(r)
        })
        .await;
    assert_ne!(again.body, first.body, "answered anew by the backend");
    assert_eq!(origin.hits(), before + 1);
}

/// `gantry cache purge` finds the token the proxy generated and purges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_purge_command_uses_the_generated_token() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", ""))
        .start()
        .await;
    assert_eq!(post(&g, r#"{"i":1}"#, &[]).await.x_cache, "MISS");
    assert_eq!(post(&g, r#"{"i":1}"#, &[]).await.x_cache, "HIT-L1");
    let out = command()
        .args([
            "cache",
            "purge",
            "--prefix",
            "analysis:",
            "--admin",
            &g.admin,
        ])
        .env_remove("GANTRY_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["l1"], 1, "{report}");
    assert_eq!(post(&g, r#"{"i":1}"#, &[]).await.x_cache, "MISS");
    let nothing = command()
        .args(["cache", "purge", "--admin", &g.admin])
        .output()
        .unwrap();
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("--key, --prefix or --all"));
}

/// A CA and a server certificate for 127.0.0.1, made with `openssl` in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
fn test_certificates(dir: &std::path::Path) {
    use std::process::Command;
    let run = |args: &[&str]| {
        crate::support::sh(Command::new("openssl").args(args).current_dir(dir));
    };
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let ca = "-keyout ca.key -out ca.pem -days 2 -subj /CN=gantry-test-ca";
    let mut args = vec!["req", "-x509", "-newkey", "rsa:2048", "-nodes"];
    args.extend(ca.split(' '));
    run(&args);
    let csr = "-keyout server.key -out server.csr -subj /CN=127.0.0.1";
    let mut args = vec!["req", "-newkey", "rsa:2048", "-nodes"];
    args.extend(csr.split(' '));
    run(&args);
    let sign = "-in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext";
    let mut args = vec!["x509", "-req"];
    args.extend(sign.split(' '));
    run(&args);
}

/// Keys in a TLS Redis, asked with `redis-cli` as user `gantry`.
fn tls_dbsize(port: u16, certs: &std::path::Path, password: &str) -> u64 {
    let out = crate::support::sh(
        std::process::Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(certs.join("ca.pem"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "--user",
                "gantry",
                "--pass",
                password,
                "--no-auth-warning",
                "DBSIZE",
            ]),
    );
    out.trim().parse().unwrap_or(0)
}

/// L2 over TLS with an ACL user whose password comes from the environment:
/// entries reach Redis, and the password is in no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_an_acl_user_and_a_password_from_the_environment() {
    const PASSWORD: &str = "s3cret-redis-pw";
    let certs = tempfile::tempdir().unwrap();
    test_certificates(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let args = [
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "no",
        "--user",
        "default",
        "off",
        "--user",
        "gantry",
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ];
    let redis = RedisServer::start_with(args.iter().map(|a| a.to_string()).collect(), true);
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "  redis: {{url: 'rediss://127.0.0.1:{}', username: gantry, password_env: GANTRY_TEST_REDIS_PASSWORD, tls: {{ca_file: '{}'}}}}\n",
        redis.port,
        file("ca.pem"),
    );
    let g = Gantry::proxy(&config(&origin, dir.path(), "ttl: 60s", &top))
        .env("GANTRY_TEST_REDIS_PASSWORD", PASSWORD)
        .start()
        .await;
    g.until(
        "subscribed to purges over TLS",
        Duration::from_secs(10),
        || async {
            let m = g.metrics().await;
            (metric(&m, "gantry_cache_invalidations_subscribed ") == 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        post(&g, r#"{"url":"http://tls.example/"}"#, &[])
            .await
            .x_cache,
        "MISS"
    );
    let port = redis.port;
    let certs_dir = certs.path().to_path_buf();
    g.until("the entry in Redis", Duration::from_secs(10), || {
        let certs_dir = certs_dir.clone();
        async move { tls_dbsize(port, &certs_dir, PASSWORD) >= 1 }
    })
    .await;
    assert!(!g.log().contains(PASSWORD), "the password is never logged");
}
