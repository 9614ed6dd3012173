//! Where a GRPO step's completions come from: a [`RolloutSource`], the seam between the
//! trainer and a sampler (as `metis_serve::guard::GuardBackend` is between the server and a
//! guard model). Two implement it today:
//!
//! - [`LocalRollouts`]: the local engine, sampling with the KV cache from the current policy
//!   copied into an engine model (LoRA merged); each token's log-probability is that of the
//!   temperature-scaled logits, so it is the loss's "old" log-probability;
//! - [`super::remote::RemoteSampler`]: an OpenAI-compatible server fleet with the current LoRA
//!   adapter hot-loaded there.
//!
//! [`rollout_source`] picks one from the configuration.

use std::collections::HashMap;

use candle_core::DType;
use metis_engine::generate::{generate_batch, FinishReason, GenerateOptions, Generation};
use metis_engine::model::Model;
use metis_engine::sampling::SamplingParams;
use metis_engine::tokenizer::Tokenizer;

use super::config::GrpoConfig;
use super::remote::RemoteSampler;
use crate::model::{Result, TrainError, TrainModel};

/// A rollout: prompt (its position in the step's picks), completion ids (stop id included
/// when it ended on one), their sampling log-probabilities, and the completion text the
/// reward grades.
pub(super) struct Rollout {
    pub(super) prompt: usize,
    pub(super) ids: Vec<u32>,
    pub(super) logprobs: Vec<f32>,
    pub(super) truncated: bool,
    pub(super) text: String,
}

/// What one step asks its rollout source for.
pub(super) struct RolloutRequest<'a> {
    /// The step's prompts, token ids of the rendered chat.
    pub prompts: &'a [&'a [u32]],
    /// Optimizer steps done (names the remote adapter).
    pub step: u64,
    /// The step's sampling seed; completion `i` of prompt `j` is sampled with seed
    /// `seed + j * n + i`, locally and on the servers alike.
    pub seed: u64,
    /// Completions per prompt.
    pub n: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: usize,
    pub stop_ids: &'a [u32],
    /// Decodes the completions.
    pub tokenizer: &'a Tokenizer,
    /// The prompts open the think block themselves (`<think>\n` prefilled).
    pub prefill_think: bool,
}

/// The policy being trained, and a copy of its current weights as an engine model: built when
/// first needed after an update, shared by an evaluation and the next step's local rollouts.
pub(super) struct Policy {
    pub(super) model: TrainModel,
    engine: Option<Model>,
}

impl Policy {
    pub(super) fn new(model: TrainModel) -> Self {
        Self {
            model,
            engine: None,
        }
    }

    /// The engine copy of the current weights (built now unless there is one).
    pub(super) fn engine(&mut self) -> Result<&Model> {
        if self.engine.is_none() {
            self.engine = Some(engine_copy(&self.model)?);
        }
        Ok(self.engine.as_ref().expect("just built"))
    }

    /// The engine copy of the current weights, handed over (built now unless there is one).
    pub(super) fn take_engine(&mut self) -> Result<Model> {
        match self.engine.take() {
            Some(engine) => Ok(engine),
            None => engine_copy(&self.model),
        }
    }

    /// The weights changed: the engine copy is stale.
    pub(super) fn updated(&mut self) {
        self.engine = None;
    }
}

/// The policy's current weights as an engine model (LoRA adapters merged in).
fn engine_copy(model: &TrainModel) -> Result<Model> {
    // The engine has no f64 kernels; an f64 policy is served in f32.
    let dtype = match model.dtype() {
        DType::F64 => DType::F32,
        d => d,
    };
    let tensors = model
        .merged_weights()?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(Model::from_tensors(
        model.config().clone(),
        tensors,
        dtype,
        model.device(),
    )?)
}

/// A sampler of GRPO rollouts.
pub(super) trait RolloutSource {
    /// `request.n` completions of every prompt from the current `policy`: prompt `j`'s at
    /// `j * n .. (j + 1) * n`.
    fn rollouts(
        &mut self,
        policy: &mut Policy,
        request: &RolloutRequest<'_>,
    ) -> Result<Vec<Rollout>>;

    /// Whether the rollouts' log-probabilities are those of the policy's temperature-scaled
    /// logits, i.e. usable as the loss's "old" log-probabilities. When not, the loss uses the
    /// policy's own, detached (TRL's on-policy default).
    fn logprobs_are_old(&self) -> bool;

    /// Release what the source holds, at the end of a run (after its outputs are written).
    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The source `cfg` asks for: its remote fleet, or the local engine.
pub(super) fn rollout_source(cfg: &GrpoConfig) -> Result<Box<dyn RolloutSource>> {
    Ok(match &cfg.remote {
        Some(remote) => Box::new(RemoteSampler::connect(remote, &cfg.out)?),
        None => Box::new(LocalRollouts),
    })
}

/// Rollouts sampled by the local engine from the policy's engine copy.
pub(super) struct LocalRollouts;

impl RolloutSource for LocalRollouts {
    fn rollouts(
        &mut self,
        policy: &mut Policy,
        request: &RolloutRequest<'_>,
    ) -> Result<Vec<Rollout>> {
        // Handed over and dropped after sampling: the loss needs the memory more.
        let engine = policy.take_engine()?;
        let prompt_ids: Vec<Vec<u32>> = request
            .prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.to_vec(), request.n))
            .collect();
        let opts = GenerateOptions {
            max_tokens: request.max_tokens,
            sampling: SamplingParams {
                temperature: request.temperature,
                top_p: request.top_p,
                seed: request.seed,
                ..SamplingParams::default()
            },
            stop_ids: request.stop_ids.to_vec(),
            ..GenerateOptions::default()
        };
        let gens = generate_batch(
            &engine,
            Some(request.tokenizer),
            &prompt_ids,
            &opts,
            request.prefill_think,
        )
        .map_err(|e| TrainError::InvalidArgument(format!("rollout: {e}")))?;
        Ok(from_generations(gens, request.n))
    }

    fn logprobs_are_old(&self) -> bool {
        true
    }
}

/// Engine generations (`group` per prompt, in prompt order) as rollouts.
fn from_generations(gens: Vec<Generation>, group: usize) -> Vec<Rollout> {
    gens.into_iter()
        .enumerate()
        .map(|(i, g)| {
            let text = completion_text(&g);
            let mut ids = g.ids;
            let mut logprobs = g.logprobs;
            if let Some((id, lp)) = g.stop_token {
                ids.push(id);
                logprobs.push(lp);
            }
            Rollout {
                prompt: i / group,
                ids,
                logprobs,
                truncated: g.finish_reason == FinishReason::Length,
                text,
            }
        })
        .collect()
}

/// Deterministic 64-bit mix of the run seed and a step (SplitMix64 finaliser): everything
/// random in a step is seeded by it, so a resumed run takes exactly the steps the
/// uninterrupted run would have taken. `salt` tells the uses apart.
pub(super) fn step_seed(seed: u64, step: u64, salt: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The completion text as generated. With a prefilled `<think>\n` it holds only the closing
/// delimiter; the reward's [`metis_verify::format::FormatPolicy::prefilled_open`] accounts for
/// that (set by [`GrpoConfig::resolved`]).
pub(super) fn completion_text(g: &Generation) -> String {
    g.text.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(ids: &[u32], stop: Option<(u32, f32)>, finish: FinishReason) -> Generation {
        Generation {
            prompt_ids: vec![1, 2],
            ids: ids.to_vec(),
            logprobs: ids.iter().map(|&i| -(i as f32)).collect(),
            stop_token: stop,
            finish_reason: finish,
            text: Some(format!("text {ids:?}")),
            reasoning: None,
            answer: None,
        }
    }

    #[test]
    fn generations_become_rollouts_grouped_by_prompt_with_their_stop_token() {
        let gens = vec![
            generation(&[5, 6], Some((9, -0.5)), FinishReason::Stop),
            generation(&[7], None, FinishReason::Length),
            generation(&[], Some((9, -0.25)), FinishReason::Stop),
        ];
        let rolls = from_generations(gens, 2);
        assert_eq!(
            rolls.iter().map(|r| r.prompt).collect::<Vec<_>>(),
            [0, 0, 1]
        );
        // The stop id is part of what the policy chose, but not of the graded text.
        assert_eq!(rolls[0].ids, [5, 6, 9]);
        assert_eq!(rolls[0].logprobs, [-5.0, -6.0, -0.5]);
        assert_eq!(rolls[0].text, "text [5, 6]");
        assert!(!rolls[0].truncated && rolls[1].truncated);
        assert_eq!(rolls[2].ids, [9]);
    }

    #[test]
    fn the_configuration_picks_the_source() {
        let local = rollout_source(&GrpoConfig::default()).unwrap();
        assert!(local.logprobs_are_old());
        let tmp = tempfile::tempdir().unwrap();
        let mut remote = super::super::remote::RemoteRollouts::new(vec!["http://h:1/v1".into()]);
        let mut cfg = GrpoConfig {
            out: tmp.path().to_path_buf(),
            ..GrpoConfig::default()
        };
        cfg.remote = Some(remote.clone());
        // Server log-probabilities are raw unless the servers say otherwise.
        assert!(!rollout_source(&cfg).unwrap().logprobs_are_old());
        remote.use_server_logprobs = true;
        cfg.remote = Some(remote);
        assert!(rollout_source(&cfg).unwrap().logprobs_are_old());
    }
}
