//! The rules that judge a simulated rollout: the sequential judge, and fixed-threshold rules
//! configured like Flagger's and Argo Rollouts' analyses.

use modelrollout_judge::{Counts, Judge, JudgeVerdict};

use crate::traffic::{BASELINE, IntervalCounts, METRICS};

/// Something that decides, interval by interval, whether to roll a canary back.
pub trait Rule: Sync {
    /// The column heading of the table.
    fn name(&self) -> String;

    /// The first interval (1-based) after which the rule rolls back, or `None` if the rollout
    /// runs to its end. The rule sees the intervals one at a time, in order.
    fn first_rollback(&self, intervals: &[IntervalCounts]) -> Option<u32>;
}

/// The sequential judge at false-alarm level `alpha`, fed cumulative counts since the rollout
/// started: on errors, slow requests and slow first tokens (α split over the three), or on
/// errors alone.
#[derive(Debug, Clone, Copy)]
pub struct Sequential {
    /// Overall false-alarm level.
    pub alpha: f64,
    /// Judge errors only (α not split), to show what watching latency too costs.
    pub errors_only: bool,
}

impl Rule for Sequential {
    fn name(&self) -> String {
        let what = if self.errors_only { "errors only" } else { "3 metrics" };
        format!("sequential judge, {what}, α = {}", self.alpha)
    }

    fn first_rollback(&self, intervals: &[IntervalCounts]) -> Option<u32> {
        let metrics = if self.errors_only { &METRICS[..1] } else { &METRICS[..] };
        let mut judge = Judge::new(self.alpha, metrics).expect("valid judge settings");
        let mut cumulative = [Counts::default(); 3];
        for (t, interval) in intervals.iter().enumerate() {
            for (total, add) in cumulative.iter_mut().zip(interval.per_metric()) {
                *total = total.plus(add);
            }
            let verdict =
                judge.observe(&cumulative[..metrics.len()]).expect("one reading per metric");
            if matches!(verdict, JudgeVerdict::Regression { .. }) {
                return Some(t as u32 + 1);
            }
        }
        None
    }
}

/// The rejected alternative to the judge's state: at every check, the same test recomputed from
/// the cumulative counts as if they were one interval (no state beyond the counts). Exact only
/// while the canary's share of traffic never changes; shown to measure what that costs.
#[derive(Debug, Clone, Copy)]
pub struct PooledSequential {
    /// Overall false-alarm level.
    pub alpha: f64,
}

impl Rule for PooledSequential {
    fn name(&self) -> String {
        format!("pooled counts (rejected design), α = {}", self.alpha)
    }

    fn first_rollback(&self, intervals: &[IntervalCounts]) -> Option<u32> {
        let mut cumulative = [Counts::default(); 3];
        for (t, interval) in intervals.iter().enumerate() {
            for (total, add) in cumulative.iter_mut().zip(interval.per_metric()) {
                *total = total.plus(add);
            }
            let mut judge = Judge::new(self.alpha, &METRICS).expect("valid judge settings");
            let verdict = judge.observe(&cumulative).expect("one reading per metric");
            if matches!(verdict, JudgeVerdict::Regression { .. }) {
                return Some(t as u32 + 1);
            }
        }
        None
    }
}

/// A fixed-threshold analysis checked every interval on that interval's canary counts: a check
/// fails when the canary's error rate, or its share of slow requests or slow first tokens, is
/// above `tolerance` × the known stable baseline; the rollout is rolled back once more than
/// `failure_limit` checks have failed (counted over the whole rollout, not in a row).
#[derive(Debug, Clone)]
pub struct Threshold {
    /// The column heading.
    pub label: &'static str,
    /// Failed checks tolerated; the next one rolls back.
    pub failure_limit: u32,
    /// The limit as a multiple of the baseline rate.
    pub tolerance: f64,
}

impl Threshold {
    /// Flagger: `interval: 1m`, `threshold: 5` (rollback at the 5th failed check).
    pub fn flagger() -> Self {
        Self { label: "Flagger-like, threshold 5", failure_limit: 4, tolerance: TOLERANCE }
    }

    /// Argo Rollouts' default `failureLimit: 0`: the first failed measurement rolls back.
    pub fn argo_strict() -> Self {
        Self { label: "Argo-like, failureLimit 0", failure_limit: 0, tolerance: TOLERANCE }
    }

    /// Argo Rollouts with `failureLimit: 3`.
    pub fn argo_lenient() -> Self {
        Self { label: "Argo-like, failureLimit 3", failure_limit: 3, tolerance: TOLERANCE }
    }

    fn check_fails(&self, interval: &IntervalCounts) -> bool {
        let c = interval.canary;
        if c.requests <= 0.0 {
            return false;
        }
        c.errors / c.requests > self.tolerance * BASELINE.error
            || c.slow / c.requests > self.tolerance * BASELINE.slow
            || c.slow_first_token / c.requests > self.tolerance * BASELINE.slow_first_token
    }
}

/// The threshold rules' limits sit at 1.5 × the baseline (error rate 1.5 % for a 1 % baseline;
/// p95 latency at the boundary stable crosses 7.5 % of the time): "just above baseline".
pub const TOLERANCE: f64 = 1.5;

impl Rule for Threshold {
    fn name(&self) -> String {
        self.label.to_string()
    }

    fn first_rollback(&self, intervals: &[IntervalCounts]) -> Option<u32> {
        let mut failures = 0;
        for (t, interval) in intervals.iter().enumerate() {
            if self.check_fails(interval) {
                failures += 1;
                if failures > self.failure_limit {
                    return Some(t as u32 + 1);
                }
            }
        }
        None
    }
}
