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
use tokio::task::JoinSet;

/// How a test backend answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Delay before answering any non-health request.
    pub delay: Duration,
    /// Status for non-health requests (default 200).
    pub status: Option<u16>,
}

/// A real HTTP backend that can be killed (all sockets closed at once) and restarted.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    behaviour: Arc<Mutex<Behaviour>>,
    tasks: Option<JoinSet<()>>,
}

impl Backend {
    pub async fn start(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut b = Backend {
            name: name.to_string(),
            addr,
            hits: Arc::new(AtomicU64::new(0)),
            behaviour: Arc::new(Mutex::new(behaviour)),
            tasks: None,
        };
        b.serve(listener);
        b
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let (name, hits, behaviour) =
            (self.name.clone(), self.hits.clone(), self.behaviour.clone());
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let conns2 = conns.clone();
        tasks.spawn(async move {
            // Dropping this task drops the connection set, closing every socket.
            let _keep = conns2;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, hits, behaviour) = (name.clone(), hits.clone(), behaviour.clone());
                _keep.lock().unwrap().spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, name.clone(), hits.clone(), behaviour.clone())
                    });
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

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

async fn handle(
    req: Request<Incoming>,
    name: String,
    hits: Arc<AtomicU64>,
    behaviour: Arc<Mutex<Behaviour>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    hits.fetch_add(1, Ordering::Relaxed);
    let b = behaviour.lock().unwrap().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    tokio::time::sleep(b.delay).await;
    let mut resp = Response::new(Full::new(Bytes::from(format!("{name} {}", body.len()))));
    *resp.status_mut() = hyper::StatusCode::from_u16(b.status.unwrap_or(200)).unwrap();
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
    Ok(resp)
}

/// YAML for a pool's backend list.
pub fn backends_yaml(backends: &[(&Backend, u32)]) -> String {
    backends
        .iter()
        .map(|(b, w)| format!("      - {{addr: '{}', weight: {w}}}\n", b.addr))
        .collect()
}
