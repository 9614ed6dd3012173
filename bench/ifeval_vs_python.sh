#!/usr/bin/env bash
# IFEval grading speed, Rust vs upstream Python, on the same 10,000 responses in one run.
#
# Python: lm-eval's own checkers (strict + loose, `test_instruction_following_strict/loose`)
# via `tools/reference/ifeval_parity.py time`; Rust: `cargo bench --bench ifeval_speed`
# (`metis_verify::ifeval::evaluate`, gold construction included). Both single-threaded, both
# grading the keyed responses of tests/fixtures/ifeval_reference.jsonl.gz, repeated to N.
#
# Needs the Python setup documented in tools/reference/ifeval_parity.py (venv + `setup`).
#   PY=/tmp/ifeval-venv/bin/python WORK=/tmp/ifeval-work N=10000 bench/ifeval_vs_python.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-/tmp/ifeval-venv/bin/python}"
WORK="${WORK:-/tmp/ifeval-work}"
N="${N:-10000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-ifeval}"

cargo bench -q -p metis-verify --bench ifeval_speed --no-run >/dev/null 2>&1
py_json=$("$PY" tools/reference/ifeval_parity.py time --work "$WORK" --n "$N" 2>/dev/null | tail -1)
rs_json=$(IFEVAL_BENCH_N="$N" cargo bench -q -p metis-verify --bench ifeval_speed 2>/dev/null | tail -1)
echo "python: $py_json"
echo "rust:   $rs_json"
python3 - "$py_json" "$rs_json" <<'PYEOF'
import json, sys
py, rs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"responses={rs['responses']} python={py['responses_per_s']:.1f}/s "
      f"rust={rs['responses_per_s']:.1f}/s ratio={rs['responses_per_s'] / py['responses_per_s']:.1f}x")
PYEOF
