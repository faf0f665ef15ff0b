//! Test support: real backends on 127.0.0.1:0, and the real `gantry` binary run as a child process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
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

/// A free loopback port (bound and released; the proxy binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `gantry` binary serving a config; killed on drop.
pub struct Gantry {
    pub child: Child,
    pub url: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Gantry {
    /// Writes `pools_and_routes` under generated listen addresses and starts `gantry proxy`.
    pub async fn start(pools_and_routes: &str) -> Gantry {
        let (port, admin_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.yaml");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin_port}\n{pools_and_routes}").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["proxy", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let g = Gantry {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            dir,
        };
        g.wait_ready().await;
        g
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let c = client();
        while Instant::now() < deadline {
            let admin_ok = c.get(format!("{}/health", self.admin)).send().await.is_ok();
            let proxy_ok = tokio::net::TcpStream::connect(self.url.trim_start_matches("http://"))
                .await
                .is_ok();
            if admin_ok && proxy_ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gantry did not start");
    }

    /// `GET /admin/pools` as JSON.
    pub async fn pools(&self) -> serde_json::Value {
        client()
            .get(format!("{}/admin/pools", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// State of `addr` in `pool`, if listed.
    pub async fn backend_state(&self, pool: &str, addr: SocketAddr) -> Option<String> {
        let pools = self.pools().await;
        let p = pools.as_array()?.iter().find(|p| p["name"] == pool)?;
        let b = p["backends"]
            .as_array()?
            .iter()
            .find(|b| b["addr"] == addr.to_string())?;
        Some(b["state"].as_str()?.to_string())
    }

    /// Polls until `pred` holds for the backend's state, or panics after 10 s.
    pub async fn wait_state(&self, pool: &str, addr: SocketAddr, want: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.backend_state(pool, addr).await;
            if got.as_deref() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} state {got:?}, wanted {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sends `n` GETs to `url` with `concurrency` in flight; returns status or error per request and
/// the `x-backend` header counts.
pub async fn load(
    url: &str,
    n: usize,
    concurrency: usize,
) -> (Vec<Result<u16, String>>, HashMap<String, usize>) {
    use futures::StreamExt;
    let c = client();
    let results: Vec<(Result<u16, String>, Option<String>)> = futures::stream::iter(0..n)
        .map(|_| {
            let c = c.clone();
            let url = url.to_string();
            async move {
                match c.get(&url).send().await {
                    Ok(r) => {
                        let b = r
                            .headers()
                            .get("x-backend")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        (Ok(r.status().as_u16()), b)
                    }
                    Err(e) => (Err(e.to_string()), None),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut counts = HashMap::new();
    for (_, b) in &results {
        if let Some(b) = b {
            *counts.entry(b.clone()).or_insert(0) += 1;
        }
    }
    (results.into_iter().map(|r| r.0).collect(), counts)
}

/// YAML for a pool's backend list.
pub fn backends_yaml(backends: &[(&Backend, u32)]) -> String {
    backends
        .iter()
        .map(|(b, w)| format!("      - {{addr: '{}', weight: {w}}}\n", b.addr))
        .collect()
}
