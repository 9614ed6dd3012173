//! Stage 1: supervised fine-tuning on chat data with `<think>` reasoning traces.
//!
//! [`run_sft`] loads the data ([`crate::data`]: chat template, assistant-only loss mask,
//! truncation or packing), the model ([`TrainModel`], full or LoRA) and trains with AdamW
//! ([`crate::optim`]) under a cosine (or constant) schedule with warmup
//! ([`crate::schedule`]).
//!
//! # Steps
//!
//! Epoch `e` visits the sequences in the order
//! [`crate::data::epoch_permutation`]`(n, seed, e)`, in micro-batches of `batch_size` (the
//! last one of an epoch may be smaller) and optimizer steps of `grad_accum` micro-batches (the last step of an epoch may have fewer). The loss of a
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
//! Checkpoints and `final` are written by [`crate::run_dir::RunDir`], as GRPO's are: into
//! `out/.NAME.tmp`, renamed into place (a `checkpoint-STEP` directory is always complete),
//! the ones beyond the newest `keep_last` removed (0, the default, keeps all). The steps
//! themselves run in the loop both trainers share (`crate::train_loop`); this module
//! supplies the step (`step`) and the plan (`plan`). `resume = true` continues from the latest
//! one exactly: same data order (the permutations are pure functions of seed and epoch), same
//! schedule, same optimizer state, same dropout stream; on CPU an interrupted and resumed run
//! ends with the same weights and the same metrics (except timings) as an uninterrupted one.

mod config;
mod plan;
mod step;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::data::{self, ChatFormatter, DataError, Sequence};
use crate::metrics::{self, MetricsError, MetricsWriter};
use crate::model::{TrainError, TrainModel, TrainModelOptions};
use crate::optim::{AdamW, AdamWConfig};
use crate::run_dir::{ResumePoint, RunDir};
use crate::schedule::{warmup_steps, Schedule, ScheduleKind};
use crate::train_loop::{run_steps, LoopEnd, Steps};

pub use config::SftConfig;
pub use plan::TrainerState;
use plan::{EpochOrder, Plan, RunShape};
use step::SftRun;

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

/// The training data as sequences, and the step plan over them.
struct SftData {
    pad_id: u32,
    examples: usize,
    truncated: usize,
    dropped: usize,
    seqs: Vec<Sequence>,
    plan: Plan,
    total_steps: u64,
}

impl SftData {
    /// Render and tokenize the data with the model's chat template, truncate or pack it, and
    /// plan the steps.
    fn load(cfg: &SftConfig) -> Result<SftData, SftError> {
        let formatter = ChatFormatter::from_dir(cfg.tokenizer_dir())?;
        let loaded = data::load_examples(&cfg.data, &formatter, cfg.max_len)?;
        let seqs = data::sequences(&loaded.examples, cfg.max_len, cfg.packing);
        let plan = Plan::new(seqs.len(), cfg.batch_size, cfg.grad_accum, cfg.seed);
        let total_steps = cfg.max_steps.unwrap_or(cfg.epochs * plan.steps_per_epoch);
        Ok(SftData {
            pad_id: formatter.pad_id(),
            examples: loaded.examples.len(),
            truncated: loaded.truncated,
            dropped: loaded.dropped,
            seqs,
            plan,
            total_steps,
        })
    }

    /// What a checkpoint of this run must agree on to be resumed.
    fn shape(&self, cfg: &SftConfig) -> RunShape {
        RunShape {
            n_sequences: self.seqs.len() as u64,
            steps_per_epoch: self.plan.steps_per_epoch,
            total_steps: self.total_steps,
            seed: cfg.seed,
            lora: cfg.lora.is_some(),
        }
    }

    /// The learning rate of every step: warmup, then cosine to 0 or constant.
    fn schedule(&self, cfg: &SftConfig) -> Schedule {
        let warmup = warmup_steps(self.total_steps, cfg.warmup_steps, cfg.warmup_ratio);
        match cfg.schedule {
            ScheduleKind::Cosine => Schedule::cosine(cfg.lr, warmup, self.total_steps),
            ScheduleKind::Constant => Schedule::constant(cfg.lr, warmup),
        }
    }

    /// The line printed before training.
    fn describe(&self, resumed_from: Option<u64>) -> String {
        format!(
            "SFT: {} examples ({} truncated, {} without assistant tokens dropped) → {} \
             sequences; {} steps/epoch, {} steps{}",
            self.examples,
            self.truncated,
            self.dropped,
            self.seqs.len(),
            self.plan.steps_per_epoch,
            self.total_steps,
            resumed_from
                .map(|s| format!(", resuming from step {s}"))
                .unwrap_or_default()
        )
    }
}

/// The latest checkpoint of `run` with its data cursor, refused if another run wrote it.
fn checked_resume_point(
    run: &RunDir,
    shape: &RunShape,
) -> Result<Option<(ResumePoint, TrainerState)>, SftError> {
    let Some(point) = run.resume_point()? else {
        return Ok(None);
    };
    let path = point.dir.join(crate::checkpoint::STATE_DIR);
    let cursor: TrainerState = serde_json::from_value(point.state.data_cursor.clone())
        .map_err(|e| SftError::Resume(format!("{}: data_cursor: {e}", path.display())))?;
    shape.check(&cursor, &point.dir)?;
    Ok(Some((point, cursor)))
}

/// The model (full or LoRA, in the configured dtype on `device`) and its AdamW.
fn load_model(cfg: &SftConfig, device: &Device) -> Result<(TrainModel, AdamW), SftError> {
    let opts = TrainModelOptions {
        dtype: cfg.dtype.dtype(),
        device: device.clone(),
        lora: cfg.seeded_lora(),
        seed: cfg.seed,
    };
    let model = TrainModel::load(&cfg.model_dir, &opts)?;
    let opt = AdamW::new(
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
    Ok((model, opt))
}

/// Run (or, with `resume`, continue) supervised fine-tuning. See the module docs.
pub fn run_sft(cfg: &SftConfig, resume: bool) -> Result<SftSummary, SftError> {
    crate::model::on_compute_pool(|| run_sft_on_pool(cfg, resume))
}

fn run_sft_on_pool(cfg: &SftConfig, resume: bool) -> Result<SftSummary, SftError> {
    cfg.validate()?;
    let device = cfg.device.open().map_err(TrainError::from)?;
    let run = RunDir::create(&cfg.out_dir, cfg.tokenizer_dir(), cfg.keep_last)?;
    let data = SftData::load(cfg)?;
    let shape = data.shape(cfg);
    let resume_from = if resume {
        checked_resume_point(&run, &shape)?
    } else {
        None
    };
    let (model, mut opt) = load_model(cfg, &device)?;
    if let Some((point, _)) = &resume_from {
        point.restore(&model, &mut opt)?;
    }
    let start = resume_from.as_ref().map_or(0, |(p, _)| p.state.step);
    run.write_config("sft_config.json", cfg)?;
    let metrics = MetricsWriter::open(
        &run.path().join("metrics.jsonl"),
        resume_from.as_ref().map(|_| start),
    )?;
    let bar = metrics::progress_bar(data.total_steps, start);
    bar.println(data.describe(resume_from.as_ref().map(|(p, _)| p.step)));

    let steps = Steps {
        start,
        total: data.total_steps,
        save_every: cfg.save_every,
        stop_after: cfg.stop_after_steps,
    };
    let mut trainer = SftRun {
        cfg,
        summary: SftSummary {
            steps: start,
            total_steps: data.total_steps,
            n_sequences: data.seqs.len(),
            truncated: data.truncated,
            dropped: data.dropped,
            first_loss: f64::NAN,
            last_loss: f64::NAN,
            resumed_from: resume_from.as_ref().map(|(p, _)| p.step),
            final_dir: None,
            checkpoints: Vec::new(),
        },
        schedule: data.schedule(cfg),
        run,
        pad_id: data.pad_id,
        seqs: data.seqs,
        plan: data.plan,
        shape,
        model,
        opt,
        device,
        metrics,
        order: EpochOrder::default(),
        elapsed_before: resume_from.as_ref().map_or(0.0, |(_, c)| c.elapsed_s),
        started: Instant::now(),
        steps_before: start,
    };
    match run_steps(&mut trainer, &steps, &bar)? {
        LoopEnd::Stopped => Ok(trainer.summary),
        LoopEnd::Finished => trainer.finish(),
    }
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
    Ok(crate::checkpoint::copy_tokenizer_files(tok_src, out)?)
}
