//! Hostile and careless clients: slow headers, slow bodies, idle connections, too many
//! connections, too many body bytes at once. Each test fails by its bound (10 s) if the proxy
//! lets the client hold on.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Everything the proxy sends on `stream` until it closes it; panics if it is still open after
/// 10 s (the slow client would hold it forever).
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the proxy kept the connection open"));
    String::from_utf8_lossy(&received).into_owned()
}

/// Writes `bytes` one at a time, `gap` apart, until the proxy closes the connection.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: &'static [u8], gap: Duration) {
    tokio::spawn(async move {
        for byte in bytes.iter().cycle().take(10_000) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
}

/// A client sending its headers a byte at a time is cut off by --client-header-timeout.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let arms = two_arms(0).await;
    let proxy = start_proxy(&arms.dir, |c| {
        c.clients.header_timeout = Duration::from_millis(300);
        c.clients.idle_timeout = Duration::ZERO;
    })
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    trickle(writer, b"x-slow: yes\r\n", Duration::from_millis(50));
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "slow headers: the proxy kept the connection open");
    proxy.shutdown().await;
}

/// A client sending its body a byte at a time gets 408 after --client-body-timeout.
#[tokio::test]
async fn slow_bodies_get_408() {
    let arms = two_arms(0).await;
    let proxy = start_proxy(&arms.dir, |c| {
        c.clients.body_timeout = Duration::from_millis(300);
        c.clients.idle_timeout = Duration::ZERO;
    })
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100000\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    trickle(writer, b" ", Duration::from_millis(50));
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), reader.read_exact(&mut head))
        .await
        .expect("slow body: no answer within 10 s")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");
    proxy.shutdown().await;
}

/// A keep-alive connection with nothing in flight, or one that never sends a byte, is closed
/// after --client-idle-timeout; a request in flight longer than that is not cut.
#[tokio::test]
async fn idle_connections_are_closed() {
    let stable = mock(modelrollout_mockllm::MockConfig {
        latency: Duration::from_millis(600),
        ..Default::default()
    })
    .await;
    let canary = mock(Default::default()).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 0);
    let proxy = start_proxy(&dir, |c| {
        c.clients.idle_timeout = Duration::from_millis(200);
        c.clients.header_timeout = Duration::ZERO;
    })
    .await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent, "silent connection").await, "");

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let body = chat("chat-default").to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The upstream takes 600 ms, three idle periods: the request still completes, then the
    // connection is closed as idle.
    let received = read_until_closed(&mut stream, "keep-alive connection").await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(received.contains(STABLE_MODEL), "{received}");
    proxy.shutdown().await;
}

/// Beyond --max-connections a new connection is answered 503 and closed; once one closes, new
/// connections are served again.
#[tokio::test]
async fn connections_are_capped() {
    let arms = two_arms(0).await;
    let proxy = start_proxy(&arms.dir, |c| {
        c.clients.max_connections = 1;
        c.clients.idle_timeout = Duration::ZERO;
        c.clients.header_timeout = Duration::ZERO;
    })
    .await;
    let first = TcpStream::connect(proxy.addr).await.unwrap();
    // The first connection is accepted before the second is tried.
    wait_until_async("first connection accepted", || async {
        let mut second = TcpStream::connect(proxy.addr).await.unwrap();
        second.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let received = read_until_closed(&mut second, "connection over the cap").await;
        received.starts_with("HTTP/1.1 503") && received.contains("too_many_connections")
    })
    .await;
    drop(first);
    wait_until_async("served again", || async {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
            stream
                .write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            read_until_closed(&mut stream, "after the cap").await.starts_with("HTTP/1.1 200")
        })
        .await
        .unwrap_or(false)
    })
    .await;
    proxy.shutdown().await;
}

/// Request bodies held at once never exceed --max-inflight-body-bytes: a request that would is
/// answered 503, and is served once the first body is gone.
#[tokio::test]
async fn inflight_body_bytes_are_bounded() {
    let arms = two_arms(0).await;
    let proxy = start_proxy(&arms.dir, |c| {
        c.clients.max_inflight_body_bytes = 1000;
        c.max_body_bytes = 900;
    })
    .await;
    let content = "x".repeat(800 - chat("chat-default").to_string().len() + "hello".len());
    let big = json!({"model": "chat-default", "messages": [{"role": "user", "content": content}]})
        .to_string();
    assert_eq!(big.len(), 800);
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 800\r\nconnection: close\r\n\r\n";
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&big.as_bytes()[..600]).await.unwrap();
    wait_until("600 body bytes held", || proxy.state.body_budget.in_use() == 600).await;

    let other = json!({"model": "chat-default", "messages": [{"role": "user", "content": "y".repeat(450)}]});
    let refused = post(&proxy.base_url(), "/chat/completions", &other, &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "proxy_overloaded");

    slow.write_all(&big.as_bytes()[600..]).await.unwrap();
    let received = read_until_closed(&mut slow, "slow request").await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    wait_until("body budget released", || proxy.state.body_budget.in_use() == 0).await;
    let served = post(&proxy.base_url(), "/chat/completions", &other, &[]).await;
    assert_eq!(served.status, 200, "{}", served.text());
    proxy.shutdown().await;
}

/// A chunked body (no length declared up front) over --max-body-bytes is 413 as soon as it
/// crosses the limit, and nothing reaches an upstream.
#[tokio::test]
async fn chunked_bodies_over_the_limit_get_413() {
    let arms = two_arms(0).await;
    let proxy = start_proxy(&arms.dir, |c| c.max_body_bytes = 1000).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let chunk = format!("190\r\n{}\r\n", "x".repeat(400));
    for _ in 0..3 {
        // The proxy may answer and close before the last chunk: later writes may fail.
        let _ = stream.write_all(chunk.as_bytes()).await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let received = read_until_closed(&mut stream, "chunked body over the limit").await;
    assert!(received.starts_with("HTTP/1.1 413"), "{received}");
    assert!(received.contains("request_too_large"), "{received}");
    assert_eq!(arms.stable.request_count() + arms.canary.request_count(), 0);
    assert_eq!(proxy.state.body_budget.in_use(), 0);
    proxy.shutdown().await;
}
