//! The generator against an in-process server with known behaviour, over in-memory connections on tokio's paused clock: counts, percentiles, the open-loop correction, unsent requests, a stress breaking point.
//!
//! Every latency here is the server's injected delay in virtual time, so
//! percentiles are compared with the injected distribution to the
//! histogram's precision, and nothing depends on how fast the machine is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::driver::{Connecting, Connector, Io};
use super::findings::Breaking;
use super::mix::{Bodies, MixSpec};
use super::observe::Sources;
use super::plan::{Model, Stage};
use super::report::Report;
use super::scenario::{Kind, Plan};
use super::{execute, Setup};

/// What the server does with its `n`-th request (from 0), given how many are in flight (this one included).
type Behaviour = Arc<dyn Fn(u64, u64) -> Answer + Send + Sync>;

#[derive(Clone, Default)]
struct Answer {
    delay: Duration,
    status: u16,
    cache: Option<&'static str>,
}

fn ok_after(ms: u64) -> Answer {
    Answer {
        delay: Duration::from_millis(ms),
        status: 200,
        cache: None,
    }
}

/// An in-process server: every connection is an in-memory pipe served by hyper.
struct Server {
    seen: Arc<AtomicU64>,
    connector: Connector,
}

fn server(behaviour: Behaviour) -> Server {
    let seen = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let connector = Connector::from_fn(move || {
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        let (b, seen, in_flight) = (behaviour.clone(), s.clone(), in_flight.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let (b, seen, in_flight) = (b.clone(), seen.clone(), in_flight.clone());
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    let a = b(n, now);
                    tokio::time::sleep(a.delay).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let mut r = hyper::Response::builder().status(a.status);
                    if let Some(c) = a.cache {
                        r = r.header("x-cache", c);
                    }
                    Ok::<_, std::convert::Infallible>(
                        r.body(Full::new(Bytes::from_static(b"{}"))).unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_end), svc)
                .await;
        });
        Box::pin(async move { Ok(Box::new(client) as Box<dyn Io>) }) as Connecting
    });
    Server { seen, connector }
}

fn plan(model: Model, stages: Vec<Stage>) -> Plan {
    Plan {
        name: "test".into(),
        kind: Kind::Load,
        model,
        stages,
        mix: MixSpec {
            bodies: Bodies::Generated(10),
            ..MixSpec::default()
        },
        slo: None,
        stop_on_break: false,
    }
}

async fn run(server: &Server, plan: Plan, connections: usize, limit: Option<u64>) -> Report {
    execute(Setup {
        plan,
        target: "http://test".into(),
        connector: server.connector.clone(),
        host: "test".into(),
        connections,
        timeout: Duration::from_secs(10),
        limit,
        seed: 1,
        sources: Sources::default(),
        progress: false,
        interrupt: false,
        breaking: Breaking {
            error_percent: 0.1,
            p99_ms: 25.0,
        },
    })
    .await
    .unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn closed_loop_counts_are_exact() {
    let s = server(Arc::new(|n, _| Answer {
        status: if n % 10 == 9 {
            503
        } else if n % 25 == 24 {
            404
        } else {
            200
        },
        cache: Some(if n % 2 == 0 { "HIT-L1" } else { "MISS" }),
        ..ok_after(1)
    }));
    let r = run(
        &s,
        plan(Model::Closed, vec![Stage::steady("s", secs(3600), 4.0)]),
        0,
        Some(1000),
    )
    .await;
    assert_eq!(s.seen.load(Ordering::SeqCst), 1000);
    let c = &r.counts;
    // 100 of n % 10 == 9; 40 of n % 25 == 24, of which 20 are also n % 10 == 9 (n % 50 == 49).
    assert_eq!(
        (c.requests, c.errors.status_5xx, c.errors.status_4xx, c.ok),
        (1000, 100, 20, 880)
    );
    assert_eq!((c.cache["HIT-L1"], c.cache["MISS"]), (500, 500));
    assert_eq!(c.cache_hit_percent, Some(50.0));
    assert_eq!(r.timeline.iter().map(|s| s.requests).sum::<u64>(), 1000);
    assert_eq!(r.max_in_flight, 4);
}

#[tokio::test(start_paused = true)]
async fn percentiles_match_an_injected_distribution() {
    // One user, so nothing queues: request n takes (n % 100 + 1) ms, uniform over 1..=100 ms.
    let s = server(Arc::new(|n, _| ok_after(n % 100 + 1)));
    let r = run(
        &s,
        plan(Model::Closed, vec![Stage::steady("s", secs(36_000), 1.0)]),
        0,
        Some(10_000),
    )
    .await;
    let l = &r.latency;
    // Three significant figures: within 0.1 % of the value, plus the histogram's 1 µs floor.
    for (got, want) in [
        (l.p50_ms, 50.0),
        (l.p90_ms, 90.0),
        (l.p95_ms, 95.0),
        (l.p99_ms, 99.0),
        (l.max_ms, 100.0),
        (l.min_ms, 1.0),
    ] {
        assert!(
            (got - want).abs() <= want * 0.001 + 0.002,
            "got {got}, want {want}"
        );
    }
    assert!((l.mean_ms - 50.5).abs() < 0.05, "{}", l.mean_ms);
}

#[tokio::test(start_paused = true)]
async fn the_open_loop_counts_a_stall_against_every_request_due_during_it() {
    // 100 req/s for 10 s on one connection; the 300th request stalls the server for 2 s.
    let stall = |n, _| ok_after(if n == 299 { 2000 } else { 0 });
    let open = server(Arc::new(stall));
    let r = run(
        &open,
        plan(Model::Open, vec![Stage::steady("s", secs(10), 100.0)]),
        1,
        None,
    )
    .await;
    assert_eq!(
        (r.counts.requests, r.counts.ok, r.counts.errors.unsent),
        (1000, 1000, 0)
    );
    // The ~200 requests due during the stall waited for it: from 2 s down to 0,
    // so about 10 % waited over a second and p99 is near 1.8 s.
    assert!(
        r.latency.p90_ms > 900.0 && r.latency.p90_ms < 1100.0,
        "{:?}",
        r.latency
    );
    assert!(r.latency.p99_ms > 1700.0, "{:?}", r.latency);
    // The same stall seen by a closed loop hides behind one slow request.
    let closed = server(Arc::new(stall));
    let r = run(
        &closed,
        plan(Model::Closed, vec![Stage::steady("s", secs(3600), 1.0)]),
        0,
        Some(1000),
    )
    .await;
    assert!(r.latency.p99_ms < 1.0, "{:?}", r.latency);
    assert!(r.latency.max_ms >= 2000.0);
}

#[tokio::test(start_paused = true)]
async fn requests_no_connection_could_send_are_counted_unsent() {
    // Every answer takes 5 s; 200 requests are due in 2 s on one connection, which
    // may keep sending until one timeout (10 s) after the end: it sends at 0, 5 and 10 s.
    let s = server(Arc::new(|_, _| ok_after(5000)));
    let r = run(
        &s,
        plan(Model::Open, vec![Stage::steady("s", secs(2), 100.0)]),
        1,
        None,
    )
    .await;
    assert_eq!(s.seen.load(Ordering::SeqCst), 3);
    assert_eq!(
        (r.counts.requests, r.counts.ok, r.counts.errors.unsent),
        (200, 3, 197)
    );
    assert!((r.counts.error_percent - 98.5).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn stress_stops_at_the_first_step_over_the_p99_limit() {
    // The server takes 10 ms per request in flight: 1 user 10 ms, 2 users 20 ms, 3 users 30 ms (> 25 ms).
    let s = server(Arc::new(|_, in_flight| ok_after(10 * in_flight)));
    let steps = (1..=5)
        .map(|i| Stage::steady(&format!("step {i}"), secs(10), f64::from(i)))
        .collect();
    let mut p = plan(Model::Closed, steps);
    p.stop_on_break = true;
    let r = run(&s, p, 0, None).await;
    let f = &r.findings;
    let (stage, why) = f.breaking_stage.clone().unwrap();
    assert_eq!((stage, f.last_good_stage), (2, Some(1)));
    assert!(why.starts_with("p99 30.0"), "{why}");
    assert_eq!(r.stages[4].counts.requests, 0);
}

#[tokio::test(start_paused = true)]
async fn a_report_round_trips_through_json() {
    let s = server(Arc::new(|n, _| Answer {
        cache: Some("HIT-L2"),
        ..ok_after(n % 7)
    }));
    let stages = vec![
        Stage::ramp("up", secs(2), 0.0, 50.0),
        Stage::steady("hold", secs(2), 50.0),
    ];
    let mut r = run(&s, plan(Model::Open, stages), 4, None).await;
    r.slo = super::slo::Slo::seed().check(&r);
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(r.counts.requests, 150);
    let html = super::html::render(&r);
    assert!(html.contains("id=\"chart-latency\"") && html.contains("id=\"chart-cache\""));
}
