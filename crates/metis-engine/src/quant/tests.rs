//! Kernel tests: every weight type against an f64 reference of the dequantized weights, with
//! a bound derived from the activation quantization; the SIMD table against the portable one;
//! the gemm path; row orders.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlDType; 13] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Mixed magnitudes per 32 values, as real activations and weights have.
    (0..n)
        .map(|i| {
            let scale = 1.0 + (i / 32 % 5) as f32;
            scale * (rng.random::<f32>() * 2.0 - 1.0)
        })
        .collect()
}

fn dequantized(w: &QMatrix) -> Vec<f32> {
    let mut out = vec![0f32; w.rows() * w.cols()];
    for (i, row) in out.chunks_exact_mut(w.cols()).enumerate() {
        w.dequantize_row(i, row);
    }
    out
}

/// `x Wᵀ` in f64 and, per output, Σ|w|·(half a quantization step of x's block): how far the
/// integer kernels may be from it because they quantize the activations.
fn reference(
    wd: &[f32],
    x: &[f32],
    m: usize,
    rows: usize,
    cols: usize,
    block: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; m * rows];
    let mut bound = vec![0f64; m * rows];
    for r in 0..m {
        let xr = &x[r * cols..(r + 1) * cols];
        let steps: Vec<f64> = xr
            .chunks(block)
            .map(|b| b.iter().fold(0f64, |a, v| a.max(v.abs() as f64)) / 127.0 / 2.0)
            .collect();
        for j in 0..rows {
            let wr = &wd[j * cols..(j + 1) * cols];
            let mut acc = 0f64;
            let mut b = 0f64;
            for (c, (&w, &xv)) in wr.iter().zip(xr).enumerate() {
                acc += w as f64 * xv as f64;
                b += (w as f64).abs() * steps[c / block];
            }
            y[r * rows + j] = acc;
            bound[r * rows + j] = b;
        }
    }
    (y, bound)
}

fn act_block(dtype: GgmlDType) -> Option<usize> {
    match act_kind(dtype)? {
        ActKind::Q8 => Some(32),
        ActKind::Q8K => Some(256),
        ActKind::F32 => None,
    }
}

#[test]
fn every_type_matches_the_dequantized_reference() {
    let (rows, cols) = (70, 512);
    for (t, &dtype) in TYPES.iter().enumerate() {
        let w = QMatrix::quantize(&random(rows * cols, t as u64), rows, cols, dtype).unwrap();
        let wd = dequantized(&w);
        for m in [1, 3, GEMM_MIN_ROWS - 1, GEMM_MIN_ROWS, 37] {
            let x = random(m * cols, 100 + m as u64);
            let (want, bound) = reference(&wd, &x, m, rows, cols, act_block(dtype).unwrap_or(cols));
            let mut y = vec![0f32; m * rows];
            w.matmul(&x, m, &mut y);
            let int8_prompt = kernels::chosen()
                .int8_prompt
                .as_ref()
                .is_some_and(|int8| (int8.pays)() && int8.act_block(dtype).is_some());
            let quantized_acts = (m < GEMM_MIN_ROWS || int8_prompt) && act_block(dtype).is_some();
            for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                // f32 accumulation over 512 products, plus the activation rounding if any.
                let slack = 1e-4 * (1.0 + want.abs()) + if quantized_acts { bound[i] } else { 0.0 };
                assert!(
                    (got as f64 - want).abs() <= slack,
                    "{dtype:?} m={m} out {i}: {got} vs {want} (allowed {slack})"
                );
            }
        }
    }
}

#[test]
fn simd_kernels_equal_the_portable_ones() {
    let tables = kernels::simd();
    if tables.is_empty() {
        eprintln!("no SIMD kernel table on this CPU; the portable table is the only one");
    }
    for simd in tables {
        simd_table_equals_the_portable_one(simd);
    }
}

fn simd_table_equals_the_portable_one(simd: &kernels::Kernels) {
    // Floats: 776 leaves a tail that is not a multiple of 8. 32-value types: 7 blocks (only
    // the one-block tail path) and 25 (three groups of eight, then one). k-quants: 3 blocks.
    for &dtype in &TYPES {
        let widths: &[usize] = match dtype.block_size() {
            32 => &[224, 800],
            256 => &[768],
            _ => &[776],
        };
        for &cols in widths {
            simd_product_equals_the_portable_one(simd, dtype, cols);
        }
    }
}

fn simd_product_equals_the_portable_one(simd: &kernels::Kernels, dtype: GgmlDType, cols: usize) {
    let rows = 33;
    let w = QMatrix::quantize(&random(rows * cols, 7), rows, cols, dtype).unwrap();
    for m in [1, 5] {
        let x = random(m * cols, 9 + m as u64);
        let mut a = vec![0f32; m * rows];
        let mut b = vec![0f32; m * rows];
        w.matmul_dots(&x, m, &mut a, simd);
        w.matmul_dots(&x, m, &mut b, &kernels::PORTABLE);
        let scale: f32 = x.iter().map(|v| v.abs()).sum::<f32>() / m as f32;
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            // Integer block sums are exact on both paths; only the f32 order differs.
            assert!(
                (p - q).abs() <= 1e-5 * scale,
                "{} {dtype:?} m={m} out {i}: simd {p} vs portable {q}",
                simd.name
            );
        }
    }
}

/// Metis's own Q4_K and Q6_K dequantizers (on this CPU's kernel set and portable) equal
/// candle's bit for bit.
#[test]
fn own_k_quant_dequantizers_equal_candles() {
    let (rows, cols) = (5, 768);
    for (dtype, own) in [
        (
            GgmlDType::Q4K,
            portable::dequantize_q4_k as fn(&[u8], &mut [f32]),
        ),
        (GgmlDType::Q6K, portable::dequantize_q6_k),
    ] {
        let w = QMatrix::quantize(&random(rows * cols, 21), rows, cols, dtype).unwrap();
        let bytes = &(*w.data).as_ref()[..w.size_bytes()];
        let mut candle = vec![0f32; rows * cols];
        match dtype {
            GgmlDType::Q4K => blocks_to_float::<k_quants::BlockQ4K>(bytes, &mut candle),
            _ => blocks_to_float::<k_quants::BlockQ6K>(bytes, &mut candle),
        }
        let (mut chosen, mut plain) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
        dequantize(dtype, bytes, &mut chosen);
        own(bytes, &mut plain);
        let same_bits = |x: &[f32]| {
            candle
                .iter()
                .zip(x)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        assert!(same_bits(&chosen), "{dtype:?}");
        assert!(same_bits(&plain), "{dtype:?}");
    }
}

#[test]
fn row_order_reads_rows_in_the_given_order() {
    let (rows, cols) = (8, 64);
    let values = random(rows * cols, 3);
    let order: Vec<u32> = vec![3, 0, 7, 1, 6, 2, 5, 4];
    let mut permuted = Vec::new();
    for &r in &order {
        permuted.extend_from_slice(&values[r as usize * cols..(r as usize + 1) * cols]);
    }
    for dtype in [GgmlDType::Q8_0, GgmlDType::F32] {
        let w = QMatrix::quantize(&values, rows, cols, dtype)
            .unwrap()
            .with_row_order(order.clone())
            .unwrap();
        let p = QMatrix::quantize(&permuted, rows, cols, dtype).unwrap();
        for m in [1, 2, GEMM_MIN_ROWS] {
            let x = random(m * cols, 5);
            let (mut a, mut b) = (vec![0f32; m * rows], vec![0f32; m * rows]);
            w.matmul(&x, m, &mut a);
            p.matmul(&x, m, &mut b);
            assert_eq!(a, b, "{dtype:?} m={m}");
        }
    }
    let w = QMatrix::quantize(&values, rows, cols, GgmlDType::Q8_0).unwrap();
    assert!(matches!(
        w.clone().with_row_order(vec![0, 0, 1, 2, 3, 4, 5, 6]),
        Err(QuantError::BadRowOrder { .. })
    ));
    assert!(matches!(
        w.with_row_order(vec![0, 1]),
        Err(QuantError::BadRowOrder { .. })
    ));
}

#[test]
fn bad_shapes_and_bounds_are_errors() {
    let bytes: SharedBytes = Arc::new(AlignedBytes::from(vec![0u8; 1000]));
    assert!(matches!(
        QMatrix::new(bytes.clone(), 0, GgmlDType::Q4K, 2, 128),
        Err(QuantError::PartialBlock { .. })
    ));
    assert!(matches!(
        QMatrix::new(bytes.clone(), 0, GgmlDType::Q8_0, 30, 32),
        Err(QuantError::OutOfBounds { .. })
    ));
    assert!(matches!(
        QMatrix::new(bytes.clone(), 2, GgmlDType::F32, 1, 4),
        Err(QuantError::Misaligned(2))
    ));
    assert!(matches!(
        QMatrix::new(bytes, 0, GgmlDType::Q8_1, 1, 32),
        Err(QuantError::UnsupportedType(_))
    ));
}

#[test]
fn a_group_equals_its_products_one_by_one() {
    let cols = 512;
    // Mixed layouts in one group, as a Q4_K_M layer has (Q4_K q/k, Q6_K v).
    let ws: Vec<QMatrix> = [
        (GgmlDType::Q4K, 40),
        (GgmlDType::Q6K, 17),
        (GgmlDType::Q8_0, 33),
        (GgmlDType::F16, 5),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(t, rows))| {
        QMatrix::quantize(&random(rows * cols, 50 + i as u64), rows, cols, t).unwrap()
    })
    .collect();
    let refs: Vec<&QMatrix> = ws.iter().collect();
    for m in [1, 3, GEMM_MIN_ROWS] {
        let x = random(m * cols, 60 + m as u64);
        let mut grouped: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; m * w.rows()]).collect();
        let mut ys: Vec<&mut [f32]> = grouped.iter_mut().map(|v| v.as_mut_slice()).collect();
        matmul_group(&refs, &x, m, &mut ys);
        for (w, got) in ws.iter().zip(&grouped) {
            let mut alone = vec![0f32; m * w.rows()];
            w.matmul(&x, m, &mut alone);
            assert_eq!(got, &alone, "{:?} m={m}", w.dtype());
        }
    }
}

/// The portable table with the scalar int8 prompt product, so that the int8 path's unpacking,
/// interleaving and arithmetic are tested on every CPU.
static PORTABLE_INT8: kernels::Kernels = kernels::Kernels {
    name: "portable+int8",
    int8_prompt: Some(int8_prompt::Int8Prompt {
        product: int8_prompt::chunk_product_portable,
        reads: int8_prompt::reads_all,
        pays: || true,
        row_multiple: 1,
        group_multiple: 1,
    }),
    ..kernels::PORTABLE
};

/// The int8 prompt products (portable, and each SIMD table's) of every type each reads, against
/// the dot path on the same quantized activations: equal up to f32 rounding of the scaling,
/// and the SIMD ones equal to the portable one. Shapes cover partial groups of 16 activation
/// rows, partial row tiles and chunks, and value counts that are not a multiple of a kernel's
/// pass.
#[test]
fn int8_prompt_products_equal_the_dot_path() {
    // Each SIMD table's product, whether or not it pays on this CPU.
    let simd: Vec<kernels::Kernels> = kernels::simd()
        .into_iter()
        .filter_map(|k| {
            let int8 = k.int8_prompt?;
            Some(kernels::Kernels {
                int8_prompt: Some(int8_prompt::Int8Prompt {
                    pays: || true,
                    ..int8
                }),
                ..*k
            })
        })
        .collect();
    let tables: Vec<&kernels::Kernels> = std::iter::once(&PORTABLE_INT8).chain(&simd).collect();
    if tables.len() == 1 {
        eprintln!("no SIMD int8 prompt product on this CPU; testing the portable one only");
    }
    for dtype in TYPES {
        let shapes: &[(usize, usize)] = match int8_prompt::act_block(dtype) {
            None => continue,
            // 800 values: one and a half of the VNNI kernel's 512-value passes.
            Some(32) => &[(70, 800), (130, 224)],
            Some(_) => &[(70, 768), (130, 256)],
        };
        for &(rows, cols) in shapes {
            let w = QMatrix::quantize(&random(rows * cols, 11), rows, cols, dtype).unwrap();
            for m in [GEMM_MIN_ROWS, 37, 50] {
                let x = random(m * cols, 20 + m as u64);
                // The dot path takes fewer than GEMM_MIN_ROWS rows at a time.
                let mut dots = vec![0f32; m * rows];
                for (xs, ys) in x.chunks(8 * cols).zip(dots.chunks_mut(8 * rows)) {
                    dots_group(&[&w], xs, xs.len() / cols, &mut [ys], &kernels::PORTABLE);
                }
                let scale: f32 = x.iter().map(|v| v.abs()).sum::<f32>() / m as f32;
                let mut portable = vec![0f32; m * rows];
                for table in &tables {
                    let int8 = table.int8_prompt.as_ref().expect("tables with one");
                    if int8.act_block(dtype).is_none() {
                        continue;
                    }
                    let mut y = vec![0f32; m * rows];
                    prompt_group(&[&w], &x, m, &mut [&mut y], table);
                    for (i, (p, q)) in y.iter().zip(&dots).enumerate() {
                        assert!(
                            (p - q).abs() <= 1e-5 * scale,
                            "{} {dtype:?} {rows}x{cols} m={m} out {i}: int8 {p} vs dots {q}",
                            table.name
                        );
                    }
                    if std::ptr::eq(*table, &PORTABLE_INT8) {
                        portable = y;
                    } else {
                        // Same integer sums, same f32 operations in the same order.
                        assert_eq!(y, portable, "{} {dtype:?} m={m}", table.name);
                    }
                }
            }
        }
    }
}
