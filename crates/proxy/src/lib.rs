//! `modelrollout-proxy`: the OpenAI-compatible routing proxy (crates/proxy/README.md).
//!
//! It sits in every model request's path (as a sidecar or a gateway), looks up the request body's
//! `model` alias in a routing table built from the routing documents the controller writes
//! (docs/routing-document.md), sends each request to the stable or the canary upstream by a sticky weighted
//! split ([`split`]), rewrites the body `model` to that arm's model, injects the arm's credential,
//! streams the answer back unbuffered and counts everything in Prometheus metrics ([`metrics`]).
//!
//! Modules, in the order a request meets them:
//! - [`config`]: flags and their `MODELROLLOUT_PROXY_*` environment equivalents;
//! - [`server`]: the listeners (proxy and admin), graceful drain;
//! - [`clients`]: what clients may hold: timeouts, connections, request body memory;
//! - [`paths`]: path normalisation and the pass-through allow-list;
//! - [`request`]: reading the request body (limit, `model`, sticky field) and splicing `model`;
//! - [`split`]: the sticky bucket hash and the canary decision;
//! - [`table`]: the routing table merged from all documents, swapped atomically on reload;
//! - [`source`]: where documents come from (a watched directory or a watched ConfigMap);
//! - [`credentials`]: upstream API keys read from mounted secret files;
//! - [`forward`]: one request to an arm (and to stable on fallback), timeouts;
//! - [`policy`]: when to retry, fall back to stable, or answer;
//! - [`client`]: the upstream HTTP/TLS client;
//! - [`pool`]: a plain-HTTP upstream's own HTTP/1.1 connections;
//! - [`headers`]: hop-by-hop removal, which key goes upstream, `Retry-After`;
//! - [`body`]: response bodies streamed back, frame merging, idle timeout, metrics;
//! - [`usage`]: token usage read from answers (`skim`: the byte-wise walk that finds it);
//! - [`metrics`]: the `gray_release_*` metric families (a compatibility contract);
//! - [`error`]: OpenAI-style error responses.

pub mod body;
pub mod client;
pub mod clients;
pub mod config;
pub mod credentials;
pub mod error;
pub mod forced;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod paths;
pub mod policy;
pub mod pool;
pub mod request;
pub mod server;
mod skim;
pub mod source;
pub mod split;
pub mod table;
pub mod usage;

pub use config::ProxyConfig;
pub use server::{ProxyHandle, start};

/// Everything that can go wrong while starting or running the proxy (not per request: those
/// become OpenAI-style responses, see [`error::ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({flag}): {source}; pick a free address or port")]
    Bind {
        /// The flag that named the address.
        flag: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The routing directory cannot be read or watched.
    #[error("routing directory {path} (--routing-dir): {detail}")]
    RoutingDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What failed and how to fix it.
        detail: String,
    },
    /// The Kubernetes client could not be configured for `--configmap`.
    #[error(
        "--configmap {configmap}: cannot configure a Kubernetes client: {source}; set KUBECONFIG \
         or run in a pod with a service account"
    )]
    Kubernetes {
        /// `NAMESPACE/NAME` as given.
        configmap: String,
        /// The kube client's reason.
        source: kube::Error,
    },
    /// The upstream TLS configuration is unusable.
    #[error("upstream TLS: {0}")]
    Tls(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
