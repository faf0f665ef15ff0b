//! Inference worker: ONNX Runtime sessions, dynamic batching and the HTTP API.

pub mod features;
