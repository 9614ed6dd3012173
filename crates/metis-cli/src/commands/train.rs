//! `metis train`: supervised fine-tuning on `<think>` reasoning traces (`sft`), GRPO with
//! verifiable rewards (`grpo`), merging a LoRA adapter into its base model (`merge`) and the
//! built-in CVSS-severity demo task (`demo-task`), over `metis-train`.

use std::path::PathBuf;

use anyhow::Context;
use metis_train::demo::{build, DemoConfig};
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
    #[arg(long, default_value_t = 5)]
    num_generations: usize,
    /// Prompts per optimizer step.
    #[arg(long, default_value_t = 8)]
    prompts_per_step: usize,
    /// KL coefficient (0 = no reference model).
    #[arg(long, default_value_t = 0.02)]
    beta: f64,
    #[arg(long, default_value = "grpo", value_parser = ["grpo", "dr_grpo", "dapo", "bnpo"])]
    loss_type: String,
    #[arg(long, default_value = "group", value_parser = ["group", "batch", "none"])]
    scale_rewards: String,
    /// Lower clip of the importance ratio.
    #[arg(long, default_value_t = 0.2)]
    epsilon: f64,
    /// Upper clip (default: --epsilon).
    #[arg(long)]
    epsilon_high: Option<f64>,
    /// Longest completion (tokens); also the dr_grpo normaliser.
    #[arg(long, default_value_t = 256)]
    max_completion_len: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Size of the format penalty (0 = off).
    #[arg(long, default_value_t = 1.0)]
    format_penalty: f64,
    /// Write every rollout with its prompt id, task and reward to OUT/rollouts.jsonl.
    #[arg(long)]
    log_rollouts: bool,
    /// Per-task mixture weights, e.g. mcq=2,cvss=1,ifeval=1,math=1.
    #[arg(long)]
    task_weights: Option<String>,
    /// Seconds one verifier call may take.
    #[arg(long, default_value_t = 10.0)]
    reward_timeout: f64,
    #[arg(long, default_value_t = 1e-6)]
    lr: f64,
    #[arg(long, default_value_t = 0.0)]
    warmup_ratio: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 100)]
    max_steps: u64,
    /// Completions per forward/backward.
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    /// LoRA rank (enables LoRA; the reference is then the model with its adapters off).
    #[arg(long)]
    lora_rank: Option<usize>,
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f64>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    save_every: u64,
    #[arg(long, default_value_t = 10)]
    eval_every: u64,
    /// Open the think block in the prompt (for templates that do not).
    #[arg(long)]
    prefill_think: bool,
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
    #[arg(long, default_value_t = 0)]
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
    #[arg(long, default_value_t = 3, conflicts_with = "max_steps")]
    epochs: u64,
    /// Total optimizer steps (instead of --epochs).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Peak learning rate (default: 2e-5 full fine-tuning, 2e-4 LoRA).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule after the warmup.
    #[arg(long, default_value = "cosine", value_parser = ["cosine", "constant"])]
    schedule: String,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Maximum tokens per sequence (longer examples are truncated).
    #[arg(long, default_value_t = 2048)]
    max_len: usize,
    /// Warmup as a fraction of the total steps.
    #[arg(long, default_value_t = 0.03)]
    warmup_ratio: f64,
    /// Warmup steps (overrides --warmup-ratio when positive).
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Gradient clipping by global L2 norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    dtype: String,
    /// cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// LoRA rank (enables LoRA; without it every weight is trained).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA alpha (default: 2 × rank).
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f64>,
    #[arg(long, default_value_t = 0.05, requires = "lora_rank")]
    lora_dropout: f64,
    /// LoRA target modules (default: every linear layer).
    #[arg(
        long,
        value_delimiter = ',',
        requires = "lora_rank",
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    lora_targets: Vec<String>,
    /// Checkpoint every N optimizer steps (0 = only at the end).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Pack several examples into each sequence (no attention across them).
    #[arg(long)]
    packing: bool,
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
        TrainCommand::DemoTask(a) => {
            let mut cfg = DemoConfig::new(a.data_dir, a.out);
            cfg.seed = a.seed;
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
        TrainCommand::Merge(a) => {
            merge_adapter(&a.base, &a.adapter, &a.out).with_context(|| {
                format!("merging {} into {}", a.adapter.display(), a.base.display())
            })?;
            println!("merged model written to {}", a.out.display());
            Ok(())
        }
    }
}

fn sft(a: SftArgs) -> anyhow::Result<()> {
    let mut cfg = SftConfig::new(&a.model, &a.data, &a.out);
    cfg.tokenizer_dir = a.tokenizer;
    cfg.epochs = a.epochs;
    cfg.max_steps = a.max_steps;
    cfg.schedule = a
        .schedule
        .parse::<ScheduleKind>()
        .map_err(anyhow::Error::msg)?;
    cfg.batch_size = a.batch_size;
    cfg.grad_accum = a.grad_accum;
    cfg.max_len = a.max_len;
    cfg.warmup_ratio = a.warmup_ratio;
    cfg.warmup_steps = a.warmup_steps;
    cfg.weight_decay = a.weight_decay;
    cfg.max_grad_norm = a.max_grad_norm;
    cfg.seed = a.seed;
    cfg.dtype = a.dtype;
    cfg.device = a.device;
    cfg.save_every = a.save_every;
    cfg.packing = a.packing;
    cfg.lora = a.lora_rank.map(|r| LoraConfig {
        r,
        alpha: a.lora_alpha.unwrap_or(2.0 * r as f64),
        dropout: a.lora_dropout,
        target_modules: a.lora_targets.clone(),
        ..LoraConfig::default()
    });
    cfg.lr = a.lr.unwrap_or(if cfg.lora.is_some() { 2e-4 } else { 2e-5 });
    let s = run_sft(&cfg, a.resume)?;
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

fn grpo(a: GrpoArgs) -> anyhow::Result<()> {
    let mut cfg = GrpoConfig::new(a.model, a.prompts, a.out);
    cfg.data_dir = a.data_dir.clone();
    cfg.log_rollouts = a.log_rollouts;
    cfg.tokenizer = a.tokenizer;
    cfg.ref_model = a.ref_model;
    cfg.eval_prompts = a.eval_prompts;
    cfg.num_generations = a.num_generations;
    cfg.prompts_per_step = a.prompts_per_step;
    cfg.loss.beta = a.beta;
    cfg.loss.loss_type = a
        .loss_type
        .parse::<LossType>()
        .map_err(anyhow::Error::msg)?;
    cfg.loss.epsilon_low = a.epsilon;
    cfg.loss.epsilon_high = a.epsilon_high.unwrap_or(a.epsilon);
    cfg.scale_rewards = a
        .scale_rewards
        .parse::<ScaleRewards>()
        .map_err(anyhow::Error::msg)?;
    cfg.max_completion_len = a.max_completion_len;
    cfg.temperature = a.temperature;
    cfg.top_p = a.top_p;
    cfg.reward.format.penalty = a.format_penalty;
    cfg.reward.timeout =
        std::time::Duration::try_from_secs_f64(a.reward_timeout).context("--reward-timeout")?;
    if let Some(w) = &a.task_weights {
        cfg.task_weights = w.parse::<TaskWeights>().map_err(anyhow::Error::msg)?;
    }
    cfg.lr = a.lr;
    cfg.warmup_ratio = a.warmup_ratio;
    cfg.max_grad_norm = a.max_grad_norm;
    cfg.max_steps = a.max_steps;
    cfg.micro_batch = a.micro_batch;
    cfg.lora = a.lora_rank.map(|r| LoraConfig {
        r,
        alpha: a.lora_alpha.unwrap_or(2.0 * r as f64),
        dropout: 0.0,
        ..LoraConfig::default()
    });
    cfg.seed = a.seed;
    cfg.save_every = a.save_every;
    cfg.eval_every = a.eval_every;
    cfg.prefill_think = a.prefill_think;
    if !a.rollout_urls.is_empty() {
        let mut remote = RemoteRollouts::new(a.rollout_urls);
        remote.api_key = a.rollout_api_key.filter(|k| !k.is_empty());
        remote.adapter_dir = a.rollout_adapter_dir;
        remote.server_adapter_dir = a.rollout_server_adapter_dir;
        remote.use_server_logprobs = a.rollout_server_logprobs;
        cfg.remote = Some(remote);
    }
    let outcome = run_grpo(&cfg, a.resume)?;
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
