//! modelrollout as a user runs it, on a real node: mockllm as a Deployment, and a client pod
//! whose two proxy sidecars follow one routing ConfigMap, one through kubelet's volume update,
//! one through the API watch with the pod's own ServiceAccount token (a Role that allows only
//! that ConfigMap). All images are the ones `make images` builds; nothing is pulled.
//!
//! One node per test binary (`TestCluster::shared_with_node`); each test has its own namespace.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use modelrollout_testcluster::{TestCluster, TestNamespace};
use serde_json::json;

/// Generous bound for pods to start and for kubelet to sync a volume (it syncs every 10 s here).
const DEADLINE: Duration = Duration::from_secs(180);

/// The routing ConfigMap both proxies follow.
const ROUTER: &str = "model-router";

fn cluster() -> Result<&'static TestCluster> {
    TestCluster::shared_with_node().map_err(|err| anyhow!("{err}"))
}

/// Polls `check` every 250 ms until it returns `Some`, or fails naming `what` after `DEADLINE`.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if start.elapsed() > DEADLINE {
            bail!("{what}: not seen within {}s", DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A routing document (docs/routing-document.md), both arms on the mockllm pod.
fn routing_document(namespace: &str, upstream: &str, weight: u32, generation: i64) -> String {
    json!({
        "version": 1, "rollout": "chat", "namespace": namespace, "generation": generation,
        "model": "chat-default",
        "stable": {"model": "stable-model", "endpoint": upstream},
        "canary": {"model": "canary-model", "endpoint": upstream},
        "canaryWeight": weight, "phase": "Progressing",
    })
    .to_string()
}

/// A container hardened as the chart runs it: non-root, read-only root, no capabilities.
fn hardened() -> serde_json::Value {
    json!({
        "runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn image(binary: &str) -> String {
    format!("modelrollout.local/{binary}:dev")
}

fn apply(namespace: &TestNamespace<'_>, documents: &[serde_json::Value]) -> Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": documents});
    let output = namespace.kubectl_with_stdin(["apply", "-f", "-"], list.to_string().as_bytes())?;
    ensure!(output.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// The mock upstream as a Deployment with a readiness probe; returns its pod IP.
fn deploy_mockllm(namespace: &TestNamespace<'_>) -> Result<String> {
    let labels = json!({"app": "mockllm"});
    apply(
        namespace,
        &[json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mockllm"},
            "spec": {
                "replicas": 1, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "mockllm", "image": image("modelrollout-mockllm"),
                        "imagePullPolicy": "Never",
                        "args": ["--listen", "0.0.0.0:8081"],
                        "ports": [{"containerPort": 8081}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8081}, "periodSeconds": 1},
                        "securityContext": hardened(),
                    }],
                }},
            },
        })],
    )?;
    namespace.kubectl_ok(["rollout", "status", "deployment/mockllm", "--timeout=180s"])?;
    let ip = namespace.kubectl_ok([
        "get",
        "pods",
        "-l",
        "app=mockllm",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ])?;
    ensure!(ip.starts_with("10.244.0."), "mockllm pod IP {ip:?} is not on the node's pod subnet");
    Ok(ip)
}

/// A proxy sidecar (a restartable init container, so it is ready before the client starts).
fn proxy_sidecar(
    name: &str,
    listen: u16,
    admin: u16,
    source: &[&str],
    mounts: serde_json::Value,
) -> serde_json::Value {
    let mut args = vec![
        "--listen".to_owned(),
        format!("127.0.0.1:{listen}"),
        "--admin-listen".to_owned(),
        format!("0.0.0.0:{admin}"),
        "--worker-threads".to_owned(),
        "1".to_owned(),
    ];
    args.extend(source.iter().map(|s| (*s).to_owned()));
    json!({
        "name": name, "image": image("modelrollout-proxy"), "imagePullPolicy": "Never",
        "restartPolicy": "Always", "args": args, "volumeMounts": mounts,
        "startupProbe": {"httpGet": {"path": "/readyz", "port": admin}, "periodSeconds": 1, "failureThreshold": 120},
        "securityContext": hardened(),
    })
}

/// What a proxy container has logged so far, through `kubectl logs` (API server → kubelet).
fn logged_weights(namespace: &TestNamespace<'_>, container: &str) -> Result<String> {
    namespace.kubectl_ok(["logs", "client", "-c", container]).map_err(Into::into)
}

#[test]
fn proxy_sidecars_follow_the_configmap_through_kubelet_and_the_api() -> Result<()> {
    let cluster = cluster()?;
    if let Some(took) = cluster.node_startup_time() {
        eprintln!(
            "[node e2e] node Ready and untainted {:.1}s after the servers started",
            took.as_secs_f64()
        );
    }
    let namespace = cluster.namespace()?;
    let ns = namespace.name().to_owned();
    // kube-controller-manager creates it; pods are refused until it exists.
    eventually("the default ServiceAccount", || {
        Ok(namespace.kubectl(["get", "serviceaccount", "default"])?.status.success().then_some(()))
    })?;

    let mockllm = deploy_mockllm(&namespace)?;
    let upstream = format!("http://{mockllm}:8081/v1");
    let configmap_arg = format!("{ns}/{ROUTER}");
    apply(
        &namespace,
        &[
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ROUTER},
                   "data": {"chat.json": routing_document(&ns, &upstream, 0, 1)}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"},
                   "data": {"secret-ish": "not for the proxy"}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "router"}}),
            // The least a --configmap proxy needs: its one ConfigMap, read and watched by name.
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "router"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ROUTER],
                              "verbs": ["get", "list", "watch"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "router"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "router"},
                   "subjects": [{"kind": "ServiceAccount", "name": "router", "namespace": ns}]}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"}, "spec": {
                "serviceAccountName": "router", "restartPolicy": "Never",
                "initContainers": [
                    proxy_sidecar("proxy-volume", 8080, 9901, &["--routing-dir", "/etc/modelrollout/routing"],
                        json!([{"name": "routing", "mountPath": "/etc/modelrollout/routing", "readOnly": true}])),
                    proxy_sidecar("proxy-api", 8090, 9902, &["--configmap", &configmap_arg], json!([])),
                    // Runs once the sidecars are started; the pod goes on only if it exits 0.
                    {
                        "name": "client", "image": image("mockllm-probe"), "imagePullPolicy": "Never",
                        "args": ["--url", "http://127.0.0.1:8080/v1/chat/completions", "--model", "chat-default",
                                 "stream", "--requests", "20", "--warmup", "0"],
                        "securityContext": hardened(),
                    },
                ],
                // The app this pod stands for; it keeps the sidecars running.
                "containers": [{
                    "name": "app", "image": image("pause"), "imagePullPolicy": "Never",
                    "securityContext": hardened(),
                }],
                "volumes": [{"name": "routing", "configMap": {"name": ROUTER}}],
            }}),
        ],
    )?;

    // The client streams through the volume-fed proxy to mockllm's pod IP, and exits 0.
    // (restartPolicy Never: a failing client fails the pod instead of retrying.)
    let exit_code = eventually("the client container's exit", || {
        let code = namespace.kubectl_ok([
            "get", "pod", "client", "-o",
            r#"jsonpath={.status.initContainerStatuses[?(@.name=="client")].state.terminated.exitCode}"#,
        ])?;
        Ok((!code.is_empty()).then_some(code))
    })?;
    let client_log = namespace.kubectl_ok(["logs", "client", "-c", "client"])?;
    ensure!(exit_code == "0", "the client failed (exit {exit_code}):\n{client_log}");
    eprintln!("[node e2e] client through the proxy sidecar: {}", client_log.trim());

    // Both proxies loaded weight 0, and their lines reach `kubectl logs`.
    for container in ["proxy-volume", "proxy-api"] {
        let logs = logged_weights(&namespace, container)?;
        ensure!(logs.contains("canary weight 0%"), "{container} never logged weight 0:\n{logs}");
    }

    // The split moves to 50 %: the API watch sees it at once, kubelet on its next volume sync.
    let patch = json!({"data": {"chat.json": routing_document(&ns, &upstream, 50, 2)}}).to_string();
    let patched = Instant::now();
    namespace.kubectl_ok(["patch", "configmap", ROUTER, "--type", "merge", "-p", &patch])?;
    let mut seen = [None, None];
    eventually("the 50 % split in both proxies' logs", || {
        for (slot, container) in seen.iter_mut().zip(["proxy-api", "proxy-volume"]) {
            if slot.is_none()
                && logged_weights(&namespace, container)?.contains("canary weight 50%")
            {
                *slot = Some(patched.elapsed());
            }
        }
        Ok(seen.iter().all(Option::is_some).then_some(()))
    })?;
    let [api, volume] = seen.map(|s| s.unwrap_or_default().as_secs_f64());
    eprintln!(
        "[node e2e] patch seen through the API watch after {api:.1}s, through kubelet's volume update after {volume:.1}s"
    );

    // The token is confined to its ConfigMap.
    let subject = format!("--as=system:serviceaccount:{ns}:router");
    let allowed = |verb: &str, what: &str| -> Result<String> {
        let output = namespace.kubectl(["auth", "can-i", verb, what, subject.as_str()])?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    ensure!(
        allowed("watch", &format!("configmap/{ROUTER}"))? == "yes",
        "the Role does not allow watching {ROUTER}"
    );
    ensure!(
        allowed("get", "configmap/unrelated")? == "no",
        "the router token can read other ConfigMaps"
    );
    ensure!(allowed("list", "secrets")? == "no", "the router token can list Secrets");
    Ok(())
}

/// Pods on the node have addresses only inside the node's namespaces: the host has no route to
/// the pod subnet, and no interface of the host carries a node address.
#[test]
fn node_addresses_exist_only_inside_its_namespace() -> Result<()> {
    cluster()?;
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "get", "10.244.0.1"])
        .output()
        .context("running ip")?;
    let text = String::from_utf8_lossy(&routes.stdout);
    ensure!(!text.contains("dev cni0"), "the host routes the pod subnet to a bridge: {text}");
    let addresses = std::process::Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .context("running ip")?;
    let text = String::from_utf8_lossy(&addresses.stdout);
    for address in ["10.244.0.1/", "10.0.0.1/"] {
        ensure!(!text.contains(address), "the host has node address {address}: {text}");
    }
    Ok(())
}
