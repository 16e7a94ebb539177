//! Streaming: chunks pass through unbuffered, metrics watch them, stalls, aborts and client
//! hang-ups are handled.

use std::time::Duration;

use modelrollout_mockllm::MockConfig;

use crate::support::*;

/// Each upstream chunk reaches the client while the upstream still holds the rest back: the
/// proxy does not buffer. The first-token histogram and the usage chunk's tokens are recorded.
#[tokio::test]
async fn sse_chunks_flow_through_one_by_one() {
    let mut upstream = ScriptedUpstream::start().await;
    let stable = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &upstream.base_url(), 100);
    let proxy = start_proxy(&dir, |_| {}).await;
    let url = format!("{}/chat/completions", proxy.base_url());
    let client_task =
        tokio::spawn(async move { open_stream(&url, &chat_stream("chat-default"), &[]).await });
    let scripted = upstream.next_request().await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&scripted.body).unwrap()["model"],
        CANARY_MODEL
    );
    let response = client_task.await.unwrap();
    assert_eq!(response.headers()["x-modelrollout-track"], "canary");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    for i in 0..5 {
        let event =
            format!(r#"{{"choices":[{{"delta":{{"content":"piece {i}"}}}}],"usage":null}}"#);
        scripted.chunks.send(sse(&event)).await.unwrap();
        // The upstream has sent nothing beyond this chunk, so receiving it proves it was not held.
        let chunk = next_chunk(&mut body).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&chunk).contains(&format!("piece {i}")));
    }
    scripted
        .chunks
        .send(sse(r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":13,"total_tokens":20}}"#))
        .await
        .unwrap();
    scripted.chunks.send(sse("[DONE]")).await.unwrap();
    drop(scripted);
    let (rest, ended) = read_stream(body).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert!(rest.contains("[DONE]"));
    let text = metrics_text(&proxy).await;
    assert_eq!(requests(&text, true, "ok"), 1.0);
    let labels = [("is_canary", "true"), ("type", "prompt")];
    assert_eq!(metric(&text, "gray_release_tokens_total", &labels), 7.0);
    let labels = [("is_canary", "true"), ("type", "completion")];
    assert_eq!(metric(&text, "gray_release_tokens_total", &labels), 13.0);
    assert_eq!(
        metric(&text, "gray_release_time_to_first_token_seconds_count", &[("is_canary", "true")]),
        1.0
    );
    proxy.shutdown().await;
}

/// Streams and plain answers from mockllm count tokens from `usage` (the stream's final usage
/// chunk included) and observe durations; plain answers record no first-token time.
#[tokio::test]
async fn usage_and_durations_from_mockllm() {
    let stable = mock(MockConfig {
        chunks: 4,
        prompt_tokens: 11,
        completion_tokens: 22,
        ..MockConfig::default()
    })
    .await;
    let canary = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 0);
    let proxy = start_proxy(&dir, |_| {}).await;
    let response = open_stream(
        &format!("{}/chat/completions", proxy.base_url()),
        &chat_stream("chat-default"),
        &[],
    )
    .await;
    let (text, ended) = read_stream(response.into_body()).await;
    assert!(ended.is_ok() && text.contains("[DONE]"), "{text}");
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 200);
    let text = metrics_text(&proxy).await;
    let tokens = |kind| {
        metric(&text, "gray_release_tokens_total", &[("is_canary", "false"), ("type", kind)])
    };
    assert_eq!((tokens("prompt"), tokens("completion")), (22.0, 44.0));
    assert_eq!(requests(&text, false, "ok"), 2.0);
    assert_eq!(
        metric(&text, "gray_release_request_duration_seconds_count", &[("is_canary", "false")]),
        2.0
    );
    assert_eq!(
        metric(&text, "gray_release_time_to_first_token_seconds_count", &[("is_canary", "false")]),
        1.0
    );
    proxy.shutdown().await;
}

/// An upstream that cuts its stream mid-way gives the client a broken stream (never a clean
/// end) and counts status="error", reason="stream_aborted".
#[tokio::test]
async fn aborted_stream_is_counted_stream_aborted() {
    let stable = mock(MockConfig { abort_rate: 1.0, chunks: 6, ..MockConfig::default() }).await;
    let canary = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 0);
    let proxy = start_proxy(&dir, |_| {}).await;
    let response = open_stream(
        &format!("{}/chat/completions", proxy.base_url()),
        &chat_stream("chat-default"),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let (text, ended) = read_stream(response.into_body()).await;
    assert!(ended.is_err(), "the client must see the cut, got a clean end after {text:?}");
    // The mock cuts half-way: the events before the cut reach the client first.
    assert!(text.matches("data: {").count() >= 3, "events before the cut are lost: {text:?}");
    assert!(!text.contains("[DONE]"));
    let metrics = metrics_text(&proxy).await;
    let labels = [("is_canary", "false"), ("status", "error"), ("reason", "stream_aborted")];
    assert_eq!(metric(&metrics, "gray_release_requests_total", &labels), 1.0);
    proxy.shutdown().await;
}

/// A stream that stalls longer than --idle-timeout is cut and counted as `timeout`. The stall
/// runs on tokio's paused clock (proxy, upstream and client share this runtime): once nothing is
/// in flight, time jumps to the proxy's idle deadline, so the test waits for nothing real and a
/// loaded machine cannot make the cut come early.
#[tokio::test]
async fn idle_stream_is_cut_after_idle_timeout() {
    let mut upstream = ScriptedUpstream::start().await;
    let stable = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &upstream.base_url(), 100);
    // Shorter than the helpers' own bound, so the paused clock reaches this deadline first.
    let idle_timeout = HELPER_BOUND / 2;
    let proxy = start_proxy(&dir, |c| c.forward.idle_timeout = idle_timeout).await;
    let url = format!("{}/chat/completions", proxy.base_url());
    let client_task =
        tokio::spawn(async move { open_stream(&url, &chat_stream("chat-default"), &[]).await });
    let scripted = upstream.next_request().await;
    scripted.chunks.send(sse(r#"{"choices":[{"delta":{"content":"a"}}]}"#)).await.unwrap();
    let mut body = client_task.await.unwrap().into_body();
    let first = next_chunk(&mut body).await.expect("a first chunk").expect("not cut yet");
    assert!(String::from_utf8_lossy(&first).contains("\"a\""));
    tokio::time::pause();
    let paused_at = tokio::time::Instant::now();
    let (_, ended) = read_stream(body).await;
    assert!(ended.is_err(), "stalled stream must be cut");
    // The idle deadline (HELPER_BOUND / 2) comes long before the helpers' bound; tokio's timer
    // rounds it up to the next millisecond.
    let waited = paused_at.elapsed();
    assert!(
        waited <= idle_timeout + Duration::from_millis(1),
        "cut by the idle timeout, not a helper bound: {waited:?} > {idle_timeout:?}"
    );
    assert_eq!(requests(&metrics_text(&proxy).await, true, "timeout"), 1.0);
    drop(scripted);
    proxy.shutdown().await;
}

/// A client hanging up mid-stream closes the upstream request (its body sender sees the
/// receiver gone) and is counted as a client cancellation, not an upstream error.
#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let mut upstream = ScriptedUpstream::start().await;
    let stable = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &upstream.base_url(), 100);
    let proxy = start_proxy(&dir, |_| {}).await;
    let url = format!("{}/chat/completions", proxy.base_url());
    let client_task =
        tokio::spawn(async move { open_stream(&url, &chat_stream("chat-default"), &[]).await });
    let scripted = upstream.next_request().await;
    scripted.chunks.send(sse(r#"{"choices":[{"delta":{"content":"a"}}]}"#)).await.unwrap();
    let mut body = client_task.await.unwrap().into_body();
    assert!(next_chunk(&mut body).await.unwrap().is_ok());
    drop(body);
    tokio::time::timeout(Duration::from_secs(10), scripted.chunks.closed())
        .await
        .expect("the upstream stream is closed after the client left");
    let text = metrics_text(&proxy).await;
    assert_eq!(metric(&text, "gray_release_client_cancelled_total", &[("is_canary", "true")]), 1.0);
    assert_eq!(requests(&text, true, "stream_aborted"), 0.0);
    proxy.shutdown().await;
}

/// A client hanging up while the upstream has not answered yet cancels the upstream request.
#[tokio::test]
async fn client_disconnect_before_the_answer_cancels_upstream() {
    use tokio::io::AsyncWriteExt;
    let (held, mut arrivals) = held_upstream().await;
    let stable = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &held, 100);
    let proxy = start_proxy(&dir, |_| {}).await;
    let body = chat("chat-default").to_string();
    let mut connection = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    connection.write_all(body.as_bytes()).await.unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("request reaches the upstream")
        .unwrap();
    drop(connection);
    let outcome = tokio::time::timeout(Duration::from_secs(10), cancelled)
        .await
        .expect("the upstream request is cancelled after the client left");
    assert!(outcome.is_err(), "cancelled, not answered");
    proxy.shutdown().await;
}

/// A burst of events the upstream sends at once reaches the client byte for byte and in order
/// (the proxy may merge them into fewer writes), usage in the burst is counted, and events sent
/// just before the upstream cuts the stream still reach the client ahead of the cut.
#[tokio::test]
async fn burst_of_events_arrives_intact_before_end_or_cut() {
    let mut upstream = ScriptedUpstream::start().await;
    let stable = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &upstream.base_url(), 100);
    let proxy = start_proxy(&dir, |_| {}).await;
    let url = format!("{}/chat/completions", proxy.base_url());
    for cut in [false, true] {
        let client_url = url.clone();
        let client_task = tokio::spawn(async move {
            let response = open_stream(&client_url, &chat_stream("chat-default"), &[]).await;
            read_stream(response.into_body()).await
        });
        let scripted = upstream.next_request().await;
        let mut expected = String::new();
        let mut events: Vec<String> = (0..300)
            .map(|i| {
                format!(r#"{{"choices":[{{"delta":{{"content":"piece {i}"}}}}],"usage":null}}"#)
            })
            .collect();
        events.push(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":300,"total_tokens":303}}"#
                .to_owned(),
        );
        for event in &events {
            expected.push_str(&format!("data: {event}\n\n"));
            scripted.chunks.send(sse(event)).await.unwrap();
        }
        if cut {
            let error = std::io::Error::other("upstream cut");
            scripted.chunks.send(Err(error)).await.unwrap();
        } else {
            expected.push_str("data: [DONE]\n\n");
            scripted.chunks.send(sse("[DONE]")).await.unwrap();
        }
        drop(scripted);
        let (text, ended) = client_task.await.unwrap();
        assert_eq!(ended.is_err(), cut, "cut={cut}: {ended:?}");
        if cut {
            // What the proxy had read before the cut goes out first; nothing is invented.
            assert!(expected.starts_with(&text), "cut={cut}: bytes differ from what was sent");
        } else {
            assert_eq!(text, expected);
            let metrics = metrics_text(&proxy).await;
            let labels = [("is_canary", "true"), ("type", "completion")];
            assert_eq!(metric(&metrics, "gray_release_tokens_total", &labels), 300.0);
        }
    }
    let text = metrics_text(&proxy).await;
    assert_eq!(requests(&text, true, "ok"), 1.0);
    assert_eq!(requests(&text, true, "stream_aborted"), 1.0);
    proxy.shutdown().await;
}
