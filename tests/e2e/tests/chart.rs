//! The Helm chart as a platform team installs it, on a real node: `helm install` with the
//! `make images` images, the controller as two pods (one leader) with the chart's
//! ServiceAccount and RBAC, the gateway proxy as a pod, a real Prometheus scraping both; one
//! ModelRollout promoted and another rolled back under steady traffic through the gateway;
//! `helm upgrade`; and `helm uninstall` leaving nothing of the release behind (the CRD stays, as
//! Helm's `crds/` directory is meant to). Also: the chart's RBAC refuses what it does not grant,
//! and a wrong value is refused by values.schema.json with its message.
//!
//! One cluster with a node per test binary (`TestCluster::shared_with_node`), a namespace per test.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use modelrollout_e2e::release::{ChartWorld, ROUTER, Upstream, chart_dir, helm_ok, kubectl_ok};
use modelrollout_e2e::report;
use modelrollout_e2e::stack::{Load, condition, condition_true, phase, weight};
use modelrollout_testcluster::TestCluster;

const RELEASE: &str = "mr";

/// Bound for a rollout to finish (about 30 s each here, under load from parallel tests).
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(300);

fn cluster() -> Result<&'static TestCluster> {
    TestCluster::shared_with_node().map_err(|err| anyhow!("{err}"))
}

fn anyhow_of(err: modelrollout_e2e::stack::BoxError) -> anyhow::Error {
    anyhow!("{err}")
}

fn progress(line: &str) {
    report(format_args!("[chart] {line}"));
}

/// values.schema.json and the chart's own checks refuse wrong values before anything is
/// created, with a message naming the value.
#[test]
fn wrong_values_are_refused_with_their_message() -> Result<()> {
    let cluster = cluster()?;
    let namespace = cluster.namespace()?;
    let chart = chart_dir().display().to_string();
    let cases = [
        ("controller.replicas=0", "at '/controller/replicas': minimum: got 0, want 1"),
        (
            "controller.logFormat=xml",
            "at '/controller/logFormat': value must be one of 'text', 'json'",
        ),
        (
            "proxy.routing.source=file",
            "at '/proxy/routing/source': value must be one of 'watch', 'mount'",
        ),
        ("controller.replicaz=2", "at '/controller': additional properties 'replicaz' not allowed"),
        (
            "controller.leaderElection.enabled=false",
            "controller.replicas is 2 but controller.leaderElection.enabled is false",
        ),
    ];
    for (value, message) in cases {
        let output =
            cluster.helm(["install", "refused", &chart, "-n", namespace.name(), "--set", value])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "helm install --set {value} succeeded");
        ensure!(stderr.contains(message), "--set {value}: expected {message:?} in:\n{stderr}");
        report(format_args!("[chart] --set {value} refused: {}", stderr.trim().replace('\n', " ")));
    }
    let releases = helm_ok(cluster, &["list", "-n", namespace.name(), "-q"]).map_err(anyhow_of)?;
    ensure!(releases.trim().is_empty(), "a refused install left releases: {releases}");
    Ok(())
}

#[test]
fn chart_on_a_node_promotes_rolls_back_upgrades_and_uninstalls_cleanly() -> Result<()> {
    let cluster = cluster()?;
    let namespace = cluster.namespace()?;
    let ns = namespace.name();
    let started = Instant::now();
    let upstreams = [
        Upstream { name: "stable", model: "gpt-4.1", error_rate: 0.0 },
        Upstream { name: "canary", model: "claude-sonnet-4.5", error_rate: 0.0 },
        Upstream { name: "canary-broken", model: "claude-sonnet-4.5", error_rate: 0.5 },
    ];
    let mut world =
        ChartWorld::prepare(cluster, ns, RELEASE, &upstreams, &progress).map_err(anyhow_of)?;
    world.install(&[], &progress).map_err(anyhow_of)?;
    let result = exercise(&mut world, started);
    if result.is_err() {
        eprintln!("[chart] controller logs:\n{}", world.controller_logs());
    }
    result
}

fn exercise(world: &mut ChartWorld<'_>, started: Instant) -> Result<()> {
    let cluster = world.cluster;
    let ns = world.namespace.clone();
    let controller = format!("{RELEASE}-modelrollout-controller");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;

    // The controller runs as two pods with the chart's ServiceAccount, one of them leading.
    let pods = world.pods("app.kubernetes.io/component=controller").map_err(anyhow_of)?;
    ensure!(pods.len() == 2, "expected 2 controller pods, found {pods:?}");
    for (pod, _, _) in &pods {
        let account = kubectl_ok(
            cluster,
            &ns,
            &["get", "pod", pod, "-o", "jsonpath={.spec.serviceAccountName}"],
        )
        .map_err(anyhow_of)?;
        ensure!(account == controller, "pod {pod} runs as {account:?}, not {controller}");
    }
    let holder = modelrollout_e2e::release::eventually(
        "a leader in the Lease",
        Duration::from_secs(60),
        || {
            let holder = kubectl_ok(
                cluster,
                &ns,
                &["get", "lease", &controller, "-o", "jsonpath={.spec.holderIdentity}"],
            )?;
            Ok(pods.iter().any(|(pod, _, _)| *pod == holder).then_some(holder))
        },
    )
    .map_err(anyhow_of)?;
    progress(&format!("Lease {controller} held by {holder}"));
    // Prometheus scrapes both replicas; exactly one reports leading.
    let leaders = runtime.block_on(wait_query(
        world,
        "sum(modelrollout_controller_leader) == 1 and count(modelrollout_controller_leader) == 2",
    ))?;
    progress(&format!("Prometheus: one leader of two controllers {leaders}"));

    // Steady traffic through the gateway for two aliases; one rollout each.
    let gateway = world.gateway.as_ref().ok_or_else(|| anyhow!("no gateway forward"))?.host;
    let load = {
        let _entered = runtime.enter();
        Load::start_at(gateway, &["chat-good", "chat-risky"], 20)
    };
    let good =
        world.rollout("good", "chat-good", "stable", "canary", &[25, 100]).map_err(anyhow_of)?;
    let risky = world
        .rollout("risky", "chat-risky", "stable", "canary-broken", &[25, 100])
        .map_err(anyhow_of)?;
    world.apply(&good).map_err(anyhow_of)?;
    world.apply(&risky).map_err(anyhow_of)?;
    let promoted = world
        .wait_rollout("good", "Promoted", ROLLOUT_DEADLINE, |r| phase(r) == "Promoted")
        .map_err(anyhow_of)?;
    ensure!(weight(&promoted) == 100, "promoted at weight {}", weight(&promoted));
    ensure!(condition_true(&promoted, "Promoted"), "no Promoted condition: {promoted}");
    progress(&format!("good: Promoted after {:.0}s", started.elapsed().as_secs_f64()));
    let rolled_back = world
        .wait_rollout("risky", "RolledBack", ROLLOUT_DEADLINE, |r| phase(r) == "RolledBack")
        .map_err(anyhow_of)?;
    ensure!(weight(&rolled_back) == 0, "rolled back at weight {}", weight(&rolled_back));
    let why =
        condition(&rolled_back, "RolledBack").ok_or_else(|| anyhow!("no RolledBack condition"))?;
    let message = why["message"].as_str().unwrap_or_default();
    // The sequential judge (the default) or the error-rate limit, whichever sees it first.
    ensure!(
        message.contains("error rate") || message.starts_with("canary errors "),
        "RolledBack says {why}"
    );
    progress(&format!(
        "risky: RolledBack ({}: {message})",
        why["reason"].as_str().unwrap_or_default()
    ));
    let sent = load.sent();
    runtime.block_on(load.stop());
    ensure!(sent > 0, "no request went through the gateway");

    // The proxy's metrics reached Prometheus, for both arms of both rollouts.
    let arms = runtime.block_on(wait_query(
        world,
        &format!("count(sum by (rollout, is_canary) (gray_release_requests_total{{rollout_namespace=\"{ns}\"}})) == 4"),
    ))?;
    progress(&format!(
        "Prometheus has gray_release_requests_total of both arms of both rollouts {arms}; {sent} requests sent"
    ));

    check_rbac(cluster, &ns, &controller)?;
    upgrade(world, &runtime)?;
    uninstall(world, &controller)?;
    progress(&format!("whole chart test: {:.0}s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Polls an instant query until it returns a series (within 90 s); returns the result.
async fn wait_query(world: &ChartWorld<'_>, promql: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let result = world.query(promql).await.map_err(anyhow_of)?;
        if let Some(first) = result.first() {
            return Ok(first["value"].to_string());
        }
        if Instant::now() > deadline {
            bail!("Prometheus never answered {promql} with a series");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The controller's and the gateway's tokens can do what their Roles grant and nothing else.
fn check_rbac(cluster: &TestCluster, ns: &str, controller: &str) -> Result<()> {
    let subject = format!("--as=system:serviceaccount:{ns}:{controller}");
    let gateway = format!("--as=system:serviceaccount:{ns}:{RELEASE}-modelrollout-proxy");
    let can = |subject: &str, verb: &str, what: &str| -> Result<bool> {
        let output = cluster.kubectl(["-n", ns, "auth", "can-i", verb, what, subject])?;
        Ok(String::from_utf8_lossy(&output.stdout).trim() == "yes")
    };
    ensure!(
        can(&subject, "patch", "modelrollouts.rollouts.modelops.io")?,
        "controller cannot patch rollouts"
    );
    ensure!(
        can(&subject, "create", "leases.coordination.k8s.io")?,
        "controller cannot take its Lease"
    );
    ensure!(
        !can(&subject, "delete", "modelrollouts.rollouts.modelops.io")?,
        "controller may delete rollouts"
    );
    // The preflight reads an arm's Secret by name, and may not enumerate or change Secrets.
    ensure!(can(&subject, "get", "secrets")?, "controller cannot read an arm's Secret");
    ensure!(!can(&subject, "list", "secrets")?, "controller may list Secrets");
    ensure!(!can(&subject, "update", "secrets")?, "controller may change Secrets");
    ensure!(
        can(&gateway, "watch", &format!("configmap/{ROUTER}"))?,
        "gateway cannot watch {ROUTER}"
    );
    ensure!(!can(&gateway, "get", "configmap/other")?, "gateway may read other ConfigMaps");
    // A real request outside the grant, as the controller's token would send it.
    let output = cluster.kubectl(["-n", ns, "get", "secrets", subject.as_str()])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("forbidden"),
        "listing Secrets as the controller: {stderr}"
    );
    progress(&format!("RBAC: as the controller, listing Secrets is refused: {}", stderr.trim()));
    Ok(())
}

/// `helm upgrade` rolls the controller pods; the finished rollouts keep their state, Prometheus
/// finds the new pods, and a leader is elected again.
fn upgrade(world: &mut ChartWorld<'_>, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let cluster = world.cluster;
    let ns = world.namespace.clone();
    let chart = chart_dir().display().to_string();
    helm_ok(
        cluster,
        &[
            "upgrade",
            RELEASE,
            &chart,
            "-n",
            &ns,
            "--reuse-values",
            "--set",
            "controller.concurrency=4",
            "--wait",
            "--timeout",
            "240s",
        ],
    )
    .map_err(anyhow_of)?;
    let args = kubectl_ok(
        cluster,
        &ns,
        &[
            "get",
            "deployment",
            &format!("{RELEASE}-modelrollout-controller"),
            "-o",
            "jsonpath={.spec.template.spec.containers[0].args}",
        ],
    )
    .map_err(anyhow_of)?;
    ensure!(args.contains("--concurrency=4"), "upgrade did not change the args: {args}");
    let history =
        helm_ok(cluster, &["history", RELEASE, "-n", &ns, "-o", "json"]).map_err(anyhow_of)?;
    let history: serde_json::Value = serde_json::from_str(&history)?;
    let last = history.as_array().and_then(|h| h.last()).cloned().unwrap_or_default();
    ensure!(
        last["revision"] == 2 && last["status"] == "deployed",
        "history after upgrade: {history}"
    );
    // Old pods leave after their grace period; wait for exactly the two new ones.
    modelrollout_e2e::release::eventually(
        "two controller pods after the upgrade",
        Duration::from_secs(120),
        || Ok((world.pods("app.kubernetes.io/component=controller")?.len() == 2).then_some(())),
    )
    .map_err(anyhow_of)?;
    world.scrape_pods(&progress).map_err(anyhow_of)?;
    runtime.block_on(wait_query(
        world,
        "sum(modelrollout_controller_leader) == 1 and count(modelrollout_controller_leader) == 2",
    ))?;
    for (name, expected) in [("good", "Promoted"), ("risky", "RolledBack")] {
        let rollout = world.get(name).map_err(anyhow_of)?;
        ensure!(phase(&rollout) == expected, "{name} is {} after the upgrade", phase(&rollout));
    }
    progress("helm upgrade: revision 2 deployed, new controller pods lead, rollouts unchanged");
    Ok(())
}

/// Deleting the rollouts (while the controller runs, so it removes their routing keys and
/// finalizers), then `helm uninstall`: nothing of the release is left; the CRD stays.
fn uninstall(world: &ChartWorld<'_>, controller: &str) -> Result<()> {
    let cluster = world.cluster;
    let ns = world.namespace.clone();
    kubectl_ok(cluster, &ns, &["delete", "modelrollouts", "--all", "--wait", "--timeout=120s"])
        .map_err(anyhow_of)?;
    let routing = kubectl_ok(cluster, &ns, &["get", "configmap", ROUTER, "-o", "jsonpath={.data}"])
        .map_err(anyhow_of)?;
    ensure!(routing.trim().is_empty() || routing.trim() == "{}", "routing keys left: {routing}");
    helm_ok(cluster, &["uninstall", RELEASE, "-n", &ns, "--wait", "--timeout", "120s"])
        .map_err(anyhow_of)?;
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let kinds = "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,leases,configmaps,secrets";
    let left = modelrollout_e2e::release::eventually(
        "the release's objects gone",
        Duration::from_secs(120),
        || {
            let left = kubectl_ok(cluster, &ns, &["get", kinds, "-l", &selector, "-o", "name"])?;
            Ok(left.trim().is_empty().then_some(left))
        },
    );
    if let Err(err) = left {
        let still = kubectl_ok(cluster, &ns, &["get", kinds, "-l", &selector, "-o", "name"])
            .unwrap_or_default();
        bail!("{err}: {still}");
    }
    for kind in ["clusterrole", "clusterrolebinding"] {
        let output =
            cluster.kubectl(["get", kind, controller, "--ignore-not-found", "-o", "name"])?;
        ensure!(
            String::from_utf8_lossy(&output.stdout).trim().is_empty(),
            "{kind} {controller} survived uninstall"
        );
    }
    let secrets = kubectl_ok(cluster, &ns, &["get", "secrets", "-l", "owner=helm", "-o", "name"])
        .map_err(anyhow_of)?;
    ensure!(secrets.trim().is_empty(), "Helm release records left: {secrets}");
    let crd = cluster.kubectl(["get", "crd", modelrollout_e2e::CRD_NAME])?;
    ensure!(crd.status.success(), "the CRD went with the release; Helm's crds/ directory keeps it");
    progress(
        "helm uninstall: no object of the release left; the CRD stays (Helm never deletes crds/)",
    );
    Ok(())
}

/// The sidecar examples of deploy/sidecar are objects the API server accepts as written
/// (a server-side dry run: schema, defaults, admission), so a reader can apply them.
#[test]
fn sidecar_examples_are_accepted_by_the_api_server() -> Result<()> {
    let cluster = cluster()?;
    let namespace = cluster.namespace()?;
    let dir = modelrollout_e2e::workspace_root().join("deploy/sidecar");
    for name in ["api-watch.yaml", "mounted-file.yaml"] {
        let file = dir.join(name).display().to_string();
        let output = namespace.kubectl(["apply", "--dry-run=server", "-f", file.as_str()])?;
        ensure!(
            output.status.success(),
            "deploy/sidecar/{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        progress(&format!(
            "deploy/sidecar/{name}: accepted ({})",
            String::from_utf8_lossy(&output.stdout).trim().replace('\n', ", ")
        ));
    }
    Ok(())
}
