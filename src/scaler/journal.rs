//! The scaler's journal: each pool's last decisions and how its replica starts
//! are going, for `GET /admin/scaler` and `gantry status`.
//!
//! A value owned by the scaler and shared with whoever serves it (the proxy's
//! admin listener through [`ScalerView`], or `gantry scaler --listen`).
//! Repeats of the same decision (same counts, same reason) fold into one
//! entry with a count, so a steady pool does not push its last real change
//! out. One entry per pool with a scaling loop, [`KEEP`] decisions each.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::admin::{
    Decision, Leadership, Policies, PoolJournal, ScalerJournal, ScalerView, Starts,
};

/// Decisions kept per pool.
pub const KEEP: usize = 20;

/// Policy errors kept from one read of the directory: enough to point at the file.
pub const KEEP_ERRORS: usize = 10;

#[derive(Debug, Default)]
struct Kept {
    decisions: VecDeque<Decision>,
    starts: Starts,
    leader: Option<Leadership>,
}

/// The journal of every pool of one scaler; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    pools: Arc<Mutex<BTreeMap<String, Kept>>>,
    policies: Arc<Mutex<Policies>>,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Journal {
        Journal::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Kept>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records how `pool`'s starts are going.
    pub fn set_starts(&self, pool: &str, starts: Starts) {
        self.lock().entry(pool.to_string()).or_default().starts = starts;
    }

    /// Records who leads, as `pool`'s loop last saw it (`None`: no lease).
    pub fn set_leader(&self, pool: &str, leader: Option<Leadership>) {
        self.lock().entry(pool.to_string()).or_default().leader = leader;
    }

    /// Records the policy `pool` now runs under.
    pub fn set_policy(&self, pool: &str, view: crate::admin::PolicyView) {
        let mut p = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        p.in_force.insert(pool.to_string(), view);
    }

    /// Records a read of the policy directory: its errors (none clears the last rejection).
    pub fn set_policy_errors(&self, at_unix_ms: u64, errors: &[String]) {
        let mut p = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        p.rejected = (!errors.is_empty()).then(|| crate::admin::RejectedEdit {
            at_unix_ms,
            errors: errors.iter().take(KEEP_ERRORS).cloned().collect(),
        });
    }

    /// Records a decision.
    pub fn record(&self, entry: Decision) {
        let mut j = self.lock();
        let list = &mut j.entry(entry.pool.clone()).or_default().decisions;
        if let Some(last) = list.back_mut() {
            let same = (last.from, last.to, &last.reason) == (entry.from, entry.to, &entry.reason);
            if same {
                last.repeats += 1;
                last.at_unix_ms = entry.at_unix_ms;
                last.message = entry.message;
                last.ready = entry.ready;
                last.warm = entry.warm;
                return;
            }
        }
        list.push_back(entry);
        while list.len() > KEEP {
            list.pop_front();
        }
    }

    /// Every pool's recent decisions (oldest first) and starts.
    pub fn snapshot(&self) -> ScalerJournal {
        self.lock()
            .iter()
            .map(|(k, v)| {
                let decisions = v.decisions.iter().cloned().collect();
                let starts = v.starts.clone();
                let leader = v.leader.clone();
                let j = PoolJournal {
                    decisions,
                    starts,
                    leader,
                };
                (k.clone(), j)
            })
            .collect()
    }
}

/// How the status page shows `p`: its bounds and each rule in one phrase.
pub fn policy_view(p: &super::policy::Policy) -> crate::admin::PolicyView {
    use super::policy::Rule;
    let rules = p
        .metrics
        .iter()
        .map(|m| {
            let name = m.kind.as_str();
            match m.rule {
                Rule::Target { target, .. } => format!("{name} target {target}"),
                Rule::Threshold {
                    up_above,
                    down_below,
                    step,
                } => format!("{name} +{step} above {up_above}, -{step} below {down_below}"),
            }
        })
        .collect();
    crate::admin::PolicyView {
        file: p.file.display().to_string(),
        min: p.min,
        max: p.max,
        rules,
    }
}

impl ScalerView for Journal {
    fn journal(&self) -> ScalerJournal {
        self.snapshot()
    }

    fn policies(&self) -> Policies {
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(to: u32, reason: &str) -> Decision {
        Decision {
            pool: "p".into(),
            at_unix_ms: 0,
            from: 1,
            to,
            ready: 1,
            direction: "up".into(),
            reason: reason.into(),
            message: String::new(),
            repeats: 1,
            warm: 0,
        }
    }

    #[test]
    fn repeats_fold_and_the_list_is_bounded() {
        let j = Journal::new();
        j.record(decision(2, "a"));
        j.record(decision(2, "a"));
        assert_eq!(j.snapshot()["p"].decisions.len(), 1);
        assert_eq!(j.snapshot()["p"].decisions[0].repeats, 2);
        for i in 0..100 {
            j.record(decision(i, "b"));
        }
        assert_eq!(j.snapshot()["p"].decisions.len(), KEEP);
    }
}
