//! The Swarm runtime against a real (one-node) swarm: the runtime alone, `gantry up` under load, and docker/swarm/stack.yml.
//!
//! The engine joins a one-node swarm (`docker swarm init --advertise-addr
//! 127.0.0.1`) if it is in none, and leaves it afterwards only if a test
//! made it. Services and the overlay network of a test are removed by a
//! guard even when it fails; they belong to the test-only deployment, which
//! `make clean-containers` also cleans.

use std::process::Command;
use std::time::Duration;

use gantry::scaler::config::{DockerConfig, SwarmConfig};
use gantry::scaler::runtime::swarm::{read_service, service_name, update_replicas, SwarmRuntime};
use gantry::scaler::runtime::{Replica, ReplicaSpec, Runtime, RuntimeError};

use crate::support::docker::{test_deployment, unique, worker_image, ONE_AT_A_TIME};
use crate::support::load::Load;
use crate::support::{client, free_port, root, sh, Gantry};

const BODY: &str = r#"{"url":"http://paypal.com.secure-login.example.ru/"}"#;

/// The engine in a swarm for the test's lifetime, and its services gone after it.
struct Swarm {
    created: bool,
    services: Vec<String>,
    network: String,
}

impl Swarm {
    fn join(network: &str) -> Swarm {
        let state = sh(Command::new("docker").args(["info", "-f", "{{.Swarm.LocalNodeState}}"]));
        let created = state.trim() != "active";
        if created {
            sh(Command::new("docker").args(["swarm", "init", "--advertise-addr", "127.0.0.1"]));
        }
        Swarm {
            created,
            services: Vec::new(),
            network: network.to_string(),
        }
    }
}

/// A test pool named from `prefix` in a joined swarm: the guard (which also
/// removes the pool's service), the pool, its network and its service's name.
fn swarm_pool(prefix: &str) -> (Swarm, String, String, String) {
    let pool = unique(prefix);
    let network = format!("gantry-test-{pool}");
    let service = service_name(&pool, &test_deployment());
    let mut swarm = Swarm::join(&network);
    swarm.services.push(service.clone());
    (swarm, pool, network, service)
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for s in &self.services {
            let _ = Command::new("docker").args(["service", "rm", s]).output();
        }
        // Tasks take a moment to go; the network cannot be removed before.
        for _ in 0..30 {
            let gone = Command::new("docker")
                .args(["network", "rm", &self.network])
                .output()
                .is_ok_and(|o| o.status.success());
            let missing = !Command::new("docker")
                .args(["network", "inspect", &self.network])
                .output()
                .is_ok_and(|o| o.status.success());
            if gone || missing {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if self.created {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

fn spec(pool: &str) -> ReplicaSpec {
    ReplicaSpec {
        pool: pool.to_string(),
        warm: false,
        cpus: Some(0.5),
        memory_mib: 512,
        pids: 256,
        model: None,
    }
}

/// Polls the runtime until its listing of `pool` passes `ok`, up to `secs`.
async fn listed(
    rt: &SwarmRuntime,
    pool: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&[Replica]) -> bool,
) -> Vec<Replica> {
    let mut last = Vec::new();
    for _ in 0..secs * 4 {
        match rt.list(pool).await {
            Ok(l) if ok(&l.serving) => return l.serving,
            Ok(l) => last = l.serving,
            Err(e) => eprintln!("list: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}: last listed {last:?}");
}

fn container_of(task: &str) -> String {
    sh(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.Status.ContainerStatus.ContainerID}}",
        task,
    ]))
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_runtime_scales_a_service_by_compare_and_set_and_swarm_replaces_dead_tasks() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (_swarm, pool, network, name) = swarm_pool("sw");
    let deployment = test_deployment();
    let rt = SwarmRuntime::new(
        DockerConfig {
            image,
            ..Default::default()
        },
        SwarmConfig {
            network: network.clone(),
            stop_grace_period: Duration::from_secs(10),
            ..Default::default()
        },
        &deployment,
    );

    // No service yet: a count of zero.
    let l = rt.list(&pool).await.unwrap();
    assert_eq!((l.desired, l.serving.len()), (Some(0), 0));

    // Created on the first scale; both tasks reachable and ready.
    rt.scale(&spec(&pool), 2).await.unwrap();
    let two = listed(&rt, &pool, 90, "two running tasks", |s| s.len() == 2).await;
    for r in &two {
        let mut ready = false;
        for _ in 0..120 {
            ready = rt.ready(r).await;
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(ready, "task {} at {} never ready", r.id, r.addr);
    }
    assert_eq!(rt.list(&pool).await.unwrap().desired, Some(2));

    // The tasks run hardened, like the containers of the Docker runtime.
    let c = container_of(&two[0].id);
    let hardened = sh(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.Config.Labels}}",
        &c,
    ]));
    assert!(
        hardened.starts_with("65534:65534 true [ALL]") && hardened.contains("gantry.pool:"),
        "{hardened}"
    );

    // Tasks on this node are measured (memory % of the policy's limit).
    let usage = rt.usage(&two).await;
    assert!(
        usage.iter().all(|u| u.memory_percent.is_some()),
        "{usage:?}"
    );

    // Someone changes the service between our read and our write: refused.
    let d = rt.docker().await.unwrap();
    let id = rt.service(&d, &pool).await.unwrap().unwrap().id.unwrap();
    let read = read_service(&id).await.unwrap();
    sh(Command::new("docker").args([
        "service",
        "update",
        "--detach",
        "--label-add",
        "touched=by-hand",
        &name,
    ]));
    match update_replicas(read, &pool, 3).await {
        Err(RuntimeError::Conflict(_)) => {}
        other => panic!("a stale version was not refused as a conflict: {other:?}"),
    }
    assert_eq!(rt.list(&pool).await.unwrap().desired, Some(2));

    // Scaling changes only the count: the running tasks stay (a changed task
    // template would have Swarm replace every one of them).
    rt.scale(&spec(&pool), 3).await.unwrap();
    let three = listed(&rt, &pool, 90, "three running tasks", |s| s.len() == 3).await;
    for r in &two {
        assert!(three.contains(r), "task {} was replaced: {three:?}", r.id);
    }
    let inspected = sh(Command::new("docker").args([
        "service",
        "inspect",
        "-f",
        "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}} {{.UpdateStatus}}",
        &name,
    ]));
    assert!(
        inspected.contains("\"Interval\":2000000000") && inspected.trim().ends_with("<nil>"),
        "{inspected}"
    );

    // A killed task is replaced by Swarm, the count unchanged.
    let killed = two[0].id.clone();
    sh(Command::new("docker").args(["kill", &c]));
    listed(&rt, &pool, 90, "a replacement task", |s| {
        s.len() == 3 && !s.iter().any(|r| r.id == killed)
    })
    .await;

    // Scaled down: Swarm picks, and the one left is listed.
    rt.scale(&spec(&pool), 1).await.unwrap();
    listed(&rt, &pool, 60, "one task", |s| s.len() == 1).await;
}

/// One request every 50 ms (20/s, under one replica's target): traffic
/// that goes on while the pool shrinks, without holding it up.
struct Trickle {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Trickle {
    fn start(url: &str) -> Trickle {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, url, flag) = (client(), url.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match c.post(&url).body(BODY).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, failed)
        });
        Trickle { stop, task }
    }

    /// Requests answered 200, and what the others got.
    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

fn config(pool: &str, image: &str, network: &str) -> String {
    let deployment = test_deployment();
    format!(
        "pools:\n  {pool}:\n    health: {{interval: 200ms}}\n    drain_timeout: 10s\nroutes:\n  - {{prefix: /, pool: {pool}, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: swarm\n  deployment: {deployment}\n  docker: {{image: '{image}'}}\n  swarm: {{network: {network}, stop_grace_period: 10s}}\n"
    )
}

fn policy(pool: &str) -> String {
    format!(
        "pool: {pool}\nmin: 1\nmax: 3\ninterval: 500ms\nwindow: 2s\nmetrics: [{{metric: request_rate_per_replica, target: 20}}]\nscale_up: {{max_step: 3, period: 1s}}\nscale_down: {{stabilization: 4s, cooldown: 0s, max_step: 3, period: 1s}}\nready_timeout: 60s\ndrain_timeout: 10s\n"
    )
}

fn service_replicas(name: &str) -> String {
    sh(Command::new("docker").args([
        "service",
        "inspect",
        "-f",
        "{{.Spec.Mode.Replicated.Replicas}}",
        name,
    ]))
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_pool_grows_under_load_shrinks_without_a_failed_request_and_undoes_a_manual_scale()
{
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (_swarm, pool, network, name) = swarm_pool("su");
    let up = Gantry::up(&config(&pool, &image, &network))
        .policy("p.yaml", &policy(&pool))
        .start()
        .await;
    up.wait_up(&pool, 1, 120).await;

    let load = Load::start(&format!("{}/v1/analyze", up.url), 8, BODY);
    up.wait_up(&pool, 3, 180).await;
    let before = up.served(&pool).await;
    up.wait_spread(&pool, 3, &before, Duration::from_secs(60))
        .await;
    assert_eq!(service_replicas(&name), "3");

    // Load drops to a trickle: the service shrinks to min, and no request
    // failed across it.
    let report = load.stop().await;
    let load = Trickle::start(&format!("{}/v1/analyze", up.url));
    up.wait_up(&pool, 1, 120).await;
    let name_ref = &name;
    up.until("the service at 1", Duration::from_secs(60), || async move {
        match service_replicas(name_ref).as_str() {
            "1" => Ok(()),
            n => Err(format!("replicas {n}")),
        }
    })
    .await;
    // The tasks Swarm stopped finish within their grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (during, failed) = load.stop().await;
    assert!(
        report.failed.is_empty(),
        "under load: {} failed of {}: {:?}\n{}",
        report.failed.len(),
        report.ok,
        &report.failed[..report.failed.len().min(5)],
        up.tail()
    );
    assert!(
        failed.is_empty() && during > 0,
        "across the scale-down: {} failed of {}: {:?}\n{}",
        failed.len(),
        during + failed.len(),
        &failed[..failed.len().min(5)],
        up.tail()
    );

    // `docker service scale` by hand, beyond max: brought back to the policy.
    sh(Command::new("docker").args(["service", "scale", "--detach", &format!("{name}=5")]));
    up.until(
        "the manual scale undone",
        Duration::from_secs(60),
        || async move {
            match service_replicas(name_ref).as_str() {
                "1" => Ok(()),
                n => Err(format!("replicas {n}")),
            }
        },
    )
    .await;
    assert!(up.log().contains("Replica count set"), "{}", up.tail());
    eprintln!(
        "swarm: {} requests under load and {} across the scale-down, none failed",
        report.ok, during
    );
}

/// `docker/swarm/stack.yml` as shipped, with a test's image, port, network
/// and config: gantry as a Swarm service on the overlay network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_file_runs_gantry_as_a_swarm_service_reaching_its_workers_on_the_overlay() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (_swarm, pool, network, _) = swarm_pool("st");
    let deployment = test_deployment();
    let stack = format!("gantry-test-{pool}");
    let _stack = StackCleanup(stack.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gantry.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 0.0.0.0:8080\npools:\n  {pool}: {{health: {{interval: 500ms}}}}\nroutes:\n  - {{prefix: /, pool: {pool}, idempotent: true}}\nscaler:\n  policies: /policies\n  runtime: swarm\n  deployment: {deployment}\n  docker: {{image: '{image}'}}\n  swarm: {{network: {network}, publish: false, stop_grace_period: 5s}}\n"
        ),
    )
    .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!("pool: {pool}\nmin: 2\nmax: 2\ninterval: 500ms\nmetrics: [{{metric: inflight_per_replica, target: 8}}]\n"),
    )
    .unwrap();
    let port = free_port();
    sh(Command::new("docker")
        .args(["stack", "deploy", "--detach=true", "-c"])
        .arg(root().join("docker/swarm/stack.yml"))
        .arg(&stack)
        .env("GANTRY_IMAGE", &image)
        .env("GANTRY_HTTP_PORT", port.to_string())
        .env("GANTRY_NETWORK", &network)
        .env("GANTRY_CONFIG", &config)
        .env("GANTRY_POLICY", &policy));

    let logs = || {
        let out = Command::new("docker")
            .args(["service", "logs", "--raw", &format!("{stack}_gantry")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    // A verdict through the proxy in the swarm.
    let c = client();
    let url = format!("http://127.0.0.1:{port}/v1/analyze");
    let mut last = String::new();
    for _ in 0..600 {
        match c.post(&url).body(BODY).send().await {
            Ok(r) if r.status() == 200 => {
                last = r.text().await.unwrap_or_default();
                break;
            }
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        last.contains("\"verdict\""),
        "last answer: {last}\n{}",
        logs()
    );
    // Its pool holds both worker tasks, by their overlay addresses (from DNS);
    // the service's logs arrive a moment later.
    let ready_addrs = |log: &str| -> std::collections::BTreeSet<std::net::IpAddr> {
        log.lines()
            .filter(|l| l.contains("Replica ready, in the pool"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                v["fields"]["addr"]
                    .as_str()?
                    .parse::<std::net::SocketAddr>()
                    .ok()
            })
            .map(|a| a.ip())
            .collect()
    };
    let mut log = logs();
    for _ in 0..60 {
        if ready_addrs(&log).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        log = logs();
    }
    let added = ready_addrs(&log);
    assert_eq!(added.len(), 2, "{added:?}\n{log}");
    assert!(added.iter().all(|ip| !ip.is_loopback()), "{added:?}");
}

/// Removes a test's stack even when the test fails.
struct StackCleanup(String);

impl Drop for StackCleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.0])
            .output();
    }
}

/// Two `gantry up` proxies with the Swarm runtime share a lease (real
/// Redis): only the leader sets the count, the standby serves the same
/// tasks, and the standby takes over when the leader is killed, keeping the
/// service as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swarm_proxies_one_scaler_in_charge_share_the_tasks() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (_swarm, pool, network, name) = swarm_pool("sl");
    let redis = crate::support::redis_server::RedisServer::start();
    let lease = format!("  lease: {{redis: '{}', ttl: 1s}}\n", redis.url());
    let yaml = config(&pool, &image, &network) + &lease;
    let policy = format!(
        "pool: {pool}\nmin: 2\nmax: 3\ninterval: 500ms\nmetrics: [{{metric: inflight_per_replica, target: 8}}]\n"
    );
    let mut a = Gantry::up(&yaml).policy("p.yaml", &policy).start().await;
    a.wait_up(&pool, 2, 120).await;
    let b = Gantry::up(&yaml).policy("p.yaml", &policy).start().await;
    b.wait_up(&pool, 2, 60).await;
    let tasks = || {
        let mut ids: Vec<String> = sh(Command::new("docker").args([
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            &name,
        ]))
        .lines()
        .map(String::from)
        .collect();
        ids.sort();
        ids
    };
    let before = tasks();
    assert_eq!(before.len(), 2, "{before:?}");
    let r = client()
        .post(format!("{}/v1/analyze", b.url))
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", b.tail());
    assert!(a.log().contains("Replica count set"), "{}", a.tail());
    assert!(b.log().contains("Standby: following"), "{}", b.tail());
    assert!(!b.log().contains("Replica count set"), "{}", b.tail());

    a.crash_until_standby_leads(&b, &pool, 2).await;
    assert_eq!(tasks(), before, "tasks changed on takeover");
    assert_eq!(service_replicas(&name), "2");
}
