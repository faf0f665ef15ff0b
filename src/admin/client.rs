//! The admin API client: pools, backends, the scaler's journal, metrics text.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{AddBackend, ErrorBody, ErrorCode, PoolView, PurgeRequest, ScalerJournal};
use crate::client::{encode, HttpClient, HttpError, Reply};

/// Errors of an admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin API could not be reached.
    #[error("admin API: {0}")]
    Http(HttpError),
    /// The admin API refused, with its code when it sent one.
    #[error("admin API answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error's code, from its JSON body.
        code: Option<ErrorCode>,
        /// Its message (or the body's text).
        message: String,
    },
    /// The admin API answered something unexpected.
    #[error("admin API: {0}")]
    Decode(String),
}

impl From<HttpError> for AdminError {
    fn from(e: HttpError) -> AdminError {
        AdminError::Http(e)
    }
}

impl AdminError {
    /// The API's error code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AdminError::Api { code, .. } => *code,
            _ => None,
        }
    }
}

/// A proxy's admin API at a base URL, with an optional bearer token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: HttpClient,
}

impl AdminClient {
    /// A client for `base` (like `http://127.0.0.1:9090`), each call bounded
    /// by 5 s; with no `token`, the one a proxy of this user generated for
    /// that port ([`super::token::read_for`]).
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: HttpClient::new(Duration::from_secs(5)),
        }
    }

    /// `GET /admin/pools`.
    pub async fn pools(&self) -> Result<Vec<PoolView>, AdminError> {
        decode(&self.call(http::Method::GET, "/admin/pools", None).await?)
    }

    /// `GET /admin/scaler`.
    pub async fn scaler(&self) -> Result<ScalerJournal, AdminError> {
        decode(&self.call(http::Method::GET, "/admin/scaler", None).await?)
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> Result<String, AdminError> {
        Ok(self.call(http::Method::GET, "/metrics", None).await?.text())
    }

    /// Adds `addr` to `pool` (an [`ErrorCode::AlreadyInPool`] error if it is there).
    pub async fn add_backend(
        &self,
        pool: &str,
        addr: SocketAddr,
        weight: u32,
    ) -> Result<(), AdminError> {
        let body = AddBackend {
            addr: addr.to_string(),
            weight,
        };
        let body = serde_json::to_value(body).map_err(|e| AdminError::Decode(e.to_string()))?;
        let path = format!("/admin/pools/{}/backends", encode(pool));
        self.call(http::Method::POST, &path, Some(&body)).await?;
        Ok(())
    }

    /// Drains `addr` out of `pool` (an [`ErrorCode::NotInPool`] error if it is not there).
    pub async fn remove_backend(&self, pool: &str, addr: SocketAddr) -> Result<(), AdminError> {
        let path = format!(
            "/admin/pools/{}/backends/{}",
            encode(pool),
            encode(&addr.to_string())
        );
        self.call(http::Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// `POST /admin/cache/purge`: the proxy's report (what each tier removed).
    pub async fn purge(&self, what: &PurgeRequest) -> Result<serde_json::Value, AdminError> {
        let body = serde_json::to_value(what).map_err(|e| AdminError::Decode(e.to_string()))?;
        decode(
            &self
                .call(http::Method::POST, "/admin/cache/purge", Some(&body))
                .await?,
        )
    }

    /// One call; a non-2xx answer becomes [`AdminError::Api`].
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, AdminError> {
        // Without a token of its own, a client uses the one a local proxy
        // generated (looked up each call: the proxy may start later).
        let token = self
            .token
            .clone()
            .or_else(|| super::token::read_for(&self.base));
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let url = format!("{}{path}", self.base);
        let reply = self.http.send(method, &url, body, &headers).await?;
        if reply.ok() {
            return Ok(reply);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&reply.body) {
            Ok(e) => (Some(e.code), e.error),
            Err(_) => (None, reply.text().trim().to_string()),
        };
        Err(AdminError::Api {
            status: reply.status,
            code,
            message,
        })
    }
}

fn decode<T: DeserializeOwned>(reply: &Reply) -> Result<T, AdminError> {
    serde_json::from_slice(&reply.body).map_err(|e| AdminError::Decode(e.to_string()))
}
