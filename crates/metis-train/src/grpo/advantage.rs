//! Group-relative advantages, as TRL's `GRPOTrainer` computes them
//! (`_generate_and_score_completions`, `multi_objective_aggregation="sum_then_normalize"`).
//!
//! The batch is `rewards.len() / group_size` groups of `group_size` consecutive completions of
//! the same prompt. For every completion `A_i = R_i − mean_group(R)`; unless the scaling is
//! [`ScaleRewards::None`], `A_i` is then divided by `std + 1e-4`, where `std` is the
//! Bessel-corrected (unbiased, `n − 1`) standard deviation of the group
//! ([`ScaleRewards::Group`], TRL's default) or of the whole batch ([`ScaleRewards::Batch`]; the
//! baseline is still the group mean, as in TRL).
//!
//! A NaN reward (no reward function could score the completion) is left out of the mean and
//! the std (TRL's `nanmean`/`nanstd`) and its completion gets advantage 0, so it carries no
//! gradient. As in TRL, a std over fewer than two scored rewards is NaN, every advantage it
//! would scale becomes 0 (TRL's `nan_to_num`), and it does not count as a zero std.
//!
//! `frac_reward_zero_std` is the share of completions whose std (the one used for scaling:
//! group std for `Group`/`None`, batch std for `Batch`, exactly what TRL logs) is zero (TRL's
//! `torch.isclose(std, 0)`, i.e. `|std| ≤ 1e-8`); such groups give every member advantage 0.
//! `reward_mean`/`reward_std` are TRL's `reward`/`reward_std` (batch `nanmean`/`nanstd`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The std added to the denominator, as in TRL.
pub const STD_EPS: f64 = 1e-4;

/// How rewards are scaled after subtracting the group mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// Divide by the group's std + 1e-4 (TRL default, original GRPO).
    #[default]
    Group,
    /// Divide by the whole batch's std + 1e-4.
    Batch,
    /// No division (Dr. GRPO's advantage).
    None,
}

impl ScaleRewards {
    pub fn name(self) -> &'static str {
        match self {
            ScaleRewards::Group => "group",
            ScaleRewards::Batch => "batch",
            ScaleRewards::None => "none",
        }
    }
}

impl fmt::Display for ScaleRewards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScaleRewards {
    type Err = String;
    /// `group`, `batch` or `none` (also TRL's boolean spellings `true` = group, `false` = none).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "group" | "true" => Ok(Self::Group),
            "batch" => Ok(Self::Batch),
            "none" | "false" => Ok(Self::None),
            other => Err(format!(
                "unknown reward scaling {other:?} (expected group, batch or none)"
            )),
        }
    }
}

/// Why advantages cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvantageError {
    #[error("group size must be at least 2 (got {0})")]
    GroupSize(usize),
    #[error("{len} rewards do not split into groups of {group_size}")]
    Ragged { len: usize, group_size: usize },
}

/// Batch statistics logged next to the advantages.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AdvantageStats {
    /// Share of completions whose scaling std is zero (they get advantage 0).
    pub frac_reward_zero_std: f64,
    /// Mean of the scored (non-NaN) rewards of the batch (NaN when none is scored).
    pub reward_mean: f64,
    /// Bessel-corrected std of the scored rewards of the batch (NaN for fewer than two).
    pub reward_std: f64,
    /// Number of NaN (unscored) rewards.
    pub num_nan: usize,
    /// Number of groups.
    pub num_groups: usize,
}

/// Advantages of one batch, one per completion, with their statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advantages {
    pub values: Vec<f64>,
    pub stats: AdvantageStats,
}

/// Mean and Bessel-corrected std of the non-NaN values (TRL's `nanmean`, `nanstd`): the mean
/// is NaN without values, the std NaN with fewer than two.
fn nan_mean_std(xs: &[f64]) -> (f64, f64) {
    let valid: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    let n = valid.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = valid.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = valid.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// TRL's `torch.isclose(std, 0)`: `|std| ≤ atol` with atol 1e-8 (false for NaN).
fn is_zero_std(std: f64) -> bool {
    std.abs() <= 1e-8
}

/// Group-relative advantages of `rewards` (groups of `group_size` consecutive completions).
pub fn group_advantages(
    rewards: &[f64],
    group_size: usize,
    scale: ScaleRewards,
) -> Result<Advantages, AdvantageError> {
    if group_size < 2 {
        return Err(AdvantageError::GroupSize(group_size));
    }
    if (rewards.len() / group_size) * group_size != rewards.len() {
        return Err(AdvantageError::Ragged {
            len: rewards.len(),
            group_size,
        });
    }
    let (batch_mean, batch_std) = nan_mean_std(rewards);
    let mut values = Vec::with_capacity(rewards.len());
    let mut zero_std_rows = 0usize;
    for group in rewards.chunks(group_size) {
        let (mean, group_std) = nan_mean_std(group);
        let std = match scale {
            ScaleRewards::Group | ScaleRewards::None => group_std,
            ScaleRewards::Batch => batch_std,
        };
        for &r in group {
            if is_zero_std(std) {
                zero_std_rows += 1;
            }
            let centred = r - mean;
            let a = match scale {
                ScaleRewards::None => centred,
                ScaleRewards::Group | ScaleRewards::Batch => centred / (std + STD_EPS),
            };
            // TRL's nan_to_num: unscored rows and NaN stds give advantage 0.
            values.push(if a.is_nan() { 0.0 } else { a });
        }
    }
    let n = rewards.len().max(1) as f64;
    Ok(Advantages {
        stats: AdvantageStats {
            frac_reward_zero_std: zero_std_rows as f64 / n,
            reward_mean: batch_mean,
            reward_std: batch_std,
            num_nan: rewards.iter().filter(|r| r.is_nan()).count(),
            num_groups: rewards.len() / group_size,
        },
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_group_of_five() {
        // 2 of 5 correct: mean 0.4, unbiased std sqrt(0.3) = 0.5477.
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0, 0.0], 5, ScaleRewards::Group).unwrap();
        let s = 0.3f64.sqrt() + STD_EPS;
        assert!((a.values[0] - 0.6 / s).abs() < 1e-12);
        assert!((a.values[1] + 0.4 / s).abs() < 1e-12);
        assert_eq!(a.stats.frac_reward_zero_std, 0.0);
    }

    #[test]
    fn zero_std_groups_and_nan() {
        let a =
            group_advantages(&[1.0, 1.0, 0.0, f64::NAN, 1.0, 0.0], 3, ScaleRewards::Group).unwrap();
        // Group 1 is not constant; group 2 has std of {1, 0}.
        assert_eq!(a.values[3], 0.0);
        let s = 0.5f64.sqrt() + STD_EPS;
        assert!((a.values[4] - 0.5 / s).abs() < 1e-12);
        assert_eq!(a.stats.num_nan, 1);
        // One scored reward: NaN std, advantage 0, not a zero std.
        let one = group_advantages(&[f64::NAN, 1.0, 0.0, 1.0], 2, ScaleRewards::Group).unwrap();
        assert_eq!(one.values[..2], [0.0, 0.0]);
        assert_eq!(one.stats.frac_reward_zero_std, 0.0);
        let z = group_advantages(&[1.0, 1.0, 0.5, 0.5], 2, ScaleRewards::Group).unwrap();
        assert_eq!(z.values, vec![0.0; 4]);
        assert_eq!(z.stats.frac_reward_zero_std, 1.0);
    }

    #[test]
    fn none_and_batch() {
        let r = [1.0, 0.0, 0.0, 0.0];
        let none = group_advantages(&r, 2, ScaleRewards::None).unwrap();
        assert_eq!(none.values, vec![0.5, -0.5, 0.0, 0.0]);
        assert_eq!(none.stats.frac_reward_zero_std, 0.5);
        let batch = group_advantages(&r, 2, ScaleRewards::Batch).unwrap();
        let s = 0.25f64.sqrt() + STD_EPS; // batch var = (0.5625 + 3 * 0.0625) / 3
        assert!((batch.values[0] - 0.5 / s).abs() < 1e-12);
        assert!(group_advantages(&r, 3, ScaleRewards::Group).is_err());
        assert!(group_advantages(&r, 1, ScaleRewards::Group).is_err());
    }
}
