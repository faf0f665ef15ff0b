//! Fuzz target: `gantry.yaml` text -> a validated `Config` or located errors, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

/// Lines as YAML counts them: `\n`, `\r\n` and a lone `\r` each end one.
fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n")
        .bytes()
        .filter(|b| matches!(b, b'\n' | b'\r'))
        .count()
        + 1
}

fuzz_target!(|data: &[u8]| {
    // `config::load` reads the file with `read_to_string`: only UTF-8 gets this far.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("gantry.yaml");
    if let Err(errors) = gantry::config::from_str(file, text) {
        assert!(!errors.0.is_empty(), "an error list names a problem");
        let lines = yaml_lines(text);
        for e in &errors.0 {
            assert_eq!(e.file, file);
            assert!(e.line.is_none_or(|l| (1..=lines).contains(&l)), "{e}");
        }
        let _ = errors.to_string();
    }
});
