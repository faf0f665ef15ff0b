//! `gantry worker --tune`: measure throughput and p99 over batch sizes and queue delays.
//!
//! Each grid cell starts fresh sessions behind a batcher with that cell's
//! settings and drives it in-process with `concurrency` closed-loop clients
//! for `duration` (no HTTP, so the numbers are the batcher and the model).
//! The recommendation is the cell with the highest throughput whose p99 stays
//! within the latency budget; if none does, the one with the lowest p99.

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batcher::{BatchSettings, Batcher};
use super::{features, load_spec, ort_engines, WorkerConfig, WorkerError};
use crate::metrics::worker as m;

/// Batch sizes tried; 1 is batching off.
pub const BATCH_SIZES: &[usize] = &[1, 8, 32, 64];
/// Queue delays tried with batching on, in microseconds.
pub const DELAYS_US: &[u64] = &[0, 1000, 2000, 5000];

/// How to measure.
#[derive(Debug, Clone, Copy)]
pub struct TuneSettings {
    /// p99 the recommended settings must stay under (default 50 ms).
    pub latency_budget: Duration,
    /// Concurrent closed-loop clients (default 64).
    pub concurrency: usize,
    /// Length of each measurement (default 1.5 s).
    pub duration: Duration,
}

/// One measured grid cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Most items per execution.
    pub max_batch_size: usize,
    /// Queue delay.
    pub max_queue_delay: Duration,
    /// Completed requests per second.
    pub throughput: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Items per model execution, on average.
    pub mean_batch: f64,
}

/// Runs the grid on `config`'s model and prints the table and the recommendation.
pub fn run(config: &WorkerConfig, settings: &TuneSettings) -> Result<(), WorkerError> {
    let spec = load_spec(&config.model_dir)?;
    let urls = Arc::new(sample_urls(&config.model_dir));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WorkerError::io("starting the runtime", e))?;
    println!(
        "Tuning {} ({}), {} session(s) x {} thread(s), {} clients, {:?} per cell, p99 budget {:?}",
        spec.id(),
        config.onnx_file.display(),
        config.sessions,
        config.intra_threads,
        settings.concurrency,
        settings.duration,
        settings.latency_budget
    );
    let mut cells = Vec::new();
    for (max_batch_size, delay) in grid() {
        let batch = BatchSettings {
            max_batch_size,
            max_queue_delay: delay,
            queue_capacity: settings.concurrency.max(max_batch_size) * 2,
        };
        let engines = ort_engines(config, &spec, config.sessions)?;
        let batcher = Arc::new(Batcher::start(
            engines,
            features::extract_into,
            spec.dim,
            batch,
        )?);
        let cell = rt.block_on(measure(batcher, urls.clone(), batch, settings))?;
        cells.push(cell);
    }
    print!("{}", table(&cells, settings.latency_budget));
    match recommend(&cells, settings.latency_budget) {
        Some((c, true)) => println!(
            "Recommended: --max-batch-size {} --max-queue-delay {}",
            c.max_batch_size,
            humantime_serde::re::humantime::format_duration(c.max_queue_delay)
        ),
        Some((c, false)) => println!(
            "No setting meets the {:?} budget; lowest p99: --max-batch-size {} --max-queue-delay {}",
            settings.latency_budget,
            c.max_batch_size,
            humantime_serde::re::humantime::format_duration(c.max_queue_delay)
        ),
        None => println!("Nothing measured"),
    }
    Ok(())
}

/// The (batch size, delay) pairs tried: batching off once, then every size with every delay.
pub fn grid() -> Vec<(usize, Duration)> {
    let mut cells = Vec::new();
    for &b in BATCH_SIZES {
        let delays: &[u64] = if b == 1 { &[0] } else { DELAYS_US };
        for &d in delays {
            cells.push((b, Duration::from_micros(d)));
        }
    }
    cells
}

/// Drives `batcher` with closed-loop clients and measures one cell.
async fn measure(
    batcher: Arc<Batcher>,
    urls: Arc<Vec<String>>,
    batch: BatchSettings,
    settings: &TuneSettings,
) -> Result<Cell, WorkerError> {
    let executions = m::BATCH_EXECUTIONS.get();
    let inferences = m::INFERENCES.get();
    let started = Instant::now();
    let end = started + settings.duration;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..settings.concurrency {
        let (batcher, urls) = (batcher.clone(), urls.clone());
        clients.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < end {
                let t = Instant::now();
                batcher.score(vec![urls[i % urls.len()].clone()]).await?;
                latencies.push(t.elapsed());
                i += STRIDE;
            }
            Ok::<_, WorkerError>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = clients.join_next().await {
        let more = joined.map_err(|e| WorkerError::Inference(e.to_string()))??;
        latencies.extend(more);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let execs = (m::BATCH_EXECUTIONS.get() - executions).max(1);
    Ok(Cell {
        max_batch_size: batch.max_batch_size,
        max_queue_delay: batch.max_queue_delay,
        throughput: latencies.len() as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        mean_batch: (m::INFERENCES.get() - inferences) as f64 / execs as f64,
    })
}

/// Step between the URLs one client sends, so clients do not send in lockstep.
const STRIDE: usize = 7;

/// The `q` quantile of sorted `values` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The best cell within `budget` (`true`), else the lowest-p99 cell (`false`).
pub fn recommend(cells: &[Cell], budget: Duration) -> Option<(Cell, bool)> {
    let within = cells
        .iter()
        .filter(|c| c.p99 <= budget)
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput));
    if let Some(c) = within {
        return Some((*c, true));
    }
    cells.iter().min_by_key(|c| c.p99).map(|c| (*c, false))
}

/// The result table, one row per cell; `*` marks cells within budget.
pub fn table(cells: &[Cell], budget: Duration) -> String {
    let mut out = String::from("batch  delay    req/s     p50 ms   p99 ms   mean batch  budget\n");
    for c in cells {
        out.push_str(&format!(
            "{:>5}  {:>5}  {:>9.0}  {:>7.2}  {:>7.2}  {:>10.1}  {}\n",
            c.max_batch_size,
            humantime_serde::re::humantime::format_duration(c.max_queue_delay).to_string(),
            c.throughput,
            c.p50.as_secs_f64() * 1e3,
            c.p99.as_secs_f64() * 1e3,
            c.mean_batch,
            if c.p99 <= budget { "*" } else { "" },
        ));
    }
    out
}

/// URLs to send: those of the model's `golden.jsonl`, or a few built in.
fn sample_urls(dir: &std::path::Path) -> Vec<String> {
    let from_golden = std::fs::File::open(dir.join("golden.jsonl"))
        .map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
                .filter_map(|v| v.get("url").and_then(|u| u.as_str()).map(String::from))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !from_golden.is_empty() {
        return from_golden;
    }
    [
        "https://www.wikipedia.org/",
        "http://paypal.com.secure-login.example.ru/verify",
        "https://github.com/rust-lang/rust/issues",
        "http://192.168.10.4/bank/login.php?session=8f2a",
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(b: usize, throughput: f64, p99_ms: u64) -> Cell {
        Cell {
            max_batch_size: b,
            max_queue_delay: Duration::ZERO,
            throughput,
            p50: Duration::ZERO,
            p99: Duration::from_millis(p99_ms),
            mean_batch: 1.0,
        }
    }

    #[test]
    fn recommends_fastest_within_budget() {
        let cells = [cell(1, 100.0, 5), cell(8, 400.0, 20), cell(64, 900.0, 80)];
        let budget = Duration::from_millis(50);
        assert_eq!(recommend(&cells, budget), Some((cells[1], true)));
        let tight = Duration::from_millis(1);
        assert_eq!(recommend(&cells, tight), Some((cells[0], false)));
        assert_eq!(recommend(&[], budget), None);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&ms[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }

    #[test]
    fn grid_tries_batching_off_once() {
        let g = grid();
        assert_eq!(g.iter().filter(|(b, _)| *b == 1).count(), 1);
        assert_eq!(g.len(), 1 + (BATCH_SIZES.len() - 1) * DELAYS_US.len());
    }
}
