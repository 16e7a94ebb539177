//! Token counts of both arms from `gray_release_tokens_total`: the canary's token rate for the
//! token budget and each arm's tokens per request for the cost comparison. Asked for only by
//! rollouts that set a budget or pricing, so the other rollouts pay no extra queries.

use std::time::Duration;

use futures::future::try_join_all;

use crate::promql::{self, Arm, promql_range, rollout_matchers, whole_seconds};
use crate::{AnalysisError, PrometheusSource, Target, mapping};

/// `gray_release_tokens_total`: prompt and completion tokens from each response's `usage`.
pub const TOKENS_TOTAL: &str = "gray_release_tokens_total";

/// The `type` label of [`TOKENS_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// `type="prompt"`: input tokens.
    Prompt,
    /// `type="completion"`: output tokens.
    Completion,
}

impl TokenKind {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            TokenKind::Prompt => "prompt",
            TokenKind::Completion => "completion",
        }
    }
}

/// One arm's token and request counts over the range, summed over every proxy instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArmTokens {
    /// Prompt tokens.
    pub prompt: f64,
    /// Completion tokens.
    pub completion: f64,
    /// Requests (rate-limited ones left out, as in the other analysis counts).
    pub requests: f64,
}

impl ArmTokens {
    /// Prompt plus completion tokens per minute over `range`.
    pub fn per_minute(&self, range: Duration) -> f64 {
        (self.prompt + self.completion) * 60.0 / whole_seconds(range).as_secs_f64()
    }
}

/// Both arms' token counts, all evaluated at one time over one range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenSample {
    /// `is_canary="true"`.
    pub canary: ArmTokens,
    /// `is_canary="false"`.
    pub stable: ArmTokens,
    /// The range queried (whole seconds).
    pub range: Duration,
}

/// Tokens of one kind and arm over the range, summed over every proxy instance.
pub fn tokens(target: &Target, arm: Arm, kind: TokenKind, range: Duration) -> String {
    format!(
        "sum(increase({TOKENS_TOTAL}{{{},is_canary=\"{}\",type=\"{}\"}}[{}]))",
        rollout_matchers(target),
        arm.is_canary(),
        kind.label(),
        promql_range(range)
    )
}

impl PrometheusSource {
    /// Both arms' prompt, completion and request counts over `range`, queried concurrently.
    pub(crate) async fn token_sample(
        &self,
        target: &Target,
        range: Duration,
    ) -> Result<TokenSample, AnalysisError> {
        let address = target.prometheus.as_str();
        let client = self.client(address)?;
        let range = whole_seconds(range);
        let at = crate::prometheus::evaluation_time();
        let queries: Vec<String> = [Arm::Canary, Arm::Stable]
            .into_iter()
            .flat_map(|arm| {
                [
                    tokens(target, arm, TokenKind::Prompt, range),
                    tokens(target, arm, TokenKind::Completion, range),
                    promql::requests(target, arm, range),
                ]
            })
            .collect();
        let work = async {
            let answers =
                try_join_all(queries.iter().map(|q| self.query(&client, address, q.clone(), &at)))
                    .await?;
            let mut counts = Vec::with_capacity(answers.len());
            for (query, data) in queries.iter().zip(&answers) {
                counts.push(mapping::count(address, query, data)?);
            }
            let arm = |i: usize| ArmTokens {
                prompt: counts[i],
                completion: counts[i + 1],
                requests: counts[i + 2],
            };
            Ok(TokenSample { canary: arm(0), stable: arm(3), range })
        };
        self.bounded(address, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_target as target;

    /// Token queries: one arm, one type, summed over instances.
    #[test]
    fn token_queries() {
        assert_eq!(
            tokens(&target(), Arm::Canary, TokenKind::Prompt, Duration::from_secs(37)),
            r#"sum(increase(gray_release_tokens_total{rollout="chat",rollout_namespace="ai",is_canary="true",type="prompt"}[37s]))"#
        );
        assert_eq!(
            tokens(&target(), Arm::Stable, TokenKind::Completion, Duration::from_secs(90)),
            r#"sum(increase(gray_release_tokens_total{rollout="chat",rollout_namespace="ai",is_canary="false",type="completion"}[1m30s]))"#
        );
    }

    /// The rate per minute counts both kinds over the whole-second range.
    #[test]
    fn tokens_per_minute() {
        let arm = ArmTokens { prompt: 300.0, completion: 600.0, requests: 30.0 };
        assert_eq!(arm.per_minute(Duration::from_secs(30)), 1800.0);
        assert_eq!(arm.per_minute(Duration::from_millis(200)), 54_000.0);
    }
}
