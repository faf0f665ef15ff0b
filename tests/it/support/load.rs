//! Load generators: a fixed number of GETs ([`load`]), and closed-loop POSTs until stopped ([`Load`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::client;

/// Sends `n` GETs to `url` with `concurrency` in flight; returns status or error per request and
/// the `x-backend` header counts.
pub async fn load(
    url: &str,
    n: usize,
    concurrency: usize,
) -> (Vec<Result<u16, String>>, HashMap<String, usize>) {
    use futures::StreamExt;
    let c = client();
    let results: Vec<(Result<u16, String>, Option<String>)> = futures::stream::iter(0..n)
        .map(|_| {
            let c = c.clone();
            let url = url.to_string();
            async move {
                match c.get(&url).send().await {
                    Ok(r) => {
                        let b = r
                            .headers()
                            .get("x-backend")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        (Ok(r.status().as_u16()), b)
                    }
                    Err(e) => (Err(e.to_string()), None),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut counts = HashMap::new();
    for (_, b) in &results {
        if let Some(b) = b {
            *counts.entry(b.clone()).or_insert(0) += 1;
        }
    }
    (results.into_iter().map(|r| r.0).collect(), counts)
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: usize,
    pub failed: Vec<String>,
    /// Responses per `x-backend` (fake worker) or per `via` backend header.
    pub backends: HashMap<String, usize>,
}

/// Closed-loop load: `concurrency` clients POSTing `body` until stopped; a `{n}` in
/// `body` becomes a number counting the requests (every body differs).
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, concurrency: usize, body: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let c = client();
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks = (0..concurrency)
            .map(|_| {
                let (stop, report, c) = (stop.clone(), report.clone(), c.clone());
                let (url, body, sent) = (url.to_string(), body.to_string(), sent.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = sent.fetch_add(1, Ordering::Relaxed);
                        let body = body.replace("{n}", &n.to_string());
                        let r = c.post(&url).body(body).send().await;
                        let mut rep = report.lock().unwrap();
                        match r {
                            Ok(r) if r.status() == 200 => {
                                rep.ok += 1;
                                if let Some(b) = r.headers().get("x-backend") {
                                    let b = b.to_str().unwrap_or_default().to_string();
                                    *rep.backends.entry(b).or_default() += 1;
                                }
                            }
                            Ok(r) => rep.failed.push(format!("status {}", r.status())),
                            Err(e) => rep.failed.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            tasks,
        }
    }

    /// Requests answered so far, well or not.
    pub fn seen(&self) -> usize {
        let r = self.report.lock().unwrap();
        r.ok + r.failed.len()
    }

    /// Waits until `n` more requests than now have been answered (the load moved on).
    pub async fn more(&self, n: usize) {
        let want = self.seen() + n;
        super::until(
            format!("{n} more requests"),
            std::time::Duration::from_secs(60),
            || async move { self.seen() >= want },
        )
        .await;
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.report.lock().unwrap())
    }
}
