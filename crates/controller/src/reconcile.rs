//! The reconciler: thin. It asks the decision core what to do, fetches what the core needs from
//! Prometheus, and carries out the decision in an order that survives a kill at any moment:
//! Events first (named so a repeat is a no-op), then the status (the source of truth), then the
//! routing document (which always follows the status, so a restart repairs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::GetParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
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
    /// The routing documents this process has written, so unchanged ones are not rewritten.
    pub written: routing::Written,
    /// The routing ConfigMaps, written in groups (one write carries the keys that queued for it).
    pub config_maps: routing::GroupCommit,
    /// Prometheus for rollouts that name none (`--prometheus-address`).
    pub default_prometheus: Option<String>,
    /// Asks the arms' endpoints for their model lists before traffic moves.
    pub preflight: crate::preflight::Prober,
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
    // An Api of PartialObjectMeta makes metadata-only requests.
    let rollouts: Api<PartialObjectMeta<ModelRollout>> = match namespace {
        Some(namespace) => Api::namespaced(context.client.clone(), namespace),
        None => Api::all(context.client.clone()),
    };
    // The cache keeps only the metadata of every rollout (name, generation, annotations, ...),
    // without managedFields and kubectl's last-applied copy: what the watch filter needs. A
    // reconcile reads the whole rollout from the API server's cache. At 10 000 rollouts a cache
    // of whole rollouts (spec, conditions, history) held most of the controller's memory.
    let (reader, writer) = reflector::store();
    // The initial list comes in pages of 500 (kube's default), not as one response holding
    // every rollout at once.
    let triggers = watcher(rollouts, watcher::Config::default())
        .default_backoff()
        .modify(|meta: &mut PartialObjectMeta<ModelRollout>| {
            meta.managed_fields_mut().clear();
            meta.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(changed_by_others, Default::default());
    Controller::for_stream(triggers, reader)
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

/// One reconcile of one rollout: read it, finalizer bookkeeping, then apply or clean up.
pub async fn reconcile<M: MetricsSource>(
    seen: Arc<PartialObjectMeta<ModelRollout>>,
    context: Arc<Context<M>>,
) -> Result<Action> {
    let namespace = seen.namespace().unwrap_or_default();
    let name = seen.name_any();
    let span = info_span!("reconcile", rollout = %format!("{namespace}/{name}"));
    let api: Api<ModelRollout> = Api::namespaced(context.client.clone(), &namespace);
    // At least as new as the watch event (served from the API server's cache, not etcd).
    let at = GetParams::at(seen.resource_version().as_deref().unwrap_or("0"));
    let rollout = match api.get_with(&name, &at).await {
        Ok(rollout) => Arc::new(rollout),
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(Action::await_change()),
        Err(source) => return Err(Error::Read { rollout: format!("{namespace}/{name}"), source }),
    };
    // A new rollout gets the finalizer first; the rollout is then reconciled in the same pass
    // instead of on the watch event of that write (which `changed_by_others` ignores anyway).
    let adding_finalizer = rollout.meta().deletion_timestamp.is_none()
        && !rollout.finalizers().iter().any(|f| f == FINALIZER);
    let result = finalizer(&api, FINALIZER, rollout.clone(), |event| async {
        match event {
            Finalizer::Apply(rollout) => apply(&rollout, &context).await,
            Finalizer::Cleanup(rollout) => cleanup(&rollout, &context).await,
        }
    })
    .instrument(span.clone())
    .await;
    if adding_finalizer && result.is_ok() {
        return apply(&rollout, &context).instrument(span).await;
    }
    result.map_err(|error| match error {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => {
            Error::Finalizer { rollout: format!("{namespace}/{name}"), detail: other.to_string() }
        }
    })
}

/// kubectl's client-side copy of the last applied object, dropped from the cache.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What makes a watch event worth a reconcile: a change by someone else (the spec, an
/// annotation such as promote or abort, a deletion) or a rollout not seen before. The
/// controller's own status and finalizer writes are not: it asks for its next look itself
/// (`requeue_after`), so reconciling on them only repeated the look it had just made.
fn changed_by_others(rollout: &PartialObjectMeta<ModelRollout>) -> Option<u64> {
    let meta = rollout.meta();
    let mut parts: Vec<&str> = vec![meta.uid.as_deref().unwrap_or_default()];
    let generation = meta.generation.unwrap_or_default().to_string();
    parts.push(&generation);
    parts.push(if meta.deletion_timestamp.is_some() { "deleting" } else { "" });
    for (key, value) in rollout.annotations() {
        parts.extend([key.as_str(), value.as_str()]);
    }
    Some(crate::fnv64(parts))
}

/// Retries a failed reconcile after a short, fixed pause (the API server or Prometheus may
/// come back at any moment; the work queue already spreads retries of many rollouts).
pub fn error_policy<M>(
    rollout: Arc<PartialObjectMeta<ModelRollout>>,
    error: &Error,
    context: Arc<Context<M>>,
) -> Action {
    context.metrics.reconcile_failed(error.metric_label());
    warn!(rollout = %format!("{}/{}", rollout.namespace().unwrap_or_default(), rollout.name_any()), %error, "will retry in 5s");
    Action::requeue(Duration::from_secs(5))
}

async fn apply<M: MetricsSource>(rollout: &ModelRollout, context: &Context<M>) -> Result<Action> {
    let mut watch = Stopwatch::default();
    let with_default;
    let rollout = match (&rollout.spec.analysis.prometheus.address, &context.default_prometheus) {
        (None, Some(address)) => {
            let mut filled = rollout.clone();
            filled.spec.analysis.prometheus.address = Some(address.clone());
            with_default = filled;
            &with_default
        }
        _ => rollout,
    };
    let now = Timestamp::now();
    let decision = decide_with_observations(rollout, now, context, &mut watch).await?;
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    events::publish(&context.client, rollout, &decision.events, &context.instance, now).await?;
    let written = status::apply(&context.client, rollout, &decision.status).await?;
    let weight = decision.status.canary_weight.and_then(|w| u8::try_from(w).ok()).unwrap_or(0);
    let phase = decision.status.phase.unwrap_or_default();
    if decision.write_routing {
        // Proxies not (yet) reporting the weight: write again even if unchanged, in case the
        // ConfigMap was lost or edited by hand.
        let unconfirmed = decision.status.conditions.iter().any(|c| {
            c.type_ == modelrollout_api::ConditionType::RoutingApplied.as_str()
                && c.status == "False"
        });
        let config_maps = &context.config_maps;
        routing::apply(config_maps, rollout, weight, phase, &context.written, unconfirmed).await?;
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
        prometheus: rollout.spec.analysis.prometheus.address.clone().unwrap_or_default(),
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
            Outcome::Need(Need::Tally(spec)) => {
                if observed.tally.is_some() {
                    return Err(Error::Loop { rollout: object(), need: "tally" });
                }
                let started = Instant::now();
                let result = context.source.tally(&target, &spec).await;
                watch.exclude(started.elapsed());
                context.metrics.analysed(started, result.as_ref().err().map(|e| e.metric_label()));
                observed.tally = Some(result.map_err(|e| e.to_string()));
            }
            Outcome::Need(Need::Preflight) => {
                if observed.preflight.is_some() {
                    return Err(Error::Loop { rollout: object(), need: "preflight" });
                }
                // The endpoints' time is theirs, like Prometheus': not counted as the
                // controller's.
                let started = Instant::now();
                let report = context.preflight.check(&context.client, rollout).await;
                watch.exclude(started.elapsed());
                observed.preflight = Some(report);
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
    routing::remove(&context.config_maps, rollout).await?;
    context.written.forget(rollout);
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    context.metrics.forget(&namespace, &name);
    info!(config_map = %rollout.spec.routing.config_map_ref.name, "rollout deleted: routing key removed, the proxies serve the alias from stable");
    Ok(Action::await_change())
}
