//! Learning-rate schedules, matching transformers' `get_cosine_schedule_with_warmup`,
//! `get_constant_schedule_with_warmup` and `get_constant_schedule`.
//!
//! As in the HF `Trainer`, the learning rate of optimizer step `k` (0-based) is
//! `base_lr * lambda(k)`: with warmup the very first step runs at learning rate 0.

use serde::{Deserialize, Serialize};

/// Which schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear warmup from 0, then half a cosine down to 0 at `total_steps`.
    #[default]
    Cosine,
    /// Linear warmup from 0, then constant (`warmup_steps = 0`: plain constant).
    Constant,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cosine" => Ok(ScheduleKind::Cosine),
            "constant" | "constant_with_warmup" => Ok(ScheduleKind::Constant),
            _ => Err(format!("unknown schedule {s:?} (cosine, constant)")),
        }
    }
}

/// A learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Number of cosine waves (transformers' `num_cycles`, default 0.5 = half a wave).
    pub num_cycles: f64,
}

/// Warmup steps from a count or a ratio of the total, as transformers'
/// `TrainingArguments.get_warmup_steps`: the count if it is positive, else
/// `ceil(total_steps * ratio)`.
pub fn warmup_steps(total_steps: u64, steps: u64, ratio: f64) -> u64 {
    if steps > 0 {
        steps
    } else {
        (total_steps as f64 * ratio).ceil() as u64
    }
}

impl Schedule {
    pub fn cosine(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Schedule {
        Schedule {
            kind: ScheduleKind::Cosine,
            base_lr,
            warmup_steps,
            total_steps,
            num_cycles: 0.5,
        }
    }

    pub fn constant(base_lr: f64, warmup_steps: u64) -> Schedule {
        Schedule {
            kind: ScheduleKind::Constant,
            base_lr,
            warmup_steps,
            total_steps: 0,
            num_cycles: 0.5,
        }
    }

    /// The multiplier of the base learning rate at (0-based) step `step`.
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Cosine => {
                let progress = (step - self.warmup_steps) as f64
                    / (self.total_steps.saturating_sub(self.warmup_steps)).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * self.num_cycles * 2.0 * progress).cos()))
                    .max(0.0)
            }
        }
    }

    /// The learning rate at (0-based) step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked out by hand from transformers' `_get_cosine_schedule_with_warmup_lr_lambda`:
    /// `step / max(1, warmup)` during warmup, then
    /// `max(0, 0.5 * (1 + cos(pi * 0.5 * 2 * (step - warmup) / max(1, total - warmup))))`.
    #[test]
    fn cosine_matches_transformers() {
        let s = Schedule::cosine(1e-3, 10, 110);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.factor(5) - 0.5).abs() < 1e-15);
        assert_eq!(s.factor(10), 1.0);
        // progress 0.5: 0.5 * (1 + cos(pi/2)) = 0.5
        assert!((s.factor(60) - 0.5).abs() < 1e-15);
        // progress 0.25: 0.5 * (1 + cos(pi/4)) = 0.5 + sqrt(2)/4
        assert!((s.factor(35) - (0.5 + 2f64.sqrt() / 4.0)).abs() < 1e-15);
        // progress 0.75: 0.5 - sqrt(2)/4
        assert!((s.factor(85) - (0.5 - 2f64.sqrt() / 4.0)).abs() < 1e-15);
        assert!(s.factor(110).abs() < 1e-15);
        // Past the end: cos wraps up again (num_cycles 0.5 → progress 1.2 → 0.5(1+cos 1.2pi)).
        let v = 0.5 * (1.0 + (std::f64::consts::PI * 1.2).cos());
        assert!((s.factor(130) - v).abs() < 1e-15);
        assert!((s.lr(60) - 5e-4).abs() < 1e-18);
        // No warmup: step 0 is the full rate.
        let s = Schedule::cosine(2.0, 0, 4);
        assert_eq!(s.lr(0), 2.0);
        assert!((s.lr(1) - (1.0 + 0.5f64.sqrt())).abs() < 1e-15);
        assert!((s.lr(2) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn constant_and_warmup_ratio() {
        let s = Schedule::constant(1e-4, 4);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(2) - 5e-5).abs() < 1e-20);
        assert_eq!(s.lr(4), 1e-4);
        assert_eq!(s.lr(1000), 1e-4);
        assert_eq!(Schedule::constant(1e-4, 0).lr(0), 1e-4);
        assert_eq!(warmup_steps(100, 0, 0.03), 3);
        assert_eq!(warmup_steps(101, 0, 0.03), 4); // ceil(3.03)
        assert_eq!(warmup_steps(100, 7, 0.5), 7);
        assert_eq!(warmup_steps(100, 0, 0.0), 0);
    }
}
