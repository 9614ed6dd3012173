//! GGUF checkpoints as written by llama.cpp: reading the model configuration from the GGUF
//! metadata, and [`write_gguf`], a converter from a Hugging Face safetensors directory that
//! lays the file out the way llama.cpp's `convert_hf_to_gguf.py` (+ `llama-quantize`) does.
//!
//! Layout conventions shared by the reader ([`crate::model::Model::load_gguf`]) and the writer:
//!
//! * tensor names, shapes and order as the parameter table ([`crate::model::params`]) lists
//!   them (`token_embd.weight`, `blk.N.attn_q.weight`, …, `output_norm.weight`,
//!   `output.weight`, absent = tied to `token_embd.weight`), plus `rope_freqs.weight` (Llama-3
//!   rope scaling as per-dimension divisors of the inverse frequencies);
//! * for `llama` only, the rows of Q and K (weights and biases) are permuted per head from the
//!   HF "rotate_half" rope layout to llama.cpp's interleaved one (`LlamaModel.permute`; the
//!   table's `gguf_row_permutation`); the loader undoes it row by row on the raw blocks (exact
//!   for every storage type);
//! * 1-D tensors (norms, biases, rope factors) are F32.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

pub use candle_core::quantized::GgmlDType;

use crate::config::{Architecture, LayerShape, ModelConfig, RopeConfig, RopeScaling};
use crate::model::params::{
    CheckpointFormat, ModelParams, ParamRole, ParamSpec, Projection, EMBED_TOKENS, GGUF_ROPE_FREQS,
    OUTPUT_HEAD,
};
use crate::model::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

fn io_err(path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn arch_name(a: Architecture) -> &'static str {
    match a {
        Architecture::Llama => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
    }
}

pub(crate) fn value_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) if x >= 0 => Some(x as u64),
        Value::I16(x) if x >= 0 => Some(x as u64),
        Value::I32(x) if x >= 0 => Some(x as u64),
        Value::I64(x) if x >= 0 => Some(x as u64),
        _ => None,
    }
}

fn value_f64(v: &Value) -> Option<f64> {
    match *v {
        Value::F32(x) => Some(x as f64),
        Value::F64(x) => Some(x),
        _ => value_u64(v).map(|x| x as f64),
    }
}

/// Typed access to GGUF metadata; errors name the file and the key.
struct Meta<'a> {
    md: &'a HashMap<String, Value>,
    file: String,
}

impl Meta<'_> {
    fn err(&self, key: &str, detail: impl Into<String>) -> EngineError {
        EngineError::Config {
            file: self.file.clone(),
            field: key.to_string(),
            detail: detail.into(),
        }
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => value_u64(v).map(Some).ok_or_else(|| {
                self.err(key, format!("expected a non-negative integer, got {v:?}"))
            }),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        Ok(self.opt_u64(key)?.map(|x| x as usize))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "missing (expected an integer)"))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => value_f64(v)
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v:?}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.err(key, format!("expected a string, got {v:?}"))),
        }
    }
}

/// The model configuration described by a GGUF file's metadata and tensor shapes. Llama-3
/// `rope_freqs.weight` is not read here (it is a tensor); [`crate::model::Model::load_gguf`]
/// turns it into [`RopeScaling::FreqFactors`].
pub fn config_from_gguf(content: &Content, file: &str) -> Result<ModelConfig> {
    let m = Meta {
        md: &content.metadata,
        file: file.to_string(),
    };
    // The keys are read in this order so that, of several faults, the first reported stays
    // the same one.
    let (architecture, arch_str) = gguf_architecture(&m)?;
    let k = |s: &str| format!("{arch_str}.{s}");
    let shape = gguf_shape(&m, &arch_str)?;
    let rms_norm_eps = m
        .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
        .unwrap_or(1e-6);
    let max_position_embeddings = m.opt_usize(&k("context_length"))?.unwrap_or(2048);
    let rope = gguf_rope(&m, &arch_str)?;
    let vocab_size = gguf_vocab_size(content, shape.hidden_size)?;
    let present = OptionalTensors::of(content);
    let bos_token_id = m.opt_u64("tokenizer.ggml.bos_token_id")?.map(|x| x as u32);
    let eos_token_ids = end_of_sequence_ids(&m)?;

    Ok(ModelConfig {
        architecture,
        model_type: arch_str,
        hidden_size: shape.hidden_size,
        intermediate_size: shape.intermediate_size,
        num_hidden_layers: shape.num_hidden_layers,
        num_attention_heads: shape.num_attention_heads,
        num_key_value_heads: shape.num_key_value_heads,
        head_dim: shape.head_dim,
        rms_norm_eps,
        vocab_size,
        max_position_embeddings,
        tie_word_embeddings: present.tie_word_embeddings,
        qkv_bias: present.qkv_bias,
        o_bias: present.o_bias,
        mlp_bias: present.mlp_bias,
        bos_token_id,
        eos_token_ids,
        rope,
        dtype: Some(DType::F32),
    })
}

/// The architecture and its name as written, which prefixes the other metadata keys.
fn gguf_architecture(m: &Meta) -> Result<(Architecture, String)> {
    let arch_str = m
        .opt_str("general.architecture")?
        .ok_or_else(|| m.err("general.architecture", "missing"))?
        .to_string();
    let architecture = Architecture::from_model_type(&arch_str).ok_or_else(|| {
        m.err(
            "general.architecture",
            format!("unsupported architecture {arch_str:?} (supported: llama, qwen2, qwen3)"),
        )
    })?;
    Ok((architecture, arch_str))
}

/// The layer dimensions of a GGUF model, checked against each other.
fn gguf_shape(m: &Meta, arch_str: &str) -> Result<LayerShape> {
    let k = |s: &str| format!("{arch_str}.{s}");
    let hidden_size = m.usize(&k("embedding_length"))?;
    let num_hidden_layers = m.usize(&k("block_count"))?;
    let num_attention_heads = m.usize(&k("attention.head_count"))?;
    if num_attention_heads == 0 {
        return Err(m.err(&k("attention.head_count"), "must be positive"));
    }
    let num_key_value_heads = m
        .opt_usize(&k("attention.head_count_kv"))?
        .unwrap_or(num_attention_heads);
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        return Err(m.err(
            &k("attention.head_count_kv"),
            format!("{num_key_value_heads} does not divide head_count {num_attention_heads}"),
        ));
    }
    let head_dim = gguf_head_dim(m, arch_str, hidden_size, num_attention_heads)?;
    let intermediate_size = m.usize(&k("feed_forward_length"))?;
    Ok(LayerShape {
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
    })
}

/// `key_length` as given, else derived from the embedding length; rope needs it even, and
/// the engine supports only values as long as keys.
fn gguf_head_dim(
    m: &Meta,
    arch_str: &str,
    hidden_size: usize,
    num_attention_heads: usize,
) -> Result<usize> {
    let k = |s: &str| format!("{arch_str}.{s}");
    let head_dim = match m.opt_usize(&k("attention.key_length"))? {
        Some(d) => d,
        None => {
            if !hidden_size.is_multiple_of(num_attention_heads) {
                return Err(m.err(
                    &k("attention.key_length"),
                    "missing and embedding_length is not a multiple of head_count",
                ));
            }
            hidden_size / num_attention_heads
        }
    };
    if head_dim % 2 != 0 {
        return Err(m.err(
            &k("attention.key_length"),
            format!("{head_dim} must be even"),
        ));
    }
    if let Some(vl) = m.opt_usize(&k("attention.value_length"))? {
        if vl != head_dim {
            return Err(m.err(
                &k("attention.value_length"),
                format!("{vl} differs from key_length {head_dim} (unsupported)"),
            ));
        }
    }
    Ok(head_dim)
}

fn gguf_rope(m: &Meta, arch_str: &str) -> Result<RopeConfig> {
    let k = |s: &str| format!("{arch_str}.{s}");
    let theta = m.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0);
    if theta <= 0.0 {
        return Err(m.err(&k("rope.freq_base"), "must be positive"));
    }
    let scaling = match m.opt_str(&k("rope.scaling.type"))? {
        None | Some("none") => RopeScaling::None,
        Some("linear") => {
            let key = k("rope.scaling.factor");
            let factor = m
                .opt_f64(&key)?
                .ok_or_else(|| m.err(&key, "missing (expected a number)"))?;
            if factor == 1.0 {
                RopeScaling::None
            } else {
                RopeScaling::Linear { factor }
            }
        }
        Some(other) => {
            return Err(m.err(
                &k("rope.scaling.type"),
                format!("unsupported rope scaling {other:?} (supported: none, linear)"),
            ))
        }
    };
    Ok(RopeConfig { theta, scaling })
}

/// The vocabulary size, which the metadata need not state: the rows of the token embedding.
fn gguf_vocab_size(content: &Content, hidden_size: usize) -> Result<usize> {
    let embd =
        content
            .tensor_infos
            .get(EMBED_TOKENS.gguf)
            .ok_or_else(|| EngineError::MissingTensor {
                name: EMBED_TOKENS.gguf.into(),
            })?;
    match embd.shape.dims() {
        [v, h] if *h == hidden_size => Ok(*v),
        dims => Err(EngineError::Shape {
            name: EMBED_TOKENS.gguf.into(),
            expected: vec![0, hidden_size],
            got: dims.to_vec(),
        }),
    }
}

/// The optional tensors the table lists, read back from what the file holds.
struct OptionalTensors {
    tie_word_embeddings: bool,
    qkv_bias: bool,
    o_bias: bool,
    mlp_bias: bool,
}

impl OptionalTensors {
    fn of(content: &Content) -> Self {
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let has_bias = |p: Projection| has(&format!("{}.bias", p.gguf_module(0)));
        Self {
            tie_word_embeddings: !has(OUTPUT_HEAD.gguf),
            qkv_bias: has_bias(Projection::Q),
            o_bias: has_bias(Projection::O),
            mlp_bias: has_bias(Projection::Up),
        }
    }
}

/// The EOS, EOM and EOT ids the metadata declares, in that order, without repeats.
fn end_of_sequence_ids(m: &Meta) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eom_token_id",
        "tokenizer.ggml.eot_token_id",
    ] {
        if let Some(id) = m.opt_u64(key)? {
            let id = id as u32;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// The end-of-sequence ids declared by the GGUF file at `path` (see [`config_from_gguf`]),
/// read from its header alone.
pub fn end_of_sequence_ids_of(path: &Path) -> Result<Vec<u32>> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let content = read_content(&mut std::io::BufReader::new(file), path)?;
    end_of_sequence_ids(&Meta {
        md: &content.metadata,
        file: path.display().to_string(),
    })
}

/// Whether `path` names a GGUF file (a `.gguf` extension, and not a directory).
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        && !path.is_dir()
}

/// Open and parse the header of a GGUF file.
pub(crate) fn read_content<R: Read + Seek>(reader: &mut R, path: &Path) -> Result<Content> {
    Content::read(reader).map_err(|e| EngineError::Config {
        file: path.display().to_string(),
        field: "<gguf header>".into(),
        detail: e.to_string(),
    })
}

/// llama.cpp's Q/K row permutation over `n_head` heads as a row order: `order[hf] = gg`, the
/// stored (interleaved-rope) row `h*hd + 2*j + i` that holds Hugging Face (rotate-half) row
/// `h*hd + i*hd/2 + j`.
pub(crate) fn unpermute_order(rows: usize, n_head: usize) -> Result<Vec<u32>> {
    if rows == 0 || n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        return Err(EngineError::InvalidArgument(format!(
            "cannot permute {rows} rows over {n_head} heads"
        )));
    }
    let hd = rows / n_head;
    let half = hd / 2;
    let mut order = vec![0u32; rows];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                order[h * hd + i * half + j] = (h * hd + 2 * j + i) as u32;
            }
        }
    }
    Ok(order)
}

/// Reorder the rows of a [rows, ..] tensor stored as raw GGML blocks by
/// [`unpermute_order`] (`inverse` = false undoes llama.cpp's Q/K permutation; `inverse` = true
/// applies it). Works on any block type since quantization blocks never straddle rows.
pub(crate) fn permute_rows_raw(
    data: &[u8],
    rows: usize,
    n_head: usize,
    inverse: bool,
) -> Result<Vec<u8>> {
    let order = unpermute_order(rows, n_head)?;
    if !data.len().is_multiple_of(rows) {
        return Err(EngineError::InvalidArgument(format!(
            "{} bytes are not {rows} whole rows",
            data.len()
        )));
    }
    let row_bytes = data.len() / rows;
    let mut out = vec![0u8; data.len()];
    for (hf, &gg) in order.iter().enumerate() {
        let gg = gg as usize;
        let (dst, src) = if inverse { (gg, hf) } else { (hf, gg) };
        out[dst * row_bytes..(dst + 1) * row_bytes]
            .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
    }
    Ok(out)
}

/// What [`write_gguf`] stores the 2-D weights of a checkpoint as: every matrix in one GGML
/// type, or one of llama.cpp's "mostly" mixes (its `llama-quantize` rules without an imatrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// Every matrix in this type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K).
    All(GgmlDType),
    /// `Q4_K_M`: Q4_K, with Q6_K for the output matrix (or a tied embedding) and for `attn_v`
    /// and `ffn_down` in the layers `use_more_bits` picks.
    Q4KM,
    /// `Q5_K_M`: the same rule around Q5_K.
    Q5KM,
}

impl From<GgmlDType> for FileType {
    fn from(t: GgmlDType) -> Self {
        FileType::All(t)
    }
}

impl FileType {
    /// Parses the names llama.cpp users know: `f32`, `f16`, `bf16`, `q8_0`, `q4_0`, `q4_1`,
    /// `q5_0`, `q5_1`, `q2_k`, `q3_k`, `q4_k`, `q5_k`, `q6_k`, `q4_k_m`, `q5_k_m`
    /// (case-insensitive).
    pub fn parse(name: &str) -> Option<FileType> {
        use GgmlDType as T;
        Some(match name.to_ascii_lowercase().as_str() {
            "f32" => FileType::All(T::F32),
            "f16" => FileType::All(T::F16),
            "bf16" => FileType::All(T::BF16),
            "q8_0" => FileType::All(T::Q8_0),
            "q4_0" => FileType::All(T::Q4_0),
            "q4_1" => FileType::All(T::Q4_1),
            "q5_0" => FileType::All(T::Q5_0),
            "q5_1" => FileType::All(T::Q5_1),
            "q2_k" => FileType::All(T::Q2K),
            "q3_k" => FileType::All(T::Q3K),
            "q4_k" => FileType::All(T::Q4K),
            "q5_k" => FileType::All(T::Q5K),
            "q6_k" => FileType::All(T::Q6K),
            "q4_k_m" => FileType::Q4KM,
            "q5_k_m" => FileType::Q5KM,
            _ => return None,
        })
    }

    /// llama.cpp `general.file_type` (`llama_ftype`).
    fn llama_ftype(self) -> u32 {
        use GgmlDType as T;
        match self {
            FileType::Q4KM => 15,
            FileType::Q5KM => 17,
            FileType::All(t) => match t {
                T::F16 => 1,
                T::Q4_0 => 2,
                T::Q4_1 => 3,
                T::Q8_0 => 7,
                T::Q5_0 => 8,
                T::Q5_1 => 9,
                T::Q2K => 10,
                T::Q3K => 11, // Q3_K_S
                T::Q4K => 14, // Q4_K_S
                T::Q5K => 16, // Q5_K_S
                T::Q6K => 18,
                T::BF16 => 32,
                _ => 0,
            },
        }
    }

    fn check(self) -> Result<()> {
        use GgmlDType as T;
        match self {
            FileType::All(
                T::F32
                | T::F16
                | T::BF16
                | T::Q4_0
                | T::Q4_1
                | T::Q5_0
                | T::Q5_1
                | T::Q8_0
                | T::Q2K
                | T::Q3K
                | T::Q4K
                | T::Q5K
                | T::Q6K,
            )
            | FileType::Q4KM
            | FileType::Q5KM => Ok(()),
            FileType::All(t) => Err(EngineError::InvalidArgument(format!(
                "unsupported GGUF target type {t:?}"
            ))),
        }
    }

    /// Wanted type of a matrix by its role (before the row-length fallback).
    fn wanted(self, role: MixRole, layer: usize, layers: usize) -> GgmlDType {
        let base = match self {
            FileType::All(t) => return t,
            FileType::Q4KM => GgmlDType::Q4K,
            FileType::Q5KM => GgmlDType::Q5K,
        };
        match role {
            MixRole::Output => GgmlDType::Q6K,
            MixRole::AttnV | MixRole::FfnDown if use_more_bits(layer, layers) => GgmlDType::Q6K,
            _ => base,
        }
    }
}

/// What a matrix is, for the mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MixRole {
    /// `output.weight`, or `token_embd.weight` of a tied model (it is the output too).
    Output,
    AttnV,
    FfnDown,
    Other,
}

impl MixRole {
    /// The mix role of a tensor with table role `role` in a model whose head is `tied` or not.
    fn of(role: ParamRole, tied: bool) -> Self {
        match role {
            ParamRole::OutputHead => MixRole::Output,
            ParamRole::Embedding if tied => MixRole::Output,
            ParamRole::LinearWeight(Projection::V) => MixRole::AttnV,
            ParamRole::LinearWeight(Projection::Down) => MixRole::FfnDown,
            _ => MixRole::Other,
        }
    }
}

/// llama.cpp's layers that get more bits in the `_M` mixes: the first and last eighth and
/// every third layer in between.
fn use_more_bits(layer: usize, layers: usize) -> bool {
    let eighth = layers / 8;
    layer < eighth || layer >= 7 * layers / 8 || (layer - eighth) % 3 == 2
}

/// Storage type of a matrix with rows of `row_len` values: `want` if whole blocks fit, else
/// llama.cpp's fallback (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0; Q2_K/Q3_K→Q4_0 where llama.cpp
/// uses IQ4_NL, which Metis does not write), else F16 for quantized targets and the float
/// type itself otherwise.
fn fit_type(want: GgmlDType, row_len: usize) -> GgmlDType {
    use GgmlDType as T;
    if row_len.is_multiple_of(want.block_size()) {
        return want;
    }
    let fallback = match want {
        T::Q4K => T::Q5_0,
        T::Q5K => T::Q5_1,
        T::Q6K => T::Q8_0,
        T::Q2K | T::Q3K => T::Q4_0,
        _ => T::F16,
    };
    if row_len.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        T::F16
    }
}

/// Llama-3 `rope_freqs` as llama.cpp's converter computes them (f32 arithmetic, as the torch
/// scalars there): 1 for high frequencies, `factor` for low ones, a smooth blend between.
fn llama3_rope_factors(
    theta: f64,
    head_dim: usize,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    old_ctx: usize,
) -> Vec<f32> {
    let base = theta as f32;
    let dim = head_dim as f32;
    let low_wavelen = old_ctx as f64 / low_freq_factor;
    let high_wavelen = old_ctx as f64 / high_freq_factor;
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0f32 / base.powf(i as f32 / dim);
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
            if (wavelen as f64) < high_wavelen {
                1.0
            } else if (wavelen as f64) > low_wavelen {
                factor as f32
            } else {
                let smooth = (old_ctx as f32 / wavelen - low_freq_factor as f32)
                    / (high_freq_factor - low_freq_factor) as f32;
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect()
}

/// The HF permutation llama.cpp applies to Llama Q/K rows (`LlamaModel.permute`), on a dense
/// f32 tensor of shape [rows] or [rows, in].
fn permute_dense(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let rows = t.dim(0)?;
    let dims = t.dims().to_vec();
    let hd = rows / n_head;
    let rest: usize = dims[1..].iter().product();
    let r = t
        .reshape((n_head, 2, hd / 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?;
    Ok(r)
}

/// Convert the HF safetensors checkpoint in `hf_dir` (config.json + model.safetensors or
/// shards) to a GGUF file at `out`, laid out as llama.cpp's converter does (tensor names,
/// `{arch}.*` metadata, Q/K row permutation for `llama`, `rope_freqs.weight` for Llama-3 rope
/// scaling, 1-D tensors in F32), with 2-D weights stored as `file_type` says: one GGML type
/// for every matrix (a [`GgmlDType`] converts into [`FileType::All`]), or the `Q4_K_M` /
/// `Q5_K_M` mixes.
///
/// A weight whose row length is not a multiple of the type's block size (256 for the
/// k-quants, 32 for the others) falls back as llama.cpp does (see `fit_type`). A byte-level BPE
/// `tokenizer.json` next to the weights is embedded as llama.cpp's `gpt2` tokenizer (tokens,
/// types, merges, pre-tokenizer name, chat template); without one the file declares
/// `tokenizer.ggml.model = "none"` so llama.cpp still runs it on raw token ids. Everything is
/// converted in memory.
pub fn write_gguf(hf_dir: &Path, out: &Path, file_type: impl Into<FileType>) -> Result<()> {
    let ftype: FileType = file_type.into();
    ftype.check()?;
    let cfg = ModelConfig::from_file(&hf_dir.join("config.json"))?;
    let files = crate::model::safetensors_files(hf_dir)?;
    // SAFETY: read-only memory map; the files must not change while converting.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files)? };
    let mut tensors = ModelParams::new(&cfg)
        .iter()
        .map(|spec| Ok((spec.gguf_name.clone(), gguf_tensor(&st, spec, ftype, &cfg)?)))
        .collect::<Result<Vec<_>>>()?;
    if let Some(factors) = rope_freq_factors(&cfg) {
        let n = factors.len();
        let t = Tensor::from_vec(factors, n, &Device::Cpu)?;
        tensors.push((
            GGUF_ROPE_FREQS.into(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    }
    let mut md = model_metadata(&cfg, hf_dir, ftype);
    md.extend(tokenizer_metadata(hf_dir, cfg.vocab_size)?);

    let file = std::fs::File::create(out).map_err(|e| io_err(out, e))?;
    let mut w = std::io::BufWriter::new(file);
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &md_refs, &t_refs)?;
    use std::io::Write;
    w.flush().map_err(|e| io_err(out, e))?;
    Ok(())
}

/// The tensor of table row `spec` as llama.cpp's converter stores it: read from the HF
/// checkpoint and checked against the table, rows permuted where the table says so, a matrix
/// in the type `ftype` picks for its role, a vector (norm, bias) in F32.
fn gguf_tensor(
    st: &candle_core::safetensors::MmapedSafetensors,
    spec: &ParamSpec,
    ftype: FileType,
    cfg: &ModelConfig,
) -> Result<QTensor> {
    let name = &spec.hf_name;
    let stored = st.get(name).ok().map(|view| view.shape().to_vec());
    spec.check(CheckpointFormat::Hf, stored.as_deref())?;
    let mut t = st.load(name, &Device::Cpu)?.to_dtype(DType::F32)?;
    if let Some(heads) = spec.gguf_row_permutation {
        t = permute_dense(&t, heads)?;
    }
    if t.rank() == 1 {
        return Ok(QTensor::quantize(&t, GgmlDType::F32)?);
    }
    let role = MixRole::of(spec.role, cfg.tie_word_embeddings);
    // Only attn_v and ffn_down choose by layer; the model-level matrices pass layer 0.
    let want = ftype.wanted(role, spec.layer.unwrap_or(0), cfg.num_hidden_layers);
    Ok(QTensor::quantize(&t, fit_type(want, t.dim(1)?))?)
}

/// Llama-3 rope scaling as llama.cpp stores it, per-dimension divisors [head_dim / 2] for
/// `rope_freqs.weight`; None for the other scalings.
fn rope_freq_factors(cfg: &ModelConfig) -> Option<Vec<f32>> {
    match &cfg.rope.scaling {
        RopeScaling::None | RopeScaling::Linear { .. } => None,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => Some(llama3_rope_factors(
            cfg.rope.theta,
            cfg.head_dim,
            *factor,
            *low_freq_factor,
            *high_freq_factor,
            *original_max_position_embeddings,
        )),
        RopeScaling::FreqFactors { factors } => Some(factors.clone()),
    }
}

/// The `general.*` and `{arch}.*` metadata of the model in `hf_dir` and its special token ids,
/// in the order llama.cpp's converter writes them.
fn model_metadata(cfg: &ModelConfig, hf_dir: &Path, ftype: FileType) -> Vec<(String, Value)> {
    let arch = arch_name(cfg.architecture);
    let u32v = |x: usize| Value::U32(x as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            "general.name".into(),
            Value::String(
                hf_dir
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| arch.to_string()),
            ),
        ),
        ("general.file_type".into(), Value::U32(ftype.llama_ftype())),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            format!("{arch}.context_length"),
            u32v(cfg.max_position_embeddings),
        ),
        (format!("{arch}.embedding_length"), u32v(cfg.hidden_size)),
        (format!("{arch}.block_count"), u32v(cfg.num_hidden_layers)),
        (
            format!("{arch}.feed_forward_length"),
            u32v(cfg.intermediate_size),
        ),
        (format!("{arch}.rope.dimension_count"), u32v(cfg.head_dim)),
        (
            format!("{arch}.attention.head_count"),
            u32v(cfg.num_attention_heads),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            u32v(cfg.num_key_value_heads),
        ),
        (format!("{arch}.attention.key_length"), u32v(cfg.head_dim)),
        (format!("{arch}.attention.value_length"), u32v(cfg.head_dim)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        (
            format!("{arch}.rope.freq_base"),
            Value::F32(cfg.rope.theta as f32),
        ),
        (format!("{arch}.vocab_size"), u32v(cfg.vocab_size)),
    ];
    if let RopeScaling::Linear { factor } = &cfg.rope.scaling {
        md.push((
            format!("{arch}.rope.scaling.type"),
            Value::String("linear".into()),
        ));
        md.push((
            format!("{arch}.rope.scaling.factor"),
            Value::F32(*factor as f32),
        ));
    }
    if let Some(bos) = cfg.bos_token_id {
        md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)));
    }
    let eos = &cfg.eos_token_ids;
    if let Some(&first) = eos.first() {
        md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(first)));
    }
    if eos.len() >= 3 {
        md.push(("tokenizer.ggml.eom_token_id".into(), Value::U32(eos[1])));
    }
    if eos.len() >= 2 {
        md.push((
            "tokenizer.ggml.eot_token_id".into(),
            Value::U32(eos[eos.len() - 1]),
        ));
    }
    md
}

/// llama.cpp tokenizer metadata for the checkpoint in `hf_dir`: the byte-level BPE of its
/// `tokenizer.json` as `gpt2` (as `convert_hf_to_gguf.py` writes it), or `none` with the
/// vocabulary size when there is no tokenizer (llama.cpp then adds dummy tokens).
fn tokenizer_metadata(hf_dir: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let path = hf_dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(vec![(
            "tokenizer.ggml.model".into(),
            Value::String("none".into()),
        )]);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let bad = |field: &str, why: &str| {
        EngineError::InvalidArgument(format!("{}: {field}: {why}", path.display()))
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad("(file)", &e.to_string()))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad(
            "model.type",
            "only byte-level BPE tokenizers can be embedded in GGUF",
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab", "missing"))?;
    let mut tokens = vec![None; vocab_size];
    let mut types = vec![1i32; vocab_size]; // llama.cpp: 1 normal, 3 control, 4 user-defined
    let mut put = |id: u64, tok: &str| -> Result<()> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            bad(
                "model.vocab",
                &format!("id {id} beyond vocab_size {vocab_size}"),
            )
        })?;
        *slot = Some(tok.to_owned());
        Ok(())
    };
    for (tok, id) in vocab {
        put(
            id.as_u64()
                .ok_or_else(|| bad("model.vocab", "non-integer id"))?,
            tok,
        )?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let id = added["id"]
            .as_u64()
            .ok_or_else(|| bad("added_tokens.id", "missing"))?;
        let content = added["content"]
            .as_str()
            .ok_or_else(|| bad("added_tokens.content", "missing"))?;
        put(id, content)?;
        types[id as usize] = if added["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
    }
    // Ids the tokenizer does not define (padding rows of the embedding) get placeholder names,
    // as llama.cpp's converter does.
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_none() {
                types[i] = 5; // unused
            }
            Value::String(t.unwrap_or_else(|| format!("[PAD{i}]")))
        })
        .collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(Value::String(s.clone())),
            serde_json::Value::Array(pair) => match (pair.first(), pair.get(1)) {
                (Some(serde_json::Value::String(a)), Some(serde_json::Value::String(b))) => {
                    Ok(Value::String(format!("{a} {b}")))
                }
                _ => Err(bad("model.merges", "expected [a, b] string pairs")),
            },
            _ => Err(bad("model.merges", "expected strings or pairs")),
        })
        .collect::<Result<_>>()?;
    // llama.cpp picks its pre-tokenizer by name; recognise the split regexes it knows.
    let pre_text = json["pre_tokenizer"].to_string();
    let pre = if pre_text.contains("p{N}{1,3}") {
        "llama-bpe"
    } else if pre_text.contains("p{N}") && pre_text.contains("(?i:'s|'t|'re|'ve|'m|'ll|'d)") {
        "qwen2"
    } else {
        "default"
    };
    let mut md = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ];
    let config_path = hf_dir.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&config_path) {
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", config_path.display())))?;
        if let Some(template) = config["chat_template"].as_str() {
            md.push((
                "tokenizer.chat_template".into(),
                Value::String(template.to_owned()),
            ));
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_on_raw_blocks() {
        let (heads, hd, inp) = (2usize, 16usize, 64usize);
        let rows = heads * hd;
        let w = Tensor::arange(0f32, (rows * inp) as f32, &Device::Cpu)
            .unwrap()
            .reshape((rows, inp))
            .unwrap();
        let p = permute_dense(&w, heads).unwrap();
        let (wv, pv) = (
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for dtype in [GgmlDType::F32, GgmlDType::Q8_0] {
            // Raw rows: permuted blocks un-permuted equal the blocks of the original.
            let raw = crate::quant::quantize_rows(&pv, rows, inp, dtype).unwrap();
            let back = permute_rows_raw(&raw, rows, heads, false).unwrap();
            assert_eq!(
                back,
                crate::quant::quantize_rows(&wv, rows, inp, dtype).unwrap()
            );
            assert_eq!(permute_rows_raw(&back, rows, heads, true).unwrap(), raw);
            // A view with the row order reads the original rows in place.
            let view = crate::quant::QMatrix::quantize(&pv, rows, inp, dtype)
                .unwrap()
                .with_row_order(unpermute_order(rows, heads).unwrap())
                .unwrap();
            let plain = crate::quant::QMatrix::quantize(&wv, rows, inp, dtype).unwrap();
            let (mut a, mut b) = (vec![0f32; inp], vec![0f32; inp]);
            for r in 0..rows {
                view.dequantize_row(r, &mut a);
                plain.dequantize_row(r, &mut b);
                assert_eq!(a, b, "{dtype:?} row {r}");
            }
        }
    }
}
