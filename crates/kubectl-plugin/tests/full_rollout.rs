//! The plugin following a real rollout end to end: mock stable and canary models, the real
//! proxy under steady traffic, a real Prometheus, the real controller (the world of
//! `modelrollout-e2e`). Given a rollout with a manual gate, when it waits at the gate, then
//! `status` shows the analysis and the history, `promote` opens the gate, `status --watch`
//! exits 0 on Promoted, and the controller's Event names who promoted.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use modelrollout_e2e::stack::{BoxError, Load, World, condition, phase};
use serde_json::{Value, json};

/// Bound on each wait; a healthy rollout reaches its gate in well under a minute.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

type Result<T = (), E = BoxError> = std::result::Result<T, E>;

fn plugin(world: &World, args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_kubectl-modelrollout"))
        .arg("--kubeconfig")
        .arg(world.cluster.kubeconfig_path())
        .args(["-n", world.namespace.name()])
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()?)
}

/// `status --watch` in the background, bounded by [`ROLLOUT_TIMEOUT`].
async fn watch(world: &World, name: &str) -> Result<(Option<i32>, String)> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-modelrollout"))
        .arg("--kubeconfig")
        .arg(world.cluster.kubeconfig_path())
        .args(["-n", world.namespace.name(), "status", name, "--watch"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        let mut stdout = stdout;
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text).await.map(|_| text)
    });
    let status = tokio::time::timeout(ROLLOUT_TIMEOUT, child.wait())
        .await
        .map_err(|_| "status --watch did not exit in time")??;
    let text = reader.await??;
    Ok((status.code(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_and_promote_a_real_rollout() -> Result {
    let world = World::new("plugin").await?;
    let controller = world.controller("controller", &["--leader-elect=false"])?;
    let load = Load::start(&world.proxy, 40);
    let manifest = world.rollout(
        "chat",
        json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]),
        &world.prometheus,
    );
    // World::rollout appends /v1 to a mock base URL that already ends in /v1 (seen on main at
    // b6a88f6): every request would 404 on both arms. Use the base URL as it is.
    let manifest: Value = serde_json::from_str(&manifest.to_string().replace("/v1/v1\"", "/v1\""))?;
    world.apply(&manifest)?;
    let at_gate = |r: &Value| {
        phase(r) == "Paused"
            && condition(r, "Progressing").is_some_and(|c| c["reason"] == "WaitingForPromotion")
    };
    world.wait_rollout("chat", "waiting at the gate", ROLLOUT_TIMEOUT, at_gate).await?;

    let status = plugin(&world, &["status", "chat"])?;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    for expected in [
        "phase Paused",
        "weight 20%",
        ">[pause (promote)]",
        "waiting for a manual promote",
        "Analysis Pass",
        "History ",
        "error rate   canary",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }

    let took = {
        let started = Instant::now();
        let promoted = plugin(&world, &["promote", "chat"])?;
        assert!(promoted.status.success(), "{}", String::from_utf8_lossy(&promoted.stderr));
        let (code, text) = watch(&world, "chat").await?;
        assert_eq!(code, Some(0), "watch exit after promote:\n{text}\n{}", controller.log_tail(30));
        assert!(text.contains("phase Promoted"), "{text}");
        started.elapsed()
    };
    let events = world.events("chat")?;
    let promote = events.iter().find(|(r, _)| r == "ManualPromote").ok_or("no ManualPromote")?;
    assert!(promote.1.contains("by testcluster-admin"), "{promote:?}");
    assert_eq!(events.iter().filter(|(r, _)| r == "ManualPromote").count(), 1, "{events:?}");

    let list = plugin(&world, &["list"])?;
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("chat ") && l.contains("Promoted") && l.contains("100%")),
        "{list}"
    );
    modelrollout_e2e::report(format_args!(
        "[plugin] promote to Promoted seen by status --watch in {:.1}s",
        took.as_secs_f64()
    ));
    load.stop().await;
    Ok(())
}
