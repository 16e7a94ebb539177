//! Every command against the real local control plane, run as a user runs the binary:
//! `--kubeconfig`, `-n`, plain output (piped). The controller is not running here: the tests
//! write status through the status subresource, as the controller would, and check what the
//! plugin reads and writes. One shared cluster per test binary, a namespace per test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use modelrollout_testcluster::{TestCluster, TestNamespace};
use serde_json::{Value, json};

/// Bound on one `status --watch` run, so a broken watch fails the test instead of hanging.
const WATCH_BOUND: Duration = Duration::from_secs(90);

/// The user the cluster's admin certificate names (tests/testcluster).
const ADMIN_USER: &str = "testcluster-admin";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared cluster with the ModelRollout CRD installed (the end-to-end crate's helper).
fn cluster() -> Result<&'static TestCluster> {
    modelrollout_e2e::cluster_with_crd().map_err(|err| anyhow::anyhow!("{err}"))
}

/// A fresh namespace holding the `chat-assistant` rollout of the e2e fixtures.
fn namespace_with_rollout() -> Result<TestNamespace<'static>> {
    let namespace = cluster()?.namespace()?;
    let manifest = workspace().join("tests/e2e/manifests/valid/chat-assistant.yaml");
    namespace.kubectl_ok(["apply", "-f", &manifest.to_string_lossy()])?;
    Ok(namespace)
}

fn plugin_command(namespace: &TestNamespace<'_>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-modelrollout"));
    command
        .arg("--kubeconfig")
        .arg(namespace.cluster().kubeconfig_path())
        .args(["-n", namespace.name()])
        .args(args)
        .env_remove("KUBECONFIG");
    command
}

fn plugin(namespace: &TestNamespace<'_>, args: &[&str]) -> Result<Output> {
    plugin_command(namespace, args).output().context("running kubectl-modelrollout")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `status` through the status subresource, as the controller does.
fn set_status(namespace: &TestNamespace<'_>, status: Value) -> Result<()> {
    let patch = json!({"status": status}).to_string();
    namespace.kubectl_ok([
        "patch",
        "modelrollout",
        "chat-assistant",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])?;
    Ok(())
}

/// The rollout as JSON.
fn rollout(namespace: &TestNamespace<'_>) -> Result<Value> {
    Ok(serde_json::from_str(&namespace.kubectl_ok([
        "get",
        "mro",
        "chat-assistant",
        "-o",
        "json",
    ])?)?)
}

fn annotation(rollout: &Value, key: &str) -> Option<String> {
    rollout["metadata"]["annotations"][key].as_str().map(str::to_owned)
}

fn progressing(namespace: &TestNamespace<'_>) -> Result<()> {
    set_status(
        namespace,
        json!({"phase": "Progressing", "canaryWeight": 5, "currentStepIndex": 0, "observedGeneration": 1}),
    )
}

/// promote writes `<RFC 3339 time> by <user>` under the promote annotation, with the user the
/// API server names, as field manager kubectl-modelrollout; --full uses promote-full.
#[test]
fn promote_annotates_with_time_and_user() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    progressing(&namespace)?;
    let output = plugin(&namespace, &["promote", "chat-assistant"])?;
    ensure!(output.status.success(), "promote failed: {}", stderr(&output));
    let written = rollout(&namespace)?;
    let value =
        annotation(&written, "rollouts.modelops.io/promote").context("no promote annotation")?;
    let (time, user) = value.split_once(" by ").context("value is not `<time> by <user>`")?;
    ensure!(user == ADMIN_USER, "user is {user:?}");
    ensure!(time.parse::<jiff::Timestamp>().is_ok(), "{time:?} is not RFC 3339");
    ensure!(
        stdout(&output).contains(&value),
        "output does not say what changed: {}",
        stdout(&output)
    );
    // kubectl hides managed fields unless asked.
    let managers = namespace.kubectl_ok([
        "get",
        "mro",
        "chat-assistant",
        "-o",
        "json",
        "--show-managed-fields",
    ])?;
    let managers: Value = serde_json::from_str(&managers)?;
    let managers = managers["metadata"]["managedFields"].to_string();
    ensure!(managers.contains("kubectl-modelrollout"), "field manager missing: {managers}");

    let output = plugin(&namespace, &["promote", "chat-assistant", "--full"])?;
    ensure!(output.status.success(), "promote --full failed: {}", stderr(&output));
    let full = annotation(&rollout(&namespace)?, "rollouts.modelops.io/promote-full");
    ensure!(
        full.is_some_and(|v| v.ends_with(&format!(" by {ADMIN_USER}"))),
        "no promote-full annotation"
    );
    Ok(())
}

/// Requests that make no sense exit 1 with the reason and change nothing.
#[test]
fn refusals_exit_1_and_change_nothing() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    set_status(
        &namespace,
        json!({"phase": "RolledBack", "canaryWeight": 0, "currentStepIndex": 2}),
    )?;
    let before = rollout(&namespace)?;
    let cases: [(&[&str], &str); 4] = [
        (
            &["promote", "chat-assistant"],
            "rollout chat-assistant is RolledBack: promote does nothing; use `kubectl modelrollout retry chat-assistant` to start again from step 1",
        ),
        (&["abort", "chat-assistant"], "is RolledBack: all traffic is already on stable"),
        (&["resume", "chat-assistant"], "it is not paused (spec.paused is false)"),
        (&["pause", "chat-assistant"], "the rollout has finished; there is nothing to pause"),
    ];
    for (args, message) in cases {
        let output = plugin(&namespace, args)?;
        ensure!(output.status.code() == Some(1), "{args:?} exited {}", output.status);
        ensure!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
    }
    progressing(&namespace)?;
    let output = plugin(&namespace, &["retry", "chat-assistant"])?;
    ensure!(output.status.code() == Some(1), "retry on Progressing exited {}", output.status);
    ensure!(stderr(&output).contains("retry only restarts a RolledBack or Failed rollout"));
    let after = rollout(&namespace)?;
    ensure!(
        before["metadata"]["annotations"] == after["metadata"]["annotations"],
        "annotations changed"
    );
    ensure!(after["spec"]["paused"] == json!(false), "spec.paused changed");
    Ok(())
}

/// pause sets spec.paused, a second pause is refused, resume clears it.
#[test]
fn pause_and_resume_flip_spec_paused() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    progressing(&namespace)?;
    let output = plugin(&namespace, &["pause", "chat-assistant"])?;
    ensure!(output.status.success(), "pause: {}", stderr(&output));
    ensure!(stdout(&output).contains("set spec.paused=true"));
    ensure!(rollout(&namespace)?["spec"]["paused"] == json!(true));
    let again = plugin(&namespace, &["pause", "chat-assistant"])?;
    ensure!(again.status.code() == Some(1) && stderr(&again).contains("already paused"));
    let output = plugin(&namespace, &["resume", "chat-assistant"])?;
    ensure!(output.status.success(), "resume: {}", stderr(&output));
    ensure!(rollout(&namespace)?["spec"]["paused"] == json!(false));
    Ok(())
}

/// abort annotates a progressing rollout; retry annotates it once it is RolledBack.
#[test]
fn abort_then_retry() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    progressing(&namespace)?;
    let output = plugin(&namespace, &["abort", "chat-assistant"])?;
    ensure!(output.status.success(), "abort: {}", stderr(&output));
    ensure!(annotation(&rollout(&namespace)?, "rollouts.modelops.io/abort").is_some());
    set_status(&namespace, json!({"phase": "RolledBack", "canaryWeight": 0}))?;
    let output = plugin(&namespace, &["retry", "chat-assistant"])?;
    ensure!(output.status.success(), "retry: {}", stderr(&output));
    ensure!(stdout(&output).contains("starts again from step 1"));
    ensure!(annotation(&rollout(&namespace)?, "rollouts.modelops.io/retry").is_some());
    Ok(())
}

/// status (piped) shows the phase, weight, current step, the analysis and the rollout's events.
#[test]
fn status_shows_status_and_events() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    set_status(
        &namespace,
        json!({
            "phase": "Progressing", "canaryWeight": 25, "currentStepIndex": 2, "observedGeneration": 1,
            "lastAnalysis": {"time": "2026-11-27T10:00:00Z", "verdict": "Pass",
                "canary": {"requests": 412, "errorRate": 0.007}, "stable": {"requests": 3890, "errorRate": 0.006},
                "failedChecks": []},
        }),
    )?;
    let uid = rollout(&namespace)?["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "chat-assistant.step"},
        "involvedObject": {"apiVersion": "rollouts.modelops.io/v1alpha1", "kind": "ModelRollout",
            "name": "chat-assistant", "namespace": namespace.name(), "uid": uid},
        "type": "Normal", "reason": "StepAdvanced", "message": "step 3/7: weight 25%",
        "lastTimestamp": "2026-11-27T10:00:00Z",
    });
    namespace.kubectl_with_stdin(["create", "-f", "-"], event.to_string().as_bytes())?;
    let output = plugin(&namespace, &["status", "chat-assistant"])?;
    ensure!(output.status.success(), "status: {}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "phase Progressing",
        "weight 25%",
        ">[25%]",
        "0.70%",
        "StepAdvanced",
        "step 3/7: weight 25%",
    ] {
        ensure!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    ensure!(!text.contains('\x1b'), "colour codes in piped output:\n{text}");
    let json = plugin(&namespace, &["status", "chat-assistant", "-o", "json"])?;
    let parsed: Value = serde_json::from_slice(&json.stdout).context("status -o json")?;
    ensure!(parsed["status"]["canaryWeight"] == json!(25));
    Ok(())
}

/// list shows the rollout with its phase, weight and step; -A adds the namespace; -o json is a List.
#[test]
fn list_in_namespace_and_all() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    progressing(&namespace)?;
    let output = plugin(&namespace, &["list"])?;
    let text = stdout(&output);
    ensure!(output.status.success() && text.starts_with("NAME "), "{text}{}", stderr(&output));
    ensure!(
        text.lines().any(|l| l.starts_with("chat-assistant")
            && l.contains("Progressing")
            && l.contains("1/7")),
        "{text}"
    );
    let all = stdout(&plugin(&namespace, &["list", "-A"])?);
    ensure!(all.lines().any(|l| l.starts_with(namespace.name())), "{all}");
    let json: Value = serde_json::from_slice(&plugin(&namespace, &["list", "-o", "json"])?.stdout)?;
    ensure!(json["kind"] == "List" && json["items"][0]["metadata"]["name"] == "chat-assistant");
    Ok(())
}

/// A rollout that does not exist: exit 1, and the message says where it looked and what to try.
#[test]
fn missing_rollout_is_exit_1() -> Result<()> {
    let namespace = cluster()?.namespace()?;
    let output = plugin(&namespace, &["promote", "nope"])?;
    ensure!(output.status.code() == Some(1));
    let message = stderr(&output);
    ensure!(
        message.contains("\"nope\" not found") && message.contains(namespace.name()),
        "{message}"
    );
    Ok(())
}

/// Runs `status --watch`, applies `finish` once the first block is out, and returns the exit
/// code and the output.
fn watch_until(namespace: &TestNamespace<'_>, finish: Value) -> Result<(Option<i32>, String)> {
    let mut child: Child = plugin_command(namespace, &["status", "chat-assistant", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    // The first block ends with a blank line; read until it is there.
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    while !text.ends_with(b"\n\n") {
        let n = out.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buffer[..n]);
    }
    set_status(namespace, finish)?;
    let deadline = Instant::now() + WATCH_BOUND;
    let code = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if Instant::now() > deadline {
            child.kill()?;
            bail!("status --watch did not exit within {WATCH_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    out.read_to_end(&mut text)?;
    Ok((code, String::from_utf8_lossy(&text).into_owned()))
}

/// `status --watch` prints a block per change and exits 0 once the rollout is Promoted.
#[test]
fn watch_exits_0_on_promoted() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    progressing(&namespace)?;
    let (code, text) = watch_until(
        &namespace,
        json!({"phase": "Promoted", "canaryWeight": 100, "currentStepIndex": 6, "observedGeneration": 1}),
    )?;
    ensure!(code == Some(0), "exit {code:?}:\n{text}");
    let blocks = text.matches("ModelRollout ").count();
    ensure!(blocks >= 2, "expected a block per change, got {blocks}:\n{text}");
    ensure!(text.contains("phase Progressing") && text.contains("phase Promoted"), "{text}");
    Ok(())
}

/// `status --watch` exits 1 once the rollout is RolledBack.
#[test]
fn watch_exits_1_on_rolled_back() -> Result<()> {
    let namespace = namespace_with_rollout()?;
    progressing(&namespace)?;
    let (code, text) = watch_until(
        &namespace,
        json!({"phase": "RolledBack", "canaryWeight": 0, "observedGeneration": 1}),
    )?;
    ensure!(code == Some(1), "exit {code:?}:\n{text}");
    ensure!(text.contains("phase RolledBack"), "{text}");
    Ok(())
}
