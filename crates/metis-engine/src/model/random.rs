//! Random-initialised models of named public shapes, for speed and memory measurements
//! (`metis bench`) where the weights' values do not matter, only their shapes: a
//! Llama-3.1-8B-shaped model runs without downloading one.
//!
//! [`ModelShape`] names a shape and gives its [`ModelConfig`]; [`random_weights`] draws every
//! tensor the parameter table lists for it directly on the device, in the compute dtype
//! (matrices N(0, 0.02), norms ones, biases zeros), so an 8B model never passes through host
//! memory or f32.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use super::params::{ModelParams, ParamRole};
use super::{Model, Result};
use crate::config::ModelConfig;

/// A named model shape (architecture and sizes of a public checkpoint, random values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelShape {
    /// Llama-3.1-8B: 32 layers, hidden 4096, GQA 32/8, vocab 128256, untied head.
    Llama31_8B,
    /// Llama-3.2-1B: 16 layers, hidden 2048, GQA 32/8, vocab 128256, tied head.
    Llama32_1B,
    /// A two-layer Llama for tests and smoke runs (hidden 64, vocab 512).
    Tiny,
}

impl ModelShape {
    pub const ALL: [ModelShape; 3] = [
        ModelShape::Llama31_8B,
        ModelShape::Llama32_1B,
        ModelShape::Tiny,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelShape::Llama31_8B => "llama-3.1-8b",
            ModelShape::Llama32_1B => "llama-3.2-1b",
            ModelShape::Tiny => "tiny",
        }
    }

    /// The shape's `config.json` (a Llama-3 config with llama3 rope scaling).
    pub fn config_json(self) -> serde_json::Value {
        // (hidden, intermediate, layers, heads, kv heads, vocab, tied)
        let (hidden, inter, layers, heads, kv, vocab, tied) = match self {
            ModelShape::Llama31_8B => (4096, 14336, 32, 32, 8, 128256, false),
            ModelShape::Llama32_1B => (2048, 8192, 16, 32, 8, 128256, true),
            ModelShape::Tiny => (64, 128, 2, 4, 2, 512, false),
        };
        // Llama-3's <|begin_of_text|> and <|eot_id|>; the tiny vocabulary's first ids.
        let (bos, eos) = if vocab > 128009 {
            (128000, 128009)
        } else {
            (1, 2)
        };
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": hidden / heads,
            "rms_norm_eps": 1e-5,
            "vocab_size": vocab,
            "max_position_embeddings": 131072,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192
            },
            "tie_word_embeddings": tied,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "bfloat16",
        })
    }

    pub fn config(self) -> Result<ModelConfig> {
        ModelConfig::from_json_str(&self.config_json().to_string(), self.name())
    }
}

impl fmt::Display for ModelShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelShape {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|shape| shape.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown model shape {s:?} ({})", names.join(", "))
            })
    }
}

/// Every tensor of `config`'s parameter table by HF name, drawn on `device` in `dtype`.
pub fn random_weights(
    config: &ModelConfig,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for spec in ModelParams::new(config).iter() {
        let shape = spec.shape.as_slice();
        let t = match spec.role {
            ParamRole::Norm => Tensor::ones(shape, dtype, device)?,
            ParamRole::LinearBias(_) => Tensor::zeros(shape, dtype, device)?,
            ParamRole::Embedding | ParamRole::LinearWeight(_) | ParamRole::OutputHead => {
                // One tensor at a time through f32: the largest transient is one matrix.
                Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype)?
            }
        };
        tensors.insert(spec.hf_name.clone(), t);
    }
    Ok(tensors)
}

impl Model {
    /// A model of `shape` with random weights on `device`, computing in `dtype` (None: the
    /// device's default, else f32: [`crate::device::compute_dtype`] without a checkpoint).
    pub fn random(shape: ModelShape, dtype: Option<DType>, device: &Device) -> Result<Model> {
        let dtype = crate::device::compute_dtype(dtype, device, None);
        let config = shape.config()?;
        let weights = random_weights(&config, dtype, device)?;
        Model::from_tensors(config, weights, dtype, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_by_name_and_have_their_public_sizes() {
        for shape in ModelShape::ALL {
            assert_eq!(shape.name().parse::<ModelShape>().unwrap(), shape);
            shape.config().unwrap();
        }
        let err = "llama-70b".parse::<ModelShape>().unwrap_err();
        assert!(err.contains("llama-3.1-8b, llama-3.2-1b, tiny"), "{err}");
        let n = |shape: ModelShape| -> usize {
            let config = shape.config().unwrap();
            ModelParams::new(&config)
                .iter()
                .map(|p| p.shape.iter().product::<usize>())
                .sum()
        };
        // The published parameter counts: 8,030,261,248 and 1,235,814,400.
        assert_eq!(n(ModelShape::Llama31_8B), 8_030_261_248);
        assert_eq!(n(ModelShape::Llama32_1B), 1_235_814_400);
    }

    #[test]
    fn a_random_model_runs_and_its_weights_are_not_degenerate() {
        let model = Model::random(ModelShape::Tiny, None, &Device::Cpu).unwrap();
        let ids = Tensor::new(&[[1u32, 5, 9, 200]], &Device::Cpu).unwrap();
        let mut cache = model.new_cache(1);
        let logits = model.forward_last(&ids, &mut cache).unwrap();
        let v = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v.len(), 512);
        assert!(v.iter().all(|x| x.is_finite()));
        let spread =
            v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 1e-3, "logits all equal: {spread}");
    }
}
