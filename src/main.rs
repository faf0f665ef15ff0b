//! Gantry command line.
fn main() {}
