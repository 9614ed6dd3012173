#!/usr/bin/env bash
# Build `metis` with the `cuda` feature on a machine without a GPU or a CUDA install, for a
# GPU machine whose driver runs CUDA 13.0 (bench/gpu_check.sh runs it there).
#
#   bench/build_cuda.sh [OUT_DIR]      # default OUT_DIR: gpu-bundle/ (git-ignored)
#
# * CUDA 13.0's nvcc, headers and the libraries candle links (cuBLAS, cuBLASLt, cuRAND, NVRTC)
#   come from PyPI into ~/.cache/metis/cuda13, once. nvcc 13.0 is pinned: PTX from a newer
#   nvcc does not load on a 13.0 driver.
# * The driver library (libcuda.so.1) is the GPU machine's own. To link without it, a stub
#   with the same soname defines every driver symbol the binary uses (read from the
#   objects, so it follows candle/cudarc upgrades); at run time the real driver is loaded.
# * The binary is stripped and xz-compressed: what travels to the GPU machine is limited to 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-gpu-bundle}"
CUDA_DIR="${METIS_CUDA_DIR:-$HOME/.cache/metis/cuda13}"
CU="$CUDA_DIR/nvidia/cu13"
TARGET="${CARGO_TARGET_DIR:-target}/cuda"
STUB_DIR="$TARGET/libcuda-stub"

step() { echo "== $*" >&2; }

install_toolkit() {
    [ -x "$CU/bin/nvcc" ] && [ -e "$CU/lib/libcublas.so.13" ] && return
    step "CUDA 13.0 toolkit and libraries from PyPI into $CUDA_DIR"
    python3 -m pip install -q --target "$CUDA_DIR" --upgrade \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
        nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-nvrtc==13.0.88 \
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
}

# Unversioned names for the linker (the wheels ship only the sonames).
link_names() {
    local lib
    for lib in cublas cublasLt curand nvrtc cudart; do
        local so
        so=$(ls "$CU/lib/lib$lib.so."* 2>/dev/null | head -1) || true
        [ -n "$so" ] || { echo "no lib$lib in $CU/lib" >&2; exit 1; }
        ln -sf "$(basename "$so")" "$CU/lib/lib$lib.so"
    done
}

cargo_cuda() {
    CUDA_ROOT="$CU" CUDA_PATH="$CU" PATH="$CU/bin:$PATH" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" \
        LIBRARY_PATH="$STUB_DIR:$CU/lib${LIBRARY_PATH:+:$LIBRARY_PATH}" \
        CARGO_TARGET_DIR="$TARGET" cargo "$@" -p metis-cli --features cuda --release --locked
}

# A libcuda.so.1 defining every cu* symbol the compiled crates leave undefined.
make_driver_stub() {
    step "driver stub"
    mkdir -p "$STUB_DIR"
    local syms
    syms=$(find "$TARGET/release/deps" -name '*.rlib' -print0 \
        | xargs -0 nm -u --format=just-symbols 2>/dev/null \
        | grep -E '^cu[A-Z][A-Za-z0-9_]*$' | sort -u)
    [ -n "$syms" ] || { echo "found no CUDA driver symbols to stub" >&2; exit 1; }
    # Every driver call returns CUDA_ERROR_NO_DEVICE (100), so the binary run against the
    # stub says there is no GPU instead of reading garbage.
    printf 'int %s(void) { return 100; }\n' $syms > "$STUB_DIR/stub.c"
    cc -shared -fPIC -o "$STUB_DIR/libcuda.so" -Wl,-soname,libcuda.so.1 "$STUB_DIR/stub.c"
    ln -sf libcuda.so "$STUB_DIR/libcuda.so.1"
    echo "   $(echo "$syms" | wc -l) symbols" >&2
}

# The shared fixtures the parity step reads (models in f32, the Llama-3 tokenizer).
copy_fixtures() {
    local d
    for d in llama31-tiny-v512/f32 qwen2-tiny-v512/f32 llama31-tokenizer; do
        mkdir -p "$OUT/fixtures/$d"
        cp -r ../shared/fixtures/$d/. "$OUT/fixtures/$d/"
    done
}

install_toolkit
link_names
step "compile (the last link fails until the driver stub exists)"
cargo_cuda build 2>/dev/null || true
make_driver_stub
step "link"
cargo_cuda build
mkdir -p "$OUT"
copy_fixtures
# Stripped and xz-compressed (gpu_check.sh unpacks it with Python's lzma): what travels to the
# GPU machine, the repository included, is limited to 64 MiB.
strip -o "$TARGET/metis-stripped" "$TARGET/release/metis"
xz -6 -T0 -c "$TARGET/metis-stripped" > "$OUT/metis.xz"
size=$(stat -c %s "$OUT/metis.xz")
echo "== $OUT/metis.xz: $((size / 1048576)) MiB ($(($(stat -c %s "$TARGET/metis-stripped") / 1048576)) MiB unpacked)" >&2
[ "$size" -lt $((40 * 1048576)) ] || { echo "too large to travel (64 MiB with the repository)" >&2; exit 1; }
