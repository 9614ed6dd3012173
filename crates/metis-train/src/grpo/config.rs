//! The settings of a GRPO run and their defaults, in one place: [`GrpoConfig`]'s `Default` is
//! what `metis train grpo` uses for every flag left out.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::advantage::ScaleRewards;
use super::loss::{LossConfig, LossType};
use super::prompts::TaskWeights;
use super::remote::RemoteRollouts;
use super::reward::RewardConfig;
use crate::device::{TrainDevice, TrainDtype};
use crate::lora::LoraConfig;
use crate::model::{Result, TrainError};

/// Settings of a GRPO run. The defaults are the report's recipe where it gives one — 5
/// generations, beta 0.02, `grpo` aggregation — and TRL's otherwise ([`LossConfig`]'s
/// defaults are TRL's; the recipe overrides beta and the loss type here, once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrpoConfig {
    pub model: PathBuf,
    /// Tokenizer directory or `.gguf` file (default: the model directory).
    pub tokenizer: Option<PathBuf>,
    /// Reference model for the KL (default: the starting model).
    pub ref_model: Option<PathBuf>,
    pub prompts: PathBuf,
    /// Write every rollout with its reward to `rollouts.jsonl` (one line per step).
    pub log_rollouts: bool,
    /// Data directory the verifiers' catalogs (CWE, ATT&CK) are read from, as `metis eval`
    /// reads them, so that a reward and a benchmark score agree.
    pub data_dir: Option<PathBuf>,
    /// Held-out prompts scored greedily every `eval_every` steps.
    pub eval_prompts: Option<PathBuf>,
    pub out: PathBuf,
    pub num_generations: usize,
    pub prompts_per_step: usize,
    pub max_steps: u64,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub temperature: f32,
    pub top_p: f32,
    /// Longest completion in tokens; also the loss's Dr. GRPO normaliser
    /// (`loss.max_completion_length` is set from it).
    pub max_completion_len: usize,
    pub loss: LossConfig,
    pub scale_rewards: ScaleRewards,
    pub reward: RewardConfig,
    pub task_weights: TaskWeights,
    pub lora: Option<LoraConfig>,
    pub seed: u64,
    /// Write a checkpoint every N optimizer steps (0 = only at the end).
    pub save_every: u64,
    pub eval_every: u64,
    /// Completions per forward/backward (the micro-batch).
    pub micro_batch: usize,
    /// Open the think block in the prompt (`<think>\n` after the generation prompt).
    pub prefill_think: bool,
    /// Sample rollouts from OpenAI-compatible servers with the current LoRA adapter
    /// hot-loaded there, instead of the local engine (needs `lora`). Held-out evaluation
    /// stays local.
    #[serde(default)]
    pub remote: Option<RemoteRollouts>,
    /// Compute dtype of the policy and of the reference model.
    #[serde(default)]
    pub dtype: TrainDtype,
    #[serde(default)]
    pub device: TrainDevice,
    /// Checkpoints kept, the newest ones (0 = all).
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    /// Activation checkpointing per decoder layer in the policy's backward: each layer is
    /// recomputed from its saved input instead of keeping every layer's activations (less
    /// memory, about one more forward of compute; same gradients).
    #[serde(default)]
    pub grad_checkpoint: bool,
    /// Stop after this many steps of this invocation (tests simulate a kill with it).
    #[serde(skip)]
    pub stop_after_steps: Option<u64>,
}

/// A GRPO checkpoint is for resuming; only the newest is kept unless asked otherwise.
fn default_keep_last() -> usize {
    1
}

impl Default for GrpoConfig {
    /// Everything but the paths (empty here; see [`GrpoConfig::new`]). The seed is 42, what
    /// `metis train grpo` has always used.
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            tokenizer: None,
            ref_model: None,
            prompts: PathBuf::new(),
            eval_prompts: None,
            out: PathBuf::new(),
            num_generations: 5,
            prompts_per_step: 8,
            max_steps: 100,
            lr: 1e-6,
            warmup_ratio: 0.0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            temperature: 1.0,
            top_p: 1.0,
            max_completion_len: 256,
            loss: LossConfig {
                loss_type: LossType::Grpo,
                beta: 0.02,
                ..LossConfig::default()
            },
            scale_rewards: ScaleRewards::Group,
            reward: RewardConfig::default(),
            task_weights: TaskWeights::default(),
            data_dir: None,
            log_rollouts: false,
            lora: None,
            seed: 42,
            save_every: 50,
            eval_every: 10,
            micro_batch: 8,
            prefill_think: false,
            remote: None,
            dtype: TrainDtype::default(),
            device: TrainDevice::default(),
            keep_last: default_keep_last(),
            grad_checkpoint: false,
            stop_after_steps: None,
        }
    }
}

impl GrpoConfig {
    /// The defaults with the three paths a run needs.
    pub fn new(model: PathBuf, prompts: PathBuf, out: PathBuf) -> Self {
        Self {
            model,
            prompts,
            out,
            ..Self::default()
        }
    }

    /// LoRA for GRPO at rank `r`: alpha `2r` unless given, every linear layer, and no
    /// dropout, so that the policy the loss scores is the policy the rollouts sampled.
    pub fn lora_config(r: usize, alpha: Option<f64>) -> LoraConfig {
        LoraConfig {
            dropout: 0.0,
            alpha: alpha.unwrap_or(2.0 * r as f64),
            ..LoraConfig::with_rank(r)
        }
    }

    /// Refuse settings a run cannot use, before anything is loaded.
    pub(super) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::InvalidArgument(m.into()));
        if self.num_generations < 2 {
            return bad(
                "--num-generations must be at least 2 (advantages are relative to the group)",
            );
        }
        if self.prompts_per_step == 0 || self.micro_batch == 0 || self.max_steps == 0 {
            return bad("prompts per step, micro-batch and max steps must be positive");
        }
        if self.remote.is_some() && self.lora.is_none() {
            return bad("remote rollouts hot-load a LoRA adapter; add --lora-rank");
        }
        Ok(())
    }

    /// The settings derived from others: the reward knows whether the prompt opened the think
    /// block, and the Dr. GRPO normaliser is the completion budget, as in TRL.
    pub(super) fn resolved(&self) -> Self {
        let mut cfg = self.clone();
        cfg.reward.format.prefilled_open = cfg.prefill_think;
        cfg.loss.max_completion_length = cfg.max_completion_len;
        cfg
    }

    /// Where the tokenizer files of saved models come from.
    pub(super) fn tokenizer_src(&self) -> &std::path::Path {
        self.tokenizer.as_deref().unwrap_or(&self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_is_the_default_with_paths() {
        let cfg = GrpoConfig::new("m".into(), "p.jsonl".into(), "o".into());
        let d = GrpoConfig::default();
        assert_eq!(cfg.model, PathBuf::from("m"));
        assert_eq!(
            serde_json::to_value(GrpoConfig {
                model: PathBuf::new(),
                prompts: PathBuf::new(),
                out: PathBuf::new(),
                ..cfg
            })
            .unwrap(),
            serde_json::to_value(&d).unwrap()
        );
        // The recipe's values over TRL's loss defaults, and the CLI's seed.
        assert_eq!((d.loss.beta, d.loss.loss_type), (0.02, LossType::Grpo));
        assert_eq!(d.seed, 42);
        assert_eq!((d.dtype, d.device), (TrainDtype::F32, TrainDevice::Cpu));
    }

    #[test]
    fn configs_written_before_dtype_device_and_keep_last_read_with_their_defaults() {
        let mut v = serde_json::to_value(GrpoConfig::default()).unwrap();
        let obj = v.as_object_mut().unwrap();
        for k in ["dtype", "device", "keep_last", "remote", "grad_checkpoint"] {
            obj.remove(k);
        }
        let cfg: GrpoConfig = serde_json::from_value(v).unwrap();
        assert_eq!(cfg.keep_last, 1);
        assert!(!cfg.grad_checkpoint);
        assert_eq!(cfg.device, TrainDevice::Cpu);
    }

    #[test]
    fn validation_names_the_setting() {
        let ok = GrpoConfig::default();
        assert!(ok.validate().is_ok());
        let err = |cfg: GrpoConfig| cfg.validate().unwrap_err().to_string();
        assert!(err(GrpoConfig {
            num_generations: 1,
            ..ok.clone()
        })
        .contains("--num-generations"));
        assert!(err(GrpoConfig {
            micro_batch: 0,
            ..ok.clone()
        })
        .contains("micro-batch"));
        assert!(err(GrpoConfig {
            remote: Some(RemoteRollouts::new(vec!["http://h/v1".into()])),
            ..ok.clone()
        })
        .contains("add --lora-rank"));
    }

    #[test]
    fn resolved_derives_the_reward_and_loss_settings() {
        let cfg = GrpoConfig {
            prefill_think: true,
            max_completion_len: 77,
            ..GrpoConfig::default()
        }
        .resolved();
        assert!(cfg.reward.format.prefilled_open);
        assert_eq!(cfg.loss.max_completion_length, 77);
    }

    #[test]
    fn grpo_lora_has_no_dropout() {
        let l = GrpoConfig::lora_config(8, None);
        assert_eq!((l.r, l.alpha, l.dropout), (8, 16.0, 0.0));
        assert_eq!(GrpoConfig::lora_config(8, Some(4.0)).alpha, 4.0);
        assert_eq!(l.target_modules, LoraConfig::default().target_modules);
    }
}
