//! The proxy's configuration: command-line flags, each with a `MODELROLLOUT_PROXY_*` environment
//! variable equivalent (flags win). Durations are written `250ms`, `5s`, `2m`, `1h`.
//!
//! A bad flag or value ends the process with one line on stderr and exit code 2
//! (see `main.rs`); `--help` lists everything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use modelrollout_api::parse_duration;

use crate::clients::ClientLimits;
use crate::forward::ForwardOptions;

/// Where the routing documents come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutingSource {
    /// A directory of `<rollout>.json` files (plain, or a mounted ConfigMap), watched.
    Directory {
        /// The directory.
        path: PathBuf,
        /// Full rescan period, a fallback for missed file events.
        rescan: Duration,
    },
    /// A ConfigMap watched through the Kubernetes API.
    ConfigMap {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// A kubeconfig file; `None` = the usual inference (KUBECONFIG, ~/.kube/config,
        /// in-cluster service account).
        kubeconfig: Option<PathBuf>,
    },
}

/// OpenAI-compatible canary routing proxy for model APIs (see crates/proxy/README.md).
#[derive(Clone, Debug, Parser)]
#[command(name = "modelrollout-proxy", version, about)]
#[command(group(ArgGroup::new("source").required(true).args(["routing_dir", "configmap"])))]
pub struct ProxyArgs {
    /// Address for the OpenAI-compatible API (loopback by default: sidecar mode).
    #[arg(
        long,
        env = "MODELROLLOUT_PROXY_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Address for /healthz, /readyz, /metrics and /admin/status (use 0.0.0.0:PORT so
    /// Prometheus can scrape it from outside the pod).
    #[arg(
        long,
        env = "MODELROLLOUT_PROXY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901",
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,

    /// Directory of routing documents `<rollout>.json` (a mounted ConfigMap works), watched.
    #[arg(long, env = "MODELROLLOUT_PROXY_ROUTING_DIR", value_name = "DIR")]
    pub routing_dir: Option<PathBuf>,

    /// Rescan period of --routing-dir, a fallback for missed file events.
    #[arg(long, env = "MODELROLLOUT_PROXY_RESCAN_INTERVAL", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub rescan_interval: Duration,

    /// ConfigMap `NAMESPACE/NAME` holding routing documents, watched through the Kubernetes API.
    #[arg(long, env = "MODELROLLOUT_PROXY_CONFIGMAP", value_parser = parse_configmap, value_name = "NAMESPACE/NAME")]
    pub configmap: Option<(String, String)>,

    /// Kubeconfig for --configmap (default: KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "MODELROLLOUT_PROXY_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Directory of upstream credentials: credential `secret/key` is read from DIR/secret/key.
    #[arg(
        long,
        env = "MODELROLLOUT_PROXY_CREDENTIALS_DIR",
        default_value = "/etc/modelrollout/credentials",
        value_name = "DIR"
    )]
    pub credentials_dir: PathBuf,

    /// How long a credential file's content is reused before it is read again (rotation).
    #[arg(long, env = "MODELROLLOUT_PROXY_CREDENTIALS_REFRESH", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub credentials_refresh: Duration,

    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "MODELROLLOUT_PROXY_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,

    /// Request body bytes held by all requests together; a request that would exceed it gets
    /// 503 with Retry-After. Bounds the proxy's memory whatever the clients send.
    #[arg(long, env = "MODELROLLOUT_PROXY_MAX_INFLIGHT_BODY_BYTES", default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub max_inflight_body_bytes: usize,

    /// Time allowed for a client to send a request's headers (HTTP/1.1; also how long a
    /// keep-alive connection may wait for its next request). 0s disables it.
    #[arg(long, env = "MODELROLLOUT_PROXY_CLIENT_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub client_header_timeout: Duration,

    /// Time allowed for a client to send a whole request body; slower ones get 408. 0s disables it.
    #[arg(long, env = "MODELROLLOUT_PROXY_CLIENT_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub client_body_timeout: Duration,

    /// A client connection with no request in flight for this long is closed. 0s disables it.
    #[arg(long, env = "MODELROLLOUT_PROXY_CLIENT_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration, value_name = "DURATION")]
    pub client_idle_timeout: Duration,

    /// Open client connections on --listen; further ones are answered 503 and closed.
    #[arg(
        long,
        env = "MODELROLLOUT_PROXY_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Concurrent HTTP/2 streams per client connection.
    #[arg(
        long,
        env = "MODELROLLOUT_PROXY_MAX_CONCURRENT_STREAMS",
        default_value_t = 64,
        value_name = "N"
    )]
    pub max_concurrent_streams: u32,

    /// Extra path prefix below /v1/ passed through to the stable arm (repeatable), besides the
    /// OpenAI surface (files, batches, uploads, audio, images, moderations, fine_tuning, ...).
    #[arg(
        long = "passthrough-path",
        env = "MODELROLLOUT_PROXY_PASSTHROUGH_PATHS",
        value_delimiter = ',',
        value_name = "PREFIX"
    )]
    pub passthrough_paths: Vec<String>,

    /// Serve /admin/status to non-loopback peers too (it shows endpoints and credential names).
    #[arg(long, env = "MODELROLLOUT_PROXY_ADMIN_STATUS_PUBLIC", default_value_t = false)]
    pub admin_status_public: bool,

    /// Upstream TCP+TLS connect timeout.
    #[arg(long, env = "MODELROLLOUT_PROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Time allowed until the upstream's response headers.
    #[arg(long, env = "MODELROLLOUT_PROXY_FIRST_BYTE_TIMEOUT", default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub first_byte_timeout: Duration,

    /// Longest silence allowed between two chunks of a response body.
    #[arg(long, env = "MODELROLLOUT_PROXY_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Retries after a connect error, 429 or 503 (only before any response byte was sent).
    #[arg(long, env = "MODELROLLOUT_PROXY_MAX_RETRIES", default_value_t = 1, value_name = "N")]
    pub max_retries: u32,

    /// Delay before the first retry; doubles for each further one.
    #[arg(long, env = "MODELROLLOUT_PROXY_RETRY_BACKOFF", default_value = "100ms", value_parser = parse_duration, value_name = "DURATION")]
    pub retry_backoff: Duration,

    /// Longest upstream Retry-After the proxy waits for before retrying; longer ones are passed
    /// to the client.
    #[arg(long, env = "MODELROLLOUT_PROXY_RETRY_MAX_WAIT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub retry_max_wait: Duration,

    /// Answer a canary attempt that never reached the canary (connect error, missing credential,
    /// 429 or 503) from stable; the canary failure is still counted.
    #[arg(long, env = "MODELROLLOUT_PROXY_FALLBACK_TO_STABLE", default_value_t = false)]
    pub fallback_to_stable: bool,

    /// With --fallback-to-stable, also fall back after a timeout, a broken connection or another
    /// 5xx, although the canary may already have executed the request (at-least-once).
    #[arg(
        long,
        env = "MODELROLLOUT_PROXY_FALLBACK_AT_LEAST_ONCE",
        default_value_t = false,
        requires = "fallback_to_stable"
    )]
    pub fallback_at_least_once: bool,

    /// Extra CA certificates (PEM) trusted for https upstreams, besides the system's.
    #[arg(long, env = "MODELROLLOUT_PROXY_UPSTREAM_CA_FILE", value_name = "FILE")]
    pub upstream_ca_file: Option<PathBuf>,

    /// On SIGTERM, how long in-flight requests and streams may take to finish.
    #[arg(long, env = "MODELROLLOUT_PROXY_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,

    /// Runtime worker threads; 0 = one per CPU core. A sidecar usually wants 1 or 2.
    #[arg(long, env = "MODELROLLOUT_PROXY_WORKER_THREADS", default_value_t = 0, value_name = "N")]
    pub worker_threads: usize,

    /// Log filter (tracing-subscriber syntax), e.g. `info` or `modelrollout_proxy=debug`.
    #[arg(long, env = "MODELROLLOUT_PROXY_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "MODELROLLOUT_PROXY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// The validated configuration the proxy runs with.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// API listen address.
    pub listen: SocketAddr,
    /// Admin listen address.
    pub admin_listen: SocketAddr,
    /// Routing document source.
    pub source: RoutingSource,
    /// Credential directory.
    pub credentials_dir: PathBuf,
    /// Credential cache lifetime.
    pub credentials_refresh: Duration,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// What one client, or all of them, may hold of the proxy.
    pub clients: ClientLimits,
    /// Extra pass-through path prefixes below `/v1/`.
    pub passthrough_paths: Vec<String>,
    /// Serve `/admin/status` to non-loopback peers.
    pub admin_status_public: bool,
    /// Forwarding knobs.
    pub forward: ForwardOptions,
    /// Extra upstream CA file.
    pub upstream_ca_file: Option<PathBuf>,
    /// Drain period on shutdown.
    pub shutdown_grace: Duration,
}

impl ProxyConfig {
    /// A configuration with the flags' defaults, reading routing documents from `dir` (for
    /// tests and embedding); listeners on 127.0.0.1 with OS-chosen ports.
    pub fn for_directory(dir: impl Into<PathBuf>) -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            source: RoutingSource::Directory { path: dir.into(), rescan: Duration::from_secs(5) },
            credentials_dir: PathBuf::from("/etc/modelrollout/credentials"),
            credentials_refresh: Duration::from_secs(10),
            max_body_bytes: 32 * 1024 * 1024,
            clients: ClientLimits::default(),
            passthrough_paths: Vec::new(),
            admin_status_public: false,
            forward: ForwardOptions::default(),
            upstream_ca_file: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl ProxyArgs {
    /// Checks what clap cannot and builds the [`ProxyConfig`].
    pub fn into_config(self) -> ProxyConfig {
        let source = match (self.routing_dir, self.configmap) {
            (Some(path), _) => RoutingSource::Directory { path, rescan: self.rescan_interval },
            (None, Some((namespace, name))) => {
                RoutingSource::ConfigMap { namespace, name, kubeconfig: self.kubeconfig }
            }
            // The required ArgGroup guarantees one of them.
            (None, None) => {
                RoutingSource::Directory { path: PathBuf::from("."), rescan: self.rescan_interval }
            }
        };
        ProxyConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            source,
            credentials_dir: self.credentials_dir,
            credentials_refresh: self.credentials_refresh,
            max_body_bytes: self.max_body_bytes,
            clients: ClientLimits {
                header_timeout: self.client_header_timeout,
                body_timeout: self.client_body_timeout,
                idle_timeout: self.client_idle_timeout,
                max_connections: self.max_connections,
                max_concurrent_streams: self.max_concurrent_streams,
                max_inflight_body_bytes: self.max_inflight_body_bytes,
            },
            passthrough_paths: self.passthrough_paths,
            admin_status_public: self.admin_status_public,
            forward: ForwardOptions {
                connect_timeout: self.connect_timeout,
                first_byte_timeout: self.first_byte_timeout,
                idle_timeout: self.idle_timeout,
                max_retries: self.max_retries,
                retry_backoff: self.retry_backoff,
                retry_max_wait: self.retry_max_wait,
                fallback_to_stable: self.fallback_to_stable,
                fallback_at_least_once: self.fallback_at_least_once,
            },
            upstream_ca_file: self.upstream_ca_file,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// Parses `NAMESPACE/NAME`.
pub fn parse_configmap(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?} must be NAMESPACE/NAME, e.g. ai/model-router")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ProxyConfig, String> {
        let mut argv = vec!["modelrollout-proxy"];
        argv.extend_from_slice(args);
        ProxyArgs::try_parse_from(argv).map(ProxyArgs::into_config).map_err(|e| e.to_string())
    }

    /// Defaults: loopback listeners, one retry, no fallback, documented timeouts; the embedding
    /// constructor agrees with the flags.
    #[test]
    fn defaults() {
        let config = parse(&["--routing-dir", "/r"]).unwrap();
        let embedded = ProxyConfig::for_directory("/r");
        assert_eq!(format!("{:?}", embedded.forward), format!("{:?}", config.forward));
        assert_eq!(embedded.credentials_dir, config.credentials_dir);
        assert_eq!(embedded.credentials_refresh, config.credentials_refresh);
        assert_eq!(embedded.max_body_bytes, config.max_body_bytes);
        assert_eq!(embedded.shutdown_grace, config.shutdown_grace);
        assert_eq!(embedded.clients, config.clients);
        assert_eq!(config.clients.header_timeout, Duration::from_secs(30));
        assert_eq!(config.clients.max_inflight_body_bytes, 64 * 1024 * 1024);
        assert!(config.passthrough_paths.is_empty() && !config.admin_status_public);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9901");
        assert_eq!(
            config.source,
            RoutingSource::Directory { path: "/r".into(), rescan: Duration::from_secs(5) }
        );
        assert_eq!(config.forward.max_retries, 1);
        assert!(!config.forward.fallback_to_stable);
        assert_eq!(config.forward.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.max_body_bytes, 32 * 1024 * 1024);
    }

    /// Every flag is parsed into its field.
    #[test]
    fn flags() {
        let config = parse(&[
            "--configmap",
            "ai/model-router",
            "--kubeconfig",
            "/k",
            "--listen",
            "0.0.0.0:9000",
            "--connect-timeout",
            "250ms",
            "--first-byte-timeout",
            "2m",
            "--idle-timeout",
            "1s500ms",
            "--max-retries",
            "3",
            "--fallback-to-stable",
            "--max-body-bytes",
            "1024",
            "--shutdown-grace",
            "1h",
            "--fallback-at-least-once",
            "--client-body-timeout",
            "2s",
            "--max-connections",
            "7",
            "--passthrough-path",
            "/v1/rerank,/v1/tokenize",
        ])
        .unwrap();
        assert_eq!(
            config.source,
            RoutingSource::ConfigMap {
                namespace: "ai".into(),
                name: "model-router".into(),
                kubeconfig: Some("/k".into())
            }
        );
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.forward.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.forward.first_byte_timeout, Duration::from_secs(120));
        assert_eq!(config.forward.idle_timeout, Duration::from_millis(1500));
        assert_eq!(config.forward.max_retries, 3);
        assert!(config.forward.fallback_to_stable);
        assert_eq!(config.max_body_bytes, 1024);
        assert_eq!(config.shutdown_grace, Duration::from_secs(3600));
        assert!(config.forward.fallback_at_least_once);
        assert_eq!(config.clients.body_timeout, Duration::from_secs(2));
        assert_eq!(config.clients.max_connections, 7);
        assert_eq!(config.passthrough_paths, ["/v1/rerank", "/v1/tokenize"]);
    }

    /// Bad input names the flag and the fix.
    #[test]
    fn errors() {
        let table: [(&[&str], &str); 6] = [
            (&["--routing-dir", "/r", "--fallback-at-least-once"], "--fallback-to-stable"),
            (&[], "--routing-dir"),
            (&["--routing-dir", "/r", "--configmap", "a/b"], "cannot be used with"),
            (&["--configmap", "no-namespace"], "NAMESPACE/NAME"),
            (&["--routing-dir", "/r", "--idle-timeout", "5parsecs"], "unknown unit"),
            (&["--routing-dir", "/r", "--listen", "localhost"], "--listen"),
        ];
        for (args, needle) in table {
            let error = parse(args).unwrap_err();
            assert!(error.contains(needle), "{args:?}: {error}");
        }
    }

    /// Duration flags use the workspace's one grammar: a bare or fractional number is refused
    /// with the accepted form rather than guessed at.
    #[test]
    fn durations() {
        // `--flag=value`: a separate "-1s" would be read as a flag of its own.
        let flag =
            |value: &str| parse(&["--routing-dir", "/r", &format!("--retry-backoff={value}")]);
        let table = [("250ms", 250), ("5s", 5_000), ("2m", 120_000), ("1h30m", 5_400_000)];
        for (text, millis) in table {
            let config = flag(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(config.forward.retry_backoff, Duration::from_millis(millis), "{text}");
        }
        for text in ["5", "0.5s", "", "-1s"] {
            let error = flag(text).unwrap_err();
            assert!(
                error.contains("--retry-backoff") && error.contains("e.g. 30s"),
                "{text}: {error}"
            );
        }
    }
}
