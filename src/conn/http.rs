//! [`serve`]: an axum router on hyper HTTP/1 with a connection cap, head, body and idle timeouts.
//!
//! `axum::serve` takes no limits, so this is its accept loop with them:
//! each connection needs a permit from the listener's [`Gate`] (none left:
//! closed at once and counted), reads through [`Timed`] (head and idle
//! deadlines), and gets its request body wrapped in tower-http's
//! `TimeoutBody` (the body timeout, reset by every chunk). On shutdown the
//! listener closes, idle connections close, and requests in flight finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use super::{ConnClock, ConnLimits, Gate, Timed};

/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then lets the requests in flight finish. `name` labels refusals in
/// `gantry_connections_refused_total` (`worker`, `admin`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = Gate::new(limits.max_connections, name);
    let (stop, stopping) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Finished connections leave the set here, so it holds only open ones.
        while conns.try_join_next().is_some() {}
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "Accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(permit) = gate.enter() else {
            tracing::debug!(listener = name, "Connection refused: at max_connections");
            continue;
        };
        let conn = connection(stream, app.clone(), limits, stopping.clone());
        conns.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    drop(listener);
    stop.send_replace(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes, or gracefully once `stopping` turns true.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ConnLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let clock = ConnClock::new();
    let timed = Timed::new(
        stream,
        clock.clone(),
        limits.head_timeout,
        limits.idle_timeout,
    );
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        clock.head_done();
        let req = req.map(|b| Body::new(TimeoutBody::new(body_timeout, b)));
        let (app, clock) = (app.clone(), clock.clone());
        async move {
            let resp = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                Body::new(Finished {
                    body,
                    clock: Some(clock),
                })
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // Our own clock bounds the head (hyper's starts at idle, not at the first byte).
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(timed), service);
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "Connection ended with an error");
            }
            return;
        }
        _ = stopping.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A response body that marks its connection idle once written (or dropped).
struct Finished {
    body: Body,
    clock: Option<Arc<ConnClock>>,
}

impl Finished {
    fn finish(&mut self) {
        if let Some(clock) = self.clock.take() {
            clock.request_done();
        }
    }
}

impl hyper::body::Body for Finished {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            self.finish();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.finish();
    }
}
