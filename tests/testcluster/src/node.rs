//! A real node beside the local control plane: containerd, kubelet, kube-controller-manager and
//! kube-scheduler, so Deployments run, with their probes, mounted ConfigMaps and
//! ServiceAccount tokens, as a user's cluster runs them.
//!
//! Isolation by construction: kubelet, containerd and every pod run inside network, mount and
//! PID namespaces made for this cluster (`unshare`), with no route out of them. Every node and
//! pod address (the node IP, the pod subnet, the `kubernetes` Service IP) exists only there, and
//! the paths containerd and kubelet hard-code (`/run/containerd`, `/var/lib/kubelet`,
//! `/var/log/containers`, `/var/lib/cni`) are bind mounts of folders in the cluster directory,
//! visible in that mount namespace only. The API server stays on host loopback; two `socat`
//! pairs joined by UNIX sockets in the cluster directory carry traffic across:
//! - pods and kubelet dial `10.0.0.1:443` (the `kubernetes` Service, an address on the
//!   namespace's loopback), which reaches the API server;
//! - the API server dials the node by its hostname `localhost` (`--kubelet-preferred-address-types=Hostname`)
//!   at a free host port, which reaches the kubelet inside.
//!
//! Teardown: everything the node starts lives in one cgroup subtree (`/<cgroup name>` in every
//! v1 hierarchy) and one PID namespace. SIGKILL to every process of the subtree ends the PID
//! namespace, which takes the mount and network namespaces, their mounts, bridges and veths
//! with it; the cgroups are then removed. Host-wide sysctls are never written: kubelet runs with
//! `protectKernelDefaults` and sees the values it checks through read-only bind mounts in its
//! own mount namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::binaries::workspace_root;
use crate::kubeconfig::admin_kubeconfig;
use crate::log::log;
use crate::pki::PkiFiles;
use crate::supervisor::{
    NODE_SERVERS, Server, log_tail, process_alive, read_pid, write_launch_script,
};
use crate::{Error, IoContext, Result, utf8};

/// The environment variable naming the folder with kubelet, kube-controller-manager and
/// kube-scheduler (set by the Makefile; default: run `tests/control-plane/build-node.sh`).
pub const NODE_BINARIES_ENV: &str = "MODELROLLOUT_NODE_BINARIES";

/// The environment variable naming the folder of image tarballs `make images` writes.
pub const IMAGES_ENV: &str = "MODELROLLOUT_IMAGES";

/// The node's name, and the hostname the API server dials it by (it resolves to host loopback).
pub const NODE_NAME: &str = "localhost";

/// The sandbox image every pod needs; `make images` builds it, containerd never pulls it.
pub const PAUSE_IMAGE: &str = "modelrollout.local/pause:dev";

/// The node IP, on the pods' bridge inside the node's network namespace.
const NODE_IP: &str = "10.244.0.1";

/// The pods' subnet on that bridge.
const POD_SUBNET: &str = "10.244.0.0/24";

/// The `kubernetes` Service address (first of `--service-cluster-ip-range`), on the namespace's
/// loopback so pods reach the API server the in-cluster way.
const API_SERVICE_IP: &str = "10.0.0.1";

/// The node build script, relative to the workspace root.
const NODE_BUILD_SCRIPT: &str = "tests/control-plane/build-node.sh";

/// How long the node may take to be Ready and untainted (the reference machine: ~12 s).
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The values kubelet checks (`protectKernelDefaults`); shown to it in its mount namespace only.
const KERNEL_TUNABLES: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// A folder holding executable `kubelet`, `kube-controller-manager` and `kube-scheduler`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBinaries {
    dir: PathBuf,
}

impl NodeBinaries {
    /// Uses `$MODELROLLOUT_NODE_BINARIES` when set, otherwise runs
    /// `tests/control-plane/build-node.sh` (cached: well under a second; cold: about 10 minutes).
    pub fn locate() -> Result<Self> {
        static LOCATED: OnceLock<NodeBinaries> = OnceLock::new();
        if let Some(found) = LOCATED.get() {
            return Ok(found.clone());
        }
        let found = match std::env::var_os(NODE_BINARIES_ENV) {
            Some(dir) if !dir.is_empty() => Self::from_dir(PathBuf::from(dir))?,
            _ => Self::from_dir(run_build_script(NODE_BUILD_SCRIPT)?)?,
        };
        Ok(LOCATED.get_or_init(|| found).clone())
    }

    /// Checks that `dir` holds the three executables.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let binaries = Self { dir: dir.into() };
        for program in
            [binaries.kubelet(), binaries.kube_controller_manager(), binaries.kube_scheduler()]
        {
            if !is_executable(&program) {
                return Err(Error::MissingNodeBinary { path: program });
            }
        }
        Ok(binaries)
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `kubelet`.
    pub fn kubelet(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    /// The `kube-controller-manager`.
    pub fn kube_controller_manager(&self) -> PathBuf {
        self.dir.join("kube-controller-manager")
    }

    /// The `kube-scheduler`.
    pub fn kube_scheduler(&self) -> PathBuf {
        self.dir.join("kube-scheduler")
    }
}

/// What a cluster with a node needs besides the control plane.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// kubelet, kube-controller-manager, kube-scheduler.
    pub binaries: NodeBinaries,
    /// Image tarballs (`*.tar`, OCI layout) imported into containerd before kubelet starts;
    /// must hold the pause image.
    pub images: PathBuf,
}

impl NodeOptions {
    /// The binaries from [`NodeBinaries::locate`] and the images from `$MODELROLLOUT_IMAGES`
    /// (default `<workspace>/.cache/images`, where `make images` writes them).
    pub fn locate() -> Result<Self> {
        let images = match std::env::var_os(IMAGES_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => workspace_root().join(".cache/images"),
        };
        Ok(Self { binaries: NodeBinaries::locate()?, images })
    }

    /// The tarballs to import, sorted; the pause image must be among them.
    pub(crate) fn image_tarballs(&self) -> Result<Vec<PathBuf>> {
        let missing = || Error::MissingImages { dir: self.images.clone() };
        let entries = std::fs::read_dir(&self.images).map_err(|_| missing())?;
        let mut tarballs: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "tar"))
            .collect();
        tarballs.sort();
        if !tarballs.iter().any(|path| path.file_name().is_some_and(|n| n == "pause.tar")) {
            return Err(missing());
        }
        Ok(tarballs)
    }
}

/// Where a node's files live inside the cluster directory.
#[derive(Debug, Clone)]
pub(crate) struct NodeLayout {
    /// `<cluster>/node`.
    pub dir: PathBuf,
    /// The cgroup (in every v1 hierarchy) holding every process of the node.
    pub cgroup: String,
}

impl NodeLayout {
    /// A fresh layout in `cluster_dir` with a cgroup name unique to this cluster.
    pub fn new(cluster_dir: &Path) -> Self {
        let suffix: u32 = rand::random();
        Self { dir: cluster_dir.join("node"), cgroup: format!("modelrollout-node-{suffix:08x}") }
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The UNIX socket through which the node reaches the API server.
    fn apiserver_socket(&self) -> PathBuf {
        self.dir.join("apiserver.sock")
    }

    /// The UNIX socket through which the API server reaches the kubelet.
    fn kubelet_socket(&self) -> PathBuf {
        self.dir.join("kubelet.sock")
    }
}

/// Writes every file of the node (configuration, launch scripts, teardown script) into the
/// cluster directory, and lists the servers the supervisor starts after the API server.
pub(crate) fn prepare(
    cluster_dir: &Path,
    options: &NodeOptions,
    pki: &PkiFiles,
    apiserver_port: u16,
    kubelet_port: u16,
) -> Result<NodeLayout> {
    let layout = NodeLayout::new(cluster_dir);
    let tarballs = options.image_tarballs()?;
    for sub in [
        "containerd",
        "cni/conf",
        "cni/ipam",
        "kubelet",
        "pod-logs",
        "sysctl",
        "host/run",
        "host/var/lib",
        "host/var/log",
    ] {
        let path = layout.dir.join(sub);
        std::fs::create_dir_all(&path).context("creating", &path)?;
    }
    let n = &layout.dir;
    write(&n.join("containerd/config.toml"), &containerd_config(&layout)?)?;
    // containerd 1.6 does not notice a conflist renamed into place later: write it first.
    write(&n.join("cni/conf/10-modelrollout.conflist"), &cni_config(&layout)?)?;
    write(&n.join("kubelet/config.yaml"), &kubelet_config(&layout, pki, kubelet_port)?)?;
    let node_api = format!("https://{API_SERVICE_IP}:443");
    write(&n.join("kubelet/kubeconfig"), &admin_kubeconfig(&node_api, pki)?)?;
    for (key, value) in KERNEL_TUNABLES {
        write(&n.join("sysctl").join(key.replace('/', ".")), &format!("{value}\n"))?;
    }
    write(&cluster_dir.join(NODE_TEARDOWN_SCRIPT), &teardown_script(&layout))?;
    let inside = n.join("inside.sh");
    write(&inside, &inside_script(&layout, options, &tarballs, kubelet_port)?)?;
    write(&Server::Node.script(cluster_dir), &node_script(&layout, &inside)?)?;

    let admin = cluster_dir.join("kubeconfig");
    let admin = utf8(&admin)?;
    write_launch_script(
        cluster_dir,
        Server::KubeControllerManager,
        &options.binaries.kube_controller_manager(),
        &controller_manager_args(admin, pki)?,
    )?;
    write_launch_script(
        cluster_dir,
        Server::KubeScheduler,
        &options.binaries.kube_scheduler(),
        &[
            format!("--kubeconfig={admin}"),
            format!("--authentication-kubeconfig={admin}"),
            format!("--authorization-kubeconfig={admin}"),
            // No HTTPS endpoint: nothing scrapes it, and a fixed port would clash between clusters.
            "--secure-port=0".to_owned(),
            "--leader-elect=false".to_owned(),
        ],
    )?;
    write_launch_script(
        cluster_dir,
        Server::ApiserverBridge,
        Path::new("socat"),
        &[
            format!("UNIX-LISTEN:{},fork,unlink-early", utf8(&layout.apiserver_socket())?),
            format!("TCP:127.0.0.1:{apiserver_port}"),
        ],
    )?;
    write_launch_script(
        cluster_dir,
        Server::KubeletBridge,
        Path::new("socat"),
        &[
            format!("TCP-LISTEN:{kubelet_port},bind=127.0.0.1,fork,reuseaddr"),
            format!("UNIX-CONNECT:{}", utf8(&layout.kubelet_socket())?),
        ],
    )?;
    let names: Vec<&str> = NODE_SERVERS.iter().map(|server| server.name()).collect();
    write(&cluster_dir.join("servers"), &(names.join("\n") + "\n"))?;
    Ok(layout)
}

/// The teardown script's file name in the cluster directory (the supervisor runs it first).
pub(crate) const NODE_TEARDOWN_SCRIPT: &str = "node-teardown.sh";

/// SIGKILLs every process in the node's cgroup subtree (kubelet, containerd, shims, pods: the
/// PID namespace's init among them, so the kernel reaps the rest and frees the namespaces),
/// then removes the cgroups deepest first. Idempotent.
fn teardown_script(layout: &NodeLayout) -> String {
    format!(
        r#"name={name}
procs() {{ find /sys/fs/cgroup/pids/"$name" -name cgroup.procs -exec cat {{}} + 2>/dev/null; }}
rounds=0
while [ "$rounds" -lt 200 ]; do
  pids=$(procs)
  [ -z "$pids" ] && break
  kill -KILL $pids 2>/dev/null
  rounds=$((rounds + 1))
  sleep 0.05
done
for h in /sys/fs/cgroup/*/"$name"; do
  [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {{}} + 2>/dev/null
done
exit 0
"#,
        name = layout.cgroup
    )
}

/// Runs on the host: makes the cgroups, joins them, and enters fresh namespaces.
fn node_script(layout: &NodeLayout, inside: &Path) -> Result<String> {
    Ok(format!(
        r#"set -e
name={name}
for h in /sys/fs/cgroup/*/; do
  case "$h" in */unified/) continue ;; esac
  mkdir -p "$h$name/node"
done
# cpuset children start empty; a process cannot join one until it has cpus and mems.
for level in "$name" "$name/node"; do
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >/sys/fs/cgroup/cpuset/$level/cpuset.cpus
  cat /sys/fs/cgroup/cpuset/cpuset.mems >/sys/fs/cgroup/cpuset/$level/cpuset.mems
done
# pids and freezer only: memory stays accounted where the owner's is.
for h in pids freezer; do echo $$ >/sys/fs/cgroup/$h/$name/node/cgroup.procs; done
exec unshare --net --mount --propagation private --pid --fork --mount-proc bash {inside}
"#,
        name = layout.cgroup,
        inside = crate::supervisor::shell_quote(utf8(inside)?),
    ))
}

/// Runs as PID 1 of the node's namespaces: addresses, bind mounts, containerd, images, the
/// forwarders and kubelet. Exits when any of them does (the owner sees the node die).
fn inside_script(
    layout: &NodeLayout,
    options: &NodeOptions,
    tarballs: &[PathBuf],
    kubelet_port: u16,
) -> Result<String> {
    let q = |p: &Path| utf8(p).map(crate::supervisor::shell_quote);
    let n = &layout.dir;
    let cluster = n.parent().unwrap_or(n);
    let mut sysctls = String::new();
    for (key, _) in KERNEL_TUNABLES {
        let file = n.join("sysctl").join(key.replace('/', "."));
        sysctls.push_str(&format!("mount --bind -o ro {} /proc/sys/{key}\n", q(&file)?));
    }
    let mut imports = String::new();
    for tarball in tarballs {
        imports.push_str(&format!(
            "ctr -a \"$sock\" -n k8s.io images import {} >/dev/null\n",
            q(tarball)?
        ));
    }
    Ok(format!(
        r#"set -eu
logs={cluster}
sock={sock}
ip link set lo up
ip addr add {API_SERVICE_IP}/32 dev lo
ip link add cni0 type bridge
ip addr add {NODE_IP}/24 dev cni0
ip link set cni0 up
# Paths containerd and kubelet hard-code, bound to this cluster's folders in this namespace only.
mount --bind {n}/host/run /run
mount --bind {n}/host/var/lib /var/lib
mount --bind {n}/host/var/log /var/log
# kubelet checks these kernel tunables and would write host-wide values: show it its own.
{sysctls}
# A pull could only go to this dead loopback proxy: containerd never reaches a registry.
HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
  containerd --config {n}/containerd/config.toml >"$logs/containerd.log" 2>&1 &
socat TCP-LISTEN:443,bind={API_SERVICE_IP},fork,reuseaddr UNIX-CONNECT:{api_sock} >"$logs/node-api-bridge.log" 2>&1 &
socat UNIX-LISTEN:{kubelet_sock},fork,unlink-early TCP:127.0.0.1:{kubelet_port} >"$logs/node-kubelet-bridge.log" 2>&1 &
tries=0
until ctr -a "$sock" version >/dev/null 2>&1; do
  tries=$((tries + 1)); [ "$tries" -lt 300 ] || {{ echo "containerd did not start" >&2; exit 1; }}
  sleep 0.1
done
{imports}echo "images imported" >&2
{kubelet} --config={n}/kubelet/config.yaml --kubeconfig={n}/kubelet/kubeconfig \
  --root-dir={n}/kubelet/root --cert-dir={n}/kubelet/pki --node-ip={NODE_IP} \
  --hostname-override={NODE_NAME} --v=1 >"$logs/kubelet.log" 2>&1 &
wait -n
echo "a node process exited; see containerd.log and kubelet.log" >&2
exit 1
"#,
        cluster = q(cluster)?,
        sock = q(&layout.containerd_socket())?,
        n = q(n)?,
        api_sock = q(&layout.apiserver_socket())?,
        kubelet_sock = q(&layout.kubelet_socket())?,
        kubelet = q(&options.binaries.kubelet())?,
    ))
}

fn containerd_config(layout: &NodeLayout) -> Result<String> {
    let n = utf8(&layout.dir)?;
    Ok(format!(
        r#"version = 2
root = "{n}/containerd/root"
state = "{n}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{n}/containerd.sock"
[ttrpc]
  address = "{n}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_cdi = false
  netns_mounts_under_state_dir = true
  # runc cannot set the sandbox's oom_score_adj=-998 without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{n}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{n}/containerd/certs"
"#
    ))
}

/// A bridge without gateway duties (`isGateway: true` would turn on IP forwarding); pods get a
/// route to the Service range through the node IP, where the API server's forwarder listens.
fn cni_config(layout: &NodeLayout) -> Result<String> {
    let ipam = layout.dir.join("cni/ipam");
    let document = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "modelrollout",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": false,
            "isDefaultGateway": false,
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "dataDir": utf8(&ipam)?,
                "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP, "rangeStart": "10.244.0.10"}]],
                "routes": [{"dst": "10.0.0.0/24", "gw": NODE_IP}],
            },
        }],
    });
    Ok(serde_json::to_string_pretty(&document).unwrap_or_else(|_| document.to_string()))
}

fn kubelet_config(layout: &NodeLayout, pki: &PkiFiles, port: u16) -> Result<String> {
    let n = utf8(&layout.dir)?;
    let ca = utf8(&pki.ca_cert)?;
    Ok(format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# containerd 1.6 cannot tell kubelet its driver; cgroup v1 is refused unless allowed.
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
failCgroupV1: false
failSwapOn: false
# never write host-wide sysctls: fail instead (the node's mount namespace shows the values)
protectKernelDefaults: true
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://{n}/containerd.sock
podLogsDir: {n}/pod-logs
volumePluginDir: {n}/kubelet/volume-plugins
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: AlwaysAllow
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
# how often kubelet re-syncs pods, and so mounted ConfigMaps (the default is 1m)
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
resolvConf: ""
clusterDomain: cluster.local
"#,
        cgroup = layout.cgroup,
    ))
}

fn controller_manager_args(admin: &str, pki: &PkiFiles) -> Result<Vec<String>> {
    Ok(vec![
        format!("--kubeconfig={admin}"),
        format!("--authentication-kubeconfig={admin}"),
        format!("--authorization-kubeconfig={admin}"),
        "--secure-port=0".to_owned(),
        "--leader-elect=false".to_owned(),
        // published as the kube-root-ca.crt ConfigMap pods mount with their token
        format!("--root-ca-file={}", utf8(&pki.ca_cert)?),
        format!("--service-account-private-key-file={}", utf8(&pki.service_account_key)?),
        "--use-service-account-credentials=false".to_owned(),
    ])
}

/// Polls until the node is Ready, carries no taint and the `default` ServiceAccount exists,
/// failing fast (with the logs' tails) when the node's processes exit.
pub(crate) fn wait_until_ready(
    cluster_dir: &Path,
    kubectl: &dyn Fn(&[&str]) -> Result<std::process::Output>,
    started: Instant,
) -> Result<Duration> {
    let node_pid =
        crate::supervisor::wait_for_pid(cluster_dir, Server::Node, Duration::from_secs(30));
    let not_ready = |why: String| Error::NodeNotReady {
        why,
        tail: ["containerd.log", "kubelet.log", "node.log"]
            .iter()
            .map(|name| format!("--- {name}:\n{}", log_tail(&cluster_dir.join(name), 15)))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let Some(node_pid) = node_pid else {
        return Err(not_ready("the node's launcher never started".to_owned()));
    };
    loop {
        for server in [Server::Node, Server::KubeControllerManager, Server::KubeScheduler] {
            let pid = if server == Server::Node {
                Some(node_pid)
            } else {
                read_pid(&server.pid_file(cluster_dir))
            };
            if pid.is_some_and(|pid| !process_alive(pid)) {
                return Err(not_ready(format!("{} exited", server.name())));
            }
        }
        let status = kubectl(&[
            "get",
            "node",
            NODE_NAME,
            "--ignore-not-found",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints}"#,
        ])?;
        let text = String::from_utf8_lossy(&status.stdout);
        if status.status.success() && text.trim() == "True" {
            let sa = kubectl(&["get", "serviceaccount", "default", "-n", "default", "-o", "name"])?;
            if sa.status.success() {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > NODE_READY_TIMEOUT {
            return Err(not_ready(format!(
                "node {NODE_NAME} was not Ready and untainted after {}s (last: {:?})",
                NODE_READY_TIMEOUT.as_secs(),
                text.trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Imports more image tarballs into a running node's containerd (for `make images` while a
/// `make node-up` cluster runs).
pub fn import_images(cluster_dir: &Path, tarballs: &[PathBuf]) -> Result<()> {
    let socket = cluster_dir.join("node").join("containerd.sock");
    for tarball in tarballs {
        let output = Command::new("ctr")
            .arg("-a")
            .arg(&socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tarball)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn { program: PathBuf::from("ctr"), source })?;
        if !output.status.success() {
            return Err(Error::ImageImport {
                tarball: tarball.clone(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// Runs a build script of the workspace and returns the folder it prints on its last line.
fn run_build_script(relative: &str) -> Result<PathBuf> {
    let script = workspace_root().join(relative);
    log!("{NODE_BINARIES_ENV} is not set; running {}", script.display());
    let failed = |detail: String| Error::ControlPlaneBuild { script: script.clone(), detail };
    let output = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| failed(err.to_string()))?;
    if !output.status.success() {
        return Err(failed(output.status.to_string()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| failed("it printed no folder".to_owned()))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).context("writing", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> NodeLayout {
        NodeLayout { dir: PathBuf::from("/c/node"), cgroup: "modelrollout-node-1".to_owned() }
    }

    /// The bridge never acts as a gateway (that would set net.ipv4.ip_forward) and pods route
    /// only the Service range, through the node IP.
    #[test]
    fn cni_bridge_is_no_gateway_and_routes_only_services() {
        let config: serde_json::Value =
            serde_json::from_str(&cni_config(&layout()).expect("render")).expect("json");
        let bridge = &config["plugins"][0];
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["isDefaultGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        let routes = bridge["ipam"]["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0]["dst"], "10.0.0.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/c/node/cni/ipam");
    }

    /// kubelet fails rather than writing kernel tunables, and its cgroups stay under ours.
    #[test]
    fn kubelet_never_writes_sysctls_and_uses_the_cluster_cgroup() {
        let pki = PkiFiles::in_dir(Path::new("/c/pki"));
        let config = kubelet_config(&layout(), &pki, 4321).expect("render");
        let value: serde_yaml::Value = serde_yaml::from_str(&config).expect("yaml");
        assert_eq!(value["protectKernelDefaults"], true);
        assert_eq!(value["makeIPTablesUtilChains"], false);
        assert_eq!(value["cgroupRoot"], "/modelrollout-node-1");
        assert_eq!(value["port"], 4321);
        assert_eq!(value["containerRuntimeEndpoint"], "unix:///c/node/containerd.sock");
    }

    /// containerd keeps its root, state and sockets in the cluster folder and uses our pause image.
    #[test]
    fn containerd_stays_in_the_cluster_folder() {
        let config = containerd_config(&layout()).expect("render");
        for expected in [
            r#"root = "/c/node/containerd/root""#,
            r#"state = "/c/node/containerd/state""#,
            r#"address = "/c/node/containerd.sock""#,
            "sandbox_image = \"modelrollout.local/pause:dev\"",
            "restrict_oom_score_adj = true",
        ] {
            assert!(config.contains(expected), "missing {expected} in\n{config}");
        }
    }

    /// The node runs in fresh network, mount and PID namespaces, and the teardown kills by cgroup.
    #[test]
    fn node_runs_in_its_own_namespaces_and_teardown_kills_its_cgroup() {
        let script = node_script(&layout(), Path::new("/c/node/inside.sh")).expect("render");
        assert!(script.contains("unshare --net --mount --propagation private --pid --fork"));
        let teardown = teardown_script(&layout());
        assert!(teardown.contains("name=modelrollout-node-1"));
        assert!(teardown.contains("kill -KILL"));
    }

    /// A folder without the pause image is refused with the command that makes it.
    #[test]
    fn images_folder_without_pause_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("modelrollout-proxy.tar"), "x").expect("write");
        let options = NodeOptions {
            binaries: NodeBinaries { dir: dir.path().to_path_buf() },
            images: dir.path().to_path_buf(),
        };
        let err = options.image_tarballs().expect_err("no pause image");
        assert!(err.to_string().contains("make images"), "{err}");
    }
}
