//! Fuzz target: URL feature extraction on any string: DIM values in [0, 1], and `extract_into` overwrites a used buffer completely.
#![no_main]

use gantry::worker::features::{extract, extract_into, DIM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let url = String::from_utf8_lossy(data);
    let f = extract(&url);
    assert_eq!(f.len(), DIM);
    assert!(f.iter().all(|v| (0.0..=1.0).contains(v)), "{url:?}");
    let mut used = vec![0.5f32; DIM];
    extract_into(&url, &mut used);
    assert!(f.iter().zip(&used).all(|(a, b)| a.to_bits() == b.to_bits()));
});
