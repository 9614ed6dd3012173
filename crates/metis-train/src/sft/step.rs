//! One SFT optimizer step (its micro-batches, the step-mean cross-entropy, clipping and the
//! AdamW update) and one SFT checkpoint: the [`StepLoop`] of an SFT run.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::plan::{EpochOrder, Plan, RunShape};
use super::{SftConfig, SftError, SftSummary};
use crate::checkpoint::TrainState;
use crate::data::{collate, Batch, Sequence};
use crate::metrics::{MetricsWriter, StepMetrics};
use crate::model::{logprobs_from_logits, BatchLayout, TrainError, TrainModel};
use crate::optim::{clip_grad_norm, AdamW, GradAccumulator, Grads};
use crate::run_dir::RunDir;
use crate::schedule::Schedule;
use crate::train_loop::StepLoop;

/// An SFT run between loading and the final save.
pub(super) struct SftRun<'a> {
    pub cfg: &'a SftConfig,
    pub run: RunDir,
    pub seqs: Vec<Sequence>,
    pub pad_id: u32,
    pub plan: Plan,
    pub shape: RunShape,
    pub schedule: Schedule,
    pub model: TrainModel,
    pub opt: AdamW,
    pub device: Device,
    pub metrics: MetricsWriter,
    pub order: EpochOrder,
    /// Wall seconds of the run before this process, and when this process started training.
    pub elapsed_before: f64,
    pub started: Instant,
    /// Steps done before this process (the resume point).
    pub steps_before: u64,
    pub summary: SftSummary,
}

/// The gradient of one step and what it was computed on.
struct StepGradient {
    grads: Grads,
    loss: f64,
    loss_tokens: usize,
    tokens: usize,
}

impl StepLoop for SftRun<'_> {
    type Error = SftError;

    fn step(&mut self, step: u64) -> Result<String, SftError> {
        let t = Instant::now();
        let batches = self.batches(step);
        let lr = self.schedule.lr(step);
        let mut g = self.gradient(&batches)?;
        let grad_norm = self.clip(&mut g.grads)?;
        self.opt.set_learning_rate(lr);
        // A step without loss tokens or with a non-finite gradient leaves the weights alone.
        if grad_norm.is_finite() && g.loss_tokens > 0 {
            self.opt.step(&g.grads)?;
        }
        let dt = t.elapsed().as_secs_f64();
        self.metrics.write(&StepMetrics {
            step: step + 1,
            epoch: self.plan.epoch_progress(step),
            loss: g.loss,
            lr,
            grad_norm,
            loss_tokens: g.loss_tokens as u64,
            tokens: g.tokens as u64,
            tokens_per_s: if dt > 0.0 { g.tokens as f64 / dt } else { 0.0 },
            elapsed_s: self.elapsed_s(),
        })?;
        if self.summary.steps == self.steps_before {
            self.summary.first_loss = g.loss;
        }
        self.summary.last_loss = g.loss;
        self.summary.steps = step + 1;
        Ok(format!("loss {:.4} lr {lr:.2e}", g.loss))
    }

    fn checkpoint(&mut self, done: u64) -> Result<(), SftError> {
        let rng_state = self.model.rng_state();
        let cursor = self
            .shape
            .cursor(&self.plan, done, rng_state, self.elapsed_s());
        let state = TrainState {
            step: done,
            rng_state,
            data_cursor: serde_json::to_value(&cursor).expect("state serialises"),
        };
        let dir = self.run.save_checkpoint(&self.model, &self.opt, &state)?;
        self.summary.checkpoints.push(dir);
        self.metrics.plot(&self.curves_path())?;
        Ok(())
    }
}

impl SftRun<'_> {
    /// After the last step: the final model (also when resuming a run that had already
    /// finished), and the curves if no checkpoint of this process drew them.
    pub(super) fn finish(mut self) -> Result<SftSummary, SftError> {
        let final_dir = self.run.save_final(&self.model)?;
        if self.summary.checkpoints.is_empty() && !self.metrics.history().is_empty() {
            self.metrics.plot(&self.curves_path())?;
        }
        self.summary.final_dir = Some(final_dir);
        Ok(self.summary)
    }

    fn curves_path(&self) -> PathBuf {
        self.run.path().join("curves.png")
    }

    /// Wall seconds of training so far, across resumes.
    fn elapsed_s(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The collated micro-batches of step `step`.
    fn batches(&mut self, step: u64) -> Vec<Batch> {
        let (epoch, _, _) = self.plan.locate(step);
        let perm = self.order.of(&self.plan, epoch);
        self.plan
            .step_batches(step, perm)
            .iter()
            .map(|idx| {
                let refs: Vec<&Sequence> = idx.iter().map(|&i| &self.seqs[i]).collect();
                collate(&refs, self.pad_id)
            })
            .collect()
    }

    /// The gradient of the step's mean token loss: each micro-batch's summed loss divided by
    /// the loss tokens of the whole step, accumulated.
    fn gradient(&self, batches: &[Batch]) -> Result<StepGradient, SftError> {
        let loss_tokens: usize = batches.iter().map(Batch::n_targets).sum();
        let tokens: usize = batches.iter().map(Batch::n_tokens).sum();
        let mut loss = 0.0f64;
        if loss_tokens == 0 {
            return Ok(StepGradient {
                grads: Grads::default(),
                loss,
                loss_tokens,
                tokens,
            });
        }
        let mut acc = GradAccumulator::default();
        let mut single = None;
        for b in batches {
            let (ids, layout, targets, weights) = batch_tensors(b, &self.device)?;
            let out = self.model.loss_and_grads(
                &ids,
                &layout,
                true,
                self.cfg.grad_checkpoint,
                |logits| {
                    let summed = micro_batch_loss(logits, &targets, &weights)?;
                    Ok(((summed / loss_tokens as f64)?, ()))
                },
            )?;
            loss += out
                .loss
                .to_dtype(DType::F64)
                .and_then(|l| l.to_scalar::<f64>())
                .map_err(TrainError::from)?;
            // One micro-batch needs no accumulator: its gradient is the step's.
            if batches.len() == 1 {
                single = Some(out.grads);
            } else {
                acc.add_grads(&out.grads)?;
            }
        }
        let grads = match single {
            Some(g) => g,
            None => acc.finish(1.0)?,
        };
        Ok(StepGradient {
            grads,
            loss,
            loss_tokens,
            tokens,
        })
    }

    /// Clip to `max_grad_norm` (0: no clipping); the norm before clipping.
    fn clip(&self, grads: &mut Grads) -> Result<f64, SftError> {
        Ok(if self.cfg.max_grad_norm > 0.0 {
            clip_grad_norm(grads, self.cfg.max_grad_norm)?
        } else {
            grads.global_norm()?
        })
    }
}

/// Tensors of one micro-batch: ids `[b, s]`, layout, targets `[b, s]`, weights `[b, s]`.
fn batch_tensors(
    batch: &Batch,
    device: &Device,
) -> Result<(Tensor, BatchLayout, Tensor, Tensor), SftError> {
    let (b, s) = (batch.batch, batch.seq_len);
    let ids =
        Tensor::from_vec(batch.input_ids.clone(), (b, s), device).map_err(TrainError::from)?;
    let rows = |v: &[u32]| -> Vec<Vec<u32>> { v.chunks(s).map(<[u32]>::to_vec).collect() };
    let layout = BatchLayout::packed(&rows(&batch.segment_ids))?
        .with_positions(&rows(&batch.position_ids))?;
    let (targets, weights) = batch.targets();
    let targets = Tensor::from_vec(targets, (b, s), device).map_err(TrainError::from)?;
    let weights = Tensor::from_vec(weights, (b, s), device).map_err(TrainError::from)?;
    Ok((ids, layout, targets, weights))
}

/// Summed token cross-entropy of a micro-batch from its logits (differentiable scalar, f32).
fn micro_batch_loss(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor, TrainError> {
    let lp = logprobs_from_logits(logits, targets, 1.0)?;
    let weights = weights.to_dtype(lp.dtype())?;
    Ok((lp * weights)?.sum_all()?.neg()?)
}
