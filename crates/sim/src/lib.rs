//! The rollout simulator behind `make sim`: thousands of simulated canary rollouts with Poisson
//! traffic, weights following the steps and injected regressions or shared incidents, judged by
//! the sequential judge and by fixed-threshold rules configured like Flagger's and Argo's.
//! Deterministic for a seed, on every machine.

#![warn(missing_docs)]

pub mod experiment;
pub mod report;
pub mod rng;
pub mod rules;
pub mod traffic;
