//! The scaler with local processes through the real `gantry up`: grow under load, spread, shrink, replace, hot reload, scale from zero.

use crate::support::gantry as scaler_support;

use std::time::{Duration, Instant};

use scaler_support::{fake_worker, signal, Load, Up};

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
fn workers(up: &Up) -> Vec<u32> {
    scaler_support::children(up, "fake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_pool_grows_under_load_spreads_and_shrinks_to_min() {
    let up = Up::start(
        &config("lp", 100),
        &[("lp.yaml", &policy("lp", "min: 1\nmax: 3\n"))],
        &[],
    )
    .await;
    up.wait_up("lp", 1, 20).await;
    let load = Load::start(
        &format!("{}/v1/analyze", up.url),
        8,
        "{\"url\":\"http://x.example/\"}",
    );
    up.wait_up("lp", 3, 30).await;
    let before = up.served("lp").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = up.served("lp").await;
    let report = load.stop().await;
    let stopped = Instant::now();
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    let busy = after
        .iter()
        .filter(|(b, n)| **n > before.get(*b).copied().unwrap_or(0.0))
        .count();
    assert_eq!(busy, 3, "traffic did not spread: {before:?} -> {after:?}");
    up.wait_up("lp", 1, 30).await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "shrank within the window"
    );
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
    let mut up = Up::start(
        &config("ld", 5),
        &[("ld.yaml", &policy("ld", "min: 2\nmax: 3\n"))],
        &[],
    )
    .await;
    up.wait_up("ld", 2, 20).await;
    let pids = workers(&up);
    assert_eq!(pids.len(), 2, "{pids:?}");
    signal(pids[0], sysinfo::Signal::Kill);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = workers(&up);
        if now.len() == 2 && !now.contains(&pids[0]) && up.up("ld").await == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement: {now:?}\n{}",
            up.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let up = Up::start(
        &config("hr", 5),
        &[("hr.yaml", &policy("hr", "min: 1\nmax: 3\n"))],
        &[],
    )
    .await;
    up.wait_up("hr", 1, 20).await;
    let edited = Instant::now();
    std::fs::write(up.policy_path("hr.yaml"), policy("hr", "min: 2\nmax: 3\n")).unwrap();
    up.wait_up("hr", 2, 10).await;
    let took = edited.elapsed();
    assert!(took < Duration::from_secs(5), "valid edit took {took:?}");
    std::fs::write(up.policy_path("hr.yaml"), policy("hr", "min: 5\nmax: 3\n")).unwrap();
    // The error names file, line, column and field (an editor's half-written
    // file may be reported first; that too leaves the old policy in force).
    let want = "hr.yaml:7:1: min: must be at most max (3)";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !up
        .log()
        .lines()
        .any(|l| l.contains("Invalid policy") && l.contains(want))
    {
        assert!(
            Instant::now() < deadline,
            "invalid edit not reported\n{}",
            up.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(up.up("hr").await, 2, "the old policy did not stay in force");
    std::fs::write(up.policy_path("hr.yaml"), policy("hr", "min: 1\nmax: 3\n")).unwrap();
    up.wait_up("hr", 1, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_from_zero_holds_the_first_request_until_a_worker_is_ready() {
    let extra = "min: 1\nmax: 2\nscale_to_zero: {after: 1s, hold_timeout: 10s}\n";
    let up = Up::start(&config("zl", 5), &[("zl.yaml", &policy("zl", extra))], &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(up.log().contains("zl 1 -> 0: idle") && up.members("zl").await.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "never went to zero\n{}",
            up.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Instant::now();
    let r = scaler_support::client()
        .post(format!("{}/v1/analyze", up.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(r.status(), 200, "{}", up.tail());
    // How long it took is measured by `make bench-scaler`, not asserted here.
    eprintln!("scale from zero, local fake worker: first response after {took:?}");
}

/// The real `gantry worker` (ONNX Runtime, the phishing-url model) as the
/// local runtime's default command, with no `ORT_DYLIB_PATH` in the
/// environment: the workers find the library `make onnxruntime` placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gantry_workers_scale_up_under_load_and_back_down() {
    let root = scaler_support::root();
    let config = format!(
        "pools:\n  rw:\n    health: {{interval: 200ms}}\n    drain_timeout: 5s\nroutes:\n  - {{prefix: /v1/analyze, pool: rw, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    args: [worker, --model, '{}']\n",
        root.join("models/phishing-url").display()
    );
    let policy = "pool: rw\nmin: 1\nmax: 2\ninterval: 500ms\nwindow: 2s\nmetrics: [{metric: request_rate_per_replica, target: 20}]\nscale_up: {max_step: 2, period: 1s}\nscale_down: {stabilization: 3s, cooldown: 0s, max_step: 2, period: 1s}\nready_timeout: 60s\n";
    let up = Up::start(&config, &[("rw.yaml", policy)], &[]).await;
    up.wait_up("rw", 1, 60).await;
    let body = r#"{"url":"http://paypal.com.secure-login.example.ru/"}"#;
    let verdict: serde_json::Value = scaler_support::client()
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

/// Kills a child process on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        signal(self.0.id(), sysinfo::Signal::Term);
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `gantry scaler` apart from `gantry proxy`, through the admin API; `gantry status` reads both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_scaler_drives_the_proxy_through_its_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, status) = (
        scaler_support::free_port(),
        scaler_support::free_port(),
        scaler_support::free_port(),
    );
    let config = format!(
        "listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:{admin}}}\n{}",
        config("sa", 5).replace("{dir}", dir.path().to_str().unwrap())
    );
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/sa.yaml"),
        policy("sa", "min: 2\nmax: 3\n").replace(
            "metrics: [{metric: inflight_per_replica, target: 2}]",
            "metrics: [{metric: queue_length, target: 2}]",
        ),
    )
    .unwrap();
    let path = dir.path().join("gantry.yaml");
    std::fs::write(&path, config).unwrap();
    let bin = env!("CARGO_BIN_EXE_gantry");
    let quiet = || std::process::Stdio::null();
    let _proxy = Proc(
        std::process::Command::new(bin)
            .args(["proxy", "--config"])
            .arg(&path)
            .stderr(quiet())
            .spawn()
            .unwrap(),
    );
    let admin_url = format!("http://127.0.0.1:{admin}");
    let mut scaler = Proc(
        std::process::Command::new(bin)
            .args(["scaler", "--config"])
            .arg(&path)
            .args([
                "--admin",
                &admin_url,
                "--listen",
                &format!("127.0.0.1:{status}"),
            ])
            .stderr(std::fs::File::create(dir.path().join("scaler.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let out = std::process::Command::new(bin)
            .args([
                "status",
                "--admin",
                &admin_url,
                "--scaler",
                &format!("http://127.0.0.1:{status}"),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let explained = text.contains("worker queue length 0 < target 2 over 2 s, held at bound 2");
        if text.matches(" up ").count() == 2 && text.contains("sa 0 -> 2: below min 2") && explained
        {
            break text;
        }
        let log = std::fs::read_to_string(dir.path().join("scaler.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "status never showed two replicas:\n{text}\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.starts_with("pool sa"), "{text}");
    // SIGTERM: the scaler stops and its workers with it.
    signal(scaler.0.id(), sysinfo::Signal::Term);
    let deadline = Instant::now() + Duration::from_secs(15);
    while scaler.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "scaler did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
