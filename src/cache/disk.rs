//! L3: a redb file of zstd-compressed entries, bounded by bytes, surviving restarts.
//!
//! Two tables: `entries` (key -> compressed entry) and `meta` (key -> dead-at,
//! last access, hits, size). `meta` is loaded into an in-memory index at
//! open, so a miss costs no read transaction, sizes are summed without I/O,
//! and the least recently used entries can be picked for eviction. Access
//! stats are kept in memory and written with the next write (or
//! [`DiskTier::flush`]), so a read never writes. When the stored bytes pass
//! `max_bytes`, dead entries and then the least recently used go until 90% is
//! left. Every method blocks: async callers use `spawn_blocking`.
//!
//! Commits use `Durability::Eventual` (written, not fsynced): a process
//! crash keeps them, a power cut may lose the last few, which a cache can
//! afford.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::clock::Clock;
use super::config::DiskConfig;
use super::entry::CachedResponse;
use super::key::CacheKey;
use crate::metrics::cache as m;

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// (dead_at_ms, last_access_ms, hits, size)
const META: TableDefinition<&str, (u64, u64, u64, u64)> = TableDefinition::new("meta");
/// Page cache redb keeps in memory; L1 is the real memory tier.
const REDB_CACHE_BYTES: usize = 32 * 1024 * 1024;

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
}

impl DiskError {
    fn store(e: impl Into<redb::Error>) -> DiskError {
        DiskError::Store(Box::new(e.into()))
    }
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    dead_at_ms: u64,
    last_access_ms: u64,
    hits: u64,
    size: u64,
}

impl Meta {
    fn row(&self) -> (u64, u64, u64, u64) {
        (self.dead_at_ms, self.last_access_ms, self.hits, self.size)
    }
}

#[derive(Default)]
struct Index {
    map: HashMap<String, Meta>,
    bytes: u64,
    /// Keys whose access stats changed since the last write.
    dirty: HashSet<String>,
    /// Keys found dead or unreadable on read, deleted with the next write.
    doomed: HashSet<String>,
}

impl Index {
    fn remove(&mut self, key: &str) -> bool {
        self.dirty.remove(key);
        match self.map.remove(key) {
            Some(meta) => {
                self.bytes -= meta.size;
                true
            }
            None => false,
        }
    }
}

/// The disk tier.
pub struct DiskTier {
    db: Database,
    index: Mutex<Index>,
    /// Serialises write transactions so index changes and commits stay in order.
    writer: Mutex<()>,
    /// Compressed bytes (values plus keys) allowed.
    max_bytes: u64,
    /// zstd level for new entries.
    level: i32,
    clock: Arc<dyn Clock>,
}

/// What one write transaction does.
#[derive(Default)]
struct Plan {
    puts: Vec<(String, Vec<u8>, Meta)>,
    metas: Vec<(String, Meta)>,
    deletes: Vec<String>,
}

impl DiskTier {
    /// Opens or creates the file and loads the index, dropping dead entries.
    pub fn open(cfg: &DiskConfig, clock: Arc<dyn Clock>) -> Result<DiskTier, DiskError> {
        let open_err = |e: redb::Error| DiskError::Open {
            path: cfg.path.clone(),
            cause: Box::new(e),
        };
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.into()))?;
        }
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(&cfg.path)
            .map_err(|e| open_err(e.into()))?;
        let tier = DiskTier {
            db,
            index: Mutex::new(Index::default()),
            writer: Mutex::new(()),
            max_bytes: cfg.max_bytes,
            level: cfg.zstd_level,
            clock,
        };
        tier.load()?;
        Ok(tier)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self) -> Result<(), DiskError> {
        let now = self.clock.now_ms();
        let txn = self.db.begin_write().map_err(DiskError::store)?;
        txn.open_table(ENTRIES).map_err(DiskError::store)?;
        let meta = txn.open_table(META).map_err(DiskError::store)?;
        let mut index = self.lock();
        for row in meta.iter().map_err(DiskError::store)? {
            let (k, v) = row.map_err(DiskError::store)?;
            let (dead_at_ms, last_access_ms, hits, size) = v.value();
            let meta = Meta {
                dead_at_ms,
                last_access_ms,
                hits,
                size,
            };
            if dead_at_ms <= now {
                index.doomed.insert(k.value().to_string());
            } else {
                index.bytes += size;
                index.map.insert(k.value().to_string(), meta);
            }
        }
        drop(meta);
        drop(index);
        txn.commit().map_err(DiskError::store)?;
        self.write(Vec::new())
    }

    /// The entry under `key`, fresh or stale; `None` when absent or dead.
    pub fn get(&self, key: &str) -> Result<Option<CachedResponse>, DiskError> {
        let now = self.clock.now_ms();
        {
            let mut index = self.lock();
            match index.map.get(key) {
                None => return Ok(None),
                Some(meta) if meta.dead_at_ms <= now => {
                    index.remove(key);
                    index.doomed.insert(key.to_string());
                    return Ok(None);
                }
                Some(_) => {}
            }
        }
        let txn = self.db.begin_read().map_err(DiskError::store)?;
        let table = txn.open_table(ENTRIES).map_err(DiskError::store)?;
        let Some(value) = table.get(key).map_err(DiskError::store)? else {
            return Ok(None);
        };
        let entry = zstd::decode_all(value.value())
            .map_err(|e| DiskError::Corrupt(e.to_string()))
            .and_then(|raw| {
                CachedResponse::decode(&raw).map_err(|e| DiskError::Corrupt(e.to_string()))
            });
        let mut index = self.lock();
        match entry {
            Ok(entry) => {
                if let Some(meta) = index.map.get_mut(key) {
                    meta.hits += 1;
                    meta.last_access_ms = now;
                    index.dirty.insert(key.to_string());
                }
                Ok(Some(entry))
            }
            Err(e) => {
                index.remove(key);
                index.doomed.insert(key.to_string());
                Err(e)
            }
        }
    }

    /// Stores entries in one transaction, evicting past the byte bound.
    pub fn put_batch(&self, items: &[(CacheKey, Arc<CachedResponse>)]) -> Result<(), DiskError> {
        let now = self.clock.now_ms();
        let mut puts = Vec::with_capacity(items.len());
        for (key, entry) in items {
            if entry.dead_at_ms() <= now {
                continue;
            }
            let value = zstd::encode_all(&entry.encode()[..], self.level)
                .map_err(|e| DiskError::Corrupt(e.to_string()))?;
            let meta = Meta {
                dead_at_ms: entry.dead_at_ms(),
                last_access_ms: now,
                hits: 0,
                size: (value.len() + key.as_str().len()) as u64,
            };
            puts.push((key.as_str().to_string(), value, meta));
        }
        self.write(puts)
    }

    fn write(&self, puts: Vec<(String, Vec<u8>, Meta)>) -> Result<(), DiskError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let plan = self.plan(puts);
        if plan.puts.is_empty() && plan.metas.is_empty() && plan.deletes.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(DiskError::store)?;
        txn.set_durability(Durability::Eventual);
        {
            let mut entries = txn.open_table(ENTRIES).map_err(DiskError::store)?;
            let mut meta = txn.open_table(META).map_err(DiskError::store)?;
            for k in &plan.deletes {
                entries.remove(k.as_str()).map_err(DiskError::store)?;
                meta.remove(k.as_str()).map_err(DiskError::store)?;
            }
            for (k, v, m) in &plan.puts {
                entries
                    .insert(k.as_str(), &v[..])
                    .map_err(DiskError::store)?;
                meta.insert(k.as_str(), m.row()).map_err(DiskError::store)?;
            }
            for (k, m) in &plan.metas {
                meta.insert(k.as_str(), m.row()).map_err(DiskError::store)?;
            }
        }
        txn.commit().map_err(DiskError::store)?;
        self.publish();
        Ok(())
    }

    /// Applies `puts` to the index and decides what to write and evict.
    fn plan(&self, puts: Vec<(String, Vec<u8>, Meta)>) -> Plan {
        let now = self.clock.now_ms();
        let mut index = self.lock();
        let mut plan = Plan::default();
        for (k, v, meta) in puts {
            index.remove(&k);
            index.doomed.remove(&k);
            index.bytes += meta.size;
            index.map.insert(k.clone(), meta);
            plan.puts.push((k, v, meta));
        }
        if index.bytes > self.max_bytes {
            let evicted = evict(&mut index, self.max_bytes / 10 * 9, now);
            m::EVICTIONS
                .with_label_values(&["l3"])
                .inc_by(evicted.len() as u64);
            plan.deletes.extend(evicted);
        }
        plan.deletes.extend(index.doomed.drain());
        let dirty: Vec<String> = index.dirty.drain().collect();
        plan.metas = dirty
            .into_iter()
            .filter_map(|k| index.map.get(&k).map(|m| (k, *m)))
            .collect();
        let fresh: HashSet<&str> = plan.puts.iter().map(|(k, ..)| k.as_str()).collect();
        plan.deletes.retain(|k| !fresh.contains(k.as_str()));
        plan
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
        self.remove_where(|k| k == key)
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
                index.remove(k);
                index.doomed.insert(k.clone());
            }
            keys.len() as u64
        };
        self.flush()?;
        Ok(n)
    }

    /// The `n` most-hit live entries, most hit first (for warming L1).
    pub fn hottest(&self, n: usize) -> Result<Vec<(CacheKey, CachedResponse)>, DiskError> {
        let now = self.clock.now_ms();
        let mut keys: Vec<(u64, u64, String)> = self
            .lock()
            .map
            .iter()
            .filter(|(_, m)| m.dead_at_ms > now)
            .map(|(k, m)| (m.hits, m.last_access_ms, k.clone()))
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.truncate(n);
        let txn = self.db.begin_read().map_err(DiskError::store)?;
        let table = txn.open_table(ENTRIES).map_err(DiskError::store)?;
        let mut out = Vec::with_capacity(keys.len());
        for (_, _, k) in keys {
            let Some(v) = table.get(k.as_str()).map_err(DiskError::store)? else {
                continue;
            };
            let raw = zstd::decode_all(v.value()).map_err(|e| DiskError::Corrupt(e.to_string()));
            if let Ok(entry) = raw.and_then(|r| {
                CachedResponse::decode(&r).map_err(|e| DiskError::Corrupt(e.to_string()))
            }) {
                out.push((CacheKey::from_stored(&k), entry));
            }
        }
        Ok(out)
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

/// Removes dead entries, then the least recently used, until `target` bytes remain.
fn evict(index: &mut Index, target: u64, now: u64) -> Vec<String> {
    let mut order: Vec<(bool, u64, String)> = index
        .map
        .iter()
        .map(|(k, m)| (m.dead_at_ms > now, m.last_access_ms, k.clone()))
        .collect();
    order.sort_unstable();
    let mut out = Vec::new();
    for (live, _, k) in order {
        if live && index.bytes <= target {
            break;
        }
        index.remove(&k);
        out.push(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::clock::ManualClock;
    use crate::cache::entry::tests::sample;
    use std::time::Duration;

    fn cfg(dir: &tempfile::TempDir, max_bytes: u64) -> DiskConfig {
        DiskConfig {
            path: dir.path().join("sub/cache.redb"),
            max_bytes,
            zstd_level: 3,
            warm_entries: 10,
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
}
