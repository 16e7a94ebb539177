//! Clusters that outlive the command that started them (`make cluster-up` / `cluster-down`).
//!
//! The cluster directory holds `testcluster.json` with the supervisor's pid; `down` reads it,
//! sends SIGTERM, and the supervisor stops both servers and deletes the directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use crate::binaries::ControlPlaneBinaries;
use crate::cluster::{ClusterDir, STOP_GRACE, launch};
use crate::log::log;
use crate::node::NodeOptions;
use crate::supervisor::{Lifetime, kill_servers, process_alive, remove_dir, send_signal};
use crate::{Error, IoContext, Result};

/// The state file inside a detached cluster's directory.
const STATE_FILE: &str = "testcluster.json";

/// What `down` and a person need to know about a detached cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetachedCluster {
    /// The cluster directory (deleted by `down`).
    pub dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The supervising shell; SIGTERM to it stops the cluster.
    pub supervisor_pid: u32,
    /// etcd's process id.
    pub etcd_pid: u32,
    /// kube-apiserver's process id.
    pub apiserver_pid: u32,
}

impl DetachedCluster {
    /// Whether the supervisor still runs.
    pub fn is_running(&self) -> bool {
        process_alive(self.supervisor_pid)
    }
}

/// Starts a cluster in `dir` that keeps running after this process exits, or returns the one
/// already running there. Refuses a non-empty `dir` that is not a cluster directory.
pub fn start_detached(
    binaries: &ControlPlaneBinaries,
    dir: &Path,
    node: Option<&NodeOptions>,
) -> Result<DetachedCluster> {
    if let Some(existing) = read_state(dir)? {
        if existing.is_running() {
            log!("a cluster is already running in {}", dir.display());
            return Ok(existing);
        }
        log!("cleaning up a stopped cluster left in {}", existing.dir.display());
        cleanup_stopped(&existing)?;
    } else if is_non_empty_dir(dir)? {
        return Err(Error::ForeignDirectory { path: dir.to_path_buf() });
    }
    let (endpoints, supervisor) =
        launch(binaries, &ClusterDir::At(dir.to_path_buf()), Lifetime::Detached, node)?;
    let state = DetachedCluster {
        dir: endpoints.dir.clone(),
        kubeconfig: endpoints.kubeconfig.clone(),
        server: endpoints.server.clone(),
        supervisor_pid: supervisor.pid(),
        etcd_pid: endpoints.etcd_pid,
        apiserver_pid: endpoints.apiserver_pid,
    };
    let path = endpoints.dir.join(STATE_FILE);
    let written = serde_json::to_vec_pretty(&state)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&path, json))
        .context("writing", &path);
    if let Err(err) = written {
        // Without the state file `down` could not find it: stop it now.
        supervisor.stop(&endpoints.dir, STOP_GRACE)?;
        return Err(err);
    }
    supervisor.detach();
    Ok(state)
}

/// Stops the detached cluster in `dir` and deletes the directory. Returns the cluster that was
/// stopped, or `None` when none was there.
pub fn stop_detached(dir: &Path) -> Result<Option<DetachedCluster>> {
    let Some(state) = read_state(dir)? else {
        return Ok(None);
    };
    if state.is_running() {
        send_signal(state.supervisor_pid, Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        while state.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if state.is_running() {
            send_signal(state.supervisor_pid, Signal::KILL);
        }
    }
    cleanup_stopped(&state)?;
    Ok(Some(state))
}

/// Kills servers a dead supervisor left behind and removes the directory.
fn cleanup_stopped(state: &DetachedCluster) -> Result<()> {
    kill_servers(&state.dir);
    for (process, pid) in [("kube-apiserver", state.apiserver_pid), ("etcd", state.etcd_pid)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if process_alive(pid) {
            return Err(Error::StillRunning { process, pid });
        }
    }
    remove_dir(&state.dir)
}

/// The state of the cluster in `dir`, `None` when there is none.
fn read_state(dir: &Path) -> Result<Option<DetachedCluster>> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| Error::State { path, detail: err.to_string() }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).context("reading", path),
    }
}

fn is_non_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).context("reading", dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding someone else's files is never used (`down` would delete it).
    #[test]
    fn foreign_directory_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("notes.txt"), "mine").expect("write");
        let binaries = ControlPlaneBinaries::unchecked(dir.path());
        match start_detached(&binaries, dir.path(), None) {
            Err(Error::ForeignDirectory { path }) => assert_eq!(path, dir.path()),
            other => panic!("expected ForeignDirectory, got {other:?}"),
        }
        assert!(dir.path().join("notes.txt").exists());
    }

    /// `down` on a directory without a cluster reports that nothing ran.
    #[test]
    fn down_without_cluster_is_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(stop_detached(dir.path()).expect("down"), None);
    }

    /// A corrupt state file is reported with its path.
    #[test]
    fn corrupt_state_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(STATE_FILE), "{").expect("write");
        let err = stop_detached(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains(STATE_FILE), "{err}");
    }
}
