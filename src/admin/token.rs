//! The admin token: generated when none is configured, kept in a file only its user can read.
//!
//! Mutating admin calls always need `Authorization: Bearer <token>`. A proxy
//! started without one generates a random token and writes it to
//! [`default_path`] for its admin port (mode 0600 in a 0700 directory), where
//! `gantry scaler` and other local clients of the same user find it.
//! Tokens are compared in constant time.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Where the token of the proxy whose admin API listens on `port` is kept:
/// `$XDG_RUNTIME_DIR/gantry/admin-PORT.token`, else
/// `$TMPDIR/gantry-UID/admin-PORT.token` (`/tmp` without `TMPDIR`).
pub fn default_path(port: u16) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("gantry"),
        None => std::env::temp_dir().join(format!("gantry-{}", uid())),
    };
    dir.join(format!("admin-{port}.token"))
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// A new random token: 32 bytes, hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `token` to `path`, readable by this user only; the directory is
/// created (0700) when missing.
pub fn write(path: &Path, token: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    // Replace, never reuse, a file someone else may have made readable.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")
}

/// The token kept for the admin API at `url` (`http://host:port`), if this
/// user has one on file.
pub fn read_for(url: &str) -> Option<String> {
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()?
        .parse::<u16>()
        .ok()?;
    let text = std::fs::read_to_string(default_path(port)).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// `given == expected`, in time that does not depend on where they differ.
pub fn matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_for_this_user_only_and_found_by_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin-1.token");
        let token = generate();
        assert_eq!(token.len(), 64);
        write(&path, &token).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
        write(&path, "again").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "again");
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abd", "abc"));
        assert!(!matches("ab", "abc"));
        assert!(!matches("", "abc"));
    }

    #[test]
    fn default_path_names_the_port() {
        assert!(default_path(9090).ends_with("admin-9090.token"));
        assert_ne!(default_path(9090), default_path(9091));
    }
}
