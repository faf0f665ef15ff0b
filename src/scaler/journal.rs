//! The last decisions of every pool in this process, for `GET /admin/scaler` and `gantry status`.
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

static JOURNAL: LazyLock<Mutex<BTreeMap<String, VecDeque<Entry>>>> =
    LazyLock::new(Default::default);

/// Records a decision.
pub fn record(entry: Entry) {
    let mut j = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
    let list = j.entry(entry.pool.clone()).or_default();
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

/// Every pool's recent decisions, oldest first.
pub fn snapshot() -> BTreeMap<String, Vec<Entry>> {
    let j = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
    j.iter()
        .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
        .collect()
}
