//! The Docker runtime in process against the real engine: two deployments with a pool of the same name leave each other alone, the containers it starts run hardened with a worker that still answers, leftovers never started are cleaned, and warm spares keep their role across a restart until promoted.
//!
//! Containers belong to the test-only deployments `make clean-containers`
//! is limited to, and a guard removes them (by their unique pool label)
//! however the test ends.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gantry::scaler::config::DockerConfig;
use gantry::scaler::runtime::docker::DockerRuntime;
use gantry::scaler::runtime::{Death, Replica, ReplicaSpec, Runtime};
use tokio::sync::broadcast;

use crate::support::docker::{
    names, real_worker_image, test_deployment, test_peer_deployment, worker_image, ONE_AT_A_TIME,
};
use crate::support::worker::assert_golden_answer;
use crate::support::{sh, until};

/// A runtime of `deployment` publishing on loopback, with its event watch on.
fn runtime(deployment: &str, image: &str, network: &str) -> Arc<DockerRuntime> {
    let config = DockerConfig {
        image: image.to_string(),
        network: network.to_string(),
        publish: true,
        ..DockerConfig::default()
    };
    let rt = Arc::new(DockerRuntime::new(config, deployment));
    rt.watch_events();
    rt
}

fn spec(pool: &str) -> ReplicaSpec {
    ReplicaSpec {
        pool: pool.to_string(),
        warm: false,
        cpus: None,
        memory_mib: 256,
        pids: 128,
        model: None,
    }
}

async fn ids(rt: &DockerRuntime, pool: &str) -> Vec<String> {
    let mut ids: Vec<String> = rt
        .list(pool)
        .await
        .unwrap()
        .serving
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

/// `docker inspect` of a container as JSON, `None` when it does not exist.
fn inspect(id: &str) -> Option<serde_json::Value> {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v[0].clone())
}

fn running(id: &str) -> bool {
    inspect(id).is_some_and(|v| v["State"]["Running"] == true)
}

/// The next death reported, waiting at most a minute.
async fn next_death(deaths: &mut broadcast::Receiver<Death>) -> Death {
    tokio::time::timeout(Duration::from_secs(60), deaths.recv())
        .await
        .expect("no death reported within a minute")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_with_the_same_pool_never_touch_each_others_containers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (pool, network, _guard) = names("dd");
    let a = runtime(&test_deployment(), &image, &network);
    let b = runtime(&test_peer_deployment(), &image, &network);
    let (mut a_deaths, mut b_deaths) = (a.deaths(), b.deaths());
    let a1 = a.start(&spec(&pool)).await.unwrap();
    let a2 = a.start(&spec(&pool)).await.unwrap();
    let b1 = b.start(&spec(&pool)).await.unwrap();

    // Each lists (so adopts and drains) only its own.
    let mut mine = vec![a1.id.clone(), a2.id.clone()];
    mine.sort();
    assert_eq!(ids(&a, &pool).await, mine);
    assert_eq!(ids(&b, &pool).await, std::slice::from_ref(&b1.id));

    // Neither stops the other's, even when handed its replica.
    let refused = b.stop(&a1).await.unwrap_err().to_string();
    assert!(refused.contains("refusing to stop"), "{refused}");
    assert!(a.stop(&b1).await.is_err());
    assert!(running(&a1.id) && running(&b1.id));

    // An exited container is cleaned up by its own deployment only.
    let stop = Command::new("docker")
        .args(["stop", "-t", "0", &a2.id])
        .output();
    assert!(stop.unwrap().status.success());
    assert_eq!(ids(&b, &pool).await, std::slice::from_ref(&b1.id));
    assert!(
        inspect(&a2.id).is_some(),
        "the peer removed our exited container"
    );
    assert_eq!(next_death(&mut a_deaths).await.replica.id, a2.id);
    assert_eq!(ids(&a, &pool).await, std::slice::from_ref(&a1.id));
    assert!(inspect(&a2.id).is_none(), "our exited container was left");

    // Deaths are reported to their own deployment only: the first one the
    // peer hears of is its own container's, not ours from before.
    b.stop(&b1).await.unwrap();
    assert_eq!(next_death(&mut b_deaths).await.replica.id, b1.id);
    assert!(running(&a1.id), "the peer's stop touched our container");
    a.stop(&a1).await.unwrap();
    assert!(inspect(&a1.id).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_containers_run_hardened_and_the_worker_still_answers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _image_guard) = real_worker_image();
    let (pool, network, _guard) = names("dh");
    let rt = runtime(&test_deployment(), &image, &network);
    let replica = rt.start(&spec(&pool)).await.unwrap();
    wait_ready(&rt, &replica).await;

    let info = inspect(&replica.id).unwrap();
    let host = &info["HostConfig"];
    assert_eq!(info["Config"]["User"], "65534:65534");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["CapAdd"], serde_json::Value::Null);
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges"])
    );
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["PidsLimit"], 128);
    assert_eq!(host["Memory"], 256 << 20);
    assert_eq!(host["MemorySwap"], 256 << 20, "no swap on top of the limit");
    assert_eq!(
        host["NetworkMode"],
        network.as_str(),
        "not the host's network"
    );
    assert!(host["Tmpfs"]["/tmp"].as_str().unwrap().contains("noexec"));
    assert_eq!(
        info["Config"]["Labels"]["gantry.deployment"],
        test_deployment().as_str()
    );

    // The model and ONNX Runtime load as nobody, from a read-only root.
    assert_golden_answer(&format!("http://{}", replica.addr)).await;
    rt.stop(&replica).await.unwrap();
}

/// A start cut short (gantry killed between create and start) leaves a container
/// in `created`: the next listing removes it like an exited one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_created_but_never_started_is_removed_when_listed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (pool, network, _guard) = names("dn");
    let rt = runtime(&test_deployment(), &image, &network);
    let replica = rt.start(&spec(&pool)).await.unwrap();
    let mut create = Command::new("docker");
    create.args(["create", "--name", &format!("{pool}-created")]);
    for label in [
        "gantry.managed=true".to_string(),
        format!("gantry.deployment={}", test_deployment()),
        format!("gantry.pool={pool}"),
    ] {
        create.args(["--label", &label]);
    }
    let created = sh(create.arg(&image)).trim().to_string();
    assert_eq!(inspect(&created).unwrap()["State"]["Status"], "created");
    assert_eq!(ids(&rt, &pool).await, std::slice::from_ref(&replica.id));
    assert!(
        inspect(&created).is_none(),
        "the never-started container was left"
    );
    assert!(running(&replica.id), "the running replica was touched");
    rt.stop(&replica).await.unwrap();
}

/// A warm spare is listed apart from the serving replicas, by this runtime
/// and by a new one (a restarted scaler); promoting it renames it, keeps its
/// id and address, and only its own deployment can do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_spare_keeps_its_role_across_a_restart_until_promoted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (image, _) = worker_image();
    let (pool, network, _guard) = names("dw");
    let rt = runtime(&test_deployment(), &image, &network);
    let serving = rt.start(&spec(&pool)).await.unwrap();
    let spare = rt
        .start(&ReplicaSpec {
            warm: true,
            ..spec(&pool)
        })
        .await
        .unwrap();
    let name = |id: &str| inspect(id).unwrap()["Name"].as_str().unwrap().to_string();
    assert!(
        name(&spare.id).starts_with(&format!("/gantry-{pool}-warm-")),
        "{}",
        name(&spare.id)
    );

    let restarted = runtime(&test_deployment(), &image, &network);
    for r in [&rt, &restarted] {
        let listing = r.list(&pool).await.unwrap();
        assert_eq!(listing.serving, std::slice::from_ref(&serving));
        assert_eq!(listing.warm, std::slice::from_ref(&spare));
    }

    let peer = runtime(&test_peer_deployment(), &image, &network);
    assert!(
        peer.promote(&spare).await.is_err(),
        "the peer promoted ours"
    );
    assert!(
        restarted.promote(&serving).await.is_err(),
        "a serving replica was promoted"
    );

    restarted.promote(&spare).await.unwrap();
    let suffix = name(&spare.id).rsplit('-').next().unwrap().to_string();
    assert_eq!(name(&spare.id), format!("/gantry-{pool}-{suffix}"));
    let listing = rt.list(&pool).await.unwrap();
    assert!(listing.warm.is_empty(), "{listing:?}");
    let mut both = vec![serving.clone(), spare.clone()];
    both.sort();
    let mut got = listing.serving;
    got.sort();
    assert_eq!(got, both, "same id and address once promoted");
    assert!(rt.promote(&spare).await.is_err(), "promoted twice");
    for r in [&serving, &spare] {
        rt.stop(r).await.unwrap();
    }
}

/// Waits for `/ready`; fails at once, with the logs, if the container exits.
async fn wait_ready(rt: &DockerRuntime, replica: &Replica) {
    until("ready container", Duration::from_secs(60), || async move {
        if rt.ready(replica).await {
            return true;
        }
        if !running(&replica.id) {
            let logs = Command::new("docker")
                .args(["logs", &replica.id])
                .output()
                .unwrap();
            panic!(
                "the container exited: {}",
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        false
    })
    .await;
}
