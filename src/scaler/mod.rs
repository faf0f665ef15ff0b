//! Auto-scaler, the control path: observe -> decide (pure) -> actuate (runtime).
//!
//! - [`policy`] — policy files: raw serde types, validation, schema;
//! - [`decide`] — the pure decision function and its memory ([`decide::History`]).

pub mod decide;
pub mod policy;
