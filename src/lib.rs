//! TEMPORARY SCAFFOLD (helper/model): only so `cargo test` can build
//! `src/worker/features.rs` and `tests/model_golden.rs` in this branch. The
//! real crate root lives on main; when merging, keep main's `lib.rs` and add
//! nothing from this file except making sure `worker::features` is public.
pub mod worker {
    pub mod features;
}
