//! `mockllm-probe`: the streaming half of `make bench`. The load tool (wrk) measures plain
//! request latency and throughput; this measures what it cannot: time to first token and whole
//! stream time of SSE responses, and whether many concurrent streams all finish. Prints one JSON
//! line per run.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use modelrollout_api::parse_duration;
use serde_json::json;
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(name = "mockllm-probe", version)]
struct Args {
    /// Chat completions URL to stream from, e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8081/v1/chat/completions")]
    url: String,
    /// The `model` sent in the request body.
    #[arg(long, global = true, default_value = "bench")]
    model: String,
    /// Sent as `Authorization: Bearer` (LiteLLM wants its master key; the mock ignores it).
    #[arg(
        long,
        global = true,
        env = "BENCH_API_KEY",
        default_value = "sk-bench",
        hide_env_values = true
    )]
    api_key: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sequential streams on one keep-alive connection: TTFT and whole-stream time percentiles.
    Stream {
        /// Measured streams.
        #[arg(long, default_value_t = 300)]
        requests: usize,
        /// Streams sent first and not measured.
        #[arg(long, default_value_t = 30)]
        warmup: usize,
    },
    /// Many streams at once, one connection each: how many finish, fail or stall.
    Concurrent {
        #[arg(long, default_value_t = 1024)]
        streams: usize,
        /// A stream not finished by then counts as stalled.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        deadline: Duration,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mockllm-probe: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mockllm-probe: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where to connect and what to send.
#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
    body: Bytes,
    authorization: String,
}

impl Target {
    fn new(url: &str, model: &str, api_key: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse().with_context(|| format!("--url {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url {url:?}: only http:// is supported (the bench runs on loopback)");
        }
        let authority = uri.authority().context("--url has no host:port")?.to_string();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&authority)
            .ok()
            .and_then(|mut addrs| addrs.next())
            .with_context(|| format!("--url host {authority} does not resolve"))?;
        let body = json!({
            "model": model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Say something."}],
        });
        Ok(Self {
            addr,
            authority,
            path: uri.path_and_query().map_or("/".to_owned(), |pq| pq.as_str().to_owned()),
            body: body.to_string().into(),
            authorization: format!("Bearer {api_key}"),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        Ok(Request::post(&self.path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("authorization", &self.authorization)
            .body(Full::new(self.body.clone()))?)
    }
}

/// The timings of one stream.
#[derive(Debug)]
struct StreamTiming {
    /// From sending the request to the first body bytes (the first chunk).
    ttft: Duration,
    /// From sending the request to the end of the body.
    total: Duration,
    /// Longest pause between two body frames.
    max_gap: Duration,
    /// The body ended with `data: [DONE]`.
    done: bool,
}

async fn one_stream(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
) -> anyhow::Result<StreamTiming> {
    sender.ready().await?;
    let start = Instant::now();
    let response = sender.send_request(target.request()?).await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!("{} answered {status}: {}", target.path, String::from_utf8_lossy(&body));
    }
    let mut body = response.into_body();
    let mut ttft = None;
    let mut last = start;
    let mut max_gap = Duration::ZERO;
    let mut tail = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        let now = Instant::now();
        if ttft.is_none() {
            ttft = Some(now - start);
        } else {
            max_gap = max_gap.max(now - last);
        }
        last = now;
        // Keep only the end: enough to see `[DONE]` even when it is split across frames.
        tail.extend_from_slice(&data);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
    }
    let total = start.elapsed();
    Ok(StreamTiming {
        ttft: ttft.unwrap_or(total),
        total,
        max_gap,
        done: tail.ends_with(b"data: [DONE]\n\n"),
    })
}

fn percentile(sorted: &[Duration], percent: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e6
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let target = Target::new(&args.url, &args.model, &args.api_key)?;
    match args.command {
        Command::Stream { requests, warmup } => {
            let mut sender = target.connect().await?;
            let mut ttfts = Vec::with_capacity(requests);
            let mut totals = Vec::with_capacity(requests);
            let mut incomplete = 0;
            for index in 0..warmup + requests {
                if sender.is_closed() {
                    sender = target.connect().await?;
                }
                let timing = one_stream(&mut sender, &target).await?;
                if index >= warmup {
                    ttfts.push(timing.ttft);
                    totals.push(timing.total);
                    incomplete += usize::from(!timing.done);
                }
            }
            ttfts.sort();
            totals.sort();
            Ok(json!({
                "requests": requests,
                "incomplete": incomplete,
                "ttft_p50_us": percentile(&ttfts, 50.0),
                "ttft_p99_us": percentile(&ttfts, 99.0),
                "total_p50_us": percentile(&totals, 50.0),
                "total_p99_us": percentile(&totals, 99.0),
            }))
        }
        Command::Concurrent { streams, deadline } => {
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..streams {
                let target = target.clone();
                tasks.spawn(async move {
                    let attempt = async {
                        let mut sender = target.connect().await?;
                        one_stream(&mut sender, &target).await
                    };
                    tokio::time::timeout_at((start + deadline).into(), attempt).await
                });
            }
            let (mut completed, mut failed, mut stalled) = (0, 0, 0);
            let mut max_gap = Duration::ZERO;
            let mut first_error = None;
            while let Some(joined) = tasks.join_next().await {
                match joined.context("a probe task panicked")? {
                    Err(_elapsed) => stalled += 1,
                    Ok(Err(error)) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                    Ok(Ok(timing)) if timing.done => {
                        completed += 1;
                        max_gap = max_gap.max(timing.max_gap);
                    }
                    Ok(Ok(_)) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| "stream ended without [DONE]".to_owned());
                    }
                }
            }
            Ok(json!({
                "streams": streams,
                "completed": completed,
                "failed": failed,
                "stalled": stalled,
                "max_gap_ms": max_gap.as_secs_f64() * 1e3,
                "wall_ms": start.elapsed().as_secs_f64() * 1e3,
                "first_error": first_error,
            }))
        }
    }
}
