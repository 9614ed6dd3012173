//! Attention on the CPU read in place from the KV cache (f32, one sequence), for the decode
//! step ([`super::host_step`]) and for prompts under the plain causal mask
//! ([`super::layers::Attention`]).
//!
//! [`CachedKv`] views one layer of a sequence's cache without copying. Every attention here
//! is two `gemm` calls over a group of query rows that share a kv head (scores `Q Kᵀ`, an f32
//! softmax per row, then `P V`), so each cached key and value is read once per group rather
//! than once per query: [`attend_decode`] groups a decode step's query heads by kv head (one
//! task per sequence and kv head), [`attend_cached`] a prompt's queries in blocks of
//! [`PROMPT_BLOCK`] positions per head. Tasks run on the product pool.

use super::{EngineError, Result};
use crate::quant;

/// Queries per prompt block (rows of one gemm).
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
    hd: usize,
}

/// One kv head's keys and values: position `j` at `j * stride`.
pub(crate) struct KvHead<'a> {
    k: &'a [f32],
    v: &'a [f32],
    k_stride: usize,
    v_stride: usize,
    hd: usize,
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
            hd: kl.dims()[3],
        })
    }

    /// Keys and values of kv head `g`.
    pub(crate) fn head(&self, g: usize) -> KvHead<'_> {
        KvHead {
            k: &self.k[g * self.k_strides[0]..],
            v: &self.v[g * self.v_strides[0]..],
            k_stride: self.k_strides[1],
            v_stride: self.v_strides[1],
            hd: self.hd,
        }
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
    let mut out = vec![0f32; heads * s * hd];
    if s == 1 {
        attend_decode(q, &[kv], n_rep, hd, scale, &mut out);
        return out;
    }
    let offset = kv.len - s;
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
        let first = offset + i0;
        attend_rows(
            qb,
            &kv.head(h / n_rep),
            first + n,
            |r| first + r + 1,
            scale,
            rows,
        );
    });
    out
}

/// One decode step's attention for several sequences: `q` [n, heads, hd] holds one query per
/// head of sequence `r`, which reads `kvs[r]` whole; `out` [n, heads, hd]. One task per
/// (sequence, kv head) takes that head's `n_rep` query heads together, so each key and value
/// is read once for all of them.
pub(crate) fn attend_decode(
    q: &[f32],
    kvs: &[&CachedKv],
    n_rep: usize,
    hd: usize,
    scale: f32,
    out: &mut [f32],
) {
    let group = n_rep * hd;
    let tasks = out.len() / group;
    let kv_heads = tasks / kvs.len().max(1);
    let bounds: Vec<usize> = (0..=tasks).map(|t| t * group).collect();
    quant::run_parts_mut(out, &bounds, &|t, rows| {
        let kv = kvs[t / kv_heads];
        let head = kv.head(t % kv_heads);
        attend_rows(
            &q[t * group..][..group],
            &head,
            kv.len,
            |_| kv.len,
            scale,
            rows,
        );
    });
}

/// Attention of the queries `q` [n, hd] of one kv head, row `r` seeing keys
/// `0..visible(r)` (at most `keys`), into `out` [n, hd]: scores `(q · k_j) · scale` for all
/// `keys` keys in one gemm, each row's invisible keys dropped, an f32 softmax per row (max
/// subtracted), then one gemm with the values.
fn attend_rows(
    q: &[f32],
    kv: &KvHead,
    keys: usize,
    visible: impl Fn(usize) -> usize,
    scale: f32,
    out: &mut [f32],
) {
    assert_eq!(q.len(), out.len(), "q and out are both [n, hd]");
    let (hd, n) = (kv.hd, q.len() / kv.hd);
    assert!(
        keys > 0
            && (keys - 1) * kv.k_stride + hd <= kv.k.len()
            && (keys - 1) * kv.v_stride + hd <= kv.v.len(),
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
        let seen = visible(r).min(keys);
        softmax_in_place(&mut row[..seen]);
        row[seen..].fill(0.0);
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

/// `x ← softmax(x)` in f32, the largest value subtracted first.
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
                hd: self.hd,
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
