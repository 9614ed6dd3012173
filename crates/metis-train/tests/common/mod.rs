//! Helpers shared by the tests: the built-in demo task with a very small model, a short SFT
//! of it, and a random Qwen3-style model.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use metis_train::demo::{build, DemoConfig, DemoPaths};
use metis_train::lora::SplitMix64;
use metis_train::sft::{run_sft, SftConfig};
use serde_json::json;

pub fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

/// The demo task under `dir/task` with a `layers`-layer model (hidden 32, 2 query heads and 1
/// kv head, vocabulary 384).
pub fn tiny_demo(dir: &Path, layers: usize) -> DemoPaths {
    let mut cfg = DemoConfig::new(data_dir(), dir.join("task"));
    cfg.hidden = 32;
    cfg.layers = layers;
    cfg.heads = 2;
    cfg.kv_heads = 1;
    cfg.intermediate = 64;
    cfg.vocab = 384;
    build(&cfg).unwrap()
}

/// The demo model SFT-ed for `steps` steps (lr 1e-2, batch 8) under `dir/sft`; returns the
/// final model directory.
pub fn sft(demo: &DemoPaths, dir: &Path, steps: u64) -> PathBuf {
    let out = dir.join("sft");
    let mut sft = SftConfig::new(&demo.model, &demo.sft, &out);
    sft.max_steps = Some(steps);
    sft.lr = 1e-2;
    sft.batch_size = 8;
    sft.max_len = 128;
    sft.save_every = steps;
    run_sft(&sft, false).unwrap();
    out.join("final")
}

/// A random Qwen3 model (q/k norm, attention bias, untied head) written to `dir`.
#[allow(dead_code)] // the gradient tests' model; the GRPO tests include this module too
pub fn write_qwen3(dir: &Path) {
    let (v, h, inter, nh, nkv, hd, layers) =
        (96usize, 32usize, 48usize, 4usize, 2usize, 8usize, 2usize);
    let config = json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": nh, "num_key_value_heads": nkv, "head_dim": hd,
        "rms_norm_eps": 1e-6, "vocab_size": v, "rope_theta": 1000000.0,
        "tie_word_embeddings": false, "attention_bias": true, "hidden_act": "silu",
        "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = SplitMix64::new(42);
    let mut randn = |shape: &[usize], std: f64, mean: f64| -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller
                let u1 = rng.next_f64().max(1e-12);
                let u2 = rng.next_f64();
                (mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos())
                    as f32
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let mut t: Vec<(String, Tensor)> = vec![
        ("model.embed_tokens.weight".into(), randn(&[v, h], 1.0, 0.0)),
        ("model.norm.weight".into(), randn(&[h], 0.1, 1.0)),
        (
            "lm_head.weight".into(),
            randn(&[v, h], 1.0 / (h as f64).sqrt(), 0.0),
        ),
    ];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        let lin = |name: &str, out: usize, inp: usize| (format!("{p}.{name}.weight"), out, inp);
        for (name, out, inp) in [
            lin("self_attn.q_proj", nh * hd, h),
            lin("self_attn.k_proj", nkv * hd, h),
            lin("self_attn.v_proj", nkv * hd, h),
            lin("self_attn.o_proj", h, nh * hd),
            lin("mlp.gate_proj", inter, h),
            lin("mlp.up_proj", inter, h),
            lin("mlp.down_proj", h, inter),
        ] {
            let w = randn(&[out, inp], 1.0 / (inp as f64).sqrt(), 0.0);
            t.push((name, w));
        }
        for (name, n) in [
            ("q_proj", nh * hd),
            ("k_proj", nkv * hd),
            ("v_proj", nkv * hd),
            ("o_proj", h),
        ] {
            t.push((format!("{p}.self_attn.{name}.bias"), randn(&[n], 0.5, 0.0)));
        }
        t.push((
            format!("{p}.self_attn.q_norm.weight"),
            randn(&[hd], 0.1, 1.0),
        ));
        t.push((
            format!("{p}.self_attn.k_norm.weight"),
            randn(&[hd], 0.1, 1.0),
        ));
        t.push((format!("{p}.input_layernorm.weight"), randn(&[h], 0.1, 1.0)));
        t.push((
            format!("{p}.post_attention_layernorm.weight"),
            randn(&[h], 0.1, 1.0),
        ));
    }
    metis_train::checkpoint::write_safetensors(
        &dir.join("model.safetensors"),
        &t,
        Default::default(),
    )
    .unwrap();
}
