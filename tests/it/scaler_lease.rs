//! One scaler in charge (`scaler.lease`): two `gantry scaler` processes for one proxy and a real Redis; only the lease holder acts, and the standby takes over when the leader is killed.

use std::time::Duration;

use crate::support::redis_server::RedisServer;
use crate::support::{client, fake_worker, Gantry};

/// A pool `pool` scaled by local fake workers, with a lease of `ttl` in `redis`.
fn config(pool: &str, redis: &str, ttl: &str) -> String {
    format!(
        "pools:\n  {pool}:\n    health: {{interval: 200ms}}\n    drain_timeout: 5s\nroutes:\n  - {{prefix: /, pool: {pool}, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    program: '{}'\n    args: [--listen, '127.0.0.1:{{port}}']\n    env: {{FAKE_DELAY_MS: '5', FAKE_EXIT_WITH_PARENT: '1'}}\n  lease: {{redis: '{redis}', ttl: {ttl}}}\n",
        fake_worker().display()
    )
}

/// `GET /admin/scaler` of a standalone scaler: its journal of `pool`.
async fn journal(scaler: &Gantry, pool: &str) -> Option<gantry::admin::PoolJournal> {
    let r = client()
        .get(format!("{}/admin/scaler", scaler.admin))
        .send()
        .await
        .ok()?;
    let mut all: gantry::admin::ScalerJournal = r.json().await.ok()?;
    all.remove(pool)
}

async fn leading(scaler: &Gantry, pool: &str) -> Option<bool> {
    Some(journal(scaler, pool).await?.leader?.leading)
}

/// A proxy and two `gantry scaler` processes for pool `ls` with a lease of
/// `ttl`, once one leads with both workers: (proxy, leader, standby).
async fn two_scalers(redis: &RedisServer, ttl: &str) -> (Gantry, Gantry, Gantry) {
    let policy = "pool: ls\nmin: 2\nmax: 3\ninterval: 300ms\nwindow: 2s\nmetrics: [{metric: inflight_per_replica, target: 2}]\n";
    let proxy = Gantry::proxy(&config("ls", &redis.url(), ttl))
        .policy("ls.yaml", policy)
        .start()
        .await;
    let a = proxy.scaler_logging_to("scaler-a.log");
    let b = proxy.scaler_logging_to("scaler-b.log");
    let (a_ref, b_ref, p_ref) = (&a, &b, &proxy);
    proxy
        .until(
            "one leader, one standby, two workers",
            Duration::from_secs(30),
            || async move {
                let (la, lb) = (leading(a_ref, "ls").await, leading(b_ref, "ls").await);
                let (wa, wb) = (a_ref.children("fake").len(), b_ref.children("fake").len());
                let up = p_ref.count_up("ls").await;
                if matches!(
                    (la, lb),
                    (Some(true), Some(false)) | (Some(false), Some(true))
                ) && wa + wb == 2
                    && up == 2
                {
                    Ok(())
                } else {
                    Err(format!(
                        "leading a {la:?} b {lb:?}; workers a {wa} b {wb}; up {up}"
                    ))
                }
            },
        )
        .await;
    if leading(&a, "ls").await == Some(true) {
        (proxy, a, b)
    } else {
        (proxy, b, a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_acts_and_the_standby_takes_over() {
    let redis = RedisServer::start();
    let (proxy, leader, standby) = two_scalers(&redis, "1s").await;
    // Let both run a while: the standby never starts, stops or decides anything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = journal(&standby, "ls").await.unwrap();
    assert!(
        seen.decisions.is_empty(),
        "the standby decided: {:?}",
        seen.decisions
    );
    assert_eq!(
        standby.children("fake").len(),
        0,
        "the standby started workers"
    );
    let leader_id = journal(&leader, "ls").await.unwrap().leader.map(|l| l.me);
    assert_eq!(
        seen.leader.and_then(|l| l.leader),
        leader_id,
        "the standby names the leader"
    );
    assert!(standby.log().contains("Standing by"), "{}", standby.tail());
    takeover(&proxy, leader, standby, Kill::Crash).await;
}

/// A leader stopped with SIGTERM releases the lease, so the standby takes
/// over: with a 60 s ttl (renewed every 20 s) nothing else could hand it over
/// within the 30 s the takeover is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_releases_the_lease() {
    let redis = RedisServer::start();
    let (proxy, leader, standby) = two_scalers(&redis, "60s").await;
    takeover(&proxy, leader, standby, Kill::Term).await;
}

/// How the leader goes.
enum Kill {
    /// SIGKILL: no release, the lease expires.
    Crash,
    /// SIGTERM: a clean stop that releases the lease.
    Term,
}

/// Stops `leader` as `kill` says and checks that `standby` takes over and
/// brings the pool back to `min`.
async fn takeover(proxy: &Gantry, mut leader: Gantry, standby: Gantry, kill: Kill) {
    match kill {
        Kill::Crash => leader.crash(),
        Kill::Term => {
            leader.terminate();
            let log = leader.log();
            assert!(log.contains("Scaler lease released"), "{}", leader.tail());
        }
    }
    let (s, p) = (&standby, proxy);
    proxy
        .until(
            "the standby leads with two workers",
            Duration::from_secs(30),
            || async move {
                let l = leading(s, "ls").await;
                let w = s.children("fake").len();
                let up = p.count_up("ls").await;
                if l == Some(true) && w == 2 && up == 2 {
                    Ok(())
                } else {
                    Err(format!("leading {l:?}; workers {w}; up {up}"))
                }
            },
        )
        .await;
    assert!(
        standby.log().contains("Leading: this scaler acts"),
        "{}",
        standby.tail()
    );
}
