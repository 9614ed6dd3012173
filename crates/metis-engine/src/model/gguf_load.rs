//! Building a [`Model`] from a llama.cpp GGUF file (see [`crate::gguf`] for the layout).
//!
//! Linear layers keep GGML block-quantized weights quantized ([`Linear::from_qtensor`]);
//! F32/F16/BF16 ones, the embeddings, norms and biases are dequantized to f32. The model
//! computes in f32.

use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::layers::{Attention, DecoderLayer, Linear, Mlp, RmsNorm};
use super::rope::Rope;
use super::{EngineError, Model};
use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::gguf;

type Result<T> = std::result::Result<T, EngineError>;

struct GgufReader {
    content: Content,
    reader: BufReader<std::fs::File>,
    device: Device,
}

impl GgufReader {
    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Tensor `name` (on the CPU) with its logical shape checked.
    fn raw(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
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
        Ok(self.content.tensor(&mut self.reader, name, &Device::Cpu)?)
    }

    /// Dequantized f32 tensor on the target device.
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let q = self.raw(name, shape)?;
        Ok(q.dequantize(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(&self.device)?)
    }

    /// Dense f32 vector, rows un-permuted over `unpermute_heads` if given.
    fn vector(&mut self, name: &str, len: usize, unpermute_heads: Option<usize>) -> Result<Tensor> {
        let t = self.dense(name, &[len])?;
        match unpermute_heads {
            None => Ok(t),
            Some(n) => {
                let v = t.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                let p = gguf::permute_rows_raw(&bytes, len, n, false)?;
                let v: Vec<f32> = p
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Tensor::from_vec(v, len, &self.device)?)
            }
        }
    }

    fn linear(
        &mut self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
        unpermute_heads: Option<usize>,
    ) -> Result<Linear> {
        let q = self.raw(&format!("{prefix}.weight"), &[out, inp])?;
        let q = gguf::finish_qtensor(q, unpermute_heads, &self.device)?;
        let bias = if bias {
            Some(self.vector(&format!("{prefix}.bias"), out, unpermute_heads)?)
        } else {
            None
        };
        Linear::from_qtensor(q, bias)
    }

    fn rms_norm(&mut self, name: &str, size: usize, eps: f64) -> Result<RmsNorm> {
        RmsNorm::new(self.dense(name, &[size])?, eps)
    }

    fn decoder_layer(&mut self, cfg: &ModelConfig, i: usize) -> Result<DecoderLayer> {
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
    let file = std::fs::File::open(path).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let content = gguf::read_content(&mut reader, path)?;
    let mut config = gguf::config_from_gguf(&content, &path.display().to_string())?;
    let mut r = GgufReader {
        content,
        reader,
        device: device.clone(),
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
    let embed_tokens = r.dense("token_embd.weight", &[vocab, hidden])?;
    let layers = (0..config.num_hidden_layers)
        .map(|i| r.decoder_layer(&config, i))
        .collect::<Result<Vec<_>>>()?;
    let norm = r.rms_norm("output_norm.weight", hidden, config.rms_norm_eps)?;
    let lm_name = if config.tie_word_embeddings {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    let lm = r.raw(lm_name, &[vocab, hidden])?;
    let lm_head = Linear::from_qtensor(gguf::finish_qtensor(lm, None, device)?, None)?;
    let rope = Rope::new(&config.rope, config.head_dim);
    Ok(Model {
        config,
        dtype: DType::F32,
        device: device.clone(),
        embed_tokens,
        layers,
        norm,
        lm_head,
        rope,
    })
}
