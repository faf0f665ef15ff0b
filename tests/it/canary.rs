//! Model versions side by side: a route's canary sends an exact share of its requests to a second pool serving another model version, each version's verdicts stay in its own cache entries, and each worker says which version it serves.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::support::gantry::command;
use crate::support::worker::{model_dir, ort_lib};
use crate::support::Gantry;

/// A `gantry worker` process serving `model` on a free port, killed on drop.
struct WorkerProcess {
    child: Child,
    addr: String,
}

impl WorkerProcess {
    fn start(model: &std::path::Path) -> WorkerProcess {
        let mut child = command()
            .args(["worker", "--listen", "127.0.0.1:0", "--model"])
            .arg(model)
            .arg("--ort-lib")
            .arg(ort_lib())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("gantry worker listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        WorkerProcess { child, addr }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped model under another version: a copy whose `model.json` says `version`.
fn model_copy(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let out = dir.join("candidate");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
    }
    let spec = out.join("model.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
    json["version"] = version.into();
    std::fs::write(&spec, json.to_string()).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_gets_exactly_its_share_and_never_a_cached_verdict_of_the_other_version() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = model_copy(dir.path(), "1.2.0-candidate");
    let stable = WorkerProcess::start(&model_dir());
    let canary = WorkerProcess::start(&candidate);
    let yaml = format!(
        "pools:
  stable: {{health: {{interval: 100ms, rise: 1}}, backends: [{{addr: '{}'}}]}}
  candidate: {{health: {{interval: 100ms, rise: 1}}, backends: [{{addr: '{}'}}]}}
routes:
  - prefix: /v1/analyze
    pool: stable
    idempotent: true
    canary: {{pool: candidate, weight: 20}}
    cache: {{ttl: 60s}}
cache:
  disk: {{enabled: false}}
",
        stable.addr, canary.addr
    );
    let g = Gantry::proxy(&yaml).start().await;
    g.until(
        "both pools are up",
        std::time::Duration::from_secs(20),
        || async {
            match (g.count_up("stable").await, g.count_up("candidate").await) {
                (1, 1) => Ok(()),
                n => Err(format!("{n:?}")),
            }
        },
    )
    .await;
    let client = crate::support::client();
    // 100 requests for one URL: the first of each version is a miss, the
    // rest hits; a canary request must get the candidate's verdict even
    // though the stable one's is cached (and the other way round).
    let mut seen: BTreeMap<(String, String), u32> = BTreeMap::new();
    for _ in 0..100 {
        let r = client
            .post(format!("{}/v1/analyze", g.url))
            .body(r#"{"url":"http://paypal.com.secure-login.example.ru/"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // `HIT-L1`, `HIT-L3`... count as hits.
        let cache = r.headers()["x-cache"].to_str().unwrap();
        let cache = cache.split('-').next().unwrap().to_string();
        let v: serde_json::Value = r.json().await.unwrap();
        let model = v["model"].as_str().unwrap().to_string();
        *seen.entry((model, cache)).or_default() += 1;
    }
    let count = |m: &str, c: &str| seen.get(&(m.to_string(), c.to_string())).copied();
    assert_eq!(
        count("phishing-url@1.2.0-candidate", "MISS"),
        Some(1),
        "{seen:?}"
    );
    assert_eq!(
        count("phishing-url@1.2.0-candidate", "HIT"),
        Some(19),
        "{seen:?}"
    );
    assert_eq!(count("phishing-url@1.2.0", "MISS"), Some(1), "{seen:?}");
    assert_eq!(count("phishing-url@1.2.0", "HIT"), Some(79), "{seen:?}");

    // Each worker names its version in /metrics (shown under it on the status page).
    for (server, model) in [
        (&stable, "phishing-url@1.2.0"),
        (&canary, "phishing-url@1.2.0-candidate"),
    ] {
        let text = client
            .get(format!("http://{}/metrics", server.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!("gantry_worker_model_info{{model=\"{model}\"}} 1")),
            "{text}"
        );
    }
}

/// The same split with both pools scaled by the local runtime: the
/// candidate pool's policy names its model directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policys_model_starts_the_canary_pools_workers_on_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = model_copy(dir.path(), "1.2.0-candidate");
    let config = format!(
        "pools:
  stable: {{health: {{interval: 200ms}}}}
  candidate: {{health: {{interval: 200ms}}}}
routes:
  - {{prefix: /v1/analyze, pool: stable, canary: {{pool: candidate, weight: 50}}}}
scaler:
  policies: '{{dir}}/policies'
  runtime: local
  local:
    args: [worker, --model, '{}']
",
        model_dir().display()
    );
    let policy = |pool: &str, extra: &str| {
        format!("pool: {pool}\nmin: 1\nmax: 1\nmetrics: [{{metric: inflight_per_replica, target: 8}}]\nready_timeout: 60s\n{extra}")
    };
    let up = Gantry::up(&config)
        .policy("stable.yaml", &policy("stable", ""))
        .policy(
            "candidate.yaml",
            &policy("candidate", &format!("model: '{}'\n", candidate.display())),
        )
        .start()
        .await;
    up.wait_up("stable", 1, 60).await;
    up.wait_up("candidate", 1, 60).await;
    let mut models = BTreeMap::new();
    for _ in 0..10 {
        let v: serde_json::Value = crate::support::client()
            .post(format!("{}/v1/analyze", up.url))
            .body(r#"{"url":"http://example.com/"}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        *models
            .entry(v["model"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        models,
        BTreeMap::from([
            ("phishing-url@1.2.0".to_string(), 5),
            ("phishing-url@1.2.0-candidate".to_string(), 5)
        ])
    );
}
