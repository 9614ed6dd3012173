//! x86 dot products, chosen at run time by [`super::kernels`]: one body of kernels compiled
//! twice, as [`avx2`] (AVX2 + FMA + F16C) and as [`vnni`] (the same plus AVX-512 VNNI at 256
//! bits, where `vpdpbusd` does in one instruction what AVX2 does with `maddubs` + `madd`). Same
//! arithmetic as [`super::portable`]: integer products per block summed exactly in i32 lanes,
//! scales applied in f32.
//!
//! Every function here is `unsafe` for two reasons, stated once: it must only run on a CPU with
//! its module's features (the dispatch table is built after `is_x86_feature_detected!` says
//! so), and it reads `w` and the activation slices through raw pointers, relying on the
//! caller's lengths (`w` a whole number of blocks, activations of the matching row length),
//! which [`super::kernels`] checks before calling. Tests compare each kernel with the portable
//! one.

#![cfg(target_arch = "x86_64")]

/// Dot of the first `n` (a multiple of 8) weights at `wp` (`$size` bytes each) with `x`, 32 at
/// a time in four accumulators; `$load(wp, j)` turns the 8 weights at element offset `j` into
/// f32. Float rows are long (8–32 KiB on a 1B model), so the weights `PREFETCH_BYTES` bytes
/// ahead are requested as the loop goes, rather than a row at a time by the caller (asking
/// for a whole long row at once puts hundreds of requests in flight at its start). A macro,
/// not a closure, so that the loads are compiled with this module's target features.
macro_rules! dot_float {
    ($n:expr, $wp:expr, $size:expr, $x:expr, $load:ident) => {{
        let (n, wp, xp) = ($n, $wp, $x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        while j + 32 <= n {
            // One request per 64-byte line of the 32 weights this iteration reads; a prefetch
            // past the end of the row is a hint, never a fault.
            let ahead = wp.wrapping_add(j * $size + super::super::PREFETCH_BYTES);
            for line in 0..$size / 2 {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line) as *const i8);
            }
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps($load(wp, j + 8 * k), _mm256_loadu_ps(xp.add(j + 8 * k)), *a);
            }
            j += 32;
        }
        while j < n {
            acc[0] = _mm256_fmadd_ps($load(wp, j), _mm256_loadu_ps(xp.add(j)), acc[0]);
            j += 8;
        }
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }};
}

/// The kernel bodies, for one set of target features and one way of summing unsigned × signed
/// bytes into i32 lanes. The sum is exact either way: every i16 pair of the AVX2 path stays
/// within ±2·128·127 (weights' unsigned side ≤ 128 after the sign trick, activations in
/// −127..=127), so `maddubs` never saturates and both paths give the same integers.
macro_rules! x86_kernels {
    (features: $features:literal, mul_sum_us8($u:ident, $s:ident) = $mul_sum:expr) => {
        use std::arch::x86_64::*;

        use super::super::portable::{scales_mins_k4, Q8KRow, Q8Row};

        /// The f16 at `p`, as f32. Written as inline assembly because the compiler, seeing one
        /// lane of the conversion used, turns the zero-extending move into an insert into
        /// lane 0 of whatever register it picks, and when that is a loop's accumulator every
        /// block's conversion waits for the previous block's sum (measured: Q4_0 products
        /// 3× slower). `vmovd` from a general register writes the whole register.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn f16_at(p: *const u8) -> f32 {
            let bits = _mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32);
            let out: __m128;
            // SAFETY: vcvtph2ps (F16C, in every table's features) reads and writes registers
            // only.
            std::arch::asm!(
                "vcvtph2ps {out}, {bits}",
                bits = in(xmm_reg) bits,
                out = lateout(xmm_reg) out,
                options(pure, nomem, nostack, preserves_flags),
            );
            _mm_cvtss_f32(out)
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn hsum_ps(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }

        /// Σ u·s over 32 bytes, unsigned `u` times signed `s`, as 8 i32 lanes (see the macro's
        /// `mul_sum_us8`).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn mul_sum_us8($u: __m256i, $s: __m256i) -> __m256i {
            $mul_sum
        }

        /// 32 nibbles of 16 bytes, low nibbles first (values 0..16 then 16..32 of a block).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn nibbles(p: *const u8) -> __m256i {
            let raw = _mm_loadu_si128(p as *const __m128i);
            let m = _mm_set1_epi8(15);
            let lo = _mm_and_si128(raw, m);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m);
            _mm256_set_m128i(hi, lo)
        }

        /// 0x10 in byte j where bit j of the little-endian u32 at `p` is set.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn fifth_bits(p: *const u8) -> __m256i {
            let x = (p as *const u32).read_unaligned() as i32;
            let shuf = _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            );
            let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuf);
            let bit = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
            let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit), _mm256_set1_epi64x(-1));
            _mm256_and_si256(set, _mm256_set1_epi8(0x10))
        }

        /// The f16 at `p + k·stride` for k in 0..8, as eight f32 lanes (one gather of the
        /// 4 bytes there, one conversion). Reads `p + 7·stride + 4` at most: callers pass
        /// offsets with at least 4 bytes of the block left.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn f16x8(p: *const u8, stride: i32) -> __m256 {
            let at = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(stride),
            );
            let v = _mm256_i32gather_epi32::<1>(p as *const i32, at);
            let v = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
            let h = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            _mm256_cvtph_ps(h)
        }

        /// `Σ_i d_w(i)·d_y(i)·$sums(i) + extras` over the 32-value blocks of a row `$w` of
        /// `$bytes`-byte blocks (f16 `d_w` first) and activations `$a`. `$sums` (block index
        /// `$i`) is the block's integer products as eight i32 lanes; the per-block extra term
        /// (a weight offset or min times the activation block's sum) is `$extra8` for eight
        /// blocks from `$g` with their `d_w` in `$dw` (as f32 lanes, summed at the end) and
        /// `$extra1` for one tail block `$t` with `$d1`. Eight blocks' scales are converted
        /// and multiplied as one vector; even and odd blocks go to two accumulators so that
        /// consecutive FMAs do not wait on each other. A macro, not a closure, so that the
        /// bodies are compiled with this module's target features.
        macro_rules! scaled_blocks {
            (
                $w:expr, $a:expr, $bytes:expr,
                sums: |$i:ident| $sums:expr,
                extra8: |$g:ident, $dw:ident| $extra8:expr,
                extra1: |$t:ident, $d1:ident| $extra1:expr
            ) => {{
                let (wp, dyp) = ($w.as_ptr(), $a.d.as_ptr());
                let nb = $w.len() / $bytes;
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut extra = _mm256_setzero_ps();
                let mut g = 0;
                while g + 8 <= nb {
                    let $dw = f16x8(wp.add(g * $bytes), $bytes as i32);
                    let dd = _mm256_mul_ps($dw, _mm256_loadu_ps(dyp.add(g)));
                    extra = _mm256_add_ps(extra, {
                        let $g = g;
                        $extra8
                    });
                    for k in 0..8 {
                        let p = {
                            let $i = g + k;
                            $sums
                        };
                        let d = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(k as i32));
                        if k % 2 == 0 {
                            acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc0);
                        } else {
                            acc1 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc1);
                        }
                    }
                    g += 8;
                }
                let mut tail = 0f32;
                for i in g..nb {
                    let $d1 = f16_at(wp.add(i * $bytes));
                    let p = {
                        let $i = i;
                        $sums
                    };
                    let d = _mm256_set1_ps($d1 * *dyp.add(i));
                    acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc0);
                    tail += {
                        let $t = i;
                        $extra1
                    };
                }
                hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), extra)) + tail
            }};
        }

        /// Σ over blocks of `d_w·d_y·(Σ w·y)`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q8_0(w: &[u8], a: Q8Row) -> f32 {
            let (wp, yp) = (w.as_ptr(), a.qs.as_ptr());
            scaled_blocks!(
                w, a, 34,
                sums: |i| {
                    let x = _mm256_loadu_si256(wp.add(i * 34 + 2) as *const __m256i);
                    let y = _mm256_loadu_si256(yp.add(i * 32) as *const __m256i);
                    // Signed × signed through the unsigned path: |x| · (y with x's sign).
                    mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
                },
                extra8: |_g, _dw| _mm256_setzero_ps(),
                extra1: |_t, _d| 0f32
            )
        }

        /// Shared body of the 32-value 4/5-bit types: block `bytes`, offsets of m (if any),
        /// qh (if any) and qs, and the value offset (8 for Q4_0, 16 for Q5_0, 0 with a min).
        /// The offset or min applies once per block through the activation block's sum `s`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_q4_family(
            w: &[u8],
            a: Q8Row,
            bytes: usize,
            m_off: Option<usize>,
            qh_off: Option<usize>,
            qs_off: usize,
            offset: f32,
        ) -> f32 {
            let (wp, yp, sp) = (w.as_ptr(), a.qs.as_ptr(), a.s.as_ptr());
            scaled_blocks!(
                w, a, bytes,
                sums: |i| {
                    let b = wp.add(i * bytes);
                    let mut q = nibbles(b.add(qs_off));
                    if let Some(o) = qh_off {
                        q = _mm256_or_si256(q, fifth_bits(b.add(o)));
                    }
                    mul_sum_us8(q, _mm256_loadu_si256(yp.add(i * 32) as *const __m256i))
                },
                extra8: |g, dw| {
                    let s = _mm256_loadu_ps(sp.add(g));
                    match m_off {
                        Some(o) => _mm256_mul_ps(f16x8(wp.add(g * bytes + o), bytes as i32), s),
                        None => _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(-offset)), s),
                    }
                },
                extra1: |i, d| {
                    let s = *sp.add(i);
                    match m_off {
                        Some(o) => f16_at(wp.add(i * bytes + o)) * s,
                        None => -offset * d * s,
                    }
                }
            )
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q4_0(w: &[u8], a: Q8Row) -> f32 {
            dot_q4_family(w, a, 18, None, None, 2, 8.0)
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q4_1(w: &[u8], a: Q8Row) -> f32 {
            dot_q4_family(w, a, 20, Some(2), None, 4, 0.0)
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q5_0(w: &[u8], a: Q8Row) -> f32 {
            dot_q4_family(w, a, 22, None, Some(2), 6, 16.0)
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q5_1(w: &[u8], a: Q8Row) -> f32 {
            dot_q4_family(w, a, 24, Some(2), Some(4), 8, 0.0)
        }

        /// Q4_K (`qh_off` None) and Q5_K: per 64-value chunk, low nibbles (plus bit 2c of qh) are
        /// sub-block 2c, high nibbles (plus bit 2c+1) sub-block 2c+1.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn dot_k4(w: &[u8], a: Q8KRow, bytes: usize, qh_off: Option<usize>) -> f32 {
            let qs_off = if qh_off.is_some() { 48 } else { 16 };
            let nb = w.len() / bytes;
            let (wp, yp) = (w.as_ptr(), a.qs.as_ptr());
            let m4 = _mm256_set1_epi8(15);
            let one = _mm256_set1_epi8(1);
            let mut acc = _mm256_setzero_ps();
            let mut mins = 0f32;
            for i in 0..nb {
                let b = wp.add(i * bytes);
                let (sc, mn) = scales_mins_k4(std::slice::from_raw_parts(b.add(4), 12));
                // The eight scales as i16 in both 128-bit lanes, for broadcasting by shuffle.
                let sc8 = _mm_cvtsi64_si128(sc as i64);
                let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sc8));
                let mut hbits = match qh_off {
                    Some(o) => _mm256_loadu_si256(b.add(o) as *const __m256i),
                    None => _mm256_setzero_si256(),
                };
                let mut sumi = _mm256_setzero_si256();
                for c in 0..4 {
                    let raw = _mm256_loadu_si256(b.add(qs_off + 32 * c) as *const __m256i);
                    let mut lo = _mm256_and_si256(raw, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                    if qh_off.is_some() {
                        // Bits 0 and 1 of each byte are this chunk's fifth bits; shifting the i16
                        // lanes by 2 per chunk never reads across a byte (at most bit 7 is used).
                        let h0 = _mm256_and_si256(hbits, one);
                        lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
                        let h1 = _mm256_and_si256(_mm256_srli_epi16(hbits, 1), one);
                        hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
                        hbits = _mm256_srli_epi16(hbits, 2);
                    }
                    let y_lo = _mm256_loadu_si256(yp.add(i * 256 + 64 * c) as *const __m256i);
                    let y_hi = _mm256_loadu_si256(yp.add(i * 256 + 64 * c + 32) as *const __m256i);
                    // Scale of sub-block s in every i16 lane: bytes 2s and 2s + 1 of sc16.
                    let (s_lo, s_hi) = (4 * c as i16, 4 * c as i16 + 2);
                    let pick_lo = _mm256_set1_epi16(s_lo | (s_lo + 1) << 8);
                    let pick_hi = _mm256_set1_epi16(s_hi | (s_hi + 1) << 8);
                    let sc_lo = _mm256_shuffle_epi8(sc16, pick_lo);
                    let sc_hi = _mm256_shuffle_epi8(sc16, pick_hi);
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y_lo), sc_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y_hi), sc_hi);
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
                }
                // Σ_s min_s · (Σ of activation sub-block s), sub-block sums from pairs of the
                // 16-value sums (hadd leaves them in the order 0 1 4 5 2 3 6 7).
                let bsums = a.bsums.as_ptr().add(i * 16);
                let pairs = _mm256_hadd_epi32(
                    _mm256_loadu_si256(bsums as *const __m256i),
                    _mm256_loadu_si256(bsums.add(8) as *const __m256i),
                );
                let mins32 = _mm256_permutevar8x32_epi32(
                    _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(mn as i64)),
                    _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7),
                );
                let summ = hsum_i32(_mm256_mullo_epi32(pairs, mins32));
                let dy = *a.d.get_unchecked(i);
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(dy * f16_at(b)),
                    _mm256_cvtepi32_ps(sumi),
                    acc,
                );
                mins += dy * f16_at(b.add(2)) * summ as f32;
            }
            hsum_ps(acc) - mins
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q4_k(w: &[u8], a: Q8KRow) -> f32 {
            dot_k4(w, a, 144, None)
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q5_k(w: &[u8], a: Q8KRow) -> f32 {
            dot_k4(w, a, 176, Some(16))
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_q6_k(w: &[u8], a: Q8KRow) -> f32 {
            let nb = w.len() / 210;
            let (wp, yp) = (w.as_ptr(), a.qs.as_ptr());
            let m4 = _mm256_set1_epi8(15);
            let m2 = _mm256_set1_epi8(3);
            let mut acc = 0f32;
            for i in 0..nb {
                let b = wp.add(i * 210);
                let scales = b.add(192) as *const i8;
                let sc8 = _mm_loadu_si128(scales as *const __m128i);
                let mut sumi = _mm256_setzero_si256();
                for h in 0..2 {
                    let ql0 = _mm256_loadu_si256(b.add(64 * h) as *const __m256i);
                    let ql1 = _mm256_loadu_si256(b.add(64 * h + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
                    // Bits 4-5 of each value: two bits of qh per value, masked before shifting up
                    // so that no bit crosses into the neighbouring byte of the i16 lane.
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(ql0, m4), top2(qh, m2)),
                        _mm256_or_si256(
                            _mm256_and_si256(ql1, m4),
                            top2(_mm256_srli_epi16(qh, 2), m2),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                            top2(_mm256_srli_epi16(qh, 4), m2),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            top2(_mm256_srli_epi16(qh, 6), m2),
                        ),
                    ];
                    for (k, &qk) in q.iter().enumerate() {
                        let y = yp.add(i * 256 + 128 * h + 32 * k);
                        let y = _mm256_loadu_si256(y as *const __m256i);
                        // Scales g and g + 1 of this chunk's two 16-value halves, as i16
                        // lanes: the 16 scale bytes shuffled, then widened.
                        let g = (8 * h + 2 * k) as i64;
                        const EVERY_BYTE: i64 = 0x0101_0101_0101_0101;
                        let pick = _mm_set_epi64x((g + 1) * EVERY_BYTE, g * EVERY_BYTE);
                        let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, y), sc);
                        sumi = _mm256_add_epi32(sumi, p);
                    }
                }
                // Σ_g scale_g · (Σ of activation group g): the −32 of every value, applied
                // once per 16-value group.
                let bsums = a.bsums.as_ptr().add(i * 16);
                let offset = hsum_i32(_mm256_add_epi32(
                    _mm256_mullo_epi32(
                        _mm256_cvtepi8_epi32(sc8),
                        _mm256_loadu_si256(bsums as *const __m256i),
                    ),
                    _mm256_mullo_epi32(
                        _mm256_cvtepi8_epi32(_mm_srli_si128::<8>(sc8)),
                        _mm256_loadu_si256(bsums.add(8) as *const __m256i),
                    ),
                ));
                let total = hsum_i32(sumi) - 32 * offset;
                acc += f16_at(b.add(208)) * *a.d.get_unchecked(i) * total as f32;
            }
            acc
        }

        /// `(bits & 3) << 4` per byte: masked before the shift so nothing crosses into the other
        /// byte of the i16 lane.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn top2(bits: __m256i, m2: __m256i) -> __m256i {
            _mm256_slli_epi16(_mm256_and_si256(bits, m2), 4)
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn hsum_i32(v: __m256i) -> i32 {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_f32(wp: *const u8, j: usize) -> __m256 {
            _mm256_loadu_ps((wp as *const f32).add(j))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_f16(wp: *const u8, j: usize) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * j) as *const __m128i))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_bf16(wp: *const u8, j: usize) -> __m256 {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * j) as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
            let n = (w.len() / 4).min(x.len());
            let whole = n - n % 8;
            let head = dot_float!(whole, w.as_ptr(), 4, x, load_f32);
            head + super::super::portable::dot_f32(&w[whole * 4..n * 4], &x[whole..n])
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
            let n = (w.len() / 2).min(x.len());
            let whole = n - n % 8;
            let head = dot_float!(whole, w.as_ptr(), 2, x, load_f16);
            head + super::super::portable::dot_f16(&w[whole * 2..n * 2], &x[whole..n])
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
            let n = (w.len() / 2).min(x.len());
            let whole = n - n % 8;
            let head = dot_float!(whole, w.as_ptr(), 2, x, load_bf16);
            head + super::super::portable::dot_bf16(&w[whole * 2..n * 2], &x[whole..n])
        }
    };
}

/// AVX2 + FMA + F16C.
pub(crate) mod avx2 {
    x86_kernels! {
        features: "avx2,fma,f16c",
        mul_sum_us8(u, s) = _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

/// AVX2 + FMA + F16C + AVX-512 VNNI (VL): `vpdpbusd` on 256-bit registers.
pub(crate) mod vnni {
    x86_kernels! {
        features: "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
        mul_sum_us8(u, s) = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
}
