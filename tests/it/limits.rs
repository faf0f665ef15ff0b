//! Connection limits through the real binary and an in-process worker: the total
//! request-head deadline against a slow-header client, the connection cap, and 414.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::{backends_yaml, Backend, Behaviour};
use crate::support::{client, metric, until, Gantry};

/// Longest any wait below may take: it only catches a hang.
const HANG: Duration = Duration::from_secs(15);
/// Pause between the header lines of the slow client: far below any per-read timeout.
const DRIBBLE: Duration = Duration::from_millis(200);

async fn proxy(backend: &Backend, limits: &str) -> Gantry {
    let yaml = format!(
        "limits: {{{limits}}}\npools:\n  p:\n    health: {{interval: 100ms}}\n    backends:\n{}routes:\n  - {{prefix: /, pool: p}}\n",
        backends_yaml(&[(backend, 1)])
    );
    let g = Gantry::proxy(&yaml).start().await;
    g.wait_up("p", 1, 10).await;
    g
}

/// Sends `GET path` on `stream` and reads the answer: its status, or `None`
/// when the connection was closed (or reset) instead.
async fn get(stream: &mut TcpStream, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: gantry\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    read_response(stream).await
}

/// Reads one response (head and `Content-Length` body); `None` on EOF or error first.
async fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(status)
}

/// A connection to `addr` that has been served one request.
async fn served_connection(addr: &str) -> TcpStream {
    until("a served connection", HANG, || async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        (get(&mut s, "/x").await == Some(200)).then_some(s)
    })
    .await
}

/// Sends a request line, then one header line every [`DRIBBLE`] until the
/// server closes the connection; returns how many header lines it took.
async fn dribble_until_closed(addr: &str) -> usize {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: gantry\r\n")
        .await
        .unwrap();
    let mut lines = 0;
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a slow-header client was still open after {lines} header lines"
        );
        tokio::select! {
            // The server closes (EOF or reset); it never answers a half-sent head.
            read = s.read(&mut byte) => {
                assert!(!matches!(read, Ok(n) if n > 0), "an answer to an unfinished head");
                return lines;
            }
            () = tokio::time::sleep(DRIBBLE) => {}
        }
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            return lines;
        }
        lines += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_client_is_closed_after_the_head_timeout_while_others_are_served() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let g = proxy(&backend, "head_timeout: 1s").await;
    let addr = g.url.trim_start_matches("http://").to_string();
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { dribble_until_closed(&addr).await }
    });
    // Meanwhile a normal client on one keep-alive connection is served throughout.
    let mut normal = served_connection(&addr).await;
    let mut served = 1;
    while !slow.is_finished() {
        assert_eq!(get(&mut normal, "/x").await, Some(200), "normal client");
        served += 1;
        tokio::time::sleep(DRIBBLE).await;
    }
    let lines = slow.await.unwrap();
    assert!(
        lines >= 2,
        "closed after {lines} header lines: the head had time to start"
    );
    assert!(
        served >= 2,
        "only {served} requests served while the slow client dribbled"
    );
    assert_eq!(
        get(&mut normal, "/x").await,
        Some(200),
        "still served after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_counted_and_served_ones_go_on() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let g = proxy(&backend, "max_connections: 2").await;
    let addr = g.url.trim_start_matches("http://").to_string();
    let refused = |m: &str| metric(m, "gantry_connections_refused_total{listener=\"traffic\"}");
    let before = refused(&g.metrics().await);
    let mut a = served_connection(&addr).await;
    let mut b = served_connection(&addr).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let answer = get(&mut third, "/x").await;
    assert!(
        matches!(answer, None | Some(503)),
        "a third connection got {answer:?}"
    );
    g.until("the refusal counted", HANG, || async {
        let now = refused(&g.metrics().await);
        (now > before).then_some(()).ok_or(now)
    })
    .await;
    assert_eq!(get(&mut a, "/x").await, Some(200), "served connection a");
    assert_eq!(get(&mut b, "/x").await, Some(200), "served connection b");
    drop(a);
    // The closed connection's place is free again.
    let mut c = served_connection(&addr).await;
    assert_eq!(get(&mut c, "/x").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_target_past_max_uri_bytes_gets_414() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let g = proxy(&backend, "max_uri_bytes: 1024").await;
    let c = client();
    let long = format!("{}/{}", g.url, "a".repeat(2000));
    let r = c.get(long).send().await.unwrap();
    assert_eq!(r.status(), 414);
    assert!(r.text().await.unwrap().contains("longer than 1024 bytes"));
    let fits = format!("{}/{}", g.url, "a".repeat(500));
    assert_eq!(c.get(fits).send().await.unwrap().status(), 200);
}

mod worker {
    //! The same limits on the worker's own HTTP server.

    use super::*;
    use crate::support::worker::{real_config, Server};
    use gantry::worker::Worker;

    async fn start(head_timeout: Duration, max_connections: usize) -> Server {
        let mut config = real_config();
        config.limits.server.head_timeout = head_timeout;
        config.limits.server.max_connections = max_connections;
        Server::start(Worker::load(&config).expect("load the shipped model")).await
    }

    async fn health(stream: &mut TcpStream) -> Option<u16> {
        get(stream, "/health").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_header_client_is_closed_while_others_are_served() {
        let server = start(Duration::from_secs(1), 64).await;
        let addr = server.addr.to_string();
        let slow = tokio::spawn({
            let addr = addr.clone();
            async move { dribble_until_closed(&addr).await }
        });
        let mut normal = TcpStream::connect(&addr).await.unwrap();
        while !slow.is_finished() {
            assert_eq!(health(&mut normal).await, Some(200), "normal client");
            tokio::time::sleep(DRIBBLE).await;
        }
        assert!(slow.await.unwrap() >= 2);
        assert_eq!(health(&mut normal).await, Some(200), "still served after");
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_cap_are_closed_and_counted() {
        let server = start(Duration::from_secs(30), 2).await;
        let addr = server.addr.to_string();
        let refused = || {
            let text = gantry::metrics::render();
            metric(
                &text,
                "gantry_connections_refused_total{listener=\"worker\"}",
            )
        };
        let before = refused();
        let mut a = TcpStream::connect(&addr).await.unwrap();
        assert_eq!(health(&mut a).await, Some(200));
        let mut b = TcpStream::connect(&addr).await.unwrap();
        assert_eq!(health(&mut b).await, Some(200));
        let mut third = TcpStream::connect(&addr).await.unwrap();
        assert_eq!(
            health(&mut third).await,
            None,
            "a third connection is closed"
        );
        assert!(refused() > before, "the refusal is counted");
        assert_eq!(health(&mut a).await, Some(200), "served connections go on");
        drop(a);
        let mut c = until("a freed place", HANG, || async {
            let mut s = TcpStream::connect(&addr).await.ok()?;
            (health(&mut s).await == Some(200)).then_some(s)
        })
        .await;
        assert_eq!(health(&mut c).await, Some(200));
        drop((b, c));
        server.stop().await;
    }
}
