//! The worker's queue over HTTP, made deterministic with a gated in-memory engine:
//! requests queued behind a busy session form one batch, a full queue answers
//! 503 with Retry-After, `/ready` follows the queue, and `/metrics` shows the
//! mean batch size. The test runs in a process of its own, so the process-wide
//! counters are its own.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use gantry::worker::batcher::BatchSettings;
use gantry::worker::http::Analysis;
use gantry::worker::model::{Engine, ModelSpec};
use gantry::worker::{Limits, Worker, WorkerError};
use tokio::sync::mpsc;

use crate::support::worker::{metric, Server};
use crate::support::{client, in_own_process};

/// Scores each row with its first feature / 100; every execution first
/// reports that it started, then waits until the gate opens.
struct GatedEngine {
    entered: mpsc::UnboundedSender<()>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Engine for GatedEngine {
    fn score(
        &mut self,
        input: &[f32],
        rows: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), WorkerError> {
        let _ = self.entered.send(());
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        scores.clear();
        scores.extend(input.chunks_exact(input.len() / rows).map(|r| r[0] / 100.0));
        Ok(())
    }
}

fn length_feature(url: &str, row: &mut [f32]) {
    row[0] = url.len().min(100) as f32;
}

fn spec() -> ModelSpec {
    ModelSpec::parse(
        r#"{"name":"fake","version":"1","input":{"name":"x","dim":4,"dtype":"float32"},
            "output":{"name":"p"},"threshold":0.5,"metrics":{}}"#,
    )
    .unwrap()
}

async fn analyze(client: &reqwest::Client, server: &Server, url: &str) -> reqwest::Response {
    client
        .post(server.url("/v1/analyze"))
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn full_queue_is_503_and_queued_requests_share_a_batch() {
    if !in_own_process(
        module_path!(),
        "full_queue_is_503_and_queued_requests_share_a_batch",
    ) {
        return;
    }
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let engine = GatedEngine {
        entered: entered_tx,
        gate: gate.clone(),
    };
    let batch = BatchSettings {
        max_batch_size: 8,
        max_queue_delay: Duration::ZERO,
        queue_capacity: 2,
    };
    let worker = Worker::with_engines(
        spec(),
        vec![Box::new(engine)],
        length_feature,
        batch,
        Limits::default(),
    )
    .unwrap();
    let server = Server::start(worker).await;
    let client = client();

    // The session takes the first request and holds it.
    let first = tokio::spawn({
        let (c, url) = (client.clone(), server.url("/v1/analyze"));
        async move {
            c.post(url)
                .json(&serde_json::json!({"url": "x".repeat(80)}))
                .send()
                .await
        }
    });
    entered.recv().await.unwrap();
    assert_eq!(
        client
            .get(server.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Two more fill the queue (capacity 2).
    let queued: Vec<_> = ["a".repeat(10), "b".repeat(90)]
        .into_iter()
        .map(|u| {
            let (c, url) = (client.clone(), server.url("/v1/analyze"));
            tokio::spawn(async move {
                c.post(url)
                    .json(&serde_json::json!({ "url": u }))
                    .send()
                    .await
            })
        })
        .collect();
    // Wait (not assert) until both are queued: /ready turns 503 when the queue is full.
    loop {
        let r = client.get(server.url("/ready")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        tokio::task::yield_now().await;
    }

    let refused = analyze(&client, &server, "http://one-too-many.example/").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("queue full"),
        "{body}"
    );

    // Open the gate: the first answers, then the two queued ones run as one batch.
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    let first: Analysis = first.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!((first.verdict.as_str(), first.score), ("phishing", 0.8));
    let mut scores = Vec::new();
    for q in queued {
        let r = q.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        scores.push(r.json::<Analysis>().await.unwrap().score);
    }
    assert_eq!(scores, vec![0.1, 0.9]);
    assert_eq!(
        client
            .get(server.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let inferences = metric(&text, "gantry_worker_inferences_total", "").unwrap();
    let executions = metric(&text, "gantry_worker_batch_executions_total", "").unwrap();
    assert_eq!((inferences, executions), (3.0, 2.0), "mean batch size 1.5");
    assert_eq!(
        metric(&text, "gantry_worker_batch_size_count", ""),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "gantry_worker_requests_total",
            "outcome=\"queue_full\""
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "gantry_worker_requests_total", "outcome=\"ok\""),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "gantry_worker_verdicts_total",
            "model=\"fake@1\",verdict=\"phishing\""
        ),
        Some(2.0)
    );
    assert_eq!(metric(&text, "gantry_worker_queue_length", ""), Some(0.0));
    server.stop().await;
}
