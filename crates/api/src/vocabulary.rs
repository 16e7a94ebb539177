//! The words a `ModelRollout` speaks: its phases, condition types, condition reasons, analysis
//! verdicts, the annotations the plugin sets and the controller's field manager. Kept in one
//! module so the controller, the plugin and the tests cannot drift apart on spelling.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a rollout is in its life. Serialised with exactly these names in `status.phase` and in
/// the routing document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, but no traffic has moved to the canary yet.
    #[default]
    Pending,
    /// Walking through the steps: traffic is split and analysis runs.
    Progressing,
    /// Holding the current weight: `spec.paused`, an indefinite pause step, or an analysis error.
    Paused,
    /// The canary took all traffic; the rollout is finished.
    Promoted,
    /// The canary failed analysis or was aborted; all traffic is back on stable.
    RolledBack,
    /// The rollout cannot proceed (for example an invalid spec); traffic stays where it was.
    Failed,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoted,
        Phase::RolledBack,
        Phase::Failed,
    ];

    /// The serialised name, e.g. `"RolledBack"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoted => "Promoted",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }

    /// True for phases a rollout does not leave on its own (`Promoted`, `RolledBack`, `Failed`).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack | Phase::Failed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownWord {
            kind: "phase",
            value: s.to_owned(),
            accepted: Phase::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
        })
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
        let terminal: Vec<_> = Phase::ALL.into_iter().filter(|p| p.is_terminal()).collect();
        assert_eq!(terminal, [Phase::Promoted, Phase::RolledBack, Phase::Failed]);
    }
}
