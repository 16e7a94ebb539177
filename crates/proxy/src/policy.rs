//! The retry and fallback policy: a pure function from how one upstream attempt ended to what
//! happens next, so the rules read (and are tested) as one table.
//!
//! - **Retry** only what the upstream provably did not execute: a connection that was never made,
//!   or a 429 / 503 (the upstream refused the request), at most `--max-retries` times, waiting
//!   `--retry-backoff × 2^attempt` or the upstream's `Retry-After` when longer; a `Retry-After`
//!   beyond `--retry-max-wait` is answered to the client instead.
//! - **Fall back** from the canary to stable (`--fallback-to-stable`) under the same rule,
//!   plus a canary the proxy could not even call (its credential is unreadable): the request
//!   runs once. A timeout, a connection broken after sending, or another 5xx may mean the canary
//!   executed it, so those fall back only with `--fallback-at-least-once`.
//! - Otherwise **answer** the client with what came back.

use std::time::Duration;

use http::StatusCode;

/// How one upstream attempt ended, as far as retrying and falling back care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The proxy's configuration stopped it before sending (unreadable credential, bad URL).
    NotSentConfig,
    /// No connection could be made: nothing reached the upstream.
    NotConnected,
    /// Sent; no response headers within the first-byte timeout.
    TimedOut,
    /// Sent; the connection broke before the response headers.
    Broken,
    /// The upstream answered with this status (and `Retry-After`, when it gave one).
    Answered(StatusCode, Option<Duration>),
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try the same arm again after this wait.
    Retry(Duration),
    /// Drop this answer and ask stable instead.
    FallBack,
    /// Give the client what came back.
    Answer,
}

/// The knobs the policy reads (see the flags in [`crate::config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Retries after a refused or unconnected attempt.
    pub max_retries: u32,
    /// First retry wait; doubles per retry.
    pub backoff: Duration,
    /// Longest `Retry-After` waited for.
    pub retry_max_wait: Duration,
    /// Fall back from canary to stable when the canary did not execute the request.
    pub fallback: bool,
    /// Also fall back when the canary may have executed it.
    pub fallback_at_least_once: bool,
}

impl Policy {
    /// What follows attempt number `attempt` (0 = the first) on an arm that `on_canary`.
    pub fn decide(&self, attempt: u32, outcome: Attempt, on_canary: bool) -> Decision {
        let retries_left = attempt < self.max_retries;
        let not_executed = match outcome {
            Attempt::NotSentConfig | Attempt::NotConnected => true,
            Attempt::Answered(status, _) => refused(status),
            Attempt::TimedOut | Attempt::Broken => false,
        };
        match outcome {
            Attempt::NotConnected if retries_left => {
                return Decision::Retry(self.wait(attempt, None));
            }
            Attempt::Answered(status, retry_after)
                if refused(status)
                    && retries_left
                    && retry_after.is_none_or(|wait| wait <= self.retry_max_wait) =>
            {
                return Decision::Retry(self.wait(attempt, retry_after));
            }
            _ => {}
        }
        let failed = match outcome {
            Attempt::Answered(status, _) => {
                status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => true,
        };
        let fall_back =
            on_canary && self.fallback && failed && (not_executed || self.fallback_at_least_once);
        if fall_back { Decision::FallBack } else { Decision::Answer }
    }

    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self.backoff.saturating_mul(1 << attempt.min(16));
        retry_after.map_or(exponential, |wait| wait.max(exponential))
    }
}

/// 429 and 503: the upstream refused the request without executing it.
fn refused(status: StatusCode) -> bool {
    matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Every outcome × (retries left, on canary, fallback mode) against the documented rule.
    #[test]
    fn decision_table() {
        use Attempt::*;
        use Decision::*;
        let off = Policy {
            max_retries: 1,
            backoff: MS(100),
            retry_max_wait: Duration::from_secs(5),
            fallback: false,
            fallback_at_least_once: false,
        };
        let once = Policy { fallback: true, ..off };
        let at_least_once = Policy { fallback: true, fallback_at_least_once: true, ..off };
        let s = |code| StatusCode::from_u16(code).unwrap();
        // (policy, attempt, outcome, on canary, expected)
        let table = [
            // Retries: only what did not execute, while retries are left.
            (off, 0, NotConnected, false, Retry(MS(100))),
            (off, 0, Answered(s(503), None), false, Retry(MS(100))),
            (off, 0, Answered(s(429), Some(MS(1500))), true, Retry(MS(1500))),
            (off, 0, Answered(s(429), Some(MS(10))), true, Retry(MS(100))),
            (off, 0, Answered(s(429), Some(Duration::from_secs(60))), false, Answer),
            (Policy { max_retries: 3, ..off }, 2, NotConnected, false, Retry(MS(400))),
            (off, 1, NotConnected, false, Answer),
            (off, 0, NotSentConfig, false, Answer),
            (off, 0, TimedOut, false, Answer),
            (off, 0, Broken, false, Answer),
            (off, 0, Answered(s(500), None), false, Answer),
            (off, 0, Answered(s(200), None), true, Answer),
            (off, 0, Answered(s(404), None), true, Answer),
            // No fallback unless asked.
            (off, 1, NotConnected, true, Answer),
            (off, 1, Answered(s(503), None), true, Answer),
            // Fallback by default only when the canary did not execute the request.
            (once, 1, NotConnected, true, FallBack),
            (once, 0, NotSentConfig, true, FallBack),
            (once, 1, Answered(s(503), None), true, FallBack),
            (once, 1, Answered(s(429), None), true, FallBack),
            (once, 0, Answered(s(429), Some(Duration::from_secs(60))), true, FallBack),
            (once, 0, TimedOut, true, Answer),
            (once, 0, Broken, true, Answer),
            (once, 0, Answered(s(500), None), true, Answer),
            (once, 0, Answered(s(502), None), true, Answer),
            (once, 0, Answered(s(400), None), true, Answer),
            (once, 1, NotConnected, false, Answer),
            // At-least-once also falls back when the canary may have executed it.
            (at_least_once, 0, TimedOut, true, FallBack),
            (at_least_once, 0, Broken, true, FallBack),
            (at_least_once, 0, Answered(s(500), None), true, FallBack),
            (at_least_once, 0, Answered(s(400), None), true, Answer),
            (at_least_once, 0, Answered(s(200), None), true, Answer),
            (at_least_once, 0, TimedOut, false, Answer),
        ];
        for (i, (policy, attempt, outcome, canary, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                policy.decide(attempt, outcome, canary),
                expected,
                "row {i}: {outcome:?} attempt {attempt} canary {canary} {policy:?}"
            );
        }
    }
}
