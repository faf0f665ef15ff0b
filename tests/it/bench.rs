//! `gantry bench` as a user runs it: the real binary against a test backend on 127.0.0.1:0; exit codes of SLO checks and bad input, the JSON file, the HTML report.

use std::path::Path;

use gantry::bench::report::Report;

use crate::support::backend::{Backend, Behaviour};

/// Runs `gantry bench ARGS` to the end: (exit code, stdout, stderr).
async fn bench(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("bench")
        .args(args)
        .output()
        .await
        .expect("run gantry bench");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Seed targets this small run cannot reach are switched off; the rest hold against a fast backend.
const HOLDS: &str = "sustained_rps: off\npeak_rps: off\nconcurrent: off\ncache_hit_percent: off\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_json_that_round_trips_and_a_report_with_its_charts() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let slo = write(dir.path(), "slo.yaml", HOLDS);
    let (json, html) = (dir.path().join("run.json"), dir.path().join("run.html"));
    let target = format!("http://{}", backend.addr);
    let (code, stdout, stderr) = bench(&[
        "load",
        "--target",
        &target,
        "--users",
        "3",
        "--requests",
        "300",
        "--slo",
        &slo,
        "--json",
        json.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(backend.hits(), 300);
    assert!(
        stdout.contains("requests 300  ok 300  errors 0"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&json).unwrap();
    let report: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string_pretty(&report).unwrap(), text);
    assert_eq!((report.counts.requests, report.counts.ok), (300, 300));
    assert!(report.slo.iter().any(|r| r.objective.name == "p99_ms"));

    let page = scraper::Html::parse_document(&std::fs::read_to_string(&html).unwrap());
    assert!(page.errors.is_empty(), "{:?}", page.errors);
    let select = |css: &str| scraper::Selector::parse(css).unwrap();
    for id in ["chart-latency", "chart-throughput"] {
        let svg = page.select(&select(&format!("svg#{id}"))).next();
        assert!(
            svg.is_some_and(|s| s.select(&select("path.line")).next().is_some()),
            "{id} has no line"
        );
    }
    // Self-contained: nothing is fetched from anywhere.
    let fetching = page.select(&select("[src], link[href], script")).count();
    assert_eq!(fetching, 0);
    assert!(page.select(&select("span.badge.pass")).next().is_some());
    let quiet = page
        .select(&select("section.quiet p"))
        .next()
        .map(|p| p.text().collect::<String>());
    assert_eq!(quiet.as_deref(), Some("None in 300 requests."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_objective_exits_1_and_names_it() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let slo = write(dir.path(), "slo.yaml", &format!("{HOLDS}p99_ms: 0\n"));
    let target = format!("http://{}", backend.addr);
    let (code, _, stderr) = bench(&[
        "load",
        "--target",
        &target,
        "--users",
        "2",
        "--requests",
        "50",
        "--slo",
        &slo,
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("SLO failed: p99_ms"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let slo = write(dir.path(), "slo.yaml", "p99_ms: 100\nerror_percent: lots\n");
    let (code, _, stderr) = bench(&[
        "load",
        "--target",
        "http://127.0.0.1:9",
        "--requests",
        "1",
        "--slo",
        &slo,
    ])
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("slo.yaml:2:"), "{stderr}");
    let scenario = write(
        dir.path(),
        "s.yaml",
        "stages:\n  - {duration: 10s, rate: 5, users: 2}\n",
    );
    let (code, _, stderr) =
        bench(&["--scenario", &scenario, "--target", "http://127.0.0.1:9"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("s.yaml:2:5: stages[0]: give exactly one of rate or users"),
        "{stderr}"
    );
    let (code, _, _) = bench(&["load"]).await;
    assert_eq!(code, 2);
}
