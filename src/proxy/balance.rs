//! Backend selection: round robin, least connections, smooth weighted round robin, P2C.
//!
//! Each function picks from a slice of eligible candidates and never looks at
//! health itself; the pool filters first. Per-backend counters (in-flight,
//! smooth-weight state) live on [`Backend`], not in a selector that is rebuilt
//! when the backend set changes, so a scale event never resets them.
//!
//! pingora-load-balancing's selectors are not used: its weighted round robin
//! repeats a backend `weight` times in a row, it has no least-connections, and
//! its selector is rebuilt (counters lost) on every discovery update.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::Rng;

use super::pool::Backend;
use crate::config::Policy;

/// State shared by successive picks of one pool.
#[derive(Debug, Default)]
pub struct Selector {
    /// Round-robin cursor; also breaks least-connections ties.
    cursor: std::sync::atomic::AtomicUsize,
    /// Serializes smooth-weighted updates (they touch every candidate).
    weighted: std::sync::Mutex<()>,
}

impl Selector {
    /// Picks one candidate by `policy`; `None` only when `candidates` is empty.
    pub fn pick(&self, policy: Policy, candidates: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        if candidates.is_empty() {
            return None;
        }
        let i = match policy {
            Policy::RoundRobin => self.next_cursor() % candidates.len(),
            Policy::LeastConnections => self.least_connections(candidates),
            Policy::Weighted => self.smooth_weighted(candidates),
            Policy::P2c => p2c(candidates, &mut rand::rng()),
        };
        Some(candidates[i].clone())
    }

    fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }

    /// Fewest in-flight; among equals, rotate so idle backends share work.
    fn least_connections(&self, c: &[Arc<Backend>]) -> usize {
        let start = self.next_cursor() % c.len();
        (0..c.len())
            .map(|k| (start + k) % c.len())
            .min_by_key(|&i| c[i].inflight())
            .unwrap_or(0)
    }

    /// nginx's smooth weighted round robin: add each weight to its current
    /// value, pick the largest, subtract the total from the pick.
    fn smooth_weighted(&self, c: &[Arc<Backend>]) -> usize {
        let _guard = self.weighted.lock().unwrap_or_else(|e| e.into_inner());
        let total: i64 = c.iter().map(|b| i64::from(b.weight)).sum();
        let mut best = 0;
        let mut best_value = i64::MIN;
        for (i, b) in c.iter().enumerate() {
            let v = b
                .swrr_current
                .fetch_add(i64::from(b.weight), Ordering::Relaxed)
                + i64::from(b.weight);
            if v > best_value {
                best = i;
                best_value = v;
            }
        }
        c[best].swrr_current.fetch_sub(total, Ordering::Relaxed);
        best
    }
}

/// Power of two choices: two distinct random candidates, the less loaded wins.
fn p2c(c: &[Arc<Backend>], rng: &mut impl Rng) -> usize {
    if c.len() == 1 {
        return 0;
    }
    let a = rng.random_range(0..c.len());
    let mut b = rng.random_range(0..c.len() - 1);
    if b >= a {
        b += 1;
    }
    if c[b].inflight() < c[a].inflight() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Arc::new(Backend::new(
                    ([127, 0, 0, 1], 1000 + i as u16).into(),
                    w,
                    true,
                ))
            })
            .collect()
    }

    fn picks(policy: Policy, c: &[Arc<Backend>], n: usize) -> String {
        let s = Selector::default();
        (0..n)
            .map(|_| {
                let b = s.pick(policy, c).unwrap();
                (b'a' + (b.addr.port() - 1000) as u8) as char
            })
            .collect()
    }

    #[test]
    fn round_robin_alternates_exactly() {
        assert_eq!(
            picks(Policy::RoundRobin, &backends(&[1, 1, 1]), 7),
            "abcabca"
        );
    }

    #[test]
    fn smooth_weighted_interleaves() {
        // nginx's documented sequence for 5:1:1.
        assert_eq!(picks(Policy::Weighted, &backends(&[5, 1, 1]), 7), "aabacaa");
        assert_eq!(picks(Policy::Weighted, &backends(&[2, 1]), 6), "abaaba");
    }

    #[test]
    fn least_connections_prefers_idle_and_rotates_ties() {
        let c = backends(&[1, 1, 1]);
        c[0].inflight.store(3, Ordering::Relaxed);
        let p = picks(Policy::LeastConnections, &c, 4);
        assert!(!p.contains('a'), "{p}");
        assert!(p.contains('b') && p.contains('c'), "{p}");
    }

    #[test]
    fn p2c_never_picks_the_busiest_of_two() {
        let c = backends(&[1, 1]);
        c[1].inflight.store(5, Ordering::Relaxed);
        assert_eq!(picks(Policy::P2c, &c, 50), "a".repeat(50));
    }

    #[test]
    fn empty_pool_picks_nothing() {
        assert!(Selector::default().pick(Policy::P2c, &[]).is_none());
    }
}
