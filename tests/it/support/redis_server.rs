//! A real redis-server for tests: started on a free loopback port, no persistence, killed on drop.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running redis-server child process.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (users, passwords, TLS files).
    extra: Vec<String>,
    /// TLS only: the port is `--tls-port`, and readiness is an accepted connection.
    tls: bool,
}

impl RedisServer {
    /// Starts a server on a free port (another, if someone takes that one first).
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new(), false)
    }

    /// Starts a server with `extra` arguments; `tls`: on a TLS-only port.
    pub fn start_with(extra: Vec<String>, tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            extra,
            tls,
        };
        for _ in 0..5 {
            if s.spawn() {
                return s;
            }
            s.port = free_port();
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, waiting until it answers.
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "redis-server did not start again on {}",
            self.port
        );
    }

    /// Starts the server; true once it answers PING on its port. False if it
    /// exited (the port was taken meanwhile): then whatever listens there is
    /// not ours.
    fn spawn(&mut self) -> bool {
        self.kill();
        let port = self.port.to_string();
        let ports: &[&str] = match self.tls {
            true => &["--port", "0", "--tls-port", &port],
            false => &["--port", &port],
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(ports)
            .args(&self.extra)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            let ready = match self.tls {
                true => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
                false => pong(self.port),
            };
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not answer on {} within 10 s", self.port);
    }
}

/// Whether the server on `port` answers `PING` with `+PONG` (or `-NOAUTH`: it wants a password).
fn pong(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    c.write_all(b"PING\r\n").is_ok()
        && c.read_exact(&mut buf).is_ok()
        && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
