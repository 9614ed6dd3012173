//! The unbiased pass@k estimator of Chen et al. (2021), as `openai/human-eval` computes it
//! (`human_eval/evaluation.py` at `6d43fb980f9fee3c892a914eda09951f772ad10d`,
//! `estimate_pass_at_k`).
//!
//! With `n` samples of a problem of which `c` pass, pass@k is the probability that at least
//! one of `k` samples drawn without replacement passes: `1 − C(n−c, k) / C(n, k)`. Upstream
//! evaluates the ratio as the product `∏_{i=n−c+1}^{n} (1 − k/i)`, which never forms the huge
//! binomials, and returns 1 when `n − c < k` (every draw of `k` holds a passing sample); this
//! module evaluates the same product (results agree with upstream's to rounding).
//!
//! A benchmark score is the mean over problems, and upstream reports a `k` only when every
//! problem has at least `k` samples ([`pass_at_k_table`]).

use std::collections::BTreeMap;

/// Counts that the estimator cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassAtKError {
    #[error("k must be at least 1")]
    ZeroK,
    #[error("{c} passing samples out of only {n}")]
    MorePassedThanSamples { n: u64, c: u64 },
    #[error("pass@{k} needs at least {k} samples, got {n}")]
    TooFewSamples { n: u64, k: u64 },
}

/// pass@k of one problem with `n` samples of which `c` passed.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Result<f64, PassAtKError> {
    if k == 0 {
        return Err(PassAtKError::ZeroK);
    }
    if c > n {
        return Err(PassAtKError::MorePassedThanSamples { n, c });
    }
    if n < k {
        return Err(PassAtKError::TooFewSamples { n, k });
    }
    if n - c < k {
        return Ok(1.0);
    }
    // Upstream: 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)).
    let k = k as f64;
    let product: f64 = (n - c + 1..=n).map(|i| 1.0 - k / i as f64).product();
    Ok(1.0 - product)
}

/// The `ks` that may be reported for problems with these `(n, c)` counts: those no larger than
/// every problem's `n` (upstream's `(total >= k).all()`), in the order given.
pub fn reportable_ks(counts: &[(u64, u64)], ks: &[u64]) -> Vec<u64> {
    ks.iter()
        .copied()
        .filter(|&k| k >= 1 && counts.iter().all(|&(n, _)| n >= k))
        .collect()
}

/// Mean pass@k over problems for every reportable `k` (see [`reportable_ks`]), keyed by `k`.
/// An empty problem list reports nothing.
pub fn pass_at_k_table(
    counts: &[(u64, u64)],
    ks: &[u64],
) -> Result<BTreeMap<u64, f64>, PassAtKError> {
    let mut table = BTreeMap::new();
    if counts.is_empty() {
        return Ok(table);
    }
    for k in reportable_ks(counts, ks) {
        let mut sum = 0.0;
        for &(n, c) in counts {
            sum += pass_at_k(n, c, k)?;
        }
        table.insert(k, sum / counts.len() as f64);
    }
    Ok(table)
}
