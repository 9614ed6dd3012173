//! The host step against the tensor path: the same logits and cache contents, bit for bit, for
//! Llama (untied head), Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms) and a quantized GGUF,
//! decoding several sequences of different lengths as one ragged step, and prompts (short
//! ones through the dot kernels, long ones through gemm, one continuing a cache).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::model::params::ModelParams;
use crate::model::{KvCache, Model};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../../shared/fixtures/{name}/f32"))
}

/// A seeded random Qwen3 (q/k norms, GQA) built from the parameter table.
fn qwen3() -> Model {
    let text = r#"{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "rms_norm_eps": 1e-06, "vocab_size": 128, "max_position_embeddings": 256,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "eos_token_id": 2}"#;
    let config = ModelConfig::from_json_str(text, "config.json").unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let tensors: HashMap<String, Tensor> = ModelParams::new(&config)
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            // Norm weights near 1, everything else small and random.
            let is_norm = p.shape.len() == 1 && p.hf_name.contains("norm");
            let v: Vec<f32> = (0..n)
                .map(|_| if is_norm { 1.0 + next() } else { next() * 0.4 })
                .collect();
            let t = Tensor::from_vec(v, p.shape.as_slice(), &Device::Cpu).unwrap();
            (p.hf_name.clone(), t)
        })
        .collect();
    Model::from_tensors(config, tensors, DType::F32, &Device::Cpu).unwrap()
}

/// Logits of `token` through `cache` by the tensor path (the layers' candle graph).
fn tensor_step(model: &Model, token: u32, cache: &mut KvCache) -> Vec<f32> {
    let ids = Tensor::new(&[[token]], &Device::Cpu).unwrap();
    let start = cache.next_position();
    let hidden = model.hidden(&ids, start, cache, None).unwrap();
    let logits = model.lm_head.forward(&hidden.squeeze(1).unwrap()).unwrap();
    logits.squeeze(0).unwrap().to_vec1().unwrap()
}

/// Last-position logits of the prompt `ids` through `cache` by the tensor path.
fn tensor_prompt(model: &Model, ids: &[u32], cache: &mut KvCache) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let start = cache.next_position();
    let hidden = model.hidden(&input, start, cache, None).unwrap();
    let last = hidden
        .narrow(1, ids.len() - 1, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let logits = model.lm_head.forward(&last).unwrap();
    logits.squeeze(0).unwrap().to_vec1().unwrap()
}

/// Prompts of 5 and 40 tokens, and one of 23 continued by 37 more through the same cache, by
/// the host path and the tensor path; then one decode step from each cache.
fn host_prompt_equals_tensor_path(model: &Model, vocab: u32) {
    for chunks in [&[5usize][..], &[40], &[23, 37]] {
        let (mut host, mut reference) = (model.new_cache(1), model.new_cache(1));
        let mut last = Vec::new();
        for (c, &len) in chunks.iter().enumerate() {
            let ids: Vec<u32> = (0..len as u32)
                .map(|i| (i * 17 + 3 + 5 * c as u32) % vocab)
                .collect();
            let got: Vec<f32> = model
                .host_prompt(&ids, &mut host)
                .unwrap()
                .expect("host plan")
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = tensor_prompt(model, &ids, &mut reference);
            assert!(got == want, "chunks {chunks:?}, chunk {c}: logits differ");
            assert_eq!(host.len(), reference.len());
            last = got;
        }
        let next = crate::sampling::argmax(&last);
        let got: Vec<f32> = model
            .host_decode(&[next], &mut [&mut host])
            .unwrap()
            .expect("host plan")
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            got == tensor_step(model, next, &mut reference),
            "{chunks:?}: decode after"
        );
    }
}

/// Prefills three prompts of different lengths twice (one cache set per path), then decodes
/// `steps` tokens: all three in one host step, and each alone through the tensor path.
fn host_equals_tensor_path(model: &Model, vocab: u32, steps: usize) {
    assert!(model.host_plan().is_some(), "the host step applies here");
    let prompts: Vec<Vec<u32>> = [7usize, 1, 30]
        .iter()
        .enumerate()
        .map(|(p, &len)| {
            (0..len as u32)
                .map(|i| (i * 13 + 5 * p as u32 + 1) % vocab)
                .collect()
        })
        .collect();
    let prefill = |prompt: &[u32]| {
        let mut cache = model.new_cache(1);
        let ids = Tensor::new(prompt, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.forward_last(&ids, &mut cache).unwrap();
        let row: Vec<f32> = logits.squeeze(0).unwrap().to_vec1().unwrap();
        (cache, crate::sampling::argmax(&row))
    };
    let (mut host, mut next): (Vec<KvCache>, Vec<u32>) = prompts.iter().map(|p| prefill(p)).unzip();
    let mut reference: Vec<KvCache> = prompts.iter().map(|p| prefill(p).0).collect();
    for step in 0..steps {
        let mut refs: Vec<&mut KvCache> = host.iter_mut().collect();
        let got: Vec<Vec<f32>> = model
            .host_decode(&next, &mut refs)
            .unwrap()
            .expect("host plan")
            .to_vec2()
            .unwrap();
        for (i, cache) in reference.iter_mut().enumerate() {
            let want = tensor_step(model, next[i], cache);
            assert!(
                got[i] == want,
                "step {step}, sequence {i}: host and tensor logits differ"
            );
            assert_eq!(host[i].len(), cache.len());
            assert_eq!(host[i].next_position(), cache.next_position());
        }
        next = got.iter().map(|row| crate::sampling::argmax(row)).collect();
    }
}

#[test]
fn llama_host_step_equals_tensor_path() {
    let model = Model::load(&fixture("llama31-tiny-v512"), None, &Device::Cpu).unwrap();
    host_equals_tensor_path(&model, 512, 5);
    host_prompt_equals_tensor_path(&model, 512);
}

#[test]
fn qwen2_host_step_with_biases_equals_tensor_path() {
    let model = Model::load(&fixture("qwen2-tiny-v512"), None, &Device::Cpu).unwrap();
    host_equals_tensor_path(&model, 512, 5);
    host_prompt_equals_tensor_path(&model, 512);
}

#[test]
fn qwen3_host_step_with_qk_norms_equals_tensor_path() {
    let model = qwen3();
    host_equals_tensor_path(&model, 128, 5);
    host_prompt_equals_tensor_path(&model, 128);
}

#[test]
fn quantized_gguf_host_step_equals_tensor_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    crate::gguf::write_gguf(
        &fixture("llama31-tiny-v512"),
        &path,
        crate::gguf::FileType::All(crate::gguf::GgmlDType::Q4_1),
    )
    .unwrap();
    let model = Model::load(&path, None, &Device::Cpu).unwrap();
    host_equals_tensor_path(&model, 512, 5);
    host_prompt_equals_tensor_path(&model, 512);
}

#[test]
fn bf16_models_keep_the_tensor_path() {
    let model = Model::load(
        Path::new(&fixture("llama31-tiny-v512")),
        Some(DType::BF16),
        &Device::Cpu,
    )
    .unwrap();
    assert!(model.host_plan().is_none());
}
