//! Rope with masked (causal, per-segment) scaled dot-product attention, and its backward.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

use super::rope::{Rope, RopeTables};
use super::strided::{gemm_into, View};

use super::{contiguous, dot, err, exp_shifted, row_max, tensor, with_data, Real};

/// Rope on q and k, then scaled dot-product attention with the [`super::super::BatchLayout`] mask
/// (query `i` sees key `j <= i` of the same non-zero segment; a padding query sees only
/// itself), as one graph node. q `[b, s, nh * d]`, k and v `[b, s, nkv * d]` (grouped-query: query head `h` reads kv head
/// `h / (nh / nkv)`) → `[b, s, nh * d]`.
pub(crate) fn rope_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rope: &RopeTables,
    mask: &AttentionMask,
    scale: f64,
    head_dim: usize,
) -> candle_core::Result<Tensor> {
    if 2 * rope.half != head_dim {
        return Err(err(
            "metis-attention",
            format!(
                "rope tables for head dim {} vs head dim {head_dim}",
                2 * rope.half
            ),
        ));
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            mask: mask.clone(),
            scale,
            head_dim,
            rope: rope.clone(),
        },
    )
}

/// Which keys each query sees, from the batch's segment ids (0 = padding).
#[derive(Debug, Clone)]
pub(crate) struct AttentionMask {
    /// `[b * s]`.
    segments: Arc<Vec<u32>>,
    /// `[b * s]`: the first key a query sees when its visible keys are the single run
    /// `start..=i` (every document one contiguous run, as in padded and packed batches);
    /// None when a document is split by padding holes, which takes the per-key test.
    starts: Option<Arc<Vec<u32>>>,
}

impl AttentionMask {
    pub(crate) fn new(segments: &[u32], seq: usize) -> Self {
        let mut starts = Vec::with_capacity(segments.len());
        let mut contiguous = true;
        for row in segments.chunks(seq.max(1)) {
            let mut seen = std::collections::HashSet::new();
            for (i, &sg) in row.iter().enumerate() {
                let start = if sg != 0 && i > 0 && row[i - 1] == sg {
                    starts[starts.len() - 1]
                } else {
                    if sg != 0 && !seen.insert(sg) {
                        contiguous = false;
                    }
                    i as u32
                };
                starts.push(start);
            }
        }
        Self {
            segments: Arc::new(segments.to_vec()),
            starts: contiguous.then(|| Arc::new(starts)),
        }
    }
}

struct Attention {
    mask: AttentionMask,
    scale: f64,
    head_dim: usize,
    /// Rope applied to q and k inside the op (one graph node instead of three).
    rope: RopeTables,
}

impl Attention {
    /// q and k after the op's rope.
    fn rotated<T: Real>(
        &self,
        q: &[T],
        k: &[T],
        q_dims: &[usize],
        k_dims: &[usize],
    ) -> candle_core::Result<(Vec<T>, Vec<T>)> {
        let rope = Rope {
            tables: self.rope.clone(),
            inverse: false,
        };
        Ok((rope.apply(q, q_dims)?, rope.apply(k, k_dims)?))
    }
}

/// Shapes of one attention call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    s: usize,
    nh: usize,
    nkv: usize,
    d: usize,
}

impl Dims {
    fn rep(&self) -> usize {
        self.nh / self.nkv
    }
    fn q_at(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.s + i) * self.nh + h) * self.d
    }
    fn kv_at(&self, b: usize, j: usize, g: usize) -> usize {
        ((b * self.s + j) * self.nkv + g) * self.d
    }
}

/// `dst[m, n] (row-major, row stride n) = (accumulate ? dst : 0) + alpha * lhs[m, k] × rhs[k, n]`
/// on the calling thread (the attention kernels parallelise over heads).
fn matmul<T: Real>(dst: &mut [T], lhs: View<T>, rhs: View<T>, alpha: T, accumulate: bool) {
    gemm_into(dst, lhs, rhs, alpha, accumulate, gemm::Parallelism::None)
}

/// `exp(x - max) / sum(exp(x - max))` over a slice.
fn softmax_in_place<T: Real>(row: &mut [T]) {
    let m = row_max(row);
    let sum = exp_shifted(row, m);
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// Query rows per block: bounds the `[block, keys]` score buffers for long sequences.
const QUERY_BLOCK: usize = 128;

impl Attention {
    fn dims(&self, q: &[usize], k: &[usize], v: &[usize]) -> candle_core::Result<Dims> {
        let bad = || {
            err(
                "metis-attention",
                format!("q {q:?}, k {k:?}, v {v:?}, head dim {}", self.head_dim),
            )
        };
        let hd = self.head_dim;
        if q.len() != 3 || k != v || k.len() != 3 || hd == 0 {
            return Err(bad());
        }
        if !q[2].is_multiple_of(hd) || !k[2].is_multiple_of(hd) {
            return Err(bad());
        }
        let d = Dims {
            b: q[0],
            s: q[1],
            nh: q[2] / hd,
            nkv: k[2] / hd,
            d: hd,
        };
        if k[0] != d.b || k[1] != d.s || d.nkv == 0 || !d.nh.is_multiple_of(d.nkv) {
            return Err(bad());
        }
        if self.mask.segments.len() != d.b * d.s {
            return Err(err(
                "metis-attention",
                format!(
                    "{} segment ids for a [{}, {}] batch",
                    self.mask.segments.len(),
                    d.b,
                    d.s
                ),
            ));
        }
        Ok(d)
    }

    /// Query rows `i0..i0 + rows` of head `h` in row `b` (`[rows, d]`).
    fn q_rows<'a, T>(
        dm: Dims,
        x: &'a [T],
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
    ) -> View<'a, T> {
        View::new(x, dm.q_at(b, i0, h), (rows, dm.d), (dm.nh * dm.d, 1))
    }

    /// Key/value rows `0..rows` of kv head `g` in row `b` (`[rows, d]`).
    fn kv_rows<'a, T>(dm: Dims, x: &'a [T], b: usize, g: usize, rows: usize) -> View<'a, T> {
        View::new(x, dm.kv_at(b, 0, g), (rows, dm.d), (dm.nkv * dm.d, 1))
    }

    /// Probabilities `p [rows, nk]` of queries `i0..i0 + rows` (head `h`, row `b`) over keys
    /// `0..nk` (`nk = i0 + rows`: later keys are never visible): scaled scores, mask, softmax
    /// with the max subtracted, as the spelled-out form.
    #[allow(clippy::too_many_arguments)]
    fn probs<T: Real>(
        &self,
        dm: Dims,
        q: &[T],
        k: &[T],
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
        p: &mut Vec<T>,
    ) {
        let nk = i0 + rows;
        p.clear();
        p.resize(rows * nk, T::zero());
        let g = h / dm.rep();
        matmul(
            p,
            Self::q_rows(dm, q, b, h, i0, rows),
            Self::kv_rows(dm, k, b, g, nk).t(),
            T::from(self.scale).expect("scale"),
            false,
        );
        let seg = &self.mask.segments[b * dm.s..(b + 1) * dm.s];
        for (r, row) in p.chunks_mut(nk).enumerate() {
            let i = i0 + r;
            match &self.mask.starts {
                Some(starts) => {
                    // Visible: start..=i.
                    let lo = starts[b * dm.s + i] as usize;
                    row[..lo].fill(T::zero());
                    row[i + 1..].fill(T::zero());
                    softmax_in_place(&mut row[lo..=i]);
                }
                None => {
                    let visible = |j: usize| {
                        if seg[i] == 0 {
                            j == i
                        } else {
                            j <= i && seg[j] == seg[i]
                        }
                    };
                    let mut m = T::neg_infinity();
                    for (j, x) in row.iter().enumerate() {
                        if visible(j) {
                            m = Float::max(m, *x);
                        }
                    }
                    let mut sum = T::zero();
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = if visible(j) {
                            (*x - m).exp()
                        } else {
                            T::zero()
                        };
                        sum += *x;
                    }
                    for x in row.iter_mut() {
                        *x /= sum;
                    }
                }
            }
        }
    }

    /// Query blocks `(i0, rows)` covering `0..s`.
    fn blocks(s: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..s)
            .step_by(QUERY_BLOCK)
            .map(move |i0| (i0, QUERY_BLOCK.min(s - i0)))
    }

    fn fwd<T: Real>(&self, dm: Dims, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
        let d = dm.d;
        // One task per (row, head), each with its own [s, d] output, scattered afterwards.
        let parts: Vec<Vec<T>> = (0..dm.b * dm.nh)
            .into_par_iter()
            .map_init(Vec::new, |p, task| {
                let (b, h) = (task / dm.nh, task % dm.nh);
                let g = h / dm.rep();
                let mut o = vec![T::zero(); dm.s * d];
                for (i0, rows) in Self::blocks(dm.s) {
                    self.probs(dm, q, k, b, h, i0, rows, p);
                    let nk = i0 + rows;
                    matmul(
                        &mut o[i0 * d..(i0 + rows) * d],
                        View::new(p, 0, (rows, nk), (nk, 1)),
                        Self::kv_rows(dm, v, b, g, nk),
                        T::one(),
                        false,
                    );
                }
                o
            })
            .collect();
        let mut out = vec![T::zero(); q.len()];
        for (task, o) in parts.iter().enumerate() {
            let (b, h) = (task / dm.nh, task % dm.nh);
            for i in 0..dm.s {
                let at = dm.q_at(b, i, h);
                out[at..at + d].copy_from_slice(&o[i * d..(i + 1) * d]);
            }
        }
        out
    }

    /// Recomputes the probabilities (nothing is saved from the forward) and returns
    /// (dq, dk, dv). One task per (row, kv head) owns that head's dk/dv and the dq of its
    /// query heads; all are scattered afterwards.
    ///
    /// With `P` the probabilities and `dO` the output gradient of one head:
    /// `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − rowsum(P ∘ dP)) · scale`, `dQ = dS K`,
    /// `dK += dSᵀ Q`.
    fn bwd<T: Real>(
        &self,
        dm: Dims,
        q: &[T],
        k: &[T],
        v: &[T],
        dout: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let scale = T::from(self.scale).expect("scale");
        let (s, d, rep) = (dm.s, dm.d, dm.rep());
        let parts: Vec<(Vec<T>, Vec<T>, Vec<T>)> = (0..dm.b * dm.nkv)
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(p, dp), task| {
                    let (b, g) = (task / dm.nkv, task % dm.nkv);
                    let mut dq = vec![T::zero(); rep * s * d]; // [rep, s, d]
                    let mut dk = vec![T::zero(); s * d];
                    let mut dv = vec![T::zero(); s * d];
                    for r in 0..rep {
                        let h = g * rep + r;
                        for (i0, rows) in Self::blocks(s) {
                            let nk = i0 + rows;
                            self.probs(dm, q, k, b, h, i0, rows, p);
                            let p_view = View::new(p.as_slice(), 0, (rows, nk), (nk, 1));
                            let do_rows = Self::q_rows(dm, dout, b, h, i0, rows);
                            matmul(&mut dv[..nk * d], p_view.t(), do_rows, T::one(), true);
                            dp.clear();
                            dp.resize(rows * nk, T::zero());
                            matmul(
                                dp,
                                do_rows,
                                Self::kv_rows(dm, v, b, g, nk).t(),
                                T::one(),
                                false,
                            );
                            for (pr, dr) in p.chunks(nk).zip(dp.chunks_mut(nk)) {
                                let delta = dot(pr, dr);
                                for (x, &pj) in dr.iter_mut().zip(pr) {
                                    *x = pj * (*x - delta) * scale;
                                }
                            }
                            let ds_view = View::new(dp.as_slice(), 0, (rows, nk), (nk, 1));
                            matmul(
                                &mut dq[(r * s + i0) * d..(r * s + i0 + rows) * d],
                                ds_view,
                                Self::kv_rows(dm, k, b, g, nk),
                                T::one(),
                                false,
                            );
                            matmul(
                                &mut dk[..nk * d],
                                ds_view.t(),
                                Self::q_rows(dm, q, b, h, i0, rows),
                                T::one(),
                                true,
                            );
                        }
                    }
                    (dq, dk, dv)
                },
            )
            .collect();
        let mut dq = vec![T::zero(); q.len()];
        let mut dk = vec![T::zero(); k.len()];
        let mut dv = vec![T::zero(); v.len()];
        for (task, (pq, pk, pv)) in parts.into_iter().enumerate() {
            let (b, g) = (task / dm.nkv, task % dm.nkv);
            for i in 0..s {
                for r in 0..rep {
                    let at = dm.q_at(b, i, g * rep + r);
                    dq[at..at + d].copy_from_slice(&pq[(r * s + i) * d..(r * s + i + 1) * d]);
                }
                let at = dm.kv_at(b, i, g);
                dk[at..at + d].copy_from_slice(&pk[i * d..(i + 1) * d]);
                dv[at..at + d].copy_from_slice(&pv[i * d..(i + 1) * d]);
            }
        }
        (dq, dk, dv)
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "metis-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dm = self.dims(l1.dims(), l2.dims(), l3.dims())?;
        let n = self.name();
        let out = per_float!(n, s1, T => {
            let (q, k) = self.rotated(
                contiguous::<T>(n, s1, l1)?,
                contiguous::<T>(n, s2, l2)?,
                l1.dims(),
                l2.dims(),
            )?;
            self.fwd(dm, &q, &k, contiguous::<T>(n, s3, l3)?)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(
            op: &Attention,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            dout: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let dm = op.dims(q.dims(), k.dims(), v.dims())?;
            let n = op.name();
            let (dq, dk, dv) = with_data::<T, _, 4>(n, [q, k, v, dout], |[qs, ks, vs, ds]| {
                let (qr, kr) = op.rotated(qs, ks, q.dims(), k.dims())?;
                let (dq, dk, dv) = op.bwd(dm, &qr, &kr, vs, ds);
                // Rope's backward is the inverse rotation.
                let inverse = Rope {
                    tables: op.rope.clone(),
                    inverse: true,
                };
                let dq = inverse.apply(&dq, q.dims())?;
                let dk = inverse.apply(&dk, k.dims())?;
                candle_core::Result::Ok((dq, dk, dv))
            })??;
            Ok((
                tensor(dq, q.shape(), q)?,
                tensor(dk, k.shape(), k)?,
                tensor(dv, v.shape(), v)?,
            ))
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => run::<f32>(self, q, k, v, dout)?,
            _ => run::<f64>(self, q, k, v, dout)?,
        };
        Ok((
            q.track_op().then_some(dq),
            k.track_op().then_some(dk),
            v.track_op().then_some(dv),
        ))
    }
}
