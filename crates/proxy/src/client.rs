//! The pooled upstream client. Plain-HTTP upstreams (always HTTP/1.1) use their arm's own
//! connection list ([`crate::pool`]); TLS upstreams use one hyper-util legacy client with its
//! keyed keep-alive pool, HTTP/1.1 and HTTP/2 by ALPN, TLS by rustls with the system's roots (or
//! the bundled webpki roots when the system has none) plus an optional extra CA file.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::forward::ForwardOptions;
use crate::pool::{Lease, PoolError};
use crate::table::Upstream;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The pooled upstream client.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    pub(crate) client: HttpClient,
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

    /// Sends `request` to `upstream`: on the upstream's own HTTP/1.1 connections when it is plain
    /// HTTP (a lease to give back once the body is read), else through the legacy client.
    pub(crate) async fn send(
        &self,
        upstream: &Upstream,
        request: http::Request<Full<Bytes>>,
        connect_timeout: Duration,
    ) -> Result<(http::Response<hyper::body::Incoming>, Option<Lease>), SendError> {
        match &upstream.pool {
            Some(pool) => {
                let (response, lease) =
                    pool.send(request, connect_timeout).await.map_err(SendError::Pool)?;
                Ok((response, Some(lease)))
            }
            None => {
                let response = self.client.request(request).await.map_err(SendError::Legacy)?;
                Ok((response, None))
            }
        }
    }
}

/// Why an upstream request failed before its response headers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// On a plain-HTTP upstream's own connections.
    #[error(transparent)]
    Pool(PoolError),
    /// Through the legacy client (TLS upstreams).
    #[error(transparent)]
    Legacy(hyper_util::client::legacy::Error),
}

impl SendError {
    /// True when no connection was made: the upstream did not see the request.
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            SendError::Pool(error) => error.is_connect(),
            SendError::Legacy(error) => error.is_connect(),
        }
    }
}
