//! The `ModelRollout` custom resource (docs/resource.md): spec, status and the schema rules the API
//! server enforces. Doc comments on fields become the `kubectl explain` text, so they say what a
//! field does, its unit, its default and what happens when it is left out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::routing::{ROUTING_DOCUMENT_VERSION, RoutingArm, RoutingDocument, Stickiness};
use crate::{Duration, Phase, Verdict};

/// API group of every resource in this crate.
pub const GROUP: &str = "rollouts.modelops.io";
/// API version of [`ModelRollout`].
pub const VERSION: &str = "v1alpha1";

// === schema patterns (each also enforced in Rust by `validation`) ===

/// A model name or alias: no leading or trailing whitespace.
pub(crate) const MODEL_NAME_PATTERN: &str = r"^\S(.*\S)?$";
/// A Kubernetes object name (DNS-1123 subdomain).
pub(crate) const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Secret data key.
pub(crate) const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// An HTTP header name (RFC 9110 token).
pub(crate) const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";
/// A custom metric name (DNS-1123 label).
pub(crate) const METRIC_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

// === CEL rules shared by several fields ===

/// Matches DURATION_PATTERN before calling `duration()`, so a malformed string gets the schema's
/// pattern error instead of a CEL evaluation error.
macro_rules! positive_duration_rule {
    ($field:literal) => {
        Rule::new("self.matches('^([0-9]{1,9}(ms|s|m|h))+$') && duration(self) > duration('0s')")
            .message(concat!(
                $field,
                " must be a duration above zero such as 30s, 5m, 2h or 1h30m (units ms, s, m, h)"
            ))
    };
}

/// `$value` is the CEL expression of the string to check (`self` or a path below it).
macro_rules! http_url_rule {
    ($value:literal, $field:literal, $example:literal) => {
        Rule::new(concat!(
            "isURL(",
            $value,
            ") && url(",
            $value,
            ").getScheme() in ['http', 'https'] && url(",
            $value,
            ").getHostname() != ''"
        ))
        .message(concat!($field, " must be an http:// or https:// URL such as ", $example))
    };
}

/// A progressive rollout of one model alias from a stable model API to a canary, with automatic
/// rollback on failed analysis.
// clippy mistakes the repeated `printcolumn(type_ = ...)` items for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "rollouts.modelops.io",
    version = "v1alpha1",
    kind = "ModelRollout",
    plural = "modelrollouts",
    singular = "modelrollout",
    shortname = "mro",
    category = "all",
    namespaced,
    status = "ModelRolloutStatus",
    derive = "PartialEq",
    doc = "ModelRollout moves the traffic of one model alias from a stable model API to a canary model API step by step, checks error rate, latency and time to first token of both in Prometheus, and rolls back to stable on its own when the canary misbehaves.",
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.model",
        description = "Alias clients send as the request body model"
    ),
    printcolumn(
        name = "Stable",
        type_ = "string",
        json_path = ".spec.stable.model",
        description = "Model served to stable traffic"
    ),
    printcolumn(
        name = "Canary",
        type_ = "string",
        json_path = ".spec.canary.model",
        description = "Model served to canary traffic"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canaryWeight",
        description = "Percent of traffic on the canary"
    ),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.currentStepIndex",
        description = "Index of the current step in spec.strategy.steps"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Progressing, Paused, Promoted, RolledBack or Failed"
    ),
    printcolumn(
        name = "Canary-Err",
        type_ = "number",
        json_path = ".status.lastAnalysis.canary.errorRate",
        description = "Canary error rate (0..1) in the last analysis"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Cost-Ratio",
        type_ = "number",
        json_path = ".status.lastAnalysis.costRatio",
        description = "Canary cost per request over stable's in the last analysis (needs pricing on both arms)",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        description = "What the rollout is doing or waiting for, e.g. why a preflight failed",
        priority = 1
    )
)]
#[x_kube(
    validation = Rule::new(
        "!(self.stable.model == self.canary.model && self.stable.endpoint == self.canary.endpoint)"
    ).message(
        "spec.stable and spec.canary are identical (same model and endpoint): give spec.canary a different model or endpoint"
    ),
    validation = http_url_rule!("self.stable.endpoint", "spec.stable.endpoint", "https://api.openai.com/v1")
        .field_path(".stable.endpoint"),
    validation = http_url_rule!("self.canary.endpoint", "spec.canary.endpoint", "https://api.openai.com/v1")
        .field_path(".canary.endpoint"),
    validation = Rule::new(
        "!has(self.analysis.thresholds) || !has(self.analysis.thresholds.maxCostIncrease) || (has(self.stable.pricing) && has(self.canary.pricing))"
    ).message(
        "spec.analysis.thresholds.maxCostIncrease compares the arms' cost per request: set spec.stable.pricing and spec.canary.pricing, e.g. {inputPerMillionTokens: 2, outputPerMillionTokens: 8}"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModelRolloutSpec {
    /// The model alias clients send in the request body "model" (e.g. chat-default). The proxy
    /// routes requests for this alias to stable or canary and rewrites "model" to the arm's model.
    /// Must be unique among the rollouts that share one routing ConfigMap.
    #[schemars(length(min = 1, max = 253), pattern(MODEL_NAME_PATTERN))]
    pub model: String,

    /// The model API that serves traffic today. Gets 100 - canaryWeight percent of requests and
    /// all of them after a rollback.
    pub stable: ModelTarget,

    /// The model API being rolled out. Gets canaryWeight percent of requests and all of them
    /// once promoted.
    pub canary: ModelTarget,

    /// Where the controller publishes the traffic split for the proxy, and how requests stick to
    /// one arm.
    pub routing: RoutingSpec,

    /// The steps that move traffic to the canary.
    pub strategy: Strategy,

    /// How the canary is judged: the Prometheus to ask, how often, over which window, and the
    /// limits it must stay within. Every field has a default.
    #[serde(default)]
    pub analysis: Analysis,

    /// When true the rollout holds at its current weight: no step advances and no analysis
    /// result changes the weight. Set back to false to continue. Default false.
    #[serde(default)]
    pub paused: bool,
}

/// One model API: the model name sent upstream, its base URL and, optionally, its API key.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelTarget {
    /// Model name sent upstream in the request body "model" (e.g. gpt-4.1).
    #[schemars(length(min = 1, max = 253), pattern(MODEL_NAME_PATTERN))]
    pub model: String,

    /// OpenAI-compatible base URL, http:// or https://, e.g. https://api.openai.com/v1. The proxy
    /// appends the request path after /v1 (for example /chat/completions). Never put an API key
    /// in the URL: use credentialsSecretRef.
    // The http(s) rule sits on ModelRolloutSpec so its message can say which arm.
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,

    /// The Secret key that holds the API key, sent upstream as "Authorization: Bearer <key>".
    /// The proxy reads it from its mounted Secret files; it never enters the routing ConfigMap.
    /// Leave out for an upstream that needs no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,

    /// Forward the caller's own Authorization header to this upstream (only without
    /// credentialsSecretRef). Default false: a caller's key never reaches an upstream unless
    /// asked, so a key meant for one provider is not sent to another.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_caller_authorization: bool,

    /// Allow an API key over plain http:// to a host outside the cluster. Default false: keys
    /// go over https://, or plain http:// only to loopback or in-cluster service names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure: bool,

    /// What this model's tokens cost, in any unit you like as long as both arms use the same
    /// (e.g. US dollars). With pricing on both arms the controller records each arm's cost per
    /// 1000 requests in status.lastAnalysis and can check thresholds.maxCostIncrease. Left out:
    /// no cost figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// The price of a model's tokens, per million, in a currency-neutral unit.
#[derive(KubeSchema, Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// Price of one million prompt (input) tokens, e.g. 2 for $2 per million. At least 0.
    #[schemars(range(min = 0.0))]
    pub input_per_million_tokens: f64,

    /// Price of one million completion (output) tokens, e.g. 8 for $8 per million. At least 0.
    #[schemars(range(min = 0.0))]
    pub output_per_million_tokens: f64,
}

/// A key of a Secret in the rollout's namespace.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub name: String,

    /// Key inside the Secret's data, e.g. api-key.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    #[x_kube(validation = Rule::new("!self.contains('..')")
        .message("credentialsSecretRef.key must not contain '..': use the plain key name, e.g. api-key"))]
    pub key: String,
}

/// Where the traffic split goes and how a user stays on one arm.
#[derive(JsonSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// The proxy's ConfigMap in this namespace. The controller writes key "<rollout name>.json"
    /// with server-side apply and creates the ConfigMap if absent; several rollouts may share it.
    pub config_map_ref: ConfigMapRef,

    /// How requests are pinned to one arm. Left out: every request is placed at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<StickinessSpec>,

    /// Opt-in header for testers, e.g. X-Force-Arm: a request carrying it with value canary or
    /// stable goes to that arm whatever the weight (so QA can try the canary at 0%). Forced
    /// requests are counted apart and analysis leaves them out. Any caller can send a header,
    /// so set it only where callers are trusted. Left out (default): nothing forces an arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(HEADER_NAME_PATTERN))]
    pub force_arm_header: Option<String>,
}

/// A ConfigMap in the rollout's namespace.
#[derive(JsonSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMapRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub name: String,
}

/// The sticky key of a request: the first of `headers` present, else `bodyField`, else none.
/// The same key always lands on the same arm, and a key on the canary at 5% stays there at 25%.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StickinessSpec {
    /// Request header names tried in order (case-insensitive), e.g. [X-Session-ID, X-User-ID].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 128), pattern(HEADER_NAME_PATTERN)))]
    pub headers: Vec<String>,

    /// Top-level field of the JSON request body used when no header is present, e.g. user
    /// (the OpenAI "user" parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub body_field: Option<String>,
}

/// The path from 0% to 100% canary traffic.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strategy {
    /// Steps run in order. Each step either sets the canary weight (setWeight) or pauses
    /// (pause). A setWeight step holds until an analysis passes with at least
    /// analysis.minRequests canary requests; a pause with a duration waits that long; a pause
    /// without one waits for a manual promote. After the last step the canary is promoted to
    /// 100%. setWeight values must not go down.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(
        validation = Rule::new("size(self) > 0")
            .message("spec.strategy.steps must list at least one step, e.g. [{setWeight: 10}, {pause: {duration: 1h}}, {setWeight: 100}]"),
        validation = Rule::new("self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()")
            .message("spec.strategy.steps setWeight values must not go down from one step to the next: order them from smallest to largest")
    )]
    pub steps: Vec<Step>,
}

/// One step: exactly one of setWeight or pause.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.setWeight) != has(self.pause)").message(
    "each step in spec.strategy.steps sets exactly one of setWeight or pause: write {setWeight: 10} and {pause: {duration: 1h}} as two steps"
))]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Percent of traffic (0-100) to send to the canary from this step on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,

    /// Hold the current weight: for `duration`, or until a manual promote when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
}

/// A pause in the rollout. Analysis keeps running during it, so a failing canary still rolls back.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseStep {
    /// How long to hold, e.g. 2h. Left out: hold until `kubectl modelrollout promote` (the
    /// rollouts.modelops.io/promote annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = positive_duration_rule!("spec.strategy.steps[].pause.duration"))]
    pub duration: Option<Duration>,
}

/// What to do when Prometheus cannot answer.
#[derive(JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnAnalysisError {
    /// Hold the current weight and retry at the next interval (phase Paused).
    #[default]
    Pause,
    /// Treat the error as a failed check, counting towards failureLimit.
    Rollback,
}

/// How the canary is judged.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.minRequestsForRollback <= self.minRequests").message(
    "spec.analysis.minRequestsForRollback must not exceed spec.analysis.minRequests: lower it (default 10) or raise minRequests (default 100)"
))]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The Prometheus that scrapes the proxies' gray_release_* metrics. Default: the
    /// controller's --prometheus-address.
    #[serde(default)]
    pub prometheus: PrometheusSpec,

    /// How often checks run, e.g. 60s. At least 1s. Default 1m (60s).
    #[serde(default = "default_interval")]
    #[x_kube(
        validation = positive_duration_rule!("spec.analysis.interval"),
        validation = Rule::new("!self.matches('^([0-9]{1,9}(ms|s|m|h))+$') || duration(self) >= duration('1s')")
            .message("spec.analysis.interval must be at least 1s: checking more often only loads Prometheus, e.g. 60s")
    )]
    pub interval: Duration,

    /// The PromQL range each check looks back over (the [window] of rate() and
    /// histogram_quantile()), e.g. 5m. Should cover a few Prometheus scrape intervals.
    /// Default 5m.
    #[serde(default = "default_window")]
    #[x_kube(validation = positive_duration_rule!("spec.analysis.window"))]
    pub window: Duration,

    /// Canary requests in the window needed before a step may advance; below it the check is
    /// Inconclusive and the step holds. Default 100.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub min_requests: i64,

    /// Canary requests in the window needed before a breached threshold counts as a failure;
    /// below it the breach is Inconclusive. Default 10.
    #[serde(default = "default_min_requests_for_rollback")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub min_requests_for_rollback: i64,

    /// Consecutive failed checks that trigger a rollback to stable (at least 1). Default 2.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: i32,

    /// What happens when Prometheus cannot answer: Pause holds the weight and retries; Rollback
    /// counts it as a failed check. Default Pause.
    #[serde(default)]
    pub on_analysis_error: OnAnalysisError,

    /// Limits the canary must stay within. Defaults: maxErrorRate 0.05, maxLatencyP95 2s.
    #[serde(default)]
    pub thresholds: Thresholds,

    /// Extra checks as PromQL templates, each with a min and/or max.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metrics: Vec<CustomMetric>,

    /// How the canary is compared with stable. Sequential (default): anytime-valid evidence on
    /// how errors and slow requests split between the arms, rolling back as soon as it shows a
    /// regression at spec.analysis.confidence, with the thresholds as hard limits on top.
    /// Threshold: the thresholds alone, failureLimit checks in a row.
    #[serde(default)]
    pub method: AnalysisMethod,

    /// Sequential method: how sure the evidence must be before it rolls back, strictly between
    /// 0 and 1. At 0.95 an identical canary is rolled back by mistake in at most 5% of
    /// rollouts, however long it runs and however often it is checked. Default 0.95.
    #[serde(default = "default_confidence")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message(
        "spec.analysis.confidence must be strictly between 0 and 1, e.g. 0.95 (a 5% chance of rolling back an identical canary)"
    ))]
    pub confidence: f64,

    /// Sequential method: the canary-to-stable ratio of error (and slow-request) rates that is
    /// still acceptable, above 1. Once the evidence bounds every ratio under it, status says the
    /// canary is shown safe. Default 1.25.
    #[serde(default = "default_max_regression")]
    #[x_kube(validation = Rule::new("self > 1.0 && self <= 100.0").message(
        "spec.analysis.maxRegression must be a ratio above 1 (and at most 100), e.g. 1.25 for 25% more errors than stable"
    ))]
    pub max_regression: f64,
}

/// How the canary is judged against stable.
#[derive(JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AnalysisMethod {
    /// Anytime-valid sequential test of canary against stable, thresholds as hard limits.
    #[default]
    Sequential,
    /// Fixed thresholds only, failureLimit failed checks in a row roll back.
    Threshold,
}

/// Where Prometheus answers queries.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090. The
    /// controller calls <address>/api/v1/query. Default: the controller's
    /// --prometheus-address (a rollout without either is marked InvalidSpec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = http_url_rule!(
        "self",
        "spec.analysis.prometheus.address",
        "http://prometheus.monitoring:9090"
    ))]
    pub address: Option<String>,
}

/// Built-in limits, each comparing the canary over analysis.window.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    /// Highest canary error rate, a fraction from 0 to 1 (0.05 = 5% of requests failed with a
    /// 5xx, timeout, connection error, rate limit or aborted stream). Default 0.05.
    #[serde(default = "default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,

    /// Highest canary error rate minus stable error rate, a fraction from 0 to 1 (0.01 = one
    /// percentage point worse than stable). Left out: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate_increase: Option<f64>,

    /// Highest canary p95 request duration, e.g. 2s or 1500ms. Default 2s.
    #[serde(default = "default_max_latency_p95")]
    #[x_kube(validation = positive_duration_rule!("spec.analysis.thresholds.maxLatencyP95"))]
    pub max_latency_p95: Duration,

    /// Highest canary p95 time to first token of streamed responses, e.g. 800ms. Left out: not
    /// checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = positive_duration_rule!("spec.analysis.thresholds.maxTimeToFirstTokenP95"))]
    pub max_time_to_first_token_p95: Option<Duration>,

    /// Token budget of the canary: highest rate of prompt plus completion tokens per minute it
    /// may use, summed over every proxy (gray_release_tokens_total). Over it, the rollout does
    /// not advance and steps back to the last step whose weight fits (reason BudgetExceeded);
    /// it never rolls back for the budget alone. A step also waits when the next step's weight
    /// would, by the rate measured now, go over it. Left out: no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000i64))]
    pub max_canary_tokens_per_minute: Option<i64>,

    /// Highest canary cost per request as a multiple of stable's (1.5 = the canary may cost up
    /// to 50% more per request). Needs pricing on both arms. A breach is a failed check like
    /// the others (reason CostExceeded). Left out: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message(
        "spec.analysis.thresholds.maxCostIncrease must be a ratio above 0, e.g. 1.5 for at most 50% more than stable"
    ))]
    pub max_cost_increase: Option<f64>,
}

/// An extra check: a PromQL query that must return one number within [min, max].
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max)").message(
        "each spec.analysis.metrics entry needs min, max or both: e.g. max: 0.02"
    ),
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message(
        "spec.analysis.metrics min must not be greater than max: swap them"
    )
)]
pub struct CustomMetric {
    /// Name of the check, shown in status.lastAnalysis.failedChecks; lowercase letters, digits
    /// and '-', unique within the rollout.
    #[schemars(length(min = 1, max = 63), pattern(METRIC_NAME_PATTERN))]
    pub name: String,

    /// PromQL returning a single number. Placeholders replaced before each query:
    /// {{rollout}} (rollout name), {{namespace}} (its namespace), {{window}} (analysis.window,
    /// e.g. 5m), {{model}} (spec.model), {{stableModel}} and {{canaryModel}}.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// Lowest acceptable value. Left out: no lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// Highest acceptable value. Left out: no upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

// === defaults (docs/resource.md says why each) ===

/// Default `analysis.interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default `analysis.window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Default `analysis.minRequests`.
pub const DEFAULT_MIN_REQUESTS: i64 = 100;
/// Default `analysis.minRequestsForRollback`.
pub const DEFAULT_MIN_REQUESTS_FOR_ROLLBACK: i64 = 10;
/// Default `analysis.failureLimit`.
pub const DEFAULT_FAILURE_LIMIT: i32 = 2;
/// Default `analysis.thresholds.maxErrorRate`.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
/// Default `analysis.thresholds.maxLatencyP95`.
pub const DEFAULT_MAX_LATENCY_P95: Duration = Duration::from_secs(2);
/// Default `analysis.confidence`.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;
/// Default `analysis.maxRegression`.
pub const DEFAULT_MAX_REGRESSION: f64 = 1.25;

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}
fn default_window() -> Duration {
    DEFAULT_WINDOW
}
fn default_min_requests() -> i64 {
    DEFAULT_MIN_REQUESTS
}
fn default_min_requests_for_rollback() -> i64 {
    DEFAULT_MIN_REQUESTS_FOR_ROLLBACK
}
fn default_failure_limit() -> i32 {
    DEFAULT_FAILURE_LIMIT
}
fn default_max_error_rate() -> f64 {
    DEFAULT_MAX_ERROR_RATE
}
fn default_max_latency_p95() -> Duration {
    DEFAULT_MAX_LATENCY_P95
}
fn default_confidence() -> f64 {
    DEFAULT_CONFIDENCE
}
fn default_max_regression() -> f64 {
    DEFAULT_MAX_REGRESSION
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_error_rate: DEFAULT_MAX_ERROR_RATE,
            max_error_rate_increase: None,
            max_latency_p95: DEFAULT_MAX_LATENCY_P95,
            max_time_to_first_token_p95: None,
            max_canary_tokens_per_minute: None,
            max_cost_increase: None,
        }
    }
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            prometheus: PrometheusSpec::default(),
            interval: DEFAULT_INTERVAL,
            window: DEFAULT_WINDOW,
            min_requests: DEFAULT_MIN_REQUESTS,
            min_requests_for_rollback: DEFAULT_MIN_REQUESTS_FOR_ROLLBACK,
            failure_limit: DEFAULT_FAILURE_LIMIT,
            on_analysis_error: OnAnalysisError::default(),
            thresholds: Thresholds::default(),
            metrics: Vec::new(),
            method: AnalysisMethod::default(),
            confidence: DEFAULT_CONFIDENCE,
            max_regression: DEFAULT_MAX_REGRESSION,
        }
    }
}

impl Analysis {
    /// Analysis against `prometheus_address` with every other field at its default.
    pub fn with_defaults(prometheus_address: impl Into<String>) -> Self {
        Analysis {
            prometheus: PrometheusSpec { address: Some(prometheus_address.into()) },
            ..Analysis::default()
        }
    }
}

// === steps, as the controller reads them ===

/// What one step does, once validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepAction {
    /// Send this percentage of traffic to the canary.
    SetWeight(u8),
    /// Hold for this long.
    PauseFor(Duration),
    /// Hold until a manual promote.
    PauseUntilPromoted,
}

impl Step {
    /// A step that sets the canary weight.
    pub fn set_weight(weight: i32) -> Self {
        Step { set_weight: Some(weight), pause: None }
    }

    /// A pause step; `None` waits for a manual promote.
    pub fn pause(duration: Option<Duration>) -> Self {
        Step { set_weight: None, pause: Some(PauseStep { duration }) }
    }

    /// What the step does, or `None` when it breaks the rules (both or neither field, weight out
    /// of 0..=100); `ModelRolloutSpec::validate` reports those.
    pub fn action(&self) -> Option<StepAction> {
        match (self.set_weight, &self.pause) {
            (Some(w), None) => {
                u8::try_from(w).ok().filter(|w| *w <= 100).map(StepAction::SetWeight)
            }
            (None, Some(PauseStep { duration: Some(d) })) => Some(StepAction::PauseFor(*d)),
            (None, Some(PauseStep { duration: None })) => Some(StepAction::PauseUntilPromoted),
            _ => None,
        }
    }
}

// === status ===

/// What the controller observed and decided. Written only by the controller (server-side apply,
/// field manager modelrollout-controller).
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelRolloutStatus {
    /// metadata.generation of the spec this status describes. A different generation means
    /// the controller has not seen the latest spec yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, Progressing, Paused, Promoted, RolledBack or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Percent of traffic (0-100) currently routed to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub canary_weight: Option<i32>,

    /// Index (from 0) of the step in spec.strategy.steps being run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub current_step_index: Option<i32>,

    /// When the current step started (RFC 3339); pause durations count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,

    /// The most recent analysis: verdict and the measurements behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisResult>,

    /// Failed checks in a row; a rollback happens when it reaches spec.analysis.failureLimit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub consecutive_failures: Option<i32>,

    /// One line for humans, e.g. "step 3/7: weight 25%, next check in 60s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The values of the promote, abort and retry annotations the controller has already acted
    /// on, so each request is handled once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_annotations: Option<HandledAnnotations>,

    /// Ready, Progressing, Promoted, RolledBack, AnalysisHealthy, RoutingApplied, InvalidSpec.
    /// `kubectl wait modelrollout/NAME --for=condition=Promoted` waits on these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Hash of the stable and canary model and endpoint this status describes. A spec change that
    /// alters either arm restarts the rollout from its first step at weight 0; other changes
    /// (thresholds, steps) carry on where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arms_hash: Option<String>,

    /// The last analyses (at most 60, oldest first): weight, error rate and p95 of both arms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 60))]
    pub history: Vec<AnalysisPoint>,

    /// The sequential judge's running evidence (spec.analysis.method Sequential), so a
    /// restarted controller resumes without losing any: what it has counted so far and the
    /// likelihood ratios built from it. Reset when the rollout starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialState>,

    /// The last preflight check of the arms' endpoints (condition PreflightPassed holds its
    /// verdict): when it ran and how many failed in a row, for the retry backoff. Reset when
    /// the rollout starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<PreflightState>,
}

/// When the preflight last ran and how often it has failed in a row.
#[derive(JsonSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreflightState {
    /// When both endpoints were last asked for their model list.
    pub checked_at: Time,
    /// Failed checks in a row (0 once one passes); the next try waits 5s doubled per failure,
    /// at most 5m.
    #[schemars(range(min = 0))]
    pub failures: i32,
}

/// The sequential judge's memory between analyses (see status.sequential).
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequentialState {
    /// Since when the cumulative readings count: the moment the proxies applied the current
    /// weight. Each analysis reads increase() over [countedFrom, now] from Prometheus and adds
    /// what is new since the last reading.
    pub counted_from: Time,
    /// Requests slower than this many seconds count as slow: the latency bucket boundary at or
    /// above stable's p95 at the first analysis, chosen before looking at the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_boundary_seconds: Option<f64>,
    /// The same for time to first token (when maxTimeToFirstTokenP95 is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_boundary_seconds: Option<f64>,
    /// One test per metric: errors, latency, timeToFirstToken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub metrics: Vec<SequentialMetricState>,
}

/// One metric's sequential test, as stored.
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequentialMetricState {
    /// errors, latency or timeToFirstToken.
    pub name: String,
    /// The last cumulative reading since countedFrom.
    pub reading: EventCounts,
    /// Everything counted since the rollout started.
    pub totals: EventCounts,
    /// Natural log of the likelihood ratio of each grid ratio (10^((i-40)/40), i = 0..80)
    /// against 1.
    #[schemars(length(max = 81))]
    pub log_likelihood_ratios: Vec<f64>,
    /// The largest log evidence seen: once it reaches ln(1/alpha) the canary has regressed.
    pub peak_log_evidence: f64,
}

/// Requests and bad events (errors, or requests over a latency boundary) of both arms.
#[derive(JsonSchema, Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCounts {
    /// Canary requests.
    pub canary_requests: f64,
    /// Bad events among them.
    pub canary_events: f64,
    /// Stable requests.
    pub stable_requests: f64,
    /// Bad events among them.
    pub stable_events: f64,
}

/// What the sequential judge concluded about one metric at an analysis.
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricEvidence {
    /// What is counted, e.g. "errors" or "requests slower than 2s".
    pub metric: String,
    /// The evidence E against "the canary is no worse": 1 knows nothing, 1/(1-confidence)
    /// and up (with the split between metrics) means a regression.
    pub evidence: f64,
    /// The canary's rate of these events divided by stable's, since the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Lower bound on that ratio at spec.analysis.confidence (0 when unbounded).
    pub ratio_lower_bound: f64,
    /// Upper bound on that ratio at spec.analysis.confidence; absent while unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_upper_bound: Option<f64>,
    /// Canary requests counted since the rollout started.
    pub canary_requests: i64,
    /// The evidence in a sentence, e.g. "canary errors 2.1× stable (≥ 1.4× with 95 %
    /// confidence) after 1 840 canary requests".
    pub summary: String,
}

/// Annotation values already consumed (see rollouts.modelops.io/promote, /abort, /retry).
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledAnnotations {
    /// Value of rollouts.modelops.io/promote last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// Value of rollouts.modelops.io/abort last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// Value of rollouts.modelops.io/retry last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Value of rollouts.modelops.io/promote-full last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_full: Option<String>,
    /// Value of spec.paused last acted on, so Paused and Resumed are each announced once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// One point of the analysis history kept in status for sparklines (`kubectl modelrollout
/// status`): the weight and both arms' error rate and p95 latency at one analysis.
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisPoint {
    /// When the measurements were taken.
    pub time: Time,
    /// Canary weight (percent) the measurements were taken at.
    pub canary_weight: i32,
    /// Pass, Fail, Inconclusive or Error.
    pub verdict: Verdict,
    /// Canary error rate (0..1); absent when the canary served no request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_error_rate: Option<f64>,
    /// Stable error rate (0..1); absent when stable served no request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_error_rate: Option<f64>,
    /// Canary p95 latency in seconds; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_latency_p95_seconds: Option<f64>,
    /// Stable p95 latency in seconds; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_latency_p95_seconds: Option<f64>,
}

/// How many points `status.history` keeps (the oldest are dropped first).
pub const HISTORY_LIMIT: usize = 60;

/// One analysis run.
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisResult {
    /// When the measurements were taken.
    pub time: Time,

    /// Pass, Fail, Inconclusive (too few requests) or Error (Prometheus could not answer).
    pub verdict: Verdict,

    /// The canary's measurements over the window.
    pub canary: ArmMeasurements,

    /// The stable arm's measurements over the same window, for comparison.
    pub stable: ArmMeasurements,

    /// Values of the custom metrics of spec.analysis.metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricValue>,

    /// The checks that breached their limit in this run (empty when the verdict is Pass).
    #[serde(default)]
    pub failed_checks: Vec<FailedCheck>,

    /// Why the verdict is Error or Inconclusive, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The sequential judge's evidence per metric (spec.analysis.method Sequential).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub evidence: Vec<MetricEvidence>,
    /// Canary cost per request divided by stable's (1.2 = 20% more), when both arms have
    /// pricing and served requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_ratio: Option<f64>,
}

/// Measurements of one arm. A missing value means Prometheus had no data for it.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmMeasurements {
    /// Requests in the window.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub requests: i64,

    /// Fraction of requests that failed (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,

    /// p95 request duration in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_seconds: Option<f64>,

    /// p95 time to first token of streamed responses, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_p95_seconds: Option<f64>,

    /// Prompt plus completion tokens per minute over the window, summed over every proxy
    /// (measured when a token budget or pricing is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<f64>,

    /// Cost of 1000 requests at this arm's pricing and its measured tokens per request (same
    /// unit as pricing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_1k_requests: Option<f64>,
}

/// The value of one custom metric.
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// spec.analysis.metrics[].name.
    pub name: String,
    /// The query's result; missing when it returned no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// A check that breached its limit.
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedCheck {
    /// errorRate, errorRateIncrease, latencyP95, timeToFirstTokenP95, or a custom metric's name.
    pub name: String,
    /// The reason word, e.g. ErrorRateExceeded.
    pub reason: String,
    /// The measured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The limit it breached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// One line for humans, e.g. "canary error rate 9.1% > 5% (stable 0.6%)".
    pub message: String,
}

// === the routing document of a rollout ===

impl ModelRollout {
    /// The latency and TTFT limits in whole milliseconds (at least 1): the extra histogram
    /// bounds of the rollout's route, so its p95 checks are exact (see `buckets`).
    pub fn latency_limits_ms(&self) -> Vec<u32> {
        let t = &self.spec.analysis.thresholds;
        let ms = |d: Duration| u32::try_from(d.as_std().as_millis()).unwrap_or(u32::MAX).max(1);
        let mut bounds = vec![ms(t.max_latency_p95)];
        bounds.extend(t.max_time_to_first_token_p95.map(ms));
        bounds.sort_unstable();
        bounds.dedup();
        bounds.retain(|b| *b <= 3_600_000);
        bounds
    }

    /// The routing document the controller writes for this rollout at `canary_weight` percent
    /// in `phase`, validated. Credentials become `<secret>/<key>` names, never secrets.
    pub fn routing_document(
        &self,
        canary_weight: u32,
        phase: Phase,
    ) -> crate::Result<RoutingDocument> {
        let object = self.metadata.name.clone().unwrap_or_else(|| "<unnamed>".to_owned());
        let missing = |field| crate::Error::MissingMetadata { object: object.clone(), field };
        let rollout = self.metadata.name.clone().ok_or_else(|| missing("name"))?;
        let namespace = self.metadata.namespace.clone().ok_or_else(|| missing("namespace"))?;
        let arm = |target: &ModelTarget| RoutingArm {
            model: target.model.clone(),
            endpoint: target.endpoint.clone(),
            credential: target
                .credentials_secret_ref
                .as_ref()
                .map(|secret| format!("{}/{}", secret.name, secret.key)),
            pass_caller_authorization: target.pass_caller_authorization,
            allow_insecure: target.allow_insecure,
        };
        // Second precision in a fixed format, so replicas compare creation times as strings.
        let created_at = self.metadata.creation_timestamp.as_ref().map(|time| {
            k8s_openapi::jiff::Timestamp::from_second(time.0.as_second())
                .map_or_else(|_| time.0.to_string(), |t| t.to_string())
        });
        let stickiness = self.spec.routing.stickiness.clone().unwrap_or_default();
        let document = RoutingDocument {
            version: ROUTING_DOCUMENT_VERSION,
            rollout,
            namespace,
            generation: self.metadata.generation.unwrap_or(0),
            created_at,
            model: self.spec.model.clone(),
            stable: arm(&self.spec.stable),
            canary: arm(&self.spec.canary),
            canary_weight,
            stickiness: Stickiness {
                headers: stickiness.headers,
                body_field: stickiness.body_field,
            },
            phase,
            latency_bounds_ms: self.latency_limits_ms(),
            force_arm_header: self.spec.routing.force_arm_header.clone(),
        };
        document.validate()?;
        Ok(document)
    }

    /// The ConfigMap key this rollout's routing document lives under: `"<name>.json"`.
    pub fn routing_key(&self) -> String {
        crate::routing::config_map_key(&self.name_any())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A complete rollout with a status, as the controller writes it mid-rollout.
    const COMPLETE_EXAMPLE: &str = r#"
apiVersion: rollouts.modelops.io/v1alpha1
kind: ModelRollout
metadata: {name: chat-assistant, namespace: ai, generation: 3}
spec:
  model: chat-default
  stable:
    model: gpt-4.1
    endpoint: https://api.openai.com/v1
    credentialsSecretRef: {name: openai, key: api-key}
  canary:
    model: claude-sonnet-4.5
    endpoint: http://relay.ai.svc:8080/v1
    credentialsSecretRef: {name: relay, key: api-key}
  routing:
    configMapRef: {name: model-router}
    stickiness: {headers: [X-Session-ID, X-User-ID], bodyField: user}
  strategy:
    steps:
      - setWeight: 5
      - pause: {duration: 2h}
      - setWeight: 25
      - pause: {duration: 4h}
      - setWeight: 50
      - pause: {}
      - setWeight: 100
  analysis:
    prometheus: {address: http://prometheus.monitoring:9090}
    interval: 60s
    window: 5m
    minRequests: 100
    minRequestsForRollback: 10
    failureLimit: 2
    onAnalysisError: Pause
    thresholds:
      maxErrorRate: 0.05
      maxErrorRateIncrease: 0.01
      maxLatencyP95: 2s
      maxTimeToFirstTokenP95: 800ms
    metrics:
      - name: cost-per-request
        query: sum(rate(x{rollout="{{rollout}}",rollout_namespace="{{namespace}}"}[{{window}}]))
        max: 0.02
  paused: false
status:
  observedGeneration: 3
  phase: Progressing
  canaryWeight: 25
  currentStepIndex: 2
  stepStartedAt: "2026-11-27T10:00:00Z"
  lastAnalysis:
    time: "2026-11-27T10:05:00Z"
    verdict: Pass
    canary: {requests: 412, errorRate: 0.007, latencyP95Seconds: 1.2, timeToFirstTokenP95Seconds: 0.31}
    stable: {requests: 3890, errorRate: 0.006, latencyP95Seconds: 1.1, timeToFirstTokenP95Seconds: 0.29}
    failedChecks: []
  consecutiveFailures: 0
  message: "step 3/7: weight 25%, next check in 60s"
  conditions:
    - {type: RolledBack, status: "True", reason: ErrorRateExceeded, message: "canary error rate 9.1% > 5%", lastTransitionTime: "2026-11-27T10:00:00Z"}
"#;

    pub(crate) fn complete_example() -> ModelRollout {
        serde_yaml::from_str(COMPLETE_EXAMPLE).unwrap()
    }

    fn crd_json() -> Value {
        serde_json::to_value(crate::crd()).unwrap()
    }

    /// The complete example reads into typed fields and survives a JSON round trip.
    #[test]
    fn complete_example_round_trips() {
        let rollout = complete_example();
        let spec = &rollout.spec;
        assert_eq!(spec.analysis.interval, Duration::from_secs(60));
        assert_eq!(
            spec.analysis.thresholds.max_time_to_first_token_p95,
            Some(Duration::from_millis(800))
        );
        assert_eq!(
            spec.strategy.steps[1].action(),
            Some(StepAction::PauseFor(Duration::from_secs(7200)))
        );
        let status = rollout.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(Phase::Progressing));
        assert_eq!(status.last_analysis.as_ref().unwrap().canary.requests, 412);
        assert_eq!(status.conditions[0].reason, "ErrorRateExceeded");
        let json = serde_json::to_value(&rollout).unwrap();
        assert_eq!(serde_json::from_value::<ModelRollout>(json).unwrap(), rollout);
    }

    /// Fields left out take the defaults of docs/resource.md, in Rust as in the schema.
    #[test]
    fn defaults_match_resource_doc() {
        let spec: ModelRolloutSpec = serde_json::from_value(json!({
            "model": "m", "stable": {"model": "a", "endpoint": "http://a"},
            "canary": {"model": "b", "endpoint": "http://b"},
            "routing": {"configMapRef": {"name": "r"}},
            "strategy": {"steps": [{"setWeight": 100}]},
            "analysis": {"prometheus": {"address": "http://p:9090"}}
        }))
        .unwrap();
        assert_eq!(spec.analysis, Analysis::with_defaults("http://p:9090"));
        assert!(!spec.paused);
        let analysis = &crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]["analysis"]["properties"];
        let table = [
            ("interval", json!("1m")),
            ("window", json!("5m")),
            ("minRequests", json!(100)),
            ("minRequestsForRollback", json!(10)),
            ("failureLimit", json!(2)),
            ("onAnalysisError", json!("Pause")),
            ("thresholds", json!({"maxErrorRate": 0.05, "maxLatencyP95": "2s"})),
        ];
        for (field, default) in table {
            assert_eq!(analysis[field]["default"], default, "{field}");
        }
    }

    /// Group, names, scope, status subresource and the printer columns of docs/resource.md.
    #[test]
    fn crd_identity_and_columns() {
        let crd = crd_json();
        assert_eq!(crd["metadata"]["name"], "modelrollouts.rollouts.modelops.io");
        assert_eq!(crd["spec"]["group"], GROUP);
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mro"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], VERSION);
        assert_eq!(version["subresources"]["status"], json!({}));
        let columns: Vec<(String, String)> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_uppercase(),
                    c["jsonPath"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected = [
            ("MODEL", ".spec.model"),
            ("STABLE", ".spec.stable.model"),
            ("CANARY", ".spec.canary.model"),
            ("WEIGHT", ".status.canaryWeight"),
            ("STEP", ".status.currentStepIndex"),
            ("PHASE", ".status.phase"),
            ("CANARY-ERR", ".status.lastAnalysis.canary.errorRate"),
            ("AGE", ".metadata.creationTimestamp"),
            ("COST-RATIO", ".status.lastAnalysis.costRatio"),
            ("MESSAGE", ".status.message"),
        ];
        assert_eq!(columns.len(), expected.len());
        for ((name, path), (want_name, want_path)) in columns.iter().zip(expected) {
            assert_eq!((name.as_str(), path.as_str()), (want_name, want_path));
        }
    }

    /// Walks every schema node below `path`, calling `visit(path, node)`.
    fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
        visit(path, node);
        if let Some(properties) = node["properties"].as_object() {
            for (name, child) in properties {
                walk(&format!("{path}.{name}"), child, visit);
            }
        }
        if node["items"].is_object() {
            walk(&format!("{path}[]"), &node["items"], visit);
        }
    }

    /// Every spec and status field has a description (it is the `kubectl explain` text), strings
    /// and lists in the spec are bounded (CEL cost estimation), and nothing keeps unknown fields.
    #[test]
    fn schema_is_documented_bounded_and_structural() {
        let crd = crd_json();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut problems = Vec::new();
        for part in ["spec", "status"] {
            walk(part, &root["properties"][part], &mut |path, node| {
                // Scalar list items are described by their list.
                let scalar_item = path.ends_with("[]") && node["type"] != "object";
                if !scalar_item && node["description"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{path} has no description"));
                }
                if node.get("x-kubernetes-preserve-unknown-fields").is_some()
                    || node.get("additionalProperties").is_some()
                {
                    problems.push(format!("{path} accepts unknown fields"));
                }
                let bounded = match node["type"].as_str() {
                    Some("string") => node.get("maxLength").is_some() || node.get("enum").is_some(),
                    Some("array") => node.get("maxItems").is_some(),
                    _ => true,
                };
                if part == "spec" && !bounded {
                    problems.push(format!("{path} has no maxLength/maxItems"));
                }
            });
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// Each CEL rule is in the schema with a message that names the field.
    #[test]
    fn schema_carries_the_cel_rules() {
        let json = serde_json::to_string(&crate::crd()).unwrap();
        let table = [
            ("isSorted()", "setWeight values must not go down"),
            ("size(self) > 0", "spec.strategy.steps must list at least one step"),
            ("has(self.setWeight) != has(self.pause)", "sets exactly one of setWeight or pause"),
            ("duration(self) >= duration('1s')", "spec.analysis.interval must be at least 1s"),
            (
                "duration(self) > duration('0s')",
                "spec.analysis.window must be a duration above zero",
            ),
            ("has(self.min) || has(self.max)", "needs min, max or both"),
            (
                "self.stable.endpoint == self.canary.endpoint",
                "spec.stable and spec.canary are identical",
            ),
            (
                "url(self.canary.endpoint).getScheme()",
                "spec.canary.endpoint must be an http:// or https:// URL",
            ),
            (
                "self.minRequestsForRollback <= self.minRequests",
                "must not exceed spec.analysis.minRequests",
            ),
        ];
        for (rule, message) in table {
            assert!(json.contains(rule), "rule {rule:?} missing");
            assert!(json.contains(message), "message {message:?} missing");
        }
    }

    /// crds/modelrollout.yaml is what crdgen prints now.
    #[test]
    fn committed_crd_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/modelrollout.yaml");
        let committed = std::fs::read_to_string(path).unwrap();
        let generated = serde_yaml::to_string(&crate::crd()).unwrap();
        assert!(
            committed.ends_with(&generated),
            "crds/modelrollout.yaml is out of date with the code: run `make crds` and commit it"
        );
    }

    /// Step::action reads each step shape, and refuses broken ones.
    #[test]
    fn step_actions() {
        let table = [
            (Step::set_weight(25), Some(StepAction::SetWeight(25))),
            (Step::set_weight(0), Some(StepAction::SetWeight(0))),
            (Step::set_weight(101), None),
            (Step::set_weight(-1), None),
            (
                Step::pause(Some(Duration::from_secs(60))),
                Some(StepAction::PauseFor(Duration::from_secs(60))),
            ),
            (Step::pause(None), Some(StepAction::PauseUntilPromoted)),
            (Step { set_weight: Some(5), pause: Some(PauseStep::default()) }, None),
            (Step { set_weight: None, pause: None }, None),
        ];
        for (step, action) in table {
            assert_eq!(step.action(), action, "{step:?}");
        }
    }

    /// The routing document carries the spec's arms, secret names (not secrets) and the weight.
    #[test]
    fn routing_document_from_rollout() {
        let rollout = complete_example();
        let doc = rollout.routing_document(25, Phase::Progressing).unwrap();
        assert_eq!(doc.rollout, "chat-assistant");
        assert_eq!(doc.namespace, "ai");
        assert_eq!(doc.generation, 3);
        assert_eq!(doc.stable.credential.as_deref(), Some("openai/api-key"));
        assert_eq!(doc.canary.endpoint, "http://relay.ai.svc:8080/v1");
        assert_eq!(doc.stickiness.headers, ["X-Session-ID", "X-User-ID"]);
        assert_eq!(doc.config_map_key(), rollout.routing_key());
        assert_eq!(RoutingDocument::parse(doc.to_json().as_bytes()).unwrap(), doc);
        assert!(!doc.stable.pass_caller_authorization && !doc.canary.allow_insecure);

        // Per-arm key options and the creation time (to the second) are carried over.
        let mut rollout = complete_example();
        rollout.spec.canary.credentials_secret_ref = None;
        rollout.spec.canary.pass_caller_authorization = true;
        rollout.spec.canary.endpoint = "http://relay.example.com/v1".to_owned();
        rollout.spec.canary.allow_insecure = true;
        rollout.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-27T10:00:00.250Z".parse().unwrap(),
            ));
        let doc = rollout.routing_document(25, Phase::Progressing).unwrap();
        assert!(doc.canary.pass_caller_authorization && doc.canary.allow_insecure);
        assert_eq!(doc.created_at.as_deref(), Some("2026-11-27T10:00:00Z"));
        rollout.spec.canary.allow_insecure = false;
        let err = rollout.routing_document(25, Phase::Progressing).unwrap_err().to_string();
        assert!(err.contains("canary.endpoint") && err.contains("allowInsecure"), "{err}");

        let table = [
            (RoutingCase::NoNamespace, "has no metadata.namespace"),
            (RoutingCase::NoName, "has no metadata.name"),
            (RoutingCase::Weight(140), "canaryWeight is 140"),
        ];
        for (case, expected) in table {
            let mut rollout = complete_example();
            let weight = match case {
                RoutingCase::NoNamespace => {
                    rollout.metadata.namespace = None;
                    25
                }
                RoutingCase::NoName => {
                    rollout.metadata.name = None;
                    25
                }
                RoutingCase::Weight(w) => w,
            };
            let err = rollout.routing_document(weight, Phase::Progressing).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    enum RoutingCase {
        NoNamespace,
        NoName,
        Weight(u32),
    }
}
