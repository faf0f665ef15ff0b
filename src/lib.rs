//! Gantry: a load balancer, response cache and auto-scaler for ML inference backends.
//!
//! Data path: request -> [`proxy`] (route, balance, retry) -> [`cache`] -> backend.
//! Control path: [`metrics`] -> [`scaler`] (policy -> decision) -> runtime.
//!
//! - [`bench`] — `gantry bench`: load generator, scenarios, SLO checks, JSON and HTML reports;
//! - [`admin`] — the admin API's wire types and its client (the proxy serves it; the scaler and CLI call it);
//! - [`client`] — a small HTTP/1 client for the control path;
//! - [`conn`] — client connection limits every listener shares: cap, head/body/idle timeouts;
//! - [`config`] — `gantry.yaml`: raw serde types -> validated `Config`, composing the cache and scaler sections;
//! - [`proxy`] — the Pingora service, pools, balancing, health, admin API;
//! - [`cache`] — the tiered response cache (memory, Redis, disk);
//! - [`scaler`] — scaling policies, the pure decision, runtimes (Docker, local);
//! - [`worker`] — the ONNX Runtime inference server;
//! - [`metrics`] — every metric name, and the host collector;
//! - [`telemetry`] — log set-up;
//! - [`yaml`] — YAML reading with file:line:column + field path for every error (a leaf).

pub mod admin;
pub mod bench;
pub mod cache;
pub mod client;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod proxy;
pub mod scaler;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod worker;
pub mod yaml;
