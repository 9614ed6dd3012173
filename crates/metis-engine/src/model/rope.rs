//! Rotary position embeddings (non-interleaved, "rotate_half" layout as in HF Llama/Qwen).
//!
//! The inverse frequencies and the angles are computed in f32 with the same operation order
//! as transformers (`_compute_default_rope_parameters` / `_compute_llama3_parameters`, then
//! `inv_freq @ position_ids` in f32), so positions as large as 20000 reproduce the
//! reference angles bit for bit (the f32 angle itself is coarse there: ulp(20000) ≈ 2e-3).

use candle_core::{DType, Device, Tensor};

use crate::config::{rope_cos_sin, RopeConfig};

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

    /// The inverse frequencies, [head_dim / 2].
    pub(crate) fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// cos and sin tables for positions `start .. start + len`, each [len, head_dim / 2],
    /// cast to `dtype` (HF computes them in f32 and casts to the activation dtype).
    pub(crate) fn cos_sin(
        &self,
        start: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (cos, sin) = rope_cos_sin(&self.inv_freq, start..start + len);
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// cos and sin tables for `rows` sequences of `len` explicit positions each (`positions`
    /// is row-major, `rows * len` long), each [rows, len, head_dim / 2] cast to `dtype`. The
    /// angles are computed exactly as in [`Rope::cos_sin`].
    pub(crate) fn cos_sin_at(
        &self,
        positions: &[usize],
        rows: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (cos, sin) = rope_cos_sin(&self.inv_freq, positions.iter().copied());
        let cos = Tensor::from_vec(cos, (rows, len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (rows, len, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    #[test]
    fn llama3_scaling_hits_all_branches() {
        // README of the fixtures: head_dim 8 → [1.0, 3.7606e-2, 5.2485e-4, 6.6479e-6].
        let cfg = RopeConfig {
            theta: 500000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
        };
        let r = Rope::new(&cfg, 8);
        let want = [1.0f32, 3.7606e-2, 5.2485e-4, 6.6479e-6];
        for (g, w) in r.inv_freq().iter().zip(want) {
            assert!(((g - w) / w).abs() < 1e-4, "{g} vs {w}");
        }
    }
}
