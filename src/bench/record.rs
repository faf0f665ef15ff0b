//! What the generator records per request: HDR histograms per stage, per-second buckets, errors by kind, `X-Cache` values.
//!
//! Requests record into a few [`Shard`]s (a user or connection always uses
//! the same one) so two runtime threads rarely meet on one lock. A sample
//! goes to the stage its send was due in, and to the second it completed in;
//! seconds are handed to the timeline once every shard is past them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant figures of the per-stage histograms (0.1 % value precision).
pub const STAGE_SIGFIG: u8 = 3;
/// Significant figures of the per-second histograms (1 %: they only draw the timeline).
const SECOND_SIGFIG: u8 = 2;
/// Distinct `X-Cache` values kept; more are counted as [`OTHER_CACHE`] (a target chooses them).
pub const MAX_CACHE_VALUES: usize = 16;
/// Where `X-Cache` values past [`MAX_CACHE_VALUES`] go.
pub const OTHER_CACHE: &str = "OTHER";
/// The longest `X-Cache` value kept as is.
const MAX_CACHE_VALUE_LEN: usize = 32;

/// Why a request did not get a successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// No whole answer within the request timeout.
    Timeout,
    /// The connection failed while sending or reading.
    Transport,
    /// A 4xx status.
    Status4xx,
    /// A 5xx status.
    Status5xx,
    /// Open loop only: due before the run ended, but every connection was busy until then.
    Unsent,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Transport,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
        ErrorKind::Unsent,
    ];

    /// The name used in tables, JSON and charts.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Transport => "transport",
            ErrorKind::Status4xx => "4xx",
            ErrorKind::Status5xx => "5xx",
            ErrorKind::Unsent => "unsent",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts per [`ErrorKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connect failures.
    pub connect: u64,
    /// Timeouts.
    pub timeout: u64,
    /// Failures mid-exchange.
    pub transport: u64,
    /// 4xx answers.
    #[serde(rename = "4xx")]
    pub status_4xx: u64,
    /// 5xx answers.
    #[serde(rename = "5xx")]
    pub status_5xx: u64,
    /// Requests never sent (open loop).
    pub unsent: u64,
}

impl ErrorCounts {
    fn from_array(a: &[u64; 6]) -> ErrorCounts {
        ErrorCounts {
            connect: a[0],
            timeout: a[1],
            transport: a[2],
            status_4xx: a[3],
            status_5xx: a[4],
            unsent: a[5],
        }
    }

    /// The count of one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        match kind {
            ErrorKind::Connect => self.connect,
            ErrorKind::Timeout => self.timeout,
            ErrorKind::Transport => self.transport,
            ErrorKind::Status4xx => self.status_4xx,
            ErrorKind::Status5xx => self.status_5xx,
            ErrorKind::Unsent => self.unsent,
        }
    }

    /// All kinds together.
    pub fn total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

/// The end of one request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The stage the request was due in.
    pub stage: usize,
    /// When it completed, from the start of the run.
    pub done: Duration,
    /// From the intended send time (open loop) or the actual one (closed loop) to the end.
    pub latency: Duration,
    /// `None` for a 2xx/3xx answer.
    pub error: Option<ErrorKind>,
    /// The answer's `X-Cache` header, when it had one.
    pub cache: Option<String>,
    /// Response body bytes read.
    pub bytes: u64,
}

/// Counts and a histogram, for one stage or one second.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every finished request (errors included: a timeout took that long), in µs.
    pub latency: Histogram<u64>,
    /// Requests that ended (answered or failed).
    pub requests: u64,
    /// 2xx/3xx answers.
    pub ok: u64,
    errors: [u64; 6],
    /// `X-Cache` value -> answers carrying it.
    pub cache: BTreeMap<String, u64>,
    /// Response body bytes.
    pub bytes: u64,
}

impl Tally {
    fn new(sigfig: u8) -> Tally {
        Tally {
            latency: Histogram::new(sigfig).expect("sigfig within 0..=5"),
            requests: 0,
            ok: 0,
            errors: [0; 6],
            cache: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// An empty tally with stage precision.
    pub fn stage() -> Tally {
        Tally::new(STAGE_SIGFIG)
    }

    fn record(&mut self, s: &Sample) {
        self.requests += 1;
        self.bytes += s.bytes;
        match s.error {
            None => self.ok += 1,
            Some(kind) => self.errors[kind.index()] += 1,
        }
        // Unsent requests have no latency of their own: the run ended first.
        if s.error != Some(ErrorKind::Unsent) {
            let micros = u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX);
            // `record` grows the (auto-resizing) histogram; `saturating_record` would clamp instead.
            if self.latency.record(micros.max(1)).is_err() {
                self.latency.saturating_record(micros.max(1));
            }
        }
        if let Some(value) = &s.cache {
            *cache_slot(&mut self.cache, value) += 1;
        }
    }

    /// Adds `other` into this tally.
    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.bytes += other.bytes;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        for (value, n) in &other.cache {
            *cache_slot(&mut self.cache, value) += n;
        }
        // Auto-resizing histograms of equal precision always add.
        let _ = self.latency.add(&other.latency);
    }

    /// Counts `n` requests that failed as `kind` without a latency (unsent ones).
    pub fn add_errors(&mut self, kind: ErrorKind, n: u64) {
        self.requests += n;
        self.errors[kind.index()] += n;
    }

    /// Errors by kind.
    pub fn errors(&self) -> ErrorCounts {
        ErrorCounts::from_array(&self.errors)
    }
}

/// The counter for `value`, or [`OTHER_CACHE`]'s once [`MAX_CACHE_VALUES`] are kept.
fn cache_slot<'a>(map: &'a mut BTreeMap<String, u64>, value: &str) -> &'a mut u64 {
    let known = map.contains_key(value);
    let value = if !known && (map.len() >= MAX_CACHE_VALUES || value.len() > MAX_CACHE_VALUE_LEN) {
        OTHER_CACHE
    } else {
        value
    };
    map.entry(value.to_string()).or_insert(0)
}

/// One shard: the stages, and the seconds not yet handed on.
#[derive(Debug)]
struct ShardState {
    stages: Vec<Tally>,
    /// Seconds from `first_second` on.
    seconds: VecDeque<Tally>,
    first_second: u64,
}

/// Where a group of users or connections records.
#[derive(Debug)]
pub struct Shard(Mutex<ShardState>);

impl Shard {
    /// Records one finished request.
    pub fn record(&self, s: &Sample) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stage) = st.stages.get_mut(s.stage) {
            stage.record(s);
        }
        let second = s.done.as_secs();
        // A sample for a second already handed on (a clock read just before a harvest) joins the oldest kept.
        let index = second.saturating_sub(st.first_second) as usize;
        while st.seconds.len() <= index {
            st.seconds.push_back(Tally::new(SECOND_SIGFIG));
        }
        st.seconds[index].record(s);
    }
}

/// Every shard of a run.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Shard>,
}

impl Recorder {
    /// `shards` shards over `stages` stages.
    pub fn new(shards: usize, stages: usize) -> Recorder {
        let shards = (0..shards.max(1))
            .map(|_| {
                Shard(Mutex::new(ShardState {
                    stages: (0..stages).map(|_| Tally::stage()).collect(),
                    seconds: VecDeque::new(),
                    first_second: 0,
                }))
            })
            .collect();
        Recorder { shards }
    }

    /// The shard of user or connection `n`.
    pub fn shard(&self, n: usize) -> &Shard {
        &self.shards[n % self.shards.len()]
    }

    /// Takes every second before `before` out of the shards, merged, oldest first (`u64::MAX`: all).
    pub fn harvest(&self, before: u64) -> Vec<(u64, Tally)> {
        let mut out: BTreeMap<u64, Tally> = BTreeMap::new();
        for shard in &self.shards {
            let mut st = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            // `u64::MAX` (the end of the run) takes what is kept; an earlier second also moves past empty ones.
            let kept = st.first_second + st.seconds.len() as u64;
            let upto = if before == u64::MAX { kept } else { before };
            while st.first_second < upto {
                let second = st.first_second;
                st.first_second += 1;
                let Some(tally) = st.seconds.pop_front() else {
                    continue;
                };
                match out.get_mut(&second) {
                    Some(t) => t.merge(&tally),
                    None => {
                        out.insert(second, tally);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// The stages, merged over shards.
    pub fn stages(&self) -> Vec<Tally> {
        let mut out: Vec<Tally> = Vec::new();
        for shard in &self.shards {
            let st = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            if out.is_empty() {
                out = st.stages.clone();
            } else {
                for (a, b) in out.iter_mut().zip(&st.stages) {
                    a.merge(b);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(done_ms: u64, latency_ms: u64, error: Option<ErrorKind>, cache: &str) -> Sample {
        Sample {
            stage: 0,
            done: Duration::from_millis(done_ms),
            latency: Duration::from_millis(latency_ms),
            error,
            cache: (!cache.is_empty()).then(|| cache.to_string()),
            bytes: 10,
        }
    }

    #[test]
    fn seconds_merge_over_shards_and_are_handed_on_once() {
        let r = Recorder::new(2, 1);
        r.shard(0).record(&sample(100, 5, None, "HIT-L1"));
        r.shard(1)
            .record(&sample(900, 5, Some(ErrorKind::Status5xx), "MISS"));
        r.shard(1).record(&sample(1500, 5, None, ""));
        let first = r.harvest(1);
        assert_eq!(first.len(), 1);
        let (second, t) = &first[0];
        assert_eq!(
            (*second, t.requests, t.ok, t.errors().status_5xx),
            (0, 2, 1, 1)
        );
        assert_eq!(t.cache.get("HIT-L1"), Some(&1));
        assert!(r.harvest(1).is_empty());
        let rest = r.harvest(10);
        assert_eq!(
            rest.iter()
                .map(|(s, t)| (*s, t.requests))
                .collect::<Vec<_>>(),
            [(1, 1)]
        );
        assert_eq!(r.stages()[0].requests, 3);
    }

    #[test]
    fn cache_values_past_the_bound_are_other() {
        let mut t = Tally::stage();
        for i in 0..40 {
            t.record(&sample(0, 1, None, &format!("V{i}")));
        }
        t.record(&sample(0, 1, None, &"x".repeat(200)));
        assert_eq!(t.cache.len(), MAX_CACHE_VALUES + 1);
        assert_eq!(t.cache[OTHER_CACHE], 40 - MAX_CACHE_VALUES as u64 + 1);
    }

    #[test]
    fn unsent_requests_count_but_have_no_latency() {
        let mut t = Tally::stage();
        t.record(&sample(0, 9000, Some(ErrorKind::Unsent), ""));
        assert_eq!((t.requests, t.errors().unsent, t.latency.len()), (1, 1, 0));
    }
}
