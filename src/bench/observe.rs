//! What the target says about itself during a run, sampled once a second: its CPU and memory (a local pid, or its `/metrics`), and gantry's replicas and scaling decisions (its admin API).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessesToUpdate, System};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admin::client::AdminClient;
use crate::client::HttpClient;
use crate::scaler::exposition::{self, Sample};

/// How often the target is sampled.
const EVERY: Duration = Duration::from_secs(1);
/// Most pools followed (an admin API lists what it has).
const MAX_POOLS: usize = 16;
/// Most scaling decisions kept.
const MAX_DECISIONS: usize = 10_000;
/// Most samples of each series kept (a week of seconds); later ones are dropped.
const MAX_SAMPLES: usize = 7 * 24 * 3600;

/// One reading of the target's resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Seconds from the start of the run.
    pub t: f64,
    /// The target process's CPU, percent of one core.
    pub process_cpu_percent: Option<f64>,
    /// Its resident memory.
    pub process_rss_bytes: Option<f64>,
    /// The target host's CPU, percent of all cores.
    pub host_cpu_percent: Option<f64>,
    /// The target host's memory in use, percent.
    pub host_memory_percent: Option<f64>,
    /// Open sockets of the process (a local pid on Linux).
    pub sockets: Option<u64>,
}

/// Replicas of one pool at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replicas {
    /// Seconds from the start of the run.
    pub t: f64,
    /// Pool.
    pub pool: String,
    /// What the scaler last asked for.
    pub desired: u32,
    /// Running or starting.
    pub current: u32,
    /// Ready.
    pub ready: u32,
}

/// One scaling decision made during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionMark {
    /// Seconds from the start of the run.
    pub t: f64,
    /// Pool.
    pub pool: String,
    /// Replicas before.
    pub from: u32,
    /// Replicas wanted.
    pub to: u32,
    /// `up` or `down`.
    pub direction: String,
    /// The scaler's explanation.
    pub message: String,
}

/// Everything sampled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Resource readings.
    pub resources: Vec<Resources>,
    /// Replica counts.
    pub replicas: Vec<Replicas>,
    /// Scaling decisions.
    pub decisions: Vec<DecisionMark>,
    /// Why a source gave nothing (first failure of each).
    pub problems: Vec<String>,
}

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Gantry's admin API, and its token.
    pub admin: Option<(String, Option<String>)>,
    /// A Prometheus `/metrics` URL of the target.
    pub metrics: Option<String>,
    /// A local process id.
    pub pid: Option<u32>,
}

impl Sources {
    /// Whether anything is to be sampled.
    pub fn any(&self) -> bool {
        self.admin.is_some() || self.metrics.is_some() || self.pid.is_some()
    }
}

/// Samples `sources` every second until `stop` turns true; `start` is the run's start.
pub async fn sample(sources: Sources, start: Instant, mut stop: watch::Receiver<bool>) -> Observed {
    let mut out = Observed::default();
    if !sources.any() {
        return out;
    }
    let admin = (sources.admin.as_ref()).map(|(url, token)| AdminClient::new(url, token.clone()));
    let http = HttpClient::new(Duration::from_secs(2));
    let mut local = sources.pid.map(|pid| (System::new(), Pid::from_u32(pid)));
    let mut last_cpu: Option<(f64, f64)> = None; // (t, process_cpu_seconds_total)
    let since_ms = unix_ms();
    let mut seen = BTreeSet::new();
    let mut ticker = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let t = start.elapsed().as_secs_f64();
        let mut r = Resources {
            t,
            ..Resources::default()
        };
        if let Some((sys, pid)) = local.as_mut() {
            read_local(sys, *pid, &mut r);
        }
        if let Some(url) = &sources.metrics {
            match http.get(url).await {
                Ok(reply) => read_metrics(&exposition::parse(&reply.text()), &mut r, &mut last_cpu),
                Err(e) => note(&mut out.problems, format!("metrics: {e}")),
            }
        }
        if let Some(admin) = &admin {
            observe_admin(
                admin,
                t,
                since_ms,
                &mut seen,
                &mut out,
                &mut r,
                &mut last_cpu,
            )
            .await;
        }
        if out.resources.len() < MAX_SAMPLES
            && r != (Resources {
                t,
                ..Resources::default()
            })
        {
            out.resources.push(r);
        }
    }
    out
}

async fn observe_admin(
    admin: &AdminClient,
    t: f64,
    since_ms: u64,
    seen: &mut BTreeSet<(String, u64, u32)>,
    out: &mut Observed,
    r: &mut Resources,
    last_cpu: &mut Option<(f64, f64)>,
) {
    match admin.metrics().await {
        Ok(text) => {
            let samples = exposition::parse(&text);
            if r.process_cpu_percent.is_none() {
                read_metrics(&samples, r, last_cpu);
            }
            if out.replicas.len() < MAX_SAMPLES {
                out.replicas.extend(replicas(&samples, t));
            }
        }
        Err(e) => note(&mut out.problems, format!("admin metrics: {e}")),
    }
    match admin.scaler().await {
        Ok(journal) => {
            for (pool, j) in journal.iter().take(MAX_POOLS) {
                for d in &j.decisions {
                    let key = (pool.clone(), d.at_unix_ms, d.to);
                    let fresh = d.at_unix_ms >= since_ms && d.direction != "none";
                    if fresh && out.decisions.len() < MAX_DECISIONS && seen.insert(key) {
                        out.decisions.push(DecisionMark {
                            t: (d.at_unix_ms - since_ms) as f64 / 1000.0,
                            pool: pool.clone(),
                            from: d.from,
                            to: d.to,
                            direction: d.direction.clone(),
                            message: d.message.clone(),
                        });
                    }
                }
            }
        }
        Err(e) => note(&mut out.problems, format!("admin scaler journal: {e}")),
    }
}

/// `gantry_scaler_replicas{pool, state}` as one sample per pool.
fn replicas(samples: &[Sample], t: f64) -> Vec<Replicas> {
    let pools: BTreeSet<&str> = (samples.iter())
        .filter(|s| s.name == "gantry_scaler_replicas")
        .filter_map(|s| s.label("pool"))
        .take(MAX_POOLS)
        .collect();
    let get = |pool: &str, state: &str| {
        exposition::sum(
            samples,
            "gantry_scaler_replicas",
            &[("pool", pool), ("state", state)],
        )
        .unwrap_or(0.0) as u32
    };
    (pools.into_iter())
        .map(|pool| Replicas {
            t,
            pool: pool.to_string(),
            desired: get(pool, "desired"),
            current: get(pool, "current"),
            ready: get(pool, "ready"),
        })
        .collect()
}

/// CPU and memory from a Prometheus text: gantry's own gauges, else the standard `process_*` ones.
fn read_metrics(samples: &[Sample], r: &mut Resources, last_cpu: &mut Option<(f64, f64)>) {
    let one = |name: &str| exposition::sum(samples, name, &[]);
    r.process_cpu_percent = one("gantry_process_cpu_percent").or_else(|| {
        let total = one("process_cpu_seconds_total")?;
        let prev = last_cpu.replace((r.t, total));
        let (t0, c0) = prev?;
        (r.t > t0).then(|| (total - c0) / (r.t - t0) * 100.0)
    });
    r.process_rss_bytes =
        one("gantry_process_resident_bytes").or_else(|| one("process_resident_memory_bytes"));
    r.host_cpu_percent = r
        .host_cpu_percent
        .or_else(|| one("gantry_host_cpu_percent"));
    r.host_memory_percent = r
        .host_memory_percent
        .or_else(|| one("gantry_host_memory_percent"));
}

fn read_local(sys: &mut System, pid: Pid, r: &mut Resources) {
    sys.refresh_cpu_usage();
    sys.refresh_memory();
    sys.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
    if let Some(p) = sys.process(pid) {
        r.process_cpu_percent = Some(f64::from(p.cpu_usage()));
        r.process_rss_bytes = Some(p.memory() as f64);
        r.sockets = sockets(pid.as_u32());
    }
    r.host_cpu_percent = Some(f64::from(sys.global_cpu_usage()));
    if sys.total_memory() > 0 {
        r.host_memory_percent = Some(sys.used_memory() as f64 / sys.total_memory() as f64 * 100.0);
    }
}

/// Sockets among the open files of `pid` (Linux `/proc`; `None` elsewhere).
fn sockets(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count();
    Some(n as u64)
}

fn note(problems: &mut Vec<String>, p: String) {
    let source = p.split(':').next().unwrap_or("").to_string();
    if !problems.iter().any(|q| q.starts_with(&source)) {
        problems.push(p);
    }
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_process_metrics_are_read_from_exposition_text() {
        let text = "gantry_scaler_replicas{pool=\"a\",state=\"desired\"} 3\n\
                    gantry_scaler_replicas{pool=\"a\",state=\"current\"} 2\n\
                    gantry_scaler_replicas{pool=\"a\",state=\"ready\"} 1\n\
                    process_cpu_seconds_total 10\nprocess_resident_memory_bytes 2048\n";
        let samples = exposition::parse(text);
        let r = replicas(&samples, 1.0);
        assert_eq!((r[0].desired, r[0].current, r[0].ready), (3, 2, 1));
        let mut last = None;
        let mut res = Resources {
            t: 1.0,
            ..Resources::default()
        };
        read_metrics(&samples, &mut res, &mut last);
        assert_eq!(
            (res.process_cpu_percent, res.process_rss_bytes),
            (None, Some(2048.0))
        );
        let later = exposition::parse("process_cpu_seconds_total 10.5\n");
        let mut res = Resources {
            t: 2.0,
            ..Resources::default()
        };
        read_metrics(&later, &mut res, &mut last);
        assert_eq!(res.process_cpu_percent, Some(50.0));
    }
}
