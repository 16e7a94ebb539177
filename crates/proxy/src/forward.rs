//! Sending a request to an arm's upstream and streaming the answer back.
//!
//! - One pooled keep-alive client (hyper-util legacy client) for every upstream, HTTP/1.1 and
//!   HTTP/2 (ALPN), TLS by rustls with the system's roots (or the bundled webpki roots when the
//!   system has none) plus an optional extra CA file.
//! - Timeouts: connect (`--connect-timeout`), first byte = response headers
//!   (`--first-byte-timeout`), idle gap between body chunks (`--idle-timeout`).
//! - Retries and fallback to stable follow [`crate::policy`]: only what the upstream did not
//!   execute is retried or sent to stable, unless the operator opts into at-least-once.
//! - Keys: the arm's credential, or the caller's own only when the arm passes it through.
//! - Response bodies go out as they arrive ([`MeteredBody`]): nothing waits for more data, so
//!   SSE streams flow chunk by chunk; frames the upstream connection has already read are merged
//!   into one write (a burst of events costs one syscall, not one each). The wrapper watches
//!   them for the metrics (first chunk time, `usage`, how the body ended). Dropping the body
//!   (the client hung up) drops the upstream response, which closes that upstream connection
//!   and so cancels the request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::credentials::CredentialStore;
use crate::error::ApiError;
use crate::metrics::Outcome;
use crate::policy::{Attempt, Decision, Policy};
use crate::request::InspectedBody;
use crate::split::Track;
use crate::table::{Arm, Route};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response header naming the arm that answered.
pub const TRACK_HEADER: &str = "x-modelrollout-track";

/// Largest non-streamed JSON response kept aside to read its `usage` (bigger ones go uncounted).
const MAX_USAGE_JSON_BYTES: usize = 8 * 1024 * 1024;
/// Longest SSE line kept while looking for `usage`.
const MAX_SSE_LINE_BYTES: usize = 1024 * 1024;

/// Forwarding knobs (see [`crate::config`] for the flags).
#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// TCP (+TLS) connect timeout (each of the three timeouts: zero disables it).
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers.
    pub first_byte_timeout: Duration,
    /// Longest gap allowed between two response body chunks.
    pub idle_timeout: Duration,
    /// Retries after a connect error, 429 or 503.
    pub max_retries: u32,
    /// First retry delay; doubles per retry.
    pub retry_backoff: Duration,
    /// Longest `Retry-After` the proxy waits for.
    pub retry_max_wait: Duration,
    /// Answer canary attempts that did not reach the canary from stable.
    pub fallback_to_stable: bool,
    /// Also fall back when the canary may have executed the request.
    pub fallback_at_least_once: bool,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            max_retries: 1,
            retry_backoff: Duration::from_millis(100),
            retry_max_wait: Duration::from_secs(5),
            fallback_to_stable: false,
            fallback_at_least_once: false,
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pooled upstream client.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    client: HttpClient,
}

impl UpstreamClient {
    /// Builds the client; `extra_ca` is a PEM file of additional trusted CAs.
    pub fn new(
        options: &ForwardOptions,
        extra_ca: Option<&std::path::Path>,
    ) -> crate::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(path) = extra_ca {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    crate::Error::Tls(format!(
                        "--upstream-ca-file {}: {e}; give a PEM file of CA certificates",
                        path.display()
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(crate::Error::Tls(format!(
                    "--upstream-ca-file {} holds no usable certificate; give a PEM file of CA \
                     certificates",
                    path.display()
                )));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(
            (!options.connect_timeout.is_zero()).then_some(options.connect_timeout),
        );
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Ok(UpstreamClient { client })
    }
}

/// What the client sent, as much of it as forwarding needs.
#[derive(Debug)]
pub struct ClientRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path and query below `/v1`, e.g. `/chat/completions`.
    pub suffix: &'a str,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// The body: rewritten per arm, or passed as is.
    pub body: ClientBody<'a>,
}

/// The request body to send upstream.
#[derive(Debug)]
pub enum ClientBody<'a> {
    /// A model-routed request: `model` is replaced by the arm's model.
    Rewrite(&'a InspectedBody<'a>),
    /// A pass-through request: sent unchanged.
    Raw(Bytes),
}

/// Everything a forward needs from the running proxy.
#[derive(Debug)]
pub struct Forwarder<'a> {
    /// The client.
    pub client: &'a UpstreamClient,
    /// Credential files.
    pub credentials: &'a CredentialStore,
    /// Knobs.
    pub options: &'a ForwardOptions,
}

/// How an arm's attempts ended.
enum ArmEnd {
    /// Give the client this (an upstream answer or the proxy's error).
    Answer(Response<ProxyBody>),
    /// The canary did not serve the request and the policy sends it to stable.
    FallBack,
}

impl Forwarder<'_> {
    /// Sends `request` to `track` of `route` (and to stable when the canary fails and the
    /// [`Policy`] falls back); the response carries `x-modelrollout-track`.
    pub async fn forward(
        &self,
        route: &Arc<Route>,
        track: Track,
        request: &ClientRequest<'_>,
    ) -> Response<ProxyBody> {
        let mut response = match self.attempt_arm(route, track, request).await {
            ArmEnd::Answer(response) => with_track(response, track),
            ArmEnd::FallBack => {
                tracing::debug!(rollout = %route.document.rollout, "canary failed, falling back to stable");
                match self.attempt_arm(route, Track::Stable, request).await {
                    ArmEnd::Answer(response) => with_track(response, Track::Stable),
                    // The policy never falls back from stable; answered like an unreachable one.
                    ArmEnd::FallBack => with_track(
                        ApiError::upstream_unreachable(
                            "stable",
                            &route.stable.upstream.endpoint,
                            "no usable response",
                        )
                        .into_response(),
                        Track::Stable,
                    ),
                }
            }
        };
        response.headers_mut().remove(header::CONNECTION);
        response
    }

    fn policy(&self) -> Policy {
        Policy {
            max_retries: self.options.max_retries,
            backoff: self.options.retry_backoff,
            retry_max_wait: self.options.retry_max_wait,
            fallback: self.options.fallback_to_stable,
            fallback_at_least_once: self.options.fallback_at_least_once,
        }
    }

    /// A request the proxy's own configuration stops: counted as `reason="config"`, logged
    /// with the details under a request id; the client sees only that id.
    fn configuration_error(&self, route: &Route, track: Track, detail: &str) -> ArmEnd {
        route.arm(track).metrics.record(Outcome::Config, Duration::ZERO);
        let request_id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(
            rollout = %route.document.rollout,
            track = track.as_str(),
            request_id,
            "{detail}"
        );
        let on_canary = track.is_canary();
        match self.policy().decide(0, Attempt::NotSentConfig, on_canary) {
            Decision::FallBack => ArmEnd::FallBack,
            _ => ArmEnd::Answer(
                ApiError::internal_configuration(track.as_str(), route.alias(), &request_id)
                    .into_response(),
            ),
        }
    }

    async fn attempt_arm(
        &self,
        route: &Arc<Route>,
        track: Track,
        request: &ClientRequest<'_>,
    ) -> ArmEnd {
        let arm = route.arm(track);
        let authorization = match &arm.credential {
            Some(credential) => match self.credentials.authorization(credential) {
                Ok(value) => Some(value),
                Err(error) => return self.configuration_error(route, track, &error.to_string()),
            },
            None => None,
        };
        let body = match &request.body {
            ClientBody::Rewrite(inspected) => inspected.with_model(&arm.model_json),
            ClientBody::Raw(bytes) => bytes.clone(),
        };
        let uri = match arm.upstream.uri(request.suffix) {
            Ok(uri) => uri,
            Err(e) => {
                let detail = format!(
                    "upstream URL {} + {:?} is not a valid URI ({e})",
                    arm.upstream.endpoint, request.suffix
                );
                return self.configuration_error(route, track, &detail);
            }
        };
        let policy = self.policy();
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let mut upstream_request = Request::new(Full::new(body.clone()));
            *upstream_request.method_mut() = request.method.clone();
            *upstream_request.uri_mut() = uri.clone();
            // Built per attempt: one copy of the client's headers instead of two.
            *upstream_request.headers_mut() = upstream_headers(
                request.headers,
                authorization.clone(),
                arm.pass_caller_authorization,
            );
            if let Some(host) = &arm.upstream.host {
                upstream_request.headers_mut().insert(header::HOST, host.clone());
            }
            // A zero first-byte timeout disables it.
            let first_byte_timeout = match self.options.first_byte_timeout {
                Duration::ZERO => Duration::MAX,
                timeout => timeout,
            };
            let sent = tokio::time::timeout(
                first_byte_timeout,
                self.client.client.request(upstream_request),
            )
            .await;
            let (outcome, answer) = match sent {
                Err(_elapsed) => {
                    arm.metrics.record(Outcome::Timeout, started.elapsed());
                    let error = ApiError::upstream_timeout(
                        track.as_str(),
                        &arm.upstream.endpoint,
                        self.options.first_byte_timeout,
                    );
                    (Attempt::TimedOut, Err(error))
                }
                Ok(Err(error)) => {
                    let (attempt, outcome) = if error.is_connect() {
                        (Attempt::NotConnected, Outcome::Connect)
                    } else {
                        (Attempt::Broken, Outcome::Upstream5xx)
                    };
                    arm.metrics.record(outcome, started.elapsed());
                    let error = ApiError::upstream_unreachable(
                        track.as_str(),
                        &arm.upstream.endpoint,
                        error_chain(&error),
                    );
                    (attempt, Err(error))
                }
                Ok(Ok(response)) => {
                    let outcome =
                        Attempt::Answered(response.status(), retry_after(response.headers()));
                    (outcome, Ok(response))
                }
            };
            let decision = policy.decide(attempt, outcome, track.is_canary());
            // An answer that is not given to the client is counted now (a given one is counted
            // when its body ends).
            if let (Attempt::Answered(status, _), Decision::Retry(_) | Decision::FallBack) =
                (outcome, decision)
            {
                arm.metrics.record(Outcome::from_status(status), started.elapsed());
            }
            match decision {
                Decision::Retry(wait) => {
                    drop(answer);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Decision::FallBack => return ArmEnd::FallBack,
                Decision::Answer => {
                    return ArmEnd::Answer(match answer {
                        Ok(response) => self.stream_back(route, track, started, response),
                        Err(error) => error.into_response(),
                    });
                }
            }
        }
    }

    fn stream_back(
        &self,
        route: &Arc<Route>,
        track: Track,
        started: Instant,
        response: Response<Incoming>,
    ) -> Response<ProxyBody> {
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let content_type = parts.headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
        let is_sse = content_type.is_some_and(|v| starts_with_ignore_case(v, b"text/event-stream"));
        let is_json = content_type.is_some_and(|v| starts_with_ignore_case(v, b"application/json"));
        let scan = if !parts.status.is_success() {
            UsageScan::Off
        } else if is_sse {
            UsageScan::Sse { line: Vec::new() }
        } else if is_json {
            UsageScan::Json { buf: Vec::new() }
        } else {
            UsageScan::Off
        };
        let body = MeteredBody::new(
            incoming,
            Arc::clone(route),
            track,
            started,
            Outcome::from_status(parts.status),
            is_sse,
            self.options.idle_timeout,
            scan,
        );
        Response::from_parts(parts, ProxyBody::Metered(Box::new(body)))
    }
}

fn with_track(mut response: Response<ProxyBody>, track: Track) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(HeaderName::from_static(TRACK_HEADER), HeaderValue::from_static(track.as_str()));
    response
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `Retry-After` in delta-seconds (an HTTP date is ignored: the exponential backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the names listed in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a lookup per name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The headers sent upstream: the client's minus hop-by-hop, `host` (set from the upstream
/// URI), `content-length` (recomputed), `expect` (the body is already read) and
/// `accept-encoding` (identity keeps `usage` readable). Keys: the arm's credential when it has
/// one, else the caller's own only when the arm passes it through; otherwise none at all.
fn upstream_headers(
    client: &HeaderMap,
    authorization: Option<HeaderValue>,
    pass_caller_authorization: bool,
) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_ENCODING);
    // The proxy already read the whole body; the upstream gets it at once.
    headers.remove(header::EXPECT);
    match authorization {
        Some(value) => {
            for name in &CALLER_KEY_HEADERS {
                headers.remove(name);
            }
            headers.insert(header::AUTHORIZATION, value);
        }
        None if !pass_caller_authorization => {
            for name in &CALLER_KEY_HEADERS {
                headers.remove(name);
            }
        }
        None => {}
    }
    headers
}

/// Where callers put their own API keys (OpenAI, Azure OpenAI, Anthropic style).
const CALLER_KEY_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
];

// === impl ProxyBody ===

/// Every response body the proxy sends.
#[derive(Debug)]
pub enum ProxyBody {
    /// A complete body made by the proxy (errors, admin pages).
    Full(Option<Bytes>),
    /// An upstream body streamed through.
    Metered(Box<MeteredBody>),
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }
}

impl From<String> for ProxyBody {
    fn from(text: String) -> Self {
        ProxyBody::Full(Some(Bytes::from(text)))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Metered(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Metered(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Metered(body) => body.size_hint(),
        }
    }
}

// === impl MeteredBody ===

#[derive(Debug)]
enum UsageScan {
    Off,
    Sse { line: Vec<u8> },
    Json { buf: Vec<u8> },
}

/// An upstream response body passed through frame by frame, with the metrics watching it.
#[derive(Debug)]
pub struct MeteredBody {
    inner: Incoming,
    route: Arc<Route>,
    track: Track,
    started: Instant,
    outcome_on_end: Outcome,
    is_sse: bool,
    seen_first_chunk: bool,
    idle_timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    scan: UsageScan,
    usage: Option<(u64, u64)>,
    finished: bool,
    /// Data already taken from upstream but not yet handed out (see [`MAX_COALESCED_BYTES`]).
    held: Option<Held>,
    /// The upstream had nothing more once already while data was held: one more round, then
    /// the held data goes out (a single round is often too early: hyper polls twice per wake).
    waited_once: bool,
    /// What the upstream produced after `held` (an end, an error, trailers): handed out next.
    deferred: Option<Option<Result<Frame<Bytes>, BoxError>>>,
}

/// Most bytes of consecutive upstream frames merged into one frame for the client.
///
/// hyper's client hands body frames over one at a time, so a burst of SSE events read in one
/// `recv` would otherwise cost one `writev` per event. Frames are merged only while the
/// upstream connection already holds more: the merged frame goes out as soon as it has nothing
/// more to give right now (one scheduler round, no waiting), so streams are never delayed.
const MAX_COALESCED_BYTES: usize = 32 * 1024;

#[derive(Debug)]
enum Held {
    One(Bytes),
    Many(bytes::BytesMut),
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::One(bytes) => bytes.len(),
            Held::Many(buf) => buf.len(),
        }
    }

    fn push(self, data: &Bytes) -> Held {
        let mut buf = match self {
            Held::One(first) => {
                let mut buf = bytes::BytesMut::with_capacity(first.len() + data.len() * 4);
                buf.extend_from_slice(&first);
                buf
            }
            Held::Many(buf) => buf,
        };
        buf.extend_from_slice(data);
        Held::Many(buf)
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Held::One(bytes) => bytes,
            Held::Many(buf) => buf.freeze(),
        }
    }
}

impl MeteredBody {
    #[allow(clippy::too_many_arguments)]
    fn new(
        inner: Incoming,
        route: Arc<Route>,
        track: Track,
        started: Instant,
        outcome_on_end: Outcome,
        is_sse: bool,
        idle_timeout: Duration,
        scan: UsageScan,
    ) -> Self {
        let mut body = MeteredBody {
            inner,
            route,
            track,
            started,
            outcome_on_end,
            is_sse,
            seen_first_chunk: false,
            idle_timeout,
            idle: None,
            scan,
            usage: None,
            finished: false,
            held: None,
            waited_once: false,
            deferred: None,
        };
        // An empty body may never be polled: account for it now.
        if body.inner.is_end_stream() {
            body.finish(outcome_on_end);
        }
        body
    }

    fn arm(&self) -> &Arm {
        self.route.arm(self.track)
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.idle = None;
        if let UsageScan::Json { buf } = &self.scan
            && !buf.is_empty()
        {
            self.usage = usage_of_json(buf);
        }
        let arm = self.route.arm(self.track);
        arm.metrics.record(outcome, self.started.elapsed());
        if let Some((prompt, completion)) = self.usage {
            arm.metrics.record_tokens(prompt, completion);
        }
        if outcome == Outcome::StreamAborted || outcome == Outcome::Timeout {
            tracing::warn!(
                rollout = %self.route.document.rollout,
                track = self.track.as_str(),
                reason = outcome.reason(),
                "upstream response body ended early"
            );
        }
    }

    fn on_data(&mut self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        if !self.seen_first_chunk {
            self.seen_first_chunk = true;
            if self.is_sse {
                self.arm().metrics.record_ttft(self.started.elapsed());
            }
        }
        match &mut self.scan {
            UsageScan::Off => {}
            UsageScan::Json { buf } => {
                if buf.len() + data.len() <= MAX_USAGE_JSON_BYTES {
                    buf.extend_from_slice(data);
                } else {
                    self.scan = UsageScan::Off;
                }
            }
            UsageScan::Sse { line } => {
                let mut rest: &[u8] = data;
                while let Some(newline) = memchr::memchr(b'\n', rest) {
                    let found = if line.is_empty() {
                        usage_of_sse_line(&rest[..newline])
                    } else {
                        line.extend_from_slice(&rest[..newline]);
                        let found = usage_of_sse_line(line);
                        line.clear();
                        found
                    };
                    if found.is_some() {
                        self.usage = found;
                    }
                    rest = &rest[newline + 1..];
                }
                if line.len() + rest.len() <= MAX_SSE_LINE_BYTES {
                    line.extend_from_slice(rest);
                } else {
                    line.clear();
                }
            }
        }
    }
}

impl MeteredBody {
    /// One upstream frame, watched for the metrics and the idle timeout.
    fn poll_upstream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        if this.finished && this.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.on_data(data);
                }
                if this.inner.is_end_stream() {
                    this.finish(this.outcome_on_end);
                } else if let Some(idle) = &mut this.idle {
                    idle.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.finish(Outcome::StreamAborted);
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(None) => {
                this.finish(this.outcome_on_end);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.finished || this.idle_timeout.is_zero() {
                    return Poll::Pending;
                }
                let timeout = this.idle_timeout;
                let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.finish(Outcome::Timeout);
                    return Poll::Ready(Some(Err(format!(
                        "upstream sent nothing for {timeout:?} (--idle-timeout)"
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    /// Hands out what is held and keeps `next` for the following poll.
    fn release_before(
        &mut self,
        next: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.held.take() {
            Some(held) => {
                self.deferred = Some(next);
                Poll::Ready(Some(Ok(Frame::data(held.into_bytes()))))
            }
            None => Poll::Ready(next),
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(next) = this.deferred.take() {
            return Poll::Ready(next);
        }
        match this.poll_upstream(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let held = match this.held.take() {
                        None => Held::One(data),
                        Some(held) => held.push(&data),
                    };
                    if this.inner.is_end_stream() || held.len() >= MAX_COALESCED_BYTES {
                        return Poll::Ready(Some(Ok(Frame::data(held.into_bytes()))));
                    }
                    this.waited_once = false;
                    this.held = Some(held);
                    // Let the upstream connection's task run once: it passes on what it has
                    // already read, or has nothing and the held data goes out on the next poll.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Err(frame) => this.release_before(Some(Ok(frame))),
            },
            Poll::Ready(other) => this.release_before(other),
            Poll::Pending => match this.held.take() {
                Some(held) if !this.waited_once => {
                    this.waited_once = true;
                    this.held = Some(held);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(held) => {
                    this.waited_once = false;
                    Poll::Ready(Some(Ok(Frame::data(held.into_bytes()))))
                }
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && !matches!(self.deferred, Some(Some(_))) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.arm().metrics.record_cancelled();
            tracing::debug!(
                rollout = %self.route.document.rollout,
                track = self.track.as_str(),
                "client went away before the response ended; upstream request cancelled"
            );
        }
    }
}

// === usage ===

#[derive(Deserialize)]
struct UsageFields {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct NestedUsage {
    usage: Option<UsageFields>,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<UsageFields>,
    /// The Responses API puts usage in `response.usage` of its `response.completed` event.
    response: Option<NestedUsage>,
}

impl WithUsage {
    fn tokens(self) -> Option<(u64, u64)> {
        let usage = self.usage.or_else(|| self.response.and_then(|r| r.usage))?;
        Some((usage.prompt_tokens.unwrap_or(0), usage.completion_tokens.unwrap_or(0)))
    }
}

fn usage_of_json(body: &[u8]) -> Option<(u64, u64)> {
    serde_json::from_slice::<WithUsage>(body).ok()?.tokens()
}

/// Usage from one SSE line, if it is a `data:` line carrying a non-null `usage` object.
fn usage_of_sse_line(line: &[u8]) -> Option<(u64, u64)> {
    let payload = line.strip_prefix(b"data:")?;
    // Cheap pre-check so chunks with no usage (or "usage":null) are never parsed.
    let at = find_usage_key(payload)? + USAGE_KEY.len();
    let after = payload[at..].iter().position(|b| !matches!(b, b' ' | b':' | b'\t'))?;
    if payload[at + after] != b'{' {
        return None;
    }
    let payload = payload.trim_ascii();
    serde_json::from_slice::<WithUsage>(payload).ok()?.tokens()
}

/// Where `"usage"` first occurs (a prebuilt SIMD searcher: every SSE line is checked).
fn find_usage_key(haystack: &[u8]) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(USAGE_KEY));
    FINDER.find(haystack)
}

const USAGE_KEY: &[u8] = b"\"usage\"";

#[cfg(test)]
mod tests {
    use super::*;

    type UsageCase = (&'static [u8], Option<(u64, u64)>);

    /// Usage is read from chat, embeddings and Responses API shapes; null and absent are None.
    #[test]
    fn usage_from_sse_lines() {
        let table: [UsageCase; 7] = [
            (br#"data: {"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#, Some((12, 34))),
            (br#"data:{"usage": {"prompt_tokens":1}}"#, Some((1, 0))),
            (br#"data: {"id":"x","choices":[{"delta":{"content":"hi"}}],"usage":null}"#, None),
            (br#"data: {"id":"x","choices":[{"delta":{"content":"\"usage\":{"}}]}"#, None),
            (br#"data: {"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":6}}}"#, Some((5, 6))),
            (b"data: [DONE]", None),
            (br#"event: {"usage":{"prompt_tokens":1}}"#, None),
        ];
        for (line, expected) in table {
            assert_eq!(usage_of_sse_line(line), expected, "{}", String::from_utf8_lossy(line));
        }
    }

    /// Usage is read from complete JSON bodies.
    #[test]
    fn usage_from_json_bodies() {
        let table: [UsageCase; 3] = [
            (br#"{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":4}}"#, Some((3, 4))),
            (br#"{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":8,"total_tokens":8}}"#, Some((8, 0))),
            (br#"{"object":"chat.completion"}"#, None),
        ];
        for (body, expected) in table {
            assert_eq!(usage_of_json(body), expected);
        }
    }

    /// Hop-by-hop headers and the ones named in Connection are removed; host, length and
    /// encoding are dropped; authorization is replaced only when a credential is given.
    #[test]
    fn upstream_header_rules() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("host", "proxy:8080"),
            ("content-length", "10"),
            ("accept-encoding", "gzip"),
            ("authorization", "Bearer caller"),
            ("x-api-key", "caller"),
            ("x-session-id", "s-1"),
            ("openai-organization", "org"),
        ] {
            client.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let passed = upstream_headers(&client, None, true);
        let names: Vec<&str> = passed.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["authorization", "x-api-key", "x-session-id", "openai-organization"]);
        assert_eq!(passed["authorization"], "Bearer caller");
        // Not asked to pass the caller's key: no key at all.
        let stripped = upstream_headers(&client, None, false);
        let names: Vec<&str> = stripped.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-session-id", "openai-organization"]);
        let injected =
            upstream_headers(&client, Some(HeaderValue::from_static("Bearer arm")), false);
        assert_eq!(injected["authorization"], "Bearer arm");
        assert_eq!(injected.get_all("authorization").iter().count(), 1);
        assert!(injected.get("x-api-key").is_none());
    }

    /// Retry-After is read as seconds; dates and garbage are ignored.
    #[test]
    fn retry_after_values() {
        let table = [
            ("2", Some(Duration::from_secs(2))),
            ("0.5", Some(Duration::from_millis(500))),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("-1", None),
        ];
        for (value, expected) in table {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(value));
            assert_eq!(retry_after(&headers), expected, "{value}");
        }
    }
}
