//! The judge of one rollout: a [`SequentialTest`] per metric, α split over the metrics
//! (weighted Bonferroni: the first metric, errors, gets two thirds, the others share the rest), so the
//! chance that *any* metric falsely signals a regression stays ≤ α.

use serde::{Deserialize, Serialize};

use crate::{Counts, SequentialTest, StateError, TestState};

/// The default of `spec.analysis.maxRegression`: the canary may be promoted early once every
/// metric's rate is shown to be under 1.25 × stable's.
pub const DEFAULT_MAX_REGRESSION: f64 = 1.25;

/// What the controller stores in status between analysis intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeState {
    /// One entry per metric, in the judge's order.
    pub metrics: Vec<MetricState>,
}

/// The stored state of one metric's test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricState {
    /// The metric's name, as given to [`Judge::new`].
    pub name: String,
    /// The test's state.
    #[serde(flatten)]
    pub test: TestState,
}

/// A judge that cannot be built or resumed as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    /// α outside (0, 1).
    #[error(
        "alpha {alpha} is not strictly between 0 and 1: set spec.analysis.confidence between 0 \
         and 1 (for example 0.95)"
    )]
    Alpha {
        /// The rejected value.
        alpha: f64,
    },
    /// A promotion margin that is not a ratio above 1.
    #[error(
        "spec.analysis.maxRegression {max_regression} must be a ratio above 1 (for example 1.25)"
    )]
    MaxRegression {
        /// The rejected value.
        max_regression: f64,
    },
    /// No metric to judge.
    #[error("the judge needs at least one metric (for example \"errors\")")]
    NoMetrics,
    /// `observe` got a different number of readings than there are metrics.
    #[error("got {got} cumulative readings for {expected} metrics: pass one per metric, in order")]
    Readings {
        /// Number of metrics.
        expected: usize,
        /// Number of readings passed.
        got: usize,
    },
    /// The stored state tracks other metrics than the judge is asked to check.
    #[error(
        "stored judge state tracks [{stored}] but the analysis checks [{wanted}]: start the \
         evidence afresh"
    )]
    MetricsChanged {
        /// Metric names in the stored state.
        stored: String,
        /// Metric names asked for.
        wanted: String,
    },
    /// A metric's stored state is unusable.
    #[error("stored judge state of {metric}: {source}")]
    State {
        /// The metric.
        metric: String,
        /// What is wrong with it.
        source: StateError,
    },
}

/// What the evidence says after the latest interval.
#[derive(Debug, Clone, PartialEq)]
pub enum JudgeVerdict {
    /// A metric regressed: roll back. False alarms happen with probability ≤ α per rollout.
    Regression {
        /// The metric with the strongest evidence among those that regressed.
        metric: String,
        /// Its peak evidence `E` (≥ 1 / its share of α, see [`metric_alpha`]).
        evidence: f64,
        /// A sentence for status at the rollout's confidence, e.g. "canary errors 2.1× stable
        /// (≥ 1.41× with 95 % confidence) after 1 840 canary requests".
        summary: String,
    },
    /// No regression shown; keep going on schedule.
    NoEvidence,
    /// No regression, and every metric's rate is shown to be at most `max_regression` ×
    /// stable's: the canary may be promoted early.
    SafeToPromote {
        /// The largest of the metrics' upper bounds on the ratio.
        worst_upper_bound: f64,
    },
}

/// The first metric's (errors') share of α when there are several.
pub const ERRORS_SHARE: f64 = 2.0 / 3.0;

/// The false-alarm level of metric `index` of `count` at overall level `alpha`: the first
/// (errors, the regression that matters most and the one with the least data per interval) gets
/// [`ERRORS_SHARE`] of α, the others share the rest evenly, so the levels add up to α (weighted
/// Bonferroni; `make sim` measures the choice in docs/decisions.md). One metric alone gets all
/// of α.
pub fn metric_alpha(alpha: f64, index: usize, count: usize) -> f64 {
    match (count, index) {
        (0 | 1, _) => alpha,
        (_, 0) => alpha * ERRORS_SHARE,
        _ => alpha * (1.0 - ERRORS_SHARE) / (count - 1) as f64,
    }
}

/// The sequential judge of one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Judge {
    alpha: f64,
    max_regression: f64,
    metrics: Vec<(String, SequentialTest)>,
}

impl Judge {
    /// A fresh judge at overall false-alarm level `alpha` over the named metrics. Names read
    /// as plural nouns in sentences: "errors", "requests slower than 2s".
    pub fn new(alpha: f64, metrics: &[&str]) -> Result<Self, JudgeError> {
        let fresh = metrics
            .iter()
            .map(|name| MetricState { name: name.to_string(), test: TestState::default() })
            .collect();
        Self::resume(alpha, metrics, JudgeState { metrics: fresh })
    }

    /// A judge that continues from the state stored in status.
    pub fn resume(alpha: f64, metrics: &[&str], state: JudgeState) -> Result<Self, JudgeError> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(JudgeError::Alpha { alpha });
        }
        if metrics.is_empty() {
            return Err(JudgeError::NoMetrics);
        }
        let stored: Vec<&str> = state.metrics.iter().map(|m| m.name.as_str()).collect();
        if stored != metrics {
            return Err(JudgeError::MetricsChanged {
                stored: stored.join(", "),
                wanted: metrics.join(", "),
            });
        }
        let count = metrics.len();
        let metrics = state
            .metrics
            .into_iter()
            .enumerate()
            .map(|(i, m)| match SequentialTest::resume(metric_alpha(alpha, i, count), m.test) {
                Ok(test) => Ok((m.name, test)),
                Err(source) => Err(JudgeError::State { metric: m.name, source }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { alpha, max_regression: DEFAULT_MAX_REGRESSION, metrics })
    }

    /// Sets the promotion margin (`spec.analysis.maxRegression`).
    pub fn with_max_regression(mut self, max_regression: f64) -> Result<Self, JudgeError> {
        if !(max_regression > 1.0 && max_regression.is_finite()) {
            return Err(JudgeError::MaxRegression { max_regression });
        }
        self.max_regression = max_regression;
        Ok(self)
    }

    /// The state to store in status.
    pub fn state(&self) -> JudgeState {
        JudgeState {
            metrics: self
                .metrics
                .iter()
                .map(|(name, test)| MetricState { name: name.clone(), test: test.state().clone() })
                .collect(),
        }
    }

    /// The overall false-alarm level α.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Each metric's name and test (each at its share of α, see [`metric_alpha`]).
    pub fn tests(&self) -> impl Iterator<Item = (&str, &SequentialTest)> {
        self.metrics.iter().map(|(name, test)| (name.as_str(), test))
    }

    /// Takes one cumulative reading per metric (in the order of [`Judge::new`]), all counted
    /// from the same origin every time, for example `increase()` since the rollout started.
    /// The judge works on what each reading adds to the last one; a field that went down adds
    /// nothing.
    pub fn observe(&mut self, cumulative: &[Counts]) -> Result<JudgeVerdict, JudgeError> {
        if cumulative.len() != self.metrics.len() {
            return Err(JudgeError::Readings {
                expected: self.metrics.len(),
                got: cumulative.len(),
            });
        }
        for ((_, test), reading) in self.metrics.iter_mut().zip(cumulative) {
            // The totals are the field-wise running maximum of the readings.
            let increment = reading.since(test.state().totals);
            test.observe(increment);
        }
        Ok(self.verdict())
    }

    /// The verdict on the evidence so far.
    pub fn verdict(&self) -> JudgeVerdict {
        let strongest =
            self.metrics.iter().filter(|(_, test)| test.rejected()).max_by(|a, b| {
                a.1.state().peak_log_evidence.total_cmp(&b.1.state().peak_log_evidence)
            });
        if let Some((name, test)) = strongest {
            return JudgeVerdict::Regression {
                metric: name.clone(),
                evidence: test.peak_evidence(),
                summary: test.summary_at(name, 1.0 - self.alpha),
            };
        }
        let bounded = |test: &SequentialTest| {
            test.upper_bound_at_most(1.0 - test.alpha(), self.max_regression)
        };
        if !self.metrics.iter().all(|(_, test)| bounded(test)) {
            return JudgeVerdict::NoEvidence;
        }
        let worst_upper_bound = self
            .metrics
            .iter()
            .map(|(_, test)| test.upper_bound(1.0 - test.alpha()))
            .fold(0.0, f64::max);
        JudgeVerdict::SafeToPromote { worst_upper_bound }
    }

    /// One sentence per metric, joined with "; ", for status. Each bound is stated at the
    /// rollout's confidence `1 − α`, the figure the user set; the decisions themselves test each
    /// metric at its share of α ([`metric_alpha`]).
    pub fn summary(&self) -> String {
        let confidence = 1.0 - self.alpha;
        let sentences: Vec<String> =
            self.metrics.iter().map(|(name, test)| test.summary_at(name, confidence)).collect();
        sentences.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: [&str; 2] = ["errors", "requests slower than 2s"];

    /// Cumulative readings of a 2× error regression: (canary 500, stable 4 500 requests per
    /// interval), latency alike on both arms.
    fn regression(intervals: u32) -> Vec<[Counts; 2]> {
        let canary_errors = [12.0, 9.0, 14.0, 11.0, 10.0];
        let mut cumulative = [Counts::default(); 2];
        (0..intervals as usize)
            .map(|t| {
                let errors = Counts::new(500.0, canary_errors[t % 5], 4500.0, 45.0);
                let slow = Counts::new(500.0, 25.0, 4500.0, 225.0);
                cumulative[0] = cumulative[0].plus(errors);
                cumulative[1] = cumulative[1].plus(slow);
                cumulative
            })
            .collect()
    }

    /// A 2× error regression is rolled back, naming the metric and the evidence in words.
    #[test]
    fn regression_is_reported_with_its_evidence() {
        let mut judge = Judge::new(0.05, &METRICS).unwrap();
        let verdicts: Vec<JudgeVerdict> =
            regression(5).iter().map(|reading| judge.observe(reading).unwrap()).collect();
        let JudgeVerdict::Regression { metric, evidence, summary } = verdicts.last().unwrap()
        else {
            panic!("no regression after 5 intervals: {verdicts:?}");
        };
        assert_eq!(metric, "errors");
        assert!(*evidence >= 1.0 / metric_alpha(0.05, 0, 2), "{evidence}");
        assert_eq!(
            summary,
            "canary errors 2.2× stable (≥ 1.33× with 95 % confidence) after 2 500 canary requests"
        );
    }

    /// Resuming from the state stored in status (through JSON, whose float parsing may move
    /// the last bit) continues where the judge left off, and the state stays small.
    #[test]
    fn resumes_from_stored_state() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
        let readings = regression(5);
        let mut uninterrupted = Judge::new(0.05, &METRICS).unwrap();
        let mut restarted = Judge::new(0.05, &METRICS).unwrap();
        for (t, reading) in readings.iter().enumerate() {
            let want = uninterrupted.observe(reading).unwrap();
            let json = serde_json::to_string(&restarted.state()).unwrap();
            assert!(json.len() < 4096, "state of {} bytes", json.len());
            let stored: JudgeState = serde_json::from_str(&json).unwrap();
            restarted = Judge::resume(0.05, &METRICS, stored).unwrap();
            let got = restarted.observe(reading).unwrap();
            match (&got, &want) {
                (
                    JudgeVerdict::Regression { metric, evidence, summary },
                    JudgeVerdict::Regression { metric: m, evidence: e, summary: s },
                ) => assert!(metric == m && summary == s && close(*evidence, *e), "interval {t}"),
                _ => assert_eq!(got, want, "interval {t}"),
            }
        }
        for (a, b) in restarted.state().metrics.iter().zip(uninterrupted.state().metrics) {
            assert_eq!(a.test.totals, b.test.totals);
            let pairs = a.test.log_likelihood_ratios.iter().zip(&b.test.log_likelihood_ratios);
            assert!(pairs.into_iter().all(|(x, y)| close(*x, *y)), "{}", a.name);
        }
    }

    /// A reading that repeats the last one adds no evidence.
    #[test]
    fn repeated_reading_adds_nothing() {
        let readings = regression(2);
        let mut judge = Judge::new(0.05, &METRICS).unwrap();
        judge.observe(&readings[1]).unwrap();
        let before = judge.state();
        judge.observe(&readings[1]).unwrap();
        assert_eq!(judge.state(), before);
    }

    /// Identical arms with plenty of traffic bound the ratio under the margin: safe to promote.
    #[test]
    fn identical_arms_with_enough_traffic_are_safe_to_promote() {
        let mut judge = Judge::new(0.05, &["errors"]).unwrap().with_max_regression(1.25).unwrap();
        let mut cumulative = Counts::default();
        let mut verdicts = Vec::new();
        for _ in 0..60 {
            cumulative = cumulative.plus(Counts::new(2500.0, 25.0, 2500.0, 25.0));
            verdicts.push(judge.observe(&[cumulative]).unwrap());
        }
        assert_eq!(verdicts[0], JudgeVerdict::NoEvidence);
        let JudgeVerdict::SafeToPromote { worst_upper_bound } = verdicts[59] else {
            panic!("not safe after 60 identical intervals: {:?}", verdicts[59]);
        };
        assert!(worst_upper_bound <= 1.25 && worst_upper_bound > 1.0, "{worst_upper_bound}");
    }

    /// The shares of α add up to α, errors get two thirds of it, and one metric gets all of it.
    #[test]
    fn alpha_split_favours_errors() {
        for count in 1..=4 {
            let total: f64 = (0..count).map(|i| metric_alpha(0.05, i, count)).sum();
            assert!((total - 0.05).abs() < 1e-15, "{count}: {total}");
        }
        assert_eq!(metric_alpha(0.05, 0, 1), 0.05);
        assert!((metric_alpha(0.05, 0, 3) - 0.05 * 2.0 / 3.0).abs() < 1e-15);
        assert!((metric_alpha(0.05, 2, 3) - 0.05 / 6.0).abs() < 1e-15);
        assert!((metric_alpha(0.05, 1, 2) - 0.05 / 3.0).abs() < 1e-15);
    }

    /// Bad settings and mismatched state are refused with the field and the fix.
    #[test]
    fn refuses_bad_settings_and_foreign_state() {
        let problems = [
            Judge::new(1.0, &METRICS).unwrap_err().to_string(),
            Judge::new(0.05, &[]).unwrap_err().to_string(),
            Judge::new(0.05, &METRICS).unwrap().with_max_regression(0.9).unwrap_err().to_string(),
            Judge::new(0.05, &METRICS)
                .unwrap()
                .observe(&[Counts::default()])
                .unwrap_err()
                .to_string(),
            Judge::resume(0.05, &["errors"], Judge::new(0.05, &METRICS).unwrap().state())
                .unwrap_err()
                .to_string(),
        ];
        let expected = [
            "spec.analysis.confidence",
            "at least one metric",
            "spec.analysis.maxRegression 0.9",
            "got 1 cumulative readings for 2 metrics",
            "start the evidence afresh",
        ];
        for (problem, want) in problems.iter().zip(expected) {
            assert!(problem.contains(want), "{problem:?} lacks {want:?}");
        }
        let mut state = Judge::new(0.05, &METRICS).unwrap().state();
        state.metrics[1].test.log_likelihood_ratios.pop();
        let problem = Judge::resume(0.05, &METRICS, state).unwrap_err().to_string();
        assert!(problem.contains("requests slower than 2s") && problem.contains("80"), "{problem}");
    }
}
