//! Model configuration parsed from a Hugging Face `config.json`.
//!
//! Two key layouts are accepted for the rotary embedding parameters:
//!
//! * the layout of the released Llama-3.1 / Qwen2 checkpoints: top-level `rope_theta` plus an
//!   optional `rope_scaling` object (`rope_type` or legacy `type`, `factor`, …);
//! * the transformers 5 layout: a `rope_parameters` object with `rope_type`, `rope_theta` and
//!   the scaling fields inside it.
//!
//! Likewise the dtype may be given as `torch_dtype` (released checkpoints) or `dtype`
//! (transformers 5). Every error names the file and the offending field.

use std::path::Path;

use candle_core::DType;
use serde_json::{Map, Value};

use crate::model::EngineError;

/// The supported decoder-only architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3.x (`LlamaForCausalLM`): optional attention/MLP bias, GQA, `llama3` rope scaling.
    Llama,
    /// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): q/k/v projections always carry a bias.
    Qwen2,
    /// Qwen3 (`Qwen3ForCausalLM`): per-head RMSNorm on q and k before rope, no bias by default.
    Qwen3,
}

impl Architecture {
    pub(crate) fn from_model_type(s: &str) -> Option<Self> {
        match s {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    fn from_hf_class(s: &str) -> Option<Self> {
        match s {
            "LlamaForCausalLM" => Some(Self::Llama),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "Qwen3ForCausalLM" => Some(Self::Qwen3),
            _ => None,
        }
    }
}

/// Frequency scaling applied on top of the default rotary inverse frequencies.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// `linear`: every inverse frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.x `llama3` scaling (low frequencies divided by `factor`, a smooth band between).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Per-dimension divisors of the default inverse frequencies ([head_dim / 2] values), as
    /// llama.cpp stores Llama-3 scaling in GGUF files (`rope_freqs.weight`).
    FreqFactors { factors: Vec<f32> },
}

/// Rotary embedding parameters, normalised from either config layout.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// cos and sin of `position * inv_freq[i]` for every position, row-major
/// `[positions, inv_freq.len()]`, the angles in f32 as transformers computes them: the one rope
/// table builder of inference and training.
pub fn rope_cos_sin(
    inv_freq: &[f32],
    positions: impl IntoIterator<Item = usize>,
) -> (Vec<f32>, Vec<f32>) {
    let positions = positions.into_iter();
    let n = positions.size_hint().0 * inv_freq.len();
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for p in positions {
        let p = p as f32;
        for &f in inv_freq {
            let angle = f * p;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

impl RopeConfig {
    /// The rope inverse frequencies, [head_dim / 2], computed in f32 in transformers' operation
    /// order (`_compute_default_rope_parameters`, `_compute_llama3_parameters`), so that
    /// inference and training use bit-identical angles.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let cfg = self;
        let base = cfg.theta as f32;
        let dim = head_dim as f32;
        // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim))
        let default: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0f32 / base.powf(i as f32 / dim))
            .collect();
        let inv_freq = match cfg.scaling {
            RopeScaling::None => default,
            RopeScaling::Linear { factor } => {
                let factor = factor as f32;
                default.iter().map(|&f| f / factor).collect()
            }
            RopeScaling::FreqFactors { ref factors } => default
                .iter()
                .zip(factors.iter().chain(std::iter::repeat(&1.0f32)))
                .map(|(&f, &d)| f / d)
                .collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let factor = factor as f32;
                let low = low_freq_factor as f32;
                let high = high_freq_factor as f32;
                let old_ctx = original_max_position_embeddings as f32;
                // Python floats (double) compared against f32 tensors.
                let low_freq_wavelen =
                    (original_max_position_embeddings as f64 / low_freq_factor) as f32;
                let high_freq_wavelen =
                    (original_max_position_embeddings as f64 / high_freq_factor) as f32;
                let two_pi = std::f64::consts::PI as f32 * 2.0;
                default
                    .iter()
                    .map(|&f| {
                        // `2 * math.pi / inv_freq` is `inv_freq.reciprocal() * (2 * pi)` in torch.
                        let wavelen = (1.0f32 / f) * two_pi;
                        let scaled = if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            f
                        };
                        let smooth = ((1.0f32 / wavelen) * old_ctx - low) / (high - low);
                        let smoothed = (1.0f32 - smooth) * scaled / factor + smooth * scaled;
                        let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen; // wavelen is finite
                        if medium {
                            smoothed
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        };
        inv_freq
    }
}

/// The subset of a Hugging Face `config.json` that the engine needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    /// `model_type` as written (or derived from `architectures`).
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (always true for Qwen2).
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on gate/up/down projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (`eos_token_id` may be an int or a list).
    pub eos_token_ids: Vec<u32>,
    pub rope: RopeConfig,
    /// `torch_dtype` / `dtype`, mapped to a candle dtype, if present.
    pub dtype: Option<DType>,
}

type Obj = Map<String, Value>;

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, field: &str, detail: impl Into<String>) -> EngineError {
        EngineError::Config {
            file: self.file.to_string(),
            field: field.to_string(),
            detail: detail.into(),
        }
    }

    /// A present, non-null value.
    fn get<'v>(&self, obj: &'v Obj, field: &str) -> Option<&'v Value> {
        obj.get(field).filter(|v| !v.is_null())
    }

    fn opt_usize(&self, obj: &Obj, field: &str) -> Result<Option<usize>, EngineError> {
        match self.get(obj, field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(field, format!("expected an integer, got {v}"))),
        }
    }

    fn usize(&self, obj: &Obj, field: &str) -> Result<usize, EngineError> {
        self.opt_usize(obj, field)?
            .ok_or_else(|| self.err(field, "missing (expected an integer)"))
    }

    fn opt_f64(&self, obj: &Obj, field: &str) -> Result<Option<f64>, EngineError> {
        match self.get(obj, field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, got {v}"))),
        }
    }

    fn opt_bool(&self, obj: &Obj, field: &str) -> Result<Option<bool>, EngineError> {
        match self.get(obj, field) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a boolean, got {v}"))),
        }
    }

    fn opt_str<'v>(&self, obj: &'v Obj, field: &str) -> Result<Option<&'v str>, EngineError> {
        match self.get(obj, field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a string, got {v}"))),
        }
    }

    fn opt_obj<'v>(&self, obj: &'v Obj, field: &str) -> Result<Option<&'v Obj>, EngineError> {
        match self.get(obj, field) {
            None => Ok(None),
            Some(v) => v
                .as_object()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected an object, got {v}"))),
        }
    }

    fn token_id(&self, v: &Value, field: &str) -> Result<u32, EngineError> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.err(field, format!("expected a token id, got {v}")))
    }

    /// Parse a rope scaling/parameters object (`prefix` is the field path used in errors).
    fn rope_scaling(&self, obj: &Obj, prefix: &str) -> Result<RopeScaling, EngineError> {
        let f = |name: &str| format!("{prefix}.{name}");
        let nonnull = |k: &'static str| obj.get(k).filter(|v| !v.is_null()).map(|v| (k, v));
        let kind = match nonnull("rope_type").or_else(|| nonnull("type")) {
            None => None,
            Some((k, v)) => Some(
                v.as_str()
                    .ok_or_else(|| self.err(&f(k), format!("expected a string, got {v}")))?,
            ),
        };
        let num = |name: &str| -> Result<f64, EngineError> {
            match obj.get(name).filter(|v| !v.is_null()) {
                None => Err(self.err(&f(name), "missing (expected a number)")),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| self.err(&f(name), format!("expected a number, got {v}"))),
            }
        };
        match kind.unwrap_or("default") {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor")?,
            }),
            "llama3" => {
                let omp = match obj.get("original_max_position_embeddings") {
                    Some(v) => v.as_u64().ok_or_else(|| {
                        self.err(
                            &f("original_max_position_embeddings"),
                            format!("expected an integer, got {v}"),
                        )
                    })? as usize,
                    None => {
                        return Err(self.err(
                            &f("original_max_position_embeddings"),
                            "missing (expected an integer)",
                        ))
                    }
                };
                Ok(RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: omp,
                })
            }
            other => Err(self.err(
                &f("rope_type"),
                format!("unsupported rope type {other:?} (supported: default, linear, llama3)"),
            )),
        }
    }
}

fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "float32" | "torch.float32" | "fp32" => Some(DType::F32),
        "bfloat16" | "torch.bfloat16" | "bf16" => Some(DType::BF16),
        "float16" | "torch.float16" | "fp16" | "half" => Some(DType::F16),
        _ => None,
    }
}

impl ModelConfig {
    /// Read and parse `dir/config.json` (or any config file path).
    pub fn from_file(path: &Path) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parse the JSON text of a `config.json`; `file` is used in error messages.
    pub fn from_json_str(text: &str, file: &str) -> Result<Self, EngineError> {
        let r = Reader { file };
        let obj = &r.root_object(text)?;
        // The fields are read in this order so that, of several faults, the first reported
        // stays the same one.
        let (architecture, model_type) = r.architecture(obj)?;
        let shape = r.shape(obj)?;
        let rms_norm_eps = r.opt_f64(obj, "rms_norm_eps")?.unwrap_or(1e-6);
        let vocab_size = r.usize(obj, "vocab_size")?;
        let max_position_embeddings = r.opt_usize(obj, "max_position_embeddings")?.unwrap_or(2048);
        let tie_word_embeddings = r.opt_bool(obj, "tie_word_embeddings")?.unwrap_or(false);
        r.reject_unsupported_features(obj)?;
        let biases = r.biases(obj, architecture)?;
        let (bos_token_id, eos_token_ids) = r.special_tokens(obj)?;
        let rope = r.rope(obj)?;
        let dtype = r.dtype(obj)?;

        Ok(Self {
            architecture,
            model_type,
            hidden_size: shape.hidden_size,
            intermediate_size: shape.intermediate_size,
            num_hidden_layers: shape.num_hidden_layers,
            num_attention_heads: shape.num_attention_heads,
            num_key_value_heads: shape.num_key_value_heads,
            head_dim: shape.head_dim,
            rms_norm_eps,
            vocab_size,
            max_position_embeddings,
            tie_word_embeddings,
            qkv_bias: biases.qkv,
            o_bias: biases.o,
            mlp_bias: biases.mlp,
            bos_token_id,
            eos_token_ids,
            rope,
            dtype,
        })
    }

    /// Query heads per key/value head (GQA group size).
    pub fn n_rep(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Whether the architecture applies RMSNorm to each q/k head before rope (Qwen3), as its
    /// declaration in the parameter table says.
    pub fn has_qk_norm(&self) -> bool {
        crate::model::params::ArchitectureTensors::of(self.architecture).qk_norm
    }
}

/// The layer dimensions of a model, checked against each other: read from `config.json`
/// here and from GGUF metadata by `gguf::config_from_gguf`.
pub(crate) struct LayerShape {
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) num_key_value_heads: usize,
    pub(crate) head_dim: usize,
}

/// Which projections carry a bias.
struct Biases {
    qkv: bool,
    o: bool,
    mlp: bool,
}

/// The steps of [`ModelConfig::from_json_str`], each reading one group of fields.
impl Reader<'_> {
    fn root_object(&self, text: &str) -> Result<Obj, EngineError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| self.err("<json>", e.to_string()))?;
        match value {
            Value::Object(obj) => Ok(obj),
            _ => Err(self.err("<root>", "expected a JSON object")),
        }
    }

    /// The architecture and `model_type`, which may be absent when `architectures` names a
    /// supported class.
    fn architecture(&self, obj: &Obj) -> Result<(Architecture, String), EngineError> {
        let model_type = self.opt_str(obj, "model_type")?;
        let architecture = match model_type {
            Some(mt) => Architecture::from_model_type(mt).ok_or_else(|| {
                self.err(
                    "model_type",
                    format!("unsupported model type {mt:?} (supported: llama, qwen2, qwen3)"),
                )
            })?,
            None => self.architecture_from_classes(obj)?,
        };
        let model_type = model_type
            .map(str::to_string)
            .unwrap_or_else(|| format!("{architecture:?}").to_lowercase());
        Ok((architecture, model_type))
    }

    fn architecture_from_classes(&self, obj: &Obj) -> Result<Architecture, EngineError> {
        let archs = self
            .get(obj, "architectures")
            .and_then(Value::as_array)
            .ok_or_else(|| self.err("model_type", "missing (and no architectures list)"))?;
        archs
            .iter()
            .filter_map(Value::as_str)
            .find_map(Architecture::from_hf_class)
            .ok_or_else(|| {
                self.err(
                    "architectures",
                    format!("no supported architecture in {archs:?}"),
                )
            })
    }

    fn shape(&self, obj: &Obj) -> Result<LayerShape, EngineError> {
        let hidden_size = self.usize(obj, "hidden_size")?;
        let intermediate_size = self.usize(obj, "intermediate_size")?;
        let num_hidden_layers = self.usize(obj, "num_hidden_layers")?;
        let num_attention_heads = self.usize(obj, "num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(self.err("num_attention_heads", "must be positive"));
        }
        let num_key_value_heads = self
            .opt_usize(obj, "num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = self.head_dim(obj, hidden_size, num_attention_heads)?;
        Ok(LayerShape {
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
        })
    }

    /// `head_dim` as given, else derived from the hidden size; rope needs it even.
    fn head_dim(
        &self,
        obj: &Obj,
        hidden_size: usize,
        num_attention_heads: usize,
    ) -> Result<usize, EngineError> {
        let head_dim = match self.opt_usize(obj, "head_dim")? {
            Some(d) => d,
            None => {
                if !hidden_size.is_multiple_of(num_attention_heads) {
                    return Err(self.err(
                        "head_dim",
                        "missing and hidden_size is not a multiple of num_attention_heads",
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(self.err("head_dim", format!("{head_dim} must be even for rope")));
        }
        Ok(head_dim)
    }

    /// Fail on a config that asks for what the engine does not implement, rather than run it
    /// as something else.
    fn reject_unsupported_features(&self, obj: &Obj) -> Result<(), EngineError> {
        if let Some(act) = self.opt_str(obj, "hidden_act")? {
            if act != "silu" {
                return Err(self.err(
                    "hidden_act",
                    format!("unsupported activation {act:?} (only silu)"),
                ));
            }
        }
        if self.opt_bool(obj, "use_sliding_window")? == Some(true) {
            return Err(self.err(
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        Ok(())
    }

    fn biases(&self, obj: &Obj, architecture: Architecture) -> Result<Biases, EngineError> {
        let attention_bias = self.opt_bool(obj, "attention_bias")?.unwrap_or(false);
        // Qwen2 checkpoints carry q/k/v biases whatever the config says.
        let (qkv, o) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Llama | Architecture::Qwen3 => (attention_bias, attention_bias),
        };
        let mlp = self.opt_bool(obj, "mlp_bias")?.unwrap_or(false);
        Ok(Biases { qkv, o, mlp })
    }

    /// `bos_token_id`, and `eos_token_id`, which may be one id or a list.
    fn special_tokens(&self, obj: &Obj) -> Result<(Option<u32>, Vec<u32>), EngineError> {
        let bos_token_id = match self.get(obj, "bos_token_id") {
            None => None,
            Some(v) => Some(self.token_id(v, "bos_token_id")?),
        };
        let eos_token_ids = match self.get(obj, "eos_token_id") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| self.token_id(v, "eos_token_id"))
                .collect::<Result<_, _>>()?,
            Some(v) => vec![self.token_id(v, "eos_token_id")?],
        };
        Ok((bos_token_id, eos_token_ids))
    }

    /// Rope: transformers 5 `rope_parameters` first, then the released-checkpoint layout.
    fn rope(&self, obj: &Obj) -> Result<RopeConfig, EngineError> {
        let rope = match self.opt_obj(obj, "rope_parameters")? {
            Some(params) => self.rope_from_parameters(obj, params)?,
            None => {
                let theta = self.opt_f64(obj, "rope_theta")?.unwrap_or(10_000.0);
                let scaling = match self.opt_obj(obj, "rope_scaling")? {
                    Some(s) => self.rope_scaling(s, "rope_scaling")?,
                    None => RopeScaling::None,
                };
                RopeConfig { theta, scaling }
            }
        };
        if rope.theta <= 0.0 {
            return Err(self.err("rope_theta", "must be positive"));
        }
        Ok(rope)
    }

    /// The transformers 5 layout; `rope_theta` may still sit at the top level of `obj`.
    fn rope_from_parameters(&self, obj: &Obj, params: &Obj) -> Result<RopeConfig, EngineError> {
        // Models with per-layer-type rope nest the dicts; take full attention's.
        let (params, prefix) = match self.opt_obj(params, "full_attention")? {
            Some(p) if !params.contains_key("rope_theta") => (p, "rope_parameters.full_attention"),
            _ => (params, "rope_parameters"),
        };
        let theta = match params.get("rope_theta").filter(|v| !v.is_null()) {
            Some(v) => v.as_f64().ok_or_else(|| {
                self.err(
                    &format!("{prefix}.rope_theta"),
                    format!("expected a number, got {v}"),
                )
            })?,
            None => self.opt_f64(obj, "rope_theta")?.unwrap_or(10_000.0),
        };
        Ok(RopeConfig {
            theta,
            scaling: self.rope_scaling(params, prefix)?,
        })
    }

    /// `torch_dtype` (released checkpoints) or else `dtype` (transformers 5).
    fn dtype(&self, obj: &Obj) -> Result<Option<DType>, EngineError> {
        let (dtype_field, dtype_str) = match self.opt_str(obj, "torch_dtype")? {
            Some(s) => ("torch_dtype", Some(s)),
            None => ("dtype", self.opt_str(obj, "dtype")?),
        };
        match dtype_str {
            None => Ok(None),
            Some(s) => Ok(Some(parse_dtype(s).ok_or_else(|| {
                self.err(
                    dtype_field,
                    format!("unsupported dtype {s:?} (float32, bfloat16, float16)"),
                )
            })?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASED: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
        "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": false,
        "attention_bias": false, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "torch_dtype": "bfloat16"
    }"#;

    const TF5: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
        "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": false,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                            "original_max_position_embeddings": 8192, "rope_type": "llama3",
                            "rope_theta": 500000.0},
        "dtype": "bfloat16"
    }"#;

    #[test]
    fn both_rope_layouts_agree() {
        let a = ModelConfig::from_json_str(RELEASED, "config.json").unwrap();
        let b = ModelConfig::from_json_str(TF5, "config.json").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.architecture, Architecture::Llama);
        assert_eq!(a.head_dim, 128);
        assert_eq!(a.n_rep(), 4);
        assert_eq!(a.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(a.bos_token_id, Some(128000));
        assert_eq!(a.dtype, Some(DType::BF16));
        assert_eq!(a.rope.theta, 500000.0);
        assert_eq!(
            a.rope.scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192
            }
        );
    }

    #[test]
    fn qwen2_defaults_and_bias() {
        let cfg = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
            "vocab_size": 512, "rope_theta": 1000000.0, "tie_word_embeddings": true,
            "eos_token_id": 2, "use_sliding_window": false, "torch_dtype": "float32"}"#;
        let c = ModelConfig::from_json_str(cfg, "config.json").unwrap();
        assert_eq!(c.architecture, Architecture::Qwen2);
        assert!(c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert_eq!(c.rope.scaling, RopeScaling::None);
        assert_eq!(c.rope.theta, 1e6);
        // transformers 5 default rope_parameters layout.
        let cfg5 = cfg.replace(
            r#""rope_theta": 1000000.0"#,
            r#""rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}"#,
        );
        let c5 = ModelConfig::from_json_str(&cfg5, "config.json").unwrap();
        assert_eq!(c, c5);
    }

    #[test]
    fn qwen3_from_architectures_only() {
        let cfg = r#"{"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 512,
            "rope_scaling": null, "rope_theta": 1000000}"#;
        let c = ModelConfig::from_json_str(cfg, "config.json").unwrap();
        assert_eq!(c.architecture, Architecture::Qwen3);
        assert!(c.has_qk_norm() && !c.qkv_bias);
        assert_eq!(c.head_dim, 32);
        assert_eq!(c.dtype, None);
    }

    #[test]
    fn typed_errors_name_file_and_field() {
        let bad = RELEASED.replace(
            r#""num_key_value_heads": 8"#,
            r#""num_key_value_heads": "8""#,
        );
        let e = ModelConfig::from_json_str(&bad, "config.json").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("config.json")
                && msg.contains("num_key_value_heads")
                && msg.contains("expected an integer"),
            "{msg}"
        );
        let bad = RELEASED.replace(r#""rope_type": "llama3""#, r#""rope_type": "yarn""#);
        let msg = ModelConfig::from_json_str(&bad, "config.json")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rope_scaling.rope_type"), "{msg}");
        let bad = RELEASED.replace(r#""low_freq_factor": 1.0,"#, "");
        let msg = ModelConfig::from_json_str(&bad, "config.json")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rope_scaling.low_freq_factor"), "{msg}");
        let bad = TF5.replace(r#""model_type": "llama""#, r#""model_type": "gpt2""#);
        let msg = ModelConfig::from_json_str(&bad, "config.json")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("model_type"), "{msg}");
    }

    #[test]
    fn legacy_type_key_and_linear() {
        let cfg = RELEASED.replace(
            r#""rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"}"#,
            r#""rope_scaling": {"type": "linear", "factor": 2.0}"#,
        );
        let c = ModelConfig::from_json_str(&cfg, "config.json").unwrap();
        assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 2.0 });
    }
}
