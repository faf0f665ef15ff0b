//! Gantry: a load balancer, response cache and auto-scaler for ML inference backends.
//!
//! Data path: request -> [`proxy`] (route, balance, retry) -> [`cache`] -> backend.
//! Control path: [`metrics`] -> [`scaler`] (policy -> decision) -> runtime.
//!
//! - [`config`] — `gantry.yaml`: raw serde types -> validated `Config`, composing the cache and scaler sections;
//! - [`proxy`] — the Pingora service, pools, balancing, health, admin API;
//! - [`cache`] — the tiered response cache (memory, Redis, disk);
//! - [`scaler`] — scaling policies, the pure decision, runtimes (Docker, local);
//! - [`worker`] — the ONNX Runtime inference server;
//! - [`metrics`] — every metric name, and the host collector;
//! - [`telemetry`] — log set-up;
//! - [`yaml`] — YAML reading with file:line:column + field path for every error (a leaf).

pub mod cache;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod scaler;
pub mod telemetry;
pub mod worker;
pub mod yaml;
