#!/usr/bin/env bash
# Rust math equivalence vs Python math-verify 0.8.0 on the same 10,000 fixture pairs.
# Needs the venv of tools/reference/math_parity.py (default /tmp/mv-venv; override PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/tmp/mv-venv/bin/python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-math}"
py_line=$("$PYTHON" tools/reference/math_parity.py --time 10000 2>/dev/null | tail -1)
rs_line=$(cargo bench -q -p metis-verify --bench math_speed 2>/dev/null | grep 'pairs/s' | tail -1)
echo "$py_line"
echo "$rs_line"
py=$(echo "$py_line" | sed -E 's/.*= ([0-9.]+) pairs\/s.*/\1/')
rs=$(echo "$rs_line" | sed -E 's/.*= ([0-9.]+) pairs\/s.*/\1/')
awk -v r="$rs" -v p="$py" 'BEGIN { printf "speed-up: %.0fx (rust %.0f pairs/s / python %.1f pairs/s)\n", r / p, r, p }'
