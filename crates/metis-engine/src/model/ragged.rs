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
use super::layers::DecoderLayer;
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
        if let Some(logits) = self.host_decode(tokens, caches)? {
            return Ok(logits);
        }
        let positions: Vec<usize> = caches.iter().map(|c| c.next_position()).collect();
        let ids = Tensor::new(tokens, &self.device)?;
        // [n, 1, hidden]: each sequence is a batch row with one position.
        let mut x = self
            .embed_tokens
            .forward(&ids)?
            .to_dtype(self.dtype)?
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
/// Projections, norms and the MLP run batched; each row attends to its own cache.
fn ragged_layer(
    layer: &DecoderLayer,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    caches: &mut [&mut KvCache],
    index: usize,
) -> Result<Tensor> {
    layer.forward_with(x, |attn, h| {
        let n = h.dim(0)?;
        let (q, k, v) = attn.project(h, cos, sin)?; // [n, heads, 1, hd]
        let mut outs = Vec::with_capacity(n);
        for (i, cache) in caches.iter_mut().enumerate() {
            let (kc, vc) = cache.append(index, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?)?;
            outs.push(attn.attend(&q.narrow(0, i, 1)?, &kc, &vc, None, h.dtype())?);
        }
        attn.output(&Tensor::cat(&outs, 0)?, n, 1)
    })
}
