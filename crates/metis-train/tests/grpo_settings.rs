//! GRPO settings shared with SFT: `dtype` (the policy trains and is saved in bf16) and the
//! run directory (checkpoints laid out as SFT's — model, tokenizer files, `state/` — and
//! pruned to `keep_last`).
//!
//! `cargo test --release -p metis-train --test grpo_settings`

#[allow(dead_code)] // the SFT helper is not needed here
mod common;

use std::path::Path;

use common::tiny_demo;
use metis_train::device::TrainDtype;
use metis_train::grpo::trainer::{run_grpo, GrpoConfig};

/// The dtypes of the tensors of a safetensors file, from its JSON header.
fn dtypes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut d: Vec<String> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_owned())
        .collect();
    d.sort();
    d.dedup();
    d
}

fn config(dir: &Path, out: &str) -> GrpoConfig {
    let demo = tiny_demo(dir, 1);
    GrpoConfig {
        num_generations: 2,
        prompts_per_step: 2,
        max_steps: 3,
        max_completion_len: 16,
        save_every: 1,
        seed: 1,
        ..GrpoConfig::new(demo.model, demo.prompts, dir.join(out))
    }
}

#[test]
fn checkpoints_are_laid_out_as_sfts_and_pruned_to_keep_last() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = GrpoConfig {
        keep_last: 2,
        ..config(tmp.path(), "out")
    };
    let outcome = run_grpo(&cfg, false).unwrap();
    assert_eq!(outcome.steps, 3);
    let mut names: Vec<String> = std::fs::read_dir(&cfg.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("checkpoint"))
        .collect();
    names.sort();
    assert_eq!(names, ["checkpoint-2", "checkpoint-3"]);
    let c3 = cfg.out.join("checkpoint-3");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "state/train_state.json",
    ] {
        assert!(c3.join(f).is_file(), "{f} missing from {}", c3.display());
    }
    // The checkpoint is itself a model directory the engine loads.
    metis_engine::model::Model::load(&c3, None, &candle_core::Device::Cpu).unwrap();
    assert!(outcome.final_dir.unwrap().join("tokenizer.json").is_file());
}

#[test]
fn the_policy_trains_and_is_saved_in_the_configured_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = GrpoConfig {
        dtype: TrainDtype::Bf16,
        max_steps: 2,
        ..config(tmp.path(), "bf16")
    };
    let outcome = run_grpo(&cfg, false).unwrap();
    assert_eq!(outcome.steps, 2);
    for m in &outcome.history {
        assert!(m.loss.is_finite() && m.grad_norm.is_finite(), "{m:?}");
    }
    let fin = outcome.final_dir.unwrap();
    assert_eq!(dtypes(&fin.join("model.safetensors")), ["BF16"]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fin.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.out.join("grpo_config.json")).unwrap()).unwrap();
    assert_eq!(written["dtype"], "bf16");
}
