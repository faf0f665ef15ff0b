//! `gantry bench` arguments (clap) and the run they ask for: plan, target, outputs, exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::findings::Breaking;
use super::mix::{Bodies, MixSpec, Pick, ANALYZE_PATH, BATCH_PATH};
use super::observe::Sources;
use super::scenario::{self, Kind, Knobs, Plan};
use super::slo::{Slo, Verdict};
use super::{calibrate, driver::Connector, html, BenchError, Setup};
use super::{EXIT_OK, EXIT_SLO_FAILED, EXIT_USAGE};

fn duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Ramp up, hold, ramp down.
    Load,
    /// Step the load up until the error rate or p99 breaks; report the breaking point.
    Stress,
    /// Normal, N times normal, normal; time for p99 to recover.
    Spike,
    /// Batches of growing size to the batch API.
    Volume,
    /// A long steady run; the target's memory over time.
    Soak,
    /// The generator's own ceiling against a trivial in-process target, beside wrk.
    Calibrate,
}

/// `gantry bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Scenario (or `--scenario FILE`).
    #[arg(value_enum, required_unless_present = "scenario")]
    pub what: Option<What>,
    /// A scenario file: stages of rate or users, the request mix, SLOs.
    #[arg(long, conflicts_with = "what")]
    pub scenario: Option<PathBuf>,
    /// The target, `http://host:port` (a path in it replaces --path).
    #[arg(long, required_unless_present = "what")]
    pub target: Option<String>,
    /// Open loop: requests per second (latency from each request's due time).
    #[arg(long, conflicts_with = "users")]
    pub rate: Option<f64>,
    /// Closed loop: concurrent users [default: 10].
    #[arg(long)]
    pub users: Option<u32>,
    /// Length of the run [default: 60s; soak 30m; calibrate 5s].
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Open loop: connections at most [default: 256; calibrate 64].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Per-request deadline.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub timeout: Duration,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Runtime threads of the generator [default: the CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the body choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Path of single requests.
    #[arg(long, default_value = ANALYZE_PATH)]
    pub path: String,
    /// Path of batch requests.
    #[arg(long, default_value = BATCH_PATH)]
    pub batch_path: String,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// The same body every time.
    #[arg(long, conflicts_with_all = ["body_file", "distinct"])]
    pub body: Option<String>,
    /// One body per line: JSON objects as they are, other lines as URLs to analyse.
    #[arg(long, conflicts_with = "distinct")]
    pub body_file: Option<PathBuf>,
    /// Distinct generated analysis bodies.
    #[arg(long, default_value_t = 1000)]
    pub distinct: usize,
    /// Choose bodies by Zipf(S) over the distinct ones (rank 1 most often) instead of in turn.
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// Items per request (above 1: `{"items": [...]}` to --batch-path).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Stress: steps, each adding the starting load once more.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Stress: length of a step.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub step_duration: Duration,
    /// Spike: the spike's multiple of the normal load.
    #[arg(long, default_value_t = 5.0)]
    pub spike_factor: f64,
    /// Volume: batch sizes, one stage each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
    pub batches: Vec<usize>,
    /// Objectives (YAML; left-out fields take the seed's targets): exit 1 if one fails.
    #[arg(long)]
    pub slo: Option<PathBuf>,
    /// Write every number as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Gantry's admin API: replicas and scaling decisions during the run.
    #[arg(long)]
    pub admin: Option<String>,
    /// Admin bearer token [default: the token a local gantry generated].
    #[arg(long, env = "GANTRY_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// The target's Prometheus `/metrics`: its CPU and memory during the run.
    #[arg(long)]
    pub metrics: Option<String>,
    /// A local target process: its CPU, memory and sockets during the run.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Runs `gantry bench`; the exit code.
pub fn main(args: BenchArgs) -> u8 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
    }
}

fn run(args: BenchArgs) -> Result<u8, BenchError> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| io("start the runtime", e))?;
    if args.what == Some(What::Calibrate) {
        let d = args.duration.unwrap_or(Duration::from_secs(5));
        let c = rt.block_on(calibrate::run(d, args.connections.unwrap_or(64)))?;
        println!("{c}");
        return Ok(EXIT_OK);
    }
    let (setup, slo) = setup(&args)?;
    let mut report = rt.block_on(super::execute(setup))?;
    if let Some(slo) = &slo {
        report.slo = slo.check(&report);
    }
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| io("encode JSON", e.into()))?;
        std::fs::write(path, text).map_err(|e| io(&format!("write {}", path.display()), e))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, html::render(&report))
            .map_err(|e| io(&format!("write {}", path.display()), e))?;
    }
    let failed: Vec<String> = (report.slo.iter())
        .filter(|r| r.verdict == Verdict::Fail)
        .map(|r| r.describe())
        .collect();
    if failed.is_empty() {
        return Ok(EXIT_OK);
    }
    eprintln!("SLO failed: {}", failed.join("; "));
    Ok(EXIT_SLO_FAILED)
}

fn io(what: &str, source: std::io::Error) -> BenchError {
    BenchError::Io {
        what: format!("{what}: {source}"),
        source,
    }
}

fn setup(args: &BenchArgs) -> Result<(Setup, Option<Slo>), BenchError> {
    let usage = |m: &str| BenchError::Usage(m.to_string());
    let target = args
        .target
        .clone()
        .ok_or_else(|| usage("--target URL is required"))?;
    let uri: http::Uri = target.parse().map_err(|_| usage("--target: not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(usage("--target: only http:// targets are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| usage("--target: no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let mut plan = plan(args)?;
    if let Some(p) = uri.path_and_query().filter(|p| p.as_str() != "/") {
        plan.mix.path = p.as_str().to_string();
    }
    let file_slo = plan.slo.take();
    let slo = match &args.slo {
        Some(path) => Some(Slo::read(path)?),
        None => file_slo,
    };
    let objective = |name: &str, default: f64| {
        (slo.iter().flat_map(|s| &s.objectives))
            .find(|o| o.name == name)
            .map_or(default, |o| o.limit)
    };
    let breaking = Breaking {
        error_percent: objective("error_percent", 0.1),
        p99_ms: objective("p99_ms", 1000.0),
    };
    let sources = Sources {
        admin: args.admin.clone().map(|a| (a, args.admin_token.clone())),
        metrics: args.metrics.clone(),
        pid: args.pid,
    };
    let setup = Setup {
        plan,
        target: target.clone(),
        connector: Connector::tcp(format!("{}:{port}", authority.host())),
        host: authority.to_string(),
        connections: args.connections.unwrap_or(256),
        timeout: args.timeout,
        limit: args.requests,
        seed: args.seed,
        sources,
        progress: std::io::stderr().is_terminal(),
        interrupt: true,
        breaking,
    };
    Ok((setup, slo))
}

fn plan(args: &BenchArgs) -> Result<Plan, BenchError> {
    if let Some(path) = &args.scenario {
        return Ok(scenario::read(path)?);
    }
    let kind = match args.what {
        Some(What::Load) | None => Kind::Load,
        Some(What::Stress) => Kind::Stress,
        Some(What::Spike) => Kind::Spike,
        Some(What::Volume) => Kind::Volume,
        Some(What::Soak) => Kind::Soak,
        Some(What::Calibrate) => unreachable!("calibrate runs before"),
    };
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) || args.users == Some(0) {
        return Err(BenchError::Usage(
            "--rate and --users must be above 0".into(),
        ));
    }
    let knobs = Knobs {
        rate: args.rate,
        users: args.users,
        duration: args.duration,
        steps: args.steps,
        step_duration: args.step_duration,
        spike_factor: args.spike_factor,
        batches: args.batches.clone(),
    };
    Ok(scenario::builtin(kind, &knobs, mix(args)?))
}

fn mix(args: &BenchArgs) -> Result<MixSpec, BenchError> {
    let headers = (args.headers.iter())
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| BenchError::Usage(format!("--header {h:?}: want `Name: value`")))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let method: http::Method = args
        .method
        .parse()
        .map_err(|_| BenchError::Usage("--method: not an HTTP method".into()))?;
    let bodies = match (&args.body, &args.body_file) {
        (Some(b), _) => Bodies::Fixed(b.clone()),
        (_, Some(f)) => Bodies::File(f.clone()),
        _ if method == http::Method::GET || method == http::Method::HEAD => Bodies::None,
        _ => Bodies::Generated(args.distinct),
    };
    Ok(MixSpec {
        method,
        path: args.path.clone(),
        batch_path: args.batch_path.clone(),
        headers,
        bodies,
        pick: args.zipf.map_or(Pick::Cycle, Pick::Zipf),
        batch: args.batch,
    })
}
