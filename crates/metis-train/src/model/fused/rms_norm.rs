//! RMSNorm (also per head) and its backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{axpy, contiguous, err, rows_per_task, tensor, with_data, Real};

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
