//! Starting a local control plane and using it from tests.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::binaries::ControlPlaneBinaries;
use crate::kubeconfig::admin_kubeconfig;
use crate::log::log;
use crate::namespace::TestNamespace;
use crate::node::{self, NodeOptions};
use crate::pki::{Pki, PkiFiles};
use crate::supervisor::{
    Lifetime, Server, Supervisor, free_loopback_ports, log_tail, process_alive, write_launch_script,
};
use crate::{Error, IoContext, Result, utf8};

/// Attempts before giving up when another process takes a port we picked.
const START_ATTEMPTS: u32 = 3;

/// How long the API server may take to report ready; generous, as CI machines are busy.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the supervisor may take to stop both servers (it escalates to SIGKILL after 15 s each).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(45);

/// The Service CIDR, as envtest uses it.
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// A running etcd + kube-apiserver on loopback, with an admin kubeconfig.
///
/// Started by [`TestCluster::start`] (owned by the caller, stopped on drop) or
/// [`TestCluster::shared`] (one per test binary, stopped when the process exits).
#[derive(Debug)]
pub struct TestCluster {
    endpoints: Endpoints,
    binaries: ControlPlaneBinaries,
    supervisor: Option<Supervisor>,
}

/// Where a started cluster lives and how to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// The cluster directory (certificates, kubeconfig, logs, etcd data).
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// etcd's process id.
    pub etcd_pid: u32,
    /// kube-apiserver's process id.
    pub apiserver_pid: u32,
    /// The `Server Version` line of `kubectl version`.
    pub server_version: String,
    /// From spawning the servers to `/readyz` = ok.
    pub startup: Duration,
    /// With a node: from spawning the servers to the node Ready, untainted, with the
    /// `default` ServiceAccount.
    pub node_startup: Option<Duration>,
    /// With a node: the cgroup (in every v1 hierarchy) that holds all of its processes.
    pub node_cgroup: Option<String>,
}

static SHARED: OnceLock<Result<TestCluster>> = OnceLock::new();
static SHARED_WITH_NODE: OnceLock<Result<TestCluster>> = OnceLock::new();

impl TestCluster {
    /// The cluster shared by every test of this test binary, started on first use.
    ///
    /// It is never dropped (it is a static): the supervisor tears it down when the test
    /// process exits, however it exits. Give each test its own [`TestCluster::namespace`].
    pub fn shared() -> Result<&'static TestCluster, &'static Error> {
        SHARED
            .get_or_init(|| {
                let binary = std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                log!("starting the shared cluster of test binary {binary}");
                TestCluster::start()
            })
            .as_ref()
    }

    /// The cluster with a node (see [`TestCluster::start_with_node`]) shared by every test of
    /// this test binary, started on first use and torn down when the process exits.
    pub fn shared_with_node() -> Result<&'static TestCluster, &'static Error> {
        SHARED_WITH_NODE
            .get_or_init(|| {
                log!("starting the shared cluster with a node");
                TestCluster::start_with_node(
                    ControlPlaneBinaries::locate()?,
                    NodeOptions::locate()?,
                )
            })
            .as_ref()
    }

    /// Starts a cluster owned by the caller with a node beside it: containerd, kubelet,
    /// kube-controller-manager and kube-scheduler in namespaces of their own, the images of
    /// `options.images` imported. Returns once the node is Ready and untainted.
    pub fn start_with_node(binaries: ControlPlaneBinaries, options: NodeOptions) -> Result<Self> {
        let (endpoints, supervisor) =
            launch(&binaries, &ClusterDir::Temporary, Lifetime::Owned, Some(&options))?;
        Ok(Self { endpoints, binaries, supervisor: Some(supervisor) })
    }

    /// With a node: the cgroup, in every v1 hierarchy under `/sys/fs/cgroup`, holding every
    /// process of the node (kubelet, containerd, shims, pods).
    pub fn node_cgroup(&self) -> Option<&str> {
        self.endpoints.node_cgroup.as_deref()
    }

    /// With a node: how long it took from spawning the servers to a Ready, untainted node.
    pub fn node_startup_time(&self) -> Option<Duration> {
        self.endpoints.node_startup
    }

    /// Starts a cluster owned by the caller: dropping it stops both servers and removes its
    /// directory. Binaries come from [`ControlPlaneBinaries::locate`].
    pub fn start() -> Result<Self> {
        Self::start_with(ControlPlaneBinaries::locate()?)
    }

    /// Starts a cluster owned by the caller with the given binaries.
    pub fn start_with(binaries: ControlPlaneBinaries) -> Result<Self> {
        let (endpoints, supervisor) =
            launch(&binaries, &ClusterDir::Temporary, Lifetime::Owned, None)?;
        Ok(Self { endpoints, binaries, supervisor: Some(supervisor) })
    }

    /// The admin kubeconfig (client certificate in group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.endpoints.kubeconfig
    }

    /// The CA certificate that signed the API server's serving certificate (for clients that
    /// authenticate with a ServiceAccount token instead of the admin kubeconfig).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir().join("pki").join("ca.crt")
    }

    /// The API server URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.endpoints.server
    }

    /// The folder with the pinned etcd, kube-apiserver, kubectl and helm.
    pub fn binaries_dir(&self) -> &Path {
        self.binaries.dir()
    }

    /// The pinned binaries.
    pub fn binaries(&self) -> &ControlPlaneBinaries {
        &self.binaries
    }

    /// The cluster directory (removed when the cluster stops).
    pub fn dir(&self) -> &Path {
        &self.endpoints.dir
    }

    /// etcd's process id.
    pub fn etcd_pid(&self) -> u32 {
        self.endpoints.etcd_pid
    }

    /// kube-apiserver's process id.
    pub fn apiserver_pid(&self) -> u32 {
        self.endpoints.apiserver_pid
    }

    /// The API server's `Server Version` as `kubectl version` prints it.
    pub fn server_version(&self) -> &str {
        &self.endpoints.server_version
    }

    /// How long the cluster took from spawning the servers to `/readyz` = ok.
    pub fn startup_time(&self) -> Duration {
        self.endpoints.startup
    }

    /// A `kubectl` command (the pinned one) pointed at this cluster, ready to add arguments.
    pub fn kubectl_command(&self) -> Command {
        let mut command = Command::new(self.binaries.kubectl());
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            // Discovery cache inside the cluster directory: nothing left in $HOME.
            .env("KUBECACHEDIR", self.dir().join("kube-cache"))
            .stdin(Stdio::null());
        command
    }

    /// Runs the pinned `kubectl` with `args` against this cluster; a failing command is an
    /// `Ok(Output)` with a non-zero status, only a failure to run it is an `Err`.
    pub fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.kubectl_command();
        command.args(args);
        run(command, None)
    }

    /// Like [`TestCluster::kubectl`], with `input` on stdin (for `apply -f -`).
    pub fn kubectl_with_stdin<I, S>(&self, args: I, input: &[u8]) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.kubectl_command();
        command.args(args);
        run(command, Some(input))
    }

    /// Runs `kubectl` and returns its stdout, or [`Error::Kubectl`] with its stderr when it fails.
    pub fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let output = self.kubectl(&args)?;
        expect_success(&args, output)
    }

    /// A `helm` command (the pinned one) pointed at this cluster, with Helm's cache, config
    /// and data folders inside the cluster directory.
    pub fn helm_command(&self) -> Command {
        let helm_home = self.dir().join("helm");
        let mut command = Command::new(self.binaries.helm());
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .stdin(Stdio::null());
        command
    }

    /// Runs the pinned `helm` with `args` against this cluster.
    pub fn helm<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.helm_command();
        command.args(args);
        run(command, None)
    }

    /// A [`kube::Client`] with admin rights. Call it inside the test's async runtime: the
    /// client's background task lives on the runtime that creates it.
    pub async fn client(&self) -> Result<kube::Client> {
        let path = self.kubeconfig_path();
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .map_err(|source| Error::Kubeconfig { path: path.to_path_buf(), source })?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|source| Error::Kubeconfig { path: path.to_path_buf(), source })?;
        kube::Client::try_from(config).map_err(Error::Client)
    }

    /// A fresh namespace with a random name, deleted when the returned guard drops.
    pub fn namespace(&self) -> Result<TestNamespace<'_>> {
        TestNamespace::create(self)
    }

    /// Stops the cluster now and reports any trouble (dropping it does the same, silently).
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(supervisor) = self.supervisor.take() else {
            return Ok(());
        };
        let result = supervisor.stop(self.dir(), STOP_GRACE);
        if result.is_ok() {
            log!("stopped the cluster at {}", self.server_url());
        }
        result
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Err(err) = self.stop_inner() {
            log!("stopping the cluster at {}: {err}", self.endpoints.server);
        }
    }
}

/// Where a new cluster's directory goes.
#[derive(Debug, Clone)]
pub(crate) enum ClusterDir {
    /// A fresh directory under the system temp dir.
    Temporary,
    /// This path (created if absent).
    At(PathBuf),
}

impl ClusterDir {
    fn create(&self) -> Result<PathBuf> {
        match self {
            ClusterDir::Temporary => {
                let suffix: u64 = rand::random();
                let dir = std::env::temp_dir()
                    .join(format!("modelrollout-testcluster-{}-{suffix:016x}", std::process::id()));
                std::fs::create_dir(&dir).context("creating", &dir)?;
                Ok(dir)
            }
            ClusterDir::At(path) => {
                std::fs::create_dir_all(path).context("creating", path)?;
                std::fs::canonicalize(path).context("resolving", path)
            }
        }
    }
}

/// Starts etcd and kube-apiserver under a supervisor and waits until the API server is ready,
/// retrying with new ports when another process took one of ours.
pub(crate) fn launch(
    binaries: &ControlPlaneBinaries,
    dir: &ClusterDir,
    lifetime: Lifetime,
    node: Option<&NodeOptions>,
) -> Result<(Endpoints, Supervisor)> {
    if let Some(options) = node {
        // Before any folder exists: a missing pause image is the likeliest mistake.
        options.image_tarballs()?;
    }
    let mut attempt = 1;
    loop {
        let cluster_dir = dir.create()?;
        match launch_once(binaries, &cluster_dir, lifetime, node) {
            Ok(started) => return Ok(started),
            Err(LaunchError::PortTaken(err)) if attempt < START_ATTEMPTS => {
                log!(
                    "attempt {attempt}: a port was taken by another process ({err}); retrying with new ports"
                );
                attempt += 1;
            }
            Err(LaunchError::PortTaken(err) | LaunchError::Other(err)) => return Err(err),
        }
    }
}

/// Why one launch attempt failed.
enum LaunchError {
    /// A server could not bind its port: worth another attempt.
    PortTaken(Error),
    /// Anything else.
    Other(Error),
}

impl From<Error> for LaunchError {
    fn from(err: Error) -> Self {
        LaunchError::Other(err)
    }
}

fn launch_once(
    binaries: &ControlPlaneBinaries,
    dir: &Path,
    lifetime: Lifetime,
    node: Option<&NodeOptions>,
) -> Result<(Endpoints, Supervisor), LaunchError> {
    let pki_dir = dir.join("pki");
    std::fs::create_dir(&pki_dir).context("creating", &pki_dir)?;
    let pki = PkiFiles::in_dir(&pki_dir);
    Pki::generate()?.write(&pki)?;

    let ports = free_loopback_ports(4)?;
    let (etcd_client, etcd_peer, secure, kubelet) = (ports[0], ports[1], ports[2], ports[3]);
    let etcd_url = format!("http://127.0.0.1:{etcd_client}");
    let server = format!("https://127.0.0.1:{secure}");

    write_launch_script(
        dir,
        Server::Etcd,
        &binaries.etcd(),
        &etcd_args(&dir.join("etcd"), &etcd_url, etcd_peer)?,
    )?;
    write_launch_script(
        dir,
        Server::KubeApiserver,
        &binaries.kube_apiserver(),
        &apiserver_args(&pki, &pki_dir, &etcd_url, secure, node.is_some())?,
    )?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, admin_kubeconfig(&server, &pki)?)
        .context("writing", &kubeconfig)?;
    let node_cgroup = match node {
        Some(options) => Some(node::prepare(dir, options, &pki, secure, kubelet)?.cgroup),
        None => None,
    };

    log!(
        "starting etcd ({etcd_url}) and kube-apiserver ({server}) from {} in {}",
        binaries.dir().display(),
        dir.display()
    );
    let started = Instant::now();
    let supervisor = Supervisor::spawn(dir, lifetime)?;
    let ready = wait_until_ready(binaries, dir, &server, &kubeconfig, started).and_then(
        |(etcd_pid, apiserver_pid, server_version)| {
            let startup = started.elapsed();
            let node_startup = match node {
                Some(_) => {
                    let kubectl = |args: &[&str]| kubectl_at(binaries, dir, &kubeconfig, args);
                    let took = node::wait_until_ready(dir, &kubectl, started)?;
                    log!(
                        "node {} Ready and untainted after {:.1}s",
                        node::NODE_NAME,
                        took.as_secs_f64()
                    );
                    Some(took)
                }
                None => None,
            };
            Ok((etcd_pid, apiserver_pid, server_version, startup, node_startup))
        },
    );
    match ready {
        Ok((etcd_pid, apiserver_pid, server_version, startup, node_startup)) => {
            log!(
                "ready after {:.1}s: {server} ({server_version}; etcd pid {etcd_pid}, kube-apiserver pid {apiserver_pid})",
                startup.as_secs_f64()
            );
            Ok((
                Endpoints {
                    dir: dir.to_path_buf(),
                    server,
                    kubeconfig,
                    etcd_pid,
                    apiserver_pid,
                    server_version,
                    startup,
                    node_startup,
                    node_cgroup,
                },
                supervisor,
            ))
        }
        Err(err) => {
            let port_taken = lost_a_port(&err);
            if let Err(stop_err) = supervisor.stop(dir, STOP_GRACE) {
                log!("cleaning up after a failed start: {stop_err}");
            }
            Err(if port_taken { LaunchError::PortTaken(err) } else { LaunchError::Other(err) })
        }
    }
}

/// Whether a failed start is a server that could not bind the port we picked for it (another
/// process took it between our probe and its bind): a new attempt with new ports fixes that.
fn lost_a_port(err: &Error) -> bool {
    matches!(err, Error::ExitedEarly { tail, .. } if tail.contains("address already in use"))
}

/// Polls `/readyz` through the pinned kubectl until it answers `ok`, failing fast when a
/// server exits. Returns the etcd and kube-apiserver pids and the server version line.
fn wait_until_ready(
    binaries: &ControlPlaneBinaries,
    dir: &Path,
    server: &str,
    kubeconfig: &Path,
    started: Instant,
) -> Result<(u32, u32, String)> {
    let pid_timeout = Duration::from_secs(30);
    let exited = |which: Server| Error::ExitedEarly {
        process: which.name(),
        log: which.log(dir),
        tail: log_tail(&which.log(dir), 30),
    };
    let etcd_pid = crate::supervisor::wait_for_pid(dir, Server::Etcd, pid_timeout)
        .ok_or_else(|| exited(Server::Etcd))?;
    let apiserver_pid = crate::supervisor::wait_for_pid(dir, Server::KubeApiserver, pid_timeout)
        .ok_or_else(|| exited(Server::KubeApiserver))?;
    let kubectl = |args: &[&str]| kubectl_at(binaries, dir, kubeconfig, args);
    loop {
        for (which, pid) in [(Server::Etcd, etcd_pid), (Server::KubeApiserver, apiserver_pid)] {
            if !process_alive(pid) {
                return Err(exited(which));
            }
        }
        let readyz = kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"])?;
        if readyz.status.success() && String::from_utf8_lossy(&readyz.stdout).trim() == "ok" {
            break;
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::NotReady {
                server: server.to_owned(),
                seconds: READY_TIMEOUT.as_secs(),
                tail: log_tail(&Server::KubeApiserver.log(dir), 30),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let version = kubectl(&["version"])?;
    let server_version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find(|line| line.starts_with("Server Version"))
        .unwrap_or("Server Version: unknown")
        .to_owned();
    Ok((etcd_pid, apiserver_pid, server_version))
}

/// Runs the pinned kubectl against the cluster being started.
fn kubectl_at(
    binaries: &ControlPlaneBinaries,
    dir: &Path,
    kubeconfig: &Path,
    args: &[&str],
) -> Result<Output> {
    let mut command = Command::new(binaries.kubectl());
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("KUBECACHEDIR", dir.join("kube-cache"))
        .stdin(Stdio::null());
    run(command, None)
}

/// etcd flags: loopback only, data in the cluster directory, no fsync (test data is disposable).
fn etcd_args(data_dir: &Path, client_url: &str, peer_port: u16) -> Result<Vec<String>> {
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    Ok(vec![
        "--name=testcluster".to_owned(),
        format!("--data-dir={}", utf8(data_dir)?),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=testcluster={peer_url}"),
        "--unsafe-no-fsync=true".to_owned(),
        "--log-level=warn".to_owned(),
    ])
}

/// kube-apiserver flags, after controller-runtime's envtest.
fn apiserver_args(
    pki: &PkiFiles,
    cert_dir: &Path,
    etcd_url: &str,
    secure_port: u16,
    with_node: bool,
) -> Result<Vec<String>> {
    let mut args = vec![
        format!("--etcd-servers={etcd_url}"),
        format!("--secure-port={secure_port}"),
        "--bind-address=127.0.0.1".to_owned(),
        // Needed where the machine has no default route; loopback is all we serve anyway.
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--cert-dir={}", utf8(cert_dir)?),
        format!("--tls-cert-file={}", utf8(&pki.serving_cert)?),
        format!("--tls-private-key-file={}", utf8(&pki.serving_key)?),
        format!("--client-ca-file={}", utf8(&pki.ca_cert)?),
        format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
        "--authorization-mode=RBAC".to_owned(),
        "--allow-privileged=true".to_owned(),
        format!("--service-account-issuer=https://127.0.0.1:{secure_port}"),
        format!("--service-account-key-file={}", utf8(&pki.service_account_pub)?),
        format!("--service-account-signing-key-file={}", utf8(&pki.service_account_key)?),
        // Endpoints may not hold loopback addresses, so the default reconciler of the
        // `kubernetes` Service would fail every 10 s; nothing here routes through it.
        "--endpoint-reconciler-type=none".to_owned(),
    ];
    if with_node {
        // Pods get their ServiceAccount token and kube-root-ca.crt; kube-controller-manager
        // creates the default ServiceAccounts. `logs` and `exec` reach the kubelet by its
        // hostname (`localhost`), where a forwarder into the node's namespace listens.
        args.extend([
            format!("--kubelet-client-certificate={}", utf8(&pki.admin_cert)?),
            format!("--kubelet-client-key={}", utf8(&pki.admin_key)?),
            "--kubelet-preferred-address-types=Hostname".to_owned(),
        ]);
    } else {
        // No controller-manager creates default ServiceAccounts here (as in envtest).
        args.push("--disable-admission-plugins=ServiceAccount".to_owned());
    }
    Ok(args)
}

/// Runs a prepared command to completion, feeding `input` on stdin when given.
fn run(mut command: Command, input: Option<&[u8]>) -> Result<Output> {
    let program = PathBuf::from(command.get_program());
    let spawn_error = |source| Error::Spawn { program: program.clone(), source };
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let Some(input) = input else {
        return command.output().map_err(spawn_error);
    };
    command.stdin(Stdio::piped());
    let mut child = command.spawn().map_err(spawn_error)?;
    // A writer thread: a large input must not deadlock against a full stdout pipe.
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        std::thread::spawn(move || stdin.write_all(&input))
    });
    let output = child.wait_with_output().map_err(spawn_error)?;
    if let Some(writer) = writer {
        // A program that exits without reading its input is not an error of ours.
        let _ = writer.join();
    }
    Ok(output)
}

/// The stdout of a successful kubectl run, or [`Error::Kubectl`].
pub(crate) fn expect_success(args: &[std::ffi::OsString], output: Output) -> Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(Error::Kubectl {
        args: args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API server runs with envtest's flags.
    #[test]
    fn apiserver_flags_follow_envtest() {
        let pki = PkiFiles::in_dir(Path::new("/c/pki"));
        let args = apiserver_args(&pki, Path::new("/c/pki"), "http://127.0.0.1:1", 2, false)
            .expect("args");
        for expected in [
            "--etcd-servers=http://127.0.0.1:1",
            "--secure-port=2",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--cert-dir=/c/pki",
            "--client-ca-file=/c/pki/ca.crt",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--service-account-issuer=https://127.0.0.1:2",
            "--service-account-key-file=/c/pki/service-account.pub",
            "--service-account-signing-key-file=/c/pki/service-account.key",
        ] {
            assert!(args.iter().any(|a| a == expected), "missing {expected} in {args:?}");
        }
    }

    /// etcd listens on loopback only, and its single-member cluster names its own peer URL.
    #[test]
    fn etcd_listens_on_loopback_only() {
        let args = etcd_args(Path::new("/c/etcd"), "http://127.0.0.1:5", 6).expect("args");
        for arg in args.iter().filter(|a| a.contains("urls=")) {
            assert!(arg.contains("http://127.0.0.1:"), "{arg} is not loopback");
        }
        assert!(args.contains(&"--initial-cluster=testcluster=http://127.0.0.1:6".to_owned()));
    }

    /// A failed kubectl run becomes an error quoting the command and its stderr.
    #[test]
    fn failed_command_error_quotes_args_and_stderr() {
        let output = Command::new("sh")
            .args(["-c", "echo 'no such resource' >&2; exit 3"])
            .output()
            .expect("sh runs");
        let err = expect_success(&["get".into(), "mro".into()], output).expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("`kubectl get mro`"), "{text}");
        assert!(text.contains("no such resource"), "{text}");
    }

    /// Only a server that exited on a taken port makes the start worth retrying.
    #[test]
    fn only_a_taken_port_is_retried() {
        let exited = |tail: &str| Error::ExitedEarly {
            process: "etcd",
            log: PathBuf::from("/c/etcd.log"),
            tail: tail.to_owned(),
        };
        let cases = [
            (exited("listen tcp 127.0.0.1:2379: bind: address already in use"), true),
            (exited("failed to listen on 127.0.0.1:6443: bind: address already in use"), true),
            (exited("invalid argument \"x\" for \"--secure-port\""), false),
            (
                Error::NotReady {
                    server: "https://127.0.0.1:1".to_owned(),
                    seconds: 1,
                    tail: "address already in use".to_owned(),
                },
                false,
            ),
        ];
        for (err, retried) in cases {
            assert_eq!(lost_a_port(&err), retried, "{err}");
        }
    }

    /// Stdin input reaches the program, and its stdout comes back.
    #[test]
    fn run_feeds_stdin() {
        let output = run(Command::new("cat"), Some(b"hello")).expect("cat runs");
        assert_eq!(output.stdout, b"hello");
    }
}
