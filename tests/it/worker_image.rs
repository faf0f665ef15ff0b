//! The worker image against the real Docker engine: build it FROM scratch with
//! `docker/worker/build.sh`, run a container on a random loopback port, wait
//! for `/ready`, and check `/v1/analyze` gives the golden score.
//!
//! The image is staged from this test build's `gantry` binary (the same
//! script `make worker-image` runs on the release binary), so the test needs
//! no release build. Containers carry `gantry.test=true` and are removed
//! whatever happens.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::worker::{assert_golden_answer, ort_lib};
use crate::support::{client, root, until};

const IMAGE: &str = "gantry-worker:test";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker (is the Docker CLI installed?): {e}"))
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the container (and the test image) when the test ends, however it ends.
struct Cleanup(Option<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(id) = &self.0 {
            if std::thread::panicking() {
                let logs = docker(&["logs", "--tail", "30", id]);
                eprintln!("container logs:\n{}", String::from_utf8_lossy(&logs.stderr));
            }
            let _ = docker(&["rm", "-f", id]);
        }
        let _ = docker(&["rmi", IMAGE]);
    }
}

#[tokio::test]
async fn image_from_scratch_serves_the_golden_score() {
    ok(
        &docker(&["info", "--format", "{{.ServerVersion}}"]),
        "docker info (is the engine running?)",
    );
    let root = root();
    let context = root.join("target/worker-image-test");
    let mut cleanup = Cleanup(None);
    let build = Command::new(root.join("docker/worker/build.sh"))
        .arg(IMAGE)
        .env("GANTRY_BIN", env!("CARGO_BIN_EXE_gantry"))
        .env("ORT_DYLIB_PATH", ort_lib())
        .env("IMAGE_CONTEXT", &context)
        .output()
        .unwrap();
    ok(&build, "docker/worker/build.sh");
    let base = ok(
        &docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.Entrypoint}}",
            IMAGE,
        ]),
        "inspect",
    );
    assert!(
        base.contains("--model /models/phishing-url --listen 0.0.0.0:8000"),
        "{base}"
    );

    let id = ok(
        &docker(&[
            "run",
            "-d",
            "--label",
            "gantry.test=true",
            "-p",
            "127.0.0.1::8000",
            IMAGE,
        ]),
        "docker run",
    );
    cleanup.0 = Some(id.clone());
    let port = ok(&docker(&["port", &id, "8000/tcp"]), "docker port");
    let addr = port
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .expect("a loopback port");
    let base = format!("http://{addr}");

    // Wait for the model to load; fail early if the container dies.
    let (client, ready, id) = (&client(), &format!("{base}/ready"), &id);
    until("ready container", Duration::from_secs(60), || async move {
        if let Ok(r) = client.get(ready).send().await {
            if r.status() == 200 {
                return true;
            }
        }
        let running = ok(
            &docker(&["inspect", "--format", "{{.State.Running}}", id]),
            "inspect",
        );
        assert_eq!(running, "true", "the container exited");
        false
    })
    .await;

    let v = assert_golden_answer(&base).await;
    assert!(
        v["model"].as_str().unwrap().starts_with("phishing-url@"),
        "{v}"
    );
}
