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
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::layers::{DecoderLayer, Embedding, LayerSource, Linear, RmsNorm};
use super::params::{self, LinearParams, ModelParams, ParamSpec, GGUF_ROPE_FREQS};
use super::rope::Rope;
use super::{EngineError, Model};
use crate::config::{ModelConfig, RopeScaling};
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

    /// Type and byte range of tensor `name`, after checking it has `shape`.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<(GgmlDType, usize, usize)> {
        let info = self.content.tensor_infos.get(name);
        params::check_shape(name, shape, info.map(|i| i.shape.dims()))?;
        let info = &self.content.tensor_infos[name];
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

    /// Matrix `spec` viewed in place (CPU), rows in stored order.
    fn matrix(&self, spec: &ParamSpec) -> Result<QMatrix> {
        let (dtype, start, _) = self.locate(&spec.gguf_name, &spec.shape)?;
        let (rows, cols) = spec.rows_cols();
        QMatrix::new(self.map.clone(), start, dtype, rows, cols).map_err(|e| EngineError::Config {
            file: self.file.clone(),
            field: spec.gguf_name.clone(),
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

    /// Dense f32 vector in HF row order (un-permuted where the table says it is stored
    /// permuted).
    fn vector(&self, spec: &ParamSpec) -> Result<Tensor> {
        let t = self.dense(&spec.gguf_name, &spec.shape)?;
        let Some(heads) = spec.gguf_row_permutation else {
            return Ok(t);
        };
        let v = t.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        let order = gguf::unpermute_order(v.len(), heads)?;
        let v: Vec<f32> = order.iter().map(|&r| v[r as usize]).collect();
        Ok(Tensor::from_vec(v, spec.shape.as_slice(), &self.device)?)
    }

    /// A bias-free linear layer over matrix `spec`, rows in HF order: a view on the CPU, an
    /// uploaded `QTensor` elsewhere.
    fn weight(&self, spec: &ParamSpec) -> Result<Linear> {
        let (out, inp) = spec.rows_cols();
        let permuted = spec.gguf_row_permutation;
        if self.device.is_cpu() {
            let mut m = self.matrix(spec)?;
            if let Some(heads) = permuted {
                m = m
                    .with_row_order(gguf::unpermute_order(out, heads)?)
                    .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
            }
            return Ok(Linear::from_matrix(m, None));
        }
        let (dtype, start, len) = self.locate(&spec.gguf_name, &spec.shape)?;
        let bytes = &(*self.map).as_ref()[start..start + len];
        let owned;
        let bytes: &[u8] = match permuted {
            Some(heads) => {
                owned = gguf::permute_rows_raw(bytes, out, heads, false)?;
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
}

impl LayerSource for GgufReader {
    fn linear(&self, p: &LinearParams) -> Result<Linear> {
        let mut l = self.weight(&p.weight)?;
        l.bias = p.bias.as_ref().map(|b| self.vector(b)).transpose()?;
        Ok(l)
    }

    fn rms_norm(&self, p: &ParamSpec, eps: f64) -> Result<RmsNorm> {
        RmsNorm::new(self.dense(&p.gguf_name, &p.shape)?, eps)
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
    if r.contains(GGUF_ROPE_FREQS) {
        config.rope.scaling = rope_freq_factors(&r, &config)?;
    }
    let params = ModelParams::new(&config);
    let embed_tokens = if device.is_cpu() {
        Embedding::Quantized(r.matrix(&params.embed_tokens)?)
    } else {
        let embed = &params.embed_tokens;
        Embedding::Dense(r.dense(&embed.gguf_name, &embed.shape)?)
    };
    let layers = params
        .layers
        .iter()
        .map(|p| DecoderLayer::load(&r, &config, p))
        .collect::<Result<Vec<_>>>()?;
    let norm = r.rms_norm(&params.norm, config.rms_norm_eps)?;
    // Tied: a second view of the embedding bytes, not a copy.
    let lm_head = r.weight(params.lm_head.as_ref().unwrap_or(&params.embed_tokens))?;
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
        kv_dtype: candle_core::DType::F16,
        host: Default::default(),
    })
}

/// The rope scaling of a file with `rope_freqs.weight` [head_dim / 2]: per-dimension divisors,
/// which replace no other scaling (the metadata must declare none).
fn rope_freq_factors(r: &GgufReader, config: &ModelConfig) -> Result<RopeScaling> {
    if config.rope.scaling != RopeScaling::None {
        return Err(EngineError::Config {
            file: r.file.clone(),
            field: GGUF_ROPE_FREQS.into(),
            detail: "present together with rope.scaling.type (unsupported)".into(),
        });
    }
    let factors = r
        .dense(GGUF_ROPE_FREQS, &[config.head_dim / 2])?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    Ok(RopeScaling::FreqFactors { factors })
}
