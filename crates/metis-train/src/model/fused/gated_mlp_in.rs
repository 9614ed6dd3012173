//! The gated MLP input, `silu(x Wgᵀ) * (x Wuᵀ)`, and its backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};

use super::linear::Linear;
use super::strided::{gemm_into, View};
use super::swiglu::SwiGlu;

use super::{contiguous, err, tensor, with_data, Real};

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
