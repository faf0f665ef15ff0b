//! Fuzz target: the worker's request bodies (`/v1/analyze`, `/v1/analyze/batch`) as the handlers decode them, then each URL's features.
#![no_main]

use gantry::worker::features::{extract, DIM};
use gantry::worker::http::{decode, AnalyzeRequest, BatchRequest};
use libfuzzer_sys::fuzz_target;

fn check(url: &str) {
    let f = extract(url);
    assert_eq!(f.len(), DIM);
    assert!(f.iter().all(|v| (0.0..=1.0).contains(v)), "{url:?}");
}

fuzz_target!(|data: &[u8]| {
    match decode::<AnalyzeRequest>(data) {
        Ok(req) => check(&req.url),
        Err(message) => assert!(message.starts_with("invalid JSON body: ")),
    }
    if let Ok(batch) = decode::<BatchRequest>(data) {
        for item in &batch.items {
            check(&item.url);
        }
    }
});
