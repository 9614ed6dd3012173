//! The one call into the `gemm` crate's single-threaded f32 product, shared by the prompt
//! path of quantized and safetensors matrices and by prompt attention: each caller describes
//! its operands by pointer and strides and keeps the parallelism (over column blocks or
//! heads) to itself.

/// An f32 matrix operand read at `ptr + row·row_stride + col·col_stride` (in elements).
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub(crate) ptr: *const f32,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl Strided {
    /// A row-major matrix with `row_stride` elements between rows.
    pub(crate) fn rows(ptr: *const f32, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `row_stride` elements between its rows: element
    /// (i, j) is row j's element i.
    pub(crate) fn transposed(ptr: *const f32, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride: 1,
            col_stride: row_stride,
        }
    }
}

/// `dst = scale · lhs · rhs` with lhs [m, k], rhs [k, n] and dst [m, n] row-major with
/// `dst_row_stride` elements between rows (previous contents overwritten), on this thread.
///
/// # Safety
/// Every element of lhs, rhs and dst that the shapes and strides address must lie inside a
/// live allocation, and no other thread may access dst's elements during the call.
pub(crate) unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row_stride: usize,
    lhs: Strided,
    rhs: Strided,
    scale: f32,
) {
    // SAFETY: forwarded from this function's contract; alpha = 0 with read_dst = false means
    // dst is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            false,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0f32,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
