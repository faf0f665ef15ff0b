//! What the integration tests share: test backends, the `gantry` binary as a child process,
//! the in-process worker, a real redis-server.
//!
//! `fake_worker.rs` is not a module: it is a std-only program the scaler tests compile with
//! rustc and run as a worker.

pub mod backend;
pub mod gantry;
pub mod redis_server;
pub mod worker;

/// Whether the test body should run here. Outside its own process, runs the test
/// `module::test` of this binary again in a process of its own (checking that it passed)
/// and returns false; in that process, returns true.
///
/// For a test that asserts exact values of the process-wide metrics registry, which
/// every test that runs gantry code in this process counts into.
pub fn in_own_process(module: &str, test: &str) -> bool {
    const VAR: &str = "GANTRY_IT_OWN_PROCESS";
    // `module_path!()` starts with the crate (`it::`); libtest names start after it.
    let module = module.split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::{test}");
    if std::env::var(VAR).is_ok_and(|v| v == name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args([&name, "--exact", "--test-threads=1"])
        .env(VAR, &name)
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its own process:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
