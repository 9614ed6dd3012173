//! SwiGLU, `silu(gate) * up`, and its backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous, err, rows_per_task, tensor, with_data, Real};

/// `silu(gate) * up` elementwise (the Llama MLP's activation), silu(x) = x / (1 + exp(-x)).
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

pub(super) struct SwiGlu;

impl SwiGlu {
    pub(super) fn fwd<T: Real>(gate: &[T], up: &[T]) -> Vec<T> {
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
    pub(super) fn bwd<T: Real>(gate: &[T], up: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
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
