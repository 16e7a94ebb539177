//! Figures with 95 % confidence intervals from the number of runs, and the markdown table.

use crate::experiment::{Experiment, Goal, Measure, Outcomes};

/// z for a two-sided 95 % interval.
const Z: f64 = 1.959_963_984_540_054;

/// A figure and its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The point estimate.
    pub value: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
    /// Whether `value` is a share (printed in percent).
    pub share: bool,
}

/// Wilson's score interval for `hits` out of `n`.
pub fn proportion(hits: usize, n: usize) -> Estimate {
    let (k, n) = (hits as f64, n.max(1) as f64);
    let p = k / n;
    let centre = (p + Z * Z / (2.0 * n)) / (1.0 + Z * Z / n);
    let half = Z / (1.0 + Z * Z / n) * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt();
    Estimate {
        value: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
        share: true,
    }
}

/// The mean with a normal-approximation interval; `None` for no values.
pub fn mean(values: &[f64]) -> Option<Estimate> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let m = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let half = Z * (var / n).sqrt();
    Some(Estimate { value: m, low: m - half, high: m + half, share: false })
}

/// The median with the distribution-free interval between order statistics; values may be
/// infinite (never rolled back).
pub fn median(values: &[f64]) -> Option<Estimate> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let at = |rank: f64| sorted[(rank.clamp(1.0, n) as usize) - 1];
    Some(Estimate {
        value: at((n / 2.0).ceil()),
        low: at((n / 2.0 - Z * n.sqrt() / 2.0).floor()),
        high: at((n / 2.0 + Z * n.sqrt() / 2.0).ceil() + 1.0),
        share: false,
    })
}

/// The figure of `measure` for rule number `rule` over the outcomes.
pub fn measure(outcomes: &Outcomes, rule: usize, measure: Measure) -> Option<Estimate> {
    let intervals: Vec<Option<u32>> = outcomes.iter().map(|run| run[rule]).collect();
    let n = intervals.len();
    match measure {
        Measure::Rollbacks => Some(proportion(intervals.iter().flatten().count(), n)),
        Measure::Within(limit) => {
            Some(proportion(intervals.iter().flatten().filter(|&&t| t <= limit).count(), n))
        }
        Measure::MeanInterval => {
            mean(&intervals.iter().flatten().map(|&t| t as f64).collect::<Vec<_>>())
        }
        Measure::MedianInterval => median(
            &intervals.iter().map(|t| t.map_or(f64::INFINITY, f64::from)).collect::<Vec<_>>(),
        ),
    }
}

impl Estimate {
    fn meets(&self, goal: Goal) -> bool {
        match goal {
            Goal::AtMost(limit) => self.value <= limit,
            Goal::AtLeast(limit) => self.value >= limit,
        }
    }
}

fn number(x: f64, share: bool) -> String {
    if x.is_infinite() {
        "never".to_string()
    } else if share {
        format!("{:.1} %", 100.0 * x)
    } else {
        format!("{x:.2}")
    }
}

fn cell(estimate: Option<Estimate>) -> String {
    match estimate {
        None => "no rollback".to_string(),
        Some(e) if e.value.is_infinite() => "never".to_string(),
        Some(e) => format!(
            "{} ({}–{})",
            number(e.value, e.share),
            number(e.low, e.share).trim_end_matches(" %"),
            number(e.high, e.share)
        ),
    }
}

fn describe(measure: Measure, regression: bool) -> String {
    match measure {
        Measure::Rollbacks if regression => "rolled back".to_string(),
        Measure::Rollbacks => "false rollbacks".to_string(),
        Measure::Within(n) => format!("rolled back within {n} intervals"),
        Measure::MeanInterval => "mean interval of the rollback".to_string(),
        Measure::MedianInterval => "median interval of the rollback".to_string(),
    }
}

fn goal(goal: Goal, share: bool) -> String {
    match goal {
        Goal::AtMost(x) => format!("≤ {}", number(x, share).replace(".0 %", " %")),
        Goal::AtLeast(x) => format!("≥ {}", number(x, share).replace(".0 %", " %")),
    }
}

/// The markdown table: one row per measure, one column per rule, each figure with its 95 %
/// interval; the first rule's column is checked against the target.
pub fn table(experiments: &[Experiment], outcomes: &[Outcomes], rules: &[String]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | measure | target | ");
    out.push_str(&rules.join(" | "));
    out.push_str(" |\n|---|---|---|");
    out.push_str(&"---|".repeat(rules.len()));
    out.push('\n');
    for (experiment, outcomes) in experiments.iter().zip(outcomes) {
        for (row, &(m, g)) in experiment.rows.iter().enumerate() {
            let name = if row == 0 { experiment.scenario.name } else { "" };
            let share = !matches!(m, Measure::MeanInterval | Measure::MedianInterval);
            out.push_str(&format!(
                "| {name} | {} | {} |",
                describe(m, experiment.scenario.regression),
                goal(g, share)
            ));
            for rule in 0..rules.len() {
                let estimate = measure(outcomes, rule, m);
                let mark = match (rule, estimate) {
                    (0, Some(e)) if e.meets(g) => " ✅",
                    (0, _) => " ❌",
                    _ => "",
                };
                out.push_str(&format!(" {}{mark} |", cell(estimate)));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wilson's interval for 0 of 1 000 is (0, 0.38 %), and contains the estimate otherwise.
    #[test]
    fn wilson_interval_known_values() {
        let none = proportion(0, 1000);
        assert!(none.low.abs() < 1e-12, "{}", none.low);
        assert!((none.high - 0.003826).abs() < 1e-5, "{}", none.high);
        let half = proportion(500, 1000);
        assert!((half.low - 0.46907).abs() < 1e-4 && (half.high - 0.53093).abs() < 1e-4);
    }

    /// The median of 1..=101 is 51, with an interval around it; never-rolled-back runs sort last.
    #[test]
    fn median_with_order_statistics() {
        let values: Vec<f64> = (1..=101).map(f64::from).collect();
        let m = median(&values).expect("values");
        assert_eq!(m.value, 51.0);
        assert!(m.low < 51.0 && m.high > 51.0 && m.low >= 40.0 && m.high <= 62.0);
        let censored = median(&[1.0, 2.0, f64::INFINITY]).expect("values");
        assert_eq!(censored.value, 2.0);
    }
}
