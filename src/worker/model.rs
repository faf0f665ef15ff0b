//! The model: `model.json` (names, dimension, threshold), and the engine that scores a batch.
//!
//! [`Engine`] is the seam between the batcher and ONNX Runtime: the batcher
//! hands it a row-major `[rows, dim]` feature matrix and gets one score per
//! row. [`OrtEngine`] is the real one (one `ort::Session`, owned by one
//! session thread, because `Session::run` takes `&mut self`); unit tests use
//! in-memory engines.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use super::WorkerError;

/// Scores batches of feature rows.
pub trait Engine: Send + 'static {
    /// Scores `rows` rows of features laid out row-major in `input`
    /// (`input.len() == rows * dim`), replacing `scores` with one score per row.
    fn score(
        &mut self,
        input: &[f32],
        rows: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), WorkerError>;
}

/// The parts of `model.json` the worker needs; the whole document is kept for `GET /v1/model`.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Model name, e.g. `phishing-url`.
    pub name: String,
    /// Model version, reported as `name@version` in every answer.
    pub version: String,
    /// Graph input name.
    pub input_name: String,
    /// Features per row.
    pub dim: usize,
    /// Graph output name.
    pub output_name: String,
    /// Scores at or above this are `phishing`.
    pub threshold: f32,
    /// The whole `model.json`, as read.
    pub document: serde_json::Value,
    /// `name@version`, formatted once.
    id: String,
}

#[derive(Deserialize)]
struct RawSpec {
    name: String,
    version: String,
    input: RawInput,
    output: RawOutput,
    threshold: f32,
}

#[derive(Deserialize)]
struct RawInput {
    name: String,
    dim: usize,
    #[serde(default)]
    dtype: Option<String>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
}

impl ModelSpec {
    /// Reads and checks `dir/model.json`.
    pub fn load(dir: &Path) -> Result<ModelSpec, WorkerError> {
        let path = dir.join("model.json");
        let err = |message: String| WorkerError::ModelSpec {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses the text of a `model.json`.
    pub fn parse(text: &str) -> Result<ModelSpec, String> {
        let document: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let raw: RawSpec = serde_json::from_value(document.clone()).map_err(|e| e.to_string())?;
        if let Some(dtype) = raw.input.dtype.as_deref() {
            if dtype != "float32" && dtype != "f32" {
                return Err(format!(
                    "input.dtype is {dtype:?}; only float32 is supported"
                ));
            }
        }
        if raw.input.dim == 0 {
            return Err("input.dim must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&raw.threshold) {
            return Err(format!("threshold {} is outside [0, 1]", raw.threshold));
        }
        Ok(ModelSpec {
            id: format!("{}@{}", raw.name, raw.version),
            name: raw.name,
            version: raw.version,
            input_name: raw.input.name,
            dim: raw.input.dim,
            output_name: raw.output.name,
            threshold: raw.threshold,
            document,
        })
    }

    /// `name@version`, as reported in answers.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one per process).
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Loads `libonnxruntime.so` from `lib` (once per process) and returns the environment.
pub fn environment(lib: &Path) -> Result<Environment, WorkerError> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    if !lib.is_file() {
        return Err(WorkerError::OrtLibraryMissing {
            path: lib.to_path_buf(),
        });
    }
    let ort_error = |message: String| WorkerError::OrtLibrary {
        path: lib.to_path_buf(),
        message,
    };
    let env = ort::init_from(lib)
        .map_err(|e| ort_error(e.to_string()))?
        .with_name("gantry-worker")
        .build()
        .map_err(|e| ort_error(e.to_string()))?;
    *slot = Some(env.clone());
    Ok(env)
}

/// One ONNX Runtime session scoring batches; owned by one session thread.
pub struct OrtEngine {
    session: Session,
    input_name: String,
    output_name: String,
    dim: usize,
}

impl OrtEngine {
    /// Opens `file` with `intra_threads` threads for one operator, and checks
    /// its input and output names against `spec`.
    pub fn load(
        env: &Environment,
        file: &Path,
        spec: &ModelSpec,
        intra_threads: usize,
    ) -> Result<OrtEngine, WorkerError> {
        let err = |message: String| WorkerError::ModelFile {
            path: file.to_path_buf(),
            message,
        };
        let session = Session::builder(env)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(intra_threads)
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.to_string()))?
            .commit_from_file(file)
            .map_err(|e| err(e.to_string()))?;
        if !session.inputs().iter().any(|o| o.name() == spec.input_name) {
            return Err(err(format!("the graph has no input {:?}", spec.input_name)));
        }
        if !session
            .outputs()
            .iter()
            .any(|o| o.name() == spec.output_name)
        {
            return Err(err(format!(
                "the graph has no output {:?}",
                spec.output_name
            )));
        }
        Ok(OrtEngine {
            session,
            input_name: spec.input_name.clone(),
            output_name: spec.output_name.clone(),
            dim: spec.dim,
        })
    }
}

impl Engine for OrtEngine {
    fn score(
        &mut self,
        input: &[f32],
        rows: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), WorkerError> {
        let infer = |e: ort::Error| WorkerError::Inference(e.to_string());
        let tensor = TensorRef::from_array_view(([rows, self.dim], input)).map_err(infer)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(infer)?;
        let (_, values) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(infer)?;
        per_row_scores(values, rows, scores)
    }
}

/// One score per row from an output of shape `[rows]`, `[rows, 1]` or
/// `[rows, 2]` (class probabilities; column 1 is the positive class).
pub fn per_row_scores(
    values: &[f32],
    rows: usize,
    scores: &mut Vec<f32>,
) -> Result<(), WorkerError> {
    scores.clear();
    if rows > 0 && values.len() == rows {
        scores.extend_from_slice(values);
    } else if rows > 0 && values.len() == 2 * rows {
        scores.extend(values.chunks_exact(2).map(|r| r[1]));
    } else {
        return Err(WorkerError::Inference(format!(
            "output has {} values for {rows} rows; expected 1 or 2 per row",
            values.len()
        )));
    }
    Ok(())
}

/// The ONNX file of `dir`: `file` if given (relative to `dir`), else `model.onnx`.
pub fn model_file(dir: &Path, file: Option<&Path>) -> PathBuf {
    dir.join(file.unwrap_or(Path::new("model.onnx")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_scores(values: &[f32], rows: usize, expected: Option<&[f32]>) {
        let mut scores = vec![9.0];
        let got = per_row_scores(values, rows, &mut scores);
        match expected {
            Some(e) => {
                assert!(got.is_ok(), "{values:?} x {rows}: {got:?}");
                assert_eq!(scores, e);
            }
            None => assert!(got.is_err(), "{values:?} x {rows} should fail"),
        }
    }

    #[test]
    fn scores_from_output_shapes() {
        check_scores(&[0.1, 0.9], 2, Some(&[0.1, 0.9]));
        check_scores(&[0.8, 0.2, 0.3, 0.7], 2, Some(&[0.2, 0.7]));
        check_scores(&[], 0, None);
        check_scores(&[0.1, 0.2, 0.3], 2, None);
        check_scores(&[0.1, 0.2, 0.3], 1, None);
    }

    fn check_spec(text: &str, ok: bool) {
        let got = ModelSpec::parse(text);
        assert_eq!(got.is_ok(), ok, "{text}: {got:?}");
    }

    #[test]
    fn model_json_is_checked() {
        let good = r#"{"name":"m","version":"1","input":{"name":"x","dim":4,"dtype":"float32"},
            "output":{"name":"p"},"threshold":0.5,"metrics":{}}"#;
        check_spec(good, true);
        check_spec(&good.replace("float32", "int64"), false);
        check_spec(&good.replace("\"dim\":4", "\"dim\":0"), false);
        check_spec(&good.replace("0.5", "1.5"), false);
        check_spec(r#"{"name":"m"}"#, false);
        check_spec("not json", false);
        let spec = ModelSpec::parse(good).expect("valid");
        assert_eq!(spec.id(), "m@1");
        assert_eq!(spec.document["metrics"], serde_json::json!({}));
    }
}
