//! Stage 1: supervised fine-tuning on chat data with `<think>` reasoning traces.
//!
//! [`run_sft`] loads the data ([`crate::data`]: chat template, assistant-only loss mask,
//! truncation or packing), the model ([`TrainModel`], full or LoRA) and trains with AdamW
//! ([`crate::optim`]) under a cosine (or constant) schedule with warmup
//! ([`crate::schedule`]).
//!
//! # Steps
//!
//! Epoch `e` visits the sequences in the order [`epoch_permutation`]`(n, seed, e)`, in
//! micro-batches of `batch_size` (the last one of an epoch may be smaller) and optimizer steps
//! of `grad_accum` micro-batches (the last step of an epoch may have fewer). The loss of a
//! step is the mean token cross-entropy over all its assistant tokens: each micro-batch's
//! summed token loss is divided by the number of loss tokens of the whole step, so the
//! accumulated gradient is that of the step's mean. With `max_steps` the epochs repeat (with
//! fresh permutations) until that many steps ran; otherwise `epochs × steps_per_epoch` steps.
//!
//! # Output directory
//!
//! ```text
//! out/sft_config.json            the configuration of the run
//! out/metrics.jsonl              one line per optimizer step (crate::metrics::StepMetrics)
//! out/curves.png                 loss and learning rate vs step
//! out/checkpoint-STEP/           every `save_every` steps and at the end:
//!     model (full: HF directory; LoRA: PEFT adapter), tokenizer files,
//!     state/ (crate::checkpoint::save_train_state: trainable tensors, optimizer, train_state.json)
//! out/final/                     the trained model (full HF directory or PEFT adapter) + tokenizer
//! ```
//!
//! A checkpoint is written into `out/.checkpoint-STEP.tmp` and renamed into place, so a
//! `checkpoint-STEP` directory is always complete. `resume = true` continues from the latest
//! one exactly: same data order (the permutations are pure functions of seed and epoch), same
//! schedule, same optimizer state, same dropout stream; on CPU an interrupted and resumed run
//! ends with the same weights and the same metrics (except timings) as an uninterrupted one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    latest_checkpoint, load_train_state, save_train_state, TrainState, STATE_DIR,
};
use crate::data::{self, collate, epoch_permutation, Batch, ChatFormatter, DataError, Sequence};
use crate::lora::LoraConfig;
use crate::metrics::{self, MetricsError, MetricsWriter, StepMetrics};
use crate::model::{BatchLayout, TrainError, TrainModel, TrainModelOptions};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, GradAccumulator, Grads};
use crate::schedule::{warmup_steps, Schedule, ScheduleKind};

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
    /// `"f32"` or `"bf16"`.
    pub dtype: String,
    /// `"cpu"` or `"cuda"` (`"cuda:N"`), the latter needs the `cuda` feature.
    pub device: String,
    /// LoRA (None = full fine-tuning).
    pub lora: Option<LoraConfig>,
    /// Write a checkpoint every N optimizer steps (0 = only at the end).
    pub save_every: u64,
    /// Test hook: stop (as if killed) right after this many optimizer steps in this process,
    /// without the final save.
    #[serde(skip)]
    pub stop_after_steps: Option<u64>,
}

impl SftConfig {
    /// Defaults for everything but the paths: 3 epochs, lr 2e-5 (2e-4 is usual for LoRA),
    /// cosine schedule with 3 % warmup, batch 1, no accumulation, max_len 2048, weight decay 0,
    /// clip 1.0, seed 42, f32 on CPU, full fine-tuning, checkpoint only at the end.
    pub fn new(model_dir: &Path, data: &Path, out_dir: &Path) -> SftConfig {
        SftConfig {
            model_dir: model_dir.to_path_buf(),
            tokenizer_dir: None,
            data: data.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            epochs: 3,
            max_steps: None,
            lr: 2e-5,
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
            dtype: "f32".into(),
            device: "cpu".into(),
            lora: None,
            save_every: 0,
            stop_after_steps: None,
        }
    }

    fn validate(&self) -> Result<(), SftError> {
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
        parse_dtype(&self.dtype)?;
        Ok(())
    }

    fn tokenizer_dir(&self) -> &Path {
        self.tokenizer_dir.as_deref().unwrap_or(&self.model_dir)
    }
}

/// `"f32"` / `"bf16"` (also `"float32"`, `"bfloat16"`).
pub fn parse_dtype(s: &str) -> Result<DType, SftError> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(SftError::Config(format!(
            "unsupported training dtype {other:?} (f32, bf16)"
        ))),
    }
}

/// `"cpu"`, `"cuda"` or `"cuda:N"`.
pub fn parse_device(s: &str) -> Result<Device, SftError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0).map_err(TrainError::from)?),
        _ => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Ok(Device::new_cuda(n).map_err(TrainError::from)?),
            None => Err(SftError::Config(format!(
                "unknown device {s:?} (cpu, cuda, cuda:N)"
            ))),
        },
    }
}

/// Errors from an SFT run.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot resume: {0}")]
    Resume(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SftError + '_ {
    move |source| SftError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The SFT-specific training state, stored as the `data_cursor` of the checkpoint's
/// [`TrainState`].
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
    /// Position of the model's dropout stream ([`TrainModel::rng_state`]).
    pub rng_state: u64,
    /// The data-order seed.
    pub seed: u64,
    /// Wall seconds of training so far.
    pub elapsed_s: f64,
    /// Whether this is a LoRA run.
    pub lora: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct SftSummary {
    /// Optimizer steps completed (in total, across resumes).
    pub steps: u64,
    pub total_steps: u64,
    /// Training sequences per epoch (after packing).
    pub n_sequences: usize,
    pub truncated: usize,
    pub dropped: usize,
    /// Loss of the first and last step run by this process (NaN if none).
    pub first_loss: f64,
    pub last_loss: f64,
    /// The step resumed from (None for a fresh run).
    pub resumed_from: Option<u64>,
    /// `out/final` (None when stopped early by `stop_after_steps`).
    pub final_dir: Option<PathBuf>,
    /// Checkpoints written by this process.
    pub checkpoints: Vec<PathBuf>,
}

/// The step plan: which sequences make up each micro-batch of each step.
#[derive(Clone, Debug)]
struct Plan {
    n: usize,
    batch_size: usize,
    grad_accum: usize,
    micro_per_epoch: u64,
    steps_per_epoch: u64,
    seed: u64,
}

impl Plan {
    fn new(n: usize, batch_size: usize, grad_accum: usize, seed: u64) -> Plan {
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
    fn locate(&self, step: u64) -> (u64, u64, u64) {
        let epoch = step / self.steps_per_epoch;
        let k = step % self.steps_per_epoch;
        (epoch, k, k * self.grad_accum as u64)
    }

    /// Sequence indices of each micro-batch of global step `step`.
    fn step_batches(&self, step: u64, perm: &[usize]) -> Vec<Vec<usize>> {
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
}

/// Files copied from the tokenizer directory into every saved model directory.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
];

fn copy_tokenizer_files(tok_dir: &Path, out: &Path) -> Result<(), SftError> {
    for f in TOKENIZER_FILES {
        let src = tok_dir.join(f);
        if src.is_file() {
            let dst = out.join(f);
            std::fs::copy(&src, &dst).map_err(io_err(&dst))?;
        }
    }
    Ok(())
}

/// Write a checkpoint atomically: the model (full HF directory or PEFT adapter) and tokenizer
/// files, the exact training state under `state/` ([`save_train_state`]: trainable tensors,
/// optimizer, dropout stream, and this module's [`TrainerState`] as the data cursor), all in a
/// temporary directory renamed into place at the end.
fn save_checkpoint(
    cfg: &SftConfig,
    model: &TrainModel,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf, SftError> {
    let out = &cfg.out_dir;
    let dir = out.join(format!("checkpoint-{}", state.step));
    let tmp = out.join(format!(".checkpoint-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    model.save(&tmp)?;
    copy_tokenizer_files(cfg.tokenizer_dir(), &tmp)?;
    let ts = TrainState {
        step: state.step,
        rng_state: state.rng_state,
        data_cursor: serde_json::to_value(state).expect("state serialises"),
    };
    save_train_state(&tmp.join(STATE_DIR), model, opt, &ts)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    Ok(dir)
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

/// Summed token cross-entropy of a micro-batch (differentiable scalar, f32).
fn micro_batch_loss(
    model: &TrainModel,
    ids: &Tensor,
    layout: &BatchLayout,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor, SftError> {
    let lp = model.token_logprobs(ids, layout, targets, 1.0, true)?;
    let weights = weights.to_dtype(lp.dtype()).map_err(TrainError::from)?;
    let loss = (lp * weights)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.neg())
        .map_err(TrainError::from)?;
    Ok(loss)
}

/// Run (or, with `resume`, continue) supervised fine-tuning. See the module docs.
pub fn run_sft(cfg: &SftConfig, resume: bool) -> Result<SftSummary, SftError> {
    crate::model::on_compute_pool(|| run_sft_on_pool(cfg, resume))
}

fn run_sft_on_pool(cfg: &SftConfig, resume: bool) -> Result<SftSummary, SftError> {
    cfg.validate()?;
    let dtype = parse_dtype(&cfg.dtype)?;
    let device = parse_device(&cfg.device)?;
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out).map_err(io_err(out))?;

    // Data.
    let formatter = ChatFormatter::from_dir(cfg.tokenizer_dir())?;
    let loaded = data::load_examples(&cfg.data, &formatter, cfg.max_len)?;
    let seqs: Vec<Sequence> = data::sequences(&loaded.examples, cfg.max_len, cfg.packing);
    let plan = Plan::new(seqs.len(), cfg.batch_size, cfg.grad_accum, cfg.seed);
    let total_steps = cfg.max_steps.unwrap_or(cfg.epochs * plan.steps_per_epoch);
    let warmup = warmup_steps(total_steps, cfg.warmup_steps, cfg.warmup_ratio);
    let schedule = match cfg.schedule {
        ScheduleKind::Cosine => Schedule::cosine(cfg.lr, warmup, total_steps),
        ScheduleKind::Constant => Schedule::constant(cfg.lr, warmup),
    };

    // Resume point.
    let resume_from = if resume { latest_checkpoint(out) } else { None };
    let state: Option<TrainerState> = match &resume_from {
        Some((_, dir)) => {
            let p = dir.join(STATE_DIR).join("train_state.json");
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            let ts: TrainState = serde_json::from_str(&text)
                .map_err(|e| SftError::Resume(format!("{}: {e}", p.display())))?;
            let st: TrainerState = serde_json::from_value(ts.data_cursor)
                .map_err(|e| SftError::Resume(format!("{}: data_cursor: {e}", p.display())))?;
            if st.n_sequences != seqs.len() as u64
                || st.steps_per_epoch != plan.steps_per_epoch
                || st.total_steps != total_steps
                || st.seed != cfg.seed
                || st.lora != cfg.lora.is_some()
            {
                return Err(SftError::Resume(format!(
                    "{} was written by a different run (data, batch size, steps, seed or \
                     LoRA differ): {} sequences / {} steps per epoch / {} steps / seed {} / \
                     lora {} vs now {} / {} / {} / {} / {}",
                    dir.display(),
                    st.n_sequences,
                    st.steps_per_epoch,
                    st.total_steps,
                    st.seed,
                    st.lora,
                    seqs.len(),
                    plan.steps_per_epoch,
                    total_steps,
                    cfg.seed,
                    cfg.lora.is_some()
                )));
            }
            Some(st)
        }
        None => None,
    };

    // Model and optimizer.
    let opts = TrainModelOptions {
        dtype,
        device: device.clone(),
        lora: cfg.lora.clone().map(|mut l| {
            l.init_seed = cfg.seed;
            l
        }),
        seed: cfg.seed,
    };
    let model = TrainModel::load(&cfg.model_dir, &opts)?;
    let mut opt = AdamW::new(
        model.trainable(),
        AdamWConfig {
            lr: cfg.lr,
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
            no_decay_norms_and_biases: true,
        },
    )?;
    let start_step = match &resume_from {
        Some((_, dir)) => load_train_state(&dir.join(STATE_DIR), &model, &mut opt)?.step,
        None => 0,
    };
    let elapsed0 = state.as_ref().map_or(0.0, |s| s.elapsed_s);

    let cfg_path = out.join("sft_config.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_string_pretty(cfg).expect("config serialises"),
    )
    .map_err(io_err(&cfg_path))?;
    let mut writer = MetricsWriter::open(
        &out.join("metrics.jsonl"),
        resume_from.as_ref().map(|_| start_step),
    )?;
    let pb = metrics::progress_bar(total_steps, start_step);
    pb.println(format!(
        "SFT: {} examples ({} truncated, {} without assistant tokens dropped) → {} sequences; \
         {} steps/epoch, {} steps{}",
        loaded.examples.len(),
        loaded.truncated,
        loaded.dropped,
        seqs.len(),
        plan.steps_per_epoch,
        total_steps,
        resume_from
            .as_ref()
            .map(|(s, _)| format!(", resuming from step {s}"))
            .unwrap_or_default()
    ));

    let mut summary = SftSummary {
        steps: start_step,
        total_steps,
        n_sequences: seqs.len(),
        truncated: loaded.truncated,
        dropped: loaded.dropped,
        first_loss: f64::NAN,
        last_loss: f64::NAN,
        resumed_from: resume_from.as_ref().map(|(s, _)| *s),
        final_dir: None,
        checkpoints: Vec::new(),
    };
    let params = model.trainable();
    let t0 = Instant::now();
    let mut perm_epoch = u64::MAX;
    let mut perm = Vec::new();
    let mut ran = 0u64;
    let mut last_saved = None;
    for step in start_step..total_steps {
        let t_step = Instant::now();
        let (epoch, k, _) = plan.locate(step);
        if epoch != perm_epoch {
            perm = epoch_permutation(seqs.len(), plan.seed, epoch);
            perm_epoch = epoch;
        }
        let batches: Vec<Batch> = plan
            .step_batches(step, &perm)
            .iter()
            .map(|idx| {
                let refs: Vec<&Sequence> = idx.iter().map(|&i| &seqs[i]).collect();
                collate(&refs, formatter.pad_id())
            })
            .collect();
        let n_loss: usize = batches.iter().map(Batch::n_targets).sum();
        let n_tokens: usize = batches.iter().map(Batch::n_tokens).sum();
        let lr = schedule.lr(step);
        let mut loss_value = 0.0f64;
        let mut grads = if n_loss == 0 {
            Grads::default()
        } else {
            let mut acc = GradAccumulator::default();
            let mut single = None;
            for b in &batches {
                let (ids, layout, targets, weights) = batch_tensors(b, &device)?;
                let loss = (micro_batch_loss(&model, &ids, &layout, &targets, &weights)?
                    / n_loss as f64)
                    .map_err(TrainError::from)?;
                loss_value += loss
                    .to_dtype(DType::F64)
                    .and_then(|l| l.to_scalar::<f64>())
                    .map_err(TrainError::from)?;
                let store = loss.backward().map_err(TrainError::from)?;
                if batches.len() == 1 {
                    single = Some(Grads::from_backward(&store, &params));
                } else {
                    acc.add(&store, &params)?;
                }
            }
            match single {
                Some(g) => g,
                None => acc.finish(1.0)?,
            }
        };
        let grad_norm = if cfg.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, cfg.max_grad_norm)?
        } else {
            grads.global_norm()?
        };
        opt.set_learning_rate(lr);
        if grad_norm.is_finite() && n_loss > 0 {
            opt.step(&grads)?;
        }
        let done = step + 1;
        let dt = t_step.elapsed().as_secs_f64();
        let elapsed_s = elapsed0 + t0.elapsed().as_secs_f64();
        let m = StepMetrics {
            step: done,
            epoch: epoch as f64 + (k + 1) as f64 / plan.steps_per_epoch as f64,
            loss: loss_value,
            lr,
            grad_norm,
            loss_tokens: n_loss as u64,
            tokens: n_tokens as u64,
            tokens_per_s: if dt > 0.0 { n_tokens as f64 / dt } else { 0.0 },
            elapsed_s,
        };
        writer.write(&m)?;
        if ran == 0 {
            summary.first_loss = loss_value;
        }
        summary.last_loss = loss_value;
        summary.steps = done;
        ran += 1;
        pb.set_position(done);
        pb.set_message(format!("loss {loss_value:.4} lr {lr:.2e}"));

        let is_last = done == total_steps;
        if (cfg.save_every > 0 && done % cfg.save_every == 0) || is_last {
            let (next_epoch, next_k, next_micro) = plan.locate(done);
            let st = TrainerState {
                step: done,
                epoch: next_epoch,
                step_in_epoch: next_k,
                micro_batch_in_epoch: next_micro,
                steps_per_epoch: plan.steps_per_epoch,
                total_steps,
                n_sequences: seqs.len() as u64,
                rng_state: model.rng_state(),
                seed: cfg.seed,
                elapsed_s,
                lora: cfg.lora.is_some(),
            };
            summary
                .checkpoints
                .push(save_checkpoint(cfg, &model, &opt, &st)?);
            last_saved = Some(done);
            writer.plot(&out.join("curves.png"))?;
        }
        if cfg.stop_after_steps == Some(ran) && !is_last {
            pb.abandon();
            return Ok(summary);
        }
    }
    pb.finish_and_clear();

    // Final model (also when resuming a run that had already finished).
    let final_dir = out.join("final");
    let tmp = out.join(".final.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    model.save(&tmp)?;
    copy_tokenizer_files(cfg.tokenizer_dir(), &tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
    if last_saved.is_none() && !writer.history().is_empty() {
        writer.plot(&out.join("curves.png"))?;
    }
    summary.final_dir = Some(final_dir);
    Ok(summary)
}

/// Merge a PEFT LoRA adapter (e.g. `out/final` of a LoRA run) into its base model and write a
/// full HF model directory ([`crate::checkpoint::merge_lora`]), plus the tokenizer files of
/// the adapter directory (else of the base).
pub fn merge_adapter(base: &Path, adapter: &Path, out: &Path) -> Result<(), SftError> {
    crate::checkpoint::merge_lora(base, adapter, out)?;
    let tok_src = if adapter.join("tokenizer.json").is_file() {
        adapter
    } else {
        base
    };
    copy_tokenizer_files(tok_src, out)
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
    }
}
