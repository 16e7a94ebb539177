//! The proxy's Prometheus metrics. Names and labels are a compatibility contract with the
//! controller's analysis queries and with alert rules people already run (docs/metrics.md):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gray_release_requests_total` | counter | `rollout, rollout_namespace, model, is_canary, status, reason` |
//! | `gray_release_request_duration_seconds` | histogram | `rollout, rollout_namespace, model, is_canary` |
//! | `gray_release_time_to_first_token_seconds` | histogram | `rollout, rollout_namespace, model, is_canary` |
//! | `gray_release_tokens_total` | counter | `rollout, rollout_namespace, model, is_canary, type` |
//! | `gray_release_canary_weight` | gauge | `rollout, rollout_namespace` |
//! | `gray_release_config_reloads_total` | counter | `result` (`success`, `failure`) |
//! | `gray_release_client_cancelled_total` | counter | `rollout, rollout_namespace, model, is_canary` |
//! | `gray_release_routing_generation` | gauge | — |
//! | `gray_release_forced_requests_total` | counter | as `gray_release_requests_total` |
//! | `gray_release_forced_tokens_total` | counter | as `gray_release_tokens_total` |
//!
//! `model` is the upstream model of the arm (e.g. `gpt-4.1`), `is_canary` is `"true"|"false"`,
//! `status` is `success` iff `reason="ok"`. `reason` is one of (see [`Outcome`]): `ok`,
//! `upstream_4xx` (4xx but 429), `rate_limited` (429), `upstream_5xx` (5xx, or the connection
//! broke before the response), `timeout` (no response headers within `--first-byte-timeout`, or
//! a body gap over `--idle-timeout`), `connect` (no connection could be made), `stream_aborted`
//! (the body broke off mid-way), `config` (the proxy's own configuration stopped the request,
//! e.g. an unreadable credential file; never sent upstream). Every upstream attempt is counted, so a request
//! retried after a 503 counts one `upstream_5xx` and then its final outcome. A client that hangs
//! up is not the upstream's fault: it is counted in `gray_release_client_cancelled_total`, not
//! as an error. Per-arm series are created when a route is loaded, so rates start from zero.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Histogram bucket bounds in seconds: LLM latencies, 10 ms .. 120 s. A route adds its
/// rollout's limits to these (`latencyBoundsMs` of the routing document).
pub const LATENCY_BUCKETS: [f64; 15] = modelrollout_api::buckets::LATENCY_BUCKETS;

/// How one upstream attempt ended: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// 2xx (or 1xx/3xx) answered completely.
    Ok,
    /// 4xx other than 429.
    Upstream4xx,
    /// 429.
    RateLimited,
    /// 5xx, or a transport failure after the connection was made but before a response.
    Upstream5xx,
    /// No response headers within the first-byte timeout, or an idle gap between chunks.
    Timeout,
    /// The upstream could not be connected to.
    Connect,
    /// The response body broke off mid-way.
    StreamAborted,
    /// The proxy's configuration stopped the request before it was sent (the arm's credential
    /// file is missing or unreadable, the upstream URL cannot be built): not the upstream's
    /// fault, so an analysis can tell it apart from `connect`.
    Config,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Upstream4xx,
        Outcome::RateLimited,
        Outcome::Upstream5xx,
        Outcome::Timeout,
        Outcome::Connect,
        Outcome::StreamAborted,
        Outcome::Config,
    ];

    /// The `reason` label value.
    pub const fn reason(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Upstream4xx => "upstream_4xx",
            Outcome::RateLimited => "rate_limited",
            Outcome::Upstream5xx => "upstream_5xx",
            Outcome::Timeout => "timeout",
            Outcome::Connect => "connect",
            Outcome::StreamAborted => "stream_aborted",
            Outcome::Config => "config",
        }
    }

    /// The `status` label value.
    pub const fn status(self) -> &'static str {
        match self {
            Outcome::Ok => "success",
            _ => "error",
        }
    }

    /// The outcome an upstream status implies once its body completed.
    pub fn from_status(status: http::StatusCode) -> Self {
        match status.as_u16() {
            429 => Outcome::RateLimited,
            400..=499 => Outcome::Upstream4xx,
            500..=599 => Outcome::Upstream5xx,
            _ => Outcome::Ok,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rollout: String,
    rollout_namespace: String,
    model: String,
    is_canary: &'static str,
    status: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    rollout: String,
    rollout_namespace: String,
    model: String,
    is_canary: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    rollout: String,
    rollout_namespace: String,
    model: String,
    is_canary: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    rollout: String,
    rollout_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, LatencyHistogram>;

fn arm_labels(rollout: &str, namespace: &str, model: &str, is_canary: bool) -> ArmLabels {
    ArmLabels {
        rollout: rollout.to_owned(),
        rollout_namespace: namespace.to_owned(),
        model: model.to_owned(),
        is_canary: if is_canary { "true" } else { "false" },
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Makes latency histograms with the standard bounds plus the extra bounds of the route whose
/// series is being created. A family's constructor sees no labels, so [`Metrics::arm`] sets the
/// bounds just before it creates a route's series, under one lock for the whole family.
#[derive(Clone, Debug, Default)]
struct LatencyHistogram {
    extra: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
}

impl prometheus_client::metrics::family::MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        let extra = self.extra.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Histogram::new(modelrollout_api::buckets::buckets_with(&extra))
    }
}

/// All metric families of the proxy and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<ArmLabels>,
    ttft: HistogramFamily<ArmLabels>,
    /// The constructor of both histogram families, and the lock that makes one route's
    /// series at a time.
    bounds: LatencyHistogram,
    creating: std::sync::Mutex<()>,
    tokens: Family<TokenLabels, Counter>,
    cancelled: Family<ArmLabels, Counter>,
    weight: Family<RolloutLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    generation: Gauge,
    /// Requests a tester forced onto an arm (docs/guards.md): never in analysis.
    forced_requests: Family<RequestLabels, Counter>,
    forced_tokens: Family<TokenLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let bounds = LatencyHistogram::default();
        let duration = HistogramFamily::<ArmLabels>::new_with_constructor(bounds.clone());
        let ttft = HistogramFamily::<ArmLabels>::new_with_constructor(bounds.clone());
        let tokens = Family::<TokenLabels, Counter>::default();
        let cancelled = Family::<ArmLabels, Counter>::default();
        let weight = Family::<RolloutLabels, Gauge>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let generation = Gauge::default();
        let forced_requests = Family::<RequestLabels, Counter>::default();
        let forced_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "gray_release_forced_requests",
            "Upstream attempts of requests forced onto an arm by the rollout's forceArmHeader (left out of analysis)",
            forced_requests.clone(),
        );
        registry.register(
            "gray_release_forced_tokens",
            "Tokens of requests forced onto an arm by the rollout's forceArmHeader (left out of analysis)",
            forced_tokens.clone(),
        );
        registry.register(
            "gray_release_requests",
            "Upstream attempts by rollout, arm and outcome",
            requests.clone(),
        );
        registry.register(
            "gray_release_request_duration_seconds",
            "Time from receiving a request to the end of its response body",
            duration.clone(),
        );
        registry.register(
            "gray_release_time_to_first_token_seconds",
            "Time from receiving a streaming request to its first response chunk",
            ttft.clone(),
        );
        registry.register(
            "gray_release_tokens",
            "Tokens reported in upstream usage, by type (prompt or completion)",
            tokens.clone(),
        );
        registry.register(
            "gray_release_client_cancelled",
            "Requests the client abandoned before the response ended",
            cancelled.clone(),
        );
        registry.register(
            "gray_release_canary_weight",
            "Percentage of traffic the routing table sends to the canary",
            weight.clone(),
        );
        registry.register(
            "gray_release_config_reloads",
            "Routing reloads: success per published table, failure per refused document",
            reloads.clone(),
        );
        registry.register(
            "gray_release_routing_generation",
            "Number of routing tables published since start",
            generation.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            ttft,
            bounds,
            creating: std::sync::Mutex::default(),
            tokens,
            cancelled,
            weight,
            reloads,
            generation,
            forced_requests,
            forced_tokens,
        }
    }

    /// The series of one arm, resolved once so requests only touch atomics.
    pub fn arm(&self, rollout: &str, namespace: &str, model: &str, is_canary: bool) -> ArmMetrics {
        self.arm_with_bounds(rollout, namespace, model, is_canary, &[])
    }

    /// [`Self::arm`] whose latency and TTFT histograms also get `extra_bounds` (seconds: the
    /// rollout's limits), when they are created here. Series that exist keep their buckets.
    pub fn arm_with_bounds(
        &self,
        rollout: &str,
        namespace: &str,
        model: &str,
        is_canary: bool,
        extra_bounds: &[f64],
    ) -> ArmMetrics {
        let mut metrics =
            self.arm_in(&self.requests, &self.tokens, rollout, namespace, model, is_canary);
        let labels = arm_labels(rollout, namespace, model, is_canary);
        {
            // One route's series at a time: the constructor reads the bounds set here.
            let _creating = self.creating.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *self.bounds.extra.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                extra_bounds.to_vec();
            metrics.duration = self.duration.get_or_create_owned(&labels);
            metrics.ttft = self.ttft.get_or_create_owned(&labels);
        }
        metrics.cancelled = self.cancelled.get_or_create_owned(&labels);
        metrics
    }

    /// The series of one arm for forced requests: their own request and token counters
    /// (latency and cancellations are not exported for them).
    pub fn forced_arm(
        &self,
        rollout: &str,
        namespace: &str,
        model: &str,
        is_canary: bool,
    ) -> ArmMetrics {
        self.arm_in(
            &self.forced_requests,
            &self.forced_tokens,
            rollout,
            namespace,
            model,
            is_canary,
        )
    }

    /// Request and token counters of one arm in the given families; latency and cancellation
    /// series unregistered (the callers that export them replace them).
    fn arm_in(
        &self,
        requests: &Family<RequestLabels, Counter>,
        tokens: &Family<TokenLabels, Counter>,
        rollout: &str,
        namespace: &str,
        model: &str,
        is_canary: bool,
    ) -> ArmMetrics {
        let arm = arm_labels(rollout, namespace, model, is_canary);
        let requests = Outcome::ALL.map(|outcome| {
            requests.get_or_create_owned(&RequestLabels {
                rollout: arm.rollout.clone(),
                rollout_namespace: arm.rollout_namespace.clone(),
                model: arm.model.clone(),
                is_canary: arm.is_canary,
                status: outcome.status(),
                reason: outcome.reason(),
            })
        });
        let token = |kind| {
            tokens.get_or_create_owned(&TokenLabels {
                rollout: arm.rollout.clone(),
                rollout_namespace: arm.rollout_namespace.clone(),
                model: arm.model.clone(),
                is_canary: arm.is_canary,
                r#type: kind,
            })
        };
        let unregistered = ArmMetrics::unregistered();
        ArmMetrics {
            requests,
            duration: unregistered.duration,
            ttft: unregistered.ttft,
            prompt_tokens: token("prompt"),
            completion_tokens: token("completion"),
            cancelled: unregistered.cancelled,
        }
    }

    /// Sets `gray_release_canary_weight` of a rollout.
    pub fn set_weight(&self, rollout: &str, namespace: &str, weight: u32) {
        let labels =
            RolloutLabels { rollout: rollout.to_owned(), rollout_namespace: namespace.to_owned() };
        self.weight.get_or_create(&labels).set(i64::from(weight));
    }

    /// Counts a published table.
    pub fn reload_succeeded(&self, generation: u64) {
        self.reloads.get_or_create(&ReloadLabels { result: "success" }).inc();
        self.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Counts a refused document.
    pub fn reload_failed(&self) {
        self.reloads.get_or_create(&ReloadLabels { result: "failure" }).inc();
    }

    /// Reload counters `(success, failure)`, for the status page and tests.
    pub fn reload_counts(&self) -> (u64, u64) {
        let get = |result| {
            self.reloads.get(&ReloadLabels { result }).map(|c| c.get()).unwrap_or_default()
        };
        (get("success"), get("failure"))
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Pre-resolved series of one arm of one rollout.
#[derive(Clone, Debug)]
pub struct ArmMetrics {
    requests: [Counter; 8],
    duration: Histogram,
    ttft: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    cancelled: Counter,
}

impl ArmMetrics {
    /// Series registered nowhere: what a route holds until it is accepted into a table.
    pub fn unregistered() -> Self {
        ArmMetrics {
            requests: Default::default(),
            duration: latency_histogram(),
            ttft: latency_histogram(),
            prompt_tokens: Counter::default(),
            completion_tokens: Counter::default(),
            cancelled: Counter::default(),
        }
    }

    /// Counts one finished upstream attempt and its duration.
    pub fn record(&self, outcome: Outcome, elapsed: std::time::Duration) {
        self.requests[outcome.index()].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Records the time to the first streamed chunk.
    pub fn record_ttft(&self, elapsed: std::time::Duration) {
        self.ttft.observe(elapsed.as_secs_f64());
    }

    /// Adds reported token usage.
    pub fn record_tokens(&self, prompt: u64, completion: u64) {
        self.prompt_tokens.inc_by(prompt);
        self.completion_tokens.inc_by(completion);
    }

    /// Counts a request the client abandoned.
    pub fn record_cancelled(&self) {
        self.cancelled.inc();
    }

    /// `(attempts, errors)` counted so far on this arm, from one read of each counter: a
    /// total and an ok count read at different moments could make errors negative.
    pub fn counts(&self) -> (u64, u64) {
        let per_outcome = self.requests.each_ref().map(Counter::get);
        let errors: u64 = Outcome::ALL
            .iter()
            .filter(|outcome| **outcome != Outcome::Ok)
            .map(|outcome| per_outcome[outcome.index()])
            .sum();
        (errors + per_outcome[Outcome::Ok.index()], errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition uses exactly the contract's names and labels.
    #[test]
    fn exposition_names_and_labels() {
        let metrics = Metrics::new();
        let arm = metrics.arm("chat", "ai", "gpt-4.1", true);
        arm.record(Outcome::Ok, std::time::Duration::from_millis(20));
        arm.record(Outcome::RateLimited, std::time::Duration::from_millis(5));
        arm.record_ttft(std::time::Duration::from_millis(3));
        arm.record_tokens(7, 11);
        metrics.set_weight("chat", "ai", 25);
        metrics.reload_succeeded(1);
        let text = metrics.encode();
        for line in [
            r#"gray_release_requests_total{rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true",status="success",reason="ok"} 1"#,
            r#"gray_release_requests_total{rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true",status="error",reason="rate_limited"} 1"#,
            r#"gray_release_requests_total{rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true",status="error",reason="stream_aborted"} 0"#,
            r#"gray_release_request_duration_seconds_bucket{le="0.025",rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true"} 2"#,
            r#"gray_release_request_duration_seconds_bucket{le="120.0",rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true"} 2"#,
            r#"gray_release_time_to_first_token_seconds_count{rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true"} 1"#,
            r#"gray_release_tokens_total{rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true",type="prompt"} 7"#,
            r#"gray_release_tokens_total{rollout="chat",rollout_namespace="ai",model="gpt-4.1",is_canary="true",type="completion"} 11"#,
            r#"gray_release_canary_weight{rollout="chat",rollout_namespace="ai"} 25"#,
            r#"gray_release_config_reloads_total{result="success"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert_eq!(arm.counts(), (2, 1));
    }

    /// A route's limits become bucket bounds of its own histograms only: "p95 over 800ms" is
    /// then the share of requests above `le="0.8"`, exact.
    #[test]
    fn route_limits_are_bucket_bounds() {
        let metrics = Metrics::new();
        let limited = metrics.arm_with_bounds("chat", "ai", "gpt-4.1", true, &[0.8, 3.0]);
        let plain = metrics.arm("other", "ai", "gpt-4.1", true);
        limited.record(Outcome::Ok, std::time::Duration::from_millis(700));
        limited.record(Outcome::Ok, std::time::Duration::from_millis(900));
        plain.record(Outcome::Ok, std::time::Duration::from_millis(700));
        let text = metrics.encode();
        let bucket = |rollout: &str, le: &str| {
            format!(
                r#"gray_release_request_duration_seconds_bucket{{le="{le}",rollout="{rollout}",rollout_namespace="ai",model="gpt-4.1",is_canary="true"}}"#
            )
        };
        assert!(text.contains(&format!("{} 1", bucket("chat", "0.8"))), "{text}");
        assert!(text.contains(&format!("{} 2", bucket("chat", "3.0"))), "{text}");
        assert!(!text.contains(&bucket("other", "0.8")), "{text}");
    }

    /// Status classes map to the contract's reasons.
    #[test]
    fn outcome_from_status() {
        let table = [
            (200, "ok"),
            (201, "ok"),
            (400, "upstream_4xx"),
            (404, "upstream_4xx"),
            (429, "rate_limited"),
            (500, "upstream_5xx"),
            (503, "upstream_5xx"),
        ];
        assert_eq!(Outcome::Config.reason(), "config");
        assert_eq!(Outcome::Config.status(), "error");
        for (status, reason) in table {
            let outcome = Outcome::from_status(http::StatusCode::from_u16(status).unwrap());
            assert_eq!(outcome.reason(), reason, "{status}");
            assert_eq!(outcome.status(), if reason == "ok" { "success" } else { "error" });
        }
    }
}
