//! Dashboards and alert rules against a real Prometheus scraping the real proxy.
//!
//! Every expression in `dashboards/*.json` must be valid PromQL and return data
//! once traffic has flowed; every rule in `dashboards/alerts.yml` must load healthy.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::backend::{backends_yaml, Backend, Behaviour};
use crate::support::load::load;
use crate::support::{assert_alert_rules_loaded, client, free_port, Gantry};

struct Prometheus(Child, String);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus scraping the admin listener, and every pool member
/// found through the admin API's HTTP service discovery.
fn start_prometheus(dir: &std::path::Path, admin: &str) -> Prometheus {
    let port = free_port();
    let rules = std::fs::canonicalize("dashboards/alerts.yml").unwrap();
    let cfg = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: ['{}']\nscrape_configs:\n  - job_name: gantry\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: workers\n    http_sd_configs: [{{url: '{admin}/admin/targets', refresh_interval: 1s}}]\n",
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

fn dashboard_exprs(names: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in names {
        let path = std::path::Path::new("dashboards").join(name);
        {
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
            retry_after: None,
        },
    )
    .await;
    let g = Gantry::proxy(&format!(
        "pools:\n  p:\n    policy: round_robin\n    outlier: {{consecutive_failures: 3}}\n    backends:\n{}routes: [{{prefix: /, pool: p, idempotent: true}}]\n",
        backends_yaml(&[(&a, 1), (&bad, 1)])
    )).start()
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
    assert_every_query_has_data(&prom.1, &["gantry-proxy.json"]).await;
    assert_alert_rules_loaded(&prom.1).await;
}

async fn assert_every_query_has_data(prom: &str, dashboards: &[&str]) {
    let exprs = dashboard_exprs(dashboards);
    assert!(exprs.len() >= 7, "dashboards have {} queries", exprs.len());
    // Series appear as scrapes accumulate (rate() needs two samples): poll.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (panel, expr) in exprs {
        loop {
            let v = query(prom, &expr).await;
            assert_eq!(v["status"], "success", "{panel}: `{expr}` -> {v}");
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{panel}: `{expr}` returned no series"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `gantry up` with real `gantry worker` processes: Prometheus finds the
/// workers through service discovery and every worker and scaler panel shows data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_scaler_dashboards_show_a_running_stack() {
    let model = std::fs::canonicalize("models/phishing-url").unwrap();
    let config = format!(
        "pools:\n  analysis:\n    health: {{interval: 200ms}}\nroutes:\n  - {{prefix: /v1/analyze, pool: analysis, idempotent: true}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    args: [worker, --model, '{}']\n",
        model.display()
    );
    let policy = "pool: analysis\nmin: 2\nmax: 3\ninterval: 500ms\nmetrics: [{metric: inflight_per_replica, target: 50}]\n";
    let up = Gantry::up(&config)
        .policy("analysis.yaml", policy)
        .start()
        .await;
    up.wait_up("analysis", 2, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path(), &up.admin);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for url in [
            "http://paypal.com.secure-login.example.ru/",
            "https://www.wikipedia.org/wiki/Cat",
        ] {
            let r = c
                .post(format!("{}/v1/analyze", up.url))
                .json(&serde_json::json!({ "url": url }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let seen = query(
            &prom.1,
            "sum by (pool) (rate(gantry_worker_verdicts_total[1m]))",
        )
        .await;
        if seen["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the workers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verdicts = query(&prom.1, "sum by (verdict) (gantry_worker_verdicts_total)").await;
    assert_eq!(
        verdicts["data"]["result"].as_array().map_or(0, Vec::len),
        2,
        "{verdicts}"
    );
    assert_every_query_has_data(&prom.1, &["gantry-workers.json", "gantry-scaler.json"]).await;
}

/// The cache dashboard against a proxy whose cache evicts (tiny memory tier),
/// coalesces (identical concurrent misses) and has Redis down (circuit opens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_dashboard_shows_every_tier() {
    let a = Backend::start(
        "a",
        Behaviour {
            delay: Duration::from_millis(50),
            status: None,
            retry_after: None,
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dead_redis = free_port();
    let g = Gantry::proxy(&format!(
        "pools:\n  p:\n    backends:\n{}routes: [{{prefix: /, pool: p, idempotent: true, cache: {{ttl: 1m}}}}]\ncache:\n  memory: {{max_bytes: 4096}}\n  redis: {{url: 'redis://127.0.0.1:{dead_redis}'}}\n  disk: {{path: '{}'}}\n",
        backends_yaml(&[(&a, 1)]),
        dir.path().join("cache.redb").display()
    )).start()
    .await;
    let prom = start_prometheus(dir.path(), &g.admin);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    loop {
        round += 1;
        // Distinct bodies overflow the 4 KiB memory tier; repeats hit.
        for i in 0..40 {
            let body = format!("{{\"url\":\"http://example.com/{}\"}}", i % 20 + round * 7);
            let r = c
                .post(format!("{}/v1/analyze", g.url))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        // Identical concurrent misses wait for one backend request.
        let same = format!("{{\"url\":\"http://same.example/{round}\"}}");
        let waits = (0..8).map(|_| {
            c.post(format!("{}/v1/analyze", g.url))
                .body(same.clone())
                .send()
        });
        for r in futures::future::join_all(waits).await {
            assert_eq!(r.unwrap().status(), 200);
        }
        let seen = query(&prom.1, "sum(rate(gantry_cache_coalesced_total[5m]))").await;
        if seen["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus never saw the cache");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_every_query_has_data(&prom.1, &["gantry-cache.json"]).await;
}
