//! The status page in a real browser: Debian's headless `chromium` against `gantry up` with
//! real workers and traffic; the page's script has run when the DOM is read.
//!
//! `make screenshot` runs the ignored `screenshot` test: longer traffic, so the charts have a
//! few minutes of samples, then `docs/status.png` (laptop, light) and, for looking at, the
//! phone and dark variants in `target/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::load::Load;
use crate::support::{client, until, Gantry};

/// Longest one chromium run may take (it is killed after).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
/// Virtual time the page gets before the DOM is read or the picture taken: a few polls.
const VIRTUAL_TIME_MS: u32 = 6000;

/// How the browser looks at the page.
#[derive(Clone, Copy)]
struct View {
    width: u32,
    height: u32,
    dark: bool,
}

const LAPTOP: View = View {
    width: 1366,
    height: 1900,
    dark: false,
};

/// Debian names the binary `chromium`; others `chromium-browser`.
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        let found = std::process::Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name;
        }
    }
    panic!("`chromium` must be installed (scripts/install-deps.sh test installs it)")
}

/// Runs headless chromium on `url` with `args`; returns its stdout.
async fn browse(url: &str, view: View, args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--disable-extensions",
        "--disable-background-networking",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--window-size={},{}", view.width, view.height))
    .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
    .arg(format!(
        "--blink-settings=preferredColorScheme={}",
        if view.dark { 0 } else { 1 }
    ))
    .args(args)
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(BROWSER_TIMEOUT, cmd.output())
        .await
        .expect("chromium finished in time")
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Saves a picture of `url` as seen in `view` to `path`.
async fn picture(url: &str, view: View, path: &Path) {
    browse(url, view, &[format!("--screenshot={}", path.display())]).await;
    let png = std::fs::read(path).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        path.display()
    );
}

/// The tests' policy: two replicas, three at most.
const POLICY: &str = "pool: analysis\nmin: 2\nmax: 3\ninterval: 1s\nmetrics:\n  - {metric: inflight_per_replica, target: 50}\n  - {metric: response_time_p95_ms, target: 250}\n";

/// `gantry up` with two real workers behind a cached analysis route.
async fn stack() -> Gantry {
    stack_with(POLICY).await
}

/// [`stack`] under `policy`.
async fn stack_with(policy: &str) -> Gantry {
    let model = std::fs::canonicalize("models/phishing-url").unwrap();
    let config = format!(
        "pools:\n  analysis:\n    health: {{interval: 500ms}}\nroutes:\n  - {{prefix: /v1/analyze, pool: analysis, idempotent: true, cache: {{ttl: 5m}}}}\ncache:\n  memory: {{max_bytes: 16777216}}\nscaler:\n  policies: '{{dir}}/policies'\n  runtime: local\n  local:\n    args: [worker, --model, '{}']\n",
        model.display()
    );
    let up = Gantry::up(&config)
        .policy("analysis.yaml", policy)
        .start()
        .await;
    up.wait_up("analysis", 2, 60).await;
    up
}

/// Posts `n` analyses of `distinct` URLs, each URL more than once (so some are cache hits).
async fn traffic(up: &Gantry, n: usize, distinct: usize) {
    for i in 0..n {
        let url = if i % 3 == 0 {
            format!(
                "http://paypal.com.secure-login-{}.example.ru/verify",
                i % distinct
            )
        } else {
            format!("https://www.wikipedia.org/wiki/Page_{}", i % distinct)
        };
        analyze(up, &url).await;
    }
}

/// Posts one analysis of `url`; it must be answered.
async fn analyze(up: &Gantry, url: &str) {
    let r = client()
        .post(format!("{}/v1/analyze", up.url))
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn status(up: &Gantry) -> serde_json::Value {
    client()
        .get(format!("{}/status.json", up.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `/status.json` has what the page must show: requests, hits, a decision, workers.
async fn wait_for_content(up: &Gantry) -> serde_json::Value {
    until(
        "status with requests, hits, decisions and workers",
        Duration::from_secs(30),
        || async {
            let s = status(up).await;
            let pool = &s["pools"][0];
            let ready = pool["requests"].as_u64() > Some(0)
                && s["cache"]["hit_ratio"].as_f64() > Some(0.0)
                && !s["scaler"]["pools"]["analysis"]["decisions"]
                    .as_array()
                    .unwrap()
                    .is_empty()
                && s["workers"].as_array().unwrap().len() == 2;
            if ready {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await
}

/// The `data-v` of the first element with `data-k="{key}"` in `dom`.
fn data_value(dom: &str, key: &str) -> Option<f64> {
    let at = dom.find(&format!("data-k=\"{key}\""))?;
    let tag = &dom[dom[..at].rfind('<')?..at + dom[at..].find('>')?];
    let v = tag.split("data-v=\"").nth(1)?;
    v[..v.find('"')?].parse().ok()
}

/// The text of every element with `data-k="{key}"` in `dom`.
fn texts(dom: &str, key: &str) -> Vec<String> {
    dom.match_indices(&format!("data-k=\"{key}\""))
        .filter_map(|(at, _)| {
            let rest = &dom[at..];
            let start = rest.find('>')? + 1;
            Some(rest[start..start + rest[start..].find('<')?].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_a_browser_shows_pools_backends_cache_and_decisions() {
    let up = stack().await;
    traffic(&up, 60, 10).await;
    let s = wait_for_content(&up).await;
    let page = format!("{}/", up.admin);
    let dom = browse(&page, LAPTOP, &["--dump-dom".to_string()]).await;

    assert!(
        dom.contains("data-loaded=\"1\""),
        "the script never rendered:\n{dom}"
    );
    assert!(dom.contains("data-pool=\"analysis\""), "{dom}");
    assert_eq!(texts(&dom, "balancing"), ["p2c"]);
    for b in s["pools"][0]["backends"].as_array().unwrap() {
        let addr = b["addr"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-backend=\"{addr}\"")),
            "backend {addr} not shown:\n{dom}"
        );
    }
    let requests = data_value(&dom, "pool-requests").expect("pool request count shown");
    assert!(requests >= 60.0, "{requests} requests shown");
    let hit_ratio = data_value(&dom, "hit-ratio").expect("hit ratio shown");
    assert!(hit_ratio > 0.0 && hit_ratio < 1.0, "hit ratio {hit_ratio}");
    let reasons = texts(&dom, "reason");
    let journal = up.decisions("analysis").await;
    assert!(
        reasons
            .iter()
            .any(|r| journal.iter().any(|d| d.reason.replace('_', " ") == *r)),
        "shown reasons {reasons:?}, journal {journal:?}"
    );
    assert!(
        dom.contains("data-verdict=\"phishing\""),
        "verdicts not shown:\n{dom}"
    );
    let model = gantry::worker::model::ModelSpec::load(&crate::support::worker::model_dir())
        .map(|m| m.id().to_string())
        .unwrap();
    assert!(
        dom.contains(&format!("data-model=\"{model}\"")),
        "each worker's model version not shown:\n{dom}"
    );

    let dir = tempfile::tempdir().unwrap();
    picture(&page, LAPTOP, &dir.path().join("status.png")).await;
}

/// The page's JSON is documented for scripts: the fields the README names are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_answers_without_a_token_and_the_page_loads_nothing_from_elsewhere() {
    let up = stack().await;
    let r = client().get(format!("{}/", up.admin)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    for outside in ["http://", "https://", "//cdn", "@import", "url("] {
        let found = html
            .lines()
            .filter(|l| l.contains(outside) && !l.contains("www.w3.org/2000/svg"))
            .count();
        assert_eq!(found, 0, "the page refers to {outside}");
    }
    let s = status(&up).await;
    for key in [
        "version", "uptime_s", "pools", "cache", "scaler", "workers", "history",
    ] {
        assert!(s.get(key).is_some(), "no {key} in {s}");
    }
    assert_eq!(s["history"]["interval_s"], 5);
}

/// `make screenshot`: a few minutes of varied traffic, then the pictures. A burst of
/// distinct requests in the middle scales the pool up; the quiet after it, down again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by `make screenshot`; writes docs/status.png"]
async fn screenshot() {
    let policy = "pool: analysis\nmin: 2\nmax: 3\ninterval: 1s\nmetrics:\n  - {metric: inflight_per_replica, target: 4}\nscale_down: {stabilization: 30s, cooldown: 10s}\n";
    let up = stack_with(policy).await;
    let minutes: u64 = std::env::var("SCREENSHOT_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(3);
    let start = Instant::now();
    let end = start + Duration::from_secs(60 * minutes);
    let burst = (end - start) / 3..(end - start) / 2;
    let mut fresh = 0;
    let mut round = 0u32;
    while Instant::now() < end {
        round += 1;
        if burst.contains(&start.elapsed()) {
            let load = Load::start(
                &format!("{}/v1/analyze", up.url),
                24,
                r#"{"url":"https://shop-{n}.example.com/checkout"}"#,
            );
            tokio::time::sleep(burst.end - burst.start).await;
            load.stop().await;
            continue;
        }
        // Mostly a hot set (hits), a varying share of new URLs (misses).
        let share = [0.05, 0.15, 0.3, 0.1][round as usize % 4];
        for i in 0..60 {
            let url = if (i as f64) < 60.0 * share {
                fresh += 1;
                format!("http://login-{fresh}.secure-bank.example.ru/verify")
            } else {
                format!("https://www.wikipedia.org/wiki/Page_{}", i % 25)
            };
            analyze(&up, &url).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for_content(&up).await;
    let page = format!("{}/", up.admin);
    let docs = PathBuf::from("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let laptop = View {
        height: 1560,
        ..LAPTOP
    };
    picture(&page, laptop, &docs.join("status.png")).await;
    let more = PathBuf::from("target/screenshots");
    std::fs::create_dir_all(&more).unwrap();
    let phone = View {
        width: 390,
        height: 2600,
        dark: false,
    };
    picture(
        &page,
        View {
            dark: true,
            ..laptop
        },
        &more.join("laptop-dark.png"),
    )
    .await;
    picture(&page, phone, &more.join("phone-light.png")).await;
    picture(
        &page,
        View {
            dark: true,
            ..phone
        },
        &more.join("phone-dark.png"),
    )
    .await;
}
