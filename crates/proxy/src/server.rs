//! The proxy's two listeners and what they answer.
//!
//! **API listener** (`--listen`, HTTP/1.1 and h2c):
//! - `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`: routed
//!   by the body's `model` alias, split between stable and canary, `model` rewritten;
//! - `GET /v1/models` lists the served aliases (OpenAI list shape), `GET /v1/models/{alias}`
//!   describes one;
//! - any other `/v1/*` request passes through unchanged to the *stable* arm of one rollout: the
//!   one named by the `x-modelrollout-model: <alias>` request header, or the only one when the
//!   proxy serves a single alias; with several aliases and no header the answer is 400
//!   `ambiguous_route` (guessing would send a file upload or a batch to the wrong provider).
//!
//! Every forwarded response carries `x-modelrollout-track: canary|stable`.
//!
//! **Admin listener** (`--admin-listen`): `/healthz` (the process runs), `/readyz` (a routing
//! table is loaded and the proxy is not draining), `/metrics` (Prometheus text),
//! `/admin/status` (JSON: routes, weights, generations, per-arm request and error counts).
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
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ProxyConfig, RoutingSource};
use crate::credentials::CredentialStore;
use crate::error::ApiError;
use crate::forward::{
    ClientBody, ClientRequest, ForwardOptions, Forwarder, ProxyBody, UpstreamClient,
};
use crate::metrics::Metrics;
use crate::request::InspectedBody;
use crate::source::{Reloader, watch_configmap, watch_directory};
use crate::split::Track;
use crate::table::RoutingTable;

/// Request header naming the alias whose stable arm answers a pass-through request.
pub const PASSTHROUGH_MODEL_HEADER: &str = "x-modelrollout-model";

/// The paths routed by the body's `model`.
const MODEL_ROUTED_PATHS: [&str; 4] =
    ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"];

/// Everything requests share.
#[derive(Debug)]
pub struct ProxyState {
    /// The current routing table; replaced whole on reload.
    pub table: ArcSwap<RoutingTable>,
    /// Metric families.
    pub metrics: Metrics,
    client: UpstreamClient,
    credentials: CredentialStore,
    forward: ForwardOptions,
    max_body_bytes: usize,
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
        table: ArcSwap::from_pointee(RoutingTable::default()),
        metrics: Metrics::new(),
        client,
        credentials: CredentialStore::new(
            config.credentials_dir.clone(),
            config.credentials_refresh,
        ),
        forward: config.forward.clone(),
        max_body_bytes: config.max_body_bytes,
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
    let reloader = Reloader::new(Arc::clone(&state));
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
        move |req| handle_api(Arc::clone(&api_state), req),
    )));
    let admin_state = Arc::clone(&state);
    tasks.push(tokio::spawn(serve(
        admin_listener,
        cancel.clone(),
        config.shutdown_grace,
        move |req| handle_admin(Arc::clone(&admin_state), req),
    )));
    tracing::info!(%addr, %admin_addr, source = %state.source, "modelrollout-proxy listening");
    Ok(ProxyHandle { addr, admin_addr, state, cancel, tasks, grace: config.shutdown_grace })
}

/// Accepts connections until `cancel`, then drains them for at most `grace`.
async fn serve<F, Fut>(
    listener: TcpListener,
    cancel: CancellationToken,
    grace: Duration,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let response = handler(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Client resets and protocol errors end only that connection.
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "grace period over: closing connections still in flight");
    }
}

// === API ===

async fn handle_api(state: Arc<ProxyState>, request: Request<Incoming>) -> Response<ProxyBody> {
    let path = request.uri().path();
    if !path.starts_with("/v1/") {
        return ApiError::not_found(path).into_response();
    }
    if !state.table.load().is_loaded() {
        return ApiError::not_ready().into_response();
    }
    if MODEL_ROUTED_PATHS.contains(&path) {
        if request.method() != Method::POST {
            let error = ApiError::method_not_allowed(request.method(), path, "POST");
            return error.into_response();
        }
        return route_by_model(&state, request).await;
    }
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        if request.method() != Method::GET {
            let error = ApiError::method_not_allowed(request.method(), path, "GET");
            return error.into_response();
        }
        return models(&state, path.strip_prefix("/v1/models/"));
    }
    pass_through(&state, request).await
}

async fn read_body(
    state: &ProxyState,
    body: Incoming,
    headers: &http::HeaderMap,
) -> Result<Bytes, ApiError> {
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::body_too_large(limit))
        }
        Err(error) => Err(ApiError::body_unreadable(error)),
    }
}

fn forwarder(state: &ProxyState) -> Forwarder<'_> {
    Forwarder { client: &state.client, credentials: &state.credentials, options: &state.forward }
}

fn suffix_of(uri: &http::Uri) -> &str {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    path_and_query.strip_prefix("/v1").unwrap_or(path_and_query)
}

async fn route_by_model(state: &ProxyState, request: Request<Incoming>) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body = match read_body(state, body, &parts.headers).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let inspected = match InspectedBody::parse(&body) {
        Ok(inspected) => inspected,
        Err(error) => return error.into_response(),
    };
    // Hold the route, not the table: a reload during this request swaps the table freely.
    let route = {
        let table = state.table.load();
        match table.route(inspected.model()) {
            Some(route) => Arc::clone(route),
            None => {
                return ApiError::model_not_found(inspected.model(), &table.aliases())
                    .into_response();
            }
        }
    };
    let track = route.choose(&parts.headers, Some(&inspected));
    let client_request = ClientRequest {
        method: &parts.method,
        suffix: suffix_of(&parts.uri),
        headers: &parts.headers,
        body: ClientBody::Rewrite(&inspected),
    };
    forwarder(state).forward(&route, track, &client_request).await
}

async fn pass_through(state: &ProxyState, request: Request<Incoming>) -> Response<ProxyBody> {
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
        suffix: suffix_of(&parts.uri),
        headers: &headers,
        body: ClientBody::Raw(body),
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

#[derive(Serialize)]
struct Reloads {
    success: u64,
    failure: u64,
}

async fn handle_admin(state: Arc<ProxyState>, request: Request<Incoming>) -> Response<ProxyBody> {
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
