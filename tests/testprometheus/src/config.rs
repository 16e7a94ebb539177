//! The files Prometheus reads: its configuration and the file_sd list of targets.

use std::time::Duration;

/// The scrape job's name, the `job` label of every scraped series.
pub const JOB: &str = "modelrollout-test";

/// File name of the file_sd target list inside the data directory.
pub const TARGETS_FILE: &str = "targets.json";

/// `prometheus.yml`: one job that scrapes whatever `targets.json` lists, re-read every second.
pub fn prometheus_yml(scrape_interval: Duration) -> String {
    let interval = promql_duration(scrape_interval);
    // The scrape timeout may not exceed the interval.
    format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n\
         scrape_configs:\n  - job_name: {JOB}\n    file_sd_configs:\n      - files: ['{TARGETS_FILE}']\n        refresh_interval: 1s\n"
    )
}

/// The file_sd document: one group, `instance` defaults to each `host:port`.
pub fn targets_json(targets: &[String]) -> String {
    serde_json::json!([{ "targets": targets, "labels": {} }]).to_string()
}

/// A duration as Prometheus writes it, in whole milliseconds (at least 1 ms).
pub fn promql_duration(duration: Duration) -> String {
    let ms = duration.as_millis().max(1);
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration scrapes the file_sd list at the given interval.
    #[test]
    fn config_names_interval_and_target_file() {
        assert_eq!(
            prometheus_yml(Duration::from_secs(1)),
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: modelrollout-test\n    file_sd_configs:\n      - files: ['targets.json']\n        refresh_interval: 1s\n"
        );
    }

    /// Targets become one file_sd group; an empty list is a valid, empty group.
    #[test]
    fn targets_become_one_group() {
        let targets = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        assert_eq!(
            targets_json(&targets),
            r#"[{"labels":{},"targets":["127.0.0.1:1","127.0.0.1:2"]}]"#
        );
        assert_eq!(targets_json(&[]), r#"[{"labels":{},"targets":[]}]"#);
    }

    /// Whole seconds stay seconds; fractions fall back to milliseconds.
    #[test]
    fn durations_in_prometheus_form() {
        assert_eq!(promql_duration(Duration::from_secs(15)), "15s");
        assert_eq!(promql_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(promql_duration(Duration::ZERO), "1ms");
    }
}
