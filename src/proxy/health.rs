//! Active health checks: `GET <path>` on every backend of a pool each interval.
//!
//! A 2xx within the timeout is a pass. Verdicts go through the backend's
//! rise/fall streaks, so one lost probe does not flap a backend. The same loop
//! forgets drained backends once they are idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::pool::{Backend, Pool};
use crate::config::PoolConfig;

/// HTTP client used for probes: plain or TLS, as the pool's requests.
pub type ProbeClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The probe client of a pool. It keeps no idle connections: a probe must
/// test a fresh connect (and, with TLS, a fresh handshake with the pool's
/// CA, server name and client certificate). With HTTP/2 (`h2c`, `h2`) it
/// speaks only HTTP/2, as the pool's requests do.
pub fn probe_client(pool: &PoolConfig) -> ProbeClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(1)));
    http.enforce_http(false);
    let http2 = pool.protocol.is_http2();
    let tls = match &pool.tls {
        Some(t) => t.probe_tls(),
        // Never used for a plain pool (its probes are `http://`).
        None => rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    };
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match pool.tls.as_ref().and_then(|t| t.server_name()) {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    let connector = if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .http2_only(http2)
        .build(connector)
}

/// One probe: true on a 2xx within `timeout`.
pub async fn probe(
    client: &ProbeClient,
    scheme: &str,
    backend: &Backend,
    path: &str,
    timeout: Duration,
) -> bool {
    let Ok(uri) = format!("{scheme}://{}{}", backend.addr, path).parse::<http::Uri>() else {
        return false;
    };
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(resp)) => resp.status().is_success(),
        Ok(Err(e)) => {
            tracing::debug!(backend = %backend.addr, error = ?e, "Health check failed");
            false
        }
        Err(_) => false,
    }
}

/// Probes every member of `pool` once, concurrently, and applies the verdicts.
pub async fn check_pool(client: &ProbeClient, pool: &Pool) {
    let h = &pool.config.health;
    let members = pool.backends();
    let scheme = if pool.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let probes = members.iter().map(|b| async move {
        let passed = probe(client, scheme, b, &h.path, h.timeout).await;
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
    let loads = || pool.config.tls.as_ref().map(|t| t.loads());
    let mut client = probe_client(&pool.config);
    let mut loaded = loads();
    let mut tick = tokio::time::interval(pool.config.health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Reloaded TLS files: probe with them, as new requests do.
        if loads() != loaded {
            client = probe_client(&pool.config);
            loaded = loads();
        }
        check_pool(&client, &pool).await;
    }
}
