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

    /// Prometheus' `histogram_quantile`: find the bucket holding rank q × n, interpolate
    /// linearly inside it (from 0 for the first bucket; the largest bound past the last).
    fn histogram_quantile(bounds: &[f64], samples: &[f64], q: f64) -> f64 {
        let rank = q * samples.len() as f64;
        let mut below = 0.0;
        let mut lower = 0.0;
        for &upper in bounds {
            let within = samples.iter().filter(|s| **s <= upper).count() as f64;
            if within >= rank {
                return lower + (upper - lower) * (rank - below) / (within - below);
            }
            (below, lower) = (within, upper);
        }
        lower
    }

    /// The true p95: the sample at rank ⌈0.95 n⌉.
    fn true_p95(samples: &[f64]) -> f64 {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[(0.95 * sorted.len() as f64).ceil() as usize - 1]
    }

    /// `n` latencies spread evenly over [from, to].
    fn spread(from: f64, to: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| from + (to - from) * i as f64 / (n - 1) as f64).collect()
    }

    /// The error of the p95 estimate, before (standard buckets) and after (the limit is a
    /// bound): docs/metrics.md quotes these figures. With the limit a bound, "p95 over the
    /// limit" is "more than 5 % of requests above the bound", exact whatever the estimate says.
    #[test]
    fn p95_estimate_error_before_and_after_the_limit_is_a_bound() {
        // (requests, limit, what the issue describes)
        let cases = [
            (spread(2.4, 2.6, 1000), 3.0, 3.9, 2.95), // a steady 2.5 s canary, limit 3 s
            (spread(0.6, 0.79, 1000), 0.8, 0.975, 0.785), // 600-790 ms, limit 800 ms
        ];
        for (samples, limit, before_reads, after_reads) in cases {
            let truth = true_p95(&samples);
            let before = histogram_quantile(&LATENCY_BUCKETS, &samples, 0.95);
            let after = histogram_quantile(&buckets_with(&[limit]), &samples, 0.95);
            assert!((before - before_reads).abs() < 0.01, "before {before}");
            assert!((after - after_reads).abs() < 0.01, "after {after}");
            // Before: the estimate claims the limit is breached; the truth is under it.
            assert!(truth < limit && before > limit, "{truth} {before}");
            // After: the share over the limit decides, and it is exact (here 0).
            let over = samples.iter().filter(|s| **s > limit).count() as f64;
            assert!(over / (samples.len() as f64) <= 0.05);
            assert!(after <= limit);
        }
    }

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
