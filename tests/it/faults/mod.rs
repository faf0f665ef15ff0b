//! The fault-injection suite (`make test-faults`): faults under steady load through `gantry up`, every client-visible failure counted.
//!
//! Each case starts `gantry up` with the local runtime (fake workers that
//! misbehave on cue, see `support/fake_worker.rs`) or the Docker runtime
//! (`docker.rs`), runs closed-loop analysis requests, injects one fault,
//! waits for the system to recover, and counts the requests that failed. The
//! suite prints one table (case, requests, failed, recovery time) and
//! `faults: N cases, F failed requests`, and fails when any request failed or
//! a case's own check did not hold. It is `#[ignore]`d: `make test` does not
//! run it (about two minutes; the Docker socket case failed once in eight
//! runs, cause not found yet).

mod disk;
mod docker;

use std::time::{Duration, Instant};

use crate::support::load::{Load, Report};
use crate::support::redis_server::RedisServer;
use crate::support::{client, fake_worker, metric, signal, Gantry};

/// What the analysis route accepts.
const BODY: &str = r#"{"url":"http://paypal.com.secure-login.example.ru/"}"#;
/// Clients sending at once in every case.
const CLIENTS: usize = 4;
/// Requests a case lets through after a fault before it measures recovery.
const UNDER_FAULT: usize = 100;

/// One line of the table.
struct Row {
    case: &'static str,
    requests: usize,
    failed: Vec<String>,
    /// From the end of the fault (or the fault, when it has no end) until whole again.
    recovery: Option<Duration>,
    /// A check of the case that did not hold (a backend ejected, a retry sent...).
    broken: Option<String>,
    /// Why the case could not run here (it is listed, not counted as passed).
    skipped: Option<String>,
}

impl Row {
    fn new(case: &'static str, report: Report, recovery: Option<Duration>) -> Row {
        Row {
            case,
            requests: report.ok + report.failed.len(),
            failed: report.failed,
            recovery,
            broken: None,
            skipped: None,
        }
    }
}

/// A pool `pool` of `n` fake workers (answering after `delay_ms`) that take
/// faults from files in the test's directory; reads time out after 2 s.
fn config(pool: &str, delay_ms: u32) -> String {
    format!(
        "pools:\n  {pool}:\n    health: {{interval: 200ms}}\n    timeouts: {{read: 2s}}\n    drain_timeout: 5s\nroutes:\n  - {{prefix: /v1/analyze, pool: {pool}, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    program: '{}'\n    args: [--listen, '127.0.0.1:{{port}}', --fault-dir, '{{dir}}']\n    env: {{FAKE_DELAY_MS: '{delay_ms}', FAKE_EXIT_WITH_PARENT: '1'}}\n",
        fake_worker().display()
    )
}

/// A policy holding `pool` between `min` and `max` replicas (no load-driven scaling).
fn policy(pool: &str, min: u32, max: u32) -> String {
    format!(
        "pool: {pool}\nmin: {min}\nmax: {max}\ninterval: 500ms\nwindow: 2s\nmetrics: [{{metric: inflight_per_replica, target: 1000}}]\n"
    )
}

/// `gantry up` with `n` ready workers in `pool`.
async fn up(pool: &str, delay_ms: u32, n: u32) -> Gantry {
    let up = Gantry::up(&config(pool, delay_ms))
        .policy("p.yaml", &policy(pool, n, n))
        .start()
        .await;
    up.wait_up(pool, n as usize, 30).await;
    up
}

fn load(up: &Gantry) -> Load {
    Load::start(&format!("{}/v1/analyze", up.url), CLIENTS, BODY)
}

/// The port of the first member of `pool`.
async fn first_port(up: &Gantry, pool: &str) -> (String, u16) {
    let (addr, _) = up.members(pool).await.remove(0);
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    (addr, port)
}

/// The sum of the samples of `name` for `pool` in the proxy's metrics.
async fn counter(up: &Gantry, name: &str, pool: &str) -> f64 {
    let pool = format!("pool=\"{pool}\"");
    up.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&pool))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `kill -9` of a worker: retries hide it, the scaler replaces it.
async fn kill_a_worker() -> Row {
    let up = up("fk", 20, 2).await;
    let load = load(&up);
    load.more(UNDER_FAULT).await;
    let victim = up.children("fake")[0];
    signal(victim, sysinfo::Signal::Kill);
    let killed = Instant::now();
    let up_ref = &up;
    up.until("a replacement", Duration::from_secs(30), || async move {
        let now = up_ref.children("fake");
        now.len() == 2 && !now.contains(&victim) && up_ref.count_up("fk").await == 2
    })
    .await;
    let recovery = killed.elapsed();
    load.more(UNDER_FAULT).await;
    Row::new("kill -9 of a worker", load.stop().await, Some(recovery))
}

/// A worker answering 503 + Retry-After for a while: retried elsewhere, never ejected.
async fn a_worker_sheds() -> Row {
    let up = up("fs", 20, 2).await;
    let load = load(&up);
    load.more(UNDER_FAULT).await;
    let (addr, port) = first_port(&up, "fs").await;
    let file = up.dir().join(format!("shed-{port}"));
    std::fs::write(&file, "").unwrap();
    load.more(2 * UNDER_FAULT).await;
    std::fs::remove_file(&file).unwrap();
    let ended = Instant::now();
    let before = up.served("fs").await;
    let shedder = addr.clone();
    let up_ref = &up;
    up.until("the shedder serving again", Duration::from_secs(30), || {
        let (before, shedder) = (before.clone(), shedder.clone());
        async move {
            let now = up_ref.served("fs").await;
            let get = |m: &std::collections::HashMap<String, f64>| m.get(&shedder).copied();
            if get(&now).unwrap_or(0.0) > get(&before).unwrap_or(0.0) {
                Ok(())
            } else {
                let pools = up_ref.pools().await.map(|p| p.to_string());
                Err(format!("{shedder}: {before:?} -> {now:?}; {pools:?}"))
            }
        }
    })
    .await;
    let recovery = ended.elapsed();
    let mut row = Row::new(
        "worker sheds (503 + Retry-After)",
        load.stop().await,
        Some(recovery),
    );
    let ejected = counter(&up, "gantry_ejections_total", "fs").await;
    if ejected > 0.0 {
        row.broken = Some(format!("{ejected} ejections of a shedding worker"));
    }
    row
}

/// A worker that accepts and never answers, `/health` included: the proxy
/// stops sending to it; what it held is retried elsewhere.
async fn a_worker_hangs() -> Row {
    let up = up("fh", 20, 2).await;
    let load = load(&up);
    load.more(UNDER_FAULT).await;
    let (addr, port) = first_port(&up, "fh").await;
    let file = up.dir().join(format!("hang-{port}"));
    std::fs::write(&file, "").unwrap();
    let up_ref = &up;
    let hung = addr.clone();
    up.until(
        "the hung worker out of rotation",
        Duration::from_secs(30),
        || {
            let hung = hung.clone();
            async move {
                up_ref
                    .members("fh")
                    .await
                    .iter()
                    .any(|(a, s)| *a == hung && s != "up")
            }
        },
    )
    .await;
    load.more(UNDER_FAULT).await;
    std::fs::remove_file(&file).unwrap();
    let ended = Instant::now();
    up.until("both workers up", Duration::from_secs(30), || async move {
        up_ref.count_up("fh").await == 2
    })
    .await;
    let recovery = ended.elapsed();
    load.more(UNDER_FAULT).await;
    Row::new(
        "worker accepts, never answers",
        load.stop().await,
        Some(recovery),
    )
}

/// Redis (the L2 tier) killed under load and restarted: requests go on
/// without it (the breaker opens), and it is used again once back.
async fn redis_goes_away() -> Row {
    let mut redis = RedisServer::start();
    let yaml = config("fr", 20).replace(
        "idempotent: true}",
        "idempotent: true, cache: {ttl: 5m}}",
    ) + &format!(
        "cache:\n  redis: {{url: '{}', command_timeout: 100ms}}\n  disk: {{path: '{{dir}}/cache.redb'}}\n",
        redis.url()
    );
    let up = Gantry::up(&yaml)
        .policy("p.yaml", &policy("fr", 2, 2))
        .start()
        .await;
    up.wait_up("fr", 2, 30).await;
    let varied = r#"{"url":"http://example.com/{n}"}"#;
    let load = Load::start(&format!("{}/v1/analyze", up.url), CLIENTS, varied);
    load.more(UNDER_FAULT).await;
    redis.kill();
    let circuit = "gantry_cache_redis_circuit_state ";
    let up_ref = &up;
    up.until(
        "the Redis circuit open",
        Duration::from_secs(30),
        || async move { metric(&up_ref.metrics().await, circuit) == 2.0 },
    )
    .await;
    load.more(UNDER_FAULT).await;
    redis.restart();
    let back = Instant::now();
    up.until(
        "the Redis circuit closed",
        Duration::from_secs(30),
        || async move { metric(&up_ref.metrics().await, circuit) == 0.0 },
    )
    .await;
    let recovery = back.elapsed();
    let answered = redis_answers(&up).await;
    load.more(UNDER_FAULT).await;
    let mut row = Row::new(
        "Redis (L2) killed, restarted",
        load.stop().await,
        Some(recovery),
    );
    if redis_answers(&up).await <= answered {
        row.broken = Some("Redis not looked up again once back".into());
    }
    row
}

/// L2 lookups Redis answered (hit or miss), from the proxy's metrics.
async fn redis_answers(up: &Gantry) -> f64 {
    up.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("gantry_cache_lookups_total{") && l.contains("tier=\"l2\""))
        .filter(|l| l.contains("result=\"hit\"") || l.contains("result=\"miss\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A policy file replaced by garbage (the old policy stays), then by a valid edit (it applies).
async fn a_policy_turns_to_garbage() -> Row {
    let up = Gantry::up(&config("fp", 20))
        .policy("p.yaml", &policy("fp", 2, 3))
        .start()
        .await;
    up.wait_up("fp", 2, 30).await;
    let load = load(&up);
    load.more(UNDER_FAULT).await;
    let path = up.policy_path("p.yaml");
    let reports = |up: &Gantry| up.log().matches("Invalid policy").count();
    let before = reports(&up);
    std::fs::write(&path, "pool: fp\nmin: [ {{ not yaml\n\0\0").unwrap();
    let up_ref = &up;
    up.until(
        "the garbage reported",
        Duration::from_secs(10),
        || async move { reports(up_ref) > before },
    )
    .await;
    let seen = up.decisions("fp").await.last().cloned();
    let later = up
        .until("a later evaluation", Duration::from_secs(10), || {
            let seen = seen.clone();
            async move {
                let last = up_ref.decisions("fp").await.last().cloned();
                last.filter(|l| Some(l) != seen.as_ref())
            }
        })
        .await;
    let mut broken = None;
    if later.to != 2 || up.count_up("fp").await != 2 {
        broken = Some(format!("the old policy did not stay: {later:?}"));
    }
    std::fs::write(&path, policy("fp", 3, 3)).unwrap();
    let edited = Instant::now();
    up.wait_up("fp", 3, 30).await;
    let recovery = edited.elapsed();
    load.more(UNDER_FAULT).await;
    let mut row = Row::new(
        "policy -> garbage -> valid edit",
        load.stop().await,
        Some(recovery),
    );
    row.broken = broken;
    row
}

/// A burst of clients that hang up with requests in flight: no backend is
/// ejected or marked down, no request is retried.
async fn clients_hang_up() -> Row {
    let up = up("fc", 200, 2).await;
    let load = load(&up);
    load.more(20).await;
    let retries = counter(&up, "gantry_retries_total", "fc").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let url = format!("{}/v1/analyze", up.url);
    let burst = (0..32).map(|_| impatient.post(&url).body(BODY).send());
    let gone = futures::future::join_all(burst).await;
    let hung_up = gone.iter().filter(|r| r.is_err()).count();
    load.more(40).await;
    let row_report = load.stop().await;
    let mut row = Row::new("clients hang up mid-request", row_report, None);
    let retried = counter(&up, "gantry_retries_total", "fc").await - retries;
    let ejected = counter(&up, "gantry_ejections_total", "fc").await;
    let members = up.members("fc").await;
    if hung_up < 32 || retried > 0.0 || ejected > 0.0 || members.iter().any(|m| m.1 != "up") {
        row.broken = Some(format!(
            "{hung_up} of 32 hung up; {retried} retried, {ejected} ejected; {members:?}"
        ));
    }
    row
}

/// SIGTERM to `gantry up` with requests in flight: every one completes.
async fn sigterm_under_load() -> Row {
    let mut up = up("ft", 1000, 2).await;
    let c = client();
    let url = format!("{}/v1/analyze", up.url);
    let sent: Vec<_> = (0..8)
        .map(|_| tokio::spawn(c.post(&url).body(BODY).send()))
        .collect();
    let up_ref = &up;
    up.until(
        "8 requests in flight",
        Duration::from_secs(10),
        || async move {
            let pools = up_ref.pools().await.unwrap_or_default();
            let inflight: u64 = pools
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["name"] == "ft")
                .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
                .filter_map(|b| b["inflight"].as_u64())
                .sum();
            inflight == 8
        },
    )
    .await;
    up.signal(sysinfo::Signal::Term);
    let termed = Instant::now();
    let mut report = Report::default();
    for s in sent {
        match s.await.unwrap() {
            Ok(r) if r.status() == 200 => report.ok += 1,
            Ok(r) => report.failed.push(format!("status {}", r.status())),
            Err(e) => report.failed.push(e.to_string()),
        }
    }
    let status = up.wait_exit(Duration::from_secs(30)).await;
    let mut row = Row::new(
        "SIGTERM to gantry up, 8 in flight",
        report,
        Some(termed.elapsed()),
    );
    if !status.success() {
        row.broken = Some(format!("gantry up exited with {status}"));
    }
    row
}

fn print(rows: &[Row]) -> usize {
    println!("\n| case | requests | failed | recovery |\n|---|---:|---:|---:|");
    for r in rows {
        let recovery = r
            .recovery
            .map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        if let Some(why) = &r.skipped {
            println!("| {} | skipped: {why} | | |", r.case);
            continue;
        }
        println!(
            "| {} | {} | {} | {recovery} |",
            r.case,
            r.requests,
            r.failed.len()
        );
    }
    let failed: usize = rows.iter().map(|r| r.failed.len()).sum();
    let ran = rows.iter().filter(|r| r.skipped.is_none()).count();
    println!("faults: {ran} cases, {failed} failed requests");
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow; run by `make test-faults`"]
async fn fault_injection_suite() {
    let rows = vec![
        kill_a_worker().await,
        a_worker_sheds().await,
        a_worker_hangs().await,
        redis_goes_away().await,
        a_policy_turns_to_garbage().await,
        clients_hang_up().await,
        disk::l3_full_then_read_only().await,
        docker::kill_a_container().await,
        docker::pause_a_container().await,
        docker::docker_socket_goes_away().await,
        docker::scaler_restarts_mid_scale_up().await,
        docker::a_second_deployment().await,
        sigterm_under_load().await,
    ];
    let failed = print(&rows);
    for r in &rows {
        if !r.failed.is_empty() {
            eprintln!("{}: {:?}", r.case, &r.failed[..r.failed.len().min(5)]);
        }
    }
    let broken: Vec<String> = rows
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.case, r.broken.as_ref()?)))
        .collect();
    assert!(
        failed == 0 && broken.is_empty(),
        "{failed} failed requests; {broken:?}"
    );
}
