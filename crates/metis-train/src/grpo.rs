//! GRPO with verifiable rewards (Stage 2): the math, written to match TRL's `GRPOTrainer`
//! exactly, so that a Metis run and a TRL run with the same settings optimise the same
//! objective.
//!
//! - [`advantage`]: group-relative advantages (`A = R − mean_group`, optionally divided by the
//!   Bessel-corrected std + 1e-4 of the group or the batch; NaN rewards are left out of the
//!   baseline and get advantage 0), with `frac_reward_zero_std`.
//! - [`loss`]: TRL's `_compute_loss`: token-level importance ratio, clipped surrogate with
//!   separate low/high epsilons, k3 KL added per token *before* aggregation, and the
//!   `grpo`/`bnpo`/`dr_grpo`/`dapo` normalisers; plus the per-token log-probabilities of
//!   temperature-scaled logits. All candle ops, so gradients reach the policy's `Var`s.
//! - [`reward`]: verifier score (binary or graded) plus the format penalty, each reported, for a
//!   batch in parallel with a per-call timeout.
//! - [`prompts`]: the JSONL prompt mixture and its seeded per-step sampler.
//! - [`config`]: [`GrpoConfig`], the settings of a run and the one home of their defaults.
//! - [`trainer`]: the training loop built on the above; its parts: `rollout` (where
//!   completions come from: the local engine or, through [`remote`], an OpenAI-compatible
//!   server fleet with the current LoRA adapter hot-loaded there), `update` (the loss over
//!   micro-batches), `step_metrics` (what a run logs), `heldout` (held-out evaluation) and
//!   `chat` (prompts to token ids).
//!
//! `tests/fixtures/grpo_loss_trl.json` (written by `tools/reference/grpo_loss_trl.py`, which
//! runs TRL's own `GRPOTrainer._compute_loss`) pins the loss, its per-token gradient and the
//! metrics for every loss type with and without KL.

pub mod advantage;
mod chat;
pub mod config;
mod heldout;
pub mod loss;
pub mod prompts;
pub mod remote;
pub mod reward;
mod rollout;
mod step_metrics;
pub mod trainer;
mod update;

pub use advantage::{group_advantages, AdvantageError, AdvantageStats, Advantages, ScaleRewards};
pub use config::GrpoConfig;
pub use loss::{
    grpo_loss, per_token_logps, LossConfig, LossInputs, LossMetrics, LossOutput, LossType,
};
pub use prompts::{
    LoadOptions, PromptError, PromptMixture, PromptRecord, PromptSampler, TaskWeights, VerifierSpec,
};
pub use remote::RemoteRollouts;
pub use reward::{
    compute_reward, compute_rewards, RewardBreakdown, RewardConfig, RewardJob, RewardKind,
    RewardSummary,
};
