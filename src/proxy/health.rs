//! Active health checks: `GET <path>` on every backend of a pool each interval.
//!
//! A 2xx within the timeout is a pass. Verdicts go through the backend's
//! rise/fall streaks, so one lost probe does not flap a backend. The same loop
//! forgets drained backends once they are idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::pool::{Backend, Pool};

/// HTTP client used for probes.
pub type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// A client that keeps no idle connections: a probe must test a fresh
/// connect. With `h2c`, it speaks HTTP/2 with prior knowledge, as the
/// pool's requests do.
pub fn probe_client(h2c: bool) -> ProbeClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .http2_only(h2c)
        .build(connector)
}

/// One probe: true on a 2xx within `timeout`.
pub async fn probe(client: &ProbeClient, backend: &Backend, path: &str, timeout: Duration) -> bool {
    let Ok(uri) = format!("http://{}{}", backend.addr, path).parse::<http::Uri>() else {
        return false;
    };
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(resp)) => resp.status().is_success(),
        _ => false,
    }
}

/// Probes every member of `pool` once, concurrently, and applies the verdicts.
pub async fn check_pool(client: &ProbeClient, pool: &Pool) {
    let h = &pool.config.health;
    let members = pool.backends();
    let probes = members.iter().map(|b| async move {
        let passed = probe(client, b, &h.path, h.timeout).await;
        (b.clone(), passed)
    });
    for (b, passed) in futures::future::join_all(probes).await {
        match b.record_check(passed, h.rise, h.fall) {
            Some(true) => tracing::info!(pool = %pool.name, backend = %b.addr, "Backend up"),
            Some(false) => tracing::warn!(pool = %pool.name, backend = %b.addr, "Backend down"),
            None => {}
        }
    }
    let now = Instant::now();
    pool.refresh_metrics(now);
    for addr in pool.reap_drained(now) {
        tracing::info!(pool = %pool.name, backend = %addr, "Backend drained");
    }
}

/// Checks `pool` every interval, forever.
pub async fn run(pool: Arc<Pool>) {
    let h2c = pool.config.protocol == crate::config::raw::UpstreamProtocol::H2c;
    let client = probe_client(h2c);
    let mut tick = tokio::time::interval(pool.config.health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check_pool(&client, &pool).await;
    }
}
