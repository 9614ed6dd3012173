#!/usr/bin/env bash
# The GPU check: Metis on CUDA next to PyTorch/transformers on the same GPU, in one run of
# about 5 minutes (budget: 8).
#
#   bench/build_cuda.sh                 # here: the CUDA build and what travels with it
#   bench/gpu_check.sh [BUNDLE]         # there, from the repository root; BUNDLE: gpu-bundle
#
# BUNDLE holds `metis.xz` (built with `--features cuda`) and `fixtures/` (the shared tiny models
# and the Llama-3 tokenizer); the GPU machine's Python must have torch, transformers >= 5 and
# (optionally) peft. It runs and prints:
#   1. parity: the shared fixtures' Llama-3.1 and Qwen2 on CUDA in f32 and bf16 against the
#      CPU in f32 (logits over whole prompts, greedy continuations);
#   2. a random Llama-3.1-8B-shaped model in bf16: decode tokens/s at batch 1 and 32 after a
#      128-token prompt, prefill tokens/s of a 2,048-token prompt; the same in transformers;
#   3. one full SFT step (4 x 512 tokens, bf16 with f32 master weights and AdamW state) of a
#      random Llama-3.2-1B-shaped model, without and with --grad-checkpoint; the same step in
#      PyTorch (f32 weights, bf16 autocast);
#   4. one GRPO step with LoRA rank 16 (8 completions of 128 tokens) on that model; the same
#      in PyTorch + peft;
#   5. a table: every measurement side by side with the ratio Metis / PyTorch, and the peak
#      GPU memory of each command (nvidia-smi, the whole device, sampled every 100 ms).
# All JSON lines also go to $OUT/gpu_check.jsonl (or ./gpu_check.jsonl without $OUT).
#
# GPU_CHECK_DEVICE=cpu runs the same sequence on the CPU with tiny models (a smoke test of
# the script itself, not a measurement).
set -uo pipefail   # no -e: a failed step is reported and the others still run
cd "$(dirname "$0")/.."

BUNDLE="${1:-gpu-bundle}"
METIS="$BUNDLE/metis"
FIX="$BUNDLE/fixtures"
PY="${PYTHON:-python3}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
RESULTS="${OUT:-.}/gpu_check.jsonl"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [ ! -x "$METIS" ] && [ -f "$METIS.xz" ]; then
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$METIS.xz" "$WORK/metis" && chmod +x "$WORK/metis" && METIS="$WORK/metis"
fi
[ -x "$METIS" ] || { echo "gpu_check: no $BUNDLE/metis or metis.xz (run bench/build_cuda.sh)" >&2; exit 2; }
: > "$RESULTS"
failed=0

if [ "$DEVICE" = cpu ]; then
    ENGINE_SHAPE=tiny TRAIN_SHAPE=tiny PY_TRAIN_SHAPE=tiny BATCHES=1,4 PREFILL=256
else
    ENGINE_SHAPE=llama-3.1-8b TRAIN_SHAPE=llama-3.2-1b PY_TRAIN_SHAPE=llama-3.2-1b
    BATCHES=1,32 PREFILL=2048
fi

say() { printf '\n== %s\n' "$*" >&2; }

# Put the CUDA libraries of the machine's Python packages (cuBLAS, cuRAND, NVRTC: the ones
# PyTorch uses) on the loader's path, and refuse early if the binary still misses one.
find_cuda_libs() {
    [ "$DEVICE" = cpu ] && return
    local dirs
    dirs=$("$PY" - <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
libs = {os.path.dirname(p) for r in roots for p in glob.glob(f"{r}/nvidia/**/lib*.so*", recursive=True)}
print(":".join(sorted(libs)))
EOF
)
    export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if ldd "$METIS" | grep -q "not found"; then
        ldd "$METIS" | grep "not found" >&2
        echo "gpu_check: $METIS cannot find the libraries above" >&2
        exit 2
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2
}

# Runs a command, its stdout (JSON lines) appended to the results; prints the peak GPU memory
# in use during it (MiB, the whole device) as one more JSON line tagged with LABEL.
measured() {
    local label="$1"
    shift
    local samples="$WORK/mem.$label" sampler=""
    if [ "$DEVICE" != cpu ]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$samples" &
        sampler=$!
    fi
    local t0=$SECONDS
    "$@" | tee -a "$RESULTS"
    local status=${PIPESTATUS[0]}
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    local peak=null
    [ -s "$samples" ] && peak=$(sort -n "$samples" | tail -1)
    echo "{\"bench\":\"peak_memory\",\"label\":\"$label\",\"peak_device_mib\":$peak,\"wall_s\":$((SECONDS - t0)),\"status\":$status}" \
        | tee -a "$RESULTS"
    if [ "$status" -ne 0 ]; then
        echo "gpu_check: $label failed (exit $status)" >&2
        failed=$((failed + 1))
    fi
}

parity() {
    say "1. parity on $DEVICE against the CPU (f32 bound 1e-3, bf16 bound 0.1)"
    local model
    for model in llama31-tiny-v512/f32 qwen2-tiny-v512/f32; do
        measured "parity-${model%%/*}" "$METIS" bench parity --device "$DEVICE" --model "$FIX/$model"
    done
}

engine() {
    say "2. $ENGINE_SHAPE bf16: decode at batch $BATCHES, prefill of $PREFILL tokens"
    local common=(--batches "$BATCHES" --prompt-len 128 --decode-tokens 64 --prefill-len "$PREFILL")
    measured metis-engine "$METIS" bench engine --shape "$ENGINE_SHAPE" --device "$DEVICE" \
        --dtype bf16 "${common[@]}"
    measured torch-engine "$PY" bench/gpu_reference.py engine --shape "$ENGINE_SHAPE" \
        --device "$DEVICE" --dtype bf16 "${common[@]}" --runs 2
}

# Training data for the random model: SFT chats long enough to fill 512 tokens, and one
# GRPO prompt whose completions run to the length limit (a random model never stops).
write_training_data() {
    "$PY" - "$WORK" <<'EOF'
import json, random, sys
rng = random.Random(0)
words = "the attacker used a crafted packet to reach the service and escalate privileges".split()
with open(f"{sys.argv[1]}/sft.jsonl", "w") as f:
    for i in range(32):
        text = " ".join(rng.choice(words) for _ in range(700))
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Explain incident {i}."},
                                         {"role": "assistant", "content": text}]}) + "\n")
with open(f"{sys.argv[1]}/prompts.jsonl", "w") as f:
    f.write(json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"}],
                        "task": "math", "gold": "4"}) + "\n")
EOF
}

train_model() {
    if [ "$DEVICE" = cpu ]; then
        # The tiny fixture shares the tokenizer's vocabulary; a tiny random model would not.
        cp -r "$FIX/llama31-tiny-v128k/f32" "$WORK/model"
        cp "$FIX/llama31-tokenizer/"tokenizer*.json "$WORK/model/"
    else
        "$METIS" bench init-model --shape "$TRAIN_SHAPE" --dtype bf16 --device "$DEVICE" \
            --tokenizer "$FIX/llama31-tokenizer" --out "$WORK/model"
    fi
}

# The mean of a metrics.jsonl field over the steps after the first (the warm-up).
metrics_line() {
    "$PY" - "$@" <<'EOF'
import json, sys
path, bench, shape, device = sys.argv[1:5]
rows = [json.loads(l) for l in open(path)][1:]
if not rows:
    sys.exit(f"{path}: fewer than two steps")
mean = lambda f: sum(f(r) for r in rows) / len(rows)
if bench.startswith("sft_step"):
    tokens, seconds = mean(lambda r: r["tokens"]), mean(lambda r: r["tokens"] / r["tokens_per_s"])
    extra = {}
else:
    tokens = mean(lambda r: r["completion_len_mean"] * 8)
    seconds = mean(lambda r: r["step_s"])
    extra = {"rollout_seconds": mean(lambda r: r["generation_s"]),
             "update_seconds": seconds - mean(lambda r: r["generation_s"])}
print(json.dumps({"impl": "metis", "bench": bench, "shape": shape, "device": device,
                  "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, **extra}))
EOF
}

train() {
    say "3-4. $TRAIN_SHAPE: one full SFT step and one LoRA GRPO step"
    write_training_data
    train_model || { echo "gpu_check: no training model" >&2; failed=$((failed + 1)); return; }
    measured metis-sft "$METIS" train sft --model "$WORK/model" --data "$WORK/sft.jsonl" \
        --out "$WORK/sft" --device "$DEVICE" --dtype bf16 --max-steps 3 --batch-size 4 \
        --max-len 512 --save-every 0 --lr 1e-5
    metrics_line "$WORK/sft/metrics.jsonl" sft_step "$TRAIN_SHAPE" "$DEVICE" | tee -a "$RESULTS"
    # The same step with activation checkpointing per layer: its peak memory against the above.
    measured metis-sft-ckpt "$METIS" train sft --model "$WORK/model" --data "$WORK/sft.jsonl" \
        --out "$WORK/sft-ckpt" --device "$DEVICE" --dtype bf16 --max-steps 3 --batch-size 4 \
        --max-len 512 --save-every 0 --lr 1e-5 --grad-checkpoint
    metrics_line "$WORK/sft-ckpt/metrics.jsonl" sft_step_ckpt "$TRAIN_SHAPE" "$DEVICE" | tee -a "$RESULTS"
    measured torch-sft "$PY" bench/gpu_reference.py sft --shape "$PY_TRAIN_SHAPE" \
        --device "$DEVICE" --batch 4 --seq-len 512 --steps 3
    measured metis-grpo "$METIS" train grpo --model "$WORK/model" --prompts "$WORK/prompts.jsonl" \
        --out "$WORK/grpo" --device "$DEVICE" --dtype bf16 --lora-rank 16 --lora-alpha 32 \
        --num-generations 8 --prompts-per-step 1 --micro-batch 8 --max-completion-len 128 \
        --max-steps 3 --save-every 0 --lr 1e-5
    metrics_line "$WORK/grpo/metrics.jsonl" grpo_lora_step "$TRAIN_SHAPE" "$DEVICE" | tee -a "$RESULTS"
    measured torch-grpo "$PY" bench/gpu_reference.py grpo-lora --shape "$PY_TRAIN_SHAPE" \
        --device "$DEVICE" --group 8 --prompt-len 64 --completion-len 128 --lora-rank 16 --steps 3
}

summary() {
    say "5. summary"
    "$PY" - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def key(r):
    return (r.get("bench"), r.get("batch") if r.get("bench") == "decode" else None)
metis = {key(r): r for r in rows if r.get("impl") == "metis" and "tokens_per_s" in r}
torch = {key(r): r for r in rows if r.get("impl") in ("transformers", "pytorch") and "tokens_per_s" in r}
print(f"{'measurement':<24}{'metis tok/s':>14}{'torch tok/s':>14}{'ratio':>8}")
for k in sorted(set(metis) | set(torch), key=str):
    m, t = metis.get(k, {}).get("tokens_per_s"), torch.get(k, {}).get("tokens_per_s")
    name = k[0] + (f" b{k[1]}" if k[1] else "")
    fmt = lambda v: f"{v:14.1f}" if v else f"{'-':>14}"
    print(f"{name:<24}{fmt(m)}{fmt(t)}{(m / t if m and t else float('nan')):8.2f}")
for r in rows:
    if r.get("bench") == "parity":
        print(f"parity {r['model'].split('fixtures/')[-1]:<24} {r['dtype']:<5} prompt {r['prompt_len']:>3}: "
              f"max |dlogit| {r['max_abs_logit_diff']:.2e} (bound {r['bound']:.0e}) "
              f"greedy {r['greedy_agree']}/{r['greedy_len']} {'ok' if r['pass'] else 'FAIL'}")
for r in rows:
    if r.get("bench") == "peak_memory":
        print(f"peak device memory {r['label']:<16} {r['peak_device_mib']} MiB, {r['wall_s']} s, exit {r['status']}")
EOF
}

find_cuda_libs
parity
engine
train
summary
echo "gpu_check: $failed step(s) failed" >&2
[ "$failed" -eq 0 ]
