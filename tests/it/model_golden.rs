//! The Rust feature extractor reproduces the Python one bit for bit on
//! `models/phishing-url/golden.jsonl`, and agrees with `model.json` on the
//! spec version and input dimension.

use gantry::worker::features::{self, DIM, SPEC_VERSION};

use crate::support::worker::model_dir;

fn read(name: &str) -> String {
    let path = model_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn model_json_matches_the_extractor() {
    let spec: serde_json::Value = serde_json::from_str(&read("model.json")).unwrap();
    assert_eq!(
        spec["features"], SPEC_VERSION,
        "model.json features vs SPEC_VERSION"
    );
    assert_eq!(
        spec["input"]["dim"], DIM as u64,
        "model.json input.dim vs DIM"
    );
    assert_eq!(spec["input"]["dtype"], "float32");
}

/// The shipped model was measured row-independent by `train.py` (a URL's
/// score does not change with its batch neighbours); the batcher relies on it.
#[test]
fn model_json_says_scores_are_row_independent() {
    let spec: serde_json::Value = serde_json::from_str(&read("model.json")).unwrap();
    let metrics = &spec["metrics"];
    assert_eq!(metrics["row_independent"], true, "metrics.row_independent");
    let drift = metrics["int8_batch32_vs_batch1_max_abs_diff"]
        .as_f64()
        .expect("metrics.int8_batch32_vs_batch1_max_abs_diff");
    assert!(drift <= 1e-7, "measured batch drift {drift}");
}

#[test]
fn rust_features_equal_python_features_bitwise() {
    let text = read("golden.jsonl");
    let mut cases = 0;
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("golden.jsonl line {}: {e}", line_no + 1));
        let url = case["url"].as_str().expect("url is a string");
        // Python writes each float32 as the exact decimal of its float64
        // widening, so f64 -> f32 recovers it exactly.
        let want: Vec<f32> = case["features"]
            .as_array()
            .expect("features is an array")
            .iter()
            .map(|x| x.as_f64().expect("feature is a number") as f32)
            .collect();
        assert_eq!(
            want.len(),
            DIM,
            "line {}: golden vector length",
            line_no + 1
        );
        let got = features::extract(url);
        let diffs: Vec<String> = got
            .iter()
            .zip(&want)
            .enumerate()
            .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
            .take(5)
            .map(|(i, (g, w))| format!("[{i}] rust {g:e} python {w:e}"))
            .collect();
        assert!(
            diffs.is_empty(),
            "line {} url {url:?}: {}",
            line_no + 1,
            diffs.join(", ")
        );
        cases += 1;
    }
    assert!(cases >= 40, "golden.jsonl has only {cases} cases");
}
