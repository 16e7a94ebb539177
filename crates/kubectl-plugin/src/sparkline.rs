//! Sparklines: a series of values as one line of eight-level bars, on a scale the caller picks
//! so canary and stable can share one.

/// Bars for a terminal, lowest to highest.
const UNICODE: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Bars for plain text, lowest to highest.
const ASCII: [char; 8] = ['_', '.', '-', '~', '=', '*', '#', '@'];

/// One character per value, scaled from 0 to `top`; a missing value is a space.
pub fn sparkline(values: &[Option<f64>], top: f64, unicode: bool) -> String {
    let bars = if unicode { UNICODE } else { ASCII };
    values
        .iter()
        .map(|value| match value {
            None => ' ',
            Some(v) if top <= 0.0 || !v.is_finite() => bars[0],
            Some(v) => {
                let level = (v.clamp(0.0, top) / top * 7.0).round();
                // `level` is within 0..=7 after the clamp.
                bars[level as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zero is the lowest bar, `top` the highest, halfway the middle; gaps stay gaps.
    #[test]
    fn scales_to_top() {
        let values = [Some(0.0), Some(0.5), Some(1.0), None, Some(2.0)];
        assert_eq!(sparkline(&values, 1.0, true), "▁▅█ █");
        assert_eq!(sparkline(&values, 1.0, false), "_=@ @");
    }

    /// An all-zero series (top 0) is flat, not a division by zero.
    #[test]
    fn flat_when_top_is_zero() {
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)], 0.0, false), "__");
    }
}
