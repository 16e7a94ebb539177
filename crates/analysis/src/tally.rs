//! What the sequential judge counts: for each arm, requests and errors, and how many requests
//! (and first tokens) were slower than a fixed histogram bucket boundary, all cumulative over
//! one range that starts at the judge's counting origin (`increase()` since then). Cumulative
//! readings lose nothing when a controller restarts: the next reading covers the gap.

use std::time::Duration;

use crate::Target;
use crate::promql::{
    self, Arm, REQUEST_DURATION, TIME_TO_FIRST_TOKEN, promql_range, rollout_matchers,
};

/// What to count, and since when.
#[derive(Clone, Debug, PartialEq)]
pub struct TallySpec {
    /// The range of every `increase()`: from the counting origin to now (whole seconds, at
    /// least 1 s).
    pub since: Duration,
    /// Requests slower than this many seconds are counted as slow (`None`: not counted). Must
    /// be a bucket boundary of `gray_release_request_duration_seconds`.
    pub latency_boundary: Option<f64>,
    /// The same for `gray_release_time_to_first_token_seconds`.
    pub ttft_boundary: Option<f64>,
}

/// One arm's cumulative counts over the range, summed over every proxy instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArmTally {
    /// Requests, rate-limited ones left out (as in [`crate::ArmSample`]).
    pub requests: f64,
    /// Of those, failed.
    pub errors: f64,
    /// Requests the latency histogram observed (its `_count`).
    pub timed: f64,
    /// Of those, slower than the latency boundary (`None` when not asked for).
    pub slow: Option<f64>,
    /// First tokens the TTFT histogram observed (streaming requests).
    pub first_tokens: f64,
    /// Of those, later than the TTFT boundary (`None` when not asked for).
    pub slow_first_tokens: Option<f64>,
}

/// Both arms' counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// `is_canary="true"`.
    pub canary: ArmTally,
    /// `is_canary="false"`.
    pub stable: ArmTally,
    /// The range actually queried (whole seconds).
    pub since: Duration,
}

/// `le=~"2(\\.0*)?"`: matches a bucket boundary however the exposition or Prometheus wrote it
/// (`2`, `2.0`; `0.8`, `0.80`).
pub fn le_matcher(boundary: f64) -> String {
    let text = format!("{boundary}");
    let escaped = text.replace('.', r"\\.");
    if text.contains('.') {
        format!("le=~\"{escaped}0*\"")
    } else {
        format!("le=~\"{escaped}(\\\\.0*)?\"")
    }
}

/// Observations of a histogram of one arm over the range (its `_count`).
pub fn histogram_count(histogram: &str, target: &Target, arm: Arm, range: Duration) -> String {
    format!(
        "sum(increase({histogram}_count{{{},is_canary=\"{}\"}}[{}]))",
        rollout_matchers(target),
        arm.is_canary(),
        promql_range(range)
    )
}

/// Observations at or under `boundary` (the cumulative bucket `le=boundary`).
pub fn histogram_at_most(
    histogram: &str,
    target: &Target,
    arm: Arm,
    boundary: f64,
    range: Duration,
) -> String {
    format!(
        "sum(increase({histogram}_bucket{{{},is_canary=\"{}\",{}}}[{}]))",
        rollout_matchers(target),
        arm.is_canary(),
        le_matcher(boundary),
        promql_range(range)
    )
}

/// Every query of one arm's tally, in the order [`ArmTally::from_counts`] takes the answers:
/// requests, errors, timed, timed at most the boundary, first tokens, first tokens at most the
/// boundary (the last three of each histogram only when its boundary is asked for).
pub fn queries(target: &Target, arm: Arm, spec: &TallySpec) -> Vec<String> {
    let range = spec.since;
    let mut queries = vec![
        promql::requests(target, arm, range),
        promql::errors(target, arm, range),
        histogram_count(REQUEST_DURATION, target, arm, range),
        histogram_count(TIME_TO_FIRST_TOKEN, target, arm, range),
    ];
    if let Some(boundary) = spec.latency_boundary {
        queries.push(histogram_at_most(REQUEST_DURATION, target, arm, boundary, range));
    }
    if let Some(boundary) = spec.ttft_boundary {
        queries.push(histogram_at_most(TIME_TO_FIRST_TOKEN, target, arm, boundary, range));
    }
    queries
}

impl ArmTally {
    /// The tally from the answers to [`queries`], in their order. Slow counts are the
    /// histogram's count minus its bucket at the boundary, never negative.
    pub fn from_counts(spec: &TallySpec, counts: &[f64]) -> ArmTally {
        let at = |i: usize| counts.get(i).copied().unwrap_or(0.0);
        let mut next = 4;
        let mut over = |total: f64, asked: bool| {
            asked.then(|| {
                let within = at(next);
                next += 1;
                (total - within).max(0.0)
            })
        };
        let slow = over(at(2), spec.latency_boundary.is_some());
        let slow_first_tokens = over(at(3), spec.ttft_boundary.is_some());
        ArmTally {
            requests: at(0),
            errors: at(1),
            timed: at(2),
            slow,
            first_tokens: at(3),
            slow_first_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_target as target;

    /// Boundaries match however `le` was written.
    #[test]
    fn le_matchers() {
        assert_eq!(le_matcher(2.0), r#"le=~"2(\\.0*)?""#);
        assert_eq!(le_matcher(0.8), r#"le=~"0\\.80*""#);
    }

    /// The slow-request queries: the histogram's count and its bucket at the boundary.
    #[test]
    fn tally_queries() {
        let spec = TallySpec {
            since: Duration::from_secs(90),
            latency_boundary: Some(2.0),
            ttft_boundary: None,
        };
        let queries = queries(&target(), Arm::Canary, &spec);
        assert_eq!(queries.len(), 5);
        assert_eq!(
            queries[2],
            r#"sum(increase(gray_release_request_duration_seconds_count{rollout="chat",rollout_namespace="ai",is_canary="true"}[1m30s]))"#
        );
        assert_eq!(
            queries[4],
            r#"sum(increase(gray_release_request_duration_seconds_bucket{rollout="chat",rollout_namespace="ai",is_canary="true",le=~"2(\\.0*)?"}[1m30s]))"#
        );
    }

    /// Slow counts are the count minus the bucket, never negative; unasked ones are absent.
    #[test]
    fn slow_counts() {
        let spec = TallySpec {
            since: Duration::from_secs(60),
            latency_boundary: None,
            ttft_boundary: Some(0.8),
        };
        let arm = ArmTally::from_counts(&spec, &[100.0, 3.0, 99.0, 40.0, 41.0]);
        assert_eq!(arm.slow, None);
        assert_eq!(arm.slow_first_tokens, Some(0.0));
        let both = TallySpec { latency_boundary: Some(2.0), ..spec };
        let arm = ArmTally::from_counts(&both, &[100.0, 3.0, 99.0, 40.0, 90.0, 30.0]);
        assert_eq!((arm.slow, arm.slow_first_tokens), (Some(9.0), Some(10.0)));
    }
}
