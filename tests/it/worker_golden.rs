//! The real INT8 model through ONNX Runtime reproduces `golden.jsonl`: every
//! URL matches `score_int8` within 1e-5, scored alone or in a batch, and a
//! URL's score does not depend on the other rows of its batch.

use gantry::worker::features;
use gantry::worker::model::{environment, Engine, ModelSpec, OrtEngine};

use crate::support::worker::{golden, model_dir, ort_lib, GOLDEN_TOLERANCE};

fn engine() -> (ModelSpec, OrtEngine) {
    let spec = ModelSpec::load(&model_dir()).expect("model.json");
    assert_eq!(
        spec.dim,
        features::DIM,
        "model.json input.dim vs features::DIM"
    );
    let env = environment(&ort_lib()).expect("ONNX Runtime");
    let engine =
        OrtEngine::load(&env, &model_dir().join("model.onnx"), &spec, 1).expect("model.onnx");
    (spec, engine)
}

#[test]
fn int8_model_matches_golden_scores() {
    let (_, mut engine) = engine();
    let cases = golden();
    assert!(
        cases.len() >= 10,
        "golden.jsonl has only {} cases",
        cases.len()
    );
    let mut scores = Vec::new();
    for case in &cases {
        engine
            .score(&features::extract(&case.url), 1, &mut scores)
            .unwrap();
        assert!(
            (scores[0] - case.score_int8).abs() <= GOLDEN_TOLERANCE,
            "{}: got {}, golden {}",
            case.url,
            scores[0],
            case.score_int8
        );
    }
}

/// The INT8 graph quantizes with constant scales (no per-batch statistics),
/// so a batch of every golden URL gives the golden scores too.
#[test]
fn batched_scores_match_golden() {
    let (_, mut engine) = engine();
    let cases = golden();
    let mut input = Vec::new();
    for case in &cases {
        input.extend(features::extract(&case.url));
    }
    let mut scores = Vec::new();
    engine.score(&input, cases.len(), &mut scores).unwrap();
    assert_eq!(scores.len(), cases.len());
    for (case, score) in cases.iter().zip(&scores) {
        assert!(
            (score - case.score_int8).abs() <= GOLDEN_TOLERANCE,
            "{} in a batch of {}: got {score}, golden {}",
            case.url,
            cases.len(),
            case.score_int8
        );
    }
}

/// Row independence: each golden URL scored alone and at a random place in
/// a batch of 32 with 31 random other golden URLs gives the same score (in
/// practice bitwise; the bound is 1e-7).
#[test]
fn score_does_not_depend_on_batch_neighbours() {
    let (_, mut engine) = engine();
    let cases = golden();
    let rows: Vec<Vec<f32>> = cases.iter().map(|c| features::extract(&c.url)).collect();
    // xorshift64*, fixed seed: the same batches every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    };
    let (mut scores, mut alone) = (Vec::new(), Vec::new());
    let (mut worst, mut not_bitwise) = (0.0f32, 0);
    for (i, row) in rows.iter().enumerate() {
        engine.score(row, 1, &mut alone).unwrap();
        let at = next(32);
        let mut input = Vec::with_capacity(32 * row.len());
        for slot in 0..32 {
            if slot == at {
                input.extend_from_slice(row);
            } else {
                let mut j = next(rows.len());
                if j == i {
                    j = (j + 1) % rows.len();
                }
                input.extend_from_slice(&rows[j]);
            }
        }
        engine.score(&input, 32, &mut scores).unwrap();
        let diff = (scores[at] - alone[0]).abs();
        worst = worst.max(diff);
        not_bitwise += usize::from(scores[at].to_bits() != alone[0].to_bits());
        assert!(
            diff <= 1e-7,
            "{}: alone {}, in a batch of 32 at {at}: {}",
            cases[i].url,
            alone[0],
            scores[at]
        );
    }
    eprintln!(
        "max |batched - alone| over {} URLs: {worst} ({not_bitwise} not bitwise equal)",
        rows.len()
    );
}
