//! The threshold judge: one analysis' measurements against `spec.analysis` → a verdict, the
//! checks that failed, and whether the canary is clearly healthy enough to advance.
//!
//! The limits are hard: a canary over `maxErrorRate`, `maxLatencyP95` or
//! `maxTimeToFirstTokenP95`, or above stable by more than `maxErrorRateIncrease`, fails the check
//! once it has `minRequestsForRollback` requests. Advancing asks more (production practice): error
//! rate under half the limit, p95 under 80 % of the limit, error rate at most 1.2 × stable's, and
//! `minRequests` canary requests. When stable breaches a limit as badly as the canary, the
//! provider or a shared dependency is failing, not the canary: the verdict is `Inconclusive`.

use modelrollout_analysis::{ArmSample, Measurements};
use modelrollout_api::rollout::{Analysis, FailedCheck};
use modelrollout_api::{Reason, Verdict};

/// Advance only when the canary's error rate is under this share of the limit.
const ADVANCE_ERROR_SHARE: f64 = 0.5;
/// Advance only when the canary's p95 is under this share of the limit.
const ADVANCE_LATENCY_SHARE: f64 = 0.8;
/// Advance only when the canary's error rate is at most this multiple of stable's, and count
/// both arms as failing alike when the canary is within it.
const STABLE_FACTOR: f64 = 1.2;
/// Error-rate differences below this share of the limit are noise for the 1.2 × rule (with
/// stable at 0 errors, one canary error would otherwise block a rollout for ever).
const NOISE_SHARE: f64 = 0.1;
/// Above this z score, a canary failing worse than a failing stable is really worse.
const NOISE_Z: f64 = 3.0;

/// The outcome of judging one analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// Pass, Fail or Inconclusive (Error is for analyses that could not run).
    pub verdict: Verdict,
    /// The condition reason: the first failed check's, or why it is inconclusive.
    pub reason: Option<Reason>,
    /// One line with the numbers and the limits.
    pub message: String,
    /// The checks that breached their limit.
    pub failed: Vec<FailedCheck>,
    /// Pass and clearly healthy: a `setWeight` step may complete.
    pub advance: bool,
}

/// Judges one analysis.
pub fn judge(spec: &Analysis, m: &Measurements) -> Judgement {
    let mut checks = Checks::default();
    let t = &spec.thresholds;
    let canary = &m.canary;
    let stable = &m.stable;
    let stable_trusted =
        stable.requests > 0.0 && stable.requests >= spec.min_requests_for_rollback as f64;
    let stable_rate = stable.error_rate().filter(|_| stable_trusted);

    match canary.error_rate() {
        None => checks.unknown.push("the canary served no request in the range".to_owned()),
        Some(rate) => {
            let stable_text =
                stable_rate.map_or_else(String::new, |s| format!(" (stable {})", pct(s)));
            if rate > t.max_error_rate {
                match stable_rate {
                    Some(s) if s > t.max_error_rate && errors_alike(canary, stable, s) => {
                        checks.shared.push(format!(
                            "canary error rate {} and stable {} are both over the {} limit: \
                             both providers fail alike, which is not the canary's fault; holding",
                            pct(rate),
                            pct(s),
                            pct(t.max_error_rate)
                        ));
                    }
                    _ => checks.failed.push(FailedCheck {
                        name: "error-rate".to_owned(),
                        reason: Reason::ErrorRateExceeded.as_str().to_owned(),
                        value: Some(rate),
                        limit: Some(t.max_error_rate),
                        message: format!(
                            "canary error rate {} > {}{stable_text}",
                            pct(rate),
                            pct(t.max_error_rate)
                        ),
                    }),
                }
            } else if rate >= t.max_error_rate * ADVANCE_ERROR_SHARE {
                checks.hold.push(format!(
                    "canary error rate {} is not under half the {} limit",
                    pct(rate),
                    pct(t.max_error_rate)
                ));
            }
            // In a shared outage the difference between two failing arms is noise too.
            let shared_outage = stable_rate
                .is_some_and(|s| s > t.max_error_rate && errors_alike(canary, stable, s));
            if let (Some(increase), Some(s)) = (t.max_error_rate_increase, stable_rate)
                && !shared_outage
                && rate - s > increase
            {
                checks.failed.push(FailedCheck {
                    name: "error-rate-increase".to_owned(),
                    reason: Reason::ErrorRateIncreaseExceeded.as_str().to_owned(),
                    value: Some(rate - s),
                    limit: Some(increase),
                    message: format!(
                        "canary error rate {} is {} points above stable's {} (limit {})",
                        pct(rate),
                        pct(rate - s),
                        pct(s),
                        pct(increase)
                    ),
                });
            }
            if let Some(s) = stable_rate
                && rate > (s * STABLE_FACTOR).max(t.max_error_rate * NOISE_SHARE)
            {
                checks.hold.push(format!(
                    "canary error rate {} is over {STABLE_FACTOR} × stable's {}",
                    pct(rate),
                    pct(s)
                ));
            }
        }
    }

    let latency_limit = t.max_latency_p95.as_std().as_secs_f64();
    checks.p95(
        "latency-p95",
        "p95 latency",
        Reason::LatencyExceeded,
        (canary.latency_p95_seconds, stable.latency_p95_seconds.filter(|_| stable_trusted)),
        latency_limit,
    );
    if let Some(limit) = t.max_time_to_first_token_p95 {
        checks.p95(
            "time-to-first-token-p95",
            "p95 time to first token",
            Reason::TimeToFirstTokenExceeded,
            (canary.ttft_p95_seconds, stable.ttft_p95_seconds.filter(|_| stable_trusted)),
            limit.as_std().as_secs_f64(),
        );
    }

    for sample in &m.custom {
        let metric = spec.metrics.iter().find(|metric| metric.name == sample.name);
        match (&sample.value, metric) {
            (Err(problem), _) => {
                checks.unknown.push(format!("custom metric {}: {problem}", sample.name));
            }
            (Ok(value), Some(metric)) => {
                let below = metric.min.filter(|min| value < min);
                let above = metric.max.filter(|max| value > max);
                if let Some((limit, word)) = below.map(|l| (l, "<")).or(above.map(|l| (l, ">"))) {
                    checks.failed.push(FailedCheck {
                        name: sample.name.clone(),
                        reason: Reason::CustomMetricExceeded.as_str().to_owned(),
                        value: Some(*value),
                        limit: Some(limit),
                        message: format!(
                            "{} is {} {word} {}",
                            sample.name,
                            num(*value),
                            num(limit)
                        ),
                    });
                }
            }
            (Ok(_), None) => {}
        }
    }

    checks.verdict(spec, canary, m.range.as_secs())
}

/// Both arms fail alike: the canary's error rate is within 1.2 × stable's, or above it by no
/// more than sampling noise (a two-proportion z-test under 3, about 1 in 700 one-sided), so a
/// shared outage measured on a few hundred requests is not blamed on the canary by chance.
fn errors_alike(canary: &ArmSample, stable: &ArmSample, stable_rate: f64) -> bool {
    let rate = canary.error_rate().unwrap_or(0.0);
    if rate <= stable_rate * STABLE_FACTOR {
        return true;
    }
    let pooled = (canary.errors + stable.errors) / (canary.requests + stable.requests);
    let spread = (pooled * (1.0 - pooled) * (1.0 / canary.requests + 1.0 / stable.requests)).sqrt();
    spread > 0.0 && (rate - stable_rate) / spread < NOISE_Z
}

/// What the checks found, before it becomes a verdict.
#[derive(Default)]
struct Checks {
    failed: Vec<FailedCheck>,
    /// Breaches that stable shares (a provider outage).
    shared: Vec<String>,
    /// Values that could not be measured.
    unknown: Vec<String>,
    /// Within limits, but not clearly healthy enough to advance.
    hold: Vec<String>,
}

impl Checks {
    fn p95(
        &mut self,
        name: &str,
        words: &str,
        reason: Reason,
        (canary, stable): (Option<f64>, Option<f64>),
        limit: f64,
    ) {
        let Some(value) = canary else {
            self.unknown.push(format!("canary {words} is unknown (no samples in the range)"));
            return;
        };
        if value > limit {
            match stable {
                Some(s) if s > limit && value <= s * STABLE_FACTOR => self.shared.push(format!(
                    "canary {words} {} and stable {} are both over the {} limit: holding",
                    secs(value),
                    secs(s),
                    secs(limit)
                )),
                _ => self.failed.push(FailedCheck {
                    name: name.to_owned(),
                    reason: reason.as_str().to_owned(),
                    value: Some(value),
                    limit: Some(limit),
                    message: format!(
                        "canary {words} {} > {}{}",
                        secs(value),
                        secs(limit),
                        stable.map_or_else(String::new, |s| format!(" (stable {})", secs(s)))
                    ),
                }),
            }
        } else if value >= limit * ADVANCE_LATENCY_SHARE {
            self.hold.push(format!(
                "canary {words} {} is not under 80% of the {} limit",
                secs(value),
                secs(limit)
            ));
        }
    }

    fn verdict(self, spec: &Analysis, canary: &ArmSample, range_secs: u64) -> Judgement {
        let requests = canary.requests.round() as i64;
        let counted = format!("{requests} canary requests in {range_secs}s");
        if !self.failed.is_empty() {
            let breaches: Vec<&str> = self.failed.iter().map(|c| c.message.as_str()).collect();
            let breaches = breaches.join("; ");
            if requests < spec.min_requests_for_rollback {
                return Judgement {
                    verdict: Verdict::Inconclusive,
                    reason: Some(Reason::InsufficientRequests),
                    message: format!(
                        "{breaches}, but only {counted} (minRequestsForRollback {}): too few to roll back",
                        spec.min_requests_for_rollback
                    ),
                    failed: self.failed,
                    advance: false,
                };
            }
            let reason = self.failed.first().and_then(|c| c.reason.parse().ok());
            return Judgement {
                verdict: Verdict::Fail,
                reason,
                message: breaches,
                failed: self.failed,
                advance: false,
            };
        }
        if !self.shared.is_empty() {
            return inconclusive(Reason::BothArmsFailing, self.shared.join("; "));
        }
        if requests < spec.min_requests {
            return inconclusive(
                Reason::InsufficientRequests,
                format!("only {counted}; {} needed to judge", spec.min_requests),
            );
        }
        if !self.unknown.is_empty() {
            return inconclusive(Reason::AnalysisError, self.unknown.join("; "));
        }
        let within = format!("all checks within limits ({counted})");
        if self.hold.is_empty() {
            Judgement {
                verdict: Verdict::Pass,
                reason: Some(Reason::AnalysisPassed),
                message: within,
                failed: Vec::new(),
                advance: true,
            }
        } else {
            Judgement {
                verdict: Verdict::Pass,
                reason: Some(Reason::AnalysisPassed),
                message: format!("{within}, holding: {}", self.hold.join("; ")),
                failed: Vec::new(),
                advance: false,
            }
        }
    }
}

fn inconclusive(reason: Reason, message: String) -> Judgement {
    Judgement {
        verdict: Verdict::Inconclusive,
        reason: Some(reason),
        message,
        failed: Vec::new(),
        advance: false,
    }
}

/// A rate as a percentage, at most two decimals: `0.091` → `9.1%`, `0.05` → `5%`.
pub fn pct(rate: f64) -> String {
    format!("{}%", num2(rate * 100.0))
}

fn num2(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Seconds, short: `1.234` → `1.23s`, `0.0456` → `45.6ms`.
pub fn secs(seconds: f64) -> String {
    if seconds < 1.0 { format!("{:.1}ms", seconds * 1000.0) } else { format!("{seconds:.2}s") }
}

fn num(value: f64) -> String {
    format!("{value:.4}").trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use modelrollout_api::rollout::Analysis;

    use super::*;

    fn spec() -> Analysis {
        let mut spec = Analysis::with_defaults("http://prometheus:9090");
        spec.thresholds.max_error_rate_increase = Some(0.03);
        spec.thresholds.max_time_to_first_token_p95 = Some("800ms".parse().unwrap());
        spec
    }

    fn arm(requests: f64, error_rate: f64, p95: f64) -> ArmSample {
        ArmSample {
            requests,
            errors: requests * error_rate,
            latency_p95_seconds: Some(p95),
            ttft_p95_seconds: Some(0.2),
        }
    }

    /// One row: canary, stable, expected verdict, reason and whether the step may advance.
    type Row = (&'static str, ArmSample, ArmSample, Verdict, Reason, bool);

    #[test]
    fn threshold_rules() {
        let rows: [Row; 12] = [
            // Clearly healthy: under half the error limit, under 80 % of p95, ≤ 1.2 × stable.
            (
                "clearly healthy",
                arm(500.0, 0.004, 1.0),
                arm(5000.0, 0.005, 1.0),
                Verdict::Pass,
                Reason::AnalysisPassed,
                true,
            ),
            // Within the limit but over half of it: pass, hold.
            (
                "over half the error limit",
                arm(500.0, 0.03, 1.0),
                arm(5000.0, 0.028, 1.0),
                Verdict::Pass,
                Reason::AnalysisPassed,
                false,
            ),
            // p95 between 80 % and 100 % of the limit: pass, hold.
            (
                "p95 near the limit",
                arm(500.0, 0.0, 1.8),
                arm(5000.0, 0.0, 1.0),
                Verdict::Pass,
                Reason::AnalysisPassed,
                false,
            ),
            // More than 1.2 × stable's error rate (above the noise floor): pass, hold.
            (
                "worse than stable",
                arm(500.0, 0.02, 1.0),
                arm(5000.0, 0.01, 1.0),
                Verdict::Pass,
                Reason::AnalysisPassed,
                false,
            ),
            // Stable at zero errors and one canary error in 500 is noise, not a reason to hold.
            (
                "noise against a perfect stable",
                arm(500.0, 0.002, 1.0),
                arm(5000.0, 0.0, 1.0),
                Verdict::Pass,
                Reason::AnalysisPassed,
                true,
            ),
            // Over the error limit with stable healthy: fail.
            (
                "error rate over the limit",
                arm(500.0, 0.09, 1.0),
                arm(5000.0, 0.006, 1.0),
                Verdict::Fail,
                Reason::ErrorRateExceeded,
                false,
            ),
            // Both arms over the limit, alike: inconclusive, not the canary's fault.
            (
                "both arms failing",
                arm(500.0, 0.3, 1.0),
                arm(5000.0, 0.29, 1.0),
                Verdict::Inconclusive,
                Reason::BothArmsFailing,
                false,
            ),
            // Both over the limit, the canary worse by sampling noise only (38 % of 99 against
            // 24 % of 101, z = 2.2): still a shared outage.
            (
                "both failing, canary worse by noise",
                arm(99.0, 38.0 / 99.0, 1.0),
                arm(101.0, 24.0 / 101.0, 1.0),
                Verdict::Inconclusive,
                Reason::BothArmsFailing,
                false,
            ),
            // Both over the limit but the canary far worse: the canary fails.
            (
                "both failing, canary far worse",
                arm(500.0, 0.6, 1.0),
                arm(5000.0, 0.1, 1.0),
                Verdict::Fail,
                Reason::ErrorRateExceeded,
                false,
            ),
            // p95 over the limit: fail.
            (
                "slow canary",
                arm(500.0, 0.0, 3.9),
                arm(5000.0, 0.0, 1.0),
                Verdict::Fail,
                Reason::LatencyExceeded,
                false,
            ),
            // Too few requests to advance.
            (
                "under minRequests",
                arm(99.0, 0.0, 1.0),
                arm(5000.0, 0.0, 1.0),
                Verdict::Inconclusive,
                Reason::InsufficientRequests,
                false,
            ),
            // A breach with too few requests to roll back.
            (
                "breach under minRequestsForRollback",
                arm(9.0, 1.0, 1.0),
                arm(5000.0, 0.0, 1.0),
                Verdict::Inconclusive,
                Reason::InsufficientRequests,
                false,
            ),
        ];
        for (name, canary, stable, verdict, reason, advance) in rows {
            let m =
                Measurements { canary, stable, custom: Vec::new(), range: Duration::from_secs(60) };
            let judgement = judge(&spec(), &m);
            assert_eq!(
                (judgement.verdict, judgement.reason, judgement.advance),
                (verdict, Some(reason), advance),
                "{name}: {}",
                judgement.message
            );
        }
    }

    /// Messages carry the measured numbers and the limits.
    #[test]
    fn messages_name_numbers_and_limits() {
        let m = Measurements {
            canary: arm(412.0, 0.091, 1.0),
            stable: arm(3890.0, 0.006, 1.0),
            custom: Vec::new(),
            range: Duration::from_secs(60),
        };
        let judgement = judge(&spec(), &m);
        assert_eq!(judgement.failed[0].message, "canary error rate 9.1% > 5% (stable 0.6%)");
        assert_eq!(
            judgement.failed[1].message,
            "canary error rate 9.1% is 8.5% points above stable's 0.6% (limit 3%)"
        );
        let slow = Measurements { canary: arm(412.0, 0.0, 2.5), ..m.clone() };
        assert_eq!(
            judge(&spec(), &slow).message,
            "canary p95 latency 2.50s > 2.00s (stable 1.00s)"
        );
        let few = Measurements { canary: arm(40.0, 0.0, 1.0), ..m };
        assert_eq!(
            judge(&spec(), &few).message,
            "only 40 canary requests in 60s; 100 needed to judge"
        );
    }

    /// Percentages and seconds read naturally.
    #[test]
    fn number_formats() {
        let table =
            [(pct(0.091), "9.1%"), (pct(0.05), "5%"), (pct(0.0045), "0.45%"), (pct(0.0), "0%")];
        for (actual, expected) in table {
            assert_eq!(actual, expected);
        }
        assert_eq!(secs(2.5), "2.50s");
        assert_eq!(secs(0.0456), "45.6ms");
    }
}
