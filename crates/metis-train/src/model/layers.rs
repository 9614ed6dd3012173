//! Differentiable building blocks: linear (+ LoRA), RMSNorm, softmax, attention, SwiGLU MLP.
//! Only ops with a candle backward are used (no fused `_no_bwd` kernels).

use candle_core::{DType, Tensor, D};

use super::error::Result;
use super::fused::{self, AttentionMask, RopeTables};
use super::rope::apply_rope;
use crate::lora::LoraAdapter;

/// Where each token is (rope) and what it may attend to (mask), in the form the attention
/// path needs: the fused CPU kernels take the tables and segment ids; the spelled-out path
/// takes cos/sin `[b, 1, s, hd]` and an additive bias `[b, 1, 1, s, s]` (0 / -inf).
#[derive(Debug, Clone)]
pub(crate) enum Positions {
    Fused {
        rope: RopeTables,
        mask: AttentionMask,
    },
    Dense {
        cos: Tensor,
        sin: Tensor,
        bias: Tensor,
    },
}

/// Per-forward context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    /// Whether LoRA adapters are applied.
    pub(crate) adapters: bool,
    /// Some(key) in a training forward: dropout masks are drawn from this key.
    pub(crate) dropout_key: Option<u64>,
}

/// Matmul that works for bf16 on CPU (candle has no CPU bf16 gemm): there both sides are
/// widened to f32 (exact) and the product rounded once to bf16, like torch's CPU bf16 gemm
/// (f32 accumulation). Gradients flow through the casts.
pub(crate) fn mm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == DType::BF16 && a.device().is_cpu() {
        let a32 = a.to_dtype(DType::F32)?;
        let b32 = b.to_dtype(DType::F32)?;
        return Ok(a32.matmul(&b32)?.to_dtype(DType::BF16)?);
    }
    Ok(a.matmul(b)?)
}

/// `y = x W^T (+ b) (+ LoRA)`, W [out, in] as stored by HF.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    pub(crate) lora: Option<LoraAdapter>,
}

impl Linear {
    /// x [.., in] -> [.., out]
    pub(crate) fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("rank >= 1");
        let rows = x.elem_count() / in_dim.max(1);
        let out = self.weight.dim(0)?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = out;
        if fused::applies(x) && self.weight.dtype() == x.dtype() {
            // N-d in, N-d out: no reshape nodes (each costs a zeroed buffer and an add in
            // candle's backward).
            let mut y = fused::linear(x, &self.weight)?;
            if let Some(b) = &self.bias {
                y = y.broadcast_add(b)?;
            }
            if let (Some(lora), true) = (&self.lora, ctx.adapters) {
                let delta = lora.forward(&x.reshape((rows, in_dim))?, ctx.dropout_key)?;
                y = (y + delta.reshape(out_dims)?)?;
            }
            return Ok(y);
        }
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = mm(&x2, &self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let (Some(lora), true) = (&self.lora, ctx.adapters) {
            y = (y + lora.forward(&x2, ctx.dropout_key)?)?;
        }
        Ok(y.reshape(out_dims)?)
    }
}

/// The dtype of norms and softmax: f32, or f64 for an f64 model.
pub(crate) fn acc_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// HF RMSNorm over the last dim: `w * (x * rsqrt(mean(x²) + eps))` with the normalisation in
/// f32 (cast back to x's dtype before the weight multiply).
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if fused::applies(x) && w.dtype() == x.dtype() {
        return Ok(fused::rms_norm(x, w, eps)?);
    }
    rms_norm_spelled(x, w, eps)
}

/// [`rms_norm`] as candle ops (bf16 and non-CPU devices).
pub(crate) fn rms_norm_spelled(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(acc_dtype(dtype))?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    let normed = xf.broadcast_mul(&inv)?.to_dtype(dtype)?;
    Ok(normed.broadcast_mul(w)?)
}

/// Softmax over the last dim spelled out: `exp(x - max) / sum(exp(x - max))`, max detached.
pub(crate) fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&sum)?)
}

#[derive(Debug, Clone)]
pub(crate) struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    pub(crate) q_norm: Option<Tensor>,
    pub(crate) k_norm: Option<Tensor>,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) eps: f64,
}

impl Attention {
    /// x [b, s, hidden] -> [b, s, hidden].
    pub(crate) fn forward(&self, x: &Tensor, pos: &Positions, ctx: Ctx) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x, ctx)?; // [b, s, nh * hd]
        let k = self.k_proj.forward(x, ctx)?; // [b, s, nkv * hd]
        let v = self.v_proj.forward(x, ctx)?;
        let scale = (hd as f64).powf(-0.5);
        let out = match pos {
            Positions::Fused { rope, mask } => {
                let (q, k) = match (&self.q_norm, &self.k_norm) {
                    // The fused norm takes each head's hd values as one vector.
                    (Some(qn), Some(kn)) => {
                        (rms_norm(&q, qn, self.eps)?, rms_norm(&k, kn, self.eps)?)
                    }
                    _ => (q, k),
                };
                fused::rope_attention(&q, &k, &v, rope, mask, scale, hd)?
            }
            Positions::Dense { cos, sin, bias } => {
                let mut q = q.reshape((b, s, nh, hd))?;
                let mut k = k.reshape((b, s, nkv, hd))?;
                let v = v.reshape((b, s, nkv, hd))?;
                if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
                    q = rms_norm_spelled(&q, qn, self.eps)?;
                    k = rms_norm_spelled(&k, kn, self.eps)?;
                }
                dense_attention(&q, &k, &v, cos, sin, bias, scale)?.reshape((b, s, nh * hd))?
            }
        };
        self.o_proj.forward(&out, ctx)
    }
}

/// [`fused::rope_attention`] as candle ops on q `[b, s, nh, hd]`, k/v `[b, s, nkv, hd]` → `[b, s, nh,
/// hd]`: cos/sin `[b, 1, s, hd]`, bias `[b, 1, 1, s, s]`.
pub(crate) fn dense_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    bias: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (b, s, nh, hd) = q.dims4()?;
    let nkv = k.dim(2)?;
    let dtype = q.dtype();
    let q = q.transpose(1, 2)?.contiguous()?; // [b, nh, s, hd]
    let k = k.transpose(1, 2)?.contiguous()?; // [b, nkv, s, hd]
    let v = v.transpose(1, 2)?.contiguous()?;
    let q = apply_rope(&q, cos, sin)?;
    let k = apply_rope(&k, cos, sin)?;
    // GQA: query heads j*n_rep..(j+1)*n_rep share kv head j; fold the group into rows.
    let n_rep = nh / nkv;
    let q = q.contiguous()?.reshape((b, nkv, n_rep * s, hd))?;
    let scores = mm(&q, &k.t()?)?; // [b, nkv, n_rep*s, s]
    let scores = (scores.to_dtype(acc_dtype(dtype))? * scale)?
        .reshape((b, nkv, n_rep, s, s))?
        .broadcast_add(bias)?
        .reshape((b, nkv, n_rep * s, s))?;
    let probs = softmax(&scores)?.to_dtype(dtype)?;
    let out = mm(&probs, &v)?; // [b, nkv, n_rep*s, hd]
    Ok(out.reshape((b, nh, s, hd))?.transpose(1, 2)?)
}

#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

impl Mlp {
    pub(crate) fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let (g, u) = (&self.gate_proj, &self.up_proj);
        let plain = |l: &Linear| l.bias.is_none() && (l.lora.is_none() || !ctx.adapters);
        if fused::applies(x)
            && plain(g)
            && plain(u)
            && g.weight.dtype() == x.dtype()
            && u.weight.dtype() == x.dtype()
        {
            let act = fused::gated_mlp_in(x, &g.weight, &u.weight)?;
            return self.down_proj.forward(&act, ctx);
        }
        let gate = g.forward(x, ctx)?;
        let up = u.forward(x, ctx)?;
        self.down_proj.forward(&swiglu(&gate, &up)?, ctx)
    }
}

/// `silu(gate) * up`, silu in f32 (f64) as transformers.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fused::applies(gate) && up.dtype() == gate.dtype() {
        return Ok(fused::swiglu(gate, up)?);
    }
    swiglu_spelled(gate, up)
}

/// [`swiglu`] as candle ops.
pub(crate) fn swiglu_spelled(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let dtype = gate.dtype();
    let act = gate.to_dtype(acc_dtype(dtype))?.silu()?.to_dtype(dtype)?;
    Ok((act * up)?)
}

#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    pub(crate) input_layernorm: Tensor,
    pub(crate) self_attn: Attention,
    pub(crate) post_attention_layernorm: Tensor,
    pub(crate) mlp: Mlp,
    pub(crate) eps: f64,
}

impl DecoderLayer {
    pub(crate) fn forward(&self, x: &Tensor, pos: &Positions, ctx: Ctx) -> Result<Tensor> {
        let h = rms_norm(x, &self.input_layernorm, self.eps)?;
        let h = (x + self.self_attn.forward(&h, pos, ctx)?)?;
        let m = self.mlp.forward(
            &rms_norm(&h, &self.post_attention_layernorm, self.eps)?,
            ctx,
        )?;
        Ok((h + m)?)
    }
}
