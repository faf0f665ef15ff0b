//! Docker for the scaler tests: the image they scale, the containers of a pool, clean-up.
//!
//! Every container a test starts through gantry belongs to a test-only
//! deployment ([`test_deployment`], [`test_peer_deployment`]): `make
//! clean-containers` removes those and nothing else.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{fake_worker, root, sh};

/// `scaler.deployment` of every test config: `GANTRY_TEST_DEPLOYMENT` (`make
/// test` sets it), else `gantry-test-<checkout directory name>`, what `make
/// clean-containers` computes too. Per checkout, so a test run cleaning up
/// never removes another checkout's test containers on a shared engine.
pub fn test_deployment() -> String {
    if let Ok(d) = std::env::var("GANTRY_TEST_DEPLOYMENT") {
        return d;
    }
    let dir = root().file_name().unwrap_or_default().to_string_lossy();
    let dir: String = dir
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .take(40)
        .collect();
    format!("gantry-test-{dir}")
}

/// A second test deployment on the same engine; `make clean-containers` removes it too.
pub fn test_peer_deployment() -> String {
    format!("{}-peer", test_deployment())
}

/// The Docker tests run one at a time: they share the engine, and one of
/// them runs `make clean-containers`, which removes every test container.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// The real worker image (the model, ONNX Runtime): `GANTRY_TEST_WORKER_IMAGE`,
/// else `gantry-worker:<version>` when built, else one built here by
/// `docker/worker/build.sh` from this test build's binary, removed when the
/// returned guard drops.
pub fn real_worker_image() -> (String, ImageCleanup) {
    let (image, real) = worker_image();
    if real {
        return (image, ImageCleanup(None));
    }
    let tag = format!("gantry-worker:{}", unique("test-"));
    let out = Command::new(root().join("docker/worker/build.sh"))
        .arg(&tag)
        .env("GANTRY_BIN", env!("CARGO_BIN_EXE_gantry"))
        .env("ORT_DYLIB_PATH", super::worker::ort_lib())
        .env(
            "IMAGE_CONTEXT",
            root().join("target").join(tag.replace(':', "-")),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker/worker/build.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (tag.clone(), ImageCleanup(Some(tag)))
}

/// Removes an image a test built for itself.
pub struct ImageCleanup(Option<String>);

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        if let Some(tag) = &self.0 {
            let _ = docker(&["rmi", "-f", tag]).output();
            let _ = std::fs::remove_dir_all(root().join("target").join(tag.replace(':', "-")));
        }
    }
}

/// Ids of the containers labelled with `pool`, running or not.
pub fn containers(pool: &str) -> Vec<String> {
    ps(&[format!("label=gantry.pool={pool}")])
}

/// Ids of `pool`'s containers in `deployment`, running or not.
pub fn deployment_containers(pool: &str, deployment: &str) -> Vec<String> {
    ps(&[
        format!("label=gantry.pool={pool}"),
        format!("label=gantry.deployment={deployment}"),
    ])
}

/// Sorted full ids of the containers matching every filter.
fn ps(filters: &[String]) -> Vec<String> {
    let mut cmd = docker(&["ps", "-aq", "--no-trunc"]);
    for f in filters {
        cmd.args(["--filter", f]);
    }
    let mut ids: Vec<String> = sh(&mut cmd).lines().map(String::from).collect();
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

/// A unique pool name (from `prefix`), its network and their clean-up guard.
pub fn names(prefix: &str) -> (String, String, DockerCleanup) {
    let pool = unique(prefix);
    let network = format!("gantry-test-{pool}");
    let guard = DockerCleanup {
        pool: pool.clone(),
        network: network.clone(),
        extra: Vec::new(),
    };
    (pool, network, guard)
}

/// A short unique name.
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:x}{:x}", std::process::id(), n)
}
