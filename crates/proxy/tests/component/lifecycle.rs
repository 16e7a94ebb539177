//! The real binary: bad configuration exits with one line; SIGTERM drains streams, exits 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use modelrollout_mockllm::MockConfig;

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_modelrollout-proxy");

/// A bad flag or an unreadable routing directory: one line on stderr, non-zero exit.
#[test]
fn bad_configuration_is_one_line_and_non_zero() {
    let table: [(&[&str], i32, &str); 5] = [
        (&["--routing-dir", "/r", "--log", "modelrollout_proxy=[[["], 2, "--log"),
        (&["--routing-dir", "/r", "--listen", "localhost"], 2, "--listen"),
        (&["--listen", "127.0.0.1:0"], 2, "--routing-dir"),
        (&["--routing-dir", "/r", "--idle-timeout", "3 weeks"], 2, "--idle-timeout"),
        (
            &[
                "--routing-dir",
                "/nonexistent/modelrollout",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ],
            1,
            "/nonexistent/modelrollout",
        ),
    ];
    for (args, code, needle) in table {
        let output = Command::new(BINARY).args(args).env_remove("RUST_LOG").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Environment variables configure the binary like flags.
#[test]
fn environment_equivalents_are_read() {
    let output = Command::new(BINARY)
        .env("MODELROLLOUT_PROXY_ROUTING_DIR", "/r")
        .env("MODELROLLOUT_PROXY_LISTEN", "not-an-address")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not-an-address"), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// SIGTERM while streams are open: readiness drops, the open streams finish with [DONE], new
/// connections are refused, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_streams_and_exits_zero() {
    let stable = mock(MockConfig {
        chunks: 20,
        inter_chunk_delay: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let canary = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 0);
    let (port, admin_port) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(BINARY)
        .arg("--routing-dir")
        .arg(dir.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .args(["--shutdown-grace", "30s"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut ready = false;
    for _ in 0..500 {
        if let Ok(response) = client().get(format!("{admin}/readyz").parse().unwrap()).await
            && response.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "proxy binary never became ready");

    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let response = open_stream(&url, &chat_stream("chat-default"), &[]).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = next_chunk(&mut body).await.unwrap().unwrap();
        bodies.push((String::from_utf8_lossy(&first).into_owned(), body));
    }
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    let mut readers = Vec::new();
    for (first, body) in bodies {
        readers.push(tokio::spawn(async move {
            let (rest, ended) = read_stream(body).await;
            (format!("{first}{rest}"), ended)
        }));
    }
    // New connections are refused once the listener is closed (bounded wait for the signal).
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after SIGTERM");
    for reader in readers {
        let (text, ended) = reader.await.unwrap();
        assert!(ended.is_ok(), "stream cut during drain: {ended:?}");
        assert!(text.contains("[DONE]"), "stream incomplete: {text}");
    }
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}
