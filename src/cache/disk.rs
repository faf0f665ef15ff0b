//! L3: a redb file of zstd-compressed entries, bounded by bytes, surviving restarts.
//!
//! Two tables, both keyed by a sequence number that grows with every store:
//! `entries.2` (seq -> compressed entry) and `meta.2` (seq -> key, dead-at,
//! last access, hits, size). redb's B-tree is copy-on-write, so keying by
//! the cache key (a hash) made each stored entry dirty a page of its own in
//! both tables; with increasing keys a batch appends to the last pages, and
//! evicting the least recently used mostly deletes from the first. A file of
//! the earlier, key-keyed format (`entries`, `meta`) has those tables dropped
//! at open: the cache starts empty once. `meta.2` is loaded into an in-memory
//! index (key -> seq and stats) at open, so a miss costs no read
//! transaction, sizes are summed without I/O, and the least recently used
//! entries can be picked for eviction. Access stats are kept in memory and
//! written with the next write (or [`DiskTier::flush`]), so a read never
//! writes. When the stored bytes pass `max_bytes`, dead entries and then the
//! least recently used go until 90% is left. Every method blocks except
//! [`DiskTier::may_hold`]: async callers use `spawn_blocking`.
//!
//! Commits use `Durability::Eventual`, which redb fsyncs on Linux (it
//! differs from `Immediate` only on macOS), so a process crash or a power
//! cut keeps every committed entry. `Durability::None` (no fsync) was
//! measured on all-miss traffic: no throughput gained within the noise,
//! and entries written just before a `kill -9` were lost, so it is not used;
//! the writer's batches (see `tiered.rs`) keep fsyncs to at most 50 a second.
//!
//! An I/O error (a full or read-only disk) leaves a redb database refusing
//! every later transaction, so the tier closes the file and, at most once a
//! second, tries to open it again (redb repairs it) with the index loaded
//! anew; until then reads and writes fail fast with [`DiskError::Closed`] and
//! requests are served without L3.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::clock::Clock;
use super::config::DiskConfig;
use super::entry::CachedResponse;
use super::key::CacheKey;
use crate::metrics::cache as m;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries.2");
/// (key, dead_at_ms, last_access_ms, hits, size)
const META: TableDefinition<u64, (&str, u64, u64, u64, u64)> = TableDefinition::new("meta.2");
/// The tables of the key-keyed format before `entries.2`: dropped at open.
const OLD_ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const OLD_META: TableDefinition<&str, (u64, u64, u64, u64)> = TableDefinition::new("meta");
/// Page cache redb keeps in memory; L1 is the real memory tier.
const REDB_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Least time between attempts to open the file again after an I/O error.
const REOPEN_EVERY_MS: u64 = 1000;

/// Errors from the disk tier.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file or its directory could not be created or opened.
    #[error("cannot open {path}: {cause}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        cause: Box<redb::Error>,
    },
    /// A read or write failed.
    #[error("{0}")]
    Store(Box<redb::Error>),
    /// A stored value could not be decompressed.
    #[error("corrupt entry: {0}")]
    Corrupt(String),
    /// Closed after an I/O error, until it can be opened again.
    #[error("closed after an I/O error: {0}")]
    Closed(String),
}

impl DiskError {
    fn store(e: impl Into<redb::Error>) -> DiskError {
        DiskError::Store(Box::new(e.into()))
    }

    /// An error of the disk itself: the database must be closed and opened again.
    fn is_io(&self) -> bool {
        let e = match self {
            DiskError::Store(e) => e,
            DiskError::Open { cause, .. } => cause,
            _ => return false,
        };
        matches!(**e, redb::Error::Io(_) | redb::Error::PreviousIo)
    }
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    /// The rows' key in both tables.
    seq: u64,
    dead_at_ms: u64,
    last_access_ms: u64,
    hits: u64,
    size: u64,
}

impl Meta {
    fn row<'k>(&self, key: &'k str) -> (&'k str, u64, u64, u64, u64) {
        (
            key,
            self.dead_at_ms,
            self.last_access_ms,
            self.hits,
            self.size,
        )
    }
}

#[derive(Default)]
struct Index {
    map: HashMap<String, Meta>,
    bytes: u64,
    /// Keys whose access stats changed since the last write.
    dirty: HashSet<String>,
    /// Rows (seqs) no longer in `map`: found dead or unreadable, or purged;
    /// deleted with the next write.
    doomed: HashSet<u64>,
    /// The seq of the next stored entry.
    next_seq: u64,
}

impl Index {
    /// Takes `key` out of the index; its rows stay until a write deletes them.
    fn remove(&mut self, key: &str) -> Option<Meta> {
        self.dirty.remove(key);
        let meta = self.map.remove(key)?;
        self.bytes -= meta.size;
        Some(meta)
    }

    /// Takes `key` out and marks its rows for deletion; whether it was there.
    fn doom(&mut self, key: &str) -> bool {
        match self.remove(key) {
            Some(meta) => self.doomed.insert(meta.seq),
            None => false,
        }
    }
}

/// The disk tier.
pub struct DiskTier {
    /// The open file; `None` once an I/O error closed it (see the module docs).
    db: RwLock<Option<Database>>,
    /// The database file.
    path: PathBuf,
    /// Why the file was closed, for the errors while it is.
    closed_by: Mutex<String>,
    /// Clock time (ms) of the next attempt to open the closed file.
    reopen_at: AtomicU64,
    index: Mutex<Index>,
    /// Serialises write transactions so index changes and commits stay in order.
    writer: Mutex<()>,
    /// Compressed bytes (values plus keys) allowed.
    max_bytes: u64,
    /// Entries allowed.
    max_entries: usize,
    /// Compresses new entries; one context reused (building one per entry
    /// cost more than compressing a small body). Only the writer uses it.
    compressor: Mutex<zstd::bulk::Compressor<'static>>,
    clock: Arc<dyn Clock>,
}

/// What one write transaction does; the index follows it only once committed.
#[derive(Default)]
struct Plan {
    /// New entries, one per key, with their seqs.
    puts: Vec<(String, Vec<u8>, Meta)>,
    metas: Vec<(String, Meta)>,
    /// Evicted (and counted as evictions): key and seq.
    evicted: Vec<(String, u64)>,
    /// Rows to delete: doomed, and the earlier rows of keys in `puts`.
    doomed: Vec<u64>,
}

impl DiskTier {
    /// Opens or creates the file and loads the index, dropping dead entries.
    pub fn open(cfg: &DiskConfig, clock: Arc<dyn Clock>) -> Result<DiskTier, DiskError> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DiskError::Open {
                path: cfg.path.clone(),
                cause: Box::new(e.into()),
            })?;
        }
        let tier = DiskTier {
            db: RwLock::new(None),
            path: cfg.path.clone(),
            closed_by: Mutex::new(String::new()),
            reopen_at: AtomicU64::new(0),
            index: Mutex::new(Index::default()),
            writer: Mutex::new(()),
            max_bytes: cfg.max_bytes,
            max_entries: cfg.max_entries,
            compressor: Mutex::new(zstd::bulk::Compressor::new(cfg.zstd_level).map_err(|e| {
                DiskError::Open {
                    path: cfg.path.clone(),
                    cause: Box::new(e.into()),
                }
            })?),
            clock,
        };
        let _w = tier.writer.lock().unwrap_or_else(|e| e.into_inner());
        tier.reopen()?;
        drop(_w);
        tier.write(Vec::new())?;
        Ok(tier)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the open database; fails fast while it is closed.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, DiskError>,
    ) -> Result<T, DiskError> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        match db.as_ref() {
            Some(db) => f(db),
            None => Err(DiskError::Closed(
                self.closed_by
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            )),
        }
    }

    /// Closes the file after an I/O error `e` (see the module docs).
    fn close_on_io(&self, e: &DiskError) {
        if !e.is_io() {
            return;
        }
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        if db.take().is_some() {
            *self.closed_by.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
            self.reopen_at
                .store(self.clock.now_ms() + REOPEN_EVERY_MS, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), error = %e, "Disk cache closed after an I/O error: serving without it until it opens again");
        }
    }

    /// Opens the file when it is closed and an attempt is due; the writer lock is held.
    fn ensure_open(&self) -> Result<(), DiskError> {
        if self.db.read().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        if now < self.reopen_at.load(Ordering::Relaxed) {
            return self.with_db(|_| Ok(()));
        }
        self.reopen_at
            .store(now + REOPEN_EVERY_MS, Ordering::Relaxed);
        if let Err(e) = self.reopen() {
            // Said when the reason changes, not once a second.
            let mut why = self.closed_by.lock().unwrap_or_else(|e| e.into_inner());
            let now = e.to_string();
            if *why != now {
                tracing::warn!(path = %self.path.display(), error = %now, "Disk cache still closed: cannot open it again");
                *why = now;
            }
            return Err(DiskError::Closed(why.clone()));
        }
        tracing::info!(path = %self.path.display(), entries = self.entries(), "Disk cache open again");
        Ok(())
    }

    /// Opens the file (repairing it when needed) and loads the index from it.
    fn reopen(&self) -> Result<(), DiskError> {
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(&self.path)
            .map_err(|e| DiskError::Open {
                path: self.path.clone(),
                cause: Box::new(e.into()),
            })?;
        let index = load(&db, self.clock.now_ms())?;
        *self.lock() = index;
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
        self.publish();
        Ok(())
    }

    /// The entry under `key`, fresh or stale; `None` when absent or dead.
    pub fn get(&self, key: &str) -> Result<Option<CachedResponse>, DiskError> {
        let now = self.clock.now_ms();
        let seq = {
            let mut index = self.lock();
            match index.map.get(key) {
                None => return Ok(None),
                Some(meta) if meta.dead_at_ms <= now => {
                    index.doom(key);
                    return Ok(None);
                }
                Some(meta) => meta.seq,
            }
        };
        let value = self.with_db(|db| {
            let txn = db.begin_read().map_err(DiskError::store)?;
            let table = txn.open_table(ENTRIES).map_err(DiskError::store)?;
            let value = table.get(seq).map_err(DiskError::store)?;
            Ok(value.map(|v| v.value().to_vec()))
        });
        let value = value.inspect_err(|e| self.close_on_io(e))?;
        let Some(value) = value else {
            return Ok(None);
        };
        let entry = zstd::decode_all(&value[..])
            .map_err(|e| DiskError::Corrupt(e.to_string()))
            .and_then(|raw| {
                CachedResponse::decode(&raw).map_err(|e| DiskError::Corrupt(e.to_string()))
            });
        let mut index = self.lock();
        match entry {
            Ok(entry) => {
                if let Some(meta) = index.map.get_mut(key).filter(|m| m.seq == seq) {
                    meta.hits += 1;
                    meta.last_access_ms = now;
                    index.dirty.insert(key.to_string());
                }
                Ok(Some(entry))
            }
            Err(e) => {
                if index.map.get(key).is_some_and(|m| m.seq == seq) {
                    index.doom(key);
                }
                Err(e)
            }
        }
    }

    /// Stores entries in one transaction, evicting past the byte bound.
    pub fn put_batch(&self, items: &[(CacheKey, Arc<CachedResponse>)]) -> Result<(), DiskError> {
        let now = self.clock.now_ms();
        let mut puts = Vec::with_capacity(items.len());
        let mut compressor = self.compressor.lock().unwrap_or_else(|e| e.into_inner());
        for (key, entry) in items {
            if entry.dead_at_ms() <= now {
                continue;
            }
            let value = compressor
                .compress(&entry.encode())
                .map_err(|e| DiskError::Corrupt(e.to_string()))?;
            let meta = Meta {
                dead_at_ms: entry.dead_at_ms(),
                last_access_ms: now,
                hits: 0,
                size: (value.len() + key.as_str().len()) as u64,
                seq: 0, // given by `plan`
            };
            puts.push((key.as_str().to_string(), value, meta));
        }
        drop(compressor);
        self.write(puts)
    }

    /// Whether `key` may be found by [`get`](Self::get): false only when the
    /// index says it is absent or dead. Never waits: while the writer holds
    /// the index (planning an eviction scans it) the answer is true, and the
    /// caller asks `get` on a blocking thread. So an async caller can skip
    /// the hand-off on a miss without stalling its thread.
    pub fn may_hold(&self, key: &str) -> bool {
        let index = match self.index.try_lock() {
            Ok(index) => index,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return true,
        };
        let now = self.clock.now_ms();
        index.map.get(key).is_some_and(|m| m.dead_at_ms > now)
    }

    fn write(&self, puts: Vec<(String, Vec<u8>, Meta)>) -> Result<(), DiskError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure_open()?;
        let plan = self.plan(puts);
        if plan.puts.is_empty()
            && plan.metas.is_empty()
            && plan.evicted.is_empty()
            && plan.doomed.is_empty()
        {
            return Ok(());
        }
        self.with_db(|db| commit(db, &plan))
            .inspect_err(|e| self.close_on_io(e))?;
        self.apply(plan);
        self.publish();
        Ok(())
    }

    /// Decides what to write and evict for `puts`, reading the index only.
    fn plan(&self, mut puts: Vec<(String, Vec<u8>, Meta)>) -> Plan {
        let now = self.clock.now_ms();
        let mut index = self.lock();
        // One row per key: the last put of a key wins, and each gets the next seq.
        let mut fresh = HashSet::new();
        puts.reverse();
        puts.retain(|(k, ..)| fresh.insert(k.clone()));
        puts.reverse();
        for (_, _, meta) in &mut puts {
            meta.seq = index.next_seq;
            index.next_seq += 1;
        }
        // The rows the puts replace.
        let earlier: Vec<Meta> = fresh
            .iter()
            .filter_map(|k| index.map.get(k).copied())
            .collect();
        let replaced: u64 = earlier.iter().map(|m| m.size).sum();
        let added: u64 = puts.iter().map(|(.., m)| m.size).sum();
        let bytes = (index.bytes - replaced).saturating_add(added);
        let entries = index.map.len() + fresh.len() - earlier.len();
        let mut plan = Plan::default();
        if bytes > self.max_bytes || entries > self.max_entries {
            let target = Target {
                bytes: self.max_bytes / 10 * 9,
                entries: self.max_entries / 10 * 9,
            };
            plan.evicted = victims(&index, &fresh, bytes, entries, target, now);
        }
        plan.doomed = index.doomed.iter().copied().collect();
        plan.doomed.extend(earlier.iter().map(|m| m.seq));
        plan.metas = index
            .dirty
            .iter()
            .filter(|k| !fresh.contains(k.as_str()))
            .filter_map(|k| index.map.get(k).map(|m| (k.clone(), *m)))
            .collect();
        drop(index);
        plan.puts = puts;
        plan
    }

    /// Makes the index say what the committed `plan` wrote.
    fn apply(&self, plan: Plan) {
        let mut index = self.lock();
        for (k, _) in &plan.evicted {
            index.remove(k);
        }
        for seq in &plan.doomed {
            index.doomed.remove(seq);
        }
        for (k, _) in &plan.metas {
            index.dirty.remove(k);
        }
        for (k, _, meta) in plan.puts {
            index.remove(&k);
            index.bytes += meta.size;
            index.map.insert(k, meta);
        }
        m::EVICTIONS
            .with_label_values(&["l3"])
            .inc_by(plan.evicted.len() as u64);
    }

    fn publish(&self) {
        m::ENTRIES
            .with_label_values(&["l3"])
            .set(self.entries() as i64);
        m::BYTES.with_label_values(&["l3"]).set(self.bytes() as i64);
    }

    /// Writes pending access stats and deletions.
    pub fn flush(&self) -> Result<(), DiskError> {
        self.write(Vec::new())
    }

    /// Deletes one key; returns how many were deleted.
    pub fn remove(&self, key: &str) -> Result<u64, DiskError> {
        self.remove_keys(&[key])
    }

    /// Deletes these keys (looked up, not scanned for), in one write.
    pub fn remove_keys<K: AsRef<str>>(&self, keys: &[K]) -> Result<u64, DiskError> {
        let n = {
            let mut index = self.lock();
            let mut n = 0;
            for k in keys.iter().map(AsRef::as_ref) {
                if index.doom(k) {
                    n += 1;
                }
            }
            n
        };
        self.flush()?;
        Ok(n)
    }

    /// Deletes every key starting with `prefix`.
    pub fn remove_prefix(&self, prefix: &str) -> Result<u64, DiskError> {
        self.remove_where(|k| k.starts_with(prefix))
    }

    fn remove_where(&self, doomed: impl Fn(&str) -> bool) -> Result<u64, DiskError> {
        let n = {
            let mut index = self.lock();
            let keys: Vec<String> = index.map.keys().filter(|k| doomed(k)).cloned().collect();
            for k in &keys {
                index.doom(k);
            }
            keys.len() as u64
        };
        self.flush()?;
        Ok(n)
    }

    /// The `n` most-hit live entries, most hit first (for warming L1).
    pub fn hottest(&self, n: usize) -> Result<Vec<(CacheKey, CachedResponse)>, DiskError> {
        let now = self.clock.now_ms();
        let keys: Vec<(u64, u64, String, u64)> = {
            let index = self.lock();
            let mut live: Vec<(u64, u64, &str, u64)> = index
                .map
                .iter()
                .filter(|(_, m)| m.dead_at_ms > now)
                .map(|(k, m)| (m.hits, m.last_access_ms, k.as_str(), m.seq))
                .collect();
            // Only the `n` hottest are ordered and copied.
            if n < live.len() {
                live.select_nth_unstable_by(n, |a, b| b.cmp(a));
                live.truncate(n);
            }
            live.sort_unstable_by(|a, b| b.cmp(a));
            live.into_iter()
                .map(|(h, t, k, seq)| (h, t, k.to_string(), seq))
                .collect()
        };
        self.with_db(|db| {
            let txn = db.begin_read().map_err(DiskError::store)?;
            let table = txn.open_table(ENTRIES).map_err(DiskError::store)?;
            let mut out = Vec::with_capacity(keys.len());
            for (_, _, k, seq) in keys {
                let Some(v) = table.get(seq).map_err(DiskError::store)? else {
                    continue;
                };
                let raw =
                    zstd::decode_all(v.value()).map_err(|e| DiskError::Corrupt(e.to_string()));
                if let Ok(entry) = raw.and_then(|r| {
                    CachedResponse::decode(&r).map_err(|e| DiskError::Corrupt(e.to_string()))
                }) {
                    out.push((CacheKey::from_stored(&k), entry));
                }
            }
            Ok(out)
        })
    }

    /// Live entries.
    pub fn entries(&self) -> u64 {
        self.lock().map.len() as u64
    }

    /// Stored (compressed) bytes.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// The index of `db`'s `meta.2` table (creating both tables, dropping the
/// earlier format's): dead entries are doomed.
fn load(db: &Database, now: u64) -> Result<Index, DiskError> {
    let txn = db.begin_write().map_err(DiskError::store)?;
    let old_entries = txn.delete_table(OLD_ENTRIES).map_err(DiskError::store)?;
    let old_meta = txn.delete_table(OLD_META).map_err(DiskError::store)?;
    if old_entries || old_meta {
        tracing::info!("Disk cache: entries of the earlier file format dropped");
    }
    txn.open_table(ENTRIES).map_err(DiskError::store)?;
    let meta = txn.open_table(META).map_err(DiskError::store)?;
    let mut index = Index::default();
    for row in meta.iter().map_err(DiskError::store)? {
        let (seq, v) = row.map_err(DiskError::store)?;
        let seq = seq.value();
        let (key, dead_at_ms, last_access_ms, hits, size) = v.value();
        index.next_seq = index.next_seq.max(seq + 1);
        let meta = Meta {
            seq,
            dead_at_ms,
            last_access_ms,
            hits,
            size,
        };
        if dead_at_ms <= now {
            index.doomed.insert(seq);
            continue;
        }
        // A key in two rows (not written by this code, but cheap to mend): the newer wins.
        if let Some(old) = index.map.insert(key.to_string(), meta) {
            index.bytes -= old.size;
            index.doomed.insert(old.seq);
        }
        index.bytes += size;
    }
    drop(meta);
    txn.commit().map_err(DiskError::store)?;
    Ok(index)
}

/// Writes `plan` in one transaction; on error nothing of it is kept.
fn commit(db: &Database, plan: &Plan) -> Result<(), DiskError> {
    let mut txn = db.begin_write().map_err(DiskError::store)?;
    txn.set_durability(Durability::Eventual);
    {
        let mut entries = txn.open_table(ENTRIES).map_err(DiskError::store)?;
        let mut meta = txn.open_table(META).map_err(DiskError::store)?;
        // Stats first: an entry evicted in this plan may have unwritten
        // stats, and its row goes with the deletions below.
        for (k, m) in &plan.metas {
            meta.insert(m.seq, m.row(k)).map_err(DiskError::store)?;
        }
        let evicted = plan.evicted.iter().map(|(_, seq)| seq);
        for &seq in evicted.chain(&plan.doomed) {
            entries.remove(seq).map_err(DiskError::store)?;
            meta.remove(seq).map_err(DiskError::store)?;
        }
        for (k, v, m) in &plan.puts {
            entries.insert(m.seq, &v[..]).map_err(DiskError::store)?;
            meta.insert(m.seq, m.row(k)).map_err(DiskError::store)?;
        }
    }
    txn.commit().map_err(DiskError::store)?;
    Ok(())
}

/// What eviction brings the tier down to.
#[derive(Debug, Clone, Copy)]
struct Target {
    bytes: u64,
    entries: usize,
}

/// The keys to evict so that `bytes` and `entries` (the index after the
/// pending puts, which are never evicted) fall to `target`: dead entries
/// first, then the least recently used. Only the candidates needed are
/// ordered (a partial selection), never every key.
fn victims(
    index: &Index,
    keep: &HashSet<String>,
    mut bytes: u64,
    mut entries: usize,
    target: Target,
    now: u64,
) -> Vec<(String, u64)> {
    let mut order: Vec<(bool, u64, &str, u64, u64)> = index
        .map
        .iter()
        .filter(|(k, _)| !keep.contains(k.as_str()))
        .map(|(k, m)| {
            (
                m.dead_at_ms > now,
                m.last_access_ms,
                k.as_str(),
                m.size,
                m.seq,
            )
        })
        .collect();
    let over_entries = entries.saturating_sub(target.entries);
    let mean = (index.bytes / index.map.len().max(1) as u64).max(1);
    let over_bytes =
        usize::try_from(bytes.saturating_sub(target.bytes) / mean).unwrap_or(usize::MAX);
    let dead = order.iter().filter(|o| !o.0).count();
    // Enough candidates for the estimate, with room; the rest stay unsorted.
    let mut want = dead
        .saturating_add(over_entries.max(over_bytes).saturating_mul(2))
        .saturating_add(16);
    let mut out = Vec::new();
    loop {
        let n = want.min(order.len());
        if n < order.len() {
            order.select_nth_unstable(n);
        }
        order[..n].sort_unstable();
        for &(live, _, k, size, seq) in &order[out.len()..n] {
            if live && bytes <= target.bytes && entries <= target.entries {
                return out;
            }
            bytes -= size.min(bytes);
            entries = entries.saturating_sub(1);
            out.push((k.to_string(), seq));
        }
        if n == order.len() {
            return out;
        }
        want = want.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::clock::ManualClock;
    use crate::cache::entry::tests::sample;
    use redb::ReadableTableMetadata;
    use std::time::Duration;

    fn cfg(dir: &tempfile::TempDir, max_bytes: u64) -> DiskConfig {
        DiskConfig {
            path: dir.path().join("sub/cache.redb"),
            max_bytes,
            zstd_level: 3,
            warm_entries: 10,
            max_entries: 1_000_000,
        }
    }

    fn put(t: &DiskTier, key: &str, body: &str, clock: &ManualClock, ttl_ms: u64) {
        let e = Arc::new(sample(body, clock.now_ms(), ttl_ms));
        t.put_batch(&[(CacheKey::from_stored(key), e)]).unwrap();
    }

    #[test]
    fn survives_reopen_with_its_hit_counts() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        {
            let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
            put(&t, "p:/a:1", "one", &clock, 60_000);
            put(&t, "p:/a:2", "two", &clock, 60_000);
            for _ in 0..3 {
                assert_eq!(t.get("p:/a:2").unwrap().unwrap().body, "two");
            }
            t.get("p:/a:1").unwrap();
            t.flush().unwrap();
        }
        let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
        assert_eq!(t.entries(), 2);
        let hot: Vec<String> = t
            .hottest(5)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(hot, vec!["p:/a:2", "p:/a:1"]);
        assert_eq!(t.get("p:/a:1").unwrap().unwrap().body, "one");
    }

    #[test]
    fn dead_entries_are_misses_and_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        {
            let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
            put(&t, "p:/a:short", "x", &clock, 1000);
            put(&t, "p:/a:long", "y", &clock, 10_000);
            clock.advance(Duration::from_millis(1000));
            assert!(t.get("p:/a:short").unwrap().is_none());
            assert!(t.get("p:/a:long").unwrap().is_some());
            clock.advance(Duration::from_millis(9000));
        }
        let t = DiskTier::open(&cfg(&dir, 1 << 20), clock).unwrap();
        assert_eq!((t.entries(), t.bytes()), (0, 0));
    }

    #[test]
    fn stays_within_its_bytes_evicting_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = DiskTier::open(&cfg(&dir, 20_000), clock.clone()).unwrap();
        // Incompressible-ish bodies of ~1 KB each.
        let body = |i: u64| {
            (0..200)
                .map(|j| format!("{:x}", (i * 7919 + j * 104_729) % 65_521))
                .collect::<String>()
        };
        put(&t, "p:/keep", &body(0), &clock, 600_000);
        for i in 1..100 {
            clock.advance(Duration::from_millis(1));
            t.get("p:/keep").unwrap();
            put(&t, &format!("p:/x:{i}"), &body(i), &clock, 600_000);
            assert!(t.bytes() <= 20_000, "{} bytes after {i}", t.bytes());
        }
        assert!(
            t.get("p:/keep").unwrap().is_some(),
            "recently used survives"
        );
        assert!(t.get("p:/x:1").unwrap().is_none(), "oldest went");
        assert!(t.entries() > 5);
    }

    #[test]
    fn stays_within_its_entry_count() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = DiskTier::open(
            &DiskConfig {
                max_entries: 10,
                ..cfg(&dir, 1 << 30)
            },
            clock.clone(),
        )
        .unwrap();
        for i in 0..50 {
            clock.advance(Duration::from_millis(1));
            put(&t, &format!("p:/n:{i}"), "x", &clock, 600_000);
            assert!(t.entries() <= 10, "{} entries after {i}", t.entries());
        }
        assert!(t.get("p:/n:49").unwrap().is_some(), "the newest stays");
        assert!(t.get("p:/n:0").unwrap().is_none(), "the oldest went");
    }

    #[test]
    fn eviction_picks_dead_then_least_recently_used_without_the_pending_puts() {
        let mut index = Index::default();
        let meta = |seq, dead_at_ms, last_access_ms| Meta {
            seq,
            dead_at_ms,
            last_access_ms,
            hits: 0,
            size: 10,
        };
        for (k, m) in [
            ("dead", meta(1, 5, 9)),
            ("old", meta(2, 100, 1)),
            ("new", meta(3, 100, 8)),
            ("put", meta(4, 100, 0)),
        ] {
            index.map.insert(k.into(), m);
            index.bytes += 10;
        }
        let keep = HashSet::from(["put".to_string()]);
        let target = Target {
            bytes: 20,
            entries: 100,
        };
        assert_eq!(
            victims(&index, &keep, 40, 4, target, 10),
            [("dead".to_string(), 1), ("old".to_string(), 2)]
        );
    }

    #[test]
    fn purge_by_key_prefix_and_all() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
        for k in ["a:/x:1", "a:/x:2", "a:/y:3", "b:/x:4"] {
            put(&t, k, k, &clock, 60_000);
        }
        assert_eq!(t.remove("a:/x:1").unwrap(), 1);
        assert_eq!(t.remove("a:/x:1").unwrap(), 0);
        assert_eq!(t.remove_prefix("a:/").unwrap(), 2);
        assert_eq!(t.remove_prefix("").unwrap(), 1);
        assert_eq!((t.entries(), t.bytes()), (0, 0));
        drop(t);
        let t = DiskTier::open(&cfg(&dir, 1 << 20), clock).unwrap();
        assert_eq!(t.entries(), 0, "purges are persisted");
    }

    #[test]
    fn may_hold_answers_from_the_index_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
        assert!(!t.may_hold("p:/a:1"));
        put(&t, "p:/a:1", "one", &clock, 1000);
        assert!(t.may_hold("p:/a:1"));
        let writing = t.lock();
        assert!(t.may_hold("p:/a:2"), "busy index: ask get");
        drop(writing);
        clock.advance(Duration::from_millis(1000));
        assert!(!t.may_hold("p:/a:1"), "dead is not held");
    }

    #[test]
    fn a_key_stored_again_keeps_one_row_and_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        {
            let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
            put(&t, "p:/a:1", "one", &clock, 60_000);
            let e = |b| Arc::new(sample(b, clock.now_ms(), 60_000));
            let k = CacheKey::from_stored("p:/a:1");
            t.put_batch(&[(k.clone(), e("two")), (k, e("three"))])
                .unwrap();
            assert_eq!(t.entries(), 1);
            assert_eq!(t.get("p:/a:1").unwrap().unwrap().body, "three");
        }
        let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
        let bytes = t.bytes();
        let db = t.db.read().unwrap();
        let txn = db.as_ref().unwrap().begin_read().unwrap();
        assert_eq!(
            txn.open_table(ENTRIES).unwrap().len().unwrap(),
            1,
            "old rows deleted"
        );
        assert_eq!(txn.open_table(META).unwrap().len().unwrap(), 1);
        assert_eq!(t.entries(), 1);
        assert!(bytes > 0 && bytes < 1024, "{bytes}");
    }

    #[test]
    fn an_evicted_entry_with_unwritten_stats_leaves_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = DiskTier::open(&cfg(&dir, 400), clock.clone()).unwrap();
        put(&t, "p:/a:0", "x", &clock, 60_000);
        t.get("p:/a:0").unwrap(); // stats dirty, written with the next write
        clock.advance(Duration::from_millis(10));
        for i in 1..20 {
            put(&t, &format!("p:/a:{i}"), "y", &clock, 60_000);
        }
        assert!(t.get("p:/a:0").unwrap().is_none(), "evicted");
        let (index_entries, index_bytes) = (t.entries(), t.bytes());
        drop(t);
        let t = DiskTier::open(&cfg(&dir, 400), clock.clone()).unwrap();
        assert_eq!((t.entries(), t.bytes()), (index_entries, index_bytes));
        assert!(!t.may_hold("p:/a:0"));
    }

    #[test]
    fn a_file_of_the_key_keyed_format_opens_empty() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let path = cfg(&dir, 1 << 20).path;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(OLD_ENTRIES)
                .unwrap()
                .insert("p:/a:1", &b"not zstd"[..])
                .unwrap();
            txn.open_table(OLD_META)
                .unwrap()
                .insert("p:/a:1", (u64::MAX, 0, 0, 8))
                .unwrap();
            txn.commit().unwrap();
        }
        let t = DiskTier::open(&cfg(&dir, 1 << 20), clock.clone()).unwrap();
        assert_eq!(t.entries(), 0);
        put(&t, "p:/a:1", "one", &clock, 60_000);
        assert_eq!(t.get("p:/a:1").unwrap().unwrap().body, "one");
        let db = t.db.read().unwrap();
        let txn = db.as_ref().unwrap().begin_read().unwrap();
        assert!(txn.open_table(OLD_META).is_err(), "the old tables are gone");
    }
}
