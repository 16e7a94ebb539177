//! The Dockerfiles in deploy/docker cannot be built here (no container engine), so this keeps
//! them honest: each builds a binary the workspace has, runs it with flags it accepts, exposes
//! exactly the ports it listens on, and runs as a non-root user.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use modelrollout_e2e::workspace_root;
use serde_json::Value;

/// One parsed Dockerfile: the instructions this test checks.
#[derive(Debug, Default)]
struct Dockerfile {
    /// `-p <package> --bin <binary>` of the `cargo build` line.
    package: String,
    binary: String,
    /// The last `COPY --from=...` destination.
    copied_to: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    exposed: BTreeSet<u16>,
    user: String,
}

fn parse(text: &str) -> Result<Dockerfile> {
    let mut file = Dockerfile::default();
    // Join continuation lines so each instruction is one line.
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "cargo") {
            let after = &words[at..];
            for pair in after.windows(2) {
                match pair[0] {
                    "-p" => file.package = pair[1].to_owned(),
                    "--bin" => file.binary = pair[1].to_owned(),
                    _ => {}
                }
            }
        }
        let array = |rest: &str| -> Result<Vec<String>> {
            let value: Value =
                serde_json::from_str(rest).with_context(|| format!("not a JSON array: {line}"))?;
            Ok(value
                .as_array()
                .context("an array")?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect())
        };
        match words.first().copied() {
            Some("COPY") if words.get(1).is_some_and(|w| w.starts_with("--from=")) => {
                file.copied_to = words.last().map(|w| (*w).to_owned()).unwrap_or_default();
            }
            Some("ENTRYPOINT") => file.entrypoint = array(line.trim_start_matches("ENTRYPOINT"))?,
            Some("CMD") => file.cmd = array(line.trim_start_matches("CMD"))?,
            Some("EXPOSE") => {
                for port in &words[1..] {
                    file.exposed.insert(
                        port.trim_end_matches("/tcp")
                            .parse()
                            .with_context(|| format!("EXPOSE {port}"))?,
                    );
                }
            }
            Some("USER") => file.user = words.get(1).map(|w| (*w).to_owned()).unwrap_or_default(),
            _ => {}
        }
    }
    Ok(file)
}

/// The long flags a clap-derived command in `src` declares: `--field-name` for every field
/// under an `#[arg(long ...)]`, or the `long = "x"` written there, and its aliases.
fn clap_flags(src: &Path) -> Result<BTreeSet<String>> {
    let mut flags = BTreeSet::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                flags_in(&std::fs::read_to_string(&path)?, &mut flags);
            }
        }
    }
    Ok(flags)
}

fn flags_in(text: &str, flags: &mut BTreeSet<String>) {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with("#[arg(") {
            i += 1;
            continue;
        }
        // An attribute may span lines.
        let mut attribute = lines[i].to_owned();
        while !attribute.ends_with(")]") && i + 1 < lines.len() {
            i += 1;
            attribute.push_str(lines[i]);
        }
        i += 1;
        if !attribute.contains("long") {
            continue;
        }
        let quoted = |key: &str| -> Vec<String> {
            attribute
                .split(key)
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(|n| format!("--{n}"))
                .collect()
        };
        let explicit = quoted("long = \"");
        let named = !explicit.is_empty();
        flags.extend(explicit);
        flags.extend(quoted("alias = \""));
        if named {
            continue;
        }
        // The field follows, after any further attributes and comments.
        let field = lines[i..].iter().find(|l| !l.starts_with("#[") && !l.starts_with("//"));
        if let Some(field) = field {
            let name =
                field.trim_start_matches("pub ").split(':').next().unwrap_or_default().trim();
            if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                flags.insert(format!("--{}", name.replace('_', "-")));
            }
        }
    }
}

/// The binaries of the workspace, with the source folder of each, from `cargo metadata`.
fn workspace_binaries() -> Result<Vec<(String, String, PathBuf)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .context("running cargo metadata")?;
    ensure!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    let mut binaries = Vec::new();
    for package in metadata["packages"].as_array().context("packages")? {
        let package_name = package["name"].as_str().unwrap_or_default();
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
        for target in package["targets"].as_array().context("targets")? {
            if target["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")) {
                let src = manifest.parent().map(|p| p.join("src")).unwrap_or_default();
                binaries.push((
                    package_name.to_owned(),
                    target["name"].as_str().unwrap_or_default().to_owned(),
                    src,
                ));
            }
        }
    }
    Ok(binaries)
}

/// The port of `HOST:PORT`.
fn port_of(address: &str) -> Option<u16> {
    address.rsplit(':').next()?.parse().ok()
}

#[test]
fn dockerfiles_name_binaries_flags_and_ports_that_exist() -> Result<()> {
    let dir = workspace_root().join("deploy/docker");
    let binaries = workspace_binaries()?;
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".Dockerfile") {
            continue;
        }
        let name = path.display().to_string();
        let file = parse(&std::fs::read_to_string(&path)?)?;
        let Some((_, _, src)) =
            binaries.iter().find(|(p, b, _)| *p == file.package && *b == file.binary)
        else {
            bail!(
                "{name}: `cargo build -p {} --bin {}` names no binary of the workspace",
                file.package,
                file.binary
            );
        };
        ensure!(
            file.copied_to.ends_with(&format!("/{}", file.binary)),
            "{name}: copies the binary to {}",
            file.copied_to
        );
        ensure!(
            file.entrypoint == [file.copied_to.clone()],
            "{name}: ENTRYPOINT {:?} is not {}",
            file.entrypoint,
            file.copied_to
        );
        let flags = clap_flags(src)?;
        let mut listening = BTreeSet::new();
        for (i, arg) in file.cmd.iter().enumerate() {
            if let Some(flag) = arg.strip_prefix("--") {
                let flag = format!("--{}", flag.split('=').next().unwrap_or_default());
                ensure!(
                    flags.contains(&flag),
                    "{name}: {} has no flag {flag} (it has {flags:?})",
                    file.binary
                );
                // --listen, --admin-listen, and the controller's --metrics-address
                if flag.ends_with("listen") || flag.ends_with("address") {
                    let value = file.cmd.get(i + 1).context("a listen flag without value")?;
                    listening
                        .insert(port_of(value).with_context(|| format!("{name}: {flag} {value}"))?);
                }
            }
        }
        ensure!(
            file.exposed == listening,
            "{name}: EXPOSE {:?} but the command listens on {listening:?}",
            file.exposed
        );
        let uid = file.user.split(':').next().unwrap_or_default();
        ensure!(
            uid.parse::<u32>().is_ok_and(|uid| uid != 0),
            "{name}: USER {:?} is not a numeric non-root user",
            file.user
        );
        checked.push(file.binary);
    }
    checked.sort();
    ensure!(
        checked == ["modelrollout-controller", "modelrollout-mockllm", "modelrollout-proxy"],
        "checked Dockerfiles of {checked:?}"
    );
    Ok(())
}

/// The flag reader sees the proxy's real flags (and would see a renamed one disappear).
#[test]
fn flag_reader_finds_the_proxys_flags() -> Result<()> {
    let flags = clap_flags(&workspace_root().join("crates/proxy/src"))?;
    for flag in ["--listen", "--admin-listen", "--routing-dir", "--configmap"] {
        ensure!(flags.contains(flag), "{flag} missing from {flags:?}");
    }
    ensure!(!flags.contains("--no-such-flag"));
    Ok(())
}
