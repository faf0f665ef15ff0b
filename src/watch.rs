//! Hot reload's directory watch, shared by the policies and the TLS certificates: a poke once changes settle.
//!
//! The `notify` watcher runs on its own thread and only pokes a channel of
//! capacity one, so a burst of events (an editor's write-rename-chmod) is
//! one reload. After a poke the directory is read again once [`DEBOUNCE`]
//! has passed quietly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last change before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// [`DirWatch::changed`] of `watch`; never, when there is no watch.
pub async fn changed(watch: Option<&mut DirWatch>) -> Option<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Errors setting up the watch.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir}: {cause}")]
pub struct WatchError {
    /// The directory.
    pub dir: PathBuf,
    /// Why.
    pub cause: notify::Error,
}

/// A live watch on a directory; dropping it stops watching.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
    pokes: mpsc::Receiver<()>,
}

impl DirWatch {
    /// Watches `dirs` (not recursively) for changes to the files `relevant` picks.
    pub fn with_filter(
        dirs: &[PathBuf],
        relevant: impl Fn(&Path) -> bool + Send + 'static,
    ) -> Result<DirWatch, WatchError> {
        let (tx, pokes) = mpsc::channel(1);
        let first = dirs.first().cloned().unwrap_or_default();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let relevant = match ev {
                // Reading the files (ours included) is not a change.
                Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => false,
                Ok(ev) => ev.paths.iter().any(|p| relevant(p)),
                Err(_) => true,
            };
            if relevant {
                let _ = tx.try_send(());
            }
        })
        .map_err(|source| WatchError {
            dir: first,
            cause: source,
        })?;
        for dir in dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError {
                    dir: dir.to_path_buf(),
                    cause: source,
                })?;
        }
        Ok(DirWatch {
            _watcher: watcher,
            pokes,
        })
    }

    /// Resolves after a change once things have been quiet for [`DEBOUNCE`];
    /// `None` when the watcher is gone.
    pub async fn changed(&mut self) -> Option<()> {
        self.pokes.recv().await?;
        loop {
            match tokio::time::timeout(DEBOUNCE, self.pokes.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}
