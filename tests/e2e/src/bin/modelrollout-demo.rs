//! `make demo`: the whole story on a local cluster with a node. The Helm chart (controller and
//! gateway proxy) from the `make images` images, a real Prometheus, two mock model servers
//! (stable and canary) and a third, broken one; steady traffic through the gateway; a rollout
//! followed live with `kubectl modelrollout status --watch` to Promoted, then a second rollout
//! whose canary fails, rolled back with the reason and the numbers.
//!
//! Everything stops and is removed at the end; with `DEMO_KEEP=1` it keeps running, prints how
//! to reach it, and stops on Ctrl-C.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use modelrollout_e2e::release::{ChartWorld, Upstream, kubectl_ok};
use modelrollout_e2e::stack::{BoxError, Load, binary, condition, phase};
use modelrollout_testcluster::{ControlPlaneBinaries, NodeOptions, TestCluster};
use serde_json::Value;

const NAMESPACE: &str = "demo";

/// Longest a rollout may take before the demo gives up on it.
const WATCH_LIMIT: Duration = Duration::from_secs(240);

fn main() -> ExitCode {
    let started = Instant::now();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("demo: cannot start the async runtime: {err}");
                return ExitCode::FAILURE;
            }
        };
    let keep = std::env::var("DEMO_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    let code = match run(&runtime, started, keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\ndemo failed: {err}");
            ExitCode::FAILURE
        }
    };
    step(started, "stopped the cluster, Prometheus and the forwards; removed their files");
    code
}

fn step(started: Instant, line: &str) {
    println!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
}

fn run(runtime: &tokio::runtime::Runtime, started: Instant, keep: bool) -> Result<(), BoxError> {
    let say = |line: &str| step(started, line);
    say(
        "starting a local Kubernetes cluster with a node (etcd, kube-apiserver, containerd, kubelet)",
    );
    let cluster =
        TestCluster::start_with_node(ControlPlaneBinaries::locate()?, NodeOptions::locate()?)?;
    say(&format!("cluster up at {}, node Ready", cluster.server_url()));
    cluster.kubectl_ok(["create", "namespace", NAMESPACE])?;
    let upstreams = [
        Upstream { name: "gpt", model: "gpt-4.1", error_rate: 0.0 },
        Upstream { name: "claude", model: "claude-sonnet-4.5", error_rate: 0.0 },
        Upstream { name: "claude-next", model: "claude-next-preview", error_rate: 0.3 },
    ];
    let mut world = ChartWorld::prepare(&cluster, NAMESPACE, "modelrollout", &upstreams, &say)?;
    world.install(&[], &say)?;
    let gateway = world.gateway.as_ref().ok_or("no gateway")?.host;
    say(&format!("the gateway's OpenAI API is forwarded to http://{gateway}/v1"));

    // 1. A healthy canary, followed live to Promoted.
    let first =
        world.rollout("chat-assistant", "chat-default", "gpt", "claude", &[10, 25, 50, 100])?;
    let load = {
        let _entered = runtime.enter();
        Load::start_at(gateway, &["chat-default"], 20)
    };
    say(
        "steady traffic: 20 requests/s of model \"chat-default\" through the gateway, random users",
    );
    world.apply(&first)?;
    say(
        "applied ModelRollout chat-assistant: gpt-4.1 -> claude-sonnet-4.5, steps 10% 25% 50% 100%",
    );
    say("$ kubectl modelrollout -n demo status chat-assistant --watch");
    let promoted = watch(&world, "chat-assistant")?;
    if promoted != "Promoted" {
        return Err(format!("chat-assistant ended {promoted}, not Promoted").into());
    }
    say(&format!("chat-assistant: {promoted} ({} requests sent so far)", load.sent()));

    // 2. A canary that fails 30 % of its requests, rolled back on its own.
    let second =
        world.rollout("summarizer", "summarize", "gpt", "claude-next", &[10, 25, 50, 100])?;
    let load_second = {
        let _entered = runtime.enter();
        Load::start_at(gateway, &["summarize"], 20)
    };
    world.apply(&second)?;
    say(
        "applied ModelRollout summarizer: gpt-4.1 -> claude-next-preview (which fails 30% of requests)",
    );
    say("$ kubectl modelrollout -n demo status summarizer --watch");
    let outcome = watch(&world, "summarizer")?;
    let rollout = world.get("summarizer")?;
    if outcome != "RolledBack" {
        return Err(format!("summarizer ended {outcome}, not RolledBack").into());
    }
    say(&format!("summarizer: {outcome}, all its traffic back on gpt-4.1"));
    explain_rollback(&rollout);

    if keep {
        keep_running(&world, runtime, started)?;
    }
    runtime.block_on(async {
        load.stop().await;
        load_second.stop().await;
    });
    say(&format!("done in {:.0}s; cleaning up", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Runs `kubectl modelrollout status NAME --watch` (the plugin, found by kubectl on PATH) with
/// its output on this terminal, until it exits; returns the phase it ended in.
fn watch(world: &ChartWorld<'_>, name: &str) -> Result<String, BoxError> {
    let plugin = binary("kubectl-modelrollout")?;
    let plugin_dir = plugin.parent().ok_or("plugin without a folder")?;
    let path = format!("{}:{}", plugin_dir.display(), std::env::var("PATH").unwrap_or_default());
    // kubectl takes no flag before a plugin's name: the kubeconfig goes in the environment.
    let mut command = Command::new(world.cluster.binaries().kubectl());
    command
        .args(["modelrollout", "-n", NAMESPACE, "status", name, "--watch"])
        .env("KUBECONFIG", world.cluster.kubeconfig_path())
        .env("KUBECACHEDIR", world.cluster.dir().join("kube-cache"))
        .env("PATH", path)
        .stdin(Stdio::null());
    let mut child = command.spawn()?;
    let deadline = Instant::now() + WATCH_LIMIT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} did not finish within {}s", WATCH_LIMIT.as_secs()).into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(phase(&world.get(name)?).to_owned())
}

/// The reason and the numbers behind a rollback, from the rollout's status.
fn explain_rollback(rollout: &Value) {
    if let Some(why) = condition(rollout, "RolledBack").filter(|c| c["status"] == "True") {
        println!(
            "\n  RolledBack: {}: {}",
            why["reason"].as_str().unwrap_or_default(),
            why["message"].as_str().unwrap_or_default()
        );
    }
    let analysis = &rollout["status"]["lastAnalysis"];
    for arm in ["canary", "stable"] {
        let m = &analysis[arm];
        println!(
            "  {arm:<7} requests {:>5}   error rate {:>6.2}%   p95 latency {}",
            m["requests"].as_f64().unwrap_or_default(),
            m["errorRate"].as_f64().unwrap_or_default() * 100.0,
            m["latencyP95Seconds"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |s| format!("{:.0}ms", s * 1000.0)),
        );
    }
    println!();
}

/// DEMO_KEEP=1: prints how to reach everything and waits for Ctrl-C.
fn keep_running(
    world: &ChartWorld<'_>,
    runtime: &tokio::runtime::Runtime,
    started: Instant,
) -> Result<(), BoxError> {
    let kubectl = world.cluster.binaries().kubectl();
    let plugin = binary("kubectl-modelrollout")?;
    println!(
        "\nDEMO_KEEP=1: everything keeps running until you press Ctrl-C here. In another terminal:\n\
         \n  export KUBECONFIG={kubeconfig}\n  export PATH={plugins}:$PATH   # kubectl-modelrollout\n  alias kubectl={kubectl}   # the pinned kubectl\n\
         \n  kubectl -n {NAMESPACE} get modelrollouts,pods\n  kubectl modelrollout -n {NAMESPACE} status chat-assistant\n  helm --kubeconfig $KUBECONFIG -n {NAMESPACE} list   # helm: {helm}\n\
         \nPrometheus: {prometheus}/graph?g0.expr=sum%20by%20(rollout%2Cis_canary)%20(rate(gray_release_requests_total%5B1m%5D))\
         \nThe gateway (OpenAI API): curl http://{gateway}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\": \"chat-default\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi\"}}]}}'\n",
        kubeconfig = world.cluster.kubeconfig_path().display(),
        plugins = plugin.parent().map(|p| p.display().to_string()).unwrap_or_default(),
        kubectl = kubectl.display(),
        helm = world.cluster.binaries().helm().display(),
        prometheus = world.prometheus.address(),
        gateway = world.gateway.as_ref().map(|g| g.host.to_string()).unwrap_or_default(),
    );
    let pods = kubectl_ok(world.cluster, NAMESPACE, &["get", "pods", "-o", "wide"])?;
    println!("{pods}");
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    step(started, "Ctrl-C: stopping");
    Ok(())
}
