//! Fused CPU kernels, each with its backward pass, for the training forward: linear layers,
//! RMSNorm (also per head), the gated MLP input (gate and up projections with SwiGLU), rope
//! with masked attention, and target-token log-probabilities.
//!
//! Why: spelled out as candle ops, these are 5–12 graph nodes each, and candle's backward
//! allocates a zeroed buffer and an accumulated copy for every node. On small and medium models
//! that allocation traffic, not arithmetic, bounds the step time. As custom ops with their own
//! backward each becomes one node with one output and one gradient per input.
//!
//! The kernels run on the CPU in f32 and f64 (the finite-difference tests). Other dtypes
//! (bf16) and devices use the spelled-out differentiable forms in [`super::layers`]; see
//! [`applies`]. Numerics follow the spelled-out forms (same formulas, same order of the
//! scale / mask / max-subtract / normalise steps); results agree to rounding (f32 `exp` is
//! [`exp_f32`], within 2.5e-7 of the exact value). Parallel reductions sum in a fixed order,
//! so runs replay bit for bit.
//!
//! Layouts: activations stay `[b, s, heads * head_dim]` as the projections produce them (no
//! reshape or transpose nodes); rope and attention read each head's vector in place.
//!
//! One file per kernel, each the op's constructor, its forward and its backward:
//!
//! - [`linear`]: `x Wᵀ`, dW written in W's own layout (not a matmul plus a transpose node).
//! - [`rms_norm`]: RMSNorm over each group of `h` elements (also per head, without a reshape).
//! - [`gated_mlp_in`]: the Llama MLP up to the down projection, `silu(x Wgᵀ) * (x Wuᵀ)`, as
//!   one node instead of two linears and the activation.
//! - [`swiglu`]: `silu(gate) * up` elementwise (also the activation inside [`gated_mlp_in`]).
//! - [`rope`]: the cos/sin tables and the rotation that [`attention`] applies to q and k.
//! - [`attention`]: rope, then scaled dot-product attention under the batch's segment mask,
//!   in query blocks (no `[b, heads, s, s]` score tensor).
//! - [`token_logprobs`]: `log softmax(logits / T)[target]`, one value per token (the forward
//!   keeps no `[.., vocab]` log-softmax).
//!
//! Shared helpers: this module holds the [`Real`] element trait (f32 / f64 over candle's CPU
//! storage), the `per_float!` dtype dispatch of every forward, storage access
//! ([`contiguous`], [`with_data`], [`tensor`]), the fixed-order reductions ([`dot`],
//! [`row_max`], [`row_sum`], [`exp_shifted`], [`exp_f32`]) and the parallel chunking
//! ([`rows_per_task`]); [`strided`] holds the strided matrix views and the gemm call that the
//! linear, gated-MLP and attention kernels share. The tests (against the spelled-out forms)
//! are in `tests.rs`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Shape, Storage, Tensor};
use num_traits::Float;

/// Evaluates `$body` with the type alias `$T` set to the element type of the CPU storage `$s`
/// (f32 or f64) and wraps the `Vec<$T>` it returns as CPU storage; other dtypes return an
/// error naming `$op`. The one dtype dispatch of every kernel's forward.
///
/// Defined before the kernel modules: a `macro_rules!` macro is in scope only after its
/// definition. The names it expands to (`CpuStorage`, `Real`, `err`) resolve where it is used.
macro_rules! per_float {
    ($op:expr, $s:expr, $T:ident => $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $T = f32;
                <$T as Real>::storage($body)
            }
            CpuStorage::F64(_) => {
                type $T = f64;
                <$T as Real>::storage($body)
            }
            s => return Err(err($op, format!("unsupported dtype {:?}", s.dtype()))),
        }
    };
}

mod attention;
mod gated_mlp_in;
mod linear;
mod rms_norm;
mod rope;
mod strided;
mod swiglu;
#[cfg(test)]
mod tests;
mod token_logprobs;

pub(crate) use attention::{rope_attention, AttentionMask};
pub(crate) use gated_mlp_in::gated_mlp_in;
pub(crate) use linear::linear;
pub(crate) use rms_norm::rms_norm;
pub(crate) use rope::RopeTables;
pub(crate) use swiglu::swiglu;
pub(crate) use token_logprobs::token_logprobs;

/// Whether the fused kernels serve a tensor of this dtype on this device.
pub(crate) fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// f32 / f64 with access to candle's CPU storage.
trait Real: Float + candle_core::WithDType + Send + Sync + std::iter::Sum + 'static {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn storage(v: Vec<Self>) -> CpuStorage;
    fn from_f32(x: f32) -> Self;
    /// `exp`, in a form the compiler vectorises for f32 (see [`exp_f32`]).
    fn exp_fast(self) -> Self;
    /// `x = exp(x - m)` elementwise.
    fn exp_shift(x: &mut [Self], m: Self) {
        for v in x.iter_mut() {
            *v = (*v - m).exp_fast();
        }
    }
}

impl Real for f32 {
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
    fn exp_shift(x: &mut [Self], m: Self) {
        exp_shift_f32(x, m)
    }
}

impl Real for f64 {
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

/// `exp(x)` for f32 without a libm call, so that loops over it vectorise: Cody–Waite
/// reduction `x = n ln2 + r` (|r| <= ln2 / 2) and Cephes' degree-6 polynomial for `e^r`
/// (about 1 ulp, as libm's `expf`), scaled by `2^n` through the exponent bits. Below
/// `ln(f32::MIN_POSITIVE)` it returns 0 (no subnormals); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)
    const HI: f32 = 88.376_26; // 127.5 ln 2: keeps 2^n finite
                               // Round to nearest by adding 1.5 * 2^23: the integer lands in the low mantissa bits
                               // (no `floor`, which is a libm call on baseline x86-64 and blocks vectorisation).
    const SHIFTER: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let t = xc * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let ni = t.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = (p * r * r + r + 1.0) * f32::from_bits(((ni + 127) as u32) << 23);
    if x < LO {
        0.0
    } else {
        e
    }
}

/// Largest element (eight running maxima, as [`dot`]); −∞ for an empty slice.
fn row_max<T: Real>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    rest.iter()
        .chain(acc.iter())
        .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
}

/// Sum (eight running sums, as [`dot`]).
fn row_sum<T: Real>(x: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let tail = rest.iter().fold(T::zero(), |a, &v| a + v);
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `x = exp(x - m)` elementwise; returns the sum.
fn exp_shifted<T: Real>(x: &mut [T], m: T) -> T {
    T::exp_shift(x, m);
    row_sum(x)
}

/// `x = exp(x - m)` for f32, in 8-wide AVX2/FMA code where the CPU has it (the crate itself
/// is built for baseline x86-64, i.e. 4-wide SSE2).
fn exp_shift_f32(x: &mut [f32], m: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `exp_shift_avx2` is compiled for.
        unsafe { exp_shift_avx2(x, m) };
        return;
    }
    for v in x.iter_mut() {
        *v = exp_f32(*v - m);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_shift_avx2(x: &mut [f32], m: f32) {
    for v in x.iter_mut() {
        *v = exp_f32(*v - m);
    }
}

fn err(op: &str, msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: {msg}"))
}

/// The contiguous elements of a storage/layout pair.
fn contiguous<'a, T: Real>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [T]> {
    let data = T::slice(s).ok_or_else(|| err(op, format!("unsupported dtype {:?}", s.dtype())))?;
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| err(op, "input must be contiguous"))?;
    Ok(&data[a..b])
}

/// Runs `f` on the contiguous CPU data of each of `ts` (all of element type `T`).
fn with_data<T: Real, R, const N: usize>(
    op: &str,
    ts: [&Tensor; N],
    f: impl FnOnce([&[T]; N]) -> R,
) -> candle_core::Result<R> {
    let ts = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(N);
    for (st, l) in &guards {
        match &**st {
            Storage::Cpu(c) => slices.push(contiguous::<T>(op, c, l)?),
            _ => return Err(err(op, "CPU tensors only")),
        }
    }
    let Ok(slices) = <[&[T]; N]>::try_from(slices) else {
        unreachable!("one slice per tensor")
    };
    Ok(f(slices))
}

fn tensor<T: Real>(v: Vec<T>, shape: &Shape, like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, shape.clone(), like.device())
}

/// Dot product with eight independent accumulators, so that the compiler can keep them in
/// vector lanes (a single running sum is a serial dependency chain).
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = T::zero();
    for (&x, &y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Below this many elements a kernel runs on the calling thread: waking the pool costs more
/// than the work.
const PARALLEL_MIN: usize = 1 << 11;

/// Rows (or tasks) per parallel chunk so that each chunk holds about [`PARALLEL_MIN`] / 4
/// elements, or all of them when the whole input is small.
fn rows_per_task(rows: usize, row_len: usize) -> usize {
    if rows * row_len < PARALLEL_MIN {
        rows.max(1)
    } else {
        (PARALLEL_MIN / 4 / row_len.max(1)).max(1)
    }
}

/// `y += a * x`
fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}
