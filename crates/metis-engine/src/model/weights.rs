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

use super::layers::{Embedding, LayerSource, Linear, RmsNorm};
use super::params::{CheckpointFormat, LinearParams, ParamSpec};
use super::EngineError;
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

    /// The shape stored under `name`; None if the checkpoint has no such tensor.
    fn stored_shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.src {
            Source::Files(t) => t.get(name).map(|m| m.shape.clone()),
            Source::Memory(t) => t.get(name).map(|m| m.dims().to_vec()),
        }
    }

    /// The stored dtype of `spec`'s tensor, after checking it is present with the table's shape.
    fn checked_dtype(&self, spec: &ParamSpec) -> Result<DType> {
        let name = &spec.hf_name;
        spec.check(CheckpointFormat::Hf, self.stored_shape(name).as_deref())?;
        Ok(match &self.src {
            Source::Files(t) => t[name].dtype,
            Source::Memory(t) => t[name].dtype(),
        })
    }

    /// Loads `spec`'s tensor, checked against the table, in the compute dtype.
    fn get(&self, spec: &ParamSpec) -> Result<Tensor> {
        self.checked_dtype(spec)?;
        let name = &spec.hf_name;
        let t = match &self.src {
            Source::Files(t) => {
                let m = &t[name];
                let bytes = &(*m.map).as_ref()[m.start..m.end];
                Tensor::from_raw_buffer(bytes, m.dtype, &m.shape, &self.device)?
            }
            // Detached copy: the engine must not keep a training graph (or a Var) alive.
            Source::Memory(map) => map[name].detach().to_device(&self.device)?,
        };
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
    fn get_matmul(&self, spec: &ParamSpec) -> Result<Tensor> {
        Ok(self.get(spec)?.to_dtype(self.matmul_dtype())?)
    }

    /// Matrix `spec` as a view of the mapped file, where the product can read the stored dtype
    /// as it is (see the module doc); None where it must be copied.
    ///
    /// Tensors already in memory get the same kind of matrix over a copy of their bytes, so
    /// that a model built from them computes exactly what the model loaded from disk does.
    fn view(&self, spec: &ParamSpec) -> Result<Option<QMatrix>> {
        let dtype = self.checked_dtype(spec)?;
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
        let name = &spec.hf_name;
        let (bytes, start): (SharedBytes, usize) = match &self.src {
            Source::Files(t) => (t[name].map.clone(), t[name].start),
            Source::Memory(t) => (Arc::new(AlignedBytes::from(tensor_bytes(&t[name])?)), 0),
        };
        let (rows, cols) = spec.rows_cols();
        // A shard whose data is not 4-byte aligned (not written by the reference library)
        // falls back to a copy.
        Ok(QMatrix::new(bytes, start, ggml, rows, cols).ok())
    }

    /// The token embedding table [vocab, hidden]: a view where possible (rows dequantized on
    /// lookup), else a tensor in the compute dtype.
    pub(crate) fn embedding(&self, spec: &ParamSpec) -> Result<Embedding> {
        match self.view(spec)? {
            Some(m) => Ok(Embedding::Quantized(m)),
            None => Ok(Embedding::Dense(self.get(spec)?)),
        }
    }

    /// A bias-free output head over matrix `spec` (a view where possible).
    pub(crate) fn head(&self, spec: &ParamSpec) -> Result<Linear> {
        match self.view(spec)? {
            Some(m) => Ok(Linear::from_matrix(m, None)),
            None => Linear::dense(self.get_matmul(spec)?, None),
        }
    }
}

impl LayerSource for Weights {
    fn linear(&self, p: &LinearParams) -> Result<Linear> {
        let view = self.view(&p.weight)?;
        let bias = p.bias.as_ref().map(|b| self.get(b)).transpose()?;
        match view {
            Some(m) => Ok(Linear::from_matrix(m, bias)),
            None => Linear::dense(self.get_matmul(&p.weight)?, bias),
        }
    }

    fn rms_norm(&self, p: &ParamSpec, eps: f64) -> Result<RmsNorm> {
        RmsNorm::new(self.get(p)?, eps)
    }
}
