//! LoRA adapters in the PEFT layout.
//!
//! A targeted linear layer `y = x W^T (+ b)` (W frozen, a plain tensor) becomes
//! `y = x W^T (+ b) + scaling * B(A(dropout(x)))` with `A` [r, in] and `B` [out, r] trainable
//! [`candle_core::Var`]s, `scaling = alpha / r`, as `peft.tuners.lora.Linear`:
//!
//! * `A` is drawn like `nn.init.kaiming_uniform_(a=sqrt(5))`, i.e. U(-1/sqrt(in), 1/sqrt(in)),
//!   from a seeded generator (same seed → same adapter); `B` starts at zero;
//! * the adapter computes in f32 (f64 for an f64 model) whatever the base dtype: activations are
//!   cast to the adapter dtype and the adapter output back to the base dtype (PEFT casts `x` to
//!   `lora_A.weight.dtype`);
//! * dropout (probability `dropout`) applies to the adapter's input only and only in training
//!   forwards; its masks come from a counter-based generator keyed by (seed, forward counter,
//!   layer, module), so a run is reproducible and resumable from the counter alone
//!   ([`crate::model::TrainModel::rng_state`]).
//!
//! Names follow PEFT's `adapter_model.safetensors`:
//! `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` ([r, in]) and
//! `….lora_B.weight` ([out, r]).

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::{Result, TrainError};

pub use crate::rng::SplitMix64;

/// The HF short names of the linear layers that can carry an adapter.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// LoRA hyper-parameters (the PEFT `LoraConfig` subset Metis supports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r.
    pub r: usize,
    /// `lora_alpha`; scaling = alpha / r.
    pub alpha: f64,
    /// Dropout probability on the adapter input (training forwards only).
    pub dropout: f64,
    /// Target modules by HF short name (see [`LORA_TARGETS`]).
    pub target_modules: Vec<String>,
    /// Seed of the A initialisation (the dropout stream uses the model seed).
    pub init_seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
            init_seed: 0,
        }
    }
}

impl LoraConfig {
    /// The defaults at rank `r`, with alpha `2r` (the default's alpha/rank ratio, so the
    /// scaling stays 2 whatever the rank).
    pub fn with_rank(r: usize) -> Self {
        Self {
            r,
            alpha: 2.0 * r as f64,
            ..Self::default()
        }
    }

    /// `alpha / r`.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// Whether `module` (an HF short name) is targeted.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|m| m == module)
    }

    /// Check rank, dropout and target names.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(TrainError::InvalidArgument(
                "LoRA rank must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainError::InvalidArgument(format!(
                "LoRA dropout {} must be in [0, 1)",
                self.dropout
            )));
        }
        if self.target_modules.is_empty() {
            return Err(TrainError::InvalidArgument(
                "LoRA needs at least one target module".into(),
            ));
        }
        for m in &self.target_modules {
            if !LORA_TARGETS.contains(&m.as_str()) {
                return Err(TrainError::InvalidArgument(format!(
                    "unsupported LoRA target module {m:?} (supported: {})",
                    LORA_TARGETS.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// The PEFT name of a LoRA matrix: `prefix` is the HF module path
/// (`model.layers.3.self_attn.q_proj`), `which` is `"A"` or `"B"`.
pub fn peft_name(prefix: &str, which: &str) -> String {
    format!("base_model.model.{prefix}.lora_{which}.weight")
}

/// One adapter on one linear layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// [r, in]
    pub a: Var,
    /// [out, r]
    pub b: Var,
    pub scaling: f64,
    pub dropout: f64,
    /// Index of this module in the model (layer * 7 + module), keys the dropout stream.
    pub(crate) stream: u64,
}

impl LoraAdapter {
    /// A fresh adapter: A kaiming-uniform from `seed`/`stream`, B zero, in `dtype`.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        cfg: &LoraConfig,
        stream: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let mut rng = SplitMix64::new(mix(&[cfg.init_seed, 0x4c6f_5241, stream]));
        let a: Vec<f64> = (0..cfg.r * in_dim)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) * bound)
            .collect();
        let a = Tensor::from_vec(a, (cfg.r, in_dim), device)?.to_dtype(dtype)?;
        Ok(Self {
            a: Var::from_tensor(&a)?,
            b: Var::zeros((out_dim, cfg.r), dtype, device)?,
            scaling: cfg.scaling(),
            dropout: cfg.dropout,
            stream,
        })
    }

    /// The adapter's contribution for x [rows, in] (any dtype), returned in x's dtype.
    /// `dropout_key` is Some(key) for a training forward with dropout.
    pub(crate) fn forward(&self, x: &Tensor, dropout_key: Option<u64>) -> Result<Tensor> {
        let dtype = x.dtype();
        let a = self.a.as_tensor();
        let mut h = x.to_dtype(a.dtype())?;
        if let (Some(key), true) = (dropout_key, self.dropout > 0.0) {
            let mask = dropout_mask(
                h.dims(),
                self.dropout,
                mix(&[key, self.stream]),
                a.dtype(),
                h.device(),
            )?;
            h = (h * mask)?;
        }
        let h = h.matmul(&a.t()?)?; // [rows, r]
        let y = (h.matmul(&self.b.as_tensor().t()?)? * self.scaling)?; // [rows, out]
        Ok(y.to_dtype(dtype)?)
    }

    /// `scaling * B @ A`, [out, in], in the adapter dtype.
    pub fn delta(&self) -> Result<Tensor> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scaling)?)
    }
}

/// Inverted-dropout mask: each element 0 with probability p, else 1/(1-p).
fn dropout_mask(
    dims: &[usize],
    p: f64,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let keep = 1.0 / (1.0 - p);
    let mut rng = SplitMix64::new(seed);
    let v: Vec<f32> = (0..n)
        .map(|_| if rng.next_f64() < p { 0.0 } else { keep as f32 })
        .collect();
    Ok(Tensor::from_vec(v, dims, device)?.to_dtype(dtype)?)
}

/// Mix several words into one seed (splitmix64 finaliser chain).
pub(crate) fn mix(words: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &w in words {
        h = SplitMix64::new(h ^ w).next_u64();
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_bounds_and_determinism() {
        let cfg = LoraConfig {
            r: 4,
            ..Default::default()
        };
        let a1 = LoraAdapter::new(64, 32, &cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let a2 = LoraAdapter::new(64, 32, &cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let v1: Vec<f32> = a1.a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let v2: Vec<f32> = a2.a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v1, v2);
        assert!(v1.iter().all(|x| x.abs() <= 0.125));
        assert!(v1.iter().any(|x| x.abs() > 0.1));
        let b: Vec<f32> = a1.b.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert!(b.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn dropout_keeps_expectation() {
        let m = dropout_mask(&[10000], 0.25, 7, DType::F32, &Device::Cpu).unwrap();
        let v: Vec<f32> = m.to_vec1().unwrap();
        let zeros = v.iter().filter(|&&x| x == 0.0).count();
        assert!((2300..2700).contains(&zeros), "{zeros}");
    }
}
