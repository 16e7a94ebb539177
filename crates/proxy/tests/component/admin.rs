//! Admin endpoints and the model list.

use modelrollout_mockllm::MockConfig;
use serde_json::json;

use crate::support::*;

/// /healthz and /readyz answer 200 once a table is loaded; /metrics carries the contract's
/// families; /admin/status shows routes, weights, generations and per-arm counts.
#[tokio::test]
async fn admin_endpoints() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let dir = RoutingDir::new();
    let mut doc = document("chat", "chat-default", &stable.base_url(), &canary.base_url(), 100);
    doc["generation"] = json!(7);
    doc["canary"]["credential"] = json!("relay/api-key");
    dir.write_json("chat.json", &doc);
    let proxy = start_proxy(&dir, |c| c.forward.max_retries = 0).await;
    let admin = proxy.admin_url();
    assert_eq!(get(&format!("{admin}/healthz")).await.status, 200);
    assert_eq!(get(&format!("{admin}/readyz")).await.status, 200);
    assert_eq!(get(&format!("{admin}/nope")).await.status, 404);
    // The credential file does not exist: one canary error.
    post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;

    let status = get(&format!("{admin}/admin/status")).await.json();
    assert_eq!(status["ready"], true);
    assert_eq!(status["table"]["generation"], 1);
    let route = &status["table"]["routes"][0];
    assert_eq!(route["model"], "chat-default");
    assert_eq!(route["rollout"], "chat");
    assert_eq!(route["namespace"], NAMESPACE);
    assert_eq!(route["documentGeneration"], 7);
    assert_eq!(route["canaryWeight"], 100);
    assert_eq!(route["phase"], "Progressing");
    assert_eq!(route["canary"]["model"], CANARY_MODEL);
    assert_eq!(route["canary"]["credential"], "relay/api-key");
    assert_eq!(route["canary"]["requests"], 1);
    assert_eq!(route["canary"]["errors"], 1);
    assert_eq!(route["stable"]["requests"], 0);

    let text = metrics_text(&proxy).await;
    for family in [
        "gray_release_requests_total{",
        "gray_release_request_duration_seconds_bucket{",
        "gray_release_time_to_first_token_seconds_bucket{",
        "gray_release_tokens_total{",
        "gray_release_canary_weight{",
        "gray_release_config_reloads_total{",
    ] {
        assert!(text.contains(family), "missing {family} in\n{text}");
    }
    let weight = metric(
        &text,
        "gray_release_canary_weight",
        &[("rollout", "chat"), ("rollout_namespace", NAMESPACE)],
    );
    assert_eq!(weight, 100.0);
    proxy.shutdown().await;
}

/// GET /v1/models lists the served aliases in OpenAI's list shape; /v1/models/{alias} shows one.
#[tokio::test]
async fn models_lists_served_aliases() {
    let TwoArms { stable, canary, dir } = two_arms(5).await;
    dir.write_json(
        "embed.json",
        &document("embed", "embed-default", &stable.base_url(), &canary.base_url(), 5),
    );
    let proxy = start_proxy(&dir, |_| {}).await;
    let list = get(&format!("{}/models", proxy.base_url())).await.json();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> =
        list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chat-default", "embed-default"]);
    assert!(list["data"].as_array().unwrap().iter().all(|m| m["object"] == "model"));
    let one = get(&format!("{}/models/embed-default", proxy.base_url())).await.json();
    assert_eq!(one["id"], "embed-default");
    proxy.shutdown().await;
}

/// Until a routing table is loaded (here: the API server cannot be reached) /readyz is 503 and
/// API requests get 503 `routing_not_loaded`, while /healthz stays 200.
#[tokio::test]
async fn not_ready_until_a_table_is_loaded() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        kubeconfig.path(),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    let dir = RoutingDir::new();
    let path = kubeconfig.path().to_owned();
    let proxy = start_proxy(&dir, move |c| {
        c.source = modelrollout_proxy::config::RoutingSource::ConfigMap {
            namespace: "ai".into(),
            name: "model-router".into(),
            kubeconfig: Some(path),
        }
    })
    .await;
    let admin = proxy.admin_url();
    assert_eq!(get(&format!("{admin}/healthz")).await.status, 200);
    let readyz = get(&format!("{admin}/readyz")).await;
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"]["code"], "routing_not_loaded");
    let status = get(&format!("{admin}/admin/status")).await.json();
    assert_eq!(status["ready"], false);
    assert_eq!(status["table"]["loaded"], false);
    proxy.shutdown().await;
}
