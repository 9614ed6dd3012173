//! Ragged batched decoding (`Model::forward_decode_ragged`) against per-sequence decoding:
//! three prompts of different lengths, each prefilled into its own cache, then several decode
//! steps run once batched and once sequence by sequence; the logits must agree.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use metis_engine::model::Model;

fn model() -> Model {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/llama31-tiny-v512/f32"
    ));
    Model::load(&dir, Some(DType::F32), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn ragged_decode_matches_per_sequence_forward() {
    let model = model();
    let dev = Device::Cpu;
    let prompts: Vec<Vec<u32>> = vec![
        (0..23).map(|i| (i * 7 + 1) % 512).collect(),
        vec![1, 5, 9],
        (0..61).map(|i| (i * 13 + 3) % 512).collect(),
    ];
    // Two copies of every cache: one for the ragged path, one for the reference path.
    let mut ragged: Vec<_> = prompts.iter().map(|_| model.new_cache(1)).collect();
    let mut single: Vec<_> = prompts.iter().map(|_| model.new_cache(1)).collect();
    let mut next: Vec<u32> = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let input = Tensor::new(p.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let a: Vec<f32> = model
            .forward_last(&input, &mut ragged[i])
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        model.forward_last(&input, &mut single[i]).unwrap();
        next.push(metis_engine::sampling::argmax(&a));
    }
    let mut lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut worst = 0.0f32;
    for step in 0..6 {
        let mut refs: Vec<&mut _> = ragged.iter_mut().collect();
        let batched: Vec<Vec<f32>> = model
            .forward_decode_ragged(&next, &mut refs)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(batched.len(), single.len());
        for (i, cache) in single.iter_mut().enumerate() {
            let input = Tensor::new(&[next[i]], &dev).unwrap().unsqueeze(0).unwrap();
            // Full per-position logits of the reference forward, [1, 1, vocab].
            let want: Vec<f32> = model
                .forward(&input, cache)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let d = max_abs_diff(&batched[i], &want);
            worst = worst.max(d);
            assert!(d <= 1e-4, "step {step} sequence {i}: max abs diff {d}");
            assert_eq!(ragged[i].len(), cache.len());
            assert_eq!(ragged[i].next_position(), lens[i] + step + 1);
        }
        next = batched
            .iter()
            .map(|r| metis_engine::sampling::argmax(r))
            .collect();
        // Drop the middle sequence after three steps: the others must be unaffected.
        if step == 2 {
            ragged.remove(1);
            single.remove(1);
            next.remove(1);
            lens.remove(1);
        }
    }
    println!("max abs diff over all steps: {worst:e}");
}

#[test]
fn ragged_decode_rejects_bad_input() {
    let model = model();
    let mut c = model.new_cache(1);
    assert!(model.forward_decode_ragged(&[], &mut []).is_err());
    assert!(model.forward_decode_ragged(&[1, 2], &mut [&mut c]).is_err());
    assert!(model
        .forward_decode_ragged(&[100_000], &mut [&mut c])
        .is_err());
    let mut padded = model.new_padded_cache(&[0, 1]);
    assert!(model
        .forward_decode_ragged(&[1], &mut [&mut padded])
        .is_err());
}
