//! The sequential judge in the decision core (`spec.analysis.method: Sequential`): from the
//! rollout's stored evidence (`status.sequential`) and a fresh cumulative reading of both arms
//! (Prometheus `increase()` since the proxies applied the current weight), the new evidence,
//! the bounds on the canary-to-stable ratios in words, and whether the canary regressed.
//!
//! Metrics: errors; requests slower than the latency boundary (the histogram bucket at or
//! just above stable's p95 at the first analysis, chosen before the canary's latency is looked
//! at); first tokens later than the TTFT boundary (the same, when maxTimeToFirstTokenP95 is
//! set). α = 1 − confidence is split over them, two thirds to errors ([`metric_alpha`]). Pure:
//! no I/O.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use modelrollout_analysis::{ArmTally, Tally, TallySpec};
use modelrollout_api::buckets::{boundary_at_or_above, buckets_with};
use modelrollout_api::rollout::FailedCheck;
use modelrollout_api::rollout::{
    Analysis, EventCounts, MetricEvidence, SequentialMetricState, SequentialState,
};
use modelrollout_api::{Reason, Verdict};
use modelrollout_judge::{Counts, GRID_LEN, SequentialTest, TestState, metric_alpha};

use crate::judge::{Judgement, secs};

/// Which bad events a test counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Failed requests.
    Errors,
    /// Requests slower than the latency boundary.
    Latency,
    /// First tokens later than the TTFT boundary.
    TimeToFirstToken,
}

impl Kind {
    /// The key stored in status.
    pub const fn key(self) -> &'static str {
        match self {
            Kind::Errors => "errors",
            Kind::Latency => "latency",
            Kind::TimeToFirstToken => "timeToFirstToken",
        }
    }

    /// The condition reason of a regression in this metric.
    pub const fn reason(self) -> Reason {
        match self {
            Kind::Errors => Reason::ErrorRateIncreaseExceeded,
            Kind::Latency => Reason::LatencyExceeded,
            Kind::TimeToFirstToken => Reason::TimeToFirstTokenExceeded,
        }
    }
}

/// The metrics the spec asks to judge, in the judge's order (errors first).
pub fn kinds(spec: &Analysis) -> Vec<Kind> {
    let mut kinds = vec![Kind::Errors, Kind::Latency];
    if spec.thresholds.max_time_to_first_token_p95.is_some() {
        kinds.push(Kind::TimeToFirstToken);
    }
    kinds
}

/// What one analysis found.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    /// The state to store in status.
    pub state: SequentialState,
    /// Per metric, for status.lastAnalysis.evidence.
    pub metrics: Vec<MetricEvidence>,
    /// The metric that regressed (the strongest evidence among those that did), if any.
    pub regression: Option<Regression>,
    /// Every metric's ratio is bounded at most maxRegression: the largest of those bounds.
    pub safe_below: Option<f64>,
    /// Canary requests counted since the proxies applied the current weight.
    pub canary_requests_at_weight: f64,
}

/// A regression shown by the evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    /// Which metric.
    pub kind: Kind,
    /// Its ratio estimate (canary rate / stable rate), when stable had events.
    pub ratio: Option<f64>,
    /// The sentence for the condition, e.g. "canary errors 2.1× stable (≥ 1.41× with 95 %
    /// confidence) after 1 840 canary requests".
    pub summary: String,
}

/// The boundaries to count slow requests over: the stored ones, else chosen now from stable's
/// p95s (`None` until stable has a p95). Candidates are the route's buckets: the standard ones
/// plus the rollout's limits.
pub fn boundaries(
    spec: &Analysis,
    stored: Option<&SequentialState>,
    stable_latency_p95: Option<f64>,
    stable_ttft_p95: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let bounds = buckets_with(&limits(spec));
    let choose = |p95: Option<f64>| p95.and_then(|p| boundary_at_or_above(&bounds, p));
    let latency =
        stored.and_then(|s| s.latency_boundary_seconds).or_else(|| choose(stable_latency_p95));
    let ttft = if kinds(spec).contains(&Kind::TimeToFirstToken) {
        stored
            .and_then(|s| s.time_to_first_token_boundary_seconds)
            .or_else(|| choose(stable_ttft_p95))
    } else {
        None
    };
    (latency, ttft)
}

/// The rollout's latency limits in seconds: the extra bucket bounds of its route.
pub fn limits(spec: &Analysis) -> Vec<f64> {
    let t = &spec.thresholds;
    let mut limits = vec![t.max_latency_p95.as_std().as_secs_f64()];
    limits.extend(t.max_time_to_first_token_p95.map(|d| d.as_std().as_secs_f64()));
    limits
}

/// The tally to ask Prometheus for: since `counted_from` (when the proxies applied the
/// current weight) until `now`, over the given boundaries.
pub fn tally_spec(
    counted_from: Timestamp,
    now: Timestamp,
    (latency_boundary, ttft_boundary): (Option<f64>, Option<f64>),
) -> TallySpec {
    let since = std::time::Duration::try_from(now.duration_since(counted_from)).unwrap_or_default();
    TallySpec {
        since: std::time::Duration::from_secs(since.as_secs().max(1)),
        latency_boundary,
        ttft_boundary,
    }
}

/// Adds a fresh tally to the stored evidence.
pub fn observe(
    spec: &Analysis,
    stored: Option<&SequentialState>,
    counted_from: Timestamp,
    (latency_boundary, ttft_boundary): (Option<f64>, Option<f64>),
    tally: &Tally,
) -> Evidence {
    let alpha = 1.0 - spec.confidence;
    let confidence = spec.confidence;
    let kinds = kinds(spec);
    // Readings restart from zero when the proxies applied a new weight since the last look.
    let same_origin = stored.is_some_and(|s| s.counted_from.0 == counted_from);
    let mut metrics = Vec::with_capacity(kinds.len());
    let mut tests = Vec::with_capacity(kinds.len());
    for (i, &kind) in kinds.iter().enumerate() {
        let previous = stored
            .and_then(|s| s.metrics.iter().find(|m| m.name == kind.key()))
            .filter(|m| m.log_likelihood_ratios.len() == GRID_LEN);
        let test_state = previous.map_or_else(TestState::default, |m| TestState {
            totals: counts(m.totals),
            log_likelihood_ratios: m.log_likelihood_ratios.clone(),
            peak_log_evidence: m.peak_log_evidence,
        });
        let level = metric_alpha(alpha, i, kinds.len());
        // A state that does not resume (edited, corrupted) starts afresh rather than block.
        let mut test = SequentialTest::resume(level, test_state)
            .unwrap_or_else(|_| SequentialTest::new(level));
        let last =
            previous.filter(|_| same_origin).map_or_else(Counts::default, |m| counts(m.reading));
        let reading = match kind {
            Kind::Errors => Some(arm_counts(tally, |a| (a.requests, Some(a.errors)))),
            Kind::Latency => latency_boundary.map(|_| arm_counts(tally, |a| (a.timed, a.slow))),
            Kind::TimeToFirstToken => {
                ttft_boundary.map(|_| arm_counts(tally, |a| (a.first_tokens, a.slow_first_tokens)))
            }
        };
        let reading = reading.unwrap_or(last);
        test.observe(reading.since(last));
        metrics.push(SequentialMetricState {
            name: kind.key().to_owned(),
            reading: event_counts(reading.sanitized()),
            totals: event_counts(test.state().totals),
            log_likelihood_ratios: test.state().log_likelihood_ratios.clone(),
            peak_log_evidence: test.state().peak_log_evidence,
        });
        tests.push((kind, test));
    }
    let words = |kind: Kind| match kind {
        Kind::Errors => "errors".to_owned(),
        Kind::Latency => match latency_boundary {
            Some(b) => format!("requests slower than {}", secs(b)),
            None => "slow requests (boundary not chosen yet)".to_owned(),
        },
        Kind::TimeToFirstToken => match ttft_boundary {
            Some(b) => format!("first tokens later than {}", secs(b)),
            None => "late first tokens (boundary not chosen yet)".to_owned(),
        },
    };
    let evidence = tests
        .iter()
        .map(|(kind, test)| {
            let (lower, upper) = test.ratio_bounds(confidence);
            MetricEvidence {
                metric: words(*kind),
                evidence: round_sig(test.peak_evidence()),
                ratio: test.ratio_estimate().map(round_sig),
                ratio_lower_bound: lower,
                ratio_upper_bound: upper.is_finite().then_some(upper),
                canary_requests: test.state().totals.canary_requests.round() as i64,
                summary: test.summary_at(&words(*kind), confidence),
            }
        })
        .collect();
    let regression = tests
        .iter()
        .filter(|(_, test)| test.rejected())
        .max_by(|a, b| a.1.state().peak_log_evidence.total_cmp(&b.1.state().peak_log_evidence))
        .map(|(kind, test)| Regression {
            kind: *kind,
            ratio: test.ratio_estimate(),
            summary: test.summary_at(&words(*kind), confidence),
        });
    let safe_below = tests
        .iter()
        .all(|(_, test)| test.upper_bound_at_most(confidence, spec.max_regression))
        .then(|| tests.iter().map(|(_, t)| t.upper_bound(confidence)).fold(0.0, f64::max));
    let canary_requests_at_weight = tally.canary.requests.max(0.0);
    Evidence {
        state: SequentialState {
            counted_from: Time(counted_from),
            latency_boundary_seconds: latency_boundary,
            time_to_first_token_boundary_seconds: ttft_boundary,
            metrics,
        },
        metrics: evidence,
        regression,
        safe_below: safe_below.filter(|_| regression_free(&tests)),
        canary_requests_at_weight,
    }
}

/// The verdict of the sequential method: the threshold judgement (`hard`, the absolute limits)
/// combined with the evidence. A regression fails at once; otherwise the hard limits decide
/// failures, and a step may advance once it has `minRequests` canary requests at this weight
/// (the threshold method's "clearly healthy" margins give way to the evidence).
pub fn combine(spec: &Analysis, hard: Judgement, evidence: &Evidence) -> Judgement {
    let summaries: Vec<&str> = evidence.metrics.iter().map(|m| m.summary.as_str()).collect();
    let summaries = summaries.join("; ");
    if let Some(regression) = &evidence.regression {
        let check = FailedCheck {
            name: format!("sequential-{}", regression.kind.key()),
            reason: regression.kind.reason().as_str().to_owned(),
            value: regression.ratio,
            limit: Some(1.0),
            message: regression.summary.clone(),
        };
        // A hard limit breached at the same time is the plainer reason: it goes first.
        let hard_breach = hard.verdict == Verdict::Fail;
        let reason = if hard_breach { hard.reason } else { Some(regression.kind.reason()) };
        let mut failed = hard.failed;
        if hard_breach {
            failed.push(check);
        } else {
            failed.insert(0, check);
        }
        let breaches: Vec<&str> = failed.iter().map(|c| c.message.as_str()).collect();
        return Judgement {
            verdict: Verdict::Fail,
            reason,
            message: breaches.join("; "),
            failed,
            advance: false,
        };
    }
    let requests = evidence.canary_requests_at_weight;
    let enough = requests >= spec.min_requests as f64;
    let too_few = || {
        format!(
            "only {} canary requests at this weight; {} needed to advance",
            requests.round(),
            spec.min_requests
        )
    };
    let safe = evidence.safe_below.map_or_else(String::new, |bound| {
        format!(
            "; shown safe: every ratio ≤ {bound:.2}× (maxRegression {}) with {}% confidence",
            spec.max_regression,
            spec.confidence * 100.0
        )
    });
    let waiting_for_requests = hard.verdict == Verdict::Inconclusive
        && hard.reason == Some(Reason::InsufficientRequests)
        && hard.failed.is_empty();
    match hard.verdict {
        Verdict::Pass => Judgement {
            message: if enough {
                format!("no regression: {summaries}{safe}")
            } else {
                format!("no regression: {summaries}; holding: {}", too_few())
            },
            advance: enough,
            ..hard
        },
        Verdict::Inconclusive if waiting_for_requests && enough => Judgement {
            verdict: Verdict::Pass,
            reason: Some(Reason::AnalysisPassed),
            message: format!("no regression: {summaries}{safe}"),
            failed: Vec::new(),
            advance: true,
        },
        Verdict::Inconclusive if waiting_for_requests => {
            Judgement { message: format!("{}: {summaries}", too_few()), ..hard }
        }
        _ => hard,
    }
}

fn regression_free(tests: &[(Kind, SequentialTest)]) -> bool {
    tests.iter().all(|(_, t)| !t.rejected())
}

/// Both arms' (requests, events) as the judge's counts; a missing event count is no reading.
fn arm_counts(tally: &Tally, pick: impl Fn(&ArmTally) -> (f64, Option<f64>)) -> Counts {
    let (cr, ce) = pick(&tally.canary);
    let (sr, se) = pick(&tally.stable);
    Counts::new(cr, ce.unwrap_or(0.0), sr, se.unwrap_or(0.0))
}

fn counts(c: EventCounts) -> Counts {
    Counts::new(c.canary_requests, c.canary_events, c.stable_requests, c.stable_events)
}

fn event_counts(c: Counts) -> EventCounts {
    EventCounts {
        canary_requests: c.canary_requests,
        canary_events: c.canary_events,
        stable_requests: c.stable_requests,
        stable_events: c.stable_events,
    }
}

/// Four significant digits: status shows evidence, not noise.
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec() -> Analysis {
        Analysis::with_defaults("http://prometheus:9090")
    }

    fn arm(requests: f64, errors: f64, slow: f64) -> ArmTally {
        ArmTally {
            requests,
            errors,
            timed: requests,
            slow: Some(slow),
            first_tokens: 0.0,
            slow_first_tokens: None,
        }
    }

    fn tally(canary: ArmTally, stable: ArmTally) -> Tally {
        Tally { canary, stable, since: Duration::from_secs(60) }
    }

    /// The latency boundary is the bucket at or above stable's p95, and it sticks once chosen.
    #[test]
    fn boundary_is_chosen_from_stable_and_kept() {
        let spec = spec();
        assert_eq!(boundaries(&spec, None, Some(1.1), None), (Some(2.0), None));
        assert_eq!(boundaries(&spec, None, None, None), (None, None));
        let origin = Timestamp::from_second(1_000_000).unwrap();
        let t = tally(arm(100.0, 1.0, 5.0), arm(900.0, 9.0, 45.0));
        let evidence = observe(&spec, None, origin, (Some(2.0), None), &t);
        let stored = Some(&evidence.state);
        assert_eq!(boundaries(&spec, stored, Some(0.3), None), (Some(2.0), None));
    }

    /// A 2× error regression read every interval as cumulative counts since the weight was
    /// applied is rolled back with the evidence in words; the latency test stays quiet.
    #[test]
    fn doubled_errors_regress_with_the_evidence_in_words() {
        let spec = spec();
        let origin = Timestamp::from_second(1_000_000).unwrap();
        let mut stored: Option<SequentialState> = None;
        let mut found = None;
        for t in 1..=6 {
            let n = f64::from(t);
            let reading =
                tally(arm(500.0 * n, 10.0 * n, 25.0 * n), arm(4500.0 * n, 45.0 * n, 225.0 * n));
            let evidence = observe(&spec, stored.as_ref(), origin, (Some(2.0), None), &reading);
            stored = Some(evidence.state.clone());
            if let Some(regression) = evidence.regression {
                found = Some((t, regression, evidence.metrics));
                break;
            }
        }
        let (t, regression, metrics) = found.expect("a 2× regression is found in 6 intervals");
        assert_eq!(regression.kind, Kind::Errors);
        assert!(t <= 4, "found after {t} intervals");
        assert!(
            regression.summary.starts_with("canary errors 2.0× stable (> 1× with 95 % confidence)")
                || regression.summary.starts_with("canary errors 2.0× stable (≥ 1."),
            "{}",
            regression.summary
        );
        assert_eq!(metrics[1].metric, "requests slower than 2.00s");
        assert!(metrics[0].evidence >= 1.0 / metric_alpha(0.05, 0, 2), "{:?}", metrics[0]);
    }

    /// Readings count from the moment the weight was applied: a new origin starts the readings
    /// from zero without losing the evidence, and a repeated reading adds nothing.
    #[test]
    fn readings_restart_at_a_new_weight_and_evidence_stays() {
        let spec = spec();
        let first = Timestamp::from_second(1_000_000).unwrap();
        let second = Timestamp::from_second(1_000_600).unwrap();
        let reading = tally(arm(500.0, 5.0, 25.0), arm(4500.0, 45.0, 225.0));
        let a = observe(&spec, None, first, (Some(2.0), None), &reading);
        let again = observe(&spec, Some(&a.state), first, (Some(2.0), None), &reading);
        assert_eq!(again.state.metrics, a.state.metrics);
        let next = observe(&spec, Some(&a.state), second, (Some(2.0), None), &reading);
        assert_eq!(next.state.metrics[0].totals.canary_requests, 1000.0);
        assert_eq!(next.state.metrics[0].reading.canary_requests, 500.0);
    }

    /// A shared outage (both arms at 30 % errors) raises no evidence against the canary.
    #[test]
    fn shared_outage_is_not_the_canarys_fault() {
        let spec = spec();
        let origin = Timestamp::from_second(1_000_000).unwrap();
        let mut stored = None;
        for t in 1..=10 {
            let n = f64::from(t);
            let reading = tally(arm(500.0 * n, 150.0 * n, 0.0), arm(4500.0 * n, 1350.0 * n, 0.0));
            let evidence = observe(&spec, stored.as_ref(), origin, (Some(2.0), None), &reading);
            assert_eq!(evidence.regression, None, "interval {t}");
            stored = Some(evidence.state);
        }
    }
}
