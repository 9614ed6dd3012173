//! A short SFT on the tiny Llama-3.1 fixture (real 128k tokenizer and chat template, hidden
//! 16): full fine-tuning and LoRA make the loss go down, write metrics.jsonl / curves.png /
//! checkpoints, and the results load in `metis-engine` (full) or merge into a full model
//! (LoRA).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use metis_train::lora::LoraConfig;
use metis_train::metrics::StepMetrics;
use metis_train::model::{BatchLayout, TrainModel, TrainModelOptions};
use metis_train::sft::{merge_adapter, run_sft, SftConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn model_dir() -> PathBuf {
    fixtures().join("llama31-tiny-v128k/f32")
}

fn tok_dir() -> PathBuf {
    fixtures().join("llama31-tokenizer")
}

/// A small dataset with a lot of shared structure (the answers repeat across records).
fn write_data(path: &Path, n: usize) {
    let mut out = String::new();
    for i in 0..n {
        let cwe = [79, 89, 22, 78][i % 4];
        let rec = serde_json::json!({"messages": [
            {"role": "user", "content": format!("Which CWE is this? Report {i}.")},
            {"role": "assistant",
             "reasoning": format!("The report describes CWE-{cwe}."),
             "content": format!("CWE-{cwe}")}]});
        out.push_str(&rec.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn read_metrics(path: &Path) -> Vec<StepMetrics> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            for key in [
                "step",
                "epoch",
                "loss",
                "lr",
                "grad_norm",
                "tokens_per_s",
                "elapsed_s",
            ] {
                assert!(v.get(key).is_some_and(|x| x.is_number()), "{key} in {l}");
            }
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn config(dir: &Path) -> SftConfig {
    let data = dir.join("train.jsonl");
    write_data(&data, 8);
    let mut cfg = SftConfig::new(&model_dir(), &data, &dir.join("out"));
    cfg.tokenizer_dir = Some(tok_dir());
    cfg.batch_size = 4;
    cfg.max_len = 96;
    cfg.warmup_steps = 2;
    cfg
}

#[test]
fn full_sft_lowers_the_loss_and_writes_loadable_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.epochs = 8; // 2 steps per epoch → 16 steps
    cfg.lr = 3e-2;
    cfg.save_every = 10;
    let s = run_sft(&cfg, false).unwrap();
    assert_eq!((s.steps, s.total_steps, s.n_sequences), (16, 16, 8));
    let out = dir.path().join("out");

    let m = read_metrics(&out.join("metrics.jsonl"));
    assert_eq!(m.len(), 16);
    for (i, r) in m.iter().enumerate() {
        assert_eq!(r.step, i as u64 + 1);
        assert!(r.loss.is_finite() && r.grad_norm.is_finite() && r.tokens_per_s > 0.0);
    }
    assert_eq!(m[0].lr, 0.0, "warmup starts at 0 as in transformers");
    assert_eq!(m[2].lr, 3e-2, "peak right after the warmup");
    assert!(
        (m[1].lr - 1.5e-2).abs() < 1e-12,
        "half-way through the warmup"
    );
    assert!((m[15].epoch - 8.0).abs() < 1e-12);
    let first = m[0].loss;
    let last = mean(&m[13..].iter().map(|r| r.loss).collect::<Vec<_>>());
    eprintln!(
        "full SFT loss {first:.3} → {last:.3}, {:.0} tokens/s",
        mean(&m.iter().map(|r| r.tokens_per_s).collect::<Vec<_>>())
    );
    assert!(last < 0.6 * first, "loss {first} → {last}");

    let png = std::fs::read(out.join("curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    for step in [10, 16] {
        let c = out.join(format!("checkpoint-{step}"));
        assert!(c.join("model.safetensors").is_file(), "{}", c.display());
        assert!(c.join("state/optimizer.safetensors").is_file());
        assert!(c.join("tokenizer.json").is_file());
    }
    assert!(!out.join(".checkpoint-10.tmp").exists());

    // The final model loads in the inference engine and gives the training model's logits.
    let fin = out.join("final");
    let engine = metis_engine::model::Model::load(&fin, None, &Device::Cpu).unwrap();
    let ids: Vec<u32> = vec![128000, 128006, 882, 128007, 271, 23956, 356];
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut cache = engine.new_cache(1);
    let e_logits = engine.forward(&x, &mut cache).unwrap();
    let trained = TrainModel::load(&fin, &TrainModelOptions::default()).unwrap();
    let t_logits = trained
        .forward(&x, &BatchLayout::dense(1, ids.len()), false)
        .unwrap();
    let e_last = e_logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let t_all = t_logits.to_dtype(DType::F32).unwrap().i_last();
    let n = e_last.len();
    let t_last = &t_all[t_all.len() - n..];
    let diff = e_last
        .iter()
        .zip(t_last)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-3, "engine vs trainer logits differ by {diff}");
    // And differs from the base model.
    let base = TrainModel::load(&model_dir(), &TrainModelOptions::default()).unwrap();
    let b_all = base
        .forward(&x, &BatchLayout::dense(1, ids.len()), false)
        .unwrap()
        .i_last();
    assert_ne!(b_all, t_all);
}

trait Flat {
    fn i_last(&self) -> Vec<f32>;
}

impl Flat for Tensor {
    fn i_last(&self) -> Vec<f32> {
        self.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }
}

#[test]
fn lora_sft_lowers_the_loss_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_steps = Some(20);
    cfg.lr = 3e-2;
    cfg.packing = true;
    cfg.max_len = 160;
    cfg.lora = Some(LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.05,
        ..LoraConfig::default()
    });
    let s = run_sft(&cfg, false).unwrap();
    assert_eq!(s.steps, 20);
    let out = dir.path().join("out");
    let m = read_metrics(&out.join("metrics.jsonl"));
    assert_eq!(m.len(), 20);
    let first = m[0].loss;
    let last = mean(&m[16..].iter().map(|r| r.loss).collect::<Vec<_>>());
    eprintln!(
        "LoRA SFT loss {first:.3} → {last:.3} ({} packed sequences)",
        s.n_sequences
    );
    assert!(
        s.n_sequences < 8,
        "packing put several examples per sequence"
    );
    assert!(last < 0.7 * first, "loss {first} → {last}");

    let fin = out.join("final");
    assert!(fin.join("adapter_config.json").is_file());
    assert!(fin.join("adapter_model.safetensors").is_file());
    assert!(out
        .join("checkpoint-20/adapter_model.safetensors")
        .is_file());

    // Merge: the merged full model gives the adapter model's logits.
    let merged = dir.path().join("merged");
    merge_adapter(&model_dir(), &fin, &merged).unwrap();
    assert!(merged.join("tokenizer.json").is_file());
    let ids: Vec<u32> = vec![128000, 128006, 882, 128007, 271, 23956];
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let layout = BatchLayout::dense(1, ids.len());
    let with_adapter =
        TrainModel::load_with_adapter(&model_dir(), &fin, &TrainModelOptions::default()).unwrap();
    let a = with_adapter.forward(&x, &layout, false).unwrap().i_last();
    let engine = metis_engine::model::Model::load(&merged, None, &Device::Cpu).unwrap();
    let mut cache = engine.new_cache(1);
    let e = engine.forward(&x, &mut cache).unwrap().i_last();
    let a_last = &a[a.len() - e.len()..];
    let diff = e
        .iter()
        .zip(a_last)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-3, "merged vs adapter logits differ by {diff}");
}

#[test]
fn bad_data_fails_before_training_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}\n",
    )
    .unwrap();
    let mut cfg = SftConfig::new(&model_dir(), &data, &dir.path().join("out"));
    cfg.tokenizer_dir = Some(tok_dir());
    let err = run_sft(&cfg, false).unwrap_err().to_string();
    assert!(
        err.contains("bad.jsonl:2: messages: no assistant message"),
        "{err}"
    );
}
