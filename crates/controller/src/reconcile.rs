//! The reconciler: thin. It asks the decision core what to do, fetches what the core needs from
//! Prometheus, and carries out the decision in an order that survives a kill at any moment:
//! Events first (named so a repeat is a no-op), then the status (the source of truth), then the
//! routing document (which always follows the status, so a restart repairs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use modelrollout_analysis::{MetricsSource, Target};
use modelrollout_api::ModelRollout;
use tracing::{Instrument, info, info_span, warn};

use crate::decision::{Decision, Need, Observations, Outcome, decide};
use crate::metrics::{Metrics, Stopwatch};
use crate::{Error, Result, events, routing, status};

/// Finalizer that removes the rollout's routing key before the rollout goes away.
pub const FINALIZER: &str = "rollouts.modelops.io/routing-cleanup";

/// What every reconcile shares.
pub struct Context<M> {
    /// The Kubernetes client.
    pub client: Client,
    /// Where measurements come from (Prometheus in production).
    pub source: M,
    /// The controller's own metrics.
    pub metrics: Arc<Metrics>,
    /// This replica's name, written into Events (`reportingInstance`).
    pub instance: String,
}

impl<M> std::fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// Runs the controller until `shutdown` resolves; reconciles in flight finish first.
pub async fn run<M: MetricsSource + 'static>(
    context: Arc<Context<M>>,
    namespace: Option<&str>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let rollouts: Api<ModelRollout> = match namespace {
        Some(namespace) => Api::namespaced(context.client.clone(), namespace),
        None => Api::all(context.client.clone()),
    };
    Controller::new(rollouts, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "reconcile failed");
            }
        })
        .await;
}

/// One reconcile of one rollout: finalizer bookkeeping, then apply or clean up.
pub async fn reconcile<M: MetricsSource>(
    rollout: Arc<ModelRollout>,
    context: Arc<Context<M>>,
) -> Result<Action> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let span = info_span!("reconcile", rollout = %format!("{namespace}/{name}"));
    let api: Api<ModelRollout> = Api::namespaced(context.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, rollout, |event| async {
        match event {
            Finalizer::Apply(rollout) => apply(&rollout, &context).await,
            Finalizer::Cleanup(rollout) => cleanup(&rollout, &context).await,
        }
    })
    .instrument(span)
    .await;
    result.map_err(|error| match error {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => {
            Error::Finalizer { rollout: format!("{namespace}/{name}"), detail: other.to_string() }
        }
    })
}

/// Retries a failed reconcile after a short, fixed pause (the API server or Prometheus may
/// come back at any moment; the work queue already spreads retries of many rollouts).
pub fn error_policy<M>(
    rollout: Arc<ModelRollout>,
    error: &Error,
    context: Arc<Context<M>>,
) -> Action {
    context.metrics.reconcile_failed(error.metric_label());
    warn!(rollout = %format!("{}/{}", rollout.namespace().unwrap_or_default(), rollout.name_any()), %error, "will retry in 5s");
    Action::requeue(Duration::from_secs(5))
}

async fn apply<M: MetricsSource>(rollout: &ModelRollout, context: &Context<M>) -> Result<Action> {
    let mut watch = Stopwatch::default();
    let now = Timestamp::now();
    let decision = decide_with_observations(rollout, now, context, &mut watch).await?;
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    events::publish(&context.client, rollout, &decision.events, &context.instance, now).await?;
    let written = status::apply(&context.client, rollout, &decision.status).await?;
    let weight = decision.status.canary_weight.and_then(|w| u8::try_from(w).ok()).unwrap_or(0);
    let phase = decision.status.phase.unwrap_or_default();
    if decision.write_routing {
        routing::apply(&context.client, rollout, weight, phase).await?;
    }
    context.metrics.rollout(&namespace, &name, phase, weight);
    context.metrics.reconciled(watch.elapsed());
    if written || !decision.events.is_empty() {
        let analysis = decision.status.last_analysis.as_ref();
        info!(
            phase = %phase,
            weight,
            step = decision.status.current_step_index,
            verdict = analysis.map(|a| a.verdict.as_str()),
            canary_requests = analysis.map(|a| a.canary.requests),
            canary_error_rate = analysis.and_then(|a| a.canary.error_rate),
            stable_error_rate = analysis.and_then(|a| a.stable.error_rate),
            canary_p95 = analysis.and_then(|a| a.canary.latency_p95_seconds),
            events = %decision.events.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>().join(","),
            "{}",
            decision.status.message.as_deref().unwrap_or_default()
        );
    }
    Ok(match decision.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Calls the decision core until it has what it needs (each observation is made at most once).
async fn decide_with_observations<M: MetricsSource>(
    rollout: &ModelRollout,
    now: Timestamp,
    context: &Context<M>,
    watch: &mut Stopwatch,
) -> Result<Decision> {
    let target = Target {
        prometheus: rollout.spec.analysis.prometheus.address.clone(),
        rollout: rollout.name_any(),
        namespace: rollout.namespace().unwrap_or_default(),
    };
    let mut observed = Observations::default();
    let object = || format!("{}/{}", target.namespace, target.rollout);
    loop {
        match decide(rollout, now, &observed) {
            Outcome::Decided(decision) => return Ok(*decision),
            Outcome::Need(Need::ProxyWeights) => {
                if observed.proxies.is_some() {
                    return Err(Error::Loop { rollout: object(), need: "proxy weights" });
                }
                let started = Instant::now();
                let result = context.source.proxy_weights(&target).await;
                watch.exclude(started.elapsed());
                context.metrics.analysed(started, result.as_ref().err().map(|e| e.metric_label()));
                observed.proxies = Some(result.map_err(|e| e.to_string()));
            }
            Outcome::Need(Need::Measurements(spec)) => {
                if observed.measurements.is_some() {
                    return Err(Error::Loop { rollout: object(), need: "measurements" });
                }
                let started = Instant::now();
                let result = context.source.measure(&target, &spec).await;
                watch.exclude(started.elapsed());
                context.metrics.analysed(started, result.as_ref().err().map(|e| e.metric_label()));
                observed.measurements = Some(result.map_err(|e| e.to_string()));
            }
            Outcome::Need(Need::Tokens(range)) => {
                if observed.tokens.is_some() {
                    return Err(Error::Loop { rollout: object(), need: "token counts" });
                }
                let started = Instant::now();
                let result = context.source.tokens(&target, range).await;
                watch.exclude(started.elapsed());
                context.metrics.analysed(started, result.as_ref().err().map(|e| e.metric_label()));
                observed.tokens = Some(result.map_err(|e| e.to_string()));
            }
        }
    }
}

async fn cleanup<M: MetricsSource>(rollout: &ModelRollout, context: &Context<M>) -> Result<Action> {
    routing::remove(&context.client, rollout).await?;
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    context.metrics.forget(&namespace, &name);
    info!(config_map = %rollout.spec.routing.config_map_ref.name, "rollout deleted: routing key removed, the proxies serve the alias from stable");
    Ok(Action::await_change())
}
