//! The README's commands work word for word on this machine, and the Makefile, `make help` and the
//! READMEs name the same targets.
//!
//! Runs in a temporary copy of the repository that shares the workspace's `target/`. The pages name fixed ports
//! (8080, 9001, ...): cargo runs one test binary at a time, so no other test runs beside this one,
//! and a port something else holds fails the test with its number before any block runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use modelrollout_readme_tests::make_targets;
use modelrollout_readme_tests::markdown::{self, Block};
use modelrollout_readme_tests::repo_copy::RepoCopy;
use modelrollout_readme_tests::run::{BLOCK_LIMIT, Runner, Tally, run_bounded};

/// Targets of `make help` this test runs: cheap once `make test` has built the workspace and the
/// control plane.
const RUN: &[&str] = &["help", "control-plane", "crds", "cluster-up", "cluster-down"];

/// Targets it does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("test", "the run this test is part of"),
    ("unit", "the same tests `make test` runs"),
    ("lint", "`make test` runs it first"),
    ("crd-check", "`make test` runs it first"),
    ("deps", "`make test` runs it first"),
    ("build", "a release build of every binary: minutes"),
    ("bench", "five minutes of measurements on a quiet machine, not a check"),
    ("bench-controller", "a release build and 10 000 rollouts: minutes"),
    ("sim", "thousands of simulated rollouts: a measurement, its own tests run in `make test`"),
    ("images", "`make test` runs it first (debug images)"),
    ("node-up", "release images (minutes); tests/e2e/tests/node.rs starts the same node"),
    ("chart-lint", "`make test` runs it first"),
    (
        "demo",
        "a cluster with a node and two rollouts (minutes); tests/e2e/tests/chart.rs runs the same story",
    ),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// A copy of the repository whose `target/` is the workspace's: the README's `cargo build` finds
/// what `cargo test` has just built, and `target/debug/...` commands find the binaries.
fn copy_of(root: &Path) -> RepoCopy {
    let copy = RepoCopy::of(root).expect("copying the repository");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    std::os::unix::fs::symlink(target, copy.path().join("target")).expect("linking target/");
    copy
}

/// The Python with the `openai` client: `MODELROLLOUT_PYTHON` (set by `make test`), else the
/// virtualenv `make deps` makes.
fn python(root: &Path) -> Option<PathBuf> {
    std::env::var_os("MODELROLLOUT_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(root.join(".cache/venv/bin/python")))
        .filter(|python| python.exists())
}

/// Every Markdown page of the copy with its blocks, `README.md` first.
fn pages(copy: &RepoCopy) -> Vec<(String, Vec<Block>)> {
    let mut names: Vec<&PathBuf> =
        copy.files().iter().filter(|f| f.extension().is_some_and(|e| e == "md")).collect();
    names.sort_by_key(|name| (name.as_path() != Path::new("README.md"), name.to_path_buf()));
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(copy.path().join(name)).expect("a copied page");
            let blocks = markdown::blocks(&text)
                .unwrap_or_else(|error| panic!("{}: {error}", name.display()));
            (name.display().to_string(), blocks)
        })
        .collect()
}

/// The two tests share `target/`: run one at a time rather than have their cargo commands wait
/// for each other's lock inside their time limits.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Every runnable block of every page runs as written, and prints what the page says it prints.
#[test]
fn readme_commands_work_word_for_word() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = workspace_root();
    let copy = copy_of(&root);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let runner = Runner {
        cwd: copy.path().to_path_buf(),
        scratch: scratch.path().to_path_buf(),
        env: vec![],
        python: python(&root),
    };
    let mut tally = Tally::default();
    let pages = pages(&copy);
    for (name, blocks) in &pages {
        if let Err(failure) = runner.run_page(name, blocks, &mut tally) {
            panic!("{failure}");
        }
    }
    let mut summary = format!(
        "readme: ran {} blocks of {} pages, skipped {}{}\n",
        tally.ran,
        pages.len(),
        tally.skipped.len(),
        if tally.skipped.is_empty() { "" } else { ":" }
    );
    for skipped in &tally.skipped {
        summary.push_str(&format!("  {skipped}\n"));
    }
    // Straight to stderr, past the test harness's capture: `make test` shows it on success too.
    let _ = std::io::stderr().write_all(summary.as_bytes());
    assert!(tally.ran > 0, "no runnable block found in {} pages", pages.len());
}

/// `make help`, this test and the pages agree on the targets, and the cheap ones work: `make crds`
/// regenerates the committed CRD unchanged, `make cluster-up` prints the KUBECONFIG line and
/// `make cluster-down` stops that cluster.
#[test]
fn make_help_targets_agree_and_the_cheap_ones_work() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = workspace_root();
    let copy = copy_of(&root);
    let env = vec![];
    let make = |target: &str| {
        let (succeeded, output) =
            run_bounded(copy.path(), &env, &format!("make {target}"), BLOCK_LIMIT).unwrap();
        assert!(
            succeeded,
            "`make {target}` failed (or ran over {} s):\n{output}",
            BLOCK_LIMIT.as_secs()
        );
        output
    };

    let listed = make_targets::listed(&make("help"));
    for target in &listed {
        assert!(
            RUN.contains(&target.as_str()) || NOT_RUN.iter().any(|(t, _)| t == target),
            "`make help` lists `{target}`, which tests/readme/tests/readme.rs neither runs nor \
             explains: add it to RUN if it is cheap, else to NOT_RUN with the reason"
        );
    }
    for target in RUN.iter().chain(NOT_RUN.iter().map(|(t, _)| t)) {
        assert!(
            listed.iter().any(|t| t == target),
            "tests/readme/tests/readme.rs names `make {target}`, which `make help` does not list"
        );
    }
    for (name, blocks) in pages(&copy) {
        for block in blocks {
            for target in markdown::make_targets(&block.code) {
                assert!(
                    listed.contains(&target),
                    "{name}:{} runs `make {target}`, which `make help` does not list: fix the \
                     page or the Makefile",
                    block.line
                );
            }
        }
    }

    make("control-plane");
    let committed = std::fs::read(copy.path().join("crds/modelrollout.yaml")).unwrap();
    make("crds");
    let regenerated = std::fs::read(copy.path().join("crds/modelrollout.yaml")).unwrap();
    assert!(
        committed == regenerated,
        "`make crds` changed crds/modelrollout.yaml: run it in the repository and commit the result"
    );

    let _cluster = ClusterGuard { copy: &copy, env: &env };
    let up = make("cluster-up");
    assert!(
        up.lines().any(|line| {
            line.starts_with("export KUBECONFIG=") && line.ends_with(".cache/cluster/kubeconfig")
        }),
        "`make cluster-up` did not print `export KUBECONFIG=.../.cache/cluster/kubeconfig`:\n{up}"
    );
    assert!(
        copy.path().join(".cache/cluster/kubeconfig").exists(),
        "no kubeconfig after cluster-up:\n{up}"
    );
    make("cluster-down");
    assert!(
        !copy.path().join(".cache/cluster").exists(),
        "`make cluster-down` left .cache/cluster behind"
    );
}

/// Stops a cluster a failed assertion left running.
struct ClusterGuard<'a> {
    copy: &'a RepoCopy,
    env: &'a [(String, String)],
}

impl Drop for ClusterGuard<'_> {
    fn drop(&mut self) {
        let _ =
            run_bounded(self.copy.path(), self.env, "make cluster-down", Duration::from_secs(120));
    }
}
