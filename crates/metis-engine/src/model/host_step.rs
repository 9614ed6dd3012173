//! Decoding on the CPU without the tensor graph: `n` sequences with one new token each (a
//! decode step), or one sequence's prompt, through every layer on plain f32 buffers.
//!
//! A decode step of a small model is ~120 matrix products of 50–300 µs and, around them,
//! ~15 small operations per layer (norms, rope, reshapes, residual adds, SwiGLU). Through
//! candle each of those is a tensor allocation and a dispatch (several fan out to rayon for a
//! single row), which cost a third of the step on SmolLM2-135M. Here the same arithmetic runs
//! in place: [`HostPlan`] holds what a step needs besides the matrices (norm weights and
//! biases as f32 vectors), [`HostPlan::step`] and [`HostPlan::prompt`] walk the layers as
//! named steps over a few buffers allocated once per call, the products go through
//! [`crate::quant::matmul_group`] as before, and attention reads the KV caches in place on the
//! product pool ([`super::cpu_attention`]).
//!
//! The results equal the tensor path's bit for bit (same products and attention, same
//! operation order in the norms, rope, softmax and SwiGLU); `tests` checks that on Llama,
//! Qwen2 and Qwen3 layouts and a quantized GGUF. A plan exists only where it applies: f32
//! compute on the CPU with every projection a [`QMatrix`] (GGUF files and memory-mapped
//! f32/f16/bf16 safetensors).

use candle_core::{DType, Device, Tensor};

use super::cache::KvCache;
use super::cpu_attention::{attend_cached, attend_decode, CachedKv};
use super::layers::{Attention, DecoderLayer, Embedding, Linear, LinearWeight, RmsNorm};
use super::{Model, Result};
use crate::config::rope_cos_sin;
use crate::quant::{self, QMatrix};

/// A projection of the plan: the matrix and its bias.
#[derive(Debug, Clone)]
struct HostLinear {
    w: QMatrix,
    bias: Option<Vec<f32>>,
}

/// An RMSNorm of the plan: its weight in f32.
#[derive(Debug, Clone)]
struct HostNorm {
    weight: Vec<f32>,
    eps: f32,
}

#[derive(Debug, Clone)]
struct HostLayer {
    input_norm: HostNorm,
    q: HostLinear,
    k: HostLinear,
    v: HostLinear,
    o: HostLinear,
    q_norm: Option<HostNorm>,
    k_norm: Option<HostNorm>,
    post_norm: HostNorm,
    gate: HostLinear,
    up: HostLinear,
    down: HostLinear,
}

/// What a host decode step reads besides the model's matrices.
#[derive(Debug, Clone)]
pub(crate) struct HostPlan {
    layers: Vec<HostLayer>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

/// Per-step activations, [n, width] each.
struct Buffers {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl HostNorm {
    fn of(norm: &RmsNorm) -> Option<Self> {
        let (weight, eps) = norm.parts();
        Some(Self {
            weight: weight.to_dtype(DType::F32).ok()?.to_vec1().ok()?,
            eps,
        })
    }

    /// candle's `rms_norm` on each `weight.len()`-wide row of `x` in place, in its operation
    /// order (sum of squares in order, `x / sqrt(mean + eps) * w`).
    fn apply(&self, x: &mut [f32]) {
        let dim = self.weight.len();
        for row in x.chunks_exact_mut(dim) {
            let sum2 = row.iter().map(|&v| v * v).sum::<f32>();
            let m = (sum2 / dim as f32 + self.eps).sqrt();
            for (v, &w) in row.iter_mut().zip(&self.weight) {
                *v = *v / m * w;
            }
        }
    }

    /// `out = rms_norm(x)` row by row.
    fn apply_into(&self, x: &[f32], out: &mut [f32]) {
        out.copy_from_slice(x);
        self.apply(out);
    }
}

impl HostLinear {
    fn of(linear: &Linear) -> Option<Self> {
        let LinearWeight::Matrix(w) = &linear.weight else {
            return None;
        };
        let bias = match &linear.bias {
            Some(b) => Some(b.to_dtype(DType::F32).ok()?.to_vec1().ok()?),
            None => None,
        };
        Some(Self { w: w.clone(), bias })
    }

    /// Adds the bias (if any) to each row of `y` [n, rows].
    fn add_bias(&self, y: &mut [f32]) {
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len()) {
                for (v, &c) in row.iter_mut().zip(b) {
                    *v += c;
                }
            }
        }
    }
}

/// Several projections of the same input in one grouped product, biases added.
fn project(ls: &[&HostLinear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) {
    let ws: Vec<&QMatrix> = ls.iter().map(|l| &l.w).collect();
    quant::matmul_group(&ws, x, n, ys);
    for (l, y) in ls.iter().zip(ys.iter_mut()) {
        l.add_bias(y);
    }
}

/// `x += y` elementwise.
fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// [a, b, hd] → [b, a, hd].
fn transpose_heads(x: &[f32], a: usize, b: usize, hd: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * hd..][..hd].copy_from_slice(&x[(i * b + j) * hd..][..hd]);
        }
    }
    out
}

/// candle's non-interleaved rope (`rotate_half`) on each `2 * cos.len()`-wide head of `x`.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in x.chunks_exact_mut(2 * half) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x1 * sin[i] + x2 * cos[i];
        }
    }
}

impl HostPlan {
    /// The plan of `model`, or None where the host step does not apply (another dtype or
    /// device, or a projection that is not a [`QMatrix`]).
    pub(crate) fn new(model: &Model) -> Option<Self> {
        if model.dtype != DType::F32 || !model.device.is_cpu() {
            return None;
        }
        let layers = model
            .layers
            .iter()
            .map(HostLayer::of)
            .collect::<Option<Vec<_>>>()?;
        let a = &model.layers.first()?.self_attn;
        Some(Self {
            layers,
            num_heads: a.num_heads,
            num_kv_heads: a.num_kv_heads,
            head_dim: a.head_dim,
            scale: a.scale as f32,
        })
    }

    /// One decode step: `x` [n, hidden] holds the embeddings of the `n` new tokens, the token
    /// of row `i` sits at rope position `positions[i]` and attends through `caches[i]` (batch-1,
    /// unpadded). Returns the last layer's output [n, hidden]; the caches hold the new keys and
    /// values but are not advanced (the caller advances them once every layer has run).
    pub(crate) fn step(
        &self,
        x: Vec<f32>,
        positions: &[usize],
        rope_inv_freq: &[f32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<f32>> {
        let (cos, sin) = rope_cos_sin(rope_inv_freq, positions.iter().copied());
        self.layers_over(x, positions.len(), &cos, &sin, |index, buf| {
            self.attend(index, buf, caches)
        })
    }

    /// A prompt of one sequence: `x` [s, hidden] holds the embeddings of `s` tokens at rope
    /// positions `start ..`, appended to `cache` (batch-1, unpadded) after what it holds,
    /// each attending causally. Returns the last layer's output [s, hidden]; the cache is not
    /// advanced.
    pub(crate) fn prompt(
        &self,
        x: Vec<f32>,
        s: usize,
        start: usize,
        rope_inv_freq: &[f32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let (cos, sin) = rope_cos_sin(rope_inv_freq, start..start + s);
        self.layers_over(x, s, &cos, &sin, |index, buf| {
            self.attend_prompt(index, buf, s, cache)
        })
    }

    /// Every layer over the `n` rows of `x`, with rope tables `cos`/`sin` [n, head_dim / 2]
    /// and `attend` filling `buf.att` from `buf.q`, `buf.k`, `buf.v` for a layer.
    fn layers_over(
        &self,
        x: Vec<f32>,
        n: usize,
        cos: &[f32],
        sin: &[f32],
        mut attend: impl FnMut(usize, &mut Buffers) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let mut buf = self.buffers(x, n);
        for (index, layer) in self.layers.iter().enumerate() {
            self.attention_block(layer, index, &mut buf, n, cos, sin, &mut attend)?;
            Self::mlp_block(layer, &mut buf, n);
        }
        Ok(buf.x)
    }

    fn buffers(&self, x: Vec<f32>, n: usize) -> Buffers {
        let hidden = x.len() / n;
        let (q_dim, kv_dim) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
        let inter = self.layers.first().map_or(0, |l| l.gate.w.rows());
        Buffers {
            x,
            h: vec![0.0; n * hidden],
            q: vec![0.0; n * q_dim],
            k: vec![0.0; n * kv_dim],
            v: vec![0.0; n * kv_dim],
            att: vec![0.0; n * q_dim],
            proj: vec![0.0; n * hidden],
            gate: vec![0.0; n * inter],
            up: vec![0.0; n * inter],
        }
    }

    /// `x += o(attention(rope(q), rope(k), v))` over `norm(x)`, each row against its cache.
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        layer: &HostLayer,
        index: usize,
        buf: &mut Buffers,
        n: usize,
        cos: &[f32],
        sin: &[f32],
        attend: &mut impl FnMut(usize, &mut Buffers) -> Result<()>,
    ) -> Result<()> {
        layer.input_norm.apply_into(&buf.x, &mut buf.h);
        project(
            &[&layer.q, &layer.k, &layer.v],
            &buf.h,
            n,
            &mut [&mut buf.q, &mut buf.k, &mut buf.v],
        );
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            qn.apply(&mut buf.q);
            kn.apply(&mut buf.k);
        }
        let half = self.head_dim / 2;
        let q_dim = self.num_heads * self.head_dim;
        let kv_dim = self.num_kv_heads * self.head_dim;
        for r in 0..n {
            let (c, s) = (&cos[r * half..][..half], &sin[r * half..][..half]);
            rope(&mut buf.q[r * q_dim..][..q_dim], c, s);
            rope(&mut buf.k[r * kv_dim..][..kv_dim], c, s);
        }
        attend(index, buf)?;
        project(&[&layer.o], &buf.att, n, &mut [&mut buf.proj]);
        add_into(&mut buf.x, &buf.proj);
        Ok(())
    }

    /// Appends each row's key and value to its cache, then attends every row against its
    /// cache read in place: `buf.att` [n, heads * head_dim].
    fn attend(&self, index: usize, buf: &mut Buffers, caches: &mut [&mut KvCache]) -> Result<()> {
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let kv_dim = nkv * hd;
        let mut views = Vec::with_capacity(caches.len());
        for (r, cache) in caches.iter_mut().enumerate() {
            let row = |b: &[f32]| {
                Tensor::from_slice(&b[r * kv_dim..][..kv_dim], (1, nkv, 1, hd), &Device::Cpu)
            };
            views.push(cache.append(index, &row(&buf.k)?, &row(&buf.v)?)?);
        }
        let reads: Vec<_> = views
            .iter()
            .map(|(k, v)| (k.storage_and_layout(), v.storage_and_layout()))
            .collect();
        let kvs = reads
            .iter()
            .map(|((ks, kl), (vs, vl))| CachedKv::of(ks, kl, vs, vl))
            .collect::<Result<Vec<_>>>()?;
        let kv_refs: Vec<&CachedKv> = kvs.iter().collect();
        attend_decode(&buf.q, &kv_refs, nh / nkv, hd, self.scale, &mut buf.att);
        Ok(())
    }

    /// A prompt's attention: its `s` keys and values appended to `cache`, then every query
    /// against the cache under the causal mask ([`attend_cached`] takes heads-major
    /// [heads, s, head_dim]; the rows here are position-major [s, heads * head_dim]).
    fn attend_prompt(
        &self,
        index: usize,
        buf: &mut Buffers,
        s: usize,
        cache: &mut KvCache,
    ) -> Result<()> {
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads_major = |rows: &[f32], heads: usize| {
            Tensor::from_vec(
                transpose_heads(rows, s, heads, hd),
                (1, heads, s, hd),
                &Device::Cpu,
            )
        };
        let (k, v) = cache.append(
            index,
            &heads_major(&buf.k, nkv)?,
            &heads_major(&buf.v, nkv)?,
        )?;
        let ((ks, kl), (vs, vl)) = (k.storage_and_layout(), v.storage_and_layout());
        let kv = CachedKv::of(&ks, kl, &vs, vl)?;
        let q = transpose_heads(&buf.q, s, nh, hd);
        let out = attend_cached(&q, nh, s, hd, &kv, self.scale);
        buf.att = transpose_heads(&out, nh, s, hd);
        Ok(())
    }

    /// `x += down(silu(gate(norm(x))) * up(norm(x)))`.
    fn mlp_block(layer: &HostLayer, buf: &mut Buffers, n: usize) {
        layer.post_norm.apply_into(&buf.x, &mut buf.h);
        project(
            &[&layer.gate, &layer.up],
            &buf.h,
            n,
            &mut [&mut buf.gate, &mut buf.up],
        );
        for (g, &u) in buf.gate.iter_mut().zip(&buf.up) {
            // candle's silu, then the product: `silu(g) * u`.
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        project(&[&layer.down], &buf.gate, n, &mut [&mut buf.proj]);
        add_into(&mut buf.x, &buf.proj);
    }
}

impl HostLayer {
    fn of(layer: &DecoderLayer) -> Option<Self> {
        let a: &Attention = &layer.self_attn;
        let m = &layer.mlp;
        Some(Self {
            input_norm: HostNorm::of(&layer.input_layernorm)?,
            q: HostLinear::of(&a.q_proj)?,
            k: HostLinear::of(&a.k_proj)?,
            v: HostLinear::of(&a.v_proj)?,
            o: HostLinear::of(&a.o_proj)?,
            q_norm: optional_norm(&a.q_norm)?,
            k_norm: optional_norm(&a.k_norm)?,
            post_norm: HostNorm::of(&layer.post_attention_layernorm)?,
            gate: HostLinear::of(&m.gate_proj)?,
            up: HostLinear::of(&m.up_proj)?,
            down: HostLinear::of(&m.down_proj)?,
        })
    }
}

/// Some(None) for an absent norm, None (no plan) for a present one that cannot be read.
fn optional_norm(norm: &Option<RmsNorm>) -> Option<Option<HostNorm>> {
    match norm {
        None => Some(None),
        Some(n) => HostNorm::of(n).map(Some),
    }
}

/// Whether decode steps may take the host path: yes unless `METIS_HOST_STEP=off` (to compare
/// with the tensor path in benchmarks and bug reports).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("METIS_HOST_STEP").map_or(true, |v| v != "off"))
}

impl Model {
    /// The host decode plan, built on first use (None where it does not apply).
    pub(crate) fn host_plan(&self) -> Option<&HostPlan> {
        self.host.get_or_init(|| HostPlan::new(self)).as_ref()
    }

    /// A decode step through the host plan: embeddings of `tokens` (ids already checked),
    /// every layer, the final norm and the head; f32 logits [n, vocab]. None where no plan
    /// applies. Advances every cache by one position.
    pub(crate) fn host_decode(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Option<Tensor>> {
        if !enabled() {
            return Ok(None);
        }
        let Some(plan) = self.host_plan() else {
            return Ok(None);
        };
        let n = tokens.len();
        let hidden = self.config.hidden_size;
        let x = self.embed_rows(tokens)?;
        let positions: Vec<usize> = caches.iter().map(|c| c.next_position()).collect();
        let x = plan.step(x, &positions, self.rope.inv_freq(), caches)?;
        for cache in caches.iter_mut() {
            cache.advance(1);
        }
        let x = Tensor::from_vec(x, (n, hidden), &self.device)?;
        let h = self.norm.forward(&x)?;
        Ok(Some(self.lm_head.forward(&h)?.to_dtype(DType::F32)?))
    }

    /// A prompt through the host plan: `tokens` (ids already checked, at least one) appended
    /// to `cache` (batch-1, unpadded) at its next positions; f32 logits of the last position
    /// [1, vocab]. None where no plan applies. Advances the cache by the prompt's length.
    pub(crate) fn host_prompt(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Option<Tensor>> {
        if !enabled() {
            return Ok(None);
        }
        let Some(plan) = self.host_plan() else {
            return Ok(None);
        };
        let (s, hidden) = (tokens.len(), self.config.hidden_size);
        let x = self.embed_rows(tokens)?;
        let x = plan.prompt(x, s, cache.next_position(), self.rope.inv_freq(), cache)?;
        cache.advance(s);
        let last = Tensor::from_slice(&x[(s - 1) * hidden..], (1, hidden), &self.device)?;
        let h = self.norm.forward(&last)?;
        Ok(Some(self.lm_head.forward(&h)?.to_dtype(DType::F32)?))
    }

    /// Embedding rows of `tokens` as f32, [n, hidden] row-major.
    fn embed_rows(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        match &self.embed_tokens {
            Embedding::Quantized(m) => {
                let hidden = m.cols();
                let mut out = vec![0f32; tokens.len() * hidden];
                for (&id, row) in tokens.iter().zip(out.chunks_exact_mut(hidden)) {
                    m.dequantize_row(id as usize, row);
                }
                Ok(out)
            }
            dense => {
                let ids = Tensor::new(tokens, &self.device)?;
                Ok(dense
                    .forward(&ids)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?)
            }
        }
    }
}

#[cfg(test)]
mod tests;
