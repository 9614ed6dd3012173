//! pass@k: the estimator against the closed form `1 − C(n−c, k) / C(n, k)`, upstream's
//! reporting rule, and its properties on random counts.

use metis_verify::code::pass_at_k::{pass_at_k, pass_at_k_table, reportable_ks, PassAtKError};
use proptest::prelude::*;

/// (n, c, k, closed form), the closed form computed exactly (Python `fractions` and
/// `math.comb`) and rounded once to f64; rows with n − c < k are 1 by definition.
const TABLE: [(u64, u64, u64, f64); 21] = [
    (1, 0, 1, 0.0),
    (1, 1, 1, 1.0),
    (5, 0, 1, 0.0),
    (5, 2, 1, 0.4),
    (5, 2, 2, 0.7),
    (5, 2, 3, 0.9),
    (5, 2, 4, 1.0),
    (10, 3, 10, 1.0),
    (10, 0, 10, 0.0),
    (10, 9, 2, 1.0),
    (20, 5, 10, 0.9837461300309598),
    (20, 1, 10, 0.5),
    (100, 1, 1, 0.01),
    (100, 1, 10, 0.1),
    (100, 7, 100, 1.0),
    (200, 13, 10, 0.49755111473060615),
    (200, 199, 1, 0.995),
    (1000, 3, 100, 0.2712433876762534),
    (1000, 500, 100, 1.0),
    (1000, 1, 1000, 1.0),
    (64, 20, 10, 0.9836191713431707),
];

#[test]
fn matches_the_closed_form_on_a_table() {
    for (n, c, k, want) in TABLE {
        let got = pass_at_k(n, c, k).unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "n={n} c={c} k={k}: {got} vs {want}"
        );
    }
}

fn binomial(n: u64, k: u64) -> u128 {
    if k > n {
        return 0;
    }
    (0..k).fold(1u128, |acc, i| acc * u128::from(n - i) / u128::from(i + 1))
}

#[test]
fn matches_exact_binomials_for_every_small_count() {
    for n in 1..=40u64 {
        for c in 0..=n {
            for k in 1..=n {
                let exact = 1.0 - binomial(n - c, k) as f64 / binomial(n, k) as f64;
                let got = pass_at_k(n, c, k).unwrap();
                assert!(
                    (got - exact).abs() < 1e-9,
                    "n={n} c={c} k={k}: {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn bad_counts_are_errors() {
    assert_eq!(pass_at_k(5, 1, 0), Err(PassAtKError::ZeroK));
    assert_eq!(
        pass_at_k(5, 6, 1),
        Err(PassAtKError::MorePassedThanSamples { n: 5, c: 6 })
    );
    assert_eq!(
        pass_at_k(5, 0, 10),
        Err(PassAtKError::TooFewSamples { n: 5, k: 10 })
    );
}

#[test]
fn a_k_is_reported_only_when_every_problem_has_k_samples() {
    let counts = [(10, 3), (10, 0), (4, 4)];
    assert_eq!(reportable_ks(&counts, &[1, 4, 5, 10, 100]), vec![1, 4]);
    let table = pass_at_k_table(&counts, &[1, 10, 100]).unwrap();
    assert_eq!(table.keys().copied().collect::<Vec<_>>(), vec![1]);
    // pass@1 is the mean of c/n.
    let want = (0.3 + 0.0 + 1.0) / 3.0;
    assert!((table[&1] - want).abs() < 1e-12);
    let ten = pass_at_k_table(&[(10, 3), (10, 0)], &[1, 10]).unwrap();
    assert_eq!(ten[&10], 0.5, "one problem solved for sure, one never");
    assert!(pass_at_k_table(&[], &[1]).unwrap().is_empty());
    assert!(pass_at_k_table(&[(3, 4)], &[1]).is_err());
}

proptest! {
    #[test]
    fn estimator_is_a_probability_monotone_in_c(
        (n, c, k) in (1u64..3000).prop_flat_map(|n| (Just(n), 0..=n, 1..=n))
    ) {
        let p = pass_at_k(n, c, k).unwrap();
        prop_assert!((0.0..=1.0).contains(&p), "{p}");
        if c < n {
            let more = pass_at_k(n, c + 1, k).unwrap();
            prop_assert!(more + 1e-12 >= p, "c={c}: {p}, c+1: {more}");
        }
        // More draws never lower the chance that one of them passes.
        if k < n {
            prop_assert!(pass_at_k(n, c, k + 1).unwrap() + 1e-12 >= p);
        }
    }
}
