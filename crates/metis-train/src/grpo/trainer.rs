//! The GRPO training loop: rollouts from the local engine (or from a server fleet, see
//! [`super::remote`]), verifier rewards with the format penalty, group-relative advantages,
//! TRL's clipped objective with a k3 KL to the reference, AdamW under a cosine schedule,
//! held-out accuracy, checkpoints and exact resume.
//!
//! One step:
//! 1. draw `prompts_per_step` prompts from the mixture ([`PromptSampler`], seeded by step);
//! 2. copy the current policy into an engine [`Model`] (LoRA merged) and sample
//!    `num_generations` completions of each prompt with the KV cache, keeping each token's
//!    log-probability under the temperature-scaled logits (the "old" log-probabilities) —
//!    or, with [`GrpoConfig::remote`], publish the LoRA adapter to the servers and sample
//!    there;
//! 3. grade every completion (verifier + format penalty, in parallel with a timeout);
//! 4. advantages per group ([`group_advantages`]);
//! 5. re-score the completions with the training model (with gradient), the reference model
//!    (full fine-tuning: the frozen starting checkpoint through the engine; LoRA: the same
//!    model with the adapters off) and take TRL's loss ([`grpo_loss`]) over micro-batches;
//! 6. clip, AdamW step, metrics line, optional held-out evaluation and checkpoint.
//!
//! Everything random is seeded by `(seed, step)`, so a run resumed from a checkpoint takes
//! exactly the steps the uninterrupted run would have taken.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use metis_engine::chat::{ChatTemplate, RenderOptions};
use metis_engine::generate::{generate_batch, GenerateOptions, Generation};
use metis_engine::loader::load_tokenizer;
use metis_engine::model::Model;
use metis_engine::sampling::SamplingParams;
use metis_engine::tokenizer::Tokenizer;
use metis_plot::{line_chart, Curve, LinePanel};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::advantage::{group_advantages, ScaleRewards};
use super::loss::{grpo_loss, per_token_logps, LossConfig, LossInputs};
use super::prompts::{LoadOptions, PromptMixture, PromptRecord, PromptSampler, TaskWeights};
use super::remote::{RemoteRollouts, RemoteSampler, RolloutSampling};
use super::reward::RewardBreakdown;
use super::reward::{compute_rewards, RewardConfig};
use crate::checkpoint::{
    latest_checkpoint, load_train_state, save_train_state, TrainState, STATE_DIR,
};
use crate::lora::LoraConfig;
use crate::metrics::{f64_or_nan, MetricsWriter, StepRecord};
use crate::model::{BatchLayout, Result, TrainError, TrainModel, TrainModelOptions};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, GradAccumulator};
use crate::schedule::{warmup_steps, Schedule};
use metis_verify::Task;

/// Settings of a GRPO run (defaults: the report's recipe where it gives one — 5 generations,
/// beta 0.02, `grpo` aggregation — and TRL's otherwise).
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
    /// Stop after this many steps of this invocation (tests simulate a kill with it).
    #[serde(skip)]
    pub stop_after_steps: Option<u64>,
}

impl GrpoConfig {
    pub fn new(model: PathBuf, prompts: PathBuf, out: PathBuf) -> Self {
        let loss = LossConfig {
            loss_type: super::loss::LossType::Grpo,
            beta: 0.02,
            ..LossConfig::default()
        };
        Self {
            model,
            tokenizer: None,
            ref_model: None,
            prompts,
            eval_prompts: None,
            out,
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
            loss,
            scale_rewards: ScaleRewards::Group,
            reward: RewardConfig::default(),
            task_weights: TaskWeights::default(),
            data_dir: None,
            log_rollouts: false,
            lora: None,
            seed: 0,
            save_every: 50,
            eval_every: 10,
            micro_batch: 8,
            prefill_think: false,
            remote: None,
            stop_after_steps: None,
        }
    }
}

/// One step's rollouts (`rollouts.jsonl`, with `--log-rollouts`): every completion with its
/// prompt, task and reward breakdown, so a run can be audited — what the policy wrote and
/// why it was rewarded so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRollouts {
    pub step: u64,
    pub rollouts: Vec<RolloutLog>,
}

/// One logged completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutLog {
    pub prompt_id: String,
    pub task: Task,
    pub completion: String,
    pub reward: RewardBreakdown,
}

impl StepRecord for StepRollouts {
    fn step(&self) -> u64 {
        self.step
    }
}

/// One task's share of a GRPO step: how the completions of that task's prompts were rewarded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStepMetrics {
    /// Completions of the task in the step.
    pub n: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_mean: f64,
    /// Population standard deviation of the task's rewards.
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub reward_std: f64,
    /// Mean verifier part (binary correctness or graded score) before the format penalty.
    #[serde(deserialize_with = "f64_or_nan")]
    pub verifier_mean: f64,
    /// Share graded correct by the task's verifier.
    #[serde(deserialize_with = "f64_or_nan")]
    pub accuracy: f64,
    /// Share with a format violation (penalised).
    #[serde(deserialize_with = "f64_or_nan")]
    pub format_penalty_rate: f64,
}

/// Per-task metrics of a step, from each completion's task and reward breakdown.
pub fn task_step_metrics<'a>(
    rewards: impl IntoIterator<Item = (Task, &'a RewardBreakdown)>,
) -> BTreeMap<String, TaskStepMetrics> {
    let mut groups: BTreeMap<String, Vec<&RewardBreakdown>> = BTreeMap::new();
    for (task, r) in rewards {
        groups.entry(task.name().to_owned()).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(task, rs)| {
            let n = rs.len() as f64;
            let mean =
                |f: &dyn Fn(&RewardBreakdown) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
            let totals: Vec<f64> = rs.iter().map(|r| r.total).collect();
            let (reward_mean, reward_std) = mean_std(&totals);
            let m = TaskStepMetrics {
                n: rs.len(),
                reward_mean,
                reward_std,
                verifier_mean: mean(&|r| r.verifier),
                accuracy: mean(&|r| f64::from(u8::from(r.correct))),
                format_penalty_rate: mean(&|r| f64::from(u8::from(r.format_violation))),
            };
            (task, m)
        })
        .collect()
}

/// One line of `metrics.jsonl`. Every float reads `null` (a non-finite value) back as NaN.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrpoMetrics {
    pub step: u64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub grad_norm: f64,
    /// NaN (written as null) on the step-0 line, which only holds the starting evaluation.
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_mean: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_std: f64,
    /// Mean verifier part of the reward (before the penalty).
    #[serde(deserialize_with = "f64_or_nan")]
    pub verifier_mean: f64,
    /// Mean format penalty.
    #[serde(deserialize_with = "f64_or_nan")]
    pub format_penalty_mean: f64,
    /// Share of completions with a format violation.
    #[serde(deserialize_with = "f64_or_nan")]
    pub format_penalty_rate: f64,
    /// Share of completions graded correct.
    #[serde(deserialize_with = "f64_or_nan")]
    pub accuracy: f64,
    pub reward_by_task: BTreeMap<String, (f64, f64)>,
    /// Per task of the mixture: reward, verifier part, accuracy and format-penalty rate of
    /// this step's completions (absent from lines written before it existed).
    #[serde(default)]
    pub task_metrics: BTreeMap<String, TaskStepMetrics>,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kl: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub clip_frac: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub completion_len_mean: f64,
    /// Share of completions cut by the length limit.
    #[serde(deserialize_with = "f64_or_nan")]
    pub truncated_rate: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub frac_reward_zero_std: f64,
    pub reward_timeouts: usize,
    /// Mean |sampler log-probability − policy log-probability| over the completion tokens:
    /// float noise when the sampler serves the policy being trained; more when a server
    /// serves another model (an adapter that did not load) or reports log-probabilities of
    /// other logits (vLLM without `--logprobs-mode processed_logprobs`, at temperature ≠ 1).
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub rollout_logprob_gap: f64,
    /// Training tokens (prompt + completion) per second of the whole step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tokens_per_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub generation_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub step_s: f64,
    /// Held-out accuracy (greedy), on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heldout_accuracy: Option<f64>,
    /// Held-out accuracy with one completion per prompt sampled at the rollout temperature.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heldout_sampled_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heldout_format_violation_rate: Option<f64>,
}

impl StepRecord for GrpoMetrics {
    fn step(&self) -> u64 {
        self.step
    }
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct GrpoOutcome {
    pub steps: u64,
    pub final_dir: Option<PathBuf>,
    pub history: Vec<GrpoMetrics>,
}

/// Prompts rendered and tokenized once.
struct Prepared {
    record: PromptRecord,
    ids: Vec<u32>,
}

struct Ctx {
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    template: ChatTemplate,
    render: RenderOptions,
}

impl Ctx {
    fn prepare(&self, records: &[PromptRecord]) -> Result<Vec<Prepared>> {
        records
            .iter()
            .map(|r| {
                let text = self
                    .template
                    .render(&r.messages, &self.render)
                    .map_err(|e| TrainError::InvalidArgument(format!("prompt {}: {e}", r.id)))?;
                let ids = self
                    .tokenizer
                    .encode(&text, false)
                    .map_err(|e| TrainError::InvalidArgument(format!("prompt {}: {e}", r.id)))?;
                Ok(Prepared {
                    record: r.clone(),
                    ids,
                })
            })
            .collect()
    }
}

/// The policy's current weights as an engine model (LoRA adapters merged in).
fn policy_engine(model: &TrainModel) -> Result<Model> {
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

/// A rollout: prompt (its position in the step's picks), completion ids (stop id included
/// when it ended on one) and their sampling log-probabilities.
pub(super) struct Rollout {
    pub(super) prompt: usize,
    pub(super) ids: Vec<u32>,
    pub(super) logprobs: Vec<f32>,
    pub(super) truncated: bool,
}

fn rollouts(gens: Vec<Generation>, group: usize) -> Vec<Rollout> {
    gens.into_iter()
        .enumerate()
        .map(|(i, g)| {
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
                truncated: g.finish_reason == metis_engine::generate::FinishReason::Length,
            }
        })
        .collect()
}

/// Mean and population std (divided by n, as logged per step; the advantages use Bessel's).
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Deterministic 64-bit mix of the run seed and a step (SplitMix64 finaliser).
fn step_seed(seed: u64, step: u64, salt: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

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

/// The completion text as generated. With a prefilled `<think>\n` it holds only the closing
/// delimiter; the reward's [`metis_verify::format::FormatPolicy::prefilled_open`] accounts for
/// that (set by [`run_grpo`]).
fn completion_text(g: &Generation) -> String {
    g.text.clone().unwrap_or_default()
}

/// Every task that appears in a run's per-task metrics.
fn task_names(history: &[GrpoMetrics]) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> =
        history.iter().flat_map(|m| m.task_metrics.keys()).collect();
    names.into_iter().cloned().collect()
}

/// Curves of a run: reward and held-out accuracy, format-violation rate, accuracy by task, KL,
/// completion length.
pub fn plot_grpo(history: &[GrpoMetrics], path: &Path) -> Result<()> {
    let series = |name: &str, f: &dyn Fn(&GrpoMetrics) -> Option<f64>| Curve {
        name: name.to_string(),
        points: history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.step as f64, v)))
            .filter(|(_, v)| v.is_finite())
            .collect(),
    };
    let panels = vec![
        LinePanel {
            title: "Reward and accuracy".into(),
            y_label: "value".into(),
            curves: vec![
                series("reward mean", &|m| Some(m.reward_mean)),
                series("rollout accuracy", &|m| Some(m.accuracy)),
                series("held-out accuracy (greedy)", &|m| m.heldout_accuracy),
                series("held-out accuracy (sampled)", &|m| {
                    m.heldout_sampled_accuracy
                }),
            ],
        },
        LinePanel {
            title: "Format violations".into(),
            y_label: "share".into(),
            curves: vec![series("format-violation rate", &|m| {
                Some(m.format_penalty_rate)
            })],
        },
        LinePanel {
            title: "Rollout accuracy by task".into(),
            y_label: "accuracy".into(),
            curves: task_names(history)
                .iter()
                .map(|t| series(t, &|m| m.task_metrics.get(t).map(|x| x.accuracy)))
                .collect(),
        },
        LinePanel {
            title: "KL to the reference (k3)".into(),
            y_label: "KL".into(),
            curves: vec![series("kl", &|m| Some(m.kl))],
        },
        LinePanel {
            title: "Completion length".into(),
            y_label: "tokens".into(),
            curves: vec![series("mean completion length", &|m| {
                Some(m.completion_len_mean)
            })],
        },
    ];
    line_chart(&panels, "step", path)
        .map_err(|e| TrainError::InvalidArgument(format!("{}: {e}", path.display())))
}

/// Runs (or with `resume`, continues) a GRPO run; see the module docs. With
/// [`GrpoConfig::remote`] it drives its HTTP client on a runtime of its own, so it must not be
/// called from inside an async task.
pub fn run_grpo(cfg: &GrpoConfig, resume: bool) -> Result<GrpoOutcome> {
    crate::model::on_compute_pool(|| run_grpo_on_pool(cfg, resume))
}

fn run_grpo_on_pool(cfg: &GrpoConfig, resume: bool) -> Result<GrpoOutcome> {
    let mut cfg = cfg.clone();
    cfg.reward.format.prefilled_open = cfg.prefill_think;
    // The Dr. GRPO normaliser is the completion budget, as in TRL.
    cfg.loss.max_completion_length = cfg.max_completion_len;
    let cfg = &cfg;
    if cfg.num_generations < 2 {
        return Err(TrainError::InvalidArgument(
            "--num-generations must be at least 2 (advantages are relative to the group)".into(),
        ));
    }
    if cfg.prompts_per_step == 0 || cfg.micro_batch == 0 || cfg.max_steps == 0 {
        return Err(TrainError::InvalidArgument(
            "prompts per step, micro-batch and max steps must be positive".into(),
        ));
    }
    if cfg.remote.is_some() && cfg.lora.is_none() {
        return Err(TrainError::InvalidArgument(
            "remote rollouts hot-load a LoRA adapter; add --lora-rank".into(),
        ));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| TrainError::io(&cfg.out, e))?;
    let mut remote = cfg
        .remote
        .as_ref()
        .map(|r| RemoteSampler::connect(r, &cfg.out))
        .transpose()?;
    // Server log-probabilities are only the "old" ones when asked for (see `super::remote`);
    // the local engine's are those of the temperature-scaled logits.
    let sampler_logprobs_are_old = cfg.remote.as_ref().is_none_or(|r| r.use_server_logprobs);
    let device = Device::Cpu;
    // The base model's tokenizer, template and stop ids, as every other caller loads them.
    let tok_dir = cfg.tokenizer.as_deref().unwrap_or(&cfg.model);
    let loaded = load_tokenizer(&cfg.model, cfg.tokenizer.as_deref())
        .map_err(|e| TrainError::InvalidArgument(e.to_string()))?
        .ok_or_else(|| {
            TrainError::InvalidArgument(format!("{}: no tokenizer.json", tok_dir.display()))
        })?;
    let (tokenizer, stop_ids) = (loaded.tokenizer, loaded.stop_ids);
    let Some(template) = loaded.template else {
        return Err(TrainError::InvalidArgument(format!(
            "{}: the tokenizer has no chat template",
            tok_dir.display()
        )));
    };
    let render = RenderOptions {
        prefill_think: cfg.prefill_think,
        ..RenderOptions::generation()
    };
    let ctx = Ctx {
        tokenizer,
        stop_ids,
        template,
        render,
    };

    let load_opts = LoadOptions {
        data_dir: cfg.data_dir.clone(),
        ..LoadOptions::default()
    };
    let mixture = PromptMixture::load(&cfg.prompts, &load_opts)
        .map_err(|e| TrainError::InvalidArgument(e.to_string()))?;
    let sampler = PromptSampler::new(&mixture, &cfg.task_weights, cfg.seed)
        .map_err(|e| TrainError::InvalidArgument(format!("{}: {e}", cfg.prompts.display())))?;
    let prepared = ctx.prepare(&mixture.records)?;
    let eval_set: Vec<(PromptRecord, Vec<u32>)> = match &cfg.eval_prompts {
        Some(p) => {
            let m = PromptMixture::load(p, &load_opts)
                .map_err(|e| TrainError::InvalidArgument(e.to_string()))?;
            ctx.prepare(&m.records)?
                .into_iter()
                .map(|p| (p.record, p.ids))
                .collect()
        }
        None => Vec::new(),
    };

    let mut model = TrainModel::load(
        &cfg.model,
        &TrainModelOptions {
            dtype: DType::F32,
            device: device.clone(),
            lora: cfg.lora.clone(),
            seed: cfg.seed,
        },
    )?;
    // Full fine-tuning needs a frozen copy for the KL; LoRA turns its adapters off instead.
    let reference = if cfg.loss.beta != 0.0 && cfg.lora.is_none() {
        let dir = cfg.ref_model.as_ref().unwrap_or(&cfg.model);
        Some(Model::load(dir, Some(DType::F32), &device)?)
    } else {
        None
    };
    let mut opt = AdamW::new(
        model.trainable(),
        AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let schedule = Schedule::cosine(
        cfg.lr,
        warmup_steps(cfg.max_steps, 0, cfg.warmup_ratio),
        cfg.max_steps,
    );

    let mut start = 0u64;
    if resume {
        if let Some((step, dir)) = latest_checkpoint(&cfg.out) {
            let state: TrainState = load_train_state(&dir.join(STATE_DIR), &model, &mut opt)?;
            start = state.step;
            debug_assert_eq!(step, start);
        }
    }
    let mut log = MetricsWriter::<GrpoMetrics>::open(
        &cfg.out.join("metrics.jsonl"),
        (start > 0).then_some(start),
    )?;
    let mut rollout_log = if cfg.log_rollouts {
        Some(
            MetricsWriter::<StepRollouts>::open(
                &cfg.out.join("rollouts.jsonl"),
                (start > 0).then_some(start),
            )?
            .without_history(),
        )
    } else {
        None
    };
    std::fs::write(
        cfg.out.join("grpo_config.json"),
        serde_json::to_string_pretty(cfg).expect("config serialises"),
    )
    .map_err(|e| TrainError::io(&cfg.out, e))?;

    // Held-out accuracy greedily and at the rollout temperature (a fixed seed, so that
    // evaluations differ only by the policy).
    let eval_policy = |engine: &Model| -> Result<(f64, f64, f64)> {
        let run = |sampling| {
            evaluate(
                engine,
                &ctx.tokenizer,
                &ctx.stop_ids,
                &eval_set,
                cfg.max_completion_len,
                cfg.prefill_think,
                &cfg.reward,
                sampling,
            )
        };
        let (greedy, fmt) = run(SamplingParams::default())?;
        let (sampled, _) = run(SamplingParams {
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            seed: step_seed(cfg.seed, u64::MAX, 2),
            ..SamplingParams::default()
        })?;
        Ok((greedy, fmt, sampled))
    };
    let bar = crate::metrics::progress_bar(cfg.max_steps, start);
    let mut done_here = 0u64;
    let mut step = start;
    // The engine copy of the current weights, when an evaluation already built it: the next
    // rollout reuses it instead of copying the same weights again.
    let mut current_engine: Option<Model> = None;
    // The starting point of the held-out curve.
    if start == 0 && !eval_set.is_empty() {
        let engine = policy_engine(&model)?;
        let (acc, fmt, sampled) = eval_policy(&engine)?;
        current_engine = Some(engine);
        log.write(&GrpoMetrics {
            step: 0,
            heldout_accuracy: Some(acc),
            heldout_sampled_accuracy: Some(sampled),
            heldout_format_violation_rate: Some(fmt),
            reward_mean: f64::NAN,
            ..GrpoMetrics::default()
        })?;
    }

    while step < cfg.max_steps {
        if cfg.stop_after_steps.is_some_and(|n| done_here >= n) {
            break;
        }
        let t0 = Instant::now();
        let lr = schedule.lr(step);
        opt.set_learning_rate(lr);

        // 1-2. Prompts and rollouts.
        let picks = sampler.sample(step, cfg.prompts_per_step);
        let g = cfg.num_generations;
        let seed = step_seed(cfg.seed, step, 1);
        let (rolls, texts) = match remote.as_mut() {
            Some(remote) => {
                // Only held-out evaluations use the engine copy now.
                current_engine = None;
                let prompts: Vec<&[u32]> = picks.iter().map(|&i| &prepared[i].ids[..]).collect();
                remote.rollouts(
                    &model,
                    &prompts,
                    &RolloutSampling {
                        step,
                        seed,
                        n: g,
                        temperature: cfg.temperature,
                        top_p: cfg.top_p,
                        max_tokens: cfg.max_completion_len,
                        stop_ids: &ctx.stop_ids,
                    },
                    &ctx.tokenizer,
                )?
            }
            None => {
                let engine = match current_engine.take() {
                    Some(engine) => engine,
                    None => policy_engine(&model)?,
                };
                let prompt_ids: Vec<Vec<u32>> = picks
                    .iter()
                    .flat_map(|&i| std::iter::repeat_n(prepared[i].ids.clone(), g))
                    .collect();
                let gen_opts = GenerateOptions {
                    max_tokens: cfg.max_completion_len,
                    sampling: SamplingParams {
                        temperature: cfg.temperature,
                        top_p: cfg.top_p,
                        seed,
                        ..SamplingParams::default()
                    },
                    stop_ids: ctx.stop_ids.clone(),
                    ..GenerateOptions::default()
                };
                let gens = generate_batch(
                    &engine,
                    Some(&ctx.tokenizer),
                    &prompt_ids,
                    &gen_opts,
                    cfg.prefill_think,
                )
                .map_err(|e| TrainError::InvalidArgument(format!("rollout: {e}")))?;
                drop(engine);
                let texts: Vec<String> = gens.iter().map(completion_text).collect();
                (rollouts(gens, g), texts)
            }
        };
        let generation_s = t0.elapsed().as_secs_f64();

        // 3-4. Rewards and advantages.
        let jobs: Vec<_> = rolls
            .iter()
            .zip(&texts)
            .map(|(r, text)| prepared[picks[r.prompt]].record.reward_job(text.clone()))
            .collect();
        let summary = compute_rewards(&jobs, &cfg.reward);
        let totals = summary.totals();
        let adv = group_advantages(&totals, g, cfg.scale_rewards)
            .map_err(|e| TrainError::InvalidArgument(format!("advantages: {e}")))?;

        // 5. Loss over micro-batches.
        let params = model.trainable();
        let mut acc = GradAccumulator::default();
        let total_tokens: usize = rolls.iter().map(|r| r.ids.len()).sum();
        let chunks: Vec<Vec<usize>> = (0..rolls.len())
            .collect::<Vec<_>>()
            .chunks(cfg.micro_batch)
            .map(|c| c.to_vec())
            .collect();
        let mut loss_cfg = cfg.loss.clone();
        loss_cfg.gradient_accumulation_steps = chunks.len();
        let (mut loss_sum, mut kl_sum, mut clip_sum, mut tok_sum) = (0.0, 0.0, 0.0, 0.0);
        let (mut gap_sum, mut gap_tokens) = (0.0f64, 0usize);
        let mut train_tokens = 0usize;
        for rows in &chunks {
            let idx: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| !rolls[i].ids.is_empty())
                .collect();
            if idx.is_empty() {
                continue;
            }
            let rows: Vec<&Rollout> = idx.iter().map(|&i| &rolls[i]).collect();
            let seqs: Vec<Vec<u32>> = rows
                .iter()
                .map(|r| {
                    let mut s = prepared[picks[r.prompt]].ids.clone();
                    s.extend_from_slice(&r.ids);
                    s
                })
                .collect();
            let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
            let seq_len = *lens.iter().max().expect("non-empty");
            let comp_len = rows.iter().map(|r| r.ids.len()).max().expect("non-empty");
            train_tokens += lens.iter().sum::<usize>();
            let b = rows.len();
            // Inputs right-padded with 0; targets are the inputs shifted by one.
            let mut input = vec![0u32; b * seq_len];
            let mut target = vec![0u32; b * seq_len];
            let mut gather = vec![0u32; b * comp_len];
            let mut mask = vec![0f32; b * comp_len];
            let mut old = vec![0f32; b * comp_len];
            for (r, (s, roll)) in seqs.iter().zip(&rows).enumerate() {
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
            let input = Tensor::from_vec(input, (b, seq_len), &device)?;
            let target = Tensor::from_vec(target, (b, seq_len), &device)?;
            let gather = Tensor::from_vec(gather, (b, comp_len), &device)?;
            let mask = Tensor::from_vec(mask, (b, comp_len), &device)?;
            let old = Tensor::from_vec(old, (b, comp_len), &device)?;
            let layout = BatchLayout::from_lengths(&lens, seq_len)?;
            let lp =
                model.token_logprobs(&input, &layout, &target, cfg.temperature as f64, true)?;
            let logp = lp.gather(&gather, 1)?.contiguous()?; // [b, comp_len]
            for (row, roll) in logp.detach().to_vec2::<f32>()?.iter().zip(&rows) {
                for (policy, sampler) in row.iter().zip(&roll.logprobs) {
                    gap_sum += f64::from((sampler - policy).abs());
                }
                gap_tokens += roll.ids.len();
            }
            let ref_logp = if cfg.loss.beta == 0.0 {
                None
            } else if let Some(reference) = &reference {
                let mut cache = reference.new_cache(b);
                // Right padding needs no mask for a causal model: pads come after every real
                // token, so they never influence the positions that are read.
                let logits = reference.forward(&input, &mut cache)?;
                let lp = per_token_logps(&logits, &target, cfg.temperature as f64)?;
                Some(lp.gather(&gather, 1)?.detach())
            } else {
                // LoRA: the reference is the base model, i.e. the adapters switched off.
                model.set_adapter_enabled(false);
                let lp =
                    model.token_logprobs(&input, &layout, &target, cfg.temperature as f64, false);
                model.set_adapter_enabled(true);
                Some(lp?.gather(&gather, 1)?.detach())
            };
            let advantages: Vec<f32> = idx.iter().map(|&i| adv.values[i] as f32).collect();
            let advantages = Tensor::from_vec(advantages, b, &device)?;
            let out = grpo_loss(
                &LossInputs {
                    logp: &logp,
                    old_logp: sampler_logprobs_are_old.then_some(&old),
                    ref_logp: ref_logp.as_ref(),
                    mask: &mask,
                    advantages: &advantages,
                    num_items_in_batch: Some(total_tokens as f64),
                },
                &loss_cfg,
            )?;
            let grads = out.loss.backward()?;
            acc.add(&grads, &params)?;
            loss_sum += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let n = out.metrics.num_tokens;
            kl_sum += out.metrics.kl.unwrap_or(0.0) * n;
            clip_sum += out.metrics.clip_region * n;
            tok_sum += n;
        }
        let mut grads = acc.finish(1.0)?;
        let grad_norm = clip_grad_norm(&mut grads, cfg.max_grad_norm)?;
        opt.step(&grads)?;
        step += 1;
        done_here += 1;

        // 6. Metrics, evaluation, checkpoint.
        let n = totals.len() as f64;
        let (mean, std) = mean_std(&totals);
        if let Some(rl) = rollout_log.as_mut() {
            rl.write(&StepRollouts {
                step,
                rollouts: rolls
                    .iter()
                    .zip(&texts)
                    .zip(&summary.rewards)
                    .map(|((r, text), reward)| {
                        let record = &prepared[picks[r.prompt]].record;
                        RolloutLog {
                            prompt_id: record.id.clone(),
                            task: record.task,
                            completion: text.clone(),
                            reward: reward.clone(),
                        }
                    })
                    .collect(),
            })?;
        }
        let task_metrics = task_step_metrics(
            rolls
                .iter()
                .map(|r| prepared[picks[r.prompt]].record.task)
                .zip(&summary.rewards),
        );
        let step_s = t0.elapsed().as_secs_f64();
        let mut m = GrpoMetrics {
            step,
            loss: loss_sum,
            lr,
            grad_norm,
            reward_mean: mean,
            reward_std: std,
            verifier_mean: summary.rewards.iter().map(|r| r.verifier).sum::<f64>() / n,
            format_penalty_mean: summary
                .rewards
                .iter()
                .map(|r| r.format_penalty)
                .sum::<f64>()
                / n,
            format_penalty_rate: summary
                .rewards
                .iter()
                .filter(|r| r.format_violation)
                .count() as f64
                / n,
            accuracy: summary.rewards.iter().filter(|r| r.correct).count() as f64 / n,
            reward_by_task: task_metrics
                .iter()
                .map(|(k, m)| (k.clone(), (m.reward_mean, m.reward_std)))
                .collect(),
            task_metrics,
            kl: if tok_sum > 0.0 { kl_sum / tok_sum } else { 0.0 },
            clip_frac: if tok_sum > 0.0 {
                clip_sum / tok_sum
            } else {
                0.0
            },
            completion_len_mean: total_tokens as f64 / n,
            truncated_rate: rolls.iter().filter(|r| r.truncated).count() as f64 / n,
            frac_reward_zero_std: adv.stats.frac_reward_zero_std,
            reward_timeouts: summary.timed_out,
            rollout_logprob_gap: if gap_tokens > 0 {
                gap_sum / gap_tokens as f64
            } else {
                0.0
            },
            tokens_per_s: train_tokens as f64 / step_s,
            generation_s,
            step_s,
            heldout_accuracy: None,
            heldout_sampled_accuracy: None,
            heldout_format_violation_rate: None,
        };
        if !eval_set.is_empty()
            && (step.is_multiple_of(cfg.eval_every.max(1)) || step == cfg.max_steps)
        {
            let engine = policy_engine(&model)?;
            let (acc, fmt, sampled) = eval_policy(&engine)?;
            current_engine = Some(engine);
            m.heldout_accuracy = Some(acc);
            m.heldout_sampled_accuracy = Some(sampled);
            m.heldout_format_violation_rate = Some(fmt);
        }
        bar.set_message(format!(
            "reward {:.3} acc {:.2}{}",
            m.reward_mean,
            m.accuracy,
            m.heldout_accuracy
                .map(|a| format!(" held-out {a:.3}"))
                .unwrap_or_default()
        ));
        bar.inc(1);
        log.write(&m)?;
        if step.is_multiple_of(cfg.save_every.max(1)) || step == cfg.max_steps {
            let dir = cfg.out.join(format!("checkpoint-{step}"));
            model.save(&dir.join("model"))?;
            save_train_state(
                &dir.join(STATE_DIR),
                &model,
                &opt,
                &TrainState {
                    step,
                    rng_state: model.rng_state(),
                    data_cursor: Value::Null,
                },
            )?;
            // Older checkpoints are superseded once the new one is complete.
            for entry in std::fs::read_dir(&cfg.out)
                .map_err(|e| TrainError::io(&cfg.out, e))?
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(s) = name
                    .strip_prefix("checkpoint-")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    if s < step {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    let final_dir = if step >= cfg.max_steps {
        let dir = cfg.out.join("final");
        model.save(&dir)?;
        Some(dir)
    } else {
        None
    };
    plot_grpo(log.history(), &cfg.out.join("curves.png"))?;
    // Last, so that a server failing to unload cannot cost the run its final outputs.
    if let Some(remote) = remote {
        remote.close()?;
    }
    Ok(GrpoOutcome {
        steps: step,
        final_dir,
        history: log.into_history(),
    })
}
