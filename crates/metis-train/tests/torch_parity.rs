//! Parity of the training path with HF transformers / PyTorch / PEFT (no torch needed here:
//! the references are files).
//!
//! * Forward logits of [`TrainModel`] vs the fixtures' `reference_f32.safetensors` (every
//!   position, tolerance 1e-4; bf16 vs `reference_bf16` within 0.1), also for padded and packed
//!   batches and explicit positions (rope at 20000).
//! * One optimizer step vs `tests/fixtures/adamw_step*.{json,safetensors}` written by
//!   `tools/reference/adamw_step.py` (torch AdamW + clip_grad_norm_, and PEFT LoRA): loss and
//!   grad norm within 1e-5, updated weights within 1e-5 abs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use metis_train::lora::LoraConfig;
use metis_train::model::{BatchLayout, TrainModel, TrainModelOptions};
use metis_train::optim::{clip_grad_norm, AdamW, AdamWConfig, Grads};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

fn own_fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn prompts(fixture: &str) -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(fixtures().join(fixture).join("reference.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (p["name"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn load(dir: &Path, dtype: DType, lora: Option<LoraConfig>) -> TrainModel {
    let opts = TrainModelOptions {
        dtype,
        lora,
        ..Default::default()
    };
    TrainModel::load(dir, &opts).unwrap()
}

fn single(model: &TrainModel, ids: &[u32]) -> Tensor {
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&t, &BatchLayout::dense(1, ids.len()), false)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

#[test]
fn logits_match_transformers_f32() {
    for fixture in ["llama31-tiny-v512", "qwen2-tiny-v512"] {
        let reference = candle_core::safetensors::load(
            fixtures().join(fixture).join("reference_f32.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let dir = fixtures().join(fixture).join("f32");
        // Full fine-tuning and LoRA (B = 0 at init: identical to the base).
        for lora in [None, Some(LoraConfig::default())] {
            let is_lora = lora.is_some();
            let model = load(&dir, DType::F32, lora);
            for (name, ids) in prompts(fixture) {
                let got = single(&model, &ids);
                let d = max_abs_diff(&got, &reference[&format!("{name}.logits")]);
                eprintln!("{fixture} {name} lora={is_lora}: max abs diff {d:e}");
                assert!(d <= 1e-4, "{fixture} {name}: {d}");
            }
        }
    }
}

#[test]
fn logits_at_explicit_positions() {
    let fixture = "llama31-tiny-v512";
    let reference = candle_core::safetensors::load(
        fixtures().join(fixture).join("reference_f32.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let model = load(&fixtures().join(fixture).join("f32"), DType::F32, None);
    let (_, ids) = prompts(fixture).into_iter().next().unwrap();
    let n = ids.len();
    let layout = BatchLayout::dense(1, n)
        .with_positions(&[(20000..20000 + n as u32).collect()])
        .unwrap();
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let got = model
        .forward(&t, &layout, false)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let d = max_abs_diff(&got, &reference["p0.pos_offset_20000.logits"]);
    eprintln!("p0 at positions 20000..: max abs diff {d:e}");
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn logits_match_transformers_bf16() {
    for fixture in ["llama31-tiny-v512", "qwen2-tiny-v512"] {
        let reference = candle_core::safetensors::load(
            fixtures().join(fixture).join("reference_bf16.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let model = load(&fixtures().join(fixture).join("bf16"), DType::BF16, None);
        for (name, ids) in prompts(fixture) {
            let got = single(&model, &ids);
            let d = max_abs_diff(&got, &reference[&format!("{name}.logits")]);
            eprintln!("{fixture} {name} bf16: max abs diff {d:e}");
            assert!(d <= 0.1, "{fixture} {name}: {d}");
        }
    }
}

/// Right-padded, left-padded and packed batches give each sequence the logits it has alone.
#[test]
fn padded_and_packed_batches_match_single_sequences() {
    let fixture = "qwen2-tiny-v512";
    let reference = candle_core::safetensors::load(
        fixtures().join(fixture).join("reference_f32.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let model = load(&fixtures().join(fixture).join("f32"), DType::F32, None);
    let ps = prompts(fixture);
    let (p0, p1) = (&ps[0].1, &ps[1].1); // 41 and 8 ids
    let s = p0.len();
    let dev = Device::Cpu;
    let pad = |ids: &[u32], left: bool| -> Vec<u32> {
        let fill = vec![0u32; s - ids.len()];
        if left {
            [fill, ids.to_vec()].concat()
        } else {
            [ids.to_vec(), fill].concat()
        }
    };
    let r0 = &reference["p0.logits"];
    let r1 = &reference["p1.logits"];
    // Right padding.
    let ids = Tensor::from_vec([p0.clone(), pad(p1, false)].concat(), (2, s), &dev).unwrap();
    let out = model
        .forward(
            &ids,
            &BatchLayout::from_lengths(&[s, p1.len()], s).unwrap(),
            false,
        )
        .unwrap();
    let d0 = max_abs_diff(&out.i(0).unwrap(), r0);
    let d1 = max_abs_diff(&out.i((1, 0..p1.len())).unwrap(), r1);
    eprintln!("right padded: {d0:e} {d1:e}");
    assert!(d0 <= 1e-4 && d1 <= 1e-4);
    // Left padding with an HF attention mask.
    let mask: Vec<Vec<u32>> = vec![vec![1; s], pad(&vec![1; p1.len()], true)];
    let ids = Tensor::from_vec([p0.clone(), pad(p1, true)].concat(), (2, s), &dev).unwrap();
    let out = model
        .forward(
            &ids,
            &BatchLayout::from_attention_mask(&mask).unwrap(),
            false,
        )
        .unwrap();
    let d1 = max_abs_diff(&out.i((1, s - p1.len()..s)).unwrap(), r1);
    eprintln!("left padded: {d1:e}");
    assert!(d1 <= 1e-4);
    // Packed: p1 then the first 20 tokens of p0 then padding, in one row.
    let n0 = 20;
    let row: Vec<u32> = [p1.clone(), p0[..n0].to_vec(), vec![0; 4]].concat();
    let seg: Vec<u32> = [vec![1; p1.len()], vec![2; n0], vec![0; 4]].concat();
    let len = row.len();
    let ids = Tensor::from_vec(row, (1, len), &dev).unwrap();
    let out = model
        .forward(&ids, &BatchLayout::packed(&[seg]).unwrap(), false)
        .unwrap();
    let d1 = max_abs_diff(&out.i((0, 0..p1.len())).unwrap(), r1);
    let d0 = max_abs_diff(
        &out.i((0, p1.len()..p1.len() + n0)).unwrap(),
        &r0.i(0..n0).unwrap(),
    );
    eprintln!("packed: {d1:e} {d0:e}");
    assert!(d0 <= 1e-4 && d1 <= 1e-4);
    // token_logprobs agrees with a log-softmax of the logits.
    let ids = Tensor::new(p1.as_slice(), &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let targets = Tensor::new(
        &p1[1..].iter().chain([&3u32]).copied().collect::<Vec<_>>()[..],
        &dev,
    )
    .unwrap()
    .unsqueeze(0)
    .unwrap();
    let layout = BatchLayout::dense(1, p1.len());
    let lp = model
        .token_logprobs(&ids, &layout, &targets, 0.7, false)
        .unwrap();
    let logits = (model.forward(&ids, &layout, false).unwrap() / 0.7).unwrap();
    let full = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1).unwrap();
    let want = full
        .gather(&targets.unsqueeze(2).unwrap(), 2)
        .unwrap()
        .squeeze(2)
        .unwrap();
    assert!(max_abs_diff(&lp, &want) < 1e-5);
}

struct StepRef {
    json: Value,
    tensors: HashMap<String, Tensor>,
}

fn step_ref(kind: &str) -> StepRef {
    let text = std::fs::read_to_string(own_fixture("adamw_step.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let file = if kind == "full" {
        "adamw_step.safetensors"
    } else {
        "adamw_step_lora.safetensors"
    };
    let tensors = candle_core::safetensors::load(own_fixture(file), &Device::Cpu).unwrap();
    StepRef { json, tensors }
}

/// The batch of adamw_step.py: ids, layout, targets, loss mask.
fn step_batch(json: &Value) -> (Tensor, BatchLayout, Tensor, Tensor) {
    let b = &json["batch"];
    let rows: Vec<Vec<u32>> = b["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let lens: Vec<usize> = b["lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let s = rows[0].len();
    let mut targets = Vec::new();
    let mut mask = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let skip = b["prompt_masked"][r.to_string()].as_u64().unwrap_or(0) as usize;
        for i in 0..s {
            let real = i + 1 < lens[r];
            targets.push(if real { row[i + 1] } else { 0 });
            mask.push(if real && i >= skip { 1f32 } else { 0.0 });
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(rows.concat(), (rows.len(), s), &dev).unwrap(),
        BatchLayout::from_lengths(&lens, s).unwrap(),
        Tensor::from_vec(targets, (rows.len(), s), &dev).unwrap(),
        Tensor::from_vec(mask, (rows.len(), s), &dev).unwrap(),
    )
}

/// One step as adamw_step.py; returns (loss, pre-clip grad norm).
fn one_step(model: &TrainModel, json: &Value, no_decay_norms: bool) -> (f64, f64) {
    let (ids, layout, targets, mask) = step_batch(json);
    let lp = model
        .token_logprobs(&ids, &layout, &targets, 1.0, true)
        .unwrap();
    let loss = ((lp * &mask).unwrap().sum_all().unwrap().neg().unwrap()
        / mask.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64)
        .unwrap();
    let params = model.trainable();
    let mut grads = Grads::from_backward(&loss.backward().unwrap(), &params);
    assert_eq!(grads.len(), params.len());
    let o = &json["optimizer"];
    let norm = clip_grad_norm(&mut grads, o["clip"].as_f64().unwrap()).unwrap();
    let cfg = AdamWConfig {
        lr: o["lr"].as_f64().unwrap(),
        beta1: o["betas"][0].as_f64().unwrap(),
        beta2: o["betas"][1].as_f64().unwrap(),
        eps: o["eps"].as_f64().unwrap(),
        weight_decay: o["weight_decay"].as_f64().unwrap(),
        no_decay_norms_and_biases: no_decay_norms,
    };
    let mut opt = AdamW::new(params, cfg).unwrap();
    opt.step(&grads).unwrap();
    (loss.to_scalar::<f32>().unwrap() as f64, norm)
}

fn check_checksums(model: &TrainModel, sums: &Value, what: &str) {
    let mut worst = 0f64;
    for (name, var) in model.trainable() {
        let want = &sums[&name];
        assert!(!want.is_null(), "{what}: no reference for {name}");
        let t = var.as_tensor().to_dtype(DType::F64).unwrap();
        let sum = t.sum_all().unwrap().to_scalar::<f64>().unwrap();
        let sumsq = t
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let n = t.elem_count() as f64;
        let (ws, wq) = (
            want["sum"].as_f64().unwrap(),
            want["sumsq"].as_f64().unwrap(),
        );
        // Per-element abs error ≤ 1e-5 bounds |Δsum| ≤ 1e-5 n.
        let e1 = (sum - ws).abs() / n;
        let e2 = (sumsq - wq).abs() / wq.max(1e-12);
        worst = worst.max(e1);
        assert!(
            e1 <= 1e-5 && e2 <= 1e-5,
            "{what}: {name}: sum {sum} vs {ws}, sumsq {sumsq} vs {wq}"
        );
    }
    eprintln!("{what}: checksums of all trainable tensors agree (worst mean abs diff {worst:e})");
}

#[test]
fn adamw_step_matches_torch_full() {
    let r = step_ref("full");
    let model = load(&fixtures().join("llama31-tiny-v512/f32"), DType::F32, None);
    let (loss, norm) = one_step(&model, &r.json, true);
    let full = &r.json["full"];
    let (wl, wn) = (
        full["loss"].as_f64().unwrap(),
        full["grad_norm"].as_f64().unwrap(),
    );
    eprintln!(
        "full: loss {loss} vs {wl} (diff {:e}); grad norm {norm} vs {wn} (diff {:e})",
        (loss - wl).abs(),
        (norm - wn).abs()
    );
    assert!((loss - wl).abs() <= 1e-5);
    assert!((norm - wn).abs() <= 1e-5 * wn.max(1.0));
    let params: HashMap<String, _> = model.trainable().into_iter().collect();
    let mut worst = 0f32;
    for (key, want) in &r.tensors {
        let name = key.strip_prefix("updated.").unwrap();
        let d = max_abs_diff(params[name].as_tensor(), want);
        worst = worst.max(d);
        assert!(d <= 1e-5, "{name}: {d}");
    }
    eprintln!(
        "full: {} updated tensors, max abs diff {worst:e}",
        r.tensors.len()
    );
    check_checksums(&model, &full["updated"], "full");
}

#[test]
fn adamw_step_matches_torch_lora() {
    let r = step_ref("lora");
    let cfg = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        ..Default::default()
    };
    let model = load(
        &fixtures().join("llama31-tiny-v512/f32"),
        DType::F32,
        Some(cfg),
    );
    for (name, var) in model.trainable() {
        var.set(&r.tensors[&format!("init.{name}")]).unwrap();
    }
    let (loss, norm) = one_step(&model, &r.json, true);
    let lora = &r.json["lora"];
    let (wl, wn) = (
        lora["loss"].as_f64().unwrap(),
        lora["grad_norm"].as_f64().unwrap(),
    );
    eprintln!(
        "lora: loss {loss} vs {wl} (diff {:e}); grad norm {norm} vs {wn} (diff {:e})",
        (loss - wl).abs(),
        (norm - wn).abs()
    );
    assert!((loss - wl).abs() <= 1e-5);
    assert!((norm - wn).abs() <= 1e-5 * wn.max(1.0));
    let mut worst = 0f32;
    for (name, var) in model.trainable() {
        let d = max_abs_diff(var.as_tensor(), &r.tensors[&format!("updated.{name}")]);
        worst = worst.max(d);
        assert!(d <= 1e-5, "{name}: {d}");
    }
    eprintln!(
        "lora: {} adapter tensors, max abs diff {worst:e}",
        model.trainable().len()
    );
    check_checksums(&model, &lora["updated"], "lora");
}
