//! Simulated traffic: Poisson requests split by the step's weight, each request independently
//! an error, slow (over the stable arm's p95 bucket boundary) and slow to its first token.

use modelrollout_judge::Counts;

use crate::rng::Rng;

/// Per-request probabilities of the bad events one arm produces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Probability that a request fails.
    pub error: f64,
    /// Probability that a request takes longer than the latency boundary.
    pub slow: f64,
    /// Probability that a request's first token comes later than the TTFT boundary.
    pub slow_first_token: f64,
}

/// The baseline of every scenario: 1 % errors, and the boundaries at stable's p95.
pub const BASELINE: Rates = Rates { error: 0.01, slow: 0.05, slow_first_token: 0.05 };

/// One arm's counts in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArmCounts {
    /// Requests served.
    pub requests: f64,
    /// Failed requests.
    pub errors: f64,
    /// Requests slower than the latency boundary.
    pub slow: f64,
    /// Requests whose first token came later than the TTFT boundary.
    pub slow_first_token: f64,
}

/// Both arms' counts in one analysis interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IntervalCounts {
    /// The canary arm.
    pub canary: ArmCounts,
    /// The stable arm.
    pub stable: ArmCounts,
}

/// The metrics a judge looks at, in the order of [`IntervalCounts::per_metric`].
pub const METRICS: [&str; 3] = [
    "errors",
    "requests slower than the latency boundary",
    "first tokens later than the TTFT boundary",
];

impl IntervalCounts {
    /// The counts of each of [`METRICS`] in the judge's form.
    pub fn per_metric(&self) -> [Counts; 3] {
        let (c, s) = (self.canary, self.stable);
        [
            Counts::new(c.requests, c.errors, s.requests, s.errors),
            Counts::new(c.requests, c.slow, s.requests, s.slow),
            Counts::new(c.requests, c.slow_first_token, s.requests, s.slow_first_token),
        ]
    }
}

/// A shared incident: both arms fail at `error` during intervals `first..=last` (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incident {
    /// First interval of the incident.
    pub first: u32,
    /// Last interval of the incident.
    pub last: u32,
    /// The error probability of both arms meanwhile.
    pub error: f64,
}

/// One simulated rollout setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// What it shows, for the table.
    pub name: &'static str,
    /// Expected requests of both arms together per interval.
    pub requests_per_interval: f64,
    /// `(canary weight in percent, intervals at that weight)`, in order.
    pub steps: Vec<(f64, u32)>,
    /// The stable arm's rates.
    pub stable: Rates,
    /// The canary arm's rates.
    pub canary: Rates,
    /// A shared incident, if any.
    pub incident: Option<Incident>,
    /// Whether the canary really is worse (a rollback is then a detection, else a false alarm).
    pub regression: bool,
}

impl Scenario {
    /// Total number of intervals of the rollout.
    pub fn intervals(&self) -> u32 {
        self.steps.iter().map(|&(_, n)| n).sum()
    }

    /// The canary weight (percent) during interval `t` (1-based).
    pub fn weight(&self, t: u32) -> f64 {
        let mut end = 0;
        for &(weight, n) in &self.steps {
            end += n;
            if t <= end {
                return weight;
            }
        }
        self.steps.last().map_or(0.0, |&(w, _)| w)
    }

    /// Draws the counts of every interval of one rollout.
    pub fn simulate(&self, rng: &mut Rng) -> Vec<IntervalCounts> {
        (1..=self.intervals())
            .map(|t| {
                let share = self.weight(t) / 100.0;
                let mut canary = self.canary;
                let mut stable = self.stable;
                if let Some(incident) = self.incident.filter(|i| (i.first..=i.last).contains(&t)) {
                    canary.error = canary.error.max(incident.error);
                    stable.error = stable.error.max(incident.error);
                }
                IntervalCounts {
                    canary: draw_arm(rng, self.requests_per_interval * share, canary),
                    stable: draw_arm(rng, self.requests_per_interval * (1.0 - share), stable),
                }
            })
            .collect()
    }
}

/// Poisson requests with independent attributes: every combination of (error, slow, slow first
/// token) is its own independent Poisson count (thinning), so the draw is exact and O(1).
fn draw_arm(rng: &mut Rng, mean_requests: f64, rates: Rates) -> ArmCounts {
    let mut counts = ArmCounts::default();
    for cell in 0..8u8 {
        let pick = |bit: u8, p: f64| if cell & bit != 0 { p } else { 1.0 - p };
        let p = pick(1, rates.error) * pick(2, rates.slow) * pick(4, rates.slow_first_token);
        let n = rng.poisson(mean_requests * p) as f64;
        counts.requests += n;
        if cell & 1 != 0 {
            counts.errors += n;
        }
        if cell & 2 != 0 {
            counts.slow += n;
        }
        if cell & 4 != 0 {
            counts.slow_first_token += n;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weight follows the steps and stays at the last one.
    #[test]
    fn weight_follows_the_steps() {
        let scenario = Scenario {
            name: "steps",
            requests_per_interval: 100.0,
            steps: vec![(10.0, 2), (25.0, 3)],
            stable: BASELINE,
            canary: BASELINE,
            incident: None,
            regression: false,
        };
        let weights: Vec<f64> = (1..=6).map(|t| scenario.weight(t)).collect();
        assert_eq!(weights, [10.0, 10.0, 25.0, 25.0, 25.0, 25.0]);
        assert_eq!(scenario.intervals(), 5);
    }
}
