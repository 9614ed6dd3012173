//! Every quantization type Metis reads, written by Metis: a random Llama model whose rows are
//! whole k-quant blocks (hidden 256) is converted to each type with `write_gguf`, loaded back
//! (weights read in place by Metis's kernels), and compared with the F32 safetensors model:
//!
//! * the logit error over every position of three prompts, as RMS(Δ) / RMS(F32 logits), within
//!   a bound per type (the measured values are printed; each bound is about 1.5× them), and
//!   the top-1 agreement over those positions;
//! * greedy continuations agree over the reliable prefix: the steps up to the first whose F32
//!   top-1 margin is under 4 × RMS(Δ) of that type (a margin that the error is unlikely to
//!   close: the two logits' errors differ by about √2 · RMS(Δ)).
//!
//! `cargo test --release -p metis-engine --test quant_types -- --nocapture` prints the table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor};
use metis_engine::gguf::{write_gguf, FileType, GgmlDType};
use metis_engine::model::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HIDDEN: usize = 256;
const INTER: usize = 512;
const LAYERS: usize = 4;
const VOCAB: usize = 1024;

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A random Llama checkpoint with logits far enough apart to have a greedy path: N(0, 1)
/// embeddings, N(0, 0.05) layer weights, N(0, 0.1) output head (untied, so the embedding and
/// the head are separate matrices of the file).
fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "rms_norm_eps": 1e-5, "vocab_size": VOCAB, "max_position_embeddings": 2048,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 1,
        "eos_token_id": 2, "torch_dtype": "float32", "hidden_act": "silu",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    // Seeded, so that the measured errors (and the bounds set from them) are reproducible.
    let mut rng = StdRng::seed_from_u64(2026);
    let mut rand = |r: usize, c: usize, std: f32| {
        let normal = rand_distr::Normal::new(0f32, std).unwrap();
        let v: Vec<f32> = (0..r * c).map(|_| rng.sample(normal)).collect();
        Tensor::from_vec(v, (r, c), &dev).unwrap()
    };
    let ones = |n: usize| Tensor::ones(n, DType::F32, &dev).unwrap();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), rand(VOCAB, HIDDEN, 1.0));
    t.insert("lm_head.weight".into(), rand(VOCAB, HIDDEN, 0.1));
    t.insert("model.norm.weight".into(), ones(HIDDEN));
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (name, r, c) in [
            ("self_attn.q_proj", HIDDEN, HIDDEN),
            ("self_attn.k_proj", 128, HIDDEN),
            ("self_attn.v_proj", 128, HIDDEN),
            ("self_attn.o_proj", HIDDEN, HIDDEN),
            ("mlp.gate_proj", INTER, HIDDEN),
            ("mlp.up_proj", INTER, HIDDEN),
            ("mlp.down_proj", HIDDEN, INTER),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand(r, c, 0.05));
        }
        t.insert(format!("{p}.input_layernorm.weight"), ones(HIDDEN));
        t.insert(format!("{p}.post_attention_layernorm.weight"), ones(HIDDEN));
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

fn logits(model: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut cache = model.new_cache(1);
    model
        .forward(&input, &mut cache)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

fn top2(row: &[f32]) -> (usize, f32) {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    (idx[0], row[idx[0]] - row[idx[1]])
}

/// Greedy steps one token at a time (full recompute: simple and independent of the cache).
fn greedy(model: &Model, prompt: &[u32], steps: usize) -> Vec<(u32, f32)> {
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..steps {
        let (next, margin) = top2(logits(model, &ids).last().unwrap());
        out.push((next as u32, margin));
        ids.push(next as u32);
    }
    out
}

fn rms(values: impl Iterator<Item = f32>) -> f32 {
    let (mut sum, mut n) = (0f64, 0usize);
    for v in values {
        sum += (v as f64) * (v as f64);
        n += 1;
    }
    (sum / n.max(1) as f64).sqrt() as f32
}

/// The tensor types a file holds, by name.
fn tensor_types(path: &Path) -> HashMap<String, GgmlDType> {
    let mut f = std::fs::File::open(path).unwrap();
    let c = Content::read(&mut f).unwrap();
    c.tensor_infos
        .into_iter()
        .map(|(k, v)| (k, v.ggml_dtype))
        .collect()
}

#[test]
fn every_type_written_by_metis_matches_f32() {
    let dir = std::env::temp_dir().join(format!("metis-quant-types-{}", std::process::id()));
    let _scratch = Scratch(dir.clone());
    let hf = dir.join("hf");
    write_model(&hf);
    let reference = Model::load(&hf, None, &Device::Cpu).unwrap();
    let prompts: [Vec<u32>; 3] = [
        (0..24).map(|i| (i * 37 + 5) % VOCAB as u32).collect(),
        (0..16).map(|i| (i * 101 + 900) % VOCAB as u32).collect(),
        vec![1, 17, 400, 3, 999, 512, 64, 8],
    ];
    let want: Vec<Vec<Vec<f32>>> = prompts.iter().map(|p| logits(&reference, p)).collect();
    let want_greedy: Vec<Vec<(u32, f32)>> =
        prompts.iter().map(|p| greedy(&reference, p, 12)).collect();
    // Bounds on RMS(Δ) / RMS(logits), about 1.5× the measured values. The errors are the
    // weights' own rounding (about 0.6% RMS per weight for Q8_0, 2% for Q6_K, 9% for 4-bit),
    // roughly doubled through four random layers.
    let cases: [(FileType, f32); 15] = [
        (GgmlDType::F32.into(), 1e-5),
        (GgmlDType::F16.into(), 0.001),
        (GgmlDType::BF16.into(), 0.006),
        (GgmlDType::Q8_0.into(), 0.02),
        (GgmlDType::Q6K.into(), 0.065),
        (GgmlDType::Q5_1.into(), 0.13),
        (GgmlDType::Q5_0.into(), 0.15),
        (GgmlDType::Q5K.into(), 0.13),
        (FileType::Q5KM, 0.12),
        (GgmlDType::Q4_1.into(), 0.27),
        (GgmlDType::Q4_0.into(), 0.29),
        (GgmlDType::Q4K.into(), 0.26),
        (FileType::Q4KM, 0.23),
        (GgmlDType::Q3K.into(), 0.5),
        (GgmlDType::Q2K.into(), 0.9),
    ];
    let ref_rms = rms(want.iter().flatten().flatten().copied());
    println!(
        "| type | RMS(Δ)/RMS | bound | max abs Δ | top-1 agree | greedy steps checked / agreeing |"
    );
    let mut failures = Vec::new();
    for (ftype, bound) in cases {
        let path = dir.join(format!("{ftype:?}.gguf").replace(['(', ')'], ""));
        write_gguf(&hf, &path, ftype).unwrap();
        check_types(&path, ftype);
        // An f32 KV cache, as the reference's: the table measures the weights' rounding alone.
        let model = Model::load(&path, None, &Device::Cpu)
            .unwrap()
            .with_kv_dtype(DType::F32);
        let (mut deltas, mut max_abs, mut top1, mut positions) = (Vec::new(), 0f32, 0, 0);
        for (p, w) in prompts.iter().zip(&want) {
            for (a, b) in logits(&model, p).iter().zip(w) {
                for (x, y) in a.iter().zip(b) {
                    deltas.push(x - y);
                    max_abs = max_abs.max((x - y).abs());
                }
                positions += 1;
                top1 += usize::from(top2(a).0 == top2(b).0);
            }
        }
        let err = rms(deltas.iter().copied());
        let (mut checked, mut agreed) = (0, 0);
        for (p, w) in prompts.iter().zip(&want_greedy) {
            let got = greedy(&model, p, 12);
            for ((g, _), (t, margin)) in got.iter().zip(w) {
                if *margin < 4.0 * err {
                    break; // the reliable prefix ends here
                }
                checked += 1;
                agreed += usize::from(g == t);
            }
        }
        let rel = err / ref_rms;
        println!(
            "| {ftype:?} | {rel:.5} | {bound} | {max_abs:.3} | {top1}/{positions} | {checked} / {agreed} |"
        );
        if rel > bound || agreed != checked {
            failures.push(format!(
                "{ftype:?}: RMS(Δ)/RMS {rel} (bound {bound}), greedy {agreed}/{checked}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The file holds what was asked: every matrix in the type, or the mix's Q6_K where
/// llama.cpp puts it (output head; attn_v and ffn_down of `use_more_bits` layers).
fn check_types(path: &Path, ftype: FileType) {
    let types = tensor_types(path);
    let matrices: Vec<(&String, &GgmlDType)> = types
        .iter()
        .filter(|(k, _)| !k.contains("norm") && k.ends_with(".weight") && *k != "rope_freqs.weight")
        .collect();
    match ftype {
        FileType::All(t) => {
            for (name, &got) in &matrices {
                assert_eq!(got, t, "{name} in a {t:?} file");
            }
        }
        FileType::Q4KM | FileType::Q5KM => {
            let base = if ftype == FileType::Q4KM {
                GgmlDType::Q4K
            } else {
                GgmlDType::Q5K
            };
            assert_eq!(types["output.weight"], GgmlDType::Q6K);
            assert_eq!(types["blk.0.attn_q.weight"], base);
            // 4 layers: use_more_bits picks layer 2 (every third after the first eighth) and 3.
            for l in 0..LAYERS {
                let want = if l >= 2 { GgmlDType::Q6K } else { base };
                assert_eq!(
                    types[&format!("blk.{l}.attn_v.weight")],
                    want,
                    "layer {l} attn_v"
                );
                assert_eq!(
                    types[&format!("blk.{l}.ffn_down.weight")],
                    want,
                    "layer {l} ffn_down"
                );
            }
        }
    }
}
