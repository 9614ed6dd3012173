//! The GRPO training loop: rollouts from a `RolloutSource` (the local engine, or a server
//! fleet through [`super::remote`]), verifier rewards with the format penalty,
//! group-relative advantages, TRL's clipped objective with a k3 KL to the reference, AdamW
//! under a cosine schedule, held-out accuracy, checkpoints and exact resume.
//!
//! A run ([`run_grpo`]) loads the tokenizer and prompts (`super::chat`), the policy, its
//! reference and optimizer, and resumes from the latest checkpoint if asked; then the loop
//! both trainers share (`crate::train_loop`) takes the steps, and the run directory
//! ([`crate::run_dir`]) holds its checkpoints and final model. One step
//! (`GrpoRun::step`):
//!
//! - `GrpoRun::sample_rollouts`: draw `prompts_per_step` prompts from the mixture
//!   ([`super::prompts::PromptSampler`], seeded by step) and sample `num_generations`
//!   completions of each from the rollout source, keeping each token's sampling
//!   log-probability;
//! - `GrpoRun::grade`: grade every completion (verifier + format penalty, in parallel with
//!   a timeout), then advantages per group ([`group_advantages`]);
//! - `GrpoRun::policy_gradient`: re-score the completions with the training model (with
//!   gradient) and the reference model (full fine-tuning: the frozen starting checkpoint
//!   through the engine; LoRA: the same model with the adapters off) and take TRL's loss over
//!   micro-batches (`super::update`);
//! - clip, AdamW step, the metrics line (`super::step_metrics`) and, when due, the
//!   held-out evaluation (`super::heldout`).
//!
//! Everything random is seeded by `(seed, step)`, so a run resumed from a checkpoint takes
//! exactly the steps the uninterrupted run would have taken.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use metis_engine::model::Model;
use serde_json::Value;

use super::advantage::{group_advantages, Advantages};
use super::chat::{ChatContext, Prepared};
use super::heldout::{HeldOut, HeldOutScores};
use super::prompts::{LoadOptions, PromptSampler};
use super::reward::{compute_rewards, RewardSummary};
use super::rollout::{rollout_source, step_seed, Policy, Rollout, RolloutRequest, RolloutSource};
use super::step_metrics::StepFacts;
use super::update::{PolicyUpdate, Sample, UpdateOutcome};
use crate::checkpoint::TrainState;
use crate::metrics::{progress_bar, MetricsWriter};
use crate::model::{Result, TrainError, TrainModel, TrainModelOptions};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::run_dir::RunDir;
use crate::schedule::{warmup_steps, Schedule};
use crate::train_loop::{run_steps, LoopEnd, StepLoop, Steps};

pub use super::config::GrpoConfig;
pub use super::heldout::evaluate;
pub use super::step_metrics::{
    plot_grpo, task_step_metrics, GrpoMetrics, RolloutLog, StepRollouts, TaskStepMetrics,
};

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct GrpoOutcome {
    pub steps: u64,
    pub final_dir: Option<PathBuf>,
    pub history: Vec<GrpoMetrics>,
}

/// Runs (or with `resume`, continues) a GRPO run; see the module docs. With
/// [`GrpoConfig::remote`] it drives its HTTP client on a runtime of its own, so it must not be
/// called from inside an async task.
pub fn run_grpo(cfg: &GrpoConfig, resume: bool) -> Result<GrpoOutcome> {
    crate::model::on_compute_pool(|| run_grpo_on_pool(cfg, resume))
}

fn run_grpo_on_pool(cfg: &GrpoConfig, resume: bool) -> Result<GrpoOutcome> {
    cfg.validate()?;
    let cfg = &cfg.resolved();
    let run = RunDir::create(&cfg.out, cfg.tokenizer_src(), cfg.keep_last)?;
    let source = rollout_source(cfg)?;
    let chat = ChatContext::load(&cfg.model, cfg.tokenizer.as_deref(), cfg.prefill_think)?;
    let (prompts, sampler) = training_prompts(cfg, &chat)?;
    let held_out = HeldOut::new(heldout_prompts(cfg, &chat)?, cfg);
    let device = cfg.device.open()?;
    let (model, reference, mut opt) = load_models(cfg, &device)?;
    let resume_from = if resume { run.resume_point()? } else { None };
    let start = match resume_from {
        Some(point) => {
            point.restore(&model, &mut opt)?;
            point.state.step
        }
        None => 0,
    };
    let resumed = (start > 0).then_some(start);
    let log = MetricsWriter::open(&run.path().join("metrics.jsonl"), resumed)?;
    let rollout_log = if cfg.log_rollouts {
        let path = run.path().join("rollouts.jsonl");
        Some(MetricsWriter::open(&path, resumed)?.without_history())
    } else {
        None
    };
    run.write_config("grpo_config.json", cfg)?;

    let bar = progress_bar(cfg.max_steps, start);
    let mut trainer = GrpoRun {
        cfg,
        schedule: schedule(cfg),
        run,
        chat,
        prompts,
        sampler,
        held_out,
        policy: Policy::new(model),
        reference,
        opt,
        source,
        log,
        rollout_log,
        device,
        steps_done: start,
    };
    if start == 0 {
        trainer.log_starting_point()?;
    }
    let steps = Steps {
        start,
        total: cfg.max_steps,
        save_every: cfg.save_every,
        stop_after: cfg.stop_after_steps,
    };
    let end = run_steps(&mut trainer, &steps, &bar)?;
    trainer.finish(end)
}

/// The training prompts, rendered, and the seeded per-step sampler over them.
fn training_prompts(
    cfg: &GrpoConfig,
    chat: &ChatContext,
) -> Result<(Vec<Prepared>, PromptSampler)> {
    let (mixture, prepared) = chat.load_prompts(&cfg.prompts, &load_options(cfg))?;
    let sampler = PromptSampler::new(&mixture, &cfg.task_weights, cfg.seed)
        .map_err(|e| TrainError::InvalidArgument(format!("{}: {e}", cfg.prompts.display())))?;
    Ok((prepared, sampler))
}

/// The held-out prompts, rendered (none without `eval_prompts`).
fn heldout_prompts(cfg: &GrpoConfig, chat: &ChatContext) -> Result<Vec<Prepared>> {
    match &cfg.eval_prompts {
        Some(path) => Ok(chat.load_prompts(path, &load_options(cfg))?.1),
        None => Ok(Vec::new()),
    }
}

fn load_options(cfg: &GrpoConfig) -> LoadOptions {
    LoadOptions {
        data_dir: cfg.data_dir.clone(),
        ..LoadOptions::default()
    }
}

/// The policy, the frozen reference for the KL when it is a model of its own, and AdamW.
fn load_models(cfg: &GrpoConfig, device: &Device) -> Result<(TrainModel, Option<Model>, AdamW)> {
    let model = TrainModel::load(
        &cfg.model,
        &TrainModelOptions {
            dtype: cfg.dtype.dtype(),
            device: device.clone(),
            lora: cfg.lora.clone(),
            seed: cfg.seed,
        },
    )?;
    // Full fine-tuning needs a frozen copy for the KL; LoRA turns its adapters off instead.
    let reference = if cfg.loss.beta != 0.0 && cfg.lora.is_none() {
        let dir = cfg.ref_model.as_ref().unwrap_or(&cfg.model);
        Some(Model::load(dir, Some(cfg.dtype.dtype()), device)?)
    } else {
        None
    };
    let opt = AdamW::new(
        model.trainable(),
        AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    Ok((model, reference, opt))
}

/// Cosine decay to 0 over the run, after `warmup_ratio` of it.
fn schedule(cfg: &GrpoConfig) -> Schedule {
    let warmup = warmup_steps(cfg.max_steps, 0, cfg.warmup_ratio);
    Schedule::cosine(cfg.lr, warmup, cfg.max_steps)
}

/// A GRPO run between loading and the final save.
struct GrpoRun<'a> {
    cfg: &'a GrpoConfig,
    run: RunDir,
    chat: ChatContext,
    prompts: Vec<Prepared>,
    sampler: PromptSampler,
    held_out: HeldOut,
    policy: Policy,
    reference: Option<Model>,
    opt: AdamW,
    schedule: Schedule,
    source: Box<dyn RolloutSource>,
    log: MetricsWriter<GrpoMetrics>,
    rollout_log: Option<MetricsWriter<StepRollouts>>,
    device: Device,
    steps_done: u64,
}

impl StepLoop for GrpoRun<'_> {
    type Error = TrainError;

    fn step(&mut self, step: u64) -> Result<String> {
        let t0 = Instant::now();
        let lr = self.schedule.lr(step);
        self.opt.set_learning_rate(lr);
        let picks = self.sampler.sample(step, self.cfg.prompts_per_step);
        let rollouts = self.sample_rollouts(step, &picks)?;
        let generation_s = t0.elapsed().as_secs_f64();
        // The prompt (an index into `prompts`) of every rollout.
        let prompt_of: Vec<usize> = rollouts.iter().map(|r| picks[r.prompt]).collect();
        let (rewards, advantages) = self.grade(&rollouts, &prompt_of)?;
        let mut update = self.policy_gradient(&rollouts, &prompt_of, &advantages)?;
        let grad_norm = clip_grad_norm(&mut update.grads, self.cfg.max_grad_norm)?;
        self.opt.step(&update.grads)?;
        self.policy.updated();
        self.steps_done = step + 1;
        self.log_rollouts(&rollouts, &prompt_of, &rewards)?;
        let tasks: Vec<_> = prompt_of
            .iter()
            .map(|&p| self.prompts[p].record.task)
            .collect();
        let mut m = GrpoMetrics::of_step(&StepFacts {
            step: self.steps_done,
            lr,
            rollouts: &rollouts,
            tasks: &tasks,
            rewards: &rewards,
            frac_reward_zero_std: advantages.stats.frac_reward_zero_std,
            update: &update,
            grad_norm,
            generation_s,
            step_s: t0.elapsed().as_secs_f64(),
        });
        if self.held_out.due(self.steps_done) {
            self.evaluate()?.record(&mut m);
        }
        self.log.write(&m)?;
        Ok(m.progress_message())
    }

    fn checkpoint(&mut self, done: u64) -> Result<()> {
        let model = &self.policy.model;
        let state = TrainState {
            step: done,
            rng_state: model.rng_state(),
            data_cursor: Value::Null,
        };
        self.run.save_checkpoint(model, &self.opt, &state)?;
        Ok(())
    }
}

impl GrpoRun<'_> {
    /// The held-out scores of the starting policy, as the step-0 line of the metrics.
    fn log_starting_point(&mut self) -> Result<()> {
        if self.held_out.is_empty() {
            return Ok(());
        }
        let mut m = GrpoMetrics {
            step: 0,
            reward_mean: f64::NAN,
            ..GrpoMetrics::default()
        };
        self.evaluate()?.record(&mut m);
        self.log.write(&m)?;
        Ok(())
    }

    /// `num_generations` completions of each picked prompt from the rollout source.
    fn sample_rollouts(&mut self, step: u64, picks: &[usize]) -> Result<Vec<Rollout>> {
        let prompts: Vec<&[u32]> = picks.iter().map(|&i| &self.prompts[i].ids[..]).collect();
        let request = RolloutRequest {
            prompts: &prompts,
            step,
            seed: step_seed(self.cfg.seed, step, 1),
            n: self.cfg.num_generations,
            temperature: self.cfg.temperature,
            top_p: self.cfg.top_p,
            max_tokens: self.cfg.max_completion_len,
            stop_ids: &self.chat.stop_ids,
            tokenizer: &self.chat.tokenizer,
            prefill_think: self.cfg.prefill_think,
        };
        self.source.rollouts(&mut self.policy, &request)
    }

    /// Every rollout's reward, and the group-relative advantages of them.
    fn grade(
        &self,
        rollouts: &[Rollout],
        prompt_of: &[usize],
    ) -> Result<(RewardSummary, Advantages)> {
        let jobs: Vec<_> = rollouts
            .iter()
            .zip(prompt_of)
            .map(|(r, &p)| self.prompts[p].record.reward_job(r.text.clone()))
            .collect();
        let rewards = compute_rewards(&jobs, &self.cfg.reward);
        let advantages = group_advantages(
            &rewards.totals(),
            self.cfg.num_generations,
            self.cfg.scale_rewards,
        )
        .map_err(|e| TrainError::InvalidArgument(format!("advantages: {e}")))?;
        Ok((rewards, advantages))
    }

    /// The gradient of TRL's loss over the step's completions.
    fn policy_gradient(
        &mut self,
        rollouts: &[Rollout],
        prompt_of: &[usize],
        advantages: &Advantages,
    ) -> Result<UpdateOutcome> {
        let samples: Vec<Sample<'_>> = rollouts
            .iter()
            .zip(prompt_of)
            .zip(&advantages.values)
            .map(|((rollout, &p), &advantage)| Sample {
                prompt: &self.prompts[p].ids,
                rollout,
                advantage,
            })
            .collect();
        let total_tokens = rollouts.iter().map(|r| r.ids.len()).sum();
        let mut update = PolicyUpdate {
            policy: &mut self.policy.model,
            reference: self.reference.as_ref(),
            loss: &self.cfg.loss,
            temperature: f64::from(self.cfg.temperature),
            micro_batch: self.cfg.micro_batch,
            sampler_logprobs_are_old: self.source.logprobs_are_old(),
            grad_checkpoint: self.cfg.grad_checkpoint,
            device: &self.device,
        };
        update.gradient(&samples, total_tokens)
    }

    /// With `log_rollouts`: the step's completions and rewards, to `rollouts.jsonl`.
    fn log_rollouts(
        &mut self,
        rollouts: &[Rollout],
        prompt_of: &[usize],
        rewards: &RewardSummary,
    ) -> Result<()> {
        let Some(log) = self.rollout_log.as_mut() else {
            return Ok(());
        };
        let records: Vec<_> = prompt_of.iter().map(|&p| &self.prompts[p].record).collect();
        let line = StepRollouts::of_step(self.steps_done, rollouts, &records, &rewards.rewards);
        log.write(&line)?;
        Ok(())
    }

    /// Held-out scores of the current policy, from its engine copy (which the next local
    /// rollouts reuse).
    fn evaluate(&mut self) -> Result<HeldOutScores> {
        let engine = self.policy.engine()?;
        self.held_out.score(engine, &self.chat)
    }

    /// After the loop: the final model if every step is done, the curves, and the rollout
    /// source released — last, so that a server failing to unload cannot cost the run its
    /// final outputs.
    fn finish(self, end: LoopEnd) -> Result<GrpoOutcome> {
        let final_dir = match end {
            LoopEnd::Finished => Some(self.run.save_final(&self.policy.model)?),
            LoopEnd::Stopped => None,
        };
        super::step_metrics::plot_grpo(self.log.history(), &self.run.path().join("curves.png"))?;
        self.source.close()?;
        Ok(GrpoOutcome {
            steps: self.steps_done,
            final_dir,
            history: self.log.into_history(),
        })
    }
}
