//! The PromQL the analysis runs: built-in queries over the proxy's metrics and the rendering of
//! custom templates. Pure string work, so every query is checked character for character.
//!
//! Metric names and labels are the proxy's compatibility contract (`crates/proxy/src/metrics.rs`).

use std::time::Duration;

use modelrollout_api::{QueryValues, render_query};

use crate::Target;

/// `gray_release_requests_total`: one counter per arm, outcome and reason.
pub const REQUESTS_TOTAL: &str = "gray_release_requests_total";
/// `gray_release_request_duration_seconds`: the whole-request latency histogram.
pub const REQUEST_DURATION: &str = "gray_release_request_duration_seconds";
/// `gray_release_time_to_first_token_seconds`: the streaming first-token histogram.
pub const TIME_TO_FIRST_TOKEN: &str = "gray_release_time_to_first_token_seconds";
/// `gray_release_canary_weight`: the weight each proxy instance applies.
pub const CANARY_WEIGHT: &str = "gray_release_canary_weight";

/// The quantile every latency check uses.
pub const QUANTILE: f64 = 0.95;

/// Placeholders whose values (the rollout's models) the analysis is not given; bind them with
/// [`bind_models`] before measuring.
pub const MODEL_PLACEHOLDERS: [&str; 3] = ["model", "stableModel", "canaryModel"];

/// One side of the split: the `is_canary` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// `is_canary="true"`.
    Canary,
    /// `is_canary="false"`.
    Stable,
}

impl Arm {
    /// The `is_canary` label value.
    pub const fn is_canary(self) -> &'static str {
        match self {
            Arm::Canary => "true",
            Arm::Stable => "false",
        }
    }
}

/// The range as the analysis uses it: whole seconds, at least one.
pub fn whole_seconds(range: Duration) -> Duration {
    Duration::from_secs(range.as_secs().max(1))
}

/// The range as a PromQL duration (`37s`, `5m`, `1m30s`): the same text `{{window}}` becomes.
pub fn promql_range(range: Duration) -> String {
    modelrollout_api::Duration::new(whole_seconds(range)).to_string()
}

/// `"value"` as a PromQL string literal.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `rollout="r",rollout_namespace="ns"`: the matchers that select one rollout.
pub(crate) fn rollout_matchers(target: &Target) -> String {
    format!("rollout={},rollout_namespace={}", quote(&target.rollout), quote(&target.namespace))
}

/// Matchers of one arm's request counter; a 429 is the provider's capacity, never the
/// model's quality, so `rate_limited` is left out of both requests and errors.
fn request_matchers(target: &Target, arm: Arm) -> String {
    format!(
        "{},is_canary=\"{}\",reason!=\"rate_limited\"",
        rollout_matchers(target),
        arm.is_canary()
    )
}

/// Requests of one arm over the range, summed over every proxy instance.
pub fn requests(target: &Target, arm: Arm, range: Duration) -> String {
    format!(
        "sum(increase({REQUESTS_TOTAL}{{{}}}[{}]))",
        request_matchers(target, arm),
        promql_range(range)
    )
}

/// Failed requests (`status="error"`) of one arm over the range, summed over every instance.
pub fn errors(target: &Target, arm: Arm, range: Duration) -> String {
    format!(
        "sum(increase({REQUESTS_TOTAL}{{{},status=\"error\"}}[{}]))",
        request_matchers(target, arm),
        promql_range(range)
    )
}

/// The p95 of a histogram of one arm over the range, buckets summed over every instance.
fn p95(histogram: &str, target: &Target, arm: Arm, range: Duration) -> String {
    format!(
        "histogram_quantile({QUANTILE}, sum by (le) (rate({histogram}_bucket{{{},is_canary=\"{}\"}}[{}])))",
        rollout_matchers(target),
        arm.is_canary(),
        promql_range(range)
    )
}

/// The p95 request latency of one arm.
pub fn latency_p95(target: &Target, arm: Arm, range: Duration) -> String {
    p95(REQUEST_DURATION, target, arm, range)
}

/// The p95 time to first token of one arm (streaming requests only).
pub fn ttft_p95(target: &Target, arm: Arm, range: Duration) -> String {
    p95(TIME_TO_FIRST_TOKEN, target, arm, range)
}

/// The weight every scraped proxy instance reports for the rollout, one series per instance.
pub fn proxy_weights(target: &Target) -> String {
    format!("{CANARY_WEIGHT}{{{}}}", rollout_matchers(target))
}

/// A custom metric's template with `{{rollout}}`, `{{namespace}}` and `{{window}}` filled in.
/// Fails (with the fix) on an unknown or unclosed placeholder, and on a model placeholder
/// that [`bind_models`] did not fill.
pub fn custom(template: &str, target: &Target, range: Duration) -> Result<String, String> {
    if let Some(name) = placeholders(template).find(|name| MODEL_PLACEHOLDERS.contains(name)) {
        return Err(format!(
            "the query template uses {{{{{name}}}}}, which the analysis was not given: the controller must bind the rollout's models first"
        ));
    }
    let values = QueryValues {
        rollout: &target.rollout,
        namespace: &target.namespace,
        window: modelrollout_api::Duration::new(whole_seconds(range)),
        // Unreachable: templates using them were refused above.
        model: "",
        stable_model: "",
        canary_model: "",
    };
    render_query(template, &values).map_err(|e| e.to_string())
}

/// Fills `{{model}}`, `{{stableModel}}` and `{{canaryModel}}` (spec.model, spec.stable.model,
/// spec.canary.model) and leaves every other placeholder for [`custom`].
pub fn bind_models(template: &str, model: &str, stable_model: &str, canary_model: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let value = match after[..end].trim() {
            "model" => Some(model),
            "stableModel" => Some(stable_model),
            "canaryModel" => Some(canary_model),
            _ => None,
        };
        out.push_str(&rest[..start]);
        match value {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The trimmed names of every closed `{{ name }}` in a template.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    let mut rest = template;
    std::iter::from_fn(move || {
        let start = rest.find("{{")?;
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        rest = &after[end + 2..];
        Some(after[..end].trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_target as target;

    const R: Duration = Duration::from_secs(37);

    /// Request counts: summed over instances, one arm, rate-limited left out.
    #[test]
    fn request_count_queries() {
        assert_eq!(
            requests(&target(), Arm::Canary, R),
            r#"sum(increase(gray_release_requests_total{rollout="chat",rollout_namespace="ai",is_canary="true",reason!="rate_limited"}[37s]))"#
        );
        assert_eq!(
            requests(&target(), Arm::Stable, R),
            r#"sum(increase(gray_release_requests_total{rollout="chat",rollout_namespace="ai",is_canary="false",reason!="rate_limited"}[37s]))"#
        );
    }

    /// Error counts: `status="error"` of one arm, rate-limited left out.
    #[test]
    fn error_count_queries() {
        assert_eq!(
            errors(&target(), Arm::Canary, R),
            r#"sum(increase(gray_release_requests_total{rollout="chat",rollout_namespace="ai",is_canary="true",reason!="rate_limited",status="error"}[37s]))"#
        );
    }

    /// p95: buckets summed by `le` over instances, then the quantile.
    #[test]
    fn p95_queries() {
        assert_eq!(
            latency_p95(&target(), Arm::Stable, R),
            r#"histogram_quantile(0.95, sum by (le) (rate(gray_release_request_duration_seconds_bucket{rollout="chat",rollout_namespace="ai",is_canary="false"}[37s])))"#
        );
        assert_eq!(
            ttft_p95(&target(), Arm::Canary, R),
            r#"histogram_quantile(0.95, sum by (le) (rate(gray_release_time_to_first_token_seconds_bucket{rollout="chat",rollout_namespace="ai",is_canary="true"}[37s])))"#
        );
    }

    /// The weight query selects the rollout and keeps one series per instance.
    #[test]
    fn proxy_weight_query() {
        assert_eq!(
            proxy_weights(&target()),
            r#"gray_release_canary_weight{rollout="chat",rollout_namespace="ai"}"#
        );
    }

    /// Ranges are whole seconds, at least one, written like `{{window}}`.
    #[test]
    fn ranges_are_whole_seconds() {
        assert_eq!(promql_range(Duration::from_millis(37_900)), "37s");
        assert_eq!(promql_range(Duration::from_millis(200)), "1s");
        assert_eq!(promql_range(Duration::from_secs(90)), "1m30s");
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
    }

    /// Quotes and backslashes in names cannot break out of the label matcher.
    #[test]
    fn label_values_are_escaped() {
        let mut t = target();
        t.rollout = r#"a"b\c"#.to_owned();
        assert_eq!(
            proxy_weights(&t),
            r#"gray_release_canary_weight{rollout="a\"b\\c",rollout_namespace="ai"}"#
        );
    }

    /// Custom templates get the rollout, namespace and window.
    #[test]
    fn custom_templates_are_rendered() {
        assert_eq!(
            custom(
                r#"sum(rate(cost{rollout="{{rollout}}",ns="{{ namespace }}"}[{{window}}]))"#,
                &target(),
                R
            ),
            Ok(r#"sum(rate(cost{rollout="chat",ns="ai"}[37s]))"#.to_owned())
        );
    }

    /// An unknown placeholder and an unbound model placeholder are refused with the fix.
    #[test]
    fn custom_template_problems_are_named() {
        let unknown = custom("x{{bogus}}", &target(), R).unwrap_err();
        assert!(unknown.contains("unknown placeholder {{bogus}}"), "{unknown}");
        let unbound = custom(r#"x{m="{{canaryModel}}"}"#, &target(), R).unwrap_err();
        assert!(unbound.contains("{{canaryModel}}"), "{unbound}");
    }

    /// Binding models fills only the model placeholders and keeps the rest for rendering.
    #[test]
    fn binding_models_keeps_other_placeholders() {
        let bound = bind_models(
            r#"x{a="{{model}}",s="{{ stableModel }}",c="{{canaryModel}}",r="{{rollout}}"}[{{window}}] {{"#,
            "chat-default",
            "gpt-4.1",
            "claude",
        );
        assert_eq!(
            bound,
            r#"x{a="chat-default",s="gpt-4.1",c="claude",r="{{rollout}}"}[{{window}}] {{"#
        );
        assert_eq!(
            custom(&bound.replace(" {{", ""), &target(), R),
            Ok(r#"x{a="chat-default",s="gpt-4.1",c="claude",r="chat"}[37s]"#.to_owned())
        );
    }
}
