//! The worker's HTTP API with the real INT8 model, in-process on 127.0.0.1:0:
//! analyze, batch, model info, probes, metrics, and every way a body can be wrong.

use gantry::worker::http::{Analysis, BatchResponse};
use gantry::worker::Worker;
use serde_json::{json, Value};

use crate::support::client;
use crate::support::worker::{golden, metric, model_dir, real_config, Server, GOLDEN_TOLERANCE};

async fn start() -> Server {
    Server::start(Worker::load(&real_config()).expect("load the shipped model")).await
}

fn model_id() -> String {
    let text = std::fs::read_to_string(model_dir().join("model.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    format!(
        "{}@{}",
        v["name"].as_str().unwrap(),
        v["version"].as_str().unwrap()
    )
}

async fn post(server: &Server, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn analyze_gives_the_golden_score() {
    let server = start().await;
    let threshold = gantry::worker::model::ModelSpec::load(&model_dir())
        .unwrap()
        .threshold;
    for case in golden().iter().take(8) {
        let r = post(
            &server,
            "/v1/analyze",
            json!({ "url": case.url }).to_string(),
        )
        .await;
        assert_eq!(r.status(), 200, "{}", case.url);
        let a: Analysis = r.json().await.unwrap();
        assert!(
            (a.score - case.score_int8).abs() <= GOLDEN_TOLERANCE,
            "{}: {} vs {}",
            case.url,
            a.score,
            case.score_int8
        );
        let expected = if a.score >= threshold {
            "phishing"
        } else {
            "legitimate"
        };
        assert_eq!(a.verdict, expected);
        assert_eq!(a.model, model_id());
    }
    server.stop().await;
}

#[tokio::test]
async fn batch_answers_every_item_in_order() {
    let server = start().await;
    let cases = golden();
    let items: Vec<Value> = cases.iter().map(|c| json!({ "url": c.url })).collect();
    let r = post(
        &server,
        "/v1/analyze/batch",
        json!({ "items": items }).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let b: BatchResponse = r.json().await.unwrap();
    assert_eq!(b.results.len(), cases.len());
    // The same scores as one at a time: the model's quantization is fixed per row.
    for (case, a) in cases.iter().zip(&b.results) {
        assert!(
            (a.score - case.score_int8).abs() <= GOLDEN_TOLERANCE,
            "{}: {} vs {}",
            case.url,
            a.score,
            case.score_int8
        );
    }
    let empty = post(&server, "/v1/analyze/batch", r#"{"items": []}"#).await;
    assert_eq!(
        empty.json::<Value>().await.unwrap(),
        json!({ "results": [] })
    );
    server.stop().await;
}

/// Posts `body` to `path` and checks the status and that the error is a JSON message.
async fn check(server: &Server, path: &str, body: String, status: u16) {
    let shown: String = body.chars().take(60).collect();
    let r = post(server, path, body).await;
    assert_eq!(r.status(), status, "{path} {shown}");
    let v: Value = r
        .json()
        .await
        .unwrap_or_else(|e| panic!("{path} {shown}: not JSON: {e}"));
    assert!(
        v["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{path} {shown}: {v}"
    );
}

#[tokio::test]
async fn malformed_requests_are_400_with_a_message() {
    let server = start().await;
    for body in [
        "",
        "not json",
        "{}",
        r#"{"url": 5}"#,
        r#"{"url": "x""#,
        "[1,2]",
        "null",
    ] {
        check(&server, "/v1/analyze", body.to_string(), 400).await;
    }
    for body in [
        r#"{}"#,
        r#"{"items": "x"}"#,
        r#"{"items": [{"url": 1}]}"#,
        r#"{"items": [{}]}"#,
    ] {
        check(&server, "/v1/analyze/batch", body.to_string(), 400).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_413() {
    let server = start().await;
    let huge =
        json!({ "url": format!("http://example.com/{}", "a".repeat(70 * 1024)) }).to_string();
    check(&server, "/v1/analyze", huge, 413).await;
    let items: Vec<Value> = (0..257)
        .map(|i| json!({ "url": format!("http://e{i}.com/") }))
        .collect();
    check(
        &server,
        "/v1/analyze/batch",
        json!({ "items": items }).to_string(),
        413,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn odd_urls_are_answered_not_panicked_on() {
    let server = start().await;
    let long = format!("http://example.com/{}", "%41".repeat(20_000));
    let odd = [
        "",
        "a",
        " ",
        "http://пример.рф/путь?q=ключ",
        "https://例子.测试/🦀🦀🦀",
        "\u{0}\u{1}\u{7f}",
        "http://[::1]:99999/..%2f..%2f",
        "\u{202e}moc.lapyap//:sptth",
        long.as_str(),
    ];
    for url in odd {
        let r = post(&server, "/v1/analyze", json!({ "url": url }).to_string()).await;
        assert_eq!(
            r.status(),
            200,
            "{:?}",
            url.chars().take(40).collect::<String>()
        );
        let a: Analysis = r.json().await.unwrap();
        assert!((0.0..=1.0).contains(&a.score), "{url:?}: {}", a.score);
    }
    server.stop().await;
}

#[tokio::test]
async fn model_info_probes_and_metrics() {
    let server = start().await;
    let c = client();
    let info: Value = c
        .get(server.url("/v1/model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["id"], model_id());
    assert!(info["model"]["input"]["dim"].as_u64().unwrap() > 0);
    assert_eq!(info["runtime"]["max_batch_size"], 64);
    assert_eq!(info["runtime"]["onnx_file"], "model.onnx");
    assert_eq!(
        c.get(server.url("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(server.url("/ready")).send().await.unwrap().status(),
        200
    );

    let r = post(&server, "/v1/analyze", r#"{"url": "http://example.com/"}"#).await;
    assert_eq!(r.status(), 200);
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let inferences = metric(&text, "gantry_worker_inferences_total", "").unwrap();
    let executions = metric(&text, "gantry_worker_batch_executions_total", "").unwrap();
    assert!(
        inferences >= 1.0 && executions >= 1.0 && inferences >= executions,
        "{inferences} / {executions}"
    );
    for name in [
        "gantry_worker_queue_wait_seconds_bucket",
        "gantry_worker_compute_seconds_bucket",
        "gantry_worker_batch_size_bucket",
        "gantry_worker_queue_length",
        "gantry_worker_requests_total{outcome=\"ok\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    server.stop().await;
}
