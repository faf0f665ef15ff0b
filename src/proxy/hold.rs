//! Holding requests for a pool with no eligible backend while the scaler starts one (scale from zero).
//!
//! Off unless the scaler turns it on: while a pool's first replicas start
//! (also before the listener opens, under `gantry up`), and for a pool whose
//! policy scales to zero. Turning it off releases the requests held.
//! A held request wakes the scaler at once ([`Hold::demanded`]), then waits
//! for an eligible backend, polling every 10 ms, up to the timeout; the queue
//! of held requests is bounded. The scaler never sits on the request path:
//! the request only waits for the pool to change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::pool::Pool;

/// How often a held request looks for an eligible backend.
const POLL: Duration = Duration::from_millis(10);

/// The outcome of holding a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A backend became eligible.
    Ready,
    /// Holding is off for this pool.
    Off,
    /// Too many requests are held already.
    Full,
    /// No backend within the timeout.
    TimedOut,
}

/// Per-pool hold state.
#[derive(Debug, Default)]
pub struct Hold {
    /// Most requests held at once and how long each waits; `None` is off.
    settings: Mutex<Option<(usize, Duration)>>,
    /// Requests held now.
    waiting: AtomicUsize,
    /// Wakes the scaler when a request starts waiting.
    demand: Notify,
}

/// Releases a held slot on drop.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hold {
    /// Turns holding on with a queue bound and a timeout, or off with `None`.
    pub fn set(&self, settings: Option<(usize, Duration)>) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// Requests held now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Resolves when a request starts waiting (or has since the last call).
    pub async fn demanded(&self) {
        self.demand.notified().await
    }

    /// Holds the calling request until `pool` has an eligible backend.
    pub async fn wait(&self, pool: &Pool) -> Held {
        let Some((max, timeout)) = *self.settings.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Held::Off;
        };
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= max {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Held::Full;
        }
        let _slot = Slot(&self.waiting);
        self.demand.notify_one();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pool.has_eligible(Instant::now()) {
                return Held::Ready;
            }
            // Turned off meanwhile (the pool's replicas keep failing): answer now.
            if self
                .settings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
            {
                return Held::Off;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Held::TimedOut;
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }
}
