//! Support for the worker tests: the shipped model, the ONNX Runtime library, and a worker on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::PathBuf;

use gantry::worker::{serve, Worker, WorkerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The model directory shipped in the repository.
pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/phishing-url")
}

/// libonnxruntime.so as the worker finds it: `ORT_DYLIB_PATH`, else where
/// `make onnxruntime` put it; fails the test with the fix if neither.
pub fn ort_lib() -> PathBuf {
    let explicit = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty());
    gantry::worker::ortlib::locate(explicit.as_deref().map(std::path::Path::new))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Settings for the shipped model with the command-line defaults.
pub fn real_config() -> WorkerConfig {
    WorkerConfig::new(model_dir(), ort_lib())
}

/// How far a score may be from its golden value. ONNX Runtime's INT8
/// kernels differ by CPU: the golden scores were written on a machine with
/// AVX-512 VNNI, and on an AVX2-only one (whose u8 x s8 kernel sums products
/// in pairs through int16) one score near 0 moved by 5.4e-5 (1.2e-4 for
/// 6.8e-5), the others by under 2e-6. A wrong feature or graph moves scores
/// by far more than this.
pub const GOLDEN_TOLERANCE: f32 = 1e-4;

/// One line of `golden.jsonl`: a URL and the INT8 model's score for it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Golden {
    pub url: String,
    pub score_int8: f32,
}

/// Every case of the shipped `golden.jsonl`.
pub fn golden() -> Vec<Golden> {
    let path = model_dir().join("golden.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("golden line {l:?}: {e}")))
        .collect()
}

/// Posts the first golden URL to the worker at `base` (`http://host:port`)
/// and asserts its score is the golden INT8 one; returns the answer.
pub async fn assert_golden_answer(base: &str) -> serde_json::Value {
    let case = &golden()[0];
    let v: serde_json::Value = super::client()
        .post(format!("{base}/v1/analyze"))
        .json(&serde_json::json!({ "url": case.url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let score = v["score"].as_f64().unwrap() as f32;
    assert!(
        (score - case.score_int8).abs() <= GOLDEN_TOLERANCE,
        "{v} vs golden {}",
        case.score_int8
    );
    v
}

/// A worker serving on a free loopback port until dropped or stopped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    pub async fn start(worker: Worker) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve(listener, worker, shutdown).await.expect("serve");
        });
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, finishes requests in flight, and waits for the server.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
    }
}

/// The value of an unlabelled sample (or a sample with exactly `labels`) in Prometheus text.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
}
