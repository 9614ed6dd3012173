//! Run-time kernel dispatch: one table of dot-product functions per instruction set, chosen
//! once per process (as the `gemm` crate does), so one binary runs fast on AVX2 machines and
//! correctly everywhere else.
//!
//! `METIS_KERNELS=portable` forces the portable table (for comparisons and bug reports).

use std::sync::OnceLock;

use super::portable::{self, Q8KRow, Q8Row};

/// Dot of one weight row (raw GGML bytes) with one quantized activation row.
pub(crate) type Q8Dot = fn(&[u8], Q8Row) -> f32;
/// Same, for the k-quants and their 256-value activation blocks.
pub(crate) type Q8KDot = fn(&[u8], Q8KRow) -> f32;
/// Dot of one float weight row (f32/f16/bf16 bytes) with an f32 activation row.
pub(crate) type FloatDot = fn(&[u8], &[f32]) -> f32;

/// The kernels of one instruction set.
pub(crate) struct Kernels {
    pub name: &'static str,
    pub q8_0: Q8Dot,
    pub q4_0: Q8Dot,
    pub q4_1: Q8Dot,
    pub q5_0: Q8Dot,
    pub q5_1: Q8Dot,
    pub q4_k: Q8KDot,
    pub q5_k: Q8KDot,
    pub q6_k: Q8KDot,
    pub f32: FloatDot,
    pub f16: FloatDot,
    pub bf16: FloatDot,
}

pub(crate) static PORTABLE: Kernels = Kernels {
    name: "portable",
    q8_0: portable::dot_q8_0,
    q4_0: portable::dot_q4_0,
    q4_1: portable::dot_q4_1,
    q5_0: portable::dot_q5_0,
    q5_1: portable::dot_q5_1,
    q4_k: portable::dot_q4_k,
    q5_k: portable::dot_q5_k,
    q6_k: portable::dot_q6_k,
    f32: portable::dot_f32,
    f16: portable::dot_f16,
    bf16: portable::dot_bf16,
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::avx2;
    use super::{Kernels, Q8KRow, Q8Row};

    /// Safe wrappers: each checks that the activation row covers every block of `w` (the
    /// kernels read both through raw pointers) and calls the AVX2 kernel.
    macro_rules! wrap {
        ($name:ident, $kernel:path, Q8, $bytes:expr) => {
            fn $name(w: &[u8], a: Q8Row) -> f32 {
                let nb = w.len() / $bytes;
                assert!(a.qs.len() >= nb * 32 && a.d.len() >= nb && a.s.len() >= nb);
                // SAFETY: this function is only reachable through `AVX2`, which `chosen()`
                // selects after detecting AVX2, FMA and F16C; lengths checked above.
                unsafe { $kernel(w, a) }
            }
        };
        ($name:ident, $kernel:path, Q8K, $bytes:expr) => {
            fn $name(w: &[u8], a: Q8KRow) -> f32 {
                let nb = w.len() / $bytes;
                assert!(a.qs.len() >= nb * 256 && a.d.len() >= nb && a.bsums.len() >= nb * 16);
                // SAFETY: as above (AVX2 table only; lengths checked).
                unsafe { $kernel(w, a) }
            }
        };
        ($name:ident, $kernel:path, Float) => {
            fn $name(w: &[u8], x: &[f32]) -> f32 {
                // SAFETY: AVX2 table only; the kernel bounds its reads by min(w, x) lengths.
                unsafe { $kernel(w, x) }
            }
        };
    }

    wrap!(q8_0, avx2::dot_q8_0, Q8, 34);
    wrap!(q4_0, avx2::dot_q4_0, Q8, 18);
    wrap!(q4_1, avx2::dot_q4_1, Q8, 20);
    wrap!(q5_0, avx2::dot_q5_0, Q8, 22);
    wrap!(q5_1, avx2::dot_q5_1, Q8, 24);
    wrap!(q4_k, avx2::dot_q4_k, Q8K, 144);
    wrap!(q5_k, avx2::dot_q5_k, Q8K, 176);
    wrap!(q6_k, avx2::dot_q6_k, Q8K, 210);
    wrap!(f32_, avx2::dot_f32, Float);
    wrap!(f16_, avx2::dot_f16, Float);
    wrap!(bf16_, avx2::dot_bf16, Float);

    pub(crate) static AVX2: Kernels = Kernels {
        name: "avx2",
        q8_0,
        q4_0,
        q4_1,
        q5_0,
        q5_1,
        q4_k,
        q5_k,
        q6_k,
        f32: f32_,
        f16: f16_,
        bf16: bf16_,
    };

    pub(crate) fn supported() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
}

/// The SIMD table if this CPU supports it (None elsewhere); for tests against the portable one.
pub(crate) fn simd() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    if x86::supported() {
        return Some(&x86::AVX2);
    }
    None
}

/// The fastest table this CPU runs, unless `METIS_KERNELS=portable`.
pub(crate) fn chosen() -> &'static Kernels {
    static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        if std::env::var("METIS_KERNELS").is_ok_and(|v| v == "portable") {
            return &PORTABLE;
        }
        simd().unwrap_or(&PORTABLE)
    })
}

/// Name of the kernel table in use ("avx2" or "portable"), for benchmark logs.
pub fn kernel_set() -> &'static str {
    chosen().name
}
