//! Statistics for benchmark results: mean, population standard deviation (as the reports
//! print it), standard error over trials, numpy-compatible percentiles, seeded percentile
//! bootstrap confidence intervals over items, and paired comparisons of two systems.
//!
//! Conventions for degenerate inputs (nothing here panics):
//! - [`mean`] and [`population_std`] of an empty slice are `NaN`; a single value has std 0.
//! - [`standard_error`] is 0 for fewer than two values (there is no spread to estimate).
//! - [`percentile`] of an empty slice is `NaN`; `p` is clamped to `[0, 100]`.
//! - [`bootstrap_ci`] with no items or no resamples is `(NaN, NaN)`; resamples whose
//!   statistic is `NaN` are dropped before taking percentiles.
//! - `NaN` values inside the inputs propagate into means and standard deviations (they are
//!   not silently skipped: a `NaN` score is a bug upstream and should be visible).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};

/// Default confidence level for intervals.
pub const DEFAULT_LEVEL: f64 = 0.95;
/// Default number of bootstrap resamples.
pub const DEFAULT_RESAMPLES: usize = 10_000;
/// Default bootstrap seed (any fixed value: results are reproducible run to run).
pub const DEFAULT_SEED: u64 = 0x006d_6574_6973; // "metis"

/// Summary of a metric over trials (and items, for the confidence interval).
///
/// `NaN` fields serialise as JSON `null` (serde_json's behaviour) and `null` deserialises back
/// to `NaN`, so a summary always round-trips through JSON.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Mean of the per-trial scores.
    #[serde(deserialize_with = "f64_or_nan")]
    pub mean: f64,
    /// Population standard deviation (ddof = 0) of the per-trial scores, as the report prints.
    #[serde(deserialize_with = "f64_or_nan")]
    pub std: f64,
    /// Sample standard deviation (ddof = 1) over trials divided by sqrt(n); 0 for n < 2.
    #[serde(deserialize_with = "f64_or_nan")]
    pub stderr: f64,
    /// Lower bound of the confidence interval (bootstrap over items, computed by the caller).
    #[serde(deserialize_with = "f64_or_nan")]
    pub ci_low: f64,
    /// Upper bound of the confidence interval.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ci_high: f64,
}

impl Summary {
    /// Builds a summary from per-trial scores and an already computed confidence interval.
    pub fn from_trials(trial_scores: &[f64], ci: (f64, f64)) -> Summary {
        Summary {
            mean: mean(trial_scores),
            std: population_std(trial_scores),
            stderr: standard_error(trial_scores),
            ci_low: ci.0,
            ci_high: ci.1,
        }
    }
}

fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Arithmetic mean; `NaN` for an empty slice.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn sum_sq_dev(xs: &[f64]) -> f64 {
    let m = mean(xs);
    xs.iter().map(|x| (x - m) * (x - m)).sum()
}

/// Population standard deviation (ddof = 0); `NaN` for an empty slice, 0 for one value.
pub fn population_std(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    (sum_sq_dev(xs) / xs.len() as f64).sqrt()
}

/// Sample standard deviation (ddof = 1) divided by sqrt(n); 0 for fewer than two values.
pub fn standard_error(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 2 {
        return 0.0;
    }
    let sample_std = (sum_sq_dev(xs) / (n - 1) as f64).sqrt();
    sample_std / (n as f64).sqrt()
}

/// Percentile `p` (0–100) of an ascending-sorted slice with linear interpolation between the
/// closest ranks, like numpy's default (`method="linear"`). `NaN` for an empty slice or a
/// `NaN` `p`; `p` outside `[0, 100]` is clamped.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 || p.is_nan() {
        return f64::NAN;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = rank - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    if frac == 0.0 {
        a
    } else {
        a + (b - a) * frac
    }
}

/// Percentile bootstrap confidence interval at `level` (e.g. 0.95) of a statistic of items.
///
/// Draws `resamples` samples of `n_items` item indices with replacement from a `StdRng` seeded
/// with `seed` (so the interval is deterministic for a seed) and evaluates `stat(&indices)` on
/// each; the interval is the `(1 − level)/2` and `(1 + level)/2` percentiles of the statistics
/// (numpy's linear method). `level` is clamped to `[0, 1]`. Returns `(NaN, NaN)` when there
/// are no items, no resamples, or every resampled statistic is `NaN`.
pub fn bootstrap_ci(
    n_items: usize,
    resamples: usize,
    level: f64,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> f64,
) -> (f64, f64) {
    if n_items == 0 || resamples == 0 || level.is_nan() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut indices = vec![0usize; n_items];
    let mut stats = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in indices.iter_mut() {
            *slot = rng.random_range(0..n_items);
        }
        let s = stat(&indices);
        if !s.is_nan() {
            stats.push(s);
        }
    }
    if stats.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    (
        percentile(&stats, 100.0 * alpha),
        percentile(&stats, 100.0 * (1.0 - alpha)),
    )
}

/// Paired comparison of two systems on the same items.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PairedDiff {
    /// Mean of `a[i] − b[i]`.
    #[serde(deserialize_with = "f64_or_nan")]
    pub mean_diff: f64,
    /// Percentile bootstrap interval of the mean difference (items resampled in pairs).
    #[serde(deserialize_with = "f64_or_nan")]
    pub ci_low: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub ci_high: f64,
    /// Number of paired items compared.
    pub n: usize,
    /// Items where `a[i] > b[i]`.
    pub a_better: usize,
    /// Items where `a[i] < b[i]`.
    pub b_better: usize,
    /// Items where neither is greater (equal, or either value `NaN`).
    pub ties: usize,
}

/// Paired comparison of per-item values `a[i]` and `b[i]` of two systems on the same items:
/// mean difference `a − b`, its percentile bootstrap CI (see [`bootstrap_ci`]), and win/loss/tie
/// counts. If the slices differ in length only the common prefix is compared (and a warning
/// is logged); with no items the mean and interval are `NaN`.
pub fn paired_diff(a: &[f64], b: &[f64], resamples: usize, level: f64, seed: u64) -> PairedDiff {
    if a.len() != b.len() {
        tracing::warn!(
            a = a.len(),
            b = b.len(),
            "paired_diff: slices differ in length; comparing the common prefix"
        );
    }
    let n = a.len().min(b.len());
    let diffs: Vec<f64> = a[..n].iter().zip(&b[..n]).map(|(x, y)| x - y).collect();
    let (mut a_better, mut b_better, mut ties) = (0, 0, 0);
    for (x, y) in a[..n].iter().zip(&b[..n]) {
        if x > y {
            a_better += 1;
        } else if x < y {
            b_better += 1;
        } else {
            ties += 1;
        }
    }
    let (ci_low, ci_high) = bootstrap_ci(n, resamples, level, seed, |idx| {
        idx.iter().map(|&i| diffs[i]).sum::<f64>() / idx.len() as f64
    });
    PairedDiff {
        mean_diff: mean(&diffs),
        ci_low,
        ci_high,
        n,
        a_better,
        b_better,
        ties,
    }
}
