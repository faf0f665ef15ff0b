//! The workers' own numbers for the status page: each pool member's `/metrics`, scraped off the request path.
//!
//! Every sample (while the page is watched) the control runtime scrapes at
//! most [`MAX_WORKERS`] members of the scaled pools
//! concurrently, each given [`SCRAPE_TIMEOUT`]; a member whose `/metrics`
//! has no worker metrics (not a `gantry worker`) is not listed. The page
//! reads the last results, never waits for a scrape.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admin::status::WorkerStatus;
use crate::client::HttpClient;
use crate::metrics::exposition::{self, Sample};
use crate::metrics::names;

use super::super::pool::Pools;

/// Most members scraped per round (and listed).
pub const MAX_WORKERS: usize = 64;
/// Longest one scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest `/metrics` body read from a worker; a larger one is not a worker's.
const MAX_BODY: usize = 256 * 1024;

/// The last scrape of each worker; clones share it.
#[derive(Clone)]
pub struct Workers {
    client: HttpClient,
    last: Arc<Mutex<BTreeMap<SocketAddr, WorkerStatus>>>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            client: HttpClient::new(SCRAPE_TIMEOUT),
            last: Arc::default(),
        }
    }
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, WorkerStatus>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every worker as last scraped, by pool then address.
    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        let mut v: Vec<WorkerStatus> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.pool, &a.addr).cmp(&(&b.pool, &b.addr)));
        v
    }

    /// Scrapes every member of the pools named in `scaled` (up to [`MAX_WORKERS`]) once.
    pub async fn scrape(&self, pools: &Pools, scaled: &[String]) {
        let members: Vec<(String, SocketAddr)> = pools
            .iter()
            .filter(|p| scaled.iter().any(|s| **s == *p.name))
            .flat_map(|p| {
                p.backends()
                    .iter()
                    .map(|b| (p.name.to_string(), b.addr))
                    .collect::<Vec<_>>()
            })
            .take(MAX_WORKERS)
            .collect();
        let rounds = members.iter().map(|(pool, addr)| async move {
            let url = format!("http://{addr}/metrics");
            let got = match self.client.get(&url).await {
                Ok(r) if r.ok() && r.body.len() <= MAX_BODY => Ok(exposition::parse(&r.text())),
                Ok(r) => Err(format!("/metrics answered {}", r.status)),
                Err(e) => Err(e.to_string()),
            };
            (pool.clone(), *addr, got)
        });
        let results = futures::future::join_all(rounds).await;
        let mut last = self.lock();
        let mut next = BTreeMap::new();
        for (pool, addr, got) in results {
            match got {
                Ok(samples) => {
                    if let Some(w) = worker(&pool, addr, &samples) {
                        next.insert(addr, w);
                    }
                }
                // Known as a worker: keep its last numbers, say why they are old.
                Err(e) => {
                    if let Some(mut w) = last.remove(&addr) {
                        w.error = Some(e);
                        next.insert(addr, w);
                    }
                }
            }
        }
        *last = next;
    }
}

/// What a worker's samples say, or `None` when they are not a worker's.
pub fn worker(pool: &str, addr: SocketAddr, s: &[Sample]) -> Option<WorkerStatus> {
    let inferences = exposition::sum(s, names::WORKER_INFERENCES, &[])?;
    let get = |name: &str| exposition::sum(s, name, &[]).unwrap_or(0.0);
    let batches = get(names::WORKER_BATCH_EXECUTIONS);
    let mean = |h: &str| {
        let sum = get(&format!("{h}_sum"));
        let count = get(&format!("{h}_count"));
        (count > 0.0).then(|| sum / count * 1e3)
    };
    let mut verdicts = BTreeMap::new();
    for v in s.iter().filter(|x| x.name == names::WORKER_VERDICTS) {
        if let Some(class) = v.label("verdict") {
            *verdicts.entry(class.to_string()).or_insert(0) += v.value as u64;
        }
    }
    let model = s
        .iter()
        .filter(|x| x.name == names::WORKER_MODEL_INFO)
        .find_map(|x| x.label("model"))
        .map(str::to_string);
    Some(WorkerStatus {
        model,
        pool: pool.to_string(),
        addr: addr.to_string(),
        error: None,
        inferences: inferences as u64,
        batches: batches as u64,
        mean_batch: (batches > 0.0).then(|| inferences / batches),
        queue_ms: mean(names::WORKER_QUEUE_WAIT),
        inference_ms: mean(names::WORKER_COMPUTE),
        queue_length: get(names::WORKER_QUEUE_LENGTH).max(0.0) as u64,
        verdicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_workers_metrics_and_skips_other_backends() {
        let text = "gantry_worker_inferences_total 12\ngantry_worker_batch_executions_total 4\n\
            gantry_worker_queue_wait_seconds_sum 0.006\ngantry_worker_queue_wait_seconds_count 12\n\
            gantry_worker_compute_seconds_sum 0.008\ngantry_worker_compute_seconds_count 4\n\
            gantry_worker_queue_length 1\n\
            gantry_worker_model_info{model=\"phishing-url@1.2.0\"} 1\n\
            gantry_worker_verdicts_total{verdict=\"phishing\",model=\"phishing-url@1.2.0\"} 5\ngantry_worker_verdicts_total{verdict=\"legitimate\",model=\"phishing-url@1.2.0\"} 7\n";
        let addr: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let w = worker("analysis", addr, &exposition::parse(text)).unwrap();
        assert_eq!((w.inferences, w.batches, w.mean_batch), (12, 4, Some(3.0)));
        assert!((w.queue_ms.unwrap() - 0.5).abs() < 1e-9);
        assert!((w.inference_ms.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(w.queue_length, 1);
        assert_eq!(w.verdicts["phishing"], 5);
        assert_eq!(w.verdicts["legitimate"], 7);
        assert_eq!(w.model.as_deref(), Some("phishing-url@1.2.0"));
        assert_eq!(
            worker("web", addr, &exposition::parse("nginx_up 1\n")),
            None
        );
    }
}
