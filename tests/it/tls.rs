//! HTTPS and HTTP/2: h2 and HTTP/1.1 over TLS, certificates by SNI, reload without dropping connections, h2c from clients and to backends.
//!
//! Certificates are self-signed, made by `openssl` for each test; clients are
//! curl (`--http2`, `--http1.1`), `openssl s_client` (which certificate a
//! name gets) and rustls (a connection held open across a reload).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backend::{Backend, Behaviour};
use crate::support::{free_port, Gantry};

/// A self-signed certificate for `names` (the first is also the CN), with its key, in `dir`.
fn make_cert(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let (subj, san) = (
        format!("/CN={}", names[0]),
        format!("subjectAltName={}", san.join(",")),
    );
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    // A leaf, not a CA: rustls refuses a CA certificate as a server's.
    crate::support::self_signed(
        dir,
        &subj,
        &[&san, "basicConstraints=critical,CA:FALSE"],
        &key_s,
        &cert_s,
    );
    (cert, key)
}

/// `openssl x509 -noout -<field>` of the certificate the listener at `port` sends for `name`.
fn served(port: u16, name: &str, field: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -{field}"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The subject CN of the certificate the listener at `port` sends for `name`.
fn served_cn(port: u16, name: &str) -> String {
    let subject = served(port, name, "subject");
    subject
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `curl -k` over `version` (`--http2`, `--http1.1`): the HTTP version and status.
fn curl(port: u16, version: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            version,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/v1/analyze"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn config(backend: &Backend, port: u16, certs: &[(PathBuf, PathBuf)]) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| format!("{{cert: '{}', key: '{}'}}", c.display(), k.display()))
        .collect();
    format!(
        "h2c: true\npools:\n  p: {{backends: [{{addr: '{}'}}], health: {{interval: 200ms}}}}\nroutes: [{{prefix: /, pool: p}}]\ntls:\n  listen: 127.0.0.1:{port}\n  certificates: [{}]\n",
        backend.addr,
        list.join(", ")
    )
}

/// `gantry proxy` on `yaml`, once its HTTPS listener on `port` answers 200 over `version`.
async fn start_https(yaml: &str, port: u16, version: &'static str) -> Gantry {
    let g = Gantry::proxy(yaml).start().await;
    let want = if version == "--http2" {
        "2 200"
    } else {
        "1.1 200"
    };
    let g_ref = &g;
    g.until("HTTPS answers", Duration::from_secs(20), || async move {
        match curl(port, version) {
            got if got == want => Ok(()),
            got => Err(format!("{got}: {}", g_ref.tail())),
        }
    })
    .await;
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1_picks_certificates_by_sni_and_exports_their_expiry() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let main = make_cert(dir.path(), "main", &["localhost"]);
    let other = make_cert(dir.path(), "other", &["other.test", "*.wild.test"]);
    let port = free_port();
    let g = start_https(&config(&backend, port, &[main, other]), port, "--http2").await;
    assert_eq!(curl(port, "--http1.1"), "1.1 200");
    // Plain HTTP goes on beside it: HTTP/1.1, and h2c with prior knowledge.
    let plain = crate::support::client()
        .get(format!("{}/x", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let h2c = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("{}/x", g.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&h2c.stdout), "2 200");

    assert_eq!(served_cn(port, "localhost"), "localhost");
    assert_eq!(served_cn(port, "other.test"), "other.test");
    assert_eq!(served_cn(port, "a.wild.test"), "other.test");
    assert_eq!(
        served_cn(port, "unknown.test"),
        "localhost",
        "the first is the default"
    );

    let metrics = g.metrics().await;
    let left: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("gantry_tls_certificate_expiry_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(left.len(), 2, "{metrics}");
    let by_protocol = |p: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "gantry_requests_by_protocol_total{{protocol=\"{p}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        by_protocol("h2") >= 2.0 && by_protocol("http1") >= 2.0,
        "{metrics}"
    );
    assert!(
        left.iter()
            .all(|s| *s > 29.0 * 86_400.0 && *s <= 30.0 * 86_400.0),
        "{left:?}"
    );
}

/// One GET on `tls` (HTTP/1.1, kept alive): the status code.
async fn get(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> u16 {
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificates_serve_new_handshakes_keep_open_connections_and_a_broken_one_is_refused(
) {
    let backend = Backend::start("b", Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "live", &["localhost"]);
    let port = free_port();
    let pair = (cert.clone(), key.clone());
    let g = start_https(&config(&backend, port, &[pair]), port, "--http1.1").await;
    let (g_ref, p) = (&g, port);

    // A connection opened with the first certificate (trusted as a root).
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).unwrap();
    let der = pem_to_der(&pem);
    roots.add(der.into()).unwrap();
    let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut open = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(get(&mut open).await, 200);

    // Rotated the way cert-manager or certbot do: new files renamed over the old.
    let (new_cert, new_key) = make_cert(dir.path(), "next", &["next.test", "localhost"]);
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    g.until(
        "new handshakes get the new certificate",
        Duration::from_secs(20),
        || async move {
            match served_cn(p, "localhost").as_str() {
                "next.test" => Ok(()),
                got => Err(format!("{got}: {}", g_ref.tail())),
            }
        },
    )
    .await;
    assert_eq!(get(&mut open).await, 200, "the open connection was dropped");

    // A broken replacement is refused; the last good one stays.
    let before = served(port, "localhost", "serial");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    g.until(
        "the refusal logged",
        Duration::from_secs(20),
        || async move {
            if g_ref.log().contains("TLS certificates not reloaded") {
                Ok(())
            } else {
                Err(g_ref.tail())
            }
        },
    )
    .await;
    assert_eq!(served(port, "localhost", "serial"), before);
    assert_eq!(curl(port, "--http2"), "2 200");
}

/// The DER of the first certificate in `pem`.
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(pem)
        .unwrap()
        .to_vec()
}

#[test]
fn a_key_that_is_not_the_certificates_is_a_located_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = make_cert(dir.path(), "a", &["localhost"]);
    let (_, other_key) = make_cert(dir.path(), "b", &["localhost"]);
    let yaml = format!(
        "pools:\n  p: {{backends: [{{addr: '127.0.0.1:1'}}]}}\nroutes: [{{prefix: /, pool: p}}]\ntls:\n  listen: 127.0.0.1:8443\n  certificates:\n    - {{cert: '{}', key: '{}'}}\n    - {{cert: '{}', key: '{}'}}\n",
        cert.display(),
        other_key.display(),
        dir.path().join("missing.pem").display(),
        other_key.display()
    );
    let errors = match gantry::config::from_str(Path::new("g.yaml"), &yaml) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted a key that does not match"),
    };
    assert!(
        errors.contains("g.yaml:7:7: tls.certificates[0]:")
            && errors.contains("does not match the certificate"),
        "{errors}"
    );
    assert!(
        errors.contains("g.yaml:8:7: tls.certificates[1]:") && errors.contains("missing.pem"),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redirect_http_plain_requests_are_sent_to_https() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let pair = make_cert(dir.path(), "main", &["localhost"]);
    let port = free_port();
    let yaml = config(&backend, port, &[pair]) + "  redirect_http: true\n";
    let g = start_https(&yaml, port, "--http2").await;
    let hits = backend.hits();
    let plain_port = g.url.rsplit(':').next().unwrap().to_string();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args(["--resolve", &format!("localhost:{plain_port}:127.0.0.1")])
        .arg(format!("http://localhost:{plain_port}/v1/analyze?x=1"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("308 https://localhost:{port}/v1/analyze?x=1")
    );
    assert_eq!(backend.hits(), hits, "a plain request reached the backend");
}

/// An HTTP/2-only cleartext server (no HTTP/1.1 at all) that answers every
/// request `200 <version it saw>`; returns its address.
async fn h2c_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_pool_is_proxied_and_health_checked_over_http2() {
    let h2 = h2c_backend().await;
    let yaml = format!(
        "pools:\n  grpc: {{protocol: h2c, backends: [{{addr: '{h2}'}}], health: {{interval: 200ms}}}}\n  plain: {{backends: [{{addr: '{h2}'}}], health: {{interval: 200ms}}}}\nroutes:\n  - {{prefix: /grpc, pool: grpc}}\n  - {{prefix: /, pool: plain}}\n"
    );
    let g = Gantry::proxy(&yaml).start().await;
    let c = crate::support::client();
    let url = format!("{}/grpc/Service/Method", g.url);
    let (c_ref, url_ref, g_ref) = (&c, &url, &g);
    g.until(
        "the h2c backend answers through the proxy",
        Duration::from_secs(20),
        || async move {
            match c_ref.get(url_ref).send().await {
                Ok(r) if r.status() == 200 => match r.text().await.unwrap_or_default().as_str() {
                    "HTTP/2.0" => Ok(()),
                    other => Err(format!("backend saw {other}")),
                },
                Ok(r) => Err(format!("status {}: {}", r.status(), g_ref.tail())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    // The same server as an HTTP/1.1 pool: its health checks fail, so it is down.
    let (g_ref, pool) = (&g, "plain");
    g.until(
        "the HTTP/1.1 pool's checks fail",
        Duration::from_secs(20),
        || async move {
            match g_ref.count_up(pool).await {
                0 => Ok(()),
                n => Err(format!("{n} up")),
            }
        },
    )
    .await;
    assert_eq!(g.count_up("grpc").await, 1);
}

/// One HTTP/2 frame header: length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one frame: `(type, flags, stream, payload)`.
async fn read_frame(s: &mut tokio::net::TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.expect("a frame");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.expect("a payload");
    (head[3], head[4], stream, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_bounds_streams_and_header_lists_as_the_spec_says() {
    let backend = Backend::start("b", Behaviour::default()).await;
    let yaml = format!(
        "h2c: true\nlimits: {{head_timeout: 1s}}\npools:\n  p: {{backends: [{{addr: '{}'}}], health: {{interval: 200ms}}}}\nroutes: [{{prefix: /, pool: p}}]\n",
        backend.addr
    );
    let g = Gantry::proxy(&yaml).start().await;
    let addr = g.url.trim_start_matches("http://").to_string();

    // A raw client that ignores the server's SETTINGS: it opens 101 POST
    // streams and sends no body, so all stay open.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    let (kind, _, _, settings) = read_frame(&mut s).await;
    assert_eq!(kind, 0x4, "the server starts with SETTINGS");
    let setting = |id: u16| {
        settings
            .chunks(6)
            .find(|c| u16::from_be_bytes([c[0], c[1]]) == id)
            .map(|c| u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
    };
    // SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE.
    assert_eq!(setting(0x3), Some(100));
    assert_eq!(setting(0x6), Some(64 * 1024));
    s.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap();
    // HPACK: :method POST, :path /, :scheme http, :authority localhost.
    let mut block = vec![0x83, 0x84, 0x86, 0x01, 9];
    block.extend_from_slice(b"localhost");
    for i in 0..101u32 {
        s.write_all(&frame(0x1, 0x4, 2 * i + 1, &block))
            .await
            .unwrap();
    }
    // RFC 9113 5.1.2: a stream past the advertised limit is refused
    // (RST_STREAM with REFUSED_STREAM, 0x7): the client may retry it.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (kind, _, stream, payload) = read_frame(&mut s).await;
            if kind == 0x3 {
                return (stream, u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
            assert_ne!(kind, 0x7, "GOAWAY instead of a refused stream");
        }
    })
    .await
    .expect("a RST_STREAM");
    assert_eq!(refused, (201, 0x7));

    // Header lists: past `limits.max_header_bytes` (32 KiB by default) but
    // under HTTP/2's 64 KiB, the same 431 and message as HTTP/1.1; past 64
    // KiB, the HTTP/2 layer answers 431 itself (RFC 9113 10.5.1).
    let big = |n: usize| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-w",
                "\n%{http_version} %{http_code}",
            ])
            .arg("-H")
            .arg(format!("x-big: {}", "a".repeat(n)))
            .arg(format!("{}/v1/analyze", g.url))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mid = big(40 * 1024);
    assert!(
        mid.ends_with("2 431") && mid.contains("request head larger than"),
        "{mid}"
    );
    // curl (nghttp2) will not send a header list over the server's advertised
    // size; the h2 client does, and gets the 431.
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("{}/v1/analyze", g.url))
        .header("x-big", "a".repeat(70 * 1024))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("an answer")
        .expect("a response, not a reset")
        .status();
    assert_eq!(status, 431, "{}", g.tail());
    // The connection outlives `limits.head_timeout`: HTTP/1's head and idle
    // clock is not an HTTP/2 connection's (its streams come and go).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = client.ready().await.expect("the connection is still open");
    let (resp, _) = client
        .send_request(
            http::Request::get(format!("{}/v1/analyze", g.url))
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200, "{}", g.tail());
    // The connection-level limits did not take the proxy down.
    assert_eq!(
        crate::support::client()
            .get(format!("{}/v1/analyze", g.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
