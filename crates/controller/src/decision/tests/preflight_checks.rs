//! The preflight in the walk: no weight above 0 until both endpoints pass, a retry with
//! backoff, an Event per change of verdict, and a fresh check on every start.

use super::*;

fn refused() -> crate::preflight::Report {
    preflight_answers(Answer::Refused(401), Answer::Models(vec!["gpt-4.1".into()]))
}

/// A new rollout is checked once; with both endpoints serving their model it walks on,
/// and the pass needs no Event of its own.
#[test]
fn a_passing_preflight_lets_the_first_step_start() {
    let mut h = Harness::new();
    h.reconcile();
    assert_eq!(h.preflights, 1);
    let passed = h.condition(ConditionType::PreflightPassed);
    assert_eq!((passed.status.as_str(), passed.reason.as_str()), ("True", "EndpointsReady"));
    assert!(
        passed
            .message
            .contains("canary endpoint http://canary.ai:8080/v1 serves claude-sonnet-4.5")
    );
    h.after(1); // proxies at 0 -> step 1
    assert_eq!((h.phase(), h.weight()), (Phase::Progressing, 5));
    h.run(10, 3);
    assert_eq!(h.preflights, 1, "checked once per start, not on every look");
    assert_eq!(h.count(EventReason::PreflightPassed), 0);
    assert_eq!(h.count(EventReason::PreflightFailed), 0);
}

/// A refused key holds the rollout Pending at weight 0 (routing still written at 0), with the
/// endpoint and the Secret key named, one Warning Event, and retries 5s, 10s, 20s later.
#[test]
fn a_refused_key_holds_at_zero_and_retries_with_backoff() {
    let mut h = Harness::new();
    h.preflight = refused();
    let d = h.reconcile();
    assert!(d.write_routing);
    assert_eq!(d.requeue_after, Some(StdDuration::from_secs(5)));
    assert_eq!((h.phase(), h.weight(), h.step()), (Phase::Pending, 0, None));
    let failed = h.condition(ConditionType::PreflightPassed);
    assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("False", "Unauthorized"));
    assert_eq!(
        failed.message,
        "canary endpoint http://canary.ai:8080/v1 answered 401 with credential relay/api-key: \
         the key is missing, revoked or for another account; checking again in 5s"
    );
    let progressing = h.condition(ConditionType::Progressing);
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "Unauthorized")
    );
    assert!(
        h.status()
            .message
            .as_deref()
            .unwrap()
            .starts_with("waiting at 0%, preflight failed: canary endpoint")
    );
    assert_eq!(h.reasons(), ["RolloutStarted", "PreflightFailed"]);

    // Not due yet: no check, the same condition, a look when it is due.
    let d = h.after(2);
    assert_eq!(d.requeue_after, Some(StdDuration::from_secs(3)));
    assert_eq!(h.preflights, 1);
    assert_eq!(h.condition(ConditionType::PreflightPassed).reason, "Unauthorized");

    h.after(3);
    assert_eq!(h.preflights, 2);
    assert_eq!(h.status().preflight.as_ref().unwrap().failures, 2);
    assert!(h.condition(ConditionType::PreflightPassed).message.ends_with("checking again in 10s"));
    assert_eq!(h.count(EventReason::PreflightFailed), 1, "same verdict, no new Event");
    h.after(10);
    assert_eq!(h.last.as_ref().unwrap().requeue_after, Some(StdDuration::from_secs(20)));
    assert_eq!((h.phase(), h.weight()), (Phase::Pending, 0));
}

/// Once the key is fixed the rollout goes on by itself at the next check, with an Event.
#[test]
fn a_fixed_key_lets_the_rollout_go_on_by_itself() {
    let mut h = Harness::new();
    h.preflight = refused();
    h.reconcile();
    h.preflight = Harness::new().preflight;
    h.after(5);
    let passed = h.condition(ConditionType::PreflightPassed);
    assert_eq!(passed.status, "True");
    assert_eq!(h.status().preflight.as_ref().unwrap().failures, 0);
    assert_eq!(h.reasons(), ["RolloutStarted", "PreflightFailed", "PreflightPassed"]);
    h.after(1);
    assert_eq!((h.phase(), h.weight()), (Phase::Progressing, 5));
}

/// A different failure is a new verdict: a new Event.
#[test]
fn a_new_reason_is_a_new_event() {
    let mut h = Harness::new();
    h.preflight = refused();
    h.reconcile();
    h.preflight = preflight_answers(
        Answer::Models(vec!["claude-sonnet-4-5".into()]),
        Answer::Models(vec!["gpt-4.1".into()]),
    );
    h.after(5);
    let failed = h.condition(ConditionType::PreflightPassed);
    assert_eq!(failed.reason, "ModelNotFound");
    assert!(failed.message.contains("did you mean claude-sonnet-4-5?"), "{}", failed.message);
    assert_eq!(h.count(EventReason::PreflightFailed), 2);
}

/// The retry annotation on a failing preflight checks again at once, whatever the backoff.
#[test]
fn retry_checks_again_now() {
    let mut h = Harness::new();
    h.preflight = refused();
    h.run(1, 1);
    h.after(5);
    h.after(10);
    assert_eq!(h.preflights, 3);
    h.annotate(modelrollout_api::ANNOTATION_RETRY, "r1");
    h.after(1);
    assert_eq!(h.preflights, 4);
    assert_eq!(h.count(EventReason::ManualRetry), 1);
    assert_eq!(h.status().preflight.as_ref().unwrap().failures, 1);
}

/// A change of arm starts over, and so checks the endpoints again; the old verdict does not
/// carry over.
#[test]
fn an_arm_change_checks_again() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    assert_eq!(h.weight(), 5);
    h.rollout.spec.canary.model = "claude-opus-4".into();
    h.preflight = preflight_answers(
        Answer::Models(vec!["claude-sonnet-4.5".into()]),
        Answer::Models(vec!["gpt-4.1".into()]),
    );
    h.preflight.canary.model = "claude-opus-4".into();
    h.after(1);
    assert_eq!(h.preflights, 2);
    assert_eq!((h.phase(), h.weight()), (Phase::Pending, 0));
    assert_eq!(h.condition(ConditionType::PreflightPassed).reason, "ModelNotFound");
}

/// Rollouts already past Pending (made before the preflight existed) are not held by it.
#[test]
fn a_rollout_already_moving_is_not_checked() {
    let mut h = Harness::new();
    h.reconcile();
    h.after(1);
    h.rollout.status.as_mut().unwrap().conditions.retain(|c| c.type_ != "PreflightPassed");
    h.preflight = refused();
    h.run(10, 3);
    assert_eq!(h.preflights, 1);
    assert!(h.weight() > 0);
}
