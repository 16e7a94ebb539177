//! Component tests: a real `MockServer` on loopback, driven by a real hyper client, one knob at
//! a time. Every wait is bounded; timing checks are lower bounds that the sleeps guarantee.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelrollout_mockllm::openai::content_text;
use modelrollout_mockllm::{MockConfig, MockServer};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Upper bound for any single step, so a bug fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(10);

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap()
}

/// Sends one request on a fresh HTTP/1.1 connection and returns the response head and body.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> http::Response<Incoming> {
    let stream = timeout(STEP, TcpStream::connect(addr)).await.unwrap().unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test")
        .body(Full::new(body))
        .unwrap();
    timeout(STEP, sender.send_request(request)).await.unwrap().unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> http::Response<Incoming> {
    send(addr, Method::POST, path, Some(body)).await
}

async fn json_body(response: http::Response<Incoming>) -> (StatusCode, HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let bytes = timeout(STEP, body.collect()).await.unwrap().unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(&bytes)));
    (parts.status, parts.headers, value)
}

/// The body frames of a response with their arrival times, and how the body ended.
struct Frames {
    frames: Vec<(Instant, Bytes)>,
    ended_with_error: bool,
}

impl Frames {
    fn text(&self) -> String {
        self.frames.iter().map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned()).collect()
    }

    /// The `data:` payloads of the SSE events, in order.
    fn data_lines(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
            .map(str::to_owned)
            .collect()
    }
}

async fn read_frames(response: http::Response<Incoming>) -> Frames {
    let mut body = response.into_body();
    let mut frames = vec![];
    loop {
        match timeout(STEP, body.frame()).await.unwrap() {
            None => return Frames { frames, ended_with_error: false },
            Some(Err(_)) => return Frames { frames, ended_with_error: true },
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    frames.push((Instant::now(), data));
                }
            }
        }
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "user": "u-1"})
}

/// A plain chat completion echoes the request's model, reports the configured usage and is
/// recorded with method, path, headers and body.
#[tokio::test]
async fn chat_completion_echoes_model_and_is_recorded() {
    let server =
        start(MockConfig { prompt_tokens: 3, completion_tokens: 4, ..Default::default() }).await;
    let (status, headers, body) =
        json_body(post(server.addr(), "/v1/chat/completions", chat("gpt-4.1")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4.1");
    assert_eq!(body["choices"][0]["message"]["content"], content_text(8));
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );

    let recorded = server.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(server.request_count(), 1);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].headers["authorization"], "Bearer sk-test");
    assert_eq!(recorded[0].body_json().unwrap(), chat("gpt-4.1"));
}

/// The `model` knob overrides what the request asked for, in answers and in the models list.
#[tokio::test]
async fn model_knob_overrides_the_request() {
    let server =
        start(MockConfig { model: Some("claude-sonnet-4.5".into()), ..Default::default() }).await;
    let (_, _, body) =
        json_body(post(server.addr(), "/v1/chat/completions", chat("x")).await).await;
    assert_eq!(body["model"], "claude-sonnet-4.5");
    let (status, _, models) =
        json_body(send(server.addr(), Method::GET, "/v1/models", None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "claude-sonnet-4.5");
    let (status, _, model) =
        json_body(send(server.addr(), Method::GET, "/v1/models/claude-sonnet-4.5", None).await)
            .await;
    assert_eq!((status, &model["object"]), (StatusCode::OK, &json!("model")));
    let (status, _, missing) =
        json_body(send(server.addr(), Method::GET, "/v1/models/gpt-2", None).await).await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("model_not_found"))
    );
}

/// A stream with include_usage: paced content chunks, a finish chunk, the usage chunk with
/// empty choices, then `data: [DONE]`; every chunk is its own frame, none held back.
#[tokio::test]
async fn chat_stream_is_paced_chunk_by_chunk_with_usage() {
    let ttft = Duration::from_millis(150);
    let gap = Duration::from_millis(60);
    let server = start(MockConfig {
        chunks: 4,
        time_to_first_token: ttft,
        inter_chunk_delay: gap,
        ..Default::default()
    })
    .await;
    let mut request = chat("gpt-4.1");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let sent = Instant::now();
    let response = post(server.addr(), "/v1/chat/completions", request).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let frames = read_frames(response).await;
    assert!(!frames.ended_with_error);

    let data = frames.data_lines();
    assert_eq!(data.len(), 4 + 3, "4 content, finish, usage, [DONE]: {data:?}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> =
        data[..6].iter().map(|line| serde_json::from_str(line).unwrap()).collect();
    let text: String = chunks[..4]
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, content_text(4));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["total_tokens"], 30);
    assert!(chunks[..5].iter().all(|chunk| chunk["usage"].is_null()));

    // Each content chunk arrives in a frame of its own, after its delay.
    assert!(frames.frames[0].0 - sent >= ttft, "first chunk before the TTFT");
    for index in 0..4 {
        let frame = String::from_utf8_lossy(&frames.frames[index].1).into_owned();
        assert_eq!(
            frame.matches("data: ").count(),
            1,
            "frame {index} holds more than one chunk: {frame}"
        );
        if index > 0 {
            assert!(
                frames.frames[index].0 - frames.frames[index - 1].0 >= gap,
                "chunk {index} early"
            );
        }
    }
}

/// Without include_usage a stream has no usage chunk and no `usage` keys.
#[tokio::test]
async fn chat_stream_without_usage_has_no_usage_chunk() {
    let server = start(MockConfig { chunks: 2, ..Default::default() }).await;
    let response =
        post(server.addr(), "/v1/chat/completions", json!({"model": "m", "stream": true})).await;
    let data = read_frames(response).await.data_lines();
    assert_eq!(data.len(), 2 + 2);
    assert_eq!(data[3], "[DONE]");
    assert!(data[..3].iter().all(|line| !line.contains("usage")), "{data:?}");
}

/// The abort knob cuts a stream half-way: some chunks arrive, then the connection drops
/// without a finish chunk or `[DONE]`.
#[tokio::test]
async fn abort_drops_the_connection_mid_stream() {
    let server = start(MockConfig { chunks: 6, abort_rate: 1.0, ..Default::default() }).await;
    let response =
        post(server.addr(), "/v1/chat/completions", json!({"model": "m", "stream": true})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let frames = read_frames(response).await;
    assert!(frames.ended_with_error, "the body must end in an error, not cleanly");
    let data = frames.data_lines();
    assert_eq!(data.len(), 3, "half of the content chunks: {data:?}");
    assert!(!frames.text().contains("[DONE]"));
    assert!(!frames.text().contains("finish_reason\":\"stop"));
}

/// Injected errors carry the configured status, an OpenAI error body and, for 429 and 503,
/// Retry-After in whole seconds rounded up.
#[tokio::test]
async fn injected_errors_have_status_body_and_retry_after() {
    let cases = [
        (429, Some(Duration::from_millis(1500)), Some("2"), "rate_limit_exceeded"),
        (503, Some(Duration::from_secs(3)), Some("3"), "service_unavailable"),
        (500, Some(Duration::from_secs(3)), None, ""),
        (429, None, None, "rate_limit_exceeded"),
    ];
    let server = start(MockConfig::default()).await;
    for (status, retry_after, expected_header, code) in cases {
        server.set_config(MockConfig {
            error_rate: 1.0,
            error_status: status,
            retry_after,
            ..Default::default()
        });
        let (got, headers, body) =
            json_body(post(server.addr(), "/v1/chat/completions", chat("m")).await).await;
        assert_eq!(got.as_u16(), status);
        assert_eq!(
            headers.get("retry-after").map(|value| value.to_str().unwrap()),
            expected_header,
            "{status}"
        );
        assert!(body["error"]["message"].as_str().unwrap().contains("injected"));
        if !code.is_empty() {
            assert_eq!(body["error"]["code"], code);
        }
    }
}

/// With a seed the error pattern is reproducible, and a 50 % rate gives both outcomes.
#[tokio::test]
async fn seeded_error_rate_is_reproducible() {
    let config =
        MockConfig { error_rate: 0.5, error_status: 503, seed: Some(42), ..Default::default() };
    let mut patterns = vec![];
    for _ in 0..2 {
        let server = start(config.clone()).await;
        let mut pattern = vec![];
        for _ in 0..40 {
            pattern.push(
                post(server.addr(), "/v1/embeddings", json!({"model": "e", "input": "x"}))
                    .await
                    .status(),
            );
        }
        patterns.push(pattern);
    }
    assert_eq!(patterns[0], patterns[1]);
    assert!(patterns[0].contains(&StatusCode::OK));
    assert!(patterns[0].contains(&StatusCode::SERVICE_UNAVAILABLE));
}

/// Latency delays the response by at least the configured time.
#[tokio::test]
async fn latency_delays_the_response() {
    let latency = Duration::from_millis(120);
    let server = start(MockConfig {
        latency,
        latency_jitter: Duration::from_millis(30),
        ..Default::default()
    })
    .await;
    let sent = Instant::now();
    let (status, _, _) = json_body(
        post(server.addr(), "/v1/completions", json!({"model": "m", "prompt": "p"})).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(sent.elapsed() >= latency);
}

/// The other endpoints answer with their OpenAI shapes.
#[tokio::test]
async fn completions_responses_and_embeddings_shapes() {
    let server = start(MockConfig { chunks: 2, ..Default::default() }).await;
    let addr = server.addr();
    let (_, _, completion) =
        json_body(post(addr, "/v1/completions", json!({"model": "m", "prompt": "p"})).await).await;
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(completion["choices"][0]["text"], "The quick ");

    let stream =
        post(addr, "/v1/completions", json!({"model": "m", "prompt": "p", "stream": true})).await;
    let data = read_frames(stream).await.data_lines();
    assert_eq!(data.last().unwrap(), "[DONE]");

    let (_, _, response) =
        json_body(post(addr, "/v1/responses", json!({"model": "m", "input": "hi"})).await).await;
    assert_eq!(response["object"], "response");
    assert_eq!(response["output"][0]["content"][0]["text"], "The quick ");

    let stream =
        post(addr, "/v1/responses", json!({"model": "m", "input": "hi", "stream": true})).await;
    let text = read_frames(stream).await.text();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(
        text.trim_end().lines().rev().nth(1).unwrap().starts_with("event: response.completed"),
        "{text}"
    );

    let (_, _, embeddings) = json_body(
        post(addr, "/v1/embeddings", json!({"model": "e", "input": ["a", "b"], "dimensions": 3}))
            .await,
    )
    .await;
    assert_eq!(embeddings["object"], "list");
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
    assert_eq!(embeddings["data"][0]["embedding"].as_array().unwrap().len(), 3);
}

/// Bad requests get OpenAI-style errors: invalid JSON 400, missing model 400, unknown path 404,
/// wrong method 405.
#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let server = start(MockConfig::default()).await;
    let addr = server.addr();
    let cases = [
        (Method::POST, "/v1/chat/completions", Some(json!("not an object")), 400, "JSON object"),
        (
            Method::POST,
            "/v1/chat/completions",
            Some(json!({"messages": []})),
            400,
            "model parameter",
        ),
        (Method::POST, "/v1/fine_tuning/jobs", Some(json!({})), 404, "does not serve"),
        (Method::GET, "/v1/chat/completions", None, 405, "takes POST"),
    ];
    for (method, path, body, status, message) in cases {
        let (got, _, error) = json_body(send(addr, method, path, body).await).await;
        assert_eq!(got.as_u16(), status, "{path}");
        let text = error["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{path}: {text}");
    }
}

/// `/control/config` reads, replaces (PUT) and merges (PATCH) the knobs, and refuses bad ones
/// naming the field; control and health requests are not recorded.
#[tokio::test]
async fn control_endpoint_changes_knobs_at_runtime() {
    let server = start(MockConfig::default()).await;
    let addr = server.addr();
    let (_, _, current) = json_body(send(addr, Method::GET, "/control/config", None).await).await;
    assert_eq!(current["latency"], "0s");

    let (status, _, _) = json_body(
        send(
            addr,
            Method::PUT,
            "/control/config",
            Some(json!({"errorRate": 1, "errorStatus": 429})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.config().error_status, 429);
    assert_eq!(
        post(addr, "/v1/chat/completions", chat("m")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let (status, _, merged) = json_body(
        send(addr, Method::PATCH, "/control/config", Some(json!({"errorRate": 0, "chunks": 3})))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((merged["errorStatus"].as_u64(), merged["chunks"].as_u64()), (Some(429), Some(3)));
    assert_eq!(post(addr, "/v1/chat/completions", chat("m")).await.status(), StatusCode::OK);

    let (status, _, error) =
        json_body(send(addr, Method::PUT, "/control/config", Some(json!({"abortRate": 2}))).await)
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["error"]["message"].as_str().unwrap().contains("abortRate"));
    let (status, _, error) =
        json_body(send(addr, Method::PUT, "/control/config", Some(json!({"latncy": "1s"}))).await)
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["error"]["message"].as_str().unwrap().contains("latncy"));
    let (status, _, error) = json_body(
        send(addr, Method::PUT, "/control/config", Some(json!({"latency": "1.5s"}))).await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("latency") && message.contains("e.g. 30s"), "{message}");

    let health = send(addr, Method::GET, "/healthz", None).await;
    assert_eq!(health.status(), StatusCode::OK);
    let (_, _, requests) =
        json_body(send(addr, Method::GET, "/control/requests", None).await).await;
    assert_eq!(requests["count"], 2, "only the two API calls are recorded");
    assert_eq!(requests["recorded"][0]["headers"]["authorization"], "<redacted>");
    assert_eq!(server.request_count(), 2);
}

/// Shutting the server down drops an in-flight stream.
#[tokio::test]
async fn shutdown_drops_open_streams() {
    let server =
        start(MockConfig { inter_chunk_delay: Duration::from_secs(30), ..Default::default() })
            .await;
    let response =
        post(server.addr(), "/v1/chat/completions", json!({"model": "m", "stream": true})).await;
    let mut body = response.into_body();
    let first = timeout(STEP, body.frame()).await.unwrap();
    assert!(matches!(first, Some(Ok(_))));
    timeout(STEP, server.shutdown()).await.unwrap();
    let next = timeout(STEP, body.frame()).await.unwrap();
    assert!(matches!(next, None | Some(Err(_))), "the stream must end once the server is gone");
}

/// HTTP/2 with prior knowledge (h2c) is served too, as some proxies speak it upstream.
#[tokio::test]
async fn serves_http2_prior_knowledge() {
    let server = start(MockConfig::default()).await;
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post(format!("http://{}/v1/chat/completions", server.addr()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("h2").to_string())))
        .unwrap();
    let response = timeout(STEP, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (status, _, body) = json_body(response).await;
    assert_eq!((status, &body["model"]), (StatusCode::OK, &json!("h2")));
}

/// `apiKey` refuses requests without that bearer key (401 `invalid_api_key`), is never shown by
/// `GET /control/config` and survives a PATCH of other knobs; `listedModels` is what
/// `GET /v1/models` lists. The knobs a preflight test needs.
#[tokio::test]
async fn api_key_and_listed_models() {
    let server = start(MockConfig {
        api_key: Some("sk-test".into()),
        listed_models: Some(vec!["claude-sonnet-4-5".into(), "claude-opus-4".into()]),
        ..MockConfig::default()
    })
    .await;
    let addr = server.addr();
    let (status, _, models) = json_body(send(addr, Method::GET, "/v1/models", None).await).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> =
        models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["claude-sonnet-4-5", "claude-opus-4"]);

    server.set_config(MockConfig { api_key: Some("sk-other".into()), ..server.config() });
    let (status, _, error) = json_body(post(addr, "/v1/chat/completions", chat("m")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"]["code"], "invalid_api_key");
    assert_eq!(error["error"]["message"], "Incorrect API key provided.");

    let (_, _, shown) = json_body(send(addr, Method::GET, "/control/config", None).await).await;
    assert!(shown.get("apiKey").is_none(), "the key is write-only: {shown}");
    let patch = Some(json!({"errorRate": 0}));
    let (status, _, _) = json_body(send(addr, Method::PATCH, "/control/config", patch).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.config().api_key.as_deref(), Some("sk-other"));
    let (status, _, _) = json_body(send(addr, Method::GET, "/v1/models", None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
