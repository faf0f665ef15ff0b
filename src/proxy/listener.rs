//! The traffic listener's connection limits around Pingora: a connection cap and a total head deadline.
//!
//! Pingora reads a request head before any `ProxyHttp` phase runs, with only
//! per-read timeouts (the keep-alive timeout, or the read timeout): a client
//! sending one header line every few seconds is never closed. No phase can
//! bound that read, so the bound sits one layer down: [`Limited`] wraps the
//! HTTP app Pingora serves (`ServerApp`, the per-connection entry point) and
//!
//! 1. takes a permit from the listener's [`Gate`]; with none left the
//!    connection gets a `503` and is closed, and the refusal is counted;
//! 2. wraps the connection's stream in [`Timed`], which fails reads once the
//!    head has taken longer than `limits.head_timeout` (from accept, or from
//!    the first byte of a keep-alive request) and ends a keep-alive connection
//!    idle longer than `limits.idle_timeout` (HTTP/1; an HTTP/2 connection,
//!    told by its preface, is left to the HTTP/2 server's idle timeout);
//! 3. runs Pingora's own per-connection loop inside a task-local scope holding
//!    the connection's [`ConnClock`], so the phases can say where the request
//!    is: [`head_done`] in `early_request_filter`, [`request_done`] in `logging`.
//!
//! Pingora's own HTTP/1 parsing, keep-alive and shutdown are left untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::conn::{ConnClock, ConnLimits, Gate, Timed};

/// What a connection over the cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 24\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections now";
/// Longest the refusal may take to write: a fresh socket's buffer takes it at once.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The clock of the connection the current task serves.
    static CLOCK: Arc<ConnClock>;
}

/// The current request's head has been read (call from `early_request_filter`).
pub fn head_done() {
    let _ = CLOCK.try_with(|c| c.head_done());
}

/// The current request has finished (call from `logging`): the connection is
/// idle until the next request's first byte.
pub fn request_done() {
    let _ = CLOCK.try_with(|c| c.request_done());
}

/// A Pingora server app with the connection limits of [`crate::conn`] around it.
pub struct Limited<A> {
    inner: Arc<A>,
    gate: Gate,
    limits: ConnLimits,
}

impl<A> Limited<A> {
    /// `inner` (Pingora's HTTP proxy app) behind `limits`.
    pub fn new(inner: A, limits: ConnLimits) -> Limited<A> {
        Limited {
            inner: Arc::new(inner),
            gate: Gate::new(limits.max_connections, "traffic"),
            limits,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_permit) = self.gate.enter() else {
            tracing::debug!("Connection refused: at limits.max_connections");
            // A client whose request is already on its way may see a reset instead.
            let _ = tokio::time::timeout(REFUSAL_WRITE, stream.write_all(REFUSAL)).await;
            let _ = stream.shutdown().await;
            return None;
        };
        let clock = ConnClock::new();
        let l = &self.limits;
        let timed = Timed::new(stream, clock.clone(), l.head_timeout, l.idle_timeout);
        let stream: Stream = Box::new(TimedStream(timed));
        CLOCK
            .scope(clock, self.inner.process_new(stream, shutdown))
            .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// [`Timed`] over a Pingora stream, with Pingora's stream traits passed through.
#[derive(Debug)]
struct TimedStream(Timed<Stream>);

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for TimedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut **self.0.get_mut()).await;
    }
}

impl UniqueID for TimedStream {
    fn id(&self) -> UniqueIDType {
        self.0.get_ref().id()
    }
}

impl Ssl for TimedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.0.get_ref().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.0.get_ref().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.0.get_ref().selected_alpn_proto()
    }
}

impl GetTimingDigest for TimedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_ref().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.0.get_ref().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.0.get_ref().get_write_pending_time()
    }
}

impl GetProxyDigest for TimedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_ref().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.0.get_mut().set_proxy_digest(digest);
    }
}

impl GetSocketDigest for TimedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_ref().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.get_mut().set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for TimedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.0.get_mut().try_peek(buf).await
    }
}
