//! The guards beyond the split, as pure rules over one analysis' token counts: the canary's
//! token budget (hold, or step back to the last step that fits; never a rollback) and each
//! arm's cost per 1000 requests, with `maxCostIncrease` as a check like the others.

use modelrollout_analysis::{ArmTokens, TokenSample};
use modelrollout_api::rollout::{Analysis, FailedCheck, ModelRolloutSpec, Pricing, Step};
use modelrollout_api::{Reason, StepAction, Verdict};

use crate::judge::Judgement;

/// Whether the rollout needs token counts: a token budget or pricing on either arm.
pub fn wants_tokens(spec: &ModelRolloutSpec) -> bool {
    spec.analysis.thresholds.max_canary_tokens_per_minute.is_some()
        || spec.stable.pricing.is_some()
        || spec.canary.pricing.is_some()
}

// === cost per request ===

/// Each arm's cost per 1000 requests and the canary's over stable's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Costs {
    /// The canary's cost per 1000 requests (needs its pricing and a request).
    pub canary: Option<f64>,
    /// Stable's.
    pub stable: Option<f64>,
    /// canary / stable, when both are known and stable's is above zero.
    pub ratio: Option<f64>,
}

/// The cost of 1000 requests at `pricing` with the arm's measured tokens per request.
pub fn cost_per_1k_requests(arm: &ArmTokens, pricing: &Pricing) -> Option<f64> {
    (arm.requests > 0.0).then(|| {
        let total = arm.prompt * pricing.input_per_million_tokens
            + arm.completion * pricing.output_per_million_tokens;
        total / 1e6 / arm.requests * 1000.0
    })
}

/// Both arms' costs from their pricing (an arm without pricing has no cost).
pub fn costs(spec: &ModelRolloutSpec, tokens: &TokenSample) -> Costs {
    let canary = spec.canary.pricing.as_ref().and_then(|p| cost_per_1k_requests(&tokens.canary, p));
    let stable = spec.stable.pricing.as_ref().and_then(|p| cost_per_1k_requests(&tokens.stable, p));
    let ratio = match (canary, stable) {
        (Some(c), Some(s)) if s > 0.0 => Some(c / s),
        _ => None,
    };
    Costs { canary, stable, ratio }
}

/// Adds the `maxCostIncrease` check to a judgement: over the limit, the analysis fails (reason
/// CostExceeded) once the canary has `minRequestsForRollback` requests, and never advances.
pub fn judge_cost(judgement: &mut Judgement, spec: &Analysis, costs: &Costs, canary_requests: f64) {
    let (Some(limit), Some(ratio), Some(canary), Some(stable)) =
        (spec.thresholds.max_cost_increase, costs.ratio, costs.canary, costs.stable)
    else {
        return;
    };
    if ratio <= limit {
        return;
    }
    let message = format!(
        "canary cost per 1000 requests {} is {ratio:.2} × stable's {} (maxCostIncrease {limit})",
        money(canary),
        money(stable)
    );
    judgement.advance = false;
    if canary_requests < spec.min_requests_for_rollback as f64 {
        judgement.message = format!(
            "{}; {message}, but only {canary_requests} canary requests (minRequestsForRollback {}): too few to roll back",
            judgement.message, spec.min_requests_for_rollback
        );
        return;
    }
    let check = FailedCheck {
        name: "cost-increase".to_owned(),
        reason: Reason::CostExceeded.as_str().to_owned(),
        value: Some(ratio),
        limit: Some(limit),
        message: message.clone(),
    };
    if judgement.verdict == Verdict::Fail {
        judgement.message = format!("{}; {message}", judgement.message);
    } else {
        judgement.verdict = Verdict::Fail;
        judgement.reason = Some(Reason::CostExceeded);
        judgement.message = message;
    }
    judgement.failed.push(check);
}

/// A cost with four significant digits at most: `0.012345` → `0.01235`, `12.5` → `12.5`.
pub fn money(value: f64) -> String {
    if !value.is_finite() || value <= 0.0 {
        return format!("{value}");
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 1.0 {
        2
    } else {
        (4 - value.log10().floor() as i32 - 1).clamp(2, 8) as usize
    };
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

// === token budget ===

/// Where the canary stands against its token budget.
#[derive(Clone, Debug, PartialEq)]
pub enum Budget {
    /// Within the budget, and so would the next step be (or there is no next weight below 100).
    Fits {
        /// The canary's tokens per minute.
        rate: f64,
    },
    /// Within the budget now, but the next step's weight would take it over: hold here.
    NextStepWouldExceed {
        /// The canary's tokens per minute.
        rate: f64,
        /// The next step's index.
        next_index: usize,
        /// Its weight.
        next_weight: u8,
        /// The rate expected there (rate × next weight / weight).
        projected: f64,
    },
    /// Over the budget now: step back to `step_back` (index and weight), or hold when no
    /// earlier step has a lower weight.
    Exceeded {
        /// The canary's tokens per minute.
        rate: f64,
        /// The step to go back to: the last earlier one whose weight fits by the rate measured
        /// now, else the first `setWeight` step.
        step_back: Option<(usize, u8)>,
    },
}

/// Judges the canary's measured token `rate` (per minute) against `limit` at `weight`, step
/// `index` of `steps`. A token rate grows with the weight, so a weight `w` is expected to use
/// `rate × w / weight`.
pub fn budget(limit: f64, rate: f64, weight: u8, steps: &[Step], index: usize) -> Budget {
    let weights: Vec<(usize, u8)> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.action() {
            Some(StepAction::SetWeight(w)) => Some((i, w)),
            _ => None,
        })
        .collect();
    let expected = |w: u8| rate * f64::from(w) / f64::from(weight.max(1));
    if rate > limit {
        let lower: Vec<(usize, u8)> =
            weights.iter().copied().filter(|&(i, w)| i < index && w < weight && w > 0).collect();
        let fitting = lower.iter().rev().find(|&&(_, w)| expected(w) <= limit);
        let step_back = fitting.or(lower.first()).copied();
        return Budget::Exceeded { rate, step_back };
    }
    // Promotion is not held: at 100% the canary is the model, and its rate is all the traffic.
    let next = weights.iter().copied().find(|&(i, w)| i > index && w > weight && w < 100);
    match next {
        Some((next_index, next_weight)) if expected(next_weight) > limit => {
            Budget::NextStepWouldExceed {
                rate,
                next_index,
                next_weight,
                projected: expected(next_weight),
            }
        }
        _ => Budget::Fits { rate },
    }
}

/// Tokens per minute, short: `1234.56` → `1235`, `12.345` → `12.3`.
pub fn per_minute(rate: f64) -> String {
    if rate >= 100.0 { format!("{rate:.0}") } else { format!("{rate:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(weights: &[i32]) -> Vec<Step> {
        weights
            .iter()
            .map(|&w| if w < 0 { Step::pause(None) } else { Step::set_weight(w) })
            .collect()
    }

    const PLAN: [i32; 6] = [5, 10, -1, 25, 50, 100];

    /// Within the budget with room for the next step: fits.
    #[test]
    fn budget_fits() {
        assert_eq!(budget(1000.0, 300.0, 10, &steps(&PLAN), 1), Budget::Fits { rate: 300.0 });
    }

    /// Within the budget, but the next setWeight (25%, past a pause) would exceed it: hold.
    #[test]
    fn next_step_would_exceed() {
        assert_eq!(
            budget(1000.0, 500.0, 10, &steps(&PLAN), 2),
            Budget::NextStepWouldExceed {
                rate: 500.0,
                next_index: 3,
                next_weight: 25,
                projected: 1250.0
            }
        );
    }

    /// The last step before promotion is never held by the budget.
    #[test]
    fn promotion_is_not_held() {
        assert_eq!(budget(1000.0, 900.0, 50, &steps(&PLAN), 4), Budget::Fits { rate: 900.0 });
    }

    /// Over the budget: back to the last earlier step whose weight fits by the current rate.
    #[test]
    fn exceeded_steps_back_to_last_fitting() {
        // 50% uses 1500/min: 25% would use 750 (fits), so step 3.
        assert_eq!(
            budget(1000.0, 1500.0, 50, &steps(&PLAN), 4),
            Budget::Exceeded { rate: 1500.0, step_back: Some((3, 25)) }
        );
        // 50% uses 4500/min: 25% → 2250, 10% → 900 fits.
        assert_eq!(
            budget(1000.0, 4500.0, 50, &steps(&PLAN), 4),
            Budget::Exceeded { rate: 4500.0, step_back: Some((1, 10)) }
        );
    }

    /// When no earlier step fits, the first setWeight step is the floor.
    #[test]
    fn exceeded_with_nothing_fitting_goes_to_first_step() {
        assert_eq!(
            budget(100.0, 5000.0, 50, &steps(&PLAN), 4),
            Budget::Exceeded { rate: 5000.0, step_back: Some((0, 5)) }
        );
    }

    /// Over the budget at the first step: nothing lower to go to, hold.
    #[test]
    fn exceeded_at_first_step_holds() {
        assert_eq!(
            budget(100.0, 500.0, 5, &steps(&PLAN), 0),
            Budget::Exceeded { rate: 500.0, step_back: None }
        );
    }

    fn sample(canary: (f64, f64, f64), stable: (f64, f64, f64)) -> TokenSample {
        let arm = |(prompt, completion, requests)| ArmTokens { prompt, completion, requests };
        TokenSample {
            canary: arm(canary),
            stable: arm(stable),
            range: std::time::Duration::from_secs(60),
        }
    }

    fn priced(spec: &mut ModelRolloutSpec, stable: (f64, f64), canary: (f64, f64)) {
        let price = |(i, o)| Pricing { input_per_million_tokens: i, output_per_million_tokens: o };
        spec.stable.pricing = Some(price(stable));
        spec.canary.pricing = Some(price(canary));
    }

    fn spec() -> ModelRolloutSpec {
        serde_yaml::from_str(
            r#"
model: chat-default
stable: {model: gpt-4.1, endpoint: "http://stable.ai:8080/v1"}
canary: {model: claude-sonnet-4.5, endpoint: "http://canary.ai:8080/v1"}
routing: {configMapRef: {name: model-router}}
strategy: {steps: [{setWeight: 10}, {setWeight: 100}]}
analysis: {prometheus: {address: "http://prometheus:9090"}}
"#,
        )
        .unwrap()
    }

    /// Cost per 1000 requests = tokens × price per token / requests × 1000.
    #[test]
    fn cost_per_thousand_requests() {
        let arm = ArmTokens { prompt: 10_000.0, completion: 20_000.0, requests: 1000.0 };
        let pricing = Pricing { input_per_million_tokens: 2.0, output_per_million_tokens: 8.0 };
        // (10k × 2 + 20k × 8) / 1e6 = 0.18 for 1000 requests.
        assert!((cost_per_1k_requests(&arm, &pricing).unwrap() - 0.18).abs() < 1e-12);
        let idle = ArmTokens::default();
        assert_eq!(cost_per_1k_requests(&idle, &pricing), None);
    }

    /// The ratio needs pricing on both arms and a stable cost above zero.
    #[test]
    fn cost_ratio() {
        let mut spec = spec();
        let tokens = sample((1000.0, 2000.0, 100.0), (1000.0, 2000.0, 100.0));
        assert_eq!(costs(&spec, &tokens), Costs::default());
        priced(&mut spec, (2.0, 8.0), (3.0, 12.0));
        let c = costs(&spec, &tokens);
        assert!((c.ratio.unwrap() - 1.5).abs() < 1e-12, "{c:?}");
        priced(&mut spec, (0.0, 0.0), (3.0, 12.0));
        assert_eq!(costs(&spec, &tokens).ratio, None);
    }

    fn passing() -> Judgement {
        Judgement {
            verdict: Verdict::Pass,
            reason: Some(Reason::AnalysisPassed),
            message: "all checks within limits".to_owned(),
            failed: Vec::new(),
            advance: true,
        }
    }

    /// A canary costing more than maxCostIncrease × stable fails the analysis: CostExceeded.
    #[test]
    fn cost_over_the_limit_fails() {
        let mut analysis = spec().analysis;
        analysis.thresholds.max_cost_increase = Some(1.2);
        let costs = Costs { canary: Some(0.3), stable: Some(0.2), ratio: Some(1.5) };
        let mut judgement = passing();
        judge_cost(&mut judgement, &analysis, &costs, 500.0);
        assert_eq!(judgement.verdict, Verdict::Fail);
        assert_eq!(judgement.reason, Some(Reason::CostExceeded));
        assert!(!judgement.advance);
        assert_eq!(judgement.failed[0].name, "cost-increase");
        assert!(judgement.message.contains("1.50 × stable's 0.2"), "{}", judgement.message);
    }

    /// Within the limit, or with too few canary requests, the cost does not fail the analysis.
    #[test]
    fn cost_within_limit_or_too_few_requests() {
        let mut analysis = spec().analysis;
        analysis.thresholds.max_cost_increase = Some(1.5);
        let within = Costs { canary: Some(0.28), stable: Some(0.2), ratio: Some(1.4) };
        let mut judgement = passing();
        judge_cost(&mut judgement, &analysis, &within, 500.0);
        assert_eq!(judgement, passing());
        let over = Costs { canary: Some(0.4), stable: Some(0.2), ratio: Some(2.0) };
        judge_cost(&mut judgement, &analysis, &over, 1.0);
        assert_eq!(judgement.verdict, Verdict::Pass);
        assert!(!judgement.advance);
        assert!(judgement.message.contains("too few to roll back"), "{}", judgement.message);
    }

    /// Costs are written with a few significant digits.
    #[test]
    fn money_is_short() {
        assert_eq!(money(0.18), "0.18");
        assert_eq!(money(0.012346), "0.01235");
        assert_eq!(money(0.0), "0");
        assert_eq!(money(12.5), "12.5");
        assert_eq!(money(1234.4), "1234");
    }
}
