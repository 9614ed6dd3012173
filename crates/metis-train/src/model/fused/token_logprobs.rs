//! Target-token log-probabilities, `log softmax(logits / T)[target]`, and their backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous, err, exp_shifted, row_max, rows_per_task, tensor, with_data, Real};

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
