//! `gantry cache warm FILE`: replays a JSONL list of requests through a running proxy so its cache fills.
//!
//! One JSON object per line: `{"path": "/v1/analyze", "body": {...}}`, with
//! optional `"method"` (default `POST` with a body, `GET` without) and
//! `"headers"`. A string `body` is sent as it is; any other JSON value is sent
//! as JSON. Blank lines and lines starting with `#` are skipped. Every bad
//! line is reported (with its number) before anything is sent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// Longest one replayed request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors before any request is sent.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Lines that are not valid requests, each `file:line: message`.
    #[error("{} bad line(s):\n{}", .0.len(), .0.join("\n"))]
    Lines(Vec<String>),
    /// The proxy URL is not `http://host:port`.
    #[error("bad proxy URL `{0}`")]
    Url(String),
}

/// One line of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmRequest {
    /// Method; default POST with a body, GET without.
    #[serde(default)]
    pub method: Option<String>,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request body: a string as is, other JSON as JSON.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// What a replay did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct WarmReport {
    /// Requests sent.
    pub sent: usize,
    /// Responses by `X-Cache` value (`none` when absent).
    pub x_cache: BTreeMap<String, usize>,
    /// Responses by status code.
    pub status: BTreeMap<u16, usize>,
    /// Requests that got no response.
    pub failed: usize,
}

/// Parses every line, collecting every error.
pub fn parse(file: &Path, text: &str) -> Result<Vec<http::Request<Full<Bytes>>>, WarmError> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", file.display(), i + 1);
        match serde_json::from_str::<WarmRequest>(line)
            .map_err(|e| e.to_string())
            .and_then(build)
        {
            Ok(r) => out.push(r),
            Err(e) => bad.push(format!("{at}: {e}")),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(WarmError::Lines(bad))
    }
}

fn build(r: WarmRequest) -> Result<http::Request<Full<Bytes>>, String> {
    if !r.path.starts_with('/') {
        return Err("`path` must start with `/`".into());
    }
    let body = match r.body {
        None => Bytes::new(),
        Some(serde_json::Value::String(s)) => Bytes::from(s),
        Some(v) => Bytes::from(v.to_string()),
    };
    let method = r
        .method
        .unwrap_or_else(|| if body.is_empty() { "GET" } else { "POST" }.into());
    let mut b = http::Request::builder()
        .method(method.to_ascii_uppercase().as_str())
        .uri(&r.path);
    for (name, value) in &r.headers {
        b = b.header(name, value);
    }
    b.body(Full::new(body)).map_err(|e| e.to_string())
}

/// Sends every request of `file` to `proxy` (`http://host:port`), `concurrency` at a time.
pub async fn replay(proxy: &str, file: &Path, concurrency: usize) -> Result<WarmReport, WarmError> {
    let text = std::fs::read_to_string(file).map_err(|source| WarmError::Read {
        path: file.display().to_string(),
        cause: source,
    })?;
    let requests = parse(file, &text)?;
    let base: http::Uri = proxy.parse().map_err(|_| WarmError::Url(proxy.into()))?;
    let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned())
    else {
        return Err(WarmError::Url(proxy.into()));
    };
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let results: Vec<Result<(u16, String), ()>> = futures::stream::iter(requests)
        .map(|mut req| {
            let mut parts = req.uri().clone().into_parts();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
            let client = client.clone();
            async move {
                let resp = tokio::time::timeout(REQUEST_TIMEOUT, client.request(req))
                    .await
                    .map_err(|_| ())?
                    .map_err(|_| ())?;
                let status = resp.status().as_u16();
                let x_cache = resp
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string();
                resp.into_body().collect().await.map_err(|_| ())?;
                Ok((status, x_cache))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut report = WarmReport::default();
    for r in results {
        report.sent += 1;
        match r {
            Ok((status, x)) => {
                *report.status.entry(status).or_default() += 1;
                *report.x_cache.entry(x).or_default() += 1;
            }
            Err(()) => report.failed += 1,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_requests_and_every_bad_line_is_reported() {
        let text = "# warm-up set\n{\"path\":\"/v1/analyze\",\"body\":{\"url\":\"http://a/\"}}\n\n{\"path\":\"/v1/x?y=1\"}\n{\"path\":\"/p\",\"body\":\"raw\",\"method\":\"put\",\"headers\":{\"x-a\":\"1\"}}\n";
        let reqs = parse(Path::new("w.jsonl"), text).unwrap();
        let seen: Vec<(String, String)> = reqs
            .iter()
            .map(|r| (r.method().to_string(), r.uri().to_string()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("POST".into(), "/v1/analyze".into()),
                ("GET".into(), "/v1/x?y=1".into()),
                ("PUT".into(), "/p".into())
            ]
        );
        assert_eq!(reqs[2].headers()["x-a"], "1");
        let err = parse(Path::new("w.jsonl"), "{\"path\":\"x\"}\n{}\nnot json\n").unwrap_err();
        let WarmError::Lines(lines) = err else {
            panic!("line errors")
        };
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("w.jsonl:1: `path` must start"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("w.jsonl:2: missing field `path`"),
            "{lines:?}"
        );
        assert!(lines[2].starts_with("w.jsonl:3: "), "{lines:?}");
    }
}
