//! The GRPO policy loss, formula for formula TRL's `GRPOTrainer._compute_loss` (token-level
//! importance sampling, no vLLM importance-sampling correction, no entropy mask, no `delta`).
//!
//! With `logp`, `old_logp`, `ref_logp` and the completion mask `m` all `[B, T]` and one
//! advantage `A_i` per row:
//!
//! ```text
//! coef_1 = exp(logp − old_logp)                       (old_logp = logp.detach() when absent)
//! coef_2 = clamp(coef_1, 1 − ε_low, 1 + ε_high)
//! l      = −min(coef_1·A, coef_2·A)
//! l     += β·k3,  k3 = exp(ref − logp) − (ref − logp) − 1      (only when β ≠ 0;
//!                  k3·coef_1 with `kl_bias_correction`, TRL's `use_bias_correction_kl`)
//! grpo    : mean_i [ Σ_t m·l / max(1, Σ_t m) ] / GA
//! bnpo    : Σ m·l / max(1, Σ m) / GA
//! dr_grpo : Σ m·l / (B · max_completion_length) / GA
//! dapo    : Σ m·l / (max(1, N) · GA / steps_per_generation)
//! ```
//!
//! For `dapo`, `N` (`num_items_in_batch`) is the active-token count of the whole generation
//! batch, which spans `steps_per_generation` micro-batches; with the default
//! `steps_per_generation = GA` the divisor is just `N` (TRL ≥ 1.x; a single process).
//!
//! The KL is added per token before aggregation (TRL), so it shares the loss normaliser. Every
//! step is a differentiable candle op (the clamp is written with `where_cond` so that, like
//! `torch.clamp`, the gradient passes inside the closed interval and is zero outside; the
//! `min` splits the gradient of ties in half like `torch.min`), so `loss.backward()` reaches
//! the parameters that produced `logp`. Metrics are computed on detached values, the way TRL
//! logs them.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// How the per-token losses of a micro-batch are reduced to a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over sequences of per-sequence token means (original GRPO).
    Grpo,
    /// Token mean over the local micro-batch.
    Bnpo,
    /// Token sum over `rows × max_completion_length` (Dr. GRPO).
    #[cfg_attr(feature = "clap", value(name = "dr_grpo"))]
    DrGrpo,
    /// Token sum over the active-token count of the whole generation batch (DAPO; TRL default).
    #[default]
    Dapo,
}

impl LossType {
    pub const ALL: [LossType; 4] = [
        LossType::Grpo,
        LossType::Bnpo,
        LossType::DrGrpo,
        LossType::Dapo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LossType::Grpo => "grpo",
            LossType::Bnpo => "bnpo",
            LossType::DrGrpo => "dr_grpo",
            LossType::Dapo => "dapo",
        }
    }
}

impl fmt::Display for LossType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "grpo" => Ok(Self::Grpo),
            "bnpo" => Ok(Self::Bnpo),
            "dr_grpo" | "drgrpo" => Ok(Self::DrGrpo),
            "dapo" => Ok(Self::Dapo),
            other => Err(format!(
                "unknown loss type {other:?} (expected grpo, bnpo, dr_grpo or dapo)"
            )),
        }
    }
}

/// Loss settings; the defaults are TRL's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    pub loss_type: LossType,
    /// Lower clip: the ratio is clamped at `1 − epsilon_low` (TRL `epsilon`, default 0.2).
    pub epsilon_low: f64,
    /// Upper clip: `1 + epsilon_high` (TRL `epsilon_high`, default = epsilon; DAPO uses 0.28).
    pub epsilon_high: f64,
    /// KL coefficient (TRL default 0: no reference model).
    pub beta: f64,
    /// The Dr. GRPO constant (TRL `max_completion_length`, default 512).
    pub max_completion_length: usize,
    /// Micro-batches per optimizer step; every loss type but `dapo` divides by it.
    pub gradient_accumulation_steps: usize,
    /// Micro-batches one generation batch feeds (TRL `steps_per_generation`); `None` = GA.
    /// Only `dapo` uses it, to rescale `num_items_in_batch` to one accumulation window.
    pub steps_per_generation: Option<usize>,
    /// Multiply k3 by the importance ratio `coef_1` (with its gradient), the DeepSeek-V3.2
    /// unbiased KL gradient (TRL `use_bias_correction_kl`). Off by default: the plain k3
    /// penalty of the GRPO/R1 recipe and of TRL before the option existed; TRL 1.16 turns it
    /// on by default, so set it when comparing with a default TRL run.
    pub kl_bias_correction: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            loss_type: LossType::Dapo,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
            max_completion_length: 512,
            gradient_accumulation_steps: 1,
            steps_per_generation: None,
            kl_bias_correction: false,
        }
    }
}

/// The tensors of one micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct LossInputs<'a> {
    /// Per-token log-probabilities of the completion tokens under the policy, `[B, T]`, with
    /// gradient.
    pub logp: &'a Tensor,
    /// Log-probabilities at generation time, `[B, T]`; `None` means on-policy
    /// (`logp.detach()`: ratio 1, gradient `A·∇logp`).
    pub old_logp: Option<&'a Tensor>,
    /// Reference-model log-probabilities `[B, T]`; required when `beta ≠ 0`.
    pub ref_logp: Option<&'a Tensor>,
    /// Completion mask `[B, T]` (1 = real completion token, 0 = padding), any float dtype.
    pub mask: &'a Tensor,
    /// One advantage per row, `[B]`.
    pub advantages: &'a Tensor,
    /// DAPO normaliser: active tokens of the whole generation batch (all its micro-batches).
    /// `None`: the mask sum of this micro-batch.
    pub num_items_in_batch: Option<f64>,
}

/// What TRL logs for a loss computation (masked means over completion tokens).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LossMetrics {
    /// Masked mean of k3 (times the ratio with `kl_bias_correction`, as TRL logs it; `None`
    /// without a reference).
    pub kl: Option<f64>,
    /// Share of tokens with `coef_1 < 1 − ε_low` and `A < 0` (TRL `clip_ratio/low_mean`).
    pub clip_low: f64,
    /// Share of tokens with `coef_1 > 1 + ε_high` and `A > 0` (TRL `clip_ratio/high_mean`).
    pub clip_high: f64,
    /// Share of tokens clipped either way (TRL `clip_ratio/region_mean`).
    pub clip_region: f64,
    /// Smallest per-sequence share of low-clipped tokens (TRL `clip_ratio/low_min`; sequences
    /// without tokens are skipped; NaN when there are none).
    pub clip_low_min: f64,
    /// Largest per-sequence share of high-clipped tokens (TRL `clip_ratio/high_max`).
    pub clip_high_max: f64,
    /// Masked mean, min and max of the importance ratio `coef_1` (0 for an empty mask).
    pub ratio_mean: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// Completion tokens in the micro-batch (mask sum).
    pub num_tokens: f64,
    /// The divisor applied to the masked token sum (`grpo`: the per-sequence means' count),
    /// before the GA division.
    pub normalizer: f64,
}

/// The scalar loss (differentiable) and its metrics.
#[derive(Debug, Clone)]
pub struct LossOutput {
    pub loss: Tensor,
    pub metrics: LossMetrics,
}

fn scalar_like(t: &Tensor, v: f64) -> Result<Tensor> {
    Tensor::new(v, t.device())?.to_dtype(t.dtype())
}

fn check_2d(name: &str, t: &Tensor, dims: (usize, usize)) -> Result<()> {
    if t.dims2()? != dims {
        candle_core::bail!(
            "grpo loss: {name} has shape {:?}, expected {:?}",
            t.dims(),
            [dims.0, dims.1]
        );
    }
    Ok(())
}

/// TRL's `_compute_loss` for one micro-batch.
pub fn grpo_loss(inputs: &LossInputs<'_>, cfg: &LossConfig) -> Result<LossOutput> {
    let logp = inputs.logp;
    let (b, t) = logp.dims2()?;
    let dtype = logp.dtype();
    check_2d("mask", inputs.mask, (b, t))?;
    if inputs.advantages.dims() != [b] {
        candle_core::bail!(
            "grpo loss: advantages have shape {:?}, expected [{b}]",
            inputs.advantages.dims()
        );
    }
    if cfg.gradient_accumulation_steps == 0 {
        candle_core::bail!("grpo loss: gradient_accumulation_steps must be at least 1");
    }
    let mask = inputs.mask.to_dtype(dtype)?;
    let adv = inputs.advantages.to_dtype(dtype)?.unsqueeze(1)?;
    let old = match inputs.old_logp {
        Some(o) => {
            check_2d("old_logp", o, (b, t))?;
            o.to_dtype(dtype)?.detach()
        }
        None => logp.detach(),
    };

    // Padding positions are taken out before any exp: whatever the caller left there (a
    // pad token's log-probability, a 0 fill, −inf), their log-ratios are 0, so no inf × 0 = NaN
    // can reach the loss or the gradient. Real tokens are computed exactly as TRL does.
    let active = mask.ne(0.0)?;
    let zeros = logp.zeros_like()?;

    // Importance ratio and its clamp (gradient inside [lo, hi], as torch.clamp).
    let coef_1 = active.where_cond(&(logp - &old)?, &zeros)?.exp()?;
    let (lo, hi) = (1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high);
    let lo_t = coef_1.ones_like()?.affine(lo, 0.0)?;
    let hi_t = coef_1.ones_like()?.affine(hi, 0.0)?;
    let coef_2 = coef_1
        .lt(lo)?
        .where_cond(&lo_t, &coef_1.gt(hi)?.where_cond(&hi_t, &coef_1)?)?;
    let loss1 = coef_1.broadcast_mul(&adv)?;
    let loss2 = coef_2.broadcast_mul(&adv)?;
    let mut per_token = loss1.minimum(&loss2)?.neg()?;

    let kl = match inputs.ref_logp {
        Some(r) => {
            check_2d("ref_logp", r, (b, t))?;
            let d = active.where_cond(&(r.to_dtype(dtype)?.detach() - logp)?, &zeros)?;
            let k3 = ((d.exp()? - &d)? - 1.0)?;
            Some(if cfg.kl_bias_correction {
                (k3 * &coef_1)?
            } else {
                k3
            })
        }
        None => None,
    };
    if cfg.beta != 0.0 {
        let Some(k3) = &kl else {
            candle_core::bail!("grpo loss: beta = {} needs ref_logp", cfg.beta);
        };
        per_token = (per_token + (k3 * cfg.beta)?)?;
    }

    let masked = (per_token * &mask)?;
    let num_tokens = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let ga = scalar_like(logp, cfg.gradient_accumulation_steps as f64)?;
    let (loss, normalizer) = match cfg.loss_type {
        LossType::Grpo => {
            let per_seq = masked.sum(1)?.broadcast_div(&mask.sum(1)?.maximum(1.0)?)?;
            let loss = per_seq
                .sum_all()?
                .broadcast_div(&scalar_like(logp, b as f64)?)?;
            (loss.broadcast_div(&ga)?, b as f64)
        }
        LossType::Bnpo => {
            let n = num_tokens.max(1.0);
            let loss = masked.sum_all()?.broadcast_div(&scalar_like(logp, n)?)?;
            (loss.broadcast_div(&ga)?, n)
        }
        LossType::DrGrpo => {
            let n = (b * cfg.max_completion_length) as f64;
            if n == 0.0 {
                candle_core::bail!("grpo loss: dr_grpo needs max_completion_length > 0");
            }
            let loss = masked.sum_all()?.broadcast_div(&scalar_like(logp, n)?)?;
            (loss.broadcast_div(&ga)?, n)
        }
        LossType::Dapo => {
            let ga = cfg.gradient_accumulation_steps as f64;
            let spg = cfg
                .steps_per_generation
                .unwrap_or(cfg.gradient_accumulation_steps);
            if spg == 0 {
                candle_core::bail!("grpo loss: steps_per_generation must be at least 1");
            }
            let items = inputs.num_items_in_batch.unwrap_or(num_tokens).max(1.0);
            let n = items * ga / spg as f64;
            let loss = masked.sum_all()?.broadcast_div(&scalar_like(logp, n)?)?;
            (loss, n)
        }
    };

    let metrics = metrics(&coef_1, kl.as_ref(), &mask, inputs.advantages, lo, hi)?;
    Ok(LossOutput {
        loss,
        metrics: LossMetrics {
            num_tokens,
            normalizer,
            ..metrics
        },
    })
}

fn host(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    t.detach().to_dtype(DType::F64)?.to_vec2::<f64>()
}

fn metrics(
    coef_1: &Tensor,
    kl: Option<&Tensor>,
    mask: &Tensor,
    advantages: &Tensor,
    lo: f64,
    hi: f64,
) -> Result<LossMetrics> {
    let ratio = host(coef_1)?;
    let mask = host(mask)?;
    let adv = advantages.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let kl = kl.map(host).transpose()?;
    let total: f64 = mask.iter().flatten().sum();
    let denom = total.max(1.0);
    let (mut low, mut high, mut region, mut kl_sum, mut r_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut r_min, mut r_max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut low_min, mut high_max) = (f64::NAN, f64::NAN);
    for (i, row) in ratio.iter().enumerate() {
        let (row_low, row_high) = (low, high);
        for (j, &r) in row.iter().enumerate() {
            let m = mask[i][j];
            let is_low = r < lo && adv[i] < 0.0;
            let is_high = r > hi && adv[i] > 0.0;
            low += m * f64::from(u8::from(is_low));
            high += m * f64::from(u8::from(is_high));
            region += m * f64::from(u8::from(is_low || is_high));
            if let Some(k) = &kl {
                kl_sum += m * k[i][j];
            }
            r_sum += m * r;
            if m != 0.0 {
                r_min = r_min.min(r);
                r_max = r_max.max(r);
            }
        }
        let row_tokens: f64 = mask[i].iter().sum();
        if row_tokens != 0.0 {
            // f64::min/max skip the NaN start value, like TRL's nanmin/nanmax.
            low_min = low_min.min((low - row_low) / row_tokens);
            high_max = high_max.max((high - row_high) / row_tokens);
        }
    }
    let any = total > 0.0;
    Ok(LossMetrics {
        kl: kl.map(|_| kl_sum / denom),
        clip_low: low / denom,
        clip_high: high / denom,
        clip_region: region / denom,
        clip_low_min: low_min,
        clip_high_max: high_max,
        ratio_mean: if any { r_sum / total } else { 0.0 },
        ratio_min: if any { r_min } else { 0.0 },
        ratio_max: if any { r_max } else { 0.0 },
        num_tokens: total,
        normalizer: 0.0,
    })
}

/// Per-token log-probabilities of `ids` `[B, T]` (u32/i64) under `logits / temperature`
/// `[B, T, V]`, where `logits[:, t]` predicts `ids[:, t]` (TRL's selective log-softmax of the
/// temperature-scaled logits; the sampler's temperature must be used, or the ratio and the KL
/// refer to a different distribution than the one sampled). Differentiable in `logits`; the
/// max shift is detached (it cancels exactly).
pub fn per_token_logps(logits: &Tensor, ids: &Tensor, temperature: f64) -> Result<Tensor> {
    if temperature <= 0.0 {
        candle_core::bail!("per_token_logps: temperature must be positive, got {temperature}");
    }
    let scaled = if temperature == 1.0 {
        logits.clone()
    } else {
        logits.broadcast_div(&scalar_like(logits, temperature)?)?
    };
    let max = scaled.max_keepdim(D::Minus1)?.detach();
    let shifted = scaled.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&ids.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?;
    (picked - lse)?.squeeze(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn names_round_trip() {
        for t in LossType::ALL {
            assert_eq!(t.name().parse::<LossType>().unwrap(), t);
        }
        assert!("ppo".parse::<LossType>().is_err());
    }

    #[test]
    fn on_policy_gradient_is_advantage_times_grad_logp() -> Result<()> {
        let dev = Device::Cpu;
        let logp = Var::from_tensor(&Tensor::new(&[[-1.0f32, -2.0], [-0.5, -0.1]], &dev)?)?;
        let mask = Tensor::new(&[[1.0f32, 1.0], [1.0, 0.0]], &dev)?;
        let adv = Tensor::new(&[0.5f32, -1.0], &dev)?;
        let cfg = LossConfig {
            loss_type: LossType::Bnpo,
            ..LossConfig::default()
        };
        let out = grpo_loss(
            &LossInputs {
                logp: logp.as_tensor(),
                old_logp: None,
                ref_logp: None,
                mask: &mask,
                advantages: &adv,
                num_items_in_batch: None,
            },
            &cfg,
        )?;
        // Ratio 1: loss = −Σ m·A / Σ m = −(0.5 + 0.5 − 1) / 3 = 0.
        assert!(out.loss.to_scalar::<f32>()?.abs() < 1e-7);
        let g = out.loss.backward()?.get(&logp).unwrap().to_vec2::<f32>()?;
        assert!((g[0][0] + 0.5 / 3.0).abs() < 1e-7);
        assert!((g[1][0] - 1.0 / 3.0).abs() < 1e-7);
        assert_eq!(g[1][1], 0.0);
        assert_eq!(out.metrics.ratio_mean, 1.0);
        Ok(())
    }

    #[test]
    fn logps_match_log_softmax() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]]], &dev)?;
        let ids = Tensor::new(&[[2u32, 1]], &dev)?;
        let lp = per_token_logps(&logits, &ids, 2.0)?.to_vec2::<f32>()?;
        let z = (0.5f64.exp() + 1.0f64.exp() + 1.5f64.exp()).ln();
        assert!((lp[0][0] as f64 - (1.5 - z)).abs() < 1e-6);
        assert!((lp[0][1] as f64 + 3f64.ln()).abs() < 1e-6);
        Ok(())
    }
}
