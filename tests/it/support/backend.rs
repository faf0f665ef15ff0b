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

/// A body whose second half waits for a release (see [`Backend::hold_bodies`]).
type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

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
    /// True while a [`BodyHold`] keeps the end of response bodies back.
    bodies_held: watch::Sender<bool>,
}

/// Keeps the second half of a backend's response bodies back until dropped.
pub struct BodyHold(Arc<Shared>);

impl Drop for BodyHold {
    fn drop(&mut self) {
        self.0.bodies_held.send_replace(false);
    }
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
            bodies_held: watch::Sender::new(false),
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

    /// From now until the [`BodyHold`] is dropped, responses send their
    /// headers and half their body, then wait (a slow stream).
    pub fn hold_bodies(&self) -> BodyHold {
        self.shared.bodies_held.send_replace(true);
        BodyHold(self.shared.clone())
    }

    /// From now until the [`Hold`] is dropped, requests get no answer (they are counted
    /// as they arrive); health checks still do.
    pub fn hold(&self) -> Hold {
        self.shared.held.send_replace(true);
        Hold(self.shared.clone())
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/health" {
        return Ok(Response::new(full(Bytes::from_static(b"ok"))));
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
    let text = Bytes::from(format!("{name} {}", body.len()));
    let mut resp = Response::new(if *shared.bodies_held.borrow() {
        held_body(text, shared.bodies_held.subscribe())
    } else {
        full(text)
    });
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

fn full(b: Bytes) -> Body {
    Full::new(b).boxed()
}

/// `text` in two chunks, the second once `held` turns false.
fn held_body(text: Bytes, held: watch::Receiver<bool>) -> Body {
    let mid = text.len() / 2;
    let (first, second) = (text.slice(..mid), text.slice(mid..));
    let chunks = futures::stream::unfold((0, held), move |(i, mut held)| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            let chunk = match i {
                0 => first,
                1 => {
                    let _ = held.wait_for(|h| !h).await;
                    second
                }
                _ => return None,
            };
            Some((Ok(hyper::body::Frame::data(chunk)), (i + 1, held)))
        }
    });
    http_body_util::StreamBody::new(chunks).boxed()
}
