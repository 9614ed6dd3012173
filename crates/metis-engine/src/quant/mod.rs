//! Metis's own CPU kernels for GGML-quantized (and f32/f16/bf16) weight matrices, read in place
//! from a memory-mapped GGUF file.
//!
//! A [`QMatrix`] is a view: shared bytes (the file's map, or a buffer a test made), an offset,
//! the GGML type and the logical shape [rows, cols], plus an optional row order (llama Q/K rows
//! are stored permuted for interleaved rope; the view reads them in Hugging Face order instead
//! of copying). [`QMatrix::matmul`] computes `y = x Wᵀ` for f32 activations `x` [m, cols]:
//!
//! * **few rows** (decode, ragged batches; `m < GEMM_MIN_ROWS`): the activations are quantized
//!   once ([`act`]: 32-value blocks for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 256-value blocks for the
//!   k-quants), and each weight row is dotted with them by an integer kernel (`kernels`: AVX-512
//!   VNNI or AVX2 chosen at run time, portable scalar otherwise). Float weights are dotted with f32
//!   activations directly; Q2_K/Q3_K rows are dequantized one at a time into a scratch row.
//! * **many rows** (prefill): the quantized types of the dot path are multiplied in int8 where
//!   the kernel table has a product that beats the f32 gemm on this CPU ([`int8_prompt`]:
//!   activations quantized and interleaved once, weights unpacked to bytes a chunk at a time,
//!   a register tile; AVX-512 VNNI, or AVX2 on CPUs without AVX-512F). Everything else (floats,
//!   Q2_K, Q3_K; every type on other CPUs) is dequantized a chunk of rows at a time into an
//!   f32 scratch (F32 weights are used where they lie) and multiplied with the `gemm` crate.
//!
//! Both paths split the weight rows into tasks, each writing its own output columns, over a
//! small persistent pool whose workers poll between products (`pool`; a decode step runs ~120
//! short products).

pub mod act;
pub(crate) mod f32_gemm;
mod int8_prompt;
pub(crate) mod kernels;
mod pool;
mod portable;
mod x86;

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::GgmlDType;

pub use act::{Q8Acts, Q8KActs};
use f32_gemm::{gemm_f32, Strided};
use int8_prompt::{Int8Prompt, PromptActs, Unpacked, LANES};
pub use kernels::kernel_set;
use portable::{Q8KRow, Q8Row};

/// Activation rows from which a product goes through the prompt path (an int8 register tile,
/// or dequantize + f32 gemm) instead of the dot kernels: the dots re-read nothing, but a tile
/// reuses each weight across rows from registers.
pub const GEMM_MIN_ROWS: usize = 16;

/// Bytes shared by every matrix of a file: the file's memory map, or a buffer in memory.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Why a [`QMatrix`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("GGML type {0:?} is not supported for matrices")]
    UnsupportedType(GgmlDType),
    #[error("{cols} columns are not a whole number of {dtype:?} blocks of {block}")]
    PartialBlock {
        dtype: GgmlDType,
        cols: usize,
        block: usize,
    },
    #[error("matrix bytes {offset}..{end} lie outside the {len}-byte buffer")]
    OutOfBounds {
        offset: usize,
        end: usize,
        len: usize,
    },
    #[error("matrix data at offset {0} is not 4-byte aligned")]
    Misaligned(usize),
    #[error("row order has {got} entries for {rows} rows or is not a permutation")]
    BadRowOrder { rows: usize, got: usize },
}

/// Which activation layout a weight type's kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActKind {
    /// 32-value blocks ([`Q8Acts`]).
    Q8,
    /// 256-value blocks ([`Q8KActs`]).
    Q8K,
    /// f32 activations: float weights, and Q2_K/Q3_K rows dequantized one at a time.
    F32,
}

fn act_kind(dtype: GgmlDType) -> Option<ActKind> {
    use GgmlDType as T;
    Some(match dtype {
        T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 => ActKind::Q8,
        T::Q4K | T::Q5K | T::Q6K => ActKind::Q8K,
        T::F32 | T::F16 | T::BF16 | T::Q2K | T::Q3K => ActKind::F32,
        _ => return None,
    })
}

/// A [rows, cols] weight matrix in GGML storage, viewed in place.
#[derive(Clone)]
pub struct QMatrix {
    data: SharedBytes,
    offset: usize,
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// Logical row i is stored row `row_order[i]`.
    row_order: Option<Arc<[u32]>>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("dtype", &self.dtype)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("permuted", &self.row_order.is_some())
            .finish()
    }
}

impl QMatrix {
    /// The matrix stored at `data[offset..]` as `rows` rows of `cols` values of `dtype`.
    pub fn new(
        data: SharedBytes,
        offset: usize,
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
    ) -> Result<Self, QuantError> {
        act_kind(dtype).ok_or(QuantError::UnsupportedType(dtype))?;
        let block = dtype.block_size();
        if !cols.is_multiple_of(block) {
            return Err(QuantError::PartialBlock { dtype, cols, block });
        }
        let row_bytes = cols / block * dtype.type_size();
        let len = (*data).as_ref().len();
        let end = offset.saturating_add(rows.saturating_mul(row_bytes));
        if end > len {
            return Err(QuantError::OutOfBounds { offset, end, len });
        }
        if !((*data).as_ref().as_ptr() as usize + offset).is_multiple_of(4) {
            return Err(QuantError::Misaligned(offset));
        }
        Ok(Self {
            data,
            offset,
            dtype,
            rows,
            cols,
            row_bytes,
            row_order: None,
        })
    }

    /// Quantize a row-major f32 matrix into a buffer of its own (tests, small tensors).
    pub fn quantize(
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: GgmlDType,
    ) -> Result<Self, QuantError> {
        let bytes = quantize_rows(values, rows, cols, dtype)?;
        Self::new(Arc::new(AlignedBytes::from(bytes)), 0, dtype, rows, cols)
    }

    /// Read logical row i from stored row `order[i]` (a permutation of 0..rows).
    pub fn with_row_order(mut self, order: Vec<u32>) -> Result<Self, QuantError> {
        let mut seen = vec![false; self.rows];
        let ok = order.len() == self.rows
            && order.iter().all(|&r| {
                let r = r as usize;
                r < self.rows && !std::mem::replace(&mut seen[r], true)
            });
        if !ok {
            return Err(QuantError::BadRowOrder {
                rows: self.rows,
                got: order.len(),
            });
        }
        self.row_order = Some(order.into());
        Ok(self)
    }

    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of the weights (what a product reads).
    pub fn size_bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// Stored bytes of logical row `i`.
    fn row(&self, i: usize) -> &[u8] {
        let stored = match &self.row_order {
            Some(order) => order[i] as usize,
            None => i,
        };
        let start = self.offset + stored * self.row_bytes;
        &(*self.data).as_ref()[start..start + self.row_bytes]
    }

    /// Dequantize logical row `i` into `out` (`cols` values).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        dequantize(self.dtype, self.row(i), &mut out[..self.cols]);
    }

    /// `y = x Wᵀ`: `x` [m, cols] row-major, `y` [m, rows] row-major.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        matmul_group(&[self], x, m, &mut [y]);
    }

    /// The dot path with an explicit kernel table (tests compare tables).
    #[cfg(test)]
    pub(crate) fn matmul_dots(&self, x: &[f32], m: usize, y: &mut [f32], k: &kernels::Kernels) {
        dots_group(&[self], x, m, &mut [y], k);
    }

    /// Rows per task: about `per_thread` tasks per pool thread, within [lo, hi].
    fn chunk_rows(&self, per_thread: usize, lo: usize, hi: usize) -> usize {
        let tasks = rayon::current_num_threads().max(1) * per_thread;
        self.rows.div_ceil(tasks).clamp(lo, hi)
    }

    /// The prefill path: per chunk of weight rows, dequantize into an f32 scratch (or use the
    /// stored f32 rows) and run one gemm into that chunk's output columns.
    fn matmul_gemm(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        let chunk = self.chunk_rows(2, 16, 512);
        let in_place = self.dtype == GgmlDType::F32 && self.row_order.is_none();
        let y_ptr = SyncPtr(y.as_mut_ptr());
        // On the product pool rather than rayon's: the pool's workers poll between products,
        // and on few cores a polling worker beside busy rayon workers takes their time.
        pool::global().run(rows.div_ceil(chunk), &|c| {
            let j0 = c * chunk;
            let n = chunk.min(rows - j0);
            // This thread's dequantization buffer, kept between chunks and products (zeroing a
            // fresh one per chunk cost more than a percent of a prefill).
            let mut scratch = DEQUANTIZED.with(|d| std::mem::take(&mut *d.borrow_mut()));
            let w: *const f32 = if in_place {
                // 4-byte alignment checked in `new`.
                self.row(j0).as_ptr() as *const f32
            } else {
                scratch.resize(n * cols, 0f32);
                for (j, out) in scratch.chunks_exact_mut(cols).enumerate() {
                    dequantize(self.dtype, self.row(j0 + j), out);
                }
                scratch.as_ptr()
            };
            let y_ptr = &y_ptr;
            // SAFETY: x is [m, cols] and w is [n, cols] (rows j0..j0+n, contiguous: either the
            // scratch or, unpermuted F32, the stored rows, which `new` bounds-checked); the
            // destination is columns j0..j0+n of y [m, rows], which no other task writes.
            unsafe {
                gemm_f32(
                    (m, n, cols),
                    y_ptr.0.add(j0),
                    rows,
                    Strided::rows(x.as_ptr(), cols),
                    Strided::transposed(w, cols),
                    1.0,
                );
            }
            DEQUANTIZED.with(|d| *d.borrow_mut() = scratch);
        });
    }

    /// The int8 prefill path: per chunk of weight rows, unpack them and run the
    /// table's product with the prepared activations, then copy into the chunk's columns of y.
    fn matmul_int8(&self, acts: &PromptActs, int8: &Int8Prompt, y: &mut [f32]) {
        let (rows, cols, m) = (self.rows, self.cols, acts.m);
        let width = acts.groups * LANES;
        let y_ptr = SyncPtr(y.as_mut_ptr());
        pool::global().run(rows.div_ceil(int8_prompt::CHUNK_ROWS), &|c| {
            let j0 = c * int8_prompt::CHUNK_ROWS;
            let n = int8_prompt::CHUNK_ROWS.min(rows - j0);
            let (mut w, mut out) = UNPACKED.with(|u| std::mem::take(&mut *u.borrow_mut()));
            w.reset(self.dtype, n.next_multiple_of(int8.row_multiple), cols);
            for j in 0..n {
                unpack_on_this_cpu(&mut w, self.dtype, j, self.row(j0 + j));
            }
            out.resize(w.rows * width, 0.0);
            (int8.product)(&w, acts, &mut out);
            let y_ptr = &y_ptr;
            for r in 0..m {
                for j in 0..n {
                    // SAFETY: y is [m, rows]; r < m and j0 + j < rows, and columns
                    // j0..j0+n belong to this task alone.
                    unsafe { *y_ptr.0.add(r * rows + j0 + j) = out[j * width + r] };
                }
            }
            UNPACKED.with(|u| *u.borrow_mut() = (w, out));
        });
    }
}

kernels::on_this_cpu! {
    /// [`Unpacked::unpack_row`], compiled for AVX2 where the kernel table has it.
    fn unpack_on_this_cpu(w: &mut Unpacked, dtype: GgmlDType, r: usize, bytes: &[u8]) {
        w.unpack_row(dtype, r, bytes)
    }
}

/// `ys[i] = x W_iᵀ` for several matrices with the same number of columns (Q/K/V, gate/up):
/// the activations are prepared once per layout and all rows go through one fork-join.
/// `x` is [m, cols]; `ys[i]` is [m, ws[i].rows()].
pub fn matmul_group(ws: &[&QMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    let _timer = profile::Timer::start(profile::Phase::Products);
    assert_eq!(ws.len(), ys.len(), "one output per matrix");
    let Some(first) = ws.first() else { return };
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(w.cols, first.cols, "a group shares its input");
        assert_eq!(y.len(), m * w.rows, "output must be [m, rows]");
    }
    assert_eq!(x.len(), m * first.cols, "activations must be [m, cols]");
    if m == 0 {
        return;
    }
    if m >= GEMM_MIN_ROWS {
        prompt_group(ws, x, m, ys, kernels::chosen());
    } else {
        dots_group(ws, x, m, ys, kernels::chosen());
    }
}

/// The prefill path of [`matmul_group`]: quantized matrices in int8 where the kernel table
/// has that product (the activations quantized once per block size for all of them), the
/// others through dequantize + f32 gemm.
fn prompt_group(ws: &[&QMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]], k: &kernels::Kernels) {
    let cols = ws[0].cols;
    // The activations in each block size some matrix of the group reads in int8.
    let mut acts: Vec<PromptActs> = Vec::new();
    let int8 = k
        .int8_prompt
        .as_ref()
        .filter(|int8| cols > 0 && (int8.pays)());
    if let Some(int8) = int8 {
        for w in ws {
            let Some(block) = int8.act_block(w.dtype) else {
                continue;
            };
            if acts.iter().any(|a| a.block == block) {
                continue;
            }
            let mut a = SCRATCH.with(|s| s.borrow_mut().prompt.pop().unwrap_or_default());
            a.quantize(x, (m, cols), block, int8.group_multiple);
            acts.push(a);
        }
    }
    for (w, y) in ws.iter().zip(ys.iter_mut()) {
        let block = int8.and_then(|int8| int8.act_block(w.dtype));
        match (int8, acts.iter().find(|a| Some(a.block) == block)) {
            (Some(int8), Some(a)) => w.matmul_int8(a, int8, y),
            _ => w.matmul_gemm(x, m, y),
        }
    }
    SCRATCH.with(|s| s.borrow_mut().prompt.extend(acts));
}

/// Activations prepared for the dot kernels: quantized in the layouts the group needs.
struct Prepared<'a> {
    x: &'a [f32],
    cols: usize,
    q8: Option<Q8Acts>,
    q8k: Option<Q8KActs>,
}

impl Prepared<'_> {
    /// Dot of one weight row of `w` with each activation row, into `out` [m].
    fn dot_row(&self, w: &QMatrix, row: &[u8], out: &mut [f32], k: &kernels::Kernels) {
        use GgmlDType as T;
        let cols = self.cols;
        match w.dtype {
            T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 => {
                let dot = match w.dtype {
                    T::Q4_0 => k.q4_0,
                    T::Q4_1 => k.q4_1,
                    T::Q5_0 => k.q5_0,
                    T::Q5_1 => k.q5_1,
                    _ => k.q8_0,
                };
                let a = self.q8.as_ref().expect("prepared for Q8 layouts");
                let nb = a.blocks_per_row();
                for (r, o) in out.iter_mut().enumerate() {
                    *o = dot(
                        row,
                        Q8Row {
                            d: &a.d[r * nb..(r + 1) * nb],
                            s: &a.s[r * nb..(r + 1) * nb],
                            qs: &a.qs[r * cols..(r + 1) * cols],
                        },
                    );
                }
            }
            T::Q4K | T::Q5K | T::Q6K => {
                let dot = match w.dtype {
                    T::Q4K => k.q4_k,
                    T::Q5K => k.q5_k,
                    _ => k.q6_k,
                };
                let a = self.q8k.as_ref().expect("prepared for Q8_K layouts");
                let nb = a.blocks_per_row();
                for (r, o) in out.iter_mut().enumerate() {
                    *o = dot(
                        row,
                        Q8KRow {
                            d: &a.d[r * nb..(r + 1) * nb],
                            bsums: &a.bsums[r * nb * 16..(r + 1) * nb * 16],
                            qs: &a.qs[r * cols..(r + 1) * cols],
                        },
                    );
                }
            }
            T::F32 | T::F16 | T::BF16 => {
                let dot = match w.dtype {
                    T::F32 => k.f32,
                    T::F16 => k.f16,
                    _ => k.bf16,
                };
                for (r, o) in out.iter_mut().enumerate() {
                    *o = dot(row, &self.x[r * cols..(r + 1) * cols]);
                }
            }
            _ => ROW.with(|buf| {
                // Q2_K / Q3_K: dequantize the row once, then f32 dots.
                let mut buf = buf.borrow_mut();
                buf.resize(cols, 0.0);
                dequantize(w.dtype, row, &mut buf);
                let bytes = bytemuck_f32(&buf);
                for (r, o) in out.iter_mut().enumerate() {
                    *o = (k.f32)(bytes, &self.x[r * cols..(r + 1) * cols]);
                }
            }),
        }
    }
}

/// The dot path of [`matmul_group`] with an explicit kernel table.
fn dots_group(ws: &[&QMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]], k: &kernels::Kernels) {
    let cols = ws[0].cols;
    // Taken out of the thread-local for the product, so that a product started on this thread
    // while it waits in the pool (work stealing) finds fresh buffers instead of a borrow.
    let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let kinds: Vec<ActKind> = ws
        .iter()
        .map(|w| act_kind(w.dtype).expect("checked in new"))
        .collect();
    let mut prepared = Prepared {
        x,
        cols,
        q8: None,
        q8k: None,
    };
    if kinds.contains(&ActKind::Q8) {
        scratch.q8.quantize(x, cols);
        prepared.q8 = Some(std::mem::take(&mut scratch.q8));
    }
    if kinds.contains(&ActKind::Q8K) {
        scratch.q8k.quantize(x, cols);
        prepared.q8k = Some(std::mem::take(&mut scratch.q8k));
    }
    let chunk = ws
        .iter()
        .map(|w| w.chunk_rows(4, 16, 256))
        .min()
        .unwrap_or(16);
    // Tasks: (matrix, first row, rows), each writing its own output columns of its matrix.
    let tasks: Vec<(usize, usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            (0..w.rows.div_ceil(chunk)).map(move |c| (i, c * chunk, chunk.min(w.rows - c * chunk)))
        })
        .collect();
    let outs: Vec<OutPtr> = ys.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect();
    pool::global().run(tasks.len(), &|t| {
        let (i, j0, n) = tasks[t];
        let w = ws[i];
        let mut row_out = [0f32; GEMM_MIN_ROWS];
        let ahead = PREFETCH_BYTES.div_ceil(w.row_bytes);
        let float = matches!(w.dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        let by_row = !(float && k.float_dots_prefetch);
        for j in j0..j0 + n {
            if by_row && j + ahead < j0 + n {
                prefetch(w.row(j + ahead));
            }
            prepared.dot_row(w, w.row(j), &mut row_out[..m], k);
            for (r, &v) in row_out[..m].iter().enumerate() {
                // SAFETY: `outs[i]` points at ys[i], [m, w.rows]; r < m and j < w.rows, and
                // column j belongs to this task alone (tasks cover disjoint row ranges).
                unsafe { *outs[i].0.add(r * w.rows + j) = v };
            }
        }
    });
    scratch.q8 = prepared.q8.unwrap_or_default();
    scratch.q8k = prepared.q8k.unwrap_or_default();
    SCRATCH.with(|s| *s.borrow_mut() = scratch);
}

/// How far ahead of the row being dotted the dot path asks for weight rows (into L2): the
/// hardware prefetcher alone keeps too few lines in flight for a stream that each core
/// consumes at 10+ GB/s. Measured with `benches/quant_kernels.rs` over weights not in cache
/// (2 threads): Q8_0 12 → 19 GB/s, Q4_0 9 → 14, F32 21 → 28; 4 KiB ahead into L2 beat 1, 2,
/// 8 and 16 KiB and beat prefetching into L1. The SIMD float kernels, whose rows are long,
/// keep the same distance themselves as they read (`Kernels::float_dots_prefetch`).
const PREFETCH_BYTES: usize = 4096;

/// Hint that `bytes` will be read soon (a no-op off x86).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: prefetching is a hint that never faults; SSE is part of x86_64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr() as *const i8
            )
        };
    }
}

/// A raw output pointer shared by tasks that write disjoint parts of it.
struct SyncPtr(*mut f32);
// SAFETY: only used in `matmul_gemm` and `matmul_int8`, where every task writes its own
// columns.
unsafe impl Sync for SyncPtr {}

/// An output matrix written by the pool's tasks, each its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: only used in `dots_group` and `run_parts_mut`, where every task writes its own
// columns or rows.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer `i` values on (a method, so that closures capture the whole `OutPtr`).
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}
unsafe impl Send for OutPtr {}

/// Per-thread buffers reused across products: quantized activations, a dequantized row.
#[derive(Default)]
struct Scratch {
    q8: Q8Acts,
    q8k: Q8KActs,
    /// Activations of the int8 prompt path (one per block size in use).
    prompt: Vec<PromptActs>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Dequantized weight rows for the prompt path's gemm.
    static DEQUANTIZED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Unpacked weight rows and their products, for the int8 prompt path.
    static UNPACKED: RefCell<(Unpacked, Vec<f32>)> = RefCell::new(Default::default());
}

/// Runs `f(t, part_t)` on the product pool for every part `out[bounds[t]..bounds[t + 1]]`
/// (work that writes disjoint rows, such as attention heads). `bounds` must not decrease and
/// must end within `out`.
pub(crate) fn run_parts_mut(
    out: &mut [f32],
    bounds: &[usize],
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    assert!(
        bounds.windows(2).all(|w| w[0] <= w[1]) && bounds.last().is_none_or(|&e| e <= out.len()),
        "parts must be ordered and inside the output"
    );
    let tasks = bounds.len().saturating_sub(1);
    let base = OutPtr(out.as_mut_ptr());
    pool::global().run(tasks, &|t| {
        let (start, end) = (bounds[t], bounds[t + 1]);
        // SAFETY: bounds are ordered and end inside `out` (asserted), so parts are disjoint
        // ranges of `out`, which stays mutably borrowed for the whole call; the pool runs each
        // task index exactly once, so no two live slices overlap.
        let part = unsafe { std::slice::from_raw_parts_mut(base.at(start), end - start) };
        f(t, part);
    });
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: any f32 is 4 initialised bytes; u8 has alignment 1; the length is exact.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Owned bytes with 8-byte alignment (a `Vec<u8>` only promises 1).
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl From<Vec<u8>> for AlignedBytes {
    fn from(bytes: Vec<u8>) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, c) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            *w = u64::from_ne_bytes(b);
        }
        Self {
            words,
            len: bytes.len(),
        }
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the u64 buffer holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
}

/// Reinterpret whole GGML blocks of type `T` and dequantize them with candle's reference
/// `to_float` (a port of ggml's `dequantize_row_*`).
fn blocks_to_float<T: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<T>();
    assert!(bytes.len().is_multiple_of(size));
    assert_eq!(bytes.as_ptr() as usize % std::mem::align_of::<T>(), 0);
    // SAFETY: candle's block types are `#[repr(C)]` structs of f16/f32/u8/i8/i16 fields, for
    // which every bit pattern is valid; length and alignment are checked above (GGUF tensor
    // data is 32-byte aligned and `QMatrix::new` checks each matrix's start; rows are whole
    // blocks, and every block size is a multiple of its alignment).
    let blocks =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) };
    T::to_float(blocks, out);
}

kernels::on_this_cpu! {
    /// Q4_K or Q6_K bytes into `out` by Metis's own loops, compiled for AVX2 where the kernel
    /// set has it: Q4_K_M's prompt products dequantize every weight once per prompt, which
    /// through candle's baseline-x86 build cost about a tenth of a 1.2B prefill. The same
    /// operations as candle's either way, so the same bits (tested).
    fn dequantize_k_on_this_cpu(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) {
        match dtype {
            GgmlDType::Q4K => portable::dequantize_q4_k(bytes, out),
            _ => portable::dequantize_q6_k(bytes, out),
        }
    }
}

/// Dequantize one row of `dtype` bytes into `out`.
pub(crate) fn dequantize(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) {
    use GgmlDType as T;
    match dtype {
        T::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        T::F16 => blocks_to_float::<half::f16>(bytes, out),
        T::BF16 => blocks_to_float::<half::bf16>(bytes, out),
        T::Q4_0 => blocks_to_float::<k_quants::BlockQ4_0>(bytes, out),
        T::Q4_1 => blocks_to_float::<k_quants::BlockQ4_1>(bytes, out),
        T::Q5_0 => blocks_to_float::<k_quants::BlockQ5_0>(bytes, out),
        T::Q5_1 => blocks_to_float::<k_quants::BlockQ5_1>(bytes, out),
        T::Q8_0 => blocks_to_float::<k_quants::BlockQ8_0>(bytes, out),
        T::Q2K => blocks_to_float::<k_quants::BlockQ2K>(bytes, out),
        T::Q3K => blocks_to_float::<k_quants::BlockQ3K>(bytes, out),
        T::Q4K | T::Q6K => dequantize_k_on_this_cpu(dtype, bytes, out),
        T::Q5K => blocks_to_float::<k_quants::BlockQ5K>(bytes, out),
        other => unreachable!("QMatrix::new rejects {other:?}"),
    }
}

/// Quantize row-major f32 values to `dtype` bytes with candle's reference quantizers (ports
/// of ggml's `quantize_row_*_ref`), as llama.cpp's `llama-quantize` does without an imatrix.
pub fn quantize_rows(
    values: &[f32],
    rows: usize,
    cols: usize,
    dtype: GgmlDType,
) -> Result<Vec<u8>, QuantError> {
    act_kind(dtype).ok_or(QuantError::UnsupportedType(dtype))?;
    let block = dtype.block_size();
    if !cols.is_multiple_of(block) {
        return Err(QuantError::PartialBlock { dtype, cols, block });
    }
    assert_eq!(values.len(), rows * cols, "values must be [rows, cols]");
    let t = candle_core::Tensor::from_slice(values, (rows, cols), &candle_core::Device::Cpu)
        .expect("shape checked");
    let q = candle_core::quantized::QTensor::quantize(&t, dtype).expect("supported type");
    Ok(q.data().expect("cpu tensor").into_owned())
}

/// Time spent in matrix products and in attention, for benchmarks that split a decode step
/// into those and everything else. Off unless [`profile::enable`] is called (then one clock
/// read per product or attention call).
pub mod profile {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    /// What a timed stretch of work was.
    #[derive(Debug, Clone, Copy)]
    pub enum Phase {
        /// A matrix product (one [`super::matmul_group`] call).
        Products,
        /// Attention over the KV cache (one layer's).
        Attention,
    }

    static ON: AtomicBool = AtomicBool::new(false);
    static NANOS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    static CALLS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    /// Start counting.
    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    /// (calls, nanoseconds) of `phase` since its last `take`, and reset.
    pub fn take(phase: Phase) -> (u64, u64) {
        let i = phase as usize;
        (
            CALLS[i].swap(0, Ordering::Relaxed),
            NANOS[i].swap(0, Ordering::Relaxed),
        )
    }

    pub(crate) struct Timer(Option<(Instant, Phase)>);

    impl Timer {
        pub(crate) fn start(phase: Phase) -> Self {
            Timer(ON.load(Ordering::Relaxed).then(|| (Instant::now(), phase)))
        }
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            if let Some((t, phase)) = self.0 {
                let i = phase as usize;
                NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                CALLS[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
