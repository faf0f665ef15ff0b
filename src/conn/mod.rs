//! Client connection limits shared by every listener: timeouts, a connection cap, the head clock.
//!
//! - `clock` — [`Timed`], a stream wrapper that bounds the *total* time to
//!   receive a request head and the idle time between keep-alive requests;
//! - `http` — [`serve`]: an axum router on hyper HTTP/1 with these limits
//!   (the worker's and the admin API's servers).
//!
//! The traffic listener (Pingora) uses the same pieces from
//! `proxy::listener`. Nothing here knows Pingora.

mod clock;
mod http;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use clock::{ConnClock, Timed};
pub use http::serve;

/// Time to receive a whole request head, from accept (or from the first byte of
/// a keep-alive request). nginx's `client_header_timeout` is 60 s and hyper's
/// header timeout 30 s; a slow-header (Slowloris) client holds a socket this long.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait between two reads of a request body: nginx's `client_body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a keep-alive connection may sit idle between requests: nginx's
/// `keepalive_timeout` is 75 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Most client connections open at once: above the 10,000 concurrent keep-alive
/// connections we serve without errors, below the usual 65,536 open-file limit
/// (a proxied connection costs two descriptors: client and backend).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Limits on one listener's client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Total time to receive a request head; the connection is closed past it.
    pub head_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Longest idle wait for the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Most connections open at once; more are refused and counted.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The connection cap of one listener: a permit per open connection.
#[derive(Debug, Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    /// `listener` label of `gantry_connections_refused_total`.
    listener: &'static str,
}

impl Gate {
    /// A gate admitting `max` connections at once (at least one).
    pub fn new(max: usize, listener: &'static str) -> Gate {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        // The series exists from the start, at 0: dashboards and alerts see it.
        crate::metrics::CONNECTIONS_REFUSED
            .with_label_values(&[listener])
            .inc_by(0);
        Gate {
            permits: Arc::new(Semaphore::new(max)),
            listener,
        }
    }

    /// A permit for one more connection, held while it is open; `None` (and
    /// the refusal counted) when the listener is full.
    pub fn enter(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            crate::metrics::CONNECTIONS_REFUSED
                .with_label_values(&[self.listener])
                .inc();
        }
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_gate_refuses_and_counts_and_a_closed_connection_frees_its_place() {
        let gate = Gate::new(2, "test");
        let refused = || {
            crate::metrics::CONNECTIONS_REFUSED
                .with_label_values(&["test"])
                .get()
        };
        let before = refused();
        let a = gate.enter().expect("first");
        let _b = gate.enter().expect("second");
        assert!(gate.enter().is_none(), "third is over the cap");
        assert_eq!(refused(), before + 1);
        drop(a);
        assert!(
            gate.enter().is_some(),
            "a closed connection frees its place"
        );
    }
}
