//! The analysis against a real Prometheus (Debian's package, started by
//! `modelrollout-testprometheus`) scraping small loopback servers whose metrics the tests set.
//!
//! One Prometheus serves the whole binary; each test uses its own rollout name, so the tests
//! run concurrently without seeing each other's series.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use modelrollout_analysis::{
    AnalysisError, MeasureSpec, MetricProblem, MetricsSource, PrometheusSource, Target,
};
use modelrollout_testprometheus::TestPrometheus;

const NAMESPACE: &str = "analysis-test";
/// Bound of every test, far above what a loaded machine needs.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// How long to wait for Prometheus to see what the servers now serve.
const SCRAPE_WAIT: Duration = Duration::from_secs(60);
/// The range every measure uses: longer than any test, so it covers all of a series' samples.
const RANGE: Duration = Duration::from_secs(120);

// === fixtures ===

/// A `/metrics` endpoint on loopback serving whatever series the tests set.
#[derive(Clone)]
struct MetricsServer {
    addr: String,
    series: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl MetricsServer {
    fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let series: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let served = Arc::clone(&series);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // Sorted keys keep each metric's series together, as the text format wants.
                let body: String = served
                    .lock()
                    .expect("series")
                    .iter()
                    .map(|(s, v)| format!("{s} {v}\n"))
                    .collect();
                respond(stream, "200 OK", &body);
            }
        });
        Self { addr, series }
    }

    /// Sets one series (`name{labels}`) to a value.
    fn set(&self, series: &str, value: f64) {
        self.series.lock().expect("series").insert(series.to_owned(), value);
    }

    /// Adds to several series at once: one scrape sees all changes or none, so every series
    /// shares its sample times (which makes ratios and quantiles exact).
    fn add(&self, changes: &[(&str, f64)]) {
        let mut series = self.series.lock().expect("series");
        for (name, delta) in changes {
            *series.entry((*name).to_owned()).or_default() += delta;
        }
    }
}

/// Reads the whole request (head and `Content-Length` body, so closing never resets the
/// connection under the client) and writes one HTTP/1.1 response, then closes.
fn respond(mut stream: TcpStream, status: &str, body: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n @ 1..) = stream.read(&mut chunk) else { return };
        request.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&request);
        let Some(head_end) = text.find("\r\n\r\n") else { continue };
        let length = text[..head_end]
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0usize);
        if request.len() >= head_end + 4 + length {
            break;
        }
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The binary's shared Prometheus, scraping two servers (two "proxy instances").
struct Shared {
    prometheus: TestPrometheus,
    a: MetricsServer,
    b: MetricsServer,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (a, b) = (MetricsServer::start(), MetricsServer::start());
        let prometheus =
            TestPrometheus::start(&[a.addr.clone(), b.addr.clone()], Duration::from_secs(1))
                .expect("start Prometheus");
        prometheus.wait_scraped(SCRAPE_WAIT).expect("both servers scraped");
        Shared { prometheus, a, b }
    })
}

fn target(prometheus: &str, rollout: &str) -> Target {
    Target {
        prometheus: prometheus.to_owned(),
        rollout: rollout.to_owned(),
        namespace: NAMESPACE.to_owned(),
    }
}

/// `rollout="r",rollout_namespace="analysis-test"`.
fn labels(rollout: &str) -> String {
    format!(r#"rollout="{rollout}",rollout_namespace="{NAMESPACE}""#)
}

/// Polls an instant query until `ready` accepts its single value (or the vector is empty and
/// `ready(None)` accepts that).
async fn wait_for(address: &str, query: &str, ready: impl Fn(Option<f64>) -> bool) {
    // A plain client needs a process-wide rustls provider (`rustls-no-provider`); the source
    // under test brings its own config and does not.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = prometheus_http_query::Client::try_from(address).expect("client");
    let deadline = tokio::time::Instant::now() + SCRAPE_WAIT;
    loop {
        let value =
            client.query(query).get().await.ok().and_then(|r| {
                r.data().as_vector().and_then(|v| v.first()).map(|s| s.sample().value())
            });
        if ready(value) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "`{query}` never became ready: {value:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until Prometheus holds at least `n` samples of `series` in the test range.
async fn wait_samples(address: &str, series: &str, n: usize) {
    let query = format!("count_over_time({series}[{}s])", RANGE.as_secs());
    wait_for(address, &query, |v| v.is_some_and(|v| v >= n as f64)).await;
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// === measuring ===

/// Requests, errors and p95 of each arm: 429s are left out, errors are counted per arm, the
/// p95 interpolates within the histogram's buckets, a histogram without observations is unknown.
#[tokio::test]
async fn counts_errors_and_p95_per_arm() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let shared = shared();
        let address = shared.prometheus.address();
        let (server, l) = (&shared.a, labels("counts"));
        let request = |arm: &str, status: &str, reason: &str| {
            format!(
                r#"gray_release_requests_total{{{l},model="m",is_canary="{arm}",status="{status}",reason="{reason}"}}"#
            )
        };
        let bucket = |histogram: &str, arm: &str, le: &str| {
            format!(r#"{histogram}_bucket{{{l},model="m",is_canary="{arm}",le="{le}"}}"#)
        };
        let duration = "gray_release_request_duration_seconds";
        let ttft = "gray_release_time_to_first_token_seconds";
        let counters = [
            request("true", "success", "ok"),
            request("true", "error", "upstream_5xx"),
            request("true", "error", "rate_limited"),
            request("false", "success", "ok"),
            request("false", "error", "upstream_5xx"),
        ];
        let buckets: Vec<String> = ["true", "false"]
            .into_iter()
            .flat_map(|arm| ["0.1", "0.25", "0.5", "1", "+Inf"].map(|le| bucket(duration, arm, le)))
            .chain(["0.1", "+Inf"].map(|le| bucket(ttft, "true", le)))
            .collect();
        // Every series starts at zero, as the proxy creates them when a route is loaded.
        let zeros: Vec<(&str, f64)> =
            counters.iter().chain(&buckets).map(|s| (s.as_str(), 0.0)).collect();
        server.add(&zeros);
        let witness = &counters[0];
        wait_samples(&address, witness, 2).await;

        let (c, s) = (|le: &str| bucket(duration, "true", le), |le: &str| bucket(duration, "false", le));
        let (c05, c1, cinf) = (c("0.5"), c("1"), c("+Inf"));
        let (s01, s025, s05, s1, sinf) = (s("0.1"), s("0.25"), s("0.5"), s("1"), s("+Inf"));
        server.add(&[
            // Canary: 100 requests, 25 errors, 1000 rate-limited; p95 in the (0.5, 1] bucket.
            (&counters[0], 75.0),
            (&counters[1], 25.0),
            (&counters[2], 1000.0),
            (&c05, 90.0),
            (&c1, 100.0),
            (&cinf, 100.0),
            // Stable: 200 requests, 10 errors; p95 in the (0.1, 0.25] bucket.
            (&counters[3], 190.0),
            (&counters[4], 10.0),
            (&s01, 50.0),
            (&s025, 100.0),
            (&s05, 100.0),
            (&s1, 100.0),
            (&sinf, 100.0),
        ]);
        wait_for(&address, witness, |v| v == Some(75.0)).await;
        let before_bump = 2;
        wait_samples(&address, witness, before_bump + 4).await;

        let source = PrometheusSource::new(Duration::from_secs(30));
        let spec = MeasureSpec { range: RANGE, custom: vec![] };
        let m = source.measure(&target(&address, "counts"), &spec).await.expect("measure");

        assert_eq!(m.range, RANGE);
        // increase() extrapolates towards the range's end, never below what was counted.
        assert!((100.0..150.0).contains(&m.canary.requests), "canary requests {}", m.canary.requests);
        assert!((200.0..300.0).contains(&m.stable.requests), "stable requests {}", m.stable.requests);
        // Every series shares the scrape times, so ratios and quantiles are exact.
        let canary_rate = m.canary.error_rate().expect("canary requests");
        let stable_rate = m.stable.error_rate().expect("stable requests");
        assert!(close(canary_rate, 0.25), "canary error rate {canary_rate}");
        assert!(close(stable_rate, 0.05), "stable error rate {stable_rate}");
        let canary_p95 = m.canary.latency_p95_seconds.expect("canary p95");
        let stable_p95 = m.stable.latency_p95_seconds.expect("stable p95");
        assert!(close(canary_p95, 0.75), "canary p95 {canary_p95}");
        assert!(close(stable_p95, 0.235), "stable p95 {stable_p95}");
        // Canary TTFT buckets exist but never moved (NaN); stable has none at all (empty).
        assert_eq!(m.canary.ttft_p95_seconds, None);
        assert_eq!(m.stable.ttft_p95_seconds, None);
        assert!(m.custom.is_empty());
    })
    .await
    .expect("test bounded");
}

/// A rollout no proxy has served: nothing counted, nothing known, no error.
#[tokio::test]
async fn no_traffic_is_zero_and_unknown() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let address = shared().prometheus.address();
        let source = PrometheusSource::new(Duration::from_secs(30));
        let spec = MeasureSpec { range: Duration::from_millis(37_500), custom: vec![] };
        let m = source.measure(&target(&address, "never-served"), &spec).await.expect("measure");
        assert_eq!(m.range, Duration::from_secs(37), "whole seconds");
        for arm in [&m.canary, &m.stable] {
            assert_eq!((arm.requests, arm.errors), (0.0, 0.0));
            assert_eq!(arm.error_rate(), None);
            assert_eq!((arm.latency_p95_seconds, arm.ttft_p95_seconds), (None, None));
        }
    })
    .await
    .expect("test bounded");
}

/// Each proxy instance's weight, named by the instance Prometheus scraped it from.
#[tokio::test]
async fn proxy_weights_from_two_instances() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let shared = shared();
        let address = shared.prometheus.address();
        let gauge = format!("gray_release_canary_weight{{{}}}", labels("weights"));
        shared.a.set(&gauge, 25.0);
        shared.b.set(&gauge, 10.0);
        wait_for(&address, &format!("count({gauge})"), |v| v == Some(2.0)).await;

        let source = PrometheusSource::new(Duration::from_secs(30));
        let mut weights =
            source.proxy_weights(&target(&address, "weights")).await.expect("weights");
        weights.sort_by(|x, y| x.weight.total_cmp(&y.weight));
        let seen: Vec<(&str, f64)> =
            weights.iter().map(|w| (w.instance.as_str(), w.weight)).collect();
        assert_eq!(seen, [(shared.b.addr.as_str(), 10.0), (shared.a.addr.as_str(), 25.0)]);

        let none = source.proxy_weights(&target(&address, "no-proxy")).await.expect("weights");
        assert!(none.is_empty(), "{none:?}");
    })
    .await
    .expect("test bounded");
}

/// Custom metrics: a value, and each way of not having one, named per metric.
#[tokio::test]
async fn custom_metrics_and_their_problems() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let shared = shared();
        let address = shared.prometheus.address();
        let l = labels("custom");
        let cost = format!("fixture_cost_total{{{l}}}");
        shared.a.set(&cost, 0.0);
        for shard in ["1", "2"] {
            shared.a.set(&format!(r#"fixture_shards{{{l},shard="{shard}"}}"#), 1.0);
        }
        wait_samples(&address, &cost, 2).await;
        shared.a.add(&[(&cost, 40.0)]);
        wait_for(&address, &cost, |v| v == Some(40.0)).await;

        let metric = |name: &str, query: &str| (name.to_owned(), query.to_owned());
        let spec = MeasureSpec {
            range: RANGE,
            custom: vec![
                metric(
                    "cost",
                    r#"sum(increase(fixture_cost_total{rollout="{{rollout}}",rollout_namespace="{{namespace}}"}[{{window}}]))"#,
                ),
                metric("empty", r#"sum(fixture_absent_total{rollout="{{rollout}}"})"#),
                metric("nan", "vector(0) / vector(0)"),
                metric("inf", "vector(1) / vector(0)"),
                metric("shards", r#"fixture_shards{rollout="{{rollout}}"}"#),
                metric("unbound", r#"fixture_cost_total{model="{{canaryModel}}"}"#),
            ],
        };
        let source = PrometheusSource::new(Duration::from_secs(30));
        let m = source.measure(&target(&address, "custom"), &spec).await.expect("measure");
        let names: Vec<&str> = m.custom.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cost", "empty", "nan", "inf", "shards", "unbound"], "spec order");
        let cost = m.custom[0].value.clone().expect("cost has a value");
        assert!((40.0..80.0).contains(&cost), "cost {cost}");
        assert_eq!(m.custom[1].value, Err(MetricProblem::NoData));
        assert_eq!(m.custom[2].value, Err(MetricProblem::NotANumber));
        assert_eq!(m.custom[3].value, Err(MetricProblem::Infinite));
        assert_eq!(m.custom[4].value, Err(MetricProblem::MultipleSeries(2)));
        assert!(
            matches!(&m.custom[5].value, Err(MetricProblem::Template(t)) if t.contains("{{canaryModel}}")),
            "{:?}",
            m.custom[5].value
        );
    })
    .await
    .expect("test bounded");
}

// === failures ===

/// A custom query Prometheus cannot parse fails the analysis, naming the query and address.
#[tokio::test]
async fn bad_custom_query_is_a_query_error() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let address = shared().prometheus.address();
        let spec = MeasureSpec {
            range: RANGE,
            custom: vec![("broken".to_owned(), "sum(rate(x[{{window}}])".to_owned())],
        };
        let source = PrometheusSource::new(Duration::from_secs(30));
        let err =
            source.measure(&target(&address, "bad-query"), &spec).await.expect_err("bad query");
        assert!(
            matches!(&err, AnalysisError::Query { query, .. } if query == "sum(rate(x[2m])"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&address) && text.contains("parse error"), "{text}");
        assert_eq!(err.metric_label(), "query");
    })
    .await
    .expect("test bounded");
}

/// A stopped Prometheus is unreachable, named by address; after a restart the same source
/// (and its cached client) works again.
#[tokio::test]
async fn stopped_prometheus_is_unreachable_until_restarted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server = MetricsServer::start();
        let gauge = format!("gray_release_canary_weight{{{}}}", labels("restart"));
        server.set(&gauge, 5.0);
        let mut prometheus = tokio::task::spawn_blocking(move || {
            TestPrometheus::start(std::slice::from_ref(&server.addr), Duration::from_secs(1))
                .expect("start")
        })
        .await
        .expect("start task");
        let address = prometheus.address();
        let target = target(&address, "restart");
        let source = PrometheusSource::new(Duration::from_secs(30));
        wait_for(&address, &gauge, |v| v == Some(5.0)).await;
        assert_eq!(source.proxy_weights(&target).await.expect("weights").len(), 1);

        let mut prometheus = tokio::task::spawn_blocking(move || {
            prometheus.stop();
            prometheus
        })
        .await
        .expect("stop task");
        let err = source.proxy_weights(&target).await.expect_err("stopped");
        assert!(matches!(err, AnalysisError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains(&address), "{err}");
        let spec = MeasureSpec { range: RANGE, custom: vec![] };
        let err = source.measure(&target, &spec).await.expect_err("stopped");
        assert_eq!(err.metric_label(), "unreachable", "{err}");

        let prometheus = tokio::task::spawn_blocking(move || {
            prometheus.restart().expect("restart");
            prometheus
        })
        .await
        .expect("restart task");
        wait_for(&address, &gauge, |v| v == Some(5.0)).await;
        let weights = source.proxy_weights(&target).await.expect("weights after restart");
        assert_eq!(weights.len(), 1, "{weights:?}");
        drop(prometheus);
    })
    .await
    .expect("test bounded");
}

/// A server that accepts but never answers is a timeout after the configured time.
#[tokio::test]
async fn silent_server_is_a_timeout() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            // Hold every connection open without a word.
            let held: Vec<TcpStream> = listener.incoming().flatten().collect();
            drop(held);
        });
        let timeout = Duration::from_millis(300);
        let source = PrometheusSource::new(timeout);
        let spec = MeasureSpec { range: RANGE, custom: vec![] };
        let err = source.measure(&target(&address, "silent"), &spec).await.expect_err("silent");
        assert!(
            matches!(&err, AnalysisError::Timeout { after, .. } if *after == timeout),
            "{err:?}"
        );
        assert!(err.to_string().contains(&address), "{err}");
        let err = source.proxy_weights(&target(&address, "silent")).await.expect_err("silent");
        assert_eq!(err.metric_label(), "timeout", "{err}");
    })
    .await
    .expect("test bounded");
}

/// Something in front of Prometheus answering 503 is an HTTP error quoting its words.
#[tokio::test]
async fn http_error_status_is_named() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                respond(stream, "503 Service Unavailable", "no healthy upstream");
            }
        });
        let source = PrometheusSource::new(Duration::from_secs(30));
        let err = source.proxy_weights(&target(&address, "http")).await.expect_err("503");
        assert!(
            matches!(&err, AnalysisError::Http { status: 503, detail, .. } if detail == "no healthy upstream"),
            "{err:?}"
        );
        assert!(err.to_string().contains(&address), "{err}");
    })
    .await
    .expect("test bounded");
}

/// An address that is not a URL is named with the field to fix.
#[tokio::test]
async fn unusable_address_is_named() {
    let source = PrometheusSource::new(Duration::from_secs(1));
    let err = source.proxy_weights(&target("not a url", "x")).await.expect_err("invalid");
    assert_eq!(err.metric_label(), "invalid_address", "{err}");
    assert!(err.to_string().contains("spec.analysis.prometheus.address"), "{err}");
}
