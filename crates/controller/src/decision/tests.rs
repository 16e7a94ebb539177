//! The decision core, walked through whole rollouts with a fake clock and fake observations.

use std::time::Duration as StdDuration;

use jiff::{SignedDuration, Timestamp};
use modelrollout_analysis::{
    ArmSample, ArmTally, CustomSample, MeasureSpec, Measurements, MetricProblem, ProxyWeight,
    Tally, TallySpec,
};
use modelrollout_api::{ConditionType, ModelRollout, Phase, Reason, Verdict};

use super::*;
use crate::preflight::{Answer, Arm, ArmCheck};

const ROLLOUT: &str = r#"
apiVersion: rollouts.modelops.io/v1alpha1
kind: ModelRollout
metadata: {name: chat, namespace: ai, generation: 1, uid: 0b5e7d6a-1}
spec:
  model: chat-default
  stable: {model: gpt-4.1, endpoint: "http://stable.ai:8080/v1"}
  canary: {model: claude-sonnet-4.5, endpoint: "http://canary.ai:8080/v1"}
  routing: {configMapRef: {name: model-router}}
  strategy:
    steps:
      - setWeight: 5
      - pause: {duration: 1m}
      - setWeight: 25
      - pause: {}
      - setWeight: 50
      - setWeight: 100
  analysis:
    prometheus: {address: "http://prometheus:9090"}
    method: Threshold
    interval: 10s
    window: 1m
    minRequests: 100
    minRequestsForRollback: 10
    failureLimit: 2
    thresholds:
      maxErrorRate: 0.05
      maxErrorRateIncrease: 0.03
      maxLatencyP95: 2s
      maxTimeToFirstTokenP95: 800ms
"#;

fn rollout() -> ModelRollout {
    serde_yaml::from_str(ROLLOUT).unwrap()
}

/// An arm's numbers: requests, error rate, p95 and TTFT p95 in seconds.
fn arm(requests: f64, error_rate: f64, p95: f64, ttft: f64) -> ArmSample {
    ArmSample {
        requests,
        errors: requests * error_rate,
        latency_p95_seconds: Some(p95),
        ttft_p95_seconds: Some(ttft),
    }
}

fn healthy() -> Measurements {
    measured(arm(500.0, 0.004, 0.9, 0.3), arm(5000.0, 0.005, 0.9, 0.3))
}

/// Steady traffic per second for the sequential judge: 20 canary and 180 stable requests at
/// these error rates, 5 % of both arms slower than the latency boundary.
fn tally_rates(canary_errors: f64, stable_errors: f64) -> (ArmTally, ArmTally) {
    let arm = |requests: f64, errors: f64| ArmTally {
        requests,
        errors: requests * errors,
        timed: requests,
        slow: Some(requests * 0.05),
        first_tokens: requests,
        slow_first_tokens: Some(requests * 0.05),
    };
    (arm(20.0, canary_errors), arm(180.0, stable_errors))
}

fn measured(canary: ArmSample, stable: ArmSample) -> Measurements {
    Measurements { canary, stable, custom: Vec::new(), range: StdDuration::from_secs(10) }
}

/// The preflight's report with these answers from the canary and stable endpoints.
fn preflight_answers(canary: Answer, stable: Answer) -> crate::preflight::Report {
    let check = |arm, endpoint: &str, model: &str, credential: Option<&str>, answer| ArmCheck {
        arm,
        endpoint: endpoint.into(),
        model: model.into(),
        credential: credential.map(Into::into),
        passes_caller_key: false,
        answer,
    };
    crate::preflight::Report {
        canary: check(
            Arm::Canary,
            "http://canary.ai:8080/v1",
            "claude-sonnet-4.5",
            Some("relay/api-key"),
            canary,
        ),
        stable: check(Arm::Stable, "http://stable.ai:8080/v1", "gpt-4.1", None, stable),
    }
}

/// Drives [`decide`] like the reconciler does, keeping the status between calls.
struct Harness {
    rollout: ModelRollout,
    now: Timestamp,
    /// What the proxies report; `None`: the last weight written (nothing before the first write).
    proxies: Option<Result<Vec<ProxyWeight>, String>>,
    /// The weight of the last routing write.
    written: Option<u8>,
    /// What Prometheus answers for an analysis.
    measurements: Result<Measurements, String>,
    /// Every Event so far.
    events: Vec<EventNote>,
    /// The ranges analyses asked for.
    ranges: Vec<StdDuration>,
    /// Per second of the sequential judge's range: canary and stable counts (steady traffic).
    tally_rates: Result<(ArmTally, ArmTally), String>,
    /// The tallies the sequential judge asked for.
    tallies: Vec<TallySpec>,
    /// What Prometheus answers for token counts (token budget, pricing).
    tokens: Result<modelrollout_analysis::TokenSample, String>,
    /// What the arms' endpoints answer to the preflight (default: both serve their model).
    preflight: crate::preflight::Report,
    /// How many preflight checks were made.
    preflights: usize,
    last: Option<Decision>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            rollout: rollout(),
            now: "2026-11-29T10:00:00Z".parse().unwrap(),
            proxies: None,
            written: None,
            measurements: Ok(healthy()),
            events: Vec::new(),
            ranges: Vec::new(),
            tally_rates: Ok(tally_rates(0.01, 0.01)),
            tallies: Vec::new(),
            tokens: Ok(modelrollout_analysis::TokenSample::default()),
            preflight: preflight_answers(
                Answer::Models(vec!["claude-sonnet-4.5".into()]),
                Answer::Models(vec!["gpt-4.1".into()]),
            ),
            preflights: 0,
            last: None,
        }
    }

    fn with(edit: impl FnOnce(&mut ModelRollout)) -> Self {
        let mut harness = Harness::new();
        edit(&mut harness.rollout);
        harness
    }

    /// One reconcile at the current time.
    fn reconcile(&mut self) -> &Decision {
        let mut observed = Observations::default();
        let written = self.written;
        let decision = loop {
            match decide(&self.rollout, self.now, &observed) {
                Outcome::Decided(decision) => break *decision,
                Outcome::Need(Need::ProxyWeights) => {
                    assert!(observed.proxies.is_none(), "asked twice for proxy weights");
                    let follow = written.iter().map(|w| ProxyWeight {
                        instance: "proxy-0:9901".into(),
                        weight: f64::from(*w),
                    });
                    observed.proxies =
                        Some(self.proxies.clone().unwrap_or_else(|| Ok(follow.collect())));
                }
                Outcome::Need(Need::Measurements(MeasureSpec { range, .. })) => {
                    assert!(observed.measurements.is_none(), "asked twice for measurements");
                    self.ranges.push(range);
                    observed.measurements = Some(self.measurements.clone());
                }
                Outcome::Need(Need::Tally(spec)) => {
                    assert!(observed.tally.is_none(), "asked twice for a tally");
                    let seconds = spec.since.as_secs_f64();
                    let scaled = |a: &ArmTally| ArmTally {
                        requests: a.requests * seconds,
                        errors: a.errors * seconds,
                        timed: a.timed * seconds,
                        slow: spec.latency_boundary.and(a.slow).map(|x| x * seconds),
                        first_tokens: a.first_tokens * seconds,
                        slow_first_tokens: spec
                            .ttft_boundary
                            .and(a.slow_first_tokens)
                            .map(|x| x * seconds),
                    };
                    observed.tally = Some(self.tally_rates.as_ref().map_err(Clone::clone).map(
                        |(canary, stable)| Tally {
                            canary: scaled(canary),
                            stable: scaled(stable),
                            since: spec.since,
                        },
                    ));
                    self.tallies.push(spec);
                }
                Outcome::Need(Need::Tokens(_)) => {
                    assert!(observed.tokens.is_none(), "asked twice for token counts");
                    observed.tokens = Some(self.tokens.clone());
                }
                Outcome::Need(Need::Preflight) => {
                    assert!(observed.preflight.is_none(), "asked twice for a preflight");
                    self.preflights += 1;
                    observed.preflight = Some(self.preflight.clone());
                }
            }
        };
        self.events.extend(decision.events.iter().cloned());
        if decision.write_routing {
            self.written = decision.status.canary_weight.map(|w| w as u8);
        }
        self.rollout.status = Some(decision.status.clone());
        self.last = Some(decision);
        self.last.as_ref().unwrap()
    }

    /// Moves the clock and reconciles.
    fn after(&mut self, seconds: i64) -> &Decision {
        self.now = self.now.checked_add(SignedDuration::from_secs(seconds)).unwrap();
        self.reconcile()
    }

    /// Reconciles every `seconds` for `times` times.
    fn run(&mut self, seconds: i64, times: usize) {
        for _ in 0..times {
            self.after(seconds);
        }
    }

    fn status(&self) -> &ModelRolloutStatus {
        self.rollout.status.as_ref().unwrap()
    }

    fn phase(&self) -> Phase {
        self.status().phase.unwrap()
    }

    fn weight(&self) -> u8 {
        self.rollout.status.as_ref().and_then(|s| s.canary_weight).unwrap_or(0) as u8
    }

    fn step(&self) -> Option<i32> {
        self.status().current_step_index
    }

    fn condition(&self, kind: ConditionType) -> &Condition {
        self.status().conditions.iter().find(|c| c.type_ == kind.as_str()).unwrap()
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.reason.as_str()).collect()
    }

    fn count(&self, reason: EventReason) -> usize {
        self.events.iter().filter(|e| e.reason == reason).count()
    }

    fn annotate(&mut self, key: &str, value: &str) {
        self.rollout.metadata.annotations.get_or_insert_default().insert(key.into(), value.into());
    }

    /// Runs from creation to the indefinite pause at step 4 (index 3), weight 25.
    fn walk_to_manual_gate(&mut self) {
        self.reconcile();
        self.after(1); // proxies at 0 -> step 1, weight 5
        self.after(1); // proxies at 5
        self.after(10); // healthy -> pause 1m
        self.after(60); // pause over -> step 3, weight 25
        self.after(1);
        self.after(10); // healthy -> step 4, pause {}
        assert_eq!((self.step(), self.weight(), self.phase()), (Some(3), 25, Phase::Paused));
    }
}

/// A new rollout starts Pending at weight 0 and waits for the proxies before moving traffic.
#[test]
fn starts_pending_at_zero() {
    let mut h = Harness::new();
    h.proxies = Some(Ok(Vec::new()));
    let d = h.reconcile();
    assert!(d.write_routing);
    assert_eq!((h.phase(), h.weight(), h.step()), (Phase::Pending, 0, None));
    assert_eq!(h.reasons(), ["RolloutStarted"]);
    let applied = h.condition(ConditionType::RoutingApplied);
    assert_eq!(applied.status, "False");
    assert!(applied.message.contains("no proxy reports this rollout"), "{}", applied.message);
    assert_eq!(h.last.as_ref().unwrap().requeue_after, Some(PROXY_POLL));
}

/// Once the proxies report 0 %, the first step sets its weight; analysis waits for that weight.
#[test]
fn first_step_after_proxies_report_zero() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    assert_eq!((h.phase(), h.weight(), h.step()), (Phase::Progressing, 5, Some(0)));
    assert_eq!(h.condition(ConditionType::RoutingApplied).status, "False");
    h.proxies = Some(Ok(vec![
        ProxyWeight { instance: "a:9901".into(), weight: 5.0 },
        ProxyWeight { instance: "b:9901".into(), weight: 0.0 },
    ]));
    h.after(1);
    let applied = h.condition(ConditionType::RoutingApplied);
    assert_eq!(applied.status, "False");
    assert!(
        applied.message.contains("1 of 2 proxy instance(s)")
            && applied.message.contains("b:9901 at 0%"),
        "{}",
        applied.message
    );
    assert!(h.ranges.is_empty(), "no analysis before every proxy reports the weight");
    h.proxies = None;
    h.after(1);
    let applied = h.condition(ConditionType::RoutingApplied);
    assert_eq!(applied.status, "True");
    assert!(
        applied.message.contains("report 5%, 2.0s after the routing write"),
        "{}",
        applied.message
    );
}

/// The analysis range starts when the proxies applied the weight, never earlier, and is at most the window.
#[test]
fn analysis_range_never_reaches_back_past_the_weight_change() {
    let mut h = Harness::new();
    h.measurements = Ok(measured(arm(50.0, 0.0, 0.5, 0.2), arm(900.0, 0.0, 0.5, 0.2)));
    h.reconcile();
    h.after(1);
    h.after(1); // applied at t=2
    h.after(9);
    assert!(h.ranges.is_empty(), "not due before one interval at the new weight");
    h.after(1);
    assert_eq!(h.ranges, [StdDuration::from_secs(10)]);
    h.run(10, 8);
    assert_eq!(*h.ranges.last().unwrap(), StdDuration::from_secs(60), "capped at the window");
}

/// Healthy analyses walk every step: setWeight on a clear pass, a timed pause when its time is up.
#[test]
fn healthy_canary_walks_to_the_manual_gate() {
    let mut h = Harness::new();
    h.walk_to_manual_gate();
    assert_eq!(h.condition(ConditionType::Progressing).reason, "WaitingForPromotion");
    assert_eq!(h.count(EventReason::StepAdvanced), 3);
}

/// A timed pause holds its weight until its duration is over, then advances.
#[test]
fn advances_after_a_timed_pause() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    assert_eq!((h.step(), h.weight()), (Some(1), 5));
    h.after(30);
    assert_eq!(h.step(), Some(1), "30s of a 1m pause");
    h.after(30);
    assert_eq!((h.step(), h.weight()), (Some(2), 25));
}

/// `pause: {}` waits for ever, and a promote annotation moves on exactly once.
#[test]
fn waits_at_manual_gate_until_promoted() {
    let mut h = Harness::new();
    h.walk_to_manual_gate();
    h.run(10, 30);
    assert_eq!((h.step(), h.phase()), (Some(3), Phase::Paused));
    h.annotate(ANNOTATION_PROMOTE, "2026-11-29T10:10:00Z by alice");
    h.after(1);
    assert_eq!((h.step(), h.weight(), h.phase()), (Some(4), 50, Phase::Progressing));
    let promote = h.events.iter().find(|e| e.reason == EventReason::ManualPromote).unwrap();
    assert!(promote.note.contains("by alice"), "{}", promote.note);
    h.run(1, 5);
    assert_eq!(h.count(EventReason::ManualPromote), 1, "acted on once");
}

/// Promote --full jumps to 100 % and Promoted at once.
#[test]
fn promote_full() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.annotate(ANNOTATION_PROMOTE_FULL, "now by bob");
    h.after(1);
    assert_eq!((h.phase(), h.weight()), (Phase::Promoted, 100));
    assert_eq!(h.condition(ConditionType::Promoted).status, "True");
    assert_eq!(h.condition(ConditionType::Promoted).reason, "ManualPromote");
}

/// Past the last step the canary takes 100 %: phase Promoted, condition Promoted, Progressing False.
#[test]
fn promotes_at_one_hundred() {
    let mut h = Harness::new();
    h.walk_to_manual_gate();
    h.annotate(ANNOTATION_PROMOTE, "v1");
    h.after(1);
    h.after(1);
    h.after(10); // healthy at 50 -> setWeight 100 -> promoted
    assert_eq!((h.phase(), h.weight()), (Phase::Promoted, 100));
    assert_eq!(h.condition(ConditionType::Progressing).status, "False");
    assert_eq!(h.count(EventReason::Promoted), 1);
    let requeue = h.after(1).requeue_after;
    assert_eq!(requeue, None, "a promoted rollout whose proxies report 100% rests");
    h.run(60, 3);
    assert_eq!(h.count(EventReason::Promoted), 1);
}

/// Under minRequests the verdict is Inconclusive and the step holds.
#[test]
fn inconclusive_under_min_requests() {
    let mut h = Harness::new();
    h.measurements = Ok(measured(arm(40.0, 0.0, 0.5, 0.2), arm(800.0, 0.0, 0.5, 0.2)));
    h.reconcile();
    h.after(1);
    h.after(1);
    h.run(10, 5);
    let analysis = h.status().last_analysis.as_ref().unwrap();
    assert_eq!(analysis.verdict, Verdict::Inconclusive);
    assert!(
        analysis.message.as_deref().unwrap().contains("only 40 canary requests"),
        "{analysis:?}"
    );
    assert_eq!((h.step(), h.weight()), (Some(0), 5));
    assert_eq!(
        h.count(EventReason::AnalysisInconclusive),
        1,
        "announced when it becomes inconclusive"
    );
    assert_eq!(h.condition(ConditionType::AnalysisHealthy).status, "Unknown");
}

/// A breach with fewer than minRequestsForRollback canary requests is no failure.
#[test]
fn no_rollback_under_min_requests_for_rollback() {
    let mut h = Harness::new();
    h.measurements = Ok(measured(arm(8.0, 0.5, 0.5, 0.2), arm(800.0, 0.0, 0.5, 0.2)));
    h.reconcile();
    h.after(1);
    h.after(1);
    h.run(10, 5);
    assert_eq!(h.phase(), Phase::Progressing);
    assert_eq!(h.status().consecutive_failures, Some(0));
    let message = h.status().last_analysis.as_ref().unwrap().message.clone().unwrap();
    assert!(message.contains("too few to roll back"), "{message}");
}

/// Failures count; the rollback comes at failureLimit consecutive failures, with the numbers.
#[test]
fn rolls_back_at_failure_limit() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.measurements = Ok(measured(arm(400.0, 0.091, 0.5, 0.2), arm(5000.0, 0.006, 0.5, 0.2)));
    h.after(10);
    assert_eq!((h.phase(), h.status().consecutive_failures), (Phase::Progressing, Some(1)));
    h.after(10);
    assert_eq!((h.phase(), h.weight()), (Phase::RolledBack, 0));
    let rolled = h.condition(ConditionType::RolledBack);
    assert_eq!((rolled.status.as_str(), rolled.reason.as_str()), ("True", "ErrorRateExceeded"));
    assert_eq!(rolled.message, "canary error rate 9.1% > 5% (stable 0.6%) in 2 consecutive checks");
    assert_eq!(h.count(EventReason::AnalysisFailed), 2);
    assert_eq!(h.count(EventReason::RolledBack), 1);
    assert!(!h.last.as_ref().unwrap().events.is_empty());
    assert_eq!(h.condition(ConditionType::RoutingApplied).status, "False", "0% not yet confirmed");
    h.after(1);
    assert_eq!(h.condition(ConditionType::RoutingApplied).status, "True");
    assert!(h.ranges.len() == 2, "no analysis after the rollback");
}

/// A pass between two failures resets the count.
#[test]
fn a_pass_resets_the_failure_count() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    let bad = measured(arm(400.0, 0.09, 0.5, 0.2), arm(5000.0, 0.006, 0.5, 0.2));
    // Within the limits but not clearly healthy (over half the limit): a pass that holds.
    let passing = measured(arm(400.0, 0.03, 0.5, 0.2), arm(5000.0, 0.028, 0.5, 0.2));
    for measurements in [bad.clone(), passing, bad] {
        h.measurements = Ok(measurements);
        h.after(10);
    }
    assert_eq!((h.phase(), h.status().consecutive_failures), (Phase::Progressing, Some(1)));
    assert_eq!(h.step(), Some(0));
}

/// Canary minus stable over maxErrorRateIncrease fails even under maxErrorRate... when stable is low.
#[test]
fn relative_check_against_stable() {
    let mut h = Harness::with(|r| r.spec.analysis.thresholds.max_error_rate = 0.2);
    h.reconcile();
    h.after(1);
    h.after(1);
    h.measurements = Ok(measured(arm(400.0, 0.06, 0.5, 0.2), arm(5000.0, 0.01, 0.5, 0.2)));
    h.after(10);
    h.after(10);
    assert_eq!(h.phase(), Phase::RolledBack);
    assert_eq!(h.condition(ConditionType::RolledBack).reason, "ErrorRateIncreaseExceeded");
}

/// Stable failing as badly as the canary (a provider outage) holds, Inconclusive with the reason.
#[test]
fn both_arms_failing_alike_hold() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.measurements = Ok(measured(arm(400.0, 0.30, 0.5, 0.2), arm(5000.0, 0.29, 0.5, 0.2)));
    h.run(10, 6);
    assert_eq!((h.phase(), h.weight()), (Phase::Progressing, 5));
    let analysis = h.status().last_analysis.as_ref().unwrap();
    assert_eq!(analysis.verdict, Verdict::Inconclusive);
    let healthy = h.condition(ConditionType::AnalysisHealthy);
    assert_eq!(healthy.reason, "BothArmsFailing");
    assert!(healthy.message.contains("not the canary's fault"), "{}", healthy.message);
}

/// p95 latency and TTFT over their limits roll back with their own reasons.
#[test]
fn latency_and_ttft_limits() {
    for (canary, reason) in [
        (arm(400.0, 0.0, 3.1, 0.2), "LatencyExceeded"),
        (arm(400.0, 0.0, 0.5, 1.7), "TimeToFirstTokenExceeded"),
    ] {
        let mut h = Harness::new();
        h.reconcile();
        h.after(1);
        h.after(1);
        h.measurements = Ok(measured(canary, arm(5000.0, 0.0, 0.5, 0.2)));
        h.run(10, 2);
        assert_eq!(h.phase(), Phase::RolledBack, "{reason}");
        assert_eq!(h.condition(ConditionType::RolledBack).reason, reason);
    }
}

/// A custom metric outside min/max fails; one without data holds (unknown is never healthy).
#[test]
fn custom_metric_bounds_and_no_data() {
    let with_metric = |r: &mut ModelRollout| {
        r.spec.analysis.metrics = vec![modelrollout_api::CustomMetric {
            name: "cost".into(),
            query: "sum(x{rollout=\"{{rollout}}\"})".into(),
            min: Some(0.001),
            max: Some(0.02),
        }];
    };
    let mut h = Harness::with(with_metric);
    h.reconcile();
    h.after(1);
    h.after(1);
    let mut m = healthy();
    m.custom = vec![CustomSample { name: "cost".into(), value: Err(MetricProblem::NoData) }];
    h.measurements = Ok(m.clone());
    h.run(10, 4);
    assert_eq!((h.phase(), h.step()), (Phase::Progressing, Some(0)), "no data: hold");
    assert_eq!(h.status().last_analysis.as_ref().unwrap().verdict, Verdict::Inconclusive);
    for (value, expect) in [(0.05, Phase::RolledBack), (0.0001, Phase::RolledBack)] {
        let mut h = Harness::with(with_metric);
        h.reconcile();
        h.after(1);
        h.after(1);
        m.custom = vec![CustomSample { name: "cost".into(), value: Ok(value) }];
        h.measurements = Ok(m.clone());
        h.run(10, 2);
        assert_eq!(h.phase(), expect, "{value}");
        assert_eq!(h.condition(ConditionType::RolledBack).reason, "CustomMetricExceeded");
    }
}

/// No data from Prometheus is unknown, never healthy: zero canary requests never advance.
#[test]
fn no_data_is_never_healthy() {
    let mut h = Harness::new();
    let empty =
        ArmSample { requests: 0.0, errors: 0.0, latency_p95_seconds: None, ttft_p95_seconds: None };
    h.measurements = Ok(measured(empty.clone(), empty));
    h.reconcile();
    h.after(1);
    h.after(1);
    h.run(10, 20);
    assert_eq!((h.step(), h.weight()), (Some(0), 5));
    assert_eq!(h.status().last_analysis.as_ref().unwrap().verdict, Verdict::Inconclusive);
}

/// onAnalysisError Pause: Prometheus down → Paused (AnalysisError), and it goes on when it answers.
#[test]
fn analysis_error_pauses_then_continues() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.measurements =
        Err("Prometheus at http://prometheus:9090 is unreachable: connection refused".into());
    h.run(10, 3);
    assert_eq!((h.phase(), h.weight()), (Phase::Paused, 5));
    assert_eq!(h.condition(ConditionType::Progressing).reason, "AnalysisError");
    assert!(h.status().message.as_deref().unwrap().contains("connection refused"));
    assert_eq!(h.count(EventReason::AnalysisError), 1, "announced once");
    h.measurements = Ok(healthy());
    h.after(10);
    assert_eq!((h.phase(), h.step()), (Phase::Progressing, Some(1)));
}

/// onAnalysisError Rollback: Prometheus down → rolled back, reason AnalysisError.
#[test]
fn analysis_error_rolls_back_when_asked() {
    let mut h = Harness::with(|r| r.spec.analysis.on_analysis_error = OnAnalysisError::Rollback);
    h.reconcile();
    h.after(1);
    h.after(1);
    h.measurements = Err("timeout after 10s".into());
    h.after(10);
    assert_eq!((h.phase(), h.weight()), (Phase::RolledBack, 0));
    assert_eq!(h.condition(ConditionType::RolledBack).reason, "AnalysisError");
}

/// spec.paused holds the weight (announced once), and resuming goes on (announced once).
#[test]
fn spec_paused_and_resumed() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.rollout.spec.paused = true;
    h.run(10, 5);
    assert_eq!((h.phase(), h.step(), h.weight()), (Phase::Paused, Some(0), 5));
    assert_eq!(h.condition(ConditionType::Progressing).reason, "PausedBySpec");
    h.rollout.spec.paused = false;
    h.run(10, 2);
    assert_eq!(h.phase(), Phase::Progressing);
    assert!(h.step().unwrap() >= 1);
    assert_eq!((h.count(EventReason::Paused), h.count(EventReason::Resumed)), (1, 1));
}

/// Abort rolls back with ManualAbort; retry starts over from step 1; each value acts once.
#[test]
fn abort_then_retry() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.annotate(ANNOTATION_ABORT, "t1 by carol");
    h.after(1);
    assert_eq!((h.phase(), h.weight()), (Phase::RolledBack, 0));
    assert_eq!(h.condition(ConditionType::RolledBack).reason, "ManualAbort");
    h.annotate(ANNOTATION_RETRY, "t2 by carol");
    h.after(1);
    // The proxies already report 0%, so the first step starts at once.
    assert_eq!((h.phase(), h.weight(), h.step()), (Phase::Progressing, 5, Some(0)));
    assert_eq!(h.condition(ConditionType::RolledBack).status, "False");
    assert!(h.status().last_analysis.is_none());
    h.run(1, 3);
    assert_eq!((h.count(EventReason::ManualAbort), h.count(EventReason::ManualRetry)), (1, 1));
}

/// A retry while progressing is ignored with a Warning; annotations present at creation are not requests.
#[test]
fn requests_that_do_not_apply() {
    let mut h = Harness::new();
    h.annotate(ANNOTATION_ABORT, "left over from a copy");
    h.reconcile();
    h.after(1);
    assert_eq!(h.phase(), Phase::Progressing, "an annotation present at creation is not a request");
    h.annotate(ANNOTATION_RETRY, "t1");
    h.after(1);
    assert_eq!(h.phase(), Phase::Progressing);
    let ignored = h.events.iter().find(|e| e.reason == EventReason::RequestIgnored).unwrap();
    assert_eq!(ignored.note, "retry request (t1) ignored: the rollout is Progressing");
}

/// A new canary model mid-rollout starts over from step 1 at weight 0.
#[test]
fn new_canary_starts_over() {
    let mut h = Harness::new();
    h.walk_to_manual_gate();
    h.rollout.spec.canary.model = "claude-opus-5".into();
    h.rollout.metadata.generation = Some(2);
    h.after(1);
    assert_eq!((h.phase(), h.weight(), h.step()), (Phase::Pending, 0, None));
    assert_eq!(h.count(EventReason::SpecChanged), 1);
    assert!(h.status().history.is_empty());
    h.after(1);
    assert_eq!((h.weight(), h.step()), (5, Some(0)));
}

/// A threshold change mid-rollout carries on where it is.
#[test]
fn threshold_change_carries_on() {
    let mut h = Harness::new();
    h.walk_to_manual_gate();
    h.rollout.spec.analysis.thresholds.max_error_rate = 0.02;
    h.rollout.metadata.generation = Some(2);
    h.after(10);
    assert_eq!((h.phase(), h.weight(), h.step()), (Phase::Paused, 25, Some(3)));
    assert_eq!(h.status().observed_generation, Some(2));
    assert_eq!(h.count(EventReason::SpecChanged), 0);
}

/// A spec that breaks a rule the schema missed: Failed + InvalidSpec, routing untouched; fixed, it goes on.
#[test]
fn invalid_spec_touches_nothing_then_recovers() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.rollout.spec.analysis.metrics = vec![modelrollout_api::CustomMetric {
        name: "broken".into(),
        query: "sum(x{rollout=\"{{rolout}}\"})".into(),
        min: None,
        max: Some(1.0),
    }];
    let d = h.after(10);
    assert!(!d.write_routing);
    assert_eq!((h.phase(), h.weight()), (Phase::Failed, 5));
    let invalid = h.condition(ConditionType::InvalidSpec);
    assert_eq!(invalid.status, "True");
    assert!(invalid.message.contains("rolout"), "{}", invalid.message);
    h.after(10);
    assert_eq!(h.count(EventReason::InvalidSpec), 1);
    h.rollout.spec.analysis.metrics.clear();
    let d = h.after(1);
    assert!(d.write_routing);
    assert_eq!(h.phase(), Phase::Progressing);
    assert_eq!(h.condition(ConditionType::InvalidSpec).status, "False");
}

/// No Prometheus anywhere (neither in the spec nor a controller default filled in by the
/// reconciler): InvalidSpec naming both ways out, and no routing written.
#[test]
fn no_prometheus_is_an_invalid_spec() {
    let mut h = Harness::with(|r| r.spec.analysis.prometheus.address = None);
    let d = h.reconcile();
    assert!(!d.write_routing);
    let invalid = h.condition(ConditionType::InvalidSpec);
    assert_eq!(invalid.status, "True");
    assert!(invalid.message.contains("--prometheus-address"), "{}", invalid.message);
    assert!(invalid.message.contains("spec.analysis.prometheus.address"), "{}", invalid.message);
    h.rollout.spec.analysis.prometheus.address = Some("http://prometheus:9090".into());
    assert!(h.after(1).write_routing);
    assert_eq!(h.condition(ConditionType::InvalidSpec).status, "False");
}

/// Restart safety: the same status and time give the same decision, so a controller killed at
/// any moment neither skips nor repeats a step.
#[test]
fn the_same_status_gives_the_same_decision() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    let before = h.rollout.clone();
    let first = decide(
        &before,
        h.now,
        &Observations {
            proxies: Some(Ok(vec![ProxyWeight { instance: "p".into(), weight: 5.0 }])),
            measurements: Some(Ok(healthy())),
            tally: None,
            tokens: None,
            preflight: None,
        },
    );
    let again = decide(
        &before,
        h.now,
        &Observations {
            proxies: Some(Ok(vec![ProxyWeight { instance: "p".into(), weight: 5.0 }])),
            measurements: Some(Ok(healthy())),
            tally: None,
            tokens: None,
            preflight: None,
        },
    );
    match (first, again) {
        (Outcome::Decided(a), Outcome::Decided(b)) => {
            assert_eq!(a.status, b.status);
            assert_eq!(a.events, b.events);
        }
        other => panic!("{other:?}"),
    }
}

/// The status never changes when nothing happens: no write, no watch event, no busy loop.
#[test]
fn a_quiet_look_changes_nothing() {
    let mut h = Harness::new();
    h.walk_to_manual_gate();
    h.after(3);
    let before = h.status().clone();
    h.after(1);
    assert_eq!(*h.status(), before);
}

/// The history keeps at most HISTORY_LIMIT points.
#[test]
fn history_is_bounded() {
    let mut h = Harness::new();
    h.measurements = Ok(measured(arm(40.0, 0.0, 0.5, 0.2), arm(800.0, 0.0, 0.5, 0.2)));
    h.reconcile();
    h.after(1);
    h.after(1);
    h.run(10, HISTORY_LIMIT + 15);
    assert_eq!(h.status().history.len(), HISTORY_LIMIT);
    assert_eq!(h.status().history.last().unwrap().canary_weight, 5);
}

/// Reasons in conditions are words of the vocabulary.
#[test]
fn condition_reasons_are_vocabulary_words() {
    let mut h = Harness::new();
    h.walk_to_manual_gate();
    for condition in &h.status().conditions {
        assert!(condition.reason.parse::<Reason>().is_ok(), "{condition:?}");
        assert!(condition.type_.parse::<ConditionType>().is_ok(), "{condition:?}");
    }
}

// === the sequential judge ===

fn sequential() -> Harness {
    Harness::with(|r| r.spec.analysis.method = modelrollout_api::AnalysisMethod::Sequential)
}

/// A 2× canary error regression (2 % against 1 %, well inside the 5 % limit) is rolled back
/// by the sequential judge at once, with the evidence in status and the condition in words.
#[test]
fn sequential_judge_rolls_back_doubled_errors() {
    let mut h = sequential();
    h.tally_rates = Ok(tally_rates(0.02, 0.01));
    h.reconcile();
    h.after(1); // proxies at 0 -> weight 5
    h.after(1); // proxies at 5
    for _ in 0..20 {
        if h.phase() == Phase::RolledBack {
            break;
        }
        h.after(10);
    }
    assert_eq!((h.phase(), h.weight()), (Phase::RolledBack, 0));
    let rolled_back = h.condition(ConditionType::RolledBack);
    assert_eq!(rolled_back.reason, Reason::ErrorRateIncreaseExceeded.as_str());
    assert!(
        rolled_back.message.starts_with("canary errors 2.0× stable (")
            && !rolled_back.message.contains('≤')
            && rolled_back.message.contains("× with 95 % confidence) after "),
        "{}",
        rolled_back.message
    );
    let last = h.status().last_analysis.as_ref().unwrap();
    assert_eq!(last.verdict, Verdict::Fail);
    assert_eq!(last.failed_checks[0].name, "sequential-errors");
    let errors = &last.evidence[0];
    let errors_alpha = modelrollout_judge::metric_alpha(0.05, 0, 3);
    assert!(errors.evidence >= 1.0 / errors_alpha && errors.ratio_lower_bound >= 1.0, "{errors:?}");
    assert_eq!(last.evidence[1].metric, "requests slower than 1.00s");
    // Counted since the proxies applied the weight: the ranges grow, and start over at 25 %.
    let ranges: Vec<u64> = h.tallies.iter().map(|t| t.since.as_secs()).collect();
    assert_eq!((ranges[0], ranges[1], ranges[ranges.len() - 1]), (10, 20, 10), "{ranges:?}");
}

/// Identical arms walk the steps on schedule, and status shows the evidence that says so.
#[test]
fn sequential_judge_advances_identical_arms() {
    let mut h = sequential();
    h.walk_to_manual_gate();
    let last = h.status().last_analysis.as_ref().unwrap();
    assert_eq!(last.verdict, Verdict::Pass);
    assert_eq!(last.evidence.len(), 3);
    let healthy = h.condition(ConditionType::AnalysisHealthy);
    assert!(
        healthy.message.starts_with("no regression: canary errors 1.00× stable"),
        "{}",
        healthy.message
    );
    let stored = h.status().sequential.as_ref().unwrap();
    assert_eq!(stored.latency_boundary_seconds, Some(1.0));
    assert_eq!(stored.time_to_first_token_boundary_seconds, Some(0.5));
}

/// Too few canary requests at this weight hold the step, however healthy the canary is.
#[test]
fn sequential_judge_waits_for_min_requests() {
    let mut h = sequential();
    h.tally_rates =
        Ok((ArmTally { requests: 0.5, ..tally_rates(0.01, 0.01).0 }, tally_rates(0.01, 0.01).1));
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    assert_eq!((h.step(), h.weight()), (Some(0), 5));
    let healthy = h.condition(ConditionType::AnalysisHealthy);
    assert!(
        healthy.message.contains("holding: only 5 canary requests at this weight; 100 needed"),
        "{}",
        healthy.message
    );
}

/// A controller restart loses no evidence: the judge state lives in status, and the next
/// tally covers the gap.
#[test]
fn sequential_evidence_survives_a_restart() {
    let mut straight = sequential();
    straight.tally_rates = Ok(tally_rates(0.015, 0.01));
    let mut restarted = sequential();
    restarted.tally_rates = Ok(tally_rates(0.015, 0.01));
    for h in [&mut straight, &mut restarted] {
        h.reconcile();
        h.after(1);
        h.after(1);
        h.after(10);
    }
    straight.after(10);
    straight.after(10);
    // The restarted controller was down for two intervals: it looks once, 20 s later.
    restarted.after(20);
    let totals = |h: &Harness| h.status().sequential.as_ref().unwrap().metrics[0].totals;
    assert_eq!(totals(&straight), totals(&restarted));
}

/// A tally Prometheus cannot answer is an analysis error, handled by onAnalysisError.
#[test]
fn sequential_tally_error_pauses() {
    let mut h = sequential();
    h.tally_rates = Err("Prometheus at http://prometheus:9090 is unreachable".into());
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    assert_eq!(h.phase(), Phase::Paused);
    assert_eq!(h.status().last_analysis.as_ref().unwrap().verdict, Verdict::Error);
}

mod guards;
mod preflight_checks;
