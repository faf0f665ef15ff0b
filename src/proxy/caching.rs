//! The response cache on the request path: key the request, serve hits, revalidate, capture and store misses, serve stale on error.
//!
//! `request_filter` calls [`CacheFront::request`] after routing. For a cached
//! route it reads the request body (Pingora keeps it in its retry buffer and
//! replays it upstream, so a miss still forwards it), computes the primary
//! key and looks up. A vary marker found there names the selecting headers:
//! the request's values of them make the variant key, looked up next. A hit
//! the request accepts ([`policy::usable`]) is written here (`X-Cache:
//! HIT-L1|HIT-L2|HIT-L3|STALE`, or a `304` when the client's own conditions
//! match); a miss leaves a [`CacheState`] in the request context that
//! captures the upstream response and stores it at end of stream when policy
//! allows (`X-Cache: MISS`; requests the route will not cache get `BYPASS`).
//!
//! Only bodies with a declared length up to [`MAX_KEYED_BODY`] are keyed:
//! that is Pingora's retry buffer, the only way to forward a body already
//! read in `request_filter`. Larger or chunked bodies bypass the cache.
//!
//! **Refreshes** replay the request through this proxy's own listener with a
//! per-process secret header naming the refresh: the replay skips the
//! lookup, takes the key's fill guard and fills it, so the new entry is in
//! memory before any other request may start another refresh. A stale copy
//! with validators is refreshed conditionally (`If-None-Match`,
//! `If-Modified-Since`): a `304` to the replay refreshes the stored copy
//! ([`policy::refresh`]). A stale-while-revalidate hit is refreshed in the
//! background; a copy that must be revalidated first (stale past its
//! windows, `no-cache`, or refused by the request's own directives) waits
//! for its replay and is then served `REVALIDATED`, or what replaced it.
//! Pingora cannot turn an upstream `304` into a `200` with a stored body
//! in its response phases; going through the listener keeps balancing,
//! retries and metrics for revalidations too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pingora::prelude::*;
use pingora::proxy::Session;
use tokio::sync::oneshot;

use super::pool::Pool;
use super::respond::{Answer, Phase};
use crate::cache::key::{self, KeyParts};
use crate::cache::policy::{self, Bypass, Storing, Times, Usable};
use crate::cache::{Cache, CacheKey, CachedResponse, FillGuard, Lookup, RouteCache, XCache};

/// Largest request body keyed: Pingora's retry buffer (64 KiB) replays it upstream.
pub const MAX_KEYED_BODY: u64 = 64 * 1024;
/// Header marking this proxy's own refresh of a stale entry.
pub const REVALIDATE_HEADER: &str = "x-gantry-revalidate";
/// Longest a background refresh may take.
const REVALIDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Refreshes in flight at most (each holds a fill guard and a connection to
/// the own listener). When entries stored together go stale together, a
/// wave of refreshes is spread out rather than sent to the backends at once:
/// a stale hit past the bound starts none, and the next one tries again.
const MAX_PENDING: usize = 256;
/// Idle connections the refresh client keeps to the own listener.
const REFRESH_IDLE_CONNECTIONS: usize = 32;

/// The cache as the proxy uses it.
pub struct CacheFront {
    /// The tiers.
    pub cache: Cache,
    revalidator: Revalidator,
}

/// Where a response of this request is stored: the key looked up and how it was made.
#[derive(Clone)]
struct Slot {
    /// The request's primary key.
    primary: CacheKey,
    /// The key looked up: the primary key, or a variant of it.
    key: CacheKey,
    /// The selecting names of a marker found under the primary key, with its epoch.
    marker: Option<(Vec<String>, u64)>,
}

/// Cache state of one request.
pub struct CacheState {
    /// `MISS` or `BYPASS`, sent on proxied responses.
    pub x_cache: XCache,
    slot: Option<Slot>,
    route: Option<Arc<RouteCache>>,
    /// Held while this request fills the key for identical waiting requests.
    fill: Option<FillGuard>,
    /// A stale copy to serve if the backend fails (within its stale-if-error window).
    pub stale: Option<Arc<CachedResponse>>,
    capture: Option<Capture>,
    /// The cache's purge generation when the request arrived.
    generation: u64,
    /// When the request arrived (its upstream request time, for ages).
    requested_ms: u64,
    /// A stored entry this request revalidates: a `304` refreshes it.
    revalidating: Option<Arc<CachedResponse>>,
    /// Told what was stored (or `None`), for a request waiting on this refresh.
    done: Option<oneshot::Sender<Option<Arc<CachedResponse>>>>,
}

/// A response being captured for storing.
struct Capture {
    status: u16,
    storing: Storing,
    received_ms: u64,
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
            slot: None,
            route: None,
            fill: None,
            stale: None,
            capture: None,
            generation: 0,
            requested_ms: 0,
            revalidating: None,
            done: None,
        }
    }

    /// The upstream response header arrived: refresh on a `304`, or decide whether to capture it.
    pub fn on_response_header(
        &mut self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        cache: &Cache,
    ) {
        let Some(route) = self.route.clone() else {
            return;
        };
        let status = resp.status.as_u16();
        let times = Times {
            requested_ms: self.requested_ms,
            received_ms: cache.clock().now_ms(),
        };
        if status == 304 {
            if let (Some(old), Some(slot)) = (self.revalidating.take(), self.slot.clone()) {
                let refreshed = policy::refresh(&route, &req.method, &old, &resp.headers, times);
                match refreshed {
                    Some(entry) => self.store(slot, entry, cache),
                    None => self.abandon(),
                }
                return;
            }
        }
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match policy::storable(&route, &req.method, status, &resp.headers, declared, times) {
            Ok(storing) => {
                self.capture = Some(Capture {
                    status,
                    storing,
                    received_ms: times.received_ms,
                    body: BytesMut::with_capacity(declared.min(route.max_object_bytes) as usize),
                });
            }
            // Not storable: let identical waiting requests go to the backend now.
            Err(_) => self.abandon(),
        }
    }

    /// A response body chunk went by; at the end, store what was captured.
    pub fn on_body(&mut self, req: &RequestHeader, body: &Option<Bytes>, end: bool, cache: &Cache) {
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
        let (Some(capture), Some(slot)) = (self.capture.take(), self.slot.clone()) else {
            return;
        };
        let names = key::union(
            key::route_selecting(&route.vary, route.allow_authorized),
            &capture.storing.vary,
        );
        let selected = key::selected(&names, &req.headers);
        let entry = capture.storing.entry(
            capture.status,
            capture.body.freeze(),
            capture.received_ms,
            selected,
        );
        self.store(slot, entry, cache);
    }

    /// Stores `entry` where its selecting headers say, fills this request's
    /// guard with what identical waiting requests may use, and tells a
    /// request waiting on this refresh.
    fn store(&mut self, slot: Slot, entry: CachedResponse, cache: &Cache) {
        let Some(route) = &self.route else { return };
        let names: Vec<String> = entry.selected.iter().map(|(n, _)| n.clone()).collect();
        let now = cache.clock().now_ms();
        // Where the entry goes, and the marker to write first when there is a new one.
        let (target, marker) = if names.is_empty() {
            (slot.primary.clone(), None)
        } else {
            match &slot.marker {
                Some((known, epoch)) if *known == names => {
                    (slot.primary.variant(*epoch, &entry.selected), None)
                }
                _ => {
                    let epoch = rand::random::<u64>();
                    let marker =
                        CachedResponse::marker(&names, epoch, now, policy::millis(route.max_ttl));
                    (slot.primary.variant(epoch, &entry.selected), Some(marker))
                }
            }
        };
        let (fill, cache, generation, done) = (
            self.fill.take(),
            cache.clone(),
            self.generation,
            self.done.take(),
        );
        // A request waiting on this refresh gets its own copy.
        let reply = done.map(|d| (d, Arc::new(entry.clone())));
        tokio::spawn(async move {
            // The guard is the looked-up key's: its waiters get what answers
            // them: the entry when it is stored there, else the new marker.
            match (fill, marker) {
                (Some(f), marker) if *f.key() == target => {
                    if let Some(m) = marker {
                        cache.store_since(generation, slot.primary, m).await;
                    }
                    f.fill(entry).await;
                }
                (Some(f), Some(m)) if *f.key() == slot.primary => {
                    cache.store_since(generation, target, entry).await;
                    f.fill(m).await;
                }
                (other, marker) => {
                    drop(other);
                    cache.store_since(generation, target, entry).await;
                    if let Some(m) = marker {
                        cache.store_since(generation, slot.primary, m).await;
                    }
                }
            }
            if let Some((done, entry)) = reply {
                let _ = done.send(Some(entry));
            }
        });
    }

    fn abandon(&mut self) {
        self.capture = None;
        self.fill = None;
        self.route = None;
        self.revalidating = None;
        if let Some(done) = self.done.take() {
            let _ = done.send(None);
        }
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
        let now = self.cache.clock().now_ms();
        let (primary, body) = match prepare(session, route, pool).await? {
            Prepared::Key(k, b) => (k, b),
            Prepared::Bypass(reason) => {
                tracing::debug!(reason, "Cache bypassed");
                *state = Some(CacheState::bypass());
                return Ok(Phase::Forward);
            }
        };
        let mut st = CacheState {
            x_cache: XCache::Miss,
            slot: None,
            route: Some(route.clone()),
            fill: None,
            stale: None,
            capture: None,
            generation,
            requested_ms: now,
            revalidating: None,
            done: None,
        };
        if let Some(id) = refresh {
            // This proxy's own replay: fill what the waiting request asked for.
            match self.revalidator.take(id) {
                Some(p) => {
                    st.slot = Some(p.slot);
                    st.fill = p.guard;
                    st.revalidating = p.stale;
                    st.done = Some(p.done);
                }
                None => st = CacheState::bypass(),
            }
            *state = Some(st);
            return Ok(Phase::Forward);
        }
        let mut slot = Slot {
            key: primary.clone(),
            primary,
            marker: None,
        };
        // The request's values of the marker's selecting headers; none without a marker.
        let mut selected = Vec::new();
        let mut lookup = self.cache.lookup(&slot.key).await;
        if let Lookup::Hit(h) = &lookup {
            if let Some((names, epoch)) = h.entry.as_marker() {
                selected = key::selected(&names, &session.req_header().headers);
                slot.key = slot.primary.variant(epoch, &selected);
                slot.marker = Some((names, epoch));
                lookup = self.cache.lookup(&slot.key).await;
            }
        }
        let mut stale = None;
        match lookup {
            // A variant answers only the values it was stored for (a marker never does).
            Lookup::Hit(hit)
                if hit.entry.as_marker().is_none() && hit.entry.selected == selected =>
            {
                let now = self.cache.clock().now_ms();
                match policy::usable(&session.req_header().headers, &hit.entry, now) {
                    Usable::Serve | Usable::ServeStale => {
                        let _answered = serve(session, &hit.entry, hit.x_cache(), now).await?;
                        if let Some(guard) = hit.revalidate {
                            let pending = Pending::new(slot, Some(guard), Some(hit.entry.clone()));
                            drop(self.revalidator.spawn(pending, session.req_header(), body));
                        }
                        return Ok(Phase::Answered);
                    }
                    Usable::Revalidate => {
                        st.fill = hit.revalidate;
                        stale = Some(hit.entry);
                    }
                }
            }
            Lookup::Hit(_) => {}
            Lookup::Miss(m) => {
                st.fill = m.fill;
                stale = m.stale;
            }
        }
        if policy::only_if_cached(&session.req_header().headers) {
            let _ = Answer::text(504, "not in cache (only-if-cached)")?
                .send(session)
                .await?;
            return Ok(Phase::Answered);
        }
        let get = matches!(session.req_header().method, Method::GET | Method::HEAD);
        if let Some(old) = stale
            .clone()
            .filter(|s| get && !policy::validators(s).is_empty())
        {
            // Ask the backend whether the stored copy still holds, through
            // this proxy's own listener; the replay stores what comes back.
            let pending = Pending::new(slot.clone(), st.fill.take(), Some(old.clone()));
            let done = self
                .revalidator
                .spawn(pending, session.req_header(), body)
                .await;
            let now = self.cache.clock().now_ms();
            match done {
                Ok(Some(entry)) => {
                    let x = if entry.body == old.body && entry.status == old.status {
                        XCache::Revalidated
                    } else {
                        XCache::Miss
                    };
                    let _answered = serve(session, &entry, x, now).await?;
                    return Ok(Phase::Answered);
                }
                _ if old.serves_on_error(now) => {
                    let _answered = serve(session, &old, XCache::Stale, now).await?;
                    return Ok(Phase::Answered);
                }
                // Not stored (no longer cacheable, or the backend failed): forward it ourselves.
                _ => {}
            }
        }
        st.stale = stale.filter(|s| s.serves_on_error(self.cache.clock().now_ms()));
        st.slot = Some(slot);
        *state = Some(st);
        Ok(Phase::Forward)
    }

    /// Invalidates what is stored for `urls` (pool, path, query) after a
    /// successful unsafe request (RFC 9111 §4.4): their GET and HEAD
    /// responses, every variant (the marker under the primary key), in one purge.
    pub async fn invalidate(&self, urls: &[(&str, String, Option<String>)]) {
        if urls.is_empty() {
            return;
        }
        let mut keys = Vec::with_capacity(urls.len() * 2);
        for (pool, path, query) in urls {
            for method in ["GET", "HEAD"] {
                let parts = KeyParts {
                    method,
                    pool,
                    path,
                    query: query.as_deref(),
                    body: b"",
                };
                keys.push(parts.key().to_string());
            }
        }
        let report = self.cache.purge(crate::cache::Purge::Keys(keys)).await;
        if !report.errors.is_empty() {
            tracing::warn!(errors = ?report.errors, "Cache invalidation incomplete");
        }
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
    let key = KeyParts {
        method: req.method.as_str(),
        pool: &pool.name,
        path: req.uri.path(),
        query: req.uri.query(),
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

/// Writes a cached response: a `304` when the request's own conditions match it.
pub async fn serve(
    session: &mut Session,
    entry: &CachedResponse,
    x_cache: XCache,
    now_ms: u64,
) -> Result<Phase> {
    let req = session.req_header();
    let not_modified = policy::not_modified(&req.method, &req.headers, entry);
    let (status, body) = if not_modified {
        (304, Bytes::new())
    } else {
        (entry.status, entry.body.clone())
    };
    let mut a = Answer::new(status, body, entry.headers.len() + 2)?;
    for (name, value) in &entry.headers {
        let sent = if not_modified {
            policy::NOT_MODIFIED_HEADERS.contains(&name.as_str())
        } else {
            !policy::TARGETED.contains(&name.as_str())
        };
        if sent {
            a.append(name.clone(), &value[..])?;
        }
    }
    let a = a
        .set("age", &entry.age_secs(now_ms).to_string())?
        .set("x-cache", x_cache.as_str())?;
    a.send(session).await
}

/// A refresh waiting for its replay to arrive.
struct Pending {
    slot: Slot,
    /// The key's fill, for the replay to fill.
    guard: Option<FillGuard>,
    /// The stored copy being refreshed: a `304` to the replay refreshes it.
    stale: Option<Arc<CachedResponse>>,
    done: oneshot::Sender<Option<Arc<CachedResponse>>>,
}

impl Pending {
    fn new(
        slot: Slot,
        guard: Option<FillGuard>,
        stale: Option<Arc<CachedResponse>>,
    ) -> (Pending, oneshot::Receiver<Option<Arc<CachedResponse>>>) {
        let (done, rx) = oneshot::channel();
        let p = Pending {
            slot,
            guard,
            stale,
            done,
        };
        (p, rx)
    }
}

/// Refreshes stale entries by replaying requests through the proxy's own listener.
struct Revalidator {
    client: RefreshClient,
    base: String,
    /// Random per process, so clients cannot force refreshes.
    secret: String,
    /// Refreshes in flight, by refresh id, for the replayed request to take.
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
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
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(REFRESH_IDLE_CONNECTIONS)
                .build(HttpConnector::new()),
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

    /// Refresh `id`, for the replayed request to carry out.
    fn take(&self, id: u64) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Replays `req` in the background, conditionally when the stale copy
    /// has validators; the answer says what the replay stored (`None`:
    /// nothing, or the replay failed).
    fn spawn(
        &self,
        (pending, done): (Pending, oneshot::Receiver<Option<Arc<CachedResponse>>>),
        req: &RequestHeader,
        body: Bytes,
    ) -> oneshot::Receiver<Option<Arc<CachedResponse>>> {
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(format!("{}{}", self.base, path));
        let validators = pending
            .stale
            .as_deref()
            .filter(|_| matches!(req.method, Method::GET | Method::HEAD))
            .map(policy::validators)
            .unwrap_or_default();
        for (name, value) in req.headers.iter() {
            let conditional =
                !validators.is_empty() && policy::CONDITIONALS.contains(&name.as_str());
            if !conditional && !matches!(name.as_str(), "host" | "connection" | "content-length") {
                builder = builder.header(name, value);
            }
        }
        for (name, value) in validators {
            builder = builder.header(name, &value[..]);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = match builder
            .header(REVALIDATE_HEADER, format!("{}:{id}", self.secret))
            .body(Full::new(body))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot build a cache refresh");
                return done;
            }
        };
        let key = pending.slot.key.clone();
        let pending_map = self.pending.clone();
        {
            let mut map = pending_map.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MAX_PENDING {
                tracing::debug!(key = %key, "Too many cache refreshes in flight");
                return done;
            }
            map.insert(id, pending);
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            let finished = tokio::time::timeout(REVALIDATE_TIMEOUT, async {
                let resp = client.request(request).await?;
                // Read to the end: the proxy stores at end of stream.
                resp.into_body().collect().await.map(|_| ())?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .await;
            if !matches!(finished, Ok(Ok(()))) {
                tracing::debug!(key = %key, "Cache refresh failed");
            }
            // Not taken (the replay failed or bypassed the cache): release the waiters.
            pending_map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
        done
    }
}

type RefreshClient = Client<HttpConnector, Full<Bytes>>;
