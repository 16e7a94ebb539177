//! `testcluster`: a local Kubernetes control plane for people (`make cluster-up`/`cluster-down`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use modelrollout_testcluster::{
    CONTROL_PLANE_ENV, ControlPlaneBinaries, NodeOptions, TestCluster, import_images,
    start_detached, stop_detached,
};

/// Run a real local Kubernetes control plane (etcd + kube-apiserver on loopback, RBAC on).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Start a cluster that keeps running in the background; prints `export KUBECONFIG=...`.
    Up {
        /// Folder with etcd, kube-apiserver, kubectl and helm (default: run tests/control-plane/build.sh).
        #[arg(long, env = CONTROL_PLANE_ENV)]
        binaries: Option<PathBuf>,
        /// Cluster directory: certificates, kubeconfig, logs, etcd data. Deleted by `down`.
        #[arg(long, default_value = ".cache/cluster")]
        dir: PathBuf,
        /// Also run a node (containerd, kubelet, kube-controller-manager, kube-scheduler) with
        /// the images of $MODELROLLOUT_IMAGES (default .cache/images, made by `make images`).
        #[arg(long)]
        node: bool,
    },
    /// Import image tarballs into the node of the cluster started by `up --node`.
    LoadImages {
        /// The directory given to `up`.
        #[arg(long, default_value = ".cache/cluster")]
        dir: PathBuf,
        /// OCI image tarballs, e.g. .cache/images/modelrollout-proxy.tar.
        #[arg(required = true)]
        tarballs: Vec<PathBuf>,
    },
    /// Stop the cluster started by `up` and delete its directory.
    Down {
        /// The directory given to `up`.
        #[arg(long, default_value = ".cache/cluster")]
        dir: PathBuf,
    },
    /// Run a cluster in the foreground until Ctrl-C or SIGTERM; prints `export KUBECONFIG=...`.
    Run {
        /// Folder with etcd, kube-apiserver, kubectl and helm (default: run tests/control-plane/build.sh).
        #[arg(long, env = CONTROL_PLANE_ENV)]
        binaries: Option<PathBuf>,
        /// Also run a node, as for `up --node`.
        #[arg(long)]
        node: bool,
    },
}

fn node_options(node: bool) -> anyhow::Result<Option<NodeOptions>> {
    Ok(if node { Some(NodeOptions::locate()?) } else { None })
}

fn binaries(dir: Option<PathBuf>) -> anyhow::Result<ControlPlaneBinaries> {
    Ok(match dir {
        Some(dir) => ControlPlaneBinaries::from_dir(dir)?,
        None => ControlPlaneBinaries::locate()?,
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Action::Up { binaries: bin, dir, node } => {
            let cluster = start_detached(&binaries(bin)?, &dir, node_options(node)?.as_ref())?;
            eprintln!(
                "cluster running at {} (stop it with `make cluster-down`); point kubectl at it with:",
                cluster.server
            );
            println!("export KUBECONFIG={}", cluster.kubeconfig.display());
        }
        Action::LoadImages { dir, tarballs } => {
            import_images(&dir, &tarballs)?;
            eprintln!("imported {} image(s) into the node of {}", tarballs.len(), dir.display());
        }
        Action::Down { dir } => match stop_detached(&dir)? {
            Some(cluster) => eprintln!(
                "stopped the cluster at {} and removed {}",
                cluster.server,
                cluster.dir.display()
            ),
            None => eprintln!("no cluster is running in {}; nothing to stop", dir.display()),
        },
        Action::Run { binaries: bin, node } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the signal handler runtime")?;
            runtime.block_on(run_until_stopped(bin, node))?;
        }
    }
    Ok(())
}

/// Runs a cluster in the foreground until SIGINT (Ctrl-C) or SIGTERM, then stops it.
async fn run_until_stopped(bin: Option<PathBuf>, node: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a Ctrl-C during startup then still stops the cluster cleanly.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let cluster = match node_options(node)? {
        Some(options) => TestCluster::start_with_node(binaries(bin)?, options)?,
        None => TestCluster::start_with(binaries(bin)?)?,
    };
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
    eprintln!("cluster running at {}; Ctrl-C stops it", cluster.server_url());
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("stopping");
    cluster.stop()?;
    Ok(())
}
