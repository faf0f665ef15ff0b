//! The disk tier (L3) on a real file system that fills up: it closes after the I/O error, serves nothing meanwhile, and opens again once there is room.
//!
//! The file lives on a small tmpfs the test mounts, so "full" is the
//! kernel's own ENOSPC; mounting needs root (as `make test` runs here),
//! elsewhere the test says it is skipped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gantry::cache::clock::{Clock, ManualClock};
use gantry::cache::config::DiskConfig;
use gantry::cache::disk::{DiskError, DiskTier};
use gantry::cache::entry::CachedResponse;
use gantry::cache::key::CacheKey;

use crate::support::tmpfs::Tmpfs;

/// An entry of `n` incompressible bytes, fresh for an hour.
fn entry(clock: &ManualClock, n: usize, seed: u64) -> Arc<CachedResponse> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let body: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Arc::new(CachedResponse {
        status: 200,
        body: Bytes::from(body),
        stored_at_ms: clock.now_ms(),
        ttl_ms: 3_600_000,
        ..CachedResponse::default()
    })
}

fn put(tier: &DiskTier, clock: &ManualClock, key: &str, seed: u64) -> Result<(), DiskError> {
    tier.put_batch(&[(CacheKey::from_stored(key), entry(clock, 64 * 1024, seed))])
}

#[test]
fn a_full_disk_closes_the_tier_and_it_opens_again_with_room() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(dir.path(), "2m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let cfg = DiskConfig {
        path: dir.path().join("cache.redb"),
        max_bytes: 1 << 30,
        zstd_level: 1,
        warm_entries: 0,
        max_entries: 1_000_000,
    };
    let tier = DiskTier::open(&cfg, clock.clone()).unwrap();
    put(&tier, &clock, "kept", 0).unwrap();

    // Fill the file system: the next writes fail, and the tier closes.
    fs.fill("filler");
    let mut failed = None;
    for seed in 1..64 {
        if let Err(e) = put(&tier, &clock, &format!("k{seed}"), seed) {
            failed = Some(e);
            break;
        }
    }
    assert!(failed.is_some(), "writes kept succeeding on a full disk");
    let closed = tier.get("kept").unwrap_err();
    assert!(matches!(closed, DiskError::Closed(_)), "{closed}");

    // Room again: no reopening before a second has passed on the tier's clock...
    std::fs::remove_file(dir.path().join("filler")).unwrap();
    assert!(matches!(
        put(&tier, &clock, "soon", 99),
        Err(DiskError::Closed(_))
    ));
    // ...then the next write opens the file again, and what was stored is still there.
    clock.advance(Duration::from_secs(1));
    put(&tier, &clock, "later", 100).unwrap();
    assert!(tier.get("kept").unwrap().is_some());
    assert!(tier.get("later").unwrap().is_some());
}
