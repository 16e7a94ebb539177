//! The latency histogram buckets the proxy exposes (a compatibility contract with the
//! controller): the standard LLM-latency bounds, plus each route's own limits so that "p95 over
//! the limit" is a count of requests over a bucket boundary, exact, not a guess inside a bucket.

/// Standard bucket bounds in seconds of `gray_release_request_duration_seconds` and
/// `gray_release_time_to_first_token_seconds`: LLM latencies, 10 ms .. 120 s.
pub const LATENCY_BUCKETS: [f64; 15] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 90.0, 120.0];

/// Most extra bounds a route may add (a rollout has two limits: latency and TTFT).
pub const MAX_EXTRA_BUCKETS: usize = 4;

/// The standard bounds plus `extra` (positive, finite; others ignored), sorted, without
/// duplicates: the buckets of a route whose rollout has those limits.
pub fn buckets_with(extra: &[f64]) -> Vec<f64> {
    let mut bounds: Vec<f64> = LATENCY_BUCKETS.to_vec();
    bounds.extend(extra.iter().copied().filter(|b| b.is_finite() && *b > 0.0));
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    bounds
}

/// The smallest bound at or above `value` (`None` above the largest, or for a non-finite value).
pub fn boundary_at_or_above(bounds: &[f64], value: f64) -> Option<f64> {
    if !value.is_finite() {
        return None;
    }
    bounds.iter().copied().filter(|b| *b >= value).min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit becomes a bound between the standard ones, once.
    #[test]
    fn limits_join_the_standard_bounds() {
        let bounds = buckets_with(&[0.8, 2.0, f64::NAN, -1.0]);
        assert_eq!(bounds.len(), 16);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert!(bounds.contains(&0.8));
    }

    /// The boundary at or above a p95 is the next bound up, or the p95 itself when it is one.
    #[test]
    fn boundary_at_or_above_a_p95() {
        let bounds = buckets_with(&[0.8]);
        assert_eq!(boundary_at_or_above(&bounds, 1.1), Some(2.0));
        assert_eq!(boundary_at_or_above(&bounds, 0.8), Some(0.8));
        assert_eq!(boundary_at_or_above(&bounds, 0.6), Some(0.8));
        assert_eq!(boundary_at_or_above(&bounds, 500.0), None);
        assert_eq!(boundary_at_or_above(&bounds, f64::NAN), None);
    }
}
