//! `testcluster`: a local Kubernetes control plane for people (`make cluster-up`/`cluster-down`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use modelrollout_testcluster::{
    CONTROL_PLANE_ENV, ControlPlaneBinaries, TestCluster, start_detached, stop_detached,
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
    },
}

fn binaries(dir: Option<PathBuf>) -> anyhow::Result<ControlPlaneBinaries> {
    Ok(match dir {
        Some(dir) => ControlPlaneBinaries::from_dir(dir)?,
        None => ControlPlaneBinaries::locate()?,
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Action::Up { binaries: bin, dir } => {
            let cluster = start_detached(&binaries(bin)?, &dir)?;
            eprintln!(
                "cluster running at {} (stop it with `make cluster-down`); point kubectl at it with:",
                cluster.server
            );
            println!("export KUBECONFIG={}", cluster.kubeconfig.display());
        }
        Action::Down { dir } => match stop_detached(&dir)? {
            Some(cluster) => eprintln!(
                "stopped the cluster at {} and removed {}",
                cluster.server,
                cluster.dir.display()
            ),
            None => eprintln!("no cluster is running in {}; nothing to stop", dir.display()),
        },
        Action::Run { binaries: bin } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the signal handler runtime")?;
            runtime.block_on(run_until_stopped(bin))?;
        }
    }
    Ok(())
}

/// Runs a cluster in the foreground until SIGINT (Ctrl-C) or SIGTERM, then stops it.
async fn run_until_stopped(bin: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a Ctrl-C during startup then still stops the cluster cleanly.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let cluster = TestCluster::start_with(binaries(bin)?)?;
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
