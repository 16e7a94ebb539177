//! The manual requests (`promote`, `abort`, `pause`, `resume`, `retry`): whether one makes sense
//! for a rollout as it is now, and the change that asks the controller for it. Pure: the caller
//! reads the rollout and writes the change.

use jiff::{Timestamp, Unit};
use kube::ResourceExt;
use modelrollout_api::{
    ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY, ConditionType,
    ModelRollout, Phase,
};
use serde_json::{Value, json};

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Move on by one step now (`full`: skip every remaining step and give the canary 100 %).
    Promote {
        /// `--full`.
        full: bool,
    },
    /// Roll back to stable now.
    Abort,
    /// Hold the current weight (`spec.paused: true`).
    Pause,
    /// Continue after a pause (`spec.paused: false`).
    Resume,
    /// Start a rolled-back or failed rollout again from step 1.
    Retry,
}

/// The write that carries a request to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set an annotation the controller consumes once.
    Annotate {
        /// The annotation key.
        key: &'static str,
        /// `<RFC 3339 time> by <user>`: new on every request, and names who asked.
        value: String,
    },
    /// Set `spec.paused`.
    SetPaused(bool),
}

impl Change {
    /// The JSON merge patch that makes the change.
    pub fn merge_patch(&self) -> Value {
        match self {
            Change::Annotate { key, value } => json!({"metadata": {"annotations": {*key: value}}}),
            Change::SetPaused(paused) => json!({"spec": {"paused": paused}}),
        }
    }

    /// One line saying what was changed on `rollout`, and what the controller will do.
    pub fn describe(&self, rollout: &ModelRollout) -> String {
        let object = object_name(rollout);
        match self {
            Change::Annotate { key, value } => {
                let effect = match *key {
                    ANNOTATION_PROMOTE => "the controller moves on to the next step",
                    ANNOTATION_PROMOTE_FULL => "the controller gives the canary 100% now",
                    ANNOTATION_ABORT => "the controller sends all traffic back to stable",
                    _ => "the controller starts again from step 1",
                };
                format!("modelrollout {object}: annotated {key}={value:?}; {effect}")
            }
            Change::SetPaused(true) => {
                format!("modelrollout {object}: set spec.paused=true; the canary weight holds")
            }
            Change::SetPaused(false) => format!(
                "modelrollout {object}: set spec.paused=false; the rollout continues its steps"
            ),
        }
    }
}

/// Why a request makes no sense now; `Display` is the whole message the user sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The phase of a rollout, `Pending` before the controller wrote any status.
pub fn phase_of(rollout: &ModelRollout) -> Phase {
    rollout.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// `namespace/name`.
pub fn object_name(rollout: &ModelRollout) -> String {
    match rollout.namespace() {
        Some(namespace) => format!("{namespace}/{}", rollout.name_any()),
        None => rollout.name_any(),
    }
}

/// The annotation value of a request made by `user` at `now`: millisecond precision, so two
/// requests in the same second still differ and the controller acts on both.
pub fn annotation_value(now: Timestamp, user: &str) -> String {
    let now = now.round(Unit::Millisecond).unwrap_or(now);
    format!("{now} by {user}")
}

/// Checks `request` against the rollout as it is and returns the change that asks for it, or
/// the reason it would do nothing.
pub fn plan(
    request: Request,
    rollout: &ModelRollout,
    user: &str,
    now: Timestamp,
) -> Result<Change, Refusal> {
    let name = rollout.name_any();
    let phase = phase_of(rollout);
    let paused = rollout.spec.paused;
    // Promote while spec.paused is allowed: the controller moves the step on, and the weight
    // holds until resume.
    let refuse = |why: String| Err(Refusal(format!("rollout {name} is {phase}: {why}")));
    let annotate = |key| Ok(Change::Annotate { key, value: annotation_value(now, user) });
    match request {
        Request::Promote { full } => match phase {
            Phase::Promoted => {
                refuse("the canary already has all traffic; nothing to promote".into())
            }
            Phase::RolledBack | Phase::Failed => refuse(format!(
                "promote does nothing; use `kubectl modelrollout retry {name}` to start again from step 1"
            )),
            _ if full => annotate(ANNOTATION_PROMOTE_FULL),
            _ => annotate(ANNOTATION_PROMOTE),
        },
        Request::Abort => match phase {
            Phase::RolledBack => {
                refuse("all traffic is already on stable; nothing to abort".into())
            }
            Phase::Promoted => refuse(format!(
                "the rollout is finished and the canary is the model in use; to go back, set spec.canary to the old model and apply it (a new rollout), or delete {name}"
            )),
            // The controller leaves a Failed rollout's traffic alone (an invalid spec), abort too.
            Phase::Failed => refuse(format!(
                "abort does nothing; fix the spec (see `kubectl modelrollout status {name}`) or use `kubectl modelrollout retry {name}`"
            )),
            _ => annotate(ANNOTATION_ABORT),
        },
        Request::Pause => match phase {
            _ if phase.is_terminal() => refuse(format!(
                "the rollout has finished; there is nothing to pause (use `kubectl modelrollout status {name}`)"
            )),
            _ if paused => Err(Refusal(format!(
                "rollout {name} is already paused (spec.paused is true); use `kubectl modelrollout resume {name}` to continue"
            ))),
            _ => Ok(Change::SetPaused(true)),
        },
        Request::Resume => {
            if paused {
                return Ok(Change::SetPaused(false));
            }
            let why = if phase == Phase::Paused {
                format!(
                    "it is not paused by spec.paused but waits at a pause step; use `kubectl modelrollout promote {name}` to move on"
                )
            } else {
                "it is not paused (spec.paused is false); nothing to resume".into()
            };
            refuse(why)
        }
        Request::Retry => match phase {
            Phase::RolledBack | Phase::Failed => annotate(ANNOTATION_RETRY),
            // A failed preflight waits for its next check: retry makes it now.
            Phase::Pending if preflight_failed(rollout) => annotate(ANNOTATION_RETRY),
            _ => refuse(format!(
                "retry only restarts a RolledBack or Failed rollout, or checks a failed preflight again; follow this one with `kubectl modelrollout status {name} --watch`"
            )),
        },
    }
}

/// True when the rollout waits at 0 % because an arm's endpoint failed the preflight.
fn preflight_failed(rollout: &ModelRollout) -> bool {
    rollout
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == ConditionType::PreflightPassed.as_str() && c.status == "False")
}

/// Requests written as annotations that the controller has not recorded as handled yet, as
/// `(annotation key, value)`.
pub fn pending_requests(rollout: &ModelRollout) -> Vec<(&'static str, String)> {
    let handled = rollout.status.as_ref().and_then(|s| s.handled_annotations.clone());
    let handled = handled.unwrap_or_default();
    let annotations = rollout.annotations();
    [
        (ANNOTATION_PROMOTE, handled.promote),
        (ANNOTATION_PROMOTE_FULL, handled.promote_full),
        (ANNOTATION_ABORT, handled.abort),
        (ANNOTATION_RETRY, handled.retry),
    ]
    .into_iter()
    .filter_map(|(key, handled)| {
        let value = annotations.get(key)?;
        (handled.as_deref() != Some(value.as_str())).then(|| (key, value.clone()))
    })
    .collect()
}

/// True when the rollout has finished and the controller has caught up with every request and
/// spec change: `status --watch` may stop.
pub fn settled(rollout: &ModelRollout) -> bool {
    let observed = rollout.status.as_ref().and_then(|s| s.observed_generation);
    phase_of(rollout).is_terminal()
        && pending_requests(rollout).is_empty()
        && (rollout.metadata.generation.is_none() || observed == rollout.metadata.generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{rollout, with_phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use modelrollout_api::rollout::HandledAnnotations;

    fn now() -> Timestamp {
        "2026-11-27T10:00:00.123456Z".parse().unwrap()
    }

    fn refusal(request: Request, rollout: &ModelRollout) -> String {
        plan(request, rollout, "alice", now()).unwrap_err().0
    }

    /// Each request in each phase either writes its change or is refused (table of the rules).
    #[test]
    fn requests_by_phase() {
        use Phase::*;
        let promote = Request::Promote { full: false };
        let table: &[(Request, Phase, bool)] = &[
            (promote, Pending, true),
            (promote, Progressing, true),
            (promote, Paused, true),
            (promote, Promoted, false),
            (promote, RolledBack, false),
            (promote, Failed, false),
            (Request::Abort, Progressing, true),
            (Request::Abort, Paused, true),
            (Request::Abort, Failed, false),
            (Request::Abort, RolledBack, false),
            (Request::Abort, Promoted, false),
            (Request::Pause, Progressing, true),
            (Request::Pause, Pending, true),
            (Request::Pause, Promoted, false),
            (Request::Pause, RolledBack, false),
            (Request::Resume, Progressing, false),
            (Request::Resume, Paused, false),
            (Request::Retry, RolledBack, true),
            (Request::Retry, Failed, true),
            (Request::Retry, Progressing, false),
            (Request::Retry, Promoted, false),
            (Request::Retry, Pending, false),
        ];
        for &(request, phase, allowed) in table {
            let result = plan(request, &with_phase(rollout(), phase), "alice", now());
            assert_eq!(result.is_ok(), allowed, "{request:?} in {phase}: {result:?}");
        }
    }

    /// A rollout held at 0 % by a failed preflight may be told to check again now.
    #[test]
    fn retry_checks_a_failed_preflight_again() {
        let mut pending = with_phase(rollout(), Phase::Pending);
        pending.status.get_or_insert_default().conditions.push(Condition {
            type_: "PreflightPassed".into(),
            status: "False".into(),
            reason: "Unauthorized".into(),
            message: "canary endpoint answered 401".into(),
            last_transition_time: Time(now()),
            observed_generation: None,
        });
        let change = plan(Request::Retry, &pending, "alice", now()).unwrap();
        assert_eq!(
            change.merge_patch(),
            json!({"metadata": {"annotations": {"rollouts.modelops.io/retry": "2026-11-27T10:00:00.123Z by alice"}}})
        );
    }

    /// The refusal messages say what the rollout is, why, and which command helps.
    #[test]
    fn refusal_messages() {
        let rolled_back = with_phase(rollout(), Phase::RolledBack);
        assert_eq!(
            refusal(Request::Promote { full: false }, &rolled_back),
            "rollout chat-assistant is RolledBack: promote does nothing; use `kubectl modelrollout retry chat-assistant` to start again from step 1"
        );
        assert_eq!(
            refusal(Request::Resume, &with_phase(rollout(), Phase::Progressing)),
            "rollout chat-assistant is Progressing: it is not paused (spec.paused is false); nothing to resume"
        );
        assert_eq!(
            refusal(Request::Resume, &with_phase(rollout(), Phase::Paused)),
            "rollout chat-assistant is Paused: it is not paused by spec.paused but waits at a pause step; use `kubectl modelrollout promote chat-assistant` to move on"
        );
        assert_eq!(
            refusal(Request::Retry, &with_phase(rollout(), Phase::Progressing)),
            "rollout chat-assistant is Progressing: retry only restarts a RolledBack or Failed rollout, or checks a failed preflight again; follow this one with `kubectl modelrollout status chat-assistant --watch`"
        );
        assert_eq!(
            refusal(Request::Abort, &rolled_back),
            "rollout chat-assistant is RolledBack: all traffic is already on stable; nothing to abort"
        );
        let mut paused = with_phase(rollout(), Phase::Paused);
        paused.spec.paused = true;
        assert_eq!(
            refusal(Request::Pause, &paused),
            "rollout chat-assistant is already paused (spec.paused is true); use `kubectl modelrollout resume chat-assistant` to continue"
        );
    }

    /// Pause and resume flip spec.paused; promote, abort and retry write `<time> by <user>`.
    #[test]
    fn changes_and_patches() {
        let progressing = with_phase(rollout(), Phase::Progressing);
        let promote = plan(Request::Promote { full: true }, &progressing, "alice", now()).unwrap();
        assert_eq!(
            promote.merge_patch(),
            json!({"metadata": {"annotations": {"rollouts.modelops.io/promote-full": "2026-11-27T10:00:00.123Z by alice"}}})
        );
        let pause = plan(Request::Pause, &progressing, "alice", now()).unwrap();
        assert_eq!(pause.merge_patch(), json!({"spec": {"paused": true}}));
        let mut paused = progressing.clone();
        paused.spec.paused = true;
        let resume = plan(Request::Resume, &paused, "alice", now()).unwrap();
        assert_eq!(resume, Change::SetPaused(false));
        assert_eq!(
            resume.describe(&paused),
            "modelrollout ai/chat-assistant: set spec.paused=false; the rollout continues its steps"
        );
    }

    /// A request is pending until status.handledAnnotations records the same value.
    #[test]
    fn pending_until_handled() {
        let mut r = with_phase(rollout(), Phase::RolledBack);
        r.metadata.annotations =
            Some([(ANNOTATION_RETRY.to_owned(), "2026-11-27T10:00:00Z by bob".to_owned())].into());
        assert_eq!(pending_requests(&r).len(), 1);
        assert!(!settled(&r), "a pending retry is not the end");
        r.status.as_mut().unwrap().handled_annotations = Some(HandledAnnotations {
            retry: Some("2026-11-27T10:00:00Z by bob".into()),
            ..Default::default()
        });
        assert!(pending_requests(&r).is_empty());
        assert!(settled(&r));
        r.metadata.generation = Some(5);
        assert!(!settled(&r), "a spec change the controller has not seen is not the end");
    }
}
