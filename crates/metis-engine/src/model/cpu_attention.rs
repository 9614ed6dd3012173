//! Attention on the CPU read in place from the KV cache (f32, one sequence), for the decode
//! step ([`super::host_step`]) and for prompts under the plain causal mask
//! ([`super::layers::Attention`]).
//!
//! [`CachedKv`] views one layer of a sequence's cache without copying; [`attend_cached`] runs
//! every (query head, query) on the product pool. A decode step's single query per head goes
//! through [`attend_one`] (dot products against each cached key, an f32 softmax, a weighted
//! sum of values). A prompt's queries go in blocks of [`PROMPT_BLOCK`] rows through two
//! `gemm` calls per block (scores `Q Kᵀ`, then `P V`), which reuse each key and value across
//! the block's rows instead of re-reading them per query: the arithmetic is the same, summed
//! in gemm's order.

use super::{EngineError, Result};
use crate::quant;

/// Queries per prompt block (rows of one gemm), and the prompt length from which blocks are
/// used.
pub(crate) const PROMPT_BLOCK: usize = 32;

/// One sequence's cached keys and values of one layer, read in place:
/// [1, kv_heads, len, head_dim] with the cache buffer's strides.
pub(crate) struct CachedKv<'a> {
    k: &'a [f32],
    v: &'a [f32],
    k_strides: [usize; 2],
    v_strides: [usize; 2],
    /// Cached positions.
    pub(crate) len: usize,
    /// kv heads.
    heads: usize,
}

/// One kv head's keys and values: position `j` at `j * stride`.
pub(crate) struct KvHead<'a> {
    pub(crate) k: &'a [f32],
    pub(crate) v: &'a [f32],
    pub(crate) k_stride: usize,
    pub(crate) v_stride: usize,
}

impl<'a> CachedKv<'a> {
    /// The f32 CPU storage behind cache views `k`, `v` [1, kv_heads, len, head_dim].
    pub(crate) fn of(
        ks: &'a candle_core::Storage,
        kl: &candle_core::Layout,
        vs: &'a candle_core::Storage,
        vl: &candle_core::Layout,
    ) -> Result<Self> {
        use candle_core::Storage;
        let (Storage::Cpu(ks), Storage::Cpu(vs)) = (ks, vs) else {
            return Err(EngineError::InvalidArgument(
                "attention read in place needs a CPU KV cache".into(),
            ));
        };
        let (kst, vst) = (kl.stride(), vl.stride());
        if kst[3] != 1 || vst[3] != 1 {
            return Err(EngineError::InvalidArgument(
                "attention read in place needs unit-stride head_dim".into(),
            ));
        }
        Ok(Self {
            k: &ks.as_slice::<f32>()?[kl.start_offset()..],
            v: &vs.as_slice::<f32>()?[vl.start_offset()..],
            k_strides: [kst[1], kst[2]],
            v_strides: [vst[1], vst[2]],
            len: kl.dims()[2],
            heads: kl.dims()[1],
        })
    }

    /// Keys and values of kv head `g`.
    pub(crate) fn head(&self, g: usize) -> KvHead<'_> {
        KvHead {
            k: &self.k[g * self.k_strides[0]..],
            v: &self.v[g * self.v_strides[0]..],
            k_stride: self.k_strides[1],
            v_stride: self.v_strides[1],
        }
    }
}

/// Attention of one query head `q` [head_dim] over the first `visible` cached positions of its
/// kv head, into `out` [head_dim]: scores `(q · k_j) * scale` in f32, softmax in f32 (max
/// subtracted), then `Σ p_j v_j` — the tensor path's arithmetic.
pub(crate) fn attend_one(q: &[f32], kv: &KvHead, visible: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let mut scores: Vec<f32> = (0..visible)
        .map(|j| quant::dot_f32(q, &kv.k[j * kv.k_stride..][..hd]) * scale)
        .collect();
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut total = 0f32;
    for sc in scores.iter_mut() {
        *sc = (*sc - max).exp();
        total += *sc;
    }
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        quant::axpy_f32(p / total, &kv.v[j * kv.v_stride..][..hd], out);
    }
}

/// Causal attention of the `s` queries `q` [heads, s, head_dim] (query `i` at cache position
/// `kv.len − s + i`, seeing keys `0..=` that position) over `kv`: returns
/// [heads, s, head_dim], heads `g * n_rep .. (g + 1) * n_rep` reading kv head `g`.
pub(crate) fn attend_cached(
    q: &[f32],
    heads: usize,
    s: usize,
    hd: usize,
    kv: &CachedKv,
    scale: f32,
) -> Vec<f32> {
    let n_rep = heads / kv.heads;
    let offset = kv.len - s;
    let mut out = vec![0f32; heads * s * hd];
    if s < PROMPT_BLOCK {
        quant::run_parts_mut(&mut out, &uniform_bounds(heads * s, hd), &|t, row| {
            let (h, i) = (t / s, t % s);
            attend_one(
                &q[t * hd..][..hd],
                &kv.head(h / n_rep),
                offset + i + 1,
                scale,
                row,
            );
        });
        return out;
    }
    // Blocks of up to PROMPT_BLOCK queries of one head: (head, first query, queries).
    let blocks: Vec<(usize, usize, usize)> = (0..heads)
        .flat_map(|h| {
            (0..s)
                .step_by(PROMPT_BLOCK)
                .map(move |i0| (h, i0, PROMPT_BLOCK.min(s - i0)))
        })
        .collect();
    let mut bounds: Vec<usize> = blocks.iter().map(|&(h, i0, _)| (h * s + i0) * hd).collect();
    bounds.push(out.len());
    quant::run_parts_mut(&mut out, &bounds, &|t, rows| {
        let (h, i0, n) = blocks[t];
        let qb = &q[(h * s + i0) * hd..][..n * hd];
        attend_block(qb, &kv.head(h / n_rep), offset + i0, hd, scale, rows);
    });
    out
}

/// `[0, chunk, 2·chunk, …, parts·chunk]`.
fn uniform_bounds(parts: usize, chunk: usize) -> Vec<usize> {
    (0..=parts).map(|t| t * chunk).collect()
}

/// Attention of `n = q.len() / hd` consecutive queries of one head, the first at cache
/// position `first` (query `r` sees keys `0..=first + r`), into `out` [n, hd]: scores for the
/// block's widest range of keys in one gemm, each row's invisible keys dropped, an f32
/// softmax per row, then one gemm with the values.
fn attend_block(q: &[f32], kv: &KvHead, first: usize, hd: usize, scale: f32, out: &mut [f32]) {
    let n = q.len() / hd;
    let keys = first + n;
    assert!(
        (keys - 1) * kv.k_stride + hd <= kv.k.len() && (keys - 1) * kv.v_stride + hd <= kv.v.len(),
        "cache views hold every visible position"
    );
    let mut p = vec![0f32; n * keys];
    // SAFETY: q is [n, hd] (cs 1, rs hd); key j of the head is kv.k[j·k_stride ..][..hd], so
    // Kᵀ is read at (d, j) = d + j·k_stride, inside kv.k for j < keys (asserted above); the
    // destination p is [n, keys] (cs 1, rs keys), owned here.
    unsafe {
        gemm::gemm(
            n,
            keys,
            hd,
            p.as_mut_ptr(),
            1,
            keys as isize,
            false,
            q.as_ptr(),
            1,
            hd as isize,
            kv.k.as_ptr(),
            kv.k_stride as isize,
            1,
            0f32,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for (r, row) in p.chunks_exact_mut(keys).enumerate() {
        let visible = first + r + 1;
        softmax_in_place(&mut row[..visible]);
        row[visible..].fill(0.0);
    }
    // SAFETY: p is [n, keys] (cs 1, rs keys); value j is kv.v[j·v_stride ..][..hd], read at
    // (j, d) = j·v_stride + d, inside kv.v for j < keys (asserted above); out is [n, hd]
    // (cs 1, rs hd), the caller's exclusive slice.
    unsafe {
        gemm::gemm(
            n,
            hd,
            keys,
            out.as_mut_ptr(),
            1,
            hd as isize,
            false,
            p.as_ptr(),
            1,
            keys as isize,
            kv.v.as_ptr(),
            1,
            kv.v_stride as isize,
            0f32,
            1f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `x ← softmax(x)` in f32 (max subtracted), as [`attend_one`] computes it.
fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut total = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        total += *v;
    }
    for v in x.iter_mut() {
        *v /= total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    /// A cache layer [1, kv_heads, cap, hd] holding `len` positions.
    struct Layer {
        k: Vec<f32>,
        v: Vec<f32>,
        kv_heads: usize,
        cap: usize,
        hd: usize,
        len: usize,
    }

    impl Layer {
        fn view(&self) -> CachedKv<'_> {
            CachedKv {
                k: &self.k,
                v: &self.v,
                k_strides: [self.cap * self.hd, self.hd],
                v_strides: [self.cap * self.hd, self.hd],
                len: self.len,
                heads: self.kv_heads,
            }
        }

        /// Causal attention in f64 from the definition: [heads, s, hd].
        fn reference(&self, q: &[f32], heads: usize, s: usize, scale: f32) -> Vec<f64> {
            let (hd, cap) = (self.hd, self.cap);
            let (n_rep, offset) = (heads / self.kv_heads, self.len - s);
            let mut out = vec![0f64; heads * s * hd];
            for h in 0..heads {
                let g = h / n_rep;
                for i in 0..s {
                    let qi = &q[(h * s + i) * hd..][..hd];
                    let scores: Vec<f64> = (0..offset + i + 1)
                        .map(|j| {
                            let kj = &self.k[(g * cap + j) * hd..][..hd];
                            let dot: f64 =
                                qi.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                            dot * scale as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for (j, p) in e.iter().enumerate() {
                        let vj = &self.v[(g * cap + j) * hd..][..hd];
                        for d in 0..hd {
                            out[(h * s + i) * hd + d] += p / total * vj[d] as f64;
                        }
                    }
                }
            }
            out
        }
    }

    /// Both paths (per-query dots for short inputs, gemm blocks for prompts) against the f64
    /// definition: GQA, a prompt continuing a cache (offset > 0), partial last blocks.
    #[test]
    fn cached_attention_matches_the_definition() {
        let (heads, kv_heads, hd, cap) = (6, 2, 16, 192);
        for (s, len) in [
            (1, 1),
            (1, 150),
            (5, 40),
            (31, 31),
            (32, 32),
            (70, 70),
            (45, 130),
        ] {
            let layer = Layer {
                k: random(kv_heads * cap * hd, 1),
                v: random(kv_heads * cap * hd, 2),
                kv_heads,
                cap,
                hd,
                len,
            };
            let q = random(heads * s * hd, 3 + s as u64);
            let scale = (hd as f32).powf(-0.5);
            let got = attend_cached(&q, heads, s, hd, &layer.view(), scale);
            let want = layer.reference(&q, heads, s, scale);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(worst < 2e-5, "s {s}, cached {len}: max abs error {worst}");
        }
    }
}
