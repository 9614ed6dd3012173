//! `metis bench`: how fast and how right the engine is on this machine's device.
//!
//! * `engine`: decode tokens/s at each batch size and prefill tokens/s of one long prompt, for
//!   a model file or a random model of a named shape (`--shape llama-3.1-8b`).
//! * `parity`: a model on `--device` (f32 and bf16) against the same model on the CPU in f32:
//!   the largest logit difference over whole prompts and how far greedy continuations agree.
//! * `init-model`: write a random model of a named shape as a Hugging Face directory, for
//!   timing the trainers (`metis train sft --model DIR`).
//!
//! Measurements go to stdout as one JSON object per line (what `bench/gpu_check.sh` reads);
//! a readable line for each goes to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use metis_engine::loader::load_model;
use metis_engine::model::random::{random_weights, ModelShape};
use metis_engine::model::Model;
use serde_json::json;

use metis_engine::device::ComputeDevice;

use super::model_args::{DtypeArg, PlacementArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// Decode and prefill tokens/s of a model (a file or a random model of a named shape).
    Engine(EngineArgs),
    /// A model on --device against the same model on the CPU in f32.
    Parity(ParityArgs),
    /// Write a random model of a named shape as a Hugging Face model directory.
    InitModel(InitModelArgs),
}

/// The model measured: a file, or random weights of a named shape.
#[derive(clap::Args)]
struct ModelChoice {
    /// A Hugging Face model directory or .gguf file.
    #[arg(long, conflicts_with = "shape", required_unless_present = "shape")]
    model: Option<PathBuf>,
    /// A random model of this shape: llama-3.1-8b, llama-3.2-1b or tiny.
    #[arg(long)]
    shape: Option<ModelShape>,
}

#[derive(clap::Args)]
struct EngineArgs {
    #[command(flatten)]
    model: ModelChoice,
    #[command(flatten)]
    placement: PlacementArgs,
    /// Decode batch sizes (sequences decoded together).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batches: Vec<usize>,
    /// Prompt tokens of each sequence before decoding.
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Decode steps timed (after two untimed ones).
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Tokens of the prompt whose prefill is timed (0 = none).
    #[arg(long, default_value_t = 2048)]
    prefill_len: usize,
}

#[derive(clap::Args)]
struct ParityArgs {
    /// A Hugging Face model directory (f32 or bf16 weights).
    #[arg(long)]
    model: PathBuf,
    /// The device checked against the CPU.
    #[arg(long, default_value = "cuda")]
    device: ComputeDevice,
    /// Lengths of the random prompts.
    #[arg(long, value_delimiter = ',', default_value = "7,41,100")]
    prompt_lens: Vec<usize>,
    /// Greedy tokens generated after each prompt.
    #[arg(long, default_value_t = 20)]
    decode_tokens: usize,
}

#[derive(clap::Args)]
struct InitModelArgs {
    #[arg(long)]
    shape: ModelShape,
    /// Stored dtype of the weights.
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    dtype: DtypeArg,
    /// Where the random values are drawn (a GPU draws an 8B model in seconds).
    #[arg(long, default_value_t = ComputeDevice::Cpu)]
    device: ComputeDevice,
    /// A directory whose tokenizer files (tokenizer.json, tokenizer_config.json) are copied in.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The model directory to create.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Engine(a) => engine(&a),
        BenchCommand::Parity(a) => parity(&a),
        BenchCommand::InitModel(a) => init_model(&a),
    }
}

/// Largest |logit difference| allowed against the CPU's f32, by the device's dtype: f32 differs
/// only in summation order; bf16 by its rounding (the transformers fixtures' own bf16 against
/// f32 differ by up to 0.05).
const F32_BOUND: f32 = 1e-3;
const BF16_BOUND: f32 = 0.1;

fn engine(a: &EngineArgs) -> anyhow::Result<()> {
    let (device, dtype) = a.placement.open()?;
    let (model, name) = load_measured(&a.model, &device, dtype)?;
    let label = json!({
        "impl": "metis",
        "model": name,
        "device": a.placement.device.to_string(),
        "dtype": format!("{:?}", model.dtype()).to_lowercase(),
    });
    for &batch in &a.batches {
        let seconds = time_decode(&model, batch, a.prompt_len, a.decode_tokens)?;
        report(&label, "decode", batch, batch * a.decode_tokens, seconds)?;
    }
    if a.prefill_len > 0 {
        let seconds = time_prefill(&model, a.prefill_len)?;
        report(&label, "prefill", 1, a.prefill_len, seconds)?;
    }
    Ok(())
}

/// The model a bench runs, and the name it is reported under.
fn load_measured(
    choice: &ModelChoice,
    device: &Device,
    dtype: Option<DType>,
) -> anyhow::Result<(Model, String)> {
    match (&choice.model, choice.shape) {
        (Some(path), _) => {
            let loaded = load_model(path, None, device, dtype)
                .with_context(|| format!("loading {}", path.display()))?;
            Ok((loaded.model, path.display().to_string()))
        }
        (None, Some(shape)) => {
            eprintln!("drawing a random {shape} model on {device:?}");
            Ok((Model::random(shape, dtype, device)?, shape.to_string()))
        }
        (None, None) => bail!("give --model or --shape"),
    }
}

/// Seconds of `steps` greedy decode steps of `batch` sequences after a `prompt_len` prompt
/// each (two untimed steps first, so lazy initialisation is not timed).
fn time_decode(
    model: &Model,
    batch: usize,
    prompt_len: usize,
    steps: usize,
) -> anyhow::Result<f64> {
    let device = model.device();
    let mut cache = model.new_cache(batch);
    let prompt = random_ids(batch, prompt_len.max(1), model.config().vocab_size, device)?;
    let mut next = greedy(&model.forward_last(&prompt, &mut cache)?)?;
    for _ in 0..2 {
        next = greedy(&model.forward_last(&next, &mut cache)?)?;
    }
    device.synchronize()?;
    let started = Instant::now();
    for _ in 0..steps {
        next = greedy(&model.forward_last(&next, &mut cache)?)?;
    }
    device.synchronize()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds of one `len`-token prefill (after an untimed 16-token one).
fn time_prefill(model: &Model, len: usize) -> anyhow::Result<f64> {
    let device = model.device();
    let vocab = model.config().vocab_size;
    model.forward_last(&random_ids(1, 16, vocab, device)?, &mut model.new_cache(1))?;
    let prompt = random_ids(1, len, vocab, device)?;
    device.synchronize()?;
    let started = Instant::now();
    model.forward_last(&prompt, &mut model.new_cache(1))?;
    device.synchronize()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Token ids [batch, len], uniform over the vocabulary, on `device`.
fn random_ids(batch: usize, len: usize, vocab: usize, device: &Device) -> anyhow::Result<Tensor> {
    let u = Tensor::rand(0f32, vocab as f32 - 1.0, (batch, len), &Device::Cpu)?;
    Ok(u.floor()?.to_dtype(DType::U32)?.to_device(device)?)
}

/// The argmax of each row of logits [batch, vocab], as the next input [batch, 1].
fn greedy(logits: &Tensor) -> anyhow::Result<Tensor> {
    Ok(logits.argmax_keepdim(1)?.to_dtype(DType::U32)?)
}

fn report(
    label: &serde_json::Value,
    bench: &str,
    batch: usize,
    tokens: usize,
    seconds: f64,
) -> anyhow::Result<()> {
    let mut line = label.clone();
    let fields = json!({
        "bench": bench,
        "batch": batch,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens as f64 / seconds,
    });
    merge(&mut line, fields);
    eprintln!(
        "{bench:>7} batch {batch:>3}: {tokens} tokens in {seconds:.3} s = {:.1} tok/s",
        tokens as f64 / seconds
    );
    emit(&line)
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn emit(line: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

fn parity(a: &ParityArgs) -> anyhow::Result<()> {
    let load = |device: &Device, dtype| {
        load_model(&a.model, None, device, Some(dtype))
            .map(|l| l.model)
            .with_context(|| format!("loading {} on {device:?}", a.model.display()))
    };
    let reference = load(&Device::Cpu, DType::F32)?;
    let device = a.device.open()?;
    let vocab = reference.config().vocab_size;
    // The CPU's outputs once per prompt; each dtype on the device is compared with them.
    let expected = a
        .prompt_lens
        .iter()
        .map(|&n| {
            Outputs::of(
                &reference,
                &random_ids(1, n.max(1), vocab, &Device::Cpu)?,
                a.decode_tokens,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut failed = 0;
    for (dtype, bound) in [(DType::F32, F32_BOUND), (DType::BF16, BF16_BOUND)] {
        let model = load(&device, dtype)?;
        for want in &expected {
            let got = Outputs::of(&model, &want.prompt, a.decode_tokens)?;
            let max_abs_diff = (&want.logits - &got.logits)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            let greedy_agree = want
                .greedy
                .iter()
                .zip(&got.greedy)
                .take_while(|(a, b)| a == b)
                .count();
            let pass = max_abs_diff <= bound;
            failed += usize::from(!pass);
            let prompt_len = want.prompt.dim(1)?;
            eprintln!(
                "{dtype:?} prompt {prompt_len:>4}: max |Δlogit| {max_abs_diff:.2e} (bound {bound:.0e}) {}; greedy agrees {greedy_agree}/{}",
                if pass { "ok" } else { "FAIL" },
                a.decode_tokens
            );
            emit(&json!({
                "impl": "metis",
                "bench": "parity",
                "model": a.model.display().to_string(),
                "device": a.device.to_string(),
                "dtype": format!("{dtype:?}").to_lowercase(),
                "prompt_len": prompt_len,
                "max_abs_logit_diff": max_abs_diff,
                "bound": bound,
                "greedy_agree": greedy_agree,
                "greedy_len": a.decode_tokens,
                "pass": pass,
            }))?;
        }
    }
    if failed > 0 {
        bail!("{failed} parity check(s) over their bound");
    }
    Ok(())
}

/// What a parity check compares of one model on one prompt.
struct Outputs {
    /// [1, len] u32 on the CPU.
    prompt: Tensor,
    /// Logits of every prompt position, f32 on the CPU.
    logits: Tensor,
    /// Greedy tokens after the prompt, decoded one at a time through the KV cache.
    greedy: Vec<u32>,
}

impl Outputs {
    fn of(model: &Model, prompt: &Tensor, decode_tokens: usize) -> anyhow::Result<Outputs> {
        let ids = prompt.to_device(model.device())?;
        let logits = model
            .forward(&ids, &mut model.new_cache(1))?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        let mut cache = model.new_cache(1);
        let mut next = greedy(&model.forward_last(&ids, &mut cache)?)?;
        let mut tokens = Vec::with_capacity(decode_tokens);
        for _ in 0..decode_tokens {
            tokens.push(next.flatten_all()?.to_vec1::<u32>()?[0]);
            next = greedy(&model.forward_last(&next, &mut cache)?)?;
        }
        Ok(Outputs {
            prompt: prompt.clone(),
            logits,
            greedy: tokens,
        })
    }
}

fn init_model(a: &InitModelArgs) -> anyhow::Result<()> {
    if a.out.exists() {
        bail!("{} exists; give a new directory", a.out.display());
    }
    let device = a.device.open()?;
    let dtype = DType::from(a.dtype);
    let partial = a.out.with_extension("partial");
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    write_random_model(a.shape, dtype, &device, &partial)?;
    if let Some(dir) = &a.tokenizer {
        copy_tokenizer(dir, &partial)?;
    }
    std::fs::rename(&partial, &a.out).with_context(|| format!("creating {}", a.out.display()))?;
    eprintln!("wrote a random {} model to {}", a.shape, a.out.display());
    Ok(())
}

/// `config.json` and `model.safetensors` of a random `shape` model in `dir`.
fn write_random_model(
    shape: ModelShape,
    dtype: DType,
    device: &Device,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut config = shape.config_json();
    config["torch_dtype"] = json!(match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let weights = random_weights(&shape.config()?, dtype, device)?
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?)))
        .collect::<anyhow::Result<std::collections::HashMap<_, _>>>()?;
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    Ok(())
}

fn copy_tokenizer(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut copied = 0;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!(
            "{}: no tokenizer.json or tokenizer_config.json",
            from.display()
        );
    }
    Ok(())
}
