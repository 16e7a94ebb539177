//! deploy/monitoring/prometheus.yml and alertmanager.yml, checked by the real tools: the scrape
//! config (Kubernetes discovery) by upstream promtool, the Alertmanager config by amtool, and the
//! routing of every alert of the rule file by `amtool config routes test`.

use anyhow::{Context, Result, ensure};
use modelrollout_monitoring::{Tool, monitoring_dir};
use serde_yaml::Value;

/// `promtool check config` accepts the scrape config and the rule file it loads.
#[test]
fn scrape_config_passes_promtool() -> Result<()> {
    let out =
        Tool::UpstreamPromtool.run(&monitoring_dir(), &["check", "config", "prometheus.yml"])?;
    ensure!(out.success(), "promtool check config prometheus.yml failed:\n{}", out.text);
    ensure!(
        out.text.contains("SUCCESS: 1 rule files found"),
        "prometheus.yml should load alerts.rules.yaml:\n{}",
        out.text
    );
    Ok(())
}

/// Both jobs are there, by Kubernetes pod discovery, and the controller's keeps its own
/// `namespace` label (the rollout's) over the pod's.
#[test]
fn scrape_config_has_both_jobs() -> Result<()> {
    let path = monitoring_dir().join("prometheus.yml");
    let config: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let jobs = config["scrape_configs"].as_sequence().context("no scrape_configs")?;
    let job = |name: &str| jobs.iter().find(|j| j["job_name"].as_str() == Some(name));
    for name in ["modelrollout-controller", "modelrollout-proxy"] {
        let job = job(name).with_context(|| format!("no job {name}"))?;
        ensure!(job["kubernetes_sd_configs"][0]["role"] == "pod", "{name}: not pod discovery");
    }
    ensure!(
        job("modelrollout-controller").is_some_and(|j| j["honor_labels"] == true),
        "modelrollout-controller needs honor_labels: true, or modelrollout_phase's namespace becomes exported_namespace"
    );
    Ok(())
}

/// `amtool check-config` accepts the Alertmanager config.
#[test]
fn alertmanager_config_passes_amtool() -> Result<()> {
    let out = Tool::Amtool.run(&monitoring_dir(), &["check-config", "alertmanager.yml"])?;
    ensure!(out.success(), "amtool check-config alertmanager.yml failed:\n{}", out.text);
    ensure!(out.text.contains("SUCCESS"), "unexpected output:\n{}", out.text);
    Ok(())
}

/// Every alert of the rule file reaches the receiver of its severity: critical pages, warning
/// goes to chat.
#[test]
fn every_alert_routes_by_severity() -> Result<()> {
    let path = monitoring_dir().join("alerts.rules.yaml");
    let rules: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let alerts: Vec<&Value> = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .filter(|r| r.get("alert").is_some())
        .collect();
    ensure!(!alerts.is_empty(), "{} holds no alerts", path.display());
    let mut problems = Vec::new();
    for alert in alerts {
        let name = alert["alert"].as_str().unwrap_or_default();
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        let receiver = match severity {
            "critical" => "pager",
            _ => "chat",
        };
        let verify = format!("--verify.receivers={receiver}");
        let alertname = format!("alertname={name}");
        let severity_label = format!("severity={severity}");
        let out = Tool::Amtool.run(
            &monitoring_dir(),
            &[
                "config",
                "routes",
                "test",
                "--config.file=alertmanager.yml",
                &verify,
                &alertname,
                &severity_label,
                "rollout=chat",
                "rollout_namespace=ai",
            ],
        )?;
        if !out.success() {
            problems.push(format!("{name} ({severity}) does not reach {receiver}: {}", out.text));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
