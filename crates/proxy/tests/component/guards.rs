//! The guards of docs/guards.md as the proxy sees them: a rate-limited canary falls back to
//! stable and is counted as `rate_limited` (which analysis leaves out).

use std::time::Duration;

use modelrollout_mockllm::MockConfig;

use crate::support::*;

/// With --fallback-to-stable, a canary answering 429 (its retry too) is answered by stable;
/// both canary 429s count as `rate_limited` errors, stable's answer as `ok`. A 429 whose
/// Retry-After is too long to wait falls back at once.
#[tokio::test]
async fn rate_limited_canary_falls_back_to_stable() {
    let stable = mock(MockConfig::default()).await;
    let canary =
        mock(MockConfig { error_rate: 1.0, error_status: 429, ..MockConfig::default() }).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 100);
    let proxy = start_proxy(&dir, |c| c.forward.fallback_to_stable = true).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!((answer.status.as_u16(), answer.track()), (200, "stable"), "{}", answer.text());
    assert_eq!(answer.json()["model"], STABLE_MODEL);
    assert_eq!(canary.request_count(), 2, "one retry on the canary first");
    let text = metrics_text(&proxy).await;
    assert_eq!(requests(&text, true, "rate_limited"), 2.0);
    let labels = [("is_canary", "true"), ("reason", "rate_limited"), ("status", "error")];
    assert_eq!(metric(&text, "gray_release_requests_total", &labels), 2.0);
    assert_eq!(requests(&text, false, "ok"), 1.0);

    canary.set_config(MockConfig {
        error_rate: 1.0,
        error_status: 429,
        retry_after: Some(Duration::from_secs(60)),
        ..MockConfig::default()
    });
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!((answer.status.as_u16(), answer.track()), (200, "stable"), "{}", answer.text());
    assert_eq!(canary.request_count(), 3, "no retry when Retry-After is a minute away");
    let text = metrics_text(&proxy).await;
    assert_eq!(requests(&text, true, "rate_limited"), 3.0);
    assert_eq!(requests(&text, false, "ok"), 2.0);
    proxy.shutdown().await;
}

/// A routing directory serving `chat-default` at `weight` with forceArmHeader X-Force-Arm.
fn forced_dir(stable: &str, canary: &str, weight: u32) -> RoutingDir {
    let dir = RoutingDir::new();
    let mut doc = document("chat", "chat-default", stable, canary, weight);
    doc["forceArmHeader"] = serde_json::json!("X-Force-Arm");
    dir.write_json("chat.json", &doc);
    dir
}

fn forced(text: &str, canary: bool, reason: &str) -> f64 {
    let is_canary = if canary { "true" } else { "false" };
    metric(
        text,
        "gray_release_forced_requests_total",
        &[("is_canary", is_canary), ("reason", reason)],
    )
}

/// The forceArmHeader forces either arm whatever the weight (any case of the value); forced
/// requests count only in the forced families; a wrong value is a 400 naming the fix.
#[tokio::test]
async fn force_arm_header_forces_and_counts_apart() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let dir = forced_dir(&stable.base_url(), &canary.base_url(), 0);
    let proxy = start_proxy(&dir, |_| {}).await;
    let url = proxy.base_url();
    let answer =
        post(&url, "/chat/completions", &chat("chat-default"), &[("x-force-arm", "canary")]).await;
    assert_eq!((answer.status.as_u16(), answer.track()), (200, "canary"), "{}", answer.text());
    assert_eq!(answer.json()["model"], CANARY_MODEL);
    let answer = post(&url, "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.track(), "stable");
    let answer =
        post(&url, "/chat/completions", &chat("chat-default"), &[("X-Force-Arm", "Stable")]).await;
    assert_eq!(answer.track(), "stable");
    let answer =
        post(&url, "/chat/completions", &chat("chat-default"), &[("X-Force-Arm", "both")]).await;
    assert_eq!(answer.status.as_u16(), 400, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "invalid_forced_arm");
    assert!(answer.text().contains("X-Force-Arm") || answer.text().contains("x-force-arm"));

    let text = metrics_text(&proxy).await;
    assert_eq!(forced(&text, true, "ok"), 1.0);
    assert_eq!(forced(&text, false, "ok"), 1.0);
    assert_eq!(requests(&text, true, "ok"), 0.0, "analysis never sees forced requests");
    assert_eq!(requests(&text, false, "ok"), 1.0, "only the unforced request");
    let tokens = [("is_canary", "true"), ("type", "completion")];
    assert_eq!(metric(&text, "gray_release_forced_tokens_total", &tokens), 20.0);
    assert_eq!(metric(&text, "gray_release_tokens_total", &tokens), 0.0);
    proxy.shutdown().await;
}

/// Without forceArmHeader in the document the header means nothing (off by default).
#[tokio::test]
async fn force_arm_header_is_off_by_default() {
    // The upstreams must outlive the request: bind them, do not drop them with `..`.
    let TwoArms { stable: _stable, canary: _canary, dir } = two_arms(0).await;
    let proxy = start_proxy(&dir, |_| {}).await;
    let answer = post(
        &proxy.base_url(),
        "/chat/completions",
        &chat("chat-default"),
        &[("X-Force-Arm", "canary")],
    )
    .await;
    assert_eq!((answer.status.as_u16(), answer.track()), (200, "stable"), "{}", answer.text());
    proxy.shutdown().await;
}

/// The official openai client forces the canary with `extra_headers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_forces_the_canary_with_extra_headers() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let dir = forced_dir(&stable.base_url(), &canary.base_url(), 0);
    let proxy = start_proxy(&dir, |_| {}).await;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/component/openai_forced_arm.py");
    // Python and the openai import take tens of seconds on a busy 2-core machine.
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(crate::openai_python::python())
            .arg(&script)
            .env("PROXY_BASE_URL", proxy.base_url())
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the openai client script did not finish within 180s")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "script failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
    assert_eq!(canary.request_count(), 1, "only the forced request reached the canary");
    proxy.shutdown().await;
}
