//! The scaler against the real Docker engine through the real `gantry up`.
//!
//! Uses the worker image (`make worker-image`) when it is built, else the
//! fake worker FROM scratch; `GANTRY_TEST_WORKER_IMAGE` picks another.
//! Tests run one at a time (they share the engine and `make
//! clean-containers`); each uses its own pool label and network, removed by
//! a guard even when the test fails, in the test-only deployment that `make
//! clean-containers` is limited to.

use std::process::Command;
use std::time::Duration;

use crate::support::docker::{containers, names, test_deployment, worker_image, ONE_AT_A_TIME};
use crate::support::load::Load;
use crate::support::{client, fake_worker, free_port, root, sh, Gantry};

/// What the analysis route accepts (the real worker wants a URL).
const BODY: &str = r#"{"url":"http://paypal.com.secure-login.example.ru/"}"#;

fn config(pool: &str, image: &str, network: &str) -> String {
    let deployment = test_deployment();
    format!(
        "pools:\n  {pool}:\n    health: {{interval: 200ms}}\n    drain_timeout: 5s\nroutes:\n  - {{prefix: /, pool: {pool}, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: docker\n  deployment: {deployment}\n  docker: {{image: '{image}', network: {network}, publish: true}}\n"
    )
}

fn policy(pool: &str, extra: &str) -> String {
    format!(
        "pool: {pool}\ninterval: 500ms\nwindow: 2s\nmetrics: [{{metric: request_rate_per_replica, target: 20}}]\nscale_up: {{max_step: 3, period: 1s}}\nscale_down: {{stabilization: 4s, cooldown: 0s, max_step: 3, period: 1s}}\nready_timeout: 30s\ndrain_timeout: 5s\n{extra}"
    )
}

/// Starts a container of `image` without our labels; returns its id.
fn unlabelled(image: &str, name: &str) -> String {
    sh(Command::new("docker").args(["run", "-d", "--name", name, image]))
        .trim()
        .to_string()
}

fn running(id: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", id])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pool_grows_spreads_replaces_a_killed_replica_and_shrinks() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, real) = worker_image();
    let (pool, network, mut guard) = names("dg");
    let stranger = unlabelled(&image, &format!("{pool}-unlabelled"));
    guard.extra.push(stranger.clone());
    let up = Gantry::up(&config(&pool, &image, &network))
        .policy("p.yaml", &policy(&pool, "min: 1\nmax: 3\n"))
        .start()
        .await;
    up.wait_up(&pool, 1, 60).await;
    let load = Load::start(&format!("{}/v1/analyze", up.url), 8, BODY);
    up.wait_up(&pool, 3, 60).await;
    let before = up.served(&pool).await;
    up.wait_spread(&pool, 3, &before, Duration::from_secs(30))
        .await;

    // Kill one replica under load: retries hide it, a replacement appears.
    let ids = containers(&pool);
    assert_eq!(ids.len(), 3, "{ids:?}");
    sh(Command::new("docker").args(["kill", &ids[0]]));
    let (up_ref, pool_ref, killed) = (&up, &pool, &ids[0]);
    up.until("replacement", Duration::from_secs(60), || async move {
        let now = containers(pool_ref);
        if now.len() == 3 && !now.contains(killed) && up_ref.count_up(pool_ref).await == 3 {
            Ok(())
        } else {
            Err(format!("containers {now:?}"))
        }
    })
    .await;
    let report = load.stop().await;
    assert!(
        report.failed.is_empty(),
        "{} failed of {}: {:?}",
        report.failed.len(),
        report.ok,
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(up.log().contains("Replica died"), "{}", up.tail());

    // Load stops: back to min, once the scale-down stabilization window has held it.
    up.wait_up(&pool, 1, 60).await;
    up.assert_shrank_after_stabilizing(&pool).await;
    up.until("one container", Duration::from_secs(20), || async move {
        let now = containers(pool_ref);
        if now.len() == 1 {
            Ok(())
        } else {
            Err(format!("stopped containers left: {now:?}"))
        }
    })
    .await;
    assert!(running(&stranger), "the unlabelled container was touched");
    eprintln!(
        "image {image} (real worker: {real}): {} requests, none failed",
        report.ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_scaler_adopts_its_containers_without_duplicates() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (pool, network, _guard) = names("da");
    let mut up = Gantry::up(&config(&pool, &image, &network))
        .policy("p.yaml", &policy(&pool, "min: 2\nmax: 3\n"))
        .start()
        .await;
    up.wait_up(&pool, 2, 60).await;
    let ids = containers(&pool);
    assert_eq!(ids.len(), 2);
    up.crash();
    up.respawn();
    up.wait_ready().await;
    up.wait_up(&pool, 2, 30).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(containers(&pool), ids, "containers changed on restart");
    assert_eq!(up.count_up(&pool).await, 2);
    assert_eq!(
        up.log().matches("Adopting replica").count(),
        2,
        "{}",
        up.tail()
    );
}

/// Starts a container of `image` labelled as another deployment's
/// (a user's compose stack) with a pool named `pool`; returns its id.
fn users_container(image: &str, pool: &str) -> String {
    let deployment = format!("deployment=users-{pool}");
    let labels = [
        "gantry.managed=true".to_string(),
        format!("gantry.{deployment}"),
        format!("gantry.pool={pool}"),
    ];
    let mut cmd = Command::new("docker");
    cmd.args(["run", "-d", "--name", &format!("{pool}-users")]);
    for l in &labels {
        cmd.args(["--label", l]);
    }
    sh(cmd.arg(image)).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_clean_containers_removes_test_ones_and_spares_a_users_stack() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (pool, network, mut guard) = names("dc");
    let stranger = unlabelled(&image, &format!("{pool}-unlabelled"));
    guard.extra.push(stranger.clone());
    let mut up = Gantry::up(&config(&pool, &image, &network))
        .policy("p.yaml", &policy(&pool, "min: 2\nmax: 3\n"))
        .start()
        .await;
    up.wait_up(&pool, 2, 60).await;
    up.terminate();
    assert_eq!(
        containers(&pool).len(),
        2,
        "containers stay for the next run to adopt"
    );
    // Another deployment's worker, with the same pool name: a user's stack.
    let users = users_container(&image, &pool);
    guard.extra.push(users.clone());
    sh(Command::new("make")
        .arg("clean-containers")
        .arg(format!("TEST_DEPLOYMENT={}", test_deployment()))
        .current_dir(root()));
    assert_eq!(
        containers(&pool),
        std::slice::from_ref(&users),
        "only the test's containers go"
    );
    assert!(running(&users), "the user's managed container was removed");
    assert!(running(&stranger), "the unlabelled container was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_docker_keeps_the_proxy_serving() {
    let worker_port = free_port();
    let mut worker = Command::new(fake_worker())
        .args(["--listen", &format!("127.0.0.1:{worker_port}")])
        .env("FAKE_EXIT_WITH_PARENT", "1")
        .spawn()
        .unwrap();
    let config = format!(
        "pools:\n  du:\n    health: {{interval: 200ms}}\n    backends: [{{addr: '127.0.0.1:{worker_port}'}}]\nroutes:\n  - {{prefix: /, pool: du, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: docker\n  deployment: {}\n",
        test_deployment()
    );
    let up = Gantry::up(&config)
        .policy("du.yaml", &policy("du", "min: 2\nmax: 3\n"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .start()
        .await;
    let c = client();
    let up_ref = &up;
    up.until(
        "`Runtime unreachable`",
        Duration::from_secs(10),
        || async move { up_ref.log().contains("Runtime unreachable") },
    )
    .await;
    for _ in 0..20 {
        let r = c
            .post(format!("{}/v1/analyze", up.url))
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retries = up.log().matches("Runtime unreachable").count();
    assert!(retries >= 2, "no retry with backoff: {}", up.tail());
    let _ = worker.kill();
    let _ = worker.wait();
}

#[test]
fn compose_file_is_valid() {
    let config = |token: Option<&str>| {
        let mut c = Command::new("docker-compose");
        c.args(["-f", "docker-compose.yml", "config", "-q"])
            .current_dir(root())
            .env_remove("GANTRY_ADMIN_TOKEN");
        if let Some(t) = token {
            c.env("GANTRY_ADMIN_TOKEN", t);
        }
        c.output().expect("docker-compose runs")
    };
    let out = config(Some("a-long-random-string"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No admin token, no stack: the admin API listens on the compose network.
    let out = config(None);
    assert!(!out.status.success(), "compose ran without an admin token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("GANTRY_ADMIN_TOKEN"));
}

/// Two `gantry up` proxies of one deployment share a lease (real Redis): the
/// leader starts the containers, the standby's proxy serves them too without
/// starting any, and when the leader is killed the standby takes over and
/// adopts them: no container is added or replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_one_scaler_in_charge_share_the_containers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (pool, network, _guard) = names("dl");
    let redis = crate::support::redis_server::RedisServer::start();
    let lease = format!("  lease: {{redis: '{}', ttl: 1s}}\n", redis.url());
    let yaml = config(&pool, &image, &network) + &lease;
    let policy = policy(&pool, "min: 2\nmax: 3\n");
    let mut a = Gantry::up(&yaml).policy("p.yaml", &policy).start().await;
    a.wait_up(&pool, 2, 60).await;
    let b = Gantry::up(&yaml).policy("p.yaml", &policy).start().await;
    b.wait_up(&pool, 2, 60).await;
    let ids = containers(&pool);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let r = client()
        .post(format!("{}/v1/analyze", b.url))
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", b.tail());
    assert!(b.log().contains("Standby: following"), "{}", b.tail());
    assert!(!b.log().contains("Replica started"), "{}", b.tail());

    a.crash_until_standby_leads(&b, &pool, 2).await;
    assert_eq!(containers(&pool), ids, "containers changed on takeover");
    assert!(!b.log().contains("Replica started"), "{}", b.tail());
}
