//! The plugin against the running controller (`modelrollout-controller`) on the local control
//! plane: each request is acted on once, and the controller's Event names who asked.
//!
//! No Prometheus and no proxy run here (the rollout's Prometheus address is a closed loopback
//! port), so the rollout never advances on analysis: that is the controller's own end-to-end
//! test. What this test covers is the plugin's contract with the controller: pause, resume,
//! abort, retry and promote --full, the Events, and `status --watch` exit codes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use modelrollout_testcluster::{TestCluster, TestNamespace};
use serde_json::Value;

/// Bound on waiting for the controller to react to one request.
const REACTION_BOUND: Duration = Duration::from_secs(60);

/// The user of the cluster's admin certificate (tests/testcluster).
const ADMIN_USER: &str = "testcluster-admin";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared cluster with the ModelRollout CRD installed (the end-to-end crate's helper).
fn cluster() -> Result<&'static TestCluster> {
    modelrollout_e2e::cluster_with_crd().map_err(|err| anyhow::anyhow!("{err}"))
}

/// The controller binary: `$MODELROLLOUT_CONTROLLER_BIN`, else next to this test's target
/// directory (built by `cargo test --workspace`), else built now.
fn controller_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MODELROLLOUT_CONTROLLER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-modelrollout"));
    let binary = plugin.with_file_name("modelrollout-controller");
    if !binary.is_file() {
        let built = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "modelrollout-controller",
                "--bin",
                "modelrollout-controller",
            ])
            .current_dir(workspace())
            .status()
            .context("running cargo build for the controller")?;
        ensure!(built.success(), "cargo build -p modelrollout-controller failed");
    }
    ensure!(binary.is_file(), "{} is missing after the build", binary.display());
    Ok(binary)
}

/// A controller process watching one namespace; killed on drop.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn start(namespace: &TestNamespace<'_>) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("controller-{}.log", namespace.name()));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(controller_binary()?)
            .args(["--namespace", namespace.name(), "--leader-elect=false"])
            .args(["--metrics-address", "127.0.0.1:0"])
            .env("KUBECONFIG", namespace.cluster().kubeconfig_path())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting modelrollout-controller")?;
        Ok(Controller { child, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Already exited is fine; the test reports its log on failure.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn plugin(namespace: &TestNamespace<'_>, args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_kubectl-modelrollout"))
        .arg("--kubeconfig")
        .arg(namespace.cluster().kubeconfig_path())
        .args(["-n", namespace.name()])
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .context("running kubectl-modelrollout")
}

/// `status --watch`, killed (and failed) if it has not exited within [`REACTION_BOUND`].
fn watch(namespace: &TestNamespace<'_>) -> Result<(Option<i32>, String)> {
    let output_path = std::env::temp_dir().join(format!("watch-{}.txt", namespace.name()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-modelrollout"))
        .arg("--kubeconfig")
        .arg(namespace.cluster().kubeconfig_path())
        .args(["-n", namespace.name(), "status", "chat-assistant", "--watch"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output_path)?)
        .spawn()?;
    let deadline = Instant::now() + REACTION_BOUND;
    let code = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            let text = std::fs::read_to_string(&output_path).unwrap_or_default();
            bail!("status --watch did not exit within {REACTION_BOUND:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&output_path)?;
    std::fs::remove_file(&output_path)?;
    Ok((code, text))
}

fn plugin_ok(namespace: &TestNamespace<'_>, args: &[&str]) -> Result<String> {
    let output = plugin(namespace, args)?;
    ensure!(
        output.status.success(),
        "kubectl modelrollout {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits until `check` holds for the rollout and its events, or fails with the controller's log.
fn wait_for(
    namespace: &TestNamespace<'_>,
    controller: &Controller,
    what: &str,
    check: impl Fn(&Value, &[Value]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + REACTION_BOUND;
    loop {
        let rollout: Value = serde_json::from_str(&namespace.kubectl_ok([
            "get",
            "mro",
            "chat-assistant",
            "-o",
            "json",
        ])?)?;
        let events: Value = serde_json::from_str(&namespace.kubectl_ok([
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=chat-assistant",
            "-o",
            "json",
        ])?)?;
        let events = events["items"].as_array().cloned().unwrap_or_default();
        if check(&rollout, &events) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not within {REACTION_BOUND:?}; status {}\nevents {:?}\ncontroller log:\n{}",
                rollout["status"],
                events
                    .iter()
                    .map(|e| format!("{} {}", e["reason"], e["message"]))
                    .collect::<Vec<_>>(),
                controller.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Events with `reason` whose message names the admin user.
fn event_naming_admin(events: &[Value], reason: &str) -> usize {
    events
        .iter()
        .filter(|e| e["reason"] == reason)
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(&format!("by {ADMIN_USER}"))))
        .count()
}

fn phase(rollout: &Value) -> &str {
    rollout["status"]["phase"].as_str().unwrap_or("")
}

/// Given the controller, when a user pauses, resumes, aborts, retries and promotes --full
/// with the plugin, then each request is acted on once, its Event names the user, and
/// `status --watch` exits 1 on RolledBack and 0 on Promoted.
#[test]
fn controller_acts_on_each_request_once() -> Result<()> {
    let namespace = cluster()?.namespace()?;
    let manifest =
        std::fs::read_to_string(workspace().join("tests/e2e/manifests/valid/chat-assistant.yaml"))?
            // A closed loopback port: analysis errors at once, and onAnalysisError Pause holds.
            .replace("http://prometheus.monitoring:9090", "http://127.0.0.1:9");
    namespace.kubectl_with_stdin(["apply", "-f", "-"], manifest.as_bytes())?;
    let controller = Controller::start(&namespace)?;
    wait_for(&namespace, &controller, "a first status", |r, _| !phase(r).is_empty())?;

    plugin_ok(&namespace, &["pause", "chat-assistant"])?;
    // Still Pending here (no proxy has reported the rollout), so the phase stays; the Event and
    // the handled flag show the controller saw the pause.
    wait_for(&namespace, &controller, "a Paused event", |r, events| {
        r["status"]["handledAnnotations"]["paused"] == true
            && events.iter().any(|e| e["reason"] == "Paused")
    })?;
    plugin_ok(&namespace, &["resume", "chat-assistant"])?;
    wait_for(&namespace, &controller, "a Resumed event", |_, events| {
        events.iter().any(|e| e["reason"] == "Resumed")
    })?;

    plugin_ok(&namespace, &["abort", "chat-assistant"])?;
    let (code, text) = watch(&namespace)?;
    ensure!(code == Some(1), "watch after abort exited {code:?}:\n{text}");
    ensure!(text.contains("phase RolledBack"), "{text}");
    wait_for(&namespace, &controller, "one ManualAbort event naming the user", |_, events| {
        event_naming_admin(events, "ManualAbort") == 1
    })?;

    // Refused by the plugin itself now that the rollout is RolledBack.
    let refused = plugin(&namespace, &["promote", "chat-assistant"])?;
    ensure!(refused.status.code() == Some(1), "promote on RolledBack exited {}", refused.status);

    plugin_ok(&namespace, &["retry", "chat-assistant"])?;
    wait_for(&namespace, &controller, "a ManualRetry event and a restart", |r, events| {
        event_naming_admin(events, "ManualRetry") == 1 && phase(r) != "RolledBack"
    })?;

    plugin_ok(&namespace, &["promote", "chat-assistant", "--full"])?;
    let (code, text) = watch(&namespace)?;
    ensure!(
        code == Some(0),
        "watch after promote --full exited {code:?}:\n{text}\n{}",
        controller.log_tail()
    );
    ensure!(text.contains("phase Promoted"), "{text}");
    wait_for(&namespace, &controller, "one ManualPromote event naming the user", |r, events| {
        event_naming_admin(events, "ManualPromote") == 1 && r["status"]["canaryWeight"] == 100
    })?;
    // Acted on once: another reconcile does not repeat the events.
    let list = plugin_ok(&namespace, &["list"])?;
    ensure!(list.contains("Promoted") && list.contains("100%"), "{list}");
    wait_for(&namespace, &controller, "still one event per request", |_, events| {
        event_naming_admin(events, "ManualAbort") == 1
            && event_naming_admin(events, "ManualRetry") == 1
    })?;
    Ok(())
}
