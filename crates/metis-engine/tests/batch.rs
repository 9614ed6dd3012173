//! Batched generation of prompts of different lengths (left padding) against the HF reference
//! greedy continuations and against unbatched runs. Run with
//! `cargo test --release -p metis-engine --test batch -- --nocapture` to see the diffs.

use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use metis_engine::generate::{generate, generate_batch, left_pad, GenerateOptions};
use metis_engine::model::Model;
use metis_engine::sampling::SamplingParams;
use serde_json::Value;

const MODELS: [&str; 2] = ["llama31-tiny-v512", "qwen2-tiny-v512"];

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

fn as_u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The model (f32) and the reference's prompts and greedy continuations.
fn load(name: &str) -> (Model, Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let dir = fixtures().join(name);
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let prompts = reference["prompts"].as_array().unwrap();
    let results = reference["f32"].as_array().unwrap();
    // Results are matched by prompt name (there are extra entries, e.g. position offsets).
    let greedy = prompts
        .iter()
        .map(|p| {
            let r = results
                .iter()
                .find(|r| r["name"] == p["name"])
                .expect("a result per prompt");
            as_u32s(&r["greedy_new_ids"])
        })
        .collect();
    let prompts = prompts.iter().map(|p| as_u32s(&p["ids"])).collect();
    let model = Model::load(&dir.join("f32"), Some(DType::F32), &Device::Cpu).unwrap();
    (model, prompts, greedy)
}

fn greedy_opts(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ignore_eos: true,
        ..GenerateOptions::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batched_prefill_logits_match_unbatched() {
    for name in MODELS {
        let (model, prompts, _) = load(name);
        let (input, pads) = left_pad(&prompts, 0, &Device::Cpu).unwrap();
        let mut cache = model.new_padded_cache(&pads);
        let batched: Vec<Vec<f32>> = model
            .forward_batch(&input, &mut cache)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let mut single = model.new_cache(1);
            let ids = Tensor::new(prompt.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let want: Vec<f32> = model
                .forward_last(&ids, &mut single)
                .unwrap()
                .get(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let diff = max_abs_diff(&batched[i], &want);
            println!(
                "{name} prompt {i} (len {}, pad {}): last-position logits max |diff| = {diff:e}",
                prompt.len(),
                pads[i]
            );
            assert!(diff <= 1e-4, "{name} prompt {i}: {diff}");
        }
    }
}

#[test]
fn batched_greedy_matches_reference() {
    for name in MODELS {
        let (model, prompts, greedy) = load(name);
        let gens = generate_batch(&model, None, &prompts, &greedy_opts(20), false).unwrap();
        assert_eq!(gens.len(), prompts.len());
        for (i, (g, want)) in gens.iter().zip(&greedy).enumerate() {
            assert_eq!(want.len(), 20);
            assert_eq!(&g.prompt_ids, &prompts[i]);
            assert_eq!(&g.ids, want, "{name} prompt {i}");
            assert_eq!(g.logprobs.len(), 20);
            assert_eq!(g.finish_reason.as_str(), "length");
        }
    }
}

#[test]
fn single_prompt_batch_equals_generate() {
    let (model, prompts, _) = load(MODELS[0]);
    let greedy = greedy_opts(12);
    let sampled = GenerateOptions {
        sampling: SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            seed: 7,
            ..SamplingParams::default()
        },
        ..greedy_opts(12)
    };
    for opts in [greedy, sampled] {
        for prompt in &prompts {
            let one = generate(&model, None, prompt, &opts, false, |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
            let batch =
                generate_batch(&model, None, std::slice::from_ref(prompt), &opts, false).unwrap();
            assert_eq!(batch.len(), 1);
            assert_eq!(batch[0].ids, one.ids);
            assert_eq!(batch[0].finish_reason, one.finish_reason);
            let diff = max_abs_diff(&batch[0].logprobs, &one.logprobs);
            assert!(diff <= 1e-5, "logprobs differ by {diff}");
        }
    }
}

#[test]
fn finished_sequences_stop_independently() {
    let (model, prompts, greedy) = load(MODELS[0]);
    // Stop prompt 1 at its 5th greedy token: the others keep the reference continuations.
    let stop = greedy[1][4];
    let opts = GenerateOptions {
        stop_ids: vec![stop],
        ignore_eos: false,
        ..greedy_opts(20)
    };
    let gens = generate_batch(&model, None, &prompts, &opts, false).unwrap();
    for (i, g) in gens.iter().enumerate() {
        let cut = greedy[i].iter().position(|&t| t == stop);
        match cut {
            Some(n) => {
                assert_eq!(g.ids, greedy[i][..n], "prompt {i}");
                assert_eq!(g.finish_reason.as_str(), "stop");
            }
            None => {
                assert_eq!(g.ids, greedy[i], "prompt {i}");
                assert_eq!(g.finish_reason.as_str(), "length");
            }
        }
    }
    assert!(generate_batch(&model, None, &[], &opts, false)
        .unwrap()
        .is_empty());
    assert!(generate_batch(&model, None, &[vec![1], vec![]], &opts, false).is_err());
}
