//! Fuzz target: the stored-entry decoder (Redis and disk tiers) on arbitrary bytes; what decodes re-encodes to the same entry.
#![no_main]

use gantry::cache::CachedResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = CachedResponse::decode(data) else {
        return;
    };
    let again = CachedResponse::decode(&entry.encode()).expect("an encoded entry decodes");
    assert_eq!(again, entry);
    // What the tiers do with a decoded entry.
    for now in [0, entry.stored_at_ms, u64::MAX] {
        let _ = entry.freshness(now);
        let _ = entry.serves_on_error(now);
        let _ = entry.remaining_ms(now);
        assert!(entry.age_secs(now) <= 1 << 31);
    }
    let _ = entry.dead_at_ms();
    let _ = entry.weight(data.len());
    let _ = entry.as_marker();
});
