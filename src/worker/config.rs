//! Worker settings: the `gantry worker` arguments and the validated [`WorkerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::batcher::BatchSettings;
use super::{model, WorkerError};

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
    /// Path to libonnxruntime.so [default: the one `make onnxruntime` placed in `.cache/`].
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Largest request body accepted, in bytes; larger gets 413.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Most URLs in one `/v1/analyze/batch` request; more gets 413.
    #[arg(long, default_value_t = 256)]
    pub max_batch_items: usize,
    /// Total time to receive a request head (from accept, or from a keep-alive
    /// request's first byte); the connection is closed past it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub head_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Longest a keep-alive connection may sit idle between requests.
    #[arg(long, default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Most connections open at once; more are closed at once and counted in
    /// `gantry_connections_refused_total{listener="worker"}`.
    #[arg(long, default_value_t = crate::conn::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
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
    /// Connection cap and head, body and idle timeouts of the HTTP server
    /// (defaults those of [`crate::conn`]: 16384, 30 s, 60 s, 75 s).
    pub server: crate::conn::ConnLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_batch_items: 256,
            server: crate::conn::ConnLimits::default(),
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
    /// libonnxruntime.so (`--ort-lib`, `ORT_DYLIB_PATH`, or found by [`super::ortlib::locate`]).
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
            ("--max-connections", args.max_connections),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("--head-timeout", args.head_timeout),
            ("--body-timeout", args.body_timeout),
            ("--idle-timeout", args.idle_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{name} must be more than 0"));
            }
        }
        if args.max_batch_size > 4096 {
            problems.push("--max-batch-size must be at most 4096".to_string());
        }
        let model_dir = args.model.clone().unwrap_or_default();
        if !problems.is_empty() {
            return Err(WorkerError::Config(problems.join("; ")));
        }
        let ort_lib = super::ortlib::locate(args.ort_lib.as_deref())?;
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
                server: crate::conn::ConnLimits {
                    head_timeout: args.head_timeout,
                    body_timeout: args.body_timeout,
                    idle_timeout: args.idle_timeout,
                    max_connections: args.max_connections,
                },
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WorkerArgs,
    }

    fn parse(extra: &[&str]) -> Result<WorkerConfig, String> {
        let argv = ["gantry", "--model", "m", "--ort-lib", "/lib/ort.so"];
        let cli = Cli::try_parse_from(argv.iter().chain(extra)).map_err(|e| e.to_string())?;
        WorkerConfig::from_args(&cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_documented_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.batch.max_batch_size, 64);
        assert_eq!(c.batch.max_queue_delay, Duration::ZERO);
        assert_eq!(c.batch.queue_capacity, 1024);
        assert_eq!((c.sessions, c.intra_threads), (2, 1));
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.onnx_file, PathBuf::from("m/model.onnx"));
        let d = WorkerConfig::new("m", "/lib/ort.so");
        assert_eq!(
            (d.batch, d.sessions, d.intra_threads),
            (c.batch, c.sessions, c.intra_threads)
        );
    }

    #[test]
    fn options_are_read_and_checked() {
        let c = parse(&["--max-queue-delay", "2ms", "--onnx", "model.fp32.onnx"]).unwrap();
        assert_eq!(c.batch.max_queue_delay, Duration::from_millis(2));
        assert_eq!(c.onnx_file, PathBuf::from("m/model.fp32.onnx"));
        let c = parse(&["--head-timeout", "2s", "--max-connections", "8"]).unwrap();
        assert_eq!(c.limits.server.head_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.server.max_connections, 8);
        let e = parse(&["--body-timeout", "0s", "--max-connections", "0"]).unwrap_err();
        assert!(
            e.contains("--body-timeout") && e.contains("--max-connections"),
            "{e}"
        );
        let e = parse(&["--max-batch-size", "0", "--sessions", "0"]).unwrap_err();
        assert!(
            e.contains("--max-batch-size") && e.contains("--sessions"),
            "{e}"
        );
        assert!(parse(&["--max-queue-delay", "soon"]).is_err());
        assert!(
            Cli::try_parse_from(["gantry"]).is_err(),
            "--model is required"
        );
        assert!(Cli::try_parse_from(["gantry", "--probe", "http://127.0.0.1:1/health"]).is_ok());
    }
}
