//! Model architectures: one decoder-only transformer covering Llama 3.x, Qwen2 and Qwen3.
//!
//! Shared layers live in [`layers`]; the per-architecture differences are only which tensors
//! exist (biases, Qwen3's per-head q/k norms, a tied or own output head), declared with their
//! names and shapes in the one parameter table, [`params`], which both loaders (HF safetensors
//! and GGUF) walk.
//!
//! Numerics follow HF eager attention: compute in the weights' dtype, RMSNorm and softmax in
//! f32, rope tables in f32 cast to the activation dtype.

mod cache;
mod cpu_attention;
mod error;
mod gguf_load;
mod host_step;
mod layers;
pub mod params;
mod ragged;
pub mod random;
mod rope;
mod weights;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use cache::KvCache;
pub use error::EngineError;
pub use weights::safetensors_files;

use crate::config::ModelConfig;
use layers::{
    causal_mask, padded_causal_mask, DecoderLayer, Embedding, LayerSource, Linear, RmsNorm,
};
use params::ModelParams;
use rope::Rope;

type Result<T> = std::result::Result<T, EngineError>;

/// Hidden states of one forward pass, all in f32, for parity tests.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Embedding lookup, [batch, seq, hidden].
    pub embeddings: Tensor,
    /// Residual stream after each decoder layer, each [batch, seq, hidden].
    pub layer_outputs: Vec<Tensor>,
    /// Output of the final RMSNorm, [batch, seq, hidden].
    pub final_norm: Tensor,
    /// Logits, [batch, seq, vocab].
    pub logits: Tensor,
}

/// A loaded decoder-only language model.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    dtype: DType,
    device: Device,
    /// [vocab, hidden]
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// [vocab, hidden]; shares storage with `embed_tokens` when tied (except for bf16 on CPU,
    /// where matmul weights are kept in f32).
    lm_head: Linear,
    rope: Rope,
    /// What KV caches store keys and values as.
    kv_dtype: DType,
    /// The decode step without the tensor graph, built on first use ([`host_step`]).
    host: std::sync::OnceLock<Option<host_step::HostPlan>>,
}

impl Model {
    /// Load `dir/config.json` and `dir/model.safetensors` (or the shards listed in
    /// `dir/model.safetensors.index.json`). `dtype` None = the device's default
    /// (bf16 on a GPU), else the config's dtype, else f32 ([`crate::device::compute_dtype`]).
    ///
    /// A path to a `.gguf` file loads it with [`Model::load_gguf`] instead (`dtype` must then be
    /// None or f32: GGUF models compute in f32).
    pub fn load(dir: &Path, dtype: Option<DType>, device: &Device) -> Result<Model> {
        if crate::gguf::is_gguf_path(dir) {
            if let Some(d) = dtype.filter(|d| *d != DType::F32) {
                return Err(EngineError::InvalidArgument(format!(
                    "GGUF models compute in f32 (got dtype {d:?})"
                )));
            }
            return Self::load_gguf(dir, device);
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let dtype = crate::device::compute_dtype(dtype, device, config.dtype);
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(EngineError::InvalidArgument(format!(
                "unsupported compute dtype {dtype:?} (f32, bf16, f16)"
            )));
        }
        let files = weights::safetensors_files(dir)?;
        let w = weights::Weights::open(&files, dtype, device)?;
        Self::from_weights(config, &w, dtype, device)
    }

    /// Load a llama.cpp GGUF file (architectures llama, qwen2, qwen3). Block-quantized linear
    /// weights (Q8_0, Q4_K, Q6_K, …) stay quantized and are multiplied with candle's
    /// `QMatMul`; everything else is dequantized to f32, and the model computes in f32.
    /// Llama Q/K rows are un-permuted from llama.cpp's rope layout, and `rope_freqs.weight`
    /// (Llama-3 scaling) divides the rope inverse frequencies. Its KV caches store f16, as
    /// llama.cpp's do by default ([`Model::with_kv_dtype`] changes that).
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Model> {
        gguf_load::load(path, device)
    }

    /// Build a model from tensors already in memory, named as in an HF checkpoint
    /// (`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`, …). The tensors
    /// are copied (detached) into the compute `dtype`; the trainer uses this to roll out its
    /// current policy through the KV-cache path without writing a checkpoint.
    pub fn from_tensors(
        config: ModelConfig,
        tensors: std::collections::HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<Model> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(EngineError::InvalidArgument(format!(
                "unsupported compute dtype {dtype:?} (f32, bf16, f16)"
            )));
        }
        let w = weights::Weights::from_map(tensors, dtype, device);
        Self::from_weights(config, &w, dtype, device)
    }

    fn from_weights(
        config: ModelConfig,
        w: &weights::Weights,
        dtype: DType,
        device: &Device,
    ) -> Result<Model> {
        let params = ModelParams::new(&config);
        let embed_tokens = w.embedding(&params.embed_tokens)?;
        let layers = params
            .layers
            .iter()
            .map(|p| DecoderLayer::load(w, &config, p))
            .collect::<Result<Vec<_>>>()?;
        let norm = w.rms_norm(&params.norm, config.rms_norm_eps)?;
        // Tied checkpoints carry no lm_head.weight (and HF ignores one if present).
        let lm_head = match (&embed_tokens, &params.lm_head) {
            (_, Some(head)) => w.head(head)?,
            (Embedding::Quantized(view), None) => Linear::from_matrix(view.clone(), None),
            (Embedding::Dense(t), None) => Linear::dense(t.to_dtype(w.matmul_dtype())?, None)?,
        };
        let rope = Rope::new(&config.rope, config.head_dim);
        Ok(Model {
            dtype,
            device: device.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            config,
            kv_dtype: dtype,
            host: Default::default(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Compute dtype (the weights' dtype after loading).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What KV caches store keys and values as: the compute dtype for checkpoints, f16 for
    /// GGUF files (llama.cpp's default cache type, half the memory and half the bytes a decode
    /// step reads).
    pub fn kv_dtype(&self) -> DType {
        self.kv_dtype
    }

    /// The same model with caches that store keys and values as `dtype` (f32 for an exact
    /// comparison with an f32 reference).
    pub fn with_kv_dtype(mut self, dtype: DType) -> Self {
        self.kv_dtype = dtype;
        self
    }

    /// An empty KV cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(
            self.config.num_hidden_layers,
            batch,
            self.config.max_position_embeddings,
        )
        .with_dtype(self.kv_dtype)
    }

    /// An empty KV cache for a left-padded batch: sequence `i` of every input to
    /// [`Model::forward_batch`] through this cache starts with `pads[i]` pad tokens (see
    /// [`crate::generate::left_pad`]). The pads stay in the cache and stay masked.
    pub fn new_padded_cache(&self, pads: &[usize]) -> KvCache {
        self.new_cache(pads.len()).with_pads(pads.to_vec())
    }

    /// Forward pass of a left-padded batch, as HF runs batched generation: input_ids
    /// [batch, seq] u32, where (on the first call, the prefill) sequence `i` begins with
    /// `cache.pads()[i]` pad tokens; later calls (decode steps) append to every sequence.
    /// Each sequence's rope positions start at 0 at its first real token (HF's
    /// `cumsum(attention_mask) - 1`), and its pad positions are masked out of every attention.
    /// Appends to the cache and returns the f32 logits of the last position, [batch, vocab].
    ///
    /// `cache` must come from [`Model::new_padded_cache`]; each sequence needs at least one
    /// real token in the prefill (`pads[i] < seq`).
    pub fn forward_batch(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let Some(pads) = cache.pads() else {
            return Err(EngineError::InvalidArgument(
                "forward_batch needs a padded cache (Model::new_padded_cache)".into(),
            ));
        };
        let s = input_ids.dim(1)?;
        if cache.is_empty() && pads.iter().any(|&p| p >= s) {
            return Err(EngineError::InvalidArgument(format!(
                "every sequence needs a real token: pads {pads:?} for a prefill of {s} positions"
            )));
        }
        self.forward_last(input_ids, cache)
    }

    /// input_ids [batch, seq] u32 at rope positions `cache.next_position() ..`; appends to the
    /// cache and returns f32 logits [batch, seq, vocab] for every position.
    pub fn forward(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let start = cache.next_position();
        self.forward_at(input_ids, start, cache)
    }

    /// Like [`Model::forward`] but only the last position's logits, [batch, vocab] f32
    /// (skips the lm_head over the prompt during prefill).
    pub fn forward_last(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        if let Some(tokens) = self.unpadded_row(input_ids, cache)? {
            let logits = match tokens.as_slice() {
                [token] => self.host_decode(&[*token], &mut [cache])?,
                _ => self.host_prompt(&tokens, cache)?,
            };
            if let Some(logits) = logits {
                return Ok(logits);
            }
        }
        let start = cache.next_position();
        let hidden = self.hidden(input_ids, start, cache, None)?; // [b, s, hidden]
        let s = hidden.dim(1)?;
        let last = hidden.narrow(1, s - 1, 1)?.squeeze(1)?.contiguous()?; // [b, hidden]
        Ok(self.lm_head.forward(&last)?.to_dtype(DType::F32)?)
    }

    /// The tokens of a batch-1 input [1, s ≥ 1] through an unpadded cache (a prompt or a
    /// decode step), their ids checked against the vocabulary; None for any other input.
    fn unpadded_row(&self, input_ids: &Tensor, cache: &KvCache) -> Result<Option<Vec<u32>>> {
        let single_row = matches!(input_ids.dims(), [1, s] if *s > 0);
        if !single_row || cache.batch() != 1 || cache.pads().is_some() {
            return Ok(None);
        }
        let tokens = input_ids
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?;
        let vocab = self.config.vocab_size;
        if tokens.iter().any(|&t| t as usize >= vocab) {
            return Err(EngineError::InvalidArgument(format!(
                "token id out of range (vocab size {vocab})"
            )));
        }
        Ok(Some(tokens))
    }

    /// Same as [`Model::forward`] with explicit rope positions `start_pos .. start_pos + seq`.
    /// `start_pos` must be at least `cache.len()`; on an empty cache any start is allowed.
    pub fn forward_at(
        &self,
        input_ids: &Tensor,
        start_pos: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden = self.hidden(input_ids, start_pos, cache, None)?;
        Ok(self.lm_head.forward(&hidden)?.to_dtype(DType::F32)?)
    }

    /// Embeddings, every layer's output, the final norm and the logits (fresh cache, position 0).
    pub fn forward_trace(&self, input_ids: &Tensor) -> Result<Trace> {
        let (b, _) = input_ids.dims2()?;
        let mut cache = self.new_cache(b);
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let hidden = self.hidden(input_ids, 0, &mut cache, Some(&mut states))?;
        let logits = self.lm_head.forward(&hidden)?.to_dtype(DType::F32)?;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let mut states = states.iter();
        let embeddings = f32(states.next().expect("embeddings recorded"))?;
        let layer_outputs = states.map(f32).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Trace {
            embeddings,
            layer_outputs,
            final_norm: hidden.to_dtype(DType::F32)?,
            logits,
        })
    }

    /// Runs embeddings + decoder layers + final norm; returns [b, s, hidden] in the compute
    /// dtype. Records the embeddings and each layer output into `trace` if given.
    fn hidden(
        &self,
        input_ids: &Tensor,
        start_pos: usize,
        cache: &mut KvCache,
        mut trace: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        if s == 0 {
            return Err(EngineError::InvalidArgument("empty input sequence".into()));
        }
        if b != cache.batch() {
            return Err(EngineError::InvalidArgument(format!(
                "KV cache was created for batch {} but input_ids has batch {b}",
                cache.batch()
            )));
        }
        let offset = cache.len();
        if start_pos < offset {
            return Err(EngineError::InvalidArgument(format!(
                "start position {start_pos} lies inside the cache (len {offset})"
            )));
        }
        let input_ids = input_ids.to_dtype(DType::U32)?;
        let flat = input_ids.flatten_all()?;
        let vocab = self.config.vocab_size as u32;
        if flat.max(0)?.to_scalar::<u32>()? >= vocab {
            return Err(EngineError::InvalidArgument(format!(
                "token id out of range (vocab size {vocab})"
            )));
        }
        let mut x = self
            .embed_tokens
            .forward(&flat)?
            .to_dtype(self.dtype)?
            .reshape((b, s, self.config.hidden_size))?; // [b, s, hidden]
        if let Some(t) = trace.as_deref_mut() {
            t.push(x.clone());
        }
        let (cos, sin, mask) = match cache.pads() {
            None => {
                let (cos, sin) = self.rope.cos_sin(start_pos, s, self.dtype, &self.device)?; // [s, hd/2]
                let mask = if s > 1 {
                    Some(causal_mask(s, offset, &self.device)?) // [s, offset + s]
                } else {
                    None
                };
                (cos, sin, mask)
            }
            Some(pads) => {
                // Left-padded batch: per-sequence positions, counted from the first real token
                // (pad positions get 0; they are masked and their outputs ignored).
                let positions: Vec<usize> = pads
                    .iter()
                    .flat_map(|&pad| (start_pos..start_pos + s).map(move |p| p.saturating_sub(pad)))
                    .collect();
                let (cos, sin) =
                    self.rope
                        .cos_sin_at(&positions, b, s, self.dtype, &self.device)?; // [b, s, hd/2]
                let mask = padded_causal_mask(pads, s, offset, &self.device)?; // [b, 1, 1, s, kv]
                (cos, sin, Some(mask))
            }
        };
        cache.set_pos_offset(start_pos - offset);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &cos, &sin, mask.as_ref(), cache, i)?;
            if let Some(t) = trace.as_deref_mut() {
                t.push(x.clone());
            }
        }
        cache.advance(s);
        self.norm.forward(&x)
    }
}
