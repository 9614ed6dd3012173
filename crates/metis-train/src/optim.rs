//! AdamW with fp32 state, global gradient-norm clipping and gradient accumulation.
//!
//! [`AdamW`] follows `torch.optim.AdamW` (single-tensor path) exactly:
//!
//! ```text
//! step += 1
//! p  = p * (1 - lr * weight_decay)                 # decoupled decay (skipped for no-decay params)
//! m  = m + (g - m) * (1 - beta1)                   # torch lerp_
//! v  = v * beta2 + (1 - beta2) * g * g
//! denom = sqrt(v) / sqrt(1 - beta2^step) + eps     # eps outside the sqrt
//! p  = p - (lr / (1 - beta1^step)) * (m / denom)
//! ```
//!
//! The moments are f32 (f64 for f64 parameters). Parameters stored in bf16/f16 get an f32
//! master copy that the update is applied to (then rounded into the Var), so small updates are
//! not lost. [`AdamW::save`] / [`AdamW::load`] write the step, the hyper-parameters and every
//! moment (and master copy) to one safetensors file, so a resumed run is bit-identical.
//!
//! Gradients travel as [`Grads`] (name → tensor, the names of
//! [`crate::model::TrainModel::trainable`]): [`Grads::from_backward`] picks them out of a
//! candle `GradStore` ([`Grads::add_backward`] sums several, one per layer with activation
//! checkpointing), [`GradAccumulator`] sums micro-batches, [`clip_grad_norm`] clips in
//! place and returns the pre-clip norm as `torch.nn.utils.clip_grad_norm_`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::{acc_dtype, Result, TrainError};

/// Gradients by parameter name.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    map: BTreeMap<String, Tensor>,
}

impl Grads {
    /// The gradients of `params` in a backward result; parameters without a gradient (not
    /// reached by the loss) are absent.
    pub fn from_backward(store: &GradStore, params: &[(String, Var)]) -> Self {
        let map = params
            .iter()
            .filter_map(|(n, v)| store.get(v.as_tensor()).map(|g| (n.clone(), g.clone())))
            .collect();
        Self { map }
    }

    /// Add the gradients of `params` in a backward result to those held, in the gradients'
    /// own dtype (as one backward sums a parameter's uses): how the per-layer backward passes
    /// of activation checkpointing ([`crate::model::TrainModel::backward_checkpointed`])
    /// assemble one gradient, a tied embedding getting its head and embedding shares.
    pub fn add_backward(&mut self, store: &GradStore, params: &[(String, Var)]) -> Result<()> {
        for (name, var) in params {
            let Some(g) = store.get(var.as_tensor()) else {
                continue;
            };
            let sum = match self.map.remove(name) {
                Some(s) => (s + g)?,
                None => g.clone(),
            };
            self.map.insert(name.clone(), sum);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, grad: Tensor) {
        self.map.insert(name.into(), grad);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Multiply every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.map.values_mut() {
            *g = (&*g * factor)?;
        }
        Ok(())
    }

    /// Global L2 norm over all gradients. Squares are summed in f32 along the last dimension
    /// and in f64 beyond (a plain f32 sum over millions of elements drifts by ~1e-5 relative;
    /// a full f64 copy of an embedding gradient would cost gigabytes on the GPU).
    pub fn global_norm(&self) -> Result<f64> {
        let mut sq = 0f64;
        for g in self.map.values() {
            let s = g.to_dtype(acc_dtype(g.dtype()))?.sqr()?;
            let s = if s.rank() >= 2 {
                s.sum(candle_core::D::Minus1)?
            } else {
                s
            };
            sq += s.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok(sq.sqrt())
    }
}

/// Clip the global L2 norm of `grads` to `max_norm` in place and return the norm before
/// clipping, as `torch.nn.utils.clip_grad_norm_`: `coef = min(1, max_norm / (norm + 1e-6))`,
/// every gradient multiplied by `coef`. A non-finite norm is returned unchanged and the
/// gradients are left as they are (the caller should skip the step).
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> Result<f64> {
    let norm = grads.global_norm()?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        grads.scale(coef)?;
    }
    Ok(norm)
}

/// Sums gradients over micro-batches (in f32), then scales once.
///
/// ```ignore
/// let mut acc = GradAccumulator::default();
/// for mb in micro_batches { acc.add(&loss(mb)?.backward()?, &params)?; }
/// let grads = acc.finish(1.0 / n_micro as f64)?;   // or 1.0 if each loss is pre-normalised
/// ```
#[derive(Debug, Default)]
pub struct GradAccumulator {
    sums: Grads,
    micro_batches: usize,
}

impl GradAccumulator {
    /// Add one backward result.
    pub fn add(&mut self, store: &GradStore, params: &[(String, Var)]) -> Result<()> {
        let g = Grads::from_backward(store, params);
        self.add_grads(&g)
    }

    /// Add already extracted gradients.
    pub fn add_grads(&mut self, g: &Grads) -> Result<()> {
        for (name, grad) in g.iter() {
            let grad = grad.to_dtype(acc_dtype(grad.dtype()))?;
            let sum = match self.sums.map.remove(name) {
                Some(s) => (s + grad)?,
                None => grad.copy()?,
            };
            self.sums.map.insert(name.clone(), sum);
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// Micro-batches added so far.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The summed gradients times `scale`; resets the accumulator.
    pub fn finish(&mut self, scale: f64) -> Result<Grads> {
        let mut g = std::mem::take(&mut self.sums);
        self.micro_batches = 0;
        if scale != 1.0 {
            g.scale(scale)?;
        }
        Ok(g)
    }
}

/// AdamW hyper-parameters (PyTorch defaults except weight decay 0.0 → set explicitly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// No weight decay on norm weights and biases (as HF Trainer's parameter groups).
    pub no_decay_norms_and_biases: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            no_decay_norms_and_biases: true,
        }
    }
}

/// Whether a parameter name is a norm weight or a bias (excluded from decay on request).
pub fn is_norm_or_bias(name: &str) -> bool {
    name.ends_with(".bias") || name.ends_with("norm.weight")
}

#[derive(Debug)]
struct ParamState {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
    /// f32 master copy for half-precision parameters.
    master: Option<Tensor>,
}

/// The scalars of one AdamW step.
struct StepConsts {
    /// `1 - lr * weight_decay`.
    decay: f64,
    beta1: f64,
    beta2: f64,
    /// `sqrt(1 - beta2^step)`.
    bc2_sqrt: f64,
    eps: f64,
    /// `lr / (1 - beta1^step)`.
    step_size: f64,
}

/// The module docs' update for one parameter in a single pass over its elements, in the
/// parameter's own precision and torch's operation order.
fn cpu_update<T>(p: &mut ParamState, g: &Tensor, k: &StepConsts, decay: bool) -> Result<()>
where
    T: candle_core::WithDType + num_traits::Float,
{
    let c = |x: f64| T::from(x).expect("finite constant");
    let (dec, one_m_b1, b2, one_m_b2) =
        (c(k.decay), c(1.0 - k.beta1), c(k.beta2), c(1.0 - k.beta2));
    let (bc2, eps, neg_step) = (c(k.bc2_sqrt), c(k.eps), c(-k.step_size));
    let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<T>());
    let (w, g) = (flat(p.var.as_tensor())?, flat(g)?);
    let (mut m, mut v) = (flat(&p.m)?, flat(&p.v)?);
    let dec = if decay { dec } else { T::one() };
    let mut out = w;
    // Zipped slices (no index checks), so that the loop vectorises.
    for (((wi, &gi), mi), vi) in out.iter_mut().zip(&g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let w_dec = if decay { *wi * dec } else { *wi };
        *mi = *mi + (gi - *mi) * one_m_b1;
        *vi = *vi * b2 + gi * gi * one_m_b2;
        let denom = vi.sqrt() / bc2 + eps;
        *wi = w_dec + *mi / denom * neg_step;
    }
    let shape = p.var.as_tensor().shape().clone();
    let dev = p.var.as_tensor().device().clone();
    p.m = Tensor::from_vec(m, shape.clone(), &dev)?;
    p.v = Tensor::from_vec(v, shape.clone(), &dev)?;
    p.var.set(&Tensor::from_vec(out, shape, &dev)?)?;
    Ok(())
}

/// AdamW over named Vars (see the module docs).
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<ParamState>,
    step: u64,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let params = params
            .into_iter()
            .map(|(name, var)| {
                if !seen.insert(name.clone()) {
                    return Err(TrainError::InvalidArgument(format!(
                        "parameter {name} given twice"
                    )));
                }
                let t = var.as_tensor();
                let sd = acc_dtype(t.dtype());
                let master = if t.dtype() == sd {
                    None
                } else {
                    Some(t.to_dtype(sd)?.detach())
                };
                Ok(ParamState {
                    decay: !(cfg.no_decay_norms_and_biases && is_norm_or_bias(&name)),
                    m: Tensor::zeros(t.shape(), sd, t.device())?,
                    v: Tensor::zeros(t.shape(), sd, t.device())?,
                    name,
                    var,
                    master,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            params,
            step: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    pub fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The parameter names, in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.name.as_str()).collect()
    }

    /// One AdamW step. Parameters absent from `grads` are left untouched (their moments too),
    /// like torch parameters whose `.grad` is None; the step counter is shared (torch keeps it
    /// per parameter, identical whenever every parameter gets a gradient every step).
    pub fn step(&mut self, grads: &Grads) -> Result<()> {
        self.step += 1;
        let c = &self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = c.lr / bc1;
        let consts = StepConsts {
            decay: 1.0 - c.lr * c.weight_decay,
            beta1: c.beta1,
            beta2: c.beta2,
            bc2_sqrt,
            eps: c.eps,
            step_size,
        };
        // One pass per parameter on the CPU (f32/f64 without a master copy), the parameters
        // in parallel; the candle-op form below otherwise.
        let fast: Vec<bool> = self
            .params
            .iter()
            .map(|p| {
                let w = p.var.as_tensor();
                w.device().is_cpu()
                    && p.master.is_none()
                    && matches!(w.dtype(), DType::F32 | DType::F64)
                    && p.m.dtype() == w.dtype()
                    && grads.get(&p.name).is_some_and(|g| g.dims() == w.dims())
            })
            .collect();
        {
            use rayon::prelude::*;
            self.params
                .par_iter_mut()
                .zip(fast.par_iter())
                .filter(|(_, &f)| f)
                .map(|(p, _)| {
                    let g = grads.get(&p.name).expect("checked above");
                    let decay = p.decay && c.weight_decay != 0.0;
                    match p.m.dtype() {
                        DType::F32 => cpu_update::<f32>(p, g, &consts, decay),
                        _ => cpu_update::<f64>(p, g, &consts, decay),
                    }
                })
                .collect::<Result<Vec<()>>>()?;
        }
        for (p, _) in self.params.iter_mut().zip(&fast).filter(|(_, &f)| !f) {
            let Some(g) = grads.get(&p.name) else {
                continue;
            };
            let var_t = p.var.as_tensor();
            if g.dims() != var_t.dims() {
                return Err(TrainError::Shape {
                    name: format!("gradient of {}", p.name),
                    expected: var_t.dims().to_vec(),
                    got: g.dims().to_vec(),
                });
            }
            let sd = p.m.dtype();
            let g = g.to_dtype(sd)?.detach();
            let mut w = match &p.master {
                Some(m) => m.clone(),
                None => var_t.detach(),
            };
            if p.decay && c.weight_decay != 0.0 {
                w = (w * (1.0 - c.lr * c.weight_decay))?;
            }
            // m.lerp_(g, 1 - beta1) = m + (1 - beta1) * (g - m)
            p.m = (&p.m + ((&g - &p.m)? * (1.0 - c.beta1))?)?;
            // v.mul_(beta2).addcmul_(g, g, value = 1 - beta2)
            p.v = ((&p.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((p.v.sqrt()? / bc2_sqrt)? + c.eps)?;
            let w = (w + ((&p.m / denom)? * (-step_size))?)?;
            match &mut p.master {
                Some(m) => {
                    p.var.set(&w.to_dtype(var_t.dtype())?)?;
                    *m = w;
                }
                None => p.var.set(&w)?,
            }
        }
        Ok(())
    }

    /// The state as named tensors: `{name}.exp_avg`, `{name}.exp_avg_sq` and (half-precision
    /// parameters) `{name}.master`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for p in &self.params {
            out.push((format!("{}.exp_avg", p.name), p.m.clone()));
            out.push((format!("{}.exp_avg_sq", p.name), p.v.clone()));
            if let Some(m) = &p.master {
                out.push((format!("{}.master", p.name), m.clone()));
            }
        }
        out
    }

    /// Metadata stored beside the state tensors: step and hyper-parameters.
    fn metadata(&self) -> HashMap<String, String> {
        let mut md = HashMap::new();
        md.insert("format".into(), "metis-adamw".into());
        md.insert("step".into(), self.step.to_string());
        md.insert(
            "config".into(),
            serde_json::to_string(&self.cfg).expect("config serialises"),
        );
        md
    }

    /// Write the state to `path` (safetensors, atomically: temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::write_safetensors(path, &self.state_tensors(), self.metadata())
    }

    /// Restore the state written by [`AdamW::save`] (step, hyper-parameters, moments, master
    /// copies). The parameters must be the same names and shapes.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self
            .params
            .first()
            .map(|p| p.var.device().clone())
            .unwrap_or(Device::Cpu);
        let (mut tensors, md) = crate::checkpoint::read_safetensors(path, &device)?;
        let step = md
            .get("step")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| TrainError::format(path, "metadata: missing step"))?;
        let cfg: AdamWConfig = md
            .get("config")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| TrainError::format(path, "metadata: missing or bad config"))?;
        let mut take = |name: String, like: &Tensor| -> Result<Tensor> {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| TrainError::MissingTensor {
                    path: path.to_path_buf(),
                    name: name.clone(),
                })?;
            if t.dims() != like.dims() || t.dtype() != like.dtype() {
                return Err(TrainError::format(
                    path,
                    format!(
                        "{name}: expected {:?} {:?}, got {:?} {:?}",
                        like.dtype(),
                        like.dims(),
                        t.dtype(),
                        t.dims()
                    ),
                ));
            }
            Ok(t)
        };
        let mut new = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let m = take(format!("{}.exp_avg", p.name), &p.m)?;
            let v = take(format!("{}.exp_avg_sq", p.name), &p.v)?;
            let master = match &p.master {
                Some(ms) => Some(take(format!("{}.master", p.name), ms)?),
                None => None,
            };
            new.push((m, v, master));
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(TrainError::format(
                path,
                format!("state for unknown parameter tensor {extra}"),
            ));
        }
        for (p, (m, v, master)) in self.params.iter_mut().zip(new) {
            p.m = m;
            p.v = v;
            p.master = master;
        }
        self.step = step;
        self.cfg = cfg;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed form of two AdamW steps on a scalar.
    #[test]
    fn matches_closed_form() {
        let var = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            no_decay_norms_and_biases: false,
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], cfg.clone()).unwrap();
        let gs = [[0.5f64, -1.0], [0.25, 2.0]];
        let mut p = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for (t, g) in gs.iter().enumerate() {
            let mut grads = Grads::default();
            grads.insert("w", Tensor::new(&g[..], &Device::Cpu).unwrap());
            opt.step(&grads).unwrap();
            let t = (t + 1) as i32;
            for i in 0..2 {
                p[i] *= 1.0 - cfg.lr * cfg.weight_decay;
                m[i] = m[i] + (g[i] - m[i]) * (1.0 - cfg.beta1);
                v[i] = v[i] * cfg.beta2 + (1.0 - cfg.beta2) * g[i] * g[i];
                let denom = v[i].sqrt() / (1.0 - cfg.beta2.powi(t)).sqrt() + cfg.eps;
                p[i] -= cfg.lr / (1.0 - cfg.beta1.powi(t)) * m[i] / denom;
            }
        }
        let got: Vec<f64> = var.as_tensor().to_vec1().unwrap();
        for i in 0..2 {
            assert!((got[i] - p[i]).abs() < 1e-12, "{got:?} vs {p:?}");
        }
    }

    #[test]
    fn clip_returns_preclip_norm() {
        let mut g = Grads::default();
        g.insert("a", Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap());
        g.insert("b", Tensor::new(&[4.0f32], &Device::Cpu).unwrap());
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        assert!((g.global_norm().unwrap() - 1.0).abs() < 1e-5);
    }
}
