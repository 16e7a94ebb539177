//! Forwarding: arm choice, body rewrite, credentials, errors, retries and fallback.

use std::time::Duration;

use modelrollout_mockllm::MockConfig;
use modelrollout_proxy::split;
use serde_json::{Value, json};

use crate::support::*;

/// At weight 0 everything goes to stable, at 100 to canary; only `model` changes in the body
/// and every response names its track.
#[tokio::test]
async fn routes_by_weight_and_rewrites_only_model() {
    let TwoArms { stable, canary, dir } = two_arms(0).await;
    let proxy = start_proxy(&dir, |_| {}).await;
    let body = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],
  "model" : "chat-default", "temperature": 0.70, "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
  "x_unknown": {"nested": [1, 2.50, null]}, "user": "u-1"}"#;
    let expected_upstream = body.replace("\"chat-default\"", "\"stable-model\"");
    let answer = send(
        "POST",
        &format!("{}/chat/completions", proxy.base_url()),
        body.to_owned(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.track(), "stable");
    assert_eq!(answer.json()["model"], STABLE_MODEL);
    let recorded = stable.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(std::str::from_utf8(&recorded[0].body).unwrap(), expected_upstream);
    assert_eq!(canary.request_count(), 0);

    dir.write_json(
        "chat.json",
        &document("chat", "chat-default", &stable.base_url(), &canary.base_url(), 100),
    );
    wait_for_weight(&proxy, "chat-default", 100).await;
    for path in ["/chat/completions", "/completions", "/embeddings", "/responses"] {
        let body = json!({"model": "chat-default", "input": "x", "prompt": "x",
                          "messages": [{"role": "user", "content": "x"}]});
        let answer = post(&proxy.base_url(), path, &body, &[]).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        assert_eq!(answer.track(), "canary", "{path}");
    }
    let models: Vec<Value> =
        canary.requests().iter().map(|r| r.body_json().unwrap()["model"].clone()).collect();
    assert_eq!(models, vec![json!(CANARY_MODEL); 4]);
    proxy.shutdown().await;
}

/// At 50 % each sticky key lands on the arm the documented hash predicts, every time; the
/// header wins over the body field.
#[tokio::test]
async fn sticky_split_follows_the_documented_hash() {
    let arms = two_arms(50).await;
    let proxy = start_proxy(&arms.dir, |_| {}).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..30 {
        let session = format!("session-{i}");
        let expected = split::track_for(split::bucket(NAMESPACE, "chat", session.as_bytes()), 50);
        seen.insert(expected);
        for _ in 0..2 {
            let mut body = chat("chat-default");
            body["user"] = json!("ignored-because-the-header-wins");
            let answer =
                post(&proxy.base_url(), "/chat/completions", &body, &[("X-Session-ID", &session)])
                    .await;
            assert_eq!(answer.track(), expected.as_str(), "{session}");
        }
        let mut body = chat("chat-default");
        body["user"] = json!(session);
        let answer = post(&proxy.base_url(), "/chat/completions", &body, &[]).await;
        assert_eq!(answer.track(), expected.as_str(), "user {session}");
    }
    assert_eq!(seen.len(), 2, "30 sessions at 50 % should hit both arms");
    proxy.shutdown().await;
}

/// The arm's credential file becomes `Authorization: Bearer …` (replacing the caller's keys), a
/// rotated file is picked up; an arm without a credential sends no key at all unless it passes
/// the caller's through (passCallerAuthorization).
#[tokio::test]
async fn credentials_are_injected_rotated_or_passed_through() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let credentials = tempfile::tempdir().unwrap();
    std::fs::create_dir(credentials.path().join("relay")).unwrap();
    std::fs::write(credentials.path().join("relay/api-key"), "sk-canary-1\n").unwrap();
    let dir = RoutingDir::new();
    let mut doc = document("chat", "chat-default", &stable.base_url(), &canary.base_url(), 100);
    doc["canary"]["credential"] = json!("relay/api-key");
    dir.write_json("chat.json", &doc);
    let credentials_dir = credentials.path().to_owned();
    let proxy = start_proxy(&dir, |c| {
        c.credentials_dir = credentials_dir;
        c.credentials_refresh = Duration::ZERO;
    })
    .await;
    let caller = [("authorization", "Bearer caller-key"), ("x-api-key", "caller-key")];
    post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &caller).await;
    std::fs::write(credentials.path().join("relay/api-key"), "sk-canary-2").unwrap();
    post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &caller).await;
    let seen: Vec<String> = canary
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["Bearer sk-canary-1", "Bearer sk-canary-2"]);
    assert!(canary.requests().iter().all(|r| !r.headers.contains_key("x-api-key")));

    doc["canaryWeight"] = json!(0);
    dir.write_json("chat.json", &doc);
    wait_for_weight(&proxy, "chat-default", 0).await;
    post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &caller).await;
    let headers = &stable.requests()[0].headers;
    assert!(!headers.contains_key("authorization") && !headers.contains_key("x-api-key"));

    doc["stable"]["passCallerAuthorization"] = json!(true);
    doc["generation"] = json!(2);
    dir.write_json("chat.json", &doc);
    wait_until("pass-through enabled", || {
        proxy.state.table.load().route("chat-default").is_some_and(|r| r.document.generation == 2)
    })
    .await;
    post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &caller).await;
    assert_eq!(stable.requests()[1].headers["authorization"], "Bearer caller-key");
    assert_eq!(stable.requests()[1].headers["x-api-key"], "caller-key");
    proxy.shutdown().await;
}

/// A missing credential file is a generic 500 with a request id (the path goes to the log only),
/// counted as `reason="config"`, not as a connect error.
#[tokio::test]
async fn missing_credential_is_500_without_the_path() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let credentials = tempfile::tempdir().unwrap();
    let dir = RoutingDir::new();
    let mut doc = document("chat", "chat-default", &stable.base_url(), &canary.base_url(), 100);
    doc["canary"]["credential"] = json!("relay/api-key");
    dir.write_json("chat.json", &doc);
    let credentials_dir = credentials.path().to_owned();
    let proxy = start_proxy(&dir, |c| c.credentials_dir = credentials_dir).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 500);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "proxy_configuration_error");
    let message = error["message"].as_str().unwrap();
    assert!(!message.contains(&credentials.path().display().to_string()), "{error}");
    assert!(!message.contains("relay/api-key") && !message.contains("relay"), "{error}");
    assert!(message.contains("request id "), "{error}");
    assert_eq!(canary.request_count(), 0);
    let text = metrics_text(&proxy).await;
    assert_eq!(requests(&text, true, "config"), 1.0);
    assert_eq!(requests(&text, true, "connect"), 0.0);
    proxy.shutdown().await;
}

/// Bad requests get OpenAI-style errors with the documented statuses and codes.
#[tokio::test]
async fn request_errors_are_openai_shaped() {
    let TwoArms { stable, canary, dir } = two_arms(0).await;
    dir.write_json(
        "embed.json",
        &document("embed", "embed-default", &stable.base_url(), &canary.base_url(), 0),
    );
    let proxy = start_proxy(&dir, |c| c.max_body_bytes = 4096).await;
    let base = proxy.base_url();
    let url = format!("{base}/chat/completions");
    let big = json!({"model": "chat-default", "messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string();
    let json_header = [("content-type", "application/json")];
    let table: Vec<(Answer, u16, &str)> = vec![
        (send("POST", &url, "{\"model\": ", &json_header).await, 400, "invalid_json"),
        (send("POST", &url, "[1]", &json_header).await, 400, "invalid_json"),
        (send("POST", &url, "{\"messages\": []}", &json_header).await, 400, "missing_model"),
        (send("POST", &url, "{\"model\": \"gpt-9\"}", &json_header).await, 404, "model_not_found"),
        (send("POST", &url, big, &json_header).await, 413, "request_too_large"),
        (send("GET", &url, "", &[]).await, 405, "method_not_allowed"),
        (send("GET", &format!("{base}/models/gpt-9"), "", &[]).await, 404, "model_not_found"),
        (send("GET", &format!("http://{}/other", proxy.addr), "", &[]).await, 404, "unknown_url"),
        (send("GET", &format!("{base}/files"), "", &[]).await, 400, "ambiguous_route"),
        (send("GET", &format!("{base}/../admin"), "", &[]).await, 400, "invalid_path"),
        (
            send("GET", &format!("{base}/files/%2e%2e/%2E%2E/admin"), "", &[]).await,
            400,
            "invalid_path",
        ),
        (send("GET", &format!("{base}/files%2F..%2Fadmin"), "", &[]).await, 400, "invalid_path"),
        (send("GET", &format!("{base}/internal/debug"), "", &[]).await, 404, "unknown_url"),
        (send("PUT", &format!("{base}/files"), "", &[]).await, 405, "method_not_allowed"),
    ];
    for (answer, status, code) in table {
        assert_eq!(answer.status, status, "{code}: {}", answer.text());
        let error = &answer.json()["error"];
        assert_eq!(error["code"], code, "{error}");
        assert!(error["type"].is_string() && error["message"].is_string(), "{error}");
    }
    let not_found = send("POST", &url, "{\"model\": \"gpt-9\"}", &json_header).await;
    let message = not_found.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("chat-default, embed-default"), "{message}");
    assert_eq!(stable.request_count() + canary.request_count(), 0);
    proxy.shutdown().await;
}

/// Upstream 4xx and 5xx come back with their status and body; 500 is not retried.
#[tokio::test]
async fn upstream_errors_pass_through() {
    let TwoArms { stable, canary: _canary, dir } = two_arms(0).await;
    let proxy = start_proxy(&dir, |_| {}).await;
    for (status, reason) in [(400u16, "upstream_4xx"), (500, "upstream_5xx")] {
        let before = stable.request_count();
        stable.set_config(MockConfig {
            error_rate: 1.0,
            error_status: status,
            ..MockConfig::default()
        });
        let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
        assert_eq!(answer.status, status);
        assert_eq!(answer.track(), "stable");
        assert!(answer.json()["error"]["message"].is_string(), "{}", answer.text());
        assert_eq!(stable.request_count() - before, 1, "status {status} is not retried");
        assert_eq!(requests(&metrics_text(&proxy).await, false, reason), 1.0);
    }
    proxy.shutdown().await;
}

/// 429 and 503 are retried once (the default) before the answer is passed on; a Retry-After
/// longer than --retry-max-wait is passed to the client without retrying.
#[tokio::test]
async fn retries_429_and_503_once() {
    let TwoArms { stable, canary: _canary, dir } = two_arms(0).await;
    let proxy = start_proxy(&dir, |c| c.forward.retry_max_wait = Duration::from_secs(2)).await;
    let table = [
        (429u16, Some(Duration::from_secs(1)), 2usize, "rate_limited"),
        (503, None, 2, "upstream_5xx"),
        (503, Some(Duration::from_secs(30)), 1, "upstream_5xx"),
    ];
    for (status, retry_after, attempts, reason) in table {
        let sent_before = stable.request_count();
        let before = requests(&metrics_text(&proxy).await, false, reason);
        stable.set_config(MockConfig {
            error_rate: 1.0,
            error_status: status,
            retry_after,
            ..MockConfig::default()
        });
        let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
        assert_eq!(answer.status, status);
        assert_eq!(
            stable.request_count() - sent_before,
            attempts,
            "{status} retry-after {retry_after:?}"
        );
        let after = requests(&metrics_text(&proxy).await, false, reason);
        assert_eq!(after - before, attempts as f64, "every attempt is counted");
    }
    proxy.shutdown().await;
}

/// An unreachable upstream is retried once, then answered 502 and counted as `connect`.
#[tokio::test]
async fn connect_errors_retry_then_502() {
    let stable = mock(MockConfig::default()).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let dir = chat_dir(&stable.base_url(), &dead, 100);
    let proxy = start_proxy(&dir, |_| {}).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.track(), "canary");
    assert_eq!(answer.json()["error"]["code"], "upstream_unreachable");
    assert_eq!(requests(&metrics_text(&proxy).await, true, "connect"), 2.0);
    proxy.shutdown().await;
}

/// With --fallback-to-stable a canary that refused the request (503 after its retry) is
/// answered by stable, and the canary failures are still counted; a canary 500 may have
/// executed the request, so it reaches the client unless at-least-once is asked for; without
/// fallback the canary's error reaches the client.
#[tokio::test]
async fn fallback_to_stable_only_when_the_canary_did_not_execute() {
    let stable = mock(MockConfig::default()).await;
    let canary =
        mock(MockConfig { error_rate: 1.0, error_status: 503, ..MockConfig::default() }).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 100);
    let proxy = start_proxy(&dir, |c| c.forward.fallback_to_stable = true).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.track(), "stable");
    assert_eq!(answer.json()["model"], STABLE_MODEL);
    let text = metrics_text(&proxy).await;
    assert_eq!(requests(&text, true, "upstream_5xx"), 2.0);
    assert_eq!(requests(&text, false, "ok"), 1.0);

    canary.set_config(MockConfig { error_rate: 1.0, error_status: 500, ..MockConfig::default() });
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!((answer.status.as_u16(), answer.track()), (500, "canary"), "{}", answer.text());
    assert_eq!(stable.request_count(), 1, "stable did not repeat what the canary may have done");
    proxy.shutdown().await;

    let proxy = start_proxy(&dir, |c| {
        c.forward.fallback_to_stable = true;
        c.forward.fallback_at_least_once = true;
    })
    .await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!((answer.status.as_u16(), answer.track()), (200, "stable"), "{}", answer.text());
    proxy.shutdown().await;

    let proxy = start_proxy(&dir, |_| {}).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.track(), "canary");
    proxy.shutdown().await;
}

/// A canary that timed out may have executed the request: 504 by default, stable's answer only
/// with at-least-once fallback; the timeout is counted either way.
#[tokio::test]
async fn fallback_after_a_timeout_only_at_least_once() {
    let stable = mock(MockConfig::default()).await;
    let (held, _arrivals) = held_upstream().await;
    let dir = chat_dir(&stable.base_url(), &held, 100);
    for at_least_once in [false, true] {
        let proxy = start_proxy(&dir, |c| {
            c.forward.fallback_to_stable = true;
            c.forward.fallback_at_least_once = at_least_once;
            c.forward.first_byte_timeout = Duration::from_millis(200);
        })
        .await;
        let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
        let expected = if at_least_once { (200, "stable") } else { (504, "canary") };
        assert_eq!((answer.status.as_u16(), answer.track()), expected, "{}", answer.text());
        assert_eq!(requests(&metrics_text(&proxy).await, true, "timeout"), 1.0);
        proxy.shutdown().await;
    }
    assert_eq!(stable.request_count(), 1);
}

/// No response headers within --first-byte-timeout: 504, counted as `timeout`.
#[tokio::test]
async fn first_byte_timeout_is_504() {
    let stable =
        mock(MockConfig { latency: Duration::from_secs(30), ..MockConfig::default() }).await;
    let canary = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 0);
    let proxy =
        start_proxy(&dir, |c| c.forward.first_byte_timeout = Duration::from_millis(200)).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"]["code"], "upstream_timeout");
    assert_eq!(requests(&metrics_text(&proxy).await, false, "timeout"), 1.0);
    proxy.shutdown().await;
}

/// Other /v1 paths go unchanged to stable: of the only rollout, or of the one named by
/// x-modelrollout-model when several are served.
#[tokio::test]
async fn other_paths_pass_through_to_stable() {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let other_stable = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), 100);
    let proxy = start_proxy(&dir, |_| {}).await;
    let answer = send("GET", &format!("{}/models?limit=5", proxy.base_url()), "", &[]).await;
    assert_eq!(answer.status, 200);
    let answer =
        send("GET", &format!("{}/files?purpose=batch&limit=2", proxy.base_url()), "", &[]).await;
    assert_eq!(answer.track(), "stable");
    let recorded = stable.requests();
    assert_eq!(recorded.last().unwrap().method, "GET");
    assert_eq!(recorded.last().unwrap().path, "/v1/files?purpose=batch&limit=2");
    let answer = post(&proxy.base_url(), "/moderations", &json!({"input": "x"}), &[]).await;
    assert_eq!(answer.track(), "stable");
    let recorded = stable.requests();
    assert_eq!(recorded.last().unwrap().path, "/v1/moderations");
    assert_eq!(recorded.last().unwrap().body_json().unwrap(), json!({"input": "x"}));
    assert_eq!(canary.request_count(), 0);

    dir.write_json(
        "embed.json",
        &document("embed", "embed-default", &other_stable.base_url(), &canary.base_url(), 0),
    );
    wait_until("two aliases", || proxy.state.table.load().aliases().len() == 2).await;
    let answer = post(
        &proxy.base_url(),
        "/moderations",
        &json!({"input": "y"}),
        &[("x-modelrollout-model", "embed-default")],
    )
    .await;
    assert_eq!(answer.track(), "stable");
    assert_eq!(other_stable.requests().last().unwrap().path, "/v1/moderations");
    assert!(!other_stable.requests().last().unwrap().headers.contains_key("x-modelrollout-model"));
    proxy.shutdown().await;
}

/// HTTP/2 (h2c prior knowledge) clients are served like HTTP/1.1 ones.
#[tokio::test]
async fn serves_http2_clients() {
    let arms = two_arms(0).await;
    let proxy = start_proxy(&arms.dir, |_| {}).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::post(format!("{}/chat/completions", proxy.base_url()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(chat("chat-default").to_string())))
        .unwrap();
    let response = h2.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-modelrollout-track"], "stable");
    proxy.shutdown().await;
}
