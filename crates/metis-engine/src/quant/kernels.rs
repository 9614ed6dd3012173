//! Run-time kernel dispatch: one table of dot-product functions per instruction set, chosen
//! once per process (as the `gemm` crate does), so one binary runs fast on AVX-512 VNNI and
//! AVX2 machines and correctly everywhere else.
//!
//! `METIS_KERNELS=portable` (or `avx2`) forces that table, for comparisons and bug reports.

use std::sync::OnceLock;

use super::int8_prompt::Int8Prompt;
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
    /// Whether `f32`/`f16`/`bf16` prefetch their weights ahead themselves, so that the caller
    /// need not ask for whole rows.
    pub float_dots_prefetch: bool,
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
    /// Prompt-sized Q4_K/Q5_K/Q6_K products in int8, where this instruction set makes them faster
    /// than dequantize + f32 gemm.
    pub int8_prompt: Option<Int8Prompt>,
}

pub(crate) static PORTABLE: Kernels = Kernels {
    name: "portable",
    float_dots_prefetch: false,
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
    int8_prompt: None,
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::{avx2, vnni};
    use super::{Kernels, Q8KRow, Q8Row};

    /// One table over the kernels of `$isa`, as safe wrappers: each checks that the activation
    /// row covers every block of `w` (the kernels read both through raw pointers) and calls
    /// the kernel.
    macro_rules! table {
        ($table:ident, $name:literal, $isa:ident, $int8_prompt:expr) => {
            pub(crate) static $table: Kernels = {
                macro_rules! wrap {
                    ($kernel:ident, Q8, $bytes:expr) => {{
                        fn f(w: &[u8], a: Q8Row) -> f32 {
                            let nb = w.len() / $bytes;
                            assert!(a.qs.len() >= nb * 32 && a.d.len() >= nb && a.s.len() >= nb);
                            // SAFETY: only reachable through this table, which `simd()` offers
                            // after detecting its features; lengths checked above.
                            unsafe { $isa::$kernel(w, a) }
                        }
                        f
                    }};
                    ($kernel:ident, Q8K, $bytes:expr) => {{
                        fn f(w: &[u8], a: Q8KRow) -> f32 {
                            let nb = w.len() / $bytes;
                            assert!(
                                a.qs.len() >= nb * 256
                                    && a.d.len() >= nb
                                    && a.bsums.len() >= nb * 16
                            );
                            // SAFETY: as above (this table only; lengths checked).
                            unsafe { $isa::$kernel(w, a) }
                        }
                        f
                    }};
                    ($kernel:ident, Float) => {{
                        fn f(w: &[u8], x: &[f32]) -> f32 {
                            // SAFETY: this table only; the kernel bounds its reads by
                            // min(w, x) lengths.
                            unsafe { $isa::$kernel(w, x) }
                        }
                        f
                    }};
                }
                Kernels {
                    name: $name,
                    float_dots_prefetch: true,
                    q8_0: wrap!(dot_q8_0, Q8, 34),
                    q4_0: wrap!(dot_q4_0, Q8, 18),
                    q4_1: wrap!(dot_q4_1, Q8, 20),
                    q5_0: wrap!(dot_q5_0, Q8, 22),
                    q5_1: wrap!(dot_q5_1, Q8, 24),
                    q4_k: wrap!(dot_q4_k, Q8K, 144),
                    q5_k: wrap!(dot_q5_k, Q8K, 176),
                    q6_k: wrap!(dot_q6_k, Q8K, 210),
                    f32: wrap!(dot_f32, Float),
                    f16: wrap!(dot_f16, Float),
                    bf16: wrap!(dot_bf16, Float),
                    int8_prompt: $int8_prompt,
                }
            };
        };
    }

    table!(
        AVX2,
        "avx2",
        avx2,
        Some(super::super::int8_prompt::avx2::INT8_PROMPT)
    );
    table!(
        VNNI,
        "avx512vnni",
        vnni,
        Some(super::super::int8_prompt::avx512::INT8_PROMPT)
    );

    pub(crate) fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    pub(crate) fn has_vnni() -> bool {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }
}

/// The SIMD tables this CPU runs, fastest first (empty elsewhere); tests compare each with
/// the portable one. Every x86 table includes AVX2, FMA and F16C.
pub(crate) fn simd() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut tables = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_vnni() {
            tables.push(&x86::VNNI);
        }
        if x86::has_avx2() {
            tables.push(&x86::AVX2);
        }
    }
    tables
}

/// Whether the chosen table is an x86 SIMD one, so that AVX2, FMA and F16C are known to be
/// present (other kernels dispatch on this rather than detect again).
pub(crate) fn chosen_has_avx2() -> bool {
    !std::ptr::eq(chosen(), &PORTABLE)
}

/// The fastest table this CPU runs, or the one `METIS_KERNELS` names (`portable`, `avx2`,
/// `avx512vnni`) if this CPU runs it; a name it cannot run is reported once and ignored.
pub(crate) fn chosen() -> &'static Kernels {
    static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let tables = simd();
        let fastest = tables.first().copied().unwrap_or(&PORTABLE);
        let Ok(wanted) = std::env::var("METIS_KERNELS") else {
            return fastest;
        };
        let runnable = tables.into_iter().chain([&PORTABLE]);
        runnable
            .clone()
            .find(|k| k.name == wanted)
            .unwrap_or_else(|| {
                let names: Vec<&str> = runnable.map(|k| k.name).collect();
                tracing::warn!(
                    "METIS_KERNELS={wanted}: this CPU runs {}; using {}",
                    names.join(", "),
                    fastest.name
                );
                fastest
            })
    })
}

/// `fn $name($args) $body`, with `$body` compiled for AVX2 + FMA + F16C where the chosen
/// kernel table is an x86 SIMD one (so those are known to be present) and for the baseline
/// elsewhere: for plain loops that vectorize well at 256 bits (dequantization, activation
/// quantization, softmax). The body becomes a nested `#[inline(always)]` function called
/// directly from the wide copy: passed as a closure or a generic function item instead, it is
/// compiled separately, for the baseline (seen in the disassembly).
macro_rules! on_this_cpu {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            if $crate::quant::kernels::chosen_has_avx2() {
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn wide($($arg: $ty),*) {
                    body($($arg),*)
                }
                // SAFETY: a SIMD kernel table is chosen only after AVX2, FMA and F16C are
                // detected.
                return unsafe { wide($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use on_this_cpu;

/// Name of the kernel table in use ("avx512vnni", "avx2" or "portable"), for benchmark logs.
pub fn kernel_set() -> &'static str {
    chosen().name
}
