//! Rust-side validation of a `ModelRollout`: every rule the CRD schema enforces, plus those it
//! cannot express (PromQL placeholders, URLs without credentials, unique metric names). The
//! controller runs it before touching traffic and reports failures in the `InvalidSpec`
//! condition; each problem names the field, the bad value and the fix.

use std::collections::HashSet;
use std::fmt;

use kube::ResourceExt;

use crate::rollout::{
    Analysis, CustomMetric, ModelRollout, ModelRolloutSpec, ModelTarget, RoutingSpec, Step,
    Thresholds,
};
use crate::routing::{
    HEADER_NAME_FIX, endpoint_problem, is_dns1123_label, is_dns1123_subdomain, is_http_header_name,
    is_secret_key, same_endpoint,
};
use crate::{Duration, Error, Result};

/// Placeholders a custom metric query may use, replaced by [`render_query`].
pub const QUERY_PLACEHOLDERS: &[&str] =
    &["rollout", "namespace", "window", "model", "stableModel", "canaryModel"];

/// Shortest analysis interval the controller accepts.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// One broken rule: the field, its value as written and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// Path of the field, e.g. `spec.strategy.steps[3].setWeight`.
    pub field: String,
    /// The value as written (strings quoted).
    pub value: String,
    /// What to write instead.
    pub fix: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}: {}", self.field, self.value, self.fix)
    }
}

/// Every problem found in one spec. `Display` is one line, suitable for a condition message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec {
    /// `<namespace>/<name>` of the rollout, when known.
    pub object: Option<String>,
    /// The problems, in field order; never empty.
    pub problems: Vec<SpecProblem>,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) => write!(f, "ModelRollout {object} has an invalid spec: ")?,
            None => f.write_str("ModelRollout spec is invalid: ")?,
        }
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// The values [`render_query`] puts in place of the placeholders.
#[derive(Clone, Copy, Debug)]
pub struct QueryValues<'a> {
    /// `{{rollout}}`: the rollout's name.
    pub rollout: &'a str,
    /// `{{namespace}}`: the rollout's namespace.
    pub namespace: &'a str,
    /// `{{window}}`: `spec.analysis.window` as a PromQL duration, e.g. `5m`.
    pub window: Duration,
    /// `{{model}}`: `spec.model`.
    pub model: &'a str,
    /// `{{stableModel}}`: `spec.stable.model`.
    pub stable_model: &'a str,
    /// `{{canaryModel}}`: `spec.canary.model`.
    pub canary_model: &'a str,
}

/// Replaces `{{placeholder}}`s in a custom metric query. Fails with [`Error::QueryTemplate`],
/// naming the placeholder and the known ones, on an unknown or unclosed placeholder.
pub fn render_query(template: &str, values: &QueryValues<'_>) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(Error::QueryTemplate {
                problem: format!(
                    "unclosed {{{{ at {:?}: close it with }}}}",
                    abbreviate(&rest[start..])
                ),
            });
        };
        let name = after[..end].trim();
        let value = match name {
            "rollout" => values.rollout.to_owned(),
            "namespace" => values.namespace.to_owned(),
            "window" => values.window.to_string(),
            "model" => values.model.to_owned(),
            "stableModel" => values.stable_model.to_owned(),
            "canaryModel" => values.canary_model.to_owned(),
            other => {
                return Err(Error::QueryTemplate {
                    problem: format!(
                        "unknown placeholder {{{{{other}}}}}: use one of {}",
                        QUERY_PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{{{p}}}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The first 40 characters of a long text, for error messages.
fn abbreviate(text: &str) -> String {
    const KEEP: usize = 40;
    if text.chars().count() <= KEEP {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(KEEP).collect::<String>())
    }
}

// === impl ModelRollout ===

impl ModelRollout {
    /// Validates the spec; the error names this object, every broken field and its fix.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        self.spec.validate().map_err(|mut invalid| {
            invalid.object =
                Some(format!("{}/{}", self.namespace().unwrap_or_default(), self.name_any()));
            invalid
        })
    }
}

// === impl ModelRolloutSpec ===

impl ModelRolloutSpec {
    /// Checks every rule of the CRD schema and those the schema cannot express.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut problems = Problems::default();
        problems.model_name("spec.model", &self.model);
        problems.target("spec.stable", &self.stable);
        problems.target("spec.canary", &self.canary);
        if self.stable.model == self.canary.model
            && same_endpoint(&self.stable.endpoint, &self.canary.endpoint)
        {
            problems.push(
                "spec.canary",
                format!(
                    "the same as spec.stable ({:?} at {:?})",
                    self.canary.model, self.canary.endpoint
                ),
                "give spec.canary a different model or endpoint",
            );
        }
        problems.routing(&self.routing);
        problems.steps(&self.strategy.steps);
        problems.analysis(self);
        problems.into_result()
    }
}

/// Collects problems in field order.
#[derive(Default)]
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, value: impl Into<String>, fix: impl Into<String>) {
        self.0.push(SpecProblem { field: field.into(), value: value.into(), fix: fix.into() });
    }

    fn into_result(self) -> Result<(), InvalidSpec> {
        if self.0.is_empty() { Ok(()) } else { Err(InvalidSpec { object: None, problems: self.0 }) }
    }

    fn model_name(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(field, format!("{value:?}"), "must name a model, e.g. gpt-4.1");
        } else if value.trim() != value {
            self.push(field, format!("{value:?}"), "must not start or end with whitespace");
        } else if value.len() > 253 {
            self.push(
                field,
                format!("{} characters long", value.len()),
                "must be at most 253 characters",
            );
        }
    }

    fn http_url(&mut self, field: &str, value: &str) {
        if let Some(fix) = endpoint_problem(value) {
            // A URL with user info may carry a key: never echo it.
            let shown = if fix.contains("credentials") {
                "\"<redacted>\"".to_owned()
            } else {
                format!("{value:?}")
            };
            self.push(field, shown, fix);
        }
    }

    fn target(&mut self, field: &str, target: &ModelTarget) {
        self.model_name(&format!("{field}.model"), &target.model);
        self.http_url(&format!("{field}.endpoint"), &target.endpoint);
        if let Some(secret) = &target.credentials_secret_ref {
            if !is_dns1123_subdomain(&secret.name) {
                self.push(
                    format!("{field}.credentialsSecretRef.name"),
                    format!("{:?}", secret.name),
                    "must be a Secret name: lowercase letters, digits, '-' and '.'",
                );
            }
            if !is_secret_key(&secret.key) || secret.key.contains("..") {
                self.push(
                    format!("{field}.credentialsSecretRef.key"),
                    format!("{:?}", secret.key),
                    "must be a key of the Secret's data: letters, digits, '-', '_' and '.', no '..', e.g. api-key",
                );
            }
        }
    }

    fn routing(&mut self, routing: &RoutingSpec) {
        if !is_dns1123_subdomain(&routing.config_map_ref.name) {
            self.push(
                "spec.routing.configMapRef.name",
                format!("{:?}", routing.config_map_ref.name),
                "must be a ConfigMap name: lowercase letters, digits, '-' and '.', e.g. model-router",
            );
        }
        if let Some(header) = &routing.force_arm_header
            && (!is_http_header_name(header) || header.len() > 128)
        {
            self.push(
                "spec.routing.forceArmHeader",
                format!("{header:?}"),
                "must be an HTTP header name without spaces, e.g. X-Force-Arm, or be left out",
            );
        }
        let Some(stickiness) = &routing.stickiness else { return };
        if stickiness.headers.len() > 16 {
            self.push(
                "spec.routing.stickiness.headers",
                format!("{} headers", stickiness.headers.len()),
                "list at most 16 headers",
            );
        }
        for (i, header) in stickiness.headers.iter().enumerate() {
            if !is_http_header_name(header) {
                self.push(
                    format!("spec.routing.stickiness.headers[{i}]"),
                    format!("{header:?}"),
                    HEADER_NAME_FIX,
                );
            }
        }
        if let Some(field) = &stickiness.body_field
            && field.trim().is_empty()
        {
            self.push(
                "spec.routing.stickiness.bodyField",
                format!("{field:?}"),
                "must name a top-level request body field, e.g. user, or be left out",
            );
        }
    }

    fn steps(&mut self, steps: &[Step]) {
        if steps.is_empty() {
            self.push(
                "spec.strategy.steps",
                "empty",
                "list at least one step, e.g. [{setWeight: 10}, {pause: {duration: 1h}}, {setWeight: 100}]",
            );
        }
        if steps.len() > 50 {
            self.push(
                "spec.strategy.steps",
                format!("{} steps", steps.len()),
                "use at most 50 steps",
            );
        }
        let mut previous_weight: Option<(usize, i32)> = None;
        for (i, step) in steps.iter().enumerate() {
            let field = format!("spec.strategy.steps[{i}]");
            match (step.set_weight, &step.pause) {
                (Some(_), Some(_)) => self.push(
                    &field,
                    "both setWeight and pause",
                    "set exactly one: write {setWeight: 10} and {pause: {duration: 1h}} as two steps",
                ),
                (None, None) => self.push(
                    &field,
                    "neither setWeight nor pause",
                    "set exactly one, e.g. {setWeight: 10} or {pause: {duration: 1h}}",
                ),
                _ => {}
            }
            if let Some(weight) = step.set_weight {
                if !(0..=100).contains(&weight) {
                    self.push(
                        format!("{field}.setWeight"),
                        weight.to_string(),
                        "must be between 0 and 100",
                    );
                }
                if let Some((j, before)) = previous_weight
                    && weight < before
                {
                    self.push(
                        format!("{field}.setWeight"),
                        weight.to_string(),
                        format!(
                            "must not be below steps[{j}].setWeight ({before}): weights only go up"
                        ),
                    );
                }
                previous_weight = Some((i, weight));
            }
            if let Some(duration) = step.pause.as_ref().and_then(|p| p.duration)
                && duration.is_zero()
            {
                self.push(
                    format!("{field}.pause.duration"),
                    duration.to_string(),
                    "must be above zero, e.g. 1h; leave it out to wait for a manual promote",
                );
            }
        }
    }

    fn analysis(&mut self, spec: &ModelRolloutSpec) {
        let analysis: &Analysis = &spec.analysis;
        if let Some(address) = &analysis.prometheus.address {
            self.http_url("spec.analysis.prometheus.address", address);
        }
        if analysis.interval < MIN_INTERVAL {
            self.push(
                "spec.analysis.interval",
                analysis.interval.to_string(),
                "must be at least 1s, e.g. 60s",
            );
        }
        if analysis.window.is_zero() {
            self.push(
                "spec.analysis.window",
                analysis.window.to_string(),
                "must be above zero, e.g. 5m",
            );
        }
        if analysis.min_requests < 0 {
            self.push(
                "spec.analysis.minRequests",
                analysis.min_requests.to_string(),
                "must be 0 or more (default 100)",
            );
        }
        if analysis.min_requests_for_rollback < 0 {
            self.push(
                "spec.analysis.minRequestsForRollback",
                analysis.min_requests_for_rollback.to_string(),
                "must be 0 or more (default 10)",
            );
        } else if analysis.min_requests_for_rollback > analysis.min_requests {
            self.push(
                "spec.analysis.minRequestsForRollback",
                analysis.min_requests_for_rollback.to_string(),
                format!("must not exceed spec.analysis.minRequests ({})", analysis.min_requests),
            );
        }
        if analysis.failure_limit < 1 {
            self.push(
                "spec.analysis.failureLimit",
                analysis.failure_limit.to_string(),
                "must be at least 1 (default 2)",
            );
        }
        self.thresholds(&analysis.thresholds);
        self.metrics(spec);
        self.sequential(analysis);
        self.guards(spec);
    }

    fn sequential(&mut self, analysis: &Analysis) {
        if !(analysis.confidence > 0.0 && analysis.confidence < 1.0) {
            self.push(
                "spec.analysis.confidence",
                analysis.confidence.to_string(),
                "must be strictly between 0 and 1, e.g. 0.95 (a 5% chance of rolling back an identical canary)",
            );
        }
        if !(analysis.max_regression > 1.0 && analysis.max_regression <= 100.0) {
            self.push(
                "spec.analysis.maxRegression",
                analysis.max_regression.to_string(),
                "must be a ratio above 1 (and at most 100), e.g. 1.25 for 25% more errors than stable",
            );
        }
    }

    fn rate(&mut self, field: &str, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.push(
                field,
                value.to_string(),
                "must be a fraction between 0 and 1, e.g. 0.05 for 5%",
            );
        }
    }

    fn thresholds(&mut self, thresholds: &Thresholds) {
        self.rate("spec.analysis.thresholds.maxErrorRate", thresholds.max_error_rate);
        if let Some(increase) = thresholds.max_error_rate_increase {
            self.rate("spec.analysis.thresholds.maxErrorRateIncrease", increase);
        }
        if thresholds.max_latency_p95.is_zero() {
            self.push(
                "spec.analysis.thresholds.maxLatencyP95",
                "0s",
                "must be above zero, e.g. 2s",
            );
        }
        if thresholds.max_time_to_first_token_p95.is_some_and(Duration::is_zero) {
            self.push(
                "spec.analysis.thresholds.maxTimeToFirstTokenP95",
                "0s",
                "must be above zero, e.g. 800ms, or be left out",
            );
        }
    }

    fn metrics(&mut self, spec: &ModelRolloutSpec) {
        let metrics: &[CustomMetric] = &spec.analysis.metrics;
        if metrics.len() > 20 {
            self.push(
                "spec.analysis.metrics",
                format!("{} metrics", metrics.len()),
                "list at most 20",
            );
        }
        let mut seen = HashSet::new();
        let probe = QueryValues {
            rollout: "r",
            namespace: "n",
            window: spec.analysis.window,
            model: &spec.model,
            stable_model: &spec.stable.model,
            canary_model: &spec.canary.model,
        };
        for (i, metric) in metrics.iter().enumerate() {
            let field = format!("spec.analysis.metrics[{i}]");
            if !is_dns1123_label(&metric.name) {
                self.push(
                    format!("{field}.name"),
                    format!("{:?}", metric.name),
                    "must be lowercase letters, digits and '-', e.g. cost-per-request",
                );
            } else if !seen.insert(metric.name.as_str()) {
                self.push(
                    format!("{field}.name"),
                    format!("{:?}", metric.name),
                    "must be unique: rename one of the two",
                );
            }
            if metric.query.trim().is_empty() {
                self.push(
                    format!("{field}.query"),
                    "empty",
                    "must be a PromQL expression returning one number",
                );
            } else if let Err(Error::QueryTemplate { problem }) =
                render_query(&metric.query, &probe)
            {
                self.push(
                    format!("{field}.query"),
                    format!("{:?}", abbreviate(&metric.query)),
                    problem,
                );
            }
            match (metric.min, metric.max) {
                (None, None) => {
                    self.push(&field, "without min or max", "set min, max or both, e.g. max: 0.02")
                }
                (Some(min), Some(max)) if min > max => self.push(
                    format!("{field}.min"),
                    min.to_string(),
                    format!("must not be greater than max ({max}): swap them"),
                ),
                _ => {}
            }
            for (name, bound) in [("min", metric.min), ("max", metric.max)] {
                if bound.is_some_and(|b| !b.is_finite()) {
                    self.push(
                        format!("{field}.{name}"),
                        "not a finite number",
                        "write a plain number",
                    );
                }
            }
        }
    }

    /// Token budget, pricing and cost limit (docs/guards.md).
    fn guards(&mut self, spec: &ModelRolloutSpec) {
        let thresholds = &spec.analysis.thresholds;
        if let Some(budget) = thresholds.max_canary_tokens_per_minute
            && budget < 1
        {
            self.push(
                "spec.analysis.thresholds.maxCanaryTokensPerMinute",
                budget.to_string(),
                "must be at least 1 token per minute, e.g. 60000, or be left out",
            );
        }
        for (field, target) in [("spec.stable", &spec.stable), ("spec.canary", &spec.canary)] {
            let Some(pricing) = &target.pricing else { continue };
            for (name, price) in [
                ("inputPerMillionTokens", pricing.input_per_million_tokens),
                ("outputPerMillionTokens", pricing.output_per_million_tokens),
            ] {
                if !price.is_finite() || price < 0.0 {
                    self.push(
                        format!("{field}.pricing.{name}"),
                        price.to_string(),
                        "must be a price of 0 or more per million tokens, e.g. 2.5",
                    );
                }
            }
        }
        if let Some(ratio) = thresholds.max_cost_increase {
            if !ratio.is_finite() || ratio <= 0.0 {
                self.push(
                    "spec.analysis.thresholds.maxCostIncrease",
                    ratio.to_string(),
                    "must be a ratio above 0, e.g. 1.5 for at most 50% more than stable",
                );
            }
            if spec.stable.pricing.is_none() || spec.canary.pricing.is_none() {
                self.push(
                    "spec.analysis.thresholds.maxCostIncrease",
                    ratio.to_string(),
                    "compares the arms' cost per request: set spec.stable.pricing and spec.canary.pricing, e.g. {inputPerMillionTokens: 2, outputPerMillionTokens: 8}",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::tests::complete_example;
    use serde_json::{Value, json};
    use std::path::{Path, PathBuf};

    fn repo_dir(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
    }

    fn yaml_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        files.sort();
        files
    }

    /// The complete example, edited as JSON, then validated.
    fn validate_edited(edit: impl FnOnce(&mut Value)) -> Result<(), String> {
        let mut value = serde_json::to_value(complete_example()).unwrap();
        edit(&mut value["spec"]);
        let rollout: ModelRollout = serde_json::from_value(value).map_err(|e| e.to_string())?;
        rollout.validate().map_err(|e| e.to_string())
    }

    /// The complete example and every file in deploy/examples pass.
    #[test]
    fn valid_rollouts_pass() {
        assert_eq!(complete_example().validate(), Ok(()));
        let examples = yaml_files(&repo_dir("deploy/examples"));
        assert!(examples.len() >= 3, "{examples:?}");
        for file in examples {
            let rollout: ModelRollout =
                serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            assert_eq!(rollout.validate(), Ok(()), "{}", file.display());
            // Whatever passes validate() yields a routing document the proxy accepts.
            let mut rollout = rollout;
            rollout.metadata.namespace = Some("ai".to_owned());
            rollout.routing_document(50, crate::Phase::Progressing).unwrap();
        }
    }

    /// Each broken spec fails naming the object, the field (first substring) and the fix (second).
    #[test]
    fn broken_specs_name_field_and_fix() {
        type Edit = fn(&mut Value);
        let table: Vec<(&str, Edit, &str, &str)> = vec![
            ("empty alias", |s| s["model"] = json!(""), "spec.model is \"\"", "must name a model"),
            (
                "force-arm header with a space",
                |s| s["routing"]["forceArmHeader"] = json!("X Force Arm"),
                "spec.routing.forceArmHeader is \"X Force Arm\"",
                "HTTP header name",
            ),
            (
                "token budget zero",
                |s| s["analysis"]["thresholds"]["maxCanaryTokensPerMinute"] = json!(0),
                "spec.analysis.thresholds.maxCanaryTokensPerMinute is 0",
                "at least 1 token per minute",
            ),
            (
                "negative price",
                |s| {
                    s["canary"]["pricing"] =
                        json!({"inputPerMillionTokens": -1, "outputPerMillionTokens": 8})
                },
                "spec.canary.pricing.inputPerMillionTokens is -1",
                "0 or more per million tokens",
            ),
            (
                "cost limit without pricing",
                |s| s["analysis"]["thresholds"]["maxCostIncrease"] = json!(1.5),
                "spec.analysis.thresholds.maxCostIncrease is 1.5",
                "set spec.stable.pricing and spec.canary.pricing",
            ),
            (
                "cost limit zero",
                |s| {
                    let price = json!({"inputPerMillionTokens": 2, "outputPerMillionTokens": 8});
                    s["stable"]["pricing"] = price.clone();
                    s["canary"]["pricing"] = price;
                    s["analysis"]["thresholds"]["maxCostIncrease"] = json!(0);
                },
                "spec.analysis.thresholds.maxCostIncrease is 0",
                "a ratio above 0",
            ),
            (
                "padded model",
                |s| s["stable"]["model"] = json!(" gpt-4.1"),
                "spec.stable.model",
                "whitespace",
            ),
            (
                "ftp endpoint",
                |s| s["canary"]["endpoint"] = json!("ftp://x/v1"),
                "spec.canary.endpoint is \"ftp://x/v1\"",
                "http:// or https://",
            ),
            (
                "key in URL",
                |s| s["stable"]["endpoint"] = json!("https://u:sk-live@h/v1"),
                "spec.stable.endpoint is \"<redacted>\"",
                "Secret",
            ),
            (
                "identical arms",
                |s| {
                    s["canary"] =
                        json!({"model": "gpt-4.1", "endpoint": "https://api.openai.com/v1/"})
                },
                "spec.canary is the same as spec.stable",
                "different model or endpoint",
            ),
            (
                "secret name",
                |s| s["stable"]["credentialsSecretRef"]["name"] = json!("OpenAI"),
                "spec.stable.credentialsSecretRef.name",
                "Secret name",
            ),
            (
                "secret key traversal",
                |s| s["canary"]["credentialsSecretRef"]["key"] = json!("a..b"),
                "spec.canary.credentialsSecretRef.key",
                "no '..'",
            ),
            (
                "configmap name",
                |s| s["routing"]["configMapRef"]["name"] = json!("Model_Router"),
                "spec.routing.configMapRef.name",
                "ConfigMap name",
            ),
            (
                "header with space",
                |s| s["routing"]["stickiness"]["headers"][1] = json!("X User"),
                "spec.routing.stickiness.headers[1] is \"X User\"",
                "HTTP header name",
            ),
            (
                "empty body field",
                |s| s["routing"]["stickiness"]["bodyField"] = json!(" "),
                "spec.routing.stickiness.bodyField",
                "top-level request body field",
            ),
            (
                "no steps",
                |s| s["strategy"]["steps"] = json!([]),
                "spec.strategy.steps is empty",
                "at least one step",
            ),
            (
                "both",
                |s| s["strategy"]["steps"][0] = json!({"setWeight": 5, "pause": {}}),
                "spec.strategy.steps[0] is both",
                "exactly one",
            ),
            (
                "neither",
                |s| s["strategy"]["steps"][0] = json!({}),
                "spec.strategy.steps[0] is neither",
                "exactly one",
            ),
            (
                "weight 140",
                |s| s["strategy"]["steps"][6] = json!({"setWeight": 140}),
                "spec.strategy.steps[6].setWeight is 140",
                "between 0 and 100",
            ),
            (
                "weight goes down",
                |s| s["strategy"]["steps"][4] = json!({"setWeight": 20}),
                "spec.strategy.steps[4].setWeight is 20",
                "below steps[2].setWeight (25)",
            ),
            (
                "zero pause",
                |s| s["strategy"]["steps"][1] = json!({"pause": {"duration": "0s"}}),
                "spec.strategy.steps[1].pause.duration is 0s",
                "above zero",
            ),
            (
                "prometheus",
                |s| s["analysis"]["prometheus"]["address"] = json!("prometheus:9090"),
                "spec.analysis.prometheus.address",
                "http:// or https://",
            ),
            (
                "fast interval",
                |s| s["analysis"]["interval"] = json!("500ms"),
                "spec.analysis.interval is 500ms",
                "at least 1s",
            ),
            (
                "zero window",
                |s| s["analysis"]["window"] = json!("0m"),
                "spec.analysis.window is 0s",
                "above zero",
            ),
            (
                "rollback floor",
                |s| s["analysis"]["minRequestsForRollback"] = json!(500),
                "spec.analysis.minRequestsForRollback is 500",
                "minRequests (100)",
            ),
            (
                "negative min requests",
                |s| s["analysis"]["minRequests"] = json!(-1),
                "spec.analysis.minRequests is -1",
                "0 or more",
            ),
            (
                "failure limit",
                |s| s["analysis"]["failureLimit"] = json!(0),
                "spec.analysis.failureLimit is 0",
                "at least 1",
            ),
            (
                "error rate",
                |s| s["analysis"]["thresholds"]["maxErrorRate"] = json!(5),
                "spec.analysis.thresholds.maxErrorRate is 5",
                "between 0 and 1",
            ),
            (
                "error increase",
                |s| s["analysis"]["thresholds"]["maxErrorRateIncrease"] = json!(-0.1),
                "maxErrorRateIncrease is -0.1",
                "between 0 and 1",
            ),
            (
                "zero latency",
                |s| s["analysis"]["thresholds"]["maxLatencyP95"] = json!("0s"),
                "maxLatencyP95 is 0s",
                "above zero",
            ),
            (
                "zero ttft",
                |s| s["analysis"]["thresholds"]["maxTimeToFirstTokenP95"] = json!("0ms"),
                "maxTimeToFirstTokenP95 is 0s",
                "above zero",
            ),
            (
                "metric bounds",
                |s| s["analysis"]["metrics"][0] = json!({"name": "c", "query": "up"}),
                "spec.analysis.metrics[0] is without min or max",
                "set min, max or both",
            ),
            (
                "metric min > max",
                |s| {
                    s["analysis"]["metrics"][0] =
                        json!({"name": "c", "query": "up", "min": 3, "max": 1})
                },
                "spec.analysis.metrics[0].min is 3",
                "swap them",
            ),
            (
                "metric name",
                |s| s["analysis"]["metrics"][0]["name"] = json!("Cost"),
                "spec.analysis.metrics[0].name is \"Cost\"",
                "lowercase",
            ),
            (
                "duplicate metric",
                |s| {
                    let m = s["analysis"]["metrics"][0].clone();
                    s["analysis"]["metrics"] = json!([m.clone(), m]);
                },
                "spec.analysis.metrics[1].name",
                "unique",
            ),
            (
                "unknown placeholder",
                |s| s["analysis"]["metrics"][0]["query"] = json!("sum(x{pod=\"{{pod}}\"})"),
                "spec.analysis.metrics[0].query",
                "unknown placeholder {{pod}}: use one of {{rollout}}",
            ),
            (
                "unclosed placeholder",
                |s| s["analysis"]["metrics"][0]["query"] = json!("sum(x[{{window])"),
                "spec.analysis.metrics[0].query",
                "unclosed {{",
            ),
            (
                "empty query",
                |s| s["analysis"]["metrics"][0]["query"] = json!(" "),
                "spec.analysis.metrics[0].query is empty",
                "PromQL",
            ),
            (
                "certain confidence",
                |s| s["analysis"]["confidence"] = json!(1.0),
                "spec.analysis.confidence is 1",
                "strictly between 0 and 1",
            ),
            (
                "negative confidence",
                |s| s["analysis"]["confidence"] = json!(-0.5),
                "spec.analysis.confidence is -0.5",
                "e.g. 0.95",
            ),
            (
                "margin under 1",
                |s| s["analysis"]["maxRegression"] = json!(0.8),
                "spec.analysis.maxRegression is 0.8",
                "ratio above 1",
            ),
        ];
        for (rule, edit, field, fix) in table {
            let err = validate_edited(edit).expect_err(rule);
            assert!(
                err.starts_with("ModelRollout ai/chat-assistant has an invalid spec: "),
                "{rule}: {err}"
            );
            assert!(err.contains(field), "{rule}: {err:?} lacks {field:?}");
            assert!(err.contains(fix), "{rule}: {err:?} lacks {fix:?}");
            assert!(!err.contains("sk-live"), "{rule}: leaks a key: {err}");
        }
    }

    /// Several problems are all reported, in field order, on one line.
    #[test]
    fn reports_every_problem() {
        let err = validate_edited(|s| {
            s["model"] = json!("");
            s["analysis"]["failureLimit"] = json!(0);
        })
        .unwrap_err();
        let alias = err.find("spec.model").unwrap();
        let limit = err.find("spec.analysis.failureLimit").unwrap();
        assert!(alias < limit, "{err}");
        assert!(!err.contains('\n'));
    }

    /// Every invalid manifest of the end-to-end tests is refused here too: by serde (malformed
    /// values) or by validate(). Unknown fields are the API server's job (it prunes or rejects).
    #[test]
    fn invalid_manifests_fail_rust_side_too() {
        let files = yaml_files(&repo_dir("tests/e2e/manifests/invalid"));
        assert!(files.len() >= 14, "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            if text.lines().next().is_some_and(|l| l.contains("unknown field")) {
                continue;
            }
            let refused = match serde_yaml::from_str::<ModelRollout>(&text) {
                Err(_) => true,
                Ok(rollout) => rollout.validate().is_err(),
            };
            assert!(refused, "{} passes Rust-side validation", file.display());
        }
    }

    /// Placeholders are replaced; unknown and unclosed ones are refused naming the fix.
    #[test]
    fn renders_query_templates() {
        let values = QueryValues {
            rollout: "chat",
            namespace: "ai",
            window: Duration::from_secs(300),
            model: "chat-default",
            stable_model: "gpt-4.1",
            canary_model: "claude",
        };
        let table = [
            ("up", Ok("up")),
            (
                "x{rollout=\"{{rollout}}\",ns=\"{{ namespace }}\"}[{{window}}]",
                Ok("x{rollout=\"chat\",ns=\"ai\"}[5m]"),
            ),
            ("{{model}}/{{stableModel}}/{{canaryModel}}", Ok("chat-default/gpt-4.1/claude")),
            ("a{b=\"{c}\"}", Ok("a{b=\"{c}\"}")),
            ("{{pod}}", Err("unknown placeholder {{pod}}: use one of {{rollout}}, {{namespace}}")),
            ("x[{{window]", Err("unclosed {{ at \"{{window]\": close it with }}")),
        ];
        for (template, expected) in table {
            let rendered = render_query(template, &values).map_err(|e| e.to_string());
            match expected {
                Ok(want) => assert_eq!(rendered.as_deref(), Ok(want), "{template}"),
                Err(want) => {
                    let err = rendered.expect_err(template);
                    assert!(err.contains(want), "{template}: {err}");
                }
            }
        }
    }
}
