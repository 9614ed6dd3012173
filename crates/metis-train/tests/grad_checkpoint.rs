//! Activation checkpointing ([`TrainModel::backward_checkpointed`]) against a plain backward
//! through the whole graph: the same loss and the same gradient for every trainable tensor,
//! for full fine-tuning and LoRA with dropout (the recomputation must draw the forward's
//! masks), on padded and packed batches, on the Llama and Qwen2 fixtures and a random Qwen3
//! model, in f64 and f32 (fused CPU kernels) and bf16 (the spelled-out ops the GPU runs);
//! and a short SFT run with and without `grad_checkpoint` giving the same losses.
//!
//! `cargo test --release -p metis-train --test grad_checkpoint`

#[allow(dead_code)] // the GRPO helpers are not needed here
mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use metis_train::lora::{LoraConfig, SplitMix64};
use metis_train::model::{logprobs_from_logits, BatchLayout, TrainModel, TrainModelOptions};
use metis_train::optim::Grads;
use metis_train::sft::{run_sft, SftConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(name)
        .join("f32")
}

/// One batch: ids `[b, s]`, its layout, next-token targets and positive random weights on
/// the positions whose next token is in the same document (0 elsewhere).
struct Batch {
    ids: Tensor,
    layout: BatchLayout,
    targets: Tensor,
    weights: Tensor,
}

impl Batch {
    fn new(rows: &[Vec<u32>], layout: BatchLayout, vocab: u32) -> Batch {
        let (b, s) = (rows.len(), rows[0].len());
        let seg = layout.segments();
        let mut rng = SplitMix64::new(5);
        let (mut targets, mut weights) = (Vec::new(), Vec::new());
        for (r, row) in rows.iter().enumerate() {
            for i in 0..s {
                let (here, next) = (seg[r * s + i], seg.get(r * s + i + 1).copied());
                let same_doc = i + 1 < s && here != 0 && next == Some(here);
                targets.push(if same_doc { row[i + 1] % vocab } else { 0 });
                weights.push(if same_doc { 0.5 + rng.next_f64() } else { 0.0 });
            }
        }
        let ids: Vec<u32> = rows.concat().iter().map(|t| t % vocab).collect();
        let dev = Device::Cpu;
        Batch {
            ids: Tensor::from_vec(ids, (b, s), &dev).unwrap(),
            layout,
            targets: Tensor::from_vec(targets, (b, s), &dev).unwrap(),
            weights: Tensor::from_vec(weights, (b, s), &dev).unwrap(),
        }
    }

    /// Right padding: rows of 7 and 5 tokens.
    fn padded(vocab: u32) -> Batch {
        let rows = [
            vec![1, 17, 250, 3, 99, 42, 7],
            vec![1, 5, 300, 77, 11, 0, 0],
        ];
        let layout = BatchLayout::from_lengths(&[7, 5], 7).unwrap();
        Batch::new(&rows, layout, vocab)
    }

    /// Packing: two documents in the first row (positions restart), one and padding in the
    /// second.
    fn packed(vocab: u32) -> Batch {
        let rows = [
            vec![1, 17, 250, 1, 99, 42, 7, 8],
            vec![1, 5, 300, 77, 11, 64, 0, 0],
        ];
        let layout =
            BatchLayout::packed(&[vec![1, 1, 1, 2, 2, 2, 2, 2], vec![3, 3, 3, 3, 3, 3, 0, 0]])
                .unwrap();
        Batch::new(&rows, layout, vocab)
    }

    /// `-Σ w · log p(target)` at temperature 0.9 from the logits.
    fn loss(&self, logits: &Tensor) -> metis_train::model::Result<Tensor> {
        let lp = logprobs_from_logits(logits, &self.targets, 0.9)?;
        let w = self.weights.to_dtype(lp.dtype())?;
        Ok((lp * w)?.sum_all()?.neg()?)
    }
}

fn load(dir: &Path, dtype: DType, lora: Option<LoraConfig>) -> TrainModel {
    let opts = TrainModelOptions {
        dtype,
        lora,
        seed: 3,
        ..Default::default()
    };
    let m = TrainModel::load(dir, &opts).unwrap();
    // With B = 0 the gradient of A is exactly zero, which would compare trivially.
    let mut rng = SplitMix64::new(99);
    for (name, var) in m.trainable() {
        if name.contains("lora_B") {
            let t = var.as_tensor();
            let v: Vec<f64> = (0..t.elem_count())
                .map(|_| (rng.next_f64() - 0.5) * 0.2)
                .collect();
            let nt = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            var.set(&nt.to_dtype(t.dtype()).unwrap()).unwrap();
        }
    }
    m
}

fn lora(dropout: f64) -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout,
        init_seed: 7,
        ..Default::default()
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    t.to_vec1().unwrap()
}

/// The largest `max |a - b| / max |b|` over the tensors; both must hold every trainable.
fn max_rel_diff(a: &Grads, b: &Grads, model: &TrainModel, what: &str) -> f64 {
    let mut worst = 0f64;
    for (name, _) in model.trainable() {
        let (ga, gb) = (a.get(&name), b.get(&name));
        let (Some(ga), Some(gb)) = (ga, gb) else {
            panic!(
                "{what}: {name} lacks a gradient ({} / {})",
                ga.is_some(),
                gb.is_some()
            );
        };
        assert_eq!(ga.dims(), gb.dims(), "{what}: {name}");
        let (va, vb) = (values(ga), values(gb));
        let scale = vb.iter().fold(0f64, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{what}: {name} has an all-zero gradient");
        let diff = va
            .iter()
            .zip(&vb)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        worst = worst.max(diff / scale);
    }
    worst
}

/// The plain backward (`token_logprobs` then `backward`, as the trainers did before) from the
/// model's current dropout position, then the checkpointed one from the same position;
/// returns (relative loss difference, largest relative gradient difference). Both must
/// advance the dropout stream by one forward.
fn compare(model: &TrainModel, batch: &Batch, what: &str) -> (f64, f64) {
    let start = model.rng_state();
    let logits = model.forward(&batch.ids, &batch.layout, true).unwrap();
    let loss = batch.loss(&logits).unwrap();
    let plain = Grads::from_backward(&loss.backward().unwrap(), &model.trainable());
    drop(logits);
    let after = model.rng_state();
    model.set_rng_state(start);
    let ck = model
        .backward_checkpointed(&batch.ids, &batch.layout, true, |l| {
            Ok((batch.loss(l)?, ()))
        })
        .unwrap();
    assert_eq!(model.rng_state(), after, "{what}: dropout stream position");
    let (l0, l1) = (scalar(&loss), scalar(&ck.loss));
    let loss_rel = (l0 - l1).abs() / l0.abs();
    let grad_rel = max_rel_diff(&ck.grads, &plain, model, what);
    eprintln!(
        "{what}: {} tensors, loss {l0:.6} rel diff {loss_rel:e}, worst gradient rel diff {grad_rel:e}",
        model.trainable().len()
    );
    (loss_rel, grad_rel)
}

/// Every model, both layouts: checkpointed within `bound` of plain.
fn check(dirs: &[(&str, PathBuf)], dtype: DType, lora: Option<LoraConfig>, bound: f64) {
    for (name, dir) in dirs {
        let model = load(dir, dtype, lora.clone());
        let vocab = model.config().vocab_size as u32;
        for (layout, batch) in [
            ("padded", Batch::padded(vocab)),
            ("packed", Batch::packed(vocab)),
        ] {
            let what = format!("{name} {dtype:?} {layout}");
            let (l, g) = compare(&model, &batch, &what);
            assert!(
                l <= bound && g <= bound,
                "{what}: loss {l:e}, gradient {g:e} > {bound:e}"
            );
        }
    }
}

fn architectures(qwen3: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("llama (untied)", fixture("llama31-tiny-v512")),
        ("qwen2 (tied, bias)", fixture("qwen2-tiny-v512")),
        ("qwen3 (q/k norm)", qwen3.to_path_buf()),
    ]
}

#[test]
fn full_fine_tuning_gradients_equal_plain_backward() {
    let dir = tempfile::tempdir().unwrap();
    common::write_qwen3(dir.path());
    let archs = architectures(dir.path());
    // Each layer's graph is the one the plain backward walks, so the gradients are equal bit
    // for bit but for a tied embedding, whose head and embedding shares are summed in another
    // order (measured, relative to the tensor's largest element: 1.1e-16 in f64, 7.3e-8 in
    // f32, 2.0e-3 in bf16, whose ulp at 1 is 2^-7 = 7.8e-3).
    check(&archs, DType::F64, None, 1e-12);
    check(&archs, DType::F32, None, 1e-6);
    // The spelled-out ops (what CUDA runs).
    check(&archs[..2], DType::BF16, None, 1e-2);
}

#[test]
fn lora_with_dropout_gradients_equal_plain_backward() {
    let dir = tempfile::tempdir().unwrap();
    common::write_qwen3(dir.path());
    let archs = architectures(dir.path());
    check(&archs, DType::F64, Some(lora(0.3)), 1e-12);
    check(&archs, DType::F32, Some(lora(0.3)), 1e-6);
    check(&archs[..2], DType::BF16, Some(lora(0.3)), 1e-2);
}

/// The equality above means something: other dropout masks (the next forward's) give a
/// gradient far outside the bound, so a recomputation with the wrong masks would fail.
#[test]
fn other_dropout_masks_fail_the_bound() {
    let model = load(&fixture("llama31-tiny-v512"), DType::F64, Some(lora(0.3)));
    let batch = Batch::padded(model.config().vocab_size as u32);
    let grads = |m: &TrainModel| {
        m.backward_checkpointed(&batch.ids, &batch.layout, true, |l| {
            Ok((batch.loss(l)?, ()))
        })
        .unwrap()
        .grads
    };
    let first = grads(&model);
    let second = grads(&model); // the stream has moved on: new masks
    let rel = max_rel_diff(&second, &first, &model, "next masks");
    eprintln!("next forward's masks: worst gradient rel diff {rel:e}");
    assert!(rel > 1e-3, "{rel:e}");
}

/// `loss_and_grads` without checkpointing is the plain backward; with it, the checkpointed
/// one (the switch the trainers flip).
#[test]
fn loss_and_grads_switches_between_the_two() {
    let model = load(&fixture("qwen2-tiny-v512"), DType::F64, Some(lora(0.2)));
    let batch = Batch::packed(model.config().vocab_size as u32);
    let run = |checkpoint: bool| {
        model.set_rng_state(11);
        model
            .loss_and_grads(&batch.ids, &batch.layout, true, checkpoint, |l| {
                let loss = batch.loss(l)?;
                Ok((loss.clone(), loss.detach()))
            })
            .unwrap()
    };
    let (plain, ck) = (run(false), run(true));
    assert_eq!(scalar(&plain.loss), scalar(&plain.aux));
    assert!((scalar(&plain.loss) - scalar(&ck.loss)).abs() <= 1e-12 * scalar(&plain.loss).abs());
    assert!(max_rel_diff(&ck.grads, &plain.grads, &model, "loss_and_grads") <= 1e-12);
}

/// Per-step losses and gradient norms of `metrics.jsonl`.
fn losses(out: &Path) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A few SFT steps (f32, gradient accumulation, packing; full and LoRA with dropout) with
/// and without `grad_checkpoint`: the same loss and gradient norm at every step, so the same
/// updates.
#[test]
fn sft_runs_agree_with_and_without_grad_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let demo = common::tiny_demo(dir.path(), 2);
    for (what, lora) in [("full", None), ("lora", Some(LoraConfig::with_rank(4)))] {
        let run = |checkpoint: bool| {
            let out = dir.path().join(format!("{what}-{checkpoint}"));
            let mut cfg = SftConfig::new(&demo.model, &demo.sft, &out);
            cfg.max_steps = Some(4);
            cfg.lr = 1e-2;
            cfg.batch_size = 4;
            cfg.grad_accum = 2;
            cfg.max_len = 128;
            cfg.packing = true;
            cfg.lora = lora.clone().map(|l| LoraConfig { dropout: 0.2, ..l });
            cfg.grad_checkpoint = checkpoint;
            run_sft(&cfg, false).unwrap();
            losses(&out)
        };
        let (plain, ck) = (run(false), run(true));
        assert_eq!(plain.len(), 4);
        let mut worst = 0f64;
        for (step, ((l0, n0), (l1, n1))) in plain.iter().zip(&ck).enumerate() {
            let (dl, dn) = ((l0 - l1).abs() / l0.abs(), (n0 - n1).abs() / n0.abs());
            worst = worst.max(dl).max(dn);
            assert!(
                dl <= 1e-5 && dn <= 1e-5,
                "{what} step {}: loss {l0} vs {l1}, grad norm {n0} vs {n1}",
                step + 1
            );
        }
        // The run trains (the steps differ), so equal curves are not a constant.
        assert!(plain[0].0 != plain[3].0);
        eprintln!("sft {what}: losses {plain:?}; worst rel diff {worst:e}");
    }
}
