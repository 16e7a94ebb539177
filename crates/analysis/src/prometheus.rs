//! [`PrometheusSource`]: the analysis queries over Prometheus' HTTP API.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{join, join_all, try_join};
use prometheus_http_query::Client;
use prometheus_http_query::response::Data;

use crate::promql::{self, Arm};
use crate::{
    AnalysisError, ArmSample, ArmTally, CustomSample, MeasureSpec, Measurements, MetricsSource,
    ProxyWeight, Tally, TallySpec, Target, mapping, tally,
};

/// The real source: Prometheus' HTTP API with a per-query timeout.
#[derive(Clone)]
pub struct PrometheusSource {
    query_timeout: Duration,
    /// One client (and its connection pool) per Prometheus address.
    clients: Arc<Mutex<HashMap<String, Client>>>,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client has no Debug; the cached addresses are what is worth seeing.
        let clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut addresses: Vec<&String> = clients.keys().collect();
        addresses.sort();
        f.debug_struct("PrometheusSource")
            .field("query_timeout", &self.query_timeout)
            .field("addresses", &addresses)
            .finish()
    }
}

impl PrometheusSource {
    /// A source whose every call (all its queries, run concurrently) must finish within
    /// `query_timeout`. Clients are made on first use and cached per address.
    pub fn new(query_timeout: Duration) -> Self {
        Self { query_timeout, clients: Arc::default() }
    }

    /// The cached client for `address`, made on first use.
    pub(crate) fn client(&self, address: &str) -> Result<Client, AnalysisError> {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let invalid =
            |detail: String| AnalysisError::InvalidAddress { address: address.to_owned(), detail };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config().map_err(&invalid)?)
            .connect_timeout(self.query_timeout)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let client = Client::from(http, address).map_err(|e| invalid(e.to_string()))?;
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// Runs one instant query evaluated at `at` (Unix seconds, millisecond precision), mapping
    /// every failure to an [`AnalysisError`].
    pub(crate) async fn query(
        &self,
        client: &Client,
        address: &str,
        query: String,
        at: &str,
    ) -> Result<Data, AnalysisError> {
        let millis = i64::try_from(self.query_timeout.as_millis()).unwrap_or(i64::MAX);
        // POST: custom queries can be long; `timeout` lets Prometheus give up too.
        let response = client
            .query(&query)
            .timeout(millis)
            .query("time", at)
            .post_raw()
            .await
            .map_err(|e| self.transport_error(address, e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| self.reqwest_error(address, e.into()))?;
        mapping::response(address, &query, status, &body, self.query_timeout)
    }

    /// A failure to send the request: refused, timed out, or unusable address.
    fn transport_error(&self, address: &str, err: prometheus_http_query::Error) -> AnalysisError {
        match err {
            prometheus_http_query::Error::Client(client) => match client.inner() {
                Some(source) => self.reqwest_error(address, failure_of(source)),
                None => AnalysisError::Unreachable {
                    address: address.to_owned(),
                    detail: client.to_string(),
                },
            },
            other => AnalysisError::InvalidAddress {
                address: address.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    /// A transport failure: a timeout, or anything else that kept the answer from arriving.
    fn reqwest_error(&self, address: &str, err: ReqwestFailure) -> AnalysisError {
        if err.timeout {
            AnalysisError::Timeout { address: address.to_owned(), after: self.query_timeout }
        } else {
            AnalysisError::Unreachable { address: address.to_owned(), detail: err.detail }
        }
    }

    /// One arm's four numbers, queried concurrently.
    async fn arm(
        &self,
        client: &Client,
        target: &Target,
        arm: Arm,
        range: Duration,
        at: &str,
    ) -> Result<ArmSample, AnalysisError> {
        let address = target.prometheus.as_str();
        let requests = promql::requests(target, arm, range);
        let errors = promql::errors(target, arm, range);
        let (counts, quantiles) = join(
            try_join(
                self.query(client, address, requests.clone(), at),
                self.query(client, address, errors.clone(), at),
            ),
            try_join(
                self.query(client, address, promql::latency_p95(target, arm, range), at),
                self.query(client, address, promql::ttft_p95(target, arm, range), at),
            ),
        )
        .await;
        let (requests_data, errors_data) = counts?;
        let (latency, ttft) = quantiles?;
        Ok(ArmSample {
            requests: mapping::count(address, &requests, &requests_data)?,
            errors: mapping::count(address, &errors, &errors_data)?,
            latency_p95_seconds: mapping::quantile(&latency),
            ttft_p95_seconds: mapping::quantile(&ttft),
        })
    }

    /// One custom metric: a template problem or an odd value is the metric's own problem; a
    /// query Prometheus cannot run fails the whole analysis.
    async fn custom(
        &self,
        client: &Client,
        target: &Target,
        name: &str,
        template: &str,
        range: Duration,
        at: &str,
    ) -> Result<CustomSample, AnalysisError> {
        let value = match promql::custom(template, target, range) {
            Err(problem) => Err(crate::MetricProblem::Template(problem)),
            Ok(query) => mapping::custom(&self.query(client, &target.prometheus, query, at).await?),
        };
        Ok(CustomSample { name: name.to_owned(), value })
    }

    /// Bounds a whole call by the query timeout.
    pub(crate) async fn bounded<T>(
        &self,
        address: &str,
        work: impl Future<Output = Result<T, AnalysisError>>,
    ) -> Result<T, AnalysisError> {
        tokio::time::timeout(self.query_timeout, work).await.unwrap_or_else(|_| {
            Err(AnalysisError::Timeout { address: address.to_owned(), after: self.query_timeout })
        })
    }
}

impl MetricsSource for PrometheusSource {
    async fn proxy_weights(&self, target: &Target) -> Result<Vec<ProxyWeight>, AnalysisError> {
        let address = target.prometheus.as_str();
        let client = self.client(address)?;
        let query = promql::proxy_weights(target);
        let at = evaluation_time();
        let data = self.bounded(address, self.query(&client, address, query.clone(), &at)).await?;
        mapping::proxy_weights(address, &query, &data)
    }

    async fn measure(
        &self,
        target: &Target,
        spec: &MeasureSpec,
    ) -> Result<Measurements, AnalysisError> {
        let address = target.prometheus.as_str();
        let client = self.client(address)?;
        let range = promql::whole_seconds(spec.range);
        // One evaluation time for every query: counts and ratios of one analysis must cover
        // the same range, or increase()'s extrapolation differs from query to query.
        let at = evaluation_time();
        let at = at.as_str();
        let work = async {
            let customs =
                join_all(spec.custom.iter().map(|(name, template)| {
                    self.custom(&client, target, name, template, range, at)
                }));
            let ((canary, stable), custom) = join(
                join(
                    self.arm(&client, target, Arm::Canary, range, at),
                    self.arm(&client, target, Arm::Stable, range, at),
                ),
                customs,
            )
            .await;
            // Built-in failures first: they say more about Prometheus than a custom query does.
            Ok(Measurements {
                canary: canary?,
                stable: stable?,
                custom: custom.into_iter().collect::<Result<_, _>>()?,
                range,
            })
        };
        self.bounded(address, work).await
    }

    async fn tally(&self, target: &Target, spec: &TallySpec) -> Result<Tally, AnalysisError> {
        let address = target.prometheus.as_str();
        let client = self.client(address)?;
        let spec = TallySpec { since: promql::whole_seconds(spec.since), ..spec.clone() };
        // One evaluation time for every query, as in measure().
        let at = evaluation_time();
        let at = at.as_str();
        let (spec, client) = (&spec, &client);
        let arm = |arm: Arm| {
            let queries = tally::queries(target, arm, spec);
            async move {
                let answers = futures::future::try_join_all(
                    queries.iter().map(|q| self.query(client, address, q.clone(), at)),
                )
                .await?;
                let counts = queries
                    .iter()
                    .zip(&answers)
                    .map(|(query, data)| mapping::count(address, query, data))
                    .collect::<Result<Vec<f64>, _>>()?;
                Ok::<_, AnalysisError>(ArmTally::from_counts(spec, &counts))
            }
        };
        let work = async {
            let (canary, stable) = try_join(arm(Arm::Canary), arm(Arm::Stable)).await?;
            Ok(Tally { canary, stable, since: spec.since })
        };
        self.bounded(address, work).await
    }

    async fn tokens(
        &self,
        target: &Target,
        range: Duration,
    ) -> Result<crate::TokenSample, AnalysisError> {
        self.token_sample(target, range).await
    }
}

/// Now as Unix seconds with milliseconds, the form of the API's `time` parameter. The
/// controller's clock, like the range the controller clipped with it.
pub(crate) fn evaluation_time() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}

/// What the error mapping needs from a `reqwest::Error`, which is not `Clone`.
struct ReqwestFailure {
    timeout: bool,
    detail: String,
}

impl From<reqwest::Error> for ReqwestFailure {
    fn from(err: reqwest::Error) -> Self {
        failure_of(&err)
    }
}

/// Whether it timed out, and its innermost cause ("Connection refused (os error 111)").
fn failure_of(err: &reqwest::Error) -> ReqwestFailure {
    let mut detail = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    ReqwestFailure { timeout: err.is_timeout(), detail }
}

/// rustls with the ring provider (the workspace's choice), trusting the system's CAs and, when
/// there are none, the Mozilla roots. The controller's preflight uses it too.
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
