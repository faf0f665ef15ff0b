//! Answering a request ourselves: rejections, proxy errors and cache hits all go through [`Answer`].
//!
//! A request phase that may answer returns a [`Phase`]: the request was
//! answered here, or goes on to a backend.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// What a request phase did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Phase {
    /// A response was written: the request is done.
    Answered,
    /// Go on towards a backend.
    Forward,
}

impl Phase {
    /// Pingora's `request_filter` result: `true` when answered.
    pub fn answered(self) -> bool {
        self == Phase::Answered
    }
}

/// A response written by the proxy itself: status, headers, a whole body.
/// `content-length` is set on sending (not on `204`/`304`); a HEAD request gets no body.
pub struct Answer {
    header: ResponseHeader,
    body: Bytes,
}

impl Answer {
    /// `status` with `body` and room for `headers` more headers.
    pub fn new(status: u16, body: Bytes, headers: usize) -> Result<Answer> {
        Ok(Answer {
            header: ResponseHeader::build(status, Some(headers + 2))?,
            body,
        })
    }

    /// `status` with a one-line plain-text reason.
    pub fn text(status: u16, msg: &str) -> Result<Answer> {
        let mut a = Answer::new(status, Bytes::from(format!("{msg}\n")), 1)?;
        a.header
            .insert_header("content-type", "text/plain; charset=utf-8")?;
        Ok(a)
    }

    /// Sets header `name` (replacing one of that name).
    pub fn set(mut self, name: &'static str, value: &str) -> Result<Answer> {
        self.header.insert_header(name, value)?;
        Ok(self)
    }

    /// Adds header `name` (keeping others of that name).
    pub fn append(&mut self, name: String, value: &[u8]) -> Result<()> {
        self.header.append_header(name, value)?;
        Ok(())
    }

    /// Asks the client to close the connection afterwards.
    pub fn close(mut self, session: &mut Session) -> Result<Answer> {
        session.set_keepalive(None);
        self.header.insert_header("connection", "close")?;
        Ok(self)
    }

    /// Writes the answer.
    pub async fn send(mut self, session: &mut Session) -> Result<Phase> {
        if !matches!(self.header.status.as_u16(), 204 | 304) {
            self.header
                .insert_header("content-length", self.body.len().to_string())?;
        }
        let empty = self.body.is_empty() || session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(self.header), empty)
            .await?;
        if !empty {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(Phase::Answered)
    }
}
