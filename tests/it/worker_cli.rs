//! `gantry worker` as the scaler runs it: a child process that prints its
//! address, serves, and exits cleanly on SIGTERM; and a clear error, not a
//! panic, when libonnxruntime.so is missing; found without help where
//! `make onnxruntime` put it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::client;
use crate::support::gantry::command;
use crate::support::worker::{assert_golden_answer, model_dir, ort_lib};

#[test]
fn missing_onnxruntime_is_a_clear_error() {
    let out = command()
        .args(["worker", "--model"])
        .arg(model_dir())
        .args(["--ort-lib", "/nonexistent/libonnxruntime.so"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(stderr.contains("make onnxruntime"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Kills the child if the test fails before it exits.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn child_process_prints_its_address_serves_and_stops_on_sigterm() {
    let mut cmd = command();
    cmd.arg("worker").arg("--ort-lib").arg(ort_lib());
    serve_and_stop(cmd).await;
}

/// Without `--ort-lib` or `ORT_DYLIB_PATH` the worker finds the library
/// `make onnxruntime` placed in the tree it was built from.
#[tokio::test]
async fn worker_finds_onnxruntime_without_being_told_where() {
    let mut cmd = command();
    cmd.arg("worker").env_remove("ORT_DYLIB_PATH");
    serve_and_stop(cmd).await;
}

/// Runs `cmd` (`gantry worker ...`) on a free port: it prints its address, answers the
/// golden score, and exits 0 on SIGTERM.
async fn serve_and_stop(mut cmd: Command) {
    let mut child = Reap(
        cmd.args(["--listen", "127.0.0.1:0", "--model"])
            .arg(model_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Blocking reads are fine here: nothing else runs on this test's runtime.
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("gantry worker listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    assert_eq!(
        client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_golden_answer(&base).await;

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn tune_prints_a_table_and_a_recommendation() {
    let out = command()
        .args([
            "worker",
            "--tune",
            "--tune-duration",
            "50ms",
            "--tune-concurrency",
            "4",
            "--model",
        ])
        .arg(model_dir())
        .arg("--ort-lib")
        .arg(ort_lib())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("batch  delay    req/s"), "{stdout}");
    let rows = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .count();
    assert_eq!(rows, gantry::worker::tune::grid().len(), "{stdout}");
    assert!(
        stdout.contains("Recommended: --max-batch-size") || stdout.contains("No setting meets"),
        "{stdout}"
    );
}
