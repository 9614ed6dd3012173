//! The fused kernels against the spelled-out candle forms they replace: outputs and the
//! gradients of every input, in f64 (agreement to rounding) and f32, over dense, padded,
//! packed and holed batch layouts, grouped-query and plain heads, and sequences longer than
//! one attention query block.

use candle_core::{DType, Device, Tensor, Var};

use crate::model::fused::{self, AttentionMask};
use crate::model::layers::{dense_attention, mm, rms_norm_spelled, swiglu_spelled};
use crate::model::layout::BatchLayout;
use crate::model::logprobs_spelled;
use crate::model::rope::Rope;
use crate::rng::SplitMix64;
use metis_engine::config::{RopeConfig, RopeScaling};

fn random(shape: &[usize], seed: u64, dtype: DType) -> Var {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let scale = b.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Output of `f` and the gradients of `sum(out * weights)` with respect to `inputs`.
fn run(inputs: &[&Var], seed: u64, f: impl Fn(&[Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
    let ts: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts);
    let w = random(out.dims(), seed, out.dtype());
    let loss = (&out * w.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = ts
        .iter()
        .map(|t| grads.get(t).expect("gradient").clone())
        .collect();
    (out, g)
}

fn assert_same(
    what: &str,
    inputs: &[&Var],
    fused: impl Fn(&[Tensor]) -> Tensor,
    spelled: impl Fn(&[Tensor]) -> Tensor,
    tol: f64,
) {
    let (a, ga) = run(inputs, 99, fused);
    let (b, gb) = run(inputs, 99, spelled);
    let d = max_rel_diff(&a, &b);
    assert!(d < tol, "{what}: output differs by {d:e}");
    for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
        let d = max_rel_diff(x, y);
        assert!(d < tol, "{what}: gradient of input {i} differs by {d:e}");
        let norm = y
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(
            norm.to_scalar::<f64>().unwrap() > 0.0,
            "{what}: zero gradient {i}"
        );
    }
}

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-12
    } else {
        2e-5
    }
}

#[test]
fn rms_norm_swiglu_linear_match() {
    for dtype in [DType::F64, DType::F32] {
        let x = random(&[3, 5, 24], 1, dtype);
        let w = random(&[24], 2, dtype);
        assert_same(
            "rms_norm",
            &[&x, &w],
            |t| fused::rms_norm(&t[0], &t[1], 1e-5).unwrap(),
            |t| rms_norm_spelled(&t[0], &t[1], 1e-5).unwrap(),
            tol(dtype),
        );
        // Per-head norm: each group of 8 of the last dim's 24 values is one vector.
        let wh = random(&[8], 21, dtype);
        assert_same(
            "rms_norm per head",
            &[&x, &wh],
            |t| fused::rms_norm(&t[0], &t[1], 1e-5).unwrap(),
            |t| {
                rms_norm_spelled(&t[0].reshape((3, 5, 3, 8)).unwrap(), &t[1], 1e-5)
                    .unwrap()
                    .reshape((3, 5, 24))
                    .unwrap()
            },
            tol(dtype),
        );
        let g = random(&[7, 40], 3, dtype);
        let u = random(&[7, 40], 4, dtype);
        assert_same(
            "swiglu",
            &[&g, &u],
            |t| fused::swiglu(&t[0], &t[1]).unwrap(),
            |t| swiglu_spelled(&t[0], &t[1]).unwrap(),
            tol(dtype),
        );
        let x = random(&[2, 6, 16], 31, dtype);
        let wg = random(&[24, 16], 32, dtype);
        let wu = random(&[24, 16], 33, dtype);
        assert_same(
            "gated mlp",
            &[&x, &wg, &wu],
            |t| fused::gated_mlp_in(&t[0], &t[1], &t[2]).unwrap(),
            |t| {
                let lin = |w: &Tensor| {
                    mm(&t[0].reshape((12, 16)).unwrap(), &w.t().unwrap())
                        .unwrap()
                        .reshape((2, 6, 24))
                        .unwrap()
                };
                swiglu_spelled(&lin(&t[1]), &lin(&t[2])).unwrap()
            },
            tol(dtype),
        );
        // Large enough that gemm fans out over the pool.
        let x = random(&[300, 96], 5, dtype);
        let w = random(&[80, 96], 6, dtype);
        assert_same(
            "linear",
            &[&x, &w],
            |t| fused::linear(&t[0], &t[1]).unwrap(),
            |t| mm(&t[0], &t[1].t().unwrap()).unwrap(),
            tol(dtype),
        );
    }
}

#[test]
fn token_logprobs_match() {
    for dtype in [DType::F64, DType::F32] {
        for temperature in [1.0, 0.7] {
            let logits = random(&[2, 9, 50], 7, dtype);
            let logits_scaled = Var::from_tensor(&(logits.as_tensor() * 6.0).unwrap()).unwrap();
            let mut rng = SplitMix64::new(8);
            let t: Vec<u32> = (0..18).map(|_| rng.below(50) as u32).collect();
            let targets = Tensor::from_vec(t, (2, 9), &Device::Cpu).unwrap();
            assert_same(
                "token_logprobs",
                &[&logits_scaled],
                |x| fused::token_logprobs(&x[0], &targets, temperature).unwrap(),
                |x| logprobs_spelled(&x[0], &targets, temperature).unwrap(),
                tol(dtype),
            );
        }
    }
}

/// Layouts: name, layout.
fn layouts(b: usize, s: usize) -> Vec<(&'static str, BatchLayout)> {
    let lengths: Vec<usize> = (0..b).map(|r| s - (r * 3) % s.max(1)).collect();
    let packed: Vec<Vec<u32>> = (0..b)
        .map(|r| {
            (0..s)
                .map(|i| {
                    if i + r >= s - 1 {
                        0
                    } else {
                        1 + (i / 5) as u32
                    }
                })
                .collect()
        })
        .collect();
    // A padding hole inside a document, and left padding.
    let holes: Vec<Vec<u32>> = (0..b)
        .map(|r| (0..s).map(|i| u32::from(!(i == s / 2 || i < r))).collect())
        .collect();
    vec![
        ("dense", BatchLayout::dense(b, s)),
        (
            "right-padded",
            BatchLayout::from_lengths(&lengths, s).unwrap(),
        ),
        ("packed", BatchLayout::packed(&packed).unwrap()),
        ("holes", BatchLayout::from_attention_mask(&holes).unwrap()),
    ]
}

#[test]
fn attention_matches_spelled_out_on_every_layout() {
    let rope_cfg = RopeConfig {
        theta: 10000.0,
        scaling: RopeScaling::None,
    };
    // (b, s, nh, nkv, d): grouped-query, plain multi-head, and longer than one query block.
    for (b, s, nh, nkv, d) in [(2, 13, 4, 2, 8), (1, 9, 3, 3, 6), (1, 300, 2, 1, 4)] {
        let rope = Rope::new(&rope_cfg, d);
        for dtype in [DType::F64, DType::F32] {
            let q = random(&[b, s, nh, d], 11, dtype);
            let k = random(&[b, s, nkv, d], 12, dtype);
            let v = random(&[b, s, nkv, d], 13, dtype);
            for (name, layout) in layouts(b, s) {
                if s > 100 && name != "packed" && name != "holes" {
                    continue;
                }
                let tables = rope.half_tables(layout.positions());
                let mask = AttentionMask::new(layout.segments(), s);
                let (cos, sin) = rope
                    .tables(layout.positions(), b, s, dtype, &Device::Cpu)
                    .unwrap();
                let bias = layout.attention_bias(dtype, &Device::Cpu).unwrap();
                let scale = (d as f64).powf(-0.5);
                assert_same(
                    &format!("attention {name} b{b} s{s} nh{nh} nkv{nkv} {dtype:?}"),
                    &[&q, &k, &v],
                    |t| {
                        let flat = |x: &Tensor| x.reshape((b, s, ())).unwrap();
                        fused::rope_attention(
                            &flat(&t[0]),
                            &flat(&t[1]),
                            &flat(&t[2]),
                            &tables,
                            &mask,
                            scale,
                            d,
                        )
                        .unwrap()
                        .reshape((b, s, nh, d))
                        .unwrap()
                    },
                    |t| {
                        dense_attention(&t[0], &t[1], &t[2], &cos, &sin, &bias, scale)
                            .unwrap()
                            .contiguous()
                            .unwrap()
                    },
                    tol(dtype) * 10.0,
                );
            }
        }
    }
}

#[test]
fn exp_f32_is_within_two_ulp_of_exp() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let got = f64::from(fused::exp_f32(x));
        let want = f64::from(x).exp();
        worst = worst.max((got - want).abs() / want);
        x += 0.000_37;
    }
    // f32 has a 2^-23 ≈ 1.19e-7 relative spacing; libm's expf is itself within 1 ulp.
    assert!(worst < 2.5e-7, "worst relative error {worst:e}");
    assert_eq!(fused::exp_f32(0.0), 1.0);
    assert_eq!(fused::exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(fused::exp_f32(-1000.0), 0.0);
    assert!(fused::exp_f32(f32::NAN).is_nan());
}

#[test]
fn gated_mlp_backward_twice_recomputes_the_same_gradients() {
    let x = random(&[5, 16], 41, DType::F64);
    let wg = random(&[24, 16], 42, DType::F64);
    let wu = random(&[24, 16], 43, DType::F64);
    let y = fused::gated_mlp_in(x.as_tensor(), wg.as_tensor(), wu.as_tensor()).unwrap();
    let loss = y.sqr().unwrap().sum_all().unwrap();
    let first = loss.backward().unwrap();
    let second = loss.backward().unwrap(); // the saved pre-activations are gone: recomputed
    for v in [&x, &wg, &wu] {
        let (a, b) = (
            first.get(v.as_tensor()).unwrap(),
            second.get(v.as_tensor()).unwrap(),
        );
        assert!(max_rel_diff(a, b) < 1e-14);
    }
}
