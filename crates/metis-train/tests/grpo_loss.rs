//! GRPO loss and advantages against TRL (`tests/fixtures/grpo_loss_trl.json`, written by
//! `tools/reference/grpo_loss_trl.py` from TRL's own `GRPOTrainer._compute_loss`), plus
//! invariants of the loss.

use candle_core::{DType, Device, Result, Tensor, Var};
use metis_train::grpo::{
    group_advantages, grpo_loss, per_token_logps, LossConfig, LossInputs, LossType, ScaleRewards,
};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/grpo_loss_trl.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn tensor2(rows: &[Vec<f32>]) -> Result<Tensor> {
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu)
}

/// A JSON number, or NaN for null.
fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= TOL
}

#[test]
fn loss_and_gradients_match_trl() -> Result<()> {
    let fx = fixture();
    eprintln!(
        "reference: trl {} / torch {}",
        fx["trl_version"], fx["torch_version"]
    );
    let logp0 = tensor2(&matrix(&fx["logp"]))?;
    let old = tensor2(&matrix(&fx["old_logp"]))?;
    let reference = tensor2(&matrix(&fx["ref_logp"]))?;
    let mask_rows = matrix(&fx["mask"]);
    let mask = tensor2(&mask_rows)?;
    let adv: Vec<f32> = fx["advantages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let advantages = Tensor::new(adv.as_slice(), &Device::Cpu)?;

    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 24);
    let mut seen = std::collections::BTreeSet::new();
    let (mut max_loss, mut max_grad, mut max_metric) = (0f64, 0f64, 0f64);
    for case in cases {
        let loss_type: LossType = case["loss_type"].as_str().unwrap().parse().unwrap();
        let beta = case["beta"].as_f64().unwrap();
        let with_old = case["with_old_logp"].as_bool().unwrap();
        let kl_bias_correction = case["use_bias_correction_kl"].as_bool().unwrap();
        seen.insert((loss_type.name(), beta.to_bits(), kl_bias_correction));
        let cfg = LossConfig {
            loss_type,
            epsilon_low: fx["epsilon"].as_f64().unwrap(),
            epsilon_high: fx["epsilon_high"].as_f64().unwrap(),
            beta,
            max_completion_length: fx["max_completion_length"].as_u64().unwrap() as usize,
            gradient_accumulation_steps: case["gradient_accumulation_steps"].as_u64().unwrap()
                as usize,
            steps_per_generation: Some(case["steps_per_generation"].as_u64().unwrap() as usize),
            kl_bias_correction,
        };
        let logp = Var::from_tensor(&logp0)?;
        let out = grpo_loss(
            &LossInputs {
                logp: logp.as_tensor(),
                old_logp: with_old.then_some(&old),
                ref_logp: (beta != 0.0).then_some(&reference),
                mask: &mask,
                advantages: &advantages,
                num_items_in_batch: Some(case["num_items_in_batch"].as_f64().unwrap()),
            },
            &cfg,
        )?;
        let label = format!(
            "{loss_type} beta={beta} old={with_old} ga={} kl_bias_correction={kl_bias_correction}",
            cfg.gradient_accumulation_steps
        );

        let loss = f64::from(out.loss.to_scalar::<f32>()?);
        let d = (loss - case["loss"].as_f64().unwrap()).abs();
        max_loss = max_loss.max(d);
        assert!(d <= TOL, "{label}: loss {loss} vs TRL {}", case["loss"]);

        let grads = out.loss.backward()?;
        let grad = grads
            .get(&logp)
            .expect("gradient reaches logp")
            .to_vec2::<f32>()?;
        let want = matrix(&case["grad"]);
        for (i, (g_row, w_row)) in grad.iter().zip(&want).enumerate() {
            for (j, (g, w)) in g_row.iter().zip(w_row).enumerate() {
                let d = f64::from((g - w).abs());
                max_grad = max_grad.max(d);
                assert!(d <= TOL, "{label}: grad[{i}][{j}] {g} vs TRL {w}");
                assert!(g.is_finite());
                if mask_rows[i][j] == 0.0 {
                    assert_eq!(*g, 0.0, "{label}: padding token [{i}][{j}] has a gradient");
                }
            }
        }

        let m = &case["metrics"];
        let ours = [
            ("clip_ratio/low_mean", out.metrics.clip_low),
            ("clip_ratio/high_mean", out.metrics.clip_high),
            ("clip_ratio/region_mean", out.metrics.clip_region),
            ("clip_ratio/low_min", out.metrics.clip_low_min),
            ("clip_ratio/high_max", out.metrics.clip_high_max),
        ];
        for (name, value) in ours {
            let d = (value - num(&m[name])).abs();
            max_metric = max_metric.max(d);
            assert!(
                close(value, num(&m[name])),
                "{label}: {name} {value} vs TRL {}",
                m[name]
            );
        }
        if beta != 0.0 {
            let kl = out.metrics.kl.expect("kl with a reference");
            let d = (kl - num(&m["kl"])).abs();
            max_metric = max_metric.max(d);
            assert!(d <= TOL, "{label}: kl {kl} vs TRL {}", m["kl"]);
        } else {
            assert!(m.get("kl").is_none());
        }
        if !with_old {
            assert_eq!(out.metrics.ratio_mean, 1.0, "{label}: on-policy ratio");
        }
    }
    assert_eq!(
        seen.len(),
        12,
        "every loss type × beta (× KL bias correction)"
    );
    eprintln!("max |Δ| vs TRL: loss {max_loss:.3e}, grad {max_grad:.3e}, metrics {max_metric:.3e}");
    Ok(())
}

#[test]
fn advantages_match_trl() {
    let fx = fixture();
    let group_size = fx["group_size"].as_u64().unwrap() as usize;
    let mut max_diff = 0f64;
    for case in fx["advantage_cases"].as_array().unwrap() {
        let scale: ScaleRewards = case["scale_rewards"].as_str().unwrap().parse().unwrap();
        let rewards: Vec<f64> = case["rewards"]
            .as_array()
            .unwrap()
            .iter()
            .map(num)
            .collect();
        let label = format!("{} / {scale}", case["name"]);
        let ours = group_advantages(&rewards, group_size, scale).unwrap();
        for (a, w) in ours
            .values
            .iter()
            .zip(case["advantages"].as_array().unwrap())
        {
            let d = (a - num(w)).abs();
            max_diff = max_diff.max(d);
            assert!(d <= TOL, "{label}: advantage {a} vs TRL {w}");
        }
        assert_eq!(
            ours.stats.frac_reward_zero_std,
            num(&case["frac_reward_zero_std"]),
            "{label}"
        );
        assert!(
            close(ours.stats.reward_std, num(&case["reward_std"])),
            "{label}"
        );
        assert!(
            close(ours.stats.reward_mean, num(&case["reward_mean"])),
            "{label}"
        );
    }
    // The loss cases use the "mixed"/group advantages.
    let mixed = group_advantages(
        &fx["rewards"]
            .as_array()
            .unwrap()
            .iter()
            .map(num)
            .collect::<Vec<_>>(),
        group_size,
        ScaleRewards::Group,
    )
    .unwrap();
    for (a, w) in mixed
        .values
        .iter()
        .zip(fx["advantages"].as_array().unwrap())
    {
        assert!((a - num(w)).abs() <= TOL);
    }
    eprintln!("max |Δ| advantages vs TRL: {max_diff:.3e}");
}

fn simple_inputs(dev: &Device) -> Result<(Var, Tensor, Tensor, Tensor)> {
    let logp = Var::from_tensor(&Tensor::new(
        &[[-0.7f32, -1.2, -0.3, -2.0], [-0.1, -0.9, -1.5, -0.4]],
        dev,
    )?)?;
    let old = Tensor::new(
        &[[-0.5f32, -1.6, -0.3, -1.0], [-0.4, -0.2, -1.1, -0.4]],
        dev,
    )?;
    let mask = Tensor::new(&[[1f32, 1., 1., 0.], [1., 1., 0., 0.]], dev)?;
    let adv = Tensor::new(&[1.3f32, -0.8], dev)?;
    Ok((logp, old, mask, adv))
}

#[test]
fn dr_grpo_scales_with_max_completion_length() -> Result<()> {
    let dev = Device::Cpu;
    let (logp, old, mask, adv) = simple_inputs(&dev)?;
    let run = |len: usize| -> Result<(f32, Vec<Vec<f32>>)> {
        let cfg = LossConfig {
            loss_type: LossType::DrGrpo,
            max_completion_length: len,
            ..LossConfig::default()
        };
        let out = grpo_loss(
            &LossInputs {
                logp: logp.as_tensor(),
                old_logp: Some(&old),
                ref_logp: None,
                mask: &mask,
                advantages: &adv,
                num_items_in_batch: None,
            },
            &cfg,
        )?;
        let g = out.loss.backward()?.get(&logp).unwrap().to_vec2::<f32>()?;
        assert_eq!(out.metrics.normalizer, (2 * len) as f64);
        Ok((out.loss.to_scalar::<f32>()?, g))
    };
    let (l1, g1) = run(100)?;
    let (l4, g4) = run(400)?;
    assert!(l1 != 0.0);
    assert!((l1 - 4.0 * l4).abs() <= 1e-7 * l1.abs().max(1.0));
    for (r1, r4) in g1.iter().zip(&g4) {
        for (a, b) in r1.iter().zip(r4) {
            assert!((a - 4.0 * b).abs() <= 1e-7);
        }
    }
    Ok(())
}

#[test]
fn padding_gets_no_gradient_and_grads_are_finite() -> Result<()> {
    let dev = Device::Cpu;
    let (logp, old, mask, adv) = simple_inputs(&dev)?;
    let reference = (logp.as_tensor() + 0.25)?;
    for loss_type in LossType::ALL {
        for old_logp in [None, Some(&old)] {
            let cfg = LossConfig {
                loss_type,
                beta: 0.04,
                epsilon_high: 0.28,
                ..LossConfig::default()
            };
            let out = grpo_loss(
                &LossInputs {
                    logp: logp.as_tensor(),
                    old_logp,
                    ref_logp: Some(&reference),
                    mask: &mask,
                    advantages: &adv,
                    num_items_in_batch: None,
                },
                &cfg,
            )?;
            let g = out.loss.backward()?.get(&logp).unwrap().to_vec2::<f32>()?;
            let m = mask.to_vec2::<f32>()?;
            for i in 0..2 {
                for j in 0..4 {
                    assert!(g[i][j].is_finite());
                    if m[i][j] == 0.0 {
                        assert_eq!(g[i][j], 0.0, "{loss_type}");
                    } else {
                        assert_ne!(g[i][j], 0.0, "{loss_type} [{i}][{j}]");
                    }
                }
            }
        }
    }
    // Whatever fills the padding (here −inf and huge values) never turns into NaN.
    let poisoned = Var::from_tensor(&Tensor::new(
        &[
            [-0.7f32, -1.2, -0.3, f32::NEG_INFINITY],
            [-0.1, -0.9, -1e30, -1e30],
        ],
        &dev,
    )?)?;
    let old_fill = Tensor::new(&[[-0.5f32, -1.6, -0.3, 0.0], [-0.4, -0.2, 0.0, 1e30]], &dev)?;
    let ref_fill = Tensor::new(&[[-0.6f32, -1.0, -0.2, 0.0], [-0.3, -0.5, 1e30, 0.0]], &dev)?;
    for loss_type in LossType::ALL {
        let out = grpo_loss(
            &LossInputs {
                logp: poisoned.as_tensor(),
                old_logp: Some(&old_fill),
                ref_logp: Some(&ref_fill),
                mask: &mask,
                advantages: &adv,
                num_items_in_batch: None,
            },
            &LossConfig {
                loss_type,
                beta: 0.04,
                ..LossConfig::default()
            },
        )?;
        assert!(out.loss.to_scalar::<f32>()?.is_finite(), "{loss_type}");
        let g = out
            .loss
            .backward()?
            .get(&poisoned)
            .unwrap()
            .to_vec2::<f32>()?;
        assert!(
            g.iter().flatten().all(|x| x.is_finite()),
            "{loss_type}: {g:?}"
        );
        assert_eq!((g[0][3], g[1][2], g[1][3]), (0.0, 0.0, 0.0));
        assert!(out.metrics.kl.unwrap().is_finite());
    }

    // An all-padding micro-batch is a zero loss with zero (finite) gradients, not a NaN.
    let empty = mask.zeros_like()?;
    for loss_type in LossType::ALL {
        let out = grpo_loss(
            &LossInputs {
                logp: logp.as_tensor(),
                old_logp: Some(&old),
                ref_logp: None,
                mask: &empty,
                advantages: &adv,
                num_items_in_batch: None,
            },
            &LossConfig {
                loss_type,
                ..LossConfig::default()
            },
        )?;
        assert_eq!(out.loss.to_scalar::<f32>()?, 0.0, "{loss_type}");
        let g = out.loss.backward()?.get(&logp).unwrap().to_vec2::<f32>()?;
        assert!(g.iter().flatten().all(|x| *x == 0.0));
    }
    Ok(())
}

#[test]
fn beta_needs_a_reference_and_shapes_are_checked() -> Result<()> {
    let dev = Device::Cpu;
    let (logp, old, mask, adv) = simple_inputs(&dev)?;
    let inputs = LossInputs {
        logp: logp.as_tensor(),
        old_logp: Some(&old),
        ref_logp: None,
        mask: &mask,
        advantages: &adv,
        num_items_in_batch: None,
    };
    let cfg = LossConfig {
        beta: 0.1,
        ..LossConfig::default()
    };
    assert!(grpo_loss(&inputs, &cfg).is_err());
    let bad_adv = Tensor::new(&[1f32, 2., 3.], &dev)?;
    let bad = LossInputs {
        advantages: &bad_adv,
        ..inputs
    };
    assert!(grpo_loss(&bad, &LossConfig::default()).is_err());
    Ok(())
}

/// Gradients flow from the loss through `per_token_logps` into a parameter (a linear "model"),
/// and agree with central finite differences of the loss (f64).
#[test]
fn gradient_reaches_model_parameters() -> Result<()> {
    let dev = Device::Cpu;
    let (b, t, h, v) = (2usize, 3usize, 4usize, 5usize);
    let x: Vec<f64> = (0..b * t * h)
        .map(|i| ((i * 37 % 11) as f64 - 5.0) / 7.0)
        .collect();
    let x = Tensor::from_vec(x, (b * t, h), &dev)?;
    let w0: Vec<f64> = (0..h * v)
        .map(|i| ((i * 13 % 7) as f64 - 3.0) / 5.0)
        .collect();
    let w = Var::from_tensor(&Tensor::from_vec(w0, (h, v), &dev)?)?;
    let ids = Tensor::new(&[[1u32, 4, 0], [2, 2, 3]], &dev)?;
    let mask = Tensor::new(&[[1f64, 1., 1.], [1., 1., 0.]], &dev)?;
    let adv = Tensor::new(&[0.9f64, -1.1], &dev)?;
    let reference = Tensor::new(&[[-1.5f64, -1.7, -1.4], [-1.6, -1.5, -1.2]], &dev)?;
    let old = Tensor::new(&[[-1.2f64, -2.4, -1.3], [-1.9, -1.1, -1.0]], &dev)?;
    let cfg = LossConfig {
        loss_type: LossType::Grpo,
        beta: 0.04,
        epsilon_high: 0.28,
        ..LossConfig::default()
    };
    let loss_of = |w: &Tensor| -> Result<Tensor> {
        let logits = x.matmul(w)?.reshape((b, t, v))?;
        let logp = per_token_logps(&logits, &ids, 0.7)?;
        Ok(grpo_loss(
            &LossInputs {
                logp: &logp,
                old_logp: Some(&old),
                ref_logp: Some(&reference),
                mask: &mask,
                advantages: &adv,
                num_items_in_batch: None,
            },
            &cfg,
        )?
        .loss)
    };
    let loss = loss_of(w.as_tensor())?;
    assert_eq!(loss.dtype(), DType::F64);
    let grad = loss
        .backward()?
        .get(&w)
        .expect("gradient reaches W")
        .to_vec2::<f64>()?;
    let w_host = w.as_tensor().to_vec2::<f64>()?;
    let eps = 1e-6;
    for i in 0..h {
        for j in 0..v {
            let bump = |delta: f64| -> Result<f64> {
                let mut wp = w_host.clone();
                wp[i][j] += delta;
                let wp = Tensor::from_vec(wp.concat(), (h, v), &dev)?;
                loss_of(&wp)?.to_scalar::<f64>()
            };
            let numeric = (bump(eps)? - bump(-eps)?) / (2.0 * eps);
            assert!(
                (grad[i][j] - numeric).abs() < 1e-7,
                "dW[{i}][{j}] {} vs finite difference {numeric}",
                grad[i][j]
            );
        }
    }
    assert!(grad.iter().flatten().any(|g| g.abs() > 1e-4));
    Ok(())
}
