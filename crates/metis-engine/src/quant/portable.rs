//! Portable (scalar) dot products of one GGML weight row with one activation row: the
//! reference every SIMD kernel in [`super::avx2`] is tested against, and the path taken on CPUs
//! without AVX2.
//!
//! Block layouts (llama.cpp `ggml-common.h`; scales are little-endian f16 unless noted):
//!
//! | type | values / bytes | layout |
//! |------|----------------|--------|
//! | Q4_0 | 32 / 18  | d, qs[16]: value j = (qs[j] & 15) − 8, value j+16 = (qs[j] >> 4) − 8 |
//! | Q4_1 | 32 / 20  | d, m, qs[16]: x = d·q + m |
//! | Q5_0 | 32 / 22  | d, qh (u32), qs[16]: bit j of qh is bit 4 of value j; minus 16 |
//! | Q5_1 | 32 / 24  | d, m, qh, qs[16]: x = d·q + m |
//! | Q8_0 | 32 / 34  | d, qs[32] (i8) |
//! | Q4_K | 256 / 144 | d, dmin, scales[12] (6-bit scale and min per 32), qs[128] |
//! | Q5_K | 256 / 176 | Q4_K plus qh[32]: bit 2c / 2c+1 of qh[l] tops value 64c+l / 64c+32+l |
//! | Q6_K | 256 / 210 | ql[128], qh[64], scales[16] (i8), d; values minus 32 |
//!
//! Each kernel accumulates the integer products of a block exactly and applies the scales in
//! f32, so the SIMD kernels agree with these to float rounding of the per-block sums.

use half::{bf16, f16};

/// A quantized activation row in 32-value blocks (see [`super::act::Q8Acts`]).
#[derive(Clone, Copy)]
pub(crate) struct Q8Row<'a> {
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub qs: &'a [i8],
}

/// A quantized activation row in 256-value blocks (see [`super::act::Q8KActs`]).
#[derive(Clone, Copy)]
pub(crate) struct Q8KRow<'a> {
    pub d: &'a [f32],
    pub bsums: &'a [i32],
    pub qs: &'a [i8],
}

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block (`get_scale_min_k4`).
pub(crate) fn scale_min_k4(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, min) pairs of a Q4_K/Q5_K block's 12 scale bytes at once, as the
/// little-endian bytes of two u64 (scales, mins): [`scale_min_k4`] for j = 0..8, done on u32
/// words (ggml's `utmp` shuffle).
#[inline(always)]
pub(crate) fn scales_mins_k4(s: &[u8]) -> (u64, u64) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (u0, u1, u2) = (word(0), word(4), word(8));
    let scales_lo = u0 & LOW6;
    let scales_hi = (u2 & LOW4) | (((u0 >> 6) & LOW2) << 4);
    let mins_lo = u1 & LOW6;
    let mins_hi = ((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4);
    (
        scales_lo as u64 | (scales_hi as u64) << 32,
        mins_lo as u64 | (mins_hi as u64) << 32,
    )
}

/// Dequantize Q4_K blocks (144 bytes each) into `out`: ggml's `dequantize_row_q4_K`, the same
/// operations in the same order as candle's, so the same bits; written so that the inner
/// loops vectorize when compiled for a wider instruction set (see `super::dequantize`).
#[inline(always)]
pub(crate) fn dequantize_q4_k(w: &[u8], out: &mut [f32]) {
    for (bw, y) in w.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
        let (d, min) = (f16_at(bw, 0), f16_at(bw, 2));
        let (sc, mn) = scales_mins_k4(&bw[4..16]);
        for (c, (q, y)) in bw[16..]
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc_lo, sc_hi) = ((sc >> (16 * c)) as u8, (sc >> (16 * c + 8)) as u8);
            let (m_lo, m_hi) = ((mn >> (16 * c)) as u8, (mn >> (16 * c + 8)) as u8);
            let (d1, m1) = (d * sc_lo as f32, min * m_lo as f32);
            let (d2, m2) = (d * sc_hi as f32, min * m_hi as f32);
            let (y_lo, y_hi) = y.split_at_mut(32);
            for (y, &q) in y_lo.iter_mut().zip(q) {
                *y = d1 * (q & 0xF) as f32 - m1;
            }
            for (y, &q) in y_hi.iter_mut().zip(q) {
                *y = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

/// The four 6-bit values (0..64, before Q6_K's −32) that byte `l` (0..32) of a Q6_K half-block's
/// `ql[64]` / `qh[32]` holds the bits of: values l, l + 32, l + 64 and l + 96 of the half.
#[inline(always)]
pub(crate) fn q6_k_values(ql: &[u8], qh: &[u8], l: usize) -> [u8; 4] {
    [
        (ql[l] & 15) | ((qh[l] & 3) << 4),
        (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
    ]
}

/// Dequantize Q6_K blocks (210 bytes each) into `out`: ggml's `dequantize_row_q6_K`, same
/// operations and order as candle's (see [`dequantize_q4_k`]).
#[inline(always)]
pub(crate) fn dequantize_q6_k(w: &[u8], out: &mut [f32]) {
    for (bw, y) in w.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
        let d = f16_at(bw, 208);
        for (h, y) in y.chunks_exact_mut(128).enumerate() {
            let ql = &bw[64 * h..64 * h + 64];
            let qh = &bw[128 + 32 * h..128 + 32 * h + 32];
            let sc = &bw[192 + 8 * h..192 + 8 * h + 8];
            for l in 0..32 {
                let is = l / 16;
                let [q1, q2, q3, q4] = q6_k_values(ql, qh, l);
                let [q1, q2, q3, q4] = [q1 as i8 - 32, q2 as i8 - 32, q3 as i8 - 32, q4 as i8 - 32];
                y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
            }
        }
    }
}

pub(crate) fn dot_q8_0(w: &[u8], a: Q8Row) -> f32 {
    let mut acc = 0f32;
    for (i, bw) in w.chunks_exact(34).enumerate() {
        let y = &a.qs[i * 32..(i + 1) * 32];
        let sumi: i32 = bw[2..]
            .iter()
            .zip(y)
            .map(|(&q, &y)| (q as i8) as i32 * y as i32)
            .sum();
        acc += f16_at(bw, 0) * a.d[i] * sumi as f32;
    }
    acc
}

/// Σ q·y over one 32-value block of 4-bit values (with optional 5th bits in `qh`).
fn sum_q4(qs: &[u8], qh: u32, y: &[i8]) -> i32 {
    let mut sumi = 0i32;
    for j in 0..16 {
        let lo = (qs[j] & 15) as i32 | ((((qh >> j) & 1) << 4) as i32);
        let hi = (qs[j] >> 4) as i32 | ((((qh >> (j + 16)) & 1) << 4) as i32);
        sumi += lo * y[j] as i32 + hi * y[j + 16] as i32;
    }
    sumi
}

#[inline(always)]
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn dot_q4_0(w: &[u8], a: Q8Row) -> f32 {
    let mut acc = 0f32;
    for (i, bw) in w.chunks_exact(18).enumerate() {
        let sumi = sum_q4(&bw[2..18], 0, &a.qs[i * 32..]);
        acc += f16_at(bw, 0) * (a.d[i] * sumi as f32 - 8.0 * a.s[i]);
    }
    acc
}

pub(crate) fn dot_q4_1(w: &[u8], a: Q8Row) -> f32 {
    let mut acc = 0f32;
    for (i, bw) in w.chunks_exact(20).enumerate() {
        let sumi = sum_q4(&bw[4..20], 0, &a.qs[i * 32..]);
        acc += f16_at(bw, 0) * a.d[i] * sumi as f32 + f16_at(bw, 2) * a.s[i];
    }
    acc
}

pub(crate) fn dot_q5_0(w: &[u8], a: Q8Row) -> f32 {
    let mut acc = 0f32;
    for (i, bw) in w.chunks_exact(22).enumerate() {
        let sumi = sum_q4(&bw[6..22], u32_at(bw, 2), &a.qs[i * 32..]);
        acc += f16_at(bw, 0) * (a.d[i] * sumi as f32 - 16.0 * a.s[i]);
    }
    acc
}

pub(crate) fn dot_q5_1(w: &[u8], a: Q8Row) -> f32 {
    let mut acc = 0f32;
    for (i, bw) in w.chunks_exact(24).enumerate() {
        let sumi = sum_q4(&bw[8..24], u32_at(bw, 4), &a.qs[i * 32..]);
        acc += f16_at(bw, 0) * a.d[i] * sumi as f32 + f16_at(bw, 2) * a.s[i];
    }
    acc
}

/// Q4_K (`hbits` None) or Q5_K (`hbits` = the block's qh offset).
fn dot_k4(w: &[u8], a: Q8KRow, block_bytes: usize, qh_off: Option<usize>) -> f32 {
    let qs_off = if qh_off.is_some() { 48 } else { 16 };
    let mut acc = 0f32;
    for (i, bw) in w.chunks_exact(block_bytes).enumerate() {
        let y = &a.qs[i * 256..(i + 1) * 256];
        let bsums = &a.bsums[i * 16..(i + 1) * 16];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for c in 0..4 {
            let (sc_lo, m_lo) = scale_min_k4(&bw[4..16], 2 * c);
            let (sc_hi, m_hi) = scale_min_k4(&bw[4..16], 2 * c + 1);
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let q = bw[qs_off + 32 * c + l];
                let (h_lo, h_hi) = match qh_off {
                    Some(o) => (
                        ((bw[o + l] >> (2 * c)) & 1) as i32 * 16,
                        ((bw[o + l] >> (2 * c + 1)) & 1) as i32 * 16,
                    ),
                    None => (0, 0),
                };
                lo += ((q & 15) as i32 + h_lo) * y[64 * c + l] as i32;
                hi += ((q >> 4) as i32 + h_hi) * y[64 * c + 32 + l] as i32;
            }
            sumi += sc_lo as i32 * lo + sc_hi as i32 * hi;
            summ += m_lo as i32 * (bsums[4 * c] + bsums[4 * c + 1])
                + m_hi as i32 * (bsums[4 * c + 2] + bsums[4 * c + 3]);
        }
        acc += a.d[i] * (f16_at(bw, 0) * sumi as f32 - f16_at(bw, 2) * summ as f32);
    }
    acc
}

pub(crate) fn dot_q4_k(w: &[u8], a: Q8KRow) -> f32 {
    dot_k4(w, a, 144, None)
}

pub(crate) fn dot_q5_k(w: &[u8], a: Q8KRow) -> f32 {
    dot_k4(w, a, 176, Some(16))
}

pub(crate) fn dot_q6_k(w: &[u8], a: Q8KRow) -> f32 {
    let mut acc = 0f32;
    for (i, bw) in w.chunks_exact(210).enumerate() {
        let y = &a.qs[i * 256..(i + 1) * 256];
        let bsums = &a.bsums[i * 16..(i + 1) * 16];
        let scales = &bw[192..208];
        let mut sumi = 0i32;
        for h in 0..2 {
            let ql = &bw[64 * h..64 * h + 64];
            let qh = &bw[128 + 32 * h..128 + 32 * h + 32];
            let y = &y[128 * h..128 * h + 128];
            let sc = &scales[8 * h..8 * h + 8];
            for l in 0..32 {
                let q = q6_k_values(ql, qh, l);
                for (k, &qk) in q.iter().enumerate() {
                    let s = sc[2 * k + l / 16] as i8 as i32;
                    sumi += s * qk as i32 * y[32 * k + l] as i32;
                }
            }
        }
        // The −32 offset of every value, through the sums per 16 (group g has scale g).
        let offset: i32 = (0..16)
            .map(|g| scales[g] as i8 as i32 * bsums[g])
            .sum::<i32>()
            * 32;
        acc += f16_at(bw, 208) * a.d[i] * (sumi - offset) as f32;
    }
    acc
}

pub(crate) fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(4)
        .zip(x)
        .map(|(b, &x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x)
        .sum()
}

pub(crate) fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &x)| f16::from_le_bytes([b[0], b[1]]).to_f32() * x)
        .sum()
}

pub(crate) fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &x)| bf16::from_le_bytes([b[0], b[1]]).to_f32() * x)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_scales_and_mins_at_once_equal_one_at_a_time() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..1000 {
            let bytes: Vec<u8> = (0..12)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            let (sc, mn) = scales_mins_k4(&bytes);
            for j in 0..8 {
                let (want_sc, want_m) = scale_min_k4(&bytes, j);
                assert_eq!(
                    ((sc >> (8 * j)) as u8, (mn >> (8 * j)) as u8),
                    (want_sc, want_m)
                );
            }
        }
    }
}
