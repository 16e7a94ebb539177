//! Test support: mock upstreams, a routing directory written atomically, an in-process proxy,
//! a plain HTTP client and metric lookups. Everything runs on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelrollout_mockllm::{MockConfig, MockServer};
use modelrollout_proxy::{ProxyConfig, ProxyHandle};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Namespace used in every test routing document.
pub const NAMESPACE: &str = "test";
/// Upstream model of the stable arm.
pub const STABLE_MODEL: &str = "stable-model";
/// Upstream model of the canary arm.
pub const CANARY_MODEL: &str = "canary-model";

/// Starts a mockllm upstream on a free loopback port.
pub async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("start mockllm")
}

/// A routing document for `rollout` serving `alias`, between two base URLs.
pub fn document(rollout: &str, alias: &str, stable: &str, canary: &str, weight: u32) -> Value {
    json!({
        "version": 1, "rollout": rollout, "namespace": NAMESPACE, "generation": 1, "model": alias,
        "stable": {"model": STABLE_MODEL, "endpoint": stable},
        "canary": {"model": CANARY_MODEL, "endpoint": canary},
        "canaryWeight": weight,
        "stickiness": {"headers": ["X-Session-ID"], "bodyField": "user"},
        "phase": "Progressing"
    })
}

/// A temporary routing directory whose files are replaced atomically (write, then rename).
#[derive(Debug)]
pub struct RoutingDir {
    dir: tempfile::TempDir,
}

impl RoutingDir {
    pub fn new() -> Self {
        RoutingDir { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, key: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{key}.tmp"));
        std::fs::write(&tmp, content).expect("write routing document");
        std::fs::rename(&tmp, self.dir.path().join(key)).expect("rename routing document");
    }

    pub fn write_json(&self, key: &str, value: &Value) {
        self.write(key, &value.to_string());
    }

    pub fn remove(&self, key: &str) {
        std::fs::remove_file(self.dir.path().join(key)).expect("remove routing document");
    }
}

/// Starts the proxy in-process on free ports, reading `dir`, after `tweak` adjusted the config.
pub async fn start_proxy(dir: &RoutingDir, tweak: impl FnOnce(&mut ProxyConfig)) -> ProxyHandle {
    let mut config = ProxyConfig::for_directory(dir.path());
    config.forward.retry_backoff = Duration::from_millis(10);
    tweak(&mut config);
    modelrollout_proxy::start(config).await.expect("start proxy")
}

/// Polls `condition` every 20 ms, at most 500 times (10 s), and panics naming `what` if it never
/// holds. A bound on waiting for an event, not a timing assertion.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

/// Like [`wait_until`] for a condition that must await (e.g. a request): at most 250 tries,
/// 20 ms apart.
pub async fn wait_until_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..250 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

/// Longest any single helper waits for the proxy: a buffering or hanging bug fails the test
/// with a message instead of hanging CI.
pub const HELPER_BOUND: Duration = Duration::from_secs(30);

/// `future`, or a panic naming `what` after [`HELPER_BOUND`].
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HELPER_BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {HELPER_BOUND:?}"))
}

/// Waits until `alias` is served at `weight` (the reload was applied).
pub async fn wait_for_weight(proxy: &ProxyHandle, alias: &str, weight: u32) {
    wait_until(&format!("{alias} at weight {weight}"), || {
        proxy.state.table.load().route(alias).is_some_and(|r| r.weight() == weight && !r.retired)
    })
    .await;
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A complete response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn track(&self) -> &str {
        self.headers
            .get("x-modelrollout-track")
            .map(|v| v.to_str().expect("ascii track"))
            .unwrap_or("<missing>")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request and reads the whole response.
pub async fn send(
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    bounded(&format!("{method} {url}"), async {
        let response = client().request(request).await.expect("send request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("read body").to_bytes();
        Answer { status: parts.status, headers: parts.headers, body }
    })
    .await
}

/// POSTs JSON to `base` + `path`.
pub async fn post(base: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send("POST", &format!("{base}{path}"), body.to_string(), &all).await
}

/// GETs `url`.
pub async fn get(url: &str) -> Answer {
    send("GET", url, Bytes::new(), &[]).await
}

/// A chat request body for `alias`.
pub fn chat(alias: &str) -> Value {
    json!({"model": alias, "messages": [{"role": "user", "content": "hello"}]})
}

/// A streamed chat request body (with the usage chunk).
pub fn chat_stream(alias: &str) -> Value {
    json!({"model": alias, "stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "hello"}]})
}

/// Starts a streaming POST and returns the response head and its body, unread.
pub async fn open_stream(url: &str, body: &Value, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut request =
        Request::builder().method("POST").uri(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).expect("request");
    bounded(&format!("POST {url}"), client().request(request)).await.expect("send request")
}

/// Reads the next data frame of a body (skipping trailers); `None` at the end, `Err` when cut.
pub async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, String>> {
    loop {
        match bounded("next response chunk", body.frame()).await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e.to_string())),
        }
    }
}

/// Reads a whole SSE stream: (text, whether it ended cleanly).
pub async fn read_stream(mut body: Incoming) -> (String, Result<(), String>) {
    let mut text = String::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        match chunk {
            Ok(data) => text.push_str(&String::from_utf8_lossy(&data)),
            Err(e) => return (text, Err(e)),
        }
    }
    (text, Ok(()))
}

/// The value of the first sample of `name` whose labels include all `labels`; panics when there
/// is none, so a renamed or missing series cannot pass as a zero.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample of {name} with {labels:?} in:\n{text}"))
}

/// `/metrics` of a running proxy.
pub async fn metrics_text(proxy: &ProxyHandle) -> String {
    get(&format!("{}/metrics", proxy.admin_url())).await.text()
}

/// Requests counted for one arm and reason.
pub fn requests(text: &str, canary: bool, reason: &str) -> f64 {
    let is_canary = if canary { "true" } else { "false" };
    metric(text, "gray_release_requests_total", &[("is_canary", is_canary), ("reason", reason)])
}

// === scripted upstream ===

/// One request that reached a [`ScriptedUpstream`]: its body and the sender of its SSE body.
#[derive(Debug)]
pub struct ScriptedRequest {
    pub body: Bytes,
    pub chunks: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
}

/// An upstream whose SSE responses the test writes chunk by chunk, to observe streaming,
/// stalls and cancellation without timing.
#[derive(Debug)]
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    pub requests: mpsc::UnboundedReceiver<ScriptedRequest>,
}

impl ScriptedUpstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (requests_tx, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let requests_tx = requests_tx.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let requests_tx = requests_tx.clone();
                    async move {
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (chunks, mut receiver) = mpsc::channel(16);
                        let _ = requests_tx.send(ScriptedRequest { body, chunks });
                        let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
                        let response = Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(StreamBody::new(stream))
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ScriptedUpstream { addr, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub async fn next_request(&mut self) -> ScriptedRequest {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("a request reaches the scripted upstream within 10 s")
            .expect("scripted upstream running")
    }
}

/// One SSE data event.
pub fn sse(data: &str) -> Result<Frame<Bytes>, std::io::Error> {
    Ok(Frame::data(Bytes::from(format!("data: {data}\n\n"))))
}

// === held upstream ===

/// An upstream that never answers: each request reports its arrival, and the returned receiver
/// resolves (with an error) once the upstream side of that request was dropped, i.e. cancelled.
pub async fn held_upstream() -> (String, mpsc::UnboundedReceiver<tokio::sync::oneshot::Receiver<()>>)
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let arrivals_tx = arrivals_tx.clone();
            let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                let (guard, cancelled) = tokio::sync::oneshot::channel::<()>();
                let _ = arrivals_tx.send(cancelled);
                async move {
                    let _guard = guard;
                    futures::future::pending::<()>().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/v1"), arrivals)
}

/// Two healthy mock upstreams and a routing directory serving `chat-default` (rollout `chat`)
/// between them: the starting point of most tests.
#[derive(Debug)]
pub struct TwoArms {
    pub stable: MockServer,
    pub canary: MockServer,
    pub dir: RoutingDir,
}

/// Starts [`TwoArms`] with the canary at `weight` percent.
pub async fn two_arms(weight: u32) -> TwoArms {
    let stable = mock(MockConfig::default()).await;
    let canary = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &canary.base_url(), weight);
    TwoArms { stable, canary, dir }
}

/// A routing directory serving `chat-default` (rollout `chat`) between the `stable` and `canary`
/// base URLs, with the canary at `weight` percent.
pub fn chat_dir(stable: &str, canary: &str, weight: u32) -> RoutingDir {
    let dir = RoutingDir::new();
    dir.write_json("chat.json", &document("chat", "chat-default", stable, canary, weight));
    dir
}
