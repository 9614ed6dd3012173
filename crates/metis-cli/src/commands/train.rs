//! `metis train`: supervised fine-tuning on `<think>` reasoning traces (`sft`), GRPO with
//! verifiable rewards (`grpo`), merging a LoRA adapter into its base model (`merge`) and the
//! built-in CVSS-severity demo task (`demo-task`), over `metis-train`.
//!
//! A thin layer, split as ripgrep splits its arguments: the clap structs are the low-level
//! flags, typed (clap `ValueEnum`s and `FromStr` types of `metis-train`) and with their
//! defaults read from the library configs' `Default` (`SftConfig`, `GrpoConfig`,
//! `LoraConfig`, `DemoConfig`), so no default lives here; `config()` turns them into the
//! high-level config a run takes.

use std::path::PathBuf;

use anyhow::Context;
use metis_train::demo::{build, DemoConfig};
use metis_train::device::{TrainDevice, TrainDtype};
use metis_train::grpo::trainer::{run_grpo, GrpoConfig};
use metis_train::grpo::{LossType, RemoteRollouts, ScaleRewards, TaskWeights};
use metis_train::lora::LoraConfig;
use metis_train::schedule::ScheduleKind;
use metis_train::sft::{merge_adapter, run_sft, SftConfig};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TrainCommand,
}

#[derive(clap::Subcommand)]
enum TrainCommand {
    /// Stage 1: supervised fine-tuning on chat JSONL with reasoning traces (assistant-only
    /// loss, cosine schedule, full or LoRA, exact resume).
    Sft(Box<SftArgs>),
    /// Stage 2: GRPO with verifier rewards and the format penalty (KL to the reference,
    /// grpo/dr_grpo/dapo/bnpo aggregation, full or LoRA, exact resume).
    Grpo(Box<GrpoArgs>),
    /// Merge a PEFT LoRA adapter into its base model (writes a full HF model directory).
    Merge(MergeArgs),
    /// Write the built-in CVSS v3.1 severity task (tiny random-init model with its own
    /// tokenizer, SFT data, GRPO prompts, held-out prompts) from the CVSS test vectors.
    DemoTask(DemoArgs),
}

#[derive(clap::Args)]
struct GrpoArgs {
    /// Policy to train (usually the SFT checkpoint): HF directory.
    #[arg(long)]
    model: PathBuf,
    /// Tokenizer directory when apart from --model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Reference model for the KL penalty (default: --model).
    #[arg(long)]
    ref_model: Option<PathBuf>,
    /// Prompt mixture: JSONL, {"messages": [...], "task": "mcq|cwe|cvss|attack|ifeval|math",
    /// "gold": ..., "verifier": {...}} (`metis eval export-prompts BENCH` writes one from any
    /// benchmark).
    #[arg(long)]
    prompts: PathBuf,
    /// Data directory for the verifiers' catalogs (CWE hierarchy, ATT&CK revoked ids), the
    /// same one `metis eval` reads.
    #[arg(long, env = "METIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Held-out prompts (same format), scored greedily every --eval-every steps.
    #[arg(long)]
    eval_prompts: Option<PathBuf>,
    /// Output directory (metrics.jsonl, curves.png, checkpoint-STEP/, final/).
    #[arg(long)]
    out: PathBuf,
    /// Completions per prompt (the group).
    #[arg(long, default_value_t = GrpoConfig::default().num_generations)]
    num_generations: usize,
    /// Prompts per optimizer step.
    #[arg(long, default_value_t = GrpoConfig::default().prompts_per_step)]
    prompts_per_step: usize,
    /// KL coefficient (0 = no reference model).
    #[arg(long, default_value_t = GrpoConfig::default().loss.beta)]
    beta: f64,
    #[arg(long, value_enum, default_value_t = GrpoConfig::default().loss.loss_type)]
    loss_type: LossType,
    #[arg(long, value_enum, default_value_t = GrpoConfig::default().scale_rewards)]
    scale_rewards: ScaleRewards,
    /// Lower clip of the importance ratio.
    #[arg(long, default_value_t = GrpoConfig::default().loss.epsilon_low)]
    epsilon: f64,
    /// Upper clip (default: --epsilon).
    #[arg(long)]
    epsilon_high: Option<f64>,
    /// Longest completion (tokens); also the dr_grpo normaliser.
    #[arg(long, default_value_t = GrpoConfig::default().max_completion_len)]
    max_completion_len: usize,
    #[arg(long, default_value_t = GrpoConfig::default().temperature)]
    temperature: f32,
    #[arg(long, default_value_t = GrpoConfig::default().top_p)]
    top_p: f32,
    /// Size of the format penalty (0 = off).
    #[arg(long, default_value_t = GrpoConfig::default().reward.format.penalty)]
    format_penalty: f64,
    /// Write every rollout with its prompt id, task and reward to OUT/rollouts.jsonl.
    #[arg(long)]
    log_rollouts: bool,
    /// Per-task mixture weights, e.g. mcq=2,cvss=1,ifeval=1,math=1.
    #[arg(long)]
    task_weights: Option<String>,
    /// Seconds one verifier call may take.
    #[arg(long, default_value_t = GrpoConfig::default().reward.timeout.as_secs_f64())]
    reward_timeout: f64,
    #[arg(long, default_value_t = GrpoConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = GrpoConfig::default().warmup_ratio)]
    warmup_ratio: f64,
    #[arg(long, default_value_t = GrpoConfig::default().max_grad_norm)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = GrpoConfig::default().max_steps)]
    max_steps: u64,
    /// Completions per forward/backward.
    #[arg(long, default_value_t = GrpoConfig::default().micro_batch)]
    micro_batch: usize,
    /// LoRA rank (enables LoRA; the reference is then the model with its adapters off).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA alpha (default: 2 × rank).
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f64>,
    #[arg(long, default_value_t = GrpoConfig::default().seed)]
    seed: u64,
    /// Checkpoint every N optimizer steps (0 = only at the end).
    #[arg(long, default_value_t = GrpoConfig::default().save_every)]
    save_every: u64,
    /// Checkpoints kept, the newest ones (0 = all).
    #[arg(long, default_value_t = GrpoConfig::default().keep_last)]
    keep_last: usize,
    #[arg(long, default_value_t = GrpoConfig::default().eval_every)]
    eval_every: u64,
    /// Compute dtype of the policy and the reference model (default: bf16 on a GPU, f32 on
    /// the CPU).
    #[arg(long, value_enum)]
    dtype: Option<TrainDtype>,
    /// cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature).
    #[arg(long, default_value_t = GrpoConfig::default().device)]
    device: TrainDevice,
    /// Open the think block in the prompt (for templates that do not).
    #[arg(long)]
    prefill_think: bool,
    /// Activation checkpointing per decoder layer: recompute each layer in the backward
    /// instead of keeping every layer's activations (less memory, about one more forward of
    /// compute; the same gradients).
    #[arg(long)]
    grad_checkpoint: bool,
    /// Sample rollouts from this OpenAI-compatible server (base URL with the API prefix,
    /// e.g. http://10.0.0.5:8000/v1) instead of the local engine; repeat for a fleet of
    /// replicas. The current LoRA adapter is hot-loaded on every replica each step (vLLM:
    /// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, --enable-lora). Needs --lora-rank.
    #[arg(long = "rollout-url", value_name = "URL")]
    rollout_urls: Vec<String>,
    /// API key of the rollout servers.
    #[arg(long, env = "METIS_ROLLOUT_API_KEY", hide_env_values = true)]
    rollout_api_key: Option<String>,
    /// Where the per-step adapters are written for the servers (default: OUT/rollout-adapters).
    #[arg(long, requires = "rollout_urls")]
    rollout_adapter_dir: Option<PathBuf>,
    /// The adapter directory as the servers see it, when they mount it elsewhere.
    #[arg(long, requires = "rollout_urls")]
    rollout_server_adapter_dir: Option<PathBuf>,
    /// Use the servers' log-probabilities as the loss's old log-probabilities (needs
    /// temperature-scaled ones: vLLM --logprobs-mode processed_logprobs). Default: the
    /// policy's own.
    #[arg(long, requires = "rollout_urls")]
    rollout_server_logprobs: bool,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Data directory holding cvss/cvss-test-vectors.tsv (default: $METIS_DATA_DIR).
    #[arg(long, env = "METIS_DATA_DIR")]
    data_dir: PathBuf,
    /// Output directory (init/, sft.jsonl, prompts.jsonl, heldout.jsonl).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = DemoConfig::default().seed)]
    seed: u64,
}

#[derive(clap::Args)]
struct SftArgs {
    /// Base model: Hugging Face directory (config.json + safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Tokenizer directory (tokenizer.json, tokenizer_config.json) when apart from --model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Training data: JSONL, one {"messages": [...]} conversation per line (TRL format).
    #[arg(long)]
    data: PathBuf,
    /// Output directory (metrics.jsonl, curves.png, checkpoint-STEP/, final/).
    #[arg(long)]
    out: PathBuf,
    /// Passes over the data.
    #[arg(long, default_value_t = SftConfig::default().epochs, conflicts_with = "max_steps")]
    epochs: u64,
    /// Total optimizer steps (instead of --epochs).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Peak learning rate (default: 2e-5 full fine-tuning, 2e-4 LoRA).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule after the warmup.
    #[arg(long, value_enum, default_value_t = SftConfig::default().schedule)]
    schedule: ScheduleKind,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = SftConfig::default().batch_size)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = SftConfig::default().grad_accum)]
    grad_accum: usize,
    /// Maximum tokens per sequence (longer examples are truncated).
    #[arg(long, default_value_t = SftConfig::default().max_len)]
    max_len: usize,
    /// Warmup as a fraction of the total steps.
    #[arg(long, default_value_t = SftConfig::default().warmup_ratio)]
    warmup_ratio: f64,
    /// Warmup steps (overrides --warmup-ratio when positive).
    #[arg(long, default_value_t = SftConfig::default().warmup_steps)]
    warmup_steps: u64,
    #[arg(long, default_value_t = SftConfig::default().weight_decay)]
    weight_decay: f64,
    /// Gradient clipping by global L2 norm (0 = off).
    #[arg(long, default_value_t = SftConfig::default().max_grad_norm)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = SftConfig::default().seed)]
    seed: u64,
    /// Compute dtype (default: bf16 on a GPU, f32 on the CPU).
    #[arg(long, value_enum)]
    dtype: Option<TrainDtype>,
    /// cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature).
    #[arg(long, default_value_t = SftConfig::default().device)]
    device: TrainDevice,
    /// LoRA rank (enables LoRA; without it every weight is trained).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA alpha (default: 2 × rank).
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f64>,
    #[arg(long, default_value_t = LoraConfig::default().dropout, requires = "lora_rank")]
    lora_dropout: f64,
    /// LoRA target modules (default: every linear layer).
    #[arg(
        long,
        value_delimiter = ',',
        requires = "lora_rank",
        default_values_t = LoraConfig::default().target_modules
    )]
    lora_targets: Vec<String>,
    /// Checkpoint every N optimizer steps (0 = only at the end).
    #[arg(long, default_value_t = SftConfig::default().save_every)]
    save_every: u64,
    /// Checkpoints kept, the newest ones (0 = all).
    #[arg(long, default_value_t = SftConfig::default().keep_last)]
    keep_last: usize,
    /// Pack several examples into each sequence (no attention across them).
    #[arg(long)]
    packing: bool,
    /// Activation checkpointing per decoder layer: recompute each layer in the backward
    /// instead of keeping every layer's activations (less memory, about one more forward of
    /// compute; the same gradients).
    #[arg(long)]
    grad_checkpoint: bool,
    /// Continue from the latest checkpoint in --out (same flags as the interrupted run).
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// Base model directory.
    #[arg(long)]
    base: PathBuf,
    /// PEFT adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    adapter: PathBuf,
    /// Output directory for the merged full model.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        TrainCommand::Sft(a) => sft(*a),
        TrainCommand::Grpo(a) => grpo(*a),
        TrainCommand::DemoTask(a) => demo_task(a),
        TrainCommand::Merge(a) => {
            merge_adapter(&a.base, &a.adapter, &a.out).with_context(|| {
                format!("merging {} into {}", a.adapter.display(), a.base.display())
            })?;
            println!("merged model written to {}", a.out.display());
            Ok(())
        }
    }
}

fn demo_task(a: DemoArgs) -> anyhow::Result<()> {
    let cfg = DemoConfig {
        seed: a.seed,
        ..DemoConfig::new(a.data_dir, a.out)
    };
    let p = build(&cfg)?;
    println!(
        "demo task: {} training / {} held-out vectors\n  model   {}\n  sft     {}\n  prompts {}\n  heldout {}",
        p.train_examples,
        p.heldout_examples,
        p.model.display(),
        p.sft.display(),
        p.prompts.display(),
        p.heldout.display()
    );
    Ok(())
}

impl SftArgs {
    /// The run's configuration: the flags over [`SftConfig::default`].
    fn config(self) -> SftConfig {
        let lora = self.lora_rank.map(|r| LoraConfig {
            alpha: self.lora_alpha.unwrap_or(LoraConfig::with_rank(r).alpha),
            dropout: self.lora_dropout,
            target_modules: self.lora_targets,
            ..LoraConfig::with_rank(r)
        });
        SftConfig {
            tokenizer_dir: self.tokenizer,
            epochs: self.epochs,
            max_steps: self.max_steps,
            lr: self.lr.unwrap_or(SftConfig::default_lr(lora.is_some())),
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            warmup_ratio: self.warmup_ratio,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            max_len: self.max_len,
            packing: self.packing,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
            dtype: self.dtype.unwrap_or(TrainDtype::default_for(self.device)),
            device: self.device,
            lora,
            save_every: self.save_every,
            keep_last: self.keep_last,
            grad_checkpoint: self.grad_checkpoint,
            ..SftConfig::new(&self.model, &self.data, &self.out)
        }
    }
}

fn sft(a: SftArgs) -> anyhow::Result<()> {
    let resume = a.resume;
    let cfg = a.config();
    let s = run_sft(&cfg, resume)?;
    let resumed = s
        .resumed_from
        .map(|st| format!(" (resumed from step {st})"))
        .unwrap_or_default();
    println!(
        "trained {} steps{resumed}: loss {:.4} → {:.4}; {} sequences ({} truncated, {} dropped)",
        s.steps, s.first_loss, s.last_loss, s.n_sequences, s.truncated, s.dropped
    );
    if let Some(d) = &s.final_dir {
        println!("final model: {}", d.display());
    }
    println!("metrics: {}", cfg.out_dir.join("metrics.jsonl").display());
    Ok(())
}

impl GrpoArgs {
    /// The run's configuration: the flags over [`GrpoConfig::default`].
    fn config(self) -> anyhow::Result<GrpoConfig> {
        let mut cfg = GrpoConfig {
            tokenizer: self.tokenizer,
            ref_model: self.ref_model,
            log_rollouts: self.log_rollouts,
            data_dir: self.data_dir,
            eval_prompts: self.eval_prompts,
            num_generations: self.num_generations,
            prompts_per_step: self.prompts_per_step,
            max_steps: self.max_steps,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            max_grad_norm: self.max_grad_norm,
            temperature: self.temperature,
            top_p: self.top_p,
            max_completion_len: self.max_completion_len,
            scale_rewards: self.scale_rewards,
            lora: self
                .lora_rank
                .map(|r| GrpoConfig::lora_config(r, self.lora_alpha)),
            seed: self.seed,
            save_every: self.save_every,
            keep_last: self.keep_last,
            eval_every: self.eval_every,
            micro_batch: self.micro_batch,
            prefill_think: self.prefill_think,
            grad_checkpoint: self.grad_checkpoint,
            dtype: self.dtype.unwrap_or(TrainDtype::default_for(self.device)),
            device: self.device,
            ..GrpoConfig::new(self.model, self.prompts, self.out)
        };
        cfg.loss.beta = self.beta;
        cfg.loss.loss_type = self.loss_type;
        cfg.loss.epsilon_low = self.epsilon;
        cfg.loss.epsilon_high = self.epsilon_high.unwrap_or(self.epsilon);
        cfg.reward.format.penalty = self.format_penalty;
        cfg.reward.timeout = std::time::Duration::try_from_secs_f64(self.reward_timeout)
            .context("--reward-timeout")?;
        if let Some(w) = &self.task_weights {
            cfg.task_weights = w.parse::<TaskWeights>().map_err(anyhow::Error::msg)?;
        }
        if !self.rollout_urls.is_empty() {
            cfg.remote = Some(RemoteRollouts {
                api_key: self.rollout_api_key.filter(|k| !k.is_empty()),
                adapter_dir: self.rollout_adapter_dir,
                server_adapter_dir: self.rollout_server_adapter_dir,
                use_server_logprobs: self.rollout_server_logprobs,
                ..RemoteRollouts::new(self.rollout_urls)
            });
        }
        Ok(cfg)
    }
}

fn grpo(a: GrpoArgs) -> anyhow::Result<()> {
    let resume = a.resume;
    let cfg = a.config()?;
    let outcome = run_grpo(&cfg, resume)?;
    let last = outcome.history.last();
    let held: Vec<f64> = outcome
        .history
        .iter()
        .filter_map(|m| m.heldout_accuracy)
        .collect();
    println!(
        "trained {} steps; last reward mean {:.3}, format-violation rate {:.3}{}",
        outcome.steps,
        last.map_or(f64::NAN, |m| m.reward_mean),
        last.map_or(f64::NAN, |m| m.format_penalty_rate),
        match (held.first(), held.last()) {
            (Some(a), Some(b)) => format!("; held-out accuracy {a:.3} → {b:.3}"),
            _ => String::new(),
        }
    );
    if let Some(d) = &outcome.final_dir {
        println!("final model: {}", d.display());
    }
    println!("metrics: {}", cfg.out.join("metrics.jsonl").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// `metis train ...` as the binary parses it.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: TrainCommand,
    }

    fn parse(args: &[&str]) -> TrainCommand {
        let argv = std::iter::once("train").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().command
    }

    #[test]
    fn the_flags_are_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn grpo_without_flags_is_the_library_default() {
        let TrainCommand::Grpo(a) =
            parse(&["grpo", "--model", "m", "--prompts", "p", "--out", "o"])
        else {
            panic!("not grpo")
        };
        let cfg = a.config().unwrap();
        let lib = GrpoConfig::new("m".into(), "p".into(), "o".into());
        assert_eq!(
            serde_json::to_value(&cfg).unwrap(),
            serde_json::to_value(&lib).unwrap()
        );
        // What `metis train grpo` has always used.
        assert_eq!(cfg.seed, 42);
    }

    #[test]
    fn sft_without_flags_is_the_library_default() {
        let TrainCommand::Sft(a) = parse(&["sft", "--model", "m", "--data", "d", "--out", "o"])
        else {
            panic!("not sft")
        };
        let lib = SftConfig::new("m".as_ref(), "d".as_ref(), "o".as_ref());
        assert_eq!(a.config(), lib);
    }

    #[test]
    fn typed_flags_take_the_old_spellings() {
        let TrainCommand::Grpo(a) = parse(&[
            "grpo",
            "--model",
            "m",
            "--prompts",
            "p",
            "--out",
            "o",
            "--loss-type",
            "dr_grpo",
            "--scale-rewards",
            "none",
            "--dtype",
            "bf16",
            "--device",
            "cuda:1",
            "--lora-rank",
            "8",
            "--grad-checkpoint",
        ]) else {
            panic!("not grpo")
        };
        let cfg = a.config().unwrap();
        assert_eq!(cfg.loss.loss_type, LossType::DrGrpo);
        assert_eq!(cfg.scale_rewards, ScaleRewards::None);
        assert_eq!(
            (cfg.dtype, cfg.device),
            (TrainDtype::Bf16, TrainDevice::Cuda(1))
        );
        assert!(cfg.grad_checkpoint);
        let lora = cfg.lora.unwrap();
        assert_eq!((lora.r, lora.alpha, lora.dropout), (8, 16.0, 0.0));

        let TrainCommand::Sft(a) = parse(&[
            "sft",
            "--model",
            "m",
            "--data",
            "d",
            "--out",
            "o",
            "--schedule",
            "constant",
            "--lora-rank",
            "4",
            "--lora-targets",
            "q_proj,v_proj",
            "--grad-checkpoint",
        ]) else {
            panic!("not sft")
        };
        let cfg = a.config();
        assert_eq!(cfg.schedule, ScheduleKind::Constant);
        // LoRA without --lr: the LoRA learning rate.
        assert_eq!(cfg.lr, SftConfig::default_lr(true));
        assert_eq!(cfg.lora.unwrap().target_modules, ["q_proj", "v_proj"]);
        assert!(cfg.grad_checkpoint);
        assert_eq!((cfg.dtype, cfg.device), (TrainDtype::F32, TrainDevice::Cpu));

        // Without --dtype a GPU run trains in bf16.
        let sft = ["sft", "--model", "m", "--data", "d", "--out", "o"];
        let TrainCommand::Sft(a) = parse(&[&sft[..], &["--device", "cuda"]].concat()) else {
            panic!("not sft")
        };
        assert_eq!(a.config().dtype, TrainDtype::Bf16);
        let TrainCommand::Sft(a) =
            parse(&[&sft[..], &["--device", "cuda", "--dtype", "f32"]].concat())
        else {
            panic!("not sft")
        };
        assert_eq!(a.config().dtype, TrainDtype::F32);

        for bad in [
            &[
                "grpo",
                "--model",
                "m",
                "--prompts",
                "p",
                "--out",
                "o",
                "--loss-type",
                "ppo",
            ][..],
            &[
                "sft", "--model", "m", "--data", "d", "--out", "o", "--device", "tpu",
            ],
            &[
                "sft", "--model", "m", "--data", "d", "--out", "o", "--dtype", "f16",
            ],
        ] {
            let argv = std::iter::once("train").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
