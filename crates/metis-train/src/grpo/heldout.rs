//! Held-out evaluation of a GRPO policy: accuracy and format violations on prompts the run
//! never trains on, from one completion per prompt, greedy and at the rollout temperature.

use metis_engine::generate::{generate_batch, GenerateOptions};
use metis_engine::model::Model;
use metis_engine::sampling::SamplingParams;
use metis_engine::tokenizer::Tokenizer;

use super::chat::{ChatContext, Prepared};
use super::config::GrpoConfig;
use super::prompts::PromptRecord;
use super::reward::{compute_rewards, RewardConfig};
use super::rollout::{completion_text, step_seed};
use super::step_metrics::GrpoMetrics;
use crate::model::{Result, TrainError};

/// Accuracy and format-violation rate on `prompts`, one completion each, sampled with
/// `sampling` (greedy by default).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    engine: &Model,
    ctx_tokenizer: &Tokenizer,
    stop_ids: &[u32],
    prepared: &[(PromptRecord, Vec<u32>)],
    max_tokens: usize,
    prefill_think: bool,
    reward: &RewardConfig,
    sampling: SamplingParams,
) -> Result<(f64, f64)> {
    if prepared.is_empty() {
        return Ok((f64::NAN, f64::NAN));
    }
    let opts = GenerateOptions {
        max_tokens,
        sampling,
        stop_ids: stop_ids.to_vec(),
        ..GenerateOptions::default()
    };
    let mut jobs = Vec::with_capacity(prepared.len());
    for chunk in prepared.chunks(64) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|(_, ids)| ids.clone()).collect();
        let gens = generate_batch(engine, Some(ctx_tokenizer), &ids, &opts, prefill_think)
            .map_err(|e| TrainError::InvalidArgument(format!("evaluation rollout: {e}")))?;
        for ((record, _), g) in chunk.iter().zip(gens) {
            jobs.push(record.reward_job(completion_text(&g)));
        }
    }
    let summary = compute_rewards(&jobs, reward);
    let n = summary.rewards.len() as f64;
    let acc = summary.rewards.iter().filter(|r| r.correct).count() as f64 / n;
    let fmt = summary
        .rewards
        .iter()
        .filter(|r| r.format_violation)
        .count() as f64
        / n;
    Ok((acc, fmt))
}

/// A run's held-out prompts and how they are scored.
pub(super) struct HeldOut {
    prompts: Vec<(PromptRecord, Vec<u32>)>,
    every: u64,
    max_steps: u64,
    max_tokens: usize,
    prefill_think: bool,
    reward: RewardConfig,
    /// The rollout temperature with a fixed seed, so that evaluations differ only by the
    /// policy.
    sampled: SamplingParams,
}

/// One evaluation.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeldOutScores {
    pub greedy_accuracy: f64,
    pub format_violation_rate: f64,
    pub sampled_accuracy: f64,
}

impl HeldOut {
    /// `prompts` (none: no evaluation) scored as `cfg` says.
    pub(super) fn new(prompts: Vec<Prepared>, cfg: &GrpoConfig) -> Self {
        Self {
            prompts: prompts.into_iter().map(|p| (p.record, p.ids)).collect(),
            every: cfg.eval_every,
            max_steps: cfg.max_steps,
            max_tokens: cfg.max_completion_len,
            prefill_think: cfg.prefill_think,
            reward: cfg.reward.clone(),
            sampled: SamplingParams {
                temperature: cfg.temperature,
                top_p: cfg.top_p,
                seed: step_seed(cfg.seed, u64::MAX, 2),
                ..SamplingParams::default()
            },
        }
    }

    /// Whether the policy after `done` steps is evaluated: every `eval_every` steps (0: every
    /// step) and after the last, when there are held-out prompts.
    pub(super) fn due(&self, done: u64) -> bool {
        !self.prompts.is_empty()
            && (done.is_multiple_of(self.every.max(1)) || done == self.max_steps)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Score `engine` greedily and at the rollout temperature.
    pub(super) fn score(&self, engine: &Model, chat: &ChatContext) -> Result<HeldOutScores> {
        let run = |sampling| {
            evaluate(
                engine,
                &chat.tokenizer,
                &chat.stop_ids,
                &self.prompts,
                self.max_tokens,
                self.prefill_think,
                &self.reward,
                sampling,
            )
        };
        let (greedy_accuracy, format_violation_rate) = run(SamplingParams::default())?;
        let (sampled_accuracy, _) = run(self.sampled)?;
        Ok(HeldOutScores {
            greedy_accuracy,
            format_violation_rate,
            sampled_accuracy,
        })
    }
}

impl HeldOutScores {
    /// Put the scores on a metrics line.
    pub(super) fn record(&self, m: &mut GrpoMetrics) {
        m.heldout_accuracy = Some(self.greedy_accuracy);
        m.heldout_sampled_accuracy = Some(self.sampled_accuracy);
        m.heldout_format_violation_rate = Some(self.format_violation_rate);
    }
}
