//! Numbers as a user reads them in status: grouped counts, ratios with two significant digits
//! (bounds rounded outwards so a sentence never claims more than the test showed).

/// `1840.4` → "1 840".
pub(crate) fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    grouped
}

/// Decimals shown for a ratio of this size: 2 under 2 (margins like 1.25 live there), 1 under
/// 10, none above.
fn decimals(x: f64) -> i32 {
    if x < 2.0 {
        2
    } else if x < 10.0 {
        1
    } else {
        0
    }
}

fn rounded(x: f64, round: fn(f64) -> f64) -> String {
    let d = decimals(x);
    let scale = 10f64.powi(d);
    format!("{:.*}", d as usize, round(x * scale) / scale)
}

/// A ratio rounded to the nearest shown digit.
pub(crate) fn ratio_nearest(x: f64) -> String {
    rounded(x, f64::round)
}

/// A lower bound, rounded down.
pub(crate) fn ratio_down(x: f64) -> String {
    rounded(x, f64::floor)
}

/// An upper bound, rounded up.
pub(crate) fn ratio_up(x: f64) -> String {
    rounded(x, f64::ceil)
}

/// `0.95` → "95 %", `0.98333` → "98.3 %" (rounded down: never claim more confidence).
pub(crate) fn confidence_percent(confidence: f64) -> String {
    let tenths = (confidence * 1000.0 + 1e-9).floor();
    if tenths % 10.0 == 0.0 {
        format!("{:.0} %", tenths / 10.0)
    } else {
        format!("{:.1} %", tenths / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts are grouped by thousands with a space, as in "1 840 canary requests".
    #[test]
    fn counts_are_grouped() {
        let cases = [(0.0, "0"), (999.4, "999"), (1840.0, "1 840"), (1_234_567.0, "1 234 567")];
        for (n, want) in cases {
            assert_eq!(count(n), want, "{n}");
        }
    }

    /// Bounds round outwards, estimates to the nearest shown digit.
    #[test]
    fn ratios_round_outwards() {
        assert_eq!(ratio_down(1.4125), "1.41");
        assert_eq!(ratio_up(1.2023), "1.21");
        assert_eq!(ratio_nearest(2.113), "2.1");
        assert_eq!(ratio_up(2.01), "2.1");
        assert_eq!(ratio_down(12.9), "12");
    }

    /// Confidence shows as a whole percentage when it is one, else with one decimal, never rounded up.
    #[test]
    fn confidence_is_never_overstated() {
        assert_eq!(confidence_percent(0.95), "95 %");
        assert_eq!(confidence_percent(1.0 - 0.05 / 3.0), "98.3 %");
        assert_eq!(confidence_percent(0.999), "99.9 %");
    }
}
