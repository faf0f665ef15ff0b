//! The real `gantry` binary as a child process: `gantry proxy`, `gantry up` or `gantry scaler`
//! on a config in a temp dir, logging to a file there, stopped (SIGTERM) on drop.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{alive, client, free_port, signal, until_or, Ready};

/// Longest a child takes to serve after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest [`Gantry::terminate`] waits after SIGTERM before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The `gantry` binary, for one-shot subcommands (`check`, `status`, `worker`, ...).
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
}

/// A `gantry` child to start: made by [`Gantry::proxy`] or [`Gantry::up`].
pub struct Launch {
    subcommand: &'static str,
    yaml: String,
    policies: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// Also writes `policies/<file>` (the config names the directory `{dir}/policies`).
    pub fn policy(mut self, file: &str, text: &str) -> Launch {
        self.policies.push((file.into(), text.into()));
        self
    }

    /// Also sets `key=value` in the child's environment.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the child and waits until it serves: its admin API answers and, for
    /// `gantry proxy`, its traffic port accepts. (`gantry up` opens the traffic port once
    /// the first replicas are ready; tests wait for those themselves.)
    pub async fn start(self) -> Gantry {
        let g = self.spawn();
        g.wait_ready().await;
        g
    }

    /// Writes the files and starts the child without waiting for anything.
    pub fn spawn(self) -> Gantry {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for (name, text) in &self.policies {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        let (port, admin) = (free_port(), free_port());
        let config = format!(
            "listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n{}",
            self.yaml.replace("{dir}", dir.path().to_str().unwrap())
        );
        let path = dir.path().join("gantry.yaml");
        std::fs::write(&path, config).unwrap();
        let mut g = Gantry {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            args: vec![self.subcommand.into(), "--config".into(), path.into()],
            env: self.env,
            log: dir.path().join("gantry.log"),
            traffic: self.subcommand == "proxy",
            dir: Arc::new(dir),
        };
        g.respawn();
        g
    }
}

/// A running `gantry` child; SIGTERM (then SIGKILL after 15 s) when dropped.
pub struct Gantry {
    /// The process, until it is stopped or has exited.
    child: Option<Child>,
    /// The proxy's traffic listener, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin API, `http://127.0.0.1:PORT` (for `gantry scaler`: its status listener).
    pub admin: String,
    /// `gantry.yaml`, `policies/` and the logs; the child's working directory.
    dir: Arc<tempfile::TempDir>,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    /// stderr of every start of the child, appended.
    log: PathBuf,
    /// Whether [`Gantry::wait_ready`] also waits for the traffic port.
    traffic: bool,
}

impl Gantry {
    /// `gantry proxy` on `yaml`: the config after the `listen:` and `admin:` lines the
    /// harness writes (`admin:` last, so `yaml` may continue it).
    pub fn proxy(yaml: &str) -> Launch {
        Gantry::launch("proxy", yaml)
    }

    /// `gantry up` on `yaml`, written like [`Gantry::proxy`]'s.
    pub fn up(yaml: &str) -> Launch {
        Gantry::launch("up", yaml)
    }

    fn launch(subcommand: &'static str, yaml: &str) -> Launch {
        Launch {
            subcommand,
            yaml: yaml.into(),
            policies: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `gantry scaler` for this proxy: its config and policies, through its admin API, with
    /// a status listener of its own (in [`Gantry::admin`]); logs to `scaler.log`. Not waited for.
    pub fn scaler(&self) -> Gantry {
        self.scaler_logging_to("scaler.log")
    }

    /// [`Gantry::scaler`], logging to `log` in the same directory (for a second scaler).
    pub fn scaler_logging_to(&self, log: &str) -> Gantry {
        let status = format!("127.0.0.1:{}", free_port());
        let mut args = self.args.clone();
        args[0] = "scaler".into();
        args.extend(["--admin".into(), (&self.admin).into(), "--listen".into()]);
        args.push((&status).into());
        let mut g = Gantry {
            child: None,
            url: self.url.clone(),
            admin: format!("http://{status}"),
            dir: self.dir.clone(),
            args,
            env: self.env.clone(),
            log: self.dir.path().join(log),
            traffic: false,
        };
        g.respawn();
        g
    }

    /// Starts (again) the same child, appending to its log.
    pub fn respawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = command()
            .args(&self.args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,pingora=warn")
            // Workers find ONNX Runtime by themselves unless a test says where.
            .env_remove("ORT_DYLIB_PATH")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the child serves (see [`Launch::start`]); panics with the log if it
    /// exits first or takes longer than 20 s.
    pub async fn wait_ready(&self) {
        let pid = self.pid();
        let (health, traffic) = (format!("{}/health", self.admin), self.traffic_addr());
        let c = client();
        self.until("gantry serving", START_TIMEOUT, || {
            let (c, health, traffic) = (c.clone(), health.clone(), traffic.clone());
            async move {
                assert!(alive(pid), "gantry exited before it served");
                let admin_ok = c.get(health).send().await.is_ok();
                let traffic_ok = match traffic {
                    Some(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                    None => true,
                };
                admin_ok && traffic_ok
            }
        })
        .await;
    }

    fn traffic_addr(&self) -> Option<String> {
        self.traffic
            .then(|| self.url.trim_start_matches("http://").to_string())
    }

    /// The child's process id; panics once it has been stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gantry is running").id()
    }

    /// [`super::until`], with the tail of the log in the panic message.
    pub async fn until<R: Ready, F: std::future::Future<Output = R>>(
        &self,
        what: impl std::fmt::Display,
        within: Duration,
        check: impl FnMut() -> F,
    ) -> R::Value {
        until_or(what, within, check, || self.tail()).await
    }

    /// The admin token the proxy generated (none was configured).
    pub fn admin_token(&self) -> String {
        gantry::admin::token::read_for(&self.admin).expect("a generated admin token on file")
    }

    /// Everything the child wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The child's working directory (`gantry.yaml`, `policies/`, logs; `{dir}` in the config).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Where the policy file `name` is.
    pub fn policy_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("policies").join(name)
    }

    /// `GET /admin/pools` as JSON.
    pub async fn pools(&self) -> Result<serde_json::Value, reqwest::Error> {
        client()
            .get(format!("{}/admin/pools", self.admin))
            .send()
            .await?
            .json()
            .await
    }

    /// Members of `pool` as (addr, state); none while the admin API does not answer.
    pub async fn members(&self, pool: &str) -> Vec<(String, String)> {
        members(&self.pools().await.unwrap_or_default(), pool)
    }

    /// State of `addr` in `pool`, if listed; panics if the admin API does not answer.
    pub async fn backend_state(&self, pool: &str, addr: SocketAddr) -> Option<String> {
        let pools = self.pools().await.expect("GET /admin/pools");
        members(&pools, pool)
            .into_iter()
            .find(|(a, _)| *a == addr.to_string())
            .map(|(_, state)| state)
    }

    /// Polls until the state of `addr` in `pool` is `want` (`None`: not listed), or
    /// panics after 10 s.
    pub async fn wait_state(&self, pool: &str, addr: SocketAddr, want: Option<&str>) {
        let what = format!("{addr} in state {want:?}");
        self.until(what, Duration::from_secs(10), || async move {
            let got = self.backend_state(pool, addr).await;
            if got.as_deref() == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        })
        .await;
    }

    /// Backends of `pool` that are up.
    pub async fn count_up(&self, pool: &str) -> usize {
        self.members(pool)
            .await
            .iter()
            .filter(|m| m.1 == "up")
            .count()
    }

    /// Polls until `pool` has exactly `n` members, all up, or panics after `secs`.
    pub async fn wait_up(&self, pool: &str, n: usize, secs: u64) {
        let what = format!("{n} members of {pool}, all up");
        self.until(what, Duration::from_secs(secs), || async move {
            let m = self.members(pool).await;
            if m.len() == n && m.iter().all(|m| m.1 == "up") {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        })
        .await;
    }

    /// `GET /metrics` of the admin API.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Successful upstream responses per backend of `pool`, from the proxy's metrics.
    pub async fn served(&self, pool: &str) -> HashMap<String, f64> {
        let text = self.metrics().await;
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

    /// Polls until `n` backends of `pool` have each served more than in `before` (a
    /// [`Gantry::served`] reading), or panics after `within`: traffic reaches all of them.
    pub async fn wait_spread(
        &self,
        pool: &str,
        n: usize,
        before: &HashMap<String, f64>,
        within: Duration,
    ) {
        let what = format!("traffic on {n} backends of {pool}");
        self.until(what, within, || async move {
            let now = self.served(pool).await;
            let busy = now
                .iter()
                .filter(|(b, v)| **v > before.get(*b).copied().unwrap_or(0.0))
                .count();
            if busy >= n {
                Ok(())
            } else {
                Err(format!("{before:?} -> {now:?}"))
            }
        })
        .await;
    }

    /// The scaler's recent decisions for `pool` (`GET /admin/scaler`), oldest first.
    pub async fn decisions(&self, pool: &str) -> Vec<gantry::admin::Decision> {
        let journal = gantry::admin::client::AdminClient::new(&self.admin, None)
            .scaler()
            .await
            .expect("GET /admin/scaler");
        journal
            .get(pool)
            .map(|j| j.decisions.clone())
            .unwrap_or_default()
    }

    /// Checks, in the scaler's journal, that `pool`'s first scale-down after its last
    /// scale-up came after the scaler had held at least once for the scale-down
    /// stabilization window (it wanted fewer replicas and waited), whatever the clock.
    pub async fn assert_shrank_after_stabilizing(&self, pool: &str) {
        let decisions = self.decisions(pool).await;
        let last_up = decisions.iter().rposition(|d| d.direction == "up");
        let after_up = &decisions[last_up.map_or(0, |i| i + 1)..];
        let down = after_up.iter().position(|d| d.direction == "down");
        let down = down.unwrap_or_else(|| panic!("no scale-down in {decisions:#?}"));
        let held = after_up[..down]
            .iter()
            .any(|d| d.reason == "stabilizing" && d.message.contains("wants down"));
        assert!(
            held,
            "shrank without waiting for the stabilization window: {decisions:#?}"
        );
    }

    /// Pids of the processes the child started whose name contains `name`.
    pub fn children(&self, name: &str) -> Vec<u32> {
        let parent = sysinfo::Pid::from_u32(self.pid());
        let mut sys = sysinfo::System::new();
        sys.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
        sys.processes()
            .values()
            .filter(|p| p.parent() == Some(parent) && p.thread_kind().is_none())
            .filter(|p| p.name().to_string_lossy().contains(name))
            .map(|p| p.pid().as_u32())
            .collect()
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: sysinfo::Signal) {
        signal(self.pid(), sig);
    }

    /// Waits until the child has exited, or panics after `within`; reaps it.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let pid = self.pid();
        self.until("exit", within, || async move { !alive(pid) })
            .await;
        self.child.take().unwrap().wait().unwrap()
    }

    /// SIGTERM and wait (SIGKILL after 15 s).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), sysinfo::Signal::Term);
            let deadline = Instant::now() + STOP_TIMEOUT;
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

    /// A lease takeover: crashes this scaler (the leader), waits until
    /// `standby` leads with `up` members of `pool` up, then gives it two
    /// seconds in which a wrong move (a replica started or stopped) would show.
    pub async fn crash_until_standby_leads(&mut self, standby: &Gantry, pool: &str, up: usize) {
        self.crash();
        standby
            .until(
                "the standby leads",
                Duration::from_secs(30),
                || async move {
                    standby.log().contains("Leading: this scaler acts")
                        && standby.count_up(pool).await == up
                },
            )
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Members of `pool` in a `GET /admin/pools` answer, as (addr, state).
fn members(pools: &serde_json::Value, pool: &str) -> Vec<(String, String)> {
    pools
        .as_array()
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
