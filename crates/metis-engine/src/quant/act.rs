//! Activations quantized once per product, in the two layouts the integer dot kernels read.
//!
//! * [`Q8Acts`]: blocks of 32 values, `d` (f32 scale), `qs` (i8 in −127..=127) and the block's
//!   integer sum, for the 32-element weight types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). The sum lets
//!   the kernels apply a weight offset (Q4_0's −8, Q4_1's min) as one term per block — what
//!   llama.cpp's Q8_1 `s` field is for.
//! * [`Q8KActs`]: blocks of 256 values with sums per 16, for the k-quants (Q4_K, Q5_K, Q6_K),
//!   as llama.cpp's Q8_K `bsums`.
//!
//! Both use the symmetric scale `amax / 127` (never −128), so the sign trick of the signed
//! kernels cannot overflow. Buffers are kept by the caller and reused between products.

/// Values per block of [`Q8Acts`].
pub const QK8: usize = 32;
/// Values per block of [`Q8KActs`].
pub const QKK: usize = 256;

/// `rows` activation rows of `cols` values each, in 32-value blocks.
#[derive(Debug, Default, Clone)]
pub struct Q8Acts {
    pub(crate) cols: usize,
    /// Scale per block, [rows * cols / 32].
    pub(crate) d: Vec<f32>,
    /// `d * Σ qs` per block: the block's sum as the kernels need it.
    pub(crate) s: Vec<f32>,
    /// Quantized values, [rows * cols].
    pub(crate) qs: Vec<i8>,
}

impl Q8Acts {
    /// Quantize `x` ([rows, cols], row-major; `cols` a multiple of 32) into `self`.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        debug_assert!(cols.is_multiple_of(QK8) && x.len().is_multiple_of(cols.max(1)));
        let blocks = x.len() / QK8;
        self.cols = cols;
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        self.qs.resize(x.len(), 0);
        for (b, xb) in x.chunks_exact(QK8).enumerate() {
            let (d, sum) = quantize_block(xb, &mut self.qs[b * QK8..(b + 1) * QK8]);
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
    }

    /// Blocks per row.
    pub(crate) fn blocks_per_row(&self) -> usize {
        self.cols / QK8
    }
}

/// `rows` activation rows of `cols` values each, in 256-value blocks with sums per 16.
#[derive(Debug, Default, Clone)]
pub struct Q8KActs {
    pub(crate) cols: usize,
    /// Scale per block, [rows * cols / 256].
    pub(crate) d: Vec<f32>,
    /// Σ qs over each run of 16 values, [rows * cols / 16].
    pub(crate) bsums: Vec<i32>,
    /// Quantized values, [rows * cols].
    pub(crate) qs: Vec<i8>,
}

impl Q8KActs {
    /// Quantize `x` ([rows, cols], row-major; `cols` a multiple of 256) into `self`.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        debug_assert!(cols.is_multiple_of(QKK) && x.len().is_multiple_of(cols.max(1)));
        let blocks = x.len() / QKK;
        self.cols = cols;
        self.d.resize(blocks, 0.0);
        self.bsums.resize(x.len() / 16, 0);
        self.qs.resize(x.len(), 0);
        for (b, xb) in x.chunks_exact(QKK).enumerate() {
            let qs = &mut self.qs[b * QKK..(b + 1) * QKK];
            let (d, _) = quantize_block(xb, qs);
            self.d[b] = d;
            for (g, q16) in qs.chunks_exact(16).enumerate() {
                self.bsums[b * 16 + g] = q16.iter().map(|&q| q as i32).sum();
            }
        }
    }

    pub(crate) fn blocks_per_row(&self) -> usize {
        self.cols / QKK
    }
}

/// Quantize one block symmetrically: `q = round(x / d)` with `d = max|x| / 127`. Returns
/// `(d, Σ q)`. Written so that it vectorizes where it is inlined into a wider instruction set
/// (the int8 prompt path's quantization); the maximum is exact in any order.
#[inline(always)]
pub(crate) fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v.abs());
        }
    }
    let amax = lanes.iter().fold(tail, |m, &v| m.max(v));
    if amax == 0.0 || !amax.is_finite() {
        // An all-zero block; a non-finite one would poison every product anyway, and is
        // caught upstream by the logits check.
        q.fill(0);
        return (if amax.is_finite() { 0.0 } else { amax }, 0);
    }
    let d = amax / 127.0;
    let id = 1.0 / d;
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round().clamp(-127.0, 127.0) as i8;
        *qi = r;
        sum += r as i32;
    }
    (d, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut a = Q8Acts::default();
        a.quantize(&x, 256);
        assert_eq!(a.d.len(), 16);
        for (b, xb) in x.chunks(QK8).enumerate() {
            let sum: i32 = a.qs[b * QK8..(b + 1) * QK8].iter().map(|&q| q as i32).sum();
            assert!((a.s[b] - a.d[b] * sum as f32).abs() < 1e-4);
            for (i, &v) in xb.iter().enumerate() {
                let back = a.d[b] * a.qs[b * QK8 + i] as f32;
                assert!((back - v).abs() <= a.d[b] * 0.5 + 1e-6, "{v} -> {back}");
            }
        }
        let mut k = Q8KActs::default();
        k.quantize(&x, 256);
        assert_eq!((k.d.len(), k.bsums.len()), (2, 32));
        for g in 0..32 {
            let s: i32 = k.qs[g * 16..(g + 1) * 16].iter().map(|&q| q as i32).sum();
            assert_eq!(k.bsums[g], s);
        }
        assert!(k.qs.iter().all(|&q| q >= -127));
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let mut a = Q8Acts::default();
        a.quantize(&[0.0; 32], 32);
        assert_eq!((a.d[0], a.s[0]), (0.0, 0.0));
        assert!(a.qs.iter().all(|&q| q == 0));
    }
}
