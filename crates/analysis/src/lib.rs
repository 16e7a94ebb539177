//! Measures a rollout in Prometheus: canary and stable request counts, error counts, p95
//! latency and p95 time-to-first-token from the proxy's metrics, plus the rollout's custom
//! metric queries, each problem named in words a user reads in status.
//!
//! The controller's decisions depend on the [`MetricsSource`] trait, so they are tested without
//! a server; [`PrometheusSource`] is the real one. No Kubernetes I/O happens here.

#![forbid(unsafe_code)]

mod error;
pub mod mapping;
mod prometheus;
pub mod promql;
pub mod tally;
pub mod tokens;

use std::time::Duration;

pub use error::{AnalysisError, MetricProblem};
pub use prometheus::{PrometheusSource, tls_config};
pub use promql::bind_models;
pub use tally::{ArmTally, Tally, TallySpec};
pub use tokens::{ArmTokens, TokenSample};

/// Which rollout to measure and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Prometheus' base URL, e.g. `http://127.0.0.1:9090` (spec.analysis.prometheus.address).
    pub prometheus: String,
    /// The rollout's name: the proxy metrics' `rollout` label.
    pub rollout: String,
    /// The rollout's namespace: the proxy metrics' `rollout_namespace` label.
    pub namespace: String,
}

/// The target of the unit tests: rollout ai/chat on a local Prometheus.
#[cfg(test)]
pub(crate) fn test_target() -> Target {
    Target {
        prometheus: "http://127.0.0.1:9090".to_owned(),
        rollout: "chat".to_owned(),
        namespace: "ai".to_owned(),
    }
}

/// What to measure: the PromQL range and the custom metric templates of spec.analysis.metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasureSpec {
    /// The range of every `increase()`/`rate()`: whole seconds, at least 1 s (a fraction is
    /// dropped, less than 1 s becomes 1 s). The caller already clipped it so it never reaches
    /// back past the moment the proxies applied the current weight.
    pub range: Duration,
    /// spec.analysis.metrics as (name, query template); templates use `{{rollout}}`,
    /// `{{namespace}}`, `{{window}}` (the range as a PromQL duration, e.g. `37s`). Model
    /// placeholders must be filled beforehand with [`bind_models`].
    pub custom: Vec<(String, String)>,
}

/// One arm's numbers over the range, summed over every proxy instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArmSample {
    /// Requests counted, excluding `reason="rate_limited"` (a 429 is the provider's capacity,
    /// not the model's quality).
    pub requests: f64,
    /// Of those, `status="error"` (rate_limited excluded).
    pub errors: f64,
    /// p95 of `gray_release_request_duration_seconds` over the range; `None` when unknown (no
    /// samples, NaN).
    pub latency_p95_seconds: Option<f64>,
    /// p95 of `gray_release_time_to_first_token_seconds`; `None` when unknown (e.g. no
    /// streaming requests).
    pub ttft_p95_seconds: Option<f64>,
}

impl ArmSample {
    /// errors / requests, `None` when requests == 0.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.errors / self.requests)
    }
}

/// A custom metric's value, or why there is none.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomSample {
    /// The metric's name in spec.analysis.metrics.
    pub name: String,
    /// Its value, or the problem a user reads in status.
    pub value: Result<f64, MetricProblem>,
}

/// Everything one analysis measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurements {
    /// The canary arm (`is_canary="true"`).
    pub canary: ArmSample,
    /// The stable arm (`is_canary="false"`).
    pub stable: ArmSample,
    /// Each custom metric, in spec order.
    pub custom: Vec<CustomSample>,
    /// The range actually queried (whole seconds).
    pub range: Duration,
}

/// One proxy instance's `gray_release_canary_weight` for this rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyWeight {
    /// The `instance` label (`job/instance` when two jobs scrape the same instance).
    pub instance: String,
    /// The weight it applies, in percent.
    pub weight: f64,
}

/// The measuring side of analysis, behind a trait so the controller's decision tests need no
/// server.
pub trait MetricsSource: Send + Sync {
    /// The canary weight every proxy instance that Prometheus scrapes reports for this rollout
    /// (empty: no proxy seen).
    fn proxy_weights(
        &self,
        target: &Target,
    ) -> impl std::future::Future<Output = Result<Vec<ProxyWeight>, AnalysisError>> + Send;

    /// Canary and stable numbers plus custom metrics over `spec.range`, evaluated at the query
    /// time (now).
    fn measure(
        &self,
        target: &Target,
        spec: &MeasureSpec,
    ) -> impl std::future::Future<Output = Result<Measurements, AnalysisError>> + Send;

    /// Both arms' cumulative counts for the sequential judge over `spec.since`, evaluated at
    /// the query time (now).
    fn tally(
        &self,
        target: &Target,
        spec: &TallySpec,
    ) -> impl std::future::Future<Output = Result<Tally, AnalysisError>> + Send;

    /// Both arms' prompt and completion tokens and requests over `range` (token budget and
    /// cost per request), evaluated at the query time (now).
    fn tokens(
        &self,
        target: &Target,
        range: Duration,
    ) -> impl std::future::Future<Output = Result<TokenSample, AnalysisError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error rate is errors over requests, unknown without requests.
    #[test]
    fn error_rate() {
        let arm = ArmSample { requests: 200.0, errors: 5.0, ..ArmSample::default() };
        assert_eq!(arm.error_rate(), Some(0.025));
        assert_eq!(ArmSample::default().error_rate(), None);
    }
}
