//! Fixed resources for the unit and snapshot tests (test builds only).

use jiff::Timestamp;
use modelrollout_api::{ModelRollout, Phase};

use crate::view::EventLine;

/// `fixtures/progressing.yaml`: step 4/7 of chat-assistant in namespace ai, with status.
pub fn rollout() -> ModelRollout {
    serde_yaml::from_str(include_str!("fixtures/progressing.yaml")).expect("fixture parses")
}

/// `rollout` with another phase.
pub fn with_phase(mut rollout: ModelRollout, phase: Phase) -> ModelRollout {
    rollout.status.get_or_insert_with(Default::default).phase = Some(phase);
    rollout
}

/// The moment the snapshots are taken: 59m30s into the 4h pause, 30 s after the last check.
pub fn now() -> Timestamp {
    "2026-11-27T09:59:30Z".parse().expect("fixed time")
}

/// Events the controller wrote for the fixture, oldest first.
pub fn events() -> Vec<EventLine> {
    let line = |time: &str, warning: bool, reason: &str, message: &str| EventLine {
        time: time.parse().ok(),
        warning,
        reason: reason.to_owned(),
        message: message.to_owned(),
    };
    vec![
        line("2026-11-27T08:00:05Z", false, "RolloutStarted", "step 1/7: weight 5%"),
        line("2026-11-27T08:20:00Z", true, "LatencyExceeded", "canary p95 2.4s > 2s (1 of 2)"),
        line("2026-11-27T08:40:00Z", false, "StepAdvanced", "step 2/7: pause 2h"),
        line(
            "2026-11-27T08:45:00Z",
            false,
            "ManualPromote",
            "promote requested: 2026-11-27T08:44:59.120Z by alice",
        ),
        line("2026-11-27T08:45:01Z", false, "StepAdvanced", "step 3/7: weight 25%"),
        line("2026-11-27T09:00:00Z", false, "StepAdvanced", "step 4/7: pause 4h"),
    ]
}
