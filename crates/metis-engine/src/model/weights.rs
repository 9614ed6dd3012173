//! Loading HF safetensors checkpoints (single file or sharded with an index) by tensor name.
//!
//! The shards are memory-mapped. On the CPU, a matrix whose stored dtype the product can read
//! as it is (stored = compute dtype, or f16/bf16 stored for an f32 model: an exact upcast) is
//! not copied: the linear layer, the embedding table and a tied output head are
//! [`QMatrix`] views of the mapped bytes, so the weights are resident once, as file pages.
//! Everything else (norms, biases, other devices, dtype conversions) is copied into tensors.
//! Tensors handed over in memory (the trainer's policy) get matrices over a copy of their
//! bytes, so both sources compute through the same kernels.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use super::layers::{Attention, DecoderLayer, Embedding, Linear, Mlp, RmsNorm};
use super::EngineError;
use crate::config::ModelConfig;
use crate::quant::{AlignedBytes, QMatrix, SharedBytes};

type Result<T> = std::result::Result<T, EngineError>;

/// The safetensors files of a model directory.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|source| EngineError::Io {
            path: index.clone(),
            source,
        })?;
        let file = index.display().to_string();
        let cfg_err = |field: &str, detail: String| EngineError::Config {
            file: file.clone(),
            field: field.to_string(),
            detail,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| cfg_err("<json>", e.to_string()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| cfg_err("weight_map", "missing (expected an object)".into()))?;
        let mut names = BTreeSet::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| {
                cfg_err(
                    &format!("weight_map.{tensor}"),
                    format!("expected a file name, got {shard}"),
                )
            })?;
            names.insert(shard.to_string());
        }
        return Ok(names.into_iter().map(|n| dir.join(n)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(EngineError::Io {
        path: single,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no model.safetensors or model.safetensors.index.json",
        ),
    })
}

/// Where the tensors come from: memory-mapped checkpoint files, or tensors already in memory
/// (a policy being trained, handed to the engine for rollouts).
enum Source {
    Files(HashMap<String, MappedTensor>),
    Memory(HashMap<String, Tensor>),
}

/// A tensor of a mapped shard: its file's map, byte range, dtype and shape.
struct MappedTensor {
    map: SharedBytes,
    start: usize,
    end: usize,
    dtype: DType,
    shape: Vec<usize>,
}

/// The little-endian bytes of an f32/f16/bf16 tensor (detached, on the CPU).
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.detach().to_device(&Device::Cpu)?.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => {
            return Err(EngineError::InvalidArgument(format!(
                "no matrix view for dtype {other:?}"
            )))
        }
    })
}

/// Maps every shard and indexes its tensors by name.
fn map_shards(files: &[PathBuf]) -> Result<HashMap<String, MappedTensor>> {
    let mut tensors = HashMap::new();
    for f in files {
        let io = |source| EngineError::Io {
            path: f.clone(),
            source,
        };
        let file = std::fs::File::open(f).map_err(io)?;
        // SAFETY: the checkpoint is mapped read-only and must not be truncated or modified
        // while the model is alive, the contract of every mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let map: SharedBytes = Arc::new(map);
        let bytes = (*map).as_ref();
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| EngineError::Config {
            file: f.display().to_string(),
            field: "<safetensors header>".into(),
            detail: e.to_string(),
        })?;
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::F64 => DType::F64,
                safetensors::Dtype::U8 => DType::U8,
                safetensors::Dtype::U32 => DType::U32,
                safetensors::Dtype::I64 => DType::I64,
                other => {
                    return Err(EngineError::Config {
                        file: f.display().to_string(),
                        field: name,
                        detail: format!("unsupported dtype {other:?}"),
                    })
                }
            };
            let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
            tensors.insert(
                name,
                MappedTensor {
                    map: map.clone(),
                    start,
                    end: start + view.data().len(),
                    dtype,
                    shape: view.shape().to_vec(),
                },
            );
        }
    }
    Ok(tensors)
}

/// Named access to the checkpoint's tensors, converted to the compute dtype on load.
pub(crate) struct Weights {
    src: Source,
    dtype: DType,
    device: Device,
}

impl Weights {
    pub(crate) fn open(files: &[PathBuf], dtype: DType, device: &Device) -> Result<Self> {
        for f in files {
            if !f.is_file() {
                return Err(EngineError::Io {
                    path: f.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "shard not found"),
                });
            }
        }
        Ok(Self {
            src: Source::Files(map_shards(files)?),
            dtype,
            device: device.clone(),
        })
    }

    /// Tensors by HF name, already in memory.
    pub(crate) fn from_map(
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            src: Source::Memory(tensors),
            dtype,
            device: device.clone(),
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        match &self.src {
            Source::Files(t) => t.contains_key(name),
            Source::Memory(map) => map.contains_key(name),
        }
    }

    /// Load `name`, check its shape, convert to the compute dtype.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if !self.contains(name) {
            return Err(EngineError::MissingTensor {
                name: name.to_string(),
            });
        }
        let t = match &self.src {
            Source::Files(t) => {
                let m = &t[name];
                let bytes = &(*m.map).as_ref()[m.start..m.end];
                Tensor::from_raw_buffer(bytes, m.dtype, &m.shape, &self.device)?
            }
            // Detached copy: the engine must not keep a training graph (or a Var) alive.
            Source::Memory(map) => map[name].detach().to_device(&self.device)?,
        };
        if t.dims() != shape {
            return Err(EngineError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        Ok(t.to_dtype(self.dtype)?)
    }

    /// Dtype in which matmul weights are kept: the compute dtype, except bf16 on CPU, where
    /// candle has no bf16 gemm and the weights are kept in f32 (exact upcast).
    pub(crate) fn matmul_dtype(&self) -> DType {
        if self.dtype == DType::BF16 && self.device.is_cpu() {
            DType::F32
        } else {
            self.dtype
        }
    }

    /// Like [`Weights::get`] but in [`Weights::matmul_dtype`].
    pub(crate) fn get_matmul(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.get(name, shape)?.to_dtype(self.matmul_dtype())?)
    }

    /// Matrix `name` [rows, cols] as a view of the mapped file, where the product can read the
    /// stored dtype as it is (see the module doc); None where it must be copied.
    ///
    /// Tensors already in memory get the same kind of matrix over a copy of their bytes, so
    /// that a model built from them computes exactly what the model loaded from disk does.
    fn view(&self, name: &str, rows: usize, cols: usize) -> Result<Option<QMatrix>> {
        let (dtype, shape) = match &self.src {
            Source::Files(t) => t.get(name).map(|m| (m.dtype, m.shape.clone())),
            Source::Memory(t) => t.get(name).map(|m| (m.dtype(), m.dims().to_vec())),
        }
        .ok_or_else(|| EngineError::MissingTensor {
            name: name.to_string(),
        })?;
        if shape != [rows, cols] {
            return Err(EngineError::Shape {
                name: name.to_string(),
                expected: vec![rows, cols],
                got: shape,
            });
        }
        let readable = dtype == self.dtype
            || (self.dtype == DType::F32 && matches!(dtype, DType::F16 | DType::BF16));
        let ggml = match dtype {
            DType::F32 => GgmlDType::F32,
            DType::F16 => GgmlDType::F16,
            DType::BF16 => GgmlDType::BF16,
            _ => return Ok(None),
        };
        if !self.device.is_cpu() || !readable {
            return Ok(None);
        }
        let (bytes, start): (SharedBytes, usize) = match &self.src {
            Source::Files(t) => (t[name].map.clone(), t[name].start),
            Source::Memory(t) => (Arc::new(AlignedBytes::from(tensor_bytes(&t[name])?)), 0),
        };
        // A shard whose data is not 4-byte aligned (not written by the reference library)
        // falls back to a copy.
        Ok(QMatrix::new(bytes, start, ggml, rows, cols).ok())
    }

    /// The token embedding table [vocab, hidden]: a view where possible (rows dequantized on
    /// lookup), else a tensor in the compute dtype.
    pub(crate) fn embedding(&self, name: &str, vocab: usize, hidden: usize) -> Result<Embedding> {
        match self.view(name, vocab, hidden)? {
            Some(m) => Ok(Embedding::Quantized(m)),
            None => Ok(Embedding::Dense(self.get(name, &[vocab, hidden])?)),
        }
    }

    /// A bias-free output head over matrix `name` (a view where possible).
    pub(crate) fn head(&self, name: &str, vocab: usize, hidden: usize) -> Result<Linear> {
        match self.view(name, vocab, hidden)? {
            Some(m) => Ok(Linear::from_matrix(m, None)),
            None => Linear::dense(self.get_matmul(name, &[vocab, hidden])?, None),
        }
    }

    pub(crate) fn linear(
        &self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        if let Some(m) = self.view(&name, out, inp)? {
            let bias = if bias {
                Some(self.get(&format!("{prefix}.bias"), &[out])?)
            } else {
                None
            };
            return Ok(Linear::from_matrix(m, bias));
        }
        let weight = self.get_matmul(&name, &[out, inp])?;
        let bias = if bias {
            Some(self.get(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Linear::dense(weight, bias)
    }

    pub(crate) fn rms_norm(&self, name: &str, size: usize, eps: f64) -> Result<RmsNorm> {
        RmsNorm::new(self.get(name, &[size])?, eps)
    }

    /// Decoder layer `i`; the architecture differences are the bias flags and Qwen3's q/k norms.
    pub(crate) fn decoder_layer(&self, cfg: &ModelConfig, i: usize) -> Result<DecoderLayer> {
        let p = format!("model.layers.{i}");
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let a = format!("{p}.self_attn");
        let (q_norm, k_norm) = if cfg.has_qk_norm() {
            (
                Some(self.rms_norm(&format!("{a}.q_norm.weight"), hd, cfg.rms_norm_eps)?),
                Some(self.rms_norm(&format!("{a}.k_norm.weight"), hd, cfg.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        let self_attn = Attention {
            q_proj: self.linear(&format!("{a}.q_proj"), nh * hd, h, cfg.qkv_bias)?,
            k_proj: self.linear(&format!("{a}.k_proj"), nkv * hd, h, cfg.qkv_bias)?,
            v_proj: self.linear(&format!("{a}.v_proj"), nkv * hd, h, cfg.qkv_bias)?,
            o_proj: self.linear(&format!("{a}.o_proj"), h, nh * hd, cfg.o_bias)?,
            q_norm,
            k_norm,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            scale: (hd as f64).powf(-0.5), // python `head_dim**-0.5`
        };
        let m = format!("{p}.mlp");
        let inter = cfg.intermediate_size;
        let mlp = Mlp {
            gate_proj: self.linear(&format!("{m}.gate_proj"), inter, h, cfg.mlp_bias)?,
            up_proj: self.linear(&format!("{m}.up_proj"), inter, h, cfg.mlp_bias)?,
            down_proj: self.linear(&format!("{m}.down_proj"), h, inter, cfg.mlp_bias)?,
        };
        Ok(DecoderLayer {
            input_layernorm: self.rms_norm(
                &format!("{p}.input_layernorm.weight"),
                h,
                cfg.rms_norm_eps,
            )?,
            self_attn,
            post_attention_layernorm: self.rms_norm(
                &format!("{p}.post_attention_layernorm.weight"),
                h,
                cfg.rms_norm_eps,
            )?,
            mlp,
        })
    }
}
