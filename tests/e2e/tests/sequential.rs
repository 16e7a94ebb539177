//! The sequential judge end to end, on the real local control plane with a real Prometheus,
//! a real proxy and mock model servers: given a canary that fails twice as often as stable, well
//! inside every absolute limit, when traffic flows, then the judge rolls it back on the evidence
//! alone and status says how strong that evidence is, in words and in numbers.

use std::time::Duration;

use modelrollout_e2e::report;
use modelrollout_e2e::stack::{BoxError, Load, World, condition, phase, weight};
use modelrollout_mockllm::MockConfig;
use serde_json::json;

type Result<T = (), E = BoxError> = std::result::Result<T, E>;

/// Long enough for a rollout on a busy 2-core machine, short enough to fail before CI's limit.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

/// A 2× error regression (canary 20 %, stable 10 %, limit 50 %) is rolled back by the
/// sequential judge with ErrorRateIncreaseExceeded, the evidence in status.lastAnalysis and
/// the condition message in words; no threshold fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubled_canary_errors_are_rolled_back_on_the_evidence() -> Result {
    let world = World::new("sequential").await?;
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    world.stable.set_config(MockConfig {
        model: Some("gpt-4.1".into()),
        error_rate: 0.1,
        ..MockConfig::default()
    });
    world.canary.set_config(MockConfig {
        model: Some("claude-sonnet-4.5".into()),
        error_rate: 0.2,
        ..MockConfig::default()
    });
    let load = Load::start(&world.proxy, 40);
    let mut manifest = world.rollout(
        "chat",
        json!([{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]),
        &world.prometheus,
    );
    let analysis = &mut manifest["spec"]["analysis"];
    analysis["method"] = json!("Sequential");
    analysis["confidence"] = json!(0.95);
    // The absolute limits stay far away: only the comparison with stable can roll back.
    analysis["thresholds"] = json!({"maxErrorRate": 0.5, "maxLatencyP95": "10s"});
    analysis["failureLimit"] = json!(100);
    world.apply(&manifest)?;
    let rolled_back = world
        .wait_rollout("chat", "RolledBack", ROLLOUT_TIMEOUT, |r| phase(r) == "RolledBack")
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    assert_eq!(weight(&rolled_back), 0);
    let rolled = condition(&rolled_back, "RolledBack").ok_or("no RolledBack condition")?;
    assert_eq!(rolled["status"], "True");
    assert_eq!(rolled["reason"], "ErrorRateIncreaseExceeded", "{rolled}");
    let message = rolled["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("canary errors ")
            // The ratio to stable, or, when stable has had no error yet, the count against none.
            && (message.contains("× stable (≥ ")
                || message.contains("× stable (> 1×")
                || message.contains(" vs none on stable (≥ "))
            && message.contains("× with 95 % confidence) after "),
        "{message}"
    );
    let last = &rolled_back["status"]["lastAnalysis"];
    assert_eq!(last["verdict"], "Fail", "{last}");
    assert_eq!(last["failedChecks"][0]["name"], "sequential-errors", "{last}");
    let errors = &last["evidence"][0];
    assert_eq!(errors["metric"], "errors", "{errors}");
    // Rejected with α split over two metrics: errors are tested at 2/3 × 0.05, so E ≥ 30.
    let evidence = errors["evidence"].as_f64().ok_or("no evidence value")?;
    let lower = errors["ratioLowerBound"].as_f64().ok_or("no lower bound")?;
    let ratio = errors["ratio"].as_f64().ok_or("no ratio estimate")?;
    assert!(evidence >= 30.0 && lower >= 1.0 && ratio > lower, "{errors}");
    assert!(errors["canaryRequests"].as_i64().unwrap_or(0) > 0, "{errors}");
    let stored = &rolled_back["status"]["sequential"];
    assert!(stored["countedFrom"].is_string(), "{stored}");
    let (_, track) = world.proxy.chat("after-rollback", false).await?;
    assert_eq!(track, "stable");
    report(format_args!(
        "[sequential] 2× errors rolled back after {} requests: {message} (E = {evidence})",
        load.sent()
    ));
    load.stop().await;
    Ok(())
}
