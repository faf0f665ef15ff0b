//! What a new user meets first, through the real `gantry up`: the first request
//! is answered, a worker that cannot start is backed off and says why, SIGTERM
//! loses no request and leaves no worker behind, errors say their cause once.

use std::time::Duration;

use crate::support::gantry::command;
use crate::support::{alive, client, fake_worker, free_port, Gantry};

/// Pool `fr` of local fake workers that take `start_ms` to listen and answer after `delay_ms`.
fn config(start_ms: u32, delay_ms: u32) -> String {
    format!(
        "pools:\n  fr:\n    health: {{interval: 200ms}}\n    drain_timeout: 10s\nroutes:\n  - {{prefix: /, pool: fr, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    program: '{}'\n    args: [--listen, '127.0.0.1:{{port}}']\n    env: {{FAKE_START_DELAY_MS: '{start_ms}', FAKE_DELAY_MS: '{delay_ms}', FAKE_EXIT_WITH_PARENT: '1'}}\n",
        fake_worker().display()
    )
}

const POLICY: &str = "pool: fr\nmin: 2\nmax: 2\ninterval: 500ms\nwindow: 2s\nmetrics: [{metric: inflight_per_replica, target: 4}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_as_the_port_opens_is_answered_not_503() {
    // Workers take 1.5 s to listen: the port opens long before any is ready.
    let up = Gantry::up(&config(1500, 5))
        .policy("fr.yaml", POLICY)
        .spawn();
    let addr = up.url.trim_start_matches("http://").to_string();
    up.until("open traffic port", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(addr).await.ok() }
    })
    .await;
    let r = client()
        .post(format!("{}/v1/analyze", up.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", up.tail());
    assert!(
        up.log().contains("Replica ready"),
        "answered before a replica was ready?\n{}",
        up.tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_exits_at_once_is_backed_off_and_says_why() {
    let config = "pools:\n  fr: {health: {interval: 200ms}}\nroutes:\n  - {prefix: /, pool: fr}\nscaler:\n  policies: '{dir}/policies'\n  runtime: local\n  local:\n    program: /bin/sh\n    args: [-c, 'echo \"error: no model at /nowhere\" >&2; exit 3']\n";
    let up = Gantry::up(config).policy("fr.yaml", POLICY).start().await;
    let starts = up
        .until("three failed starts", Duration::from_secs(60), || async {
            let j: serde_json::Value = client()
                .get(format!("{}/admin/scaler", up.admin))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let s = j["fr"]["starts"].clone();
            (s["failures_in_a_row"].as_u64()? >= 3).then_some(s)
        })
        .await;
    let error = starts["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exit status: 3") && error.contains("error: no model at /nowhere"),
        "{starts}"
    );
    let metrics = up.metrics().await;
    assert!(
        metrics.contains("gantry_scaler_start_failures_total{pool=\"fr\"}"),
        "no start-failure metric"
    );
    // Backing off: the scaler did not start a process per evaluation.
    let started = up.log().matches("Replica started").count() as u64;
    let failed = starts["failures_total"].as_u64().unwrap();
    assert!(
        started <= failed + 2,
        "{started} starts for {failed} failures"
    );
    let out = command()
        .args(["status", "--admin", &up.admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILING") && text.contains("error: no model at /nowhere"),
        "{text}"
    );
    // The proxy does not hold requests for a failing pool: it answers now.
    let r = client().get(format!("{}/", up.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_leaves_no_worker() {
    let mut up = Gantry::up(&config(0, 1500))
        .policy("fr.yaml", POLICY)
        .start()
        .await;
    up.wait_up("fr", 2, 30).await;
    let workers = up.children("fake");
    assert_eq!(workers.len(), 2, "{workers:?}");
    let requests: Vec<_> = (0..4)
        .map(|i| {
            let url = format!("{}/slow/{i}", up.url);
            tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    let admin = up.admin.clone();
    up.until("4 requests in flight", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move {
            let m = client()
                .get(format!("{admin}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            m.lines()
                .any(|l| l.starts_with("gantry_active_connections ") && l.ends_with(" 4"))
                .then_some(())
        }
    })
    .await;
    up.signal(sysinfo::Signal::Term);
    for r in requests {
        let status = r.await.unwrap().expect("request in flight failed");
        assert_eq!(status, 200);
    }
    let status = up.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", up.tail());
    for pid in workers {
        assert!(!alive(pid), "worker {pid} outlived gantry up");
    }
}

#[test]
fn status_with_nothing_running_says_the_cause_once() {
    let admin = format!("http://127.0.0.1:{}", free_port());
    let out = command()
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches(&admin).count(), 1, "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}
