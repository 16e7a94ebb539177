//! One end-to-end world per test: a namespace on the shared local control plane, two mock model
//! servers (stable and canary), a real `modelrollout-proxy` watching its ConfigMap through the
//! API, a real Prometheus scraping it every second, steady traffic, and the real
//! `modelrollout-controller` running with a ServiceAccount token bound to the project's RBAC.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use modelrollout_mockllm::{MockConfig, MockServer};
use modelrollout_testcluster::{TestCluster, TestNamespace};
use modelrollout_testprometheus::TestPrometheus;
use serde_json::{Value, json};

use crate::process::Supervised;
use crate::{cluster_with_crd, report, workspace_root};

/// The ConfigMap the proxies of a world read.
pub const CONFIG_MAP: &str = "model-router";
/// The alias clients send.
pub const ALIAS: &str = "chat-default";

/// A boxed error for test plumbing.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A path to one of the workspace's binaries, built by `cargo test --workspace --all-targets`
/// next to the test executable.
pub fn binary(name: &str) -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    // A test runs from target/<profile>/deps/, a binary from target/<profile>/: either way the
    // binaries are in target/<profile>/.
    let mut dir = exe.parent().ok_or("no target dir")?;
    if dir.ends_with("deps") {
        dir = dir.parent().ok_or("no target dir")?;
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --workspace --bins`",
            path.display()
        )
        .into())
    }
}

/// A free loopback port (bound and released: good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The Prometheus every world of this test binary shares, scraping every proxy once a second.
pub fn shared_prometheus() -> Result<&'static Mutex<SharedPrometheus>, BoxError> {
    static SHARED: OnceLock<Result<Mutex<SharedPrometheus>, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            TestPrometheus::start(&[], Duration::from_secs(1))
                .map(|prometheus| Mutex::new(SharedPrometheus { prometheus, targets: Vec::new() }))
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| e.clone().into())
}

/// The shared Prometheus and the targets it scrapes.
#[derive(Debug)]
pub struct SharedPrometheus {
    /// The server.
    pub prometheus: TestPrometheus,
    targets: Vec<String>,
}

impl SharedPrometheus {
    /// Adds a target (`host:port` of a `/metrics`).
    pub fn add_target(&mut self, target: String) -> Result<(), BoxError> {
        self.targets.push(target);
        self.prometheus.set_targets(&self.targets)?;
        Ok(())
    }
}

/// The RBAC files, applied once per cluster.
fn install_rbac(cluster: &TestCluster) -> Result<(), BoxError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let file = workspace_root().join("deploy/rbac/clusterrole.yaml");
        cluster
            .kubectl_ok(["apply", "-f", &file.to_string_lossy()])
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(Into::into)
}

/// One test's world.
#[derive(Debug)]
pub struct World {
    /// The namespace everything lives in.
    pub namespace: TestNamespace<'static>,
    /// The cluster.
    pub cluster: &'static TestCluster,
    /// Where logs and kubeconfigs go.
    pub dir: PathBuf,
    /// The stable model server.
    pub stable: MockServer,
    /// The canary model server.
    pub canary: MockServer,
    /// The proxy.
    pub proxy: Proxy,
    /// The kubeconfig with the controller's ServiceAccount token.
    pub controller_kubeconfig: PathBuf,
    /// Prometheus' address.
    pub prometheus: String,
}

impl World {
    /// Builds a world: namespace, upstreams, proxy (scraped by the shared Prometheus), RBAC.
    pub async fn new(name: &str) -> Result<World, BoxError> {
        let prometheus = shared_prometheus()?.lock().map_err(|_| "poisoned")?.prometheus.address();
        Self::with_prometheus(name, Some(prometheus)).await
    }

    /// Like [`World::new`]; with `None`, the caller starts its own Prometheus (see
    /// [`World::scrape_targets`]) and writes its address into the rollout.
    pub async fn with_prometheus(
        name: &str,
        prometheus: Option<String>,
    ) -> Result<World, BoxError> {
        let cluster = cluster_with_crd().map_err(|e| e.to_string())?;
        install_rbac(cluster)?;
        let namespace = cluster.namespace()?;
        let dir =
            std::env::temp_dir().join(format!("modelrollout-e2e-{name}-{}", namespace.name()));
        std::fs::create_dir_all(&dir)?;
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let stable = MockServer::start(
            MockConfig { model: Some("gpt-4.1".into()), ..MockConfig::default() },
            any,
        )
        .await?;
        let canary = MockServer::start(
            MockConfig { model: Some("claude-sonnet-4.5".into()), ..MockConfig::default() },
            any,
        )
        .await?;
        let proxy = Proxy::start(&dir, cluster.kubeconfig_path(), namespace.name())?;
        let controller_kubeconfig = service_account_kubeconfig(cluster, &namespace, &dir)?;
        let prometheus = match prometheus {
            Some(address) => {
                shared_prometheus()?
                    .lock()
                    .map_err(|_| "poisoned")?
                    .add_target(proxy.admin.to_string())?;
                address
            }
            None => String::new(),
        };
        report(format_args!(
            "[{name}] namespace {}, proxy {} (admin {})",
            namespace.name(),
            proxy.api,
            proxy.admin
        ));
        Ok(World {
            namespace,
            cluster,
            dir,
            stable,
            canary,
            proxy,
            controller_kubeconfig,
            prometheus,
        })
    }

    /// The `/metrics` targets of this world (for a private Prometheus).
    pub fn scrape_targets(&self) -> Vec<String> {
        vec![self.proxy.admin.to_string()]
    }

    /// Starts a controller for this namespace with the ServiceAccount token; `args` add flags.
    pub fn controller(&self, label: &str, args: &[&str]) -> Result<Supervised, BoxError> {
        let mut command = Command::new(binary("modelrollout-controller")?);
        let metrics = format!("127.0.0.1:{}", free_port());
        command
            .args(["--namespace", self.namespace.name(), "--metrics-address", &metrics])
            .args(["--lease-namespace", self.namespace.name(), "--identity", label])
            .args(["--prometheus-timeout", "2s", "--log-level", "info,kube=warn"])
            .args(args)
            .env("KUBECONFIG", &self.controller_kubeconfig)
            .env_remove("MODELROLLOUT_NAMESPACE");
        Ok(Supervised::spawn(label, &command, &self.dir.join(format!("{label}.log")))?)
    }

    /// A ModelRollout manifest for this world: analysis every 2 s, small request minimums.
    pub fn rollout(&self, name: &str, steps: Value, prometheus: &str) -> Value {
        json!({
            "apiVersion": "rollouts.modelops.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name, "namespace": self.namespace.name()},
            "spec": {
                "model": ALIAS,
                "stable": {"model": "gpt-4.1", "endpoint": self.stable.base_url()},
                "canary": {"model": "claude-sonnet-4.5", "endpoint": self.canary.base_url()},
                "routing": {"configMapRef": {"name": CONFIG_MAP}, "stickiness": {"headers": ["X-Session-ID"]}},
                "strategy": {"steps": steps},
                "analysis": {
                    "prometheus": {"address": prometheus},
                    "interval": "2s",
                    "window": "30s",
                    "minRequests": 10,
                    "minRequestsForRollback": 5,
                    "failureLimit": 2,
                    "thresholds": {"maxErrorRate": 0.05, "maxLatencyP95": "1s"}
                }
            }
        })
    }

    /// `kubectl apply -f -` of a manifest.
    pub fn apply(&self, manifest: &Value) -> Result<(), BoxError> {
        let output = self
            .namespace
            .kubectl_with_stdin(["apply", "-f", "-"], manifest.to_string().as_bytes())?;
        if !output.status.success() {
            return Err(format!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(())
    }

    /// The rollout as JSON (`kubectl get -o json`).
    pub fn get(&self, name: &str) -> Result<Value, BoxError> {
        let text = self.namespace.kubectl_ok(["get", "modelrollout", name, "-o", "json"])?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until `check` holds for the rollout (polling every 200 ms), or fails with the
    /// last status seen.
    pub async fn wait_rollout(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let rollout = self.get(name)?;
            if check(&rollout) {
                return Ok(rollout);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name}: {what} not reached within {timeout:?}; status: {}",
                    serde_json::to_string_pretty(&rollout["status"]).unwrap_or_default()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The data of the routing ConfigMap (empty when it does not exist).
    pub fn config_map_data(&self) -> Result<serde_json::Map<String, Value>, BoxError> {
        let output = self.namespace.kubectl(["get", "configmap", CONFIG_MAP, "-o", "json"])?;
        if !output.status.success() {
            return Ok(serde_json::Map::new());
        }
        let value: Value = serde_json::from_slice(&output.stdout)?;
        Ok(value["data"].as_object().cloned().unwrap_or_default())
    }

    /// The Events about a rollout: (reason, note), oldest first.
    pub fn events(&self, name: &str) -> Result<Vec<(String, String)>, BoxError> {
        let text = self.namespace.kubectl_ok(["get", "events.events.k8s.io", "-o", "json"])?;
        let list: Value = serde_json::from_str(&text)?;
        let mut events: Vec<(String, String, String)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                (
                    e["eventTime"].as_str().unwrap_or_default().to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                    e["note"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        events.sort();
        Ok(events.into_iter().map(|(_, reason, note)| (reason, note)).collect())
    }
}

/// Condition `kind` of a rollout's JSON.
pub fn condition<'a>(rollout: &'a Value, kind: &str) -> Option<&'a Value> {
    rollout["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// Whether condition `kind` is True.
pub fn condition_true(rollout: &Value, kind: &str) -> bool {
    condition(rollout, kind).is_some_and(|c| c["status"] == "True")
}

/// `status.phase`.
pub fn phase(rollout: &Value) -> &str {
    rollout["status"]["phase"].as_str().unwrap_or("")
}

/// `status.canaryWeight`.
pub fn weight(rollout: &Value) -> i64 {
    rollout["status"]["canaryWeight"].as_i64().unwrap_or(-1)
}

/// A kubeconfig with a token of ServiceAccount `modelrollout-controller` in the namespace,
/// bound there to the project's ClusterRole and leader-election Role.
fn service_account_kubeconfig(
    cluster: &TestCluster,
    namespace: &TestNamespace<'_>,
    dir: &Path,
) -> Result<PathBuf, BoxError> {
    let ns = namespace.name();
    namespace.kubectl_ok(["create", "serviceaccount", "modelrollout-controller"])?;
    let role = workspace_root().join("deploy/rbac/leader-election-role.yaml");
    namespace.kubectl_ok(["apply", "-f", &role.to_string_lossy()])?;
    namespace.kubectl_ok([
        "create",
        "rolebinding",
        "modelrollout-controller",
        "--clusterrole=modelrollout-controller",
        &format!("--serviceaccount={ns}:modelrollout-controller"),
    ])?;
    namespace.kubectl_ok([
        "create",
        "rolebinding",
        "modelrollout-controller-leader-election",
        "--role=modelrollout-controller-leader-election",
        &format!("--serviceaccount={ns}:modelrollout-controller"),
    ])?;
    let token =
        namespace.kubectl_ok(["create", "token", "modelrollout-controller", "--duration=2h"])?;
    let kubeconfig = dir.join("controller.kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: controller\n  user:\n    token: {token}\ncontexts:\n- name: controller\n  context: {{cluster: local, user: controller, namespace: {ns}}}\ncurrent-context: controller\n",
        server = cluster.server_url(),
        ca = cluster.ca_cert_path().display(),
        token = token.trim(),
    );
    std::fs::write(&kubeconfig, yaml)?;
    Ok(kubeconfig)
}

// === the proxy ===

/// A running `modelrollout-proxy` watching the world's ConfigMap through the API.
#[derive(Debug)]
pub struct Proxy {
    /// The process.
    pub process: Supervised,
    /// The OpenAI-compatible API.
    pub api: SocketAddr,
    /// `/metrics`, `/admin/status`.
    pub admin: SocketAddr,
    /// Where the proxy reads upstream keys (`--credentials-dir`).
    pub credentials_dir: PathBuf,
}

impl Proxy {
    fn start(dir: &Path, kubeconfig: &Path, namespace: &str) -> Result<Proxy, BoxError> {
        let api = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        std::fs::create_dir_all(dir.join("credentials"))?;
        let mut command = Command::new(binary("modelrollout-proxy")?);
        command
            .args(["--listen", &api.to_string(), "--admin-listen", &admin.to_string()])
            .args(["--configmap", &format!("{namespace}/{CONFIG_MAP}")])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--credentials-dir")
            .arg(dir.join("credentials"))
            .args(["--worker-threads", "1"]);
        let process = Supervised::spawn("proxy", &command, &dir.join("proxy.log"))?;
        Ok(Proxy { process, api, admin, credentials_dir: dir.join("credentials") })
    }

    /// Writes the file the proxy reads for credential `<secret>/<key>`, as a mounted Secret
    /// volume would hold it.
    pub fn write_credential(&self, secret: &str, key: &str, value: &str) -> Result<(), BoxError> {
        let dir = self.credentials_dir.join(secret);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(key), value)?;
        Ok(())
    }

    /// The canary weight the proxy reports for a rollout (`gray_release_canary_weight`).
    pub async fn canary_weight(&self, namespace: &str, rollout: &str) -> Option<f64> {
        let text = get_text(&format!("http://{}/metrics", self.admin)).await.ok()?;
        let labels =
            [format!("rollout=\"{rollout}\""), format!("rollout_namespace=\"{namespace}\"")];
        text.lines()
            .filter(|l| l.starts_with("gray_release_canary_weight{"))
            .find(|l| labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Sends one chat request for `session` and returns the status and the arm that answered.
    pub async fn chat(
        &self,
        session: &str,
        stream: bool,
    ) -> Result<(StatusCode, String), BoxError> {
        chat(self.api, session, stream).await
    }
}

/// Sends one chat request for `session` to the proxy API at `api`; returns the status and the
/// arm that answered (`x-modelrollout-track`).
pub async fn chat(
    api: SocketAddr,
    session: &str,
    stream: bool,
) -> Result<(StatusCode, String), BoxError> {
    chat_model(api, ALIAS, session, stream).await
}

/// Like [`chat`], for the alias `model`.
pub async fn chat_model(
    api: SocketAddr,
    model: &str,
    session: &str,
    stream: bool,
) -> Result<(StatusCode, String), BoxError> {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let request = Request::post(format!("http://{api}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-session-id", session)
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = client().request(request).await?;
    let status = response.status();
    let track = track_of(response.headers());
    response.into_body().collect().await?;
    Ok((status, track))
}

/// The arm the proxy says answered (`x-modelrollout-track`), or `<none>`.
pub fn track_of(headers: &hyper::HeaderMap) -> String {
    headers.get("x-modelrollout-track").and_then(|v| v.to_str().ok()).unwrap_or("<none>").to_owned()
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http()).clone()
}

/// GETs `url` and returns the body as text.
pub async fn get_text(url: &str) -> Result<String, BoxError> {
    let request = Request::get(url).body(Full::new(Bytes::new()))?;
    let response =
        tokio::time::timeout(Duration::from_secs(5), client().request(request)).await??;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

// === traffic ===

/// Steady traffic through a proxy: `rate` requests per second from random sessions, every
/// fourth one streamed (so time to first token is measured).
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts sending.
    pub fn start(proxy: &Proxy, rate: u32) -> Load {
        Self::start_at(proxy.api, &[ALIAS], rate)
    }

    /// Starts sending to the OpenAI API at `api`, each request for one of `aliases` in turn.
    pub fn start_at(api: SocketAddr, aliases: &[&str], rate: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let aliases: Vec<String> = aliases.iter().map(|a| (*a).to_owned()).collect();
        let (stop_flag, counter) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let gap = Duration::from_secs(1) / rate.max(1);
            let mut tick = tokio::time::interval(gap);
            let mut n: u64 = 0;
            while !stop_flag.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let session = format!("user-{}", rand::random::<u32>());
                let stream = n.is_multiple_of(4);
                let counter = counter.clone();
                let alias = aliases[(n as usize) % aliases.len().max(1)].clone();
                tokio::spawn(async move {
                    // Errors are what some tests inject; the controller sees them in the metrics.
                    let request = chat_model(api, &alias, &session, stream);
                    let _ = tokio::time::timeout(Duration::from_secs(30), request).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        Load { stop, sent, task }
    }

    /// Requests completed so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops sending.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}
