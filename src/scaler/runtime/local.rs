//! Local processes: `gantry worker` children on free loopback ports (the default of `make run`).
//!
//! Each child is owned by a waiter task that reports its exit as a death,
//! unless the scaler asked it to stop (SIGTERM, then SIGKILL after
//! [`STOP_GRACE`]). The children belong to the runtime value: its
//! [`Runtime::shutdown`] stops them all, and dropping it kills any left;
//! the kernel also sends them SIGTERM if gantry dies (`PR_SET_PDEATHSIG`).
//! A child's stderr is passed through to gantry's own, and its last
//! [`KEPT_LINES`] lines are kept so a death says why (the worker's
//! `error: ...` line). CPU and memory are the host's (sysinfo): the
//! children share it. A warm spare is a child marked so in memory; they all
//! stop with the runtime, so nothing else needs to remember it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sysinfo::{Pid, ProcessesToUpdate, Signal, System};
use tokio::sync::{broadcast, oneshot};

use super::{
    http_ready, last_words, probe_client, truncate, Death, Listing, Replica, ReplicaSpec, Runtime,
    RuntimeError, Usage, WORDS_MAX,
};
use crate::client::HttpClient;
use crate::scaler::config::LocalConfig;

/// Time a stopped child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Lines of a child's stderr kept to explain its exit.
pub const KEPT_LINES: usize = 20;
/// Longest stderr line passed through whole; longer ones are split.
const LINE_MAX: usize = 8 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn signal(pids: &[u32], sig: Signal) {
    if pids.is_empty() {
        return;
    }
    let pids: Vec<Pid> = pids.iter().map(|p| Pid::from_u32(*p)).collect();
    let mut sys = System::new();
    sys.refresh_processes(ProcessesToUpdate::Some(&pids), true);
    for pid in pids {
        if let Some(p) = sys.process(pid) {
            p.kill_with(sig);
        }
    }
}

struct Child {
    replica: Replica,
    /// A warm spare, not yet promoted.
    warm: bool,
    pid: u32,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

/// The local-process runtime.
pub struct LocalRuntime {
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// Children still running: the waiter of each removes it when it exits.
    children: Arc<Mutex<BTreeMap<String, Child>>>,
    deaths: broadcast::Sender<Death>,
    client: HttpClient,
    host: Mutex<Option<System>>,
}

impl LocalRuntime {
    /// A runtime running `config`'s program (this binary by default).
    pub fn new(config: &LocalConfig) -> Result<LocalRuntime, RuntimeError> {
        let program = match &config.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|source| RuntimeError::Spawn {
                command: "gantry".into(),
                cause: source,
            })?,
        };
        Ok(LocalRuntime {
            program,
            args: config.args.clone(),
            env: config.env.clone(),
            children: Arc::new(Mutex::new(BTreeMap::new())),
            deaths: broadcast::channel(64).0,
            client: probe_client(),
            host: Mutex::new(None),
        })
    }

    fn args_for(&self, port: u16, model: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        if !self.args.iter().any(|a| a.contains("{port}")) {
            args.extend(["--listen".to_string(), format!("127.0.0.1:{port}")]);
        }
        if let Some(model) = model {
            match args.iter().position(|a| a == "--model") {
                Some(i) if i + 1 < args.len() => args[i + 1] = model.to_string(),
                _ => args.extend(["--model".to_string(), model.to_string()]),
            }
        }
        args
    }
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        let children = std::mem::take(&mut *lock(&self.children));
        // Only children still running are here (each is removed as it exits),
        // so no pid the kernel has handed to another process is signalled.
        let pids: Vec<u32> = children.values().map(|c| c.pid).collect();
        signal(&pids, Signal::Kill);
    }
}

/// A port that was free a moment ago.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn sets_model(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "local"
    }

    async fn list(&self, pool: &str) -> Result<Listing, RuntimeError> {
        let mut out = Listing::default();
        for c in lock(&self.children)
            .values()
            .filter(|c| c.replica.pool == pool)
        {
            let to = if c.warm {
                &mut out.warm
            } else {
                &mut out.serving
            };
            to.push(c.replica.clone());
        }
        Ok(out)
    }

    async fn promote(&self, warm: &Replica) -> Result<(), RuntimeError> {
        match lock(&self.children).get_mut(&warm.id) {
            Some(c) if c.warm => {
                c.warm = false;
                Ok(())
            }
            _ => Err(RuntimeError::Other(format!(
                "no warm worker process {}",
                warm.id
            ))),
        }
    }

    async fn start(&self, spec: &ReplicaSpec) -> Result<Replica, RuntimeError> {
        let command = self.program.display().to_string();
        let spawn_err = |source| RuntimeError::Spawn {
            command: command.clone(),
            cause: source,
        };
        let port = free_port().map_err(spawn_err)?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(self.args_for(port, spec.model.as_deref()))
            .envs(&self.env)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
        // SIGTERM to the child when gantry dies, even by SIGKILL, so workers
        // are never orphaned. (The signal follows the spawning thread: this
        // runs on a runtime worker thread, which lives as long as the runtime.)
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(spawn_err)?;
        let pid = child.id().unwrap_or_default();
        let stderr = child
            .stderr
            .take()
            .map(|e| tokio::spawn(pass_through(e, tokio::io::stderr())));
        let replica = Replica {
            id: format!("local-{pid}"),
            pool: spec.pool.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<oneshot::Sender<()>>();
        lock(&self.children).insert(
            replica.id.clone(),
            Child {
                replica: replica.clone(),
                warm: spec.warm,
                pid,
                stop: Some(stop_tx),
            },
        );
        let deaths = self.deaths.clone();
        let children = self.children.clone();
        let r = replica.clone();
        tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let lines = match stderr {
                        // EOF follows the exit, unless a grandchild holds the pipe.
                        Some(t) => tokio::time::timeout(Duration::from_secs(1), t)
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or_default(),
                        None => Default::default(),
                    };
                    let reason = match last_words(lines.iter().map(String::as_str)) {
                        Some(words) => format!("{status}: {words}"),
                        None => status,
                    };
                    tracing::warn!(replica = %r.id, reason = %reason, "Worker process exited");
                    // The death first: a list that no longer has the child
                    // finds its death (and reason) already sent.
                    let id = r.id.clone();
                    let _ = deaths.send(Death { replica: r, reason });
                    lock(&children).remove(&id);
                }
                ack = stop_rx => {
                    signal(&[pid], Signal::Term);
                    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    if let Ok(ack) = ack {
                        let _ = ack.send(());
                    }
                }
            }
        });
        Ok(replica)
    }

    async fn stop(&self, replica: &Replica) -> Result<(), RuntimeError> {
        let child = lock(&self.children).remove(&replica.id);
        let Some(stop) = child.and_then(|mut c| c.stop.take()) else {
            return Ok(());
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        if stop.send(ack_tx).is_ok() {
            let _ = ack_rx.await;
        }
        Ok(())
    }

    async fn ready(&self, replica: &Replica) -> bool {
        http_ready(&self.client, replica.addr).await
    }

    async fn usage(&self, replicas: &[Replica]) -> Vec<Usage> {
        let mut host = lock(&self.host);
        let usage = match host.as_mut() {
            None => {
                let mut sys = System::new();
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                *host = Some(sys);
                Usage::default()
            }
            Some(sys) => {
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                let total = sys.total_memory() as f64;
                Usage {
                    cpu_percent: Some(f64::from(sys.global_cpu_usage())),
                    memory_percent: (total > 0.0)
                        .then(|| (total - sys.available_memory() as f64) / total * 100.0),
                }
            }
        };
        vec![usage; replicas.len()]
    }

    fn deaths(&self) -> broadcast::Receiver<Death> {
        self.deaths.subscribe()
    }

    async fn shutdown(&self) {
        let all: Vec<Replica> = lock(&self.children)
            .values()
            .map(|c| c.replica.clone())
            .collect();
        if !all.is_empty() {
            tracing::info!(workers = all.len(), "Stopping local workers");
        }
        futures::future::join_all(all.iter().map(|r| self.stop(r))).await;
    }
}

/// Copies a child's stderr to `out` (ours) until EOF; returns the last
/// [`KEPT_LINES`] lines (each cut to [`WORDS_MAX`] bytes).
async fn pass_through(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut out: impl tokio::io::AsyncWrite + Unpin,
) -> VecDeque<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut kept = VecDeque::with_capacity(KEPT_LINES);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let keep = |line: &[u8], kept: &mut VecDeque<String>| {
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        kept.push_back(truncate(text, WORDS_MAX));
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = out.write_all(&buf[..n]).await;
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            keep(&line, &mut kept);
        }
        if pending.len() > LINE_MAX {
            keep(&pending, &mut kept);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        keep(&pending, &mut kept);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policys_model_replaces_the_workers_model_argument() {
        let runtime = |args: &[&str]| {
            LocalRuntime::new(&LocalConfig {
                program: Some(PathBuf::from("gantry")),
                args: args.iter().map(|a| a.to_string()).collect(),
                env: BTreeMap::new(),
            })
            .unwrap()
        };
        let shipped = runtime(&["worker", "--model", "models/phishing-url"]);
        assert_eq!(
            shipped.args_for(9000, Some("var/models/next")),
            [
                "worker",
                "--model",
                "var/models/next",
                "--listen",
                "127.0.0.1:9000"
            ]
        );
        assert_eq!(
            shipped.args_for(9000, None),
            [
                "worker",
                "--model",
                "models/phishing-url",
                "--listen",
                "127.0.0.1:9000"
            ]
        );
        let bare = runtime(&["worker", "--listen", "127.0.0.1:{port}"]);
        assert_eq!(
            bare.args_for(9001, Some("m")),
            ["worker", "--listen", "127.0.0.1:9001", "--model", "m"]
        );
    }

    #[tokio::test]
    async fn pass_through_keeps_the_last_lines_bounded() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str(&"x".repeat(3 * LINE_MAX));
        text.push_str("\nerror: the end");
        let mut out = Vec::new();
        let kept = pass_through(text.as_bytes(), &mut out).await;
        assert_eq!(out, text.as_bytes(), "passed through whole");
        assert_eq!(kept.len(), KEPT_LINES);
        assert_eq!(kept.back().map(String::as_str), Some("error: the end"));
        assert!(kept.iter().all(|l| l.len() <= WORDS_MAX + 3));
        assert_eq!(
            last_words(kept.iter().map(String::as_str)).as_deref(),
            Some("error: the end")
        );
    }
}
