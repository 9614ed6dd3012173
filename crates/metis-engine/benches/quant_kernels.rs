//! Decode-sized products (one activation row) per weight type, on the pool: GB/s of weights
//! read and µs per product, for the matrix shapes of a ~135M Llama layer.
//!
//! Run: `cargo bench -p metis-engine --bench quant_kernels` (set `METIS_KERNELS=avx2` or
//! `portable` to time another kernel table, `RAYON_NUM_THREADS` for the thread count).

use std::time::Instant;

use candle_core::quantized::GgmlDType;
use metis_engine::quant::{kernel_set, QMatrix};

fn main() {
    let types = [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];
    println!("kernels: {}", kernel_set());
    for (rows, cols) in [
        (1536usize, 576usize),
        (576, 1536),
        (2048, 2048),
        (49_152, 576),
    ] {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 5000.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        for dtype in types {
            if !cols.is_multiple_of(dtype.block_size()) {
                continue;
            }
            let w = QMatrix::quantize(&values, rows, cols, dtype).expect("quantize");
            let mut y = vec![0f32; rows];
            w.matmul(&x, 1, &mut y);
            // Enough repetitions for ~200 ms of work, measured after one warm-up call.
            let t = Instant::now();
            w.matmul(&x, 1, &mut y);
            let once = t.elapsed().as_secs_f64().max(1e-6);
            let reps = ((0.2 / once) as usize).clamp(3, 20_000);
            let t = Instant::now();
            for _ in 0..reps {
                w.matmul(&x, 1, &mut y);
            }
            let per = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{rows:>6}x{cols:<5} {:<5} {:8.1} µs  {:6.2} GB/s",
                format!("{dtype:?}"),
                per * 1e6,
                w.size_bytes() as f64 / per / 1e9
            );
        }
    }
    from_memory(&types);
    prompt_sized(&types);
}

/// Prompt-sized products (512 activation rows: int8 for the k-quants where the kernel table has
/// it, dequantize + f32 gemm otherwise), in GFLOP/s.
fn prompt_sized(types: &[GgmlDType]) {
    let (m, rows, cols) = (512usize, 2048usize, 2048usize);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 5000.0)
        .collect();
    let x: Vec<f32> = (0..m * cols)
        .map(|i| (i % 13) as f32 / 13.0 - 0.5)
        .collect();
    let mut y = vec![0f32; m * rows];
    for &dtype in types {
        let w = QMatrix::quantize(&values, rows, cols, dtype).expect("quantize");
        w.matmul(&x, m, &mut y);
        let t = Instant::now();
        for _ in 0..3 {
            w.matmul(&x, m, &mut y);
        }
        let per = t.elapsed().as_secs_f64() / 3.0;
        println!(
            "prompt {m}x{rows}x{cols} {:<5} {:8.2} ms  {:6.1} GFLOP/s",
            format!("{dtype:?}"),
            per * 1e3,
            2.0 * (m * rows * cols) as f64 / per / 1e9
        );
    }
}

/// The same products over ~160 MB of distinct 576x1536 matrices (a ~135M model's down
/// projection), cycled, so that the weights come from memory as in a decode step rather than
/// from cache.
fn from_memory(types: &[GgmlDType]) {
    let (rows, cols) = (576usize, 1536usize);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 5000.0)
        .collect();
    let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
    let mut y = vec![0f32; rows];
    for &dtype in types {
        let one = QMatrix::quantize(&values, rows, cols, dtype).expect("quantize");
        let count = (160 << 20) / one.size_bytes();
        let ws: Vec<QMatrix> = (0..count)
            .map(|_| QMatrix::quantize(&values, rows, cols, dtype).expect("quantize"))
            .collect();
        for w in &ws {
            w.matmul(&x, 1, &mut y);
        }
        let t = Instant::now();
        for _ in 0..3 {
            for w in &ws {
                w.matmul(&x, 1, &mut y);
            }
        }
        let per = t.elapsed().as_secs_f64() / (3 * count) as f64;
        println!(
            "memory {rows}x{cols} x{count:<4} {:<5} {:8.1} µs  {:6.2} GB/s",
            format!("{dtype:?}"),
            per * 1e6,
            one.size_bytes() as f64 / per / 1e9
        );
    }
}
