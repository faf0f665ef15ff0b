//! The head and idle deadlines of one client connection, enforced on its reads.
//!
//! Per-read timeouts do not bound a slow-header client: one header line
//! every few seconds resets them forever. [`Timed`] wraps the connection's
//! stream and keeps one deadline for the phase the connection is in:
//!
//! - `Head` (from accept, or from the first byte of a keep-alive request):
//!   the whole head must arrive within `head_timeout`, else reads fail with
//!   `TimedOut` and the server closes the connection;
//! - `Busy` (the head is parsed, the request is being served): no deadline
//!   here; body reads have their own per-read timeout;
//! - `Idle` (the response is done): no byte for `idle_timeout` reads as EOF,
//!   which every HTTP/1 server takes as the client closing a keep-alive
//!   connection;
//! - `Http2` (the connection opened with HTTP/2's preface, `PRI`, over TLS
//!   or as h2c): none of the above. Its requests are streams served side by
//!   side, so a connection has no single head or idle phase; the HTTP/2
//!   server's own idle timeout and per-stream timeouts apply instead. The
//!   deadline before the first bytes still applies.
//!
//! The server moves the phase through the shared [`ConnClock`]: `head_done`
//! when it has the head, `request_done` when the response has finished; the
//! wrapper itself moves `Idle` to `Head` on the first byte it reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
const HTTP2: u8 = 3;

/// How an HTTP/2 connection starts (RFC 9113 3.4); no HTTP/1 method is `PRI`.
const HTTP2_START: &[u8; 3] = b"PRI";

/// The phase of one connection, shared by its stream wrapper and its server.
#[derive(Debug)]
pub struct ConnClock(AtomicU8);

impl ConnClock {
    /// A new connection: waiting for its first head.
    pub fn new() -> Arc<ConnClock> {
        Arc::new(ConnClock(AtomicU8::new(HEAD)))
    }

    /// The request head has been read: its deadline no longer applies.
    pub fn head_done(&self) {
        self.set(BUSY);
    }

    /// The response has finished: the connection idles until the next request.
    pub fn request_done(&self) {
        self.set(IDLE);
    }

    /// Moves to `phase`, unless the connection is HTTP/2 (which it stays).
    fn set(&self, phase: u8) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != HTTP2).then_some(phase)
            });
    }

    fn phase(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
}

/// A client stream whose reads obey its connection's head and idle deadlines.
#[derive(Debug)]
pub struct Timed<S> {
    io: S,
    clock: Arc<ConnClock>,
    head: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// The phase `timer` was last set for.
    armed: u8,
    /// The connection's first bytes, until there are enough to tell HTTP/2.
    start: [u8; 3],
    /// How many of them have arrived.
    started: usize,
}

impl<S> Timed<S> {
    /// Wraps a just-accepted `io`: its first head must arrive within `head`.
    pub fn new(io: S, clock: Arc<ConnClock>, head: Duration, idle: Duration) -> Timed<S> {
        Timed {
            io,
            clock,
            head,
            idle,
            timer: Box::pin(tokio::time::sleep(head)),
            armed: HEAD,
            start: [0; 3],
            started: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    fn arm(&mut self, phase: u8) {
        let limit = if phase == IDLE { self.idle } else { self.head };
        self.timer.as_mut().reset(Instant::now() + limit);
        self.armed = phase;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let phase = self.clock.phase();
        if phase == HTTP2 {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        if phase != self.armed && phase != BUSY {
            self.arm(phase);
        }
        self.armed = phase;
        if phase != BUSY && self.timer.as_mut().poll(cx).is_ready() {
            if phase == IDLE {
                // Reads as the client closing its idle keep-alive connection.
                return Poll::Ready(Ok(()));
            }
            let msg = format!("request head not received within {:?}", self.head);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, msg)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        let got_bytes = buf.filled().len() > before;
        if got_bytes && self.started < HTTP2_START.len() {
            let at = self.started;
            let take = (HTTP2_START.len() - at).min(buf.filled().len() - before);
            self.start[at..at + take].copy_from_slice(&buf.filled()[before..before + take]);
            self.started += take;
            if self.started == HTTP2_START.len() && self.start == *HTTP2_START {
                self.clock.0.store(HTTP2, Ordering::Release);
                return read;
            }
        }
        if phase == IDLE && got_bytes && matches!(read, Poll::Ready(Ok(()))) {
            // The next request has begun: its head has `head` from now.
            let next =
                self.clock
                    .0
                    .compare_exchange(IDLE, HEAD, Ordering::AcqRel, Ordering::Acquire);
            if next.is_ok() {
                self.arm(HEAD);
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEAD_LIMIT: Duration = Duration::from_secs(10);
    const IDLE_LIMIT: Duration = Duration::from_secs(60);

    fn pair() -> (
        Timed<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<ConnClock>,
    ) {
        let (server, client) = tokio::io::duplex(1024);
        let clock = ConnClock::new();
        (
            Timed::new(server, clock.clone(), HEAD_LIMIT, IDLE_LIMIT),
            client,
            clock,
        )
    }

    async fn read(t: &mut Timed<tokio::io::DuplexStream>) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 64];
        let n = t.read(&mut buf).await?;
        Ok(buf[..n].to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_dribbled_a_line_at_a_time_times_out_in_total() {
        let (mut t, mut client, _clock) = pair();
        let mut waited = Duration::ZERO;
        let err = loop {
            client.write_all(b"X-A: b\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            waited += Duration::from_secs(3);
            match read(&mut t).await {
                Ok(_) => assert!(waited <= HEAD_LIMIT, "still reading after {waited:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_served_request_has_no_head_deadline_and_idle_ends_in_eof() {
        let (mut t, mut client, clock) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(!read(&mut t).await.unwrap().is_empty());
        clock.head_done();
        // A body sent long after the head still reads: only the body timeout applies.
        tokio::time::sleep(HEAD_LIMIT * 3).await;
        client.write_all(b"body").await.unwrap();
        assert_eq!(read(&mut t).await.unwrap(), b"body");
        clock.request_done();
        let start = Instant::now();
        assert!(
            read(&mut t).await.unwrap().is_empty(),
            "idle past the limit reads as EOF"
        );
        assert_eq!(start.elapsed(), IDLE_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_has_no_head_or_idle_deadline_of_its_own() {
        let (mut t, mut client, clock) = pair();
        // The preface may arrive in pieces.
        client.write_all(b"PR").await.unwrap();
        assert_eq!(read(&mut t).await.unwrap(), b"PR");
        client.write_all(b"I * HTTP/2.0\r\n").await.unwrap();
        assert!(!read(&mut t).await.unwrap().is_empty());
        // Streams come and go; the phases of one do not apply to the connection.
        clock.head_done();
        clock.request_done();
        tokio::time::sleep(HEAD_LIMIT + IDLE_LIMIT).await;
        client.write_all(b"frames").await.unwrap();
        assert_eq!(read(&mut t).await.unwrap(), b"frames");
        // Nothing at all before the first byte is still bounded.
        let (mut silent, _client, _) = pair();
        let start = Instant::now();
        assert_eq!(
            read(&mut silent).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(start.elapsed(), HEAD_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_request_gets_a_head_deadline_from_its_first_byte() {
        let (mut t, mut client, clock) = pair();
        clock.request_done();
        tokio::time::sleep(IDLE_LIMIT / 2).await;
        client.write_all(b"GET").await.unwrap();
        assert_eq!(read(&mut t).await.unwrap(), b"GET");
        let start = Instant::now();
        let err = read(&mut t).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), HEAD_LIMIT);
    }
}
