"""Known values for the judge's unit tests, computed independently of the Rust code.

The Rust test works from the closed form rho^x / (1 + q(rho - 1))^k; this script instead takes
the ratio of two binomial probabilities from scipy (binom.logpmf of the canary's share of the
interval's events, under q_rho and under q), mixes it with plain numpy, and inverts the tests
for the bounds by brute force over the whole grid.

One-off: run it in a throwaway virtualenv and paste its output into tests/known_values.rs.
    python3 -m venv /tmp/judge-ref && /tmp/judge-ref/bin/pip install scipy==1.14.1 numpy==2.2.6
    /tmp/judge-ref/bin/python crates/judge/reference/known_values.py > crates/judge/reference/known_values.out
"""

import numpy as np
from scipy.special import logsumexp
from scipy.stats import binom

STEPS = 40
GRID = 10.0 ** (np.arange(-STEPS, STEPS + 1) / STEPS)  # 1/10 ..= 10
ONE = STEPS

# (name, [(canary_requests, canary_events, stable_requests, stable_events), ...])
CASES = [
    ("aa_one_interval", [(500, 5, 4500, 45)]),
    ("regression_2x", [(500, 12, 4500, 44), (500, 9, 4500, 47), (500, 14, 4500, 43),
                       (500, 11, 4500, 46), (500, 10, 4500, 45)]),
    ("shared_outage", [(500, 5, 4500, 46), (1250, 120, 3750, 370), (2500, 26, 2500, 24)]),
    ("ramp_aa", [(250, 3, 4750, 47), (500, 4, 4500, 46), (1250, 14, 3750, 37), (2500, 24, 2500, 26)]),
    ("canary_better", [(2500, 10, 2500, 30), (2500, 12, 2500, 28), (2500, 9, 2500, 31)]),
]


def log_lr(intervals):
    """log likelihood ratio of every grid rho against rho = 1, summed over the intervals."""
    total = np.zeros(len(GRID))
    for nc, xc, ns, xs in intervals:
        k = xc + xs
        q = nc / (nc + ns)
        q_rho = GRID * q / (GRID * q + 1 - q)
        total += binom.logpmf(xc, k, q_rho) - binom.logpmf(xc, k, q)
    return total


def log_mixture(llr, mixed, base):
    mixed = [j for j in mixed if 0 <= j < len(GRID)]
    return logsumexp(llr[mixed]) - np.log(len(mixed)) - llr[base]


def bounds(llr, confidence):
    level = np.log(1 / (1 - confidence))
    lower_rejected = [log_mixture(llr, range(i + 1, i + STEPS + 1), i) >= level
                      for i in range(len(GRID) - 1)]
    upper_rejected = [log_mixture(llr, range(i - STEPS, i), i) >= level
                      for i in range(1, len(GRID))]
    # lower: the grid ratio under the lowest test that is not rejected
    first_kept = next((i for i, r in enumerate(lower_rejected) if not r), None)
    lower = 0.0 if first_kept == 0 else GRID[(len(GRID) - 2) if first_kept is None else first_kept - 1]
    last_kept = next((i for i in range(len(GRID) - 1, 0, -1) if not upper_rejected[i - 1]), None)
    upper = GRID[1] if last_kept is None else (np.inf if last_kept == len(GRID) - 1 else GRID[last_kept + 1])
    return lower, upper


for name, intervals in CASES:
    llr = log_lr(intervals)
    log_e = log_mixture(llr, range(ONE + 1, ONE + STEPS + 1), ONE)
    lower, upper = bounds(llr, 0.95)
    print(f"{name}: log_evidence={float(log_e)!r} lower95={float(lower)!r} "
          f"upper95={float(upper)!r} llr_at_1.995={float(llr[ONE + 12])!r}")
