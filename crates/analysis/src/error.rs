//! Why Prometheus could not answer, and why a single value is missing.

use std::time::Duration;

/// Prometheus could not answer. `Display` says what failed, where, and what to check.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// No connection could be made (refused, DNS, reset).
    #[error(
        "Prometheus at {address} is unreachable ({detail}): check spec.analysis.prometheus.address (or the controller's --prometheus-address) and that Prometheus is running"
    )]
    Unreachable {
        /// The Prometheus base URL.
        address: String,
        /// The transport's error.
        detail: String,
    },

    /// No complete answer within the query timeout.
    #[error(
        "Prometheus at {address} did not answer within {}: check its load and the network between the controller and Prometheus",
        humanize(*after)
    )]
    Timeout {
        /// The Prometheus base URL.
        address: String,
        /// The timeout that passed.
        after: Duration,
    },

    /// Prometheus (or a proxy in front of it) answered with an HTTP error other than a
    /// rejected query.
    #[error("Prometheus at {address} answered HTTP {status}: {detail}")]
    Http {
        /// The Prometheus base URL.
        address: String,
        /// The HTTP status code.
        status: u16,
        /// Prometheus' error text, or the start of the body.
        detail: String,
    },

    /// Prometheus rejected a query (bad syntax, or an error while evaluating it).
    #[error(
        "Prometheus rejected the query `{query}`: {detail}; fix the query in spec.analysis.metrics"
    )]
    Query {
        /// The query as sent.
        query: String,
        /// Prometheus' address and error text.
        detail: String,
    },

    /// The address is not a URL the client can use.
    #[error(
        "spec.analysis.prometheus.address {address:?} is not a usable URL ({detail}): write it like http://prometheus.monitoring:9090"
    )]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it cannot be used.
        detail: String,
    },

    /// The answer is not a Prometheus API response of the expected shape.
    #[error(
        "Prometheus at {address} answered `{query}` with something unexpected ({detail}): check that the address points at Prometheus' HTTP API"
    )]
    BadResponse {
        /// The Prometheus base URL.
        address: String,
        /// The query as sent.
        query: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl AnalysisError {
    /// A short, stable name of the kind of failure, for metrics labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AnalysisError::Unreachable { .. } => "unreachable",
            AnalysisError::Timeout { .. } => "timeout",
            AnalysisError::Http { .. } => "http",
            AnalysisError::Query { .. } => "query",
            AnalysisError::InvalidAddress { .. } => "invalid_address",
            AnalysisError::BadResponse { .. } => "bad_response",
        }
    }
}

/// Why a custom metric has no value: each named in words a user reads in status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricProblem {
    /// The query returned an empty vector.
    #[error(
        "no data: the query matched no series in the window (no traffic yet, or labels that do not match)"
    )]
    NoData,
    /// The value is NaN.
    #[error("the query returned NaN (typically 0/0: nothing happened in the window)")]
    NotANumber,
    /// The value is +Inf or -Inf.
    #[error("the query returned an infinite value (a division by zero)")]
    Infinite,
    /// More than one series came back.
    #[error(
        "the query returned {0} series but must return exactly one: aggregate it, e.g. with sum(...)"
    )]
    MultipleSeries(usize),
    /// A range vector came back, which has no single value.
    #[error(
        "the query returned a range vector: apply a function such as rate() or increase() to it"
    )]
    RangeVector,
    /// The template could not be turned into a query.
    #[error("{0}")]
    Template(String),
}

/// `1.5s`, `200ms`: a duration as people write it.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each message names the address and what to check.
    #[test]
    fn messages_name_the_address_and_the_fix() {
        let timeout = AnalysisError::Timeout {
            address: "http://p:9090".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(
            timeout.to_string(),
            "Prometheus at http://p:9090 did not answer within 1.5s: check its load and the network between the controller and Prometheus"
        );
        let unreachable = AnalysisError::Unreachable {
            address: "http://p:9090".into(),
            detail: "connection refused".into(),
        };
        assert!(unreachable.to_string().contains("spec.analysis.prometheus.address"));
        assert_eq!(unreachable.metric_label(), "unreachable");
        assert_eq!(humanize(Duration::from_millis(200)), "200ms");
        assert_eq!(humanize(Duration::from_secs(10)), "10s");
    }
}
