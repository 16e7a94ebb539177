//! The ModelRollout CRD on a real kube-apiserver, driven through kubectl as a user types it:
//! it installs, examples apply, invalid manifests are rejected with their messages, `get`
//! prints the columns, `explain` shows the docs, and the status subresource behaves.
//!
//! Every test uses its own namespace on the one cluster this test binary shares.

use std::path::Path;
use std::process::Output;

use anyhow::{Context, Result, bail, ensure};
use modelrollout_e2e::{
    CRD_NAME, cluster_with_crd, examples_dir, expected_rejection, invalid_manifests_dir, report,
    valid_manifest, yaml_files,
};
use serde_json::Value;

/// The printer columns docs/resource.md lists, after kubectl's own NAME.
const COLUMNS: [&str; 9] =
    ["NAME", "MODEL", "STABLE", "CANARY", "WEIGHT", "STEP", "PHASE", "CANARY-ERR", "AGE"];

/// The valid fixture's name and file.
const FIXTURE_NAME: &str = "chat-assistant";
const FIXTURE_FILE: &str = "chat-assistant.yaml";

/// A floor on the invalid manifests, so that one lost by mistake is noticed.
const MIN_INVALID_MANIFESTS: usize = 12;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn succeeded(what: &str, output: Output) -> Result<String> {
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        text(&output.stderr)
    );
    Ok(text(&output.stdout))
}

/// The CRD applies, becomes Established, and is the namespaced `mro` resource with a status subresource.
#[test]
fn crd_installs_and_becomes_established() -> Result<()> {
    let cluster = cluster_with_crd()?;
    let crd: Value =
        serde_json::from_str(&cluster.kubectl_ok(["get", "crd", CRD_NAME, "-o", "json"])?)?;
    let established = crd["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    ensure!(established, "Established is not True: {}", crd["status"]);
    ensure!(crd["spec"]["scope"] == "Namespaced", "scope is {}", crd["spec"]["scope"]);
    let short_names = &crd["spec"]["names"]["shortNames"];
    ensure!(
        short_names.as_array().is_some_and(|names| names.iter().any(|n| n == "mro")),
        "short names are {short_names}"
    );
    let v1alpha1 = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "v1alpha1")
        .context("no v1alpha1 version")?;
    ensure!(
        v1alpha1["subresources"]["status"].is_object(),
        "v1alpha1 has no status subresource: {}",
        v1alpha1["subresources"]
    );
    Ok(())
}

/// Every manifest in deploy/examples applies cleanly into a fresh namespace and can be read back.
#[test]
fn every_example_applies_cleanly() -> Result<()> {
    let cluster = cluster_with_crd()?;
    let examples = yaml_files(&examples_dir())?;
    ensure!(!examples.is_empty(), "{} holds no examples", examples_dir().display());
    let mut failures = Vec::new();
    for example in &examples {
        let namespace = cluster.namespace()?;
        let file = path_arg(example);
        let applied = namespace.kubectl(["apply", "-f", file.as_str()])?;
        if !applied.status.success() {
            failures.push(format!("{file}: {}", text(&applied.stderr)));
            continue;
        }
        let read_back = namespace.kubectl(["get", "-f", file.as_str(), "-o", "name"])?;
        if !read_back.status.success() {
            failures.push(format!("{file}: applied but not readable: {}", text(&read_back.stderr)));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} examples failed:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
    report(format_args!("{} example manifests applied cleanly", examples.len()));
    Ok(())
}

/// Every invalid manifest is rejected by `kubectl apply`, with its `# expect:` text in the error.
#[test]
fn invalid_manifests_are_rejected_with_their_message() -> Result<()> {
    let cluster = cluster_with_crd()?;
    let dir = invalid_manifests_dir();
    let manifests = yaml_files(&dir)?;
    let namespace = cluster.namespace()?;
    let mut failures = Vec::new();
    for manifest in &manifests {
        let name =
            manifest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let body = std::fs::read_to_string(manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let Some(expected) = expected_rejection(&body) else {
            failures.push(format!(
                "{name}: first line must be `# expect: <text the rejection contains>`"
            ));
            continue;
        };
        let file = path_arg(manifest);
        let applied = namespace.kubectl(["apply", "-f", file.as_str()])?;
        let stderr = text(&applied.stderr);
        if applied.status.success() {
            failures
                .push(format!("{name}: accepted, expected a rejection containing {expected:?}"));
        } else if !stderr.contains(expected) {
            failures.push(format!("{name}: rejected without {expected:?}; kubectl said: {stderr}"));
        }
    }
    ensure!(
        manifests.len() >= MIN_INVALID_MANIFESTS,
        "{} holds {} manifests; keep at least {MIN_INVALID_MANIFESTS}, one per schema rule",
        dir.display(),
        manifests.len()
    );
    ensure!(
        failures.is_empty(),
        "{} of {} invalid manifests misbehaved:\n{}",
        failures.len(),
        manifests.len(),
        failures.join("\n")
    );
    report(format_args!(
        "{} invalid manifests were each rejected by kubectl apply with the expected message",
        manifests.len()
    ));
    Ok(())
}

/// `kubectl get mro` prints the promised columns, filled from the spec.
#[test]
fn get_mro_prints_the_columns() -> Result<()> {
    let cluster = cluster_with_crd()?;
    let namespace = cluster.namespace()?;
    let fixture = path_arg(&valid_manifest(FIXTURE_FILE));
    namespace.kubectl_ok(["apply", "-f", fixture.as_str()])?;
    let table = namespace.kubectl_ok(["get", "mro"])?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    ensure!(header == COLUMNS, "header is {header:?}, expected {COLUMNS:?}\n{table}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    ensure!(
        row.get(..4) == Some(&[FIXTURE_NAME, "chat-default", "gpt-4.1", "claude-sonnet-4.5"][..]),
        "row is {row:?}\n{table}"
    );
    Ok(())
}

/// `kubectl explain modelrollout.spec.analysis` documents the object and every field in it.
#[test]
fn explain_shows_field_docs() -> Result<()> {
    let cluster = cluster_with_crd()?;
    let explained = cluster.kubectl_ok(["explain", "modelrollout.spec.analysis"])?;
    let description = section(&explained, "DESCRIPTION:");
    ensure!(
        description.iter().any(|l| is_doc_text(l)),
        "spec.analysis has no description:\n{explained}"
    );
    let fields = section(&explained, "FIELDS:");
    let mut documented = Vec::new();
    let mut undocumented = Vec::new();
    // A field line is `  name\t<type>`; its description lines are indented by four spaces.
    for (index, line) in fields.iter().enumerate() {
        let is_field = line.starts_with("  ") && !line.starts_with("   ") && line.contains('<');
        if !is_field {
            continue;
        }
        let name = line.split_whitespace().next().unwrap_or_default().to_owned();
        // Between the field line and the blank line after it: an optional `  enum: ...`, then docs.
        let has_doc = fields[index + 1..]
            .iter()
            .take_while(|next| !next.trim().is_empty())
            .any(|next| next.starts_with("    ") && is_doc_text(next));
        if has_doc {
            documented.push(name);
        } else {
            undocumented.push(name);
        }
    }
    for expected in ["interval", "window", "failureLimit", "thresholds", "prometheus"] {
        ensure!(
            documented.iter().any(|f| f == expected),
            "spec.analysis.{expected} is not listed with docs:\n{explained}"
        );
    }
    ensure!(undocumented.is_empty(), "fields without docs: {undocumented:?}\n{explained}");
    Ok(())
}

/// Whether a line of `kubectl explain` output is real documentation text.
fn is_doc_text(line: &str) -> bool {
    let line = line.trim();
    // kubectl prints this placeholder for a schema without a description.
    !line.is_empty() && line != "<no description>"
}

/// The lines after `heading` up to the next unindented heading.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('\t'))
        .collect()
}

/// A status patch through the status subresource works and leaves the generation alone; the main
/// resource ignores status; a spec change bumps the generation.
#[test]
fn status_subresource_and_generation() -> Result<()> {
    let cluster = cluster_with_crd()?;
    let namespace = cluster.namespace()?;
    let fixture = path_arg(&valid_manifest(FIXTURE_FILE));
    namespace.kubectl_ok(["apply", "-f", fixture.as_str()])?;
    let object = |what: &str| -> Result<Value> {
        let json = namespace
            .kubectl_ok(["get", "mro", FIXTURE_NAME, "-o", "json"])
            .with_context(|| format!("reading the rollout {what}"))?;
        Ok(serde_json::from_str(&json)?)
    };
    let generation = |object: &Value| object["metadata"]["generation"].as_i64();

    let created = object("after create")?;
    let first = generation(&created).context("no metadata.generation")?;

    let status_patch = r#"{"status":{"phase":"Progressing","canaryWeight":5,"currentStepIndex":0,"observedGeneration":1}}"#;
    succeeded(
        "kubectl patch --subresource=status",
        namespace.kubectl([
            "patch",
            "mro",
            FIXTURE_NAME,
            "--subresource=status",
            "--type=merge",
            "-p",
            status_patch,
        ])?,
    )?;
    let patched = object("after the status patch")?;
    ensure!(
        patched["status"]["phase"] == "Progressing" && patched["status"]["canaryWeight"] == 5,
        "status after the patch: {}",
        patched["status"]
    );
    ensure!(
        generation(&patched) == Some(first),
        "a status update changed metadata.generation from {first} to {:?}",
        generation(&patched)
    );

    // Through the main resource, status is ignored: only the controller's subresource writes it.
    let _ = namespace.kubectl([
        "patch",
        "mro",
        FIXTURE_NAME,
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ])?;
    let ignored = object("after a status write to the main resource")?;
    ensure!(
        ignored["status"]["phase"] == "Progressing",
        "the main resource wrote status: {}",
        ignored["status"]
    );

    succeeded(
        "kubectl patch (spec)",
        namespace.kubectl([
            "patch",
            "mro",
            FIXTURE_NAME,
            "--type=merge",
            "-p",
            r#"{"spec":{"paused":true}}"#,
        ])?,
    )?;
    let updated = object("after the spec patch")?;
    ensure!(
        generation(&updated) == Some(first + 1),
        "a spec update moved metadata.generation from {first} to {:?}",
        generation(&updated)
    );
    ensure!(
        updated["status"]["phase"] == "Progressing",
        "the spec update lost the status: {}",
        updated["status"]
    );
    if updated["spec"]["paused"] != true {
        bail!("spec.paused is {} after the patch", updated["spec"]["paused"]);
    }
    Ok(())
}
