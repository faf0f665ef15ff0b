//! L2: a key-value store shared by every proxy instance (Redis through fred), behind timeouts and a breaker.
//!
//! [`RemoteStore`] is the outside system: [`FredStore`] talks to Redis,
//! [`MemoryRemote`] is the in-memory stand-in for tests (it can also fail or
//! hang on demand). [`RedisTier`] wraps either: every request-path call is
//! cut at the command timeout and goes through the [`Breaker`], so a down or
//! slow Redis costs at most one timeout per caller until the circuit opens,
//! and nothing after that. fred reconnects by itself; the half-open probe
//! notices when it has. Purges travel between proxies on a pub/sub channel
//! ([`RemoteStore::publish`], [`RemoteStore::subscribe`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scan::Scanner;
use futures::StreamExt;

use super::breaker::{Breaker, CircuitState};
use super::clock::Clock;
use super::config::RedisConfig;
use super::entry::CachedResponse;
use super::key::CacheKey;
use crate::metrics::cache as m;

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message published on the channel.
    Message(String),
    /// Messages may have been missed (a reconnect, or a slow reader).
    Missed,
}

/// Events a subscription buffers before it reports [`Event::Missed`].
pub const EVENTS: usize = 1024;

/// Errors from the remote store.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The client could not be built (bad URL or settings).
    #[error("cannot set up the Redis client: {0}")]
    Setup(String),
    /// Redis answered with an error or the connection failed.
    #[error("redis command failed: {0}")]
    Command(String),
    /// No answer within the timeout.
    #[error("redis command timed out after {0:?}")]
    Timeout(Duration),
    /// The circuit is open: Redis was not asked.
    #[error("redis is bypassed (circuit open)")]
    Unavailable,
}

impl From<fred::error::Error> for RemoteError {
    fn from(e: fred::error::Error) -> Self {
        RemoteError::Command(e.to_string())
    }
}

/// The operations the cache needs from a shared key-value store.
#[async_trait]
pub trait RemoteStore: Send + Sync + 'static {
    /// The value under `key`.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, RemoteError>;
    /// Stores `value` under `key` for `ttl_secs` (`SET key value EX ttl`).
    async fn set_ex(&self, key: &str, value: Bytes, ttl_secs: u64) -> Result<(), RemoteError>;
    /// Deletes one key; returns how many were deleted.
    async fn del(&self, key: &str) -> Result<u64, RemoteError>;
    /// Deletes every key starting with `prefix` (with `SCAN`, never `KEYS`).
    async fn del_prefix(&self, prefix: &str) -> Result<u64, RemoteError>;
    /// Publishes `message` on `channel`.
    async fn publish(&self, _channel: &str, _message: &str) -> Result<(), RemoteError> {
        Ok(())
    }
    /// Messages on `channel` from now on, for as long as the store lives;
    /// `None` when the store has no pub/sub.
    fn subscribe(&self, _channel: &str) -> Option<tokio::sync::mpsc::Receiver<Event>> {
        None
    }
    /// Starts connecting in the background (called on the runtime that keeps it).
    fn start(&self) {}
    /// Resolves once connected (at once for stores without connections).
    async fn ready(&self) -> Result<(), RemoteError> {
        Ok(())
    }
}

/// Redis through a fred connection pool.
pub struct FredStore {
    /// Request-path connections; fred itself also gives up at the command timeout.
    pool: Pool,
    /// One connection for admin purges, with the longer purge timeout.
    admin: Client,
    /// Invalidations from other proxies; resubscribes after reconnects.
    subscriber: SubscriberClient,
}

impl FredStore {
    /// Builds the clients; [`RemoteStore::start`] connects them. An
    /// unreachable server is not an error: fred keeps reconnecting.
    pub fn connect(cfg: &RedisConfig) -> Result<FredStore, RemoteError> {
        let tls = cfg.tls.as_ref().map(tls_connector).transpose()?;
        // A `rediss://` URL is read as `redis://`: the TLS settings are ours.
        let url = match cfg.url.strip_prefix("rediss://") {
            Some(rest) => format!("redis://{rest}"),
            None => cfg.url.clone(),
        };
        let build = |command_timeout: Duration| -> Result<Builder, RemoteError> {
            let mut config = Config::from_url(&url)?;
            config.fail_fast = false;
            if cfg.username.is_some() {
                config.username = cfg.username.clone();
            }
            if let Some(p) = &cfg.password {
                config.password = Some(p.expose().to_string());
            }
            config.tls = tls.clone().map(Into::into);
            let mut b = Builder::from_config(config);
            b.with_connection_config(|c| {
                c.connection_timeout = cfg.connect_timeout;
                c.internal_command_timeout = cfg.connect_timeout;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = command_timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
            Ok(b)
        };
        let pool = build(cfg.command_timeout)?.build_pool(cfg.pool_size)?;
        let admin = build(cfg.purge_timeout)?.build()?;
        let subscriber = build(cfg.purge_timeout)?.build_subscriber_client()?;
        Ok(FredStore {
            pool,
            admin,
            subscriber,
        })
    }
}

/// A rustls connector trusting `tls.ca_pem`, or the system's roots; ring as
/// the crypto provider, named here so no process-wide default is needed.
fn tls_connector(
    tls: &super::config::RedisTls,
) -> Result<fred::types::config::TlsConnector, RemoteError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let tls_error = |e: String| RemoteError::Setup(format!("TLS: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| tls_error(e.to_string()))?;
                roots.add(cert).map_err(|e| tls_error(e.to_string()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system root rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}

#[async_trait]
impl RemoteStore for FredStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, RemoteError> {
        Ok(self.pool.get::<Option<Bytes>, _>(key).await?)
    }

    async fn set_ex(&self, key: &str, value: Bytes, ttl_secs: u64) -> Result<(), RemoteError> {
        let ex = Expiration::EX(i64::try_from(ttl_secs.max(1)).unwrap_or(i64::MAX));
        self.pool
            .set::<(), _, _>(key, value, Some(ex), None, false)
            .await?;
        Ok(())
    }

    async fn del(&self, key: &str) -> Result<u64, RemoteError> {
        Ok(self.admin.del::<u64, _>(key).await?)
    }

    async fn del_prefix(&self, prefix: &str) -> Result<u64, RemoteError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut pages = self.admin.scan(pattern, Some(1000), None);
        let mut deleted = 0;
        while let Some(page) = pages.next().await {
            let mut page = page?;
            if let Some(keys) = page.take_results().filter(|k| !k.is_empty()) {
                deleted += self.admin.unlink::<u64, _>(keys).await?;
            }
            page.next();
        }
        Ok(deleted)
    }

    async fn publish(&self, channel: &str, message: &str) -> Result<(), RemoteError> {
        self.admin
            .publish::<i64, _, _>(channel, message.to_string())
            .await?;
        Ok(())
    }

    fn subscribe(&self, channel: &str) -> Option<tokio::sync::mpsc::Receiver<Event>> {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENTS);
        let sub = self.subscriber.clone();
        let channel = channel.to_string();
        tokio::spawn(async move {
            let mut messages = sub.message_rx();
            let _resubscribe = sub.manage_subscriptions();
            while let Err(e) = sub.subscribe(channel.as_str()).await {
                tracing::debug!(error = %e, "Cache invalidation channel: subscribing again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            m::INVALIDATIONS_SUBSCRIBED.set(1);
            tracing::info!(channel = %channel, "Listening for other proxies' cache purges");
            // Reconnects from now on: the first connection lost nothing.
            let mut reconnects = sub.reconnect_rx();
            loop {
                let event = tokio::select! {
                    m = messages.recv() => match m {
                        Ok(m) => Event::Message(m.value.as_string().unwrap_or_default()),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::Missed,
                        Err(_) => return,
                    },
                    r = reconnects.recv() => match r {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::Missed,
                        Err(_) => return,
                    },
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Some(rx)
    }

    fn start(&self) {
        // The connection tasks run until `quit`; their handles are not needed.
        drop(self.pool.connect());
        drop(self.admin.connect());
        drop(self.subscriber.connect());
    }

    async fn ready(&self) -> Result<(), RemoteError> {
        self.pool.wait_for_connect().await?;
        Ok(self.admin.wait_for_connect().await?)
    }
}

/// Escapes Redis glob characters so `prefix` matches literally.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How [`MemoryRemote`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RemoteMode {
    /// Works.
    Up = 0,
    /// Every call fails at once, as with a refused connection.
    Down = 1,
    /// Every call hangs forever, as with a silent network.
    Hang = 2,
}

/// An in-memory [`RemoteStore`] for tests (no expiry: tests drive time with the cache clock).
#[derive(Debug)]
pub struct MemoryRemote {
    map: Mutex<HashMap<String, Bytes>>,
    /// Published messages: (channel, message).
    published: tokio::sync::broadcast::Sender<(String, String)>,
    mode: AtomicU8,
    /// Calls received, whatever the mode.
    pub calls: AtomicU64,
}

impl Default for MemoryRemote {
    fn default() -> Self {
        MemoryRemote {
            map: Mutex::default(),
            published: tokio::sync::broadcast::channel(EVENTS).0,
            mode: AtomicU8::new(0),
            calls: AtomicU64::new(0),
        }
    }
}

impl MemoryRemote {
    /// Switches behaviour.
    pub fn set_mode(&self, mode: RemoteMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Keys held.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.lock().keys().cloned().collect();
        k.sort();
        k
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bytes>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn gate(&self) -> Result<(), RemoteError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            0 => Ok(()),
            1 => Err(RemoteError::Command("connection refused".into())),
            _ => std::future::pending().await,
        }
    }
}

#[async_trait]
impl RemoteStore for MemoryRemote {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, RemoteError> {
        self.gate().await?;
        Ok(self.lock().get(key).cloned())
    }

    async fn set_ex(&self, key: &str, value: Bytes, _ttl_secs: u64) -> Result<(), RemoteError> {
        self.gate().await?;
        self.lock().insert(key.to_string(), value);
        Ok(())
    }

    async fn del(&self, key: &str) -> Result<u64, RemoteError> {
        self.gate().await?;
        Ok(u64::from(self.lock().remove(key).is_some()))
    }

    async fn del_prefix(&self, prefix: &str) -> Result<u64, RemoteError> {
        self.gate().await?;
        let mut map = self.lock();
        let before = map.len();
        map.retain(|k, _| !k.starts_with(prefix));
        Ok((before - map.len()) as u64)
    }

    async fn publish(&self, channel: &str, message: &str) -> Result<(), RemoteError> {
        self.gate().await?;
        let _ = self.published.send((channel.into(), message.into()));
        Ok(())
    }

    fn subscribe(&self, channel: &str) -> Option<tokio::sync::mpsc::Receiver<Event>> {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENTS);
        let mut published = self.published.subscribe();
        let channel = channel.to_string();
        tokio::spawn(async move {
            loop {
                let event = match published.recv().await {
                    Ok((c, m)) if c == channel => Event::Message(m),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::Missed,
                    Err(_) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Some(rx)
    }
}

/// The outcome of an L2 lookup.
#[derive(Debug)]
pub enum RemoteLookup {
    /// Found (fresh or stale: the caller judges).
    Hit(CachedResponse),
    /// Not there, or unreadable.
    Miss,
    /// Redis failed or timed out.
    Error,
    /// Skipped: circuit open.
    Bypass,
}

/// L2: a [`RemoteStore`] with a key namespace, timeouts and a circuit breaker.
pub struct RedisTier {
    store: Arc<dyn RemoteStore>,
    breaker: Arc<Breaker>,
    /// Prepended to every key, so purging a shared Redis touches only ours.
    namespace: String,
    /// Longest a request-path call may take.
    command_timeout: Duration,
    /// Longest an admin purge may take.
    purge_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl RedisTier {
    /// Wraps `store` with the settings in `cfg`.
    pub fn new(store: Arc<dyn RemoteStore>, cfg: &RedisConfig, clock: Arc<dyn Clock>) -> RedisTier {
        let breaker = Breaker::new(cfg.failure_threshold, cfg.cooldown, clock.clone(), |s| {
            m::REDIS_CIRCUIT.set(s.gauge());
            match s {
                CircuitState::Open => tracing::warn!("Redis cache tier bypassed: circuit open"),
                CircuitState::HalfOpen => tracing::info!("Redis cache tier: probing"),
                CircuitState::Closed => tracing::info!("Redis cache tier in use: circuit closed"),
            }
        });
        RedisTier {
            store,
            breaker,
            namespace: cfg.key_prefix.clone(),
            command_timeout: cfg.command_timeout,
            purge_timeout: cfg.purge_timeout,
            clock,
        }
    }

    /// Waits up to `within` for the store to connect; true when it did.
    pub async fn ready(&self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.store.ready()).await,
            Ok(Ok(()))
        )
    }

    /// The breaker's state.
    pub fn circuit(&self) -> CircuitState {
        self.breaker.state()
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.namespace, key)
    }

    /// Runs one request-path call through the breaker and the timeout.
    async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        let permit = self.breaker.try_acquire().ok_or(RemoteError::Unavailable)?;
        match tokio::time::timeout(self.command_timeout, call).await {
            Ok(Ok(v)) => {
                permit.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                permit.failure();
                Err(e)
            }
            Err(_) => {
                permit.failure();
                Err(RemoteError::Timeout(self.command_timeout))
            }
        }
    }

    /// Looks `key` up.
    pub async fn get(&self, key: &CacheKey) -> RemoteLookup {
        let full = self.full(key.as_str());
        match self.guarded(self.store.get(&full)).await {
            Ok(Some(bytes)) => match CachedResponse::decode(&bytes) {
                Ok(e) => RemoteLookup::Hit(e),
                Err(err) => {
                    tracing::warn!(key = %key, error = %err, "Unreadable Redis cache entry");
                    RemoteLookup::Miss
                }
            },
            Ok(None) => RemoteLookup::Miss,
            Err(RemoteError::Unavailable) => RemoteLookup::Bypass,
            Err(e) => {
                tracing::debug!(error = %e, "Redis cache lookup failed");
                RemoteLookup::Error
            }
        }
    }

    /// Stores `entry` until its last stale window ends; failures are logged, not returned.
    pub async fn set(&self, key: &CacheKey, entry: &CachedResponse) {
        let ttl_secs = entry.remaining_ms(self.clock.now_ms()).div_ceil(1000);
        if ttl_secs == 0 {
            return;
        }
        let full = self.full(key.as_str());
        let value = Bytes::from(entry.encode());
        match self
            .guarded(self.store.set_ex(&full, value, ttl_secs))
            .await
        {
            Ok(()) => m::writes("l2", "ok", 1),
            Err(RemoteError::Unavailable) => m::writes("l2", "bypass", 1),
            Err(e) => {
                m::writes("l2", "failed", 1);
                tracing::debug!(error = %e, "Redis cache store skipped");
            }
        }
    }

    /// Tells the other proxies sharing this Redis to drop `what` from their
    /// own tiers (admin; bounded by the purge timeout).
    pub async fn publish_invalidation(&self, message: &str) -> Result<(), RemoteError> {
        let channel = self.channel();
        self.admin(self.store.publish(&channel, message)).await
    }

    /// Invalidations published by the proxies sharing this Redis.
    pub fn invalidations(&self) -> Option<tokio::sync::mpsc::Receiver<Event>> {
        self.store.subscribe(&self.channel())
    }

    /// The channel of this namespace's invalidations.
    fn channel(&self) -> String {
        format!("{}invalidate", self.namespace)
    }

    /// Deletes one key (admin; ignores the breaker, bounded by the purge timeout).
    pub async fn remove(&self, key: &str) -> Result<u64, RemoteError> {
        let full = self.full(key);
        self.admin(self.store.del(&full)).await
    }

    /// Deletes every key starting with `prefix` (admin); `""` is everything of ours.
    pub async fn remove_prefix(&self, prefix: &str) -> Result<u64, RemoteError> {
        let full = self.full(prefix);
        self.admin(self.store.del_prefix(&full)).await
    }

    async fn admin<T>(
        &self,
        call: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        tokio::time::timeout(self.purge_timeout, call)
            .await
            .unwrap_or(Err(RemoteError::Timeout(self.purge_timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::clock::ManualClock;
    use crate::cache::entry::tests::sample;

    fn cfg() -> RedisConfig {
        RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            username: None,
            password: None,
            tls: None,
            pool_size: 1,
            connect_timeout: Duration::from_millis(100),
            command_timeout: Duration::from_millis(20),
            failure_threshold: 2,
            cooldown: Duration::from_secs(1),
            key_prefix: "t:".into(),
            purge_timeout: Duration::from_millis(50),
        }
    }

    fn tier() -> (RedisTier, Arc<MemoryRemote>, Arc<ManualClock>) {
        let remote = Arc::new(MemoryRemote::default());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = RedisTier::new(remote.clone(), &cfg(), clock.clone());
        (t, remote, clock)
    }

    #[tokio::test]
    async fn stores_under_the_namespace_and_reads_back() {
        let (t, remote, clock) = tier();
        let k = CacheKey::from_stored("p:/a:1");
        assert!(matches!(t.get(&k).await, RemoteLookup::Miss));
        t.set(&k, &sample("{}", clock.now_ms(), 5000)).await;
        assert_eq!(remote.keys(), vec!["t:p:/a:1"]);
        assert!(matches!(t.get(&k).await, RemoteLookup::Hit(e) if e.body == "{}"));
    }

    #[tokio::test]
    async fn hanging_redis_opens_the_circuit_and_is_then_not_asked() {
        let (t, remote, clock) = tier();
        let k = CacheKey::from_stored("p:/a:1");
        remote.set_mode(RemoteMode::Hang);
        assert!(matches!(t.get(&k).await, RemoteLookup::Error));
        assert!(matches!(t.get(&k).await, RemoteLookup::Error));
        assert_eq!(t.circuit(), CircuitState::Open);
        let calls = remote.calls.load(Ordering::SeqCst);
        for _ in 0..10 {
            assert!(matches!(t.get(&k).await, RemoteLookup::Bypass));
            t.set(&k, &sample("{}", clock.now_ms(), 5000)).await;
        }
        assert_eq!(
            remote.calls.load(Ordering::SeqCst),
            calls,
            "open circuit: no calls"
        );
        // Redis comes back; after the cool-down one probe closes the circuit.
        remote.set_mode(RemoteMode::Up);
        clock.advance(Duration::from_secs(1));
        assert!(matches!(t.get(&k).await, RemoteLookup::Miss));
        assert_eq!(t.circuit(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn admin_purge_ignores_the_circuit_but_not_the_timeout() {
        let (t, remote, clock) = tier();
        for k in ["a:/x:1", "a:/y:2", "b:/x:3"] {
            t.set(
                &CacheKey::from_stored(k),
                &sample("{}", clock.now_ms(), 5000),
            )
            .await;
        }
        assert_eq!(t.remove_prefix("a:").await.unwrap(), 2);
        assert_eq!(t.remove("b:/x:3").await.unwrap(), 1);
        remote.set_mode(RemoteMode::Hang);
        assert!(matches!(
            t.remove_prefix("").await,
            Err(RemoteError::Timeout(_))
        ));
    }

    #[test]
    fn glob_characters_in_prefixes_are_literal() {
        assert_eq!(glob_escape("a:/v1/*?[x]\\"), "a:/v1/\\*\\?\\[x\\]\\\\");
    }
}
