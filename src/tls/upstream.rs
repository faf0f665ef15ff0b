//! TLS from the proxy to a pool's backends: the pool's `tls:` section, loaded once, applied to every request's peer and to the pool's health checks.
//!
//! - [`RawUpstreamTls`] is the section as written: a CA file (else the
//!   system's roots), the name to verify and send as SNI (else the backend's
//!   IP address, which the certificate must then list), an optional client
//!   certificate and key, and `verify` (default true).
//! - [`check`] loads every file at config time, so a missing CA, a file that
//!   does not parse or a client key that is not its certificate's is a
//!   located config error, never a panic inside Pingora at the first connect.
//! - [`UpstreamTls::peer`] builds the Pingora peer of one request;
//!   [`UpstreamTls::probe_tls`] is the same trust and client certificate as a
//!   rustls client configuration for the health checks, so a backend a probe
//!   passes is one a request can reach.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;

use super::{load_pair, CertFiles};

/// A pool's `tls:` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// CA certificates (PEM) that sign the backends' certificates. Default:
    /// the system's roots.
    pub ca: Option<PathBuf>,
    /// Server name sent as SNI and checked against the certificate. Default:
    /// the backend's IP address.
    pub sni: Option<String>,
    /// Client certificate chain (PEM) for backends that require one; with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); with `cert`.
    pub key: Option<PathBuf>,
    /// Check the backend's certificate and name. Default true; false accepts
    /// any certificate (a test setup, warned at start).
    #[serde(default = "super::yes")]
    pub verify: bool,
}

/// A pool's checked and loaded `tls:`.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The name to send and verify; `None`: the backend's IP address.
    pub sni: Option<String>,
    /// Check certificates and names.
    pub verify: bool,
    /// The CA file's certificates, for Pingora (`None`: its system roots).
    ca: Option<Arc<[WrappedX509]>>,
    /// The client certificate, for Pingora.
    client: Option<Arc<CertKey>>,
    /// The same trust and client certificate for the health checks' client.
    probe: Arc<ClientConfig>,
    /// The files, for messages.
    files: RawUpstreamTls,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Checks a pool's `tls:` (errors located at `at`, e.g. `pools.a.tls`) and
/// loads its files.
pub fn check(
    raw: RawUpstreamTls,
    at: &str,
    src: &crate::yaml::Source,
    errors: &mut Vec<crate::yaml::ConfigError>,
) -> Option<UpstreamTls> {
    let before = errors.len();
    let mut err = |field: &str, msg: String| errors.push(src.error(format!("{at}.{field}"), msg));
    if let Some(name) = &raw.sni {
        if ServerName::try_from(name.as_str()).is_err() {
            err("sni", format!("`{name}` is not a DNS name or IP address"));
        }
    }
    let (ca, roots) = match &raw.ca {
        Some(file) => match load_ca(file) {
            Ok((ca, roots)) => (Some(ca), roots),
            Err(m) => {
                err("ca", m);
                (None, RootCertStore::empty())
            }
        },
        None => (None, system_roots().clone()),
    };
    let client = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => {
            let files = CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            match load_client(&files) {
                Ok(c) => Some(c),
                Err(m) => {
                    err("cert", m);
                    None
                }
            }
        }
        (None, None) => None,
        (Some(_), None) => {
            err("key", "a client `cert` needs its `key`".into());
            None
        }
        (None, Some(_)) => {
            err("cert", "a client `key` needs its `cert`".into());
            None
        }
    };
    if errors.len() != before {
        return None;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = if raw.verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    };
    let probe = match &client {
        Some((chain, key, _)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| errors.push(src.error(format!("{at}.key"), e.to_string())))
            .ok()?,
        None => builder.with_no_client_auth(),
    };
    Some(UpstreamTls {
        sni: raw.sni.clone(),
        verify: raw.verify,
        ca,
        client: client.map(|(_, _, k)| k),
        probe: Arc::new(probe),
        files: raw,
    })
}

impl UpstreamTls {
    /// The peer for a request to `addr` over TLS.
    pub fn peer(&self, addr: std::net::SocketAddr) -> HttpPeer {
        let sni = self.sni.clone().unwrap_or_else(|| addr.ip().to_string());
        let mut peer = HttpPeer::new(addr, true, sni);
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
        peer
    }

    /// The health checks' client configuration: the same roots and client
    /// certificate as requests (ALPN is set by the connector).
    pub fn probe_tls(&self) -> ClientConfig {
        (*self.probe).clone()
    }

    /// The configured server name, if any.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        self.sni
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trusted roots, read once.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "Some system CA certificates could not be read");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        roots
    })
}

/// The CA file's certificates, for Pingora and as a root store.
fn load_ca(file: &Path) -> Result<(Arc<[WrappedX509]>, RootCertStore), String> {
    let ders = read_certs(file)?;
    let mut roots = RootCertStore::empty();
    let mut wrapped = Vec::with_capacity(ders.len());
    for (i, der) in ders.into_iter().enumerate() {
        roots
            .add(der.clone())
            .map_err(|e| format!("{}: certificate {}: {e}", file.display(), i + 1))?;
        wrapped.push(WrappedX509::new(der.to_vec(), parse_x509));
    }
    Ok((wrapped.into(), roots))
}

/// The certificates of a PEM file; at least one, each parsing as X.509
/// (Pingora's own parser panics on one that does not).
fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if ders.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    for (i, der) in ders.iter().enumerate() {
        x509_parser::parse_x509_certificate(der).map_err(|e| {
            format!(
                "{}: certificate {} does not parse: {e}",
                file.display(),
                i + 1
            )
        })?;
    }
    Ok(ders)
}

type Client = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Arc<CertKey>,
);

/// The client certificate and key: checked as a pair (the key is the leaf's)
/// and in the form Pingora reads back (a DER key it can identify).
fn load_client(files: &CertFiles) -> Result<Client, String> {
    load_pair(files).map_err(|e| e.to_string())?;
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: no private key in it ({e})", files.key.display()))?;
    let der = key.secret_der().to_vec();
    if PrivateKeyDer::try_from(der.clone()).is_err() {
        return Err(format!(
            "{}: the key's type is not recognised (use PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        ));
    }
    let certkey = CertKey::new(chain.iter().map(|c| c.to_vec()).collect(), der);
    Ok((chain, key, Arc::new(certkey)))
}

/// `verify: false` for the health checks: any certificate passes, as Pingora
/// does for requests with `verify_cert` off. Signatures are still checked.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
