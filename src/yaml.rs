//! Reading YAML files with positions: every error names the file, line, column and field path.
//!
//! A leaf: it imports nothing else of the crate. Every config file (the proxy's
//! `gantry.yaml` with its `cache:` and `scaler:` sections, the policy files)
//! is read through it, so those modules share it without importing each other.
//!
//! serde stops at the first type error, so [`parse`] reports that one with the
//! location serde_yaml gives. Checks that run after deserialization (unknown
//! pool names, bounds) look their field path up in a [`LineIndex`] built from
//! the YAML event stream, so they point at a line too.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, Parser};

/// One problem found in a file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Field path in the document, like `pools.analysis.backends[0].addr`.
    pub field: String,
    /// What is wrong, without echoing the file back.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}: {}", self.field, self.message)
    }
}

/// All the errors found in one load, printed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Maps field paths (serde_path_to_error's spelling) to 1-based (line, column).
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { key: Option<String>, path: String },
    Seq { index: usize, path: String },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl LineIndex {
    /// Builds the index; a document that does not parse gives an empty index.
    pub fn new(text: &str) -> LineIndex {
        let mut positions = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, mark)) = parser.next_token() {
            let pos = (mark.line(), mark.col() + 1);
            match event {
                Event::StreamEnd => break,
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map {
                        key: key @ None,
                        path,
                    }) = stack.last_mut()
                    {
                        positions.entry(join(path, &value)).or_insert(pos);
                        *key = Some(value);
                        continue;
                    }
                    Self::value_done(&mut stack, &mut positions, pos);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = Self::value_path(&mut stack, &mut positions, pos);
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { key: None, path },
                        _ => Frame::Seq { index: 0, path },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    Self::value_done(&mut stack, &mut positions, pos);
                }
                Event::Alias(_) => Self::value_done(&mut stack, &mut positions, pos),
                _ => {}
            }
        }
        LineIndex { positions }
    }

    /// The path of the value about to start, recording its position.
    fn value_path(
        stack: &mut [Frame],
        positions: &mut HashMap<String, (usize, usize)>,
        pos: (usize, usize),
    ) -> String {
        match stack.last() {
            None => String::new(),
            Some(Frame::Map { key, path }) => join(path, key.as_deref().unwrap_or("?")),
            Some(Frame::Seq { index, path }) => {
                let p = format!("{path}[{index}]");
                positions.entry(p.clone()).or_insert(pos);
                p
            }
        }
    }

    /// A value finished: a map awaits its next key, a sequence its next item.
    fn value_done(
        stack: &mut [Frame],
        positions: &mut HashMap<String, (usize, usize)>,
        pos: (usize, usize),
    ) {
        match stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, path }) => {
                positions.entry(format!("{path}[{index}]")).or_insert(pos);
                *index += 1;
            }
            None => {}
        }
    }

    /// Position of `path`, or of its nearest ancestor that is in the file.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// A file's name and text, for deserializing and for locating later errors.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where the text came from.
    pub file: PathBuf,
    /// Positions of every field path in the text.
    pub index: LineIndex,
}

impl Source {
    /// An error at `field`, located in this file.
    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let field = field.into();
        let pos = self.index.locate(&field);
        ConfigError {
            file: self.file.clone(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            field,
            message: message.into(),
        }
    }
}

/// Reads and deserializes `path`; errors carry file, line, column and field.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<(T, Source), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: ".".into(),
            message: format!("cannot read file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Deserializes `text` as if read from `file`.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<(T, Source), ConfigErrors> {
    let source = Source {
        file: file.to_path_buf(),
        index: LineIndex::new(text),
    };
    let de = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(value) => Ok((value, source)),
        Err(err) => {
            let field = err.path().to_string();
            let inner = err.into_inner();
            let msg = strip_location(&inner.to_string());
            // serde_yaml puts the path in front of its message too.
            let msg = msg
                .strip_prefix(&format!("{field}: "))
                .map(str::to_string)
                .unwrap_or(msg);
            let mut e = source.error(field, msg);
            if let Some(loc) = inner.location() {
                let (line, column) = in_file(text, loc.line(), loc.column());
                e.line = Some(line);
                e.column = Some(column);
            }
            Err(ConfigErrors(vec![e]))
        }
    }
}

/// `line:column` moved inside `text`: serde_yaml puts the end of a stream
/// that does not end in a line break on a line after the file; that is the
/// end of the last line. Lines end at `\n`, `\r\n` or a lone `\r`, as in YAML.
fn in_file(text: &str, line: usize, column: usize) -> (usize, usize) {
    let last = text.replace("\r\n", "\n");
    let breaks = last.matches(['\n', '\r']).count();
    if line <= breaks + 1 {
        return (line, column);
    }
    let tail = last.rsplit(['\n', '\r']).next().unwrap_or("");
    (breaks + 1, tail.chars().count() + 1)
}

/// serde_yaml appends " at line L column C"; we print the position ourselves.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, path: &str, expected: Option<(usize, usize)>) {
        assert_eq!(LineIndex::new(text).locate(path), expected, "path {path}");
    }

    #[test]
    fn locates_nested_keys_and_items() {
        let text = "listen: a\npools:\n  web:\n    backends:\n      - addr: x\n        weight: 2\n      - addr: y\n";
        check(text, "listen", Some((1, 1)));
        check(text, "pools.web", Some((3, 3)));
        check(text, "pools.web.backends[0].weight", Some((6, 9)));
        check(text, "pools.web.backends[1].addr", Some((7, 9)));
        assert_eq!(
            LineIndex::new(text)
                .locate("pools.web.backends[1]")
                .map(|p| p.0),
            Some(7)
        );
        // Unknown leaf: falls back to the nearest known ancestor.
        check(text, "pools.web.policy", Some((3, 3)));
        check(text, "nothing", None);
    }

    #[test]
    fn flow_sequences_count_items() {
        let text = "a: [1, {b: 2}, 3]\nc: 4\n";
        check(text, "a[1].b", Some((1, 9)));
        check(text, "c", Some((2, 1)));
    }

    /// Found by `fuzz/fuzz_targets/config.rs` and `policy.rs`: an error at
    /// the end of a file without a final line break was put on a line after it.
    #[test]
    fn an_error_at_the_end_of_the_file_is_on_its_last_line() {
        let at = |text: &str| {
            let e = &parse::<Doc>(Path::new("x.yaml"), text).unwrap_err().0[0];
            (e.line, e.column)
        };
        assert_eq!(at("name: a\np"), (Some(2), Some(2)));
        assert_eq!(at("# only a comment"), (Some(1), Some(17)));
        assert_eq!(at("name: a\r\nport: 1\rp"), (Some(3), Some(2)));
        assert_eq!(at("name: a\nport: banana\n").0, Some(2));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        port: u16,
    }

    #[test]
    fn type_errors_name_line_and_field() {
        let err = parse::<Doc>(Path::new("x.yaml"), "name: a\nport: banana\n").unwrap_err();
        let e = &err.0[0];
        assert_eq!((e.line, e.field.as_str()), (Some(2), "port"));
        assert!(err.to_string().starts_with("x.yaml:2:"), "{err}");
        let err = parse::<Doc>(Path::new("x.yaml"), "name: a\nport: 1\nextra: 2\n").unwrap_err();
        assert_eq!(err.0[0].line, Some(3));
        assert!(err.0[0].message.contains("unknown field `extra`"), "{err}");
    }
}
