//! Checkpoints: full HF save → `metis_engine` load gives the training model's logits; PEFT
//! adapter save → load round trip; `merge_lora` → engine load equals base + adapter; the
//! training state (trainable tensors, AdamW moments, step, dropout RNG, data cursor) resumes
//! bit-exactly.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use metis_engine::model::Model;
use metis_train::checkpoint::{
    load_train_state, merge_lora, read_adapter_config, save_train_state, TrainState,
};
use metis_train::lora::{LoraConfig, SplitMix64};
use metis_train::model::{BatchLayout, TrainModel, TrainModelOptions};
use metis_train::optim::{clip_grad_norm, AdamW, AdamWConfig, Grads};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .join(name)
    .join("f32")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn opts(lora: Option<LoraConfig>) -> TrainModelOptions {
    TrainModelOptions {
        lora,
        seed: 11,
        ..Default::default()
    }
}

fn lora_cfg(dropout: f64) -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 16.0,
        dropout,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        init_seed: 3,
    }
}

const PROMPT: [u32; 12] = [1, 40, 7, 300, 12, 99, 5, 250, 3, 77, 18, 2];

fn train_logits(model: &TrainModel) -> Tensor {
    let ids = Tensor::new(&PROMPT[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&ids, &BatchLayout::dense(1, PROMPT.len()), false)
        .unwrap()
}

fn engine_logits(dir: &Path) -> Tensor {
    let model = Model::load(dir, None, &Device::Cpu).unwrap();
    let ids = Tensor::new(&PROMPT[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut cache = model.new_cache(1);
    model.forward(&ids, &mut cache).unwrap()
}

/// A padded micro-batch drawn from `seed`: (ids, layout, targets, mask).
fn micro_batch(seed: u64, vocab: u32) -> (Tensor, BatchLayout, Tensor, Tensor) {
    let mut rng = SplitMix64::new(seed);
    let s = 10;
    let lens = [10usize, 6];
    let mut ids = Vec::new();
    let mut targets = Vec::new();
    let mut mask = Vec::new();
    for &l in &lens {
        let row: Vec<u32> = (0..s)
            .map(|i| {
                if i < l {
                    (rng.next_u64() % vocab as u64) as u32
                } else {
                    0
                }
            })
            .collect();
        for i in 0..s {
            let real = i + 1 < l;
            targets.push(if real { row[i + 1] } else { 0 });
            mask.push(if real { 1f32 } else { 0.0 });
        }
        ids.extend(row);
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(ids, (2, s), &dev).unwrap(),
        BatchLayout::from_lengths(&lens, s).unwrap(),
        Tensor::from_vec(targets, (2, s), &dev).unwrap(),
        Tensor::from_vec(mask, (2, s), &dev).unwrap(),
    )
}

/// One optimizer step on micro-batch `seed` (train mode: LoRA dropout active).
fn train_step(model: &TrainModel, opt: &mut AdamW, seed: u64) {
    let (ids, layout, targets, mask) = micro_batch(seed, model.config().vocab_size as u32);
    let lp = model
        .token_logprobs(&ids, &layout, &targets, 1.0, true)
        .unwrap();
    let loss = ((lp * &mask).unwrap().sum_all().unwrap().neg().unwrap() / 14.0).unwrap();
    let mut grads = Grads::from_backward(&loss.backward().unwrap(), &model.trainable());
    clip_grad_norm(&mut grads, 1.0).unwrap();
    opt.step(&grads).unwrap();
}

fn adamw(model: &TrainModel) -> AdamW {
    let cfg = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.1,
        ..Default::default()
    };
    AdamW::new(model.trainable(), cfg).unwrap()
}

fn snapshot(model: &TrainModel) -> Vec<(String, Vec<f32>)> {
    model
        .trainable()
        .into_iter()
        .map(|(n, v)| {
            let t = v
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap();
            (n, t.to_vec1().unwrap())
        })
        .collect()
}

#[test]
fn full_save_loads_in_engine() {
    for name in ["llama31-tiny-v512", "qwen2-tiny-v512"] {
        let model = TrainModel::load(&fixture(name), &opts(None)).unwrap();
        let mut opt = adamw(&model);
        train_step(&model, &mut opt, 1);
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let d = max_abs_diff(&train_logits(&model), &engine_logits(out.path()));
        eprintln!("{name}: trained model vs engine on the saved dir: max abs diff {d:e}");
        assert!(d <= 1e-5, "{d}");
        // The saved dir differs from the base (the step did something) and reloads exactly.
        assert!(max_abs_diff(&train_logits(&model), &engine_logits(&fixture(name))) > 1e-3);
        let again = TrainModel::load(out.path(), &opts(None)).unwrap();
        assert_eq!(snapshot(&again), snapshot(&model));
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["torch_dtype"], "float32");
        assert!(out.path().join("generation_config.json").is_file());
        let st = candle_core::safetensors::load(out.path().join("model.safetensors"), &Device::Cpu)
            .unwrap();
        assert_eq!(st.contains_key("lm_head.weight"), name.starts_with("llama"));
    }
}

#[test]
fn adapter_save_load_and_merge() {
    let base = fixture("llama31-tiny-v512");
    let model = TrainModel::load(&base, &opts(Some(lora_cfg(0.1)))).unwrap();
    let mut opt = adamw(&model);
    for s in 0..3 {
        train_step(&model, &mut opt, s);
    }
    let with_adapter = train_logits(&model);
    let mut m2 = TrainModel::load(&base, &opts(Some(lora_cfg(0.1)))).unwrap();
    assert!(
        max_abs_diff(&with_adapter, &train_logits(&m2)) > 1e-3,
        "training changed nothing"
    );

    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    model.save(&adapter).unwrap();
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 16.0);
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["fan_in_fan_out"], false);
    assert_eq!(
        cfg["target_modules"],
        json!(["q_proj", "v_proj", "down_proj"])
    );
    let st =
        candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let a = &st["base_model.model.model.layers.2.mlp.down_proj.lora_A.weight"];
    assert_eq!(a.dims(), &[4, 128]);
    assert_eq!(
        st["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"].dims(),
        &[32, 4]
    );
    assert_eq!(st.len(), 3 * 3 * 2);
    let rc = read_adapter_config(&adapter).unwrap();
    assert_eq!((rc.r, rc.alpha, rc.dropout), (4, 16.0, 0.1));

    // Round trip.
    let loaded = TrainModel::load_with_adapter(&base, &adapter, &opts(None)).unwrap();
    assert_eq!(snapshot(&loaded), snapshot(&model));
    assert_eq!(max_abs_diff(&train_logits(&loaded), &with_adapter), 0.0);

    // Adapter off = the base model exactly.
    m2.set_adapter_enabled(false);
    let mut loaded = loaded;
    loaded.set_adapter_enabled(false);
    assert_eq!(
        max_abs_diff(&train_logits(&loaded), &train_logits(&m2)),
        0.0
    );
    let d = max_abs_diff(&train_logits(&loaded), &engine_logits(&base));
    assert!(d <= 1e-5, "adapter-off vs engine base: {d}");

    // Merge → engine.
    let merged = dir.path().join("merged");
    merge_lora(&base, &adapter, &merged).unwrap();
    let d = max_abs_diff(&engine_logits(&merged), &with_adapter);
    eprintln!("merged dir in the engine vs base+adapter: max abs diff {d:e}");
    assert!(d <= 1e-4, "{d}");
    // save_merged writes the same weights.
    let merged2 = dir.path().join("merged2");
    model.save_merged(&merged2).unwrap();
    let d = max_abs_diff(&engine_logits(&merged2), &with_adapter);
    assert!(d <= 1e-4, "{d}");
}

fn resume_is_exact(lora: Option<LoraConfig>, what: &str) {
    let base = fixture("qwen2-tiny-v512");
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    // Reference run: 4 steps straight through.
    let model = TrainModel::load(&base, &opts(lora.clone())).unwrap();
    let mut opt = adamw(&model);
    for s in 0..2 {
        train_step(&model, &mut opt, s);
    }
    let state = TrainState {
        step: opt.step_count(),
        rng_state: model.rng_state(),
        data_cursor: json!({"epoch": 0, "index": 2, "order_seed": 99}),
    };
    save_train_state(&state_dir, &model, &opt, &state).unwrap();
    // A second save over the first (exercises the swap).
    save_train_state(&state_dir, &model, &opt, &state).unwrap();
    assert!(!dir.path().join("state.old").exists() && !dir.path().join("state.tmp").exists());
    for s in 2..4 {
        train_step(&model, &mut opt, s);
    }
    let want = snapshot(&model);

    // Resumed run: fresh model and optimizer, load, 2 more steps.
    let resumed = TrainModel::load(&base, &opts(lora)).unwrap();
    let mut opt2 = adamw(&resumed);
    let got_state = load_train_state(&state_dir, &resumed, &mut opt2).unwrap();
    assert_eq!(got_state, state);
    assert_eq!(opt2.step_count(), 2);
    for s in 2..4 {
        train_step(&resumed, &mut opt2, s);
    }
    assert_eq!(snapshot(&resumed), want, "{what}: resumed run differs");
    let a: Vec<(String, Vec<f32>)> = opt
        .state_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    let b: Vec<(String, Vec<f32>)> = opt2
        .state_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    assert_eq!(a, b);

    // Interrupted swap (state renamed to state.old, new one not yet in place): falls back.
    std::fs::rename(&state_dir, dir.path().join("state.old")).unwrap();
    let again = TrainModel::load(&base, &opts(resumed.lora_config().cloned())).unwrap();
    let mut opt3 = adamw(&again);
    assert_eq!(
        load_train_state(&state_dir, &again, &mut opt3).unwrap(),
        state
    );
}

#[test]
fn train_state_resume_is_bit_exact_full() {
    resume_is_exact(None, "full");
}

#[test]
fn train_state_resume_is_bit_exact_lora_with_dropout() {
    resume_is_exact(Some(lora_cfg(0.2)), "lora");
}

#[test]
fn bf16_master_weights_round_trip() {
    let opts = TrainModelOptions {
        dtype: DType::BF16,
        ..Default::default()
    };
    let model = TrainModel::load(&fixture("llama31-tiny-v512"), &opts).unwrap();
    let mut opt = adamw(&model);
    train_step(&model, &mut opt, 0);
    let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.ends_with(".master")));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("opt.safetensors");
    opt.save(&p).unwrap();
    let mut opt2 = adamw(&model);
    opt2.load(&p).unwrap();
    assert_eq!(opt2.step_count(), 1);
    // Save as bf16 HF dir; the engine loads it.
    let out = dir.path().join("bf16");
    model.save(&out).unwrap();
    let engine = Model::load(&out, None, &Device::Cpu).unwrap();
    assert_eq!(engine.dtype(), DType::BF16);
}

/// Writes what `tools/reference/peft_roundtrip.py` checks: a trained LoRA adapter
/// (`adapter/`), the same model merged as a full HF dir (`merged/`) and a trained full
/// fine-tune (`full/`), each with Metis' logits for fixed ids (`metis_logits.safetensors`).
/// The directory is `$METIS_PEFT_OUT` if set (then kept), else a temporary one.
#[test]
fn export_for_peft_roundtrip() {
    let keep = std::env::var_os("METIS_PEFT_OUT").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let root = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&root).unwrap();
    let base = fixture("llama31-tiny-v512");
    let mut cfg = lora_cfg(0.1);
    cfg.target_modules = metis_train::lora::LORA_TARGETS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let model = TrainModel::load(&base, &opts(Some(cfg))).unwrap();
    let mut opt = adamw(&model);
    for s in 0..3 {
        train_step(&model, &mut opt, s);
    }
    let full = TrainModel::load(&base, &opts(None)).unwrap();
    let mut fopt = adamw(&full);
    train_step(&full, &mut fopt, 0);
    let ids = Tensor::new(&PROMPT[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    for (sub, m) in [("adapter", &model), ("full", &full)] {
        let out = root.join(sub);
        m.save(&out).unwrap();
        metis_train::checkpoint::write_safetensors(
            &out.join("metis_logits.safetensors"),
            &[
                ("input_ids".into(), ids.clone()),
                ("logits".into(), train_logits(m)),
            ],
            Default::default(),
        )
        .unwrap();
    }
    let merged = root.join("merged");
    merge_lora(&base, &root.join("adapter"), &merged).unwrap();
    std::fs::copy(
        root.join("adapter/metis_logits.safetensors"),
        merged.join("metis_logits.safetensors"),
    )
    .unwrap();
    if let Some(k) = keep {
        eprintln!("wrote {}", k.display());
    }
}
