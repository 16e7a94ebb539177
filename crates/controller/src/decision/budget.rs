//! The walk's token budget and cost figures (docs/guards.md): the rules are in
//! [`crate::guards`]; this applies them to the status being built.

use modelrollout_analysis::TokenSample;
use modelrollout_api::rollout::AnalysisResult;
use modelrollout_api::{ConditionType, Reason};

use super::{Analysed, EventReason, EventType, Walk};
use crate::guards::{self, Budget, Costs, per_minute};

/// Writes both arms' token rates and costs, and the canary's cost ratio, into `result`.
pub(super) fn record_tokens(result: &mut AnalysisResult, tokens: &TokenSample, costs: &Costs) {
    result.canary.tokens_per_minute = Some(tokens.canary.per_minute(tokens.range));
    result.stable.tokens_per_minute = Some(tokens.stable.per_minute(tokens.range));
    result.canary.cost_per_1k_requests = costs.canary;
    result.stable.cost_per_1k_requests = costs.stable;
    result.cost_ratio = costs.ratio;
}

impl Walk<'_> {
    /// Judges the canary's token rate against its budget: within it, nothing changes; over it
    /// (or over it at the next step), the step holds, and over it now, the weight steps back.
    pub(super) fn token_budget(
        &mut self,
        tokens: Option<&TokenSample>,
        analysed: Analysed,
    ) -> Analysed {
        let Some(limit) = self.rollout.spec.analysis.thresholds.max_canary_tokens_per_minute else {
            self.status.conditions.retain(|c| c.type_ != ConditionType::WithinBudget.as_str());
            return analysed;
        };
        let (Some(tokens), Some(index)) = (tokens, self.step_index()) else {
            return analysed;
        };
        let was_over = self.over_budget();
        let weight = self.weight();
        let steps = &self.rollout.spec.strategy.steps;
        let of = steps.len();
        let rate = tokens.canary.per_minute(tokens.range);
        match guards::budget(limit as f64, rate, weight, steps, index) {
            Budget::Fits { rate } => {
                let message = format!(
                    "the canary uses {} tokens/min at {weight}%, within its budget of {limit}",
                    per_minute(rate)
                );
                self.condition(ConditionType::WithinBudget, true, Reason::AnalysisPassed, &message);
                if was_over {
                    self.event(EventType::Normal, EventReason::WithinBudget, message);
                }
                analysed
            }
            Budget::NextStepWouldExceed { rate, next_index, next_weight, projected } => {
                let message = format!(
                    "the canary uses {} tokens/min at {weight}%, within its budget of {limit}, \
                     but step {}/{of} ({next_weight}%) would use about {}: holding at {weight}%",
                    per_minute(rate),
                    next_index + 1,
                    per_minute(projected)
                );
                self.over(&message, was_over);
                Analysed::Held
            }
            Budget::Exceeded { rate, step_back: Some((back, back_weight)) } => {
                let message = format!(
                    "the canary uses {} tokens/min at {weight}%, over its budget of {limit}: \
                     back to step {}/{of} ({back_weight}%)",
                    per_minute(rate),
                    back + 1
                );
                // Stepping back for the budget is not a new step: failures still count.
                let failures = self.status.consecutive_failures;
                self.enter_step(back, false);
                self.status.consecutive_failures = failures;
                self.over(&message, false);
                Analysed::Held
            }
            Budget::Exceeded { rate, step_back: None } => {
                let message = format!(
                    "the canary uses {} tokens/min at {weight}%, over its budget of {limit}, \
                     and no earlier step has a lower weight: holding at {weight}%",
                    per_minute(rate)
                );
                self.over(&message, was_over);
                Analysed::Held
            }
        }
    }

    /// Records a budget breach; the Event only when the verdict changes (or the weight did).
    fn over(&mut self, message: &str, announced: bool) {
        self.condition(ConditionType::WithinBudget, false, Reason::BudgetExceeded, message);
        if !announced {
            self.event(EventType::Warning, EventReason::BudgetExceeded, message.to_owned());
        }
    }

    /// True while the last token measurement put the canary over its budget.
    pub(super) fn over_budget(&self) -> bool {
        self.find(ConditionType::WithinBudget).is_some_and(|c| c.status == "False")
    }

    /// A rollout over its budget shows phase Paused with the measured rate, between analyses
    /// too (the condition carries it from one reconcile to the next).
    pub(super) fn budget_pause(&mut self) {
        let phase = self.phase();
        if self.pause_reason.is_some()
            || phase.is_terminal()
            || phase == modelrollout_api::Phase::Pending
        {
            return;
        }
        if self.over_budget() {
            let message =
                self.condition_message(ConditionType::WithinBudget).unwrap_or_default().to_owned();
            self.pause_reason = Some((Reason::BudgetExceeded, message));
        }
    }
}
