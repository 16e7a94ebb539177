//! `modelrollout-mockllm`: runs the mock OpenAI-compatible upstream with knobs from flags or
//! environment variables; `/control/config` changes them while it runs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use modelrollout_api::parse_duration;
use modelrollout_mockllm::{MockConfig, MockServer, ServerOptions};

/// A fault-injectable OpenAI-compatible upstream for tests, demos and benchmarks.
///
/// Durations are written 150ms, 2s, 1m30s. Change knobs at runtime with
/// `curl -X PATCH localhost:8081/control/config -d '{"errorRate":0.2}'`.
#[derive(Debug, Parser)]
#[command(name = "modelrollout-mockllm", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "MOCKLLM_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Model name to answer as; unset echoes the request's model.
    #[arg(long, env = "MOCKLLM_MODEL")]
    model: Option<String>,
    /// Fixed delay before every response head.
    #[arg(long, env = "MOCKLLM_LATENCY", value_parser = parse_duration, default_value = "0s")]
    latency: Duration,
    /// Extra random delay, uniform in 0..jitter.
    #[arg(long, env = "MOCKLLM_LATENCY_JITTER", value_parser = parse_duration, default_value = "0s")]
    latency_jitter: Duration,
    /// Share (0..1) of requests answered with --error-status.
    #[arg(long, env = "MOCKLLM_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// HTTP status of injected errors (500, 429, 503, ...).
    #[arg(long, env = "MOCKLLM_ERROR_STATUS", default_value_t = 500)]
    error_status: u16,
    /// Retry-After sent with injected 429 and 503 answers.
    #[arg(long, env = "MOCKLLM_RETRY_AFTER", value_parser = parse_duration)]
    retry_after: Option<Duration>,
    /// Streams: delay before the first chunk.
    #[arg(long, visible_alias = "ttft", env = "MOCKLLM_TIME_TO_FIRST_TOKEN", value_parser = parse_duration, default_value = "0s")]
    time_to_first_token: Duration,
    /// Streams: delay between chunks.
    #[arg(long, env = "MOCKLLM_INTER_CHUNK_DELAY", value_parser = parse_duration, default_value = "0s")]
    inter_chunk_delay: Duration,
    /// Streams: number of content chunks.
    #[arg(long, env = "MOCKLLM_CHUNKS", default_value_t = MockConfig::default().chunks)]
    chunks: u32,
    /// Prompt tokens reported in usage.
    #[arg(long, env = "MOCKLLM_PROMPT_TOKENS", default_value_t = MockConfig::default().prompt_tokens)]
    prompt_tokens: u32,
    /// Completion tokens reported in usage.
    #[arg(long, env = "MOCKLLM_COMPLETION_TOKENS", default_value_t = MockConfig::default().completion_tokens)]
    completion_tokens: u32,
    /// Share (0..1) of streams cut half-way without [DONE].
    #[arg(long, env = "MOCKLLM_ABORT_RATE", default_value_t = 0.0)]
    abort_rate: f64,
    /// Seed for the random knobs, for reproducible runs.
    #[arg(long, env = "MOCKLLM_SEED")]
    seed: Option<u64>,
    /// Model names GET /v1/models lists, comma-separated (default: --model, or mockllm).
    #[arg(long, env = "MOCKLLM_LISTED_MODELS", value_delimiter = ',')]
    listed_models: Option<Vec<String>>,
    /// API key every request must send as "Authorization: Bearer <key>" (else 401).
    #[arg(long, env = "MOCKLLM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Keep the last N requests for GET /control/requests (0 keeps none, as benchmarks want).
    #[arg(long, env = "MOCKLLM_RECORD_LIMIT", default_value_t = 1000)]
    record_limit: usize,
    /// Tokio worker threads (default: one per core).
    #[arg(long, env = "MOCKLLM_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

impl Args {
    fn config(&self) -> MockConfig {
        MockConfig {
            model: self.model.clone(),
            latency: self.latency,
            latency_jitter: self.latency_jitter,
            error_rate: self.error_rate,
            error_status: self.error_status,
            retry_after: self.retry_after,
            time_to_first_token: self.time_to_first_token,
            inter_chunk_delay: self.inter_chunk_delay,
            chunks: self.chunks,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            abort_rate: self.abort_rate,
            seed: self.seed,
            listed_models: self.listed_models.clone(),
            api_key: self.api_key.clone(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = args.config();
    if let Err(error) = config.validate() {
        eprintln!(
            "modelrollout-mockllm: {error} (check the matching --flag or MOCKLLM_* variable)"
        );
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("modelrollout-mockllm: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("modelrollout-mockllm: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, config: MockConfig) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};

    // Signals are watched before the address is printed: whoever reads it may send SIGTERM next.
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let options = ServerOptions { record_limit: Some(args.record_limit) };
    let server = MockServer::start_with(config, args.listen, options)
        .await
        .with_context(|| format!("cannot listen on {} (--listen / MOCKLLM_LISTEN)", args.listen))?;
    println!("modelrollout-mockllm listening on {}", server.base_url());
    tracing::info!(addr = %server.addr(), "serving");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
    }
    server.shutdown().await;
    Ok(())
}
