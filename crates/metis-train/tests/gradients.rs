//! Gradient tests of the training forward pass:
//! (a) every trainable tensor gets a finite, non-zero gradient (full fine-tuning and LoRA) on
//!     the Llama and Qwen2 fixtures and a random Qwen3-style model (q/k norm, attention bias);
//! (b) central finite differences in f64 agree with autograd for every parameter kind.

#[allow(dead_code)] // only the Qwen3 writer is needed here
mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use metis_train::lora::{LoraConfig, SplitMix64};
use metis_train::model::{BatchLayout, TrainModel, TrainModelOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .join(name)
    .join("f32")
}

fn lora_cfg() -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        init_seed: 7,
        ..Default::default()
    }
}

/// Give every LoRA B a non-zero value (with B = 0 the gradient of A is exactly zero).
fn randomize_lora_b(model: &TrainModel) {
    let mut rng = SplitMix64::new(99);
    for (name, var) in model.trainable() {
        if name.contains("lora_B") {
            let t = var.as_tensor();
            let n = t.elem_count();
            let v: Vec<f64> = (0..n).map(|_| (rng.next_f64() - 0.5) * 0.2).collect();
            let nt = Tensor::from_vec(v, t.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap();
            var.set(&nt).unwrap();
        }
    }
}

/// A fixed padded batch: two rows (7 and 5 tokens), ids < vocab; targets = next token.
fn batch(vocab: u32) -> (Tensor, BatchLayout, Tensor, Tensor) {
    let rows: [Vec<u32>; 2] = [
        vec![1, 17, 250 % vocab, 3, 99 % vocab, 42, 7],
        vec![1, 5, 300 % vocab, 77 % vocab, 11, 0, 0],
    ];
    let lens = [7usize, 5];
    let s = 7;
    let ids: Vec<u32> = rows.concat();
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    let mut rng = SplitMix64::new(5);
    for (r, row) in rows.iter().enumerate() {
        for i in 0..s {
            let real_next = i + 1 < lens[r];
            targets.push(if real_next { row[i + 1] } else { 0 });
            // Random positive weights so the loss is generic (not a plain sum).
            weights.push(if real_next { 0.5 + rng.next_f64() } else { 0.0 });
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(ids, (2, s), &dev).unwrap(),
        BatchLayout::from_lengths(&lens, s).unwrap(),
        Tensor::from_vec(targets, (2, s), &dev).unwrap(),
        Tensor::from_vec(weights, (2, s), &dev).unwrap(),
    )
}

fn loss(model: &TrainModel, train: bool) -> Tensor {
    let (ids, layout, targets, w) = batch(model.config().vocab_size as u32);
    let lp = model
        .token_logprobs(&ids, &layout, &targets, 0.9, train)
        .unwrap();
    let w = w.to_dtype(lp.dtype()).unwrap();
    (lp * w).unwrap().sum_all().unwrap().neg().unwrap()
}

fn check_all_grads(model: &TrainModel, what: &str) {
    let l = loss(model, true);
    let grads = l.backward().unwrap();
    let params = model.trainable();
    assert!(!params.is_empty());
    for (name, var) in &params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: {name} has no gradient"));
        let g = g.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        let v: Vec<f64> = g.to_vec1().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{what}: {name} non-finite grad"
        );
        let max = v.iter().fold(0f64, |a, &b| a.max(b.abs()));
        assert!(max > 0.0, "{what}: {name} has an all-zero gradient");
    }
    eprintln!(
        "{what}: {} trainable tensors, all with finite non-zero gradients",
        params.len()
    );
}

fn opts(dtype: DType, lora: Option<LoraConfig>) -> TrainModelOptions {
    TrainModelOptions {
        dtype,
        lora,
        ..Default::default()
    }
}

#[test]
fn every_param_gets_a_gradient_full() {
    let llama = TrainModel::load(&fixture("llama31-tiny-v512"), &opts(DType::F32, None)).unwrap();
    // embed + 3 layers * 9 + norm + lm_head
    assert_eq!(llama.trainable().len(), 1 + 3 * 9 + 2);
    check_all_grads(&llama, "llama full");
    let qwen2 = TrainModel::load(&fixture("qwen2-tiny-v512"), &opts(DType::F32, None)).unwrap();
    // tied: embed + 2 layers * (9 + 3 biases) + norm
    assert_eq!(qwen2.trainable().len(), 1 + 2 * 12 + 1);
    check_all_grads(&qwen2, "qwen2 full");
    let dir = tempfile::tempdir().unwrap();
    common::write_qwen3(dir.path());
    let qwen3 = TrainModel::load(dir.path(), &opts(DType::F32, None)).unwrap();
    // embed + 2 layers * (9 + 4 biases + 2 qk norms) + norm + lm_head
    assert_eq!(qwen3.trainable().len(), 1 + 2 * 15 + 2);
    check_all_grads(&qwen3, "qwen3 full");
}

#[test]
fn every_param_gets_a_gradient_lora() {
    let mut cfg = lora_cfg();
    cfg.dropout = 0.1;
    let dir = tempfile::tempdir().unwrap();
    common::write_qwen3(dir.path());
    for (what, path) in [
        ("llama lora", fixture("llama31-tiny-v512")),
        ("qwen2 lora", fixture("qwen2-tiny-v512")),
        ("qwen3 lora", dir.path().to_path_buf()),
    ] {
        let m = TrainModel::load(&path, &opts(DType::F32, Some(cfg.clone()))).unwrap();
        assert_eq!(m.trainable().len(), m.config().num_hidden_layers * 7 * 2);
        // With B = 0 only B gets a gradient; make B non-zero so A does too.
        randomize_lora_b(&m);
        check_all_grads(&m, what);
    }
}

#[test]
fn bf16_model_trains() {
    let m = TrainModel::load(&fixture("llama31-tiny-v512"), &opts(DType::BF16, None)).unwrap();
    check_all_grads(&m, "llama full bf16");
    let m = TrainModel::load(
        &fixture("qwen2-tiny-v512"),
        &opts(DType::BF16, Some(lora_cfg())),
    )
    .unwrap();
    randomize_lora_b(&m);
    check_all_grads(&m, "qwen2 lora bf16");
}

/// Central finite differences in f64 for a few coordinates of every trainable tensor.
fn finite_difference(model: &TrainModel, what: &str) {
    let l = loss(model, false);
    let grads = l.backward().unwrap();
    let h = 1e-6;
    let mut rng = SplitMix64::new(1234);
    let mut worst = 0f64;
    let mut checked = 0;
    for (name, var) in model.trainable() {
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no grad"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let orig = var.as_tensor().copy().unwrap();
        let dims = orig.dims().to_vec();
        let base: Vec<f64> = orig.flatten_all().unwrap().to_vec1().unwrap();
        // The two largest-gradient coordinates and one random one.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().partial_cmp(&g[a].abs()).unwrap());
        let mut coords = vec![idx[0]];
        if g.len() > 1 {
            coords.push(idx[1]);
        }
        coords.push((rng.next_u64() % g.len() as u64) as usize);
        for &c in &coords {
            let eval = |delta: f64| -> f64 {
                let mut v = base.clone();
                v[c] += delta;
                var.set(&Tensor::from_vec(v, dims.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                loss(model, false).to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&orig).unwrap();
            let an = g[c];
            let err = (fd - an).abs() / (fd.abs().max(an.abs()).max(1e-3));
            worst = worst.max(err);
            checked += 1;
            assert!(
                err <= 1e-4,
                "{what}: {name}[{c}]: autograd {an:e} vs finite difference {fd:e} (rel err {err:e})"
            );
        }
    }
    eprintln!("{what}: {checked} coordinates, worst relative error {worst:e}");
}

#[test]
fn finite_differences_full_llama() {
    let m = TrainModel::load(&fixture("llama31-tiny-v512"), &opts(DType::F64, None)).unwrap();
    finite_difference(&m, "llama full f64");
}

#[test]
fn finite_differences_full_qwen2_tied_bias() {
    let m = TrainModel::load(&fixture("qwen2-tiny-v512"), &opts(DType::F64, None)).unwrap();
    finite_difference(&m, "qwen2 full f64");
}

#[test]
fn finite_differences_full_qwen3_qk_norm() {
    let dir = tempfile::tempdir().unwrap();
    common::write_qwen3(dir.path());
    let m = TrainModel::load(dir.path(), &opts(DType::F64, None)).unwrap();
    finite_difference(&m, "qwen3 full f64");
}

#[test]
fn finite_differences_lora() {
    let m = TrainModel::load(
        &fixture("llama31-tiny-v512"),
        &opts(DType::F64, Some(lora_cfg())),
    )
    .unwrap();
    randomize_lora_b(&m);
    finite_difference(&m, "llama lora f64");
    let m = TrainModel::load(
        &fixture("qwen2-tiny-v512"),
        &opts(DType::F64, Some(lora_cfg())),
    )
    .unwrap();
    randomize_lora_b(&m);
    finite_difference(&m, "qwen2 lora f64");
}

#[test]
fn lora_dropout_is_seeded_and_train_only() {
    let cfg = LoraConfig {
        dropout: 0.3,
        ..lora_cfg()
    };
    let load = || {
        let m = TrainModel::load(
            &fixture("llama31-tiny-v512"),
            &opts(DType::F32, Some(cfg.clone())),
        )
        .unwrap();
        randomize_lora_b(&m);
        m
    };
    let (a, b) = (load(), load());
    let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap();
    // Same seed → same masks; successive training forwards use different masks.
    let (a1, b1) = (scalar(loss(&a, true)), scalar(loss(&b, true)));
    assert_eq!(a1, b1);
    let a2 = scalar(loss(&a, true));
    assert_ne!(a1, a2);
    // Resuming the stream reproduces the masks.
    b.set_rng_state(1);
    assert_eq!(scalar(loss(&b, true)), a2);
    // Eval forwards: no dropout, deterministic, stream untouched.
    let s = a.rng_state();
    assert_eq!(scalar(loss(&a, false)), scalar(loss(&a, false)));
    assert_eq!(a.rng_state(), s);
}
