//! The HTTP server: accepts connections (HTTP/1.1 and h2c), records every API request, applies
//! the knobs of the current `MockConfig` and answers with the shapes of `openai`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::MockConfig;
use crate::openai::{self, Answer, ApiRequest, StreamEvents, Usage};

/// The model name listed by `/v1/models` when no `model` knob is set.
pub const DEFAULT_MODEL_NAME: &str = "mockllm";

/// Headers whose values `/control/requests` hides: they carry credentials.
const REDACTED_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// One request the server received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body parsed as JSON, for assertions in tests.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Server-level settings that are not knobs of the upstream's behaviour.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Keep at most this many recorded requests (the oldest go first); `None` keeps all.
    /// Long benchmarks set a small limit so memory stays flat.
    pub record_limit: Option<usize>,
}

/// A running mock upstream. Serves until `shutdown` or until dropped.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    accept_task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    config: RwLock<MockConfig>,
    rng: Mutex<StdRng>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    record_limit: Option<usize>,
    received: AtomicUsize,
    sequence: AtomicU64,
}

/// Both locks only guard plain data, so a panic elsewhere leaves them usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn rng_for(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

impl State {
    fn config(&self) -> MockConfig {
        self.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_config(&self, config: MockConfig) {
        // A config with a seed restarts the random sequence, so tests can replay it.
        if config.seed.is_some() {
            *lock(&self.rng) = rng_for(config.seed);
        }
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    fn record(&self, request: RecordedRequest) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if self.record_limit == Some(0) {
            return;
        }
        let mut recorded = lock(&self.recorded);
        if let Some(limit) = self.record_limit {
            while recorded.len() >= limit {
                recorded.pop_front();
            }
        }
        recorded.push_back(request);
    }

    /// Draws the random choices for one request in one go, so a seed gives one sequence.
    fn draw(&self, config: &MockConfig, stream: bool) -> Faults {
        let mut rng = lock(&self.rng);
        let jitter = if config.latency_jitter.is_zero() {
            Duration::ZERO
        } else {
            config.latency_jitter.mul_f64(rng.random::<f64>())
        };
        let error = config.error_rate > 0.0 && rng.random::<f64>() < config.error_rate;
        let abort = stream && config.abort_rate > 0.0 && rng.random::<f64>() < config.abort_rate;
        Faults { delay: config.latency + jitter, error, abort }
    }
}

/// What the dice said for one request.
#[derive(Debug)]
struct Faults {
    delay: Duration,
    error: bool,
    abort: bool,
}

impl MockServer {
    /// Binds `addr` (use `127.0.0.1:0` for a free port) and serves until dropped or shut down.
    pub async fn start(config: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        Self::start_with(config, addr, ServerOptions::default()).await
    }

    /// `start` with server-level options.
    pub async fn start_with(
        config: MockConfig,
        addr: SocketAddr,
        options: ServerOptions,
    ) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve(config, listener, options)
    }

    /// Serves on an already bound listener.
    pub fn serve(
        config: MockConfig,
        listener: TcpListener,
        options: ServerOptions,
    ) -> std::io::Result<MockServer> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            rng: Mutex::new(rng_for(config.seed)),
            config: RwLock::new(config),
            recorded: Mutex::new(VecDeque::new()),
            record_limit: options.record_limit,
            received: AtomicUsize::new(0),
            sequence: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, state.clone(), stopped));
        Ok(MockServer { addr, state, stop, accept_task: Some(accept_task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, what a client or the proxy uses as its endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Takes effect for the next request.
    pub fn set_config(&self, config: MockConfig) {
        self.state.set_config(config);
    }

    pub fn config(&self) -> MockConfig {
        self.state.config()
    }

    /// Every API request received, in order (`/control/*` and `/healthz` are not recorded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorded).iter().cloned().collect()
    }

    /// How many API requests arrived, including any the record limit let go.
    pub fn request_count(&self) -> usize {
        self.state.received.load(Ordering::Relaxed)
    }

    /// Forgets the recorded requests (the count stays).
    pub fn clear_requests(&self) {
        lock(&self.state.recorded).clear();
    }

    /// Stops accepting and drops every open connection, in-flight streams included.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.accept_task.take() {
            // The accept loop only ends by the stop signal; a join error means it panicked.
            if let Err(error) = task.await {
                tracing::error!(%error, "mockllm accept loop failed");
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Resolves once the server is told to stop (or the `MockServer` is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(%error, "mockllm accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => return,
        };
        // Small SSE chunks must leave at once, not wait for Nagle.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "set_nodelay failed");
        }
        let state = state.clone();
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(state.clone(), request));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "mockllm connection ended with an error");
                    }
                }
                () = stop_requested(&mut stopped) => {}
            }
        });
    }
}

// === request handling ===

/// Response body: in one piece, or a paced stream that may end in an error (the abort).
type MockBody = BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn json_response(status: StatusCode, body: &Value) -> Response<MockBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(status: StatusCode, message: &str, code: Option<&str>) -> Response<MockBody> {
    json_response(status, &openai::error_body(message, "invalid_request_error", code))
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let message = format!("could not read the request body: {error}");
            return Ok(error_response(StatusCode::BAD_REQUEST, &message, None));
        }
    };
    let path = parts.uri.path().to_owned();
    if path == "/healthz" {
        return Ok(Response::new(full("ok\n")));
    }
    if let Some(control) = path.strip_prefix("/control/") {
        return Ok(handle_control(&state, &parts.method, control, &body));
    }
    let config = state.config();
    let refused = config.api_key.as_deref().and_then(|key| refuse_key(key, &parts.headers));
    state.record(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map_or(path.clone(), |pq| pq.as_str().to_owned()),
        headers: parts.headers,
        body: body.clone(),
    });
    if let Some(refused) = refused {
        return Ok(refused);
    }
    Ok(handle_api(&state, config, &parts.method, &path, &body).await)
}

/// The 401 an OpenAI-style API gives a request without `Authorization: Bearer <key>`.
fn refuse_key(key: &str, headers: &HeaderMap) -> Option<Response<MockBody>> {
    let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let message = match sent.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(sent) if sent == key => return None,
        Some(_) => "Incorrect API key provided.",
        None => "You didn't provide an API key: send Authorization: Bearer <key>.",
    };
    Some(error_response(StatusCode::UNAUTHORIZED, message, Some("invalid_api_key")))
}

/// The API endpoints the mock serves, by method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Completions,
    Responses,
    Embeddings,
    Models,
    Model,
}

/// An API error answered before any work: status, message and OpenAI error code.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    code: Option<&'static str>,
}

impl ApiError {
    fn into_response(self) -> Response<MockBody> {
        error_response(self.status, &self.message, self.code)
    }
}

fn endpoint(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    let (endpoint, expected) = match path.trim_end_matches('/') {
        "/v1/chat/completions" => (Endpoint::ChatCompletions, Method::POST),
        "/v1/completions" => (Endpoint::Completions, Method::POST),
        "/v1/responses" => (Endpoint::Responses, Method::POST),
        "/v1/embeddings" => (Endpoint::Embeddings, Method::POST),
        "/v1/models" => (Endpoint::Models, Method::GET),
        other if other.starts_with("/v1/models/") => (Endpoint::Model, Method::GET),
        _ => {
            let message = format!(
                "modelrollout-mockllm does not serve {method} {path}: it serves /v1/chat/completions, \
                 /v1/completions, /v1/responses, /v1/embeddings and /v1/models"
            );
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message,
                code: Some("unknown_url"),
            });
        }
    };
    if method != expected {
        let message = format!("{path} takes {expected}, not {method}");
        return Err(ApiError { status: StatusCode::METHOD_NOT_ALLOWED, message, code: None });
    }
    Ok(endpoint)
}

async fn handle_api(
    state: &State,
    config: MockConfig,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Response<MockBody> {
    let endpoint = match endpoint(method, path) {
        Ok(endpoint) => endpoint,
        Err(error) => return error.into_response(),
    };
    let api_request = match ApiRequest::parse(body) {
        Ok(api_request) => api_request,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message, None),
    };
    let listed_model = config.model.clone().unwrap_or_else(|| DEFAULT_MODEL_NAME.to_owned());
    let model = match (&config.model, &api_request.model, endpoint) {
        (Some(model), _, _) | (None, Some(model), _) => model.clone(),
        (None, None, Endpoint::Models | Endpoint::Model) => listed_model.clone(),
        (None, None, _) => {
            let message = "you must provide a model parameter in the request body";
            return error_response(StatusCode::BAD_REQUEST, message, None);
        }
    };
    let streams = api_request.stream
        && matches!(
            endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Responses
        );
    let faults = state.draw(&config, streams);
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if faults.error {
        return injected_error(&config);
    }
    let answer = Answer {
        sequence: state.sequence.fetch_add(1, Ordering::Relaxed),
        model,
        created: unix_seconds(),
        chunks: config.chunks,
        usage: Usage {
            prompt_tokens: config.prompt_tokens,
            completion_tokens: config.completion_tokens,
        },
    };
    let body = match endpoint {
        Endpoint::ChatCompletions if streams => {
            return stream_response(answer.chat_stream(api_request.include_usage), &config, faults);
        }
        Endpoint::Completions if streams => {
            let events = answer.text_completion_stream(api_request.include_usage);
            return stream_response(events, &config, faults);
        }
        Endpoint::Responses if streams => {
            return stream_response(answer.response_stream(), &config, faults);
        }
        Endpoint::ChatCompletions => answer.chat_completion(),
        Endpoint::Completions => answer.text_completion(),
        Endpoint::Responses => answer.response(),
        Endpoint::Embeddings => answer.embeddings(
            api_request.embedding_inputs.max(1),
            api_request.dimensions.unwrap_or(openai::DEFAULT_EMBEDDING_DIMENSIONS),
        ),
        Endpoint::Models => match &config.listed_models {
            Some(listed) => openai::models_list(listed, answer.created),
            None => openai::models_list(&[listed_model], answer.created),
        },
        Endpoint::Model => {
            let id = path.trim_end_matches('/').trim_start_matches("/v1/models/");
            if id != listed_model {
                let message =
                    format!("The model '{id}' does not exist (this mock serves '{listed_model}')");
                return error_response(StatusCode::NOT_FOUND, &message, Some("model_not_found"));
            }
            openai::models_list(&[listed_model], answer.created)["data"][0].clone()
        }
    };
    json_response(StatusCode::OK, &body)
}

fn injected_error(config: &MockConfig) -> Response<MockBody> {
    let status =
        StatusCode::from_u16(config.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, &openai::injected_error_body(status.as_u16()));
    if let (Some(retry_after), 429 | 503) = (config.retry_after, status.as_u16()) {
        // Retry-After is whole seconds; round up so a client never retries early.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// One step of a paced stream: wait, then send an event, or cut the connection.
enum Step {
    Send(Duration, Bytes),
    Abort,
}

/// An SSE response whose events are produced one by one as hyper asks for them, each after its
/// delay, so nothing is buffered: TTFT before the first content event, the inter-chunk delay
/// between content events, the trailer at once. An abort cuts half-way with a body error, which
/// makes hyper drop the connection (HTTP/1) or reset the stream (HTTP/2) without `[DONE]`.
fn stream_response(
    events: StreamEvents,
    config: &MockConfig,
    faults: Faults,
) -> Response<MockBody> {
    let content_count = events.content.len();
    let abort_after = faults.abort.then(|| content_count.div_ceil(2).max(1));
    let mut steps = Vec::with_capacity(content_count + events.trailer.len() + 1);
    for (index, event) in events.content.into_iter().enumerate() {
        if abort_after == Some(index) {
            break;
        }
        let delay = if index == 0 { config.time_to_first_token } else { config.inter_chunk_delay };
        steps.push(Step::Send(delay, event));
    }
    if abort_after.is_some() {
        steps.push(Step::Abort);
    } else {
        let first_delay =
            if content_count == 0 { config.time_to_first_token } else { Duration::ZERO };
        for (index, event) in events.trailer.into_iter().enumerate() {
            steps.push(Step::Send(if index == 0 { first_delay } else { Duration::ZERO }, event));
        }
    }
    let frames = futures::stream::iter(steps).then(|step| async move {
        match step {
            Step::Send(delay, event) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Frame::data(event))
            }
            Step::Abort => {
                // Let hyper flush what was sent so far: the client sees chunks, then the cut.
                tokio::task::yield_now().await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "modelrollout-mockllm cut this stream on purpose (abortRate knob)",
                ))
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

// === control endpoints ===

fn handle_control(state: &State, method: &Method, path: &str, body: &Bytes) -> Response<MockBody> {
    match (method, path) {
        (&Method::GET, "config") => json_response(StatusCode::OK, &config_json(&state.config())),
        (&Method::PUT, "config") => match serde_path_to_error::deserialize::<_, MockConfig>(
            &mut serde_json::Deserializer::from_slice(body),
        ) {
            Ok(config) => apply_config(state, config),
            Err(error) => control_error(&format!(
                "PUT /control/config: the body is not a MockConfig ({error}); send JSON such as \
                 {{\"latency\":\"150ms\",\"errorRate\":0.1}} (GET /control/config shows every field)"
            )),
        },
        (&Method::PATCH, "config") => {
            let merged = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(changes)) => {
                    let before = state.config();
                    // The key is write-only (not in the JSON): keep it unless the patch sets it.
                    let keep_key =
                        (!changes.contains_key("apiKey")).then(|| before.api_key.clone());
                    let mut current = config_json(&before);
                    for (key, value) in changes {
                        current[key] = value;
                    }
                    serde_path_to_error::deserialize::<_, MockConfig>(current)
                        .map(|mut config| {
                            if let Some(key) = keep_key {
                                config.api_key = key;
                            }
                            config
                        })
                        .map_err(|error| format!("the merged config is invalid: {error}"))
                }
                Ok(_) => Err("the body must be a JSON object of the fields to change".to_owned()),
                Err(error) => Err(format!("the body is not JSON: {error}")),
            };
            match merged {
                Ok(config) => apply_config(state, config),
                Err(message) => control_error(&format!(
                    "PATCH /control/config: {message}; send the fields to change, e.g. \
                     {{\"errorRate\":0.5}}"
                )),
            }
        }
        (&Method::GET, "requests") => {
            let recorded: Vec<Value> =
                lock(&state.recorded).iter().map(recorded_request_json).collect();
            json_response(
                StatusCode::OK,
                &json!({"count": state.received.load(Ordering::Relaxed), "recorded": recorded}),
            )
        }
        (&Method::DELETE, "requests") => {
            lock(&state.recorded).clear();
            json_response(StatusCode::OK, &json!({"cleared": true}))
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!(
                "{method} /control/{path} is not a control endpoint: use GET/PUT/PATCH \
                 /control/config or GET/DELETE /control/requests"
            ),
            Some("unknown_url"),
        ),
    }
}

fn config_json(config: &MockConfig) -> Value {
    serde_json::to_value(config).unwrap_or_else(|error| json!({"error": error.to_string()}))
}

fn apply_config(state: &State, config: MockConfig) -> Response<MockBody> {
    if let Err(error) = config.validate() {
        return control_error(&error.to_string());
    }
    tracing::info!(config = %config_json(&config), "mockllm config changed");
    state.set_config(config);
    json_response(StatusCode::OK, &config_json(&state.config()))
}

fn control_error(message: &str) -> Response<MockBody> {
    error_response(StatusCode::BAD_REQUEST, message, None)
}

fn recorded_request_json(request: &RecordedRequest) -> Value {
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if REDACTED_HEADERS.contains(&name.as_str()) {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), Value::String(shown))
        })
        .collect();
    json!({
        "method": request.method,
        "path": request.path,
        "headers": headers,
        "body": String::from_utf8_lossy(&request.body),
    })
}
