//! The Helm chart installed on a cluster with a node, as a platform team runs it: the
//! controller and the gateway proxy as pods from the `make images` images, mock model servers
//! as Deployments, a real Prometheus on host loopback scraping the controller and the proxy,
//! and the controller querying that Prometheus. Shared by `tests/chart.rs` and `make demo`.
//!
//! Pods live in the node's network namespace, which the host cannot route to (see
//! `modelrollout-testcluster`'s node module). [`NodeNet`] carries TCP across with `socat` pairs
//! joined by UNIX sockets (a path is reachable from both namespaces), entering the node's
//! namespace with `nsenter --net`: host ports forwarded to pods (for Prometheus, the load and
//! the test), and an address on the node's bridge forwarded to Prometheus (for the controller).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use modelrollout_testcluster::TestCluster;
use modelrollout_testprometheus::TestPrometheus;
use serde_json::{Value, json};

use crate::process::Supervised;
use crate::stack::{BoxError, free_port};
use crate::workspace_root;

/// The node's address on the pods' bridge: pods reach it directly.
pub const NODE_IP: &str = "10.244.0.1";

/// Where pods reach the host's Prometheus (a forward on the node's bridge).
pub const PROMETHEUS_IN_NODE: &str = "10.244.0.1:9090";

/// The routing ConfigMap the gateway serves.
pub const ROUTER: &str = "model-router";

/// How long pods may take to start, and helm to wait for them.
pub const POD_DEADLINE: Duration = Duration::from_secs(240);

/// The chart in this checkout.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/modelrollout")
}

/// `--set` values that run the chart on the local node: the `make images` images, never pulled.
pub fn local_image_values() -> Vec<String> {
    let mut values = Vec::new();
    for (key, binary) in
        [("image", "modelrollout-controller"), ("proxy.image", "modelrollout-proxy")]
    {
        values.push(format!("{key}.repository=modelrollout.local/{binary}"));
        values.push(format!("{key}.tag=dev"));
        values.push(format!("{key}.pullPolicy=Never"));
    }
    values
}

/// Runs the pinned `helm` and returns its output, or an error with its stderr.
pub fn helm_ok(cluster: &TestCluster, args: &[&str]) -> Result<String, BoxError> {
    let output = cluster.helm(args)?;
    if !output.status.success() {
        return Err(format!(
            "helm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs the pinned `kubectl` in `namespace` and returns stdout, or an error with its stderr.
pub fn kubectl_ok(
    cluster: &TestCluster,
    namespace: &str,
    args: &[&str],
) -> Result<String, BoxError> {
    let mut all = vec!["-n", namespace];
    all.extend_from_slice(args);
    Ok(cluster.kubectl_ok(all)?)
}

/// Polls `check` every 250 ms until it returns `Some`, or fails naming `what` after `limit`.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<Option<T>, BoxError>,
) -> Result<T, BoxError> {
    let start = Instant::now();
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if start.elapsed() > limit {
            return Err(format!("{what}: not seen within {}s", limit.as_secs()).into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// === crossing into the node's network namespace ===

/// The node's network namespace, and forwards across it that stop with this handle.
#[derive(Debug)]
pub struct NodeNet {
    netns: PathBuf,
    dir: PathBuf,
}

/// One forward: its two `socat`s, killed on drop.
#[derive(Debug)]
pub struct Forward {
    /// The host end (for [`NodeNet::expose`]), `127.0.0.1:PORT`.
    pub host: SocketAddr,
    _processes: [Supervised; 2],
}

impl NodeNet {
    /// The network namespace of `cluster`'s node (a process of its cgroup whose namespace is
    /// not ours); sockets and logs go to `dir`.
    pub fn of(cluster: &TestCluster, dir: &Path) -> Result<Self, BoxError> {
        let cgroup = cluster.node_cgroup().ok_or("the cluster has no node")?;
        let procs = format!("/sys/fs/cgroup/pids/{cgroup}/node/cgroup.procs");
        let ours = std::fs::read_link("/proc/self/ns/net")?;
        let text = std::fs::read_to_string(&procs).map_err(|e| format!("reading {procs}: {e}"))?;
        let netns = text
            .lines()
            .map(|pid| PathBuf::from(format!("/proc/{}/ns/net", pid.trim())))
            .find(|path| std::fs::read_link(path).is_ok_and(|ns| ns != ours))
            .ok_or_else(|| format!("no process of {procs} is in the node's network namespace"))?;
        std::fs::create_dir_all(dir)?;
        Ok(Self { netns, dir: dir.to_path_buf() })
    }

    fn socat(&self, name: &str, inside: bool, args: [&str; 2]) -> Result<Supervised, BoxError> {
        let mut command = if inside {
            let mut command = Command::new("nsenter");
            command.arg(format!("--net={}", self.netns.display())).arg("socat");
            command
        } else {
            Command::new("socat")
        };
        command.args(args);
        let side = if inside { "node" } else { "host" };
        Ok(Supervised::spawn(name, &command, &self.dir.join(format!("{name}-{side}.log")))?)
    }

    /// A host port forwarded to `inside` (`POD_IP:PORT`).
    pub fn expose(&self, name: &str, inside: &str) -> Result<Forward, BoxError> {
        let socket = self.dir.join(format!("{name}.sock"));
        let node = self.socat(
            name,
            true,
            [
                &format!("UNIX-LISTEN:{},fork,unlink-early", socket.display()),
                &format!("TCP:{inside}"),
            ],
        )?;
        eventually(&format!("the node end of forward {name}"), Duration::from_secs(10), || {
            Ok(socket.exists().then_some(()))
        })?;
        let host = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let host_end = self.socat(
            name,
            false,
            [
                &format!("TCP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr", host.port()),
                &format!("UNIX-CONNECT:{}", socket.display()),
            ],
        )?;
        eventually(&format!("the host end of forward {name}"), Duration::from_secs(10), || {
            Ok(TcpStream::connect_timeout(&host, Duration::from_secs(1)).is_ok().then_some(()))
        })?;
        Ok(Forward { host, _processes: [node, host_end] })
    }

    /// `listen` inside the node (an address on its bridge) forwarded to `host` on host loopback.
    pub fn reach_host(
        &self,
        name: &str,
        listen: &str,
        host: SocketAddr,
    ) -> Result<Forward, BoxError> {
        let socket = self.dir.join(format!("{name}.sock"));
        let host_end = self.socat(
            name,
            false,
            [
                &format!("UNIX-LISTEN:{},fork,unlink-early", socket.display()),
                &format!("TCP:{host}"),
            ],
        )?;
        eventually(&format!("the host end of forward {name}"), Duration::from_secs(10), || {
            Ok(socket.exists().then_some(()))
        })?;
        let (ip, port) = listen.rsplit_once(':').ok_or("listen is IP:PORT")?;
        let node = self.socat(
            name,
            true,
            [
                &format!("TCP-LISTEN:{port},bind={ip},fork,reuseaddr"),
                &format!("UNIX-CONNECT:{}", socket.display()),
            ],
        )?;
        eventually(&format!("the node end of forward {name}"), Duration::from_secs(10), || {
            let probe = Command::new("nsenter")
                .arg(format!("--net={}", self.netns.display()))
                .args(["socat", "-u", "OPEN:/dev/null", &format!("TCP:{listen}")])
                .output()?;
            Ok(probe.status.success().then_some(()))
        })?;
        Ok(Forward { host, _processes: [node, host_end] })
    }
}

// === the world ===

/// A mock model server Deployment: its name, the model it answers as, and extra flags.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Deployment name.
    pub name: &'static str,
    /// `--model`.
    pub model: &'static str,
    /// `--error-rate`.
    pub error_rate: f64,
}

/// The chart installed with the gateway, upstreams, Prometheus and the forwards between them.
#[derive(Debug)]
pub struct ChartWorld<'c> {
    /// The cluster.
    pub cluster: &'c TestCluster,
    /// The namespace of the release, the upstreams and the rollouts.
    pub namespace: String,
    /// The Helm release name.
    pub release: String,
    /// Logs and sockets.
    pub dir: PathBuf,
    /// The node's network namespace.
    pub net: NodeNet,
    /// Prometheus on host loopback.
    pub prometheus: TestPrometheus,
    /// Each upstream deployed, with its base URL (`http://POD_IP:8081/v1`).
    pub upstreams: Vec<(Upstream, String)>,
    /// The gateway's OpenAI API on the host.
    pub gateway: Option<Forward>,
    /// What Prometheus scrapes (pod name, forward).
    scraped: Vec<(String, Forward)>,
    _prometheus_in_node: Forward,
}

impl<'c> ChartWorld<'c> {
    /// Starts Prometheus and its forward into the node, and deploys the upstreams in
    /// `namespace` (which must exist); `progress` hears what is going on.
    pub fn prepare(
        cluster: &'c TestCluster,
        namespace: &str,
        release: &str,
        upstreams: &[Upstream],
        progress: &dyn Fn(&str),
    ) -> Result<Self, BoxError> {
        let dir = std::env::temp_dir().join(format!("modelrollout-chart-{namespace}"));
        std::fs::create_dir_all(&dir)?;
        let net = NodeNet::of(cluster, &dir)?;
        eventually("the default ServiceAccount", POD_DEADLINE, || {
            let output = cluster.kubectl(["-n", namespace, "get", "serviceaccount", "default"])?;
            Ok(output.status.success().then_some(()))
        })?;
        progress("starting Prometheus (scrape every 1s) on host loopback");
        let prometheus = TestPrometheus::start(&[], Duration::from_secs(1))?;
        let address: SocketAddr = prometheus.address().trim_start_matches("http://").parse()?;
        let prometheus_in_node = net.reach_host("prometheus", PROMETHEUS_IN_NODE, address)?;
        progress(&format!(
            "pods reach Prometheus ({}) at http://{PROMETHEUS_IN_NODE}",
            prometheus.address()
        ));
        let mut world = ChartWorld {
            cluster,
            namespace: namespace.to_owned(),
            release: release.to_owned(),
            dir,
            net,
            prometheus,
            upstreams: Vec::new(),
            gateway: None,
            scraped: Vec::new(),
            _prometheus_in_node: prometheus_in_node,
        };
        let names: Vec<&str> = upstreams.iter().map(|u| u.name).collect();
        progress(&format!("deploying the mock model servers {}", names.join(", ")));
        world.apply(&json!({"apiVersion": "v1", "kind": "List",
            "items": upstreams.iter().map(mockllm_deployment).collect::<Vec<_>>()}))?;
        for upstream in upstreams {
            let ip = world.wait_pod_ip(&format!("app={}", upstream.name))?;
            world.upstreams.push((upstream.clone(), format!("http://{ip}:8081/v1")));
        }
        Ok(world)
    }

    /// `helm install` of the chart with the local images, the gateway on, and `values`.
    pub fn install(&mut self, values: &[&str], progress: &dyn Fn(&str)) -> Result<(), BoxError> {
        progress(&format!(
            "helm install {} charts/modelrollout (controller x2, gateway proxy) --wait",
            self.release
        ));
        let started = Instant::now();
        let mut sets = local_image_values();
        sets.extend(
            ["proxy.enabled=true", "proxy.replicas=1", "controller.logFormat=text"]
                .map(str::to_owned),
        );
        sets.push(format!("proxy.routing.configMap={ROUTER}"));
        sets.extend(values.iter().map(|v| (*v).to_owned()));
        let mut args = vec![
            "install".to_owned(),
            self.release.clone(),
            chart_dir().display().to_string(),
            "--namespace".to_owned(),
            self.namespace.clone(),
            "--wait".to_owned(),
            "--timeout".to_owned(),
            format!("{}s", POD_DEADLINE.as_secs()),
        ];
        for set in sets {
            args.push("--set".to_owned());
            args.push(set);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm_ok(self.cluster, &args)?;
        progress(&format!("installed and ready in {:.0}s", started.elapsed().as_secs_f64()));
        self.scrape_pods(progress)
    }

    /// Forwards to every controller and gateway pod, points Prometheus at them, and waits
    /// until each was scraped (call again after pods change).
    pub fn scrape_pods(&mut self, progress: &dyn Fn(&str)) -> Result<(), BoxError> {
        let pods = self.pods("app.kubernetes.io/component in (controller, proxy)")?;
        let mut scraped = Vec::new();
        let mut gateway = None;
        for (name, ip, component) in pods {
            let port = if component == "controller" { 8080 } else { 9901 };
            // Keep a forward to a pod that is still there.
            let existing = self.scraped.iter().position(|(pod, _)| *pod == name);
            let forward = match existing {
                Some(at) => self.scraped.swap_remove(at).1,
                None => self.net.expose(&name, &format!("{ip}:{port}"))?,
            };
            if component == "proxy" && gateway.is_none() {
                gateway = Some(self.net.expose(&format!("{name}-api"), &format!("{ip}:8080"))?);
            }
            scraped.push((name, forward));
        }
        self.scraped = scraped;
        if gateway.is_some() {
            self.gateway = gateway;
        }
        let targets: Vec<String> = self.scraped.iter().map(|(_, f)| f.host.to_string()).collect();
        self.prometheus.set_targets(&targets)?;
        self.prometheus.wait_scraped(Duration::from_secs(120))?;
        let names: Vec<&str> = self.scraped.iter().map(|(pod, _)| pod.as_str()).collect();
        progress(&format!("Prometheus scrapes {}", names.join(", ")));
        Ok(())
    }

    /// Pods matching `selector` that are Running with an IP: (name, IP, component label).
    pub fn pods(&self, selector: &str) -> Result<Vec<(String, String, String)>, BoxError> {
        let text = kubectl_ok(
            self.cluster,
            &self.namespace,
            &["get", "pods", "-l", selector, "-o", "json"],
        )?;
        let list: Value = serde_json::from_str(&text)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|pod| {
                pod["status"]["phase"] == "Running"
                    && pod["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|pod| {
                let field = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    field(&pod["metadata"]["name"]),
                    field(&pod["status"]["podIP"]),
                    field(&pod["metadata"]["labels"]["app.kubernetes.io/component"]),
                )
            })
            .collect())
    }

    /// `kubectl apply -f -` in the namespace.
    pub fn apply(&self, manifest: &Value) -> Result<(), BoxError> {
        let output = self.cluster.kubectl_with_stdin(
            ["-n", &self.namespace, "apply", "-f", "-"],
            manifest.to_string().as_bytes(),
        )?;
        if !output.status.success() {
            return Err(
                format!("kubectl apply: {}", String::from_utf8_lossy(&output.stderr)).into()
            );
        }
        Ok(())
    }

    /// Waits until a pod matching `selector` is Ready and returns its IP.
    fn wait_pod_ip(&self, selector: &str) -> Result<String, BoxError> {
        let app = selector.trim_start_matches("app=");
        kubectl_ok(
            self.cluster,
            &self.namespace,
            &["rollout", "status", &format!("deployment/{app}"), "--timeout=240s"],
        )?;
        let pods = self.pods(selector)?;
        let (_, ip, _) = pods.first().ok_or_else(|| format!("no running pod for {selector}"))?;
        Ok(ip.clone())
    }

    /// An upstream deployed by [`ChartWorld::prepare`] as a rollout arm: its model and URL.
    pub fn upstream(&self, name: &str) -> Result<Value, BoxError> {
        self.upstreams
            .iter()
            .find(|(upstream, _)| upstream.name == name)
            .map(|(upstream, url)| json!({"model": upstream.model, "endpoint": url}))
            .ok_or_else(|| format!("no upstream {name}").into())
    }

    /// A ModelRollout of alias `alias` from the `stable` upstream to the `canary` one, through
    /// the gateway's ConfigMap, judged every 2 s on this world's Prometheus.
    pub fn rollout(
        &self,
        name: &str,
        alias: &str,
        stable: &str,
        canary: &str,
        weights: &[u32],
    ) -> Result<Value, BoxError> {
        let steps: Vec<Value> = weights.iter().map(|w| json!({"setWeight": w})).collect();
        Ok(json!({
            "apiVersion": "rollouts.modelops.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "model": alias,
                "stable": self.upstream(stable)?,
                "canary": self.upstream(canary)?,
                "routing": {"configMapRef": {"name": ROUTER}, "stickiness": {"headers": ["X-Session-ID"]}},
                "strategy": {"steps": steps},
                "analysis": {
                    "prometheus": {"address": format!("http://{PROMETHEUS_IN_NODE}")},
                    "interval": "2s",
                    "window": "30s",
                    "minRequests": 10,
                    "minRequestsForRollback": 5,
                    "failureLimit": 2,
                    "thresholds": {"maxErrorRate": 0.05, "maxLatencyP95": "1s"}
                }
            }
        }))
    }

    /// The rollout as JSON.
    pub fn get(&self, name: &str) -> Result<Value, BoxError> {
        let text = kubectl_ok(
            self.cluster,
            &self.namespace,
            &["get", "modelrollout", name, "-o", "json"],
        )?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until `check` holds for the rollout, failing with its last status.
    pub fn wait_rollout(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value, BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            let rollout = self.get(name)?;
            if check(&rollout) {
                return Ok(rollout);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name}: {what} not reached within {limit:?}; status: {}",
                    serde_json::to_string_pretty(&rollout["status"]).unwrap_or_default()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// One instant query of this world's Prometheus: the JSON `result` array.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, BoxError> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("{}/api/v1/query?query={encoded}", self.prometheus.address());
        let body: Value = serde_json::from_str(&crate::stack::get_text(&url).await?)?;
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The logs of the controller pods (the last lines of each), for failure messages.
    pub fn controller_logs(&self) -> String {
        let selector = "app.kubernetes.io/component=controller";
        self.cluster
            .kubectl(["-n", &self.namespace, "logs", "-l", selector, "--tail=30", "--prefix"])
            .map(|o: Output| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for ChartWorld<'_> {
    /// Removes the folder of logs and sockets; the forwards and Prometheus stop right after,
    /// as their fields drop.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A mock model server as a hardened Deployment with a readiness probe.
fn mockllm_deployment(upstream: &Upstream) -> Value {
    let labels = json!({"app": upstream.name});
    let mut args = vec!["--listen".to_owned(), "0.0.0.0:8081".to_owned()];
    args.extend(["--model".to_owned(), upstream.model.to_owned()]);
    args.extend([
        "--record-limit".to_owned(),
        "0".to_owned(),
        "--worker-threads".to_owned(),
        "1".to_owned(),
    ]);
    if upstream.error_rate > 0.0 {
        args.extend(["--error-rate".to_owned(), upstream.error_rate.to_string()]);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": upstream.name},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "mockllm", "image": "modelrollout.local/modelrollout-mockllm:dev",
                    "imagePullPolicy": "Never",
                    "args": args,
                    "ports": [{"containerPort": 8081}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8081}, "periodSeconds": 1},
                    "securityContext": {
                        "runAsNonRoot": true, "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }],
            }},
        },
    })
}
