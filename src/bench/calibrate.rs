//! `gantry bench calibrate`: the generator's own ceiling against a trivial in-process target, beside wrk on the same target.
//!
//! The target answers `GET /` with 2 bytes on its own single-thread runtime
//! (its own OS thread), so it is cheap and the same for both generators. The
//! generator runs a closed loop of `connections` users for the duration,
//! then wrk runs with as many threads as the generator's runtime has.

use std::fmt;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::driver::Connector;
use super::findings::Breaking;
use super::mix::{Bodies, MixSpec};
use super::observe::Sources;
use super::plan::{Model, Stage};
use super::scenario::{Kind, Plan};
use super::{BenchError, Setup};

/// What calibration measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Connections of both generators.
    pub connections: usize,
    /// Generator threads (and wrk's `-t`).
    pub threads: usize,
    /// Length of each run, seconds.
    pub seconds: f64,
    /// Our answers per second.
    pub gantry_rps: f64,
    /// Our p99, ms.
    pub gantry_p99_ms: f64,
    /// wrk's requests per second, when wrk is installed.
    pub wrk_rps: Option<f64>,
    /// Why wrk gave nothing.
    pub wrk_problem: Option<String>,
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "calibration: trivial in-process target, {} connections, {} threads, {:.0} s each",
            self.connections, self.threads, self.seconds
        )?;
        writeln!(
            f,
            "  gantry bench  {:>10.0} req/s  p99 {:.2} ms",
            self.gantry_rps, self.gantry_p99_ms
        )?;
        match (self.wrk_rps, &self.wrk_problem) {
            (Some(w), _) => {
                writeln!(f, "  wrk           {w:>10.0} req/s")?;
                write!(
                    f,
                    "  ratio         {:>10.2} (gantry bench / wrk)",
                    self.gantry_rps / w.max(1e-9)
                )
            }
            (None, p) => write!(
                f,
                "  wrk           not measured: {}",
                p.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// Serves `GET /` -> `ok` on `listener` until the process ends, on its own thread.
fn serve_trivial() -> Result<SocketAddr, BenchError> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| io("bind the calibration target", e))?;
    let addr = std_listener
        .local_addr()
        .map_err(|e| io("bind the calibration target", e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| io("bind the calibration target", e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io("start the target's runtime", e))?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

fn io(what: &str, source: std::io::Error) -> BenchError {
    BenchError::Io {
        what: format!("{what}: {source}"),
        source,
    }
}

/// Runs both generators against the trivial target.
pub async fn run(duration: Duration, connections: usize) -> Result<Calibration, BenchError> {
    let addr = serve_trivial()?;
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let plan = Plan {
        name: "calibrate".into(),
        kind: Kind::Load,
        model: Model::Closed,
        stages: vec![Stage::steady("steady", duration, connections as f64)],
        mix: MixSpec {
            method: http::Method::GET,
            path: "/".into(),
            bodies: Bodies::None,
            ..MixSpec::default()
        },
        slo: None,
        stop_on_break: false,
    };
    let setup = Setup {
        plan,
        target: format!("http://{addr}/"),
        connector: Connector::tcp(addr.to_string()),
        host: addr.to_string(),
        connections,
        timeout: Duration::from_secs(5),
        limit: None,
        seed: 1,
        sources: Sources::default(),
        progress: false,
        interrupt: false,
        breaking: Breaking {
            error_percent: 100.0,
            p99_ms: f64::MAX,
        },
    };
    let report = super::execute(setup).await?;
    let url = format!("http://{addr}/");
    let secs = duration.as_secs().max(1);
    let wrk = Arc::new((threads, connections, secs, url));
    let w = wrk.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("wrk")
            .args([
                "-t",
                &w.0.to_string(),
                "-c",
                &w.1.to_string(),
                "-d",
                &format!("{}s", w.2),
                &w.3,
            ])
            .output()
    })
    .await
    .map_err(|e| io("run wrk", std::io::Error::other(e)))?;
    let (wrk_rps, wrk_problem) = match out {
        Ok(o) if o.status.success() => match wrk_rate(&String::from_utf8_lossy(&o.stdout)) {
            Some(r) => (Some(r), None),
            None => (None, Some("no Requests/sec line in its output".into())),
        },
        Ok(o) => (None, Some(format!("wrk exited with {}", o.status))),
        Err(e) => (None, Some(format!("wrk: {e} (Debian package wrk)"))),
    };
    Ok(Calibration {
        connections,
        threads,
        seconds: duration.as_secs_f64(),
        gantry_rps: report.throughput_rps,
        gantry_p99_ms: report.latency.p99_ms,
        wrk_rps,
        wrk_problem,
    })
}

/// `Requests/sec:  12345.67` from wrk's output.
pub fn wrk_rate(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output_gives_its_rate() {
        let out = "Running 5s test\n  1 threads and 64 connections\nRequests/sec:  41234.50\nTransfer/sec: 3.1MB\n";
        assert_eq!(super::wrk_rate(out), Some(41234.5));
        assert_eq!(super::wrk_rate("nothing"), None);
    }
}
