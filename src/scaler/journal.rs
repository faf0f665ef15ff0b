//! The last decisions of every pool in this process, and how its replica
//! starts are going, for `GET /admin/scaler` and `gantry status`.
//!
//! Process-wide like the metrics registry. Repeats of the same decision
//! (same counts, same reason) fold into one entry with a count, so a steady
//! pool does not push its last real change out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex};

use serde::{Deserialize, Serialize};

/// Entries kept per pool.
const KEEP: usize = 20;

/// One decision (or a run of identical ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Pool.
    pub pool: String,
    /// Milliseconds since the Unix epoch of the latest repeat.
    pub at_unix_ms: u64,
    /// Replicas before.
    pub from: u32,
    /// Replicas wanted.
    pub to: u32,
    /// Ready replicas when decided.
    pub ready: u32,
    /// `up`, `down` or `none`.
    pub direction: String,
    /// Reason label.
    pub reason: String,
    /// The logged explanation.
    pub message: String,
    /// How many evaluations in a row came out like this.
    pub repeats: u32,
}

/// How a pool's replica starts are going: a crash-looping worker shows here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Starts {
    /// Failed starts since a replica last stayed ready; above 0 the pool is failing.
    pub failures_in_a_row: u32,
    /// Failed starts since this process started.
    pub failures_total: u64,
    /// Why the last start failed (the worker's exit status and last words).
    pub last_error: Option<String>,
    /// While backing off: when the next start may be tried (Unix ms).
    pub retry_at_unix_ms: Option<u64>,
}

/// What `GET /admin/scaler` shows of one pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolJournal {
    /// Recent decisions, oldest first.
    pub decisions: Vec<Entry>,
    /// Replica starts.
    pub starts: Starts,
}

#[derive(Default)]
struct Kept {
    decisions: VecDeque<Entry>,
    starts: Starts,
}

/// One entry per pool with a scaling loop (pools come from the proxy config).
static JOURNAL: LazyLock<Mutex<BTreeMap<String, Kept>>> = LazyLock::new(Default::default);

fn journal() -> std::sync::MutexGuard<'static, BTreeMap<String, Kept>> {
    JOURNAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records how `pool`'s starts are going.
pub fn set_starts(pool: &str, starts: Starts) {
    journal().entry(pool.to_string()).or_default().starts = starts;
}

/// Records a decision.
pub fn record(entry: Entry) {
    let mut j = journal();
    let list = &mut j.entry(entry.pool.clone()).or_default().decisions;
    if let Some(last) = list.back_mut() {
        let same = (last.from, last.to, &last.reason) == (entry.from, entry.to, &entry.reason);
        if same {
            last.repeats += 1;
            last.at_unix_ms = entry.at_unix_ms;
            last.message = entry.message;
            last.ready = entry.ready;
            return;
        }
    }
    list.push_back(entry);
    while list.len() > KEEP {
        list.pop_front();
    }
}

/// Every pool's recent decisions (oldest first) and starts.
pub fn snapshot() -> BTreeMap<String, PoolJournal> {
    journal()
        .iter()
        .map(|(k, v)| {
            let decisions = v.decisions.iter().cloned().collect();
            let starts = v.starts.clone();
            (k.clone(), PoolJournal { decisions, starts })
        })
        .collect()
}
