//! TLS from the proxy to a pool's backends: the pool's `tls:` section, loaded and reloaded, applied to every request's peer and to the pool's health checks.
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
//! - [`watch`] reloads the files when they change (a rotated client
//!   certificate); a set that fails to load is logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
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

/// A pool's checked and loaded `tls:`; clones share the loaded files, so a
/// [`UpstreamTls::reload`] reaches every holder.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The name to send and verify; `None`: the backend's IP address.
    pub sni: Option<String>,
    /// Check certificates and names.
    pub verify: bool,
    /// The files, for reloads and messages.
    files: RawUpstreamTls,
    /// What the files held when last loaded well.
    current: Arc<ArcSwap<Material>>,
    /// Loads so far (1 at start).
    loads: Arc<AtomicU64>,
}

/// The loaded files of a pool's `tls:`.
struct Material {
    /// The CA file's certificates, for Pingora (`None`: its system roots).
    ca: Option<Arc<[WrappedX509]>>,
    /// The client certificate, for Pingora.
    client: Option<Arc<CertKey>>,
    /// The same trust and client certificate for the health checks' client.
    probe: Arc<ClientConfig>,
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
    if let Some(name) = &raw.sni {
        if ServerName::try_from(name.as_str()).is_err() {
            let msg = format!("`{name}` is not a DNS name or IP address");
            errors.push(src.error(format!("{at}.sni"), msg));
            return None;
        }
    }
    match load(&raw) {
        Ok(material) => Some(UpstreamTls {
            sni: raw.sni.clone(),
            verify: raw.verify,
            files: raw,
            current: Arc::new(ArcSwap::from_pointee(material)),
            loads: Arc::new(AtomicU64::new(1)),
        }),
        Err(found) => {
            for (field, msg) in found {
                errors.push(src.error(format!("{at}.{field}"), msg));
            }
            None
        }
    }
}

/// Loads the files of `raw`; the errors name the field each is about.
fn load(raw: &RawUpstreamTls) -> Result<Material, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let (ca, roots) = match &raw.ca {
        Some(file) => match load_ca(file) {
            Ok((ca, roots)) => (Some(ca), roots),
            Err(m) => {
                errors.push(("ca", m));
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
                    errors.push(("cert", m));
                    None
                }
            }
        }
        (None, None) => None,
        (Some(_), None) => {
            errors.push(("key", "a client `cert` needs its `key`".into()));
            None
        }
        (None, Some(_)) => {
            errors.push(("cert", "a client `key` needs its `cert`".into()));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
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
            .map_err(|e| vec![("key", e.to_string())])?,
        None => builder.with_no_client_auth(),
    };
    Ok(Material {
        ca,
        client: client.map(|(_, _, k)| k),
        probe: Arc::new(probe),
    })
}

impl UpstreamTls {
    /// The peer for a request to `addr` over TLS, with the files as last loaded.
    pub fn peer(&self, addr: std::net::SocketAddr) -> HttpPeer {
        let sni = self.sni.clone().unwrap_or_else(|| addr.ip().to_string());
        let mut peer = HttpPeer::new(addr, true, sni);
        let now = self.current.load();
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = now.ca.clone();
        peer.client_cert_key = now.client.clone();
        peer
    }

    /// The health checks' client configuration: the same roots and client
    /// certificate as requests (ALPN is set by the connector).
    pub fn probe_tls(&self) -> ClientConfig {
        (*self.current.load().probe).clone()
    }

    /// How many times the files have been loaded: a health check rebuilds
    /// its client from [`UpstreamTls::probe_tls`] when this moves.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Acquire)
    }

    /// The configured server name, if any.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        self.sni
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
    }

    /// The files it reads.
    pub fn files(&self) -> Vec<PathBuf> {
        [&self.files.ca, &self.files.cert, &self.files.key]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Loads the files again: new connections and health checks use them;
    /// on an error the current ones stay and the error is returned.
    pub fn reload(&self) -> Result<(), String> {
        let material = load(&self.files).map_err(|found| {
            found
                .into_iter()
                .map(|(field, msg)| format!("{field}: {msg}"))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        self.current.store(Arc::new(material));
        self.loads.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// Reloads every pool's upstream TLS files when one of them changes, until
/// `shutdown`. `pools` are `(pool name, its tls)`.
pub async fn watch(
    pools: Vec<(String, UpstreamTls)>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let files: Vec<PathBuf> = pools.iter().flat_map(|(_, t)| t.files()).collect();
    let Some(mut watch) = super::watch_files(&files, "upstream TLS") else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            c = watch.changed() => {
                if c.is_none() {
                    return;
                }
                for (pool, tls) in &pools {
                    match tls.reload() {
                        Ok(()) => tracing::info!(pool = %pool, "Upstream TLS files reloaded; new connections use them"),
                        Err(e) => tracing::error!(pool = %pool, error = %e, "Upstream TLS files not reloaded; the previous ones stay in use"),
                    }
                }
            }
        }
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

/// The certificates of a PEM file; at least one, each parsing as X.509.
fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if ders.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    all_parse(file, &ders)?;
    Ok(ders)
}

/// Every certificate of `file` parses as X.509 (Pingora's own parser panics
/// on one that does not).
fn all_parse(file: &Path, ders: &[CertificateDer<'_>]) -> Result<(), String> {
    for (i, der) in ders.iter().enumerate() {
        x509_parser::parse_x509_certificate(der).map_err(|e| {
            format!(
                "{}: certificate {} does not parse: {e}",
                file.display(),
                i + 1
            )
        })?;
    }
    Ok(())
}

type Client = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Arc<CertKey>,
);

/// The client certificate and key: checked as a pair (the key is the leaf's)
/// and in the form Pingora reads back (a DER key it can identify).
fn load_client(files: &CertFiles) -> Result<Client, String> {
    let pair = load_pair(files).map_err(|e| e.to_string())?;
    let chain = pair.key.cert.clone();
    all_parse(&files.cert, &chain)?;
    let key = pair.private_key;
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
