//! The alert rules: `promtool check rules` and the `promtool test rules` unit tests in
//! `dashboards/alerts_test.yml`, which must show every rule both firing and not firing.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::{root, sh};

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let promtool = |args: &[&str]| sh(Command::new("promtool").args(args).current_dir(root()));
    promtool(&["check", "rules", "dashboards/alerts.yml"]);
    let out = promtool(&["test", "rules", "dashboards/alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_test_where_it_fires_and_one_where_it_does_not() {
    let rules = yaml("dashboards/alerts.yml");
    let alerts: BTreeSet<String> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    let tests = yaml("dashboards/alerts_test.yml");
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in tests["tests"].as_sequence().unwrap() {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            match case["exp_alerts"].as_sequence() {
                Some(e) if !e.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let missing =
        |seen: &BTreeSet<String>| -> Vec<String> { alerts.difference(seen).cloned().collect() };
    assert!(
        missing(&fires).is_empty(),
        "never shown firing: {:?}",
        missing(&fires)
    );
    assert!(
        missing(&quiet).is_empty(),
        "never shown quiet: {:?}",
        missing(&quiet)
    );
    assert!(
        fires.is_subset(&alerts),
        "tests name alerts that do not exist: {:?}",
        fires.difference(&alerts)
    );
}
