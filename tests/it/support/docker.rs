//! Docker for the scaler tests: the image they scale, the containers of a pool, clean-up.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{fake_worker, sh};

fn docker(args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args(args);
    c
}

/// The image the Docker tests scale: `GANTRY_TEST_WORKER_IMAGE`, else the
/// real `gantry-worker:<version>` when built (`make worker-image`), else the
/// fake worker FROM scratch.
pub fn worker_image() -> (String, bool) {
    if let Ok(i) = std::env::var("GANTRY_TEST_WORKER_IMAGE") {
        return (i, true);
    }
    let real = format!("gantry-worker:{}", env!("CARGO_PKG_VERSION"));
    let found = Command::new("docker")
        .args(["image", "inspect", &real])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        (real, true)
    } else {
        (fake_image(), false)
    }
}

/// The fake worker as an image FROM scratch (nothing is pulled).
pub fn fake_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fake_worker(), dir.path().join("fake_worker")).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY fake_worker /fake_worker\nEXPOSE 8000\nENTRYPOINT [\"/fake_worker\"]\n",
        )
        .unwrap();
        let tag = "gantry-test-fake-worker:latest".to_string();
        sh(docker(&["build", "-q", "-t", &tag]).arg(dir.path()));
        tag
    })
    .clone()
}

/// Ids of the containers labelled with `pool`, running or not.
pub fn containers(pool: &str) -> Vec<String> {
    let out = sh(&mut docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=gantry.pool={pool}"),
    ]));
    let mut ids: Vec<String> = out.lines().map(String::from).collect();
    ids.sort();
    ids
}

/// Removes a test's containers and network even when the test fails.
pub struct DockerCleanup {
    pub pool: String,
    pub network: String,
    pub extra: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let mut ids = containers(&self.pool);
        ids.extend(self.extra.iter().cloned());
        if !ids.is_empty() {
            let _ = docker(&["rm", "-f"]).args(&ids).output();
        }
        let _ = docker(&["network", "rm", &self.network]).output();
    }
}

/// A short unique name.
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:x}{:x}", std::process::id(), n)
}
