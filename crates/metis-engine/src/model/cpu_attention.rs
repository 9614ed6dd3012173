//! Attention on the CPU read in place from the KV cache (f32 or f16, one sequence), for the decode
//! step ([`super::host_step`]) and for prompts under the plain causal mask
//! ([`super::layers::Attention`]).
//!
//! [`CachedKv`] views one layer of a sequence's cache without copying. A group of query rows
//! that share a kv head is attended together (scores `Q Kᵀ`, an f32 softmax per row, then
//! `P V`), so each cached key and value is read once per group rather than once per query:
//! * [`attend_cached`] (prompts): blocks of [`PROMPT_BLOCK`] positions of all the query heads
//!   of one kv head, two `gemm` calls each;
//! * [`attend_decode`] (a decode step): per sequence and kv head, the keys in parts of
//!   [`PART_KEYS`] cut at fixed positions, each part streamed once by a decode kernel (explicit
//!   AVX2 in [`x86`], portable in [`decode_group_body`]) into an unnormalised output, a max
//!   score and a sum, then merged (flash-decoding).
//!
//! Tasks run on the product pool. An f16 cache (GGUF models' default, as in llama.cpp) halves
//! the bytes a decode step reads from memory; its rows are widened to f32 right before use.

use std::cell::RefCell;
use std::thread::LocalKey;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{EngineError, Result};
use crate::quant;
use crate::quant::f32_gemm::{gemm_f32, Strided};

/// Queries per prompt block (rows of one gemm).
pub(crate) const PROMPT_BLOCK: usize = 32;

/// One sequence's cached keys and values of one layer, read in place:
/// [1, kv_heads, len, head_dim] with the cache buffer's strides.
pub(crate) struct CachedKv<'a> {
    k: Rows<'a>,
    v: Rows<'a>,
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
    k: Rows<'a>,
    v: Rows<'a>,
    k_stride: usize,
    v_stride: usize,
    hd: usize,
}

/// Cached values as stored.
#[derive(Clone, Copy)]
enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> Rows<'a> {
    fn of(storage: &'a candle_core::CpuStorage, start: usize) -> Result<Self> {
        use candle_core::backend::BackendStorage;
        use candle_core::CpuStorage as C;
        Ok(match storage {
            C::F32(v) => Rows::F32(&v[start..]),
            C::F16(v) => Rows::F16(&v[start..]),
            other => {
                return Err(EngineError::InvalidArgument(format!(
                    "attention read in place needs an f32 or f16 KV cache, not {:?}",
                    other.dtype()
                )))
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::F16(v) => v.len(),
        }
    }

    fn from(&self, start: usize) -> Self {
        match self {
            Rows::F32(v) => Rows::F32(&v[start..]),
            Rows::F16(v) => Rows::F16(&v[start..]),
        }
    }

    /// The `hd` values at `start` as f32: in place, or widened into `row` by `widen`.
    #[inline(always)]
    fn row_f32<'r>(
        &self,
        start: usize,
        hd: usize,
        row: &'r mut [f32],
        widen: &impl Fn(&[f16], &mut [f32]),
    ) -> &'r [f32]
    where
        'a: 'r,
    {
        match *self {
            Rows::F32(v) => &v[start..][..hd],
            Rows::F16(v) => {
                widen(&v[start..][..hd], row);
                row
            }
        }
    }

    /// Rows `0..rows` (`stride` apart, `hd` values each) as f32: read in place, or widened
    /// into `scratch`. Returns the values and their row stride.
    fn as_f32<'s>(
        &self,
        rows: usize,
        stride: usize,
        hd: usize,
        scratch: &'s mut Vec<f32>,
    ) -> (&'s [f32], usize)
    where
        'a: 's,
    {
        match *self {
            Rows::F32(v) => (v, stride),
            Rows::F16(v) => {
                scratch.resize(rows * hd, 0.0);
                for (j, out) in scratch.chunks_exact_mut(hd).enumerate() {
                    v[j * stride..][..hd].convert_to_f32_slice(out);
                }
                (scratch, hd)
            }
        }
    }
}

thread_local! {
    /// Widened f16 keys and values, per thread.
    static WIDE: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// A decode group's scores, per thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A decode group's values widened from f16, per thread.
    static VALUES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A prompt block's queries gathered from its heads, per thread.
    static BLOCK_QUERIES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A prompt block's scores, per thread.
    static BLOCK_SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The parts of a decode step's attention and their results, kept between steps.
    static PARTS: RefCell<DecodeParts> = RefCell::new(DecodeParts::default());
}

impl<'a> CachedKv<'a> {
    /// The CPU storage behind cache views `k`, `v` [1, kv_heads, len, head_dim].
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
            k: Rows::of(ks, kl.start_offset())?,
            v: Rows::of(vs, vl.start_offset())?,
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
            k: self.k.from(g * self.k_strides[0]),
            v: self.v.from(g * self.v_strides[0]),
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
    let _timer = quant::profile::Timer::start(quant::profile::Phase::Attention);
    let offset = kv.len - s;
    // Blocks of up to PROMPT_BLOCK queries of every query head of one kv head, attended as
    // one set of rows, so that the block's keys and values are packed once for all n_rep
    // heads and each gemm has n_rep times the rows: (kv head, first query, queries).
    let blocks: Vec<(usize, usize, usize)> = (0..kv.heads)
        .flat_map(|g| {
            (0..s)
                .step_by(PROMPT_BLOCK)
                .map(move |i0| (g, i0, PROMPT_BLOCK.min(s - i0)))
        })
        .collect();
    // The blocks' outputs, each [n_rep, queries, hd] and contiguous, in block order; scattered
    // into `out` [heads, s, hd] afterwards.
    let mut by_block = vec![0f32; out.len()];
    let mut bounds: Vec<usize> = blocks
        .iter()
        .map(|&(g, i0, _)| (g * s + i0) * n_rep * hd)
        .collect();
    bounds.push(by_block.len());
    let head_rows = |g: usize, j: usize, i0: usize, n: usize| {
        ((g * n_rep + j) * s + i0) * hd..((g * n_rep + j) * s + i0 + n) * hd
    };
    quant::run_parts_mut(&mut by_block, &bounds, &|t, rows| {
        let (g, i0, n) = blocks[t];
        let first = offset + i0;
        with_buffer(&BLOCK_QUERIES, n_rep * n * hd, |qb| {
            for (j, qj) in qb.chunks_exact_mut(n * hd).enumerate() {
                qj.copy_from_slice(&q[head_rows(g, j, i0, n)]);
            }
            attend_rows(
                qb,
                &kv.head(g),
                first + n,
                |r| first + r % n + 1,
                scale,
                rows,
            );
        });
    });
    for (&(g, i0, n), block) in blocks.iter().zip(bounds.windows(2)) {
        let block = &by_block[block[0]..block[1]];
        for (j, rows) in block.chunks_exact(n * hd).enumerate() {
            out[head_rows(g, j, i0, n)].copy_from_slice(rows);
        }
    }
    out
}

/// One decode step's attention for several sequences: `q` [n, heads, hd] holds one query per
/// head of sequence `r`, which reads `kvs[r]` whole; `out` [n, heads, hd]. Each (sequence,
/// kv head) takes that head's `n_rep` query heads together, so each key and value is read
/// once for all of them, and its keys are cut into parts of [`PART_KEYS`] attended as
/// separate tasks and merged ([`attend_decode_parts`]): a model with few kv heads would
/// otherwise leave threads idle (3 kv heads on 2 threads: one idle a third of the time).
pub(crate) fn attend_decode(
    q: &[f32],
    kvs: &[&CachedKv],
    n_rep: usize,
    hd: usize,
    scale: f32,
    out: &mut [f32],
) {
    let _timer = quant::profile::Timer::start(quant::profile::Phase::Attention);
    let group = n_rep * hd;
    let tasks = out.len() / group;
    let kv_heads = tasks / kvs.len().max(1);
    let task_kv = |t: usize| (kvs[t / kv_heads], t % kv_heads);
    if hd <= MAX_STREAM_HD {
        return attend_decode_parts(q, &task_kv, n_rep, hd, scale, PART_KEYS, out);
    }
    let bounds: Vec<usize> = (0..=tasks).map(|t| t * group).collect();
    quant::run_parts_mut(out, &bounds, &|t, rows| {
        let (kv, h) = task_kv(t);
        let q = &q[t * group..][..group];
        attend_rows(q, &kv.head(h), kv.len, |_| kv.len, scale, rows);
    });
}

/// Keys per part of a decode task. The cut points are fixed multiples of this, never chosen
/// from the thread count or from how many sequences share the step, so that a sequence's
/// answer does not depend on either (batched serving and evaluation give each request the
/// tokens it would get alone).
const PART_KEYS: usize = 128;

/// [`attend_decode_parts`]'s buffers: (task, keys) of every part, the parts' results, and the
/// results' bounds.
#[derive(Default)]
struct DecodeParts {
    parts: Vec<(usize, std::ops::Range<usize>)>,
    results: Vec<f32>,
    bounds: Vec<usize>,
}

/// [`attend_decode`] with each task's keys in parts `[i·part_keys, (i+1)·part_keys)`: every
/// part yields, per query row, its unnormalised output `Σ e^(s − m)·v`, its max score `m` and
/// its sum `Σ e^(s − m)` (flash-decoding's partial results); the parts of a row are then
/// merged in order, each rescaled by `e^(m_part − m_row)`.
fn attend_decode_parts<'a>(
    q: &[f32],
    task_kv: &(dyn Fn(usize) -> (&'a CachedKv<'a>, usize) + Sync),
    n_rep: usize,
    hd: usize,
    scale: f32,
    part_keys: usize,
    out: &mut [f32],
) {
    let group = n_rep * hd;
    let tasks = out.len() / group;
    // Taken out of the thread-local for the call (as the products' scratch is), so that no
    // step allocates once the buffers have grown to the longest context seen.
    let mut buffers = PARTS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let DecodeParts {
        parts,
        results,
        bounds,
    } = &mut buffers;
    // (task, keys) of every part, tasks in order.
    parts.clear();
    parts.extend((0..tasks).flat_map(|t| {
        let len = task_kv(t).0.len;
        (0..len.div_ceil(part_keys).max(1))
            .map(move |i| (t, i * part_keys..((i + 1) * part_keys).min(len)))
    }));
    // Per part: the rows' outputs [n_rep, hd], then their max scores [n_rep] and sums [n_rep].
    let part_len = n_rep * (hd + 2);
    results.clear();
    results.resize(parts.len() * part_len, 0.0);
    bounds.clear();
    bounds.extend((0..=parts.len()).map(|p| p * part_len));
    let parts = &*parts;
    quant::run_parts_mut(results, bounds, &|p, part| {
        let (t, keys) = parts[p].clone();
        let (kv, h) = task_kv(t);
        let (acc, stats) = part.split_at_mut(group);
        let (maxes, sums) = stats.split_at_mut(n_rep);
        let q = &q[t * group..][..group];
        with_buffer(&SCORES, n_rep * keys.len(), |scores| {
            decode_group_on_this_cpu(q, &kv.head(h), keys, scale, scores, acc, (maxes, sums))
        });
    });
    let mut first = 0;
    for (t, out) in out.chunks_exact_mut(group).enumerate() {
        let count = parts[first..].iter().take_while(|(pt, _)| *pt == t).count();
        let task_parts = &results[first * part_len..][..count * part_len];
        first += count;
        for (r, out) in out.chunks_exact_mut(hd).enumerate() {
            let rows = task_parts.chunks_exact(part_len).map(|p| {
                let (acc, stats) = p.split_at(group);
                (&acc[r * hd..][..hd], stats[r], stats[n_rep + r])
            });
            merge_parts(rows, out);
        }
    }
    PARTS.with(|p| *p.borrow_mut() = buffers);
}

/// `out = Σ e^(m_i − M)·acc_i / Σ e^(m_i − M)·l_i` over the parts' `(acc_i, m_i, l_i)` of
/// one query row, `M` the largest `m_i`.
fn merge_parts<'p>(parts: impl Iterator<Item = (&'p [f32], f32, f32)> + Clone, out: &mut [f32]) {
    let max = parts
        .clone()
        .fold(f32::NEG_INFINITY, |m, (_, mi, _)| m.max(mi));
    out.fill(0.0);
    let mut total = 0f32;
    for (acc, m, l) in parts {
        let w = exp_nonpositive(m - max);
        total += w * l;
        for (o, &a) in out.iter_mut().zip(acc) {
            *o += w * a;
        }
    }
    for o in out.iter_mut() {
        *o /= total;
    }
}

/// Widest head for which the decode kernel ([`decode_group_body`]) streams keys through a
/// stack row; wider heads go through [`attend_rows`].
const MAX_STREAM_HD: usize = 256;

/// `f` with this thread's buffer `key` as `len` values (kept between calls; its contents are
/// whatever the last use left). Taken out of the thread-local for the call, so that `f` runs
/// outside a closure passed to `LocalKey::with` (which is compiled without the AVX2
/// function's target features) and a nested use on this thread finds a fresh buffer.
fn with_buffer(key: &'static LocalKey<RefCell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32])) {
    let mut buffer = key.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buffer.resize(len, 0.0);
    f(&mut buffer);
    key.with(|b| *b.borrow_mut() = buffer);
}

/// Per query row of a decode group, its max score and its sum of `e^(s − max)`.
type RowStats<'s> = (&'s mut [f32], &'s mut [f32]);

/// The decode kernel this CPU runs: [`x86::decode_group`] where AVX2, FMA and F16C were
/// detected and the head width is a multiple of 64, else the portable [`decode_group_body`].
fn decode_group_on_this_cpu(
    q: &[f32],
    kv: &KvHead,
    keys: std::ops::Range<usize>,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    stats: RowStats,
) {
    #[cfg(target_arch = "x86_64")]
    if quant::kernels::chosen_has_avx2() && kv.hd.is_multiple_of(64) {
        // Taken out of the thread-local for the call (see `with_buffer`).
        let mut values = VALUES.with(|v| std::mem::take(&mut *v.borrow_mut()));
        // SAFETY: a SIMD kernel set is chosen only after AVX2, FMA and F16C are detected; the
        // head width is a multiple of 64 (checked above).
        unsafe { x86::decode_group(q, kv, keys, scale, scores, out, stats, &mut values) };
        VALUES.with(|v| *v.borrow_mut() = values);
        return;
    }
    let widen = |src: &[f16], dst: &mut [f32]| src.convert_to_f32_slice(dst);
    decode_group_body(q, kv, keys, scale, scores, out, stats, widen);
}

/// The queries `q` [n, hd] of one kv head over `keys`, unnormalised: `out` [n, hd] gets
/// `Σ_j e^(s_j − m)·v_j` per row and `stats` each row's max score `m` and `Σ_j e^(s_j − m)`.
/// One pass over the keys (each widened once into a stack row, then dotted with every query)
/// and one over the values (each widened once and added into every output row): for a
/// handful of rows this streams the cache once, with none of a gemm's packing. `scores`
/// [n, keys.len()] is scratch; `widen` turns f16 rows into f32.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the kernel's operands; callers pass them through
fn decode_group_body(
    q: &[f32],
    kv: &KvHead,
    keys: std::ops::Range<usize>,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    (maxes, sums): RowStats,
    widen: impl Fn(&[f16], &mut [f32]),
) {
    let hd = kv.hd;
    let n_keys = keys.len();
    let mut row = [0f32; MAX_STREAM_HD];
    let row = &mut row[..hd];
    for (i, j) in keys.clone().enumerate() {
        let k = kv.k.row_f32(j * kv.k_stride, hd, row, &widen);
        for (r, qr) in q.chunks_exact(hd).enumerate() {
            scores[r * n_keys + i] = dot(qr, k) * scale;
        }
    }
    for ((p, m), l) in scores.chunks_exact_mut(n_keys).zip(maxes).zip(sums) {
        (*m, *l) = exp_in_place(p);
    }
    out.fill(0.0);
    for (i, j) in keys.enumerate() {
        let v = kv.v.row_f32(j * kv.v_stride, hd, row, &widen);
        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
            let p = scores[r * n_keys + i];
            for (o, &x) in o.iter_mut().zip(v) {
                *o += p * x;
            }
        }
    }
}

/// `Σ a·b` in eight interleaved partial sums (which the compiler keeps in one vector register).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
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
    let hd = kv.hd;
    assert!(
        keys > 0
            && (keys - 1) * kv.k_stride + hd <= kv.k.len()
            && (keys - 1) * kv.v_stride + hd <= kv.v.len(),
        "cache views hold every visible position"
    );
    WIDE.with(|wide| {
        let (k_wide, v_wide) = &mut *wide.borrow_mut();
        let (k, k_stride) = kv.k.as_f32(keys, kv.k_stride, hd, k_wide);
        let (v, v_stride) = kv.v.as_f32(keys, kv.v_stride, hd, v_wide);
        attend_rows_f32(
            q,
            [k, v],
            [k_stride, v_stride],
            keys,
            hd,
            visible,
            scale,
            out,
        );
    });
}

/// [`attend_rows`] over f32 keys and values, row `j` of each at `j * stride`.
#[allow(clippy::too_many_arguments)]
fn attend_rows_f32(
    q: &[f32],
    [k, v]: [&[f32]; 2],
    [k_stride, v_stride]: [usize; 2],
    keys: usize,
    hd: usize,
    visible: impl Fn(usize) -> usize,
    scale: f32,
    out: &mut [f32],
) {
    let n = q.len() / hd;
    assert!(
        (keys - 1) * k_stride + hd <= k.len() && (keys - 1) * v_stride + hd <= v.len(),
        "key and value rows cover every visible position"
    );
    // This thread's score buffer, kept between blocks (a block of several heads' rows over a
    // long prompt's keys is past the allocator's threshold for mapping fresh pages).
    with_buffer(&BLOCK_SCORES, n * keys, |p| {
        // SAFETY: q is [n, hd] (cs 1, rs hd); key j is k[j·k_stride ..][..hd], so Kᵀ is read at
        // (d, j) = d + j·k_stride, inside k for j < keys (asserted above); the destination p is
        // [n, keys] (cs 1, rs keys), owned here.
        unsafe {
            gemm_f32(
                (n, keys, hd),
                p.as_mut_ptr(),
                keys,
                Strided::rows(q.as_ptr(), hd),
                Strided::transposed(k.as_ptr(), k_stride),
                scale,
            );
        }
        for (r, row) in p.chunks_exact_mut(keys).enumerate() {
            let seen = visible(r).min(keys);
            softmax_on_this_cpu(&mut row[..seen]);
            row[seen..].fill(0.0);
        }
        // SAFETY: p is [n, keys] (cs 1, rs keys); value j is v[j·v_stride ..][..hd], read at
        // (j, d) = j·v_stride + d, inside v for j < keys (asserted above); out is [n, hd]
        // (cs 1, rs hd), the caller's exclusive slice.
        unsafe {
            gemm_f32(
                (n, hd, keys),
                out.as_mut_ptr(),
                hd,
                Strided::rows(p.as_ptr(), keys),
                Strided::rows(v.as_ptr(), v_stride),
                1.0,
            );
        }
    });
}

/// `x ← softmax(x)` in f32, the largest value subtracted first.
#[inline(always)]
fn softmax_in_place(x: &mut [f32]) {
    let (_, total) = exp_in_place(x);
    for v in x.iter_mut() {
        *v /= total;
    }
}

quant::kernels::on_this_cpu! {
    /// [`softmax_in_place`] compiled for AVX2 where the kernel set has it (eight exponentials
    /// per instruction instead of SSE2's four; the same operations, so the same bits: Rust
    /// never fuses a multiply and an add on its own).
    fn softmax_on_this_cpu(x: &mut [f32]) {
        softmax_in_place(x)
    }
}

/// `x ← e^(x − max x)`; returns `(max x, Σ e^(x − max x))`.
#[inline(always)]
fn exp_in_place(x: &mut [f32]) -> (f32, f32) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in x.iter_mut() {
        *v = exp_nonpositive(*v - max);
    }
    (max, x.iter().sum())
}

/// `eˣ` for `x ≤ 0` (a softmax's shifted scores) within 2 ulp, branch-free so that loops over
/// it vectorise: a prompt's attention takes hundreds of millions of exponentials, which
/// through libm's scalar `expf` were most of its time. Cephes' `expf`: `x = n·ln 2 + r` with
/// `n` rounded to nearest (the 1.5·2²³ trick), `eʳ` by its degree-7 polynomial, `2ⁿ` built in
/// the exponent bits. Below −87.3 the result is the smallest normal float's neighbourhood
/// (≈1e-38), which a sum of probabilities cannot tell from 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.clamp(-87.336_54, 0.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e_r * two_n
}

/// The decode kernel with explicit AVX2 + FMA + F16C, for head widths that are multiples of
/// 64: the same arithmetic as [`decode_group_body`] in another order (tested against it
/// within rounding).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{exp_in_place, KvHead, RowStats, Rows, MAX_STREAM_HD};

    /// [`super::decode_group_body`]'s contract, with `values` a scratch for widened f16 values.
    /// Scores: four keys at a time against each query row (four FMA chains, one combined
    /// horizontal sum), keys widened once into a stack buffer. Values: all widened once, then
    /// per query row and 64 dimensions, eight register accumulators over every key.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C, and `kv.hd` must be a multiple of 64 (at most
    /// `MAX_STREAM_HD`); the cache views must hold every key in `keys`.
    #[allow(clippy::too_many_arguments)] // the kernel's operands, as decode_group_body's
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn decode_group(
        q: &[f32],
        kv: &KvHead,
        keys: std::ops::Range<usize>,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
        (maxes, sums): RowStats,
        values: &mut Vec<f32>,
    ) {
        let (hd, n, nk) = (kv.hd, q.len() / kv.hd, keys.len());
        assert!(hd.is_multiple_of(64) && hd <= MAX_STREAM_HD && scores.len() >= n * nk);
        assert!(out.len() >= n * hd && maxes.len() >= n && sums.len() >= n);
        if nk > 0 {
            let last = keys.end - 1;
            assert!(last * kv.k_stride + hd <= kv.k.len() && last * kv.v_stride + hd <= kv.v.len());
        }
        scores_of(q, kv, keys.clone(), scale, scores);
        for ((p, m), l) in scores
            .chunks_exact_mut(nk.max(1))
            .zip(maxes)
            .zip(sums)
            .take(n)
        {
            (*m, *l) = exp_in_place(&mut p[..nk]);
        }
        let (v, v_stride) = match kv.v {
            Rows::F32(v) => (&v[keys.start * kv.v_stride..], kv.v_stride),
            Rows::F16(v) => {
                values.resize(nk * hd, 0.0);
                for (i, j) in keys.clone().enumerate() {
                    widen(&v[j * kv.v_stride..][..hd], &mut values[i * hd..][..hd]);
                }
                (&values[..], hd)
            }
        };
        weighted_values(scores, nk, v, v_stride, hd, out, n);
    }

    /// `scores[r·nk + i] = scale · q_r · k_(keys.start + i)`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_of(
        q: &[f32],
        kv: &KvHead,
        keys: std::ops::Range<usize>,
        scale: f32,
        scores: &mut [f32],
    ) {
        let (hd, n, nk) = (kv.hd, q.len() / kv.hd, keys.len());
        let mut buf = [0f32; 4 * MAX_STREAM_HD];
        let key = |j: usize, buf: &mut [f32]| -> *const f32 {
            match kv.k {
                Rows::F32(k) => k[j * kv.k_stride..][..hd].as_ptr(),
                Rows::F16(k) => {
                    // SAFETY: this kernel runs only where F16C was detected (see the caller).
                    unsafe { widen(&k[j * kv.k_stride..][..hd], &mut buf[..hd]) };
                    buf.as_ptr()
                }
            }
        };
        let scale4 = _mm_set1_ps(scale);
        let mut i = 0;
        while i + 4 <= nk {
            let (b01, b23) = buf.split_at_mut(2 * MAX_STREAM_HD);
            let (b0, b1) = b01.split_at_mut(MAX_STREAM_HD);
            let (b2, b3) = b23.split_at_mut(MAX_STREAM_HD);
            let j = keys.start + i;
            let k = [key(j, b0), key(j + 1, b1), key(j + 2, b2), key(j + 3, b3)];
            for r in 0..n {
                let qr = q.as_ptr().add(r * hd);
                let mut acc = [_mm256_setzero_ps(); 4];
                for c in (0..hd).step_by(8) {
                    let qc = _mm256_loadu_ps(qr.add(c));
                    for (a, kp) in acc.iter_mut().zip(k) {
                        *a = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kp.add(c)), *a);
                    }
                }
                let s = _mm_mul_ps(hsum4(acc), scale4);
                _mm_storeu_ps(scores.as_mut_ptr().add(r * nk + i), s);
            }
            i += 4;
        }
        while i < nk {
            let kp = key(keys.start + i, &mut buf);
            for r in 0..n {
                let qr = q.as_ptr().add(r * hd);
                let mut acc = _mm256_setzero_ps();
                for c in (0..hd).step_by(8) {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(qr.add(c)),
                        _mm256_loadu_ps(kp.add(c)),
                        acc,
                    );
                }
                let s = hsum4([
                    acc,
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                ]);
                scores[r * nk + i] = _mm_cvtss_f32(s) * scale;
            }
            i += 1;
        }
    }

    /// `out[r] = Σ_i scores[r·nk + i] · v_i`, value `i` at `v[i·v_stride..][..hd]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_values(
        scores: &[f32],
        nk: usize,
        v: &[f32],
        v_stride: usize,
        hd: usize,
        out: &mut [f32],
        n: usize,
    ) {
        for d0 in (0..hd).step_by(64) {
            for r in 0..n {
                let mut acc = [_mm256_setzero_ps(); 8];
                for i in 0..nk {
                    let p = _mm256_set1_ps(*scores.get_unchecked(r * nk + i));
                    let vp = v.as_ptr().add(i * v_stride + d0);
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(vp.add(8 * c)), *a);
                    }
                }
                let op = out.as_mut_ptr().add(r * hd + d0);
                for (c, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(op.add(8 * c), *a);
                }
            }
        }
    }

    /// The sums of four vectors' lanes, as four lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum4([a, b, c, d]: [__m256; 4]) -> __m128 {
        let t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
    }

    /// f16 → f32, eight at a time (`src.len()` a multiple of 8, `dst` at least as long).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        assert!(src.len().is_multiple_of(8) && dst.len() >= src.len());
        for i in (0..src.len()).step_by(8) {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
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

    /// A cache layer [1, kv_heads, cap, hd] holding `len` positions, in f32 and f16 (the
    /// f32 values are the f16 ones widened, so that one reference serves both).
    struct Layer {
        k: Vec<f32>,
        v: Vec<f32>,
        k16: Vec<f16>,
        v16: Vec<f16>,
        kv_heads: usize,
        cap: usize,
        hd: usize,
        len: usize,
    }

    impl Layer {
        fn new(kv_heads: usize, cap: usize, hd: usize, len: usize) -> Self {
            let k16: Vec<f16> = random(kv_heads * cap * hd, 1)
                .into_iter()
                .map(f16::from_f32)
                .collect();
            let v16: Vec<f16> = random(kv_heads * cap * hd, 2)
                .into_iter()
                .map(f16::from_f32)
                .collect();
            Layer {
                k: k16.iter().map(|x| x.to_f32()).collect(),
                v: v16.iter().map(|x| x.to_f32()).collect(),
                k16,
                v16,
                kv_heads,
                cap,
                hd,
                len,
            }
        }

        fn view(&self, f16: bool) -> CachedKv<'_> {
            let (k, v) = if f16 {
                (Rows::F16(&self.k16), Rows::F16(&self.v16))
            } else {
                (Rows::F32(&self.k), Rows::F32(&self.v))
            };
            CachedKv {
                k,
                v,
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

    /// Decode and prompt attention, over f32 and f16 caches, against the f64 definition: GQA,
    /// a prompt continuing a cache (offset > 0), partial last blocks.
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
            let layer = Layer::new(kv_heads, cap, hd, len);
            let q = random(heads * s * hd, 3 + s as u64);
            let scale = (hd as f32).powf(-0.5);
            let want = layer.reference(&q, heads, s, scale);
            for f16 in [false, true] {
                let got = attend_cached(&q, heads, s, hd, &layer.view(f16), scale);
                let worst = max_abs_error(&got, &want);
                assert!(
                    worst < 2e-5,
                    "s {s}, cached {len}, f16 {f16}: max abs error {worst}"
                );
            }
        }
    }

    /// Largest |got − want| over two same-length outputs.
    fn max_abs_error(got: &[f32], want: &[f64]) -> f64 {
        got.iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max)
    }

    /// The x86 decode kernel against the portable one: scores, sums and outputs within
    /// rounding (the same products summed in another order; widening is exact), over f32 and
    /// f16 caches, 4-key blocks and a tail, head widths 64 and 128.
    #[test]
    fn simd_decode_group_matches_the_portable_one() {
        if !crate::quant::kernels::chosen_has_avx2() {
            return;
        }
        for (hd, keys) in [(64, 90), (128, 7), (64, 1)] {
            let layer = Layer::new(2, 96, hd, keys);
            let q = random(3 * hd, 7);
            for f16 in [false, true] {
                let view = layer.view(f16);
                let head = view.head(1);
                let (mut simd, mut portable) = (vec![0f32; 3 * hd], vec![0f32; 3 * hd]);
                let mut scores = vec![0f32; 3 * keys];
                let (mut m, mut l) = ([0f32; 3], [0f32; 3]);
                let (mut pm, mut pl) = ([0f32; 3], [0f32; 3]);
                let stats = (&mut m[..], &mut l[..]);
                decode_group_on_this_cpu(&q, &head, 0..keys, 0.2, &mut scores, &mut simd, stats);
                let widen = |src: &[f16], dst: &mut [f32]| src.convert_to_f32_slice(dst);
                let stats = (&mut pm[..], &mut pl[..]);
                let out = &mut portable;
                decode_group_body(&q, &head, 0..keys, 0.2, &mut scores, out, stats, widen);
                let close = |a: &[f32], b: &[f32]| {
                    a.iter()
                        .zip(b)
                        .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
                };
                let what = format!("hd {hd}, {keys} keys, f16 {f16}");
                assert!(
                    close(&m, &pm) && close(&l, &pl),
                    "{what}: {m:?} {l:?} vs {pm:?} {pl:?}"
                );
                assert!(close(&simd, &portable), "{what}");
            }
        }
    }

    /// A decode step with its keys in parts (merged by their max scores and sums) against the
    /// f64 definition, over f32 and f16 caches, with one part, equal parts and a short last one.
    #[test]
    fn decode_in_parts_matches_the_definition() {
        let (heads, kv_heads, hd, cap) = (6, 2, 16, 700);
        let scale = (hd as f32).powf(-0.5);
        for len in [130, 641] {
            let layer = Layer::new(kv_heads, cap, hd, len);
            let q = random(heads * hd, 11 + len as u64);
            let want = layer.reference(&q, heads, 1, scale);
            for f16 in [false, true] {
                let view = layer.view(f16);
                for part_keys in [1000, 130, 128, 64, 7] {
                    let mut got = vec![0f32; heads * hd];
                    let task_kv = |t: usize| (&view, t);
                    let n_rep = heads / kv_heads;
                    attend_decode_parts(&q, &task_kv, n_rep, hd, scale, part_keys, &mut got);
                    let worst = max_abs_error(&got, &want);
                    assert!(
                        worst < 2e-5,
                        "len {len}, f16 {f16}, parts of {part_keys}: {worst}"
                    );
                }
            }
        }
    }

    /// A sequence's decode attention is the same, bit for bit, alone or in a step with other
    /// sequences of other lengths (the parts are cut at fixed key positions).
    #[test]
    fn decode_of_a_sequence_does_not_depend_on_its_batch() {
        let (heads, kv_heads, hd, cap) = (6, 3, 16, 700);
        let scale = (hd as f32).powf(-0.5);
        let (mine, other) = (
            Layer::new(kv_heads, cap, hd, 641),
            Layer::new(kv_heads, cap, hd, 97),
        );
        for f16 in [false, true] {
            let (mv, ov) = (mine.view(f16), other.view(f16));
            let q1 = random(heads * hd, 5);
            let mut alone = vec![0f32; heads * hd];
            attend_decode(&q1, &[&mv], heads / kv_heads, hd, scale, &mut alone);
            let mut q3 = random(heads * hd, 6);
            q3.extend_from_slice(&q1);
            q3.extend(random(heads * hd, 7));
            let mut batched = vec![0f32; 3 * heads * hd];
            attend_decode(
                &q3,
                &[&ov, &mv, &ov],
                heads / kv_heads,
                hd,
                scale,
                &mut batched,
            );
            assert_eq!(
                alone,
                batched[heads * hd..2 * heads * hd],
                "f16 cache: {f16}"
            );
        }
    }

    /// The softmax's exponential against f64 over its whole domain, in relative error.
    #[test]
    fn exp_nonpositive_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let rel = ((exp_nonpositive(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2.4e-7, "max relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_nonpositive(-1e30) >= 0.0);
    }
}
