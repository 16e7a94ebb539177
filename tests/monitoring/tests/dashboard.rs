//! deploy/monitoring/grafana-dashboard.json against a real Prometheus (Debian's, run by
//! modelrollout-testprometheus) scraping a real modelrollout proxy that serves traffic between
//! two mockllm upstreams (the canary failing a quarter of its requests), and the controller's
//! real metrics registry. Every panel query and variable query must parse and return data; every
//! metric name the alert rules use must exist among the scraped series.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use modelrollout_api::Phase;
use modelrollout_controller::metrics::Metrics as ControllerMetrics;
use modelrollout_mockllm::{MockConfig, MockServer};
use modelrollout_monitoring::{
    instant_query, label_values_query, metric_names, monitoring_dir, project_metric_names,
    substitute,
};
use modelrollout_proxy::ProxyConfig;
use modelrollout_testprometheus::TestPrometheus;
use serde_json::{Value, json};

const NAMESPACE: &str = "shop";
const ROLLOUT: &str = "checkout-assistant";
const ALIAS: &str = "chat-default";
/// Grafana's `$__rate_interval` here: longer than the whole test, so a rate sees every sample.
const RATE_INTERVAL: &str = "5m";
/// How long the queries may take to all return data once Prometheus scrapes the targets.
const DATA_TIMEOUT: Duration = Duration::from_secs(90);
/// How long Prometheus may take to scrape both targets for the first time (~5 s normally).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(60);

/// One query of the dashboard: where it comes from and its PromQL with variables replaced.
#[derive(Debug)]
struct DashboardQuery {
    origin: String,
    promql: String,
}

/// Every panel target and variable query of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Result<Vec<DashboardQuery>> {
    let mut queries = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or_default();
        let definition = variable["definition"].as_str().unwrap_or_default();
        let promql = label_values_query(definition)
            .with_context(|| format!("variable {name}: not label_values(...): {definition}"))?;
        queries.push(DashboardQuery {
            origin: format!("variable ${name}"),
            promql: substitute(&promql, NAMESPACE, ROLLOUT, RATE_INTERVAL),
        });
    }
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default();
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.with_context(|| format!("panel {title:?} has no targets"))?;
        for target in targets {
            let expr = target["expr"].as_str().filter(|e| !e.trim().is_empty());
            let expr = expr.with_context(|| format!("panel {title:?}: a target without expr"))?;
            queries.push(DashboardQuery {
                origin: format!("panel {title:?} target {}", target["refId"]),
                promql: substitute(expr, NAMESPACE, ROLLOUT, RATE_INTERVAL),
            });
        }
    }
    Ok(queries)
}

fn load_dashboard() -> Result<Value> {
    let path = monitoring_dir().join("grafana-dashboard.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The dashboard is well formed for Grafana: unique panel ids, every panel on the variable
/// data source, no Grafana variable left undefined, and the panels the issue asks for.
#[test]
fn dashboard_is_well_formed() -> Result<()> {
    let dashboard = load_dashboard()?;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        ensure!(
            ids.insert(panel["id"].as_u64().context("panel without id")?),
            "duplicate id: {title}"
        );
        if panel["type"] != "row" {
            ensure!(panel["datasource"]["uid"] == "${datasource}", "{title}: fixed data source");
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Phase",
        "Canary weight",
        "Error rate",
        "p95 latency",
        "p95 time to first token",
        "Tokens per second",
    ] {
        ensure!(titles.contains(&wanted), "no panel {wanted:?}; panels: {titles:?}");
    }
    for query in dashboard_queries(&dashboard)? {
        ensure!(
            !query.promql.contains('$'),
            "{}: undefined variable in {}",
            query.origin,
            query.promql
        );
    }
    Ok(())
}

/// Every dashboard query runs on a real Prometheus scraping a real proxy and returns data, and
/// every metric the alert rules name is among the series really exposed.
#[test]
fn every_query_returns_data_from_a_real_proxy() -> Result<()> {
    let queries = dashboard_queries(&load_dashboard()?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let routing = tempfile::tempdir()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (proxy_admin, controller) = runtime.block_on(start_world(routing.path(), &stop))?;
    let controller_addr = serve_metrics(controller)?;

    let prometheus = TestPrometheus::start(
        &[proxy_admin.to_string(), controller_addr.to_string()],
        Duration::from_secs(1),
    )?;
    prometheus.wait_scraped(SCRAPE_TIMEOUT)?;
    let address: SocketAddr = prometheus.address().trim_start_matches("http://").parse()?;

    // Poll until every query has data: a parse error fails at once, an empty result is retried
    // until the traffic has reached Prometheus.
    let started = Instant::now();
    loop {
        let mut empty = Vec::new();
        for query in &queries {
            let result = instant_query(address, &query.promql)
                .with_context(|| format!("{} does not run: {}", query.origin, query.promql))?;
            if result.series.is_empty() {
                empty.push(format!("{}: {}", query.origin, query.promql));
            }
        }
        if empty.is_empty() {
            break;
        }
        if started.elapsed() > DATA_TIMEOUT {
            bail!(
                "after {DATA_TIMEOUT:?} these queries still return nothing:\n{}",
                empty.join("\n")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // The values are the traffic's: the canary fails, stable does not.
    let error_rate = |arm: &str| -> Result<f64> {
        let query = queries
            .iter()
            .find(|q| q.origin.starts_with("panel \"Error rate\"") && q.promql.contains(arm))
            .context("no error-rate query")?;
        let result = instant_query(address, &query.promql)?;
        Ok(result.series.first().and_then(|(_, v)| v.parse().ok()).unwrap_or(f64::NAN))
    };
    let (canary, stable) =
        (error_rate(r#"is_canary="true""#)?, error_rate(r#"is_canary="false""#)?);
    ensure!(canary > 0.0 && stable == 0.0, "error rates: canary {canary}, stable {stable}");

    // Every metric an alert rule names is one the proxy or the controller really exposes.
    let exposed: BTreeSet<String> = metric_names(address)?.into_iter().collect();
    let rules_path = monitoring_dir().join("alerts.rules.yaml");
    let rules = std::fs::read_to_string(&rules_path)?;
    let mut unknown = Vec::new();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for name in project_metric_names(line) {
            if !exposed.contains(&name) {
                unknown.push(name);
            }
        }
    }
    ensure!(unknown.is_empty(), "alert rules name metrics nobody exposes: {unknown:?}");

    stop.store(true, Ordering::Relaxed);
    drop(prometheus);
    runtime.shutdown_timeout(Duration::from_secs(10));
    eprintln!(
        "[monitoring] {} dashboard queries returned data after {:.1} s; canary error rate {:.1} %",
        queries.len(),
        started.elapsed().as_secs_f64(),
        canary * 100.0
    );
    Ok(())
}

/// Starts two mockllm upstreams, the proxy routing 50 % to the canary, the controller's metrics,
/// and a traffic loop; returns the proxy's admin address and the controller's registry.
async fn start_world(
    routing: &std::path::Path,
    stop: &Arc<AtomicBool>,
) -> Result<(SocketAddr, Arc<ControllerMetrics>)> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let usage = |config: MockConfig| MockConfig {
        prompt_tokens: 12,
        completion_tokens: 40,
        chunks: 4,
        time_to_first_token: Duration::from_millis(5),
        seed: Some(7),
        ..config
    };
    let stable = MockServer::start(usage(MockConfig::default()), loopback).await?;
    let canary = MockServer::start(
        usage(MockConfig { error_rate: 0.25, error_status: 500, ..MockConfig::default() }),
        loopback,
    )
    .await?;
    let document = json!({
        "version": 1, "rollout": ROLLOUT, "namespace": NAMESPACE, "generation": 1, "model": ALIAS,
        "stable": {"model": "gpt-4.1-mini", "endpoint": stable.base_url()},
        "canary": {"model": "gpt-4.1", "endpoint": canary.base_url()},
        "canaryWeight": 50,
        "phase": "Progressing"
    });
    std::fs::write(routing.join(format!("{ROLLOUT}.json")), document.to_string())?;
    let proxy = modelrollout_proxy::start(ProxyConfig::for_directory(routing)).await?;
    let base = proxy.base_url();
    let admin = proxy.admin_addr;

    let controller = Arc::new(ControllerMetrics::new());
    controller.set_leader(true);
    controller.rollout(NAMESPACE, ROLLOUT, Phase::Progressing, 50);
    controller.reconcile_failed("api");
    controller.analysed(Instant::now(), Some("timeout"));

    let (stop, metrics) = (Arc::clone(stop), Arc::clone(&controller));
    tokio::spawn(async move {
        // The handles live as long as the traffic: dropping them stops the servers.
        let _servers = (stable, canary, proxy);
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let url = format!("{base}/chat/completions");
        let mut streamed = false;
        while !stop.load(Ordering::Relaxed) {
            streamed = !streamed;
            // Alternate plain and streamed requests: streams give the time to first token.
            let body = if !streamed {
                json!({"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]})
            } else {
                json!({"model": ALIAS, "stream": true, "stream_options": {"include_usage": true},
                       "messages": [{"role": "user", "content": "hi"}]})
            };
            let request = Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("request");
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(10), client.request(request)).await
            {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                        .await;
            }
            let started = Instant::now();
            metrics.reconciled(Duration::from_millis(2));
            metrics.analysed(started, None);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    Ok((admin, controller))
}

/// Serves the controller registry's text on `/metrics` from a loopback thread, as its server does.
fn serve_metrics(metrics: Arc<ControllerMetrics>) -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            // Read the request head (a GET has no body), then answer and close.
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(n @ 1..) => head.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let body = metrics.encode();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(addr)
}
