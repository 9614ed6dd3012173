//! Building a [`Model`] from a llama.cpp GGUF file (see [`crate::gguf`] for the layout).
//!
//! The file is memory-mapped once. On the CPU every matrix (linear layers, the embedding
//! table, the output head) stays in its stored type and is read in place through a
//! [`QMatrix`] view with Metis's own kernels ([`crate::quant`]): no weight is copied or
//! converted, so resident memory is the file's pages plus activations and the KV cache.
//! Llama Q/K rows, which llama.cpp stores permuted for interleaved rope, are read in Hugging
//! Face order through the view's row order. On other devices matrices are uploaded as candle
//! `QTensor`s. Norms, biases and rope factors (small vectors) are dequantized to f32 tensors.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::layers::{Attention, DecoderLayer, Embedding, Linear, Mlp, RmsNorm};
use super::rope::Rope;
use super::{EngineError, Model};
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::gguf;
use crate::quant::{QMatrix, SharedBytes};

type Result<T> = std::result::Result<T, EngineError>;

struct GgufReader {
    content: Content,
    map: SharedBytes,
    device: Device,
    file: String,
}

impl GgufReader {
    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Type, byte range and logical shape check of tensor `name`.
    fn locate(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(candle_core::quantized::GgmlDType, usize, usize)> {
        let info =
            self.content
                .tensor_infos
                .get(name)
                .ok_or_else(|| EngineError::MissingTensor {
                    name: name.to_string(),
                })?;
        if info.shape.dims() != shape {
            return Err(EngineError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: info.shape.dims().to_vec(),
            });
        }
        let dtype = info.ggml_dtype;
        let elems: usize = shape.iter().product();
        let len = elems / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset as usize + info.offset as usize;
        let file_len = (*self.map).as_ref().len();
        if start.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(EngineError::Config {
                file: self.file.clone(),
                field: name.to_string(),
                detail: format!(
                    "tensor data {start}+{len} lies past the end of the file ({file_len} bytes)"
                ),
            });
        }
        Ok((dtype, start, len))
    }

    /// Matrix `name` [rows, cols] viewed in place (CPU).
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<QMatrix> {
        let (dtype, start, _) = self.locate(name, &[rows, cols])?;
        QMatrix::new(self.map.clone(), start, dtype, rows, cols).map_err(|e| EngineError::Config {
            file: self.file.clone(),
            field: name.to_string(),
            detail: e.to_string(),
        })
    }

    /// Dequantized f32 tensor on the target device (small tensors: norms, biases, factors).
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (dtype, start, len) = self.locate(name, shape)?;
        let mut out = vec![0f32; shape.iter().product()];
        let bytes = &(*self.map).as_ref()[start..start + len];
        crate::quant::dequantize(dtype, bytes, &mut out);
        Ok(Tensor::from_vec(out, shape, &self.device)?)
    }

    /// Dense f32 vector, rows un-permuted over `unpermute_heads` if given.
    fn vector(&self, name: &str, len: usize, unpermute_heads: Option<usize>) -> Result<Tensor> {
        let t = self.dense(name, &[len])?;
        match unpermute_heads {
            None => Ok(t),
            Some(n) => {
                let v = t.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
                let order = gguf::unpermute_order(len, n)?;
                let v: Vec<f32> = order.iter().map(|&r| v[r as usize]).collect();
                Ok(Tensor::from_vec(v, len, &self.device)?)
            }
        }
    }

    /// A linear layer's weight: a view on the CPU, an uploaded `QTensor` elsewhere.
    fn weight(
        &self,
        name: &str,
        out: usize,
        inp: usize,
        unpermute_heads: Option<usize>,
    ) -> Result<Linear> {
        if self.device.is_cpu() {
            let mut m = self.matrix(name, out, inp)?;
            if let Some(n) = unpermute_heads {
                m = m
                    .with_row_order(gguf::unpermute_order(out, n)?)
                    .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
            }
            return Ok(Linear::from_matrix(m, None));
        }
        let (dtype, start, len) = self.locate(name, &[out, inp])?;
        let bytes = &(*self.map).as_ref()[start..start + len];
        let owned;
        let bytes: &[u8] = match unpermute_heads {
            Some(n) => {
                owned = gguf::permute_rows_raw(bytes, out, n, false)?;
                &owned
            }
            None => bytes,
        };
        let q = QTensor::new(
            QStorage::from_data(std::borrow::Cow::Borrowed(bytes), &self.device, dtype)?,
            (out, inp),
        )?;
        Linear::from_qtensor(q, None)
    }

    fn linear(
        &self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
        unpermute_heads: Option<usize>,
    ) -> Result<Linear> {
        let mut l = self.weight(&format!("{prefix}.weight"), out, inp, unpermute_heads)?;
        if bias {
            l.bias = Some(self.vector(&format!("{prefix}.bias"), out, unpermute_heads)?);
        }
        Ok(l)
    }

    fn rms_norm(&self, name: &str, size: usize, eps: f64) -> Result<RmsNorm> {
        RmsNorm::new(self.dense(name, &[size])?, eps)
    }

    fn decoder_layer(&self, cfg: &ModelConfig, i: usize) -> Result<DecoderLayer> {
        let b = format!("blk.{i}");
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let eps = cfg.rms_norm_eps;
        // llama.cpp's converter permutes Llama's Q/K rows (not Qwen's); undo it.
        let llama = cfg.architecture == Architecture::Llama;
        let (perm_q, perm_k) = if llama {
            (Some(nh), Some(nkv))
        } else {
            (None, None)
        };
        let (q_norm, k_norm) = if cfg.has_qk_norm() {
            (
                Some(self.rms_norm(&format!("{b}.attn_q_norm.weight"), hd, eps)?),
                Some(self.rms_norm(&format!("{b}.attn_k_norm.weight"), hd, eps)?),
            )
        } else {
            (None, None)
        };
        let self_attn = Attention {
            q_proj: self.linear(&format!("{b}.attn_q"), nh * hd, h, cfg.qkv_bias, perm_q)?,
            k_proj: self.linear(&format!("{b}.attn_k"), nkv * hd, h, cfg.qkv_bias, perm_k)?,
            v_proj: self.linear(&format!("{b}.attn_v"), nkv * hd, h, cfg.qkv_bias, None)?,
            o_proj: self.linear(&format!("{b}.attn_output"), h, nh * hd, cfg.o_bias, None)?,
            q_norm,
            k_norm,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            scale: (hd as f64).powf(-0.5),
        };
        let inter = cfg.intermediate_size;
        let mlp = Mlp {
            gate_proj: self.linear(&format!("{b}.ffn_gate"), inter, h, cfg.mlp_bias, None)?,
            up_proj: self.linear(&format!("{b}.ffn_up"), inter, h, cfg.mlp_bias, None)?,
            down_proj: self.linear(&format!("{b}.ffn_down"), h, inter, cfg.mlp_bias, None)?,
        };
        Ok(DecoderLayer {
            input_layernorm: self.rms_norm(&format!("{b}.attn_norm.weight"), h, eps)?,
            self_attn,
            post_attention_layernorm: self.rms_norm(&format!("{b}.ffn_norm.weight"), h, eps)?,
            mlp,
        })
    }
}

pub(super) fn load(path: &Path, device: &Device) -> Result<Model> {
    let io = |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the model file is mapped read-only and must not be truncated or rewritten while
    // the model is alive — the same contract as llama.cpp's mmap loading.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let content = gguf::read_content(&mut std::io::Cursor::new(&map[..]), path)?;
    let mut config = gguf::config_from_gguf(&content, &path.display().to_string())?;
    let r = GgufReader {
        content,
        map: Arc::new(map),
        device: device.clone(),
        file: path.display().to_string(),
    };
    let (vocab, hidden) = (config.vocab_size, config.hidden_size);
    if r.contains("rope_freqs.weight") {
        let half = config.head_dim / 2;
        let factors = r
            .dense("rope_freqs.weight", &[half])?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        config.rope.scaling = match config.rope.scaling {
            RopeScaling::None => RopeScaling::FreqFactors { factors },
            _ => {
                return Err(EngineError::Config {
                    file: path.display().to_string(),
                    field: "rope_freqs.weight".into(),
                    detail: "present together with rope.scaling.type (unsupported)".into(),
                })
            }
        };
    }
    let embed_tokens = if device.is_cpu() {
        Embedding::Quantized(r.matrix("token_embd.weight", vocab, hidden)?)
    } else {
        Embedding::Dense(r.dense("token_embd.weight", &[vocab, hidden])?)
    };
    let layers = (0..config.num_hidden_layers)
        .map(|i| r.decoder_layer(&config, i))
        .collect::<Result<Vec<_>>>()?;
    let norm = r.rms_norm("output_norm.weight", hidden, config.rms_norm_eps)?;
    let lm_name = if config.tie_word_embeddings {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    // Tied: a second view of the embedding bytes, not a copy.
    let lm_head = r.weight(lm_name, vocab, hidden, None)?;
    let rope = Rope::new(&config.rope, config.head_dim);
    Ok(Model {
        config,
        dtype: candle_core::DType::F32,
        device: device.clone(),
        embed_tokens,
        layers,
        norm,
        lm_head,
        rope,
    })
}
