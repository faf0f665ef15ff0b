//! The fault suite's Docker cases: containers killed and paused, the engine's socket gone, the scaler restarted mid-scale-up, a second deployment with the same pool name.
//!
//! Each runs closed-loop analysis requests through a proxy whose pool the
//! Docker runtime scales, with the Docker tests' image (the real worker when
//! built, else the fake worker FROM scratch), in the test-only deployments
//! `make clean-containers` is limited to; a guard removes the case's
//! containers and network even when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::{Row, BODY, CLIENTS, UNDER_FAULT};
use crate::support::docker::{
    containers, deployment_containers, names, test_deployment, test_peer_deployment, worker_image,
    ONE_AT_A_TIME,
};
use crate::support::load::Load;
use crate::support::{sh, Gantry};

/// The proxy side: pool `pool` (no static backends), reads time out after 2 s.
fn pools(pool: &str) -> String {
    format!(
        "pools:\n  {pool}:\n    health: {{interval: 200ms, fall: 2}}\n    timeouts: {{read: 2s}}\n    drain_timeout: 5s\nroutes:\n  - {{prefix: /v1/analyze, pool: {pool}, idempotent: true}}\n"
    )
}

/// `pools` plus a Docker scaler of `deployment` on `network`.
fn config(pool: &str, network: &str, deployment: &str) -> String {
    let (image, _) = worker_image();
    format!(
        "{}scaler:\n  policies: '{{dir}}/policies'\n  runtime: docker\n  deployment: {deployment}\n  docker: {{image: '{image}', network: {network}, publish: true}}\n",
        pools(pool)
    )
}

/// `pool` held at `n` replicas; one unhealthy for 5 s is replaced.
fn policy(pool: &str, n: u32) -> String {
    format!(
        "pool: {pool}\nmin: {n}\nmax: {n}\ninterval: 500ms\nwindow: 2s\nmetrics: [{{metric: inflight_per_replica, target: 1000}}]\nscale_up: {{max_step: 3, period: 1s}}\nready_timeout: 60s\ndrain_timeout: 5s\nreplace_unhealthy_after: 5s\n"
    )
}

/// `gantry up` of the test deployment with `n` ready containers in `pool`.
async fn up(pool: &str, network: &str, n: u32) -> Gantry {
    let up = Gantry::up(&config(pool, network, &test_deployment()))
        .policy("p.yaml", &policy(pool, n))
        .start()
        .await;
    up.wait_up(pool, n as usize, 90).await;
    up
}

fn load(up: &Gantry) -> Load {
    Load::start(&format!("{}/v1/analyze", up.url), CLIENTS, BODY)
}

fn docker(args: &[&str]) -> String {
    sh(Command::new("docker").args(args))
}

/// Waits until `pool` has exactly `n` containers, none of them in `gone`,
/// all `n` up in the proxy; returns how long that took.
async fn whole(up: &Gantry, pool: &str, n: usize, gone: &[String]) -> Duration {
    let from = Instant::now();
    up.until(
        "the pool whole again",
        Duration::from_secs(90),
        || async move {
            let now = containers(pool);
            let up_now = up.count_up(pool).await;
            if now.len() == n && !now.iter().any(|c| gone.contains(c)) && up_now == n {
                Ok(())
            } else {
                Err(format!("containers {now:?}, {up_now} up"))
            }
        },
    )
    .await;
    from.elapsed()
}

/// `docker kill` (SIGKILL) of a worker container: retries hide it, the scaler replaces it.
pub async fn kill_a_container() -> Row {
    let _one = ONE_AT_A_TIME.lock().await;
    let (pool, network, _guard) = names("fdk");
    let up = up(&pool, &network, 2).await;
    let load = load(&up);
    load.more(UNDER_FAULT).await;
    let victim = containers(&pool).remove(0);
    docker(&["kill", &victim]);
    let recovery = whole(&up, &pool, 2, &[victim]).await;
    load.more(UNDER_FAULT).await;
    Row::new(
        "kill -9 of a worker container",
        load.stop().await,
        Some(recovery),
    )
}

/// `docker pause` of a container (alive, never answering): requests it
/// holds time out and go elsewhere; the runtime no longer counts a paused
/// container as running, so the scaler drains, stops and replaces it.
pub async fn pause_a_container() -> Row {
    let _one = ONE_AT_A_TIME.lock().await;
    let (pool, network, _guard) = names("fdp");
    let up = up(&pool, &network, 2).await;
    let load = load(&up);
    load.more(UNDER_FAULT).await;
    let victim = containers(&pool).remove(0);
    docker(&["pause", &victim]);
    let recovery = whole(&up, &pool, 2, std::slice::from_ref(&victim)).await;
    load.more(UNDER_FAULT).await;
    Row::new(
        "docker pause of a container",
        load.stop().await,
        Some(recovery),
    )
}

/// A relay of the Docker socket that the case can take away and give back:
/// gantry's `DOCKER_HOST` points at it.
struct SocketRelay {
    path: PathBuf,
    tasks: Option<JoinSet<()>>,
}

impl SocketRelay {
    fn new(dir: &Path) -> SocketRelay {
        let mut relay = SocketRelay {
            path: dir.join("docker.sock"),
            tasks: None,
        };
        relay.open();
        relay
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Listens and relays every connection to the engine's socket.
    fn open(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// The socket gone: the listener and every relayed connection closed.
    fn close(&mut self) {
        // Dropping the set aborts the accept loop, whose own set aborts the connections.
        self.tasks = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The Docker socket unreachable for 10 s (a container dies meanwhile): the
/// proxy serves on; once the socket is back the scaler reconciles.
pub async fn docker_socket_goes_away() -> Row {
    let _one = ONE_AT_A_TIME.lock().await;
    let (pool, network, _guard) = names("fds");
    let relay_dir = tempfile::tempdir().unwrap();
    let mut relay = SocketRelay::new(relay_dir.path());
    let up = Gantry::up(&config(&pool, &network, &test_deployment()))
        .policy("p.yaml", &policy(&pool, 2))
        .env("DOCKER_HOST", &relay.host())
        .start()
        .await;
    up.wait_up(&pool, 2, 90).await;
    let load = load(&up);
    load.more(UNDER_FAULT).await;
    relay.close();
    let victim = containers(&pool).remove(0);
    docker(&["kill", &victim]);
    let closed = Instant::now();
    up.until(
        "the dead container marked down",
        Duration::from_secs(30),
        || async { up.count_up(&pool).await == 1 },
    )
    .await;
    load.more(UNDER_FAULT).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(closed.elapsed())).await;
    relay.open();
    let recovery = whole(&up, &pool, 2, &[victim]).await;
    load.more(UNDER_FAULT).await;
    Row::new("Docker socket gone 10 s", load.stop().await, Some(recovery))
}

/// `gantry scaler` (apart from `gantry proxy`) killed while it starts
/// replicas and started again: it adopts what its first run started, with
/// no duplicate and no orphan container, and the proxy serves throughout.
pub async fn scaler_restarts_mid_scale_up() -> Row {
    let _one = ONE_AT_A_TIME.lock().await;
    let (pool, network, _guard) = names("fdr");
    let proxy = Gantry::proxy(&config(&pool, &network, &test_deployment()))
        .policy("p.yaml", &policy(&pool, 1))
        .start()
        .await;
    let mut scaler = proxy.scaler();
    proxy.wait_up(&pool, 1, 90).await;
    let load = load(&proxy);
    load.more(UNDER_FAULT).await;
    std::fs::write(proxy.policy_path("p.yaml"), policy(&pool, 4)).unwrap();
    proxy
        .until("a second container", Duration::from_secs(30), || async {
            containers(&pool).len() > 1
        })
        .await;
    scaler.crash();
    let crashed = Instant::now();
    scaler.respawn();
    whole(&proxy, &pool, 4, &[]).await;
    let recovery = crashed.elapsed();
    load.more(UNDER_FAULT).await;
    // Some evaluations later, still exactly the four, each a member once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut row = Row::new(
        "scaler restarted mid-scale-up",
        load.stop().await,
        Some(recovery),
    );
    let (ids, members) = (containers(&pool), proxy.members(&pool).await);
    let exited = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=gantry.pool={pool}"),
        "--filter",
        "status=exited",
    ]);
    if ids.len() != 4 || members.len() != 4 || !exited.trim().is_empty() {
        row.broken = Some(format!(
            "containers {ids:?}, members {members:?}, exited {exited:?}"
        ));
    }
    row
}

/// A second deployment with a pool of the same name, on the same engine and
/// network, scales up and down under the first one's load: neither touches
/// the other's containers.
pub async fn a_second_deployment() -> Row {
    let _one = ONE_AT_A_TIME.lock().await;
    let (pool, network, _guard) = names("fd2");
    let first = up(&pool, &network, 2).await;
    let ours = containers(&pool);
    let load = load(&first);
    load.more(UNDER_FAULT).await;
    let peer = test_peer_deployment();
    let mut second = Gantry::up(&config(&pool, &network, &peer))
        .policy("p.yaml", &policy(&pool, 2))
        .start()
        .await;
    second.wait_up(&pool, 2, 90).await;
    load.more(UNDER_FAULT).await;
    std::fs::write(second.policy_path("p.yaml"), policy(&pool, 1)).unwrap();
    second.wait_up(&pool, 1, 60).await;
    second
        .until(
            "the second deployment's extra container gone",
            Duration::from_secs(30),
            || async { deployment_containers(&pool, &peer).len() == 1 },
        )
        .await;
    load.more(UNDER_FAULT).await;
    second.terminate();
    let mut row = Row::new("second deployment, same pool name", load.stop().await, None);
    let mine = deployment_containers(&pool, &test_deployment());
    let members: Vec<String> = first
        .members(&pool)
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    if mine != ours || members.len() != 2 {
        row.broken = Some(format!(
            "ours {ours:?} became {mine:?}; members {members:?}"
        ));
    }
    row
}
