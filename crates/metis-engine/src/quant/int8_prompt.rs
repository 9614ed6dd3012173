//! Prompt-sized products of quantized weights in int8: the prefill path's alternative to
//! dequantize + f32 gemm (llama.cpp multiplies quantized weights in int8 too). Two kernels,
//! each in its kernel table:
//! * [`avx512`] (AVX-512 VNNI): `vpdpbusd` does 64 byte products per instruction where an f32
//!   FMA does 16; every type of the dot path (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K);
//! * [`avx2`]: `maddubs` + `madd`, every type but Q8_0, used only where the CPU has no
//!   AVX-512F (with it, the f32 gemm is as fast: [`Int8Prompt::pays`]).
//!
//! Data flow for `y = x Wᵀ` (`x` [m, cols]):
//!
//! * [`PromptActs`]: `x` quantized exactly as for the dot kernels (per 32 values for the
//!   32-value types, as `Q8Acts`; per 256 for the k-quants, as `Q8KActs`; `d = amax / 127`),
//!   then interleaved 16 rows at a time, so that one 64-byte line holds 4 consecutive values of
//!   16 rows: the 16 lanes of a register are 16 activation rows. Done once per product group.
//! * [`Unpacked`]: per task, a chunk of weight rows unpacked to one unsigned byte per value
//!   and, per sub-block (16 values for Q6_K, 32 for the others), an f32 `scale` and `offset`
//!   with value = scale·q − offset for every type (Q4_0's −8 and Q6_K's −32 are offsets; so is
//!   Q8_0's sign, its bytes read as q + 128).
//! * the kernel ([`ChunkProduct`], in the kernel table): a register tile of a few weight rows ×
//!   a few groups of 16 activation rows. Per 4 values, each weight row's 4 bytes are broadcast
//!   and multiplied into each group's line; per sub-block the exact i32 sums are converted and
//!   scaled (activation block scale × weight sub-block scale), and the offset is taken through
//!   the activations' sub-block sums. Same arithmetic as the portable dot kernels up to f32
//!   rounding of the scaling ([`chunk_product_portable`] is the reference the tests hold it to).

use std::sync::Mutex;

use candle_core::quantized::GgmlDType;

use super::act::{quantize_block, QKK};
use super::portable::{f16_at, q6_k_values, scales_mins_k4, u32_at};

/// Blocks of a 32-value type, `$bytes` bytes each: `$block(bytes, q)` writes a block's 32
/// unsigned values and returns its (scale, offset). A macro rather than a function taking
/// `$block`, so that the call is inlined into the caller's target features rather than reached
/// through a shim compiled for the baseline.
macro_rules! unpack_32 {
    ($w:expr, $q:expr, $scale:expr, $offset:expr, $block:ident, $bytes:literal) => {{
        let blocks = $w.chunks_exact($bytes).zip($q.chunks_exact_mut(32));
        for (b, (bw, q)) in blocks.enumerate() {
            let (bw, q) = (
                bw.try_into().expect("a block"),
                q.try_into().expect("32 values"),
            );
            ($scale[b], $offset[b]) = $block(bw, q);
        }
    }};
}

/// Activation rows per group: the lanes of one 512-bit register of i32.
pub(crate) const LANES: usize = 16;
/// Weight rows per task.
pub(crate) const CHUNK_ROWS: usize = 64;

/// One interleaved line: values 4t..4t+4 of 16 activation rows, row-major by lane.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [i8; 64]);

/// Activations quantized and interleaved for [`ChunkProduct`], `groups` groups of 16 rows
/// (rows past `m` are zero).
#[derive(Default)]
pub(crate) struct PromptActs {
    pub(crate) m: usize,
    pub(crate) cols: usize,
    pub(crate) groups: usize,
    /// Values per quantization block: 32 or 256 ([`act_block`]).
    pub(crate) block: usize,
    /// [groups][cols / 4] lines.
    pub(crate) qs: Vec<Line>,
    /// The scale of the block that holds each 32 values, [groups][cols / 32][16 lanes].
    pub(crate) d: Vec<f32>,
    /// `d` × the sum of each 16 values, [groups][cols / 16][16 lanes] (Q6_K's sub-blocks).
    pub(crate) sums16: Vec<f32>,
    /// `d` × the sum of each 32 values, [groups][cols / 32][16 lanes] (the other types').
    pub(crate) sums32: Vec<f32>,
}

impl PromptActs {
    /// Quantize and interleave `x` [m, cols] (`cols` a multiple of `block`, 32 or 256) in
    /// blocks of `block` values, padding the rows to a whole number of `group_multiple`
    /// groups; the groups are quantized on the product pool.
    pub(crate) fn quantize(
        &mut self,
        x: &[f32],
        (m, cols): (usize, usize),
        block: usize,
        group_multiple: usize,
    ) {
        assert!(matches!(block, 32 | QKK) && cols.is_multiple_of(block) && x.len() == m * cols);
        let groups = m.div_ceil(LANES).next_multiple_of(group_multiple.max(1));
        (self.m, self.cols, self.groups, self.block) = (m, cols, groups, block);
        refill(&mut self.qs, groups * cols / 4, Line([0; 64]));
        refill(&mut self.d, groups * cols / 32 * LANES, 0.0);
        refill(&mut self.sums16, groups * cols / 16 * LANES, 0.0);
        refill(&mut self.sums32, groups * cols / 32 * LANES, 0.0);
        // One part per group that has rows; each task fills its own group's slices.
        let parts: Vec<Mutex<GroupParts>> = self
            .qs
            .chunks_mut(cols / 4)
            .zip(self.d.chunks_mut(cols / 32 * LANES))
            .zip(self.sums16.chunks_mut(cols / 16 * LANES))
            .zip(self.sums32.chunks_mut(cols / 32 * LANES))
            .zip(x.chunks(LANES * cols))
            .map(|((((lines, d), sums16), sums32), x)| {
                Mutex::new(GroupParts {
                    lines,
                    d,
                    sums16,
                    sums32,
                    x,
                })
            })
            .collect();
        super::pool::global().run(parts.len(), &|g| {
            let mut part = parts[g].lock().unwrap_or_else(|e| e.into_inner());
            quantize_group_on_this_cpu(&mut part, cols, block);
        });
    }

    /// The sub-block sums for sub-blocks of `sub` values (16 or 32).
    pub(crate) fn sums(&self, sub: usize) -> &[f32] {
        if sub == 16 {
            &self.sums16
        } else {
            &self.sums32
        }
    }
}

/// `v` as `len` copies of `fill`, keeping its allocation.
fn refill<T: Copy>(v: &mut Vec<T>, len: usize, fill: T) {
    v.clear();
    v.resize(len, fill);
}

/// One group's share of [`PromptActs`] and its (up to 16) rows of `x`.
struct GroupParts<'a> {
    lines: &'a mut [Line],
    d: &'a mut [f32],
    sums16: &'a mut [f32],
    sums32: &'a mut [f32],
    x: &'a [f32],
}

super::kernels::on_this_cpu! {
    /// [`quantize_group`], compiled for AVX2 where the kernel table has it (the loops
    /// vectorize).
    fn quantize_group_on_this_cpu(part: &mut GroupParts, cols: usize, block: usize) {
        if block == QKK {
            quantize_group::<QKK>(part, cols)
        } else {
            quantize_group::<32>(part, cols)
        }
    }
}

/// Quantize each row of the group per `N`-value block (as `Q8Acts` / `Q8KActs` do) into its
/// lane.
#[inline(always)]
fn quantize_group<const N: usize>(part: &mut GroupParts, cols: usize) {
    let mut q = [0i8; N];
    for (lane, row) in part.x.chunks_exact(cols).enumerate() {
        for (b, xb) in row.chunks_exact(N).enumerate() {
            let (d, _) = quantize_block(xb, &mut q);
            let k0 = b * N;
            let lines = &mut part.lines[k0 / 4..(k0 + N) / 4];
            for (line, q4) in lines.iter_mut().zip(q.chunks_exact(4)) {
                line.0[4 * lane..4 * lane + 4].copy_from_slice(q4);
            }
            for (s, q32) in q.chunks_exact(32).enumerate() {
                let at = (k0 / 32 + s) * LANES + lane;
                part.d[at] = d;
                let (lo, hi) = q32.split_at(16);
                let (lo, hi) = (sum_i8(lo), sum_i8(hi));
                part.sums32[at] = d * (lo + hi) as f32;
                part.sums16[(k0 / 16 + 2 * s) * LANES + lane] = d * lo as f32;
                part.sums16[(k0 / 16 + 2 * s + 1) * LANES + lane] = d * hi as f32;
            }
        }
    }
}

#[inline(always)]
fn sum_i8(q: &[i8]) -> i32 {
    q.iter().map(|&v| v as i32).sum()
}

/// Weight rows unpacked for [`ChunkProduct`]: `rows` rows (a multiple of the kernel's row
/// tile; rows past the matrix's are zero) of `cols` bytes, and per sub-block of `sub` values
/// a scale and an offset.
#[derive(Default)]
pub(crate) struct Unpacked {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Values per sub-block: 16 (Q6_K) or 32 (the others).
    pub(crate) sub: usize,
    /// [rows][cols]: below 64 for every type but Q8_0.
    pub(crate) q: Vec<u8>,
    /// [rows][cols / sub].
    pub(crate) scale: Vec<f32>,
    /// [rows][cols / sub].
    pub(crate) offset: Vec<f32>,
}

/// The activation block size for weights of `dtype` (that of the dot path), or `None` for
/// types the int8 product does not read (floats, Q2_K, Q3_K).
pub(crate) fn act_block(dtype: GgmlDType) -> Option<usize> {
    use GgmlDType as T;
    match dtype {
        T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 => Some(32),
        T::Q4K | T::Q5K | T::Q6K => Some(QKK),
        _ => None,
    }
}

impl Unpacked {
    /// Make room for `rows` rows of `cols` values of `dtype` (one with an [`act_block`]), zeroed.
    pub(crate) fn reset(&mut self, dtype: GgmlDType, rows: usize, cols: usize) {
        self.sub = if dtype == GgmlDType::Q6K { 16 } else { 32 };
        (self.rows, self.cols) = (rows, cols);
        let subs = rows * cols / self.sub;
        refill(&mut self.scale, subs, 0.0);
        refill(&mut self.offset, subs, 0.0);
        refill(&mut self.q, rows * cols, 0);
    }

    /// Unpack stored row `bytes` of `dtype` into row `r`.
    #[inline(always)]
    pub(crate) fn unpack_row(&mut self, dtype: GgmlDType, r: usize, bytes: &[u8]) {
        let (cols, subs) = (self.cols, self.cols / self.sub);
        let q = &mut self.q[r * cols..(r + 1) * cols];
        let scale = &mut self.scale[r * subs..(r + 1) * subs];
        let offset = &mut self.offset[r * subs..(r + 1) * subs];
        use GgmlDType as T;
        match dtype {
            T::Q4_0 => unpack_32!(bytes, q, scale, offset, q4_0, 18),
            T::Q4_1 => unpack_32!(bytes, q, scale, offset, q4_1, 20),
            T::Q5_0 => unpack_32!(bytes, q, scale, offset, q5_0, 22),
            T::Q5_1 => unpack_32!(bytes, q, scale, offset, q5_1, 24),
            T::Q8_0 => unpack_32!(bytes, q, scale, offset, q8_0, 34),
            T::Q4K => unpack_k4::<false>(bytes, q, scale, offset),
            T::Q5K => unpack_k4::<true>(bytes, q, scale, offset),
            T::Q6K => unpack_q6_k(bytes, q, scale, offset),
            other => unreachable!("{other:?} has no int8 prompt product"),
        }
    }
}

/// The 16 nibbles at `qs` as values j (low) and j + 16 (high), each plus the `qh` bit of its
/// index shifted to 16.
#[inline(always)]
fn nibbles(qs: &[u8], qh: u32, q: &mut [u8; 32]) {
    for j in 0..16 {
        q[j] = (qs[j] & 15) | (((qh >> j) & 1) << 4) as u8;
        q[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
    }
}

/// Q4_0: d, qs[16]; x = d·(q − 8).
#[inline(always)]
fn q4_0(b: &[u8; 18], q: &mut [u8; 32]) -> (f32, f32) {
    nibbles(&b[2..], 0, q);
    let d = f16_at(b, 0);
    (d, 8.0 * d)
}

/// Q4_1: d, m, qs[16]; x = d·q + m.
#[inline(always)]
fn q4_1(b: &[u8; 20], q: &mut [u8; 32]) -> (f32, f32) {
    nibbles(&b[4..], 0, q);
    (f16_at(b, 0), -f16_at(b, 2))
}

/// Q5_0: d, qh, qs[16]; x = d·(q − 16).
#[inline(always)]
fn q5_0(b: &[u8; 22], q: &mut [u8; 32]) -> (f32, f32) {
    nibbles(&b[6..], u32_at(b, 2), q);
    let d = f16_at(b, 0);
    (d, 16.0 * d)
}

/// Q5_1: d, m, qh, qs[16]; x = d·q + m.
#[inline(always)]
fn q5_1(b: &[u8; 24], q: &mut [u8; 32]) -> (f32, f32) {
    nibbles(&b[8..], u32_at(b, 4), q);
    (f16_at(b, 0), -f16_at(b, 2))
}

/// Q8_0: d, qs[32] (i8); x = d·q = d·((q + 128) − 128), the byte read as unsigned q + 128.
#[inline(always)]
fn q8_0(b: &[u8; 34], q: &mut [u8; 32]) -> (f32, f32) {
    for (q, &v) in q.iter_mut().zip(&b[2..]) {
        *q = v ^ 0x80;
    }
    let d = f16_at(b, 0);
    (d, 128.0 * d)
}

/// Q4_K blocks (`FIFTH_BIT` false) or Q5_K blocks: x = d·sc·q − dmin·m per 32 values, q 4 bits,
/// or 5 with the fifth from `qh` (bit 2c / 2c+1 of qh[l] tops value 64c+l / 64c+32+l).
#[inline(always)]
fn unpack_k4<const FIFTH_BIT: bool>(w: &[u8], q: &mut [u8], scale: &mut [f32], offset: &mut [f32]) {
    let (block_bytes, qs_at) = if FIFTH_BIT { (176, 48) } else { (144, 16) };
    let blocks = w.chunks_exact(block_bytes).zip(q.chunks_exact_mut(256));
    for (b, (bw, q)) in blocks.enumerate() {
        let (d, dmin) = (f16_at(bw, 0), f16_at(bw, 2));
        let (sc, mn) = scales_mins_k4(&bw[4..16]);
        for s in 0..8 {
            scale[8 * b + s] = d * (sc >> (8 * s)) as u8 as f32;
            offset[8 * b + s] = dmin * (mn >> (8 * s)) as u8 as f32;
        }
        let qh = &bw[16..48];
        for (c, (qs, q)) in bw[qs_at..]
            .chunks_exact(32)
            .zip(q.chunks_exact_mut(64))
            .enumerate()
        {
            let (lo, hi) = q.split_at_mut(32);
            for l in 0..32 {
                lo[l] = qs[l] & 15;
                hi[l] = qs[l] >> 4;
                if FIFTH_BIT {
                    lo[l] |= ((qh[l] >> (2 * c)) & 1) << 4;
                    hi[l] |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                }
            }
        }
    }
}

/// Q6_K blocks: x = d·sc·(q − 32) per 16 values.
#[inline(always)]
fn unpack_q6_k(w: &[u8], q: &mut [u8], scale: &mut [f32], offset: &mut [f32]) {
    let blocks = w.chunks_exact(210).zip(q.chunks_exact_mut(256));
    for (b, (bw, q)) in blocks.enumerate() {
        let d = f16_at(bw, 208);
        for s in 0..16 {
            let sc = d * bw[192 + s] as i8 as f32;
            scale[16 * b + s] = sc;
            offset[16 * b + s] = 32.0 * sc;
        }
        for (h, q) in q.chunks_exact_mut(128).enumerate() {
            let ql = &bw[64 * h..64 * h + 64];
            let qh = &bw[128 + 32 * h..128 + 32 * h + 32];
            for l in 0..32 {
                [q[l], q[l + 32], q[l + 64], q[l + 96]] = q6_k_values(ql, qh, l);
            }
        }
    }
}

/// `out[r][c] = Σ_k w[r][k] · x[c][k]` for every unpacked weight row r and every activation row
/// c of every group (`out` is [w.rows][acts.groups · 16], previous contents overwritten).
pub(crate) type ChunkProduct = fn(&Unpacked, &PromptActs, &mut [f32]);

/// A kernel table's int8 prompt product and the shapes it needs.
#[derive(Clone, Copy)]
pub(crate) struct Int8Prompt {
    pub product: ChunkProduct,
    /// The weight types `product` reads (some of those with an [`act_block`]).
    pub reads: fn(GgmlDType) -> bool,
    /// Whether, on this CPU, `product` beats dequantize + f32 gemm (which the `gemm` crate
    /// runs at the widest width the CPU has).
    pub pays: fn() -> bool,
    /// [`Unpacked::rows`] must be a multiple of this.
    pub row_multiple: usize,
    /// [`PromptActs::groups`] must be a multiple of this.
    pub group_multiple: usize,
}

impl Int8Prompt {
    /// The activation block size for weights of `dtype`, if this product reads them.
    pub(crate) fn act_block(&self, dtype: GgmlDType) -> Option<usize> {
        act_block(dtype).filter(|_| (self.reads)(dtype))
    }
}

/// Every type with an [`act_block`].
pub(crate) fn reads_all(dtype: GgmlDType) -> bool {
    act_block(dtype).is_some()
}

/// Panics unless every slice a SIMD product reads through raw pointers has the length the
/// shapes say, and the shapes are whole tiles of `kernel`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn assert_operands(w: &Unpacked, a: &PromptActs, out: &[f32], kernel: &Int8Prompt) {
    let width = a.groups * LANES;
    assert!(
        a.cols == w.cols
            && w.rows.is_multiple_of(kernel.row_multiple)
            && a.groups.is_multiple_of(kernel.group_multiple)
            && matches!(w.sub, 16 | 32)
            && out.len() >= w.rows * width
            && w.q.len() >= w.rows * w.cols
            && w.scale.len() >= w.rows * w.cols / w.sub
            && w.offset.len() >= w.rows * w.cols / w.sub
            && a.cols.is_multiple_of(w.sub)
            && a.cols.is_multiple_of(32)
            && a.qs.len() >= a.groups * a.cols / 4
            && a.d.len() >= a.groups * a.cols / 32 * LANES
            && a.sums(w.sub).len() >= a.groups * a.cols / w.sub * LANES,
        "operands of the int8 prompt product disagree in shape"
    );
}

/// The scalar reference: per sub-block the exact integer sum, then the same scaling as the
/// SIMD kernels in the same order.
#[cfg(test)]
pub(crate) fn chunk_product_portable(w: &Unpacked, a: &PromptActs, out: &mut [f32]) {
    let (cols, sub) = (w.cols, w.sub);
    let (subs, width) = (cols / sub, a.groups * LANES);
    assert!(a.cols == cols && out.len() >= w.rows * width);
    let sums = a.sums(sub);
    for r in 0..w.rows {
        let q = &w.q[r * cols..(r + 1) * cols];
        for g in 0..a.groups {
            for lane in 0..LANES {
                let mut acc = 0f32;
                for s in 0..subs {
                    let dot: i32 = (s * sub..(s + 1) * sub)
                        .map(|k| {
                            q[k] as i32 * a.qs[g * cols / 4 + k / 4].0[4 * lane + k % 4] as i32
                        })
                        .sum();
                    let da = a.d[(g * cols / 32 + s * sub / 32) * LANES + lane];
                    let prod = dot as f32 * da;
                    acc = prod.mul_add(w.scale[r * subs + s], acc);
                    acc =
                        (-w.offset[r * subs + s]).mul_add(sums[(g * subs + s) * LANES + lane], acc);
                }
                out[r * width + g * LANES + lane] = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! The VNNI kernel: a tile of `R` weight rows × `G` groups of 16 activation rows, whose
    //! 2·R·G accumulators (i32 per sub-block, f32 across it) stay in the 32 zmm registers.
    //! Values are taken `K_RANGE` at a time over every tile, so that the tile's activation
    //! lines (G × 16 rows × K_RANGE bytes) stay in L1 while the weight tiles pass over them.

    use std::arch::x86_64::*;

    use super::{assert_operands, PromptActs, Unpacked, LANES};

    /// Weight rows per register tile.
    const R: usize = 4;
    /// Groups of 16 activation rows per register tile.
    const G: usize = 3;

    /// The VNNI table's int8 prompt product.
    pub(crate) const INT8_PROMPT: super::Int8Prompt = super::Int8Prompt {
        product: chunk_product,
        reads: super::reads_all,
        pays: || true,
        row_multiple: R,
        group_multiple: G,
    };
    /// Values per pass over the tiles.
    const K_RANGE: usize = 512;

    /// The [`super::ChunkProduct`] of the VNNI table.
    fn chunk_product(w: &Unpacked, a: &PromptActs, out: &mut [f32]) {
        assert_operands(w, a, out, &INT8_PROMPT);
        // SAFETY: this function is only reachable through the VNNI kernel table, offered
        // after AVX-512 F/VL/VNNI were detected; the shapes the kernel reads through raw
        // pointers are checked above.
        unsafe {
            if w.sub == 32 {
                product::<32>(w, a, out)
            } else {
                product::<16>(w, a, out)
            }
        }
    }

    /// Every tile, `K_RANGE` values at a time; `out` holds the running sums between ranges.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn product<const S: usize>(w: &Unpacked, a: &PromptActs, out: &mut [f32]) {
        let subs = a.cols / S;
        let width = a.groups * LANES;
        out[..w.rows * width].fill(0.0);
        for g0 in (0..a.groups).step_by(G) {
            for s0 in (0..subs).step_by(K_RANGE / S) {
                let range = s0..(s0 + K_RANGE / S).min(subs);
                for r0 in (0..w.rows).step_by(R) {
                    tile::<S>(w, r0, a, g0, range.clone(), out.as_mut_ptr(), width);
                }
            }
        }
    }

    /// Adds sub-blocks `subs` of weight rows r0..r0+R × groups g0..g0+G into `out`
    /// ([rows][width] f32).
    // Indexed loops over the fixed tile, so that the accumulator arrays are plainly R × G
    // registers.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile<const S: usize>(
        w: &Unpacked,
        r0: usize,
        a: &PromptActs,
        g0: usize,
        subs: std::ops::Range<usize>,
        out: *mut f32,
        width: usize,
    ) {
        let cols = a.cols;
        let subs_row = cols / S;
        let sums = a.sums(S).as_ptr();
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        for r in 0..R {
            for g in 0..G {
                acc[r][g] = _mm512_loadu_ps(out.add((r0 + r) * width + (g0 + g) * LANES));
            }
        }
        let q = w.q.as_ptr().add(r0 * cols);
        let scale = w.scale.as_ptr().add(r0 * subs_row);
        let offset = w.offset.as_ptr().add(r0 * subs_row);
        let lines = a.qs.as_ptr();
        for sub in subs {
            let k0 = sub * S;
            let mut dots = [[_mm512_setzero_si512(); G]; R];
            for t in 0..S / 4 {
                let k = k0 + 4 * t;
                let mut x = [_mm512_setzero_si512(); G];
                for g in 0..G {
                    x[g] = _mm512_load_si512(lines.add((g0 + g) * cols / 4 + k / 4) as *const _);
                }
                for r in 0..R {
                    let wv = (q.add(r * cols + k) as *const i32).read_unaligned();
                    let wv = _mm512_set1_epi32(wv);
                    for g in 0..G {
                        dots[r][g] = _mm512_dpbusd_epi32(dots[r][g], wv, x[g]);
                    }
                }
            }
            for g in 0..G {
                let d = _mm512_loadu_ps(a.d.as_ptr().add(((g0 + g) * cols / 32 + k0 / 32) * LANES));
                let sum = _mm512_loadu_ps(sums.add(((g0 + g) * subs_row + sub) * LANES));
                for r in 0..R {
                    let sc = _mm512_set1_ps(*scale.add(r * subs_row + sub));
                    let off = _mm512_set1_ps(*offset.add(r * subs_row + sub));
                    let prod = _mm512_mul_ps(_mm512_cvtepi32_ps(dots[r][g]), d);
                    acc[r][g] = _mm512_fmadd_ps(prod, sc, acc[r][g]);
                    acc[r][g] = _mm512_fnmadd_ps(off, sum, acc[r][g]);
                }
            }
        }
        for r in 0..R {
            for g in 0..G {
                _mm512_storeu_ps(out.add((r0 + r) * width + (g0 + g) * LANES), acc[r][g]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! The AVX2 kernel, for x86 CPUs without AVX-512 VNNI: 8 activation rows per register
    //! (half a group), `maddubs` for the byte products. Two steps' `maddubs` results are added
    //! in i16 before `madd` widens them, which is exact while every weight is below 64 (two
    //! steps of two products: 4·63·127 < 2¹⁵), so Q8_0, whose unsigned bytes reach 255, stays
    //! on the f32 path here. The f32 sums of a tile live in `out` (16 registers hold only
    //! the i32 tile); their order of operations is the VNNI kernel's and the portable one's.

    use std::arch::x86_64::*;

    use candle_core::quantized::GgmlDType;

    use super::{assert_operands, PromptActs, Unpacked, LANES};

    /// Weight rows per register tile (the tile is R × one group of 16 activation rows).
    const R: usize = 4;
    /// Values per pass over the tiles.
    const K_RANGE: usize = 512;

    /// The AVX2 table's int8 prompt product.
    pub(crate) const INT8_PROMPT: super::Int8Prompt = super::Int8Prompt {
        product: chunk_product,
        reads,
        pays,
        row_multiple: R,
        group_multiple: 1,
    };

    /// On a CPU with AVX-512F (and no VNNI, or the VNNI table would be chosen) the f32 gemm
    /// runs at 512 bits and is as fast as this kernel: measured on an AVX-512 Xeon with
    /// `METIS_KERNELS=avx2` (`quant_kernels` prompt rows), 306–317 GFLOP/s for Q4_0…Q5_K and
    /// 254 for Q6_K against the gemm's 333. Where the gemm has only 256 bits, it has half that.
    fn pays() -> bool {
        !is_x86_feature_detected!("avx512f")
    }

    /// Types whose unpacked values stay below 64.
    fn reads(dtype: GgmlDType) -> bool {
        super::reads_all(dtype) && dtype != GgmlDType::Q8_0
    }

    fn chunk_product(w: &Unpacked, a: &PromptActs, out: &mut [f32]) {
        assert_operands(w, a, out, &INT8_PROMPT);
        // The i16 sums of two steps are exact only below 64 (see the module): true of every
        // type `reads` lets through, by their unpacking.
        debug_assert!(
            w.q.iter().all(|&q| q < 64),
            "AVX2 int8 weights must be below 64"
        );
        // SAFETY: only reachable through the AVX2 kernel table, offered after AVX2, FMA and
        // F16C were detected; the shapes the kernel reads through raw pointers are checked
        // above.
        unsafe {
            if w.sub == 32 {
                product::<32>(w, a, out)
            } else {
                product::<16>(w, a, out)
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn product<const S: usize>(w: &Unpacked, a: &PromptActs, out: &mut [f32]) {
        let subs = a.cols / S;
        let width = a.groups * LANES;
        out[..w.rows * width].fill(0.0);
        for g in 0..a.groups {
            for s0 in (0..subs).step_by(K_RANGE / S) {
                let range = s0..(s0 + K_RANGE / S).min(subs);
                for r0 in (0..w.rows).step_by(R) {
                    tile::<S>(w, r0, a, g, range.clone(), out.as_mut_ptr(), width);
                }
            }
        }
    }

    /// Adds sub-blocks `subs` of weight rows r0..r0+R × group g into `out`.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile<const S: usize>(
        w: &Unpacked,
        r0: usize,
        a: &PromptActs,
        g: usize,
        subs: std::ops::Range<usize>,
        out: *mut f32,
        width: usize,
    ) {
        let cols = a.cols;
        let subs_row = cols / S;
        let sums = a.sums(S).as_ptr();
        let q = w.q.as_ptr().add(r0 * cols);
        let scale = w.scale.as_ptr().add(r0 * subs_row);
        let offset = w.offset.as_ptr().add(r0 * subs_row);
        let lines = a.qs.as_ptr().add(g * cols / 4) as *const u8;
        let ones = _mm256_set1_epi16(1);
        for sub in subs {
            let k0 = sub * S;
            // [row][half of the group]
            let mut dots = [[_mm256_setzero_si256(); 2]; R];
            for t in (0..S / 4).step_by(2) {
                let k = k0 + 4 * t;
                let line = lines.add(k / 4 * 64);
                let x = [
                    [
                        _mm256_load_si256(line as *const _),
                        _mm256_load_si256(line.add(32) as *const _),
                    ],
                    [
                        _mm256_load_si256(line.add(64) as *const _),
                        _mm256_load_si256(line.add(96) as *const _),
                    ],
                ];
                for r in 0..R {
                    let wq = q.add(r * cols + k);
                    let w0 = _mm256_set1_epi32((wq as *const i32).read_unaligned());
                    let w1 = _mm256_set1_epi32((wq.add(4) as *const i32).read_unaligned());
                    for h in 0..2 {
                        let pairs = _mm256_add_epi16(
                            _mm256_maddubs_epi16(w0, x[0][h]),
                            _mm256_maddubs_epi16(w1, x[1][h]),
                        );
                        dots[r][h] = _mm256_add_epi32(dots[r][h], _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
            for h in 0..2 {
                let lane0 = 8 * h;
                let d =
                    _mm256_loadu_ps(a.d.as_ptr().add((g * cols / 32 + k0 / 32) * LANES + lane0));
                let sum = _mm256_loadu_ps(sums.add((g * subs_row + sub) * LANES + lane0));
                for r in 0..R {
                    let o = out.add((r0 + r) * width + g * LANES + lane0);
                    let sc = _mm256_set1_ps(*scale.add(r * subs_row + sub));
                    let off = _mm256_set1_ps(*offset.add(r * subs_row + sub));
                    let prod = _mm256_mul_ps(_mm256_cvtepi32_ps(dots[r][h]), d);
                    let acc = _mm256_fmadd_ps(prod, sc, _mm256_loadu_ps(o));
                    _mm256_storeu_ps(o, _mm256_fnmadd_ps(off, sum, acc));
                }
            }
        }
    }
}
