//! PLACEHOLDER until helper/model lands: URL feature extraction (the real one ships with the model).
//!
//! Same contract as the real module (`DIM`, `extract_into`, `extract`) so the
//! worker builds; the merge of helper/model replaces this file.

/// Features per URL.
pub const DIM: usize = 64;

/// Writes the features of `url` into `out` (`out.len() == DIM`).
pub fn extract_into(url: &str, out: &mut [f32]) {
    out.fill(0.0);
    for b in url.bytes() {
        out[b as usize % DIM] += 1.0;
    }
}

/// The features of `url`.
pub fn extract(url: &str) -> Vec<f32> {
    let mut out = vec![0.0; DIM];
    extract_into(url, &mut out);
    out
}
