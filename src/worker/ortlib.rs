//! Finding libonnxruntime.so: `--ort-lib`, `ORT_DYLIB_PATH`, then where `make onnxruntime` puts it.
//!
//! `make onnxruntime` extracts the library into `.cache/onnxruntime-VERSION/`
//! of the source tree. A binary built there looks in that folder of the tree
//! it was built from (a path fixed at build time), then in `.cache/` beside
//! the binary and its parent folders (`target/release/gantry` -> the tree),
//! then in `.cache/` of the working directory. An explicit path is used as
//! given, never replaced by a default one.

use std::path::{Path, PathBuf};

use super::WorkerError;

/// The file `make onnxruntime` extracts.
const LIB_NAME: &str = "libonnxruntime.so";
/// Folders of the source tree this binary was built from.
const BUILD_TREE: &str = env!("CARGO_MANIFEST_DIR");
/// How many parents of the binary's folder are searched.
const EXE_ANCESTORS: usize = 3;

/// The library to load: `explicit` (from `--ort-lib` or `ORT_DYLIB_PATH`), or
/// the first default place holding one. The error lists every place tried.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, WorkerError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    let roots = search_roots(exe.as_deref(), cwd.as_deref());
    find_in(&roots).map_err(|tried| WorkerError::OrtLibraryNotFound { tried })
}

/// Folders whose `.cache/onnxruntime-*` subfolders may hold the library, in order.
fn search_roots(exe: Option<&Path>, cwd: Option<&Path>) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(BUILD_TREE)];
    if let Some(dir) = exe.and_then(Path::parent) {
        roots.extend(
            dir.ancestors()
                .take(EXE_ANCESTORS + 1)
                .map(Path::to_path_buf),
        );
    }
    roots.extend(cwd.map(Path::to_path_buf));
    let mut seen = Vec::new();
    roots.retain(|r| {
        let new = !seen.contains(r);
        seen.push(r.clone());
        new
    });
    roots
}

/// The newest `ROOT/.cache/onnxruntime-*/libonnxruntime.so` of the first root
/// that has one, or the patterns looked at.
fn find_in(roots: &[PathBuf]) -> Result<PathBuf, Vec<PathBuf>> {
    let mut tried = Vec::new();
    for root in roots {
        let cache = root.join(".cache");
        let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let version = name.strip_prefix("onnxruntime-")?;
                let lib = entry.path().join(LIB_NAME);
                lib.is_file().then(|| (version_key(version), lib))
            })
            .collect();
        found.sort();
        if let Some((_, lib)) = found.pop() {
            return Ok(lib);
        }
        tried.push(cache.join("onnxruntime-*").join(LIB_NAME));
    }
    Err(tried)
}

/// `1.31.1` -> `[1, 31, 1]`, so versions sort as numbers.
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(root: &Path, version: &str) -> PathBuf {
        let dir = root.join(".cache").join(format!("onnxruntime-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join(LIB_NAME);
        std::fs::write(&lib, b"").unwrap();
        lib
    }

    #[test]
    fn explicit_path_wins_even_when_missing() {
        let p = Path::new("/nonexistent/libonnxruntime.so");
        assert_eq!(locate(Some(p)).unwrap(), p);
    }

    #[test]
    fn first_root_with_a_library_wins_and_the_newest_version_in_it() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        lib(a.path(), "1.9.0");
        let newest = lib(a.path(), "1.31.1");
        lib(b.path(), "2.0.0");
        let roots = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_in(&roots).unwrap(), newest);
        let later = [PathBuf::from("/nonexistent"), b.path().to_path_buf()];
        assert!(find_in(&later)
            .unwrap()
            .ends_with("onnxruntime-2.0.0/libonnxruntime.so"));
    }

    #[test]
    fn a_folder_without_the_library_is_skipped() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join(".cache/onnxruntime-1.31.1")).unwrap();
        let tried = find_in(&[a.path().to_path_buf()]).unwrap_err();
        assert_eq!(
            tried,
            [a.path().join(".cache/onnxruntime-*/libonnxruntime.so")]
        );
    }

    #[test]
    fn roots_are_the_build_tree_the_binary_s_folders_and_the_working_directory() {
        let roots = search_roots(
            Some(Path::new("/opt/app/target/release/gantry")),
            Some(Path::new("/home/u")),
        );
        let want: Vec<PathBuf> = [
            BUILD_TREE,
            "/opt/app/target/release",
            "/opt/app/target",
            "/opt/app",
            "/opt",
            "/home/u",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(roots, want);
    }

    #[test]
    fn not_found_names_every_place_tried() {
        let e = WorkerError::OrtLibraryNotFound {
            tried: vec![PathBuf::from("/a/.cache/onnxruntime-*/libonnxruntime.so")],
        };
        let text = e.to_string();
        assert!(
            text.contains("/a/.cache/onnxruntime-*/libonnxruntime.so"),
            "{text}"
        );
        assert!(
            text.contains("make onnxruntime") && text.contains("ORT_DYLIB_PATH"),
            "{text}"
        );
    }
}
