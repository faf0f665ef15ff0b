//! Observing a pool: the [`MetricsSource`] trait, the real [`Observer`], and the sample [`Window`].
//!
//! A source returns one [`Reading`] per evaluation: a value per metric rule,
//! or `None` when it cannot be had (that metric then holds scale-down).
//! Counters (requests, durations) become rates and latencies over the time
//! since the previous reading; the window then averages readings.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::control::{Counters, Member, PoolControl};
use super::exposition;
use super::policy::{MetricKind, MetricSource, Policy};
use super::runtime::{Replica, Runtime};
use crate::client::{encode, HttpClient};

/// One reading of a pool's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Per metric rule, in policy order.
    pub values: Vec<Option<f64>>,
    /// A request arrived since the last reading, or one is in flight.
    pub active: bool,
}

/// Reads a pool's metrics.
#[async_trait]
pub trait MetricsSource: Send + Sync + 'static {
    /// Reads every metric of `policy`; `ready` are the replicas in the pool
    /// and up, `members` the proxy's view of the pool.
    async fn read(&self, policy: &Policy, ready: &[Replica], members: &[Member]) -> Reading;
}

/// The real source: proxy counters, runtime stats, worker `/metrics`, Prometheus.
pub struct Observer {
    control: Arc<dyn PoolControl>,
    runtime: Arc<dyn Runtime>,
    client: HttpClient,
    last: Mutex<HashMap<String, (Instant, Counters)>>,
}

impl Observer {
    /// An observer over a proxy and a runtime.
    pub fn new(control: Arc<dyn PoolControl>, runtime: Arc<dyn Runtime>) -> Observer {
        Observer {
            control,
            runtime,
            client: HttpClient::new(Duration::from_secs(2)),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Counters now and the previous ones with the seconds between them.
    async fn counters(&self, pool: &str) -> Option<(Counters, Option<(Counters, f64)>)> {
        let now_c = self.control.counters(pool).await.ok()?;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last
            .insert(pool.to_string(), (now, now_c.clone()))
            .map(|(t, c)| (c, now.duration_since(t).as_secs_f64()))
            .filter(|(_, dt)| *dt > 0.0);
        Some((now_c, prev))
    }

    async fn queue_length(&self, ready: &[Replica]) -> Option<f64> {
        let reads = ready.iter().map(|r| async move {
            let reply = self.client.get(&format!("http://{}/metrics", r.addr)).await;
            let text = reply.ok().filter(|r| r.ok())?.text();
            let name = crate::metrics::names::WORKER_QUEUE_LENGTH;
            exposition::sum(&exposition::parse(&text), name, &[])
        });
        mean(futures::future::join_all(reads).await.into_iter().flatten())
    }

    async fn prometheus(&self, url: &str, query: &str) -> Option<f64> {
        let url = format!("{url}/api/v1/query?query={}", encode(query));
        let reply = self.client.get(&url).await.ok().filter(|r| r.ok())?;
        let v: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
        let data = &v["data"];
        let value = match data["resultType"].as_str()? {
            "vector" => &data["result"][0]["value"][1],
            "scalar" => &data["result"][1],
            _ => return None,
        };
        value.as_str()?.parse().ok().filter(|v: &f64| v.is_finite())
    }
}

#[async_trait]
impl MetricsSource for Observer {
    async fn read(&self, policy: &Policy, ready: &[Replica], members: &[Member]) -> Reading {
        let counters = self.counters(&policy.pool).await;
        let n = ready.len() as f64;
        let inflight: u64 = members
            .iter()
            .filter(|m| m.state != crate::admin::BackendState::Draining)
            .map(|m| m.inflight)
            .sum();
        let deltas = counters.as_ref().and_then(|(c, prev)| {
            let (p, dt) = prev.as_ref()?;
            Some(Delta::between(p, c, *dt))
        });
        let kinds: Vec<MetricKind> = policy.metrics.iter().map(|m| m.kind).collect();
        let needs = |k: &[MetricKind]| kinds.iter().any(|x| k.contains(x));
        let usage = if needs(&[MetricKind::CpuPercent, MetricKind::MemoryPercent]) {
            self.runtime.usage(ready).await
        } else {
            Vec::new()
        };
        let queue = if needs(&[MetricKind::QueueLength]) {
            self.queue_length(ready).await
        } else {
            None
        };
        let per_replica = |v: f64| (n > 0.0).then(|| v / n);
        let mut values = Vec::with_capacity(policy.metrics.len());
        for rule in &policy.metrics {
            let v = match (&rule.source, rule.kind) {
                (MetricSource::Prometheus { url, query }, _) => self.prometheus(url, query).await,
                (_, MetricKind::CpuPercent) => mean(usage.iter().filter_map(|u| u.cpu_percent)),
                (_, MetricKind::MemoryPercent) => {
                    mean(usage.iter().filter_map(|u| u.memory_percent))
                }
                (_, MetricKind::InflightPerReplica) => per_replica(inflight as f64),
                (_, MetricKind::RequestRatePerReplica) => deltas.and_then(|d| per_replica(d.rate)),
                (_, MetricKind::ResponseTimeAvgMs) => deltas.map(|d| d.mean_ms),
                (_, MetricKind::ResponseTimeP95Ms) => deltas.map(|d| d.p95_ms),
                (_, MetricKind::QueueLength) => queue,
            };
            values.push(v);
        }
        let active = inflight > 0 || deltas.is_some_and(|d| d.rate > 0.0);
        Reading { values, active }
    }
}

/// What happened between two counter readings.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Delta {
    /// Requests per second.
    rate: f64,
    /// Mean duration, ms (0 without requests).
    mean_ms: f64,
    /// 95th percentile duration, ms (0 without requests).
    p95_ms: f64,
}

impl Delta {
    fn between(a: &Counters, b: &Counters, dt: f64) -> Delta {
        let n = (b.duration_count - a.duration_count).max(0.0);
        let mean_ms = if n > 0.0 {
            (b.duration_sum - a.duration_sum) / n * 1000.0
        } else {
            0.0
        };
        let buckets: Vec<(f64, f64)> = b
            .buckets
            .iter()
            .map(|(le, c)| {
                let before = a.buckets.iter().find(|x| x.0 == *le).map_or(0.0, |x| x.1);
                (*le, (c - before).max(0.0))
            })
            .collect();
        Delta {
            rate: (b.requests - a.requests).max(0.0) / dt,
            mean_ms,
            p95_ms: quantile(0.95, &buckets).map_or(0.0, |s| s * 1000.0),
        }
    }
}

pub use crate::metrics::exposition::quantile;

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// Recent readings of one pool, averaged over the policy's windows.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<(Instant, Vec<Option<f64>>)>,
}

impl Window {
    /// Adds a reading taken at `now`, forgetting readings older than `keep`.
    pub fn push(&mut self, now: Instant, values: Vec<Option<f64>>, keep: Duration) {
        if self
            .samples
            .back()
            .is_some_and(|s| s.1.len() != values.len())
        {
            self.samples.clear();
        }
        self.samples.push_back((now, values));
        let cut = now.checked_sub(keep).unwrap_or(now);
        while self.samples.front().is_some_and(|s| s.0 < cut) {
            self.samples.pop_front();
        }
    }

    /// Forgets every reading (the policy's metrics changed).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Mean of metric `i` over the last `over`; `None` when the newest reading lacks it.
    pub fn mean(&self, i: usize, now: Instant, over: Duration) -> Option<f64> {
        self.samples.back()?.1.get(i).copied().flatten()?;
        mean(
            self.samples
                .iter()
                .filter(|s| now.duration_since(s.0) < over)
                .filter_map(|s| s.1.get(i).copied().flatten()),
        )
    }

    /// Means over the stable and the panic window, per metric.
    pub fn means(&self, policy: &Policy, now: Instant) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
        let n = policy.metrics.len();
        let short = policy.panic.map_or(policy.window, |p| p.window);
        let stable = (0..n).map(|i| self.mean(i, now, policy.window)).collect();
        let panic = (0..n).map(|i| self.mean(i, now, short)).collect();
        (stable, panic)
    }
}

/// A scripted source for tests: returns whatever was set last.
#[derive(Debug, Default)]
pub struct FakeMetrics {
    reading: Mutex<Reading>,
}

impl FakeMetrics {
    /// Sets what the next readings return.
    pub fn set(&self, values: &[Option<f64>], active: bool) {
        *self.reading.lock().unwrap_or_else(|e| e.into_inner()) = Reading {
            values: values.to_vec(),
            active,
        };
    }
}

#[async_trait]
impl MetricsSource for FakeMetrics {
    async fn read(&self, policy: &Policy, _: &[Replica], _: &[Member]) -> Reading {
        let mut r = self
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        r.values.resize(policy.metrics.len(), None);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = [
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let check = |q: f64, want: f64| {
            let got = quantile(q, &b).unwrap();
            assert!((got - want).abs() < 1e-9, "q{q}: {got} != {want}");
        };
        check(0.5, 0.1);
        check(0.7, 0.3);
        check(0.95, 0.75);
        assert_eq!(quantile(0.95, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.1)
        );
    }

    #[test]
    fn deltas_give_rate_mean_and_p95() {
        let a = Counters {
            requests: 10.0,
            duration_sum: 1.0,
            duration_count: 10.0,
            buckets: vec![(0.1, 10.0), (0.5, 10.0), (f64::INFINITY, 10.0)],
        };
        let b = Counters {
            requests: 30.0,
            duration_sum: 5.0,
            duration_count: 30.0,
            buckets: vec![(0.1, 10.0), (0.5, 30.0), (f64::INFINITY, 30.0)],
        };
        let d = Delta::between(&a, &b, 2.0);
        assert_eq!(d.rate, 10.0);
        assert!((d.mean_ms - 200.0).abs() < 1e-9);
        assert!((d.p95_ms - 480.0).abs() < 1e-6, "{}", d.p95_ms);
        assert_eq!(Delta::between(&b, &b, 1.0).mean_ms, 0.0);
    }

    /// A worker `/metrics` and a Prometheus query API on one loopback server.
    async fn outside_server() -> std::net::SocketAddr {
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(|| async {
                    "# TYPE gantry_worker_queue_length gauge\ngantry_worker_queue_length 6\n"
                }),
            )
            .route(
                "/api/v1/query",
                get(
                    |axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                        let q = q.unwrap_or_default();
                        let v = if q.contains("up%7Bjob") { "2.5" } else { "NaN" };
                        axum::Json(serde_json::json!({"status": "success", "data": {
                        "resultType": "vector",
                        "result": [{"metric": {}, "value": [1.0, v]}]}}))
                    },
                ),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    #[tokio::test]
    async fn reads_worker_queues_prometheus_and_proxy_counters() {
        let addr = outside_server().await;
        let config = crate::config::from_str(
            std::path::Path::new("g.yaml"),
            "pools:\n  obs: {}\nroutes: [{prefix: /, pool: obs}]\n",
        )
        .unwrap();
        let pools = Arc::new(crate::proxy::Pools::from_config(&config));
        let control = Arc::new(crate::scaler::control::InProcess::new(pools));
        let runtime = Arc::new(crate::scaler::runtime::fake::FakeRuntime::new());
        let observer = Observer::new(control, runtime);
        let text = format!(
            "pool: obs\nmax: 3\nmetrics:\n  - {{metric: queue_length, target: 4}}\n  - metric: inflight_per_replica\n    target: 4\n    prometheus: {{url: 'http://{addr}', query: 'up{{job=\"x\"}}'}}\n  - metric: cpu_percent\n    target: 50\n    prometheus: {{url: 'http://{addr}', query: 'nan'}}\n  - {{metric: request_rate_per_replica, target: 4}}\n  - {{metric: inflight_per_replica, target: 4}}\n"
        );
        let policy =
            crate::scaler::policy::from_str(std::path::Path::new("p.yaml"), &text).unwrap();
        let ready = [Replica {
            id: "r".into(),
            pool: "obs".into(),
            addr,
        }];
        let members = [Member {
            addr,
            state: crate::admin::BackendState::Up,
            inflight: 3,
        }];
        let r = observer.read(&policy, &ready, &members).await;
        // The first reading has no earlier counters: no request rate yet.
        assert_eq!(r.values, vec![Some(6.0), Some(2.5), None, None, Some(3.0)]);
        assert!(r.active);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = observer.read(&policy, &ready, &members).await;
        assert_eq!(r.values[3], Some(0.0));
    }

    #[test]
    fn window_means_and_missing_newest() {
        let t = Instant::now() + Duration::from_secs(100);
        let s = Duration::from_secs;
        let mut w = Window::default();
        w.push(t, vec![Some(1.0), Some(5.0)], s(60));
        w.push(t + s(5), vec![Some(3.0), None], s(60));
        w.push(t + s(10), vec![Some(8.0), Some(1.0)], s(60));
        assert_eq!(w.mean(0, t + s(10), s(30)), Some(4.0));
        assert_eq!(w.mean(0, t + s(10), s(6)), Some(5.5));
        assert_eq!(w.mean(1, t + s(10), s(30)), Some(3.0));
        w.push(t + s(15), vec![Some(8.0), None], s(60));
        assert_eq!(w.mean(1, t + s(15), s(30)), None);
        // Forgotten past `keep`; a reading of another shape starts over.
        w.push(t + s(100), vec![Some(2.0), Some(2.0)], s(60));
        assert_eq!(w.mean(0, t + s(100), s(1000)), Some(2.0));
        w.push(t + s(101), vec![Some(7.0)], s(60));
        assert_eq!(w.mean(0, t + s(101), s(1000)), Some(7.0));
    }
}
