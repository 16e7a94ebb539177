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

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::body::{MeteredBody, ProxyBody, UsageScan};
use crate::client::UpstreamClient;
use crate::credentials::CredentialStore;
use crate::error::ApiError;
use crate::headers::{retry_after, strip_hop_by_hop, upstream_headers};
use crate::metrics::Outcome;
use crate::policy::{Attempt, Decision, Policy};
use crate::pool::Lease;
use crate::request::InspectedBody;
use crate::split::Track;
use crate::table::Route;

/// The response header naming the arm that answered.
pub const TRACK_HEADER: &str = "x-modelrollout-track";

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
                self.client.send(&arm.upstream, upstream_request, self.options.connect_timeout),
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
                    let (ended, counted) = if error.is_connect() {
                        (Attempt::NotConnected, Outcome::Connect)
                    } else {
                        (Attempt::Broken, Outcome::Upstream5xx)
                    };
                    arm.metrics.record(counted, started.elapsed());
                    let error = ApiError::upstream_unreachable(
                        track.as_str(),
                        &arm.upstream.endpoint,
                        error_chain(&error),
                    );
                    (ended, Err(error))
                }
                Ok(Ok((response, lease))) => {
                    let outcome =
                        Attempt::Answered(response.status(), retry_after(response.headers()));
                    (outcome, Ok((response, lease)))
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
                        Ok((response, lease)) => {
                            self.stream_back(route, track, started, response, lease)
                        }
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
        lease: Option<Lease>,
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
            lease,
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
