//! The scenarios and targets of issue 9, run through every rule on the same simulated traffic.

use crate::rng::Rng;
use crate::rules::{PooledSequential, Rule, Sequential, Threshold};
use crate::traffic::{BASELINE, Incident, Rates, Scenario};

/// What a row of the table measures over the runs of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// Share of runs rolled back at all (a false alarm when the canary is as good as stable).
    Rollbacks,
    /// Share of runs rolled back within this many intervals.
    Within(u32),
    /// Mean interval of the rollback, over the runs that were rolled back.
    MeanInterval,
    /// Median interval of the rollback (a run never rolled back counts as later than all).
    MedianInterval,
}

/// The target a measure should meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// At most this value.
    AtMost(f64),
    /// At least this value.
    AtLeast(f64),
}

/// A scenario and the measures reported for it.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The simulated rollout.
    pub scenario: Scenario,
    /// The rows of the table, each with its target.
    pub rows: Vec<(Measure, Goal)>,
}

/// The weights of deploy/examples/chat-assistant.yaml (5 %, 25 %, 50 %), ten one-minute intervals
/// at each.
fn standard_steps() -> Vec<(f64, u32)> {
    vec![(5.0, 10), (25.0, 10), (50.0, 10)]
}

/// The scenarios of issue 9, item 3. Rates are per request; "500 canary requests per interval"
/// means 10 000 requests in all, so 500 at the first step's 5 %.
pub fn issue_9() -> Vec<Experiment> {
    let scenario = |name, requests_per_interval, canary: Rates| Scenario {
        name,
        requests_per_interval,
        steps: standard_steps(),
        stable: BASELINE,
        canary,
        incident: None,
        regression: canary != BASELINE,
    };
    let double_errors = Rates { error: 0.02, ..BASELINE };
    let detection = vec![
        (Measure::Within(5), Goal::AtLeast(0.85)),
        (Measure::Within(10), Goal::AtLeast(0.98)),
        (Measure::MeanInterval, Goal::AtMost(3.5)),
    ];
    vec![
        Experiment {
            scenario: scenario(
                "A/A: identical arms, 500 canary requests per interval",
                10000.0,
                BASELINE,
            ),
            rows: vec![(Measure::Rollbacks, Goal::AtMost(0.01))],
        },
        Experiment {
            scenario: scenario(
                "2× errors (1 % → 2 %), 500 canary requests per interval",
                10000.0,
                double_errors,
            ),
            rows: detection,
        },
        Experiment {
            scenario: scenario(
                "2× errors, 1 000 canary requests per interval",
                20000.0,
                double_errors,
            ),
            rows: vec![(Measure::Within(3), Goal::AtLeast(0.90))],
        },
        Experiment {
            scenario: Scenario {
                incident: Some(Incident { first: 6, last: 15, error: 0.02 }),
                ..scenario(
                    "shared incident: both arms at 2 % errors in intervals 6–15 (across a step)",
                    10000.0,
                    BASELINE,
                )
            },
            rows: vec![(Measure::Rollbacks, Goal::AtMost(0.01))],
        },
        Experiment {
            scenario: scenario(
                "+20 % latency: share over stable's p95 5 % → 10 %, 200 canary requests per interval",
                4000.0,
                Rates { slow: 0.10, ..BASELINE },
            ),
            rows: vec![
                (Measure::MedianInterval, Goal::AtMost(2.0)),
                (Measure::Within(2), Goal::AtLeast(0.5)),
            ],
        },
        Experiment {
            scenario: Scenario {
                steps: (1..=10).map(|i| (5.0 * i as f64, 3)).collect(),
                ..scenario(
                    "A/A with the weight ramping 5 → 50 % (3 intervals per 5 % step)",
                    10000.0,
                    BASELINE,
                )
            },
            rows: vec![(Measure::Rollbacks, Goal::AtMost(0.01))],
        },
    ]
}

/// The rules of the table's columns: the sequential judge as configured by default (three
/// metrics, α = 0.05), at α = 0.10, on errors alone, and recomputed from pooled counts; then
/// Flagger- and Argo-style thresholds.
pub fn standard_rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(Sequential { alpha: 0.05, errors_only: false }),
        Box::new(Sequential { alpha: 0.10, errors_only: false }),
        Box::new(Sequential { alpha: 0.05, errors_only: true }),
        Box::new(PooledSequential { alpha: 0.05 }),
        Box::new(Threshold::flagger()),
        Box::new(Threshold::argo_strict()),
        Box::new(Threshold::argo_lenient()),
    ]
}

/// For every run of a scenario, the first rollback interval under each rule (`None`: never).
pub type Outcomes = Vec<Vec<Option<u32>>>;

/// Runs `runs` rollouts of `experiment` (scenario number `index`) on `threads` threads; every
/// rule judges the same simulated traffic of a run. Deterministic in `seed`, whatever `threads`.
pub fn run(
    index: u64,
    experiment: &Experiment,
    rules: &[Box<dyn Rule>],
    runs: u64,
    seed: u64,
    threads: u64,
) -> Outcomes {
    let threads = threads.clamp(1, runs.max(1));
    let chunk = runs.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(runs))
                        .map(|run| {
                            let mut rng = Rng::seeded(seed, &[index, run]);
                            let intervals = experiment.scenario.simulate(&mut rng);
                            rules.iter().map(|rule| rule.first_rollback(&intervals)).collect()
                        })
                        .collect::<Vec<Vec<Option<u32>>>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a simulation thread panicked")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same outcomes however the runs are spread over threads.
    #[test]
    fn outcomes_do_not_depend_on_threads() {
        let (experiment, rules) = (&issue_9()[1], standard_rules());
        let one = run(1, experiment, &rules, 40, 5, 1);
        assert_eq!(one, run(1, experiment, &rules, 40, 5, 3));
        assert_eq!(one.len(), 40);
        assert_ne!(one, run(1, experiment, &rules, 40, 6, 1), "another seed, other traffic");
    }
}
