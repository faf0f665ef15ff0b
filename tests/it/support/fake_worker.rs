//! A stand-in for `gantry worker` in scaler tests: std only, built statically so it runs FROM scratch.
//!
//! `fake_worker [--listen ADDR]` (default 0.0.0.0:8000) answers `/health`,
//! `/ready`, `/metrics` (`gantry_worker_queue_length` = requests in flight)
//! and anything else after `FAKE_DELAY_MS` (default 20) with an
//! `x-backend: <hostname>:<port>` header. With `FAKE_EXIT_WITH_PARENT=1` it
//! exits when its parent does, so a killed test leaves no process behind.
//! `FAKE_START_DELAY_MS` waits before listening, like a model loading.
//! With `--fault-dir DIR` it misbehaves while a file there names its port:
//! `shed-PORT`: answers requests (not `/health`) `503` + `Retry-After: 1`,
//! as a worker with a full queue does; `hang-PORT`: reads every request,
//! `/health` included, and never answers (closes once the file is gone).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "0.0.0.0:8000".into());
    let delay: u64 = std::env::var("FAKE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    if std::env::var("FAKE_EXIT_WITH_PARENT").as_deref() == Ok("1") {
        let parent = std::os::unix::process::parent_id();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        });
    }
    let start_delay: u64 = std::env::var("FAKE_START_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(start_delay));
    let listener = TcpListener::bind(&listen).expect("bind");
    let port = listener.local_addr().unwrap().port();
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name: Arc<str> = format!("{}:{port}", host.trim()).into();
    let inflight = Arc::new(AtomicUsize::new(0));
    let faults: Option<Arc<Faults>> = args
        .iter()
        .position(|a| a == "--fault-dir")
        .and_then(|i| args.get(i + 1))
        .map(|dir| {
            Arc::new(Faults {
                shed: Path::new(dir).join(format!("shed-{port}")),
                hang: Path::new(dir).join(format!("hang-{port}")),
            })
        });
    for stream in listener.incoming().flatten() {
        let (name, inflight, faults) = (name.clone(), inflight.clone(), faults.clone());
        std::thread::spawn(move || serve(stream, &name, &inflight, delay, faults.as_deref()));
    }
}

/// The files that switch this worker's faults on.
struct Faults {
    shed: PathBuf,
    hang: PathBuf,
}

fn serve(
    stream: TcpStream,
    name: &str,
    inflight: &AtomicUsize,
    delay: u64,
    faults: Option<&Faults>,
) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Some(f) = faults {
            if f.hang.exists() {
                while f.hang.exists() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            let probe = matches!(path.as_str(), "/health" | "/ready" | "/metrics");
            if !probe && f.shed.exists() {
                let busy = "queue full\n";
                let head = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nretry-after: 1\r\nx-backend: {name}\r\n\r\n",
                    busy.len()
                );
                if out.write_all(head.as_bytes()).is_err() || out.write_all(busy.as_bytes()).is_err() {
                    return;
                }
                if close {
                    return;
                }
                continue;
            }
        }
        let reply = match path.as_str() {
            "/health" | "/ready" => "ok\n".to_string(),
            "/metrics" => format!(
                "# TYPE gantry_worker_queue_length gauge\ngantry_worker_queue_length {}\n",
                inflight.load(Ordering::Relaxed)
            ),
            _ => {
                inflight.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(delay));
                inflight.fetch_sub(1, Ordering::Relaxed);
                format!("{{\"backend\":\"{name}\",\"bytes\":{length}}}\n")
            }
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: {name}\r\n\r\n",
            reply.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(reply.as_bytes()).is_err() {
            return;
        }
        if close {
            return;
        }
    }
}
