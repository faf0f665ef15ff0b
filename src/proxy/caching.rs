//! The response cache on the request path: key the request, serve hits, capture and store misses, serve stale on error.
//!
//! `request_filter` calls [`CacheFront::request`] after routing. For a cached
//! route it reads the request body (Pingora keeps it in its retry buffer and
//! replays it upstream, so a miss still forwards it), computes the key and
//! looks up. A hit is written here (`X-Cache: HIT-L1|HIT-L2|HIT-L3|STALE`);
//! a miss leaves a [`CacheState`] in the request context that captures the
//! upstream response and stores it at end of stream when policy allows
//! (`X-Cache: MISS`; requests the route will not cache get `BYPASS`).
//!
//! Only bodies with a declared length up to [`MAX_KEYED_BODY`] are keyed:
//! that is Pingora's retry buffer, the only way to forward a body already
//! read in `request_filter`. Larger or chunked bodies bypass the cache.
//!
//! A stale-while-revalidate hit is refreshed by replaying the request
//! through this proxy's own listener with a per-process secret header naming
//! the refresh: the replay skips the lookup, takes the key's fill guard from
//! the refresh and fills it, so the new entry is in memory before any other
//! request may start another refresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::pool::Pool;
use super::respond::{Answer, Phase};
use crate::cache::key::{self, KeyParts};
use crate::cache::policy::{self, Bypass};
use crate::cache::{Cache, CacheKey, CachedResponse, FillGuard, Lookup, RouteCache, XCache};

/// Largest request body keyed: Pingora's retry buffer (64 KiB) replays it upstream.
pub const MAX_KEYED_BODY: u64 = 64 * 1024;
/// Header marking this proxy's own refresh of a stale entry.
pub const REVALIDATE_HEADER: &str = "x-gantry-revalidate";
/// Longest a background refresh may take.
const REVALIDATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The cache as the proxy uses it.
pub struct CacheFront {
    /// The tiers.
    pub cache: Cache,
    revalidator: Revalidator,
}

/// Cache state of one request.
pub struct CacheState {
    /// `MISS` or `BYPASS`, sent on proxied responses.
    pub x_cache: XCache,
    key: Option<CacheKey>,
    route: Option<Arc<RouteCache>>,
    /// Held while this request fills the key for identical waiting requests.
    fill: Option<FillGuard>,
    /// A stale copy to serve if the backend fails.
    pub stale: Option<Arc<CachedResponse>>,
    capture: Option<Capture>,
    /// The cache's purge generation when the request arrived.
    generation: u64,
}

/// A response being captured for storing.
struct Capture {
    status: u16,
    headers: Vec<(String, Bytes)>,
    ttl: Duration,
    body: BytesMut,
}

/// What [`prepare`] found.
enum Prepared {
    Bypass(&'static str),
    Key(CacheKey, Bytes),
}

impl CacheState {
    fn bypass() -> CacheState {
        CacheState {
            x_cache: XCache::Bypass,
            key: None,
            route: None,
            fill: None,
            stale: None,
            capture: None,
            generation: 0,
        }
    }

    /// The upstream response header arrived: decide whether to capture it.
    pub fn on_response_header(&mut self, resp: &ResponseHeader) {
        let Some(route) = &self.route else { return };
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let status = resp.status.as_u16();
        match policy::response_ttl(route, status, &resp.headers, declared) {
            Ok(ttl) => {
                self.capture = Some(Capture {
                    status,
                    headers: policy::stored_headers(&resp.headers),
                    ttl,
                    body: BytesMut::with_capacity(declared as usize),
                });
            }
            // Not storable: let identical waiting requests go to the backend now.
            Err(_) => self.abandon(),
        }
    }

    /// A response body chunk went by; at the end, store what was captured.
    pub fn on_body(&mut self, body: &Option<Bytes>, end: bool, cache: &Cache) {
        let (Some(capture), Some(route)) = (&mut self.capture, &self.route) else {
            return;
        };
        if let Some(b) = body {
            capture.body.extend_from_slice(b);
        }
        if capture.body.len() as u64 > route.max_object_bytes {
            self.abandon();
            return;
        }
        if !end {
            return;
        }
        let (Some(capture), Some(key)) = (self.capture.take(), self.key.clone()) else {
            return;
        };
        let entry = CachedResponse {
            status: capture.status,
            headers: capture.headers,
            body: capture.body.freeze(),
            stored_at_ms: cache.clock().now_ms(),
            ttl_ms: millis(capture.ttl),
            stale_while_revalidate_ms: millis(route.stale_while_revalidate),
            stale_if_error_ms: millis(route.stale_if_error),
        };
        // The filter is synchronous: store on a task. Identical requests keep
        // waiting on the fill guard until it lands, so none misses meanwhile.
        let (fill, cache, generation) = (self.fill.take(), cache.clone(), self.generation);
        tokio::spawn(async move {
            match fill {
                Some(f) => f.fill(entry).await,
                None => cache.store_since(generation, key, entry).await,
            }
        });
    }

    fn abandon(&mut self) {
        self.capture = None;
        self.fill = None;
        self.route = None;
    }
}

impl CacheFront {
    /// A front over `cache`; refreshes go to the proxy at `listen`.
    pub fn new(cache: Cache, listen: std::net::SocketAddr) -> CacheFront {
        CacheFront {
            cache,
            revalidator: Revalidator::new(listen),
        }
    }

    /// The cache part of `request_filter`: [`Phase::Answered`] when a hit was served.
    pub async fn request(
        &self,
        session: &mut Session,
        route: &Arc<RouteCache>,
        pool: &Pool,
        state: &mut Option<CacheState>,
    ) -> Result<Phase> {
        let refresh = self.revalidator.refresh_id(session.req_header());
        let generation = self.cache.generation();
        let (key, body) = match prepare(session, route, pool).await? {
            Prepared::Key(k, b) => (k, b),
            Prepared::Bypass(reason) => {
                tracing::debug!(reason, "Cache bypassed");
                *state = Some(CacheState::bypass());
                return Ok(Phase::Forward);
            }
        };
        let mut st = CacheState {
            x_cache: XCache::Miss,
            key: Some(key.clone()),
            route: Some(route.clone()),
            fill: None,
            stale: None,
            capture: None,
            generation,
        };
        if let Some(id) = refresh {
            st.fill = self.revalidator.take(id);
        } else {
            match self.cache.lookup(&key).await {
                Lookup::Hit(hit) => {
                    let now = self.cache.clock().now_ms();
                    let _answered = serve(session, &hit.entry, hit.x_cache(), now).await?;
                    if let Some(guard) = hit.revalidate {
                        self.revalidator.spawn(guard, session.req_header(), body);
                    }
                    return Ok(Phase::Answered);
                }
                Lookup::Miss(m) => {
                    st.fill = m.fill;
                    st.stale = m.stale;
                }
            }
        }
        *state = Some(st);
        Ok(Phase::Forward)
    }
}

/// Checks the request against the route's rules, reads its body and computes the key.
async fn prepare(session: &mut Session, route: &RouteCache, pool: &Pool) -> Result<Prepared> {
    let req = session.req_header();
    if let Err(why) = policy::request(route, &req.method, &req.headers) {
        return Ok(Prepared::Bypass(match why {
            Bypass::Method => "method",
            Bypass::Authorized => "credentials",
            Bypass::NoStore => "no-store",
            Bypass::TooLarge => "too large",
            Bypass::Range => "range",
        }));
    }
    let body = match body_length(&req.headers) {
        Some(0) => Bytes::new(),
        Some(n) if n <= MAX_KEYED_BODY.min(pool.config.max_body_bytes) => {
            read_body(session, n).await?
        }
        Some(_) => return Ok(Prepared::Bypass("body over the keyed limit")),
        None if req.headers.contains_key(http::header::TRANSFER_ENCODING) => {
            return Ok(Prepared::Bypass("body without a length"))
        }
        None => Bytes::new(),
    };
    let req = session.req_header();
    let keyed = key::keyed_headers(&route.vary, route.allow_authorized, &req.headers);
    let vary: Vec<(&str, Option<&[u8]>)> = keyed
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_deref()))
        .collect();
    let key = KeyParts {
        method: req.method.as_str(),
        pool: &pool.name,
        path: req.uri.path(),
        query: req.uri.query(),
        vary: &vary,
        body: &body,
    }
    .key();
    Ok(Prepared::Key(key, body))
}

fn body_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the whole request body; Pingora's retry buffer keeps a copy for the upstream.
async fn read_body(session: &mut Session, declared: u64) -> Result<Bytes> {
    session.enable_retry_buffering();
    let mut body = BytesMut::with_capacity(declared as usize);
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > declared {
            return Error::e_explain(ErrorType::HTTPStatus(400), "body longer than declared");
        }
    }
    Ok(body.freeze())
}

/// `d` in whole milliseconds, saturating.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes a cached response.
pub async fn serve(
    session: &mut Session,
    entry: &CachedResponse,
    x_cache: XCache,
    now_ms: u64,
) -> Result<Phase> {
    let mut a = Answer::new(entry.status, entry.body.clone(), entry.headers.len() + 2)?;
    for (name, value) in &entry.headers {
        a.append(name.clone(), &value[..])?;
    }
    let a = a
        .set("age", &entry.age_secs(now_ms).to_string())?
        .set("x-cache", x_cache.as_str())?;
    a.send(session).await
}

type RefreshClient = Client<HttpConnector, Full<Bytes>>;

/// Refreshes stale entries by replaying requests through the proxy's own listener.
struct Revalidator {
    client: RefreshClient,
    base: String,
    /// Random per process, so clients cannot force refreshes.
    secret: String,
    /// Fill guards of refreshes in flight, by refresh id, for the replayed request to take.
    pending: Arc<Mutex<HashMap<u64, FillGuard>>>,
    next_id: AtomicU64,
}

impl Revalidator {
    fn new(listen: std::net::SocketAddr) -> Revalidator {
        let host = match listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Revalidator {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: format!("http://{host}:{}", listen.port()),
            secret: format!("{:032x}", rand::random::<u128>()),
            pending: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// The refresh id of a replay sent by this process (`secret:id`).
    fn refresh_id(&self, req: &RequestHeader) -> Option<u64> {
        let v = req.headers.get(REVALIDATE_HEADER)?.to_str().ok()?;
        let (secret, id) = v.split_once(':')?;
        (secret == self.secret).then(|| id.parse().ok())?
    }

    /// The fill guard of refresh `id`, for the replayed request to fill.
    fn take(&self, id: u64) -> Option<FillGuard> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Replays `req` in the background; the replay fills `guard`.
    fn spawn(&self, guard: FillGuard, req: &RequestHeader, body: Bytes) {
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(format!("{}{}", self.base, path));
        for (name, value) in req.headers.iter() {
            if !matches!(name.as_str(), "host" | "connection" | "content-length") {
                builder = builder.header(name, value);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = match builder
            .header(REVALIDATE_HEADER, format!("{}:{id}", self.secret))
            .body(Full::new(body))
        {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "Cannot build a cache refresh"),
        };
        let key = guard.key().clone();
        let pending = self.pending.clone();
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, guard);
        let client = self.client.clone();
        tokio::spawn(async move {
            let done = tokio::time::timeout(REVALIDATE_TIMEOUT, async {
                let resp = client.request(request).await?;
                // Read to the end: the proxy stores at end of stream.
                resp.into_body().collect().await.map(|_| ())?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::debug!(key = %key, "Cache refresh failed");
            }
            // Not taken (the replay failed or bypassed the cache): release the waiters.
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }
}
