//! Building blocks shared by all supported architectures: linear layers, RMSNorm, the SwiGLU
//! MLP, grouped-query attention and the pre-norm decoder layer. The per-architecture
//! differences are only *which* weights exist (biases, Qwen3's q/k norms), listed in the
//! parameter table ([`super::params`]) and read by [`DecoderLayer::load`] from either format.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};

use crate::quant::f32_gemm::{gemm_f32, Strided};
use crate::quant::QMatrix;
use candle_core::{DType, Module, Tensor};

use super::cache::KvCache;
use super::cpu_attention::{attend_cached, CachedKv};
use super::params::{LayerParams, LinearParams, ParamSpec};
use super::EngineError;
use crate::config::ModelConfig;

type Result<T> = std::result::Result<T, EngineError>;

/// Matmul producing `a`'s dtype. candle's CPU backend has no bf16 gemm, so there (or whenever
/// the operand dtypes differ, e.g. bf16 activations against f32-stored weights) both sides are
/// taken to f32 (exact for bf16) and the f32-accumulated product is rounded once to `a`'s
/// dtype — the numerics of torch's bf16 CPU gemm (f32 accumulation, one final rounding).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let emulate = a.dtype() != b.dtype() || (a.dtype() == DType::BF16 && a.device().is_cpu());
    if !emulate {
        return Ok(a.matmul(b)?);
    }
    let a32 = a.to_dtype(DType::F32)?;
    let b32 = b.to_dtype(DType::F32)?;
    Ok(a32.matmul(&b32)?.to_dtype(a.dtype())?)
}

/// The weight of a [`Linear`] layer: a dense matrix W [out, in] (HF safetensors), a GGUF
/// matrix read in place by Metis's kernels ([`QMatrix`], CPU), or a GGUF matrix uploaded to
/// another device and multiplied through candle's [`QMatMul`].
#[derive(Debug, Clone)]
pub(crate) enum LinearWeight {
    Dense(Tensor),
    Matrix(QMatrix),
    Quantized(QMatMul),
}

/// Rows (tokens) from which a block-quantized layer is multiplied as a dequantized dense
/// matrix instead of through the quantized dot kernels.
const DEQUANT_MIN_ROWS: usize = 32;

/// `y = x W^T (+ b)` with W [out, in] as stored by HF. On CPU a bf16 model keeps W in f32
/// (see [`matmul`]); the bias and the output are in the activation dtype. Quantized weights
/// take f32 activations (GGUF models compute in f32).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: LinearWeight,
    /// Output features (rows of W).
    pub(crate) out_dim: usize,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    /// A dense layer; W [out, in].
    pub(crate) fn dense(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let out_dim = weight.dim(0)?;
        Ok(Self {
            weight: LinearWeight::Dense(weight),
            out_dim,
            bias,
        })
    }

    /// A layer whose weight is read in place from a GGUF file (CPU).
    pub(crate) fn from_matrix(weight: QMatrix, bias: Option<Tensor>) -> Self {
        Self {
            out_dim: weight.rows(),
            weight: LinearWeight::Matrix(weight),
            bias,
        }
    }

    /// A layer from a GGUF tensor of logical shape [out, in] on a non-CPU device. F32/F16/BF16 storage becomes a
    /// dense f32 matrix (same numerics as the safetensors path); block-quantized storage is
    /// kept quantized.
    pub(crate) fn from_qtensor(q: QTensor, bias: Option<Tensor>) -> Result<Self> {
        let out_dim = q.shape().dims2()?.0;
        let weight = match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                LinearWeight::Dense(q.dequantize(&q.device())?.to_dtype(DType::F32)?)
            }
            _ => LinearWeight::Quantized(QMatMul::from_arc(std::sync::Arc::new(q))?),
        };
        Ok(Self {
            weight,
            out_dim,
            bias,
        })
    }

    /// Several layers on the same input (Q/K/V, gate/up): GGUF matrices on the CPU go through
    /// one grouped product (activations quantized once, one fork-join); anything else is
    /// layer by layer. x [.., in] -> one [.., out_i] per layer.
    pub(crate) fn forward_group(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        let matrices: Option<Vec<&QMatrix>> = layers
            .iter()
            .map(|l| match &l.weight {
                LinearWeight::Matrix(m) => Some(m),
                _ => None,
            })
            .collect();
        let Some(matrices) = matrices else {
            return layers.iter().map(|l| l.forward(x)).collect();
        };
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let mut outs: Vec<Vec<f32>> = matrices
            .iter()
            .map(|m| vec![0f32; rows * m.rows()])
            .collect();
        let x2 = x.reshape((rows, in_dim))?;
        with_f32_slice(&x2, |xs| {
            let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            crate::quant::matmul_group(&matrices, xs, rows, &mut ys);
        })?;
        layers
            .iter()
            .zip(outs)
            .map(|(l, y)| {
                let y = Tensor::from_vec(y, (rows, l.out_dim), x.device())?.to_dtype(x.dtype())?;
                let y = match &l.bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                let mut out_dims = dims.to_vec();
                *out_dims.last_mut().expect("rank >= 1") = l.out_dim;
                Ok(y.reshape(out_dims)?)
            })
            .collect()
    }

    /// x [.., in] -> [.., out]. Flattens leading dims so the matmul is one 2-D gemm.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let y = match &self.weight {
            LinearWeight::Dense(w) => match split_matmul_t(&x2, w)? {
                Some(y) => y,
                None => matmul(&x2, &w.t()?)?,
            },
            LinearWeight::Matrix(w) => matrix_forward(w, &x2)?,
            LinearWeight::Quantized(QMatMul::QTensor(q)) if rows >= DEQUANT_MIN_ROWS => {
                // Prefill: candle's quantized kernels are vector-dot products, fine for a few
                // rows but far slower than a gemm over hundreds; dequantizing the block once per
                // call and running the dense f32 gemm is ~10× faster there (and exact w.r.t. the
                // stored weights, while the dot kernels also quantize the activations).
                let dtype = x2.dtype();
                let w = q.dequantize(x2.device())?;
                x2.to_dtype(DType::F32)?.matmul(&w.t()?)?.to_dtype(dtype)?
            }
            LinearWeight::Quantized(q) => {
                let dtype = x2.dtype();
                q.forward(&x2.to_dtype(DType::F32)?.contiguous()?)?
                    .to_dtype(dtype)?
            }
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = self.out_dim;
        Ok(y.reshape(out_dims)?)
    }
}

/// `x Wᵀ` through a [`QMatrix`]: x [rows, in] (any float dtype) -> [rows, out] in x's dtype.
fn matrix_forward(w: &QMatrix, x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let rows = x.dim(0)?;
    let mut y = vec![0f32; rows * w.rows()];
    with_f32_slice(x, |xs| w.matmul(xs, rows, &mut y))?;
    Ok(Tensor::from_vec(y, (rows, w.rows()), x.device())?.to_dtype(dtype)?)
}

/// Calls `f` with the values of `x` as one contiguous f32 slice (converting only if needed).
fn with_f32_slice<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    use candle_core::Storage;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(EngineError::InvalidArgument(
            "GGUF matrices read in place need CPU activations".into(),
        ));
    };
    let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..][..x.elem_count()];
    Ok(f(xs))
}

/// The token embedding table: a dense tensor, or a GGUF matrix of which only the looked-up
/// rows are dequantized (the table itself stays in its stored type).
#[derive(Debug, Clone)]
pub(crate) enum Embedding {
    Dense(Tensor),
    Quantized(QMatrix),
}

impl Embedding {
    /// Rows `ids` (1-D u32) -> [n, hidden] (f32 for a GGUF table).
    pub(crate) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Embedding::Dense(t) => Ok(t.index_select(ids, 0)?),
            Embedding::Quantized(m) => {
                let ids = ids.to_vec1::<u32>()?;
                let hidden = m.cols();
                let mut out = vec![0f32; ids.len() * hidden];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(hidden)) {
                    if id as usize >= m.rows() {
                        return Err(EngineError::InvalidArgument(format!(
                            "token id {id} out of range (vocab size {})",
                            m.rows()
                        )));
                    }
                    m.dequantize_row(id as usize, row);
                }
                Ok(Tensor::from_vec(
                    out,
                    (ids.len(), hidden),
                    &candle_core::Device::Cpu,
                )?)
            }
        }
    }
}

/// Rows (tokens) up to which a dense f32 product on the CPU is split over the rayon pool by
/// output features: a decode step is bound by reading W once, gemm runs such thin products on
/// one thread, and two cores read W faster than one.
const SPLIT_MAX_ROWS: usize = 8;
/// Output features per part at the least, so that each thread's share is worth its dispatch.
const SPLIT_MIN_COLS: usize = 64;

/// `x W^T` for f32 `x` [rows, in] with few rows and f32 W [out, in] on the CPU, W's rows split
/// into one part per pool thread; None where that does not apply (the caller falls back to one
/// gemm).
fn split_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    use candle_core::Storage;
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let (rows, k) = x.dims2()?;
    let (n, wk) = w.dims2()?;
    if !x.device().is_cpu()
        || x.dtype() != DType::F32
        || w.dtype() != DType::F32
        || rows > SPLIT_MAX_ROWS
        || threads < 2
        || n < 2 * SPLIT_MIN_COLS
        || k != wk
        || !x.is_contiguous()
        || !w.is_contiguous()
    {
        return Ok(None);
    }
    let (x_storage, x_layout) = x.storage_and_layout();
    let (w_storage, w_layout) = w.storage_and_layout();
    let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*x_storage, &*w_storage) else {
        return Ok(None);
    };
    let xs = &xs.as_slice::<f32>()?[x_layout.start_offset()..][..rows * k];
    let ws = &ws.as_slice::<f32>()?[w_layout.start_offset()..][..n * k];
    let parts = threads.min(n / SPLIT_MIN_COLS);
    let per_part = n.div_ceil(parts);
    // Each part computes y[:, j0..j1] = x W[j0..j1]^T into its own [rows, j1 - j0] block.
    let blocks: Vec<(usize, Vec<f32>)> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let j0 = p * per_part;
            let cols = per_part.min(n - j0);
            let mut block = vec![0f32; rows * cols];
            // SAFETY: `block` is rows × cols, row-major (row stride cols); x is rows × k
            // row-major; rhs element (kk, j) is W[j0 + j, kk], i.e. at j * k + kk from row j0.
            // Every index stays inside these slices.
            unsafe {
                gemm_f32(
                    (rows, cols, k),
                    block.as_mut_ptr(),
                    cols,
                    Strided::rows(xs.as_ptr(), k),
                    Strided::transposed(ws.as_ptr().add(j0 * k), k),
                    1.0,
                );
            }
            (j0, block)
        })
        .collect();
    let mut y = vec![0f32; rows * n];
    for (j0, block) in blocks {
        let cols = block.len() / rows;
        for r in 0..rows {
            y[r * n + j0..r * n + j0 + cols].copy_from_slice(&block[r * cols..(r + 1) * cols]);
        }
    }
    Ok(Some(Tensor::from_vec(y, (rows, n), x.device())?))
}

/// RMSNorm as in HF Llama/Qwen: normalise in f32, cast back to the activation dtype, then
/// multiply by the weight in that dtype.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    /// f32 ones of the weight's size, for the half-precision path.
    ones: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: Tensor, eps: f64) -> Result<Self> {
        let ones = Tensor::ones(weight.dim(0)?, DType::F32, weight.device())?;
        Ok(Self {
            weight,
            ones,
            eps: eps as f32,
        })
    }

    /// The weight and epsilon.
    pub(crate) fn parts(&self) -> (&Tensor, f32) {
        (&self.weight, self.eps)
    }

    /// Normalises over the last dimension; any leading shape.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() == DType::F32 {
            return Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?);
        }
        let dtype = x.dtype();
        let normed = candle_nn::ops::rms_norm(&x.to_dtype(DType::F32)?, &self.ones, self.eps)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }
}

/// SwiGLU MLP: down(silu(gate(x)) * up(x)).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

impl Mlp {
    /// x [b, s, hidden] -> [b, s, hidden]
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [gate, up]: [Tensor; 2] = Linear::forward_group(&[&self.gate_proj, &self.up_proj], x)?
            .try_into()
            .expect("two layers, two outputs"); // each [b, s, inter]
                                                // torch evaluates silu in f32 and rounds once for bf16/f16.
        let act = if gate.dtype() == DType::F32 {
            candle_nn::ops::silu(&gate)?
        } else {
            candle_nn::ops::silu(&gate.to_dtype(DType::F32)?)?.to_dtype(gate.dtype())?
        };
        self.down_proj.forward(&(act * up)?)
    }
}

/// Grouped-query self-attention with rope and an optional per-head q/k RMSNorm (Qwen3).
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    /// Qwen3 only: RMSNorm over head_dim applied to q and k before rope.
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) scale: f64,
}

impl Attention {
    /// x [b, s, hidden]; cos/sin [s, head_dim/2] (or per sequence, [b, s, head_dim/2]) in x's
    /// dtype; mask f32 (0 or -inf), [s, kv_len] or per sequence [b, 1, 1, s, kv_len], or None
    /// (no masking: s == 1 without padding). Returns [b, s, hidden].
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (q, k, v) = self.project(x, cos, sin)?;
        let (k, v) = cache.append(layer, &k, &v)?; // [b, nkv, kv_len, hd]
        let out = self.attend(&q, &k, &v, mask, x.dtype())?;
        self.output(&out, b, s)
    }

    /// Projections, Qwen3's q/k norms and rope: x [b, s, hidden] -> q [b, nh, s, hd],
    /// k and v [b, nkv, s, hd] (contiguous).
    pub(crate) fn project(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let [q, k, v]: [Tensor; 3] =
            Linear::forward_group(&[&self.q_proj, &self.k_proj, &self.v_proj], x)?
                .try_into()
                .expect("three layers, three outputs");
        let q = q.reshape((b, s, nh, hd))?;
        let k = k.reshape((b, s, nkv, hd))?;
        let v = v.reshape((b, s, nkv, hd))?;
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            _ => (q, k),
        };
        let q = q.transpose(1, 2)?.contiguous()?; // [b, nh, s, hd]
        let k = k.transpose(1, 2)?.contiguous()?; // [b, nkv, s, hd]
        let v = v.transpose(1, 2)?.contiguous()?; // [b, nkv, s, hd]
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        Ok((q, k, v))
    }

    /// softmax(q k^T * scale + mask) v for q [b, nh, s, hd] against the cached k/v
    /// [b, nkv, kv_len, hd]; returns [b, nkv, n_rep * s, hd] in `dtype`.
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        dtype: DType,
    ) -> Result<Tensor> {
        if let Some(out) = self.attend_direct(q, k, v, mask)? {
            return Ok(out);
        }
        let (b, _, s, hd) = q.dims4()?;
        let kv_len = k.dim(2)?;
        let nkv = self.num_kv_heads;
        // GQA without copying K/V: query heads j*n_rep .. (j+1)*n_rep share kv head j, so
        // fold the group into the row dimension: [b, nkv, n_rep * s, hd].
        let n_rep = self.num_heads / nkv;
        let q = q.reshape((b, nkv, n_rep * s, hd))?;
        // HF: `(q @ k^T) * scaling` in the activation dtype (the scalar applied in f32, one
        // rounding), then the mask is added and softmax runs in f32. candle's affine would
        // round the scale itself to bf16, so scale in f32 and round the product once.
        let scores = matmul(&q, &k.t()?)?; // [b, nkv, n_rep*s, kv_len]
        let scores = if scores.dtype() == DType::F32 {
            (scores * self.scale)?
        } else {
            (scores.to_dtype(DType::F32)? * self.scale)?
                .to_dtype(scores.dtype())?
                .to_dtype(DType::F32)?
        };
        let scores = match mask {
            Some(mask) => scores
                .reshape((b, nkv, n_rep, s, kv_len))?
                .broadcast_add(mask)?
                .reshape((b, nkv, n_rep * s, kv_len))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        matmul(&probs, v) // [b, nkv, n_rep*s, hd]
    }

    /// Attention read straight from the KV cache buffers for f32 on the CPU, batch 1: a decode
    /// step (one query, no mask) or a prompt under the plain causal mask (query i at cache
    /// position `kv_len − s + i` sees keys 0..=that position), by [`attend_cached`] — the
    /// tensor path's arithmetic (scale on the f32 product, softmax in f32) without copying K
    /// to transpose it or materialising score and mask tensors. None where it does not apply
    /// (padded batches, other dtypes or devices).
    fn attend_direct(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        use candle_core::Storage;
        let (b, nh, s, hd) = q.dims4()?;
        let causal = match mask {
            None => s == 1,
            // The unpadded causal mask is [s, kv_len]; padded batches carry a 5-D one.
            Some(m) => m.rank() == 2,
        };
        let applies = b == 1
            && causal
            && q.device().is_cpu()
            && q.dtype() == DType::F32
            && matches!(k.dtype(), DType::F32 | DType::F16)
            && v.dtype() == k.dtype()
            && q.is_contiguous();
        if !applies {
            return Ok(None);
        }
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let Storage::Cpu(qs) = &*qs else {
            return Ok(None);
        };
        if kl.stride()[3] != 1 || vl.stride()[3] != 1 {
            return Ok(None);
        }
        let kv = CachedKv::of(&ks, kl, &vs, vl)?;
        let q = &qs.as_slice::<f32>()?[ql.start_offset()..][..nh * s * hd];
        // [nh, s, hd] is [nkv, n_rep * s, hd]: query head h reads kv head h / n_rep.
        let out = attend_cached(q, nh, s, hd, &kv, self.scale as f32);
        let (nkv, n_rep) = (self.num_kv_heads, nh / self.num_kv_heads);
        Ok(Some(Tensor::from_vec(
            out,
            (1, nkv, n_rep * s, hd),
            k.device(),
        )?))
    }

    /// [b, nkv, n_rep * s, hd] attention output -> o_proj -> [b, s, hidden].
    pub(crate) fn output(&self, out: &Tensor, b: usize, s: usize) -> Result<Tensor> {
        let (nh, hd) = (self.num_heads, self.head_dim);
        let out = out
            .reshape((b, nh, s, hd))?
            .transpose(1, 2)? // [b, s, nh, hd]
            .reshape((b, s, nh * hd))?;
        self.o_proj.forward(&out)
    }
}

/// Pre-norm decoder layer: x + attn(norm(x)), then h + mlp(norm(h)).
#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) self_attn: Attention,
    pub(crate) post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
}

/// A checkpoint a decoder layer is read from (HF safetensors or GGUF), each tensor looked up
/// by its row of the parameter table and checked against its shape.
pub(crate) trait LayerSource {
    fn linear(&self, p: &LinearParams) -> Result<Linear>;
    fn rms_norm(&self, p: &ParamSpec, eps: f64) -> Result<RmsNorm>;
}

impl DecoderLayer {
    /// The layer whose tensors table row `p` lists, read from `src`. Absent optional tensors
    /// (biases, q/k norms) are absent from `p`, so every architecture is built the same way.
    pub(crate) fn load(src: &impl LayerSource, cfg: &ModelConfig, p: &LayerParams) -> Result<Self> {
        let eps = cfg.rms_norm_eps;
        let norm =
            |spec: &Option<ParamSpec>| spec.as_ref().map(|s| src.rms_norm(s, eps)).transpose();
        let (a, m) = (&p.self_attn, &p.mlp);
        let hd = cfg.head_dim;
        let self_attn = Attention {
            q_proj: src.linear(&a.q_proj)?,
            k_proj: src.linear(&a.k_proj)?,
            v_proj: src.linear(&a.v_proj)?,
            o_proj: src.linear(&a.o_proj)?,
            q_norm: norm(&a.q_norm)?,
            k_norm: norm(&a.k_norm)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            scale: (hd as f64).powf(-0.5), // python `head_dim**-0.5`
        };
        let mlp = Mlp {
            gate_proj: src.linear(&m.gate_proj)?,
            up_proj: src.linear(&m.up_proj)?,
            down_proj: src.linear(&m.down_proj)?,
        };
        Ok(Self {
            input_layernorm: src.rms_norm(&p.input_layernorm, eps)?,
            self_attn,
            post_attention_layernorm: src.rms_norm(&p.post_attention_layernorm, eps)?,
            mlp,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        self.forward_with(x, |attn, h| attn.forward(h, cos, sin, mask, cache, layer))
    }

    /// The pre-norm residual structure around an attention step supplied by the caller (the
    /// ragged decode attends each row against its own cache).
    pub(crate) fn forward_with(
        &self,
        x: &Tensor,
        attention: impl FnOnce(&Attention, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let h = (x + attention(&self.self_attn, &h)?)?;
        let m = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        Ok((h + m)?)
    }
}

/// Causal mask of a left-padded batch, [b, 1, 1, s, offset + s] in f32 (broadcast over kv
/// heads and query groups): query i of sequence r (at cache index offset + i) may attend key
/// j when j <= offset + i and j is not one of the `pads[r]` leading pad positions. A pad
/// query attends only to itself, so its (ignored) hidden state stays finite instead of
/// becoming NaN from an all -inf row; real queries never see a pad key.
pub(crate) fn padded_causal_mask(
    pads: &[usize],
    s: usize,
    offset: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let kv_len = offset + s;
    let mut mask = Vec::with_capacity(pads.len() * s * kv_len);
    for &pad in pads {
        for i in 0..s {
            let q = offset + i;
            mask.extend((0..kv_len).map(|j| {
                let visible = j <= q && (j >= pad || j == q);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Ok(Tensor::from_vec(
        mask,
        (pads.len(), 1, 1, s, kv_len),
        device,
    )?)
}

/// Causal mask [s, offset + s] in f32: 0 where query i (at cache index offset + i) may attend
/// key j, -inf otherwise.
pub(crate) fn causal_mask(s: usize, offset: usize, device: &candle_core::Device) -> Result<Tensor> {
    let kv_len = offset + s;
    let mask: Vec<f32> = (0..s)
        .flat_map(|i| {
            (0..kv_len).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (s, kv_len), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn split_product_equals_one_gemm() {
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // 1000 output features: parts of unequal size; k = 77: no SIMD-width multiple.
        let w = Tensor::randn(0f32, 1.0, (1000, 77), &dev).unwrap();
        for rows in [1, 3, SPLIT_MAX_ROWS] {
            let x = Tensor::randn(0f32, 1.0, (rows, 77), &dev).unwrap();
            let split = pool
                .install(|| split_matmul_t(&x, &w))
                .unwrap()
                .expect("a decode-sized f32 product is split");
            let one = x.matmul(&w.t().unwrap()).unwrap();
            let diff = (split - &one)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "rows {rows}: max diff {diff}");
        }
        // Prefill-sized, f64 or too narrow: left to the single gemm.
        let x = Tensor::randn(0f32, 1.0, (SPLIT_MAX_ROWS + 1, 77), &dev).unwrap();
        assert!(pool.install(|| split_matmul_t(&x, &w)).unwrap().is_none());
        let narrow = Tensor::randn(0f32, 1.0, (100, 77), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 77), &dev).unwrap();
        assert!(pool
            .install(|| split_matmul_t(&x, &narrow))
            .unwrap()
            .is_none());
        let x64 = x.to_dtype(DType::F64).unwrap();
        let w64 = w.to_dtype(DType::F64).unwrap();
        assert!(pool
            .install(|| split_matmul_t(&x64, &w64))
            .unwrap()
            .is_none());
    }
}
