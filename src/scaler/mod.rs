//! Auto-scaler: YAML policies, a pure decision function, and container/process runtimes.
