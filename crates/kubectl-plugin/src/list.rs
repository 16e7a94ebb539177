//! The `list` table: every rollout with phase, weight, step, canary and stable error rate, age.

use jiff::Timestamp;
use kube::ResourceExt;
use modelrollout_api::ModelRollout;

use crate::request::phase_of;
use crate::view::{age, columns, percent};

/// Renders the table; `namespaces` adds a NAMESPACE column (`-A`), `wide` the models and message.
pub fn render_list(
    rollouts: &[ModelRollout],
    now: Timestamp,
    namespaces: bool,
    wide: bool,
) -> String {
    if rollouts.is_empty() {
        return String::new();
    }
    let mut header = vec!["NAME", "PHASE", "WEIGHT", "STEP", "CANARY-ERR", "STABLE-ERR", "AGE"];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["MODEL", "STABLE", "CANARY", "MESSAGE"]);
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for rollout in rollouts {
        let status = rollout.status.clone().unwrap_or_default();
        let last = status.last_analysis.as_ref();
        let steps = rollout.spec.strategy.steps.len();
        let mut row = vec![
            rollout.name_any(),
            phase_of(rollout).to_string(),
            format!("{}%", status.canary_weight.unwrap_or(0)),
            status.current_step_index.map_or_else(
                || "-".to_owned(),
                |i| format!("{}/{steps}", (i + 1).min(steps as i32)),
            ),
            percent(last.and_then(|a| a.canary.error_rate)),
            percent(last.and_then(|a| a.stable.error_rate)),
            rollout
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or_else(|| "-".to_owned(), |t| age(t.0, now)),
        ];
        if namespaces {
            row.insert(0, rollout.namespace().unwrap_or_default());
        }
        if wide {
            row.extend([
                rollout.spec.model.clone(),
                rollout.spec.stable.model.clone(),
                rollout.spec.canary.model.clone(),
                status.message.clone().unwrap_or_default(),
            ]);
        }
        rows.push(row);
    }
    // `columns` takes fixed-width rows; the widest layout has 12 cells.
    let fixed: Vec<[String; 12]> = rows
        .into_iter()
        .map(|row| std::array::from_fn(|i| row.get(i).cloned().unwrap_or_default()))
        .collect();
    columns(&fixed, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{now, rollout, with_phase};
    use crate::snapshot::assert_snapshot;
    use modelrollout_api::Phase;

    fn two() -> Vec<ModelRollout> {
        let mut other = with_phase(rollout(), Phase::Pending);
        other.metadata.name = Some("embeddings".into());
        other.metadata.namespace = Some("search".into());
        other.status = None;
        vec![rollout(), other]
    }

    /// Name, phase, weight, step i/n, both error rates and age; a rollout without status shows dashes.
    #[test]
    fn list_snapshot() {
        assert_snapshot("list", &render_list(&two(), now(), false, false));
    }

    /// `-A -o wide` adds the namespace first and the models and message last.
    #[test]
    fn list_wide_all_namespaces_snapshot() {
        assert_snapshot("list_wide", &render_list(&two(), now(), true, true));
    }

    /// No rollouts, no header (the caller says "No resources found", as kubectl does).
    #[test]
    fn empty_list_is_empty() {
        assert_eq!(render_list(&[], now(), false, false), "");
    }
}
