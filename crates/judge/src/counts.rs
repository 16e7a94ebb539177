//! Request and event counts of both arms over some span of time.

use serde::{Deserialize, Serialize};

/// Requests and bad events (errors, or requests slower than a fixed boundary) of both arms.
///
/// Floating point because Prometheus `increase()` extrapolates to the edges of its range and
/// returns fractional counts; the judge treats them as (approximately) Poisson counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Requests served by the canary.
    pub canary_requests: f64,
    /// Bad events among the canary's requests.
    pub canary_events: f64,
    /// Requests served by stable.
    pub stable_requests: f64,
    /// Bad events among stable's requests.
    pub stable_events: f64,
}

impl Counts {
    /// Counts in the order canary requests, canary events, stable requests, stable events.
    pub fn new(
        canary_requests: f64,
        canary_events: f64,
        stable_requests: f64,
        stable_events: f64,
    ) -> Self {
        Self { canary_requests, canary_events, stable_requests, stable_events }
    }

    /// Every field made a usable count: NaN, infinities and negatives (a Prometheus gap, a
    /// counter reset it missed) become 0.
    pub fn sanitized(self) -> Self {
        fn clean(x: f64) -> f64 {
            if x.is_finite() && x > 0.0 { x } else { 0.0 }
        }
        Self {
            canary_requests: clean(self.canary_requests),
            canary_events: clean(self.canary_events),
            stable_requests: clean(self.stable_requests),
            stable_events: clean(self.stable_events),
        }
    }

    /// What `self` (a later cumulative reading) adds to `earlier`, field by field, never
    /// negative: `increase()` extrapolation can make a cumulative reading dip a little.
    pub fn since(self, earlier: Counts) -> Counts {
        let (now, then) = (self.sanitized(), earlier.sanitized());
        Counts {
            canary_requests: (now.canary_requests - then.canary_requests).max(0.0),
            canary_events: (now.canary_events - then.canary_events).max(0.0),
            stable_requests: (now.stable_requests - then.stable_requests).max(0.0),
            stable_events: (now.stable_events - then.stable_events).max(0.0),
        }
    }

    /// Field-by-field sum.
    pub fn plus(self, other: Counts) -> Counts {
        Counts {
            canary_requests: self.canary_requests + other.canary_requests,
            canary_events: self.canary_events + other.canary_events,
            stable_requests: self.stable_requests + other.stable_requests,
            stable_events: self.stable_events + other.stable_events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading that dips below the last one adds nothing to that field, and garbage is zero.
    #[test]
    fn since_never_goes_negative() {
        let earlier = Counts::new(100.0, 5.0, 900.0, 9.0);
        let later = Counts::new(150.0, 4.8, f64::NAN, 12.0);
        assert_eq!(later.since(earlier), Counts::new(50.0, 0.0, 0.0, 3.0));
    }
}
