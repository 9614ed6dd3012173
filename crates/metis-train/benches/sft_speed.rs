//! SFT training speed: tokens/s of one full fine-tuning step (forward, masked mean token
//! cross-entropy, backward, grad-norm clip, AdamW) on the tiny Llama fixture
//! (`llama31-tiny-v512`: vocab 512, hidden 64, 3 layers), batch 4 × 128 tokens, f32 on CPU.
//!
//! With `METIS_TORCH_PYTHON=/path/to/python` (torch + transformers installed) it also runs
//! `tools/reference/sft_speed_torch.py`, the same step in PyTorch, and prints the ratio.
//!
//! ```sh
//! METIS_TORCH_PYTHON=/tmp/pyref/bin/python cargo bench --release -p metis-train --bench sft_speed
//! ```
//! Options by environment: `SFT_BENCH_MODEL` (model directory), `SFT_BENCH_STEPS` (steps per
//! timed round, 30), `SFT_BENCH_ROUNDS` (5). Rounds alternate Metis and PyTorch; the printed
//! ratio is of the two medians.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use metis_train::data::{collate, Sequence, SplitMix64};
use metis_train::model::{on_compute_pool, BatchLayout, TrainModel, TrainModelOptions};
use metis_train::optim::{clip_grad_norm, AdamW, AdamWConfig, Grads};

// The allocator the `metis` binary uses, set up as it does (`allocator::keep_freed_memory`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 4;
const SEQ: usize = 128;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    metis_train::allocator::keep_freed_memory();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model_dir = std::env::var_os("SFT_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/fixtures/llama31-tiny-v512/f32"));
    if !model_dir.join("config.json").is_file() {
        eprintln!("sft_speed: no model at {} — skipped", model_dir.display());
        return Ok(());
    }
    let steps: usize = std::env::var("SFT_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let rounds: usize = std::env::var("SFT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);

    let model = TrainModel::load(&model_dir, &TrainModelOptions::default())?;
    let vocab = model.config().vocab_size as u64;
    let params = model.trainable();
    let mut opt = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 1e-4,
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
    )?;
    // Random ids; loss on the second half of each sequence (the "assistant" part).
    let mut rng = SplitMix64::new(0);
    let seqs: Vec<Sequence> = (0..BATCH)
        .map(|_| Sequence {
            input_ids: (0..SEQ).map(|_| rng.below(vocab) as u32).collect(),
            loss_mask: (0..SEQ).map(|t| t >= SEQ / 2).collect(),
            segment_ids: vec![1; SEQ],
            position_ids: (0..SEQ as u32).collect(),
        })
        .collect();
    let refs: Vec<&Sequence> = seqs.iter().collect();
    let batch = collate(&refs, 0);
    let dev = Device::Cpu;
    let ids = Tensor::from_vec(batch.input_ids.clone(), (BATCH, SEQ), &dev)?;
    let layout = BatchLayout::dense(BATCH, SEQ);
    let (targets, weights) = batch.targets();
    let n_loss = weights.iter().filter(|&&w| w > 0.0).count();
    let targets = Tensor::from_vec(targets, (BATCH, SEQ), &dev)?;
    let weights = Tensor::from_vec(weights, (BATCH, SEQ), &dev)?;

    let mut step_inner = || -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
        let lp = model.token_logprobs(&ids, &layout, &targets, 1.0, true)?;
        let loss = ((lp * &weights)?.sum_all()?.neg()? / n_loss as f64)?;
        let mut grads = Grads::from_backward(&loss.backward()?, &params);
        clip_grad_norm(&mut grads, 1.0)?;
        opt.step(&grads)?;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    };
    // As `run_sft` runs its steps.
    let mut step = || on_compute_pool(&mut step_inner);
    for _ in 0..2 {
        step()?;
    }
    let torch_python = std::env::var_os("METIS_TORCH_PYTHON");
    // Rounds alternate Metis and PyTorch so that both see the same machine (a busy neighbour
    // slows one round of each, not one side); the medians are compared.
    let mut ours_ms = Vec::new();
    let mut torch_ms = Vec::new();
    let mut torch_version = String::new();
    let mut loss = 0.0;
    for round in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..steps {
            loss = step()?;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
        ours_ms.push(ms);
        let mut line = format!("round {round}: metis {ms:.2} ms/step");
        if let Some(py) = &torch_python {
            let (ms, version) = torch_step_ms(py, &root, &model_dir, steps)?;
            torch_ms.push(ms);
            torch_version = version;
            line.push_str(&format!(", torch {ms:.2} ms/step"));
        }
        println!("{line}");
    }
    let ours = median(&ours_ms);
    println!(
        "metis-train SFT step ({}, batch {BATCH} x {SEQ}, full FT, f32 CPU): median {:.2} ms/step, {:.0} tokens/s (loss {loss:.3})",
        model_dir.display(),
        ours,
        (BATCH * SEQ) as f64 / ours * 1e3,
    );
    if torch_python.is_some() {
        let torch = median(&torch_ms);
        println!(
            "PyTorch {torch_version} (same step, same threads): median {:.2} ms/step, {:.0} tokens/s",
            torch,
            (BATCH * SEQ) as f64 / torch * 1e3
        );
        println!("ratio metis/torch (tokens/s): {:.2}x", torch / ours);
    } else {
        println!("(set METIS_TORCH_PYTHON to a python with torch + transformers to compare)");
    }
    Ok(())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One run of `tools/reference/sft_speed_torch.py`: its ms/step and torch version.
fn torch_step_ms(
    py: &std::ffi::OsStr,
    root: &Path,
    model_dir: &Path,
    steps: usize,
) -> Result<(f64, String), Box<dyn std::error::Error + Send + Sync>> {
    let script = root.join("tools/reference/sft_speed_torch.py");
    let out = std::process::Command::new(py)
        .arg(&script)
        .arg("--model")
        .arg(model_dir)
        .args(["--batch", &BATCH.to_string(), "--seq", &SEQ.to_string()])
        .args(["--steps", &steps.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "torch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line)?;
    let ms = v["step_ms"].as_f64().ok_or("torch reference: no step_ms")?;
    Ok((ms, v["torch"].as_str().unwrap_or("?").to_string()))
}
