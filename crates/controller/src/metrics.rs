//! The controller's own metrics (Prometheus text format on `/metrics`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `modelrollout_controller_reconciles_total` | counter | — |
//! | `modelrollout_controller_reconcile_errors_total` | counter | `kind` |
//! | `modelrollout_controller_reconcile_duration_seconds` | histogram | — (the decision and its writes; Prometheus, the read of the rollout and the finalizer patch excluded) |
//! | `modelrollout_controller_analysis_duration_seconds` | histogram | — |
//! | `modelrollout_controller_analysis_errors_total` | counter | `kind` |
//! | `modelrollout_controller_leader` | gauge | — (1 on the replica that acts) |
//! | `modelrollout_phase` | gauge | `namespace, rollout, phase`: 1, for the current phase only |
//! | `modelrollout_canary_weight` | gauge | `namespace, rollout` |

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use modelrollout_api::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    namespace: String,
    rollout: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    rollout: String,
    phase: &'static str,
}

/// Every metric of the controller, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<KindLabels, Counter>,
    reconcile_duration: Histogram,
    analysis_duration: Histogram,
    analysis_errors: Family<KindLabels, Counter>,
    leader: Gauge,
    phase: Family<PhaseLabels, Gauge>,
    canary_weight: Family<RolloutLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        // 0.5 ms .. ~8 s: a reconcile is a few API calls.
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        let analysis_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let analysis_errors = Family::<KindLabels, Counter>::default();
        let leader = Gauge::default();
        let phase = Family::<PhaseLabels, Gauge>::default();
        let canary_weight = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "modelrollout_controller_reconciles",
            "Reconciles run",
            reconciles.clone(),
        );
        registry.register(
            "modelrollout_controller_reconcile_errors",
            "Reconciles that failed, by kind of error",
            reconcile_errors.clone(),
        );
        registry.register(
            "modelrollout_controller_reconcile_duration_seconds",
            "Time of one reconcile, Prometheus queries excluded",
            reconcile_duration.clone(),
        );
        registry.register(
            "modelrollout_controller_analysis_duration_seconds",
            "Time Prometheus took to answer one analysis",
            analysis_duration.clone(),
        );
        registry.register(
            "modelrollout_controller_analysis_errors",
            "Analyses Prometheus could not answer, by kind of error",
            analysis_errors.clone(),
        );
        registry.register(
            "modelrollout_controller_leader",
            "1 on the replica that holds the Lease and acts, 0 on a standby",
            leader.clone(),
        );
        registry.register("modelrollout_phase", "1 for the rollout's current phase", phase.clone());
        registry.register(
            "modelrollout_canary_weight",
            "Percent of the rollout's traffic on the canary",
            canary_weight.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            analysis_duration,
            analysis_errors,
            leader,
            phase,
            canary_weight,
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a reconcile and observes its duration (`elapsed` already excludes Prometheus).
    pub fn reconciled(&self, elapsed: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, kind: &'static str) {
        self.reconcile_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// Observes one analysis (or proxy-weight query) and counts its error, if any.
    pub fn analysed(&self, started: Instant, error: Option<&'static str>) {
        self.analysis_duration.observe(started.elapsed().as_secs_f64());
        if let Some(kind) = error {
            self.analysis_errors.get_or_create(&KindLabels { kind }).inc();
        }
    }

    /// Marks whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Publishes a rollout's phase and weight.
    pub fn rollout(&self, namespace: &str, rollout: &str, phase: Phase, weight: u8) {
        // Only the current phase has a series (value 1): one series per rollout instead of one
        // per phase, which at 10 000 rollouts was tens of thousands of series and megabytes.
        for candidate in Phase::ALL {
            let labels = PhaseLabels {
                namespace: namespace.to_owned(),
                rollout: rollout.to_owned(),
                phase: candidate.as_str(),
            };
            if *candidate == phase {
                self.phase.get_or_create(&labels).set(1);
            } else {
                self.phase.remove(&labels);
            }
        }
        let labels = RolloutLabels { namespace: namespace.to_owned(), rollout: rollout.to_owned() };
        self.canary_weight.get_or_create(&labels).set(i64::from(weight));
    }

    /// Drops a deleted rollout's series.
    pub fn forget(&self, namespace: &str, rollout: &str) {
        for candidate in Phase::ALL {
            self.phase.remove(&PhaseLabels {
                namespace: namespace.to_owned(),
                rollout: rollout.to_owned(),
                phase: candidate.as_str(),
            });
        }
        self.canary_weight.remove(&RolloutLabels {
            namespace: namespace.to_owned(),
            rollout: rollout.to_owned(),
        });
    }
}

/// Measures a span of work, minus the time spent in excluded parts (Prometheus queries).
#[derive(Debug)]
pub struct Stopwatch {
    started: Instant,
    excluded: Duration,
}

impl Default for Stopwatch {
    fn default() -> Self {
        Stopwatch { started: Instant::now(), excluded: Duration::ZERO }
    }
}

impl Stopwatch {
    /// Leaves `spent` out of the measured time.
    pub fn exclude(&mut self, spent: Duration) {
        self.excluded += spent;
    }

    /// Time since the start, excluded parts left out.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.excluded)
    }
}
