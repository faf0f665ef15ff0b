//! The scaler with local processes through the real `gantry up`: grow under load, spread, shrink, replace, hot reload, scale from zero.

use std::time::{Duration, Instant};

use crate::support::gantry::command;
use crate::support::load::Load;
use crate::support::{client, fake_worker, root, signal, Gantry};

/// A pool `pool` scaled by local fake workers answering after `delay_ms`.
fn config(pool: &str, delay_ms: u32) -> String {
    format!(
        "pools:\n  {pool}:\n    health: {{interval: 200ms}}\n    drain_timeout: 5s\nroutes:\n  - {{prefix: /, pool: {pool}, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    program: '{}'\n    args: [--listen, '127.0.0.1:{{port}}']\n    env: {{FAKE_DELAY_MS: '{delay_ms}', FAKE_EXIT_WITH_PARENT: '1'}}\n",
        fake_worker().display()
    )
}

fn policy(pool: &str, extra: &str) -> String {
    format!(
        "pool: {pool}\ninterval: 500ms\nwindow: 2s\nmetrics: [{{metric: inflight_per_replica, target: 2}}]\nscale_up: {{max_step: 3, period: 1s}}\nscale_down: {{stabilization: 3s, cooldown: 0s, max_step: 3, period: 1s}}\n{extra}"
    )
}

/// Pids of the workers `gantry up` started.
fn workers(up: &Gantry) -> Vec<u32> {
    up.children("fake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_pool_grows_under_load_spreads_and_shrinks_to_min() {
    let up = Gantry::up(&config("lp", 100))
        .policy("lp.yaml", &policy("lp", "min: 1\nmax: 3\n"))
        .start()
        .await;
    up.wait_up("lp", 1, 20).await;
    let load = Load::start(
        &format!("{}/v1/analyze", up.url),
        8,
        "{\"url\":\"http://x.example/\"}",
    );
    up.wait_up("lp", 3, 30).await;
    let before = up.served("lp").await;
    up.wait_spread("lp", 3, &before, Duration::from_secs(30))
        .await;
    let report = load.stop().await;
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    up.wait_up("lp", 1, 30).await;
    up.assert_shrank_after_stabilizing("lp").await;
    let log = up.log();
    assert!(
        log.contains("lp 1 -> 3: in-flight per replica")
            || log.contains("lp 1 -> 2: in-flight per replica"),
        "{}",
        up.tail()
    );
    assert!(log.contains("-> 1: in-flight per replica"), "{}", up.tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_local_worker_is_replaced_and_workers_end_with_gantry() {
    let mut up = Gantry::up(&config("ld", 5))
        .policy("ld.yaml", &policy("ld", "min: 2\nmax: 3\n"))
        .start()
        .await;
    up.wait_up("ld", 2, 20).await;
    let pids = workers(&up);
    assert_eq!(pids.len(), 2, "{pids:?}");
    signal(pids[0], sysinfo::Signal::Kill);
    let (up_ref, killed) = (&up, pids[0]);
    up.until("replacement", Duration::from_secs(10), || async move {
        let now = workers(up_ref);
        if now.len() == 2 && !now.contains(&killed) && up_ref.count_up("ld").await == 2 {
            Ok(())
        } else {
            Err(format!("workers {now:?}"))
        }
    })
    .await;
    assert!(up.log().contains("Replica died"), "{}", up.tail());
    let last = workers(&up);
    up.terminate();
    let mut sys = sysinfo::System::new();
    std::thread::sleep(Duration::from_millis(500));
    sys.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
    for pid in last {
        let p = sys.process(sysinfo::Pid::from_u32(pid));
        let alive = p.is_some_and(|p| p.status() != sysinfo::ProcessStatus::Zombie);
        assert!(
            !alive,
            "worker {pid} outlived gantry: {:?}\n{}",
            p.map(|p| (p.status(), p.parent())),
            up.tail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_valid_edits_and_keeps_the_policy_on_invalid_ones() {
    let up = Gantry::up(&config("hr", 5))
        .policy("hr.yaml", &policy("hr", "min: 1\nmax: 3\n"))
        .start()
        .await;
    up.wait_up("hr", 1, 20).await;
    std::fs::write(up.policy_path("hr.yaml"), policy("hr", "min: 2\nmax: 3\n")).unwrap();
    up.wait_up("hr", 2, 30).await;
    assert!(up.log().contains("Policy applied"), "{}", up.tail());
    std::fs::write(up.policy_path("hr.yaml"), policy("hr", "min: 5\nmax: 3\n")).unwrap();
    // The error names file, line, column and field (an editor's half-written
    // file may be reported first; that too leaves the old policy in force).
    let want = "hr.yaml:7:1: min: must be at most max (3)";
    let up_ref = &up;
    up.until(
        "report of the invalid edit",
        Duration::from_secs(10),
        || async move {
            up_ref
                .log()
                .lines()
                .any(|l| l.contains("Invalid policy") && l.contains(want))
        },
    )
    .await;
    // Evaluations after the report still run under the old policy (min 2).
    let reported = up.decisions("hr").await;
    let after = up
        .until("a later evaluation", Duration::from_secs(10), || {
            let reported = reported.last().cloned();
            async move {
                let last = up_ref.decisions("hr").await.last().cloned();
                last.filter(|l| Some(l) != reported.as_ref())
            }
        })
        .await;
    assert_eq!(
        (after.to, up.count_up("hr").await),
        (2, 2),
        "the old policy did not stay in force: {after:?}"
    );
    std::fs::write(up.policy_path("hr.yaml"), policy("hr", "min: 1\nmax: 3\n")).unwrap();
    up.wait_up("hr", 1, 20).await;
}

/// `gantry up` with pool `pool` (min 1, max 2, `extra`), once it has scaled
/// to zero (after 1 s idle) and `also` holds.
async fn at_zero(pool: &str, extra: &str, also: impl Fn(&Gantry) -> bool) -> Gantry {
    let text = format!("min: 1\nmax: 2\nscale_to_zero: {{after: 1s, hold_timeout: 10s}}\n{extra}");
    let up = Gantry::up(&config(pool, 5))
        .policy(&format!("{pool}.yaml"), &policy(pool, &text))
        .start()
        .await;
    let (up_ref, also) = (&up, &also);
    let idle = format!("{pool} 1 -> 0: idle");
    let idle = &idle;
    up.until("scale to zero", Duration::from_secs(20), || async move {
        up_ref.log().contains(idle.as_str())
            && up_ref.members(pool).await.is_empty()
            && also(up_ref)
    })
    .await;
    up
}

/// POSTs an analysis through `up`: 200 expected.
async fn analyze(up: &Gantry) {
    let r = client()
        .post(format!("{}/v1/analyze", up.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", up.tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_from_zero_holds_the_first_request_until_a_worker_is_ready() {
    let up = at_zero("zl", "", |_| true).await;
    let start = Instant::now();
    analyze(&up).await;
    let took = start.elapsed();
    // How long it took is measured by `make bench-scaler`, not asserted here.
    eprintln!("scale from zero, local fake worker: first response after {took:?}");
}

/// With `warm: 1` a worker waits outside the pool; at zero, the first request
/// is served by that worker, promoted (not a new start), a new spare takes its
/// place, and `gantry status` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_zero_the_first_request_is_served_by_the_warm_spare() {
    let up = at_zero("wl", "warm: 1\n", |up| {
        up.log().contains("Warm spare ready") && workers(up).len() == 1
    })
    .await;
    let spare = workers(&up)[0];
    analyze(&up).await;
    let up_ref = &up;
    let log = up.log();
    let promoted = log.lines().find(|l| l.contains("Warm spare promoted"));
    assert!(
        promoted.is_some_and(|l| l.contains(&format!("local-{spare}"))),
        "not the spare (pid {spare}) promoted:\n{}",
        up.tail()
    );
    let status = || {
        command()
            .args(["status", "--admin", &up.admin])
            .output()
            .unwrap()
    };
    up.until(
        "a new spare in `gantry status`",
        Duration::from_secs(20),
        || {
            let text = String::from_utf8_lossy(&status().stdout).into_owned();
            let started = up_ref.log().matches("Warm spare started").count();
            async move {
                if started == 2 && text.contains(", warm spares 1;") {
                    Ok(())
                } else {
                    Err(format!("{started} spares started; status:\n{text}"))
                }
            }
        },
    )
    .await;
}

/// The real `gantry worker` (ONNX Runtime, the phishing-url model) as the
/// local runtime's default command, with no `ORT_DYLIB_PATH` in the
/// environment: the workers find the library `make onnxruntime` placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gantry_workers_scale_up_under_load_and_back_down() {
    let root = root();
    let config = format!(
        "pools:\n  rw:\n    health: {{interval: 200ms}}\n    drain_timeout: 5s\nroutes:\n  - {{prefix: /v1/analyze, pool: rw, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    args: [worker, --model, '{}']\n",
        root.join("models/phishing-url").display()
    );
    let policy = "pool: rw\nmin: 1\nmax: 2\ninterval: 500ms\nwindow: 2s\nmetrics: [{metric: request_rate_per_replica, target: 20}]\nscale_up: {max_step: 2, period: 1s}\nscale_down: {stabilization: 3s, cooldown: 0s, max_step: 2, period: 1s}\nready_timeout: 60s\n";
    let up = Gantry::up(&config).policy("rw.yaml", policy).start().await;
    up.wait_up("rw", 1, 60).await;
    let body = r#"{"url":"http://paypal.com.secure-login.example.ru/"}"#;
    let verdict: serde_json::Value = client()
        .post(format!("{}/v1/analyze", up.url))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["verdict"], "phishing", "{verdict}");
    let load = Load::start(&format!("{}/v1/analyze", up.url), 4, body);
    up.wait_up("rw", 2, 60).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(report.ok > 0);
    let served = up.served("rw").await;
    assert_eq!(
        served.values().filter(|n| **n > 0.0).count(),
        2,
        "{served:?}"
    );
    up.wait_up("rw", 1, 60).await;
}

/// `gantry scaler` apart from `gantry proxy`, through the admin API; `gantry status` reads both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_scaler_drives_the_proxy_through_its_admin_api() {
    let policy = policy("sa", "min: 2\nmax: 3\n").replace(
        "metrics: [{metric: inflight_per_replica, target: 2}]",
        "metrics: [{metric: queue_length, target: 2}]",
    );
    // Neither is waited for: the scaler copes with a proxy that is not serving yet.
    let proxy = Gantry::proxy(&config("sa", 5))
        .policy("sa.yaml", &policy)
        .spawn();
    let mut scaler = proxy.scaler();
    let status = || {
        command()
            .args(["status", "--admin", &proxy.admin, "--scaler", &scaler.admin])
            .output()
            .unwrap()
    };
    let text = scaler
        .until(
            "two replicas in `gantry status`",
            Duration::from_secs(30),
            || {
                let text = String::from_utf8_lossy(&status().stdout).into_owned();
                async move {
                    let explained =
                        text.contains("worker queue length 0 < target 2 over 2 s, held at bound 2");
                    if text.matches(" up ").count() == 2
                        && text.contains("sa 0 -> 2: below min 2")
                        && explained
                    {
                        Ok(text)
                    } else {
                        Err(text)
                    }
                }
            },
        )
        .await;
    assert!(text.starts_with("pool sa"), "{text}");
    // SIGTERM: the scaler stops and its workers with it.
    scaler.signal(sysinfo::Signal::Term);
    scaler.wait_exit(Duration::from_secs(15)).await;
}
