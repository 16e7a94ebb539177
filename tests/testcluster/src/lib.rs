//! A real, local Kubernetes control plane for tests, like controller-runtime's envtest.
//!
//! [`TestCluster`] starts `etcd` and `kube-apiserver` (the pinned builds of
//! `tests/control-plane/build.sh`) as local processes on free loopback ports, with RBAC on,
//! certificates and ServiceAccount signing keys made here, and an admin kubeconfig. Tests use
//! it through the pinned `kubectl`, a [`kube::Client`], and fresh [`TestNamespace`]s:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = modelrollout_testcluster::TestCluster::shared()?;
//! let namespace = cluster.namespace()?;
//! let created = cluster.kubectl(["create", "configmap", "routes", "-n", namespace.name()])?;
//! assert!(created.status.success());
//! # Ok(()) }
//! ```
//!
//! [`TestCluster::start_with_node`] (or [`TestCluster::shared_with_node`]) adds a real node:
//! containerd, kubelet, kube-controller-manager and kube-scheduler, in network, mount and PID
//! namespaces of their own, running the images `make images` built (see `node.rs`).
//!
//! Nothing outlives the process that started it: every cluster runs under a small supervising
//! shell that stops etcd and kube-apiserver and removes the cluster's directory as soon as the
//! owning process drops the cluster, exits, panics, or is killed (even with SIGKILL).

mod binaries;
mod cluster;
mod detached;
mod kubeconfig;
mod log;
mod namespace;
mod node;
mod pki;
mod supervisor;

use std::path::PathBuf;
use std::process::ExitStatus;

pub use binaries::{CONTROL_PLANE_ENV, ControlPlaneBinaries};
pub use cluster::TestCluster;
pub use detached::{DetachedCluster, start_detached, stop_detached};
pub use namespace::TestNamespace;
pub use node::{
    IMAGES_ENV, NODE_BINARIES_ENV, NODE_NAME, NodeBinaries, NodeOptions, PAUSE_IMAGE, import_images,
};
pub use supervisor::process_alive;

/// What can go wrong while starting, using or stopping a local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `tests/control-plane/build.sh` could not run or failed.
    #[error(
        "building the control plane with {script} failed ({detail}); run `make control-plane` to see the build log, or set {env} to a folder holding etcd, kube-apiserver, kubectl and helm",
        env = CONTROL_PLANE_ENV
    )]
    ControlPlaneBuild {
        /// The build script.
        script: PathBuf,
        /// Why it failed.
        detail: String,
    },

    /// The binaries folder lacks a program the control plane needs.
    #[error(
        "{path} is missing or not executable; run `make control-plane` (or tests/control-plane/build.sh) and point {env} at the folder it prints",
        path = path.display(),
        env = CONTROL_PLANE_ENV
    )]
    MissingBinary {
        /// The program that should be there.
        path: PathBuf,
    },

    /// The node binaries folder lacks kubelet, kube-controller-manager or kube-scheduler.
    #[error(
        "{path} is missing or not executable; run `make control-plane` (or tests/control-plane/build-node.sh) and point {env} at the folder it prints",
        path = path.display(),
        env = NODE_BINARIES_ENV
    )]
    MissingNodeBinary {
        /// The program that should be there.
        path: PathBuf,
    },

    /// The images folder lacks the pause image a node needs for every pod.
    #[error(
        "{dir} holds no pause.tar (the sandbox image every pod needs; containerd never pulls); run `make images`, or point {env} at the folder it writes",
        dir = dir.display(),
        env = IMAGES_ENV
    )]
    MissingImages {
        /// The images folder.
        dir: PathBuf,
    },

    /// The node did not become Ready and untainted.
    #[error("the node did not become ready: {why}; last lines of its logs:\n{tail}")]
    NodeNotReady {
        /// What went wrong.
        why: String,
        /// The tails of containerd's, kubelet's and the node launcher's logs.
        tail: String,
    },

    /// `ctr images import` refused an image tarball.
    #[error("importing {tarball} into the node's containerd failed: {stderr}; rebuild it with `make images`", tarball = tarball.display())]
    ImageImport {
        /// The tarball.
        tarball: PathBuf,
        /// What ctr printed on stderr.
        stderr: String,
    },

    /// A file or directory operation failed.
    #[error("{action} {path}: {source}", path = path.display())]
    Io {
        /// What was being done, e.g. "writing".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A path is not UTF-8, so it cannot go into a flag or a kubeconfig.
    #[error("path {path} is not valid UTF-8; use a cluster directory with a plain path (set TMPDIR or --dir)", path = path.display())]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },

    /// Making a certificate or key failed.
    #[error("making the {what} for the local control plane: {source}")]
    Certificate {
        /// Which certificate or key.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },

    /// A process could not be started.
    #[error("starting {program}: {source}", program = program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// etcd or kube-apiserver exited before the API server became ready.
    #[error("{process} exited before the API server was ready; last lines of {log}:\n{tail}", log = log.display())]
    ExitedEarly {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// Its log file (removed with the cluster directory; the tail is quoted here).
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// The API server did not answer `/readyz` with `ok` in time.
    #[error(
        "kube-apiserver at {server} was not ready after {seconds}s; last lines of its log:\n{tail}"
    )]
    NotReady {
        /// The API server URL.
        server: String,
        /// How long we waited.
        seconds: u64,
        /// The last lines of the API server log.
        tail: String,
    },

    /// A `kubectl` command failed.
    #[error("`kubectl {args}` failed ({status}): {stderr}")]
    Kubectl {
        /// The arguments, joined by spaces.
        args: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },

    /// The admin kubeconfig could not be turned into a client.
    #[error("loading the admin kubeconfig {path}: {source}", path = path.display())]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// kube's error.
        source: kube::config::KubeconfigError,
    },

    /// Building a [`kube::Client`] failed.
    #[error("building a kube client for the local control plane: {0}")]
    Client(#[source] kube::Error),

    /// `--dir` holds something that is not a cluster made by this crate.
    #[error(
        "{path} exists and is not a testcluster directory; choose an empty or new --dir (it is deleted by `down`)",
        path = path.display()
    )]
    ForeignDirectory {
        /// The directory.
        path: PathBuf,
    },

    /// The state file of a detached cluster is unreadable.
    #[error("reading cluster state {path}: {detail}; delete the directory by hand if no cluster runs there", path = path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A process did not stop, even after SIGKILL.
    #[error("{process} (pid {pid}) did not stop; kill it by hand with `kill -9 {pid}`")]
    StillRunning {
        /// Which process.
        process: &'static str,
        /// Its process id.
        pid: u32,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the action and the path to an I/O error.
pub(crate) trait IoContext<T> {
    /// Names what was being done to which path.
    fn context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { action, path: path.into(), source })
    }
}

/// The path as `&str`, for flags and kubeconfig fields.
pub(crate) fn utf8(path: &std::path::Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::NonUtf8Path { path: path.to_path_buf() })
}
