//! The Pingora service: request phases in the order Pingora calls them.
//!
//! route (request_filter) -> pick a backend (upstream_peer) -> on connect
//! failure or reset retry elsewhere (fail_to_connect / error_while_proxy) ->
//! record the outcome (upstream_response_filter, logging). Errors the proxy
//! answers itself (404, 413, 503, 504) carry a short text body.
//!
//! On cached routes `request_filter` also keys and looks the request up
//! (`caching`); the response phases capture a miss for storing, and
//! `fail_to_proxy` (or an empty pool, or a `5xx`) serves a stale copy when
//! there is one within its stale-if-error window. A successful unsafe
//! request (not GET, HEAD, OPTIONS, TRACE; POST too unless the route caches
//! POST by body) invalidates the stored GET/HEAD responses of its URL and of
//! the same-host `Location`/`Content-Location` it names (RFC 9111 §4.4).
//! Hop-by-hop headers and those a `Connection` field names are not
//! forwarded either way, nor are the cache-targeted response fields.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;

use super::caching::{self, CacheFront, CacheState};
use super::hold::Held;
use super::pool::{Lease, Outcome, Pool, Pools};
use super::respond::{Answer, Phase};
use crate::cache::policy;
use crate::cache::{RouteCache, XCache};
use crate::config::{Config, RouteConfig};
use crate::metrics;

/// The proxy's request handler: routes, pools and their state.
pub struct Gantry {
    routes: Vec<RouteConfig>,
    /// Each route's cache rules, by route index.
    route_caches: Vec<Option<Arc<RouteCache>>>,
    pools: Arc<Pools>,
    /// The response cache, when any route is cached.
    cache: Option<Arc<CacheFront>>,
    /// Request head limits.
    limits: crate::config::raw::Limits,
    /// The HTTPS port plain requests are redirected to (`tls.redirect_http`).
    https_redirect: Option<u16>,
    /// Requests routed so far, by route index: the count a canary split reads.
    routed: Vec<AtomicU64>,
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    pool: Option<Arc<Pool>>,
    idempotent: bool,
    tries: u32,
    tried: Vec<SocketAddr>,
    /// The backend of the current attempt, held until the response has
    /// finished (body included), so in-flight counts cover streaming.
    lease: Option<Lease>,
    /// The current attempt's outcome is not recorded yet.
    attempt_open: bool,
    /// When the request first left for a backend.
    upstream_start: Option<Instant>,
    body_bytes: u64,
    response_started: bool,
    upstream_status: Option<u16>,
    /// Index of the request's route.
    route: Option<usize>,
    /// Cache state on cached routes.
    cache: Option<CacheState>,
    _active: ActiveGuard,
}

/// Counts client requests being handled.
struct ActiveGuard;

impl ActiveGuard {
    fn new() -> ActiveGuard {
        metrics::ACTIVE_CONNECTIONS.inc();
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::ACTIVE_CONNECTIONS.dec();
    }
}

impl Gantry {
    /// A handler over `pools`, routed by `config.routes`.
    pub fn new(config: &Config, pools: Arc<Pools>) -> Gantry {
        Gantry {
            routes: config.routes.clone(),
            route_caches: config
                .routes
                .iter()
                .map(|r| r.cache.clone().map(Arc::new))
                .collect(),
            pools,
            cache: None,
            limits: config.limits,
            https_redirect: config
                .tls
                .as_ref()
                .filter(|t| t.redirect_http)
                .map(|t| t.listen.port()),
            routed: config.routes.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The pool of a request on route `index`: the canary's for its share of
    /// the route's requests, else the route's own.
    fn pick_pool<'a>(&self, index: usize, route: &'a RouteConfig) -> &'a str {
        match &route.canary {
            Some(c) if c.takes(self.routed[index].fetch_add(1, Ordering::Relaxed)) => &c.pool,
            _ => &route.pool,
        }
    }

    /// Why the request target is too long, if it is (`414`).
    fn uri_too_long(&self, req: &pingora::http::RequestHeader) -> Option<String> {
        let max = self.limits.max_uri_bytes;
        (req.raw_path().len() > max).then(|| format!("request target longer than {max} bytes"))
    }

    /// Why the request head is over the limits, if it is.
    fn head_too_large(&self, req: &pingora::http::RequestHeader) -> Option<String> {
        let l = &self.limits;
        if req.headers.len() > l.max_headers {
            return Some(format!("more than {} request headers", l.max_headers));
        }
        let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len());
        let line = req.method.as_str().len() + target + 12;
        let headers: usize = req
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        (line + headers > l.max_header_bytes)
            .then(|| format!("request head larger than {} bytes", l.max_header_bytes))
    }

    /// Serves cached routes from `front`.
    pub fn with_cache(mut self, front: Arc<CacheFront>) -> Gantry {
        self.cache = Some(front);
        self
    }

    fn route(&self, path: &str) -> Option<(usize, &RouteConfig)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| path.starts_with(&r.prefix))
    }

    fn pool_label(ctx: &Ctx) -> &str {
        ctx.pool.as_ref().map_or("none", |p| &p.name)
    }

    /// Answers the client directly with `status` and a one-line reason.
    async fn reject(
        session: &mut Session,
        ctx: &Ctx,
        status: u16,
        reason: &str,
        msg: String,
    ) -> Result<Phase> {
        metrics::REJECTED
            .with_label_values(&[Self::pool_label(ctx), reason])
            .inc();
        Answer::text(status, &msg)?.send(session).await
    }

    /// A plain-HTTP request when HTTPS is required: `308` to the same URL on `port`.
    async fn redirect(&self, session: &mut Session, ctx: &Ctx, port: u16) -> Result<Phase> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri.host());
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        match crate::tls::https_location(host, path, port) {
            Some(location) => {
                Answer::text(308, "this service is served over HTTPS")?
                    .set("location", &location)?
                    .send(session)
                    .await
            }
            None => {
                let msg = "a Host header is needed to redirect to HTTPS".to_string();
                Self::reject(session, ctx, 400, "no_host", msg).await
            }
        }
    }

    /// Routes and admits a request: limits, cache lookup, holding for a backend.
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Phase> {
        if let Some(msg) = self.uri_too_long(session.req_header()) {
            session.set_keepalive(None);
            return Self::reject(session, ctx, 414, "uri_too_long", msg).await;
        }
        if let Some(msg) = self.head_too_large(session.req_header()) {
            session.set_keepalive(None);
            return Self::reject(session, ctx, 431, "head_too_large", msg).await;
        }
        if let Some(port) = self.https_redirect {
            let tls = session
                .as_downstream()
                .digest()
                .is_some_and(|d| d.ssl_digest.is_some());
            if !tls {
                return self.redirect(session, ctx, port).await;
            }
        }
        let Some((index, route)) = self.route(session.req_header().uri.path()) else {
            let msg = format!("no route for {}", session.req_header().uri.path());
            return Self::reject(session, ctx, 404, "no_route", msg).await;
        };
        let pool = match self.pools.get(self.pick_pool(index, route)) {
            Ok(p) => p.clone(),
            Err(e) => return Self::reject(session, ctx, 500, "no_route", e.to_string()).await,
        };
        ctx.idempotent = route.idempotent;
        ctx.route = Some(index);
        ctx.pool = Some(pool.clone());
        let limit = pool.config.max_body_bytes;
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            let msg = format!("request body larger than {limit} bytes");
            return Self::reject(session, ctx, 413, "too_large", msg).await;
        }
        if let (Some(front), Some(rules)) = (&self.cache, &self.route_caches[index]) {
            if front.request(session, rules, &pool, &mut ctx.cache).await? == Phase::Answered {
                return Ok(Phase::Answered);
            }
        }
        if !pool.has_eligible(Instant::now()) {
            let (reason, msg) = match pool.hold.wait(&pool).await {
                Held::Ready => return Ok(Phase::Forward),
                Held::Off => ("no_backend", "no healthy backend in pool"),
                Held::Full => ("hold_full", "too many requests waiting for pool"),
                Held::TimedOut => ("hold_timeout", "no backend started in time for pool"),
            };
            if self.serve_stale(session, ctx).await {
                return Ok(Phase::Answered);
            }
            let msg = format!("{msg} {}", pool.name);
            return Self::reject(session, ctx, 503, reason, msg).await;
        }
        Ok(Phase::Forward)
    }

    /// Records the outcome of the current attempt on its backend.
    fn finish_attempt(&self, ctx: &mut Ctx, outcome: Outcome) {
        if !std::mem::replace(&mut ctx.attempt_open, false) {
            return;
        }
        let (Some(pool), Some(lease)) = (&ctx.pool, ctx.lease.as_ref()) else {
            return;
        };
        if outcome.judges_backend() {
            let ok = outcome == Outcome::Ok;
            pool.record_outcome(&lease.backend, ok, Instant::now());
        }
        lease.backend.count_outcome(outcome);
    }

    /// Serves the request's stale-if-error copy, if it has one; true when served.
    async fn serve_stale(&self, session: &mut Session, ctx: &mut Ctx) -> bool {
        let (Some(front), Some(stale)) =
            (&self.cache, ctx.cache.as_mut().and_then(|c| c.stale.take()))
        else {
            return false;
        };
        let now = front.cache.clock().now_ms();
        if !stale.serves_on_error(now) {
            return false;
        }
        match caching::serve(session, &stale, XCache::Stale, now).await {
            Ok(phase) => phase.answered(),
            Err(e) => {
                tracing::debug!(error = %e, "Writing a stale response failed");
                false
            }
        }
    }

    /// The request holds a stale copy it may serve now that the backend failed.
    fn has_stale(&self, ctx: &Ctx) -> bool {
        let (Some(front), Some(stale)) = (
            &self.cache,
            ctx.cache.as_ref().and_then(|c| c.stale.as_ref()),
        ) else {
            return false;
        };
        stale.serves_on_error(front.cache.clock().now_ms())
    }

    /// After a successful unsafe request, drops what is cached for its URL
    /// and for the same-host URLs its `Location`/`Content-Location` name.
    async fn invalidate_after(&self, session: &Session, resp: &ResponseHeader, ctx: &Ctx) {
        let (Some(front), Some(index)) = (&self.cache, ctx.route) else {
            return;
        };
        let req = session.req_header();
        let safe = matches!(
            req.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
        );
        let status = resp.status.as_u16();
        let cached_by_body = |i: usize| {
            self.route_caches[i]
                .as_ref()
                .is_some_and(|r| r.methods.contains(&req.method))
        };
        if safe || !(200..400).contains(&status) || cached_by_body(index) {
            return;
        }
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let mut targets = vec![(
            index,
            req.uri.path().to_string(),
            req.uri.query().map(str::to_string),
        )];
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let Some(uri) = resp
                .headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = uri.authority().is_none_or(|a| Some(a.as_str()) == host);
            if !same_host || !uri.path().starts_with('/') {
                continue;
            }
            if let Some((i, _)) = self.route(uri.path()) {
                targets.push((i, uri.path().to_string(), uri.query().map(str::to_string)));
            }
        }
        let urls: Vec<(&str, String, Option<String>)> = targets
            .into_iter()
            .filter(|(i, _, _)| self.route_caches[*i].is_some())
            .map(|(i, path, query)| (self.routes[i].pool.as_str(), path, query))
            .collect();
        front.invalidate(&urls).await;
    }

    /// An eligible backend of the pool this request has not tried yet.
    fn has_untried(ctx: &Ctx) -> bool {
        ctx.pool.as_ref().is_some_and(|p| {
            p.eligible(Instant::now())
                .iter()
                .any(|b| !ctx.tried.contains(&b.addr))
        })
    }

    fn may_retry(&self, session: &Session, ctx: &Ctx) -> bool {
        let attempts = ctx.pool.as_ref().map_or(1, |p| p.config.attempts);
        let method_ok = ctx.idempotent || session.req_header().method.is_idempotent();
        ctx.tries < attempts
            && method_ok
            && !ctx.response_started
            && !session.as_ref().retry_buffer_truncated()
    }
}

/// Whether an attempt that failed with `outcome` before any of its response
/// reached the proxy goes to another backend, given that the request may be
/// retried at all (idempotent, tries left, body still buffered). A request
/// whose client is gone goes nowhere. A timeout goes only to a backend not
/// yet tried: a hung backend must not cost the requests it held (nginx's
/// `proxy_next_upstream` default is `error timeout` too), and the request is
/// idempotent, so the first backend still working on it does no harm; with
/// no other backend the client gets its 504 at once.
fn retry_elsewhere(outcome: Outcome, may_retry: bool, has_untried: impl FnOnce() -> bool) -> bool {
    match outcome {
        Outcome::ClientGone => false,
        Outcome::Timeout => may_retry && has_untried(),
        _ => may_retry,
    }
}

fn outcome_of(e: &Error) -> Outcome {
    if e.esource() == &ErrorSource::Downstream {
        return Outcome::ClientGone;
    }
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectError
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectProxyFailure
        | ErrorType::SocketError => Outcome::ConnectError,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

#[async_trait]
impl ProxyHttp for Gantry {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            pool: None,
            idempotent: false,
            tries: 0,
            tried: Vec::new(),
            lease: None,
            attempt_open: false,
            upstream_start: None,
            body_bytes: 0,
            response_started: false,
            upstream_status: None,
            route: None,
            cache: None,
            _active: ActiveGuard::new(),
        }
    }

    /// The head is in: its deadline ends, the body read timeout and the
    /// keep-alive idle timeout of `limits:` apply (Pingora would otherwise keep
    /// an HTTP/1.1 connection open forever between requests).
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        super::listener::head_done();
        session.set_read_timeout(Some(self.limits.body_timeout));
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.limits.idle_timeout.as_secs().max(1)));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        Ok(self.admit(session, ctx).await?.answered())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let limit = ctx
            .pool
            .as_ref()
            .map_or(u64::MAX, |p| p.config.max_body_bytes);
        if ctx.body_bytes > limit {
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .clone()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        if ctx.tries > 0 {
            pool.metrics.retries.inc();
        }
        ctx.tries += 1;
        ctx.lease = None;
        let Some(lease) = pool.select(&ctx.tried, Instant::now()) else {
            return Error::e_explain(
                ErrorType::HTTPStatus(503),
                format!("no healthy backend in pool {}", pool.name),
            );
        };
        let addr = lease.backend.addr;
        ctx.tried.push(addr);
        ctx.lease = Some(lease);
        ctx.attempt_open = true;
        ctx.upstream_start.get_or_insert_with(Instant::now);
        let mut peer = match &pool.config.tls {
            Some(tls) => tls.peer(addr),
            None => HttpPeer::new(addr, false, String::new()),
        };
        let o = &mut peer.options;
        o.connection_timeout = Some(pool.config.connect_timeout);
        o.read_timeout = Some(pool.config.read_timeout);
        o.write_timeout = Some(pool.config.write_timeout);
        if pool.config.protocol.is_http2() {
            o.set_http_version(2, 2);
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(lease) = &ctx.lease {
            if matches!(e.etype(), ErrorType::ConnectRefused) && lease.backend.mark_down() {
                tracing::warn!(backend = %lease.backend.addr, "Backend down: connection refused");
            }
        }
        self.finish_attempt(ctx, outcome_of(&e));
        ctx.lease = None;
        if self.may_retry(session, ctx) {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let outcome = outcome_of(&e);
        self.finish_attempt(ctx, outcome);
        ctx.lease = None;
        let retry = retry_elsewhere(outcome, self.may_retry(session, ctx), || {
            Self::has_untried(ctx)
        });
        e.set_retry(retry);
        e
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        let shed = status == 503 && resp.headers.contains_key(http::header::RETRY_AFTER);
        if shed && self.may_retry(session, ctx) && Self::has_untried(ctx) {
            // Load shedding: another backend may have room. Nothing has
            // reached the client yet; the error retries the request.
            self.finish_attempt(ctx, Outcome::Shed);
            let mut e = Error::explain(ErrorType::HTTPStatus(503), "backend shedding load");
            e.set_retry(true);
            return Err(e);
        }
        if matches!(status, 500 | 502 | 503 | 504) && self.has_stale(ctx) {
            // stale-if-error covers error responses too: fail_to_proxy serves the copy.
            self.finish_attempt(ctx, Outcome::Http5xx);
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "backend error, stale copy served",
            ));
        }
        ctx.response_started = true;
        let outcome = match status {
            _ if shed => Outcome::Shed,
            500.. => Outcome::Http5xx,
            _ => Outcome::Ok,
        };
        self.finish_attempt(ctx, outcome);
        if let (Some(c), Some(front)) = (&mut ctx.cache, &self.cache) {
            c.on_response_header(session.req_header(), resp, &front.cache);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        req.remove_header(caching::REVALIDATE_HEADER);
        for name in policy::connection_named(&req.headers) {
            req.remove_header(&name);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for name in policy::connection_named(&resp.headers) {
            resp.remove_header(&name);
        }
        for name in policy::TARGETED {
            resp.remove_header(name);
        }
        if let Some(c) = &ctx.cache {
            resp.insert_header("x-cache", c.x_cache.as_str())?;
        }
        self.invalidate_after(session, resp, ctx).await;
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(c), Some(front)) = (&mut ctx.cache, &self.cache) {
            c.on_body(session.req_header(), body, end, &front.cache);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        self.finish_attempt(ctx, outcome_of(e));
        ctx.lease = None;
        let client_side = e.esource() == &ErrorSource::Downstream
            || matches!(e.etype(), ErrorType::HTTPStatus(c) if *c < 500);
        if !client_side
            && session.response_written().is_none()
            && self.serve_stale(session, ctx).await
        {
            return FailToProxy {
                error_code: 200,
                can_reuse_downstream: false,
            };
        }
        let (code, msg) = match e.etype() {
            ErrorType::HTTPStatus(413) => (413, "request body too large".to_string()),
            ErrorType::HTTPStatus(c) => (
                *c,
                e.context
                    .as_ref()
                    .map_or(String::new(), |c| c.as_str().to_string()),
            ),
            // `limits.body_timeout` passed between two reads of the body (nginx answers 408 too).
            ErrorType::ReadTimedout if e.esource() == &ErrorSource::Downstream => {
                (408, "request body not received in time".to_string())
            }
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, "upstream timed out".into())
            }
            _ if e.esource() == &ErrorSource::Upstream => {
                (502, format!("upstream failed: {}", e.etype().as_str()))
            }
            _ if e.esource() == &ErrorSource::Downstream => (0, String::new()),
            _ => (500, "internal error".into()),
        };
        if code > 0 && session.response_written().is_none() {
            let answer = Answer::text(code, &msg)
                .and_then(|a| a.set("cache-control", "private, no-store"))
                .and_then(|a| a.close(session));
            if let Ok(a) = answer {
                let _ = a.send(session).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        super::listener::request_done();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed().as_secs_f64();
        let protocol = if session.is_http2() { "h2" } else { "http1" };
        metrics::REQUESTS_BY_PROTOCOL
            .with_label_values(&[protocol])
            .inc();
        match &ctx.pool {
            Some(pool) => {
                // Backend side first: once a request is counted answered, all of it is counted.
                if let Some(t0) = ctx.upstream_start {
                    pool.metrics.upstream_requests.inc();
                    pool.metrics
                        .upstream_duration
                        .observe(t0.elapsed().as_secs_f64());
                }
                pool.metrics.duration.observe(elapsed);
                if status > 0 {
                    pool.metrics.count_request(status);
                }
            }
            None if status > 0 => {
                metrics::REQUESTS
                    .with_label_values(&["none", metrics::code_class(status)])
                    .inc();
            }
            None => {}
        }
        tracing::debug!(
            pool = Self::pool_label(ctx),
            status,
            tries = ctx.tries,
            upstream_status = ?ctx.upstream_status,
            ms = elapsed * 1e3,
            "Request done"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_goes_to_another_backend() {
        let check = |outcome, may, untried, want| {
            let got = retry_elsewhere(outcome, may, || untried);
            assert_eq!(got, want, "{outcome:?} may_retry={may} untried={untried}");
        };
        check(Outcome::ConnectError, true, false, true);
        check(Outcome::Error, true, true, true);
        check(Outcome::Error, false, true, false);
        // A hung backend's requests go elsewhere; alone, it answers 504.
        check(Outcome::Timeout, true, true, true);
        check(Outcome::Timeout, true, false, false);
        check(Outcome::Timeout, false, true, false);
        // A client that is gone is sent nowhere.
        check(Outcome::ClientGone, true, true, false);
    }
}
