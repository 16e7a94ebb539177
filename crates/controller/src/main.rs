//! `modelrollout-controller`: flags, logging, leader election, then the reconcile loop.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use modelrollout_analysis::PrometheusSource;
use modelrollout_controller::config::{Config, LogFormat};
use modelrollout_controller::leader::{LeaderElector, LeaseSettings};
use modelrollout_controller::metrics::Metrics;
use modelrollout_controller::preflight::Prober;
use modelrollout_controller::reconcile::{self, Context};
use modelrollout_controller::routing;
use modelrollout_controller::server::{self, Health};
use tokio::sync::watch;
use tracing::{error, info, warn};

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    // One TLS provider for every client (kube, Prometheus): ring, the workspace's choice.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(message) = init_logging(&config) {
        eprintln!("modelrollout-controller: {message}");
        return ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level).map_err(|e| {
        format!(
            "--log-level {:?} is not a log filter ({e}); use e.g. info or debug",
            config.log_level
        )
    })?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = server::bind(config.metrics_address).await?;
    tokio::spawn(server::serve(listener, metrics.clone(), health.clone()));

    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server (from KUBECONFIG, ~/.kube/config or the in-cluster service account)")?;
    let version =
        client.apiserver_version().await.context("asking the API server for its version")?;
    health.ready.store(true, Ordering::Relaxed);
    let identity = config
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_else(|| format!("modelrollout-controller-{}", std::process::id()));
    info!(api_server = %version.git_version, identity, namespace = config.namespace.as_deref().unwrap_or("<all>"), "starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    let elector = config.leader_elect.then(|| {
        let namespace = config.lease_namespace.clone().unwrap_or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .map(|n| n.trim().to_owned())
                .unwrap_or_else(|_| "default".to_owned())
        });
        LeaderElector::new(
            client.clone(),
            LeaseSettings {
                namespace,
                name: config.lease_name.clone(),
                identity: identity.clone(),
                duration: config.lease_duration,
                renew_every: config.lease_renew,
            },
        )
    });
    if let Some(elector) = &elector {
        if !wait_for_leadership(elector, stop_rx.clone()).await? {
            info!("stopped while standing by");
            return Ok(());
        }
        metrics.set_leader(true);
        tokio::spawn(keep_leadership(elector.clone(), metrics.clone()));
    } else {
        metrics.set_leader(true);
    }

    let context = Arc::new(Context {
        config_maps: routing::GroupCommit::new(routing::ApiStore(client.clone())),
        client,
        source: PrometheusSource::new(config.prometheus_timeout),
        metrics: metrics.clone(),
        instance: identity,
        written: Default::default(),
        default_prometheus: config.prometheus_address.clone(),
        preflight: Prober::new(config.preflight_timeout).map_err(anyhow::Error::msg)?,
    });
    let mut shutdown = stop_rx.clone();
    reconcile::run(context, config.namespace.as_deref(), config.concurrency, async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        info!("shutting down: finishing the reconciles in flight");
    })
    .await;
    if let Some(elector) = &elector {
        match elector.release().await {
            Ok(()) => info!("lease released"),
            Err(error) => {
                warn!(%error, "could not release the lease; a standby takes over when it expires")
            }
        }
    }
    Ok(())
}

/// Waits until this replica holds the Lease (true) or a stop was asked for (false).
async fn wait_for_leadership(
    elector: &LeaderElector,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let settings = elector.settings().clone();
    let mut announced = false;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => {
                info!(lease = %format!("{}/{}", settings.namespace, settings.name), "leading");
                return Ok(true);
            }
            Ok(false) if !announced => {
                info!(lease = %format!("{}/{}", settings.namespace, settings.name), "standing by: another replica leads");
                announced = true;
            }
            Ok(false) => {}
            Err(error) => warn!(%error, "leader election"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.renew_every) => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(false),
        }
    }
}

/// Renews the Lease; if it cannot for a whole lease duration, another replica may already act,
/// so this one exits at once rather than act twice (its supervisor restarts it as a standby).
async fn keep_leadership(elector: LeaderElector, metrics: Arc<Metrics>) {
    let settings = elector.settings().clone();
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(settings.renew_every).await;
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                metrics.set_leader(false);
                error!("lost the lease to another replica: exiting so that only one acts");
                std::process::exit(1);
            }
            Err(error) => {
                warn!(%error, "renewing the lease");
                if last_renewed.elapsed() >= settings.duration {
                    metrics.set_leader(false);
                    error!(
                        "could not renew the lease for {:?}: exiting so that only one acts",
                        settings.duration
                    );
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
