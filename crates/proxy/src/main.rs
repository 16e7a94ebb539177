//! `modelrollout-proxy`: parse flags, start, wait for SIGTERM/SIGINT, drain, exit 0.

use std::process::ExitCode;

use clap::Parser;
use modelrollout_proxy::config::ProxyArgs;

fn main() -> ExitCode {
    let args = match ProxyArgs::try_parse() {
        Ok(args) => args,
        Err(error) if !error.use_stderr() => {
            // --help / --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // clap's first paragraph (up to the usage block), folded into one line.
            let rendered = error.to_string();
            let paragraph: Vec<&str> =
                rendered.lines().map(str::trim).take_while(|line| !line.is_empty()).collect();
            let line = paragraph.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("modelrollout-proxy: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = init_logging(&args.log, &args.log_format) {
        eprintln!(
            "modelrollout-proxy: --log {:?} is not a log filter ({error}); use e.g. info or modelrollout_proxy=debug",
            args.log
        );
        return ExitCode::from(2);
    }
    // One process-wide TLS provider, so the Kubernetes client and the upstream client agree.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let worker_threads = args.worker_threads;
    let config = args.into_config();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        runtime.worker_threads(worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("modelrollout-proxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handle = match modelrollout_proxy::start(config).await {
            Ok(handle) => handle,
            Err(error) => {
                eprintln!("modelrollout-proxy: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(error) = wait_for_signal().await {
            eprintln!("modelrollout-proxy: cannot listen for signals: {error}");
            return ExitCode::FAILURE;
        }
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn init_logging(filter: &str, format: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
