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

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use num_traits::Float;
use rayon::prelude::*;

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

/// Evaluates `$body` with the type alias `$T` set to the element type of the CPU storage `$s`
/// (f32 or f64) and wraps the `Vec<$T>` it returns as CPU storage; other dtypes return an
/// error naming `$op`. The one dtype dispatch of every kernel's forward.
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

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `y = w * (x * rsqrt(mean(x²) + eps))` over each group of `h` elements; x `[.., h]` (or
/// `[.., heads * h]`: per-head norms), w `[h]`.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

struct RmsNorm {
    eps: f64,
}

impl RmsNorm {
    fn inv_rms<T: Real>(&self, row: &[T]) -> T {
        let ms = row.iter().map(|&v| v * v).sum::<T>() / T::from(row.len()).expect("len");
        T::one() / (ms + T::from(self.eps).expect("eps")).sqrt()
    }

    fn fwd<T: Real>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let h = w.len();
        let mut y = vec![T::zero(); x.len()];
        let block = h * rows_per_task(x.len() / h.max(1), h);
        y.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .for_each(|(yb, xb)| {
                for (yr, xr) in yb.chunks_mut(h).zip(xb.chunks(h)) {
                    let r = self.inv_rms(xr);
                    for ((y, &x), &w) in yr.iter_mut().zip(xr).zip(w) {
                        *y = (x * r) * w;
                    }
                }
            });
        y
    }

    /// dx = r * (g - x̂ * mean(g * x̂)) with g = dy * w and x̂ = x * r; dw = Σ_rows dy * x̂.
    fn bwd<T: Real>(&self, x: &[T], w: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
        let h = w.len();
        let mut dx = vec![T::zero(); x.len()];
        let block = h * rows_per_task(x.len() / h.max(1), h);
        let dw = dx
            .par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(dy.par_chunks(block)))
            .map(|(dxb, (xb, dyb))| {
                let mut dw = vec![T::zero(); h];
                let mut g = vec![T::zero(); h];
                for ((dxr, xr), dyr) in dxb.chunks_mut(h).zip(xb.chunks(h)).zip(dyb.chunks(h)) {
                    let r = self.inv_rms(xr);
                    let mut m = T::zero();
                    for i in 0..h {
                        let xh = xr[i] * r;
                        g[i] = dyr[i] * w[i];
                        m += g[i] * xh;
                        dw[i] += dyr[i] * xh;
                    }
                    let m = m / T::from(h).expect("h");
                    for i in 0..h {
                        dxr[i] = r * (g[i] - xr[i] * r * m);
                    }
                }
                dw
            })
            .collect::<Vec<_>>()
            // Summed in block order, not in rayon's (stealing-dependent) reduction order, so
            // that a run replays bit for bit.
            .into_iter()
            .fold(vec![T::zero(); h], |mut a, b| {
                axpy(&mut a, T::one(), &b);
                a
            });
        (dx, dw)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "metis-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // Each consecutive group of `h` elements is one vector: `[.., h]`, or `[.., heads * h]`
        // for per-head norms (Qwen3's q/k norm) without a reshape.
        let h = l2.shape().elem_count();
        if h == 0 || l1.dims().last().is_none_or(|&d| d % h != 0) {
            return Err(err(
                self.name(),
                format!("x {:?} vs weight [{h}]", l1.dims()),
            ));
        }
        let n = self.name();
        let y = per_float!(n, s1, T => self.fwd(
            contiguous::<T>(n, s1, l1)?,
            contiguous::<T>(n, s2, l2)?,
        ));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(
            op: &RmsNorm,
            x: &Tensor,
            w: &Tensor,
            dy: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor)> {
            let (dx, dw) =
                with_data::<T, _, 3>(op.name(), [x, w, dy], |[xs, ws, dys]| op.bwd(xs, ws, dys))?;
            Ok((tensor(dx, x.shape(), x)?, tensor(dw, w.shape(), w)?))
        }
        let (dx, dw) = match x.dtype() {
            DType::F32 => run::<f32>(self, x, w, dy)?,
            _ => run::<f64>(self, x, w, dy)?,
        };
        Ok((x.track_op().then_some(dx), w.track_op().then_some(dw)))
    }
}

// ---------------------------------------------------------------------------------------------
// Linear

/// `x Wᵀ`: x `[.., in]`, W `[out, in]` (as HF stores it) → `[.., out]` (leading dims kept, so
/// that no reshape node sits between layers).
///
/// As one node its backward writes dW in W's own layout; as candle's `matmul(x, w.t())` it
/// would be a matmul and a transpose node, with dW accumulated twice, once strided.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

struct Linear;

/// Multiply-adds below which one gemm runs on one thread: splitting a small product costs
/// more in waking the pool than it saves.
const GEMM_PARALLEL_MIN: usize = 1 << 23;

/// How a `[m, k] × [k, n]` product runs.
fn gemm_threads(m: usize, k: usize, n: usize) -> gemm::Parallelism {
    if m.saturating_mul(k).saturating_mul(n) < GEMM_PARALLEL_MIN {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    }
}

impl Linear {
    fn fwd<T: Real>(x: &[T], w: &[T], (rows, inp, out): (usize, usize, usize)) -> Vec<T> {
        let mut y = vec![T::zero(); rows * out];
        let wt = View::new(w, 0, (out, inp), (inp, 1)).t();
        match gemm_threads(rows, inp, out) {
            gemm::Parallelism::None => {
                // Small products: one single-threaded gemm per block of rows, the blocks
                // spread over the pool (cheaper than gemm's own split at these sizes).
                let block = rows.div_ceil(rayon::current_num_threads()).max(1);
                y.par_chunks_mut(block * out)
                    .enumerate()
                    .for_each(|(i, yb)| {
                        let r0 = i * block;
                        let n = yb.len() / out.max(1);
                        let xb = View::new(x, r0 * inp, (n, inp), (inp, 1));
                        gemm_into(yb, xb, wt, T::one(), false, gemm::Parallelism::None);
                    });
            }
            threads => gemm_into(
                &mut y,
                View::new(x, 0, (rows, inp), (inp, 1)),
                wt,
                T::one(),
                false,
                threads,
            ),
        }
        y
    }

    /// dx = dy W, dW = dyᵀ x.
    fn bwd<T: Real>(
        x: &[T],
        w: &[T],
        dy: &[T],
        (rows, inp, out): (usize, usize, usize),
        need: (bool, bool),
    ) -> (Option<Vec<T>>, Option<Vec<T>>) {
        let dy_v = View::new(dy, 0, (rows, out), (out, 1));
        let threads = gemm_threads(rows, inp, out);
        let dx = || {
            need.0.then(|| {
                let mut dx = vec![T::zero(); rows * inp];
                let w_v = View::new(w, 0, (out, inp), (inp, 1));
                gemm_into(&mut dx, dy_v, w_v, T::one(), false, threads);
                dx
            })
        };
        let dw = || {
            need.1.then(|| {
                let mut dw = vec![T::zero(); out * inp];
                let x_v = View::new(x, 0, (rows, inp), (inp, 1));
                gemm_into(&mut dw, dy_v.t(), x_v, T::one(), false, threads);
                dw
            })
        };
        // The two products are independent: small ones run side by side, one per thread.
        match threads {
            gemm::Parallelism::None => rayon::join(dx, dw),
            _ => (dx(), dw()),
        }
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "metis-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.name();
        let inp = *l1.dims().last().ok_or_else(|| err(n, "x is a scalar"))?;
        let rows = l1.shape().elem_count() / inp.max(1);
        let (out, w_in) = l2.shape().dims2()?;
        if w_in != inp {
            return Err(err(
                n,
                format!("x {:?} vs weight [{out}, {w_in}]", l1.dims()),
            ));
        }
        let dims = (rows, inp, out);
        let y = per_float!(n, s1, T => Self::fwd(
            contiguous::<T>(n, s1, l1)?,
            contiguous::<T>(n, s2, l2)?,
            dims,
        ));
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = out;
        Ok((y, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(
            x: &Tensor,
            w: &Tensor,
            dy: &Tensor,
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
            let n = "metis-linear";
            let (out, inp) = w.dims2()?;
            let rows = x.elem_count() / inp.max(1);
            let need = (x.track_op(), w.track_op());
            let (dx, dw) = with_data::<T, _, 3>(n, [x, w, dy], |[xs, ws, ds]| {
                Linear::bwd(xs, ws, ds, (rows, inp, out), need)
            })?;
            Ok((
                dx.map(|v| tensor(v, x.shape(), x)).transpose()?,
                dw.map(|v| tensor(v, w.shape(), w)).transpose()?,
            ))
        }
        match x.dtype() {
            DType::F32 => run::<f32>(x, w, dy),
            _ => run::<f64>(x, w, dy),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gated MLP input: silu(x Wgᵀ) * (x Wuᵀ)

/// The Llama MLP up to the down projection, `silu(x Wgᵀ) * (x Wuᵀ)`: x `[.., h]`, Wg and Wu
/// `[inter, h]` → `[.., inter]`, as one graph node (instead of two linears and the
/// activation, whose three outputs and two input gradients each cost candle's backward a
/// zeroed buffer and an add). The pre-activations are kept from the forward for the
/// backward, as autograd would keep them.
pub(crate) fn gated_mlp_in(
    x: &Tensor,
    w_gate: &Tensor,
    w_up: &Tensor,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w_gate.contiguous()?,
        &w_up.contiguous()?,
        GatedMlpIn {
            saved: std::sync::Mutex::new(None),
        },
    )
}

struct GatedMlpIn {
    /// (gate, up) pre-activations from the forward.
    saved: std::sync::Mutex<Option<(CpuStorage, CpuStorage)>>,
}

impl GatedMlpIn {
    fn dims(x: &[usize], wg: &[usize], wu: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
        let h = *x
            .last()
            .ok_or_else(|| err("metis-gated-mlp", "x is a scalar"))?;
        if wg.len() != 2 || wg != wu || wg[1] != h {
            return Err(err(
                "metis-gated-mlp",
                format!("x {x:?}, gate {wg:?}, up {wu:?}"),
            ));
        }
        let rows = x.iter().product::<usize>() / h.max(1);
        Ok((rows, h, wg[0]))
    }

    fn fwd<T: Real>(&self, x: &[T], wg: &[T], wu: &[T], dims: (usize, usize, usize)) -> Vec<T> {
        let (gate, up) = rayon::join(|| Linear::fwd(x, wg, dims), || Linear::fwd(x, wu, dims));
        let act = SwiGlu::fwd(&gate, &up);
        *self.saved.lock().expect("not poisoned") = Some((T::storage(gate), T::storage(up)));
        act
    }

    /// With a = silu(g) ⊙ u: dg, du from [`SwiGlu::bwd`], then dx = dg Wg + du Wu,
    /// dWg = dgᵀ x, dWu = duᵀ x.
    #[allow(clippy::type_complexity)]
    fn bwd<T: Real>(
        &self,
        x: &[T],
        wg: &[T],
        wu: &[T],
        da: &[T],
        (rows, h, inter): (usize, usize, usize),
    ) -> candle_core::Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let saved = self.saved.lock().expect("not poisoned").take();
        let (gate, up) = match &saved {
            Some((g, u)) => (
                T::slice(g)
                    .ok_or_else(|| err("metis-gated-mlp", "dtype"))?
                    .to_vec(),
                T::slice(u)
                    .ok_or_else(|| err("metis-gated-mlp", "dtype"))?
                    .to_vec(),
            ),
            // A second backward through the same graph: recompute.
            None => rayon::join(
                || Linear::fwd(x, wg, (rows, h, inter)),
                || Linear::fwd(x, wu, (rows, h, inter)),
            ),
        };
        let (dg, du) = SwiGlu::bwd(&gate, &up, da);
        let dg_v = View::new(&dg[..], 0, (rows, inter), (inter, 1));
        let du_v = View::new(&du[..], 0, (rows, inter), (inter, 1));
        let x_v = View::new(x, 0, (rows, h), (h, 1));
        let one = gemm::Parallelism::None;
        let dx = || {
            let mut dx = vec![T::zero(); rows * h];
            let wg_v = View::new(wg, 0, (inter, h), (h, 1));
            let wu_v = View::new(wu, 0, (inter, h), (h, 1));
            gemm_into(&mut dx, dg_v, wg_v, T::one(), false, one);
            gemm_into(&mut dx, du_v, wu_v, T::one(), true, one);
            dx
        };
        let dw = |d: View<T>| {
            let mut dw = vec![T::zero(); inter * h];
            gemm_into(&mut dw, d.t(), x_v, T::one(), false, one);
            dw
        };
        let (dx, (dwg, dwu)) = rayon::join(dx, || rayon::join(|| dw(dg_v), || dw(du_v)));
        Ok((dx, dwg, dwu))
    }
}

impl CustomOp3 for GatedMlpIn {
    fn name(&self) -> &'static str {
        "metis-gated-mlp"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.name();
        let dims = Self::dims(l1.dims(), l2.dims(), l3.dims())?;
        let out = per_float!(n, s1, T => self.fwd(
            contiguous::<T>(n, s1, l1)?,
            contiguous::<T>(n, s2, l2)?,
            contiguous::<T>(n, s3, l3)?,
            dims,
        ));
        let mut shape = l1.dims().to_vec();
        *shape.last_mut().expect("rank >= 1") = dims.2;
        Ok((out, Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wg: &Tensor,
        wu: &Tensor,
        _res: &Tensor,
        da: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(
            op: &GatedMlpIn,
            x: &Tensor,
            wg: &Tensor,
            wu: &Tensor,
            da: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let n = op.name();
            let dims = GatedMlpIn::dims(x.dims(), wg.dims(), wu.dims())?;
            let (dx, dwg, dwu) = with_data::<T, _, 4>(n, [x, wg, wu, da], |[xs, gs, us, ds]| {
                op.bwd(xs, gs, us, ds, dims)
            })??;
            Ok((
                tensor(dx, x.shape(), x)?,
                tensor(dwg, wg.shape(), wg)?,
                tensor(dwu, wu.shape(), wu)?,
            ))
        }
        let (dx, dwg, dwu) = match x.dtype() {
            DType::F32 => run::<f32>(self, x, wg, wu, da)?,
            _ => run::<f64>(self, x, wg, wu, da)?,
        };
        Ok((
            x.track_op().then_some(dx),
            wg.track_op().then_some(dwg),
            wu.track_op().then_some(dwu),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// `silu(gate) * up` elementwise (the Llama MLP's activation), silu(x) = x / (1 + exp(-x)).
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

impl SwiGlu {
    fn fwd<T: Real>(gate: &[T], up: &[T]) -> Vec<T> {
        let mut y = vec![T::zero(); gate.len()];
        let block = rows_per_task(gate.len(), 1);
        y.par_chunks_mut(block)
            .zip(gate.par_chunks(block).zip(up.par_chunks(block)))
            .for_each(|(yb, (gb, ub))| {
                for ((y, &x), &u) in yb.iter_mut().zip(gb).zip(ub) {
                    *y = x / (T::one() + (-x).exp_fast()) * u;
                }
            });
        y
    }

    /// d gate = g · up · σ(x)(1 + x(1 − σ(x))), d up = g · silu(x).
    fn bwd<T: Real>(gate: &[T], up: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
        let mut dgate = vec![T::zero(); gate.len()];
        let mut dup = vec![T::zero(); gate.len()];
        let block = rows_per_task(gate.len(), 1);
        dgate
            .par_chunks_mut(block)
            .zip(dup.par_chunks_mut(block))
            .zip(
                gate.par_chunks(block)
                    .zip(up.par_chunks(block).zip(g.par_chunks(block))),
            )
            .for_each(|((dgb, dub), (gb, (ub, gyb)))| {
                for i in 0..gb.len() {
                    let (x, u, gy) = (gb[i], ub[i], gyb[i]);
                    let sig = T::one() / (T::one() + (-x).exp_fast());
                    dgb[i] = gy * u * sig * (T::one() + x * (T::one() - sig));
                    dub[i] = gy * x * sig;
                }
            });
        (dgate, dup)
    }
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "metis-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.name();
        if l1.shape() != l2.shape() {
            return Err(err(
                n,
                format!("gate {:?} vs up {:?}", l1.dims(), l2.dims()),
            ));
        }
        let y = per_float!(n, s1, T => Self::fwd(
            contiguous::<T>(n, s1, l1)?,
            contiguous::<T>(n, s2, l2)?,
        ));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(
            gate: &Tensor,
            up: &Tensor,
            g: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor)> {
            let n = "metis-swiglu";
            let (dg, du) =
                with_data::<T, _, 3>(n, [gate, up, g], |[a, b, c]| SwiGlu::bwd(a, b, c))?;
            Ok((tensor(dg, gate.shape(), gate)?, tensor(du, up.shape(), up)?))
        }
        let (dg, du) = match gate.dtype() {
            DType::F32 => run::<f32>(gate, up, g)?,
            _ => run::<f64>(gate, up, g)?,
        };
        Ok((gate.track_op().then_some(dg), up.track_op().then_some(du)))
    }
}

// ---------------------------------------------------------------------------------------------
// Rope

/// cos/sin half tables `[b * s, head_dim / 2]` (row-major over the batch's tokens), f32 as
/// transformers computes them.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    pub(crate) cos: Arc<Vec<f32>>,
    pub(crate) sin: Arc<Vec<f32>>,
    pub(crate) half: usize,
}

/// `x * cos + rotate_half(x) * sin` for x `[b, s, heads * head_dim]` (each head rotated), as
/// part of [`rope_attention`].
struct Rope {
    /// Head dim = `2 * tables.half`.
    tables: RopeTables,
    /// Rotate by −θ: the backward of the forward rotation (a rotation's transpose).
    inverse: bool,
}

impl Rope {
    fn apply<T: Real>(&self, x: &[T], dims: &[usize]) -> candle_core::Result<Vec<T>> {
        let half = self.tables.half;
        let d = 2 * half;
        let (b, s, width) = (dims[0], dims[1], dims[2]);
        let heads = width / d.max(1);
        if d == 0 || width % d != 0 || self.tables.cos.len() != b * s * half {
            return Err(err(
                "metis-rope",
                format!(
                    "x {dims:?} vs tables of {} rows × {half}",
                    self.tables.cos.len() / half.max(1)
                ),
            ));
        }
        let mut y = vec![T::zero(); x.len()];
        let token = heads * d;
        let tokens_per_task = rows_per_task(b * s, token);
        y.par_chunks_mut(token * tokens_per_task)
            .zip(x.par_chunks(token * tokens_per_task))
            .enumerate()
            .for_each(|(task, (yb, xb))| {
                for (n, (yt, xt)) in yb.chunks_mut(token).zip(xb.chunks(token)).enumerate() {
                    let t = task * tokens_per_task + n;
                    let cos = &self.tables.cos[t * half..(t + 1) * half];
                    let sin = &self.tables.sin[t * half..(t + 1) * half];
                    for (yh, xh) in yt.chunks_mut(d).zip(xt.chunks(d)) {
                        for i in 0..half {
                            let (c, sn) = (T::from_f32(cos[i]), T::from_f32(sin[i]));
                            let (x1, x2) = (xh[i], xh[i + half]);
                            if self.inverse {
                                yh[i] = x1 * c + x2 * sn;
                                yh[i + half] = x2 * c - x1 * sn;
                            } else {
                                yh[i] = x1 * c - x2 * sn;
                                yh[i + half] = x2 * c + x1 * sn;
                            }
                        }
                    }
                }
            });
        Ok(y)
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Rope on q and k, then scaled dot-product attention with the [`super::BatchLayout`] mask
/// (query `i` sees key `j <= i` of the same non-zero segment; a padding query sees only
/// itself), as one graph node. q `[b, s, nh * d]`, k and v `[b, s, nkv * d]` (grouped-query: query head `h` reads kv head
/// `h / (nh / nkv)`) → `[b, s, nh * d]`.
pub(crate) fn rope_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rope: &RopeTables,
    mask: &AttentionMask,
    scale: f64,
    head_dim: usize,
) -> candle_core::Result<Tensor> {
    if 2 * rope.half != head_dim {
        return Err(err(
            "metis-attention",
            format!(
                "rope tables for head dim {} vs head dim {head_dim}",
                2 * rope.half
            ),
        ));
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            mask: mask.clone(),
            scale,
            head_dim,
            rope: rope.clone(),
        },
    )
}

/// Which keys each query sees, from the batch's segment ids (0 = padding).
#[derive(Debug, Clone)]
pub(crate) struct AttentionMask {
    /// `[b * s]`.
    segments: Arc<Vec<u32>>,
    /// `[b * s]`: the first key a query sees when its visible keys are the single run
    /// `start..=i` (every document one contiguous run, as in padded and packed batches);
    /// None when a document is split by padding holes, which takes the per-key test.
    starts: Option<Arc<Vec<u32>>>,
}

impl AttentionMask {
    pub(crate) fn new(segments: &[u32], seq: usize) -> Self {
        let mut starts = Vec::with_capacity(segments.len());
        let mut contiguous = true;
        for row in segments.chunks(seq.max(1)) {
            let mut seen = std::collections::HashSet::new();
            for (i, &sg) in row.iter().enumerate() {
                let start = if sg != 0 && i > 0 && row[i - 1] == sg {
                    starts[starts.len() - 1]
                } else {
                    if sg != 0 && !seen.insert(sg) {
                        contiguous = false;
                    }
                    i as u32
                };
                starts.push(start);
            }
        }
        Self {
            segments: Arc::new(segments.to_vec()),
            starts: contiguous.then(|| Arc::new(starts)),
        }
    }
}

struct Attention {
    mask: AttentionMask,
    scale: f64,
    head_dim: usize,
    /// Rope applied to q and k inside the op (one graph node instead of three).
    rope: RopeTables,
}

impl Attention {
    /// q and k after the op's rope.
    fn rotated<T: Real>(
        &self,
        q: &[T],
        k: &[T],
        q_dims: &[usize],
        k_dims: &[usize],
    ) -> candle_core::Result<(Vec<T>, Vec<T>)> {
        let rope = Rope {
            tables: self.rope.clone(),
            inverse: false,
        };
        Ok((rope.apply(q, q_dims)?, rope.apply(k, k_dims)?))
    }
}

/// Shapes of one attention call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    s: usize,
    nh: usize,
    nkv: usize,
    d: usize,
}

impl Dims {
    fn rep(&self) -> usize {
        self.nh / self.nkv
    }
    fn q_at(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.s + i) * self.nh + h) * self.d
    }
    fn kv_at(&self, b: usize, j: usize, g: usize) -> usize {
        ((b * self.s + j) * self.nkv + g) * self.d
    }
}

/// A strided matrix view into a slice: element `(r, c)` is `data[offset + r * rs + c * cs]`.
#[derive(Clone, Copy)]
struct View<'a, T> {
    data: &'a [T],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> View<'a, T> {
    fn new(
        data: &'a [T],
        offset: usize,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        Self {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transpose (no copy).
    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element lies inside `data` (what makes the raw gemm call sound).
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m, n] (row-major, row stride n) = (accumulate ? dst : 0) + alpha * lhs[m, k] × rhs[k, n]`
/// on the calling thread (the attention kernels parallelise over heads).
fn matmul<T: Real>(dst: &mut [T], lhs: View<T>, rhs: View<T>, alpha: T, accumulate: bool) {
    gemm_into(dst, lhs, rhs, alpha, accumulate, gemm::Parallelism::None)
}

fn gemm_into<T: Real>(
    dst: &mut [T],
    lhs: View<T>,
    rhs: View<T>,
    alpha: T,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && dst.len() >= m * n && lhs.in_bounds() && rhs.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    // SAFETY: the asserts above keep every index gemm touches inside the three slices; dst is
    // borrowed mutably and so does not alias lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            T::one(),
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `exp(x - max) / sum(exp(x - max))` over a slice.
fn softmax_in_place<T: Real>(row: &mut [T]) {
    let m = row_max(row);
    let sum = exp_shifted(row, m);
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// Query rows per block: bounds the `[block, keys]` score buffers for long sequences.
const QUERY_BLOCK: usize = 128;

impl Attention {
    fn dims(&self, q: &[usize], k: &[usize], v: &[usize]) -> candle_core::Result<Dims> {
        let bad = || {
            err(
                "metis-attention",
                format!("q {q:?}, k {k:?}, v {v:?}, head dim {}", self.head_dim),
            )
        };
        let hd = self.head_dim;
        if q.len() != 3 || k != v || k.len() != 3 || hd == 0 {
            return Err(bad());
        }
        if !q[2].is_multiple_of(hd) || !k[2].is_multiple_of(hd) {
            return Err(bad());
        }
        let d = Dims {
            b: q[0],
            s: q[1],
            nh: q[2] / hd,
            nkv: k[2] / hd,
            d: hd,
        };
        if k[0] != d.b || k[1] != d.s || d.nkv == 0 || !d.nh.is_multiple_of(d.nkv) {
            return Err(bad());
        }
        if self.mask.segments.len() != d.b * d.s {
            return Err(err(
                "metis-attention",
                format!(
                    "{} segment ids for a [{}, {}] batch",
                    self.mask.segments.len(),
                    d.b,
                    d.s
                ),
            ));
        }
        Ok(d)
    }

    /// Query rows `i0..i0 + rows` of head `h` in row `b` (`[rows, d]`).
    fn q_rows<'a, T>(
        dm: Dims,
        x: &'a [T],
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
    ) -> View<'a, T> {
        View::new(x, dm.q_at(b, i0, h), (rows, dm.d), (dm.nh * dm.d, 1))
    }

    /// Key/value rows `0..rows` of kv head `g` in row `b` (`[rows, d]`).
    fn kv_rows<'a, T>(dm: Dims, x: &'a [T], b: usize, g: usize, rows: usize) -> View<'a, T> {
        View::new(x, dm.kv_at(b, 0, g), (rows, dm.d), (dm.nkv * dm.d, 1))
    }

    /// Probabilities `p [rows, nk]` of queries `i0..i0 + rows` (head `h`, row `b`) over keys
    /// `0..nk` (`nk = i0 + rows`: later keys are never visible): scaled scores, mask, softmax
    /// with the max subtracted, as the spelled-out form.
    #[allow(clippy::too_many_arguments)]
    fn probs<T: Real>(
        &self,
        dm: Dims,
        q: &[T],
        k: &[T],
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
        p: &mut Vec<T>,
    ) {
        let nk = i0 + rows;
        p.clear();
        p.resize(rows * nk, T::zero());
        let g = h / dm.rep();
        matmul(
            p,
            Self::q_rows(dm, q, b, h, i0, rows),
            Self::kv_rows(dm, k, b, g, nk).t(),
            T::from(self.scale).expect("scale"),
            false,
        );
        let seg = &self.mask.segments[b * dm.s..(b + 1) * dm.s];
        for (r, row) in p.chunks_mut(nk).enumerate() {
            let i = i0 + r;
            match &self.mask.starts {
                Some(starts) => {
                    // Visible: start..=i.
                    let lo = starts[b * dm.s + i] as usize;
                    row[..lo].fill(T::zero());
                    row[i + 1..].fill(T::zero());
                    softmax_in_place(&mut row[lo..=i]);
                }
                None => {
                    let visible = |j: usize| {
                        if seg[i] == 0 {
                            j == i
                        } else {
                            j <= i && seg[j] == seg[i]
                        }
                    };
                    let mut m = T::neg_infinity();
                    for (j, x) in row.iter().enumerate() {
                        if visible(j) {
                            m = Float::max(m, *x);
                        }
                    }
                    let mut sum = T::zero();
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = if visible(j) {
                            (*x - m).exp()
                        } else {
                            T::zero()
                        };
                        sum += *x;
                    }
                    for x in row.iter_mut() {
                        *x /= sum;
                    }
                }
            }
        }
    }

    /// Query blocks `(i0, rows)` covering `0..s`.
    fn blocks(s: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..s)
            .step_by(QUERY_BLOCK)
            .map(move |i0| (i0, QUERY_BLOCK.min(s - i0)))
    }

    fn fwd<T: Real>(&self, dm: Dims, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
        let d = dm.d;
        // One task per (row, head), each with its own [s, d] output, scattered afterwards.
        let parts: Vec<Vec<T>> = (0..dm.b * dm.nh)
            .into_par_iter()
            .map_init(Vec::new, |p, task| {
                let (b, h) = (task / dm.nh, task % dm.nh);
                let g = h / dm.rep();
                let mut o = vec![T::zero(); dm.s * d];
                for (i0, rows) in Self::blocks(dm.s) {
                    self.probs(dm, q, k, b, h, i0, rows, p);
                    let nk = i0 + rows;
                    matmul(
                        &mut o[i0 * d..(i0 + rows) * d],
                        View::new(p, 0, (rows, nk), (nk, 1)),
                        Self::kv_rows(dm, v, b, g, nk),
                        T::one(),
                        false,
                    );
                }
                o
            })
            .collect();
        let mut out = vec![T::zero(); q.len()];
        for (task, o) in parts.iter().enumerate() {
            let (b, h) = (task / dm.nh, task % dm.nh);
            for i in 0..dm.s {
                let at = dm.q_at(b, i, h);
                out[at..at + d].copy_from_slice(&o[i * d..(i + 1) * d]);
            }
        }
        out
    }

    /// Recomputes the probabilities (nothing is saved from the forward) and returns
    /// (dq, dk, dv). One task per (row, kv head) owns that head's dk/dv and the dq of its
    /// query heads; all are scattered afterwards.
    ///
    /// With `P` the probabilities and `dO` the output gradient of one head:
    /// `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − rowsum(P ∘ dP)) · scale`, `dQ = dS K`,
    /// `dK += dSᵀ Q`.
    fn bwd<T: Real>(
        &self,
        dm: Dims,
        q: &[T],
        k: &[T],
        v: &[T],
        dout: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let scale = T::from(self.scale).expect("scale");
        let (s, d, rep) = (dm.s, dm.d, dm.rep());
        let parts: Vec<(Vec<T>, Vec<T>, Vec<T>)> = (0..dm.b * dm.nkv)
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(p, dp), task| {
                    let (b, g) = (task / dm.nkv, task % dm.nkv);
                    let mut dq = vec![T::zero(); rep * s * d]; // [rep, s, d]
                    let mut dk = vec![T::zero(); s * d];
                    let mut dv = vec![T::zero(); s * d];
                    for r in 0..rep {
                        let h = g * rep + r;
                        for (i0, rows) in Self::blocks(s) {
                            let nk = i0 + rows;
                            self.probs(dm, q, k, b, h, i0, rows, p);
                            let p_view = View::new(p.as_slice(), 0, (rows, nk), (nk, 1));
                            let do_rows = Self::q_rows(dm, dout, b, h, i0, rows);
                            matmul(&mut dv[..nk * d], p_view.t(), do_rows, T::one(), true);
                            dp.clear();
                            dp.resize(rows * nk, T::zero());
                            matmul(
                                dp,
                                do_rows,
                                Self::kv_rows(dm, v, b, g, nk).t(),
                                T::one(),
                                false,
                            );
                            for (pr, dr) in p.chunks(nk).zip(dp.chunks_mut(nk)) {
                                let delta = dot(pr, dr);
                                for (x, &pj) in dr.iter_mut().zip(pr) {
                                    *x = pj * (*x - delta) * scale;
                                }
                            }
                            let ds_view = View::new(dp.as_slice(), 0, (rows, nk), (nk, 1));
                            matmul(
                                &mut dq[(r * s + i0) * d..(r * s + i0 + rows) * d],
                                ds_view,
                                Self::kv_rows(dm, k, b, g, nk),
                                T::one(),
                                false,
                            );
                            matmul(
                                &mut dk[..nk * d],
                                ds_view.t(),
                                Self::q_rows(dm, q, b, h, i0, rows),
                                T::one(),
                                true,
                            );
                        }
                    }
                    (dq, dk, dv)
                },
            )
            .collect();
        let mut dq = vec![T::zero(); q.len()];
        let mut dk = vec![T::zero(); k.len()];
        let mut dv = vec![T::zero(); v.len()];
        for (task, (pq, pk, pv)) in parts.into_iter().enumerate() {
            let (b, g) = (task / dm.nkv, task % dm.nkv);
            for i in 0..s {
                for r in 0..rep {
                    let at = dm.q_at(b, i, g * rep + r);
                    dq[at..at + d].copy_from_slice(&pq[(r * s + i) * d..(r * s + i + 1) * d]);
                }
                let at = dm.kv_at(b, i, g);
                dk[at..at + d].copy_from_slice(&pk[i * d..(i + 1) * d]);
                dv[at..at + d].copy_from_slice(&pv[i * d..(i + 1) * d]);
            }
        }
        (dq, dk, dv)
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "metis-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dm = self.dims(l1.dims(), l2.dims(), l3.dims())?;
        let n = self.name();
        let out = per_float!(n, s1, T => {
            let (q, k) = self.rotated(
                contiguous::<T>(n, s1, l1)?,
                contiguous::<T>(n, s2, l2)?,
                l1.dims(),
                l2.dims(),
            )?;
            self.fwd(dm, &q, &k, contiguous::<T>(n, s3, l3)?)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(
            op: &Attention,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            dout: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let dm = op.dims(q.dims(), k.dims(), v.dims())?;
            let n = op.name();
            let (dq, dk, dv) = with_data::<T, _, 4>(n, [q, k, v, dout], |[qs, ks, vs, ds]| {
                let (qr, kr) = op.rotated(qs, ks, q.dims(), k.dims())?;
                let (dq, dk, dv) = op.bwd(dm, &qr, &kr, vs, ds);
                // Rope's backward is the inverse rotation.
                let inverse = Rope {
                    tables: op.rope.clone(),
                    inverse: true,
                };
                let dq = inverse.apply(&dq, q.dims())?;
                let dk = inverse.apply(&dk, k.dims())?;
                candle_core::Result::Ok((dq, dk, dv))
            })??;
            Ok((
                tensor(dq, q.shape(), q)?,
                tensor(dk, k.shape(), k)?,
                tensor(dv, v.shape(), v)?,
            ))
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => run::<f32>(self, q, k, v, dout)?,
            _ => run::<f64>(self, q, k, v, dout)?,
        };
        Ok((
            q.track_op().then_some(dq),
            k.track_op().then_some(dk),
            v.track_op().then_some(dv),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Target-token log-probabilities

/// `log softmax(logits / temperature)[target]`: logits `[.., vocab]`, targets `[..]` u32 (in
/// range) → `[..]`.
pub(crate) fn token_logprobs(
    logits: &Tensor,
    targets: &Tensor,
    temperature: f64,
) -> candle_core::Result<Tensor> {
    logits.contiguous()?.apply_op2(
        &targets.to_dtype(DType::U32)?.contiguous()?,
        TokenLogprobs { temperature },
    )
}

struct TokenLogprobs {
    temperature: f64,
}

impl TokenLogprobs {
    /// `x = logits / T` of one row (the row itself when T = 1, as the spelled-out form).
    fn scaled<T: Real>(&self, row: &[T], x: &mut Vec<T>) {
        x.clear();
        if self.temperature == 1.0 {
            x.extend_from_slice(row);
        } else {
            let t = T::from(self.temperature).expect("temperature");
            x.extend(row.iter().map(|&v| v / t));
        }
    }

    fn fwd<T: Real>(&self, logits: &[T], targets: &[u32]) -> Vec<T> {
        let v = logits.len() / targets.len().max(1);
        let mut out = vec![T::zero(); targets.len()];
        let min_len = rows_per_task(targets.len(), v);
        out.par_iter_mut()
            .with_min_len(min_len)
            .zip(logits.par_chunks(v).zip(targets.par_iter()))
            .for_each_init(Vec::new, |x, (o, (row, &t))| {
                self.scaled(row, x);
                let xt = x[t as usize];
                let m = row_max(x);
                let lse = exp_shifted(x, m).ln();
                *o = (xt - m) - lse;
            });
        out
    }

    /// d logits = g / T * (onehot(target) − softmax(logits / T)).
    fn bwd<T: Real>(&self, logits: &[T], targets: &[u32], g: &[T]) -> Vec<T> {
        let v = logits.len() / targets.len().max(1);
        let inv_t = T::one() / T::from(self.temperature).expect("temperature");
        let mut dl = vec![T::zero(); logits.len()];
        let min_len = rows_per_task(targets.len(), v);
        dl.par_chunks_mut(v)
            .with_min_len(min_len)
            .zip(
                logits
                    .par_chunks(v)
                    .zip(targets.par_iter().zip(g.par_iter())),
            )
            .for_each_init(Vec::new, |x, (dr, (row, (&t, &gn)))| {
                self.scaled(row, x);
                let m = row_max(x);
                dr.copy_from_slice(x);
                let sum = exp_shifted(dr, m);
                let k = gn * inv_t;
                let ks = k / sum;
                for d in dr.iter_mut() {
                    *d = -(*d * ks);
                }
                dr[t as usize] += k;
            });
        dl
    }
}

impl CustomOp2 for TokenLogprobs {
    fn name(&self) -> &'static str {
        "metis-token-logprobs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.name();
        let vocab = *l1
            .dims()
            .last()
            .ok_or_else(|| err(n, "logits are a scalar"))?;
        let rows = l1.shape().elem_count() / vocab.max(1);
        if l2.dims() != &l1.dims()[..l1.dims().len() - 1] {
            return Err(err(
                n,
                format!("targets {:?} for logits {:?}", l2.dims(), l1.dims()),
            ));
        }
        let targets = match s2 {
            CpuStorage::U32(t) => {
                let (a, b) = l2
                    .contiguous_offsets()
                    .ok_or_else(|| err(n, "targets must be contiguous"))?;
                &t[a..b]
            }
            _ => return Err(err(n, "targets must be u32")),
        };
        if targets.len() != rows || targets.iter().any(|&t| t as usize >= vocab) {
            return Err(err(
                n,
                format!("{} targets for {rows} rows of {vocab}", targets.len()),
            ));
        }
        let out = per_float!(n, s1, T => self.fwd(contiguous::<T>(n, s1, l1)?, targets));
        Ok((out, l2.shape().clone()))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = self.name();
        let t = targets.flatten_all()?.to_vec1::<u32>()?;
        let dl = match logits.dtype() {
            DType::F32 => {
                let d = with_data::<f32, _, 2>(n, [logits, g], |[l, gs]| self.bwd(l, &t, gs))?;
                tensor(d, logits.shape(), logits)?
            }
            _ => {
                let d = with_data::<f64, _, 2>(n, [logits, g], |[l, gs]| self.bwd(l, &t, gs))?;
                tensor(d, logits.shape(), logits)?
            }
        };
        Ok((Some(dl), None))
    }
}
