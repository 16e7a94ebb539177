//! The controller end to end, on the real local control plane with a real Prometheus, real
//! proxies and mock model servers: given a rollout, when traffic flows and the canary behaves
//! (or not), then the weight walks, holds or rolls back, and status, Events and the proxy agree.
//!
//! Each test has its own namespace, proxy, model servers and controller; they share the cluster
//! and (except the Prometheus-outage test) one Prometheus, and run concurrently.

use std::time::{Duration, Instant};

use modelrollout_e2e::report;
use modelrollout_e2e::stack::{
    ALIAS, BoxError, CONFIG_MAP, Load, World, condition, condition_true, phase, weight,
};
use modelrollout_mockllm::MockConfig;
use modelrollout_testprometheus::TestPrometheus;
use rustix::process::Signal;
use serde_json::{Value, json};

type Result<T = (), E = BoxError> = std::result::Result<T, E>;

/// Long enough for a rollout on a busy 2-core machine, short enough to fail before CI's limit.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

fn three_steps() -> Value {
    json!([{"setWeight": 20}, {"setWeight": 50}, {"setWeight": 100}])
}

/// Waits until the proxy reports `expected` for the rollout; returns when it did.
async fn proxy_reaches(
    world: &World,
    rollout: &str,
    expected: f64,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if world.proxy.canary_weight(world.namespace.name(), rollout).await == Some(expected) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the proxy did not report {expected}% for {rollout} within {timeout:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn faulty(model: &str, edit: impl FnOnce(&mut MockConfig)) -> MockConfig {
    let mut config = MockConfig { model: Some(model.into()), ..MockConfig::default() };
    edit(&mut config);
    config
}

/// a. A healthy canary walks the steps to 100 %: Promoted, `kubectl wait` works, and new
/// traffic goes to the canary. The Prometheus is the controller's default, not the rollout's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_promoted() -> Result {
    let world = World::new("healthy").await?;
    let flags = ["--leader-elect=false", "--prometheus-address", &world.prometheus];
    let controller = world.controller("controller", &flags)?;
    let load = Load::start(&world.proxy, 40);
    // This rollout names no Prometheus: the controller's --prometheus-address stands in.
    let mut manifest = world.rollout("chat", three_steps(), &world.prometheus);
    manifest["spec"]["analysis"].as_object_mut().map(|analysis| analysis.remove("prometheus"));
    world.apply(&manifest)?;
    let waited = world.namespace.kubectl([
        "wait",
        "modelrollout/chat",
        "--for=condition=Promoted",
        "--timeout=180s",
    ])?;
    let rollout = world.get("chat")?;
    assert!(
        waited.status.success(),
        "kubectl wait failed: {}\nstatus: {}\n{}",
        String::from_utf8_lossy(&waited.stderr),
        rollout["status"],
        controller.log_tail(30)
    );
    assert_eq!((phase(&rollout), weight(&rollout)), ("Promoted", 100));
    proxy_reaches(&world, "chat", 100.0, Duration::from_secs(30)).await?;
    let (status, track) = world.proxy.chat("after-promotion", false).await?;
    assert_eq!((status.as_u16(), track.as_str()), (200, "canary"));
    let reasons: Vec<String> = world.events("chat")?.into_iter().map(|(r, _)| r).collect();
    assert!(
        reasons.contains(&"StepAdvanced".to_owned()) && reasons.contains(&"Promoted".to_owned()),
        "{reasons:?}"
    );
    let columns = world.namespace.kubectl_ok(["get", "mro", "chat"])?;
    assert!(columns.contains("Promoted") && columns.contains("100"), "{columns}");
    report(format_args!(
        "[healthy] promoted after {} requests; kubectl get mro:\n{columns}",
        load.sent()
    ));
    load.stop().await;
    Ok(())
}

/// b. A canary with 30 % errors is rolled back (ErrorRateExceeded) and the proxy goes to 0 %;
/// prints the time from fault injection to 0 % canary in the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back() -> Result {
    let world = World::new("failing").await?;
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    let load = Load::start(&world.proxy, 40);
    let mut manifest = world.rollout(
        "chat",
        json!([{"setWeight": 30}, {"pause": {}}, {"setWeight": 100}]),
        &world.prometheus,
    );
    // This scenario is about the thresholds: the sequential judge has its own (sequential.rs).
    manifest["spec"]["analysis"]["method"] = json!("Threshold");
    world.apply(&manifest)?;
    world
        .wait_rollout("chat", "weight 30 applied", ROLLOUT_TIMEOUT, |r| {
            weight(r) == 30 && condition_true(r, "RoutingApplied")
        })
        .await?;
    let injected = Instant::now();
    world.canary.set_config(faulty("claude-sonnet-4.5", |c| c.error_rate = 0.3));
    let rolled_back = world
        .wait_rollout("chat", "RolledBack", ROLLOUT_TIMEOUT, |r| phase(r) == "RolledBack")
        .await
        .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    let at_zero = proxy_reaches(&world, "chat", 0.0, Duration::from_secs(30)).await?;
    let rolled = condition(&rolled_back, "RolledBack").ok_or("no RolledBack condition")?;
    assert_eq!(rolled["status"], "True");
    assert_eq!(rolled["reason"], "ErrorRateExceeded", "{rolled}");
    let message = rolled["message"].as_str().unwrap_or_default();
    assert!(message.contains("canary error rate") && message.contains("> 5%"), "{message}");
    let waited = world.namespace.kubectl([
        "wait",
        "modelrollout/chat",
        "--for=condition=RolledBack",
        "--timeout=10s",
    ])?;
    assert!(waited.status.success());
    let (_, track) = world.proxy.chat("after-rollback", false).await?;
    assert_eq!(track, "stable");
    report(format_args!(
        "[failing] fault injected → proxy at 0% canary in {:.1}s (analysis interval 2s, failureLimit 2, scrape 1s): {message}",
        at_zero.duration_since(injected).as_secs_f64()
    ));
    load.stop().await;
    Ok(())
}

/// c. A slow canary is rolled back on p95 latency; a slow first token on TTFT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_is_rolled_back_on_latency_and_ttft() -> Result {
    for (case, reason) in [("latency", "LatencyExceeded"), ("ttft", "TimeToFirstTokenExceeded")] {
        let world = World::new(case).await?;
        let _controller = world.controller("controller", &["--leader-elect=false"])?;
        world.canary.set_config(faulty("claude-sonnet-4.5", |c| match case {
            "latency" => c.latency = Duration::from_millis(1500),
            _ => c.time_to_first_token = Duration::from_millis(1500),
        }));
        let load = Load::start(&world.proxy, 40);
        let mut manifest = world.rollout(
            "chat",
            json!([{"setWeight": 40}, {"pause": {}}, {"setWeight": 100}]),
            &world.prometheus,
        );
        manifest["spec"]["analysis"]["thresholds"] =
            json!({"maxErrorRate": 0.05, "maxLatencyP95": "1s", "maxTimeToFirstTokenP95": "1s"});
        if case == "ttft" {
            manifest["spec"]["analysis"]["thresholds"]["maxLatencyP95"] = json!("10s");
        }
        manifest["spec"]["analysis"]["method"] = json!("Threshold");
        world.apply(&manifest)?;
        let rollout = world
            .wait_rollout("chat", "RolledBack", ROLLOUT_TIMEOUT, |r| phase(r) == "RolledBack")
            .await?;
        let rolled = condition(&rollout, "RolledBack").ok_or("no RolledBack condition")?;
        assert_eq!(rolled["reason"], reason, "{rolled}");
        report(format_args!("[{case}] rolled back: {}", rolled["message"]));
        load.stop().await;
    }
    Ok(())
}

/// d. Both arms failing alike is a provider outage: the rollout holds, not rolls back, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_arms_failing_hold() -> Result {
    let world = World::new("outage").await?;
    let _controller = world.controller("controller", &["--leader-elect=false"])?;
    world.stable.set_config(faulty("gpt-4.1", |c| c.error_rate = 0.3));
    world.canary.set_config(faulty("claude-sonnet-4.5", |c| c.error_rate = 0.3));
    let load = Load::start(&world.proxy, 40);
    world.apply(&world.rollout(
        "chat",
        json!([{"setWeight": 50}, {"setWeight": 100}]),
        &world.prometheus,
    ))?;
    let held = world
        .wait_rollout("chat", "BothArmsFailing", ROLLOUT_TIMEOUT, |r| {
            condition(r, "AnalysisHealthy").is_some_and(|c| c["reason"] == "BothArmsFailing")
        })
        .await?;
    // Several more checks: still held at 50 %, never rolled back.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = world.get("chat")?;
    assert_eq!((phase(&later), weight(&later)), ("Progressing", 50), "{}", later["status"]);
    let message =
        condition(&held, "AnalysisHealthy").map(|c| c["message"].to_string()).unwrap_or_default();
    assert!(message.contains("not the canary's fault"), "{message}");
    report(format_args!("[outage] held at 50%: {message}"));
    load.stop().await;
    Ok(())
}

/// e. Prometheus stopped mid-rollout: Paused (AnalysisError), and it continues when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_pauses_then_continues() -> Result {
    let world = World::with_prometheus("prometheus-outage", None).await?;
    let mut prometheus = TestPrometheus::start(&world.scrape_targets(), Duration::from_secs(1))?;
    let _controller = world.controller("controller", &["--leader-elect=false"])?;
    let load = Load::start(&world.proxy, 40);
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "6s"}}, {"setWeight": 50}, {"setWeight": 100}]);
    world.apply(&world.rollout("chat", steps, &prometheus.address()))?;
    world
        .wait_rollout("chat", "weight 20 applied", ROLLOUT_TIMEOUT, |r| {
            weight(r) == 20 && condition_true(r, "RoutingApplied")
        })
        .await?;
    prometheus.stop();
    let paused = world
        .wait_rollout("chat", "Paused on AnalysisError", ROLLOUT_TIMEOUT, |r| {
            phase(r) == "Paused"
                && condition(r, "Progressing").is_some_and(|c| c["reason"] == "AnalysisError")
        })
        .await?;
    assert_eq!(weight(&paused), 20, "the weight holds while Prometheus is away");
    report(format_args!("[prometheus-outage] paused: {}", paused["status"]["message"]));
    prometheus.restart()?;
    world.wait_rollout("chat", "Promoted", ROLLOUT_TIMEOUT, |r| phase(r) == "Promoted").await?;
    load.stop().await;
    Ok(())
}

/// f. An invalid spec the schema cannot catch (an unknown PromQL placeholder) → InvalidSpec,
/// and the ConfigMap is untouched (a key written by someone else stays as it was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_touches_no_traffic() -> Result {
    let world = World::new("invalid").await?;
    let _controller = world.controller("controller", &["--leader-elect=false"])?;
    world.namespace.kubectl_ok([
        "create",
        "configmap",
        CONFIG_MAP,
        "--from-literal=notes.txt=kept",
    ])?;
    let mut manifest = world.rollout("chat", three_steps(), &world.prometheus);
    manifest["spec"]["analysis"]["metrics"] =
        json!([{"name": "cost", "query": "sum(x{rollout=\"{{rolout}}\"})", "max": 1}]);
    world.apply(&manifest)?;
    let rollout = world
        .wait_rollout("chat", "InvalidSpec", ROLLOUT_TIMEOUT, |r| condition_true(r, "InvalidSpec"))
        .await?;
    assert_eq!(phase(&rollout), "Failed");
    let message =
        condition(&rollout, "InvalidSpec").map(|c| c["message"].to_string()).unwrap_or_default();
    assert!(message.contains("rolout"), "{message}");
    let data = world.config_map_data()?;
    assert_eq!(data.keys().collect::<Vec<_>>(), ["notes.txt"], "the rollout wrote nothing");
    let events = world.events("chat")?;
    assert!(events.iter().any(|(reason, _)| reason == "InvalidSpec"), "{events:?}");
    report(format_args!("[invalid] {message}"));
    Ok(())
}

/// g. Two rollouts share one ConfigMap with a key someone else wrote; deleting one mid-way
/// removes only its key, and the proxy serves that alias from stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_rollout_removes_only_its_key() -> Result {
    let world = World::new("delete").await?;
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    world.namespace.kubectl_ok([
        "create",
        "configmap",
        CONFIG_MAP,
        "--from-literal=notes.txt=kept",
    ])?;
    let load = Load::start(&world.proxy, 40);
    let gate = json!([{"setWeight": 30}, {"pause": {}}, {"setWeight": 100}]);
    world.apply(&world.rollout("chat", gate.clone(), &world.prometheus))?;
    let mut other = world.rollout("summaries", gate, &world.prometheus);
    other["spec"]["model"] = json!("summaries-default");
    world.apply(&other)?;
    for name in ["chat", "summaries"] {
        world
            .wait_rollout(name, "weight 30 applied", ROLLOUT_TIMEOUT, |r| {
                weight(r) == 30 && condition_true(r, "RoutingApplied")
            })
            .await
            .map_err(|e| format!("{e}\n{}", controller.log_tail(30)))?;
    }
    let mut keys: Vec<String> = world.config_map_data()?.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["chat.json", "notes.txt", "summaries.json"]);
    world.namespace.kubectl_ok(["delete", "modelrollout", "chat", "--timeout=60s"])?;
    let mut keys: Vec<String> = world.config_map_data()?.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["notes.txt", "summaries.json"]);
    assert_eq!(world.config_map_data()?["notes.txt"], "kept");
    // The alias stays on stable in the proxy.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tracks: Vec<String> = tracks_of(&world, 20).await?;
        if tracks.iter().all(|t| t == "stable") {
            break;
        }
        assert!(Instant::now() < deadline, "alias {ALIAS} still reaches the canary: {tracks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.stop().await;
    Ok(())
}

async fn tracks_of(world: &World, count: usize) -> Result<Vec<String>> {
    let mut tracks = Vec::new();
    for i in 0..count {
        let (_, track) = world.proxy.chat(&format!("probe-{i}"), false).await?;
        tracks.push(track);
    }
    Ok(tracks)
}

/// h. The controller killed (SIGKILL) and restarted at random moments, ten times during one
/// rollout: it finishes, and each step is entered exactly once (one StepAdvanced per step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_ten_times_neither_skips_nor_repeats() -> Result {
    let world = World::new("kill").await?;
    let load = Load::start(&world.proxy, 40);
    let steps = json!([
        {"setWeight": 10}, {"pause": {"duration": "3s"}}, {"setWeight": 20}, {"pause": {"duration": "3s"}},
        {"setWeight": 40}, {"pause": {"duration": "3s"}}, {"setWeight": 60}, {"setWeight": 80}, {"setWeight": 100}
    ]);
    world.apply(&world.rollout("chat", steps, &world.prometheus))?;
    let mut kills = 0;
    let mut controller = world.controller("controller-0", &["--leader-elect=false"])?;
    while kills < 10 {
        let pause = Duration::from_millis(300 + u64::from(rand::random::<u16>() % 1700));
        tokio::time::sleep(pause).await;
        controller.signal(Signal::KILL);
        controller.wait_exit(Duration::from_secs(5));
        kills += 1;
        controller = world.controller(&format!("controller-{kills}"), &["--leader-elect=false"])?;
    }
    let rollout =
        world.wait_rollout("chat", "Promoted", ROLLOUT_TIMEOUT, |r| phase(r) == "Promoted").await?;
    assert_eq!(weight(&rollout), 100);
    let events = world.events("chat")?;
    let mut entered: Vec<&str> =
        events.iter().filter(|(r, _)| r == "StepAdvanced").map(|(_, n)| n.as_str()).collect();
    entered.sort();
    let mut unique = entered.clone();
    unique.dedup();
    assert_eq!(entered, unique, "a step was entered twice: {events:?}");
    assert_eq!(events.iter().filter(|(r, _)| r == "Promoted").count(), 1, "{events:?}");
    report(format_args!("[kill] promoted after {kills} SIGKILLs; steps entered: {entered:?}"));
    load.stop().await;
    Ok(())
}

/// i. Two controllers: one leads; kill it and the other finishes the rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_from_a_killed_leader() -> Result {
    let world = World::new("leader").await?;
    let lease = ["--lease-duration", "4s", "--lease-renew", "1s"];
    let first = world.controller("controller-a", &lease)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = world.controller("controller-b", &lease)?;
    let holder = || -> Result<String> {
        Ok(world.namespace.kubectl_ok([
            "get",
            "lease",
            "modelrollout-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?)
    };
    assert_eq!(holder()?, "controller-a");
    let load = Load::start(&world.proxy, 40);
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"setWeight": 100}]);
    world.apply(&world.rollout("chat", steps, &world.prometheus))?;
    world.wait_rollout("chat", "weight 20", ROLLOUT_TIMEOUT, |r| weight(r) == 20).await?;
    let killed = Instant::now();
    first.signal(Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder()? != "controller-b" {
        assert!(
            Instant::now() < deadline,
            "controller-b did not take the lease\n{}",
            second.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = killed.elapsed();
    world.wait_rollout("chat", "Promoted", ROLLOUT_TIMEOUT, |r| phase(r) == "Promoted").await?;
    assert!(second.log().contains("leading"), "{}", second.log_tail(20));
    report(format_args!(
        "[leader] standby took over {:.1}s after the leader was killed (lease 4s)",
        took_over.as_secs_f64()
    ));
    load.stop().await;
    Ok(())
}

/// i2. SIGTERM: the leader finishes, gives the Lease up and exits; the standby takes over long
/// before the Lease (60 s) could have expired, which only a release allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease() -> Result {
    let world = World::new("sigterm").await?;
    let lease = ["--lease-duration", "60s", "--lease-renew", "1s"];
    let first = world.controller("controller-a", &lease)?;
    let holder = || -> Result<String> {
        Ok(world.namespace.kubectl_ok([
            "get",
            "lease",
            "modelrollout-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder().unwrap_or_default() != "controller-a" {
        assert!(Instant::now() < deadline, "controller-a never led\n{}", first.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = world.controller("controller-b", &lease)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !second.log().contains("standing by") {
        assert!(Instant::now() < deadline, "controller-b never stood by\n{}", second.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = Instant::now();
    first.signal(Signal::TERM);
    assert!(first.wait_exit(Duration::from_secs(30)), "controller-a ignored SIGTERM");
    assert!(first.log().contains("lease released"), "{}", first.log_tail(20));
    while holder()? != "controller-b" {
        assert!(
            stopped.elapsed() < Duration::from_secs(45),
            "controller-b did not take the released lease\n{}",
            second.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report(format_args!(
        "[sigterm] standby led {:.1}s after SIGTERM to the leader (lease 60s)",
        stopped.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// j. A manual gate waits until promoted; abort rolls back; retry starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_gate_abort_and_retry() -> Result {
    let world = World::new("manual").await?;
    let _controller = world.controller("controller", &["--leader-elect=false"])?;
    let load = Load::start(&world.proxy, 40);
    world.apply(&world.rollout(
        "chat",
        json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]),
        &world.prometheus,
    ))?;
    let at_gate = |r: &Value| {
        phase(r) == "Paused"
            && condition(r, "Progressing").is_some_and(|c| c["reason"] == "WaitingForPromotion")
    };
    world.wait_rollout("chat", "waiting at the gate", ROLLOUT_TIMEOUT, at_gate).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(at_gate(&world.get("chat")?), "the gate does not open on its own");
    world.namespace.kubectl_ok([
        "annotate",
        "mro",
        "chat",
        "rollouts.modelops.io/abort=t1 by tester",
    ])?;
    let aborted = world
        .wait_rollout("chat", "RolledBack", ROLLOUT_TIMEOUT, |r| phase(r) == "RolledBack")
        .await?;
    assert_eq!(
        condition(&aborted, "RolledBack").map(|c| c["reason"].clone()),
        Some(json!("ManualAbort"))
    );
    world.namespace.kubectl_ok([
        "annotate",
        "mro",
        "chat",
        "rollouts.modelops.io/retry=t2 by tester",
    ])?;
    world.wait_rollout("chat", "back at the gate", ROLLOUT_TIMEOUT, at_gate).await?;
    world.namespace.kubectl_ok([
        "annotate",
        "mro",
        "chat",
        "rollouts.modelops.io/promote=t3 by tester",
    ])?;
    world.wait_rollout("chat", "Promoted", ROLLOUT_TIMEOUT, |r| phase(r) == "Promoted").await?;
    let events = world.events("chat")?;
    let promote =
        events.iter().find(|(r, _)| r == "ManualPromote").ok_or("no ManualPromote event")?;
    assert!(promote.1.contains("t3 by tester"), "{promote:?}");
    for reason in ["ManualAbort", "ManualRetry", "ManualPromote"] {
        assert_eq!(events.iter().filter(|(r, _)| r == reason).count(), 1, "{reason}: {events:?}");
    }
    load.stop().await;
    Ok(())
}

/// The controller's ServiceAccount can do what the ClusterRole grants and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_permissions_are_least_privilege() -> Result {
    let world = World::new("rbac").await?;
    let kubeconfig = world.controller_kubeconfig.to_string_lossy().into_owned();
    let can = |verb: &str, resource: &str| -> Result<bool> {
        let output = world.cluster.kubectl([
            "--kubeconfig",
            &kubeconfig,
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            world.namespace.name(),
        ])?;
        Ok(String::from_utf8_lossy(&output.stdout).trim() == "yes")
    };
    assert!(can("watch", "modelrollouts.rollouts.modelops.io")?);
    assert!(can("patch", "modelrollouts.rollouts.modelops.io/status")?);
    assert!(can("patch", "configmaps")?);
    assert!(can("create", "events.events.k8s.io")?);
    // The preflight reads an arm's Secret by name; it may not enumerate or change Secrets.
    assert!(can("get", "secrets")?);
    for (verb, resource) in [
        ("list", "secrets"),
        ("watch", "secrets"),
        ("update", "secrets"),
        ("delete", "configmaps"),
        ("create", "pods"),
        ("delete", "modelrollouts.rollouts.modelops.io"),
    ] {
        assert!(!can(verb, resource)?, "{verb} {resource} must be forbidden");
    }
    let forbidden = world.cluster.kubectl([
        "--kubeconfig",
        &kubeconfig,
        "get",
        "secrets",
        "-n",
        world.namespace.name(),
    ])?;
    let stderr = String::from_utf8_lossy(&forbidden.stderr);
    assert!(!forbidden.status.success() && stderr.contains("forbidden"), "{stderr}");
    Ok(())
}
