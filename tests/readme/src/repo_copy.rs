//! A temporary copy of the repository as a fresh clone would have it (plus uncommitted edits, so a
//! README being written is the one tested), for commands that write into the tree.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The copy; deleted on drop.
#[derive(Debug)]
pub struct RepoCopy {
    dir: TempDir,
    files: Vec<PathBuf>,
}

impl RepoCopy {
    /// Copies the files git knows or would add (tracked and untracked-but-not-ignored) from
    /// `repo`, keeping modification times so cargo finds shared build outputs up to date.
    pub fn of(repo: &Path) -> io::Result<RepoCopy> {
        let dir = tempfile::Builder::new().prefix("modelrollout-readme-").tempdir()?;
        let mut copied = vec![];
        for relative in files(repo)? {
            let source = repo.join(&relative);
            let metadata = match std::fs::metadata(&source) {
                Ok(metadata) => metadata,
                // Deleted in the working tree but still in the index: a fresh clone of the edit
                // would not have it either.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let target = dir.path().join(&relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&source, &target)?;
            File::options().write(true).open(&target)?.set_modified(metadata.modified()?)?;
            copied.push(relative);
        }
        Ok(RepoCopy { dir, files: copied })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The copied files, relative to [`RepoCopy::path`].
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// `git ls-files --cached --others --exclude-standard` in `repo`.
fn files(repo: &Path) -> io::Result<Vec<PathBuf>> {
    let output = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(repo)
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "`git ls-files` in {} failed: {}",
            repo.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output
        .stdout
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .collect())
}
