//! TLS certificates of the traffic listener: the `tls:` section, PEM loading, choice by SNI, reload when the files change.
//!
//! - [`TlsConfig`] is the section: an address, certificate/key file pairs,
//!   HTTP/2 on or off. Its checker loads every pair, so a missing file, a
//!   file without a certificate or key, or a key that does not match its
//!   certificate is a located config error like any other.
//! - [`Certs`] is one loaded set: each pair's names (the certificate's DNS
//!   subject alternative names, `*.` wildcards included) and the first pair
//!   as the default for a client that sends no name or an unknown one.
//! - [`Resolver`] is what rustls asks during each handshake; it reads the
//!   current set through an `ArcSwap`, so [`watch`] swaps in a new set when
//!   the files change and new handshakes use it while established
//!   connections keep theirs. A set that fails to load is logged and the old
//!   one kept (the rule of config and policies).
//! - Each certificate's time to expiry is `gantry_tls_certificate_expiry_seconds{file}`,
//!   refreshed every minute; one that expires within 30 days is warned at load.
//!
//! Nothing here knows Pingora: `proxy` hands the resolver to its listener.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

pub mod upstream;

/// `tls:` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Address of the HTTPS listener, e.g. `127.0.0.1:8443`. Required.
    pub listen: String,
    /// Certificate chain and key files (PEM); the first is the default. At least one.
    pub certificates: Vec<CertFiles>,
    /// Offer HTTP/2 (ALPN `h2`) beside HTTP/1.1. Default true.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Answer every request on the plain listener with a `308` to the same
    /// URL over HTTPS on this listener's port. Default false.
    #[serde(default)]
    pub redirect_http: bool,
}

fn yes() -> bool {
    true
}

/// One certificate: its chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The checked section.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where the HTTPS listener accepts.
    pub listen: std::net::SocketAddr,
    /// The certificate files, the default first.
    pub certificates: Vec<CertFiles>,
    /// What they held when the config was checked: the listener starts with it.
    pub certs: Arc<Certs>,
    /// Offer HTTP/2.
    pub http2: bool,
    /// Send plain-HTTP requests to HTTPS.
    pub redirect_http: bool,
}

/// Checks the section, loading every certificate; errors are located under `tls.`.
pub fn check(
    raw: RawTls,
    src: &crate::yaml::Source,
    errors: &mut Vec<crate::yaml::ConfigError>,
) -> Option<TlsConfig> {
    let before = errors.len();
    let listen = crate::config::parse_addr(&raw.listen)
        .map_err(|m| errors.push(src.error("tls.listen", m)))
        .ok();
    if raw.certificates.is_empty() {
        errors.push(src.error("tls.certificates", "must list at least one {cert, key}"));
    }
    let mut pairs = Vec::new();
    for (i, files) in raw.certificates.iter().enumerate() {
        match load_pair(files) {
            Ok(pair) => pairs.push(pair),
            Err(e) => errors.push(src.error(format!("tls.certificates[{i}]"), e.to_string())),
        }
    }
    if errors.len() != before {
        return None;
    }
    let certs = Certs::new(&raw.certificates, pairs)
        .map_err(|e| errors.push(src.error("tls.certificates", e.to_string())))
        .ok()?;
    Some(TlsConfig {
        listen: listen.expect("checked"),
        certificates: raw.certificates,
        certs: Arc::new(certs),
        http2: raw.http2,
        redirect_http: raw.redirect_http,
    })
}

/// Where a plain-HTTP request for `host` (its `Host` header) and
/// `path_and_query` goes on HTTPS port `port`; `None` without a usable host.
pub fn https_location(host: Option<&str>, path_and_query: &str, port: u16) -> Option<String> {
    let host = host?.trim();
    // Drop the port: `[v6]:80`, `name:80`; a bare IPv6 address has no port.
    let name = if let Some(rest) = host.strip_prefix('[') {
        format!("[{}]", rest.split(']').next()?)
    } else {
        host.split(':').next()?.to_string()
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b));
    if !valid {
        return None;
    }
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    };
    Some(format!("https://{name}{port}{path}"))
}

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or holds no PEM item of the kind.
    #[error("{file}: {why}")]
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The key is not one rustls can sign with, or not the certificate's.
    #[error("{key}: {why}")]
    Key {
        /// The key file.
        key: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// One loaded certificate with what the resolver and the metric need.
#[derive(Debug)]
pub struct Loaded {
    /// Chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// The private key as read (a client certificate hands it on; its Debug elides it).
    pub private_key: PrivateKeyDer<'static>,
    /// DNS names it is valid for (lower case; `*.example.com` for wildcards).
    pub names: Vec<String>,
    /// Its `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// Loads and checks one pair: the chain's leaf parses, the key signs, and
/// the key is the leaf's.
pub fn load_pair(files: &CertFiles) -> Result<Loaded, CertError> {
    let file_err = |file: &Path, why: String| CertError::File {
        file: file.to_path_buf(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_err(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(&files.cert, "no certificate in it".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_err(&files.key, format!("no private key in it ({e})")))?;
    let key_err = |why: String| CertError::Key {
        key: files.key.clone(),
        why,
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&private_key)
        .map_err(|e| key_err(format!("unusable key: {e}")))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
        file_err(
            &files.cert,
            format!("the first certificate does not parse: {e}"),
        )
    })?;
    let not_after = leaf.validity().not_after.timestamp();
    let mut names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            leaf.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let key = CertifiedKey::new(chain, signer);
    key.keys_match().map_err(|e| {
        key_err(format!(
            "does not match the certificate {} ({e})",
            files.cert.display()
        ))
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        private_key,
        names,
        not_after,
    })
}

/// A loaded set of certificates.
#[derive(Debug)]
pub struct Certs {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// Each certificate file with its `notAfter` (Unix seconds).
    pub expiry: Vec<(PathBuf, i64)>,
}

impl Certs {
    /// Loads every pair of `files`; the first is the default.
    pub fn load(files: &[CertFiles]) -> Result<Certs, CertError> {
        let pairs = files.iter().map(load_pair).collect::<Result<_, _>>()?;
        Certs::new(files, pairs)
    }

    /// The set of `pairs`, loaded from `files` (in the same order).
    fn new(files: &[CertFiles], pairs: Vec<Loaded>) -> Result<Certs, CertError> {
        let mut by_name = HashMap::new();
        let mut default = None;
        let mut expiry = Vec::new();
        for (f, l) in files.iter().zip(pairs) {
            for n in &l.names {
                // The first certificate listing a name serves it.
                by_name.entry(n.clone()).or_insert_with(|| l.key.clone());
            }
            default.get_or_insert_with(|| l.key.clone());
            expiry.push((f.cert.clone(), l.not_after));
        }
        let default = default.ok_or_else(|| CertError::File {
            file: PathBuf::new(),
            why: "no certificate configured".into(),
        })?;
        Ok(Certs {
            default,
            by_name,
            expiry,
        })
    }

    /// The certificate for `name` (exact, then a wildcard one level up), else the default.
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(k) = self.by_name.get(&name) {
            return k.clone();
        }
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        wildcard
            .and_then(|w| self.by_name.get(&w).cloned())
            .unwrap_or_else(|| self.default.clone())
    }

    /// Sets the expiry gauge of each certificate, and warns of one near its end.
    fn publish(&self, warn: bool) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (file, not_after) in &self.expiry {
            let left = not_after - now;
            crate::metrics::TLS_EXPIRY
                .with_label_values(&[&file.display().to_string()])
                .set(left);
            if warn && left < WARN_BEFORE.as_secs() as i64 {
                let days = left as f64 / 86_400.0;
                tracing::warn!(file = %file.display(), days_left = format!("{days:.1}"), "TLS certificate expires soon or has expired");
            }
        }
    }
}

/// A certificate expiring within this is warned of when loaded.
const WARN_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// What rustls asks for a certificate in each handshake: the current set.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<Certs>,
}

impl Resolver {
    /// A resolver serving `certs`.
    pub fn new(certs: Arc<Certs>) -> Resolver {
        certs.publish(true);
        Resolver {
            current: ArcSwap::new(certs),
        }
    }

    /// Loads `files` again: the new set serves new handshakes; on an error
    /// the current one stays and the error is returned.
    pub fn reload(&self, files: &[CertFiles]) -> Result<(), CertError> {
        let certs = Certs::load(files)?;
        certs.publish(true);
        self.current.store(Arc::new(certs));
        Ok(())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name()))
    }
}

/// A watch of `files` (their directories, so a rename over a file counts,
/// filtered to their names); `None`, logged, when it cannot be set up.
/// `what` names the files in the log.
pub(crate) fn watch_files(files: &[PathBuf], what: &str) -> Option<crate::watch::DirWatch> {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let filter = move |p: &Path| p.file_name().is_some_and(|n| names.iter().any(|w| w == n));
    match crate::watch::DirWatch::with_filter(&dirs, filter) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "Cannot watch the {what} files; they will not reload");
            None
        }
    }
}

/// Reloads `resolver` from `files` whenever one of them changes (watching
/// their directories, so a rename over the file counts), and refreshes the
/// expiry gauge every minute, until `shutdown`.
pub async fn watch(
    resolver: Arc<Resolver>,
    files: Vec<CertFiles>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let watched: Vec<PathBuf> = files
        .iter()
        .flat_map(|f| [f.cert.clone(), f.key.clone()])
        .collect();
    let mut watch = watch_files(&watched, "TLS certificate");
    let mut minute = tokio::time::interval(Duration::from_secs(60));
    loop {
        let changed = crate::watch::changed(watch.as_mut());
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = minute.tick() => resolver.current.load().publish(false),
            c = changed => {
                if c.is_none() {
                    watch = None;
                    continue;
                }
                match resolver.reload(&files) {
                    Ok(()) => tracing::info!("TLS certificates reloaded; new handshakes use them"),
                    Err(e) => tracing::error!(error = %e, "TLS certificates not reloaded; the previous ones stay in use"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::https_location;

    #[test]
    fn plain_requests_are_sent_to_the_same_url_on_the_https_port() {
        let check = |host, path, port, want: Option<&str>| {
            assert_eq!(
                https_location(host, path, port).as_deref(),
                want,
                "{host:?} {path}"
            );
        };
        check(
            Some("example.com"),
            "/v1/analyze?x=1",
            443,
            Some("https://example.com/v1/analyze?x=1"),
        );
        check(
            Some("example.com:8080"),
            "/",
            8443,
            Some("https://example.com:8443/"),
        );
        check(Some("[::1]:8080"), "/a", 8443, Some("https://[::1]:8443/a"));
        check(
            Some("127.0.0.1:8080"),
            "*",
            8443,
            Some("https://127.0.0.1:8443/"),
        );
        check(None, "/", 443, None);
        check(Some(""), "/", 443, None);
        check(Some("evil.com/@x"), "/", 443, None);
    }
}
