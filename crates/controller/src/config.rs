//! Flags, each with an environment variable of the same meaning (flags win).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use modelrollout_api::parse_duration;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `modelrollout-controller`: walks ModelRollouts through their steps on Prometheus analysis.
#[derive(Clone, Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// Watch ModelRollouts in this namespace only (default: every namespace).
    #[arg(long, env = "MODELROLLOUT_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MODELROLLOUT_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,

    /// Prometheus for rollouts that do not name one in spec.analysis.prometheus.address,
    /// e.g. http://prometheus.monitoring:9090.
    #[arg(long, env = "MODELROLLOUT_PROMETHEUS_ADDRESS", value_parser = parse_prometheus_address)]
    pub prometheus_address: Option<String>,

    /// Longest wait for one Prometheus query (e.g. 10s, 500ms).
    #[arg(long, env = "MODELROLLOUT_PROMETHEUS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub prometheus_timeout: Duration,

    /// Longest wait for an arm's endpoint to answer the preflight's GET /models (e.g. 5s).
    #[arg(long, env = "MODELROLLOUT_PREFLIGHT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub preflight_timeout: Duration,

    /// Log filter, e.g. `info` or `modelrollout_controller=debug,kube=warn`.
    #[arg(long, env = "MODELROLLOUT_LOG", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "MODELROLLOUT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Take part in leader election (turn off only when a single replica runs).
    #[arg(long, env = "MODELROLLOUT_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader election Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "MODELROLLOUT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader election Lease.
    #[arg(long, env = "MODELROLLOUT_LEASE_NAME", default_value = "modelrollout-controller")]
    pub lease_name: String,

    /// How long the Lease stays valid without renewal: the longest a standby waits after the
    /// leader dies.
    #[arg(long, env = "MODELROLLOUT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews the Lease (and a standby looks at it).
    #[arg(long, env = "MODELROLLOUT_LEASE_RENEW", default_value = "5s", value_parser = parse_duration)]
    pub lease_renew: Duration,

    /// Rollouts reconciled at the same time. Bounded so that thousands of rollouts waking at once
    /// (a start, a Prometheus outage) queue instead of holding thousands of requests in memory.
    #[arg(long, env = "MODELROLLOUT_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// This replica's name in the Lease and in Events (default: POD_NAME, else the host name).
    #[arg(long, env = "MODELROLLOUT_IDENTITY")]
    pub identity: Option<String>,
}

fn parse_prometheus_address(value: &str) -> Result<String, String> {
    match modelrollout_api::Endpoint::parse(value) {
        Ok(_) => Ok(value.to_owned()),
        Err(problem) => Err(format!(
            "{problem} (the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults are what the documentation says, and flags parse in the rollout grammar.
    #[test]
    fn defaults_and_durations() {
        let config = Config::try_parse_from(["modelrollout-controller"]).unwrap();
        assert_eq!(config.metrics_address.to_string(), "0.0.0.0:8080");
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.lease_renew, Duration::from_secs(5));
        assert!(config.leader_elect);
        let config = Config::try_parse_from([
            "modelrollout-controller",
            "--prometheus-timeout",
            "750ms",
            "--leader-elect",
            "false",
            "--namespace",
            "ai",
        ])
        .unwrap();
        assert_eq!(config.prometheus_timeout, Duration::from_millis(750));
        assert!(!config.leader_elect);
        assert_eq!(config.namespace.as_deref(), Some("ai"));
    }

    /// A malformed duration is refused with the accepted form in the message.
    #[test]
    fn bad_duration_names_the_form() {
        let error = Config::try_parse_from(["modelrollout-controller", "--lease-duration", "15"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--lease-duration"), "{error}");
        assert!(error.contains("30s"), "{error}");
    }

    /// The default Prometheus must be an http(s) URL; the refusal says what one looks like.
    #[test]
    fn prometheus_address_is_a_url() {
        let config = Config::try_parse_from([
            "modelrollout-controller",
            "--prometheus-address",
            "http://prometheus.monitoring:9090",
        ])
        .unwrap();
        assert_eq!(config.prometheus_address.as_deref(), Some("http://prometheus.monitoring:9090"));
        let error = Config::try_parse_from([
            "modelrollout-controller",
            "--prometheus-address",
            "prom:9090",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("http://prometheus.monitoring:9090"), "{error}");
    }
}
