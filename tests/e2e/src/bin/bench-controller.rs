//! `make bench-controller`: the controller against many rollouts and the proxy's reaction time,
//! on the local control plane. Prints a Markdown section for docs/benchmarks.md.
//!
//! 1. ConfigMap write → proxy using it: a routing key is rewritten with a new weight, and the
//!    proxy's `gray_release_canary_weight` is polled every 5 ms until it shows the new weight.
//! 2. N rollouts (default 10 000, `BENCH_ROLLOUTS`) on the local API server, in M ConfigMaps
//!    (default 100, `BENCH_CONFIG_MAPS`; `BENCH_LAYOUT=interleaved`, the default: rollout i in
//!    ConfigMap i mod M, so rollouts next to each other in name order never share one;
//!    `grouped`: each run of N/M in name order
//!    shares one, as in a list of rollouts from namespaces with one proxy ConfigMap each),
//!    analysis pointed at a closed port so Prometheus answers at once (reconcile time is measured
//!    without Prometheus anyway), both arms at one in-process mock model server so each
//!    preflight passes at once: the time until every rollout has a status, the controller's
//!    RSS, and its reconcile duration p50/p99 from its own histogram, both for the start (every
//!    rollout new) and for the following minute (the looks the rollouts ask for themselves).
//!    The API server's own request counts and summed durations from the controller's start until
//!    every rollout has a status, by verb and resource: its work, which the start waits on.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use modelrollout_api::ModelRollout;
use modelrollout_e2e::cluster_with_crd;
use modelrollout_e2e::process::Supervised;
use modelrollout_e2e::stack::{BoxError, binary, free_port, get_text};
use modelrollout_mockllm::{MockConfig, MockServer, ServerOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let count: usize =
        std::env::var("BENCH_ROLLOUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let cluster = cluster_with_crd().map_err(|e| e.to_string())?;
    let client = cluster.client().await?;
    let dir = std::env::temp_dir().join(format!("bench-controller-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("## Controller (`make bench-controller`)\n");
    println!("Local control plane (etcd + kube-apiserver on loopback), {} build.\n", profile());

    // --- 1. ConfigMap write → proxy ---
    let namespace = cluster.namespace()?;
    let ns = namespace.name().to_owned();
    let admin = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(binary("modelrollout-proxy")?);
    command
        .args(["--listen", &api, "--admin-listen", &admin, "--configmap", &format!("{ns}/routes")])
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path());
    let _proxy = Supervised::spawn("proxy", &command, &dir.join("proxy.log"))?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut delays = Vec::new();
    for round in 0..41u32 {
        let weight = (round * 7) % 101;
        let document = json!({"version": 1, "rollout": "bench", "namespace": ns, "generation": 1, "model": "m",
            "stable": {"model": "a", "endpoint": "http://127.0.0.1:1/v1"},
            "canary": {"model": "b", "endpoint": "http://127.0.0.1:2/v1"},
            "canaryWeight": weight, "phase": "Progressing"});
        let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "routes"},
            "data": {"bench.json": document.to_string()}});
        let written = Instant::now();
        configmaps
            .patch("routes", &PatchParams::apply("bench").force(), &Patch::Apply(&patch))
            .await?;
        let deadline = written + Duration::from_secs(30);
        loop {
            let text = get_text(&format!("http://{admin}/metrics")).await.unwrap_or_default();
            let seen = text
                .lines()
                .filter(|l| {
                    l.starts_with("gray_release_canary_weight{") && l.contains("rollout=\"bench\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .any(|w| w == f64::from(weight));
            if seen {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the proxy never showed weight {weight}").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if round > 0 {
            // The first round includes the proxy's start.
            delays.push(written.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    delays.sort();
    println!(
        "| ConfigMap write → proxy uses it (API watch, {} writes) | p50 | p99 | max |",
        delays.len()
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| delay | {} | {} | {} |\n",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        ms(*delays.last().unwrap_or(&Duration::ZERO))
    );

    // --- 2. many rollouts ---
    let namespace = cluster.namespace()?;
    let ns = namespace.name().to_owned();
    let rollouts: Api<ModelRollout> = Api::namespaced(client.clone(), &ns);
    // One mock model server for every arm, listing both models: each new rollout's preflight
    // (GET /models per arm) passes at once, as with healthy real endpoints.
    let models = MockServer::start_with(
        MockConfig { listed_models: Some(vec!["a".into(), "b".into()]), ..MockConfig::default() },
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ServerOptions { record_limit: Some(0) },
    )
    .await?;
    let endpoint = models.base_url();
    let grouped = std::env::var("BENCH_LAYOUT").is_ok_and(|v| v == "grouped");
    let config_maps: usize =
        std::env::var("BENCH_CONFIG_MAPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100).max(1);
    let per_config_map = count.div_ceil(config_maps).max(1);
    let config_map = |i: usize| if grouped { i / per_config_map } else { i % config_maps };
    let created = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let rollouts = rollouts.clone();
            let endpoint = endpoint.clone();
            async move {
                let rollout: ModelRollout = serde_json::from_value(json!({
                    "apiVersion": "rollouts.modelops.io/v1alpha1", "kind": "ModelRollout",
                    "metadata": {"name": format!("r{i:05}")},
                    "spec": {"model": format!("alias-{i}"),
                        "stable": {"model": "a", "endpoint": endpoint},
                        "canary": {"model": "b", "endpoint": endpoint},
                        "routing": {"configMapRef": {"name": format!("routes-{:02}", config_map(i))}},
                        "strategy": {"steps": [{"setWeight": 10}, {"setWeight": 100}]},
                        "analysis": {"prometheus": {"address": "http://127.0.0.1:1"}}}
                }))?;
                rollouts.create(&PostParams::default(), &rollout).await?;
                Ok::<(), BoxError>(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, BoxError>>()?;
    println!(
        "Created {count} ModelRollouts in {:.1}s, {} in {config_maps} ConfigMaps.\n",
        created.elapsed().as_secs_f64(),
        if grouped { "grouped (runs of names)" } else { "interleaved (i mod M)" }
    );
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(binary("modelrollout-controller")?);
    command
        .args(["--namespace", &ns, "--metrics-address", &metrics_address, "--leader-elect=false"])
        .args(["--log-level", "warn", "--prometheus-timeout", "1s"])
        .env("KUBECONFIG", cluster.kubeconfig_path());
    let requests_before = api_server_requests(&client).await?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let controller = Supervised::spawn("controller", &command, &dir.join("controller.log"))?;
    // One watch (not repeated lists of 10 000 objects, which would load the API server the
    // controller is measured against) sees each rollout get its first status.
    let mut with_status = HashSet::new();
    let mut changes = watcher(rollouts.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1200);
    let all_done = loop {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Err(_) => {
                return Err(format!(
                    "only {} of {count} rollouts reconciled in 20 min\n{}",
                    with_status.len(),
                    controller.log_tail(20)
                )
                .into());
            }
            Ok(None) => return Err("the watch of the rollouts ended".into()),
            Ok(Some(Err(error))) => eprintln!("watching rollouts: {error}; the watch restarts"),
            Ok(Some(Ok(rollout))) => {
                if rollout.status.as_ref().and_then(|s| s.phase).is_some() {
                    with_status.insert(rollout.name_any());
                }
                if with_status.len() >= count {
                    break started.elapsed();
                }
            }
        }
    };
    drop(changes); // ends the watch before the quiet minute
    let requests_after = api_server_requests(&client).await?;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let metrics_url = format!("http://{metrics_address}/metrics");
    let burst = histogram_buckets(&get_text(&metrics_url).await?, RECONCILE_HISTOGRAM);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", controller.pid()))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_owned())
            .unwrap_or_default()
    };
    let all = histogram_buckets(&get_text(&metrics_url).await?, RECONCILE_HISTOGRAM);
    let steady: Vec<(f64, f64)> =
        all.iter().zip(&burst).map(|(&(le, total), &(_, before))| (le, total - before)).collect();
    let (p50, p99, reconciles) = quantiles(&burst);
    let (steady_p50, steady_p99, steady_reconciles) = quantiles(&steady);
    println!("| {count} rollouts | value | target |");
    println!("|---|---:|---:|");
    println!("| time until every rollout has a status | {:.1}s | — |", all_done.as_secs_f64());
    println!("| controller RSS 60 s later (VmRSS) | {} | ≤ 64 MB |", field("VmRSS:"));
    println!("| controller peak RSS (VmHWM) | {} | — |", field("VmHWM:"));
    println!(
        "| reconciles until then, per rollout | {reconciles} ({:.2}) | — |",
        reconciles as f64 / count as f64
    );
    println!("| reconcile duration p50 until then (Prometheus excluded) | {} | — |", ms(p50));
    println!("| reconcile duration p99 until then | {} | ≤ 20 ms |", ms(p99));
    println!("| reconciles in the next 60 s (requeued looks) | {steady_reconciles} | — |");
    println!(
        "| reconcile duration p50 / p99 in those 60 s | {} / {} | ≤ 20 ms |\n",
        ms(steady_p50),
        ms(steady_p99)
    );
    print_requests(&requests_before, &requests_after, count);
    // The machine may be shared: its load says how comparable two runs are.
    println!(
        "Load average (/proc/loadavg) at the controller's start: {}; when every rollout had a status: {}.\n",
        load_before.trim(),
        load_after.trim()
    );
    Ok(())
}

/// The API server's requests so far: (verb, resource[/subresource]) → (count, summed seconds).
type Requests = std::collections::BTreeMap<(String, String), (f64, f64)>;

/// Reads the API server's `/metrics` (every request it served, WATCH excluded: its duration is
/// the watch's lifetime).
async fn api_server_requests(client: &kube::Client) -> Result<Requests, BoxError> {
    let request = hyper::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut requests = Requests::new();
    for line in text.lines() {
        let (field, rest) = if let Some(rest) = line.strip_prefix("apiserver_request_total{") {
            (0, rest)
        } else if let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_sum{") {
            (1, rest)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let verb = label("verb");
        if verb == "WATCH" {
            continue;
        }
        let subresource = label("subresource");
        let mut resource = label("resource");
        if !subresource.is_empty() {
            resource = format!("{resource}/{subresource}");
        }
        let entry = requests.entry((verb, resource)).or_default();
        if field == 0 { entry.0 += value } else { entry.1 += value }
    }
    Ok(requests)
}

/// The requests made between two readings, with the writes per rollout.
fn print_requests(before: &Requests, after: &Requests, count: usize) {
    println!(
        "| API server requests until every rollout had a status | count | per rollout | mean |"
    );
    println!("|---|---:|---:|---:|");
    let (mut writes, mut write_seconds) = (0.0, 0.0);
    for ((verb, resource), (total, seconds)) in after {
        let (total_before, seconds_before) =
            before.get(&(verb.clone(), resource.clone())).copied().unwrap_or_default();
        let (n, s) = (total - total_before, seconds - seconds_before);
        if n < 1.0 {
            continue;
        }
        if matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            writes += n;
            write_seconds += s;
        }
        println!(
            "| {verb} {resource} | {n:.0} | {:.2} | {:.1} ms |",
            n / count as f64,
            s / n * 1000.0
        );
    }
    println!(
        "| all writes | {writes:.0} | {:.2} | {:.1} ms |\n",
        writes / count as f64,
        if writes > 0.0 { write_seconds / writes * 1000.0 } else { 0.0 }
    );
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The controller's reconcile duration histogram.
const RECONCILE_HISTOGRAM: &str = "modelrollout_controller_reconcile_duration_seconds";

/// The cumulative buckets (upper bound, count) of a Prometheus text histogram, sorted.
fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// p50 and p99 of cumulative buckets (linear inside a bucket, like histogram_quantile), and
/// their count.
fn quantiles(buckets: &[(f64, f64)]) -> (Duration, Duration, u64) {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let quantile = |q: f64| {
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Duration::from_secs_f64(lower.0);
                }
                let share =
                    if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 0.0 };
                return Duration::from_secs_f64(lower.0 + (le - lower.0) * share);
            }
            lower = (le, count);
        }
        Duration::ZERO
    };
    (quantile(0.5), quantile(0.99), total as u64)
}
