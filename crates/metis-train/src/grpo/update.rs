//! The policy-gradient part of a GRPO step: the step's completions re-scored by the policy
//! (with gradient) and by the reference model, TRL's loss ([`grpo_loss`]) over micro-batches,
//! and the gradients accumulated over them.
//!
//! Micro-batches are `micro_batch` consecutive completions; an empty completion has no token
//! to score and is left out of its micro-batch (it still counts towards the loss's
//! normalisers). Each micro-batch is right-padded: a causal model never lets a pad influence
//! the positions before it, so no attention mask is needed.

use candle_core::{DType, Device, Tensor};
use metis_engine::model::Model;

use super::loss::{grpo_loss, per_token_logps, LossConfig, LossInputs};
use super::rollout::Rollout;
use crate::model::{logprobs_from_logits, BatchLayout, Result, TrainModel};
use crate::optim::{GradAccumulator, Grads};

/// What the update works with besides the completions.
pub(super) struct PolicyUpdate<'a> {
    /// Mutable only to switch LoRA adapters off for the reference log-probabilities.
    pub policy: &'a mut TrainModel,
    /// The frozen reference for the KL when it is a separate model (full fine-tuning); with
    /// LoRA the reference is the policy with its adapters off.
    pub reference: Option<&'a Model>,
    pub loss: &'a LossConfig,
    pub temperature: f64,
    pub micro_batch: usize,
    /// Use the rollouts' log-probabilities as the old ones (see
    /// [`super::rollout::RolloutSource::logprobs_are_old`]).
    pub sampler_logprobs_are_old: bool,
    /// Activation checkpointing per decoder layer in the policy's backward.
    pub grad_checkpoint: bool,
    pub device: &'a Device,
}

/// One completion to score: its rollout, its prompt's ids and its advantage.
pub(super) struct Sample<'a> {
    pub prompt: &'a [u32],
    pub rollout: &'a Rollout,
    pub advantage: f64,
}

/// The accumulated gradient and what the metrics report of it.
pub(super) struct UpdateOutcome {
    pub grads: Grads,
    /// Summed micro-batch losses.
    pub loss: f64,
    /// Token-weighted mean KL and clipped share (0 without tokens).
    pub kl: f64,
    pub clip_frac: f64,
    /// Mean |sampler − policy| log-probability per completion token (0 without tokens).
    pub logprob_gap: f64,
    /// Prompt + completion tokens trained on.
    pub train_tokens: usize,
}

/// Running sums over micro-batches.
#[derive(Default)]
struct Sums {
    loss: f64,
    kl: f64,
    clip: f64,
    tokens: f64,
    gap: f64,
    gap_tokens: usize,
    train_tokens: usize,
}

/// The tensors of one micro-batch.
struct MicroBatch {
    /// `[b, seq]` prompt + completion, right-padded with 0.
    input: Tensor,
    /// `[b, seq]` the input shifted by one.
    target: Tensor,
    /// `[b, comp]` the position whose logits predict each completion token.
    gather: Tensor,
    /// `[b, comp]` 1 on completion tokens.
    mask: Tensor,
    /// `[b, comp]` the sampler's log-probabilities.
    old: Tensor,
    layout: BatchLayout,
    /// Prompt + completion tokens.
    tokens: usize,
}

impl MicroBatch {
    fn pack(rows: &[&Sample<'_>], device: &Device) -> Result<MicroBatch> {
        let seqs: Vec<Vec<u32>> = rows
            .iter()
            .map(|s| {
                let mut seq = s.prompt.to_vec();
                seq.extend_from_slice(&s.rollout.ids);
                seq
            })
            .collect();
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let seq_len = *lens.iter().max().expect("non-empty");
        let comp_len = rows
            .iter()
            .map(|s| s.rollout.ids.len())
            .max()
            .expect("non-empty");
        let b = rows.len();
        let mut input = vec![0u32; b * seq_len];
        let mut target = vec![0u32; b * seq_len];
        let mut gather = vec![0u32; b * comp_len];
        let mut mask = vec![0f32; b * comp_len];
        let mut old = vec![0f32; b * comp_len];
        for (r, (s, sample)) in seqs.iter().zip(rows).enumerate() {
            let roll = sample.rollout;
            input[r * seq_len..r * seq_len + s.len()].copy_from_slice(s);
            for t in 0..s.len() - 1 {
                target[r * seq_len + t] = s[t + 1];
            }
            let p = s.len() - roll.ids.len();
            for k in 0..comp_len {
                // logits at p - 1 + k predict completion token k.
                gather[r * comp_len + k] = (p - 1 + k.min(roll.ids.len() - 1)) as u32;
                if k < roll.ids.len() {
                    mask[r * comp_len + k] = 1.0;
                    old[r * comp_len + k] = roll.logprobs[k];
                }
            }
        }
        Ok(MicroBatch {
            input: Tensor::from_vec(input, (b, seq_len), device)?,
            target: Tensor::from_vec(target, (b, seq_len), device)?,
            gather: Tensor::from_vec(gather, (b, comp_len), device)?,
            mask: Tensor::from_vec(mask, (b, comp_len), device)?,
            old: Tensor::from_vec(old, (b, comp_len), device)?,
            layout: BatchLayout::from_lengths(&lens, seq_len)?,
            tokens: lens.iter().sum(),
        })
    }
}

impl PolicyUpdate<'_> {
    /// The gradient of TRL's loss over `samples` (the step's completions in order), with
    /// `total_tokens` completion tokens in the step (the `dapo` normaliser).
    pub(super) fn gradient(
        &mut self,
        samples: &[Sample<'_>],
        total_tokens: usize,
    ) -> Result<UpdateOutcome> {
        let chunks: Vec<&[Sample<'_>]> = samples.chunks(self.micro_batch).collect();
        let mut loss_cfg = self.loss.clone();
        loss_cfg.gradient_accumulation_steps = chunks.len();
        let mut acc = GradAccumulator::default();
        let mut sums = Sums::default();
        for chunk in chunks {
            let rows: Vec<&Sample<'_>> =
                chunk.iter().filter(|s| !s.rollout.ids.is_empty()).collect();
            if rows.is_empty() {
                continue;
            }
            let batch = MicroBatch::pack(&rows, self.device)?;
            // Before the policy's forward, which borrows the policy for the loss below; the
            // reference pass draws no dropout, so the order changes nothing.
            let ref_logp = self.reference_logps(&batch)?;
            let advantages: Vec<f32> = rows.iter().map(|s| s.advantage as f32).collect();
            let advantages = Tensor::from_vec(advantages, rows.len(), self.device)?;
            let old_logp = self.sampler_logprobs_are_old.then_some(&batch.old);
            let temperature = self.temperature;
            let out = self.policy.loss_and_grads(
                &batch.input,
                &batch.layout,
                true,
                self.grad_checkpoint,
                |logits| {
                    let logp = completion_logps(logits, &batch, temperature)?;
                    let out = grpo_loss(
                        &LossInputs {
                            logp: &logp,
                            old_logp,
                            ref_logp: ref_logp.as_ref(),
                            mask: &batch.mask,
                            advantages: &advantages,
                            num_items_in_batch: Some(total_tokens as f64),
                        },
                        &loss_cfg,
                    )?;
                    Ok((out.loss, (logp.detach(), out.metrics)))
                },
            )?;
            let (logp, metrics) = out.aux;
            sums.add_gap(&logp, &rows)?;
            acc.add_grads(&out.grads)?;
            sums.train_tokens += batch.tokens;
            sums.loss += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let n = metrics.num_tokens;
            sums.kl += metrics.kl.unwrap_or(0.0) * n;
            sums.clip += metrics.clip_region * n;
            sums.tokens += n;
        }
        Ok(sums.outcome(acc.finish(1.0)?))
    }

    /// The reference model's log-probabilities of the completion tokens (None without KL).
    fn reference_logps(&mut self, batch: &MicroBatch) -> Result<Option<Tensor>> {
        if self.loss.beta == 0.0 {
            return Ok(None);
        }
        let lp = match self.reference {
            Some(reference) => {
                let (b, _) = batch.input.dims2()?;
                let mut cache = reference.new_cache(b);
                let logits = reference.forward(&batch.input, &mut cache)?;
                per_token_logps(&logits, &batch.target, self.temperature)?
            }
            None => {
                // LoRA: the reference is the base model, i.e. the adapters switched off.
                self.policy.set_adapter_enabled(false);
                let lp = self.policy.token_logprobs(
                    &batch.input,
                    &batch.layout,
                    &batch.target,
                    self.temperature,
                    false,
                );
                self.policy.set_adapter_enabled(true);
                lp?
            }
        };
        Ok(Some(
            lp.gather(&batch.gather, 1)?.to_dtype(DType::F32)?.detach(),
        ))
    }
}

/// The policy's log-probabilities of the completion tokens `[b, comp]` f32 from its logits,
/// with gradient.
fn completion_logps(logits: &Tensor, batch: &MicroBatch, temperature: f64) -> Result<Tensor> {
    let lp = logprobs_from_logits(logits, &batch.target, temperature)?;
    // The loss and its inputs are f32 whatever the compute dtype (a no-op for f32).
    Ok(lp
        .gather(&batch.gather, 1)?
        .to_dtype(DType::F32)?
        .contiguous()?)
}

impl Sums {
    /// Add the micro-batch's |sampler − policy| log-probability gaps over its tokens.
    fn add_gap(&mut self, logp: &Tensor, rows: &[&Sample<'_>]) -> Result<()> {
        for (row, s) in logp.detach().to_vec2::<f32>()?.iter().zip(rows) {
            for (policy, sampler) in row.iter().zip(&s.rollout.logprobs) {
                self.gap += f64::from((sampler - policy).abs());
            }
            self.gap_tokens += s.rollout.ids.len();
        }
        Ok(())
    }

    fn outcome(self, grads: Grads) -> UpdateOutcome {
        let per_token = |x: f64| {
            if self.tokens > 0.0 {
                x / self.tokens
            } else {
                0.0
            }
        };
        UpdateOutcome {
            grads,
            loss: self.loss,
            kl: per_token(self.kl),
            clip_frac: per_token(self.clip),
            logprob_gap: if self.gap_tokens > 0 {
                self.gap / self.gap_tokens as f64
            } else {
                0.0
            },
            train_tokens: self.train_tokens,
        }
    }
}
