//! Ragged batched decoding for a continuous-batching server: one decode step for `n`
//! independent sequences, each with its own batch-1 [`KvCache`] at its own position.
//!
//! The position-independent work (embedding lookup, q/k/v/o projections, RMSNorms, the MLP
//! and the lm_head) runs once over all `n` rows, so every weight matrix is read once per step
//! instead of once per sequence; only rope (per-row positions) and attention (each row
//! against its own cache, of its own length) are done per sequence. This is what lets a
//! server admit and retire requests between steps without padding or re-prefilling.

use candle_core::{DType, Tensor};

use super::cache::KvCache;
use super::layers::{matmul, Attention, DecoderLayer};
use super::{EngineError, Model, Result};

impl Model {
    /// One decode step for `tokens.len()` sequences: `tokens[i]` is fed through `caches[i]`
    /// (an unpadded batch-1 cache from [`Model::new_cache`]`(1)`, already holding that
    /// sequence's prompt) at rope position `caches[i].next_position()`. Appends each token's
    /// keys/values to its cache and returns the f32 logits, [n, vocab], row `i` equal (up to
    /// float rounding of the batched matmuls) to what [`Model::forward_last`] gives for that
    /// token through that cache alone.
    pub fn forward_decode_ragged(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 {
            return Err(EngineError::InvalidArgument(
                "ragged decode needs at least one sequence".into(),
            ));
        }
        if caches.len() != n {
            return Err(EngineError::InvalidArgument(format!(
                "{n} tokens but {} caches",
                caches.len()
            )));
        }
        let vocab = self.config.vocab_size;
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::InvalidArgument(format!(
                "token id {t} out of range (vocab size {vocab})"
            )));
        }
        if caches.iter().any(|c| c.batch() != 1 || c.pads().is_some()) {
            return Err(EngineError::InvalidArgument(
                "ragged decode needs unpadded batch-1 caches".into(),
            ));
        }
        let positions: Vec<usize> = caches.iter().map(|c| c.next_position()).collect();
        let ids = Tensor::new(tokens, &self.device)?;
        // [n, 1, hidden]: each sequence is a batch row with one position.
        let mut x =
            self.embed_tokens
                .index_select(&ids, 0)?
                .reshape((n, 1, self.config.hidden_size))?;
        let (cos, sin) = self
            .rope
            .cos_sin_at(&positions, n, 1, self.dtype, &self.device)?; // [n, 1, hd/2]
        for (i, layer) in self.layers.iter().enumerate() {
            x = ragged_layer(layer, &x, &cos, &sin, caches, i)?;
        }
        for cache in caches.iter_mut() {
            cache.advance(1);
        }
        let h = self
            .norm
            .forward(&x)?
            .reshape((n, self.config.hidden_size))?;
        Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
    }
}

/// A decoder layer over `n` rows of one position each: x [n, 1, hidden] -> [n, 1, hidden].
fn ragged_layer(
    layer: &DecoderLayer,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    caches: &mut [&mut KvCache],
    index: usize,
) -> Result<Tensor> {
    let h = layer.input_layernorm.forward(x)?;
    let h = (x + ragged_attention(&layer.self_attn, &h, cos, sin, caches, index)?)?;
    let m = layer
        .mlp
        .forward(&layer.post_attention_layernorm.forward(&h)?)?;
    Ok((h + m)?)
}

/// Attention with batched projections and per-sequence score/value products, with the
/// numerics of `Attention::forward` for a single unmasked decode position.
fn ragged_attention(
    attn: &Attention,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    caches: &mut [&mut KvCache],
    layer: usize,
) -> Result<Tensor> {
    let n = x.dim(0)?;
    let (nh, nkv, hd) = (attn.num_heads, attn.num_kv_heads, attn.head_dim);
    let q = attn.q_proj.forward(x)?.reshape((n, 1, nh, hd))?;
    let k = attn.k_proj.forward(x)?.reshape((n, 1, nkv, hd))?;
    let v = attn.v_proj.forward(x)?.reshape((n, 1, nkv, hd))?;
    let (q, k) = match (&attn.q_norm, &attn.k_norm) {
        (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
        _ => (q, k),
    };
    let q = q.transpose(1, 2)?.contiguous()?; // [n, nh, 1, hd]
    let k = k.transpose(1, 2)?.contiguous()?; // [n, nkv, 1, hd]
    let v = v.transpose(1, 2)?.contiguous()?;
    let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
    let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
    let n_rep = nh / nkv;
    let mut outs = Vec::with_capacity(n);
    for (i, cache) in caches.iter_mut().enumerate() {
        let ki = k.narrow(0, i, 1)?.contiguous()?;
        let vi = v.narrow(0, i, 1)?.contiguous()?;
        let (kc, vc) = cache.append(layer, &ki, &vi)?; // [1, nkv, len, hd]
                                                       // GQA by folding the query group into rows, as in Attention::forward.
        let qi = q.narrow(0, i, 1)?.reshape((1, nkv, n_rep, hd))?;
        let scores = matmul(&qi, &kc.t()?)?; // [1, nkv, n_rep, len]
        let scores = if scores.dtype() == DType::F32 {
            (scores * attn.scale)?
        } else {
            (scores.to_dtype(DType::F32)? * attn.scale)?
                .to_dtype(scores.dtype())?
                .to_dtype(DType::F32)?
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(x.dtype())?;
        let out = matmul(&probs, &vc)?; // [1, nkv, n_rep, hd]
        outs.push(out.reshape((1, 1, nh * hd))?);
    }
    let out = Tensor::cat(&outs, 0)?; // [n, 1, nh*hd]
    attn.o_proj.forward(&out)
}
