//! Failure handling through the real proxy: backend death, retries, draining, limits, config errors, metrics.

use std::time::Duration;

use crate::support::backend::{backends_yaml, Backend, Behaviour};
use crate::support::gantry::command;
use crate::support::load::load;
use crate::support::{client, metric, until, Gantry};

fn config(policy: &str, backends: &str, extra: &str) -> String {
    format!(
        "pools:\n  p:\n    policy: {policy}\n    health: {{interval: 100ms, rise: 2, fall: 2}}\n{extra}    backends:\n{backends}routes:\n  - {{prefix: /, pool: p, idempotent: true}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_costs_no_client_request_and_comes_back() {
    let mut a = Backend::start(
        "a",
        Behaviour {
            delay: Duration::from_millis(5),
            status: None,
            retry_after: None,
        },
    )
    .await;
    let b = Backend::start(
        "b",
        Behaviour {
            delay: Duration::from_millis(5),
            status: None,
            retry_after: None,
        },
    )
    .await;
    // Requests cut off by the kill may eject `a` before it is marked down: its
    // ejection (10 s by default) must end well within the wait for it below.
    let g = Gantry::proxy(&config(
        "round_robin",
        &backends_yaml(&[(&a, 1), (&b, 1)]),
        "    outlier: {base_ejection: 1s}\n",
    ))
    .start()
    .await;
    let url = format!("{}/x", g.url);
    let stream = tokio::spawn({
        let url = url.clone();
        async move { load(&url, 600, 6).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().await;
    let (results, _) = stream.await.unwrap();
    let failed: Vec<_> = results.iter().filter(|r| *r != &Ok(200)).collect();
    assert!(
        failed.is_empty(),
        "{} of 600 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    g.wait_state("p", a.addr, Some("down")).await;
    let before = a.hits();
    // POSTs on an idempotent route are retried too.
    let c = client();
    for _ in 0..10 {
        let r = c.post(&url).body("{\"url\":\"x\"}").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    a.restart().await;
    g.wait_state("p", a.addr, Some("up")).await;
    let (results, counts) = load(&url, 40, 2).await;
    assert!(results.iter().all(|r| r == &Ok(200)));
    assert!(
        counts.get("a").copied().unwrap_or(0) >= 10 && a.hits() > before,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backend_finishes_in_flight_and_added_one_takes_over() {
    let a = Backend::start("a", Behaviour::default()).await;
    // `a` answers the slow request only once it has been removed and `b` took over.
    let held = a.hold();
    let b = Backend::start("b", Behaviour::default()).await;
    let g = Gantry::proxy(&config("round_robin", &backends_yaml(&[(&a, 1)]), ""))
        .start()
        .await;
    let c = client();
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), format!("{}/slow", g.url));
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let a_ref = &a;
    until(
        "the slow request at a",
        Duration::from_secs(10),
        || async move { a_ref.hits() == 1 },
    )
    .await;
    let token = g.admin_token();
    let anonymous = c
        .post(format!("{}/admin/pools/p/backends", g.admin))
        .json(&serde_json::json!({"addr": b.addr.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "mutations need the token by default"
    );
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    let added = c
        .post(format!("{}/admin/pools/p/backends", g.admin))
        .bearer_auth(&token)
        .json(&serde_json::json!({"addr": b.addr.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    g.wait_state("p", b.addr, Some("up")).await;
    let removed = c
        .delete(format!("{}/admin/pools/p/backends/{}", g.admin, a.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 202);
    assert_eq!(
        g.backend_state("p", a.addr).await.as_deref(),
        Some("draining")
    );
    let (results, counts) = load(&format!("{}/x", g.url), 20, 4).await;
    assert!(results.iter().all(|r| r == &Ok(200)));
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
    drop(held);
    assert_eq!(slow.await.unwrap(), (200, "a 0".to_string()));
    g.wait_state("p", a.addr, None).await;
    // Bad admin input gets a 4xx with a message.
    let bad = c
        .post(format!("{}/admin/pools/p/backends", g.admin))
        .bearer_auth(&token)
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = c
        .delete(format!("{}/admin/pools/nope/backends/{}", g.admin, b.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("no pool named `nope`"));
}

/// Regression: a worker's queue-full `503` + `Retry-After` counted as a
/// failure, so a spike ejected the busiest workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shedding_backend_is_retried_elsewhere_and_never_ejected() {
    let shedding = Backend::start(
        "shedding",
        Behaviour {
            delay: Duration::ZERO,
            status: Some(503),
            retry_after: Some(1),
        },
    )
    .await;
    let fine = Backend::start("fine", Behaviour::default()).await;
    let g = Gantry::proxy(&config(
        "round_robin",
        &backends_yaml(&[(&shedding, 1), (&fine, 1)]),
        "",
    ))
    .start()
    .await;
    let (results, _) = load(&format!("{}/x", g.url), 60, 3).await;
    let failed = results.iter().filter(|r| *r != &Ok(200)).count();
    assert_eq!(
        failed, 0,
        "every shed request is answered by the other backend"
    );
    assert!(shedding.hits() > 0, "round robin sent requests to it");
    assert_eq!(
        g.backend_state("p", shedding.addr).await.as_deref(),
        Some("up"),
        "shedding is load, not failure"
    );
    let m = g.metrics().await;
    let addr = shedding.addr;
    let shed = metric(
        &m,
        &format!(
            "gantry_upstream_requests_total{{backend=\"{addr}\",outcome=\"shed\",pool=\"p\"}}"
        ),
    );
    assert_eq!(shed, shedding.hits() as f64, "{m}");
    let ejected = format!("gantry_ejections_total{{backend=\"{addr}\",pool=\"p\"}}");
    assert_eq!(metric(&m, &ejected), 0.0, "{m}");
}

/// Regression (found by `make test-faults`): a request a hung backend held got
/// a 504 although the pool had a healthy backend; on an idempotent route it
/// goes to the other one. Alone, the hung backend still answers 504 (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_hung_backend_holds_is_retried_elsewhere() {
    let hung = Backend::start(
        "hung",
        Behaviour {
            delay: Duration::from_secs(30),
            status: None,
            retry_after: None,
        },
    )
    .await;
    let fine = Backend::start("fine", Behaviour::default()).await;
    let g = Gantry::proxy(&config(
        "round_robin",
        &backends_yaml(&[(&hung, 1), (&fine, 1)]),
        "    timeouts: {read: 300ms}\n",
    ))
    .start()
    .await;
    let c = client();
    for _ in 0..4 {
        let r = c
            .post(format!("{}/x", g.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(hung.hits() > 0, "round robin sent requests to it");
    let retries = metric(&g.metrics().await, "gantry_retries_total{pool=\"p\"}");
    assert_eq!(retries, hung.hits() as f64);
}

/// Regression: clients hanging up with requests in flight were counted as
/// backend errors, retried on other backends, and ejected healthy ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_not_the_backends_fault() {
    let slow = Behaviour {
        delay: Duration::from_millis(400),
        ..Behaviour::default()
    };
    let (a, b) = (
        Backend::start("a", slow.clone()).await,
        Backend::start("b", slow).await,
    );
    let g = Gantry::proxy(&config(
        "round_robin",
        &backends_yaml(&[(&a, 1), (&b, 1)]),
        "    outlier: {consecutive_failures: 2}\n",
    ))
    .start()
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    for i in 0..8 {
        let r = impatient.get(format!("{}/x/{i}", g.url)).send().await;
        assert!(r.is_err(), "the client gives up first");
    }
    g.until(
        "requests in flight finished",
        Duration::from_secs(10),
        || async {
            let m = g.metrics().await;
            (metric(&m, "gantry_active_connections ") == 0.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        a.hits() + b.hits(),
        8,
        "no request was sent to a second backend"
    );
    let m = g.metrics().await;
    assert_eq!(metric(&m, "gantry_retries_total{pool=\"p\"}"), 0.0, "{m}");
    for backend in [&a, &b] {
        assert_eq!(
            g.backend_state("p", backend.addr).await.as_deref(),
            Some("up")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_errors_have_their_status_and_message() {
    let slow = Backend::start(
        "slow",
        Behaviour {
            delay: Duration::from_secs(2),
            status: None,
            retry_after: None,
        },
    )
    .await;
    let ok = Backend::start("ok", Behaviour::default()).await;
    let yaml = format!(
        "pools:\n  small:\n    max_body_bytes: 100\n    backends:\n{}  slow:\n    timeouts: {{read: 300ms}}\n    backends:\n{}  empty: {{}}\nroutes:\n  - {{prefix: /small, pool: small}}\n  - {{prefix: /slow, pool: slow}}\n  - {{prefix: /empty, pool: empty}}\n",
        backends_yaml(&[(&ok, 1)]),
        backends_yaml(&[(&slow, 1)]),
    );
    let g = Gantry::proxy(&yaml).start().await;
    let c = client();
    let r = c
        .post(format!("{}/small", g.url))
        .body(vec![b'x'; 101])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("larger than 100 bytes"));
    let r = c
        .post(format!("{}/small", g.url))
        .body(vec![b'x'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Chunked body without a length is counted as it streams.
    let chunks = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(vec![b'y'; 80]),
        Ok(vec![b'y'; 80]),
    ]);
    let r = c
        .post(format!("{}/small", g.url))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("a chunked over-limit body gets an answer, not a reset");
    assert_eq!(r.status(), 413, "chunked over-limit body not refused");
    assert!(r.text().await.unwrap().contains("request body too large"));
    let r = c.get(format!("{}/empty", g.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("no healthy backend in pool empty"));
    let r = c.get(format!("{}/slow", g.url)).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let r = c
        .get(format!("{}/nothing-routes-here", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Request heads past the limits get 431 with a message, as nginx and HAProxy do.
    let r = c
        .get(format!("{}/small", g.url))
        .header("x-big", "a".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("request head larger than 32768 bytes"));
    let mut many = c.get(format!("{}/small", g.url));
    for i in 0..101 {
        many = many.header(format!("x-h{i}"), "1");
    }
    let r = many.send().await.unwrap();
    assert_eq!(r.status(), 431);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("more than 100 request headers"));
    let r = c
        .get(format!("{}/small", g.url))
        .header("x-fine", "a".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 431, "a 16 KiB header is within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_traffic() {
    let a = Backend::start("a", Behaviour::default()).await;
    let bad = Backend::start(
        "bad",
        Behaviour {
            delay: Duration::ZERO,
            status: Some(500),
            retry_after: None,
        },
    )
    .await;
    let g = Gantry::proxy(&config(
        "round_robin",
        &backends_yaml(&[(&a, 1), (&bad, 1)]),
        "",
    ))
    .start()
    .await;
    // One at a time: with two in flight a sixth request can reach `bad` while
    // the fifth failure is being recorded.
    let (results, _) = load(&format!("{}/x", g.url), 20, 1).await;
    // Five consecutive 5xx eject `bad` (default outlier settings); `a` takes the rest.
    assert_eq!(results.iter().filter(|r| *r == &Ok(500)).count(), 5);
    // Counters are written as each request is logged, just after its answer.
    // Read again once all twenty are in: one rendering is not a snapshot (the
    // last request's logging can land between two metric families).
    g.until(
        "twenty requests counted",
        Duration::from_secs(10),
        || async {
            // A request's answer is counted last in its logging.
            let m = g.metrics().await;
            let answered: f64 = m
                .lines()
                .filter(|l| l.starts_with("gantry_requests_total{") && l.contains("pool=\"p\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            answered == 20.0
        },
    )
    .await;
    let m = g.metrics().await;
    let line = |prefix: &str| {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{m}"))
            .to_string()
    };
    assert!(line("gantry_requests_total{code_class=\"2xx\",pool=\"p\"}").ends_with(" 15"));
    assert!(line("gantry_requests_total{code_class=\"5xx\",pool=\"p\"}").ends_with(" 5"));
    assert!(line("gantry_request_duration_seconds_count{pool=\"p\"}").ends_with(" 20"));
    let ok = format!(
        "gantry_upstream_requests_total{{backend=\"{}\",outcome=\"ok\",pool=\"p\"}}",
        a.addr
    );
    assert!(line(&ok).ends_with(" 15"));
    let e5 = format!(
        "gantry_upstream_requests_total{{backend=\"{}\",outcome=\"http_5xx\",pool=\"p\"}}",
        bad.addr
    );
    assert!(line(&e5).ends_with(" 5"));
    assert!(line(&format!(
        "gantry_backend_up{{backend=\"{}\",pool=\"p\"}}",
        a.addr
    ))
    .ends_with(" 1"));
    assert!(line(&format!(
        "gantry_backend_inflight{{backend=\"{}\",pool=\"p\"}}",
        a.addr
    ))
    .ends_with(" 0"));
    assert!(
        line("gantry_ejections_total").ends_with(" 1"),
        "{}",
        line("gantry_ejections_total")
    );
    for name in [
        "gantry_active_connections",
        "gantry_retries_total",
        "gantry_host_cpu_percent",
        "gantry_host_memory_percent",
        "gantry_host_disk_percent",
        "gantry_host_network_bytes_total",
    ] {
        assert!(m.contains(name), "missing {name}");
    }
}

/// Runs `gantry proxy` on a file holding `yaml`; returns the exit code and stderr.
fn proxy_with(path: &std::path::Path, yaml: &str) -> (Option<i32>, String) {
    std::fs::write(path, yaml).unwrap();
    let out = command()
        .args(["proxy", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_is_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let (code, err) = proxy_with(
        &path,
        "pools:\n  p:\n    backends:\n      - addr: 127.0.0.1:1\n        weight: 0\nroutes:\n  - prefix: /\n    pool: q\n",
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bad.yaml:5:9: pools.p.backends[0].weight: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:8:5: routes[0].pool: no pool named `q`"),
        "{err}"
    );
    let (code, err) = proxy_with(&path, "pools:\n  p:\n    policy: fastest\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bad.yaml:3:13: pools.p.policy: unknown variant `fastest`"),
        "{err}"
    );
    // An admin API on the network without a configured token is refused.
    let (code, err) = proxy_with(&path, "admin:\n  listen: 0.0.0.0:9\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bad.yaml:2:3: admin.listen: a non-loopback admin address needs"),
        "{err}"
    );
}

/// Regression: the backend lease ended when the response headers arrived, so
/// a response still streaming its body counted as nothing in flight (for
/// least-connections, P2C, the scaler's in-flight metric and draining).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_still_streaming_counts_as_in_flight() {
    let a = Backend::start("a", Behaviour::default()).await;
    let g = Gantry::proxy(&config("round_robin", &backends_yaml(&[(&a, 1)]), ""))
        .start()
        .await;
    let inflight = || async {
        let pools = g.pools().await.expect("GET /admin/pools");
        pools[0]["backends"][0]["inflight"].as_u64()
    };
    let held = a.hold_bodies();
    let resp = client()
        .get(format!("{}/stream", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "headers arrived");
    assert_eq!(inflight().await, Some(1), "the body is still on its way");
    drop(held);
    assert_eq!(resp.text().await.unwrap(), "a 0");
    g.until("the lease ended", Duration::from_secs(10), || async {
        (inflight().await == Some(0)).then_some(())
    })
    .await;
}
