//! TLS to backends: a pool's CA, server name and client certificate, for requests and health checks, HTTP/1.1 and HTTP/2 (ALPN `h2`), and what a backend that cannot be trusted gets.
//!
//! The PKI is made by `openssl` for each test (a CA, a server certificate
//! and a client certificate it signs, and a second CA that signs nothing the
//! backend sends); the backends are in-process rustls + hyper servers that
//! answer with what they saw: the HTTP version, the SNI name and whether a
//! client certificate came.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use crate::support::{openssl, self_signed, Gantry};

/// A CA certificate and key, `<stem>.pem` and `<stem>.key` in `dir`.
fn make_ca(dir: &Path, stem: &str) -> PathBuf {
    let (pem, key) = (format!("{stem}.pem"), format!("{stem}.key"));
    self_signed(
        dir,
        &format!("/CN={stem}"),
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
        ],
        &key,
        &pem,
    );
    dir.join(pem)
}

/// A certificate signed by CA `ca` (a stem of [`make_ca`]) with `san` (e.g.
/// `DNS:backend.test`) and extended key usage `eku` (`serverAuth`,
/// `clientAuth`): `(<stem>.pem, <stem>.key)`.
fn make_leaf(dir: &Path, ca: &str, stem: &str, san: &str, eku: &str) -> (PathBuf, PathBuf) {
    let (pem, key, csr, ext) = (
        format!("{stem}.pem"),
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage={eku}\n"
        ),
    )
    .unwrap();
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={stem}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
        dir,
    );
    (dir.join(pem), dir.join(key))
}

/// A test PKI: CA `ca` signs the backend's `server` (for `backend.test` and
/// 127.0.0.1) and a `client`; CA `other` signs nothing in use.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = make_ca(d, "ca");
        let other_ca = make_ca(d, "other");
        let server = make_leaf(
            d,
            "ca",
            "server",
            "DNS:backend.test,IP:127.0.0.1",
            "serverAuth",
        );
        let client = make_leaf(d, "ca", "client", "DNS:gantry.test", "clientAuth");
        Pki {
            dir,
            ca,
            other_ca,
            server,
            client,
        }
    }
}

fn certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A TLS backend with `pki.server`, offering `alpn` (`h2` or `http/1.1`),
/// requiring a client certificate signed by `pki.ca` when `mtls`. Each
/// request gets `200 <version> sni=<name or -> client=<yes|no>`.
async fn tls_backend(pki: &Pki, alpn: &'static [u8], mtls: bool) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mtls {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(certs(&pki.ca));
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.server.1).unwrap();
    let mut config = builder.with_single_cert(certs(&pki.server.0), key).unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let sni = conn.server_name().unwrap_or("-").to_string();
                let client = if conn.peer_certificates().is_some() {
                    "yes"
                } else {
                    "no"
                };
                // An `h2` server speaks only HTTP/2, whatever was negotiated.
                let h2 = alpn == b"h2";
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = format!("{:?} sni={sni} client={client}", req.version());
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, service)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    addr
}

/// `GET <gantry><path>`: status and body.
async fn get(g: &Gantry, path: &str) -> (u16, String) {
    match crate::support::client()
        .get(format!("{}{path}", g.url))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until pool `pool` of `g` has `want` backends up.
async fn until_up(g: &Gantry, pool: &'static str, want: usize) {
    g.until(
        "the pool's health checks settle",
        Duration::from_secs(20),
        || async move {
            match g.count_up(pool).await {
                n if n == want => Ok(()),
                n => Err(format!("{pool}: {n} up, want {want}: {}", g.tail())),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_pool_trusts_only_its_ca_and_name_and_sends_its_client_certificate() {
    let pki = Pki::new();
    let backend = tls_backend(&pki, b"http/1.1", true).await;
    let (ca, other) = (pki.ca.display(), pki.other_ca.display());
    let (cert, key) = (pki.client.0.display(), pki.client.1.display());
    let pool = |tls: String| {
        format!(
            "{{backends: [{{addr: '{backend}'}}], health: {{interval: 200ms}}, tls: {{{tls}}}}}"
        )
    };
    let yaml = format!(
        "pools:\n  good: {}\n  by_ip: {}\n  no_cert: {}\n  wrong_name: {}\n  other_ca: {}\nroutes:\n  - {{prefix: /good, pool: good}}\n  - {{prefix: /by_ip, pool: by_ip}}\n  - {{prefix: /no_cert, pool: no_cert}}\n  - {{prefix: /wrong_name, pool: wrong_name}}\n  - {{prefix: /other_ca, pool: other_ca}}\n",
        pool(format!("ca: '{ca}', sni: backend.test, cert: '{cert}', key: '{key}'")),
        // No name: the backend's IP address, which the certificate lists.
        pool(format!("ca: '{ca}', cert: '{cert}', key: '{key}'")),
        pool(format!("ca: '{ca}', sni: backend.test")),
        pool(format!("ca: '{ca}', sni: elsewhere.test, cert: '{cert}', key: '{key}'")),
        pool(format!("ca: '{other}', sni: backend.test, cert: '{cert}', key: '{key}'")),
    );
    let g = Gantry::proxy(&yaml).start().await;
    until_up(&g, "good", 1).await;
    assert_eq!(
        get(&g, "/good/v1/analyze").await,
        (200, "HTTP/1.1 sni=backend.test client=yes".into())
    );
    until_up(&g, "by_ip", 1).await;
    // rustls sends no SNI for an IP address; the certificate's IP SAN is checked.
    assert_eq!(
        get(&g, "/by_ip/v1/analyze").await,
        (200, "HTTP/1.1 sni=- client=yes".into())
    );
    // Without the client certificate, with the wrong name or the wrong CA,
    // the health checks fail as requests would: the pool has nothing up.
    for pool in ["no_cert", "wrong_name", "other_ca"] {
        until_up(&g, pool, 0).await;
        let (status, _) = get(&g, &format!("/{pool}/v1/analyze")).await;
        assert!(status == 502 || status == 503, "{pool}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_pool_reaches_an_http2_only_tls_backend_and_verify_false_accepts_any_certificate() {
    let pki = Pki::new();
    let h2 = tls_backend(&pki, b"h2", false).await;
    let h1 = tls_backend(&pki, b"http/1.1", false).await;
    let ca = pki.ca.display();
    let yaml = format!(
        "pools:\n  grpc: {{protocol: h2, backends: [{{addr: '{h2}'}}], health: {{interval: 200ms}}, tls: {{ca: '{ca}', sni: backend.test}}}}\n  insecure: {{backends: [{{addr: '{h1}'}}], health: {{interval: 200ms}}, tls: {{verify: false}}}}\n  h1_to_h2: {{backends: [{{addr: '{h2}'}}], health: {{interval: 200ms}}, tls: {{ca: '{ca}', sni: backend.test}}}}\nroutes:\n  - {{prefix: /grpc, pool: grpc}}\n  - {{prefix: /insecure, pool: insecure}}\n  - {{prefix: /h1, pool: h1_to_h2}}\n"
    );
    let g = Gantry::proxy(&yaml).start().await;
    until_up(&g, "grpc", 1).await;
    assert_eq!(
        get(&g, "/grpc/Service/Method").await,
        (200, "HTTP/2.0 sni=backend.test client=no".into())
    );
    until_up(&g, "insecure", 1).await;
    assert_eq!(
        get(&g, "/insecure/v1/analyze").await,
        (200, "HTTP/1.1 sni=- client=no".into())
    );
    // An HTTP/1.1 pool offers only http/1.1 to the HTTP/2-only server: its
    // checks fail, so it is down.
    until_up(&g, "h1_to_h2", 0).await;
    drop(pki.dir);
}

#[test]
fn upstream_tls_mistakes_are_located_config_errors() {
    let pki = Pki::new();
    let cert = pki.client.0.display();
    let missing = pki.dir.path().join("missing.pem");
    let yaml = format!(
        "pools:\n  a:\n    backends: [{{addr: '127.0.0.1:1'}}]\n    tls: {{ca: '{}', cert: '{cert}'}}\n  b:\n    protocol: h2\n    backends: [{{addr: '127.0.0.1:1'}}]\n  c:\n    protocol: h2c\n    backends: [{{addr: '127.0.0.1:1'}}]\n    tls: {{cert: '{cert}', key: '{}'}}\nroutes: [{{prefix: /, pool: a}}]\n",
        missing.display(),
        pki.server.1.display(),
    );
    let errors = match gantry::config::from_str(Path::new("g.yaml"), &yaml) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted a broken upstream tls section"),
    };
    for want in [
        "pools.a.tls.ca:",
        "missing.pem",
        "pools.a.tls.key: a client `cert` needs its `key`",
        "pools.b.protocol: `h2` is HTTP/2 over TLS",
        "pools.c.protocol: `h2c` is HTTP/2 without TLS",
        "pools.c.tls.cert:",
        "does not match the certificate",
    ] {
        assert!(errors.contains(want), "missing {want:?} in:\n{errors}");
    }
    assert!(errors.contains("g.yaml:4:"), "{errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_certificate_is_used_without_a_restart_and_a_broken_one_is_refused() {
    let pki = Pki::new();
    let d = pki.dir.path();
    // A client certificate the backend does not trust (another CA signed it).
    let (stranger, stranger_key) =
        make_leaf(d, "other", "stranger", "DNS:gantry.test", "clientAuth");
    let (cert, key) = (d.join("in-use.pem"), d.join("in-use.key"));
    std::fs::copy(&stranger, &cert).unwrap();
    std::fs::copy(&stranger_key, &key).unwrap();
    let backend = tls_backend(&pki, b"http/1.1", true).await;
    let yaml = format!(
        "pools:\n  p: {{backends: [{{addr: '{backend}'}}], health: {{interval: 200ms}}, tls: {{ca: '{}', sni: backend.test, cert: '{}', key: '{}'}}}}\nroutes: [{{prefix: /, pool: p}}]\n",
        pki.ca.display(),
        cert.display(),
        key.display()
    );
    let g = Gantry::proxy(&yaml).start().await;
    until_up(&g, "p", 0).await;
    // The rotation: the trusted certificate replaces the files (renamed over
    // them, as cert-manager and ACME clients do).
    for (from, to) in [(&pki.client.1, &key), (&pki.client.0, &cert)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    until_up(&g, "p", 1).await;
    assert_eq!(
        get(&g, "/v1/analyze").await,
        (200, "HTTP/1.1 sni=backend.test client=yes".into())
    );
    // A broken replacement (a key that is not the certificate's) is logged
    // and the working files stay in use.
    std::fs::copy(&stranger_key, &key).unwrap();
    g.until(
        "the broken files are refused",
        Duration::from_secs(20),
        || async {
            if g.log().contains("Upstream TLS files not reloaded") {
                Ok(())
            } else {
                Err(g.tail())
            }
        },
    )
    .await;
    assert_eq!(get(&g, "/v1/analyze").await.0, 200);
    assert_eq!(g.count_up("p").await, 1);
}
