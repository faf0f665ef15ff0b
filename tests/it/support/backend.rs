//! Real HTTP backends on 127.0.0.1:0 that can be slowed, failed, killed and restarted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How a test backend answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Delay before answering any non-health request.
    pub delay: Duration,
    /// Status for non-health requests (default 200).
    pub status: Option<u16>,
    /// Sent as `Retry-After` when set (a shedding 503 says when to come back).
    pub retry_after: Option<u32>,
}

/// A real HTTP backend that can be killed (all sockets closed at once) and restarted.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Option<JoinSet<()>>,
}

/// What every connection of a backend shares.
struct Shared {
    name: String,
    behaviour: Behaviour,
    hits: AtomicU64,
    /// True while a [`Hold`] keeps requests from being answered.
    held: watch::Sender<bool>,
}

/// Keeps a backend's answers (not its health checks) back until dropped.
pub struct Hold(Arc<Shared>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.held.send_replace(false);
    }
}

impl Backend {
    pub async fn start(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            behaviour,
            hits: AtomicU64::new(0),
            held: watch::Sender::new(false),
        });
        let mut b = Backend {
            addr,
            shared,
            tasks: None,
        };
        b.serve(listener);
        b
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let shared = self.shared.clone();
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let conns2 = conns.clone();
        tasks.spawn(async move {
            // Dropping this task drops the connection set, closing every socket.
            let _keep = conns2;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                _keep.lock().unwrap().spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every open connection, like `kill -9`.
    pub async fn kill(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
            while t.join_next().await.is_some() {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Requests answered or being answered (health checks not counted).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// From now until the [`Hold`] is dropped, requests get no answer (they are counted
    /// as they arrive); health checks still do.
    pub fn hold(&self) -> Hold {
        self.shared.held.send_replace(true);
        Hold(self.shared.clone())
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    shared.hits.fetch_add(1, Ordering::Relaxed);
    let b = &shared.behaviour;
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let _ = shared.held.subscribe().wait_for(|held| !held).await;
    tokio::time::sleep(b.delay).await;
    let name = &shared.name;
    let mut resp = Response::new(Full::new(Bytes::from(format!("{name} {}", body.len()))));
    *resp.status_mut() = hyper::StatusCode::from_u16(b.status.unwrap_or(200)).unwrap();
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
    if let Some(secs) = b.retry_after {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    Ok(resp)
}

/// YAML for a pool's backend list.
pub fn backends_yaml(backends: &[(&Backend, u32)]) -> String {
    backends
        .iter()
        .map(|(b, w)| format!("      - {{addr: '{}', weight: {w}}}\n", b.addr))
        .collect()
}
