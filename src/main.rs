//! Gantry command line: parse arguments, load config, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gantry::telemetry::{self, LogFormat};

/// jemalloc: memory freed after a burst goes back to the OS (see Cargo.toml).
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Load balancer, response cache and auto-scaler for ML inference backends.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "GANTRY_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Proxy {
        /// Config file.
        #[arg(long, short, default_value = "gantry.yaml")]
        config: PathBuf,
    },
    /// Check a config file and exit.
    CheckConfig {
        /// Config file.
        config: PathBuf,
    },
    /// Run the proxy and the auto-scaler in one process.
    Up {
        /// Config file; without it, the embedded default (`gantry.yaml` of the source tree).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the auto-scaler alone against a proxy's admin API.
    Scaler {
        /// Config file with a `scaler:` section.
        #[arg(long, short, default_value = "gantry.yaml")]
        config: PathBuf,
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Bearer token for the admin API [default: the token a local proxy generated].
        #[arg(long, env = "GANTRY_ADMIN_TOKEN")]
        token: Option<String>,
        /// Serve `/metrics` and `/admin/scaler` on this address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check scaling policy files (directories recursively); exit 2 on any error.
    Check {
        /// Policy files or directories.
        #[arg(default_value = "policies")]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of a scaling policy file.
    Schema,
    /// Print pools, backends and the scaler's last decisions.
    Status {
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Where the scaler's decisions are (`gantry scaler --listen`); default: the admin API.
        #[arg(long)]
        scaler: Option<String>,
    },
    /// Run an inference worker (ONNX Runtime, dynamic batching), or tune one.
    Worker(Box<gantry::worker::WorkerArgs>),
    /// Load-test a target: load, stress, spike, volume, soak or a scenario file; SLO exit codes.
    Bench(Box<gantry::bench::args::BenchArgs>),
    /// Response cache tools.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Replay a JSONL file of requests through a running proxy to fill its cache.
    Warm {
        /// One request per line: {"path": "/v1/analyze", "body": {...}}.
        file: PathBuf,
        /// The proxy's traffic address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        proxy: String,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Purge entries from every tier of a running proxy (and the proxies sharing its Redis).
    Purge {
        /// One key, as stored (`pool:/path:hash`).
        #[arg(long, conflicts_with_all = ["prefix", "all"])]
        key: Option<String>,
        /// Every key starting with this (`analysis:`, `analysis:/v1/analyze:`).
        #[arg(long, conflicts_with = "all")]
        prefix: Option<String>,
        /// Everything.
        #[arg(long)]
        all: bool,
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Bearer token [default: the token a local proxy generated].
        #[arg(long, env = "GANTRY_ADMIN_TOKEN")]
        token: Option<String>,
    },
}

/// The default config of `gantry up`: proxy, pool `analysis`, local workers.
const DEFAULT_CONFIG: &str = include_str!("../gantry.yaml");

/// Exit code for invalid configuration or policy files.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Option<gantry::config::Config> {
    match gantry::config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!(
                "error: invalid config ({} problem(s)):\n{errors}",
                errors.0.len()
            );
            None
        }
    }
}

fn embedded() -> Option<gantry::config::Config> {
    match gantry::config::from_str(
        std::path::Path::new("<embedded gantry.yaml>"),
        DEFAULT_CONFIG,
    ) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("error: invalid embedded config:\n{errors}");
            None
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Proxy { config } => {
            let Some(config) = load(&config) else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            gantry::proxy::Proxy::new(config)?.run()?;
        }
        Command::CheckConfig { config } => {
            if load(&config).is_none() {
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            println!("{}: ok", config.display());
        }
        Command::Cache {
            command:
                CacheCommand::Warm {
                    file,
                    proxy,
                    concurrency,
                },
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let report = rt.block_on(gantry::cache::warm::replay(&proxy, &file, concurrency))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Cache {
            command:
                CacheCommand::Purge {
                    key,
                    prefix,
                    all,
                    admin,
                    token,
                },
        } => {
            if key.is_none() && prefix.is_none() && !all {
                anyhow::bail!("say what to purge: --key, --prefix or --all");
            }
            let what = gantry::admin::PurgeRequest { key, prefix, all };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = gantry::admin::client::AdminClient::new(&admin, token);
            let report = rt.block_on(client.purge(&what))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Up { config } => {
            let loaded = match &config {
                Some(path) => load(path),
                None => embedded(),
            };
            let Some(mut config) = loaded else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let scaler = config.scaler.take();
            let mut proxy = gantry::proxy::Proxy::new(config)?;
            match scaler {
                Some(s) => gantry::scaler::spawn_in_proxy(&mut proxy, s),
                None => tracing::warn!("No `scaler:` section: running the proxy alone"),
            }
            proxy.run()?;
        }
        Command::Scaler {
            config,
            admin,
            token,
            listen,
        } => {
            let Some(config) = load(&config) else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let scaler = config
                .scaler
                .ok_or(gantry::scaler::ScalerError::NotConfigured)?;
            gantry::scaler::run_standalone(scaler, &admin, token, listen)?;
        }
        Command::Check { paths } => {
            let (files, errors) = gantry::scaler::policy::check(&paths);
            if !errors.is_empty() {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s) in {files} policy file(s)", errors.len());
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            println!("{files} policy file(s) ok");
        }
        Command::Schema => print!("{}", gantry::scaler::policy::schema()),
        Command::Status { admin, scaler } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let scaler = scaler.unwrap_or_else(|| admin.clone());
            print!(
                "{}",
                rt.block_on(gantry::scaler::status::fetch(&admin, &scaler))?
            );
        }
        Command::Worker(args) => gantry::worker::run(*args)?,
        Command::Bench(args) => return Ok(ExitCode::from(gantry::bench::args::main(*args))),
    }
    Ok(ExitCode::SUCCESS)
}
