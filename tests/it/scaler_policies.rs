//! Policy files through the real binary: shipped policies validate, the committed schema is current, errors are located.

use crate::support::gantry::command;
use crate::support::root;

fn gantry(args: &[&str]) -> (i32, String, String) {
    let out = command().args(args).current_dir(root()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_policy_validates() {
    let (code, out, err) = gantry(&["check", "policies"]);
    assert_eq!(code, 0, "{out}{err}");
    // analysis.yaml and the examples (cpu, memory, response time, everything).
    assert!(out.starts_with("5 policy file(s) ok"), "{out}");
    for seed in ["cpu_based", "memory_based", "response_time_based"] {
        let path = format!("policies/examples/{seed}.yaml");
        assert!(root().join(&path).exists());
    }
}

#[test]
fn committed_schema_is_what_gantry_schema_prints() {
    let (code, out, _) = gantry(&["schema"]);
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(root().join("policies/schema.json")).unwrap();
    assert!(
        out == committed,
        "policies/schema.json is stale: run `gantry schema > policies/schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["required"], serde_json::json!(["pool", "max", "metrics"]));
}

#[test]
fn check_reports_every_error_with_file_line_column_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "pool: a\nmin: 5\nmax: 3\nmetrics:\n  - {metric: cpu_percent, target: 50, threshold: 2}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        "pool: b\nmax: 3\nmetrics: [{metric: gpu, target: 1}]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = gantry(&["check", d]);
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with(&format!("{d}/a.yaml:2:1: min: must be at most max")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{d}/a.yaml:5:"))
            && lines[1].contains("metrics[0].threshold"),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!("{d}/b.yml:3:")) && lines[2].contains("metrics[0].metric"),
        "{err}"
    );
    assert_eq!(lines[3], "3 error(s) in 2 policy file(s)");
}

#[test]
fn embedded_default_config_is_valid() {
    let (code, out, err) = gantry(&["check-config", "gantry.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
}
