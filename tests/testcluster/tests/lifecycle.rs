//! The local control plane against itself: it serves kubectl and kube clients, authenticates
//! ServiceAccount tokens under RBAC, and leaves nothing behind however its owner ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use modelrollout_testcluster::{TestCluster, process_alive};
use rustix::process::{Pid, Signal, kill_process};

/// Generous bound for teardown; it normally takes a second or two.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(90);

/// Polls `condition` until it holds or the deadline passes; true when it held.
fn eventually(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

fn signal(pid: u32, signal: Signal) -> Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid)?).context("pid 0")?;
    kill_process(pid, signal).context("sending a signal")?;
    Ok(())
}

fn read_pid(path: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().parse()?)
}

/// The shared cluster is a real, versioned kube-apiserver reachable through kubectl.
#[test]
fn shared_cluster_answers_kubectl_version() -> Result<()> {
    let cluster = TestCluster::shared()?;
    let version = cluster.kubectl_ok(["version"])?;
    ensure!(version.contains("Server Version: v1.36."), "kubectl version printed:\n{version}");
    ensure!(cluster.server_url().starts_with("https://127.0.0.1:"));
    ensure!(cluster.binaries_dir().join("helm").is_file());
    let helm = cluster.helm(["version", "--short"])?;
    ensure!(
        helm.status.success(),
        "helm version failed: {}",
        String::from_utf8_lossy(&helm.stderr)
    );
    Ok(())
}

/// A test namespace exists while the guard lives and is being deleted once it drops.
#[test]
fn namespace_is_created_and_deleted_on_drop() -> Result<()> {
    let cluster = TestCluster::shared()?;
    let name = {
        let namespace = cluster.namespace()?;
        let phase = cluster.kubectl_ok([
            "get",
            "namespace",
            namespace.name(),
            "-o",
            "jsonpath={.status.phase}",
        ])?;
        ensure!(phase == "Active", "new namespace phase {phase}");
        namespace.kubectl_ok(["create", "configmap", "routes", "--from-literal=a=b"])?;
        let listed = namespace.kubectl_ok(["get", "configmap", "routes", "-o", "name"])?;
        ensure!(listed.trim() == "configmap/routes", "got {listed}");
        namespace.name().to_owned()
    };
    // Without kube-controller-manager the namespace stays Terminating (or is gone, if empty).
    let after = cluster.kubectl(["get", "namespace", &name, "-o", "jsonpath={.status.phase}"])?;
    let phase = String::from_utf8_lossy(&after.stdout).into_owned();
    ensure!(
        !after.status.success() || phase == "Terminating",
        "namespace {name} is {phase} after drop"
    );
    Ok(())
}

/// A kube::Client built from the admin kubeconfig talks to the same API server.
#[tokio::test]
async fn kube_client_lists_namespaces() -> Result<()> {
    let cluster = TestCluster::shared()?;
    let namespace = cluster.namespace()?;
    let client = cluster.client().await?;
    let names: Vec<String> = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    ensure!(
        names.iter().any(|n| n == namespace.name()),
        "{} missing from {names:?}",
        namespace.name()
    );
    ensure!(names.iter().any(|n| n == "kube-system"), "kube-system missing from {names:?}");
    Ok(())
}

/// ServiceAccount tokens authenticate, and RBAC (not AlwaysAllow) decides what they may do.
#[test]
fn service_account_tokens_work_under_rbac() -> Result<()> {
    let cluster = TestCluster::shared()?;
    let namespace = cluster.namespace()?;
    namespace.kubectl_ok(["create", "serviceaccount", "bot"])?;
    let token = namespace.kubectl_ok(["create", "token", "bot"])?;
    let empty_kubeconfig = cluster.dir().join(format!("{}-empty.kubeconfig", namespace.name()));
    std::fs::write(&empty_kubeconfig, "apiVersion: v1\nkind: Config\n")?;
    let ca = cluster.ca_cert_path();
    let as_bot = |args: &[&str]| -> Result<std::process::Output> {
        let mut command = Command::new(cluster.binaries().kubectl());
        command
            .arg("--kubeconfig")
            .arg(&empty_kubeconfig)
            .arg("--server")
            .arg(cluster.server_url())
            .arg("--certificate-authority")
            .arg(&ca)
            .arg("--token")
            .arg(token.trim())
            .env("KUBECACHEDIR", cluster.dir().join("kube-cache"))
            .args(args);
        Ok(command.output()?)
    };

    let whoami = as_bot(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])?;
    let user = String::from_utf8_lossy(&whoami.stdout);
    ensure!(
        user == format!("system:serviceaccount:{}:bot", namespace.name()),
        "token user is {user:?}: {}",
        String::from_utf8_lossy(&whoami.stderr)
    );

    let list = ["get", "configmaps", "-n", namespace.name()];
    let denied = as_bot(&list)?;
    ensure!(!denied.status.success(), "RBAC let an unbound ServiceAccount list configmaps");
    ensure!(
        String::from_utf8_lossy(&denied.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    namespace.kubectl_ok([
        "create",
        "role",
        "read-configmaps",
        "--verb=get,list",
        "--resource=configmaps",
    ])?;
    namespace.kubectl_ok([
        "create",
        "rolebinding",
        "bot-reads",
        "--role=read-configmaps",
        &format!("--serviceaccount={}:bot", namespace.name()),
    ])?;
    // The authorizer's informer picks up the binding shortly after it is written.
    let allowed = eventually(Duration::from_secs(60), || {
        as_bot(&list).map(|o| o.status.success()).unwrap_or(false)
    });
    ensure!(allowed, "the ServiceAccount stayed forbidden after its RoleBinding");
    Ok(())
}

/// A cluster dropped while a test panics is fully stopped: servers gone, directory removed.
#[test]
fn panicking_owner_leaves_nothing_behind() -> Result<()> {
    let recorded = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = TestCluster::start().expect("cluster starts");
        *recorded.lock().expect("lock") =
            Some((cluster.dir().to_path_buf(), cluster.etcd_pid(), cluster.apiserver_pid()));
        panic!("simulated test failure while holding a cluster");
    }));
    ensure!(outcome.is_err(), "the closure was meant to panic");
    let (dir, etcd, apiserver) =
        recorded.into_inner().expect("lock").context("cluster never started")?;
    ensure!(!process_alive(etcd), "etcd {etcd} survived the panic");
    ensure!(!process_alive(apiserver), "kube-apiserver {apiserver} survived the panic");
    ensure!(!dir.exists(), "{} survived the panic", dir.display());
    Ok(())
}

/// A `testcluster run` process ended by `how` leaves no server and no directory behind;
/// `graceful`: the process handles the signal, stops the cluster itself and exits 0.
fn owner_ending_leaves_nothing_behind(how: Signal, graceful: bool) -> Result<()> {
    let mut owner = Command::new(env!("CARGO_BIN_EXE_testcluster"))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = owner.stdout.take().context("stdout")?;
    let mut first_line = String::new();
    BufReader::new(stdout).read_line(&mut first_line)?;
    let Some(kubeconfig) = first_line.trim().strip_prefix("export KUBECONFIG=") else {
        let _ = owner.kill();
        bail!("testcluster run printed {first_line:?} instead of the export line");
    };
    let dir = PathBuf::from(kubeconfig).parent().context("kubeconfig has no parent")?.to_path_buf();
    let etcd = read_pid(&dir.join("etcd.pid"))?;
    let apiserver = read_pid(&dir.join("kube-apiserver.pid"))?;
    ensure!(
        process_alive(etcd) && process_alive(apiserver),
        "servers not running before the signal"
    );

    signal(owner.id(), how)?;
    let status = owner.wait()?;
    ensure!(status.success() == graceful, "owner exited with {status} after {how:?}");
    let gone = eventually(TEARDOWN_DEADLINE, || {
        !process_alive(etcd) && !process_alive(apiserver) && !dir.exists()
    });
    ensure!(
        gone,
        "after {how:?} to the owner: etcd alive={}, kube-apiserver alive={}, {} exists={}",
        process_alive(etcd),
        process_alive(apiserver),
        dir.display(),
        dir.exists()
    );
    Ok(())
}

/// SIGKILL runs no destructor: the supervisor notices its owner's pipe closing.
#[test]
fn sigkilled_owner_leaves_nothing_behind() -> Result<()> {
    owner_ending_leaves_nothing_behind(Signal::KILL, false)
}

/// Ctrl-C (SIGINT) stops the foreground cluster cleanly.
#[test]
fn interrupted_owner_leaves_nothing_behind() -> Result<()> {
    owner_ending_leaves_nothing_behind(Signal::INT, true)
}

/// Runs `testcluster down --dir <dir>` when dropped.
struct DownOnDrop(PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_testcluster"))
            .args(["down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

/// `up` starts a cluster that outlives the command, a second `up` reuses it, `down` removes it.
#[test]
fn up_then_down_leaves_nothing_behind() -> Result<()> {
    let base = tempfile::tempdir()?;
    let dir = base.path().join("cluster");
    let testcluster = |args: &[&str]| -> Result<String> {
        let output = Command::new(env!("CARGO_BIN_EXE_testcluster"))
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .output()?;
        ensure!(
            output.status.success(),
            "testcluster {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    };
    // Should an assertion fail, `down` still runs: a detached cluster outlives this process.
    let _down_on_drop = DownOnDrop(dir.clone());
    let printed = testcluster(&["up"])?;
    let kubeconfig = printed
        .trim()
        .strip_prefix("export KUBECONFIG=")
        .with_context(|| format!("up printed {printed:?}"))?
        .to_owned();
    ensure!(Path::new(&kubeconfig).is_absolute(), "{kubeconfig} is not absolute");
    let etcd = read_pid(&dir.join("etcd.pid"))?;
    let apiserver = read_pid(&dir.join("kube-apiserver.pid"))?;
    ensure!(
        process_alive(etcd) && process_alive(apiserver),
        "up returned but the servers are not running"
    );

    let again = testcluster(&["up"])?;
    ensure!(again == printed, "second up printed {again:?}, first {printed:?}");
    ensure!(
        read_pid(&dir.join("kube-apiserver.pid"))? == apiserver,
        "second up started another API server"
    );

    testcluster(&["down"])?;
    ensure!(!process_alive(etcd) && !process_alive(apiserver), "down left servers running");
    ensure!(!dir.exists(), "down left {}", dir.display());
    let idle = Command::new(env!("CARGO_BIN_EXE_testcluster"))
        .args(["down", "--dir"])
        .arg(&dir)
        .output()?;
    ensure!(idle.status.success(), "down without a cluster failed");
    Ok(())
}
