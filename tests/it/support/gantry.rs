//! Scaler test support: the fake worker (binary and image), `gantry up` as a child, a load generator, Docker clean-up.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fake worker, compiled statically with rustc once per test binary.
pub fn fake_worker() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = root().join("tests/it/support/fake_worker.rs");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gantry-fake-worker");
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let status = Command::new(rustc)
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("rustc runs");
        assert!(status.success(), "building the fake worker failed");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
    .clone()
}

/// Runs a command, panicking with its output on failure; returns stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: sysinfo::Signal) {
    let pid = sysinfo::Pid::from_u32(pid);
    let mut sys = sysinfo::System::new();
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    if let Some(p) = sys.process(pid) {
        p.kill_with(sig);
    }
}

/// `gantry up` with a config and a policy directory in a temp dir; logs to `gantry.log` there.
pub struct Up {
    pub child: Option<Child>,
    pub url: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub config: String,
}

impl Up {
    /// Writes `pools_routes_scaler` (YAML after the listen lines) and the
    /// policies (`name`, text), starts `gantry up` and waits for its admin API.
    pub async fn start(
        pools_routes_scaler: &str,
        policies: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Up {
        let up = Up::launch(pools_routes_scaler, policies, env);
        up.wait_admin().await;
        up
    }

    /// Like [`Up::start`], without waiting for anything.
    pub fn launch(
        pools_routes_scaler: &str,
        policies: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Up {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for (name, text) in policies {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        let (port, admin) = (free_port(), free_port());
        let config = format!(
            "listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n{}",
            pools_routes_scaler.replace("{dir}", dir.path().to_str().unwrap())
        );
        std::fs::write(dir.path().join("gantry.yaml"), &config).unwrap();
        let mut up = Up {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            dir,
            config,
        };
        up.spawn(env);
        up
    }

    /// Starts (again) the same `gantry up`, appending to the log.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("gantry.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["up", "--config"])
            .arg(self.dir.path().join("gantry.yaml"))
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,pingora=warn")
            // Workers find ONNX Runtime by themselves unless a test says where.
            .env_remove("ORT_DYLIB_PATH")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub async fn wait_admin(&self) {
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if c.get(format!("{}/health", self.admin)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gantry up did not start:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gantry.log")).unwrap_or_default()
    }

    pub fn policy_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("policies").join(name)
    }

    /// Members of `pool` as (addr, state).
    pub async fn members(&self, pool: &str) -> Vec<(String, String)> {
        let Ok(r) = client()
            .get(format!("{}/admin/pools", self.admin))
            .send()
            .await
        else {
            return vec![];
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v.as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == pool))
            .and_then(|p| p["backends"].as_array())
            .map(|b| {
                b.iter()
                    .map(|b| {
                        (
                            b["addr"].as_str().unwrap_or_default().to_string(),
                            b["state"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Backends of `pool` that are up.
    pub async fn up(&self, pool: &str) -> usize {
        self.members(pool)
            .await
            .iter()
            .filter(|m| m.1 == "up")
            .count()
    }

    /// Polls until `pool` has exactly `n` members, all up, or panics after `secs`.
    pub async fn wait_up(&self, pool: &str, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let m = self.members(pool).await;
            if m.len() == n && m.iter().all(|m| m.1 == "up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pool {pool}: wanted {n} up, have {m:?}\n{}",
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Successful upstream responses per backend of `pool`, from the proxy's metrics.
    pub async fn served(&self, pool: &str) -> HashMap<String, f64> {
        let text = client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut out = HashMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("gantry_upstream_requests_total{") else {
                continue;
            };
            if !rest.contains(&format!("pool=\"{pool}\"")) || !rest.contains("outcome=\"ok\"") {
                continue;
            }
            let backend = rest
                .split("backend=\"")
                .nth(1)
                .and_then(|r| r.split('"').next());
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(b), Some(v)) = (backend, value) {
                out.insert(b.to_string(), v);
            }
        }
        out
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM and wait (SIGKILL after 15 s).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), sysinfo::Signal::Term);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL, as a crash: nothing is cleaned up.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Pids of the processes `up` started whose name contains `name`.
pub fn children(up: &Up, name: &str) -> Vec<u32> {
    let parent = sysinfo::Pid::from_u32(up.child.as_ref().unwrap().id());
    let mut sys = sysinfo::System::new();
    sys.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
    sys.processes()
        .values()
        .filter(|p| p.parent() == Some(parent) && p.thread_kind().is_none())
        .filter(|p| p.name().to_string_lossy().contains(name))
        .map(|p| p.pid().as_u32())
        .collect()
}

/// Whether process `pid` is alive (a zombie is not).
pub fn alive(pid: u32) -> bool {
    let pid = sysinfo::Pid::from_u32(pid);
    let mut sys = sysinfo::System::new();
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid)
        .is_some_and(|p| p.status() != sysinfo::ProcessStatus::Zombie)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: usize,
    pub failed: Vec<String>,
    /// Responses per `x-backend` (fake worker) or per `via` backend header.
    pub backends: HashMap<String, usize>,
}

/// Closed-loop load: `concurrency` clients POSTing `body` until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, concurrency: usize, body: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let c = client();
        let tasks = (0..concurrency)
            .map(|_| {
                let (stop, report, c) = (stop.clone(), report.clone(), c.clone());
                let (url, body) = (url.to_string(), body.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = c.post(&url).body(body.clone()).send().await;
                        let mut rep = report.lock().unwrap();
                        match r {
                            Ok(r) if r.status() == 200 => {
                                rep.ok += 1;
                                if let Some(b) = r.headers().get("x-backend") {
                                    let b = b.to_str().unwrap_or_default().to_string();
                                    *rep.backends.entry(b).or_default() += 1;
                                }
                            }
                            Ok(r) => rep.failed.push(format!("status {}", r.status())),
                            Err(e) => rep.failed.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            tasks,
        }
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.report.lock().unwrap())
    }

    /// Successful responses so far.
    pub fn ok(&self) -> usize {
        self.report.lock().unwrap().ok
    }
}
