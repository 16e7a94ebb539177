//! deploy/monitoring/alerts.rules.yaml: valid for promtool (Debian's 2.x and upstream 3.x),
//! its unit tests (alerts.test.yaml) pass on both, and every alert is complete: a severity the
//! Alertmanager routes, its annotations, a section in docs/monitoring.md, and a unit test in
//! which it fires and one in which it must not.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use modelrollout_monitoring::{Tool, monitoring_dir, workspace_root};
use serde_yaml::Value;

const RULES: &str = "alerts.rules.yaml";
const RULE_TESTS: &str = "alerts.test.yaml";
const PROMTOOLS: [Tool; 2] = [Tool::DebianPromtool, Tool::UpstreamPromtool];

fn load(file: &str) -> Result<Value> {
    let path = monitoring_dir().join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every alerting rule of the rule file.
fn alerts() -> Result<Vec<Value>> {
    let rules = load(RULES)?;
    let groups = rules["groups"].as_sequence().context("no groups: in the rule file")?;
    Ok(groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter(|r| r.get("alert").is_some())
        .collect())
}

/// `promtool check rules` accepts the file on both promtools.
#[test]
fn rules_pass_promtool_check() -> Result<()> {
    for tool in PROMTOOLS {
        let out = tool.run(&monitoring_dir(), &["check", "rules", RULES])?;
        ensure!(
            out.success(),
            "{} check rules {RULES} failed:\n{}",
            tool.path().display(),
            out.text
        );
        ensure!(out.text.contains("SUCCESS"), "unexpected output:\n{}", out.text);
    }
    Ok(())
}

/// `promtool test rules` passes on both promtools (Prometheus 3 changed range selection at the
/// window's edge: the tests' evaluation times keep clear of it).
#[test]
fn rule_unit_tests_pass() -> Result<()> {
    for tool in PROMTOOLS {
        let out = tool.run(&monitoring_dir(), &["test", "rules", RULE_TESTS])?;
        ensure!(
            out.success(),
            "{} test rules {RULE_TESTS} failed:\n{}",
            tool.path().display(),
            out.text
        );
        ensure!(out.text.contains("SUCCESS"), "unexpected output:\n{}", out.text);
    }
    Ok(())
}

/// The six alarms the issue asks for are there, by name.
#[test]
fn the_expected_alerts_exist() -> Result<()> {
    let names: BTreeSet<String> =
        alerts()?.iter().filter_map(|a| a["alert"].as_str().map(str::to_owned)).collect();
    let expected = [
        "ModelRolloutCanaryHighErrorRate",
        "ModelRolloutCanaryHighLatency",
        "ModelRolloutCanaryErrorRateAboveStable",
        "ModelRolloutCanaryNoTraffic",
        "ModelRolloutRolledBack",
        "ModelRolloutControllerDown",
    ];
    let missing: Vec<_> = expected.iter().filter(|e| !names.contains(**e)).collect();
    ensure!(missing.is_empty(), "{RULES} lacks {missing:?}; it has {names:?}");
    Ok(())
}

/// Each alert has a severity the Alertmanager example routes, a summary, a description and a
/// runbook link to its own section of docs/monitoring.md.
#[test]
fn every_alert_is_documented_and_routable() -> Result<()> {
    let docs_path = workspace_root().join("docs/monitoring.md");
    let docs = std::fs::read_to_string(&docs_path)
        .with_context(|| format!("reading {}", docs_path.display()))?;
    let mut problems = Vec::new();
    for alert in alerts()? {
        let name = alert["alert"].as_str().unwrap_or_default();
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        if !matches!(severity, "critical" | "warning") {
            problems.push(format!("{name}: severity {severity:?} is neither critical nor warning"));
        }
        for key in ["summary", "description", "runbook_url"] {
            if alert["annotations"][key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        let anchor = format!("docs/monitoring.md#{}", name.to_lowercase());
        if !alert["annotations"]["runbook_url"].as_str().unwrap_or_default().ends_with(&anchor) {
            problems.push(format!("{name}: runbook_url does not end with {anchor}"));
        }
        if !docs.lines().any(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == name) {
            problems.push(format!("{name}: docs/monitoring.md has no heading `### {name}`"));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Each alert has a unit test where it fires and one where it is expected silent.
#[test]
fn every_alert_is_tested_firing_and_silent() -> Result<()> {
    let tests = load(RULE_TESTS)?;
    let cases: Vec<&Value> = tests["tests"]
        .as_sequence()
        .context("no tests: in the unit test file")?
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .collect();
    let mut problems = Vec::new();
    for alert in alerts()? {
        let name = alert["alert"].as_str().unwrap_or_default();
        let of_alert: Vec<_> =
            cases.iter().filter(|c| c["alertname"].as_str() == Some(name)).collect();
        let fires = |c: &&&Value| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
        if !of_alert.iter().any(fires) {
            problems.push(format!("{name}: no test where it fires"));
        }
        if !of_alert.iter().any(|c| !fires(c)) {
            problems.push(format!("{name}: no test where it stays silent"));
        }
    }
    ensure!(problems.is_empty(), "{RULE_TESTS}:\n{}", problems.join("\n"));
    Ok(())
}
