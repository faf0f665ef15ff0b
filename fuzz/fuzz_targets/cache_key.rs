//! Fuzz target: cache key normalisation. A JSON body's canonical form is a
//! fixed point, means the same JSON as the body, and gives the body's key.
//!
//! Input: a request body; or `method 0xFF pool 0xFF path 0xFF query 0xFF body`
//! to vary the other key parts too (0xFF is in no UTF-8 text nor JSON).
#![no_main]

use gantry::cache::key::{normalise_body, KeyParts};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let pieces: Vec<&[u8]> = data.splitn(5, |b| *b == 0xff).collect();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (method, pool, path, query, body) = match pieces.as_slice() {
        [m, p, pa, q, b] => (text(m), text(p), text(pa), Some(text(q)), *b),
        _ => (
            "POST".into(),
            "analysis".into(),
            "/v1/analyze".into(),
            None,
            data,
        ),
    };
    let parts = KeyParts {
        method: &method,
        pool: &pool,
        path: &path,
        query: query.as_deref(),
        body,
    };
    let key = parts.key();
    let prefix = format!("{pool}:{path}:");
    let hash = key
        .as_str()
        .strip_prefix(&prefix)
        .expect("key starts with pool:path:");
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );

    let once = normalise_body(body);
    match once.split_first() {
        Some((b'j', canonical)) => {
            assert_eq!(normalise_body(canonical), once, "normalising is idempotent");
            let original: Value = serde_json::from_slice(body).expect("it parsed once");
            let written: Value = serde_json::from_slice(canonical).expect("canonical JSON parses");
            assert_eq!(original, written, "the canonical form means the same JSON");
            let same = KeyParts {
                body: canonical,
                ..parts
            };
            assert_eq!(same.key(), key, "a body and its canonical form share a key");
        }
        Some((b'r', raw)) => assert_eq!(raw, body, "other bodies are hashed as they are"),
        _ => panic!("normalised body has no tag: {once:?}"),
    }
});
