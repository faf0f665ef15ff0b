//! The fault suite's disk case: the L3 directory full, then read-only, under load.
//!
//! The disk tier lives on a small tmpfs the case mounts (it needs root, as
//! `make test` runs here; elsewhere the case is skipped and says so), so
//! "full" and "read-only" are the kernel's own ENOSPC and EROFS.

use std::time::{Duration, Instant};

use super::{config, policy, Row, CLIENTS, UNDER_FAULT};
use crate::support::load::Load;
use crate::support::tmpfs::Tmpfs;
use crate::support::Gantry;

/// `gantry_cache_writes_total{tier="l3",result}`.
async fn writes(up: &Gantry, result: &str) -> f64 {
    let want = format!("result=\"{result}\"");
    up.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("gantry_cache_writes_total{") && l.contains("tier=\"l3\""))
        .filter(|l| l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until more L3 writes than `since` have `result`; returns the count.
async fn more_writes(up: &Gantry, result: &str, since: f64, what: &str) -> f64 {
    up.until(
        format!("L3 writes {result} ({what})"),
        Duration::from_secs(30),
        || async move {
            let n = writes(up, result).await;
            (n > since).then_some(n)
        },
    )
    .await
}

/// The L3 directory full, then read-only as well, then writable with room:
/// requests succeed throughout; writes fail, are counted and logged; the
/// tier stores again once the disk is back.
pub async fn l3_full_then_read_only() -> Row {
    let scratch = tempfile::tempdir().unwrap();
    let l3 = scratch.path().join("l3");
    let Some(tmpfs) = Tmpfs::mount(&l3, "4m") else {
        let mut row = Row::new("L3 full, then read-only", Default::default(), None);
        row.skipped = Some("needs root to mount a tmpfs".into());
        return row;
    };
    let yaml = config("fl", 5).replace("idempotent: true}", "idempotent: true, cache: {ttl: 5m}}")
        + &format!("cache:\n  disk: {{path: '{}/cache.redb'}}\n", l3.display());
    let up = Gantry::up(&yaml)
        .policy("p.yaml", &policy("fl", 2, 2))
        .start()
        .await;
    up.wait_up("fl", 2, 30).await;
    // Every body differs: every response is a new L3 write.
    let varied = r#"{"url":"http://example.com/{n}"}"#;
    let load = Load::start(&format!("{}/v1/analyze", up.url), CLIENTS, varied);
    load.more(UNDER_FAULT).await;
    tmpfs.fill("filler");
    let failed = more_writes(&up, "failed", writes(&up, "failed").await, "disk full").await;
    load.more(UNDER_FAULT).await;
    // Read-only as well: possible once the tier has closed the file (no writer left).
    up.until(
        "the tmpfs remounted read-only",
        Duration::from_secs(30),
        || async { tmpfs.remount("ro") },
    )
    .await;
    more_writes(&up, "failed", failed, "read-only").await;
    load.more(UNDER_FAULT).await;
    assert!(tmpfs.remount("rw"), "remount rw");
    std::fs::remove_file(l3.join("filler")).unwrap();
    let healed = Instant::now();
    more_writes(&up, "ok", writes(&up, "ok").await, "disk back").await;
    let recovery = healed.elapsed();
    load.more(UNDER_FAULT).await;
    let mut row = Row::new("L3 full, then read-only", load.stop().await, Some(recovery));
    let log = up.log();
    let said = [
        "Disk cache closed after an I/O error",
        "Read-only file system",
        "Disk cache open again",
    ];
    if let Some(missing) = said.iter().find(|s| !log.contains(**s)) {
        row.broken = Some(format!("not logged: {missing:?}"));
    }
    row
}
