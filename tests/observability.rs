//! Dashboards and alert rules against a real Prometheus scraping the real proxy.
//!
//! Every expression in `dashboards/*.json` must be valid PromQL and return data
//! once traffic has flowed; every rule in `dashboards/alerts.yml` must load healthy.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{backends_yaml, client, free_port, load, Backend, Behaviour, Gantry};

struct Prometheus(Child, String);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &std::path::Path, admin: &str) -> Prometheus {
    let port = free_port();
    let rules = std::fs::canonicalize("dashboards/alerts.yml").unwrap();
    let cfg = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: ['{}']\nscrape_configs:\n  - job_name: gantry\n    static_configs: [{{targets: ['{}']}}]\n",
        rules.display(),
        admin.trim_start_matches("http://")
    );
    std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("`prometheus` must be installed (.ci/run installs it from apt)");
    Prometheus(child, format!("http://127.0.0.1:{port}"))
}

async fn query(prom: &str, expr: &str) -> serde_json::Value {
    let r = client()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await;
    match r {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("dashboards").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let d: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for p in d["panels"].as_array().unwrap() {
                for t in p["targets"].as_array().unwrap() {
                    out.push((
                        format!("{}: {}", path.display(), p["title"]),
                        t["expr"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_rules_load() {
    let a = Backend::start("a", Behaviour::default()).await;
    let bad = Backend::start(
        "bad",
        Behaviour {
            delay: Duration::ZERO,
            status: Some(503),
        },
    )
    .await;
    let g = Gantry::start(&format!(
        "pools:\n  p:\n    policy: round_robin\n    outlier: {{consecutive_failures: 3}}\n    backends:\n{}routes: [{{prefix: /, pool: p, idempotent: true}}]\n",
        backends_yaml(&[(&a, 1), (&bad, 1)])
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path(), &g.admin);
    let url = format!("{}/x", g.url);
    // Traffic across several scrapes so rate() has two samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        load(&url, 50, 4).await;
        let up = query(&prom.1, "sum(rate(gantry_requests_total[1m]))").await;
        if up["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the proxy"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "dashboards have {} queries", exprs.len());
    for (panel, expr) in exprs {
        let v = query(&prom.1, &expr).await;
        assert_eq!(v["status"], "success", "{panel}: `{expr}` -> {v}");
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(n > 0, "{panel}: `{expr}` returned no series");
    }
    let rules: serde_json::Value = client()
        .get(format!("{}/api/v1/rules", prom.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(loaded.len() >= 6, "{rules}");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{rules}");
}
