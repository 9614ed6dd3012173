//! Rotary position embeddings for the training path: the inverse frequencies of the engine
//! (default, `linear`, `llama3` scaling, computed in f32 in transformers' operation order) and
//! cos/sin tables for explicit per-token positions. Rope itself is applied in
//! [`super::layers`] as `x * cos + rotate_half(x) * sin` with narrow/cat (differentiable;
//! candle's fused `rotary_emb::rope` records no backward op).

use candle_core::{DType, Device, Tensor};
use metis_engine::config::{RopeConfig, RopeScaling};

#[derive(Debug, Clone)]
pub(crate) struct Rope {
    /// [head_dim / 2], f32.
    inv_freq: Vec<f32>,
}

impl Rope {
    pub(crate) fn new(cfg: &RopeConfig, head_dim: usize) -> Self {
        let base = cfg.theta as f32;
        let dim = head_dim as f32;
        let default: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0f32 / base.powf(i as f32 / dim))
            .collect();
        let inv_freq = match cfg.scaling {
            RopeScaling::None => default,
            RopeScaling::Linear { factor } => {
                let factor = factor as f32;
                default.iter().map(|&f| f / factor).collect()
            }
            RopeScaling::FreqFactors { ref factors } => default
                .iter()
                .zip(factors.iter().chain(std::iter::repeat(&1.0f32)))
                .map(|(&f, &d)| f / d)
                .collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let factor = factor as f32;
                let low = low_freq_factor as f32;
                let high = high_freq_factor as f32;
                let old_ctx = original_max_position_embeddings as f32;
                let low_freq_wavelen =
                    (original_max_position_embeddings as f64 / low_freq_factor) as f32;
                let high_freq_wavelen =
                    (original_max_position_embeddings as f64 / high_freq_factor) as f32;
                let two_pi = std::f64::consts::PI as f32 * 2.0;
                default
                    .iter()
                    .map(|&f| {
                        let wavelen = (1.0f32 / f) * two_pi;
                        let scaled = if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            f
                        };
                        let smooth = ((1.0f32 / wavelen) * old_ctx - low) / (high - low);
                        let smoothed = (1.0f32 - smooth) * scaled / factor + smooth * scaled;
                        if wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen {
                            smoothed
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        };
        Self { inv_freq }
    }

    /// cos and sin tables, each [b, 1, s, head_dim] (the half table repeated twice, as HF's
    /// `cat((freqs, freqs), -1)`), for row-major `positions` ([b * s]); angles in f32, then
    /// cast to `dtype`.
    pub(crate) fn tables(
        &self,
        positions: &[u32],
        b: usize,
        s: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half * 2);
        let mut sin = Vec::with_capacity(positions.len() * half * 2);
        for &p in positions {
            let p = p as f32;
            let start = cos.len();
            for &f in &self.inv_freq {
                let angle = f * p;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
            cos.extend_from_within(start..start + half);
            sin.extend_from_within(start..start + half);
        }
        let cos = Tensor::from_vec(cos, (b, 1, s, 2 * half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, 1, s, 2 * half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// `x * cos + rotate_half(x) * sin` for x [b, heads, s, head_dim], cos/sin [b, 1, s, head_dim];
/// `rotate_half(x) = cat(-x[.., d/2..], x[.., ..d/2])`.
pub(crate) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(3)?;
    let half = d / 2;
    let x1 = x.narrow(3, 0, half)?;
    let x2 = x.narrow(3, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}
