//! The run directory SFT and GRPO share: a checkpoint is published whole (a stale temporary
//! directory of a killed run is replaced, never read), older checkpoints are pruned to
//! `keep_last`, every saved model carries the tokenizer files of the tokenizer directory
//! (also a LoRA adapter, which has none of its own), and the resume point restores the
//! trainable weights and optimizer exactly.
//!
//! `cargo test --release -p metis-train --test run_dir`

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use metis_train::checkpoint::{TrainState, TOKENIZER_FILES};
use metis_train::lora::LoraConfig;
use metis_train::model::{TrainModel, TrainModelOptions};
use metis_train::optim::{AdamW, AdamWConfig, Grads};
use metis_train::run_dir::RunDir;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

fn model(lora: bool) -> TrainModel {
    let opts = TrainModelOptions {
        lora: lora.then(|| LoraConfig {
            target_modules: vec!["q_proj".into()],
            ..LoraConfig::with_rank(2)
        }),
        ..TrainModelOptions::default()
    };
    TrainModel::load(&fixtures().join("llama31-tiny-v128k/f32"), &opts).unwrap()
}

/// One AdamW step with a gradient of ones, so weights and moments differ from the start.
fn step(model: &TrainModel, opt: &mut AdamW) {
    let mut grads = Grads::default();
    for (name, var) in model.trainable() {
        grads.insert(&name, var.as_tensor().ones_like().unwrap());
    }
    opt.step(&grads).unwrap();
}

fn state(step: u64) -> TrainState {
    TrainState {
        step,
        rng_state: 7 * step,
        data_cursor: serde_json::json!({ "step": step }),
    }
}

fn checkpoints(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("checkpoint"))
        .collect();
    names.sort();
    names
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn checkpoints_are_published_whole_and_pruned_to_keep_last() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = RunDir::create(&out, &fixtures().join("llama31-tokenizer"), 2).unwrap();
    let m = model(true);
    let mut opt = AdamW::new(m.trainable(), AdamWConfig::default()).unwrap();
    // What a run killed while writing checkpoint-2 leaves behind.
    std::fs::create_dir_all(out.join(".checkpoint-2.tmp/state")).unwrap();
    std::fs::write(out.join(".checkpoint-2.tmp/junk"), "half-written").unwrap();
    for s in 1..=3 {
        step(&m, &mut opt);
        let dir = run.save_checkpoint(&m, &opt, &state(s)).unwrap();
        assert_eq!(dir, out.join(format!("checkpoint-{s}")));
    }
    assert_eq!(checkpoints(&out), ["checkpoint-2", "checkpoint-3"]);
    let c2 = out.join("checkpoint-2");
    assert!(
        !c2.join("junk").exists(),
        "the stale temporary directory was reused"
    );
    // A LoRA checkpoint: the adapter, the tokenizer files of the tokenizer directory, state/.
    assert!(c2.join("adapter_model.safetensors").is_file());
    assert!(c2.join("state/optimizer.safetensors").is_file());
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        let src = fixtures().join("llama31-tokenizer").join(f);
        assert_eq!(
            std::fs::read(c2.join(f)).unwrap(),
            std::fs::read(src).unwrap()
        );
    }
    assert!(TOKENIZER_FILES.contains(&"chat_template.json"));

    let fin = run.save_final(&m).unwrap();
    assert!(fin.join("adapter_model.safetensors").is_file());
    assert!(fin.join("tokenizer.json").is_file());
    assert!(!out.join(".final.tmp").exists());
}

#[test]
fn keep_last_zero_keeps_every_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let src = fixtures().join("llama31-tiny-v128k/f32");
    let run = RunDir::create(&out, &src, 0).unwrap();
    let m = model(false);
    let opt = AdamW::new(m.trainable(), AdamWConfig::default()).unwrap();
    // The optimizer's step count must match the state's for a resume, not for a save.
    for s in [2, 4, 6] {
        run.save_checkpoint(&m, &opt, &state(s)).unwrap();
    }
    assert_eq!(
        checkpoints(&out),
        ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    );
    assert!(out.join("checkpoint-6/model.safetensors").is_file());
}

#[test]
fn the_resume_point_is_the_latest_checkpoint_restored_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = RunDir::create(&out, &fixtures().join("llama31-tokenizer"), 0).unwrap();
    assert!(run.resume_point().unwrap().is_none());
    let m = model(true);
    let mut opt = AdamW::new(m.trainable(), AdamWConfig::default()).unwrap();
    for s in 1..=2 {
        step(&m, &mut opt);
        run.save_checkpoint(&m, &opt, &state(s)).unwrap();
    }
    let saved: Vec<Vec<f32>> = m
        .trainable()
        .iter()
        .map(|(_, v)| flat(v.as_tensor()))
        .collect();
    // A directory without a training state is no resume point.
    std::fs::create_dir_all(out.join("checkpoint-9")).unwrap();

    let point = run.resume_point().unwrap().expect("a checkpoint");
    assert_eq!((point.step, point.state.clone()), (2, state(2)));
    let fresh = model(true);
    let mut fresh_opt = AdamW::new(fresh.trainable(), AdamWConfig::default()).unwrap();
    point.restore(&fresh, &mut fresh_opt).unwrap();
    let restored: Vec<Vec<f32>> = fresh
        .trainable()
        .iter()
        .map(|(_, v)| flat(v.as_tensor()))
        .collect();
    assert_eq!(restored, saved);
    assert_eq!(fresh_opt.step_count(), 2);
    assert_eq!(fresh.rng_state(), 14);
}
