//! Numerical parity against the HF transformers reference fixtures in `shared/fixtures`
//! (see its README for how they were made and the tolerances). Run with
//! `cargo test --release -p metis-engine --test parity -- --nocapture` to see the diffs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use metis_engine::model::Model;
use serde_json::Value;

const F32_TOL: f32 = 1e-4;
const BF16_TOL: f32 = 0.1;
const F32_MARGIN: f64 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
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

/// argmax with ties → lowest id (torch.argmax).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn rows(logits: &Tensor) -> Vec<Vec<f32>> {
    // [1, s, V] or [s, V]
    let t = if logits.rank() == 3 {
        logits.squeeze(0).unwrap()
    } else {
        logits.clone()
    };
    t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

fn ids_tensor(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn as_u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn as_f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

struct Checker {
    failures: Vec<String>,
}

impl Checker {
    fn diff(&mut self, what: &str, got: &Tensor, want: &Tensor, tol: f32) {
        let d = max_abs_diff(got, want);
        let ok = d <= tol;
        println!(
            "  {what:<55} max abs diff {d:.3e} (tol {tol:.0e}) {}",
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            self.failures
                .push(format!("{what}: max abs diff {d:e} > {tol:e}"));
        }
    }

    fn check(&mut self, what: &str, ok: bool, detail: String) {
        println!("  {what:<55} {} {detail}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures.push(format!("{what}: {detail}"));
        }
    }
}

/// Greedy continuation by full recompute each step (no cache reuse).
fn greedy_nocache(model: &Model, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..steps {
        let mut cache = model.new_cache(1);
        let logits = model.forward(&ids_tensor(&ids), &mut cache).unwrap();
        let last = rows(&logits).pop().unwrap();
        let next = argmax(&last);
        out.push(next);
        ids.push(next);
    }
    out
}

/// Greedy continuation via prefill + one token per step through the KV cache.
fn greedy_kvcache(model: &Model, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut cache = model.new_cache(1);
    let mut out = Vec::new();
    let logits = model.forward(&ids_tensor(prompt), &mut cache).unwrap();
    let mut next = argmax(&rows(&logits).pop().unwrap());
    for step in 0..steps {
        out.push(next);
        if step + 1 == steps {
            break;
        }
        let logits = model.forward(&ids_tensor(&[next]), &mut cache).unwrap();
        next = argmax(&rows(&logits).pop().unwrap());
    }
    assert_eq!(cache.len(), prompt.len() + steps - 1);
    out
}

fn logsumexp(row: &[f32]) -> f64 {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

fn run_fixture(name: &str) {
    let dir = fixtures().join(name);
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let prompts = reference["prompts"].as_array().unwrap();
    let ref_f32 =
        candle_core::safetensors::load(dir.join("reference_f32.safetensors"), &Device::Cpu)
            .unwrap();
    let mut c = Checker {
        failures: Vec::new(),
    };
    for dtype in ["f32", "bf16"] {
        let is_f32 = dtype == "f32";
        let tol = if is_f32 { F32_TOL } else { BF16_TOL };
        let model = Model::load(&dir.join(dtype), None, &Device::Cpu).unwrap();
        assert_eq!(model.dtype(), if is_f32 { DType::F32 } else { DType::BF16 });
        let refs: HashMap<String, Tensor> = candle_core::safetensors::load(
            dir.join(format!("reference_{dtype}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let results: HashMap<&str, &Value> = reference[dtype]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e))
            .collect();
        println!("== {name} / {dtype}");
        for prompt in prompts {
            let pname = prompt["name"].as_str().unwrap();
            let ids = as_u32s(&prompt["ids"]);
            let res = results[pname];
            let mut cache = model.new_cache(1);
            let logits = model.forward(&ids_tensor(&ids), &mut cache).unwrap(); // [1, s, V]
            assert_eq!(cache.len(), ids.len());
            let s = ids.len();
            let tag = |what: &str| format!("{pname} {what}");

            // Logits: every position where available, always the last one.
            let last = logits.i((0, s - 1)).unwrap();
            c.diff(
                &tag("last_logits"),
                &last,
                &refs[&format!("{pname}.last_logits")],
                tol,
            );
            if !is_f32 {
                c.diff(
                    &tag("last_logits vs f32 reference"),
                    &last,
                    &ref_f32[&format!("{pname}.last_logits")],
                    tol,
                );
            }
            if let Some(full) = refs.get(&format!("{pname}.logits")) {
                c.diff(
                    &tag("logits (all positions)"),
                    &logits.squeeze(0).unwrap(),
                    full,
                    tol,
                );
                if !is_f32 {
                    c.diff(
                        &tag("logits vs f32 reference"),
                        &logits.squeeze(0).unwrap(),
                        &ref_f32[&format!("{pname}.logits")],
                        tol,
                    );
                }
            }

            // Per-position summaries.
            let rs = rows(&logits);
            let max_logit = as_f64s(&res["max_logit"]);
            let lse = as_f64s(&res["logsumexp"]);
            let margins = as_f64s(&res["top1_top2_margin"]);
            let want_argmax = as_u32s(&res["argmax"]);
            let mut d_max = 0f64;
            let mut d_lse = 0f64;
            let mut argmax_bad = Vec::new();
            let margin_thr = if is_f32 { F32_MARGIN } else { 0.25 };
            let mut checked = 0;
            for (p, row) in rs.iter().enumerate() {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                d_max = d_max.max((m - max_logit[p]).abs());
                d_lse = d_lse.max((logsumexp(row) - lse[p]).abs());
                if margins[p] >= margin_thr {
                    checked += 1;
                    if argmax(row) != want_argmax[p] {
                        argmax_bad.push(p);
                    }
                }
            }
            c.check(
                &tag("max_logit per position"),
                d_max <= tol as f64,
                format!("max abs diff {d_max:.3e}"),
            );
            c.check(
                &tag("logsumexp per position"),
                d_lse <= tol as f64,
                format!("max abs diff {d_lse:.3e}"),
            );
            c.check(
                &tag(&format!("argmax where margin >= {margin_thr}")),
                argmax_bad.is_empty(),
                format!("{checked} positions checked, mismatches at {argmax_bad:?}"),
            );

            // Hidden states (v512 fixtures, f32).
            if is_f32 {
                if let Some(emb) = refs.get(&format!("{pname}.embeddings")) {
                    let trace = model.forward_trace(&ids_tensor(&ids)).unwrap();
                    c.diff(
                        &tag("embeddings"),
                        &trace.embeddings.squeeze(0).unwrap(),
                        emb,
                        tol,
                    );
                    for (i, out) in trace.layer_outputs.iter().enumerate() {
                        c.diff(
                            &tag(&format!("layer_out.{i}")),
                            &out.squeeze(0).unwrap(),
                            &refs[&format!("{pname}.layer_out.{i}")],
                            tol,
                        );
                    }
                    c.diff(
                        &tag("final_norm"),
                        &trace.final_norm.squeeze(0).unwrap(),
                        &refs[&format!("{pname}.final_norm")],
                        tol,
                    );
                    c.diff(
                        &tag("trace logits == forward logits"),
                        &trace.logits,
                        &logits,
                        0.0,
                    );
                }
            }

            // Greedy continuations over the reliable prefix.
            let reliable = res["greedy_reliable_prefix"].as_u64().unwrap() as usize;
            let want = as_u32s(&res["greedy_new_ids"]);
            let want_kv = as_u32s(&res["greedy_kvcache_new_ids"]);
            if reliable > 0 {
                let got = greedy_nocache(&model, &ids, reliable);
                c.check(
                    &tag(&format!("greedy no-cache ({reliable} steps)")),
                    got[..] == want[..reliable],
                    format!("got {got:?} want {:?}", &want[..reliable]),
                );
                let got_kv = greedy_kvcache(&model, &ids, reliable);
                c.check(
                    &tag(&format!("greedy kv-cache ({reliable} steps)")),
                    got_kv[..] == want_kv[..reliable] && got_kv[..] == want[..reliable],
                    format!("got {got_kv:?}"),
                );
            } else {
                println!("  {:<55} skipped (no reliable steps)", tag("greedy"));
            }

            // KV-cache consistency: prefill the first half, feed the rest token by token,
            // compare each step's logits to the full forward pass.
            let split = s / 2;
            let mut cache = model.new_cache(1);
            let mut parts = vec![model
                .forward(&ids_tensor(&ids[..split]), &mut cache)
                .unwrap()];
            for &t in &ids[split..] {
                parts.push(model.forward(&ids_tensor(&[t]), &mut cache).unwrap());
            }
            let stepped = Tensor::cat(&parts, 1).unwrap();
            let kv_tol = if is_f32 { 1e-5 } else { tol };
            c.diff(
                &tag("kv-cache stepwise vs full forward"),
                &stepped,
                &logits,
                kv_tol,
            );
            // Truncate and recompute the tail in one chunk.
            cache.truncate(split);
            let tail = model
                .forward(&ids_tensor(&ids[split..]), &mut cache)
                .unwrap();
            c.diff(
                &tag("truncate + chunked tail vs full forward"),
                &tail,
                &logits.narrow(1, split, s - split).unwrap(),
                kv_tol,
            );

            // Batch of two equal-length sequences == each alone.
            let other: Vec<u32> = ids.iter().rev().cloned().collect();
            let batch = Tensor::stack(
                &[
                    ids_tensor(&ids).squeeze(0).unwrap(),
                    ids_tensor(&other).squeeze(0).unwrap(),
                ],
                0,
            )
            .unwrap();
            let mut bcache = model.new_cache(2);
            let blog = model.forward(&batch, &mut bcache).unwrap();
            let mut ocache = model.new_cache(1);
            let olog = model.forward(&ids_tensor(&other), &mut ocache).unwrap();
            c.diff(
                &tag("batch row 0 vs single"),
                &blog.i(0).unwrap(),
                &logits.i(0).unwrap(),
                kv_tol,
            );
            c.diff(
                &tag("batch row 1 vs single"),
                &blog.i(1).unwrap(),
                &olog.i(0).unwrap(),
                kv_tol,
            );
        }

        // Large rope positions on an empty cache.
        if let Some(want) = refs.get("p0.pos_offset_20000.logits") {
            let res = results["p0.pos_offset_20000"];
            // `position_ids` is the string "arange(20000, 20000+n)".
            assert!(res["position_ids"]
                .as_str()
                .unwrap()
                .starts_with("arange(20000,"));
            let start = 20000;
            let ids = as_u32s(&prompts[0]["ids"]);
            let mut cache = model.new_cache(1);
            let logits = model
                .forward_at(&ids_tensor(&ids), start, &mut cache)
                .unwrap();
            c.diff(
                "p0.pos_offset_20000 logits",
                &logits.squeeze(0).unwrap(),
                want,
                tol,
            );
            if !is_f32 {
                c.diff(
                    "p0.pos_offset_20000 logits vs f32 reference",
                    &logits.squeeze(0).unwrap(),
                    &ref_f32["p0.pos_offset_20000.logits"],
                    tol,
                );
            }
            let rs = rows(&logits);
            let want_argmax = as_u32s(&res["argmax"]);
            let margins = as_f64s(&res["top1_top2_margin"]);
            let max_logit = as_f64s(&res["max_logit"]);
            let thr = if is_f32 { F32_MARGIN } else { 0.25 };
            let bad: Vec<usize> = (0..rs.len())
                .filter(|&p| margins[p] >= thr && argmax(&rs[p]) != want_argmax[p])
                .collect();
            c.check(
                &format!("p0.pos_offset_20000 argmax where margin >= {thr}"),
                bad.is_empty(),
                format!("mismatches at {bad:?}"),
            );
            let d_max = rs
                .iter()
                .zip(&max_logit)
                .map(|(r, &m)| {
                    (r.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64 - m).abs()
                })
                .fold(0f64, f64::max);
            c.check(
                "p0.pos_offset_20000 max_logit per position",
                d_max <= tol as f64,
                format!("max abs diff {d_max:.3e}"),
            );
            // Continue through the cache: positions keep counting from 20000 + len.
            assert_eq!(cache.next_position(), start + ids.len());
            let mut cache = model.new_cache(1);
            let half = ids.len() / 2;
            let a = model
                .forward_at(&ids_tensor(&ids[..half]), start, &mut cache)
                .unwrap();
            let b = model
                .forward(&ids_tensor(&ids[half..]), &mut cache)
                .unwrap();
            let joined = Tensor::cat(&[a, b], 1).unwrap();
            c.diff(
                "p0.pos_offset_20000 via cache continuation",
                &joined,
                &logits,
                if is_f32 { 1e-5 } else { tol },
            );
        }
    }
    assert!(c.failures.is_empty(), "{name}: {:#?}", c.failures);
}

#[test]
fn llama31_tiny_v512() {
    run_fixture("llama31-tiny-v512");
}

#[test]
fn qwen2_tiny_v512() {
    run_fixture("qwen2-tiny-v512");
}

#[test]
fn llama31_tiny_v128k() {
    run_fixture("llama31-tiny-v128k");
}

#[test]
fn missing_dir_is_a_typed_error() {
    let err = Model::load(Path::new("/nonexistent/model"), None, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

/// A model built from tensors in memory (the trainer's rollout path) is the model loaded from
/// the same checkpoint on disk.
#[test]
fn from_tensors_equals_load() {
    for fixture in ["llama31-tiny-v512", "qwen2-tiny-v512"] {
        let dir = fixtures().join(fixture).join("f32");
        let disk = Model::load(&dir, None, &Device::Cpu).unwrap();
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let config =
            metis_engine::config::ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let mem = Model::from_tensors(config, tensors, DType::F32, &Device::Cpu).unwrap();
        let ids = ids_tensor(&[1, 17, 42, 99, 300, 7]);
        let a = disk.forward(&ids, &mut disk.new_cache(1)).unwrap();
        let b = mem.forward(&ids, &mut mem.new_cache(1)).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{fixture}");
    }
    // A missing tensor is a typed error naming it.
    let dir = fixtures().join("llama31-tiny-v512").join("f32");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    tensors.remove("model.norm.weight");
    let config = metis_engine::config::ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let err = Model::from_tensors(config, tensors, DType::F32, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("model.norm.weight"), "{err}");
}
