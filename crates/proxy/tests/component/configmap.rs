//! ConfigMap-watch mode against a real local kube-apiserver (modelrollout-testcluster): changes,
//! refusals, new keys and deletion reach the routing table without a restart.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use modelrollout_mockllm::MockConfig;
use modelrollout_proxy::config::RoutingSource;
use modelrollout_testcluster::TestCluster;
use serde_json::json;

use crate::support::*;

/// Weight changes written into the ConfigMap are applied; a bad key is refused while the last
/// good entry serves; a new key adds an alias; deleting the ConfigMap retires aliases to stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_changes_reach_the_proxy() {
    let cluster = tokio::task::spawn_blocking(|| TestCluster::shared().map_err(|e| e.to_string()))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("local control plane: {e}"));
    let namespace = cluster.namespace().expect("test namespace");
    let client = cluster.client().await.expect("kube client");
    let configmaps: Api<ConfigMap> = Api::namespaced(client, namespace.name());
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let chat = |weight| {
        document("chat", "chat-default", &stable.base_url(), &canary.base_url(), weight).to_string()
    };
    let configmap: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "model-router"},
        "data": {"chat.json": chat(0)}
    }))
    .unwrap();
    configmaps.create(&PostParams::default(), &configmap).await.expect("create ConfigMap");

    let dir = RoutingDir::new();
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let namespace_name = namespace.name().to_owned();
    let proxy = start_proxy(&dir, move |c| {
        c.source = RoutingSource::ConfigMap {
            namespace: namespace_name,
            name: "model-router".into(),
            kubeconfig: Some(kubeconfig),
        }
    })
    .await;
    wait_for_weight(&proxy, "chat-default", 0).await;
    let status = get(&format!("{}/readyz", proxy.admin_url())).await.status;
    assert_eq!(status, 200);

    let set = |key: &'static str, value: String| {
        let configmaps = configmaps.clone();
        async move {
            let patch = Patch::Merge(json!({"data": {key: value}}));
            configmaps
                .patch("model-router", &PatchParams::default(), &patch)
                .await
                .expect("patch ConfigMap");
        }
    };
    set("chat.json", chat(100)).await;
    wait_for_weight(&proxy, "chat-default", 100).await;
    let answer =
        post(&proxy.base_url(), "/chat/completions", &super::support::chat("chat-default"), &[])
            .await;
    assert_eq!(answer.track(), "canary");

    set("chat.json", "{\"version\": 1}".to_owned()).await;
    wait_until("refusal counted", || proxy.state.metrics.reload_counts().1 == 1).await;
    assert_eq!(proxy.state.table.load().route("chat-default").unwrap().weight(), 100);

    set(
        "embed.json",
        document("embed", "embed-default", &stable.base_url(), &canary.base_url(), 0).to_string(),
    )
    .await;
    wait_for_weight(&proxy, "embed-default", 0).await;

    configmaps.delete("model-router", &DeleteParams::default()).await.expect("delete ConfigMap");
    wait_until("aliases retired", || {
        let table = proxy.state.table.load();
        ["chat-default", "embed-default"].iter().all(|a| table.route(a).is_some_and(|r| r.retired))
    })
    .await;
    let answer =
        post(&proxy.base_url(), "/chat/completions", &super::support::chat("chat-default"), &[])
            .await;
    assert_eq!(answer.track(), "stable");
    proxy.shutdown().await;
}
