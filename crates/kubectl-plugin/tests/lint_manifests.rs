//! `kubectl modelrollout lint` on the repository's manifests, as a user runs it (no cluster):
//! every example passes, every manifest the API server must reject is flagged with a field path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};

fn plugin(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_kubectl-modelrollout"))
        .args(args)
        .output()
        .context("running kubectl-modelrollout")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path.to_string_lossy().into_owned());
        }
    }
    files.sort();
    Ok(files)
}

/// The examples users copy lint clean (exit 0).
#[test]
fn examples_lint_clean() -> Result<()> {
    let files = yaml_files(&workspace().join("deploy/examples"))?;
    ensure!(!files.is_empty(), "no examples found");
    let args: Vec<&str> = ["lint"].into_iter().chain(files.iter().map(String::as_str)).collect();
    let output = plugin(&args)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "lint failed on the examples:\n{stdout}");
    ensure!(stdout.is_empty(), "unexpected problems:\n{stdout}");
    Ok(())
}

/// Each manifest the API server rejects is flagged by lint alone: exit 1 and at least one
/// `<file>: ModelRollout <name>: <field path>: <message>` line naming it.
#[test]
fn every_invalid_manifest_is_flagged() -> Result<()> {
    let files = yaml_files(&workspace().join("tests/e2e/manifests/invalid"))?;
    ensure!(
        files.len() >= 12,
        "expected the invalid manifests of tests/e2e, found {}",
        files.len()
    );
    let mut missed = Vec::new();
    for file in &files {
        let output = plugin(&["lint", file])?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let flagged = output.status.code() == Some(1)
            && stdout
                .lines()
                .any(|l| l.starts_with(&format!("{file}: ModelRollout ")) && l.contains(": spec"));
        if !flagged {
            missed.push(format!("{file} ({}): {stdout}", output.status));
        }
    }
    ensure!(missed.is_empty(), "not flagged:\n{}", missed.join("\n"));
    Ok(())
}

/// A missing file is an error (exit 1) naming it; no file at all is a usage error (exit 2).
#[test]
fn lint_exit_codes() -> Result<()> {
    let output = plugin(&["lint", "/nonexistent/rollout.yaml"])?;
    ensure!(output.status.code() == Some(1), "{}", output.status);
    ensure!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/rollout.yaml"));
    let output = plugin(&["lint"])?;
    ensure!(output.status.code() == Some(2), "{}", output.status);
    Ok(())
}

/// The krew manifest installs this binary under kubectl's plugin name, for every platform it lists.
#[test]
fn krew_manifest_names_the_binary() -> Result<()> {
    let text = std::fs::read_to_string(workspace().join("deploy/krew/modelrollout.yaml"))?;
    let manifest: serde_yaml::Value = serde_yaml::from_str(&text)?;
    ensure!(manifest["kind"] == "Plugin" && manifest["metadata"]["name"] == "modelrollout");
    let platforms = manifest["spec"]["platforms"].as_sequence().context("no platforms")?;
    ensure!(!platforms.is_empty());
    for platform in platforms {
        ensure!(platform["bin"] == "kubectl-modelrollout", "{platform:?}");
        ensure!(platform["uri"].as_str().is_some_and(|u| u.ends_with(".tar.gz")), "{platform:?}");
    }
    ensure!(
        workspace().join("deploy/krew/package.sh").is_file(),
        "package.sh renders the manifest"
    );
    Ok(())
}
