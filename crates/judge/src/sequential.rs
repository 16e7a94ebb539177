//! One metric's sequential test: an e-process on how the bad events of each interval split
//! between the arms, and anytime-valid bounds on the canary-to-stable rate ratio ρ.
//!
//! Within one interval, if both arms fail at rates in ratio ρ, each of the interval's `k` bad
//! events lands on the canary with probability `q_ρ = ρq / (ρq + 1 − q)`, where `q` is the
//! canary's share of that interval's requests. "No regression" is ρ ≤ 1. The likelihood ratio of
//! ρ against 1 for an interval with `x` canary events is `ρ^x / (1 + q(ρ − 1))^k`; its product
//! over intervals is a martingale when ρ = 1 (a supermartingale when ρ < 1) whatever the
//! shared error rate does, so an outage that hits both arms alike raises no evidence. Mixing it
//! over a log-uniform grid of ρ ∈ (1, 10] gives the evidence `E`, and by Ville's inequality
//! `P(E ever ≥ 1/α) ≤ α` under no regression.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::Counts;
use crate::wording::{confidence_percent, count, ratio_down, ratio_nearest, ratio_up};

/// Grid points per factor of ten in ρ (neighbours differ by 10^(1/40) ≈ 6 %).
const STEPS_PER_DECADE: usize = 40;

/// The largest ratio the regression test mixes over; the grid spans `1/MAX_RATIO ..= MAX_RATIO`.
pub const MAX_RATIO: f64 = 10.0;

/// Number of grid points, and of log-likelihood ratios kept in a [`TestState`].
pub const GRID_LEN: usize = 2 * STEPS_PER_DECADE + 1;

/// Index of ρ = 1 in the grid.
const ONE: usize = STEPS_PER_DECADE;

/// The ratio ρ at grid index `i` (`0 ..GRID_LEN`): `10^((i − 40) / 40)`.
pub fn grid_ratio(i: usize) -> f64 {
    grid()[i]
}

fn grid() -> &'static [f64; GRID_LEN] {
    static GRID: OnceLock<[f64; GRID_LEN]> = OnceLock::new();
    GRID.get_or_init(|| {
        std::array::from_fn(|i| MAX_RATIO.powf((i as f64 - ONE as f64) / STEPS_PER_DECADE as f64))
    })
}

/// `ln ρ` at every grid point.
fn ln_grid() -> &'static [f64; GRID_LEN] {
    static LN_GRID: OnceLock<[f64; GRID_LEN]> = OnceLock::new();
    LN_GRID.get_or_init(|| grid().map(f64::ln))
}

/// What a [`SequentialTest`] remembers between analysis intervals: small, serialisable, and
/// all the controller needs to store in status to resume after a restart.
///
/// The log-likelihood ratios are kept rather than recomputed from cumulative counts because the
/// mixture depends on every interval's own canary share `q` (the weight ramps, traffic shifts);
/// pooled counts give the exact same answer only while `q` never changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestState {
    /// Sum of every increment observed.
    pub totals: Counts,
    /// Log-likelihood ratio of each grid ratio against ρ = 1 (index as in [`grid_ratio`]).
    pub log_likelihood_ratios: Vec<f64>,
    /// The largest log evidence seen so far: once it reaches `ln(1/α)` the test stays rejected.
    pub peak_log_evidence: f64,
}

impl Default for TestState {
    fn default() -> Self {
        Self {
            totals: Counts::default(),
            log_likelihood_ratios: vec![0.0; GRID_LEN],
            peak_log_evidence: 0.0,
        }
    }
}

/// A stored [`TestState`] that this version of the judge cannot resume from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// The state was written by a judge with another grid.
    #[error(
        "judge state has {found} log-likelihood ratios, this judge uses {GRID_LEN}: it was written \
         by another version; start the evidence afresh"
    )]
    GridMismatch {
        /// How many values the stored state holds.
        found: usize,
    },
    /// The state holds a NaN or infinite value.
    #[error(
        "judge state holds a non-finite number: it was edited or corrupted; start the evidence afresh"
    )]
    NotFinite,
}

/// The anytime-valid test of one metric (errors, slow requests, slow first tokens): does the
/// canary suffer more of these events per request than stable?
#[derive(Debug, Clone, PartialEq)]
pub struct SequentialTest {
    alpha: f64,
    state: TestState,
}

impl SequentialTest {
    /// A fresh test at false-alarm level `alpha` (0.05 for 95 % confidence).
    ///
    /// # Panics
    /// When `alpha` is not strictly between 0 and 1 (the [`crate::Judge`] checks it first).
    pub fn new(alpha: f64) -> Self {
        Self::resume(alpha, TestState::default()).expect("a fresh state is valid")
    }

    /// A test that continues from a stored state.
    ///
    /// # Panics
    /// When `alpha` is not strictly between 0 and 1.
    pub fn resume(alpha: f64, state: TestState) -> Result<Self, StateError> {
        assert!(alpha > 0.0 && alpha < 1.0, "alpha {alpha} must lie strictly between 0 and 1");
        if state.log_likelihood_ratios.len() != GRID_LEN {
            return Err(StateError::GridMismatch { found: state.log_likelihood_ratios.len() });
        }
        let counts = [
            state.totals.canary_requests,
            state.totals.canary_events,
            state.totals.stable_requests,
            state.totals.stable_events,
            state.peak_log_evidence,
        ];
        if !state.log_likelihood_ratios.iter().chain(&counts).all(|x| x.is_finite()) {
            return Err(StateError::NotFinite);
        }
        Ok(Self { alpha, state })
    }

    /// The state to store (see [`TestState`]).
    pub fn state(&self) -> &TestState {
        &self.state
    }

    /// The false-alarm level α of this test.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Adds one analysis interval: the counts of both arms *during* that interval.
    ///
    /// An interval where one arm served nothing, or no bad event happened, carries no evidence
    /// (it still counts towards the totals). Non-finite or negative values count as 0.
    pub fn observe(&mut self, increment: Counts) {
        let inc = increment.sanitized();
        self.state.totals = self.state.totals.plus(inc);
        let events = inc.canary_events + inc.stable_events;
        if events <= 0.0 || inc.canary_requests <= 0.0 || inc.stable_requests <= 0.0 {
            return;
        }
        let q = inc.canary_requests / (inc.canary_requests + inc.stable_requests);
        let points = grid().iter().zip(ln_grid());
        for (llr, (&rho, &ln_rho)) in self.state.log_likelihood_ratios.iter_mut().zip(points) {
            *llr += inc.canary_events * ln_rho - events * (q * (rho - 1.0)).ln_1p();
        }
        self.state.peak_log_evidence = self.state.peak_log_evidence.max(self.log_evidence());
    }

    /// The evidence `E` against "no regression" now: the likelihood ratio averaged over the
    /// grid ratios in (1, 10]. It starts at 1; large values mean a regression.
    pub fn evidence(&self) -> f64 {
        self.log_evidence().exp()
    }

    /// `ln E`, which neither overflows nor underflows.
    pub fn log_evidence(&self) -> f64 {
        mixture_against(&self.state.log_likelihood_ratios, ONE + 1..=ONE + STEPS_PER_DECADE, ONE)
    }

    /// The largest evidence seen so far (what [`Self::rejected`] compares with `1/α`).
    pub fn peak_evidence(&self) -> f64 {
        self.state.peak_log_evidence.exp()
    }

    /// Whether the evidence has ever reached `1/α`: the canary regressed, with a false-alarm
    /// probability of at most α over the whole rollout, however often it was checked.
    pub fn rejected(&self) -> bool {
        self.state.peak_log_evidence >= (1.0 / self.alpha).ln()
    }

    /// The canary's event rate divided by stable's, from the totals; `None` until both arms
    /// have served requests and stable has had at least one event.
    pub fn ratio_estimate(&self) -> Option<f64> {
        let t = self.state.totals;
        if t.canary_requests <= 0.0 || t.stable_requests <= 0.0 || t.stable_events <= 0.0 {
            return None;
        }
        Some((t.canary_events / t.canary_requests) / (t.stable_events / t.stable_requests))
    }

    /// Anytime-valid one-sided bounds on ρ, each holding with probability `confidence` however
    /// often they are looked at: `(lower, upper)`, `0` and `∞` when the data cannot bound that
    /// side yet. Both sit on the grid, rounded outwards (ρ is only resolved to about 6 %).
    ///
    /// The lower bound inverts the tests of "ρ ≤ ρᵢ" (each mixing over the grid ratios in
    /// (ρᵢ, 10ρᵢ]); it is the grid ratio just under the first test from the bottom that the data
    /// cannot reject, so a false bound needs the test at the true ratio to reject falsely.
    /// The upper bound mirrors it.
    ///
    /// # Panics
    /// When `confidence` is not strictly between 0 and 1.
    pub fn ratio_bounds(&self, confidence: f64) -> (f64, f64) {
        (self.lower_bound(confidence), self.upper_bound(confidence))
    }

    /// The lower half of [`Self::ratio_bounds`].
    pub fn lower_bound(&self, confidence: f64) -> f64 {
        let level = rejection_level(confidence);
        match (0..GRID_LEN - 1).find(|&i| !self.excludes_below(i, level)) {
            Some(0) => 0.0,
            Some(i) => grid_ratio(i - 1),
            None => grid_ratio(GRID_LEN - 2),
        }
    }

    /// The upper half of [`Self::ratio_bounds`].
    pub fn upper_bound(&self, confidence: f64) -> f64 {
        let level = rejection_level(confidence);
        match (1..GRID_LEN).rev().find(|&i| !self.excludes_above(i, level)) {
            Some(i) if i == GRID_LEN - 1 => f64::INFINITY,
            Some(i) => grid_ratio(i + 1),
            None => grid_ratio(1),
        }
    }

    /// Whether `upper_bound(confidence) <= ratio`, without computing the bound: it checks the
    /// grid ratios from `ratio` upwards and stops at the first the data cannot exclude (most
    /// often the first one).
    pub fn upper_bound_at_most(&self, confidence: f64, ratio: f64) -> bool {
        let level = rejection_level(confidence);
        match (1..GRID_LEN).rev().find(|&i| grid_ratio(i) <= ratio) {
            Some(at) => (at..GRID_LEN).all(|i| self.excludes_above(i, level)),
            None => false,
        }
    }

    /// Whether the data reject "ρ ≤ ρᵢ" (mixing over the grid ratios in (ρᵢ, 10ρᵢ]).
    fn excludes_below(&self, i: usize, level: f64) -> bool {
        let llr = &self.state.log_likelihood_ratios;
        mixture_against(llr, i + 1..=(i + STEPS_PER_DECADE).min(GRID_LEN - 1), i) >= level
    }

    /// Whether the data reject "ρ ≥ ρᵢ" (mixing over the grid ratios in [ρᵢ/10, ρᵢ)).
    fn excludes_above(&self, i: usize, level: f64) -> bool {
        let llr = &self.state.log_likelihood_ratios;
        mixture_against(llr, i.saturating_sub(STEPS_PER_DECADE)..=i - 1, i) >= level
    }

    /// One sentence for status and events, at this test's own confidence `1 − α`, e.g.
    /// "canary errors 2.1× stable (≥ 1.41× with 95 % confidence) after 1 840 canary requests".
    /// `metric` names the events in the plural ("errors", "requests slower than 2s").
    pub fn summary(&self, metric: &str) -> String {
        self.summary_at(metric, 1.0 - self.alpha)
    }

    /// [`Self::summary`] with the bound at another confidence.
    ///
    /// # Panics
    /// When `confidence` is not strictly between 0 and 1.
    pub fn summary_at(&self, metric: &str, confidence: f64) -> String {
        let t = self.state.totals;
        if t.canary_requests <= 0.0 {
            return format!("canary {metric}: no canary requests yet");
        }
        let (lower, upper) = self.ratio_bounds(confidence);
        let bound = if lower > 1.0 {
            Some(format!("≥ {}×", ratio_down(lower)))
        } else if self.rejected() && confidence <= 1.0 - self.alpha {
            // Just rejected: ρ > 1 is shown, the grid's next ratio not yet.
            Some("> 1×".to_owned())
        } else if upper.is_finite() {
            Some(format!("≤ {}×", ratio_up(upper)))
        } else {
            None
        };
        let head = match self.ratio_estimate() {
            Some(ratio) => format!("canary {metric} {}× stable", ratio_nearest(ratio)),
            None if t.canary_events > 0.0 => {
                format!("canary {metric} {} vs none on stable", count(t.canary_events))
            }
            None => format!("no {metric} on either arm"),
        };
        let requests = count(t.canary_requests);
        match bound {
            Some(bound) => format!(
                "{head} ({bound} with {} confidence) after {requests} canary requests",
                confidence_percent(confidence)
            ),
            None => format!("{head} after {requests} canary requests"),
        }
    }
}

/// `ln(1/(1 − confidence))`: the log evidence at which a test at that confidence rejects.
fn rejection_level(confidence: f64) -> f64 {
    assert!(confidence > 0.0 && confidence < 1.0, "confidence {confidence} outside (0, 1)");
    (1.0 / (1.0 - confidence)).ln()
}

/// `ln` of the mean over `mixed` of `exp(llr[j] − llr[base])`: the evidence against the ratio
/// at `base` from alternatives at `mixed`, computed without overflow.
fn mixture_against(llr: &[f64], mixed: std::ops::RangeInclusive<usize>, base: usize) -> f64 {
    let values = &llr[mixed];
    if values.is_empty() {
        return f64::NEG_INFINITY;
    }
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = values.iter().map(|v| (v - max).exp()).sum();
    max + (sum / values.len() as f64).ln() - llr[base]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(intervals: &[(f64, f64, f64, f64)]) -> SequentialTest {
        let mut test = SequentialTest::new(0.05);
        for &(cr, ce, sr, se) in intervals {
            test.observe(Counts::new(cr, ce, sr, se));
        }
        test
    }

    /// Before any traffic the evidence is 1, nothing is rejected and nothing is bounded.
    #[test]
    fn fresh_test_knows_nothing() {
        let test = SequentialTest::new(0.05);
        assert_eq!(test.evidence(), 1.0);
        assert!(!test.rejected());
        assert_eq!(test.ratio_bounds(0.95), (0.0, f64::INFINITY));
        assert_eq!(test.ratio_estimate(), None);
        assert_eq!(test.summary("errors"), "canary errors: no canary requests yet");
    }

    /// An interval where one arm served nothing says nothing about the ratio.
    #[test]
    fn one_sided_interval_carries_no_evidence() {
        let test = observed(&[(0.0, 0.0, 5000.0, 400.0), (300.0, 30.0, 0.0, 0.0)]);
        assert!(test.state().log_likelihood_ratios.iter().all(|&l| l == 0.0));
        assert_eq!(test.state().totals, Counts::new(300.0, 30.0, 5000.0, 400.0));
    }

    /// Rejection is final: later good intervals lower the evidence but not the verdict.
    #[test]
    fn rejection_is_final() {
        let mut test = observed(&[(500.0, 30.0, 4500.0, 45.0)]);
        assert!(test.rejected());
        for _ in 0..20 {
            test.observe(Counts::new(500.0, 2.0, 4500.0, 45.0));
        }
        assert!(test.evidence() < 20.0 && test.rejected());
    }

    /// The quick margin check agrees with the upper bound itself, on both sides of the margin.
    #[test]
    fn margin_check_agrees_with_the_bound() {
        let mut test = SequentialTest::new(0.05);
        for t in 0..40 {
            test.observe(Counts::new(2500.0, 25.0 + (t % 3) as f64, 2500.0, 25.0));
            let upper = test.upper_bound(0.95);
            for margin in [1.05, 1.25, 1.5, 2.0, 5.0, 20.0] {
                assert_eq!(test.upper_bound_at_most(0.95, margin), upper <= margin, "{t} {margin}");
            }
        }
    }

    /// The sentences a user reads in status, for each kind of evidence.
    #[test]
    fn summaries_read_well() {
        let regression = observed(&[
            (500.0, 12.0, 4500.0, 44.0),
            (500.0, 9.0, 4500.0, 47.0),
            (500.0, 14.0, 4500.0, 43.0),
            (500.0, 11.0, 4500.0, 46.0),
            (500.0, 10.0, 4500.0, 45.0),
        ]);
        assert_eq!(
            regression.summary("errors"),
            "canary errors 2.2× stable (≥ 1.33× with 95 % confidence) after 2 500 canary requests"
        );
        let alike = observed(&[(1840.0, 18.0, 1840.0, 19.0)]);
        assert_eq!(
            alike.summary("errors"),
            "canary errors 0.95× stable (≤ 2.6× with 95 % confidence) after 1 840 canary requests"
        );
        let quiet = observed(&[(120.0, 0.0, 1080.0, 0.0)]);
        assert_eq!(quiet.summary("errors"), "no errors on either arm after 120 canary requests");
        let only_canary = observed(&[(120.0, 4.0, 1080.0, 0.0)]);
        assert_eq!(
            only_canary.summary("errors"),
            "canary errors 4 vs none on stable (≥ 1.99× with 95 % confidence) after 120 canary requests"
        );
    }
}
