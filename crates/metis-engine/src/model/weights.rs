//! Loading HF safetensors checkpoints (single file or sharded with an index) by tensor name.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::layers::{Attention, DecoderLayer, Linear, Mlp, RmsNorm};
use super::EngineError;
use crate::config::ModelConfig;

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
    Files(MmapedSafetensors),
    Memory(HashMap<String, Tensor>),
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
        // SAFETY: the checkpoint files are memory-mapped read-only; as with every mmap-based
        // loader, they must not be truncated or modified while the model is being loaded.
        let st = unsafe { MmapedSafetensors::multi(files)? };
        Ok(Self {
            src: Source::Files(st),
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
            Source::Files(st) => st.get(name).is_ok(),
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
            Source::Files(st) => st.load(name, &self.device)?,
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

    pub(crate) fn linear(
        &self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weight = self.get_matmul(&format!("{prefix}.weight"), &[out, inp])?;
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
