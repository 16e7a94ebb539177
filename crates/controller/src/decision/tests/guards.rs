//! The guards in the walk: token budget (hold, step back, never roll back) and cost per request.

use modelrollout_analysis::{ArmTokens, TokenSample};
use modelrollout_api::rollout::Pricing;

use super::*;

/// Token counts over 60 s: the canary's `per_minute` tokens split evenly, over `requests`.
fn tokens(canary_per_minute: f64, canary_requests: f64) -> TokenSample {
    let half = canary_per_minute / 2.0;
    TokenSample {
        canary: ArmTokens { prompt: half, completion: half, requests: canary_requests },
        stable: ArmTokens { prompt: 10_000.0, completion: 20_000.0, requests: 1000.0 },
        range: StdDuration::from_secs(60),
    }
}

fn with_budget(limit: i64) -> Harness {
    Harness::with(|r| r.spec.analysis.thresholds.max_canary_tokens_per_minute = Some(limit))
}

/// Walks to step 3 (index 2) at 25% with the canary well within any budget.
fn walk_to_25(h: &mut Harness) {
    h.tokens = Ok(tokens(10.0, 100.0));
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    h.after(60);
    h.after(1);
    assert_eq!((h.step(), h.weight()), (Some(2), 25));
}

/// Over the budget, the weight steps back to the last step that fits (by the rate measured
/// now), the rollout shows Paused/BudgetExceeded with the rate, and nothing rolls back.
#[test]
fn over_budget_steps_back_to_the_last_step_that_fits() {
    let mut h = with_budget(1000);
    walk_to_25(&mut h);
    h.tokens = Ok(tokens(2000.0, 500.0));
    h.after(10);
    assert_eq!((h.step(), h.weight(), h.phase()), (Some(0), 5, Phase::Paused));
    let budget = h.condition(ConditionType::WithinBudget);
    assert_eq!((budget.status.as_str(), budget.reason.as_str()), ("False", "BudgetExceeded"));
    assert!(
        budget
            .message
            .contains("2000 tokens/min at 25%, over its budget of 1000: back to step 1/6 (5%)"),
        "{}",
        budget.message
    );
    assert_eq!(h.condition(ConditionType::Progressing).reason, "BudgetExceeded");
    assert_eq!(h.count(EventReason::BudgetExceeded), 1);
    let analysis = h.status().last_analysis.clone().unwrap();
    assert_eq!(analysis.canary.tokens_per_minute, Some(2000.0));
    // Between analyses (waiting for the proxies) it stays Paused for the same reason.
    h.after(1);
    assert_eq!((h.weight(), h.phase()), (5, Phase::Paused));
    assert_ne!(h.phase(), Phase::RolledBack);
}

/// Within the budget but with the next step projected over it, the step holds (no advance, no
/// new Event); once the rate drops it goes on, announcing it is within budget again.
#[test]
fn holds_while_the_next_step_would_exceed_the_budget() {
    let mut h = with_budget(1000);
    walk_to_25(&mut h);
    h.tokens = Ok(tokens(2000.0, 500.0));
    h.after(10); // back to 5%
    h.after(1);
    // 400/min at 5%: 25% would use 2000.
    h.tokens = Ok(tokens(400.0, 500.0));
    h.run(10, 5);
    assert_eq!((h.step(), h.weight(), h.phase()), (Some(0), 5, Phase::Paused));
    let message = &h.condition(ConditionType::WithinBudget).message;
    assert!(message.contains("step 3/6 (25%) would use about 2000"), "{message}");
    assert_eq!(h.count(EventReason::BudgetExceeded), 1, "one Event per verdict change");
    // Demand falls: 100/min at 5% → 500 at 25%.
    h.tokens = Ok(tokens(100.0, 500.0));
    h.after(10);
    assert_eq!(h.condition(ConditionType::WithinBudget).status, "True");
    assert_eq!(h.count(EventReason::WithinBudget), 1);
    assert_eq!((h.step(), h.phase()), (Some(1), Phase::Progressing), "advanced to the pause");
}

/// Over the budget at the first step there is nothing lower: it holds for ever, never rolls
/// back, and its failure count does not grow.
#[test]
fn budget_alone_never_rolls_back() {
    let mut h = with_budget(100);
    h.tokens = Ok(tokens(5000.0, 500.0));
    h.reconcile();
    h.after(1);
    h.after(1);
    h.run(10, 20);
    assert_eq!((h.step(), h.weight(), h.phase()), (Some(0), 5, Phase::Paused));
    assert_eq!(h.status().consecutive_failures, Some(0));
    assert_eq!(h.count(EventReason::RolledBack), 0);
    assert_eq!(h.count(EventReason::BudgetExceeded), 1);
    let message = &h.condition(ConditionType::WithinBudget).message;
    assert!(message.contains("no earlier step has a lower weight"), "{message}");
}

fn priced(r: &mut ModelRollout, max_increase: Option<f64>) {
    let price = |i, o| Some(Pricing { input_per_million_tokens: i, output_per_million_tokens: o });
    r.spec.stable.pricing = price(2.0, 8.0);
    r.spec.canary.pricing = price(2.0, 8.0);
    r.spec.analysis.thresholds.max_cost_increase = max_increase;
}

/// With pricing, each arm's cost per 1000 requests and the canary's ratio are recorded.
#[test]
fn cost_figures_are_recorded() {
    let mut h = Harness::with(|r| priced(r, None));
    // Stable: (10k × 2 + 20k × 8) / 1e6 per 1000 requests = 0.18; the canary the same per request.
    h.tokens = Ok(TokenSample {
        canary: ArmTokens { prompt: 5000.0, completion: 10_000.0, requests: 500.0 },
        ..tokens(0.0, 0.0)
    });
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    let analysis = h.status().last_analysis.clone().unwrap();
    assert_eq!(analysis.verdict, Verdict::Pass);
    let (canary, stable) =
        (analysis.canary.cost_per_1k_requests, analysis.stable.cost_per_1k_requests);
    assert!((canary.unwrap() - 0.18).abs() < 1e-9 && (stable.unwrap() - 0.18).abs() < 1e-9);
    assert!((analysis.cost_ratio.unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(analysis.canary.tokens_per_minute, Some(15_000.0));
}

/// A canary costing more than maxCostIncrease × stable fails like any check: CostExceeded,
/// and a rollback at failureLimit.
#[test]
fn cost_over_the_limit_rolls_back() {
    let mut h = Harness::with(|r| priced(r, Some(1.5)));
    // Twice the tokens per request of stable.
    h.tokens = Ok(TokenSample {
        canary: ArmTokens { prompt: 10_000.0, completion: 20_000.0, requests: 500.0 },
        ..tokens(0.0, 0.0)
    });
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    assert_eq!(h.status().consecutive_failures, Some(1));
    let analysis = h.status().last_analysis.clone().unwrap();
    assert_eq!(analysis.failed_checks[0].reason, "CostExceeded");
    h.after(10);
    let rolled = h.condition(ConditionType::RolledBack);
    assert_eq!((rolled.status.as_str(), rolled.reason.as_str()), ("True", "CostExceeded"));
    assert!(
        rolled.message.contains("2.00 × stable's 0.18 (maxCostIncrease 1.5)"),
        "{}",
        rolled.message
    );
}

/// Without a budget or pricing no token counts are asked for (no extra queries).
#[test]
fn no_token_queries_without_guards() {
    let mut h = Harness::new();
    h.tokens = Err("token counts must not be asked for".to_owned());
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    assert_eq!(h.status().last_analysis.as_ref().unwrap().verdict, Verdict::Pass);
    assert!(h.status().conditions.iter().all(|c| c.type_ != "WithinBudget"));
}

/// A token query that fails is an analysis error, handled by onAnalysisError (Pause).
#[test]
fn token_query_errors_pause() {
    let mut h = with_budget(1000);
    h.tokens = Err("Prometheus at http://prometheus:9090 timed out".to_owned());
    h.reconcile();
    h.after(1);
    h.after(1);
    h.after(10);
    assert_eq!(h.status().last_analysis.as_ref().unwrap().verdict, Verdict::Error);
    assert_eq!(h.phase(), Phase::Paused);
}
