//! Which sequences each optimizer step trains on, and the data cursor a checkpoint stores so
//! that a resumed run continues that plan exactly.

use serde::{Deserialize, Serialize};

use super::SftError;
use crate::data::epoch_permutation;

/// The step plan: which sequences make up each micro-batch of each step.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    n: usize,
    batch_size: usize,
    grad_accum: usize,
    pub(super) micro_per_epoch: u64,
    pub(super) steps_per_epoch: u64,
    seed: u64,
}

impl Plan {
    pub(super) fn new(n: usize, batch_size: usize, grad_accum: usize, seed: u64) -> Plan {
        let micro = n.div_ceil(batch_size) as u64;
        Plan {
            n,
            batch_size,
            grad_accum,
            micro_per_epoch: micro,
            steps_per_epoch: micro.div_ceil(grad_accum as u64),
            seed,
        }
    }

    /// (epoch, step in epoch, first micro-batch index) of global step `step` (0-based).
    pub(super) fn locate(&self, step: u64) -> (u64, u64, u64) {
        let epoch = step / self.steps_per_epoch;
        let k = step % self.steps_per_epoch;
        (epoch, k, k * self.grad_accum as u64)
    }

    /// Sequence indices of each micro-batch of global step `step`, `perm` being the order of
    /// the step's epoch.
    pub(super) fn step_batches(&self, step: u64, perm: &[usize]) -> Vec<Vec<usize>> {
        let (_, _, first) = self.locate(step);
        let last = (first + self.grad_accum as u64).min(self.micro_per_epoch);
        (first..last)
            .map(|m| {
                let lo = m as usize * self.batch_size;
                let hi = (lo + self.batch_size).min(self.n);
                perm[lo..hi].to_vec()
            })
            .collect()
    }

    /// The fractional epoch reached after step `step`: `epoch + (k + 1) / steps_per_epoch`.
    pub(super) fn epoch_progress(&self, step: u64) -> f64 {
        let (epoch, k, _) = self.locate(step);
        epoch as f64 + (k + 1) as f64 / self.steps_per_epoch as f64
    }
}

/// The permutation of the epoch being trained, drawn again only when the epoch changes.
#[derive(Debug, Default)]
pub(super) struct EpochOrder {
    epoch: Option<u64>,
    perm: Vec<usize>,
}

impl EpochOrder {
    /// The order of `epoch` under `plan`'s seed ([`epoch_permutation`]).
    pub(super) fn of(&mut self, plan: &Plan, epoch: u64) -> &[usize] {
        if self.epoch != Some(epoch) {
            self.perm = epoch_permutation(plan.n, plan.seed, epoch);
            self.epoch = Some(epoch);
        }
        &self.perm
    }
}

/// The SFT-specific training state, stored as the `data_cursor` of the checkpoint's
/// [`crate::checkpoint::TrainState`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch the next step belongs to (0-based).
    pub epoch: u64,
    /// Steps of that epoch already done.
    pub step_in_epoch: u64,
    /// Micro-batches of that epoch already consumed.
    pub micro_batch_in_epoch: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub n_sequences: u64,
    /// Position of the model's dropout stream ([`crate::model::TrainModel::rng_state`]).
    pub rng_state: u64,
    /// The data-order seed.
    pub seed: u64,
    /// Wall seconds of training so far.
    pub elapsed_s: f64,
    /// Whether this is a LoRA run.
    pub lora: bool,
}

/// What fixes a run's step plan: a checkpoint resumes only a run that agrees on all of it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RunShape {
    pub n_sequences: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub seed: u64,
    pub lora: bool,
}

impl RunShape {
    fn of(st: &TrainerState) -> RunShape {
        RunShape {
            n_sequences: st.n_sequences,
            steps_per_epoch: st.steps_per_epoch,
            total_steps: st.total_steps,
            seed: st.seed,
            lora: st.lora,
        }
    }

    /// The cursor of a checkpoint after `done` steps of this run.
    pub(super) fn cursor(
        &self,
        plan: &Plan,
        done: u64,
        rng_state: u64,
        elapsed_s: f64,
    ) -> TrainerState {
        let (epoch, step_in_epoch, micro_batch_in_epoch) = plan.locate(done);
        TrainerState {
            step: done,
            epoch,
            step_in_epoch,
            micro_batch_in_epoch,
            steps_per_epoch: self.steps_per_epoch,
            total_steps: self.total_steps,
            n_sequences: self.n_sequences,
            rng_state,
            seed: self.seed,
            elapsed_s,
            lora: self.lora,
        }
    }

    /// Refuse a checkpoint (`dir`, for the message) written by a run of another shape.
    pub(super) fn check(&self, st: &TrainerState, dir: &std::path::Path) -> Result<(), SftError> {
        let was = RunShape::of(st);
        if was == *self {
            return Ok(());
        }
        Err(SftError::Resume(format!(
            "{} was written by a different run (data, batch size, steps, seed or \
             LoRA differ): {} sequences / {} steps per epoch / {} steps / seed {} / \
             lora {} vs now {} / {} / {} / {} / {}",
            dir.display(),
            was.n_sequences,
            was.steps_per_epoch,
            was.total_steps,
            was.seed,
            was.lora,
            self.n_sequences,
            self.steps_per_epoch,
            self.total_steps,
            self.seed,
            self.lora
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_sequence_once_per_epoch() {
        let plan = Plan::new(10, 3, 2, 1);
        assert_eq!(plan.micro_per_epoch, 4);
        assert_eq!(plan.steps_per_epoch, 2);
        for epoch in 0..2u64 {
            let perm = epoch_permutation(10, 1, epoch);
            let mut seen = Vec::new();
            for k in 0..plan.steps_per_epoch {
                let step = epoch * plan.steps_per_epoch + k;
                let mbs = plan.step_batches(step, &perm);
                assert_eq!(mbs.len(), 2);
                seen.extend(mbs.into_iter().flatten());
            }
            seen.sort();
            assert_eq!(seen, (0..10).collect::<Vec<_>>());
        }
        assert_eq!(plan.locate(3), (1, 1, 2));
        assert_eq!(plan.epoch_progress(2), 1.5);
    }

    #[test]
    fn epoch_order_is_drawn_per_epoch() {
        let plan = Plan::new(10, 3, 2, 1);
        let mut order = EpochOrder::default();
        assert_eq!(order.of(&plan, 1), epoch_permutation(10, 1, 1));
        assert_eq!(order.of(&plan, 0), epoch_permutation(10, 1, 0));
    }

    #[test]
    fn a_checkpoint_of_another_shape_is_refused_by_name() {
        let plan = Plan::new(10, 3, 2, 1);
        let shape = RunShape {
            n_sequences: 10,
            steps_per_epoch: plan.steps_per_epoch,
            total_steps: 6,
            seed: 1,
            lora: false,
        };
        let st = shape.cursor(&plan, 3, 0, 1.0);
        assert_eq!(
            (st.epoch, st.step_in_epoch, st.micro_batch_in_epoch),
            (1, 1, 2)
        );
        let dir = std::path::Path::new("out/checkpoint-3");
        assert!(shape.check(&st, dir).is_ok());
        let other = RunShape {
            seed: 2,
            ..shape.clone()
        };
        let err = other.check(&st, dir).unwrap_err().to_string();
        assert!(
            err.contains("cannot resume") && err.contains("checkpoint-3"),
            "{err}"
        );
        assert!(
            err.contains("seed 1 / lora false vs now 10 / 2 / 6 / 2 / false"),
            "{err}"
        );
    }
}
