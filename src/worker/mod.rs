//! Inference worker: ONNX Runtime sessions, dynamic batching and the HTTP API.
//!
//! `gantry worker --model models/phishing-url --listen 127.0.0.1:9001` loads
//! the model ([`model`]), starts one session thread per ONNX Runtime session
//! behind a Triton-like dynamic batcher ([`batcher`]) and answers HTTP
//! ([`http`]), with settings from [`config`]. `--tune` measures batch sizes
//! and delays instead ([`tune`]).
//! Feature extraction ([`features`]) is shared with the training code.
//!
//! **Architecture invariant:** inference never runs on the async runtime; the
//! HTTP handlers only queue work and await a reply.
//! The worker knows nothing of the proxy or the scaler: it is a plain HTTP
//! server that the scaler starts as a process or a container.

pub mod batcher;
pub mod config;
pub mod features;
pub mod http;
pub mod model;
pub mod ortlib;
pub mod tune;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

pub use self::config::{Limits, WorkerArgs, WorkerConfig};

use self::batcher::{BatchSettings, Batcher, Featurizer};
use self::model::{Engine, ModelSpec, OrtEngine};

/// Errors of the worker, from loading to answering.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    /// None was named and none is in the default places ([`ortlib::locate`]).
    #[error("no ONNX Runtime library found at {}: run `make onnxruntime`, or point ORT_DYLIB_PATH / --ort-lib at libonnxruntime.so", list(tried))]
    OrtLibraryNotFound {
        /// The places looked at.
        tried: Vec<PathBuf>,
    },
    /// The named library file does not exist.
    #[error("ONNX Runtime library not found at {}: run `make onnxruntime`, or point ORT_DYLIB_PATH / --ort-lib at libonnxruntime.so", path.display())]
    OrtLibraryMissing {
        /// The path tried.
        path: PathBuf,
    },
    /// The library exists but could not be loaded.
    #[error("cannot load ONNX Runtime from {}: {message} (run `make onnxruntime` for the pinned version)", path.display())]
    OrtLibrary {
        /// The path tried.
        path: PathBuf,
        /// What ONNX Runtime or the loader said.
        message: String,
    },
    /// `model.json` is missing or wrong.
    #[error("{}: {message}", path.display())]
    ModelSpec {
        /// The `model.json` read.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The ONNX file could not be opened as a session.
    #[error("cannot open model {}: {message}", path.display())]
    ModelFile {
        /// The ONNX file.
        path: PathBuf,
        /// What ONNX Runtime said.
        message: String,
    },
    /// Invalid settings, all problems listed.
    #[error("invalid worker settings: {0}")]
    Config(String),
    /// The queue holds `queue_capacity` items already.
    #[error("queue full")]
    QueueFull,
    /// The session threads are gone.
    #[error("the inference sessions have stopped")]
    Stopped,
    /// A batch failed in feature extraction or in the model.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A thread could not be started.
    #[error("cannot start a session thread: {0}")]
    Thread(String),
    /// Binding or serving the listener failed.
    #[error("{context}: {message}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        message: String,
    },
}

/// `a, b or c`.
fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    match names.split_last() {
        None => "no place".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

impl WorkerError {
    fn io(context: impl Into<String>, e: std::io::Error) -> WorkerError {
        WorkerError::Io {
            context: context.into(),
            message: e.to_string(),
        }
    }
}

/// A loaded model behind its batcher: what the HTTP handlers share.
pub struct Worker {
    /// The model's `model.json`.
    pub spec: ModelSpec,
    /// The queue and session threads.
    pub batcher: Batcher,
    /// HTTP limits.
    pub limits: Limits,
    /// Runtime settings reported by `GET /v1/model`.
    pub runtime: serde_json::Value,
    /// This model's verdict counters.
    pub verdicts: crate::metrics::worker::Verdicts,
}

impl Worker {
    /// Loads ONNX Runtime and the model, and starts the session threads.
    pub fn load(config: &WorkerConfig) -> Result<Worker, WorkerError> {
        // The library first: a missing one is the likeliest set-up problem.
        model::environment(&config.ort_lib)?;
        let spec = load_spec(&config.model_dir)?;
        let engines = ort_engines(config, &spec, config.sessions)?;
        let mut worker = Worker::with_engines(
            spec,
            engines,
            features::extract_into,
            config.batch,
            config.limits,
        )?;
        worker.runtime = serde_json::json!({
            "onnx_file": config.onnx_file.file_name().map(|f| f.to_string_lossy()),
            "max_batch_size": config.batch.max_batch_size,
            "max_queue_delay": humantime_serde::re::humantime::format_duration(config.batch.max_queue_delay).to_string(),
            "queue_capacity": config.batch.queue_capacity,
            "sessions": config.sessions,
            "intra_threads": config.intra_threads,
            "max_body_bytes": config.limits.max_body_bytes,
            "max_batch_items": config.limits.max_batch_items,
        });
        tracing::info!(model = %worker.spec.id(), file = %config.onnx_file.display(),
            sessions = config.sessions, max_batch_size = config.batch.max_batch_size,
            max_queue_delay = ?config.batch.max_queue_delay, "Model loaded");
        Ok(worker)
    }

    /// A worker over any engines (one session thread each); tests use in-memory ones.
    pub fn with_engines(
        spec: ModelSpec,
        engines: Vec<Box<dyn Engine>>,
        featurize: Featurizer,
        batch: BatchSettings,
        limits: Limits,
    ) -> Result<Worker, WorkerError> {
        let runtime = serde_json::json!({
            "max_batch_size": batch.max_batch_size,
            "max_queue_delay": humantime_serde::re::humantime::format_duration(batch.max_queue_delay).to_string(),
            "queue_capacity": batch.queue_capacity,
            "sessions": engines.len(),
        });
        let batcher = Batcher::start(engines, featurize, spec.dim, batch)?;
        Ok(Worker {
            verdicts: crate::metrics::worker::Verdicts::of(spec.id()),
            spec,
            batcher,
            limits,
            runtime,
        })
    }
}

/// Reads `dir/model.json` and checks its input against this build's feature extractor.
pub fn load_spec(dir: &Path) -> Result<ModelSpec, WorkerError> {
    let spec = ModelSpec::load(dir)?;
    if spec.dim != features::DIM {
        return Err(WorkerError::ModelSpec {
            path: dir.join("model.json"),
            message: format!(
                "input.dim is {} but this build extracts {} features",
                spec.dim,
                features::DIM
            ),
        });
    }
    Ok(spec)
}

/// Opens `n` ONNX Runtime sessions on the configured model file.
pub fn ort_engines(
    config: &WorkerConfig,
    spec: &ModelSpec,
    n: usize,
) -> Result<Vec<Box<dyn Engine>>, WorkerError> {
    let env = model::environment(&config.ort_lib)?;
    (0..n)
        .map(|_| {
            OrtEngine::load(&env, &config.onnx_file, spec, config.intra_threads)
                .map(|e| Box::new(e) as Box<dyn Engine>)
        })
        .collect()
}

/// Serves `worker` on `listener` within its connection limits until
/// `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    worker: Worker,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let limits = worker.limits.server;
    crate::metrics::worker::register(worker.spec.id());
    let app = http::router(Arc::new(worker));
    crate::conn::serve(listener, app, limits, "worker", shutdown)
        .await
        .map_err(|e| WorkerError::io("serving", e))
}

/// The `gantry worker` command: serve until SIGINT/SIGTERM, tune, or probe.
pub fn run(args: WorkerArgs) -> Result<(), WorkerError> {
    if let Some(url) = &args.probe {
        return http::probe(url);
    }
    let config = WorkerConfig::from_args(&args)?;
    if args.tune {
        let settings = tune::TuneSettings {
            latency_budget: args.latency_budget,
            concurrency: args.tune_concurrency.max(1),
            duration: args.tune_duration,
        };
        return tune::run(&config, &settings);
    }
    let worker = Worker::load(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gantry-worker-io")
        .build()
        .map_err(|e| WorkerError::io("starting the runtime", e))?;
    rt.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| WorkerError::io(format!("binding {}", args.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| WorkerError::io("reading the bound address", e))?;
        tracing::info!(%addr, "Worker listening");
        println!("gantry worker listening on http://{addr}");
        serve(listener, worker, shutdown_signal()).await
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("Shutting down");
}
