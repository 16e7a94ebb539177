//! The e-process and its bounds against values computed independently in
//! `reference/known_values.py` (scipy's binomial probabilities, brute-force test inversion);
//! its output is pinned in `reference/known_values.out`.

use modelrollout_judge::{Counts, GRID_LEN, SequentialTest, grid_ratio};

struct Case {
    name: &'static str,
    intervals: &'static [(f64, f64, f64, f64)],
    log_evidence: f64,
    lower95: f64,
    upper95: f64,
    /// log-likelihood ratio at the grid point 10^(12/40) ≈ 1.995
    llr_near_2: f64,
}

const CASES: &[Case] = &[
    Case {
        name: "aa_one_interval",
        intervals: &[(500.0, 5.0, 4500.0, 45.0)],
        log_evidence: -1.5042308091869678,
        lower95: 0.19952623149688797,
        upper95: 3.1622776601683795,
        llr_near_2: -1.2900917799005782,
    },
    Case {
        name: "regression_2x",
        intervals: &[
            (500.0, 12.0, 4500.0, 44.0),
            (500.0, 9.0, 4500.0, 47.0),
            (500.0, 14.0, 4500.0, 43.0),
            (500.0, 11.0, 4500.0, 46.0),
            (500.0, 10.0, 4500.0, 45.0),
        ],
        log_evidence: 10.500422742226595,
        lower95: 1.333521432163324,
        upper95: 3.548133892335755,
        llr_near_2: 12.02232142531892,
    },
    Case {
        name: "shared_outage",
        intervals: &[
            (500.0, 5.0, 4500.0, 46.0),
            (1250.0, 120.0, 3750.0, 370.0),
            (2500.0, 26.0, 2500.0, 24.0),
        ],
        log_evidence: -3.3934742549126833,
        lower95: 0.7079457843841379,
        upper95: 1.4125375446227544,
        llr_near_2: -29.601802572997915,
    },
    Case {
        name: "ramp_aa",
        intervals: &[
            (250.0, 3.0, 4750.0, 47.0),
            (500.0, 4.0, 4500.0, 46.0),
            (1250.0, 14.0, 3750.0, 37.0),
            (2500.0, 24.0, 2500.0, 26.0),
        ],
        log_evidence: -2.4825442300124942,
        lower95: 0.5308844442309884,
        upper95: 1.7782794100389228,
        llr_near_2: -7.6135027914782665,
    },
    Case {
        name: "canary_better",
        intervals: &[
            (2500.0, 10.0, 2500.0, 30.0),
            (2500.0, 12.0, 2500.0, 28.0),
            (2500.0, 9.0, 2500.0, 31.0),
        ],
        log_evidence: -5.234211416859362,
        lower95: 0.1778279410038923,
        upper95: 0.6309573444801932,
        llr_near_2: -27.052114411432317,
    },
];

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

fn run(case: &Case) -> SequentialTest {
    let mut test = SequentialTest::new(0.05);
    for &(cr, ce, sr, se) in case.intervals {
        test.observe(Counts::new(cr, ce, sr, se));
    }
    test
}

/// The evidence and the likelihood ratio near ρ = 2 match the independent computation.
#[test]
fn evidence_matches_the_reference() {
    for case in CASES {
        let test = run(case);
        assert!(
            close(test.log_evidence(), case.log_evidence),
            "{}: {}",
            case.name,
            test.log_evidence()
        );
        let llr = test.state().log_likelihood_ratios[52];
        assert!(close(llr, case.llr_near_2), "{}: {llr}", case.name);
    }
}

/// The 95 % bounds match the brute-force inversion of the reference.
#[test]
fn bounds_match_the_reference() {
    for case in CASES {
        let (lower, upper) = run(case).ratio_bounds(0.95);
        assert!(close(lower, case.lower95), "{}: lower {lower}", case.name);
        assert!(close(upper, case.upper95), "{}: upper {upper}", case.name);
    }
}

/// Only the regression reaches 1/α = 20; the shared outage raises no evidence.
#[test]
fn only_the_regression_is_rejected() {
    for case in CASES {
        assert_eq!(run(case).rejected(), case.name == "regression_2x", "{}", case.name);
    }
}

/// The grid runs from 1/10 to 10 with ρ = 1 in the middle and 1.995 at index 52.
#[test]
fn grid_layout() {
    assert!(close(grid_ratio(0), 0.1) && close(grid_ratio(GRID_LEN - 1), 10.0));
    assert!(close(grid_ratio(GRID_LEN / 2), 1.0));
    assert!(close(grid_ratio(52), 10f64.powf(0.3)));
}
