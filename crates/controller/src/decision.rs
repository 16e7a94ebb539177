//! The decision core: from a rollout (spec, metadata, status), the time and what was observed,
//! to the next status, the weight, the Events to emit and when to look again. Pure: no I/O and
//! no clock; the reconciler gathers what [`decide`] asks for ([`Need`]) and calls it again.
//!
//! The walk, in order, each step returning early when it must wait:
//! 1. an invalid spec marks the rollout `Failed`/`InvalidSpec` and touches nothing else;
//! 2. a change of either arm (model or endpoint) starts over from step 1 at weight 0;
//! 3. manual requests (abort, retry, promote, promote --full, spec.paused), each acted on once;
//! 4. before the first weight above 0, each arm's endpoint must pass the preflight
//!    (`GET {endpoint}/models` with its credential), retried with backoff until it does;
//!    the proxies must report the current weight before anything is judged at it;
//! 5. analysis every interval at the current weight: pass, hold, count a failure, roll back;
//! 6. the steps: a `setWeight` step completes on a clearly healthy analysis, a timed pause when
//!    its time is up, an indefinite pause on a manual promote; past the last step, promotion.

use std::time::Duration as StdDuration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use modelrollout_analysis::{
    MeasureSpec, Measurements, ProxyWeight, Tally, TallySpec, TokenSample, bind_models,
};
use modelrollout_api::rollout::{
    AnalysisPoint, AnalysisResult, FailedCheck, HISTORY_LIMIT, HandledAnnotations, MetricValue,
    PreflightState,
};
use modelrollout_api::{
    ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY,
    AnalysisMethod, ArmMeasurements, ConditionType, ModelRollout, ModelRolloutStatus,
    OnAnalysisError, Phase, Reason, StepAction, Verdict,
};

use crate::judge::{Judgement, judge};
use crate::preflight::{self, Report};
use crate::sequential::{self, Evidence};

/// A walk step either goes on with a value or stops to ask for an observation.
type Flow<T = ()> = Result<T, Need>;

/// How soon to look again while waiting for the proxies to report a new weight.
pub const PROXY_POLL: StdDuration = StdDuration::from_secs(1);

/// Why a rollout without a Prometheus (its own or the controller's default) cannot start.
pub const NO_PROMETHEUS: &str = "spec.analysis.prometheus.address is not set and the controller \
     has no --prometheus-address: set one of them to the Prometheus that scrapes the proxies, \
     e.g. http://prometheus.monitoring:9090";

/// What the reconciler observed for this call; `None` means "not looked at".
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// The canary weight each proxy instance reports, or why it could not be read.
    pub proxies: Option<Result<Vec<ProxyWeight>, String>>,
    /// The analysis measurements, or why they could not be taken.
    pub measurements: Option<Result<Measurements, String>>,
    /// The sequential judge's cumulative counts, or why they could not be taken.
    pub tally: Option<Result<Tally, String>>,
    /// Both arms' token counts (token budget, cost per request), or why they could not be taken.
    pub tokens: Option<Result<TokenSample, String>>,
    /// What both arms' endpoints answered to `GET {endpoint}/models`.
    pub preflight: Option<Report>,
}

/// Something [`decide`] must know before it can decide.
#[derive(Clone, Debug, PartialEq)]
pub enum Need {
    /// The canary weight every proxy reports (`gray_release_canary_weight`).
    ProxyWeights,
    /// Canary and stable measurements over this range.
    Measurements(MeasureSpec),
    /// Both arms' cumulative counts for the sequential judge.
    Tally(TallySpec),
    /// Both arms' token counts over this range (asked only with a token budget or pricing).
    Tokens(StdDuration),
    /// Both arms' endpoints asked for their model list, with their credentials.
    Preflight,
}

/// Either a request for more observations or the decision.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Observe this, add it to [`Observations`] and call [`decide`] again.
    Need(Need),
    /// The decision.
    Decided(Box<Decision>),
}

/// What to do: the status to write, the routing to apply, the Events and when to look again.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The complete new status.
    pub status: ModelRolloutStatus,
    /// Write the routing document at `status.canaryWeight` (false only for an invalid spec,
    /// which must not touch traffic).
    pub write_routing: bool,
    /// Events to emit, in order.
    pub events: Vec<EventNote>,
    /// When to reconcile again even if nothing changes (None: only on a change).
    pub requeue_after: Option<StdDuration>,
}

/// Normal or Warning, as Kubernetes Events say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Progress as planned.
    Normal,
    /// Something a person may want to look at.
    Warning,
}

impl EventType {
    /// The Event `type` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event about the rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct EventNote {
    /// Normal or Warning.
    pub kind: EventType,
    /// The transition, e.g. `StepAdvanced`.
    pub reason: EventReason,
    /// What happened, with the numbers.
    pub note: String,
}

/// The transitions announced by an Event (`kubectl get events` shows these words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// The rollout started (or started over) from its first step.
    RolloutStarted,
    /// The rollout moved to its next step.
    StepAdvanced,
    /// An analysis breached a limit.
    AnalysisFailed,
    /// An analysis could not judge (too few requests, both arms failing, unknown values).
    AnalysisInconclusive,
    /// Prometheus could not answer.
    AnalysisError,
    /// All traffic went back to stable.
    RolledBack,
    /// The canary took all traffic.
    Promoted,
    /// The rollout holds its weight.
    Paused,
    /// The rollout goes on after a pause.
    Resumed,
    /// The spec breaks a rule.
    InvalidSpec,
    /// The spec changed an arm: start over.
    SpecChanged,
    /// A promote request.
    ManualPromote,
    /// An abort request.
    ManualAbort,
    /// A retry request.
    ManualRetry,
    /// A request that does not apply now.
    RequestIgnored,
    /// The canary went over its token budget, or its next step would.
    BudgetExceeded,
    /// The canary is back within its token budget.
    WithinBudget,
    /// An arm's endpoint failed the preflight, or failed it for another reason than before.
    PreflightFailed,
    /// A failing preflight passed: traffic may move.
    PreflightPassed,
}

impl EventReason {
    /// The Event `reason` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::RolloutStarted => "RolloutStarted",
            EventReason::StepAdvanced => "StepAdvanced",
            EventReason::AnalysisFailed => "AnalysisFailed",
            EventReason::AnalysisInconclusive => "AnalysisInconclusive",
            EventReason::AnalysisError => "AnalysisError",
            EventReason::RolledBack => "RolledBack",
            EventReason::Promoted => "Promoted",
            EventReason::Paused => "Paused",
            EventReason::Resumed => "Resumed",
            EventReason::InvalidSpec => "InvalidSpec",
            EventReason::SpecChanged => "SpecChanged",
            EventReason::ManualPromote => "ManualPromote",
            EventReason::ManualAbort => "ManualAbort",
            EventReason::ManualRetry => "ManualRetry",
            EventReason::RequestIgnored => "RequestIgnored",
            EventReason::BudgetExceeded => "BudgetExceeded",
            EventReason::WithinBudget => "WithinBudget",
            EventReason::PreflightFailed => "PreflightFailed",
            EventReason::PreflightPassed => "PreflightPassed",
        }
    }
}

/// Decides what to do with `rollout` at `now`, given what was observed so far.
pub fn decide(rollout: &ModelRollout, now: Timestamp, observed: &Observations) -> Outcome {
    let mut walk = Walk::new(rollout, now, observed);
    match walk.run() {
        Err(need) => Outcome::Need(need),
        Ok(()) => Outcome::Decided(Box::new(walk.finish())),
    }
}

/// A short stable hash of both arms' model and endpoint (`status.armsHash`).
pub fn arms_hash(rollout: &ModelRollout) -> String {
    let spec = &rollout.spec;
    let hash = crate::fnv64([
        spec.stable.model.as_str(),
        &spec.stable.endpoint,
        &spec.canary.model,
        &spec.canary.endpoint,
    ]);
    format!("{hash:016x}")
}

// === impl Walk ===

/// One decision in the making: the rollout, the status being built and the Events so far.
struct Walk<'a> {
    rollout: &'a ModelRollout,
    now: Timestamp,
    observed: &'a Observations,
    status: ModelRolloutStatus,
    events: Vec<EventNote>,
    requeue: Option<StdDuration>,
    write_routing: bool,
    /// Why the rollout holds its weight, for phase `Paused` (None: not paused).
    pause_reason: Option<(Reason, String)>,
    /// Why a pending rollout waits at weight 0: its preflight failed (reason, message).
    preflight_failed: Option<(Reason, String)>,
}

/// Where analysis left the walk.
enum Analysed {
    /// Nothing to judge at this moment (not due, or weight 0).
    NotDue,
    /// Judged: hold the step (inconclusive, within limits but not clearly healthy, error).
    Held,
    /// Judged clearly healthy: a `setWeight` step may complete.
    Healthy,
    /// The rollout went back to stable.
    RolledBack,
}

impl<'a> Walk<'a> {
    fn new(rollout: &'a ModelRollout, now: Timestamp, observed: &'a Observations) -> Self {
        Walk {
            rollout,
            now,
            observed,
            status: rollout.status.clone().unwrap_or_default(),
            events: Vec::new(),
            requeue: None,
            write_routing: true,
            pause_reason: None,
            preflight_failed: None,
        }
    }

    fn run(&mut self) -> Flow {
        self.status.observed_generation = self.rollout.metadata.generation;
        if let Err(invalid) = self.rollout.validate() {
            self.invalid_spec(invalid.to_string());
            return Ok(());
        }
        if self.rollout.spec.analysis.prometheus.address.is_none() {
            self.invalid_spec(NO_PROMETHEUS.to_owned());
            return Ok(());
        }
        self.valid_spec();
        self.start_or_restart();
        self.manual_requests();
        if self.phase().is_terminal() {
            // A finished rollout only makes sure the proxies got its final weight.
            self.routing_applied()?;
            return Ok(());
        }
        self.spec_paused();
        if self.phase() == Phase::Pending && !self.preflight()? {
            // Weight 0 is still written: the proxies serve the alias from stable meanwhile.
            return Ok(());
        }
        if !self.routing_applied()? {
            return Ok(());
        }
        if self.phase() == Phase::Pending {
            // The proxies know the rollout (at 0 %): traffic may start moving.
            self.set_phase(Phase::Progressing);
            self.enter_step(0, false);
            if !self.routing_applied()? {
                return Ok(());
            }
        }
        let analysed = self.analysis()?;
        if matches!(analysed, Analysed::RolledBack) || self.phase().is_terminal() {
            return Ok(());
        }
        self.steps(matches!(analysed, Analysed::Healthy))
    }

    fn finish(mut self) -> Decision {
        let phase = self.phase();
        self.budget_pause();
        if !phase.is_terminal() && phase != Phase::Pending {
            match self.pause_reason.clone() {
                Some((reason, message)) => {
                    self.set_phase(Phase::Paused);
                    self.condition(ConditionType::Progressing, true, reason, &message);
                }
                None => {
                    self.set_phase(Phase::Progressing);
                    let message = self.step_text();
                    self.condition(
                        ConditionType::Progressing,
                        true,
                        Reason::StepAdvanced,
                        &message,
                    );
                }
            }
        }
        if phase == Phase::Pending {
            match self.preflight_failed.clone() {
                Some((reason, message)) => {
                    self.condition(ConditionType::Progressing, false, reason, &message);
                }
                None => {
                    let message = "waiting for the proxies to load the rollout at weight 0%";
                    self.condition(
                        ConditionType::Progressing,
                        true,
                        Reason::RolloutStarted,
                        message,
                    );
                }
            }
        }
        if !self.condition_true(ConditionType::InvalidSpec) {
            let applied = self.condition_true(ConditionType::RoutingApplied);
            let (reason, message) = if applied {
                (Reason::RoutingUpdated, format!("the proxies serve {}% canary", self.weight()))
            } else {
                (Reason::WaitingForProxies, "waiting for the proxies to report the weight".into())
            };
            self.condition(ConditionType::Ready, applied, reason, &message);
            let summary = self.summary();
            self.status.message = Some(summary);
        }
        Decision {
            status: self.status,
            write_routing: self.write_routing,
            events: self.events,
            requeue_after: self.requeue,
        }
    }

    // --- 1. the spec ---

    fn invalid_spec(&mut self, message: String) {
        self.write_routing = false;
        let already = self.condition_true(ConditionType::InvalidSpec)
            && self.condition_message(ConditionType::InvalidSpec) == Some(message.as_str());
        if !already {
            self.event(EventType::Warning, EventReason::InvalidSpec, message.clone());
        }
        self.condition(ConditionType::InvalidSpec, true, Reason::InvalidSpec, &message);
        self.condition(ConditionType::Ready, false, Reason::InvalidSpec, &message);
        self.condition(ConditionType::Progressing, false, Reason::InvalidSpec, &message);
        self.set_phase(Phase::Failed);
        self.status.message = Some(format!("invalid spec, traffic untouched: {message}"));
    }

    fn valid_spec(&mut self) {
        if self.condition_true(ConditionType::InvalidSpec) {
            // Fixed: carry on from what the status holds (a finished rollout stays finished).
            let phase = if self.condition_true(ConditionType::RolledBack) {
                Phase::RolledBack
            } else if self.condition_true(ConditionType::Promoted) {
                Phase::Promoted
            } else if self.status.current_step_index.is_some() {
                Phase::Progressing
            } else {
                Phase::Pending
            };
            self.set_phase(phase);
        }
        self.condition(
            ConditionType::InvalidSpec,
            false,
            Reason::AnalysisPassed,
            "the spec is valid",
        );
    }

    fn start_or_restart(&mut self) {
        let hash = arms_hash(self.rollout);
        let spec = &self.rollout.spec;
        match self.status.arms_hash.clone() {
            None => {
                self.status.arms_hash = Some(hash);
                self.reset_to_start();
                // Annotations present at creation are not requests to act on.
                self.status.handled_annotations =
                    Some(HandledAnnotations { paused: Some(false), ..self.current_annotations() });
                let note = format!(
                    "rollout of {} from {} to {} started: weight 0% until the proxies report it",
                    spec.model, spec.stable.model, spec.canary.model
                );
                self.event(EventType::Normal, EventReason::RolloutStarted, note);
            }
            Some(old) if old != hash => {
                self.status.arms_hash = Some(hash);
                self.reset_to_start();
                let note = format!(
                    "an arm changed (stable {} at {}, canary {} at {}): starting over from step 1 at weight 0%",
                    spec.stable.model,
                    spec.stable.endpoint,
                    spec.canary.model,
                    spec.canary.endpoint
                );
                self.event(EventType::Normal, EventReason::SpecChanged, note);
            }
            Some(_) => {}
        }
    }

    /// Back to the beginning: weight 0, no step yet, no failures, no verdicts.
    fn reset_to_start(&mut self) {
        self.set_phase(Phase::Pending);
        self.status.current_step_index = None;
        self.status.step_started_at = None;
        self.status.consecutive_failures = Some(0);
        self.status.last_analysis = None;
        self.status.history.clear();
        self.status.sequential = None;
        self.status.preflight = None;
        self.set_weight(0);
        let message = "the rollout starts from its first step";
        self.condition(ConditionType::Promoted, false, Reason::RolloutStarted, message);
        self.condition(ConditionType::RolledBack, false, Reason::RolloutStarted, message);
        self.status.conditions.retain(|c| c.type_ != ConditionType::AnalysisHealthy.as_str());
        self.status.conditions.retain(|c| c.type_ != ConditionType::WithinBudget.as_str());
        let message = "the arms' endpoints are checked before the first weight above 0%";
        self.condition_unknown(ConditionType::PreflightPassed, Reason::PreflightPending, message);
    }

    // --- 3. manual requests ---

    fn current_annotations(&self) -> HandledAnnotations {
        let annotation = |key: &str| self.rollout.annotations().get(key).cloned();
        HandledAnnotations {
            promote: annotation(ANNOTATION_PROMOTE),
            abort: annotation(ANNOTATION_ABORT),
            retry: annotation(ANNOTATION_RETRY),
            promote_full: annotation(ANNOTATION_PROMOTE_FULL),
            paused: None,
        }
    }

    fn manual_requests(&mut self) {
        let current = self.current_annotations();
        let handled = self.status.handled_annotations.clone().unwrap_or_default();
        let fresh = |now: &Option<String>, before: &Option<String>| {
            now.as_ref().filter(|value| Some(*value) != before.as_ref()).cloned()
        };
        let abort = fresh(&current.abort, &handled.abort);
        let retry = fresh(&current.retry, &handled.retry);
        let full = fresh(&current.promote_full, &handled.promote_full);
        let promote = fresh(&current.promote, &handled.promote);
        // Recorded before acting: each value is acted on once, even if the status write that
        // follows is the only trace of it.
        self.status.handled_annotations =
            Some(HandledAnnotations { paused: handled.paused, ..current });

        if let Some(value) = abort {
            if self.phase().is_terminal() {
                self.ignored("abort", &value);
            } else {
                let message = format!("aborted by request ({value}): all traffic back on stable");
                self.event(EventType::Warning, EventReason::ManualAbort, message.clone());
                self.roll_back(Reason::ManualAbort, message);
            }
        }
        if let Some(value) = retry {
            let preflight_failing = self.phase() == Phase::Pending
                && self.find(ConditionType::PreflightPassed).is_some_and(|c| c.status == "False");
            if preflight_failing {
                let note = format!("retry requested ({value}): checking the endpoints again now");
                self.event(EventType::Normal, EventReason::ManualRetry, note);
                if let Some(state) = &mut self.status.preflight {
                    state.failures = 0;
                }
            } else if matches!(self.phase(), Phase::RolledBack | Phase::Failed) {
                let note =
                    format!("retry requested ({value}): starting over from step 1 at weight 0%");
                self.event(EventType::Normal, EventReason::ManualRetry, note);
                self.reset_to_start();
            } else {
                self.ignored("retry", &value);
            }
        }
        if let Some(value) = full {
            if self.phase().is_terminal() {
                self.ignored("promote --full", &value);
            } else {
                let note =
                    format!("full promotion requested ({value}): skipping the remaining steps");
                self.event(EventType::Normal, EventReason::ManualPromote, note);
                self.promote(Reason::ManualPromote);
            }
        }
        if let Some(value) = promote {
            if self.phase().is_terminal() {
                self.ignored("promote", &value);
            } else {
                let next = self.status.current_step_index.map_or(0, |i| i + 1);
                let note = format!(
                    "promotion requested ({value}): going to step {}/{}",
                    next + 1,
                    self.steps_len()
                );
                self.event(EventType::Normal, EventReason::ManualPromote, note);
                self.set_phase(Phase::Progressing);
                self.enter_step(usize::try_from(next).unwrap_or(0), false);
            }
        }
    }

    fn ignored(&mut self, what: &str, value: &str) {
        let note = format!("{what} request ({value}) ignored: the rollout is {}", self.phase());
        self.event(EventType::Warning, EventReason::RequestIgnored, note);
    }

    fn spec_paused(&mut self) {
        let paused = self.rollout.spec.paused;
        let mut handled = self.status.handled_annotations.clone().unwrap_or_default();
        if paused != handled.paused.unwrap_or(false) {
            let (reason, note) = if paused {
                (
                    EventReason::Paused,
                    format!("spec.paused is true: holding at weight {}%", self.weight()),
                )
            } else {
                (
                    EventReason::Resumed,
                    format!("spec.paused is false: going on from weight {}%", self.weight()),
                )
            };
            self.event(EventType::Normal, reason, note);
        }
        handled.paused = Some(paused);
        self.status.handled_annotations = Some(handled);
        if paused {
            let message = "spec.paused is true: the weight holds; set it to false to go on";
            self.pause_reason = Some((Reason::PausedBySpec, message.to_owned()));
        }
    }

    // --- 4. preflight, then the proxies ---

    /// True once both arms' endpoints passed the preflight for this start of the rollout;
    /// asks for a check when one is due, else waits for it (with backoff after failures).
    fn preflight(&mut self) -> Flow<bool> {
        if self.condition_true(ConditionType::PreflightPassed) {
            return Ok(true);
        }
        let failures = self.status.preflight.as_ref().map_or(0, |p| p.failures);
        let last = self.find(ConditionType::PreflightPassed).filter(|c| c.status == "False");
        if let (Some(state), Some(last)) = (&self.status.preflight, last)
            && failures > 0
        {
            let due = add(state.checked_at.0, preflight::backoff(failures.unsigned_abs()));
            if due > self.now {
                let reason = last.reason.parse().unwrap_or(Reason::PreflightPending);
                self.preflight_failed = Some((reason, last.message.clone()));
                self.wait_for_preflight(due);
                return Ok(false);
            }
        }
        let Some(report) = &self.observed.preflight else {
            return Err(Need::Preflight);
        };
        let verdict = preflight::verdict(report);
        let before = self.find(ConditionType::PreflightPassed).map(|c| c.reason.clone());
        let failures = if verdict.passed { 0 } else { failures.saturating_add(1) };
        self.status.preflight = Some(PreflightState { checked_at: Time(self.now), failures });
        if verdict.passed {
            if before.as_deref().is_some_and(|r| r != Reason::PreflightPending.as_str()) {
                let note = format!("preflight passed: {}", verdict.message);
                self.event(EventType::Normal, EventReason::PreflightPassed, note);
            }
            self.condition(ConditionType::PreflightPassed, true, verdict.reason, &verdict.message);
            return Ok(true);
        }
        if before.as_deref() != Some(verdict.reason.as_str()) {
            let note = format!("preflight failed, traffic stays on stable: {}", verdict.message);
            self.event(EventType::Warning, EventReason::PreflightFailed, note);
        }
        let wait = preflight::backoff(failures.unsigned_abs());
        let message = format!(
            "{}; checking again in {}",
            verdict.message,
            modelrollout_api::Duration::from(wait)
        );
        self.condition(ConditionType::PreflightPassed, false, verdict.reason, &message);
        self.preflight_failed = Some((verdict.reason, message));
        self.wait_for_preflight(add(self.now, wait));
        Ok(false)
    }

    /// The next look is the next preflight check: nothing else can move before it (the
    /// proxies' report at 0 % is only needed once traffic may move).
    fn wait_for_preflight(&mut self, due: Timestamp) {
        self.requeue = None;
        self.requeue_at(due);
    }

    /// True once every proxy reports the current weight (asks for the proxy weights until then).
    fn routing_applied(&mut self) -> Flow<bool> {
        if self.condition_true(ConditionType::RoutingApplied) {
            return Ok(true);
        }
        let Some(report) = &self.observed.proxies else {
            return Err(Need::ProxyWeights);
        };
        let weight = self.weight();
        match report {
            Err(error) => {
                let message = format!("cannot confirm that the proxies use {weight}%: {error}");
                self.condition_unknown(
                    ConditionType::RoutingApplied,
                    Reason::AnalysisError,
                    &message,
                );
                if !self.phase().is_terminal() {
                    self.analysis_error_policy(&message);
                }
                self.requeue_in(self.interval());
                Ok(false)
            }
            Ok(instances) => match proxies_agree(instances, weight) {
                Ok(count) => {
                    let written = self.condition_time(ConditionType::RoutingApplied);
                    let took = written
                        .and_then(|t| StdDuration::try_from(self.now.duration_since(t)).ok())
                        .map(|d| format!(", {:.1}s after the routing write", d.as_secs_f64()))
                        .unwrap_or_default();
                    let message = format!("{count} proxy instance(s) report {weight}%{took}");
                    self.condition(
                        ConditionType::RoutingApplied,
                        true,
                        Reason::RoutingUpdated,
                        &message,
                    );
                    Ok(true)
                }
                Err(message) => {
                    self.waiting_for_proxies(&message);
                    Ok(false)
                }
            },
        }
    }

    /// The proxies do not all report the current weight yet: look again soon.
    fn waiting_for_proxies(&mut self, message: &str) {
        self.condition(ConditionType::RoutingApplied, false, Reason::WaitingForProxies, message);
        self.requeue_in(PROXY_POLL);
    }

    // --- 5. analysis ---

    fn analysis(&mut self) -> Flow<Analysed> {
        if self.weight() == 0 {
            return Ok(Analysed::NotDue);
        }
        let Some(applied_at) = self.condition_time(ConditionType::RoutingApplied) else {
            return Ok(Analysed::NotDue);
        };
        let interval = self.interval();
        let from = match self.status.last_analysis.as_ref().map(|a| a.time.0) {
            Some(last) if last > applied_at => last,
            _ => applied_at,
        };
        let due = add(from, interval);
        if self.now < due {
            self.requeue_at(due);
            return Ok(Analysed::NotDue);
        }
        // The proxies must still agree (a replica may have restarted with an old table).
        let Some(report) = &self.observed.proxies else {
            return Err(Need::ProxyWeights);
        };
        if let Ok(instances) = report
            && let Err(message) = proxies_agree(instances, self.weight())
        {
            self.waiting_for_proxies(&message);
            return Ok(Analysed::Held);
        }
        // The range never reaches back past the moment the proxies applied this weight.
        let since_applied =
            StdDuration::try_from(self.now.duration_since(applied_at)).unwrap_or_default();
        let window = self.rollout.spec.analysis.window.as_std();
        let range = StdDuration::from_secs(since_applied.min(window).as_secs().max(1));
        let observed = self.observed;
        let Some(measured) = &observed.measurements else {
            let spec = &self.rollout.spec;
            let custom = spec.analysis.metrics.iter().map(|m| {
                let query =
                    bind_models(&m.query, &spec.model, &spec.stable.model, &spec.canary.model);
                (m.name.clone(), query)
            });
            let custom = custom.collect();
            return Err(Need::Measurements(MeasureSpec { range, custom }));
        };
        let tokens = match (crate::guards::wants_tokens(&self.rollout.spec), &observed.tokens) {
            (false, _) => None,
            (true, None) => return Err(Need::Tokens(range)),
            (true, Some(tokens)) => Some(tokens),
        };
        self.requeue_in(interval);
        Ok(match (measured, tokens) {
            (Err(error), _) | (Ok(_), Some(Err(error))) => {
                self.record_error(error);
                if self.phase().is_terminal() { Analysed::RolledBack } else { Analysed::Held }
            }
            (Ok(measurements), tokens) => {
                let tokens = tokens.and_then(|t| t.as_ref().ok());
                let analysed = match self.rollout.spec.analysis.method {
                    AnalysisMethod::Threshold => self.record_judgement(measurements, None, tokens),
                    AnalysisMethod::Sequential => {
                        self.sequential(measurements, applied_at, tokens)?
                    }
                };
                match analysed {
                    Analysed::RolledBack => Analysed::RolledBack,
                    analysed => self.token_budget(tokens, analysed),
                }
            }
        })
    }

    /// The sequential judge: adds the cumulative counts since `applied_at` to the evidence in
    /// status, then judges with the thresholds as hard limits on top.
    fn sequential(
        &mut self,
        measurements: &Measurements,
        applied_at: Timestamp,
        tokens: Option<&TokenSample>,
    ) -> Flow<Analysed> {
        let spec = &self.rollout.spec.analysis;
        let stored = self.status.sequential.clone();
        let stable = &measurements.stable;
        let bounds = sequential::boundaries(
            spec,
            stored.as_ref(),
            stable.latency_p95_seconds,
            stable.ttft_p95_seconds,
        );
        let Some(tally) = &self.observed.tally else {
            return Err(Need::Tally(sequential::tally_spec(applied_at, self.now, bounds)));
        };
        match tally {
            Err(error) => {
                let error = error.clone();
                self.record_error(&error);
                Ok(if self.phase().is_terminal() { Analysed::RolledBack } else { Analysed::Held })
            }
            Ok(tally) => {
                let evidence =
                    sequential::observe(spec, stored.as_ref(), applied_at, bounds, tally);
                self.status.sequential = Some(evidence.state.clone());
                Ok(self.record_judgement(measurements, Some(&evidence), tokens))
            }
        }
    }

    fn record_error(&mut self, error: &str) {
        let message = format!("analysis could not run: {error}");
        let before = self.status.last_analysis.as_ref().map(|a| a.verdict);
        self.status.last_analysis = Some(AnalysisResult {
            time: Time(self.now),
            verdict: Verdict::Error,
            canary: ArmMeasurements::default(),
            stable: ArmMeasurements::default(),
            metrics: Vec::new(),
            failed_checks: Vec::new(),
            message: Some(message.clone()),
            evidence: Vec::new(),
            cost_ratio: None,
        });
        self.push_history(Verdict::Error, None);
        self.condition_unknown(ConditionType::AnalysisHealthy, Reason::AnalysisError, &message);
        if before != Some(Verdict::Error) {
            self.event(EventType::Warning, EventReason::AnalysisError, message.clone());
        }
        self.analysis_error_policy(&message);
    }

    /// spec.analysis.onAnalysisError: hold (phase Paused) or roll back.
    fn analysis_error_policy(&mut self, message: &str) {
        match self.rollout.spec.analysis.on_analysis_error {
            OnAnalysisError::Pause => {
                let text = format!("{message}; holding the weight until Prometheus answers");
                self.pause_reason = Some((Reason::AnalysisError, text));
            }
            OnAnalysisError::Rollback => {
                let text = format!("{message}; spec.analysis.onAnalysisError is Rollback");
                self.roll_back(Reason::AnalysisError, text);
            }
        }
    }

    fn record_judgement(
        &mut self,
        measurements: &Measurements,
        evidence: Option<&Evidence>,
        tokens: Option<&TokenSample>,
    ) -> Analysed {
        let spec = &self.rollout.spec.analysis;
        let mut judgement = match evidence {
            None => judge(spec, measurements),
            Some(evidence) => sequential::combine(spec, judge(spec, measurements), evidence),
        };
        let costs = tokens.map(|t| crate::guards::costs(&self.rollout.spec, t));
        if let Some(costs) = &costs {
            crate::guards::judge_cost(&mut judgement, spec, costs, measurements.canary.requests);
        }
        // Anytime-valid evidence needs no repeat: one rejection rolls back.
        let regressed = evidence.is_some_and(|e| e.regression.is_some());
        let before = self.status.last_analysis.as_ref().map(|a| a.verdict);
        let failures = self.status.consecutive_failures.unwrap_or(0);
        let failures = if judgement.verdict == Verdict::Fail {
            failures + 1
        } else if judgement.verdict == Verdict::Pass {
            0
        } else {
            failures
        };
        self.status.consecutive_failures = Some(failures);
        let mut result = analysis_result(self.now, measurements, &judgement);
        result.evidence = evidence.map(|e| e.metrics.clone()).unwrap_or_default();
        if let (Some(tokens), Some(costs)) = (tokens, costs) {
            budget::record_tokens(&mut result, tokens, &costs);
        }
        self.status.last_analysis = Some(result);
        self.push_history(judgement.verdict, Some(measurements));
        let message = judgement.message.clone();
        match judgement.verdict {
            Verdict::Pass => {
                self.condition(
                    ConditionType::AnalysisHealthy,
                    true,
                    Reason::AnalysisPassed,
                    &message,
                );
            }
            Verdict::Inconclusive => {
                let reason = judgement.reason.unwrap_or(Reason::InsufficientRequests);
                self.condition_unknown(ConditionType::AnalysisHealthy, reason, &message);
                if before != Some(Verdict::Inconclusive) {
                    self.event(
                        EventType::Normal,
                        EventReason::AnalysisInconclusive,
                        message.clone(),
                    );
                }
            }
            Verdict::Fail | Verdict::Error => {
                let reason = judgement.reason.unwrap_or(Reason::ErrorRateExceeded);
                let limit = spec.failure_limit;
                let text = format!("{message} ({failures}/{limit} consecutive failed checks)");
                self.condition(ConditionType::AnalysisHealthy, false, reason, &text);
                self.event(EventType::Warning, EventReason::AnalysisFailed, text);
                if regressed {
                    let why = judgement.failed.first().map_or(message, |c| c.message.clone());
                    self.roll_back(reason, why);
                    return Analysed::RolledBack;
                }
                if failures >= limit {
                    let checks = if failures == 1 {
                        "1 check".to_owned()
                    } else {
                        format!("{failures} consecutive checks")
                    };
                    // The first breach says why; lastAnalysis keeps all of them.
                    let why = judgement.failed.first().map_or(message, |c| c.message.clone());
                    self.roll_back(reason, format!("{why} in {checks}"));
                    return Analysed::RolledBack;
                }
            }
        }
        if judgement.verdict == Verdict::Pass && judgement.advance {
            Analysed::Healthy
        } else {
            Analysed::Held
        }
    }

    fn push_history(&mut self, verdict: Verdict, measurements: Option<&Measurements>) {
        let point = AnalysisPoint {
            time: Time(self.now),
            canary_weight: i32::from(self.weight()),
            verdict,
            canary_error_rate: measurements.and_then(|m| m.canary.error_rate()),
            stable_error_rate: measurements.and_then(|m| m.stable.error_rate()),
            canary_latency_p95_seconds: measurements.and_then(|m| m.canary.latency_p95_seconds),
            stable_latency_p95_seconds: measurements.and_then(|m| m.stable.latency_p95_seconds),
        };
        let history = &mut self.status.history;
        history.push(point);
        if history.len() > HISTORY_LIMIT {
            history.drain(..history.len() - HISTORY_LIMIT);
        }
    }

    // --- 6. the steps ---

    /// Completes steps while they are done: a healthy `setWeight`, an expired pause.
    fn steps(&mut self, healthy: bool) -> Flow {
        let mut healthy = healthy;
        if self.over_budget() {
            // Held until the canary fits its token budget (at this step and the next).
            return Ok(());
        }
        // Each pass either returns or moves to the next step, so this ends.
        for _ in 0..=self.steps_len() {
            if self.phase().is_terminal() {
                return Ok(());
            }
            let Some(index) = self.step_index() else {
                return Ok(());
            };
            let Some(action) = self.rollout.spec.strategy.steps.get(index).and_then(|s| s.action())
            else {
                self.promote(Reason::RolloutCompleted);
                return Ok(());
            };
            if self.rollout.spec.paused {
                return Ok(());
            }
            match action {
                StepAction::SetWeight(weight) if weight != self.weight() => {
                    // The steps were edited under a running rollout: apply the step's weight.
                    self.set_weight(weight);
                    self.requeue_in(PROXY_POLL);
                    return Ok(());
                }
                StepAction::SetWeight(100) => {
                    self.promote(Reason::RolloutCompleted);
                    return Ok(());
                }
                StepAction::SetWeight(_) => {
                    if !healthy {
                        return Ok(());
                    }
                }
                StepAction::PauseFor(duration) => {
                    let started = self.status.step_started_at.as_ref().map_or(self.now, |t| t.0);
                    let ends = add(started, duration.as_std());
                    if self.now < ends {
                        self.requeue_at(ends);
                        return Ok(());
                    }
                }
                StepAction::PauseUntilPromoted => {
                    let message = format!(
                        "step {}/{} waits for a promote: kubectl modelrollout promote {}",
                        index + 1,
                        self.steps_len(),
                        self.rollout.name_any()
                    );
                    self.pause_reason = Some((Reason::WaitingForPromotion, message));
                    return Ok(());
                }
            }
            self.enter_step(index + 1, true);
            healthy = false;
            if !self.routing_applied()? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Moves to step `index` (past the last one: promotion) and applies its weight.
    fn enter_step(&mut self, index: usize, announce: bool) {
        if index >= self.steps_len() {
            self.promote(Reason::RolloutCompleted);
            return;
        }
        self.status.current_step_index = i32::try_from(index).ok();
        self.status.step_started_at = Some(Time(self.now));
        self.status.consecutive_failures = Some(0);
        let action = self.rollout.spec.strategy.steps[index].action();
        if let Some(StepAction::SetWeight(weight)) = action {
            if weight == 100 {
                self.promote(Reason::RolloutCompleted);
                return;
            }
            self.set_weight(weight);
        }
        if announce {
            let what = match action {
                Some(StepAction::SetWeight(w)) => format!("canary weight {w}%"),
                Some(StepAction::PauseFor(d)) => format!("pause for {d} at {}%", self.weight()),
                _ => format!("pause at {}% until promoted", self.weight()),
            };
            let note = format!("step {}/{}: {what}", index + 1, self.steps_len());
            self.event(EventType::Normal, EventReason::StepAdvanced, note);
        }
    }

    fn promote(&mut self, reason: Reason) {
        self.set_weight(100);
        self.set_phase(Phase::Promoted);
        self.status.current_step_index = i32::try_from(self.steps_len()).ok();
        self.status.step_started_at = Some(Time(self.now));
        let message = format!(
            "{} serves all traffic of {}; {} is no longer used",
            self.rollout.spec.canary.model, self.rollout.spec.model, self.rollout.spec.stable.model
        );
        self.condition(ConditionType::Promoted, true, reason, &message);
        self.condition(ConditionType::RolledBack, false, reason, &message);
        self.condition(ConditionType::Progressing, false, reason, &message);
        self.event(EventType::Normal, EventReason::Promoted, message);
    }

    fn roll_back(&mut self, reason: Reason, message: String) {
        self.set_weight(0);
        self.set_phase(Phase::RolledBack);
        self.pause_reason = None;
        self.condition(ConditionType::RolledBack, true, reason, &message);
        self.condition(ConditionType::Promoted, false, reason, &message);
        self.condition(ConditionType::Progressing, false, reason, &message);
        let note = format!("all traffic back on {}: {message}", self.rollout.spec.stable.model);
        self.event(EventType::Warning, EventReason::RolledBack, note);
    }

    // --- small helpers ---

    fn phase(&self) -> Phase {
        self.status.phase.unwrap_or_default()
    }

    fn set_phase(&mut self, phase: Phase) {
        self.status.phase = Some(phase);
    }

    fn weight(&self) -> u8 {
        self.status.canary_weight.and_then(|w| u8::try_from(w).ok()).unwrap_or(0)
    }

    /// Sets the canary weight; a new weight is not applied until the proxies report it.
    fn set_weight(&mut self, weight: u8) {
        if self.status.canary_weight == Some(i32::from(weight))
            && self.find(ConditionType::RoutingApplied).is_some()
        {
            return;
        }
        self.status.canary_weight = Some(i32::from(weight));
        let message = format!("routing written at {weight}%; waiting for every proxy to report it");
        self.condition(ConditionType::RoutingApplied, false, Reason::WaitingForProxies, &message);
        self.requeue_in(PROXY_POLL);
    }

    fn step_index(&self) -> Option<usize> {
        self.status.current_step_index.and_then(|i| usize::try_from(i).ok())
    }

    fn steps_len(&self) -> usize {
        self.rollout.spec.strategy.steps.len()
    }

    fn interval(&self) -> StdDuration {
        self.rollout.spec.analysis.interval.as_std()
    }

    fn requeue_in(&mut self, after: StdDuration) {
        let after = after.max(StdDuration::from_millis(100));
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn requeue_at(&mut self, at: Timestamp) {
        let after = StdDuration::try_from(at.duration_since(self.now)).unwrap_or_default();
        self.requeue_in(after);
    }

    fn event(&mut self, kind: EventType, reason: EventReason, note: String) {
        self.events.push(EventNote { kind, reason, note });
    }

    fn find(&self, kind: ConditionType) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.type_ == kind.as_str())
    }

    fn condition_true(&self, kind: ConditionType) -> bool {
        self.find(kind).is_some_and(|c| c.status == "True")
    }

    fn condition_message(&self, kind: ConditionType) -> Option<&str> {
        self.find(kind).map(|c| c.message.as_str())
    }

    fn condition_time(&self, kind: ConditionType) -> Option<Timestamp> {
        self.find(kind).map(|c| c.last_transition_time.0)
    }

    fn condition(&mut self, kind: ConditionType, status: bool, reason: Reason, message: &str) {
        let status = if status { "True" } else { "False" };
        self.set_condition(kind, status, reason, message);
    }

    fn condition_unknown(&mut self, kind: ConditionType, reason: Reason, message: &str) {
        self.set_condition(kind, "Unknown", reason, message);
    }

    /// Sets a condition; its transition time moves only when its status changes.
    fn set_condition(&mut self, kind: ConditionType, status: &str, reason: Reason, message: &str) {
        let generation = self.rollout.metadata.generation;
        let now = Time(self.now);
        let conditions = &mut self.status.conditions;
        match conditions.iter_mut().find(|c| c.type_ == kind.as_str()) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                    c.status = status.to_owned();
                }
                c.reason = reason.as_str().to_owned();
                c.message = message.to_owned();
                c.observed_generation = generation;
            }
            None => conditions.push(Condition {
                type_: kind.as_str().to_owned(),
                status: status.to_owned(),
                reason: reason.as_str().to_owned(),
                message: message.to_owned(),
                last_transition_time: now,
                observed_generation: generation,
            }),
        }
    }

    fn step_text(&self) -> String {
        match self.step_index() {
            Some(index) => {
                format!("step {}/{}: weight {}%", index + 1, self.steps_len(), self.weight())
            }
            None => format!("weight {}%", self.weight()),
        }
    }

    /// The one line of `status.message`.
    fn summary(&self) -> String {
        let phase = self.phase();
        let mut text = match phase {
            Phase::Pending => match &self.preflight_failed {
                Some((_, why)) => format!("waiting at 0%, preflight failed: {why}"),
                None => "waiting for the proxies to load the rollout at 0%".to_owned(),
            },
            Phase::Promoted => format!("promoted: {} serves 100%", self.rollout.spec.canary.model),
            Phase::RolledBack => {
                let why = self.condition_message(ConditionType::RolledBack).unwrap_or_default();
                format!("rolled back to {}: {why}", self.rollout.spec.stable.model)
            }
            Phase::Failed => "failed: see the conditions".to_owned(),
            Phase::Progressing | Phase::Paused => self.step_text(),
        };
        if let Some((_, why)) = &self.pause_reason {
            text.push_str(&format!(", paused: {why}"));
        } else if !phase.is_terminal() && !self.condition_true(ConditionType::RoutingApplied) {
            text.push_str(", waiting for the proxies to report the weight");
        } else if !phase.is_terminal() && self.weight() > 0 {
            // A fixed phrase, not a countdown: a status that changed on every look would
            // trigger a watch event, and so another look, for ever.
            text.push_str(&format!(", checking every {}", self.rollout.spec.analysis.interval));
        }
        text
    }
}

/// `Ok(instances)` when every proxy reports `weight`, else why not (in words).
fn proxies_agree(instances: &[ProxyWeight], weight: u8) -> Result<usize, String> {
    if instances.is_empty() {
        return Err(format!(
            "no proxy reports this rollout yet (gray_release_canary_weight): check that \
             Prometheus scrapes the proxies and that they read the routing ConfigMap; waiting for {weight}%"
        ));
    }
    let behind: Vec<String> = instances
        .iter()
        .filter(|p| (p.weight - f64::from(weight)).abs() > 0.5)
        .map(|p| format!("{} at {}%", p.instance, p.weight))
        .collect();
    if behind.is_empty() {
        Ok(instances.len())
    } else {
        Err(format!(
            "waiting for {} of {} proxy instance(s) to report {weight}%: {}",
            behind.len(),
            instances.len(),
            behind.join(", ")
        ))
    }
}

fn add(at: Timestamp, duration: StdDuration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn arm_measurements(sample: &modelrollout_analysis::ArmSample) -> ArmMeasurements {
    ArmMeasurements {
        requests: sample.requests.round() as i64,
        error_rate: sample.error_rate(),
        latency_p95_seconds: sample.latency_p95_seconds,
        time_to_first_token_p95_seconds: sample.ttft_p95_seconds,
        tokens_per_minute: None,
        cost_per_1k_requests: None,
    }
}

fn analysis_result(now: Timestamp, m: &Measurements, judgement: &Judgement) -> AnalysisResult {
    AnalysisResult {
        time: Time(now),
        verdict: judgement.verdict,
        canary: arm_measurements(&m.canary),
        stable: arm_measurements(&m.stable),
        metrics: m
            .custom
            .iter()
            .map(|c| MetricValue { name: c.name.clone(), value: c.value.as_ref().ok().copied() })
            .collect(),
        failed_checks: judgement.failed.iter().map(FailedCheck::clone).collect(),
        message: Some(judgement.message.clone()),
        evidence: Vec::new(),
        cost_ratio: None,
    }
}

mod budget;
#[cfg(test)]
mod tests;
