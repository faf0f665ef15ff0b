//! The generator's data path: bounded HTTP/1 connections (hyper), the closed loop (users) and the open loop (due times, wrk2's correction).
//!
//! Open loop: connections take request numbers from one counter, wait until
//! that request is due, send it, and measure from the due time. A target that
//! stalls makes every request due during the stall wait, and that wait is in
//! their latency (coordinated omission is corrected); nothing queues beyond
//! the connections themselves. Requests due before the end that no
//! connection could take by the end (plus one timeout to drain) are counted
//! as `unsent`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::mix::{rng_for, Mix, Request};
use super::plan::{Model, Schedule};
use super::record::{ErrorKind, Recorder, Sample};

/// A byte stream to the target.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed future of a new connection.
pub type Connecting = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send>>;

/// How connections are opened: TCP to the target, or anything else (tests use in-memory pipes).
#[derive(Clone)]
pub struct Connector(Arc<dyn Fn() -> Connecting + Send + Sync>);

impl Connector {
    /// TCP to `authority` (`host:port`), with `TCP_NODELAY`.
    pub fn tcp(authority: String) -> Connector {
        let authority: Arc<str> = authority.into();
        Connector(Arc::new(move || {
            let a = authority.clone();
            Box::pin(async move {
                let s = tokio::net::TcpStream::connect(&*a).await?;
                s.set_nodelay(true)?;
                Ok(Box::new(s) as Box<dyn Io>)
            })
        }))
    }

    /// Connections from a function.
    pub fn from_fn(f: impl Fn() -> Connecting + Send + Sync + 'static) -> Connector {
        Connector(Arc::new(f))
    }
}

/// What one exchange came to.
#[derive(Debug, Default)]
struct Outcome {
    error: Option<ErrorKind>,
    cache: Option<String>,
    bytes: u64,
}

/// One connection, reopened after a failure or a close.
struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn open(connector: &Connector) -> Result<SendRequest<Full<Bytes>>, ErrorKind> {
        let io = (connector.0)().await.map_err(|_| ErrorKind::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|_| ErrorKind::Connect)?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes; the error is seen by the next send.
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn exchange(&mut self, ctx: &Ctx, req: Request) -> Outcome {
        match tokio::time::timeout(ctx.timeout, self.exchange_inner(ctx, req)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(kind)) => {
                self.sender = None;
                Outcome {
                    error: Some(kind),
                    ..Outcome::default()
                }
            }
            Err(_) => {
                self.sender = None;
                Outcome {
                    error: Some(ErrorKind::Timeout),
                    ..Outcome::default()
                }
            }
        }
    }

    async fn exchange_inner(&mut self, ctx: &Ctx, req: Request) -> Result<Outcome, ErrorKind> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(Conn::open(&ctx.connector).await?);
        }
        let sender = self.sender.as_mut().expect("opened above");
        sender.ready().await.map_err(|_| ErrorKind::Transport)?;
        let mut builder = http::Request::builder()
            .method(req.method)
            .uri(req.path)
            .header(http::header::HOST, &*ctx.host);
        if !req.body.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in &ctx.mix.headers {
            builder = builder.header(k, v);
        }
        let request = builder
            .body(Full::new(req.body))
            .map_err(|_| ErrorKind::Transport)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| ErrorKind::Transport)?;
        let status = response.status();
        let cache = (response.headers().get("x-cache"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ErrorKind::Transport)?;
            bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        let error = match status.as_u16() {
            400..=499 => Some(ErrorKind::Status4xx),
            500.. => Some(ErrorKind::Status5xx),
            _ => None,
        };
        Ok(Outcome {
            error,
            cache,
            bytes,
        })
    }
}

/// Everything the users or connections of one run share.
pub struct Ctx {
    /// Opens connections.
    pub connector: Connector,
    /// The `Host` header.
    pub host: Arc<str>,
    /// What to send.
    pub mix: Arc<Mix>,
    /// Stages over time.
    pub schedule: Schedule,
    /// Where results go.
    pub recorder: Recorder,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Stop after this many requests in all (`None`: when the schedule ends).
    pub limit: Option<u64>,
    /// Seed of every user's or connection's random generator.
    pub seed: u64,
    /// The run's start.
    pub start: Instant,
    /// Set to end the run early (a stress step broke, Ctrl-C).
    pub stop: AtomicBool,
    /// Open loop: the next request number.
    next: AtomicU64,
    /// Requests begun (both loops).
    pub started: AtomicU64,
    /// Exchanges in flight now, and the most at once.
    pub in_flight: AtomicUsize,
    /// The highest [`Ctx::in_flight`] seen.
    pub max_in_flight: AtomicUsize,
}

impl Ctx {
    /// A context starting now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        connector: Connector,
        host: &str,
        mix: Arc<Mix>,
        schedule: Schedule,
        recorder: Recorder,
        timeout: Duration,
        limit: Option<u64>,
        seed: u64,
    ) -> Ctx {
        Ctx {
            connector,
            host: host.into(),
            mix,
            schedule,
            recorder,
            timeout,
            limit,
            seed,
            start: Instant::now(),
            stop: AtomicBool::new(false),
            next: AtomicU64::new(0),
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Open loop: request numbers handed out so far.
    pub fn taken(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Takes one request from the budget; `false` once it is spent.
    fn budget(&self) -> bool {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        self.limit.is_none_or(|l| n < l)
    }

    async fn send(&self, conn: &mut Conn, req: Request, stage: usize, from: Instant, shard: usize) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let outcome = conn.exchange(self, req).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let end = Instant::now();
        self.recorder.shard(shard).record(&Sample {
            stage,
            done: end.saturating_duration_since(self.start),
            latency: end.saturating_duration_since(from),
            error: outcome.error,
            cache: outcome.cache,
            bytes: outcome.bytes,
        });
    }
}

/// Runs every user (closed) or connection (open) until the schedule, the budget or a stop ends it.
pub async fn run(ctx: Arc<Ctx>, model: Model, connections: usize) {
    let n = match model {
        Model::Closed => ctx.schedule.peak().ceil() as usize,
        Model::Open => connections,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..n.max(1) {
        let ctx = ctx.clone();
        match model {
            Model::Closed => tasks.spawn(user(ctx, id)),
            Model::Open => tasks.spawn(connection(ctx, id)),
        };
    }
    while tasks.join_next().await.is_some() {}
}

/// How often an idle user checks whether its turn has come.
const IDLE_CHECK: Duration = Duration::from_millis(50);

async fn user(ctx: Arc<Ctx>, id: usize) {
    let mut rng = rng_for(ctx.seed, id);
    let mut turn = ctx.mix.offset(&mut rng);
    let mut conn = Conn { sender: None };
    let end = ctx.schedule.duration();
    loop {
        let now = ctx.elapsed();
        if now >= end || ctx.stopped() {
            break;
        }
        if (id as f64) >= ctx.schedule.value_at(now).round() {
            conn.sender = None; // a ramp down closes the user's connection
            tokio::time::sleep(IDLE_CHECK.min(end - now)).await;
            continue;
        }
        if !ctx.budget() {
            break;
        }
        let stage = ctx.schedule.stage_at(now);
        let req = ctx
            .mix
            .next(&mut rng, turn, ctx.schedule.stages[stage].batch);
        turn += 1;
        ctx.send(&mut conn, req, stage, Instant::now(), id).await;
    }
}

async fn connection(ctx: Arc<Ctx>, id: usize) {
    let mut rng = rng_for(ctx.seed, id);
    let mut turn = ctx.mix.offset(&mut rng);
    let mut conn = Conn { sender: None };
    // Requests due before the end may still be sent for one timeout after it.
    let drain_until = ctx.start + ctx.schedule.duration() + ctx.timeout;
    loop {
        if ctx.stopped() || ctx.limit.is_some_and(|l| ctx.taken() >= l) {
            break;
        }
        if Instant::now() >= drain_until {
            break;
        }
        let k = ctx.next.fetch_add(1, Ordering::Relaxed);
        let Some(due) = ctx.schedule.due(k) else {
            break;
        };
        if ctx.limit.is_some_and(|l| k >= l) {
            break;
        }
        let due_at = ctx.start + due;
        tokio::time::sleep_until(due_at).await;
        ctx.started.fetch_add(1, Ordering::Relaxed);
        let stage = ctx.schedule.stage_at(due);
        let req = ctx
            .mix
            .next(&mut rng, turn, ctx.schedule.stages[stage].batch);
        turn += 1;
        ctx.send(&mut conn, req, stage, due_at, id).await;
    }
}
