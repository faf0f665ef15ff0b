//! The proxy's background tasks: each starts with a shutdown signal and is awaited on shutdown.
//!
//! A task that panics is logged and stops the process (exit code
//! [`EXIT_PANIC`]): a proxy whose health checks or scaler silently died
//! would keep serving on stale state, which is worse than a restart by its
//! supervisor. A task that ends on its own is logged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// Turns `true` when the proxy stops; a task should then finish and return.
pub type Shutdown = watch::Receiver<bool>;

/// A future that runs beside the proxy.
pub type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A task not yet started: given its shutdown signal, the future to run.
pub type Task = Box<dyn FnOnce(Shutdown) -> TaskFuture + Send>;

/// The exit code after a background task panicked.
pub const EXIT_PANIC: i32 = 70;

/// Resolves when `shutdown` holds `true` or its sender is gone.
pub async fn stopping(shutdown: &mut Shutdown) {
    let _ = shutdown.wait_for(|v| *v).await;
}

/// Runs `fut` until it ends or `shutdown` turns true (it is then dropped at
/// its next await: for tasks with nothing to finish, like a check loop).
pub async fn until_shutdown(mut shutdown: Shutdown, fut: impl Future<Output = ()>) {
    tokio::select! {
        _ = fut => {}
        _ = stopping(&mut shutdown) => {}
    }
}

/// The running tasks, by name.
pub struct Supervisor {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    stop: watch::Sender<bool>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            set: JoinSet::new(),
            names: HashMap::new(),
            stop: watch::channel(false).0,
        }
    }
}

impl Supervisor {
    /// No tasks yet.
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Starts `task` as `name`.
    pub fn spawn(&mut self, name: &'static str, task: Task) {
        let handle = self.set.spawn(task(self.stop.subscribe()));
        self.names.insert(handle.id(), name);
    }

    /// Waits until a task panics and returns its name; tasks that end on
    /// their own are logged and forgotten. Pending forever with no tasks.
    pub async fn panicked(&mut self) -> &'static str {
        loop {
            match self.set.join_next_with_id().await {
                None => std::future::pending::<()>().await,
                Some(Ok((id, ()))) => {
                    tracing::warn!(task = self.name(id), "Background task ended");
                }
                Some(Err(e)) if e.is_panic() => return self.name(e.id()),
                Some(Err(_)) => {}
            }
        }
    }

    /// The name of task `id`.
    fn name(&self, id: Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("?")
    }

    /// Signals shutdown and waits up to `limit` for every task to return;
    /// true when all did (the rest are aborted).
    pub async fn stop(mut self, limit: Duration) -> bool {
        self.stop.send_replace(true);
        let all = async {
            while let Some(done) = self.set.join_next_with_id().await {
                if let Err(e) = done {
                    if e.is_panic() {
                        let name = self.names.get(&e.id()).copied().unwrap_or("?");
                        tracing::error!(task = name, "Background task panicked while stopping");
                    }
                }
            }
        };
        let done = tokio::time::timeout(limit, all).await.is_ok();
        self.set.abort_all();
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(f: impl FnOnce(Shutdown) -> TaskFuture + Send + 'static) -> Task {
        Box::new(f)
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_reported_by_name_and_an_ended_task_is_not() {
        let mut s = Supervisor::new();
        s.spawn("quits", task(|_| Box::pin(async {})));
        s.spawn(
            "forever",
            task(|sd| Box::pin(until_shutdown(sd, std::future::pending()))),
        );
        s.spawn(
            "breaks",
            task(|_| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    panic!("boom");
                })
            }),
        );
        assert_eq!(s.panicked().await, "breaks");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_signals_every_task_and_waits_for_it() {
        let mut s = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        for name in ["a", "b"] {
            let tx = tx.clone();
            s.spawn(
                name,
                task(move |mut sd| {
                    Box::pin(async move {
                        let _ = sd.wait_for(|v| *v).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = tx.send(name).await;
                    })
                }),
            );
        }
        drop(tx);
        assert!(s.stop(Duration::from_secs(5)).await);
        let mut stopped = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        stopped.sort();
        assert_eq!(stopped, ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_shutdown_is_cut_at_the_limit() {
        let mut s = Supervisor::new();
        s.spawn("stubborn", task(|_| Box::pin(std::future::pending())));
        assert!(!s.stop(Duration::from_secs(1)).await);
    }
}
