//! `metis train sft` killed with SIGKILL mid-run and resumed with `--resume` ends with the same
//! weights and metrics (except timings) as an uninterrupted run; `metis train merge` turns a
//! LoRA run's adapter into a full model the engine loads; `metis train grpo --rollout-url`
//! without LoRA is refused up front.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn write_data(path: &Path) {
    let mut out = String::new();
    for i in 0..8 {
        let rec = serde_json::json!({"messages": [
            {"role": "user", "content": format!("Is CVE-2024-{i:04} remotely exploitable?")},
            {"role": "assistant", "reasoning": "AV:N means network.",
             "content": if i % 2 == 0 { "Yes" } else { "No" }}]});
        out.push_str(&rec.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn sft_cmd(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metis"));
    c.args(["train", "sft", "--model"])
        .arg(fixtures().join("llama31-tiny-v128k/f32"))
        .arg("--tokenizer")
        .arg(fixtures().join("llama31-tokenizer"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--batch-size",
            "2",
            "--max-len",
            "64",
            "--lr",
            "1e-2",
            "--seed",
            "7",
            "--save-every",
            "2",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn metrics(out: &Path) -> Vec<String> {
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

fn tensors(p: &Path) -> Vec<(String, Vec<u8>)> {
    safetensors_names(&std::fs::read(p).unwrap())
}

/// (name, raw bytes) of every tensor, sorted by name (the safetensors header is JSON:
/// 8-byte little-endian length, then `{"name": {"dtype", "shape", "data_offsets"}}`).
fn safetensors_names(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out: Vec<(String, Vec<u8>)> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            let (a, b) = (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            );
            (k.clone(), data[a..b].to_vec())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn sigkill_then_resume_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_data(&data);
    let steps = ["--max-steps", "12"];

    let a = dir.path().join("straight");
    let st = sft_cmd(&data, &a, &steps).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let b = dir.path().join("killed");
    let mut child = sft_cmd(&data, &b, &steps).spawn().unwrap();
    let t0 = Instant::now();
    while !b.join("checkpoint-4").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint-4");
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed_mid_run = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(killed_mid_run, "the run ended before it could be killed");
    assert!(!b.join("final").exists());

    let st = sft_cmd(&data, &b, &[&steps[..], &["--resume"]].concat())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma.len(), 12);
    assert_eq!(ma, mb);
    assert!(
        tensors(&a.join("final/model.safetensors")) == tensors(&b.join("final/model.safetensors")),
        "final weights differ"
    );
}

#[test]
fn lora_run_then_merge_via_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_data(&data);
    let out = dir.path().join("lora");
    let st = sft_cmd(
        &data,
        &out,
        &[
            "--max-steps",
            "2",
            "--lora-rank",
            "4",
            "--lora-targets",
            "q_proj,v_proj",
        ],
    )
    .output()
    .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let adapter = out.join("final");
    assert!(adapter.join("adapter_config.json").is_file());
    let merged = dir.path().join("merged");
    let st = Command::new(env!("CARGO_BIN_EXE_metis"))
        .args(["train", "merge", "--base"])
        .arg(fixtures().join("llama31-tiny-v128k/f32"))
        .arg("--adapter")
        .arg(&adapter)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(merged.join("model.safetensors").is_file());
    assert!(merged.join("tokenizer.json").is_file());
    metis_engine::model::Model::load(&merged, None, &candle_core::Device::Cpu).unwrap();
    // The merge changed the adapted weights only.
    let base = tensors(&fixtures().join("llama31-tiny-v128k/f32/model.safetensors"));
    let new = tensors(&merged.join("model.safetensors"));
    let changed: Vec<&str> = base
        .iter()
        .zip(&new)
        .filter(|(x, y)| x.1 != y.1)
        .map(|(x, _)| x.0.as_str())
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed
            .iter()
            .all(|n| n.ends_with("q_proj.weight") || n.ends_with("v_proj.weight")),
        "{changed:?}"
    );
}

#[test]
fn grpo_remote_rollouts_without_lora_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_metis"))
        .args(["train", "grpo", "--model"])
        .arg(fixtures().join("llama31-tiny-v128k/f32"))
        .arg("--prompts")
        .arg(dir.path().join("prompts.jsonl"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .args(["--rollout-url", "http://127.0.0.1:9/v1"])
        .output()
        .unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("remote rollouts hot-load a LoRA adapter; add --lora-rank"),
        "{err}"
    );
}
