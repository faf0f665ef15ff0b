//! What the integration tests share: `gantry` as a child process ([`gantry`]), test backends
//! ([`backend`]), load generators ([`load`]), Docker ([`docker`]), the in-process worker
//! ([`worker`]), a real redis-server ([`redis_server`]); ports, a client and polling here.
//!
//! `fake_worker.rs` is not a module: it is a std-only program that [`fake_worker`] compiles
//! with rustc, a stand-in for `gantry worker` in the scaler tests.

pub mod backend;
pub mod docker;
pub mod gantry;
pub mod load;
pub mod redis_server;
pub mod tmpfs;
pub mod worker;

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use gantry::Gantry;

/// Repository root (cargo runs the tests there too).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A free loopback port (bound and released; a child process binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// An HTTP client whose requests give up after 15 s.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// The first pause of [`until`] between checks; it doubles up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(10);
/// The longest pause of [`until`]: some checks start a process or post a request.
const POLL_MAX: Duration = Duration::from_millis(100);

/// What an [`until`] check gives: `true`, `Some(v)` or `Ok(v)` ends the wait; an `Err`
/// holds what was seen instead, shown if the wait runs out.
pub trait Ready {
    type Value;
    fn ready(self) -> Result<Self::Value, Option<String>>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Runs `check` until it is ready, pausing 10 ms after the first try and up to 100 ms
/// later on; panics after `within` saying what was awaited and what was seen last. The
/// pauses only pace the polling; the bound only catches a hang.
pub async fn until<R: Ready, F: Future<Output = R>>(
    what: impl Display,
    within: Duration,
    check: impl FnMut() -> F,
) -> R::Value {
    until_or(what, within, check, String::new).await
}

/// [`until`], adding `context()` (a log tail, say) to the panic message.
pub async fn until_or<R: Ready, F: Future<Output = R>>(
    what: impl Display,
    within: Duration,
    mut check: impl FnMut() -> F,
    context: impl Fn() -> String,
) -> R::Value {
    let deadline = Instant::now() + within;
    let mut pause = POLL_MIN;
    loop {
        let seen = match check().await.ready() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            let seen = seen.map_or(String::new(), |s| format!("; last seen: {s}"));
            panic!("no {what} within {within:?}{seen}\n{}", context());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// Whether process `pid` is alive (a zombie is not).
pub fn alive(pid: u32) -> bool {
    let pid = sysinfo::Pid::from_u32(pid);
    let mut sys = sysinfo::System::new();
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid)
        .is_some_and(|p| p.status() != sysinfo::ProcessStatus::Zombie)
}

/// The fake worker (`fake_worker.rs` beside this file), compiled statically with rustc
/// once per test process.
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
    let out = Command::new(std::env::current_exe().expect("test binary path"))
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

/// The value of the metric line starting with `prefix` in a `/metrics` text (0 when absent).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Asserts the Prometheus at `prom` loaded every alert of `dashboards/alerts.yml`, all healthy.
pub async fn assert_alert_rules_loaded(prom: &str) {
    let rules: serde_json::Value = client()
        .get(format!("{prom}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let in_file = std::fs::read_to_string(root().join("dashboards/alerts.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    assert_eq!(loaded.len(), in_file, "{rules}");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{rules}");
}

/// Runs `openssl` with `args` in `dir`; fails the test with its stderr.
pub fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate valid 30 days, made by `openssl` in `dir`:
/// subject `subj`, each of `extensions` added (`-addext`), key to `key`, certificate to `out`.
pub fn self_signed(dir: &std::path::Path, subj: &str, extensions: &[&str], key: &str, out: &str) {
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "30",
        "-subj",
        subj,
    ];
    for e in extensions {
        args.extend(["-addext", e]);
    }
    args.extend(["-keyout", key, "-out", out]);
    openssl(&args, dir);
}
