//! One scaler in charge: a lease in Redis that the scaler processes of a deployment compete for.
//!
//! With `scaler.lease`, every scaler process of a deployment (`gantry up` or
//! `gantry scaler`) tries to hold the key `gantry:scaler-lease:<deployment>`:
//! `SET key <me> NX PX ttl` takes it, a compare-and-`PEXPIRE` script renews
//! it every third of the ttl, a compare-and-`DEL` script releases it on
//! shutdown. Only the holder's loops act (decide, start, stop); the others
//! stand by (their loops only mirror the runtime into their own proxy's
//! pool) and try again every [`STANDBY_RETRY`] (or third of the
//! ttl, if shorter), so they take over within that of a leader that stops,
//! and within the ttl of one that dies without releasing.
//!
//! **Invariant:** a process acts only while its own clock says the lease is
//! still its: from a confirmed take or renewal it counts two thirds of the
//! ttl, measured from *before* the command was sent, so a leader cut off from
//! Redis stops acting before the key can expire and another take it
//! ([`Leader::leading`] reads that deadline, not a flag a stuck task might
//! fail to clear).

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::LeaseConfig;
use crate::admin::Leadership;

/// How often a standby tries to take the lease (at most: a third of the ttl if shorter).
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// Longest a stopping scaler waits for its lease to be released.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Renews the lease only if this process still holds it.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Releases the lease only if this process still holds it.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) else return 0 end";

/// Whether this process may act now: a deadline, not a flag.
#[derive(Debug, Clone)]
pub struct Leader {
    until: watch::Receiver<Option<Instant>>,
    view: watch::Receiver<Leadership>,
    /// Turns true once the lease task has stopped (and released what it held).
    done: watch::Receiver<bool>,
}

impl Leader {
    /// Always in charge: no lease configured (one scaler per deployment).
    pub fn alone() -> Leader {
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        Leader {
            until: watch::channel(Some(far)).1,
            view: watch::channel(Leadership {
                leading: true,
                ..Leadership::default()
            })
            .1,
            done: watch::channel(true).1,
        }
    }

    /// Never in charge: another process holds the lease (for tests of the standby).
    pub fn standby() -> Leader {
        Leader {
            until: watch::channel(None).1,
            view: watch::channel(Leadership {
                me: "standby".into(),
                leading: false,
                leader: Some("elsewhere".into()),
            })
            .1,
            done: watch::channel(true).1,
        }
    }

    /// Waits (a few seconds at most) until the lease is released after
    /// shutdown, so the process does not exit with the key still held.
    pub async fn released(&self) {
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(RELEASE_WAIT, done.wait_for(|d| *d)).await;
    }

    /// Whether this process holds the lease now.
    pub fn leading(&self) -> bool {
        self.until.borrow().is_some_and(|u| Instant::now() < u)
    }

    /// Who leads, for people to read; `None` without a lease.
    pub fn view(&self) -> Option<Leadership> {
        let v = self.view.borrow().clone();
        (!v.me.is_empty()).then_some(v)
    }
}

/// Errors connecting to the lease's Redis.
#[derive(Debug, thiserror::Error)]
#[error("scaler lease: {0}")]
pub struct LeaseError(String);

/// The lease key and this process's claim on it.
pub struct Lease {
    client: Client,
    key: String,
    me: String,
    ttl: Duration,
}

impl Lease {
    /// A lease on `gantry:scaler-lease:<deployment>` through `config.redis`;
    /// connects in the background (a Redis down at start is retried).
    pub fn connect(config: &LeaseConfig, deployment: &str) -> Result<Lease, LeaseError> {
        let redis = Config::from_url(&config.redis).map_err(|e| LeaseError(e.to_string()))?;
        let client = Builder::from_config(redis)
            .with_performance_config(|p| {
                p.default_command_timeout = config.ttl / 3;
            })
            .with_connection_config(|c| {
                c.connection_timeout = config.ttl / 3;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(|e| LeaseError(e.to_string()))?;
        // Connects in a task of its own (and reconnects per the policy).
        drop(client.connect());
        Ok(Lease {
            client,
            key: format!("gantry:scaler-lease:{deployment}"),
            me: holder_id(),
            ttl: config.ttl,
        })
    }

    /// Takes the lease if it is free (`leading` false), or renews it;
    /// true when this process holds it for another ttl.
    async fn claim(&self, leading: bool) -> Result<bool, Error> {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        if leading {
            let renewed: i64 = self
                .client
                .eval(
                    RENEW,
                    vec![self.key.as_str()],
                    vec![self.me.clone(), ttl_ms.to_string()],
                )
                .await?;
            return Ok(renewed == 1);
        }
        let set: Option<String> = self
            .client
            .set(
                &self.key,
                self.me.as_str(),
                Some(Expiration::PX(ttl_ms)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some())
    }

    async fn holder(&self) -> Option<String> {
        self.client.get(&self.key).await.ok().flatten()
    }

    async fn release(&self) {
        let released: Result<i64, Error> = self
            .client
            .eval(RELEASE, vec![self.key.as_str()], vec![self.me.clone()])
            .await;
        match released {
            Ok(1) => tracing::info!(key = %self.key, "Scaler lease released"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "Cannot release the scaler lease; it expires on its own")
            }
        }
    }

    /// Competes for the lease until `shutdown`, then releases it if held.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> Leader {
        let (until_tx, until) = watch::channel(None);
        let (done_tx, done) = watch::channel(false);
        let (view_tx, view) = watch::channel(Leadership {
            me: self.me.clone(),
            leading: false,
            leader: None,
        });
        let lease = Arc::new(self);
        tokio::spawn(async move {
            let every = lease.ttl / 3;
            // Acting stops a third of the ttl before the key could expire.
            let hold = lease.ttl - every;
            let mut deadline: Option<Instant> = None;
            // Redis failures are logged once until it answers again.
            let mut failing = false;
            // The role last logged: the first round logs it too.
            let mut said: Option<bool> = None;
            tracing::info!(key = %lease.key, me = %lease.me, ttl = ?lease.ttl, "Competing for the scaler lease");
            loop {
                let sent = Instant::now();
                let leading = deadline.is_some_and(|d| sent < d);
                let answer = match tokio::time::timeout(every, lease.claim(leading)).await {
                    Ok(Ok(held)) => Ok(held),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {every:?}")),
                };
                match answer {
                    Ok(held) => {
                        deadline = held.then_some(sent + hold);
                        failing = false;
                    }
                    Err(e) if !failing => {
                        tracing::warn!(key = %lease.key, error = %e, "Scaler lease: Redis is not answering; acting stops when the lease runs out");
                        failing = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "Scaler lease: Redis is not answering"),
                }
                until_tx.send_replace(deadline);
                let now_leading = deadline.is_some_and(|d| Instant::now() < d);
                let leader = if now_leading {
                    Some(lease.me.clone())
                } else {
                    lease.holder().await
                };
                if said != Some(now_leading) {
                    said = Some(now_leading);
                    if now_leading {
                        tracing::info!(me = %lease.me, "Leading: this scaler acts");
                    } else {
                        tracing::info!(me = %lease.me, leader = ?leader, "Standing by: another scaler leads (or Redis is unreachable)");
                    }
                }
                view_tx.send_replace(Leadership {
                    me: lease.me.clone(),
                    leading: now_leading,
                    leader,
                });
                let pause = if now_leading {
                    every
                } else {
                    every.min(STANDBY_RETRY)
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(sent + pause) => {}
                    _ = crate::proxy::tasks::stopping(&mut shutdown) => break,
                }
            }
            until_tx.send_replace(None);
            if deadline.is_some() {
                lease.release().await;
            }
            done_tx.send_replace(true);
        });
        Leader { until, view, done }
    }
}

/// `<host>-<pid>-<8 hex>`: unique per process, readable in `gantry status`.
fn holder_id() -> String {
    let host = sysinfo::System::host_name().unwrap_or_else(|| "gantry".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
