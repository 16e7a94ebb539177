//! `mockllm-probe`, the streaming half of `make bench`, against an in-process mock: it reports
//! complete streams as complete, and cut streams as failures rather than successes.

use std::net::SocketAddr;
use std::time::Duration;

use modelrollout_mockllm::{MockConfig, MockServer};
use serde_json::Value;

const PROBE: &str = env!("CARGO_BIN_EXE_mockllm-probe");

async fn probe(server: &MockServer, args: &[&str]) -> Value {
    let url = format!("{}/chat/completions", server.base_url());
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(PROBE).args(["--url", &url]).args(args).output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Sequential streams: every one ends with [DONE], and TTFT is never after the whole stream.
#[tokio::test]
async fn stream_mode_reports_complete_streams() {
    let config = MockConfig { time_to_first_token: Duration::from_millis(2), ..Default::default() };
    let server = MockServer::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let report = probe(&server, &["stream", "--requests", "5", "--warmup", "1"]).await;
    assert_eq!(report["requests"], 5);
    assert_eq!(report["incomplete"], 0);
    assert!(report["ttft_p50_us"].as_f64().unwrap() >= 2000.0, "{report}");
    assert!(report["ttft_p50_us"].as_f64() <= report["total_p50_us"].as_f64(), "{report}");
    assert_eq!(server.request_count(), 6);
}

/// Concurrent streams: all complete on a healthy mock; all count as failed when cut mid-way.
#[tokio::test]
async fn concurrent_mode_counts_completed_and_cut_streams() {
    let server = MockServer::start(MockConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let report = probe(&server, &["concurrent", "--streams", "20", "--deadline", "20s"]).await;
    assert_eq!(
        (report["completed"].as_u64(), report["failed"].as_u64()),
        (Some(20), Some(0)),
        "{report}"
    );

    server.set_config(MockConfig { abort_rate: 1.0, ..Default::default() });
    let report = probe(&server, &["concurrent", "--streams", "20", "--deadline", "20s"]).await;
    assert_eq!(
        (report["completed"].as_u64(), report["failed"].as_u64()),
        (Some(0), Some(20)),
        "{report}"
    );
    assert_eq!(report["stalled"], 0);
}
