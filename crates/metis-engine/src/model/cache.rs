//! Key/value cache: one preallocated, geometrically growing buffer per layer.

use candle_core::{DType, Tensor};

use super::EngineError;

/// Per-layer K and V buffers, each [batch, kv_heads, capacity, head_dim].
#[derive(Debug, Clone, Default)]
struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

/// The KV cache of a [`super::Model`] for a fixed batch size.
///
/// Position `i` of the cache holds the keys/values of rope position `i + pos_offset`
/// (`pos_offset` is 0 unless [`super::Model::forward_at`] started beyond the cache end).
///
/// A *padded* cache ([`super::Model::new_padded_cache`]) holds a left-padded batch: sequence
/// `i` starts with `pads[i]` pad positions, which stay in the cache but are masked out of
/// every later attention, and its rope positions count from its first real token (cache
/// index `c` holds rope position `c + pos_offset - pads[i]`).
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    batch: usize,
    len: usize,
    pos_offset: usize,
    max_positions: usize,
    /// Left-pad count of each sequence; None for an unpadded cache.
    pads: Option<Vec<usize>>,
    /// What keys and values are stored as (None: as they come).
    dtype: Option<DType>,
}

impl KvCache {
    pub(crate) fn new(num_layers: usize, batch: usize, max_positions: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            batch,
            len: 0,
            pos_offset: 0,
            max_positions,
            pads: None,
            dtype: None,
        }
    }

    /// Store keys and values as `dtype` (converted on the way in).
    pub(crate) fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    pub(crate) fn with_pads(mut self, pads: Vec<usize>) -> Self {
        self.pads = Some(pads);
        self
    }

    /// Left-pad count of each sequence of a padded cache (None for an unpadded one).
    pub fn pads(&self) -> Option<&[usize]> {
        self.pads.as_deref()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Batch size the cache was created for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Rope position of the next token fed through this cache.
    pub fn next_position(&self) -> usize {
        self.len + self.pos_offset
    }

    /// Forget every cached position (keeps the allocated buffers and, for a padded cache, the
    /// pad counts: the next forward pass must feed the same left-padded layout again).
    pub fn clear(&mut self) {
        self.len = 0;
        self.pos_offset = 0;
    }

    /// Keep only the first `len` positions (no-op if `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
        }
        if self.len == 0 {
            self.pos_offset = 0;
        }
    }

    pub(crate) fn set_pos_offset(&mut self, pos_offset: usize) {
        self.pos_offset = pos_offset;
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Write `k`, `v` ([batch, kv_heads, seq, head_dim], contiguous) at the current end of
    /// layer `layer` and return views of all cached keys/values, [batch, kv_heads, len + seq,
    /// head_dim] (the length is only committed by [`KvCache::advance`]).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor), EngineError> {
        let (k, v) = match self.dtype {
            Some(dtype) if k.dtype() != dtype => (k.to_dtype(dtype)?, v.to_dtype(dtype)?),
            _ => (k.clone(), v.clone()),
        };
        let (k, v) = (&k, &v);
        let (b, h, s, d) = k.dims4()?;
        if b != self.batch {
            return Err(EngineError::InvalidArgument(format!(
                "KV cache was created for batch {} but the input has batch {b}",
                self.batch
            )));
        }
        let offset = self.len;
        let needed = offset + s;
        let max_positions = self.max_positions;
        let slot = &mut self.layers[layer];
        let cap = slot.k.as_ref().map(|t| t.dim(2)).transpose()?.unwrap_or(0);
        if needed > cap {
            let new_cap = needed
                .max((cap * 2).min(max_positions.max(needed)))
                .max(64)
                .next_multiple_of(64);
            let grow = |old: &Option<Tensor>, like: &Tensor| -> candle_core::Result<Tensor> {
                let buf = Tensor::zeros((b, h, new_cap, d), like.dtype(), like.device())?;
                if let (Some(old), true) = (old, offset > 0) {
                    buf.slice_set(&old.narrow(2, 0, offset)?.contiguous()?, 2, 0)?;
                }
                Ok(buf)
            };
            slot.k = Some(grow(&slot.k, k)?);
            slot.v = Some(grow(&slot.v, v)?);
        }
        let (kb, vb) = match (&slot.k, &slot.v) {
            (Some(kb), Some(vb)) => (kb, vb),
            _ => unreachable!("buffers allocated above"),
        };
        kb.slice_set(k, 2, offset)?;
        vb.slice_set(v, 2, offset)?;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }
}
