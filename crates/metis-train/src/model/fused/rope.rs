//! Rope on the fused attention's q and k: the cos/sin tables and the rotation.

use std::sync::Arc;

use rayon::prelude::*;

use super::{err, rows_per_task, Real};

/// cos/sin half tables `[b * s, head_dim / 2]` (row-major over the batch's tokens), f32 as
/// transformers computes them.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    pub(crate) cos: Arc<Vec<f32>>,
    pub(crate) sin: Arc<Vec<f32>>,
    pub(crate) half: usize,
}

/// `x * cos + rotate_half(x) * sin` for x `[b, s, heads * head_dim]` (each head rotated), as
/// part of [`rope_attention`](super::rope_attention).
pub(super) struct Rope {
    /// Head dim = `2 * tables.half`.
    pub(super) tables: RopeTables,
    /// Rotate by −θ: the backward of the forward rotation (a rotation's transpose).
    pub(super) inverse: bool,
}

impl Rope {
    pub(super) fn apply<T: Real>(&self, x: &[T], dims: &[usize]) -> candle_core::Result<Vec<T>> {
        let half = self.tables.half;
        let d = 2 * half;
        let (b, s, width) = (dims[0], dims[1], dims[2]);
        let heads = width / d.max(1);
        if d == 0 || width % d != 0 || self.tables.cos.len() != b * s * half {
            return Err(err(
                "metis-rope",
                format!(
                    "x {dims:?} vs tables of {} rows × {half}",
                    self.tables.cos.len() / half.max(1)
                ),
            ));
        }
        let mut y = vec![T::zero(); x.len()];
        let token = heads * d;
        let tokens_per_task = rows_per_task(b * s, token);
        y.par_chunks_mut(token * tokens_per_task)
            .zip(x.par_chunks(token * tokens_per_task))
            .enumerate()
            .for_each(|(task, (yb, xb))| {
                for (n, (yt, xt)) in yb.chunks_mut(token).zip(xb.chunks(token)).enumerate() {
                    let t = task * tokens_per_task + n;
                    let cos = &self.tables.cos[t * half..(t + 1) * half];
                    let sin = &self.tables.sin[t * half..(t + 1) * half];
                    for (yh, xh) in yt.chunks_mut(d).zip(xt.chunks(d)) {
                        for i in 0..half {
                            let (c, sn) = (T::from_f32(cos[i]), T::from_f32(sin[i]));
                            let (x1, x2) = (xh[i], xh[i + half]);
                            if self.inverse {
                                yh[i] = x1 * c + x2 * sn;
                                yh[i + half] = x2 * c - x1 * sn;
                            } else {
                                yh[i] = x1 * c - x2 * sn;
                                yh[i + half] = x2 * c + x1 * sn;
                            }
                        }
                    }
                }
            });
        Ok(y)
    }
}
