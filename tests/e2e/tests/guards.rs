//! The guards of docs/guards.md end to end, on the real local control plane with a real
//! Prometheus, real proxies and mock model servers: a canary over its token budget steps back
//! and holds (never rolls back), a canary costing too much per request is rolled back with its
//! cost ratio in `kubectl get mro -o wide`, a tester's header forces an arm (counted apart),
//! a rate-limited canary falls back to stable through the proxy binary, and the preflight holds
//! a rollout at 0% on a refused key (until the Secret is fixed), a misspelt model or an
//! unreachable endpoint.
//!
//! Each scenario has its own namespace (or none), proxy, model servers and controller; they
//! share one cluster and one Prometheus, and run concurrently.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use modelrollout_e2e::process::Supervised;
use modelrollout_e2e::report;
use modelrollout_e2e::stack::{
    ALIAS, BoxError, Load, World, binary, condition, condition_true, free_port, get_text, phase,
    weight,
};
use modelrollout_mockllm::{MockConfig, MockServer};
use serde_json::{Value, json};

type Result<T = (), E = BoxError> = std::result::Result<T, E>;

/// Long enough for a rollout on a busy 2-core machine, short enough to fail before CI's limit.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

fn mock(model: &str, prompt_tokens: u32, completion_tokens: u32) -> MockConfig {
    MockConfig {
        model: Some(model.into()),
        prompt_tokens,
        completion_tokens,
        ..MockConfig::default()
    }
}

/// The sample of `name` with all `labels` in a Prometheus text exposition (0 when absent).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One chat request to `api` with extra headers; returns the status, the track and the body.
async fn chat_with(api: SocketAddr, headers: &[(&str, &str)]) -> Result<(u16, String, Value)> {
    let body = json!({"model": ALIAS, "messages": [{"role": "user", "content": "Hello"}]});
    let mut request = Request::post(format!("http://{api}/v1/chat/completions"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_string())))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request)).await??;
    let status = response.status().as_u16();
    let track = modelrollout_e2e::stack::track_of(response.headers());
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, track, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// a. Over its token budget the canary steps back to the first step and holds there, Paused
/// with reason BudgetExceeded and the measured rate, and never rolls back for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_canary_steps_back_and_holds() -> Result {
    let world = World::new("budget").await?;
    world.canary.set_config(mock("claude-sonnet-4.5", 1, 1));
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    let load = Load::start(&world.proxy, 40);
    let mut rollout = world.rollout(
        "chat",
        json!([{"setWeight": 10}, {"setWeight": 40}, {"pause": {}}, {"setWeight": 100}]),
        &world.prometheus,
    );
    rollout["spec"]["analysis"]["thresholds"]["maxCanaryTokensPerMinute"] = json!(20000);
    world.apply(&rollout)?;
    world
        .wait_rollout("chat", "the manual gate at 40%", ROLLOUT_TIMEOUT, |r| {
            r["status"]["currentStepIndex"] == 2
                && weight(r) == 40
                && condition_true(r, "RoutingApplied")
        })
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    let fitting = world.get("chat")?;
    let within = condition(&fitting, "WithinBudget").ok_or("no WithinBudget condition")?;
    assert_eq!(within["status"], "True", "{within}");

    // 300 tokens a request at 40% of 40 req/s is ~288 000 tokens/min: far over 20 000.
    world.canary.set_config(mock("claude-sonnet-4.5", 100, 200));
    let stepped = world
        .wait_rollout("chat", "a step back for the budget", ROLLOUT_TIMEOUT, |r| {
            weight(r) == 10 && condition(r, "WithinBudget").is_some_and(|c| c["status"] == "False")
        })
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    let over = condition(&stepped, "WithinBudget").ok_or("no WithinBudget condition")?;
    assert_eq!(over["reason"], "BudgetExceeded");
    let message = over["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("tokens/min at 40%, over its budget of 20000"), "{message}");
    assert_eq!(stepped["status"]["currentStepIndex"], 0);

    // It holds over the next analyses (at 10% it is still over): Paused, never RolledBack.
    let seen = stepped["status"]["lastAnalysis"]["time"].clone();
    let held = world
        .wait_rollout("chat", "two more analyses", ROLLOUT_TIMEOUT, |r| {
            r["status"]["lastAnalysis"]["time"] != seen
                && condition_true(r, "RoutingApplied")
                && condition(r, "Progressing").is_some_and(|c| c["reason"] == "BudgetExceeded")
        })
        .await?;
    assert_eq!((phase(&held), weight(&held)), ("Paused", 10), "{}", held["status"]);
    assert!(!condition_true(&held, "RolledBack"));
    let rate = held["status"]["lastAnalysis"]["canary"]["tokensPerMinute"].as_f64().unwrap_or(0.0);
    assert!(rate > 20000.0, "{}", held["status"]["lastAnalysis"]);
    let reasons: Vec<String> = world.events("chat")?.into_iter().map(|(r, _)| r).collect();
    assert!(reasons.contains(&"BudgetExceeded".to_owned()), "{reasons:?}");
    assert!(!reasons.contains(&"RolledBack".to_owned()), "{reasons:?}");
    let described = world.namespace.kubectl_ok(["describe", "mro", "chat"])?;
    assert!(described.contains("WithinBudget") && described.contains("BudgetExceeded"));
    report(format_args!(
        "[budget] stepped back 40% → 10% and held: {message}; canary now {rate:.0} tokens/min"
    ));
    load.stop().await;
    Ok(())
}

/// b. With pricing on both arms the canary's cost per request is compared with stable's: over
/// maxCostIncrease it is rolled back (CostExceeded), and `kubectl get mro -o wide` shows the
/// ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_canary_is_rolled_back_and_the_ratio_shown() -> Result {
    let world = World::new("cost").await?;
    // Stable answers with 10 + 20 tokens, the canary with 10 + 100: 110 / 30 ≈ 3.7 × the cost.
    world.canary.set_config(mock("claude-sonnet-4.5", 10, 100));
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    let load = Load::start(&world.proxy, 40);
    let mut rollout = world.rollout(
        "chat",
        json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]),
        &world.prometheus,
    );
    let price = json!({"inputPerMillionTokens": 1, "outputPerMillionTokens": 1});
    rollout["spec"]["stable"]["pricing"] = price.clone();
    rollout["spec"]["canary"]["pricing"] = price;
    rollout["spec"]["analysis"]["thresholds"]["maxCostIncrease"] = json!(1.5);
    world.apply(&rollout)?;
    let rolled_back = world
        .wait_rollout("chat", "RolledBack", ROLLOUT_TIMEOUT, |r| phase(r) == "RolledBack")
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    let rolled = condition(&rolled_back, "RolledBack").ok_or("no RolledBack condition")?;
    assert_eq!(rolled["reason"], "CostExceeded", "{rolled}");
    let analysis = &rolled_back["status"]["lastAnalysis"];
    let ratio = analysis["costRatio"].as_f64().ok_or("no costRatio")?;
    assert!((3.0..4.5).contains(&ratio), "{analysis}");
    assert!(analysis["canary"]["costPer1kRequests"].as_f64().is_some(), "{analysis}");
    let wide = world.namespace.kubectl_ok(["get", "mro", "chat", "-o", "wide"])?;
    let header = wide.lines().next().unwrap_or_default();
    assert!(header.contains("COST-RATIO"), "{wide}");
    let narrow = world.namespace.kubectl_ok(["get", "mro", "chat"])?;
    assert!(!narrow.contains("COST-RATIO"), "only -o wide shows it: {narrow}");
    report(format_args!(
        "[cost] rolled back: {}; kubectl get mro -o wide:\n{wide}",
        rolled["message"].as_str().unwrap_or_default()
    ));
    load.stop().await;
    Ok(())
}

/// c. With spec.routing.forceArmHeader a tester reaches the canary at 0%; forced requests are
/// counted in gray_release_forced_requests_total, not in what analysis reads, and a wrong value
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_arm_header_reaches_the_canary_at_zero() -> Result {
    let world = World::new("forced").await?;
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    let mut rollout =
        world.rollout("chat", json!([{"pause": {}}, {"setWeight": 100}]), &world.prometheus);
    rollout["spec"]["routing"]["forceArmHeader"] = json!("X-Force-Arm");
    world.apply(&rollout)?;
    world
        .wait_rollout("chat", "Paused at 0%", ROLLOUT_TIMEOUT, |r| {
            phase(r) == "Paused" && weight(r) == 0 && condition_true(r, "RoutingApplied")
        })
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    let data = world.config_map_data()?;
    let document = data.get("chat.json").and_then(Value::as_str).unwrap_or_default();
    assert!(document.contains(r#""forceArmHeader":"X-Force-Arm""#), "{document}");

    let api = world.proxy.api;
    let (status, track, body) = chat_with(api, &[("X-Force-Arm", "canary")]).await?;
    assert_eq!((status, track.as_str()), (200, "canary"), "{body}");
    assert_eq!(body["model"], "claude-sonnet-4.5");
    let (status, track, _) = chat_with(api, &[]).await?;
    assert_eq!((status, track.as_str()), (200, "stable"));
    let (status, _, body) = chat_with(api, &[("X-Force-Arm", "canry")]).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_forced_arm", "{body}");

    let metrics = get_text(&format!("http://{}/metrics", world.proxy.admin)).await?;
    let canary_ok = [("rollout", "chat"), ("is_canary", "true"), ("reason", "ok")];
    assert_eq!(sample(&metrics, "gray_release_forced_requests_total", &canary_ok), 1.0);
    assert_eq!(sample(&metrics, "gray_release_requests_total", &canary_ok), 0.0);
    let stable_ok = [("rollout", "chat"), ("is_canary", "false"), ("reason", "ok")];
    assert_eq!(sample(&metrics, "gray_release_requests_total", &stable_ok), 1.0);
    report(format_args!("[forced] X-Force-Arm: canary answered by the canary at 0%"));
    Ok(())
}

/// d. An upstream 429 on the canary with --fallback-to-stable, through the proxy binary: the
/// user is answered by stable, and the canary's 429s are counted as `rate_limited` (which
/// analysis leaves out of the error rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_canary_falls_back_to_stable() -> Result {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let stable = MockServer::start(mock("gpt-4.1", 10, 20), any).await?;
    let canary = MockServer::start(
        MockConfig { error_rate: 1.0, error_status: 429, ..mock("claude-sonnet-4.5", 10, 20) },
        any,
    )
    .await?;
    let dir =
        std::env::temp_dir().join(format!("modelrollout-e2e-fallback-{}", std::process::id()));
    let routing = dir.join("routing");
    std::fs::create_dir_all(&routing)?;
    let document = json!({
        "version": 1, "rollout": "chat", "namespace": "ai", "generation": 1, "model": ALIAS,
        "stable": {"model": "gpt-4.1", "endpoint": stable.base_url()},
        "canary": {"model": "claude-sonnet-4.5", "endpoint": canary.base_url()},
        "canaryWeight": 100, "phase": "Progressing"
    });
    std::fs::write(routing.join("chat.json"), document.to_string())?;
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut command = Command::new(binary("modelrollout-proxy")?);
    command
        .args(["--listen", &api.to_string(), "--admin-listen", &admin.to_string()])
        .arg("--routing-dir")
        .arg(&routing)
        .args(["--fallback-to-stable", "--retry-backoff", "10ms", "--worker-threads", "1"]);
    let proxy = Supervised::spawn("proxy", &command, &dir.join("proxy.log"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_text(&format!("http://{admin}/readyz")).await.ok().as_deref() != Some("ready\n") {
        if Instant::now() > deadline {
            return Err(format!("the proxy did not get ready\n{}", proxy.log_tail(20)).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, track, body) = chat_with(api, &[]).await?;
    assert_eq!((status, track.as_str()), (200, "stable"), "{body}");
    assert_eq!(body["model"], "gpt-4.1");
    assert_eq!(canary.request_count(), 2, "the canary was tried and retried once");
    let metrics = get_text(&format!("http://{admin}/metrics")).await?;
    let limited = [("is_canary", "true"), ("status", "error"), ("reason", "rate_limited")];
    assert_eq!(sample(&metrics, "gray_release_requests_total", &limited), 2.0, "{metrics}");
    let served = [("is_canary", "false"), ("reason", "ok")];
    assert_eq!(sample(&metrics, "gray_release_requests_total", &served), 1.0);
    report(format_args!("[fallback] canary 429 ×2 → answered by stable, counted rate_limited"));
    Ok(())
}

/// e. Preflight: a canary whose Secret holds a key its endpoint refuses stays Pending at 0%
/// with PreflightPassed=False/Unauthorized (the endpoint and the Secret key named, never the
/// value) and a Warning Event; once the Secret is fixed the rollout goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_holds_at_zero_until_the_secret_is_fixed() -> Result {
    let world = World::new("preflight-key").await?;
    let right = "sk-preflight-right-4417";
    let wrong = "sk-preflight-wrong-9021";
    world.canary.set_config(MockConfig {
        api_key: Some(right.into()),
        ..mock("claude-sonnet-4.5", 10, 20)
    });
    world.proxy.write_credential("relay", "api-key", right)?;
    let secret = |value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "relay"},
               "stringData": {"api-key": value}})
    };
    world.apply(&secret(wrong))?;
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    let load = Load::start(&world.proxy, 20);
    let mut rollout =
        world.rollout("chat", json!([{"setWeight": 50}, {"pause": {}}]), &world.prometheus);
    rollout["spec"]["canary"]["credentialsSecretRef"] = json!({"name": "relay", "key": "api-key"});
    world.apply(&rollout)?;

    let held = world
        .wait_rollout("chat", "PreflightPassed=False", ROLLOUT_TIMEOUT, |r| {
            condition(r, "PreflightPassed").is_some_and(|c| c["status"] == "False")
        })
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    let failed = condition(&held, "PreflightPassed").ok_or("no PreflightPassed condition")?;
    assert_eq!(failed["reason"], "Unauthorized", "{failed}");
    let message = failed["message"].as_str().unwrap_or_default();
    let expected = format!(
        "canary endpoint {} answered 401 with credential relay/api-key: the key is missing, \
         revoked or for another account",
        world.canary.base_url()
    );
    assert!(message.starts_with(&expected), "{message}");
    assert_eq!((phase(&held), weight(&held)), ("Pending", 0), "{}", held["status"]);
    let described = world.namespace.kubectl_ok(["describe", "modelrollout", "chat"])?;
    assert!(
        described.contains("PreflightFailed") && described.contains("Unauthorized"),
        "{described}"
    );
    assert!(!described.contains(wrong) && !held.to_string().contains(wrong), "the key leaked");
    assert!(!controller.log_tail(400).contains(wrong), "the key is in the controller's log");
    let table = world.namespace.kubectl_ok(["get", "modelrollout", "chat", "-o", "wide"])?;
    assert!(
        table.contains("Pending")
            && table.contains("waiting at 0%, preflight failed: canary endpoint"),
        "{table}"
    );
    report(format_args!("[preflight-key] held: {message}"));

    world.apply(&secret(right))?;
    let fixed_at = Instant::now();
    let moved = world
        .wait_rollout("chat", "the first step after the fix", ROLLOUT_TIMEOUT, |r| {
            condition_true(r, "PreflightPassed")
                && weight(r) == 50
                && condition_true(r, "RoutingApplied")
        })
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    report(format_args!(
        "[preflight-key] Secret fixed -> 50% canary in {:.1}s (retry backoff 5s, 10s, ...)",
        fixed_at.elapsed().as_secs_f64()
    ));
    assert_eq!(
        condition(&moved, "PreflightPassed").map(|c| c["reason"].clone()),
        Some(json!("EndpointsReady"))
    );
    let reasons: Vec<String> =
        world.events("chat")?.into_iter().map(|(reason, _)| reason).collect();
    let failed_at =
        reasons.iter().position(|r| r == "PreflightFailed").ok_or("no PreflightFailed Event")?;
    let passed_at =
        reasons.iter().position(|r| r == "PreflightPassed").ok_or("no PreflightPassed Event")?;
    assert!(failed_at < passed_at, "{reasons:?}");
    // The proxy sends the key from its credential file: the canary answers.
    let (status, track, _) = chat_with(world.proxy.api, &[("X-Session-ID", "after-fix")]).await?;
    assert_eq!(status, 200, "through the proxy ({track})");
    load.stop().await;
    Ok(())
}

/// f. Preflight: a misspelt canary model is named with what the endpoint serves and the
/// closest name; an unreachable stable endpoint is named with its cause; nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_model_and_an_unreachable_endpoint_are_named() -> Result {
    let world = World::new("preflight-model").await?;
    world.canary.set_config(MockConfig {
        listed_models: Some(vec!["claude-opus-4-1".into(), "claude-sonnet-4-5".into()]),
        ..mock("claude-sonnet-4-5", 10, 20)
    });
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    let closed = format!("http://127.0.0.1:{}/v1", free_port());
    let mut rollout = world.rollout("chat", json!([{"setWeight": 50}]), &world.prometheus);
    rollout["spec"]["stable"]["endpoint"] = json!(closed);
    world.apply(&rollout)?;
    let held = world
        .wait_rollout("chat", "PreflightPassed=False", ROLLOUT_TIMEOUT, |r| {
            condition(r, "PreflightPassed").is_some_and(|c| c["status"] == "False")
        })
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    let failed = condition(&held, "PreflightPassed").ok_or("no PreflightPassed condition")?;
    assert_eq!(failed["reason"], "ModelNotFound", "{failed}");
    let message = failed["message"].as_str().unwrap_or_default();
    let expected = format!(
        "canary endpoint {} does not serve claude-sonnet-4.5 (it lists claude-opus-4-1, \
         claude-sonnet-4-5): did you mean claude-sonnet-4-5?; stable endpoint {closed} is \
         unreachable: ",
        world.canary.base_url()
    );
    assert!(message.starts_with(&expected), "{message}");
    assert_eq!((phase(&held), weight(&held)), ("Pending", 0), "{}", held["status"]);
    let notes: Vec<(String, String)> = world.events("chat")?;
    assert!(
        notes
            .iter()
            .any(|(reason, note)| reason == "PreflightFailed" && note.contains("did you mean")),
        "{notes:?}"
    );
    report(format_args!("[preflight-model] held: {message}"));
    Ok(())
}
