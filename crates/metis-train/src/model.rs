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
//! `[b, s, vocab]` logits; there is no activation checkpointing yet.

mod error;
mod fused;
mod layers;
mod layout;
mod rope;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var, D};
use metis_engine::config::ModelConfig;

pub use error::{Result, TrainError};
pub use layout::BatchLayout;

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

/// Reads weights by HF name, makes Vars of them (full fine-tuning) or keeps them frozen.
struct Loader {
    st: MmapedSafetensors,
    dir: PathBuf,
    dtype: DType,
    device: Device,
    full: bool,
    trainable: Vec<(String, Var)>,
}

impl Loader {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if self.st.get(name).is_err() {
            return Err(TrainError::MissingTensor {
                path: self.dir.clone(),
                name: name.to_string(),
            });
        }
        let t = self.st.load(name, &self.device)?;
        if t.dims() != shape {
            return Err(TrainError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        let t = t.to_dtype(self.dtype)?;
        if self.full {
            let v = Var::from_tensor(&t)?;
            let t = v.as_tensor().clone();
            self.trainable.push((name.to_string(), v));
            Ok(t)
        } else {
            Ok(t)
        }
    }
}

impl TrainModel {
    /// Load `dir/config.json` and the HF safetensors weights. See [`TrainModelOptions`].
    pub fn load(dir: &Path, opts: &TrainModelOptions) -> Result<Self> {
        if !matches!(opts.dtype, DType::F32 | DType::BF16 | DType::F64) {
            return Err(TrainError::InvalidArgument(format!(
                "unsupported training dtype {:?} (f32, bf16, f64)",
                opts.dtype
            )));
        }
        if let Some(l) = &opts.lora {
            l.validate()?;
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
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
        let mut ld = Loader {
            st,
            dir: dir.to_path_buf(),
            dtype: opts.dtype,
            device: opts.device.clone(),
            full: opts.lora.is_none(),
            trainable: Vec::new(),
        };
        let lora_dtype = acc_dtype(opts.dtype);
        let mut lora_vars = Vec::new();
        let (h, hd, inter) = (
            config.hidden_size,
            config.head_dim,
            config.intermediate_size,
        );
        let (nh, nkv, eps) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.rms_norm_eps,
        );
        let embed_tokens = ld.get("model.embed_tokens.weight", &[config.vocab_size, h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |ld: &mut Loader,
                              module: &str,
                              short: &str,
                              idx: u64,
                              out: usize,
                              inp: usize,
                              bias: bool|
             -> Result<Linear> {
                let prefix = format!("{p}.{module}.{short}");
                let weight = ld.get(&format!("{prefix}.weight"), &[out, inp])?;
                let bias = if bias {
                    Some(ld.get(&format!("{prefix}.bias"), &[out])?)
                } else {
                    None
                };
                let lora = match &opts.lora {
                    Some(cfg) if cfg.targets(short) => {
                        let ad = LoraAdapter::new(
                            inp,
                            out,
                            cfg,
                            i as u64 * 7 + idx,
                            lora_dtype,
                            &opts.device,
                        )?;
                        lora_vars.push((peft_name(&prefix, "A"), ad.a.clone()));
                        lora_vars.push((peft_name(&prefix, "B"), ad.b.clone()));
                        Some(ad)
                    }
                    _ => None,
                };
                Ok(Linear { weight, bias, lora })
            };
            let input_layernorm = ld.get(&format!("{p}.input_layernorm.weight"), &[h])?;
            let q_proj = linear(
                &mut ld,
                "self_attn",
                "q_proj",
                0,
                nh * hd,
                h,
                config.qkv_bias,
            )?;
            let k_proj = linear(
                &mut ld,
                "self_attn",
                "k_proj",
                1,
                nkv * hd,
                h,
                config.qkv_bias,
            )?;
            let v_proj = linear(
                &mut ld,
                "self_attn",
                "v_proj",
                2,
                nkv * hd,
                h,
                config.qkv_bias,
            )?;
            let (q_norm, k_norm) = if config.has_qk_norm() {
                (
                    Some(ld.get(&format!("{p}.self_attn.q_norm.weight"), &[hd])?),
                    Some(ld.get(&format!("{p}.self_attn.k_norm.weight"), &[hd])?),
                )
            } else {
                (None, None)
            };
            let o_proj = linear(&mut ld, "self_attn", "o_proj", 3, h, nh * hd, config.o_bias)?;
            let post_attention_layernorm =
                ld.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?;
            let gate_proj = linear(&mut ld, "mlp", "gate_proj", 4, inter, h, config.mlp_bias)?;
            let up_proj = linear(&mut ld, "mlp", "up_proj", 5, inter, h, config.mlp_bias)?;
            let down_proj = linear(&mut ld, "mlp", "down_proj", 6, h, inter, config.mlp_bias)?;
            layers.push(DecoderLayer {
                input_layernorm,
                self_attn: Attention {
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj,
                    q_norm,
                    k_norm,
                    num_heads: nh,
                    num_kv_heads: nkv,
                    head_dim: hd,
                    eps,
                },
                post_attention_layernorm,
                mlp: Mlp {
                    gate_proj,
                    up_proj,
                    down_proj,
                },
                eps,
            });
        }
        let norm = ld.get("model.norm.weight", &[h])?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(ld.get("lm_head.weight", &[config.vocab_size, h])?)
        };
        let trainable = if opts.lora.is_some() {
            lora_vars
        } else {
            ld.trainable
        };
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
            trainable,
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
        let (b, s, h) = hidden.dims3()?;
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        if fused::applies(&hidden) && w.dtype() == hidden.dtype() {
            return Ok(fused::linear(&hidden, w)?); // [b, s, vocab]
        }
        let logits = mm(&hidden.reshape((b * s, h))?, &w.t()?)?;
        Ok(logits
            .reshape((b, s, self.config.vocab_size))?
            .to_dtype(acc_dtype(self.dtype))?)
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
        let flat = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let vocab = self.config.vocab_size as u32;
        let max = flat.max(0)?.to_scalar::<u32>()?;
        if max >= vocab {
            return Err(TrainError::InvalidArgument(format!(
                "token id {max} out of range (vocab size {vocab})"
            )));
        }
        let adapters = self.adapter_enabled();
        let dropout_key = if train && adapters {
            let n = self.forward_count.fetch_add(1, Ordering::SeqCst);
            Some(mix(&[self.seed, n]))
        } else {
            None
        };
        let mut x =
            self.embed_tokens
                .index_select(&flat, 0)?
                .reshape((b, s, self.config.hidden_size))?;
        let pos = if fused::applies(&x) {
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
        for (i, layer) in self.layers.iter().enumerate() {
            let ctx = Ctx {
                adapters,
                dropout_key: dropout_key.map(|k| mix(&[k, i as u64])),
            };
            x = layer.forward(&x, &pos, ctx)?;
        }
        rms_norm(&x, &self.norm, self.config.rms_norm_eps)
    }

    /// The base weights by HF name with their current values (the trained values for full
    /// fine-tuning; without LoRA deltas). Tied models have no `lm_head.weight`.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                l.input_layernorm.clone(),
            ));
            for (short, lin) in l.linears() {
                let module = module_of(short);
                out.push((format!("{p}.{module}.{short}.weight"), lin.weight.clone()));
                if let Some(b) = &lin.bias {
                    out.push((format!("{p}.{module}.{short}.bias"), b.clone()));
                }
            }
            if let (Some(qn), Some(kn)) = (&l.self_attn.q_norm, &l.self_attn.k_norm) {
                out.push((format!("{p}.self_attn.q_norm.weight"), qn.clone()));
                out.push((format!("{p}.self_attn.k_norm.weight"), kn.clone()));
            }
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.post_attention_layernorm.clone(),
            ));
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(w) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), w.clone()));
        }
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
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (short, lin) in l.linears() {
                if let Some(a) = &lin.lora {
                    let module = module_of(short);
                    out.push((format!("model.layers.{i}.{module}.{short}"), a));
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

/// `self_attn` or `mlp`, the HF parent module of a projection.
fn module_of(short: &str) -> &'static str {
    if matches!(short, "q_proj" | "k_proj" | "v_proj" | "o_proj") {
        "self_attn"
    } else {
        "mlp"
    }
}

impl DecoderLayer {
    fn linears(&self) -> [(&'static str, &Linear); 7] {
        let a = &self.self_attn;
        let m = &self.mlp;
        [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
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
