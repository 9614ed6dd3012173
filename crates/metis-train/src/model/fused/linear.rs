//! Linear layers, `x Wᵀ`, and their backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::strided::{gemm_into, View};

use super::{contiguous, err, tensor, with_data, Real};

/// `x Wᵀ`: x `[.., in]`, W `[out, in]` (as HF stores it) → `[.., out]` (leading dims kept, so
/// that no reshape node sits between layers).
///
/// As one node its backward writes dW in W's own layout; as candle's `matmul(x, w.t())` it
/// would be a matmul and a transpose node, with dW accumulated twice, once strided.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

pub(super) struct Linear;

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
    pub(super) fn fwd<T: Real>(
        x: &[T],
        w: &[T],
        (rows, inp, out): (usize, usize, usize),
    ) -> Vec<T> {
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
