//! Routing reloads: bad documents are refused, mounted-ConfigMap symlink swaps are seen, and
//! weight changes under steady load fail no request and cut no stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use modelrollout_mockllm::MockConfig;
use serde_json::json;

use crate::support::*;

/// Concurrent clients in the load test.
const WORKERS: usize = 6;

/// A document that fails validation is refused: the last good entry keeps serving, the failure
/// counter rises once, and a fixed document applies again.
#[tokio::test]
async fn bad_document_keeps_the_last_good_entry() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let dir = RoutingDir::new();
    let good = document("chat", "chat-default", &stable.base_url(), &canary.base_url(), 100);
    dir.write_json("chat.json", &good);
    let proxy = start_proxy(&dir, |_| {}).await;
    let mut bad = good.clone();
    bad["canaryWeight"] = json!(140);
    dir.write_json("chat.json", &bad);
    wait_until("refusal counted", || proxy.state.metrics.reload_counts().1 == 1).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.track(), "canary", "the last good weight (100) stays");
    dir.write("chat.json", "{ not json");
    wait_until("second refusal counted", || proxy.state.metrics.reload_counts().1 == 2).await;
    let status = get(&format!("{}/admin/status", proxy.admin_url())).await.json();
    assert_eq!(status["table"]["routes"][0]["canaryWeight"], 100);
    assert_eq!(status["reloads"]["failure"], 2);
    assert_eq!(status["table"]["refused"][0]["key"], "chat.json");
    let reason = status["table"]["refused"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("cannot be read"), "{reason}");
    let text = metrics_text(&proxy).await;
    assert_eq!(metric(&text, "gray_release_config_reloads_total", &[("result", "failure")]), 2.0);

    let mut fixed = good.clone();
    fixed["canaryWeight"] = json!(0);
    dir.write_json("chat.json", &fixed);
    wait_for_weight(&proxy, "chat-default", 0).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.track(), "stable");
    proxy.shutdown().await;
}

/// A document refused on the first load does not hold readiness back, but is listed with its
/// reason on /admin/status (its alias answers 404 naming what is served); once fixed it serves.
#[tokio::test]
async fn refused_on_first_load_is_visible() {
    let arms = two_arms(0).await;
    let mut bad =
        document("embed", "embed-default", &arms.stable.base_url(), &arms.canary.base_url(), 0);
    bad["canaryWeight"] = json!(140);
    arms.dir.write_json("embed.json", &bad);
    let proxy = start_proxy(&arms.dir, |_| {}).await;
    wait_until("first load", || proxy.state.table.load().is_loaded()).await;
    assert_eq!(get(&format!("{}/readyz", proxy.admin_url())).await.status, 200);
    let status = get(&format!("{}/admin/status", proxy.admin_url())).await.json();
    let refused = status["table"]["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{status}");
    assert_eq!(refused[0]["key"], "embed.json");
    assert!(refused[0]["reason"].as_str().unwrap().contains("canaryWeight is 140"), "{status}");
    let answer = post(
        &proxy.base_url(),
        "/embeddings",
        &json!({"model": "embed-default", "input": "x"}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 404);
    bad["canaryWeight"] = json!(0);
    arms.dir.write_json("embed.json", &bad);
    wait_for_weight(&proxy, "embed-default", 0).await;
    let status = get(&format!("{}/admin/status", proxy.admin_url())).await.json();
    assert_eq!(status["table"]["refused"], json!([]));
    proxy.shutdown().await;
}

/// A deleted document retires its alias to stable instead of 404.
#[tokio::test]
async fn removed_document_sends_its_alias_to_stable() {
    let arms = two_arms(100).await;
    let proxy = start_proxy(&arms.dir, |_| {}).await;
    arms.dir.remove("chat.json");
    wait_until("route retired", || {
        proxy.state.table.load().route("chat-default").is_some_and(|r| r.retired)
    })
    .await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.track(), "stable");
    proxy.shutdown().await;
}

/// The kubelet's mounted-ConfigMap layout (`key.json → ..data/key.json`, `..data` swapped by a
/// rename of a new symlink) is followed.
#[tokio::test]
async fn mounted_configmap_symlink_swap_is_seen() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let dir = RoutingDir::new();
    let root = dir.path().to_owned();
    let publish = |version: &str, weight: u32| {
        let data_dir = root.join(format!("..2026_11_27_{version}"));
        std::fs::create_dir(&data_dir).unwrap();
        let doc = document("chat", "chat-default", &stable.base_url(), &canary.base_url(), weight);
        std::fs::write(data_dir.join("chat.json"), doc.to_string()).unwrap();
        std::os::unix::fs::symlink(data_dir.file_name().unwrap(), root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    };
    publish("1", 0);
    std::os::unix::fs::symlink("..data/chat.json", root.join("chat.json")).unwrap();
    let proxy = start_proxy(&dir, |_| {}).await;
    wait_for_weight(&proxy, "chat-default", 0).await;
    publish("2", 100);
    wait_for_weight(&proxy, "chat-default", 100).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.track(), "canary");
    proxy.shutdown().await;
}

/// Weight 0 → 50 → 100 → 0 by rewriting the routing directory while workers send plain and
/// streamed requests: zero failed requests, every stream ends with [DONE], and each phase routes
/// as its weight says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_under_load_fail_nothing() {
    let slow_stream = MockConfig {
        chunks: 6,
        inter_chunk_delay: std::time::Duration::from_millis(15),
        ..MockConfig::default()
    };
    let stable = mock(slow_stream.clone()).await;
    let canary = mock(slow_stream).await;
    let dir = RoutingDir::new();
    let write = |weight| {
        dir.write_json(
            "chat.json",
            &document("chat", "chat-default", &stable.base_url(), &canary.base_url(), weight),
        )
    };
    write(0);
    let proxy = start_proxy(&dir, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let base = proxy.base_url();
        let stop = Arc::clone(&stop);
        let completed = Arc::clone(&completed);
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut tracks = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let session = format!("w{worker}-{i}");
                i += 1;
                if worker % 2 == 0 {
                    let response = open_stream(
                        &format!("{base}/chat/completions"),
                        &chat_stream("chat-default"),
                        &[("x-session-id", &session)],
                    )
                    .await;
                    let status = response.status();
                    let track =
                        response.headers()["x-modelrollout-track"].to_str().unwrap().to_owned();
                    let (text, ended) = read_stream(response.into_body()).await;
                    if status != 200 || ended.is_err() || !text.contains("[DONE]") {
                        failures.push(format!("stream {session}: {status} {ended:?}"));
                    }
                    tracks.push(track);
                } else {
                    let answer = post(
                        &base,
                        "/chat/completions",
                        &chat("chat-default"),
                        &[("x-session-id", &session)],
                    )
                    .await;
                    if answer.status != 200 {
                        failures.push(format!(
                            "request {session}: {} {}",
                            answer.status,
                            answer.text()
                        ));
                    }
                    tracks.push(answer.track().to_owned());
                }
                completed.fetch_add(1, Ordering::Relaxed);
            }
            (failures, tracks)
        }));
    }
    let mut phase_counts = Vec::new();
    for weight in [0u32, 50, 100, 0] {
        write(weight);
        wait_for_weight(&proxy, "chat-default", weight).await;
        let before = (stable.request_count(), canary.request_count());
        let start = completed.load(Ordering::Relaxed);
        wait_until("30 requests in this phase", || completed.load(Ordering::Relaxed) >= start + 30)
            .await;
        phase_counts.push((
            weight,
            stable.request_count() - before.0,
            canary.request_count() - before.1,
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let (failures, tracks) = worker.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        total += tracks.len();
    }
    assert!(total >= 120);
    for (weight, to_stable, to_canary) in phase_counts {
        match weight {
            // Only requests already in flight when the weight changed (one per worker at most)
            // may still land on the old arm.
            50 => assert!(to_stable > 0 && to_canary > 0, "50 %: {to_stable}/{to_canary}"),
            100 => assert!(to_stable <= WORKERS, "100 %: {to_stable}/{to_canary}"),
            _ => assert!(to_canary <= WORKERS, "0 %: {to_stable}/{to_canary}"),
        }
    }
    proxy.shutdown().await;
}
