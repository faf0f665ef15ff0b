//! A small tmpfs a test mounts on a directory, to make a disk really full (ENOSPC) or read-only (EROFS).
//!
//! Mounting needs root (as `make test` runs here); where it is refused the
//! test says it is skipped rather than pretending.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted on a directory; unmounted (lazily) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`2m`, ...) on `dir` (created); `None` when not allowed.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let size = format!("size={size}");
        mount(&["-t", "tmpfs", "-o", &size, "tmpfs"], dir).then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Remounts with `how` (`ro`, `rw`); false when the kernel refuses (a file open for writing).
    pub fn remount(&self, how: &str) -> bool {
        mount(&["-o", &format!("remount,{how}")], &self.0)
    }

    /// Writes zeros into `name` until the file system is full.
    pub fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join(name)).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], dir: &Path) -> bool {
    Command::new("mount")
        .args(args)
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
