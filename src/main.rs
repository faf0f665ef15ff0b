//! Gantry command line: parse arguments, load config, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gantry::telemetry::{self, LogFormat};

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
}

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
    }
    Ok(ExitCode::SUCCESS)
}
