//! A small seedable generator and a Poisson sampler, written out so that a seed gives the same
//! table on every machine and with every version of every dependency.

/// xoshiro256++ (Blackman and Vigna), seeded through SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// An independent stream for each `(seed, path...)`, e.g. `(seed, [scenario, run])`, so a
    /// run's numbers do not depend on which runs came before it.
    pub fn seeded(seed: u64, path: &[u64]) -> Self {
        let mut state = seed;
        for &p in path {
            state = splitmix64(&mut state) ^ p;
        }
        Self { s: std::array::from_fn(|_| splitmix64(&mut state)) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform on [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A Poisson variate with the given mean: multiplication of uniforms for small means,
    /// Hörmann's PTRS transformed rejection (as in NumPy) for means of 10 and more.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 10.0 {
            let limit = (-mean).exp();
            let (mut k, mut product) = (0, self.uniform());
            while product > limit {
                k += 1;
                product *= self.uniform();
            }
            return k;
        }
        let (sqrt_mean, log_mean) = (mean.sqrt(), mean.ln());
        let b = 0.931 + 2.53 * sqrt_mean;
        let a = -0.059 + 0.02483 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let v_r = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + mean + 0.43).floor();
            if us >= 0.07 && v <= v_r {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            let accept = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
            if accept <= -mean + k * log_mean - ln_factorial(k) {
                return k as u64;
            }
        }
    }
}

/// `ln(k!)`: exact below 20, Stirling's series (error under 1e-12) above.
fn ln_factorial(k: f64) -> f64 {
    if k < 20.0 {
        return (2..=k as u64).map(|i| (i as f64).ln()).sum();
    }
    let inv = 1.0 / k;
    let inv2 = inv * inv;
    k * k.ln() - k
        + 0.5 * (2.0 * std::f64::consts::PI * k).ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stirling's series meets the exact sum where they hand over.
    #[test]
    fn ln_factorial_is_continuous_at_the_switch() {
        let exact: f64 = (2..=20u64).map(|i| (i as f64).ln()).sum();
        assert!((ln_factorial(20.0) - exact).abs() < 1e-10);
    }

    /// Sample mean and variance of 20 000 draws match the Poisson's (within 5 standard errors)
    /// for a small and a large mean, on both sides of the sampler's switch.
    #[test]
    fn poisson_has_the_right_mean_and_variance() {
        for mean in [0.5, 7.0, 45.0, 4500.0] {
            let mut rng = Rng::seeded(7, &[mean as u64]);
            let n = 20_000.0;
            let draws: Vec<f64> = (0..n as usize).map(|_| rng.poisson(mean) as f64).collect();
            let m = draws.iter().sum::<f64>() / n;
            let var = draws.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
            assert!((m - mean).abs() < 5.0 * (mean / n).sqrt(), "mean {m} for {mean}");
            // the variance of a sample variance of a Poisson is about 2 mean² / n + mean / n
            let se = ((2.0 * mean * mean + mean) / n).sqrt();
            assert!((var - mean).abs() < 5.0 * se, "variance {var} for {mean}");
        }
    }

    /// The same seed and path give the same numbers; another path gives others.
    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |path: &[u64]| Rng::seeded(1, path).next_u64();
        assert_eq!(draw(&[3, 4]), draw(&[3, 4]));
        assert_ne!(draw(&[3, 4]), draw(&[4, 3]));
    }
}
