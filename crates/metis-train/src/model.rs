//! The training forward pass: Llama 3.x (incl. `llama3` rope scaling, tied or untied
//! embeddings), Qwen2 (q/k/v bias) and Qwen3 (q/k norm), with weights as candle
//! [`Var`]s (full fine-tuning) or frozen tensors plus LoRA adapters.
//!
//! # API used by the SFT and GRPO loops
//!
//! ```ignore
//! use metis_train::model::{BatchLayout, TrainModel, TrainModelOptions};
//! use metis_train::optim::{clip_grad_norm, AdamW, AdamWConfig, Grads};
//!
//! let opts = TrainModelOptions { lora: Some(LoraConfig::default()), ..Default::default() };
//! let model = TrainModel::load(dir, &opts)?;                 // HF dir: config.json + safetensors
//! let layout = BatchLayout::from_lengths(&[5, 3], 5)?;      // right padding (or packed(..))
//! let logits = model.forward(&ids, &layout, true)?;         // [b, s, vocab] f32, every position
//! let lp = model.token_logprobs(&ids, &layout, &targets, 1.0, true)?; // [b, s] f32
//! let loss = ...;                                            // masked mean of -lp
//! let mut grads = Grads::from_backward(&loss.backward()?, &model.trainable());
//! // or, loss from logits, optionally with activation checkpointing (same gradients):
//! let out = model.loss_and_grads(&ids, &layout, true, ckpt, |lg| Ok((loss_of(lg)?, ())))?;
//! let mut grads = out.grads;
//! let norm = clip_grad_norm(&mut grads, 1.0)?;              // pre-clip global norm
//! opt.step(&grads)?;                                         // opt = AdamW::new(model.trainable(), cfg)
//! model.save(out_dir)?;     // full: HF dir (engine/transformers); LoRA: PEFT adapter dir
//! model.set_adapter_enabled(false); // LoRA off = the reference model (GRPO KL)
//! ```
//!
//! * [`TrainModel::forward`] takes input ids `[b, s]` (u32) and a [`BatchLayout`] (padding,
//!   packing with per-document position restarts, explicit positions) and returns logits for
//!   **every** position `[b, s, vocab]` in f32 (f64 for an f64 model).
//! * [`TrainModel::token_logprobs`] returns `log softmax(logits / T)[target]` `[b, s]`, computed
//!   as `x - max.detach() - log(sum(exp(x - max)))` gathered at the targets (differentiable).
//! * [`TrainModel::trainable`] lists the trainable Vars by the name they are saved under (HF
//!   names for full fine-tuning, PEFT names for LoRA).
//!
//! # Numerics
//!
//! Only ops with a backward. candle's fused `softmax_last_dim`, `rms_norm`, `rotary_emb::rope`
//! and sdpa silently drop gradients and are not used. On the CPU in f32/f64, linear layers,
//! RMSNorm, SwiGLU, rope, the masked attention and the target log-probabilities are Metis's own
//! fused kernels with their backward written out (`fused`, tested against the spelled-out
//! forms). Elsewhere (bf16, CUDA) they are spelled out as candle ops: RMSNorm as
//! `x * rsqrt(mean(x²) + eps) * w` (normalisation in f32), softmax with a detached max, rope
//! as `x*cos + rotate_half(x)*sin` with narrow/cat, the causal + padding/packing mask added to
//! the scores.
//!
//! Compute dtypes: f32, bf16 and f64 (f64 is for finite-difference tests). bf16: weights
//! bf16, norms/softmax/silu in f32 as transformers; candle's CPU backend has no bf16 gemm,
//! so on CPU bf16 matmuls widen both operands to f32 and round the product once to bf16 (the
//! numerics of torch's CPU bf16 gemm). LoRA adapters are always f32 (f64 in an f64 model).
//! The CUDA path (`--features cuda`) uses the same code with native matmuls; it has not been
//! run on a GPU yet.
//!
//! Memory: the fused attention holds `[128, s]` score blocks per head being computed (the
//! spelled-out path materialises `[b, heads, s, s]`), and [`TrainModel::token_logprobs`] the
//! `[b, s, vocab]` logits. A plain backward keeps every layer's activations until it reaches
//! them; [`TrainModel::backward_checkpointed`] (activation checkpointing, `--grad-checkpoint`
//! in both trainers, through [`TrainModel::loss_and_grads`]) keeps one `[b, s, hidden]` input
//! per layer and the graph of one layer at a time, recomputing each layer in the backward
//! (about one more forward), with the same gradients and dropout masks.

mod error;
mod fused;
mod layers;
mod layout;
mod recompute;
mod rope;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var, D};
use metis_engine::config::ModelConfig;
use metis_engine::model::params::{
    CheckpointFormat, LayerParams, LinearParams, ModelParams, ParamSpec, Projection,
};

pub use error::{Result, TrainError};
pub use layout::BatchLayout;
pub use recompute::LossGrads;

use crate::lora::{mix, peft_name, LoraAdapter, LoraConfig};
pub(crate) use layers::acc_dtype;
use layers::{mm, rms_norm, Attention, Ctx, DecoderLayer, Linear, Mlp, Positions};
use rope::Rope;

/// How to load a [`TrainModel`].
#[derive(Debug, Clone)]
pub struct TrainModelOptions {
    /// Compute dtype: F32, BF16, or F64 (tests).
    pub dtype: DType,
    pub device: Device,
    /// None = full fine-tuning (every weight a Var); Some = frozen base + LoRA adapters.
    pub lora: Option<LoraConfig>,
    /// Seed of the dropout stream.
    pub seed: u64,
}

impl Default for TrainModelOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            lora: None,
            seed: 0,
        }
    }
}

/// A decoder-only model for training (see the module docs).
#[derive(Debug)]
pub struct TrainModel {
    config: ModelConfig,
    dtype: DType,
    device: Device,
    source_dir: PathBuf,
    /// [vocab, hidden]
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    /// [vocab, hidden]; None when tied to `embed_tokens`.
    lm_head: Option<Tensor>,
    rope: Rope,
    trainable: Vec<(String, Var)>,
    lora: Option<LoraConfig>,
    adapters_enabled: bool,
    seed: u64,
    /// Training forwards run so far (keys the dropout masks).
    forward_count: AtomicU64,
}

/// What every layer of one forward shares: the token ids, where each token is and what it
/// attends to, and the LoRA switches with the pass's dropout key.
#[derive(Debug)]
struct Pass {
    /// `[b * s]` u32.
    ids: Tensor,
    batch: usize,
    seq: usize,
    pos: Positions,
    adapters: bool,
    /// Some(key) in a training forward with adapters: every layer's masks derive from it.
    dropout_key: Option<u64>,
}

impl Pass {
    /// Layer `layer`'s context: its dropout key is the pass's mixed with the layer index.
    fn ctx(&self, layer: usize) -> Ctx {
        Ctx {
            adapters: self.adapters,
            dropout_key: self.dropout_key.map(|k| mix(&[k, layer as u64])),
        }
    }
}

/// Runs `f` on a thread of rayon's global pool and returns its result.
///
/// The training kernels (candle's gemm and the fused kernels) fan out over that pool. Called from a
/// thread outside it, every parallel region wakes the pool and parks the caller, and the idle
/// workers spin against the caller for the cores; run from inside, the caller is itself one of
/// the workers. The SFT and GRPO loops run their steps through this.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// The safetensors files of an HF model directory (single file or sharded with an index).
pub use metis_engine::model::safetensors_files;

/// Reads the weights the parameter table lists from an HF checkpoint, checked against the
/// table's shapes, and makes Vars of them (full fine-tuning) or keeps them frozen and adds
/// LoRA adapters.
struct Loader<'a> {
    st: MmapedSafetensors,
    dir: PathBuf,
    dtype: DType,
    device: Device,
    lora: Option<&'a LoraConfig>,
    /// Full fine-tuning: the base weights by HF name, in load order.
    weight_vars: Vec<(String, Var)>,
    /// LoRA: the adapters' A and B by PEFT name, in load order.
    lora_vars: Vec<(String, Var)>,
}

impl<'a> Loader<'a> {
    /// Maps the safetensors files of `dir`.
    fn open(dir: &Path, opts: &'a TrainModelOptions) -> Result<Self> {
        let files = safetensors_files(dir)?;
        for f in &files {
            if !f.is_file() {
                return Err(TrainError::io(
                    f,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "shard not found"),
                ));
            }
        }
        // SAFETY: read-only mmap of the checkpoint; the files must not change while loading.
        let st = unsafe { MmapedSafetensors::multi(&files)? };
        Ok(Self {
            st,
            dir: dir.to_path_buf(),
            dtype: opts.dtype,
            device: opts.device.clone(),
            lora: opts.lora.as_ref(),
            weight_vars: Vec::new(),
            lora_vars: Vec::new(),
        })
    }

    /// Table row `spec`'s tensor in the compute dtype (a Var's tensor for full fine-tuning).
    fn get(&mut self, spec: &ParamSpec) -> Result<Tensor> {
        let name = &spec.hf_name;
        let stored = self.st.get(name).ok().map(|view| view.shape().to_vec());
        spec.check(CheckpointFormat::Hf, stored.as_deref())
            .map_err(|e| TrainError::table_mismatch(e, &self.dir))?;
        let t = self.st.load(name, &self.device)?.to_dtype(self.dtype)?;
        if self.lora.is_some() {
            return Ok(t);
        }
        let v = Var::from_tensor(&t)?;
        let t = v.as_tensor().clone();
        self.weight_vars.push((name.clone(), v));
        Ok(t)
    }

    fn linear(&mut self, p: &LinearParams) -> Result<Linear> {
        let weight = self.get(&p.weight)?;
        let bias = p.bias.as_ref().map(|b| self.get(b)).transpose()?;
        let lora = self.adapter(p)?;
        Ok(Linear { weight, bias, lora })
    }

    /// A fresh LoRA adapter for projection `p`, if the LoRA config targets it.
    fn adapter(&mut self, p: &LinearParams) -> Result<Option<LoraAdapter>> {
        let Some(cfg) = self.lora.filter(|c| c.targets(p.projection.hf_name())) else {
            return Ok(None);
        };
        // One init stream per (layer, projection), numbered as since the first release.
        let stream = (p.layer * Projection::ALL.len() + p.projection.index()) as u64;
        let (out, inp) = (p.out_features(), p.in_features());
        let ad = LoraAdapter::new(inp, out, cfg, stream, acc_dtype(self.dtype), &self.device)?;
        let module = p.hf_module();
        self.lora_vars.push((peft_name(&module, "A"), ad.a.clone()));
        self.lora_vars.push((peft_name(&module, "B"), ad.b.clone()));
        Ok(Some(ad))
    }

    fn decoder_layer(&mut self, cfg: &ModelConfig, p: &LayerParams) -> Result<DecoderLayer> {
        let a = &p.self_attn;
        let eps = cfg.rms_norm_eps;
        let input_layernorm = self.get(&p.input_layernorm)?;
        let q_proj = self.linear(&a.q_proj)?;
        let k_proj = self.linear(&a.k_proj)?;
        let v_proj = self.linear(&a.v_proj)?;
        let q_norm = a.q_norm.as_ref().map(|s| self.get(s)).transpose()?;
        let k_norm = a.k_norm.as_ref().map(|s| self.get(s)).transpose()?;
        let o_proj = self.linear(&a.o_proj)?;
        let post_attention_layernorm = self.get(&p.post_attention_layernorm)?;
        let mlp = Mlp {
            gate_proj: self.linear(&p.mlp.gate_proj)?,
            up_proj: self.linear(&p.mlp.up_proj)?,
            down_proj: self.linear(&p.mlp.down_proj)?,
        };
        Ok(DecoderLayer {
            input_layernorm,
            self_attn: Attention {
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                q_norm,
                k_norm,
                num_heads: cfg.num_attention_heads,
                num_kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
                eps,
            },
            post_attention_layernorm,
            mlp,
            eps,
        })
    }

    /// The trainable Vars: the adapters with LoRA, else every weight.
    fn into_trainable(self) -> Vec<(String, Var)> {
        if self.lora.is_some() {
            self.lora_vars
        } else {
            self.weight_vars
        }
    }
}

/// Checks that `opts` asks for something the trainer supports.
fn check_options(opts: &TrainModelOptions) -> Result<()> {
    if !matches!(opts.dtype, DType::F32 | DType::BF16 | DType::F64) {
        return Err(TrainError::InvalidArgument(format!(
            "unsupported training dtype {:?} (f32, bf16, f64)",
            opts.dtype
        )));
    }
    match &opts.lora {
        Some(l) => l.validate(),
        None => Ok(()),
    }
}

impl TrainModel {
    /// Load `dir/config.json` and the HF safetensors weights, walking the parameter table of
    /// the config's architecture. See [`TrainModelOptions`].
    pub fn load(dir: &Path, opts: &TrainModelOptions) -> Result<Self> {
        check_options(opts)?;
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let params = ModelParams::new(&config);
        let mut ld = Loader::open(dir, opts)?;
        let embed_tokens = ld.get(&params.embed_tokens)?;
        let layers = params
            .layers
            .iter()
            .map(|p| ld.decoder_layer(&config, p))
            .collect::<Result<Vec<_>>>()?;
        let norm = ld.get(&params.norm)?;
        let lm_head = params.lm_head.as_ref().map(|p| ld.get(p)).transpose()?;
        Ok(Self {
            rope: Rope::new(&config.rope, config.head_dim),
            config,
            dtype: opts.dtype,
            device: opts.device.clone(),
            source_dir: dir.to_path_buf(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            trainable: ld.into_trainable(),
            lora: opts.lora.clone(),
            adapters_enabled: true,
            seed: opts.seed,
            forward_count: AtomicU64::new(0),
        })
    }

    /// Load `base_dir` with the PEFT adapter in `adapter_dir` (its `adapter_config.json` gives
    /// the LoRA configuration; `opts.lora` is ignored).
    pub fn load_with_adapter(
        base_dir: &Path,
        adapter_dir: &Path,
        opts: &TrainModelOptions,
    ) -> Result<Self> {
        let cfg = crate::checkpoint::read_adapter_config(adapter_dir)?;
        let opts = TrainModelOptions {
            lora: Some(cfg),
            ..opts.clone()
        };
        let model = Self::load(base_dir, &opts)?;
        crate::checkpoint::load_adapter_weights(&model, adapter_dir)?;
        Ok(model)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The directory the base weights were loaded from.
    pub fn source_dir(&self) -> &Path {
        &self.source_dir
    }

    /// The LoRA configuration (None for full fine-tuning).
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// The trainable Vars by saved name (HF names for full fine-tuning, PEFT names for LoRA),
    /// in model order. The Vars share storage with the model: updating them updates it.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.trainable.clone()
    }

    /// LoRA on/off (off = the frozen base model, the GRPO reference). No-op without LoRA.
    pub fn set_adapter_enabled(&mut self, on: bool) {
        self.adapters_enabled = on;
    }

    pub fn adapter_enabled(&self) -> bool {
        self.adapters_enabled && self.lora.is_some()
    }

    /// The dropout stream's position (number of training forwards so far); part of the
    /// training state for an exact resume.
    pub fn rng_state(&self) -> u64 {
        self.forward_count.load(Ordering::SeqCst)
    }

    pub fn set_rng_state(&self, state: u64) {
        self.forward_count.store(state, Ordering::SeqCst);
    }

    /// Logits `[b, s, vocab]` for every position: f32 (f64 for an f64 model).
    /// `train` enables LoRA dropout (and advances the dropout stream).
    pub fn forward(&self, input_ids: &Tensor, batch: &BatchLayout, train: bool) -> Result<Tensor> {
        let hidden = self.hidden(input_ids, batch, train)?;
        self.logits(&hidden)
    }

    /// Per-token log-probabilities `[b, s]` of `targets` (`[b, s]` u32) under
    /// `softmax(logits / temperature)`; differentiable. Padding positions get the log-prob of
    /// whatever target they hold (any valid id): mask them in the loss.
    pub fn token_logprobs(
        &self,
        input_ids: &Tensor,
        batch: &BatchLayout,
        targets: &Tensor,
        temperature: f64,
        train: bool,
    ) -> Result<Tensor> {
        let logits = self.forward(input_ids, batch, train)?;
        logprobs_from_logits(&logits, targets, temperature)
    }

    /// Embeddings, decoder layers and final norm: `[b, s, hidden]` in the compute dtype.
    fn hidden(&self, input_ids: &Tensor, batch: &BatchLayout, train: bool) -> Result<Tensor> {
        let pass = self.begin_pass(input_ids, batch, train)?;
        let mut x = self.embed(&pass)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &pass.pos, pass.ctx(i))?;
        }
        self.final_norm(&x)
    }

    /// Checks the batch and sets up what every layer of one forward shares. A training
    /// forward draws its dropout key here, once: a recomputation of a layer
    /// ([`recompute`]) reuses the pass and so sees the same masks.
    fn begin_pass(&self, input_ids: &Tensor, batch: &BatchLayout, train: bool) -> Result<Pass> {
        let (b, s) = input_ids.dims2()?;
        if (b, s) != (batch.batch(), batch.seq()) {
            return Err(TrainError::InvalidArgument(format!(
                "input_ids is [{b}, {s}] but the batch layout is [{}, {}]",
                batch.batch(),
                batch.seq()
            )));
        }
        if b == 0 || s == 0 {
            return Err(TrainError::InvalidArgument("empty batch".into()));
        }
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let vocab = self.config.vocab_size as u32;
        let max = ids.max(0)?.to_scalar::<u32>()?;
        if max >= vocab {
            return Err(TrainError::InvalidArgument(format!(
                "token id {max} out of range (vocab size {vocab})"
            )));
        }
        // The embeddings have the compute dtype and device, as every activation.
        let pos = if fused::applies(&self.embed_tokens) {
            Positions::Fused {
                rope: self.rope.half_tables(batch.positions()),
                mask: fused::AttentionMask::new(batch.segments(), s),
            }
        } else {
            let (cos, sin) = self
                .rope
                .tables(batch.positions(), b, s, self.dtype, &self.device)?;
            let bias = batch.attention_bias(acc_dtype(self.dtype), &self.device)?;
            Positions::Dense { cos, sin, bias }
        };
        let adapters = self.adapter_enabled();
        // Drawn last, so that a batch refused above leaves the stream where it was.
        let dropout_key = if train && adapters {
            let n = self.forward_count.fetch_add(1, Ordering::SeqCst);
            Some(mix(&[self.seed, n]))
        } else {
            None
        };
        Ok(Pass {
            ids,
            batch: b,
            seq: s,
            pos,
            adapters,
            dropout_key,
        })
    }

    /// The token embeddings `[b, s, hidden]` of the pass's ids.
    fn embed(&self, pass: &Pass) -> Result<Tensor> {
        Ok(self.embed_tokens.index_select(&pass.ids, 0)?.reshape((
            pass.batch,
            pass.seq,
            self.config.hidden_size,
        ))?)
    }

    /// The final RMSNorm over the last layer's output.
    fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.norm, self.config.rms_norm_eps)
    }

    /// Logits `[b, s, vocab]` (f32, f64 for an f64 model) of the normed hidden states.
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, s, h) = hidden.dims3()?;
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        if fused::applies(hidden) && w.dtype() == hidden.dtype() {
            return Ok(fused::linear(hidden, w)?); // [b, s, vocab]
        }
        let logits = mm(&hidden.reshape((b * s, h))?, &w.t()?)?;
        Ok(logits
            .reshape((b, s, self.config.vocab_size))?
            .to_dtype(acc_dtype(self.dtype))?)
    }

    /// The base weights by HF name with their current values (the trained values for full
    /// fine-tuning; without LoRA deltas). Tied models have no `lm_head.weight`.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let params = ModelParams::new(&self.config);
        let named = |spec: &ParamSpec, t: &Tensor| (spec.hf_name.clone(), t.clone());
        let mut out = vec![named(&params.embed_tokens, &self.embed_tokens)];
        for (p, l) in params.layers.iter().zip(&self.layers) {
            out.push(named(&p.input_layernorm, &l.input_layernorm));
            for (lp, lin) in p.linears().into_iter().zip(l.linears()) {
                out.push(named(&lp.weight, &lin.weight));
                out.extend(lp.bias.iter().zip(&lin.bias).map(|(s, b)| named(s, b)));
            }
            let (a, la) = (&p.self_attn, &l.self_attn);
            out.extend(a.q_norm.iter().zip(&la.q_norm).map(|(s, t)| named(s, t)));
            out.extend(a.k_norm.iter().zip(&la.k_norm).map(|(s, t)| named(s, t)));
            out.push(named(
                &p.post_attention_layernorm,
                &l.post_attention_layernorm,
            ));
        }
        out.push(named(&params.norm, &self.norm));
        out.extend(
            params
                .lm_head
                .iter()
                .zip(&self.lm_head)
                .map(|(s, t)| named(s, t)),
        );
        out
    }

    /// [`Self::named_weights`] with the enabled LoRA adapters folded in (`W + scaling * B @ A`,
    /// summed in the adapter dtype), detached: what a merged checkpoint or an inference copy of
    /// the policy holds. Merged weights are in the adapter dtype, the others in their own.
    pub fn merged_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let deltas: HashMap<String, Tensor> = if self.adapter_enabled() {
            self.lora_adapters()
                .into_iter()
                .map(|(module, a)| Ok((format!("{module}.weight"), a.delta()?)))
                .collect::<Result<_>>()?
        } else {
            HashMap::new()
        };
        self.named_weights()
            .into_iter()
            .map(|(name, w)| {
                let w = match deltas.get(&name) {
                    Some(d) => (w.to_dtype(d.dtype())? + d)?,
                    None => w,
                };
                Ok((name, w.detach()))
            })
            .collect()
    }

    /// The LoRA adapters by HF module path (`model.layers.N.self_attn.q_proj`).
    pub fn lora_adapters(&self) -> Vec<(String, &LoraAdapter)> {
        let params = ModelParams::new(&self.config);
        let mut out = Vec::new();
        for (p, l) in params.layers.iter().zip(&self.layers) {
            for (lp, lin) in p.linears().into_iter().zip(l.linears()) {
                if let Some(a) = &lin.lora {
                    out.push((lp.hf_module(), a));
                }
            }
        }
        out
    }

    /// Save: full fine-tuning → an HF model directory (loadable by `metis_engine` and
    /// transformers); LoRA → a PEFT adapter directory. See [`crate::checkpoint`].
    pub fn save(&self, out_dir: &Path) -> Result<()> {
        if self.lora.is_some() {
            crate::checkpoint::save_adapter(self, out_dir)
        } else {
            crate::checkpoint::save_full(self, out_dir)
        }
    }

    /// Save the model as a full HF directory; with LoRA (enabled) the adapters are merged into
    /// the weights (`W + scaling * B @ A`); with the adapters disabled the base is written.
    pub fn save_merged(&self, out_dir: &Path) -> Result<()> {
        crate::checkpoint::save_full(self, out_dir)
    }
}

impl DecoderLayer {
    /// The seven projections in `Projection::ALL` order (the table's `LayerParams::linears`).
    fn linears(&self) -> [&Linear; 7] {
        let a = &self.self_attn;
        let m = &self.mlp;
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
}

/// `log softmax(logits / temperature)` gathered at `targets`: logits `[b, s, vocab]`, targets
/// `[b, s]` (u32) → `[b, s]` in the logits' dtype, as
/// `x[t] - max.detach() - log(sum(exp(x - max.detach())))` (differentiable; never materialises
/// the full log-softmax).
pub fn logprobs_from_logits(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
    if temperature <= 0.0 {
        return Err(TrainError::InvalidArgument(format!(
            "temperature must be positive, got {temperature}"
        )));
    }
    let (b, s, v) = logits.dims3()?;
    if targets.dims() != [b, s] {
        return Err(TrainError::Shape {
            name: "targets".into(),
            expected: vec![b, s],
            got: targets.dims().to_vec(),
        });
    }
    let targets = targets.to_dtype(DType::U32)?;
    let tmax = targets.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if tmax as usize >= v {
        return Err(TrainError::InvalidArgument(format!(
            "target id {tmax} out of range (vocab size {v})"
        )));
    }
    if fused::applies(logits) {
        return Ok(fused::token_logprobs(logits, &targets, temperature)?);
    }
    logprobs_spelled(logits, &targets, temperature)
}

/// [`logprobs_from_logits`] as candle ops (bf16 and non-CPU devices); arguments checked.
fn logprobs_spelled(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
    let x = if temperature == 1.0 {
        logits.clone()
    } else {
        (logits / temperature)?
    };
    let max = x.max_keepdim(D::Minus1)?.detach(); // [b, s, 1]
    let lse = x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?; // [b, s, 1]
    let picked = x.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?; // [b, s, 1]
    Ok((picked - max)?.sub(&lse)?.squeeze(D::Minus1)?)
}
