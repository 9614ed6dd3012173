//! Rotary position embeddings for the training path: the engine's inverse frequencies
//! ([`RopeConfig::inv_freq`]: default, `linear`, `llama3` scaling, in transformers' f32 order) and
//! cos/sin tables for explicit per-token positions: full-width tensors for the spelled-out
//! `x * cos + rotate_half(x) * sin` ([`apply_rope`], narrow/cat: candle's fused
//! `rotary_emb::rope` records no backward op) and half tables for the fused CPU kernel.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use metis_engine::config::{rope_cos_sin, RopeConfig};

use super::fused::RopeTables;

#[derive(Debug, Clone)]
pub(crate) struct Rope {
    /// [head_dim / 2], f32.
    inv_freq: Vec<f32>,
}

impl Rope {
    pub(crate) fn new(cfg: &RopeConfig, head_dim: usize) -> Self {
        Self {
            inv_freq: cfg.inv_freq(head_dim),
        }
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
        let (cos, sin) = rope_cos_sin(&self.inv_freq, positions.iter().map(|&p| p as usize));
        let full = |t: Vec<f32>| {
            let t = Tensor::from_vec(t, (b, 1, s, half), device)?;
            Tensor::cat(&[&t, &t], 3)?.to_dtype(dtype)
        };
        Ok((full(cos)?, full(sin)?))
    }

    /// The half tables `[positions.len(), head_dim / 2]` for the fused rope kernel (the same
    /// f32 angles as [`Rope::tables`]).
    pub(crate) fn half_tables(&self, positions: &[u32]) -> RopeTables {
        let (cos, sin) = rope_cos_sin(&self.inv_freq, positions.iter().map(|&p| p as usize));
        RopeTables {
            cos: Arc::new(cos),
            sin: Arc::new(sin),
            half: self.inv_freq.len(),
        }
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
