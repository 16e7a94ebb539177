//! The proxy's two listeners and what they answer.
//!
//! **API listener** (`--listen`, HTTP/1.1 and h2c):
//! - `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`: routed
//!   by the body's `model` alias, split between stable and canary, `model` rewritten;
//! - `GET /v1/models` lists the served aliases (OpenAI list shape), `GET /v1/models/{alias}`
//!   describes one;
//! - other `/v1/*` requests of the OpenAI surface (and `--passthrough-path` prefixes; see
//!   [`crate::paths`]) pass through unchanged to the *stable* arm of one rollout: the one named
//!   by the `x-modelrollout-model: <alias>` request header, or the only one when the proxy
//!   serves a single alias; with several aliases and no header the answer is 400
//!   `ambiguous_route` (guessing would send a file upload or a batch to the wrong provider).
//!
//! Paths are normalised first; `..` and encoded dot segments or slashes are refused. Clients are
//! held to the limits of [`crate::clients`] (timeouts, connections, body memory).
//!
//! Every forwarded response carries `x-modelrollout-track: canary|stable`.
//!
//! **Admin listener** (`--admin-listen`): `/healthz` (the process runs), `/readyz` (the source
//! was read whole once: every document is served or listed as refused; and not draining),
//! `/metrics` (Prometheus text), `/admin/status` (JSON: routes, weights, generations, per-arm
//! request and error counts, refused documents; loopback peers only unless
//! `--admin-status-public`, as it names endpoints and credentials).
//! Kept on its own port so an application using the sidecar cannot reach or shadow it, and so
//! Prometheus can scrape it on another interface than the API.
//!
//! **Shutdown** ([`ProxyHandle::shutdown`], SIGTERM in the binary): `/readyz` turns 503, both
//! listeners stop accepting, in-flight requests and streams run to completion within the grace
//! period, then the remaining connections are closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::client::UpstreamClient;
use crate::clients::{BodyBudget, ClientLimits, ConnActivity, HeldBody};
use crate::config::{ProxyConfig, RoutingSource};
use crate::credentials::CredentialStore;
use crate::error::ApiError;
use crate::forward::{ClientBody, ClientRequest, ForwardOptions, Forwarder};
use crate::metrics::Metrics;
use crate::paths;
use crate::request::InspectedBody;
use crate::source::{Reloader, watch_configmap, watch_directory};
use crate::split::Track;
use crate::table::RoutingTable;

/// Request header naming the alias whose stable arm answers a pass-through request.
pub const PASSTHROUGH_MODEL_HEADER: &str = "x-modelrollout-model";

/// The paths routed by the body's `model`.
pub(crate) const MODEL_ROUTED_PATHS: [&str; 4] =
    ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"];

/// Everything requests share.
#[derive(Debug)]
pub struct ProxyState {
    /// The current routing table; replaced whole on reload (shared with the reloader).
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    client: UpstreamClient,
    credentials: CredentialStore,
    forward: ForwardOptions,
    max_body_bytes: usize,
    clients: ClientLimits,
    /// Request body bytes held by all requests.
    pub body_budget: BodyBudget,
    passthrough_paths: Vec<String>,
    admin_status_public: bool,
    draining: AtomicBool,
    source: String,
}

impl ProxyState {
    /// True once a table is loaded and while not draining.
    pub fn is_ready(&self) -> bool {
        self.table.load().is_loaded() && !self.draining.load(Ordering::Relaxed)
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// Shared state (table, metrics), for embedding and tests.
    pub state: Arc<ProxyState>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl ProxyHandle {
    /// The API base URL, e.g. `http://127.0.0.1:8080/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The admin base URL, e.g. `http://127.0.0.1:9901`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, then returns.
    pub async fn shutdown(self) {
        self.state.draining.store(true, Ordering::Relaxed);
        tracing::info!(grace = ?self.grace, "shutting down: draining in-flight requests");
        self.cancel.cancel();
        for task in self.tasks {
            // A task that panicked has nothing left to drain.
            let _ = task.await;
        }
        tracing::info!("shutdown complete");
    }
}

/// Binds both listeners, loads the routing table source and starts serving.
pub async fn start(config: ProxyConfig) -> crate::Result<ProxyHandle> {
    let client = UpstreamClient::new(&config.forward, config.upstream_ca_file.as_deref())?;
    let source = match &config.source {
        RoutingSource::Directory { path, .. } => format!("directory {}", path.display()),
        RoutingSource::ConfigMap { namespace, name, .. } => format!("configmap {namespace}/{name}"),
    };
    let state = Arc::new(ProxyState {
        table: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
        metrics: Arc::new(Metrics::new()),
        client,
        credentials: CredentialStore::new(
            config.credentials_dir.clone(),
            config.credentials_refresh,
        ),
        forward: config.forward.clone(),
        max_body_bytes: config.max_body_bytes,
        clients: config.clients.clone(),
        body_budget: BodyBudget::new(config.clients.max_inflight_body_bytes),
        passthrough_paths: config.passthrough_paths.clone(),
        admin_status_public: config.admin_status_public,
        draining: AtomicBool::new(false),
        source,
    });
    let bind = |flag, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| crate::Error::Bind { flag, addr, source })
    };
    let api_listener = bind("--listen", config.listen).await?;
    let admin_listener = bind("--admin-listen", config.admin_listen).await?;
    let addr = api_listener.local_addr().map_err(|source| crate::Error::Bind {
        flag: "--listen",
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| crate::Error::Bind {
        flag: "--admin-listen",
        addr: config.admin_listen,
        source,
    })?;

    let cancel = CancellationToken::new();
    let reloader = Reloader::new(Arc::clone(&state.table), Arc::clone(&state.metrics));
    let mut tasks = Vec::new();
    match config.source.clone() {
        RoutingSource::Directory { path, rescan } => {
            let task = watch_directory(path, rescan, reloader, cancel.child_token())?;
            tasks.push(tokio::spawn(task));
        }
        RoutingSource::ConfigMap { namespace, name, kubeconfig } => {
            let task = watch_configmap(namespace, name, kubeconfig, reloader, cancel.child_token())
                .await?;
            tasks.push(tokio::spawn(task));
        }
    }
    let api_state = Arc::clone(&state);
    tasks.push(tokio::spawn(serve(
        api_listener,
        cancel.clone(),
        config.shutdown_grace,
        config.clients.clone(),
        move |req, _peer| handle_api(Arc::clone(&api_state), req),
    )));
    let admin_state = Arc::clone(&state);
    // Scrapes and probes are few: a small cap keeps a flood on the admin port cheap.
    let admin_limits = ClientLimits { max_connections: 64, ..config.clients.clone() };
    tasks.push(tokio::spawn(serve(
        admin_listener,
        cancel.clone(),
        config.shutdown_grace,
        admin_limits,
        move |req, peer| handle_admin(Arc::clone(&admin_state), req, peer),
    )));
    tracing::info!(%addr, %admin_addr, source = %state.source, "modelrollout-proxy listening");
    Ok(ProxyHandle { addr, admin_addr, state, cancel, tasks, grace: config.shutdown_grace })
}

/// Accepts connections until `cancel`, then drains them for at most `grace`. Each connection
/// obeys `limits`: beyond `max_connections` open ones a newcomer is answered 503 and closed.
async fn serve<F, Fut>(
    listener: TcpListener,
    cancel: CancellationToken,
    grace: Duration,
    limits: ClientLimits,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper silently ignores its header-read timeout.
    builder.http1().timer(TokioTimer::new());
    if !limits.header_timeout.is_zero() {
        builder.http1().header_read_timeout(limits.header_timeout);
    }
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(limits.max_concurrent_streams);
    let connections = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let activity = ConnActivity::new();
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |req| {
            let in_flight = requests.begin();
            let response = handler(req, peer);
            async move {
                // The response body carries the in-flight mark: a stream is not idleness.
                let response = response.await.map(|body| in_flight.attach(body));
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            if idle.is_zero() {
                // Client resets and protocol errors end only that connection.
                let _ = connection.await;
                return;
            }
            tokio::select! {
                _ = connection => {}
                () = activity.idle_for(idle) => {
                    tracing::debug!(%peer, ?idle, "closing idle client connection");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "grace period over: closing connections still in flight");
    }
}

/// Answers a connection over the cap with a 503 and closes it, without waiting on a slow peer.
async fn refuse_connection(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    tracing::warn!(max, "connection refused: --max-connections reached");
    let body = format!(
        "{{\"error\":{{\"message\":\"The proxy already serves its limit of {max} connections \
         (--max-connections); retry shortly.\",\"type\":\"server_error\",\"param\":null,\
         \"code\":\"too_many_connections\"}}}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

// === API ===

async fn handle_api(state: Arc<ProxyState>, request: Request<Incoming>) -> Response<ProxyBody> {
    let raw_path = request.uri().path();
    if !raw_path.starts_with("/v1/") {
        return ApiError::not_found(raw_path).into_response();
    }
    let Ok(path) = paths::normalise(raw_path) else {
        return ApiError::invalid_path(raw_path).into_response();
    };
    if !state.table.load().is_loaded() {
        return ApiError::not_ready().into_response();
    }
    if MODEL_ROUTED_PATHS.contains(&path.as_str()) {
        if request.method() != Method::POST {
            let error = ApiError::method_not_allowed(request.method(), &path, "POST");
            return error.into_response();
        }
        return route_by_model(&state, request, &path).await;
    }
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        if request.method() != Method::GET {
            let error = ApiError::method_not_allowed(request.method(), &path, "GET");
            return error.into_response();
        }
        return models(&state, path.strip_prefix("/v1/models/"));
    }
    if !paths::passthrough_allowed(&path, &state.passthrough_paths) {
        return ApiError::path_not_allowed(&path).into_response();
    }
    if !paths::PASSTHROUGH_METHODS.contains(request.method()) {
        let error = ApiError::method_not_allowed(request.method(), &path, "GET, POST or DELETE");
        return error.into_response();
    }
    pass_through(&state, request, &path).await
}

async fn read_body(
    state: &ProxyState,
    body: Incoming,
    headers: &http::HeaderMap,
) -> Result<HeldBody, ApiError> {
    state.body_budget.read(body, headers, state.max_body_bytes, state.clients.body_timeout).await
}

fn forwarder(state: &ProxyState) -> Forwarder<'_> {
    Forwarder { client: &state.client, credentials: &state.credentials, options: &state.forward }
}

/// The normalised path below `/v1`, plus the client's query string.
fn suffix_of(path: &str, uri: &http::Uri) -> String {
    let below = path.strip_prefix("/v1").unwrap_or(path);
    match uri.query() {
        Some(query) => format!("{below}?{query}"),
        None => below.to_owned(),
    }
}

async fn route_by_model(
    state: &ProxyState,
    request: Request<Incoming>,
    path: &str,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body = match read_body(state, body, &parts.headers).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    // Hold the route, not the table: a reload during this request swaps the table freely.
    let (inspected, route) = {
        let table = state.table.load();
        let inspected = match InspectedBody::parse(&body.bytes, table.sticky_body_field()) {
            Ok(inspected) => inspected,
            Err(error) => return error.into_response(),
        };
        match table.route(inspected.model()) {
            Some(route) => {
                let route = Arc::clone(route);
                (inspected, route)
            }
            None => {
                return ApiError::model_not_found(inspected.model(), &table.aliases())
                    .into_response();
            }
        }
    };
    let (route, track) = match route.forced(&parts.headers) {
        Ok(Some(forced)) => forced,
        Ok(None) => {
            let track = route.choose(&parts.headers, Some(&inspected));
            (route, track)
        }
        Err(error) => return error.into_response(),
    };
    let client_request = ClientRequest {
        method: &parts.method,
        suffix: &suffix_of(path, &parts.uri),
        headers: &parts.headers,
        body: ClientBody::Rewrite(&inspected),
    };
    forwarder(state).forward(&route, track, &client_request).await
}

async fn pass_through(
    state: &ProxyState,
    request: Request<Incoming>,
    path: &str,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let route = {
        let table = state.table.load();
        let route = match parts.headers.get(PASSTHROUGH_MODEL_HEADER) {
            Some(alias) => {
                let alias = alias.to_str().unwrap_or_default();
                match table.route(alias) {
                    Some(route) => route,
                    None => {
                        return ApiError::model_not_found(alias, &table.aliases()).into_response();
                    }
                }
            }
            None => match table.routes().as_slice() {
                [only] => *only,
                [] => return ApiError::model_not_found("(none given)", &[]).into_response(),
                _ => return ApiError::ambiguous_route(&table.aliases()).into_response(),
            },
        };
        Arc::clone(route)
    };
    let body = match read_body(state, body, &parts.headers).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let mut headers = parts.headers.clone();
    headers.remove(PASSTHROUGH_MODEL_HEADER);
    let client_request = ClientRequest {
        method: &parts.method,
        suffix: &suffix_of(path, &parts.uri),
        headers: &headers,
        body: ClientBody::Raw(body.bytes.clone()),
    };
    forwarder(state).forward(&route, Track::Stable, &client_request).await
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

fn model_object(alias: &str) -> ModelObject<'_> {
    ModelObject { id: alias, object: "model", created: 0, owned_by: "modelrollout" }
}

fn models(state: &ProxyState, one: Option<&str>) -> Response<ProxyBody> {
    let table = state.table.load();
    let body = match one {
        Some(alias) => match table.route(alias) {
            Some(route) => serde_json::to_vec(&model_object(route.alias())),
            None => return ApiError::model_not_found(alias, &table.aliases()).into_response(),
        },
        None => serde_json::to_vec(&ModelList {
            object: "list",
            data: table.aliases().into_iter().map(model_object).collect(),
        }),
    };
    json_response(StatusCode::OK, body.unwrap_or_default())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::from(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

// === admin ===

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdminStatus<'a> {
    ready: bool,
    draining: bool,
    source: &'a str,
    reloads: Reloads,
    table: crate::table::TableStatus<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status page is for loopback peers (IPv4, IPv6, IPv4-mapped) unless made public.
    #[test]
    fn status_is_loopback_only_by_default() {
        let table = [
            ("127.0.0.1:5000", false, true),
            ("127.8.0.1:5000", false, true),
            ("[::1]:5000", false, true),
            ("[::ffff:127.0.0.1]:5000", false, true),
            ("10.0.0.7:5000", false, false),
            ("[2001:db8::1]:5000", false, false),
            ("10.0.0.7:5000", true, true),
        ];
        for (peer, public, visible) in table {
            assert_eq!(status_visible_to(peer.parse().unwrap(), public), visible, "{peer}");
        }
    }
}

#[derive(Serialize)]
struct Reloads {
    success: u64,
    failure: u64,
}

/// `/admin/status` names endpoints and credentials: loopback peers only unless
/// `--admin-status-public`. `/metrics` and the probes stay open to every peer.
pub fn status_visible_to(peer: SocketAddr, public: bool) -> bool {
    public || peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback()
}

async fn handle_admin(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(ProxyBody::from(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    };
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" if state.draining.load(Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "no routing table loaded yet\n"),
        "/metrics" => {
            let mut response = Response::new(ProxyBody::from(state.metrics.encode()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/admin/status" if !status_visible_to(peer, state.admin_status_public) => text(
            StatusCode::FORBIDDEN,
            "/admin/status is served to loopback clients only; start the proxy with \
             --admin-status-public to serve it on every interface\n",
        ),
        "/admin/status" => {
            let table = state.table.load();
            let (success, failure) = state.metrics.reload_counts();
            let status = AdminStatus {
                ready: state.is_ready(),
                draining: state.draining.load(Ordering::Relaxed),
                source: &state.source,
                reloads: Reloads { success, failure },
                table: table.status(),
            };
            json_response(StatusCode::OK, serde_json::to_vec_pretty(&status).unwrap_or_default())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics, /admin/status\n",
        ),
    }
}
