//! [`BatchLayout`]: which tokens of a `[batch, seq]` input are real, which document each belongs
//! to (sequence packing), and the rope position of every token.

use candle_core::{DType, Device, Tensor};

use super::error::{Result, TrainError};

/// Attention layout of a `[batch, seq]` batch.
///
/// Every token carries a *segment id* (0 = padding; any other value = the document it belongs
/// to) and a rope *position*. Query `i` of row `r` attends key `j` of the same row iff
/// `j <= i` and both tokens are in the same non-zero segment. Padding queries attend only to
/// themselves (their outputs are finite and meaningless: mask them out of the loss).
///
/// Constructors:
/// * [`BatchLayout::dense`]: no padding, positions `0..seq`;
/// * [`BatchLayout::from_lengths`]: right padding (the SFT default);
/// * [`BatchLayout::from_attention_mask`]: HF-style 0/1 mask (left or right padding), positions
///   `cumsum(mask) - 1` as transformers computes them for generation;
/// * [`BatchLayout::packed`]: several documents per row, positions restart at 0 at each
///   document start, no attention across documents.
///
/// [`BatchLayout::with_positions`] overrides the positions (e.g. a prompt continued at an
/// offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLayout {
    batch: usize,
    seq: usize,
    /// [batch * seq] row-major; 0 = padding.
    segments: Vec<u32>,
    /// [batch * seq] row-major rope positions.
    positions: Vec<u32>,
}

impl BatchLayout {
    /// `batch` rows of `seq` real tokens each, positions `0..seq`.
    pub fn dense(batch: usize, seq: usize) -> Self {
        Self {
            batch,
            seq,
            segments: vec![1; batch * seq],
            positions: (0..batch).flat_map(|_| 0..seq as u32).collect(),
        }
    }

    /// Right-padded rows: row `r` has `lengths[r]` real tokens then padding up to `seq`.
    pub fn from_lengths(lengths: &[usize], seq: usize) -> Result<Self> {
        if let Some(&l) = lengths.iter().find(|&&l| l > seq) {
            return Err(TrainError::InvalidArgument(format!(
                "sequence length {l} exceeds the padded length {seq}"
            )));
        }
        let segments = lengths
            .iter()
            .flat_map(|&l| (0..seq).map(move |i| u32::from(i < l)))
            .collect();
        Ok(Self {
            batch: lengths.len(),
            seq,
            segments,
            positions: (0..lengths.len()).flat_map(|_| 0..seq as u32).collect(),
        })
    }

    /// From HF-style attention-mask rows (non-zero = real token), left or right padded (or with
    /// holes). Positions are `cumsum(mask) - 1` (0 on leading pads).
    pub fn from_attention_mask(mask: &[Vec<u32>]) -> Result<Self> {
        let seq = mask.first().map_or(0, Vec::len);
        let mut segments = Vec::with_capacity(mask.len() * seq);
        let mut positions = Vec::with_capacity(mask.len() * seq);
        for row in mask {
            if row.len() != seq {
                return Err(TrainError::InvalidArgument(format!(
                    "attention mask rows of different lengths ({} and {seq})",
                    row.len()
                )));
            }
            let mut count = 0u32;
            for &m in row {
                let real = m != 0;
                count += u32::from(real);
                segments.push(u32::from(real));
                positions.push(count.saturating_sub(1));
            }
        }
        Ok(Self {
            batch: mask.len(),
            seq,
            segments,
            positions,
        })
    }

    /// From an attention-mask tensor `[batch, seq]` (any integer or float dtype, non-zero =
    /// real), see [`BatchLayout::from_attention_mask`].
    pub fn from_attention_mask_tensor(mask: &Tensor) -> Result<Self> {
        let rows = mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        Self::from_attention_mask(&rows)
    }

    /// Packed rows: `segment_ids[r][i]` is the document of token `i` of row `r` (0 = padding).
    /// A document is a maximal run of equal non-zero ids; positions restart at 0 at each run.
    pub fn packed(segment_ids: &[Vec<u32>]) -> Result<Self> {
        let seq = segment_ids.first().map_or(0, Vec::len);
        let mut segments = Vec::with_capacity(segment_ids.len() * seq);
        let mut positions = Vec::with_capacity(segment_ids.len() * seq);
        for row in segment_ids {
            if row.len() != seq {
                return Err(TrainError::InvalidArgument(format!(
                    "segment id rows of different lengths ({} and {seq})",
                    row.len()
                )));
            }
            let mut prev = None;
            let mut pos = 0u32;
            // Runs are renumbered so equal ids in two separate runs never attend each other.
            let mut run = 0u32;
            for &id in row {
                if id == 0 {
                    segments.push(0);
                    positions.push(0);
                    prev = None;
                    continue;
                }
                if prev != Some(id) {
                    run += 1;
                    pos = 0;
                    prev = Some(id);
                }
                segments.push(run);
                positions.push(pos);
                pos += 1;
            }
        }
        Ok(Self {
            batch: segment_ids.len(),
            seq,
            segments,
            positions,
        })
    }

    /// Replace the rope positions (`positions[r][i]`).
    pub fn with_positions(mut self, positions: &[Vec<u32>]) -> Result<Self> {
        if positions.len() != self.batch || positions.iter().any(|r| r.len() != self.seq) {
            return Err(TrainError::InvalidArgument(format!(
                "positions must be [{}, {}]",
                self.batch, self.seq
            )));
        }
        self.positions = positions.concat();
        Ok(self)
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn seq(&self) -> usize {
        self.seq
    }

    /// Row-major segment ids (0 = padding).
    pub fn segments(&self) -> &[u32] {
        &self.segments
    }

    /// Row-major rope positions.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// Whether token `i` of row `r` is real (not padding).
    pub fn is_real(&self, r: usize, i: usize) -> bool {
        self.segments[r * self.seq + i] != 0
    }

    /// `[batch, seq]` f32: 1 for real tokens, 0 for padding.
    pub fn real_mask(&self, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = self.segments.iter().map(|&s| f32::from(s != 0)).collect();
        Ok(Tensor::from_vec(v, (self.batch, self.seq), device)?)
    }

    /// Additive attention bias `[batch, 1, 1, seq, seq]` (0 or -inf) in `dtype`.
    pub(crate) fn attention_bias(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let (b, s) = (self.batch, self.seq);
        let mut bias = Vec::with_capacity(b * s * s);
        for r in 0..b {
            let seg = &self.segments[r * s..(r + 1) * s];
            for i in 0..s {
                for j in 0..s {
                    let visible = if seg[i] == 0 {
                        j == i
                    } else {
                        j <= i && seg[j] == seg[i]
                    };
                    bias.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        Ok(Tensor::from_vec(bias, (b, 1, 1, s, s), device)?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_positions_restart() {
        let l = BatchLayout::packed(&[vec![7, 7, 7, 3, 3, 0], vec![1, 1, 2, 1, 0, 0]]).unwrap();
        assert_eq!(l.positions(), &[0, 1, 2, 0, 1, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(l.segments(), &[1, 1, 1, 2, 2, 0, 1, 1, 2, 3, 0, 0]);
    }

    #[test]
    fn attention_mask_positions() {
        let l = BatchLayout::from_attention_mask(&[vec![0, 0, 1, 1], vec![1, 1, 1, 0]]).unwrap();
        assert_eq!(l.positions(), &[0, 0, 0, 1, 0, 1, 2, 2]);
        assert!(!l.is_real(0, 1) && l.is_real(0, 2) && !l.is_real(1, 3));
    }
}
