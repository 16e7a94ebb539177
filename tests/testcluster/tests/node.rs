//! A cluster with a node runs pods, keeps their addresses and mounts inside its own namespaces,
//! and leaves nothing behind when its owner drops it: no process, cgroup, mount or interface.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use modelrollout_testcluster::{
    ControlPlaneBinaries, NODE_NAME, NodeOptions, PAUSE_IMAGE, TestCluster, process_alive,
};

/// Every pid in the node's cgroup subtree (the pids hierarchy).
fn node_pids(cgroup: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![Path::new("/sys/fs/cgroup/pids").join(cgroup)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "cgroup.procs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
    }
    pids
}

/// The host's interface names.
fn host_links() -> Result<Vec<String>> {
    let output =
        std::process::Command::new("ip").args(["-o", "link"]).output().context("running ip")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect())
}

/// Mount points under `dir` in the mount table at `mountinfo`.
fn mounts_under(mountinfo: &str, dir: &Path) -> Result<usize> {
    let text =
        std::fs::read_to_string(mountinfo).with_context(|| format!("reading {mountinfo}"))?;
    let dir = dir.to_string_lossy();
    Ok(text.lines().filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&*dir))).count())
}

#[test]
fn node_runs_a_pod_and_leaves_nothing_behind() -> Result<()> {
    let links_before = host_links()?;
    let cluster =
        TestCluster::start_with_node(ControlPlaneBinaries::locate()?, NodeOptions::locate()?)?;
    let took = cluster.node_startup_time().context("a node start time")?;
    eprintln!("[node] Ready and untainted {:.1}s after the servers started", took.as_secs_f64());
    let dir = cluster.dir().to_path_buf();
    let cgroup = cluster.node_cgroup().context("a node cgroup")?.to_owned();

    let nodes = cluster.kubectl_ok([
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].metadata.name} {.items[*].status.nodeInfo.kubeletVersion}",
    ])?;
    ensure!(nodes == format!("{NODE_NAME} v1.36.3"), "nodes: {nodes}");
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"sleeper","namespace":"default"}},
            "spec":{{"automountServiceAccountToken":false,"terminationGracePeriodSeconds":1,
            "containers":[{{"name":"pause","image":"{PAUSE_IMAGE}","imagePullPolicy":"Never"}}]}}}}"#
    );
    let applied = cluster.kubectl_with_stdin(["apply", "-f", "-"], pod.as_bytes())?;
    ensure!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    cluster.kubectl_ok(["wait", "pod/sleeper", "--for=condition=Ready", "--timeout=120s"])?;
    let ip = cluster.kubectl_ok(["get", "pod", "sleeper", "-o", "jsonpath={.status.podIP}"])?;
    ensure!(ip.starts_with("10.244.0."), "pod IP {ip}");

    // A pull can only reach containerd's dead loopback proxy: it fails at once, off the machine never.
    let pulling = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"puller","namespace":"default"},
        "spec":{"automountServiceAccountToken":false,"containers":[{"name":"c","image":"registry.example/none:1","imagePullPolicy":"Always"}]}}"#;
    let applied = cluster.kubectl_with_stdin(["apply", "-f", "-"], pulling.as_bytes())?;
    ensure!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let message = cluster.kubectl_ok([
            "get",
            "pod",
            "puller",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.message}",
        ])?;
        if message.contains("proxyconnect tcp: dial tcp 127.0.0.1:9") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the pull did not fail on the loopback proxy; last: {message:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let pids = node_pids(&cgroup);
    // the namespaces' init, containerd, kubelet, two forwarders, a shim, two pause processes
    ensure!(pids.len() >= 6, "only {pids:?} in cgroup {cgroup}");
    let inside = pids
        .iter()
        .filter_map(|pid| mounts_under(&format!("/proc/{pid}/mountinfo"), &dir).ok())
        .max()
        .unwrap_or(0);
    ensure!(inside > 0, "no mount under {} inside the node's namespace", dir.display());
    ensure!(
        mounts_under("/proc/self/mountinfo", &dir)? == 0,
        "the node's mounts leaked to the host"
    );
    let links_running = host_links()?;
    ensure!(
        links_running == links_before,
        "the host got interfaces {links_running:?} (before: {links_before:?})"
    );

    let stopping = Instant::now();
    cluster.stop()?;
    eprintln!("[node] stopped in {:.1}s", stopping.elapsed().as_secs_f64());
    let alive: Vec<u32> = pids.iter().copied().filter(|&pid| process_alive(pid)).collect();
    ensure!(alive.is_empty(), "still running after stop: {alive:?}");
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        let leftover = hierarchy.path().join(&cgroup);
        ensure!(!leftover.exists(), "{} is left behind", leftover.display());
    }
    ensure!(!dir.exists(), "{} is left behind", dir.display());
    ensure!(
        mounts_under("/proc/self/mountinfo", &dir)? == 0,
        "mounts under {} are left behind",
        dir.display()
    );
    // Network namespaces are freed by the kernel shortly after their last process.
    let deadline = Instant::now() + Duration::from_secs(30);
    while host_links()? != links_before {
        if Instant::now() > deadline {
            bail!("interfaces left behind: {:?} (before: {links_before:?})", host_links()?);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
