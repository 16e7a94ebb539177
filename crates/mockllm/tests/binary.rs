//! The `modelrollout-mockllm` binary: flags and environment set the knobs, the listen address is
//! printed, a bad flag is one clear line with a usage exit code, and SIGTERM exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_modelrollout-mockllm");

/// Kills the child if a test fails half-way, so no process outlives the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], envs: &[(&str, &str)]) -> (Running, String) {
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base_url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{line}");
    (Running(child), base_url)
}

/// A blocking HTTP/1.1 exchange with `Connection: close`; returns the raw response.
fn http(base_url: &str, method: &str, path: &str, body: &str) -> String {
    let authority = base_url.trim_start_matches("http://").trim_end_matches("/v1");
    let mut stream = TcpStream::connect(authority).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Flags and environment variables both reach the config, durations in human form.
#[test]
fn flags_and_environment_set_the_knobs() {
    let (_running, base_url) = spawn(
        &["--model", "gpt-4.1", "--ttft", "150ms", "--chunks", "3", "--error-status", "503"],
        &[("MOCKLLM_INTER_CHUNK_DELAY", "2s"), ("MOCKLLM_RETRY_AFTER", "1s")],
    );
    let config = http(&base_url, "GET", "/control/config", "");
    for expected in [
        r#""model":"gpt-4.1""#,
        r#""timeToFirstToken":"150ms""#,
        r#""interChunkDelay":"2s""#,
        r#""retryAfter":"1s""#,
        r#""chunks":3"#,
        r#""errorStatus":503"#,
    ] {
        assert!(config.contains(expected), "{expected} missing in {config}");
    }
    let answer = http(&base_url, "POST", "/v1/chat/completions", r#"{"model":"x","messages":[]}"#);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""model":"gpt-4.1""#), "{answer}");
}

/// SIGTERM stops the server and the process exits 0.
#[test]
fn sigterm_exits_zero() {
    let (mut running, base_url) = spawn(&[], &[]);
    assert!(http(&base_url, "GET", "/healthz", "").starts_with("HTTP/1.1 200"));
    let pid = running.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = running.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Bad values give one line naming the flag or field and a usage exit code (2).
#[test]
fn bad_flags_fail_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--latency", "150"], "--latency"),
        (&["--error-rate", "1.5"], "errorRate"),
        (&["--error-status", "200"], "errorStatus"),
    ];
    for (args, expected) in cases {
        let output =
            Command::new(BINARY).args(["--listen", "127.0.0.1:0"]).args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
