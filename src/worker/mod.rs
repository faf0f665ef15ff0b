//! Inference worker: ONNX Runtime sessions, dynamic batching and the HTTP API.
//!
//! `gantry worker --model models/phishing-url --listen 127.0.0.1:9001` loads
//! the model ([`model`]), starts one session thread per ONNX Runtime session
//! behind a Triton-like dynamic batcher ([`batcher`]) and answers HTTP
//! ([`http`]). `--tune` measures batch sizes and delays instead ([`tune`]).
//! Feature extraction ([`features`]) is shared with the training code.
//!
//! **Architecture invariant:** inference never runs on the async runtime; the
//! HTTP handlers only queue work and await a reply.
//! The worker knows nothing of the proxy or the scaler: it is a plain HTTP
//! server that the scaler starts as a process or a container.

pub mod batcher;
pub mod features;
pub mod http;
pub mod model;
pub mod tune;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use self::batcher::{BatchSettings, Batcher, Featurizer};
use self::model::{Engine, ModelSpec, OrtEngine};

/// Errors of the worker, from loading to answering.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    /// No ONNX Runtime library was named.
    #[error("no ONNX Runtime library given: set ORT_DYLIB_PATH or pass --ort-lib (run `make onnxruntime` to fetch it)")]
    OrtLibraryUnset,
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

impl WorkerError {
    fn io(context: impl Into<String>, e: std::io::Error) -> WorkerError {
        WorkerError::Io {
            context: context.into(),
            message: e.to_string(),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// `gantry worker`: serve a model, or measure batching settings with `--tune`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Model directory with `model.json` and the ONNX file.
    #[arg(long, required_unless_present = "probe")]
    pub model: Option<PathBuf>,
    /// ONNX file inside the model directory [default: model.onnx, the INT8 model].
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Most items per model execution; 1 turns batching off.
    #[arg(long, default_value_t = 64)]
    pub max_batch_size: usize,
    /// Longest the oldest queued item waits for a fuller batch (e.g. `2ms`).
    /// 0 (Triton's default) still batches whatever queued while the sessions
    /// were busy, and never holds a lone request back.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub max_queue_delay: Duration,
    /// Most items waiting in the queue; beyond it requests get 503 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Session threads, each with its own ONNX Runtime session. A host that
    /// runs several workers may want 1 per worker.
    #[arg(long, default_value_t = 2)]
    pub sessions: usize,
    /// ONNX Runtime threads per operator in each session.
    #[arg(long, default_value_t = 1)]
    pub intra_threads: usize,
    /// Path to libonnxruntime.so.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Largest request body accepted, in bytes; larger gets 413.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Most URLs in one `/v1/analyze/batch` request; more gets 413.
    #[arg(long, default_value_t = 256)]
    pub max_batch_items: usize,
    /// Measure throughput and p99 over batch sizes and delays, print a table and exit.
    #[arg(long)]
    pub tune: bool,
    /// With `--tune`: the p99 latency the recommended settings must stay under.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub latency_budget: Duration,
    /// With `--tune`: concurrent clients driving each measurement.
    #[arg(long, default_value_t = 64)]
    pub tune_concurrency: usize,
    /// With `--tune`: length of each measurement.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    pub tune_duration: Duration,
    /// GET this URL and exit 0 if it answers 2xx, else 1 (a health check for
    /// images without a shell, e.g. `http://127.0.0.1:8000/ready`).
    #[arg(long)]
    pub probe: Option<String>,
}

/// HTTP limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, bytes (default 64 KiB).
    pub max_body_bytes: usize,
    /// Most URLs in one batch request (default 256).
    pub max_batch_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_batch_items: 256,
        }
    }
}

/// Validated worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Model directory (`model.json`, ONNX files).
    pub model_dir: PathBuf,
    /// The ONNX file to run (default `model_dir/model.onnx`).
    pub onnx_file: PathBuf,
    /// libonnxruntime.so (from `--ort-lib` or `ORT_DYLIB_PATH`).
    pub ort_lib: PathBuf,
    /// Batch formation (default 64 items, no delay, 1024 queued).
    pub batch: BatchSettings,
    /// Session threads (default 2).
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session (default 1).
    pub intra_threads: usize,
    /// HTTP limits.
    pub limits: Limits,
}

impl WorkerConfig {
    /// Checks the arguments, reporting every problem at once.
    pub fn from_args(args: &WorkerArgs) -> Result<WorkerConfig, WorkerError> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("--max-batch-size", args.max_batch_size),
            ("--queue-capacity", args.queue_capacity),
            ("--sessions", args.sessions),
            ("--intra-threads", args.intra_threads),
            ("--max-body-bytes", args.max_body_bytes),
            ("--max-batch-items", args.max_batch_items),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if args.max_batch_size > 4096 {
            problems.push("--max-batch-size must be at most 4096".to_string());
        }
        let model_dir = args.model.clone().unwrap_or_default();
        if !problems.is_empty() {
            return Err(WorkerError::Config(problems.join("; ")));
        }
        let ort_lib = args.ort_lib.clone().ok_or(WorkerError::OrtLibraryUnset)?;
        Ok(WorkerConfig {
            onnx_file: model::model_file(&model_dir, args.onnx.as_deref()),
            model_dir,
            ort_lib,
            batch: BatchSettings {
                max_batch_size: args.max_batch_size,
                max_queue_delay: args.max_queue_delay,
                queue_capacity: args.queue_capacity,
            },
            sessions: args.sessions,
            intra_threads: args.intra_threads,
            limits: Limits {
                max_body_bytes: args.max_body_bytes,
                max_batch_items: args.max_batch_items,
            },
        })
    }

    /// Settings for `model_dir` with the defaults of the command line.
    pub fn new(model_dir: impl Into<PathBuf>, ort_lib: impl Into<PathBuf>) -> WorkerConfig {
        let model_dir = model_dir.into();
        WorkerConfig {
            onnx_file: model::model_file(&model_dir, None),
            model_dir,
            ort_lib: ort_lib.into(),
            batch: BatchSettings {
                max_batch_size: 64,
                max_queue_delay: Duration::ZERO,
                queue_capacity: 1024,
            },
            sessions: 2,
            intra_threads: 1,
            limits: Limits::default(),
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
}

impl Worker {
    /// Loads ONNX Runtime and the model, and starts the session threads.
    pub fn load(config: &WorkerConfig) -> Result<Worker, WorkerError> {
        // The library first: a missing one is the likeliest set-up problem.
        model::environment(&config.ort_lib)?;
        let spec = ModelSpec::load(&config.model_dir)?;
        if spec.dim != features::DIM {
            return Err(WorkerError::ModelSpec {
                path: config.model_dir.join("model.json"),
                message: format!(
                    "input.dim is {} but this build extracts {} features",
                    spec.dim,
                    features::DIM
                ),
            });
        }
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
            spec,
            batcher,
            limits,
            runtime,
        })
    }
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

/// Serves `worker` on `listener` until `shutdown` completes, then finishes
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    worker: Worker,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let app = http::router(Arc::new(worker));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
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
