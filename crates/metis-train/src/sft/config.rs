//! The settings of an SFT run and their defaults, in one place: [`SftConfig`]'s `Default` is
//! what `metis train sft` uses for every flag left out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SftError;
use crate::device::{TrainDevice, TrainDtype};
use crate::lora::LoraConfig;
use crate::schedule::ScheduleKind;

/// SFT configuration (the `metis train sft` flags).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SftConfig {
    /// Base model: HF directory (config.json + safetensors).
    pub model_dir: PathBuf,
    /// Tokenizer directory (tokenizer.json, tokenizer_config.json); default: `model_dir`.
    pub tokenizer_dir: Option<PathBuf>,
    /// Training data (JSONL, see [`crate::data`]).
    pub data: PathBuf,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: u64,
    /// Total optimizer steps (overrides `epochs`).
    pub max_steps: Option<u64>,
    /// Peak learning rate.
    pub lr: f64,
    pub schedule: ScheduleKind,
    /// Warmup steps (takes precedence over `warmup_ratio` when positive).
    pub warmup_steps: u64,
    /// Warmup as a fraction of the total steps (`ceil(total * ratio)`).
    pub warmup_ratio: f64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Maximum sequence length (tokens); longer examples are truncated.
    pub max_len: usize,
    /// Pack several examples per sequence (segment ids, per-document positions).
    pub packing: bool,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Gradient clipping (global L2 norm); 0 disables clipping.
    pub max_grad_norm: f64,
    /// Seed of the data order, LoRA initialisation and dropout stream.
    pub seed: u64,
    pub dtype: TrainDtype,
    /// `cpu` or `cuda` (`cuda:N`), the latter needs the `cuda` feature.
    pub device: TrainDevice,
    /// LoRA (None = full fine-tuning).
    pub lora: Option<LoraConfig>,
    /// Write a checkpoint every N optimizer steps (0 = only at the end).
    pub save_every: u64,
    /// Checkpoints kept, the newest ones (0 = all).
    #[serde(default)]
    pub keep_last: usize,
    /// Activation checkpointing per decoder layer: the backward recomputes each layer from
    /// its saved input instead of keeping every layer's activations (less memory, about one
    /// more forward of compute; same gradients). See [`crate::model::TrainModel::loss_and_grads`].
    #[serde(default)]
    pub grad_checkpoint: bool,
    /// Test hook: stop (as if killed) right after this many optimizer steps in this process,
    /// without the final save.
    #[serde(skip)]
    pub stop_after_steps: Option<u64>,
}

impl Default for SftConfig {
    /// Everything but the paths (empty here; see [`SftConfig::new`]): 3 epochs, lr 2e-5
    /// ([`SftConfig::default_lr`]), cosine schedule with 3 % warmup, batch 1, no
    /// accumulation, max_len 2048, weight decay 0, clip 1.0, seed 42, f32 on CPU, full
    /// fine-tuning, checkpoint only at the end, every checkpoint kept, no activation
    /// checkpointing.
    fn default() -> Self {
        SftConfig {
            model_dir: PathBuf::new(),
            tokenizer_dir: None,
            data: PathBuf::new(),
            out_dir: PathBuf::new(),
            epochs: 3,
            max_steps: None,
            lr: SftConfig::default_lr(false),
            schedule: ScheduleKind::Cosine,
            warmup_steps: 0,
            warmup_ratio: 0.03,
            batch_size: 1,
            grad_accum: 1,
            max_len: 2048,
            packing: false,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            max_grad_norm: 1.0,
            seed: 42,
            dtype: TrainDtype::F32,
            device: TrainDevice::Cpu,
            lora: None,
            save_every: 0,
            keep_last: 0,
            grad_checkpoint: false,
            stop_after_steps: None,
        }
    }
}

impl SftConfig {
    /// The defaults with the three paths a run needs.
    pub fn new(model_dir: &Path, data: &Path, out_dir: &Path) -> SftConfig {
        SftConfig {
            model_dir: model_dir.to_path_buf(),
            data: data.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            ..SftConfig::default()
        }
    }

    /// The default peak learning rate: 2e-5 for full fine-tuning, 2e-4 for LoRA (whose
    /// adapters start at zero and are trained alone, so the usual rate is ten times higher).
    pub fn default_lr(lora: bool) -> f64 {
        if lora {
            2e-4
        } else {
            2e-5
        }
    }

    /// Refuse settings a run cannot use, before anything is loaded.
    pub(super) fn validate(&self) -> Result<(), SftError> {
        let bad = |m: String| Err(SftError::Config(m));
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch size and gradient accumulation must be positive".into());
        }
        if self.max_len < 2 {
            return bad(format!("max_len {} is too small", self.max_len));
        }
        if self.max_steps == Some(0) || (self.max_steps.is_none() && self.epochs == 0) {
            return bad("nothing to train: epochs and max_steps are 0".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("invalid learning rate {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!("warmup ratio {} not in [0, 1]", self.warmup_ratio));
        }
        if let Some(l) = &self.lora {
            l.validate()?;
        }
        Ok(())
    }

    pub(super) fn tokenizer_dir(&self) -> &Path {
        self.tokenizer_dir.as_deref().unwrap_or(&self.model_dir)
    }

    /// The LoRA settings the model is built with: the adapters are initialised from the run
    /// seed.
    pub(super) fn seeded_lora(&self) -> Option<LoraConfig> {
        self.lora.clone().map(|mut l| {
            l.init_seed = self.seed;
            l
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_is_the_default_with_paths() {
        let cfg = SftConfig::new(Path::new("m"), Path::new("d.jsonl"), Path::new("o"));
        assert_eq!(
            cfg,
            SftConfig {
                model_dir: "m".into(),
                data: "d.jsonl".into(),
                out_dir: "o".into(),
                ..SftConfig::default()
            }
        );
        assert_eq!(cfg.lr, 2e-5);
        assert_eq!(cfg.tokenizer_dir(), Path::new("m"));
    }

    #[test]
    fn config_files_keep_the_flag_spellings() {
        let v = serde_json::to_value(SftConfig::default()).unwrap();
        assert_eq!(v["dtype"], "f32");
        assert_eq!(v["device"], "cpu");
        assert_eq!(v["schedule"], "cosine");
        // Written before keep_last and grad_checkpoint existed: every checkpoint kept and no
        // activation checkpointing, as then.
        let mut old = v.clone();
        for k in ["keep_last", "grad_checkpoint"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let cfg: SftConfig = serde_json::from_value(old).unwrap();
        assert_eq!((cfg.keep_last, cfg.grad_checkpoint), (0, false));
    }

    #[test]
    fn validation_names_the_problem() {
        let err = |cfg: SftConfig| cfg.validate().unwrap_err().to_string();
        assert!(err(SftConfig {
            grad_accum: 0,
            ..SftConfig::default()
        })
        .contains("gradient accumulation"));
        assert!(err(SftConfig {
            max_steps: Some(0),
            ..SftConfig::default()
        })
        .contains("nothing to train"));
        assert!(err(SftConfig {
            warmup_ratio: 1.5,
            ..SftConfig::default()
        })
        .contains("warmup ratio 1.5"));
        assert!(SftConfig::default().validate().is_ok());
    }

    #[test]
    fn lora_adapters_are_seeded_by_the_run() {
        let cfg = SftConfig {
            seed: 9,
            lora: Some(LoraConfig::with_rank(4)),
            ..SftConfig::default()
        };
        assert_eq!(cfg.seeded_lora().unwrap().init_seed, 9);
        assert_eq!(SftConfig::default_lr(true), 2e-4);
    }
}
