//! Conventions as tests (rust-analyzer's `xtask/src/tidy.rs`): every Rust file starts with a
//! `//!` line, every module under `src/` is in ARCHITECTURE.md's code map, and every metric
//! the dashboards and alert rules query is defined in `src/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::root;

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let files = rust_files(&["src", "tests"]);
    assert!(files.len() > 20, "found only {files:?}");
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !read(f).lines().next().is_some_and(|l| l.starts_with("//!")))
        .map(|f| relative(f))
        .collect();
    assert!(
        missing.is_empty(),
        "start these files with a `//!` line saying what they are for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_module_is_in_the_code_map() {
    let map = CodeMap::parse(&read(&root().join("ARCHITECTURE.md")));
    let mut paths = Vec::new();
    walk(&root().join("src"), &mut paths);
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| relative(p))
        .filter(|p| !map.covers(p))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not list (add a line under the directory, or name the \
         file in its module's line):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_metric_the_dashboards_query_is_defined_in_src_metrics() {
    let defined: String = rust_files(&["src/metrics"])
        .iter()
        .map(|f| read(f))
        .collect();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    sources.sort();
    sources.push(root().join("dashboards/alerts.yml"));
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in &sources {
        let names = metric_names(&read(source));
        assert!(!names.is_empty(), "no metric in {}", relative(source));
        for name in names.into_iter().filter(|n| !is_defined(&defined, n)) {
            missing.entry(name).or_default().insert(relative(source));
        }
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|(name, files)| format!("{name} (in {})", Vec::from_iter(files.clone()).join(", ")))
        .collect();
    assert!(
        lines.is_empty(),
        "queried but not defined in src/metrics (no \"name\" literal there):\n  {}",
        lines.join("\n  ")
    );
}

/// The checks themselves, on a small code map and expression.
#[test]
fn the_checks_match_what_they_should() {
    let map = CodeMap::parse(
        "# A\n## Code map\n\n```\nsrc/main.rs   CLI\nsrc/a/        the a module,\n              with x.rs\n  b.rs        b; its helper (c.rs)\n  mod.rs      wires d.rs\n  e/          e: f.rs\n  h.rs, i.rs  two\nsrc/g.rs      g; g/k.rs\nsrc/bin/z.rs  a binary\n```\nsrc/late.rs\n",
    );
    for (path, listed) in [
        ("src/main.rs", true),
        ("src/a/", true),
        ("src/a/b.rs", true),
        ("src/a/x.rs", true),
        ("src/a/c.rs", false),
        ("src/a/d.rs", true),
        ("src/a/mod.rs", true),
        ("src/a/e/", true),
        ("src/a/e/f.rs", true),
        ("src/a/e/mod.rs", true),
        ("src/a/h.rs", true),
        ("src/a/i.rs", true),
        ("src/g/", true),
        ("src/g/k.rs", true),
        ("src/bin/", true),
        ("src/a/ex.rs", false),
        ("src/a/y/", false),
        ("src/late.rs", false),
        ("src/other/", false),
        ("src/other/mod.rs", false),
    ] {
        assert_eq!(map.covers(path), listed, "{path}");
    }
    let names = metric_names(
        "sum(rate(gantry_a_seconds_bucket[5m])) / xgantry_b + gantry_c{x=\"gantry_d\"}",
    );
    assert_eq!(
        Vec::from_iter(names),
        ["gantry_a_seconds_bucket", "gantry_c", "gantry_d"]
    );
    let defined = r#"register_histogram!("gantry_a_seconds", "h"); register!("gantry_c", "c")"#;
    assert!(is_defined(defined, "gantry_a_seconds_bucket"));
    assert!(is_defined(defined, "gantry_c"));
    assert!(!is_defined(defined, "gantry_a"));
    assert!(!is_defined(defined, "gantry_c_total"));
}

/// ARCHITECTURE.md's code map: every path it lists, with the text beside it.
///
/// A line at the left margin lists a path (`src/proxy/`, `src/main.rs`); a line indented
/// by two lists names in the last such directory (`service.rs`, `policy/`, `tune.rs,
/// config.rs`); deeper lines continue the text of the line above.
struct CodeMap {
    entries: BTreeMap<String, String>,
}

impl CodeMap {
    fn parse(markdown: &str) -> CodeMap {
        let block = markdown
            .split_once("## Code map")
            .and_then(|(_, rest)| rest.split("```").nth(1))
            .expect("a ``` block under `## Code map`");
        let mut entries: BTreeMap<String, String> = BTreeMap::new();
        let (mut dir, mut last) = (String::new(), String::new());
        // The first line is the rest of the opening fence.
        for line in block.lines().skip(1) {
            let text = line.trim_start();
            let indent = line.len() - text.len();
            if text.is_empty() {
                continue;
            }
            if indent > 2 {
                let entry = entries.entry(last.clone()).or_default();
                entry.push(' ');
                entry.push_str(text);
                continue;
            }
            let (names, text) = leading_names(text);
            for name in names {
                last = if indent == 0 {
                    dir = name.clone();
                    name
                } else {
                    format!("{dir}{name}")
                };
                entries.insert(last.clone(), text.clone());
            }
        }
        CodeMap { entries }
    }

    /// Whether `path` (relative to the root; a directory ends with `/`) is listed: as
    /// written; a directory as the `x.rs` of its module or as part of a listed path; a
    /// `mod.rs` with its directory; any file by name in the line of its directory or of
    /// that directory's module file.
    fn covers(&self, path: &str) -> bool {
        if self.entries.contains_key(path) {
            return true;
        }
        if let Some(dir) = path.strip_suffix('/') {
            return self.entries.contains_key(&format!("{dir}.rs"))
                || self.entries.keys().any(|k| k.starts_with(path));
        }
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        if name == "mod.rs" {
            return self.covers(&format!("{dir}/"));
        }
        [
            format!("{dir}/"),
            format!("{dir}/mod.rs"),
            format!("{dir}.rs"),
        ]
        .iter()
        .filter_map(|module| self.entries.get(module))
        .any(|text| mentions(text, name))
    }
}

/// The names a code-map line starts with (`a.rs, b.rs  text` gives both), and the rest.
fn leading_names(line: &str) -> (Vec<String>, String) {
    let mut words = line.split_whitespace();
    let mut names = Vec::new();
    for word in words.by_ref() {
        names.push(word.trim_end_matches(',').to_string());
        if !word.ends_with(',') {
            break;
        }
    }
    (names, words.collect::<Vec<_>>().join(" "))
}

/// Whether `text` has `name` as a whole word (not inside a longer file name).
fn mentions(text: &str, name: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name)
        .any(|(i, _)| !text[..i].ends_with(part) && !text[i + name.len()..].starts_with(part))
}

/// Every `gantry_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices("gantry_")
        .filter(|(i, _)| !text[..*i].ends_with(part))
        .map(|(i, _)| {
            let rest = &text[i..];
            rest[..rest.find(|c| !part(c)).unwrap_or(rest.len())].to_string()
        })
        .collect()
}

/// Whether `name`, or the histogram it is a series of, is a string literal in `defined`.
fn is_defined(defined: &str, name: &str) -> bool {
    let literal = |n: &str| defined.contains(&format!("\"{n}\""));
    literal(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(literal))
}

/// Every `.rs` file under the `dirs` of the root.
fn rust_files(dirs: &[&str]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for dir in dirs {
        walk(&root().join(dir), &mut paths);
    }
    paths.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    paths
}

/// Every file and directory under `dir`, sorted, depth first.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    children.sort();
    for child in children {
        out.push(child.clone());
        if child.is_dir() {
            walk(&child, out);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `path` relative to the root, with a `/` after a directory.
fn relative(path: &Path) -> String {
    let rel = path
        .strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string();
    if path.is_dir() {
        format!("{rel}/")
    } else {
        rel
    }
}
