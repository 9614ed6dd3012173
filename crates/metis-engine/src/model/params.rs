//! The one table of a model's parameters: for a [`ModelConfig`], every tensor of the
//! checkpoint with its Hugging Face name, its llama.cpp GGUF name, its shape and its role.
//! The engine's safetensors and GGUF loaders, the GGUF writer, the trainer's loader and the
//! demo model's random init all walk it, and every one of them checks what it reads against
//! the table's shape ([`ParamSpec::check`]).
//!
//! What sets the architectures apart is declared once, in [`ArchitectureTensors::of`]; the bias
//! flags come from the config (Qwen2's q/k/v bias is forced on when `config.json` is read):
//!
//! | arch  | q/k/v bias | o bias | MLP bias | q_norm/k_norm [head_dim] | GGUF Q/K rows |
//! |-------|------------|--------|----------|--------------------------|---------------|
//! | Llama | `attention_bias` | `attention_bias` | `mlp_bias` | no | permuted per head |
//! | Qwen2 | always | no | `mlp_bias` | no | as in HF |
//! | Qwen3 | `attention_bias` | `attention_bias` | `mlp_bias` | yes | as in HF |
//!
//! Every architecture: no output head tensor when it is tied to the embedding
//! (`tie_word_embeddings`; a tied HF checkpoint may still carry `lm_head.weight`, which HF
//! ignores and so does Metis).
//!
//! Shapes are row-major as both formats present them (candle reverses GGUF's dimension order
//! when it reads a file), e.g. a projection's weight is `[out, in]`.

use crate::config::{Architecture, ModelConfig};

/// The GGUF tensor [head_dim / 2] of Llama-3 rope scaling as llama.cpp stores it (per-dimension
/// divisors of the inverse frequencies). It is not a row of the table: HF keeps the scaling in
/// `config.json`, and a GGUF file has the tensor only where the scaling asks for it.
pub const GGUF_ROPE_FREQS: &str = "rope_freqs.weight";

/// A model-level tensor's names in the two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorNames {
    pub hf: &'static str,
    pub gguf: &'static str,
}

/// The token embedding table [vocab, hidden].
pub const EMBED_TOKENS: TensorNames = TensorNames {
    hf: "model.embed_tokens.weight",
    gguf: "token_embd.weight",
};

/// The final RMSNorm [hidden].
pub const FINAL_NORM: TensorNames = TensorNames {
    hf: "model.norm.weight",
    gguf: "output_norm.weight",
};

/// The output head [vocab, hidden] of an untied model.
pub const OUTPUT_HEAD: TensorNames = TensorNames {
    hf: "lm_head.weight",
    gguf: "output.weight",
};

/// What sets an architecture's tensors apart from the common decoder layer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchitectureTensors {
    /// Per-head RMSNorm weights on q and k, applied before rope.
    pub qk_norm: bool,
    /// llama.cpp's converter stores the Q and K rows (weights and biases) permuted per head,
    /// from HF's rotate-half rope layout to its interleaved one; loaders undo it.
    pub gguf_permutes_qk_rows: bool,
}

impl ArchitectureTensors {
    /// The declaration of each architecture.
    pub fn of(architecture: Architecture) -> Self {
        match architecture {
            Architecture::Llama => Self {
                qk_norm: false,
                gguf_permutes_qk_rows: true,
            },
            Architecture::Qwen2 => Self {
                qk_norm: false,
                gguf_permutes_qk_rows: false,
            },
            Architecture::Qwen3 => Self {
                qk_norm: true,
                gguf_permutes_qk_rows: false,
            },
        }
    }
}

/// The seven linear layers of a decoder layer, in HF module order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Projection {
    pub const ALL: [Projection; 7] = [
        Projection::Q,
        Projection::K,
        Projection::V,
        Projection::O,
        Projection::Gate,
        Projection::Up,
        Projection::Down,
    ];

    /// The HF module name (`q_proj`, …), which is also the name a LoRA target is given by.
    pub fn hf_name(self) -> &'static str {
        match self {
            Projection::Q => "q_proj",
            Projection::K => "k_proj",
            Projection::V => "v_proj",
            Projection::O => "o_proj",
            Projection::Gate => "gate_proj",
            Projection::Up => "up_proj",
            Projection::Down => "down_proj",
        }
    }

    /// The HF module path in decoder layer `layer` (`model.layers.3.self_attn.q_proj`).
    pub fn hf_module(self, layer: usize) -> String {
        let parent = match self {
            Projection::Q | Projection::K | Projection::V | Projection::O => "self_attn",
            Projection::Gate | Projection::Up | Projection::Down => "mlp",
        };
        format!("model.layers.{layer}.{parent}.{}", self.hf_name())
    }

    /// The GGUF tensor prefix in block `layer` (`blk.3.attn_q`).
    pub fn gguf_module(self, layer: usize) -> String {
        let name = match self {
            Projection::Q => "attn_q",
            Projection::K => "attn_k",
            Projection::V => "attn_v",
            Projection::O => "attn_output",
            Projection::Gate => "ffn_gate",
            Projection::Up => "ffn_up",
            Projection::Down => "ffn_down",
        };
        format!("blk.{layer}.{name}")
    }

    /// Position in [`Projection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a parameter is, for the code that loads, converts or initialises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// The token embedding table [vocab, hidden].
    Embedding,
    /// A projection's weight [out, in].
    LinearWeight(Projection),
    /// A projection's bias [out].
    LinearBias(Projection),
    /// An RMSNorm weight [size].
    Norm,
    /// The output head [vocab, hidden] of an untied model.
    OutputHead,
}

/// Which of a checkpoint's naming schemes a tensor is looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// Hugging Face safetensors (`model.layers.0.self_attn.q_proj.weight`).
    Hf,
    /// llama.cpp GGUF (`blk.0.attn_q.weight`).
    Gguf,
}

/// A tensor a checkpoint holds that does not match the table.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// The architecture needs a tensor the checkpoint lacks.
    #[error("missing tensor {name}")]
    Missing { name: String },
    /// The checkpoint's tensor has another shape than the config implies.
    #[error("{name}: expected shape {expected:?}, got {got:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
}

/// Checks that tensor `name`, of shape `stored` (None: absent), has shape `expected`; the
/// check behind [`ParamSpec::check`], for tensors outside the table ([`GGUF_ROPE_FREQS`]).
pub fn check_shape(
    name: &str,
    expected: &[usize],
    stored: Option<&[usize]>,
) -> Result<(), ParamError> {
    match stored {
        None => Err(ParamError::Missing {
            name: name.to_string(),
        }),
        Some(got) if got != expected => Err(ParamError::Shape {
            name: name.to_string(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        }),
        Some(_) => Ok(()),
    }
}

/// One row of the table: a tensor of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub hf_name: String,
    pub gguf_name: String,
    /// Row-major; follows from the config.
    pub shape: Vec<usize>,
    pub role: ParamRole,
    /// The decoder layer it belongs to; None for the embedding, final norm and output head.
    pub layer: Option<usize>,
    /// Some(heads): a GGUF file stores its rows permuted over this many heads (see
    /// [`ArchitectureTensors::gguf_permutes_qk_rows`]).
    pub gguf_row_permutation: Option<usize>,
}

impl ParamSpec {
    /// The name the tensor has in `format`.
    pub fn name(&self, format: CheckpointFormat) -> &str {
        match format {
            CheckpointFormat::Hf => &self.hf_name,
            CheckpointFormat::Gguf => &self.gguf_name,
        }
    }

    /// Checks what a checkpoint in `format` stores under this tensor's name: `stored` is its
    /// shape, None when the tensor is absent.
    pub fn check(
        &self,
        format: CheckpointFormat,
        stored: Option<&[usize]>,
    ) -> Result<(), ParamError> {
        check_shape(self.name(format), &self.shape, stored)
    }

    /// The shape as a matrix: the first dimension by the product of the others.
    pub fn rows_cols(&self) -> (usize, usize) {
        let rows = self.shape.first().copied().unwrap_or(1);
        (rows, self.shape.iter().skip(1).product())
    }

    fn model_level(names: TensorNames, shape: Vec<usize>, role: ParamRole) -> Self {
        Self {
            hf_name: names.hf.to_string(),
            gguf_name: names.gguf.to_string(),
            shape,
            role,
            layer: None,
            gguf_row_permutation: None,
        }
    }

    /// A norm weight [size] of decoder layer `layer`, by its path under the layer in each format.
    fn layer_norm(layer: usize, hf_path: &str, gguf_path: &str, size: usize) -> Self {
        Self {
            hf_name: format!("model.layers.{layer}.{hf_path}.weight"),
            gguf_name: format!("blk.{layer}.{gguf_path}.weight"),
            shape: vec![size],
            role: ParamRole::Norm,
            layer: Some(layer),
            gguf_row_permutation: None,
        }
    }
}

/// A projection of a decoder layer: its weight [out, in] and optional bias [out].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearParams {
    pub layer: usize,
    pub projection: Projection,
    pub weight: ParamSpec,
    pub bias: Option<ParamSpec>,
}

impl LinearParams {
    fn new(layer: usize, projection: Projection, (out, inp): (usize, usize), bias: bool) -> Self {
        let (hf, gguf) = (projection.hf_module(layer), projection.gguf_module(layer));
        let spec = |suffix: &str, shape: Vec<usize>, role| ParamSpec {
            hf_name: format!("{hf}.{suffix}"),
            gguf_name: format!("{gguf}.{suffix}"),
            shape,
            role,
            layer: Some(layer),
            gguf_row_permutation: None,
        };
        Self {
            layer,
            projection,
            weight: spec(
                "weight",
                vec![out, inp],
                ParamRole::LinearWeight(projection),
            ),
            bias: bias.then(|| spec("bias", vec![out], ParamRole::LinearBias(projection))),
        }
    }

    /// Marks weight and bias as stored in GGUF with rows permuted over `heads`.
    fn gguf_permuted(mut self, heads: Option<usize>) -> Self {
        self.weight.gguf_row_permutation = heads;
        if let Some(b) = &mut self.bias {
            b.gguf_row_permutation = heads;
        }
        self
    }

    /// Output features (rows of the weight).
    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }

    /// Input features (columns of the weight).
    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }

    /// The weight, then the bias if there is one.
    pub fn iter(&self) -> impl Iterator<Item = &ParamSpec> {
        std::iter::once(&self.weight).chain(&self.bias)
    }

    /// The HF module path (`model.layers.3.self_attn.q_proj`), under which PEFT names adapters.
    pub fn hf_module(&self) -> String {
        self.projection.hf_module(self.layer)
    }
}

/// Grouped-query self-attention's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionParams {
    pub q_proj: LinearParams,
    pub k_proj: LinearParams,
    pub v_proj: LinearParams,
    pub o_proj: LinearParams,
    /// [head_dim], where the architecture has q/k norms.
    pub q_norm: Option<ParamSpec>,
    pub k_norm: Option<ParamSpec>,
}

/// The SwiGLU MLP's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlpParams {
    pub gate_proj: LinearParams,
    pub up_proj: LinearParams,
    pub down_proj: LinearParams,
}

/// A pre-norm decoder layer's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerParams {
    pub input_layernorm: ParamSpec,
    pub self_attn: AttentionParams,
    pub post_attention_layernorm: ParamSpec,
    pub mlp: MlpParams,
}

impl LayerParams {
    /// Decoder layer `layer` of a model with config `cfg`.
    fn new(cfg: &ModelConfig, layer: usize) -> Self {
        let arch = ArchitectureTensors::of(cfg.architecture);
        let (h, hd, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let permuted = |heads: usize| arch.gguf_permutes_qk_rows.then_some(heads);
        let linear = |p, dims, bias| LinearParams::new(layer, p, dims, bias);
        let qk_norm = |hf: &str, gguf: &str| {
            arch.qk_norm
                .then(|| ParamSpec::layer_norm(layer, hf, gguf, hd))
        };
        Self {
            input_layernorm: ParamSpec::layer_norm(layer, "input_layernorm", "attn_norm", h),
            self_attn: AttentionParams {
                q_proj: linear(Projection::Q, (nh * hd, h), cfg.qkv_bias)
                    .gguf_permuted(permuted(nh)),
                k_proj: linear(Projection::K, (nkv * hd, h), cfg.qkv_bias)
                    .gguf_permuted(permuted(nkv)),
                v_proj: linear(Projection::V, (nkv * hd, h), cfg.qkv_bias),
                o_proj: linear(Projection::O, (h, nh * hd), cfg.o_bias),
                q_norm: qk_norm("self_attn.q_norm", "attn_q_norm"),
                k_norm: qk_norm("self_attn.k_norm", "attn_k_norm"),
            },
            post_attention_layernorm: ParamSpec::layer_norm(
                layer,
                "post_attention_layernorm",
                "ffn_norm",
                h,
            ),
            mlp: MlpParams {
                gate_proj: linear(Projection::Gate, (inter, h), cfg.mlp_bias),
                up_proj: linear(Projection::Up, (inter, h), cfg.mlp_bias),
                down_proj: linear(Projection::Down, (h, inter), cfg.mlp_bias),
            },
        }
    }

    /// The seven projections in [`Projection::ALL`] order.
    pub fn linears(&self) -> [&LinearParams; 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
    }

    /// Every tensor of the layer in HF's state-dict order: the attention (projections, then
    /// q/k norms), the MLP, the two norms.
    pub fn iter(&self) -> impl Iterator<Item = &ParamSpec> {
        let a = &self.self_attn;
        let [q, k, v, o, gate, up, down] = self.linears();
        [q, k, v, o]
            .into_iter()
            .flat_map(LinearParams::iter)
            .chain(a.q_norm.iter().chain(&a.k_norm))
            .chain([gate, up, down].into_iter().flat_map(LinearParams::iter))
            .chain([&self.input_layernorm, &self.post_attention_layernorm])
    }
}

/// Every tensor of a model: the table for one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelParams {
    pub embed_tokens: ParamSpec,
    pub layers: Vec<LayerParams>,
    pub norm: ParamSpec,
    /// None when the head is tied to the embedding.
    pub lm_head: Option<ParamSpec>,
}

impl ModelParams {
    pub fn new(cfg: &ModelConfig) -> Self {
        let (vocab, h) = (cfg.vocab_size, cfg.hidden_size);
        Self {
            embed_tokens: ParamSpec::model_level(
                EMBED_TOKENS,
                vec![vocab, h],
                ParamRole::Embedding,
            ),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| LayerParams::new(cfg, i))
                .collect(),
            norm: ParamSpec::model_level(FINAL_NORM, vec![h], ParamRole::Norm),
            lm_head: (!cfg.tie_word_embeddings).then(|| {
                ParamSpec::model_level(OUTPUT_HEAD, vec![vocab, h], ParamRole::OutputHead)
            }),
        }
    }

    /// Every tensor in HF's state-dict order (the order a GGUF file lists them in too).
    pub fn iter(&self) -> impl Iterator<Item = &ParamSpec> {
        std::iter::once(&self.embed_tokens)
            .chain(self.layers.iter().flat_map(LayerParams::iter))
            .chain(std::iter::once(&self.norm))
            .chain(&self.lm_head)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::model::{EngineError, Model};

    /// A small config of `model_type` (hidden 64, 4 heads of 16, 2 kv heads, 2 layers).
    fn config(model_type: &str, class: &str, tied: bool) -> ModelConfig {
        let text = format!(
            r#"{{"architectures": ["{class}"], "model_type": "{model_type}",
            "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
            "vocab_size": 128, "max_position_embeddings": 64, "rope_theta": 10000.0,
            "tie_word_embeddings": {tied}, "eos_token_id": 2}}"#
        );
        ModelConfig::from_json_str(&text, "config.json").unwrap()
    }

    fn names(layer: &LayerParams, format: CheckpointFormat) -> Vec<&str> {
        layer.iter().map(|p| p.name(format)).collect()
    }

    #[test]
    fn qwen2_layer_has_qkv_biases_and_shapes_from_the_config() {
        let params = ModelParams::new(&config("qwen2", "Qwen2ForCausalLM", true));
        let l0 = &params.layers[0];
        let hf = names(l0, CheckpointFormat::Hf);
        for (name, shape) in [
            ("model.layers.0.self_attn.q_proj.weight", vec![64, 64]),
            ("model.layers.0.self_attn.q_proj.bias", vec![64]),
            ("model.layers.0.self_attn.k_proj.weight", vec![32, 64]),
            ("model.layers.0.self_attn.k_proj.bias", vec![32]),
            ("model.layers.0.self_attn.v_proj.bias", vec![32]),
            ("model.layers.0.self_attn.o_proj.weight", vec![64, 64]),
            ("model.layers.0.mlp.down_proj.weight", vec![64, 96]),
            ("model.layers.0.input_layernorm.weight", vec![64]),
        ] {
            let spec = l0.iter().find(|p| p.hf_name == name).expect(name);
            assert_eq!(spec.shape, shape, "{name}");
        }
        assert!(!hf.contains(&"model.layers.0.self_attn.o_proj.bias"));
        assert!(!hf.iter().any(|n| n.contains("q_norm")));
        assert_eq!(l0.iter().count(), 7 + 3 + 2);
        let gguf = names(l0, CheckpointFormat::Gguf);
        assert_eq!(
            &gguf[..3],
            [
                "blk.0.attn_q.weight",
                "blk.0.attn_q.bias",
                "blk.0.attn_k.weight"
            ]
        );
        assert!(l0.iter().all(|p| p.gguf_row_permutation.is_none()));
        assert_eq!(params.lm_head, None, "tied");
        assert_eq!(params.iter().count(), 1 + 2 * 12 + 1);
    }

    #[test]
    fn llama_q_k_rows_are_permuted_in_gguf_and_an_untied_head_is_listed() {
        let params = ModelParams::new(&config("llama", "LlamaForCausalLM", false));
        let a = &params.layers[1].self_attn;
        assert_eq!(a.q_proj.weight.gguf_row_permutation, Some(4));
        assert_eq!(a.k_proj.weight.gguf_row_permutation, Some(2));
        assert_eq!(a.v_proj.weight.gguf_row_permutation, None);
        assert_eq!(a.q_proj.bias, None);
        let head = params.iter().last().unwrap();
        assert_eq!(
            (head.hf_name.as_str(), head.gguf_name.as_str()),
            ("lm_head.weight", "output.weight")
        );
        assert_eq!(
            (head.role, head.shape.as_slice()),
            (ParamRole::OutputHead, &[128, 64][..])
        );
    }

    #[test]
    fn qwen3_lists_per_head_q_k_norms() {
        let params = ModelParams::new(&config("qwen3", "Qwen3ForCausalLM", true));
        let a = &params.layers[0].self_attn;
        let q_norm = a.q_norm.as_ref().unwrap();
        assert_eq!(q_norm.hf_name, "model.layers.0.self_attn.q_norm.weight");
        assert_eq!(q_norm.gguf_name, "blk.0.attn_q_norm.weight");
        assert_eq!(
            (q_norm.shape.as_slice(), q_norm.role),
            (&[16][..], ParamRole::Norm)
        );
        assert_eq!(
            a.k_norm.as_ref().unwrap().gguf_name,
            "blk.0.attn_k_norm.weight"
        );
    }

    #[test]
    fn check_names_the_missing_or_misshapen_tensor() {
        let params = ModelParams::new(&config("qwen2", "Qwen2ForCausalLM", true));
        let k_bias = params.layers[1].self_attn.k_proj.bias.as_ref().unwrap();
        assert_eq!(k_bias.check(CheckpointFormat::Hf, Some(&[32])), Ok(()));
        let missing = k_bias.check(CheckpointFormat::Gguf, None).unwrap_err();
        assert_eq!(missing.to_string(), "missing tensor blk.1.attn_k.bias");
        let wrong = k_bias.check(CheckpointFormat::Hf, Some(&[64])).unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "model.layers.1.self_attn.k_proj.bias: expected shape [32], got [64]"
        );
    }

    /// The safetensors loader walks the table: every listed tensor is read, and a missing or
    /// misshapen one is reported by name.
    #[test]
    fn loader_reports_table_mismatches_by_name() {
        let cfg = config("qwen2", "Qwen2ForCausalLM", false);
        let tensors: HashMap<String, Tensor> = ModelParams::new(&cfg)
            .iter()
            .map(|p| {
                let t = Tensor::zeros(p.shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
                (p.hf_name.clone(), t)
            })
            .collect();
        let load = |t| Model::from_tensors(cfg.clone(), t, DType::F32, &Device::Cpu);
        assert!(load(tensors.clone()).is_ok());

        let mut missing = tensors.clone();
        missing.remove("model.layers.1.self_attn.v_proj.bias");
        match load(missing) {
            Err(EngineError::MissingTensor { name }) => {
                assert_eq!(name, "model.layers.1.self_attn.v_proj.bias")
            }
            other => panic!("expected a missing tensor, got {other:?}"),
        }

        let mut wrong = tensors;
        let up = Tensor::zeros((96, 32), DType::F32, &Device::Cpu).unwrap();
        wrong.insert("model.layers.0.mlp.up_proj.weight".into(), up);
        let err = load(wrong).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model.layers.0.mlp.up_proj.weight: expected shape [96, 64], got [96, 32]"
        );
    }
}
