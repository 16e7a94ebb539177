//! The words a `ModelRollout` speaks: its phases, condition types, condition reasons, analysis
//! verdicts, the annotations the plugin sets and the controller's field manager. Kept in one
//! module so the controller, the plugin and the tests cannot drift apart on spelling.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Field manager the controller uses for every server-side apply (status and routing ConfigMap).
pub const FIELD_MANAGER: &str = "modelrollout-controller";

/// Annotation that asks the controller to move on by one step now: end the current pause (timed
/// or indefinite) or skip the wait for analysis at the current weight. Any new value is acted on
/// once; the plugin writes `<RFC 3339 time> by <user>`, and the controller quotes the value in
/// its `ManualPromote` Event so the Event names who asked.
pub const ANNOTATION_PROMOTE: &str = "rollouts.modelops.io/promote";
/// Annotation that asks the controller to skip every remaining step and give the canary 100 %
/// now (`kubectl modelrollout promote --full`). Same value convention as the promote annotation.
pub const ANNOTATION_PROMOTE_FULL: &str = "rollouts.modelops.io/promote-full";
/// Annotation that asks the controller to roll back to stable now (reason `ManualAbort`).
pub const ANNOTATION_ABORT: &str = "rollouts.modelops.io/abort";
/// Annotation that asks the controller to restart a rolled-back or failed rollout from step 1.
pub const ANNOTATION_RETRY: &str = "rollouts.modelops.io/retry";

/// Declares a closed set of words: a unit enum with `ALL`, `as_str`, `Display` and `FromStr`,
/// serialised with exactly the variant names.
macro_rules! words {
    (
        $(#[$meta:meta])*
        $kind:literal,
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The serialised name.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|w| w.as_str() == s).ok_or_else(|| UnknownWord {
                    kind: $kind,
                    value: s.to_owned(),
                    accepted: $name::ALL.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

words! {
    /// Where the rollout is: Pending (no canary traffic yet), Progressing (walking the steps),
    /// Paused (holding its weight), Promoted (the canary has all traffic), RolledBack (all traffic
    /// back on stable) or Failed (cannot proceed; see the conditions). Written with exactly these
    /// names in status.phase and in the routing document.
    #[derive(Default)]
    "phase",
    pub enum Phase {
        /// Accepted, but no traffic has moved to the canary yet.
        #[default]
        Pending,
        /// Walking through the steps: traffic is split and analysis runs.
        Progressing,
        /// Holding the current weight: spec.paused, an indefinite pause step, or an analysis error.
        Paused,
        /// The canary took all traffic; the rollout is finished.
        Promoted,
        /// The canary failed analysis or was aborted; all traffic is back on stable.
        RolledBack,
        /// The rollout cannot proceed (for example an invalid spec); traffic stays where it was.
        Failed,
    }
}

impl Phase {
    /// True for phases a rollout does not leave on its own (`Promoted`, `RolledBack`, `Failed`).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack | Phase::Failed)
    }
}

words! {
    /// The `type` of each condition in `status.conditions`. `kubectl wait --for=condition=<type>`
    /// uses these names.
    "condition type",
    pub enum ConditionType {
        /// The rollout is reconciled and its routing matches its status.
        Ready,
        /// The rollout is moving through its steps (False once promoted, rolled back or failed).
        Progressing,
        /// The canary took all traffic.
        Promoted,
        /// Traffic went back to stable after failed analysis or an abort.
        RolledBack,
        /// The last analysis passed (False on a failed check or an analysis error).
        AnalysisHealthy,
        /// The routing document in the proxy's ConfigMap matches the desired weight.
        RoutingApplied,
        /// The spec breaks a rule the CRD schema cannot express; the message says which.
        InvalidSpec,
        /// The canary's token rate fits thresholds.maxCanaryTokensPerMinute, now and at its next
        /// step (False: reason BudgetExceeded, with the measured rate).
        WithinBudget,
        /// Both arms' endpoints answered `GET {endpoint}/models` with their credential and
        /// list their model (False: reason Unauthorized, ModelNotFound, EndpointUnreachable or
        /// CredentialUnavailable; the rollout waits at weight 0 and checks again).
        PreflightPassed,
    }
}

words! {
    /// The `reason` of a condition or an Event: one CamelCase word a machine can match on.
    "reason",
    pub enum Reason {
        /// The canary error rate went over `thresholds.maxErrorRate`.
        ErrorRateExceeded,
        /// Canary minus stable error rate went over `thresholds.maxErrorRateIncrease`.
        ErrorRateIncreaseExceeded,
        /// Canary p95 latency went over `thresholds.maxLatencyP95`.
        LatencyExceeded,
        /// Canary p95 time to first token went over `thresholds.maxTimeToFirstTokenP95`.
        TimeToFirstTokenExceeded,
        /// A custom metric fell outside its `min`/`max`.
        CustomMetricExceeded,
        /// Prometheus could not answer (unreachable, bad query, no data where data is needed).
        AnalysisError,
        /// Analysis passed.
        AnalysisPassed,
        /// Too few canary requests to judge yet.
        InsufficientRequests,
        /// Someone set the abort annotation.
        ManualAbort,
        /// Someone set the promote annotation.
        ManualPromote,
        /// Someone set the retry annotation.
        ManualRetry,
        /// `spec.paused` went back to false.
        Resumed,
        /// Canary and stable fail alike (an outage of both providers, a bad shared dependency):
        /// not the canary's fault, so the rollout holds instead of rolling back.
        BothArmsFailing,
        /// The proxies have not all reported the desired canary weight yet.
        WaitingForProxies,
        /// A manual request was ignored because it does not apply in the current phase.
        RequestIgnored,
        /// `spec.paused` is true.
        PausedBySpec,
        /// A pause step without a duration waits for a manual promote.
        WaitingForPromotion,
        /// A pause step with a duration is running.
        StepPaused,
        /// The rollout moved to its next step.
        StepAdvanced,
        /// The rollout started from its first step.
        RolloutStarted,
        /// All steps completed and the canary took all traffic.
        RolloutCompleted,
        /// The spec changed (new generation) and the rollout restarted.
        SpecChanged,
        /// The spec breaks a validation rule.
        InvalidSpec,
        /// The routing document was written.
        RoutingUpdated,
        /// Writing the routing document failed.
        RoutingFailed,
        /// The canary uses more tokens per minute than thresholds.maxCanaryTokensPerMinute (or
        /// its next step would): the rollout holds or steps back, never rolls back for it.
        BudgetExceeded,
        /// The canary costs more per request than thresholds.maxCostIncrease × stable's.
        CostExceeded,
        /// The arms' endpoints have not been checked yet for this start of the rollout.
        PreflightPending,
        /// Both arms' endpoints answered and serve their model (or have no model list).
        EndpointsReady,
        /// An arm's endpoint answered 401 or 403 to its credential.
        Unauthorized,
        /// An arm's endpoint lists models, but not the arm's model.
        ModelNotFound,
        /// An arm's endpoint could not be reached (connection, DNS, TLS, timeout, 5xx).
        EndpointUnreachable,
        /// An arm's credential could not be read from its Secret.
        CredentialUnavailable,
    }
}

words! {
    /// The outcome of one analysis run: Pass (every check passed with enough canary requests),
    /// Fail (a check breached its limit), Inconclusive (too few requests to judge) or Error
    /// (the measurements could not be taken).
    "verdict",
    pub enum Verdict {
        /// Every check passed with enough canary requests.
        Pass,
        /// At least one check breached its threshold with enough requests to trust it.
        Fail,
        /// Too few requests to decide either way.
        Inconclusive,
        /// The measurements could not be taken.
        Error,
    }
}

/// A string that is not one of a vocabulary's words (returned by the `FromStr` impls here).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}: use one of {accepted}")]
pub struct UnknownWord {
    /// Which vocabulary, e.g. `"phase"`.
    pub kind: &'static str,
    /// The string that was given.
    pub value: String,
    /// The accepted words, comma-separated.
    pub accepted: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every phase serialises to its exact name and parses back, through serde and FromStr.
    #[test]
    fn phase_round_trips_with_exact_names() {
        let table = [
            (Phase::Pending, "Pending"),
            (Phase::Progressing, "Progressing"),
            (Phase::Paused, "Paused"),
            (Phase::Promoted, "Promoted"),
            (Phase::RolledBack, "RolledBack"),
            (Phase::Failed, "Failed"),
        ];
        for (phase, name) in table {
            assert_eq!(serde_json::to_string(&phase).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Phase>(&format!("\"{name}\"")).unwrap(), phase);
            assert_eq!(name.parse::<Phase>().unwrap(), phase);
            assert_eq!(phase.to_string(), name);
        }
    }

    /// Names that differ in case or spelling are rejected, and the error lists the accepted ones.
    #[test]
    fn phase_rejects_other_spellings() {
        for bad in ["pending", "ROLLEDBACK", "Rolled-Back", "Done", ""] {
            assert!(serde_json::from_str::<Phase>(&format!("\"{bad}\"")).is_err(), "{bad}");
            let err = bad.parse::<Phase>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("Pending, Progressing, Paused, Promoted, RolledBack, Failed"));
        }
    }

    /// Only Promoted, RolledBack and Failed are terminal.
    #[test]
    fn terminal_phases() {
        let terminal: Vec<_> = Phase::ALL.iter().copied().filter(|p| p.is_terminal()).collect();
        assert_eq!(terminal, [Phase::Promoted, Phase::RolledBack, Phase::Failed]);
    }

    /// Condition types, reasons and verdicts serialise and parse with their exact names.
    #[test]
    fn other_vocabularies_round_trip() {
        let names: Vec<(&str, String)> = ConditionType::ALL
            .iter()
            .map(|w| (w.as_str(), serde_json::to_string(w).unwrap()))
            .chain(Reason::ALL.iter().map(|w| (w.as_str(), serde_json::to_string(w).unwrap())))
            .chain(Verdict::ALL.iter().map(|w| (w.as_str(), serde_json::to_string(w).unwrap())))
            .collect();
        for (name, json) in names {
            assert_eq!(json, format!("\"{name}\""));
        }
        let table = [
            ("Promoted", ConditionType::Promoted.as_str()),
            ("InvalidSpec", ConditionType::InvalidSpec.as_str()),
            ("ErrorRateExceeded", Reason::ErrorRateExceeded.as_str()),
            ("ManualAbort", Reason::ManualAbort.as_str()),
            ("Inconclusive", Verdict::Inconclusive.as_str()),
        ];
        for (expected, actual) in table {
            assert_eq!(expected, actual);
        }
        assert_eq!("AnalysisHealthy".parse::<ConditionType>(), Ok(ConditionType::AnalysisHealthy));
        assert_eq!("StepAdvanced".parse::<Reason>(), Ok(Reason::StepAdvanced));
        assert_eq!("Error".parse::<Verdict>(), Ok(Verdict::Error));
        let err = "Maybe".parse::<Verdict>().unwrap_err().to_string();
        assert_eq!(err, "unknown verdict \"Maybe\": use one of Pass, Fail, Inconclusive, Error");
    }

    /// The annotation keys and field manager are spelled as docs/resource.md says.
    #[test]
    fn annotation_keys_and_field_manager() {
        let table = [
            (ANNOTATION_PROMOTE, "rollouts.modelops.io/promote"),
            (ANNOTATION_PROMOTE_FULL, "rollouts.modelops.io/promote-full"),
            (ANNOTATION_ABORT, "rollouts.modelops.io/abort"),
            (ANNOTATION_RETRY, "rollouts.modelops.io/retry"),
            (FIELD_MANAGER, "modelrollout-controller"),
        ];
        for (actual, expected) in table {
            assert_eq!(actual, expected);
        }
    }
}
