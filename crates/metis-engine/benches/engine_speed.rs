//! Engine speed on CPU: prefill tokens/s on a 512-token prompt and decode tokens/s for 128
//! greedy tokens through the KV cache, for random-init models of real shapes, at F32 and Q8_0
//! (GGUF), with the peak resident memory of each run; `--prepare` also writes Q4_K_M and Q4_1.
//!
//! Each configuration runs in its own process (this binary re-invoked with `--child`) so that
//! peak memory (`VmHWM`) belongs to that configuration alone. The measuring code mirrors the
//! llama.cpp reference in `shared/reference/perf-baselines.md`: BOS + 511 random ids in
//! [1000, 40000) as one prefill batch, then 128 argmax steps.
//!
//! Run: `cargo bench -p metis-engine --bench engine_speed`
//! Shapes: `METIS_BENCH_SHAPES=135m,1b` (default `135m`; the 1.2B shape needs ~5 GB of disk
//! and memory at F32). Models are written under `METIS_BENCH_DIR` (default: a temp dir).
//!
//! `bench/engine_vs_llamacpp.py` drives this binary for the side-by-side comparison with
//! llama.cpp: `--prepare DIR SHAPES` writes the models (HF safetensors, GGUF F32 and Q8_0)
//! and prints their paths as JSON; `--child PATH` measures one model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use metis_engine::model::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Shape {
    name: &'static str,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    intermediate: usize,
    vocab: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "135m",
        hidden: 576,
        layers: 30,
        heads: 9,
        kv_heads: 3,
        intermediate: 1536,
        vocab: 49_152,
    },
    Shape {
        name: "1b",
        hidden: 2048,
        layers: 16,
        heads: 32,
        kv_heads: 8,
        intermediate: 8192,
        vocab: 128_256,
    },
];

/// Writes a random-init tied Llama checkpoint (N(0, 0.02) weights, unit norms).
fn write_model(shape: &Shape, dir: &Path) -> candle_core::Result<()> {
    std::fs::create_dir_all(dir)?;
    let head_dim = shape.hidden / shape.heads;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": 1e-5,
        "vocab_size": shape.vocab,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "tie_word_embeddings": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "hidden_act": "silu",
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let dev = Device::Cpu;
    let rand = |r: usize, c: usize| Tensor::randn(0f32, 0.02, (r, c), &dev);
    let ones = |n: usize| Tensor::ones(n, DType::F32, &dev);
    let (h, kv) = (shape.hidden, shape.kv_heads * head_dim);
    let mut tensors = vec![
        (
            "model.embed_tokens.weight".to_owned(),
            rand(shape.vocab, h)?,
        ),
        ("model.norm.weight".to_owned(), ones(h)?),
    ];
    for l in 0..shape.layers {
        let p = format!("model.layers.{l}");
        for (name, t) in [
            ("self_attn.q_proj.weight", rand(h, h)?),
            ("self_attn.k_proj.weight", rand(kv, h)?),
            ("self_attn.v_proj.weight", rand(kv, h)?),
            ("self_attn.o_proj.weight", rand(h, h)?),
            ("mlp.gate_proj.weight", rand(shape.intermediate, h)?),
            ("mlp.up_proj.weight", rand(shape.intermediate, h)?),
            ("mlp.down_proj.weight", rand(h, shape.intermediate)?),
            ("input_layernorm.weight", ones(h)?),
            ("post_attention_layernorm.weight", ones(h)?),
        ] {
            tensors.push((format!("{p}.{name}"), t));
        }
    }
    candle_core::safetensors::save(
        &tensors
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        dir.join("model.safetensors"),
    )
}

/// Peak resident set size of this process in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Median of a non-empty list.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Measures one model: one untimed warm-up, then `METIS_BENCH_RUNS` (default 3) timed runs of
/// a 512-token prefill and 128 greedy decode steps from an empty cache; prints one JSON line
/// with the median and best tokens/s and the process's peak RSS.
fn child(model_path: &Path) {
    let runs: usize = std::env::var("METIS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let model = Model::load(model_path, None, &Device::Cpu).expect("load model");
    eprintln!(
        "kernels: {}; rayon threads: {}",
        metis_engine::quant::kernel_set(),
        rayon::current_num_threads()
    );
    let mut rng = StdRng::seed_from_u64(0);
    let mut prompt = vec![1u32];
    prompt.extend((0..511).map(|_| rng.random_range(1000..40_000u32)));
    let row = |ids: &[u32]| {
        Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    // Warm-up (allocations, page-in of weights): 16-token prompt + 4 decode steps.
    let mut cache = model.new_cache(1);
    model
        .forward_last(&row(&prompt[..16]), &mut cache)
        .expect("warm-up");
    for i in 0..4 {
        model
            .forward_last(&row(&prompt[16 + i..17 + i]), &mut cache)
            .expect("warm-up");
    }
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut cache = model.new_cache(1);
        let t0 = Instant::now();
        let mut logits = model
            .forward_last(&row(&prompt), &mut cache)
            .expect("prefill");
        prefill.push(512.0 / t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        for _ in 0..128 {
            let last: Vec<f32> = logits.get(0).unwrap().to_vec1().unwrap();
            let next = metis_engine::sampling::argmax(&last);
            logits = model
                .forward_last(&row(&[next]), &mut cache)
                .expect("decode");
        }
        decode.push(128.0 / t1.elapsed().as_secs_f64());
    }
    // Where the time goes: a 512-token prefill, then 32 decode steps, with the product and
    // attention timers on (products of GGUF/mapped matrices and attention read in place from
    // the cache; 0 for other weights and paths).
    use metis_engine::quant::profile::{self, Phase};
    profile::enable();
    profile::take(Phase::Products);
    profile::take(Phase::Attention);
    let mut cache = model.new_cache(1);
    let t_prefill = Instant::now();
    let mut logits = model
        .forward_last(&row(&prompt), &mut cache)
        .expect("prefill");
    let prefill_ms = t_prefill.elapsed().as_secs_f64() * 1e3;
    let prefill_products_ms = profile::take(Phase::Products).1 as f64 / 1e6;
    let prefill_attention_ms = profile::take(Phase::Attention).1 as f64 / 1e6;
    let t2 = Instant::now();
    for _ in 0..32 {
        let last: Vec<f32> = logits.get(0).unwrap().to_vec1().unwrap();
        let next = metis_engine::sampling::argmax(&last);
        logits = model
            .forward_last(&row(&[next]), &mut cache)
            .expect("decode");
    }
    let step_ms = t2.elapsed().as_secs_f64() * 1e3 / 32.0;
    let (calls, nanos) = profile::take(Phase::Products);
    let products_ms = nanos as f64 / 1e6 / 32.0;
    let attention_ms = profile::take(Phase::Attention).1 as f64 / 1e6 / 32.0;
    println!(
        "{}",
        serde_json::json!({
            "prefill_ms": prefill_ms,
            "prefill_products_ms": prefill_products_ms,
            "prefill_attention_ms": prefill_attention_ms,
            "decode_step_ms": step_ms,
            "decode_products_ms": products_ms,
            "decode_attention_ms": attention_ms,
            "decode_products_per_step": calls as f64 / 32.0,
            "prefill_tok_s": median(prefill.clone()),
            "decode_tok_s": median(decode.clone()),
            "prefill_best": prefill.iter().cloned().fold(0.0, f64::max),
            "decode_best": decode.iter().cloned().fold(0.0, f64::max),
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}

/// The GGUF files `--prepare` writes for each shape, by key.
const FORMATS: [(&str, &str); 4] = [
    ("f32", "f32"),
    ("q8_0", "q8_0"),
    ("q4_k_m", "q4_k_m"),
    ("q4_1", "q4_1"),
];

/// Writes every model of `shapes` (comma-separated names) under `root` unless present; prints
/// one JSON object `{shape: {"hf": dir, "f32": gguf, "q8_0": gguf, "q4_k_m": gguf, "q4_1": gguf}}`.
fn prepare(root: &Path, shapes: &str) {
    let mut out = serde_json::Map::new();
    for shape in SHAPES
        .iter()
        .filter(|s| shapes.split(',').any(|x| x == s.name))
    {
        let hf = root.join(shape.name).join("hf");
        if !hf.join("model.safetensors").exists() {
            write_model(shape, &hf).expect("write random model");
        }
        let mut paths = serde_json::Map::new();
        paths.insert("hf".into(), hf.display().to_string().into());
        for (key, name) in FORMATS {
            let path = root.join(shape.name).join(format!("model-{key}.gguf"));
            if !path.exists() {
                let tmp = path.with_extension("gguf.tmp");
                let ftype = metis_engine::gguf::FileType::parse(name).expect("known file type");
                metis_engine::gguf::write_gguf(&hf, &tmp, ftype).expect("write GGUF");
                std::fs::rename(&tmp, &path).expect("rename GGUF");
            }
            paths.insert(key.into(), path.display().to_string().into());
        }
        out.insert(shape.name.into(), paths.into());
    }
    println!("{}", serde_json::Value::Object(out));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--prepare") {
        prepare(Path::new(&args[i + 1]), &args[i + 2]);
        return;
    }
    let shapes = std::env::var("METIS_BENCH_SHAPES").unwrap_or_else(|_| "135m".to_owned());
    let tmp;
    let root: PathBuf = match std::env::var_os("METIS_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = std::env::temp_dir().join(format!("metis-engine-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    println!("shape  format  prefill tok/s  decode tok/s  peak RSS MiB");
    for shape in SHAPES
        .iter()
        .filter(|s| shapes.split(',').any(|x| x == s.name))
    {
        let hf = root.join(shape.name).join("hf");
        if !hf.join("model.safetensors").exists() {
            write_model(shape, &hf).expect("write random model");
        }
        let q8 = root.join(shape.name).join("model-q8_0.gguf");
        if !q8.exists() {
            metis_engine::gguf::write_gguf(&hf, &q8, GgmlDType::Q8_0).expect("write Q8_0 GGUF");
        }
        for (format, path) in [("F32", hf.as_path()), ("Q8_0", q8.as_path())] {
            let out = Command::new(&args[0])
                .arg("--child")
                .arg(path)
                .output()
                .expect("run child");
            let line = String::from_utf8_lossy(&out.stdout);
            match serde_json::from_str::<serde_json::Value>(line.trim()) {
                Ok(v) => println!(
                    "{:<6} {:<6} {:>14.1} {:>13.2} {:>13.0}",
                    shape.name,
                    format,
                    v["prefill_tok_s"].as_f64().unwrap_or(f64::NAN),
                    v["decode_tok_s"].as_f64().unwrap_or(f64::NAN),
                    v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
                ),
                Err(_) => println!(
                    "{:<6} {:<6} failed: {}",
                    shape.name,
                    format,
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
    }
    if std::env::var_os("METIS_BENCH_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
}
