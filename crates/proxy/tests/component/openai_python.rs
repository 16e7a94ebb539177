//! The official `openai` Python client against the proxy: plain and streamed chat completions,
//! embeddings, an unknown model raising `openai.NotFoundError`, and the model list.

use std::path::PathBuf;

use crate::support::*;

/// MODELROLLOUT_PYTHON, else the workspace's `.cache/venv/bin/python` (made by `make deps`).
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("MODELROLLOUT_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the openai client: run `make deps` (or set MODELROLLOUT_PYTHON)"
    );
    venv
}

/// The script's checks pass against a proxy in front of two mockllm upstreams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_client_works_through_the_proxy() {
    let TwoArms { stable, canary, dir } = two_arms(0).await;
    dir.write_json(
        "embed.json",
        &document("embed", "embed-default", &stable.base_url(), &canary.base_url(), 100),
    );
    let proxy = start_proxy(&dir, |_| {}).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/component/openai_client.py");
    let output = tokio::process::Command::new(python())
        .arg(&script)
        .env("PROXY_BASE_URL", proxy.base_url())
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "script failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.lines().last() == Some("ok"), "{stdout}");
    proxy.shutdown().await;
}
