//! The sequential canary judge: is the canary's rate of bad events (errors, requests slower than
//! a fixed latency or time-to-first-token boundary) higher than stable's? Pure logic, no I/O.
//!
//! Each analysis interval, the controller hands over the cumulative counts of both arms. The
//! judge turns them into an e-process (a running likelihood ratio against "no regression") that
//! may be checked after every interval, as often as the controller likes, with the chance of a
//! false rollback still bounded by α. A [`SequentialTest`] handles one metric; a [`Judge`] runs
//! one per metric with a weighted Bonferroni split of α (two thirds to errors). Their state is
//! small and serialisable, so the controller keeps it in the rollout's status and a restart
//! loses no evidence.
//!
//! The method, its assumptions and its measured behaviour are in `docs/decisions.md`.
//!
//! ```
//! use modelrollout_judge::{Counts, Judge, JudgeState, JudgeVerdict};
//!
//! let metrics = ["errors", "requests slower than 2s"];
//! let mut judge = Judge::new(0.05, &metrics)?;
//! // Cumulative counts since the rollout started: canary requests and events, stable ditto.
//! let reading = [Counts::new(500.0, 21.0, 9500.0, 95.0), Counts::new(500.0, 25.0, 9500.0, 475.0)];
//! match judge.observe(&reading)? {
//!     JudgeVerdict::Regression { summary, .. } => println!("roll back: {summary}"),
//!     JudgeVerdict::NoEvidence | JudgeVerdict::SafeToPromote { .. } => {}
//! }
//! // Store the state in status; a restarted controller resumes from it.
//! let stored: JudgeState = judge.state();
//! let judge = Judge::resume(0.05, &metrics, stored)?;
//! assert!(judge.summary().starts_with("canary errors 4.2× stable (≥ "));
//! # Ok::<(), modelrollout_judge::JudgeError>(())
//! ```

#![warn(missing_docs)]

mod counts;
mod judge;
mod sequential;
mod wording;

pub use counts::Counts;
pub use judge::{
    DEFAULT_MAX_REGRESSION, ERRORS_SHARE, Judge, JudgeError, JudgeState, JudgeVerdict, MetricState,
    metric_alpha,
};
pub use sequential::{GRID_LEN, MAX_RATIO, SequentialTest, StateError, TestState, grid_ratio};
