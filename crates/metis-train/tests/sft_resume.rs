//! Kill-and-resume: a run stopped after k steps (the `stop_after_steps` hook stops right
//! where a kill would, without the final save) and resumed from its latest checkpoint ends
//! bit-for-bit where the uninterrupted run ends: same weights, same optimizer state, same
//! metrics (except wall-clock fields), for full fine-tuning with gradient accumulation and
//! for LoRA with dropout (the dropout stream is part of the state).

use std::path::{Path, PathBuf};

use metis_train::checkpoint::latest_checkpoint;
use metis_train::lora::LoraConfig;
use metis_train::sft::{run_sft, SftConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn write_data(path: &Path) {
    let mut out = String::new();
    for i in 0..8 {
        let rec = serde_json::json!({"messages": [
            {"role": "system", "content": "You are a security analyst."},
            {"role": "user", "content": format!("Port {} is open. Risk?", 20 + i)},
            {"role": "assistant",
             "reasoning": format!("Port {} service exposure.", 20 + i),
             "content": if i % 2 == 0 { "High" } else { "Low" }}]});
        out.push_str(&rec.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn config(dir: &Path, out: &str, lora: bool) -> SftConfig {
    let data = dir.join("train.jsonl");
    if !data.exists() {
        write_data(&data);
    }
    let mut cfg = SftConfig::new(
        &fixtures().join("llama31-tiny-v128k/f32"),
        &data,
        &dir.join(out),
    );
    cfg.tokenizer_dir = Some(fixtures().join("llama31-tokenizer"));
    cfg.batch_size = 2;
    cfg.grad_accum = 2; // 4 micro-batches per epoch → 2 steps per epoch
    cfg.max_steps = Some(6); // 3 epochs, two epoch boundaries
    cfg.max_len = 80;
    cfg.lr = 1e-2;
    cfg.warmup_steps = 1;
    cfg.weight_decay = 0.01;
    cfg.save_every = 2;
    cfg.seed = 1234;
    if lora {
        cfg.lora = Some(LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.1,
            ..LoraConfig::default()
        });
    }
    cfg
}

/// metrics.jsonl without the wall-clock fields, as raw JSON text per line (bit-for-bit).
fn deterministic_metrics(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(l).unwrap();
            v.remove("tokens_per_s");
            v.remove("elapsed_s");
            serde_json::to_string(&v).unwrap()
        })
        .collect()
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Same tensors (names, dtypes, shapes, bytes) and metadata. (The file bytes can differ in
/// the order of the metadata keys, which safetensors keeps in a hash map.)
fn same_safetensors(a: &Path, b: &Path) {
    let (ba, bb) = (bytes(a), bytes(b));
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&ba).unwrap(),
        safetensors::SafeTensors::deserialize(&bb).unwrap(),
    );
    let mut names = sa.names();
    names.sort();
    let mut names_b = sb.names();
    names_b.sort();
    assert_eq!(names, names_b, "{}", a.display());
    for n in names {
        let (ta, tb) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
        assert_eq!(ta.dtype(), tb.dtype(), "{n}");
        assert_eq!(ta.shape(), tb.shape(), "{n}");
        assert!(
            ta.data() == tb.data(),
            "{}: tensor {n} differs",
            a.display()
        );
    }
    let (_, ma) = safetensors::SafeTensors::read_metadata(&ba).unwrap();
    let (_, mb) = safetensors::SafeTensors::read_metadata(&bb).unwrap();
    assert_eq!(ma.metadata(), mb.metadata(), "{}", a.display());
}

fn kill_and_resume(lora: bool) {
    let dir = tempfile::tempdir().unwrap();
    let straight = config(dir.path(), "straight", lora);
    let s = run_sft(&straight, false).unwrap();
    assert_eq!(s.steps, 6);

    // Interrupted after 3 steps: checkpoint-2 exists, metrics has 3 lines.
    let mut cut = config(dir.path(), "cut", lora);
    cut.stop_after_steps = Some(3);
    let s = run_sft(&cut, false).unwrap();
    assert_eq!(s.steps, 3);
    assert!(s.final_dir.is_none());
    let out = dir.path().join("cut");
    assert_eq!(latest_checkpoint(&out).unwrap().0, 2);
    assert_eq!(deterministic_metrics(&out).len(), 3);

    // Resume: from step 2, step 3 replayed (its metrics line replaced, not duplicated).
    cut.stop_after_steps = None;
    let s = run_sft(&cut, true).unwrap();
    assert_eq!(s.resumed_from, Some(2));
    assert_eq!(s.steps, 6);

    let a = dir.path().join("straight");
    let ma = deterministic_metrics(&a);
    assert_eq!(ma.len(), 6);
    assert_eq!(ma, deterministic_metrics(&out));
    let weights = if lora {
        "adapter_model.safetensors"
    } else {
        "model.safetensors"
    };
    same_safetensors(
        &a.join("final").join(weights),
        &out.join("final").join(weights),
    );
    for f in ["state/optimizer.safetensors", "state/trainable.safetensors"] {
        same_safetensors(
            &a.join("checkpoint-6").join(f),
            &out.join("checkpoint-6").join(f),
        );
    }
    // Training moved the weights at all.
    let first: serde_json::Value = serde_json::from_str(&ma[0]).unwrap();
    let last: serde_json::Value = serde_json::from_str(&ma[5]).unwrap();
    assert_ne!(first["loss"], last["loss"]);
}

#[test]
fn full_fine_tuning_resumes_bit_for_bit() {
    kill_and_resume(false);
}

#[test]
fn lora_with_dropout_resumes_bit_for_bit() {
    kill_and_resume(true);
}

#[test]
fn resume_refuses_a_checkpoint_of_a_different_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "out", false);
    cfg.max_steps = Some(2);
    cfg.save_every = 1;
    cfg.stop_after_steps = Some(1);
    run_sft(&cfg, false).unwrap();
    cfg.stop_after_steps = None;
    cfg.seed = 99;
    let err = run_sft(&cfg, true).unwrap_err().to_string();
    assert!(err.contains("cannot resume"), "{err}");
}
