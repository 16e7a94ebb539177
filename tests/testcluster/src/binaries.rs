//! Finds the pinned etcd, kube-apiserver, kubectl and helm built by `tests/control-plane/build.sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::log::log;
use crate::{Error, Result};

/// The environment variable naming the folder with the control-plane binaries (set by the Makefile).
pub const CONTROL_PLANE_ENV: &str = "MODELROLLOUT_CONTROL_PLANE";

/// The build script, relative to the workspace root.
const BUILD_SCRIPT: &str = "tests/control-plane/build.sh";

/// A folder holding executable `etcd`, `kube-apiserver`, `kubectl` and `helm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneBinaries {
    dir: PathBuf,
}

impl ControlPlaneBinaries {
    /// Uses `$MODELROLLOUT_CONTROL_PLANE` when set, otherwise runs `tests/control-plane/build.sh`
    /// (a cached run takes well under a second; the first build takes minutes) and uses the folder it prints.
    /// The answer is remembered for the rest of the process.
    pub fn locate() -> Result<Self> {
        static LOCATED: OnceLock<ControlPlaneBinaries> = OnceLock::new();
        if let Some(found) = LOCATED.get() {
            return Ok(found.clone());
        }
        let found = match std::env::var_os(CONTROL_PLANE_ENV) {
            Some(dir) if !dir.is_empty() => Self::from_dir(PathBuf::from(dir))?,
            _ => Self::build()?,
        };
        Ok(LOCATED.get_or_init(|| found).clone())
    }

    /// Checks that `dir` holds the four executables.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let binaries = Self { dir: dir.into() };
        for program in
            [binaries.etcd(), binaries.kube_apiserver(), binaries.kubectl(), binaries.helm()]
        {
            let executable = std::fs::metadata(&program)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if !executable {
                return Err(Error::MissingBinary { path: program });
            }
        }
        Ok(binaries)
    }

    /// A folder taken as is, for tests that never start a server.
    #[cfg(test)]
    pub(crate) fn unchecked(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Runs the workspace's build script and uses the folder it prints on its last stdout line.
    fn build() -> Result<Self> {
        let script = workspace_root().join(BUILD_SCRIPT);
        log!(
            "{CONTROL_PLANE_ENV} is not set; running {} to find the control-plane binaries",
            script.display()
        );
        let build_failed =
            |detail: String| Error::ControlPlaneBuild { script: script.clone(), detail };
        // stderr is inherited so a first (slow) build shows its progress.
        let output = Command::new(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|err| build_failed(err.to_string()))?;
        if !output.status.success() {
            return Err(build_failed(output.status.to_string()));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .ok_or_else(|| build_failed("it printed no folder".to_owned()))?;
        Self::from_dir(dir)
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `etcd` server.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The `kube-apiserver`.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }

    /// The pinned `kubectl`, matching the API server's version.
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }

    /// The pinned `helm`.
    pub fn helm(&self) -> PathBuf {
        self.dir.join("helm")
    }
}

/// The workspace root: this crate lives in `<root>/tests/testcluster`.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.ancestors().nth(2).unwrap_or(manifest_dir).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workspace root is the folder that holds the control-plane build script.
    #[test]
    fn workspace_root_holds_the_build_script() {
        assert!(workspace_root().join(BUILD_SCRIPT).is_file());
    }

    /// A folder without the programs is refused, naming the first missing one.
    #[test]
    fn folder_without_programs_is_refused() {
        let empty = tempfile::tempdir().expect("temp dir");
        match ControlPlaneBinaries::from_dir(empty.path()) {
            Err(Error::MissingBinary { path }) => assert_eq!(path, empty.path().join("etcd")),
            other => panic!("expected MissingBinary, got {other:?}"),
        }
    }

    /// A file that is present but not executable counts as missing.
    #[test]
    fn non_executable_program_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["etcd", "kube-apiserver", "kubectl", "helm"] {
            std::fs::write(dir.path().join(name), "#!/bin/sh\n").expect("write");
            let mode = if name == "kubectl" { 0o644 } else { 0o755 };
            std::fs::set_permissions(dir.path().join(name), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
        }
        match ControlPlaneBinaries::from_dir(dir.path()) {
            Err(Error::MissingBinary { path }) => assert_eq!(path, dir.path().join("kubectl")),
            other => panic!("expected MissingBinary, got {other:?}"),
        }
    }
}
