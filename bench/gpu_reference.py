#!/usr/bin/env python3
"""The PyTorch / transformers side of the GPU check: the numbers Metis's own GPU measurements
are compared with, on random-initialised Llama models of the same shapes.

Every measurement prints one JSON object on one line of stdout (nothing else goes there;
progress goes to stderr). Each one starts with one untimed warm-up, then the reported
`seconds` is the mean of the timed runs, `tokens_per_s` = `tokens` / `seconds`, and
`peak_gpu_mib` = torch.cuda.max_memory_allocated() / 2**20 over the timed runs after
reset_peak_memory_stats() (weights included; null on CPU). Every timer starts and stops
after torch.cuda.synchronize().

* `engine` (transformers LlamaForCausalLM in --dtype, sdpa attention, dynamic KV cache):
  - decode, for each batch B: B random prompts of --prompt-len ids, then greedy generate()
    of --decode-tokens + 1 new tokens, never stopping early (no EOS, min_new_tokens). The
    first new token comes from the prompt's forward and is not timed; a LogitsProcessor
    stamps the time each step's logits arrive, and `seconds` runs from the stamp after the
    prompt's forward to the stamp after the last step: --decode-tokens single-token steps
    through the cache, sampling included, so tokens = B * --decode-tokens.
  - prefill: batch 1, --prefill-len random ids, one forward from an empty cache
    (use_cache=True, logits_to_keep=1); tokens = --prefill-len.
* `sft`: one full fine-tuning step: f32 master weights, forward under bf16 autocast,
  causal-LM loss on random ids (labels = inputs), backward, AdamW(lr=1e-5) step, zero_grad;
  tokens = batch * seq_len.
* `grpo-lora`: one GRPO step of a bf16 model with LoRA adapters on q/k/v/o/gate/up/down
  (peft if importable, else a hand-written wrapper): `rollout_seconds` is generate() of
  --group sampled completions (temperature 1, top-p 1, no top-k) of exactly
  --completion-len tokens from one random prompt; `update_seconds` is everything after it:
  random rewards -> group-normalised advantages, reference log-probs (adapters disabled,
  no grad), policy log-probs, TRL's GRPO loss (beta = 0.04, k3 KL), backward, AdamW(lr=1e-5)
  on the adapters, zero_grad. `seconds` = rollout + update; tokens = group * completion_len.

If CUDA runs out of memory in a measurement, its line carries "error": "out of memory"
instead of timings, the next measurements still run, and the exit status is 3. --device
cuda without a usable CUDA gives exit status 2. Needs torch, transformers >= 5 (the config's
`rope_parameters`, `dtype=`, `logits_to_keep`) and optionally peft; tested on CPU with torch
2.11 / transformers 5.17 / peft 0.21 and torch 2.15 / transformers 5.25 / peft 0.21.

    python bench/gpu_reference.py engine --shape llama-3.1-8b --dtype bf16 --batches 1,32
    python bench/gpu_reference.py sft --shape llama-3.2-1b --batch 4 --seq-len 512
    python bench/gpu_reference.py grpo-lora --shape llama-3.2-1b --group 8
"""

import argparse
import contextlib
import importlib.util
import json
import math
import sys
import time

import torch

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

SHAPES = {
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=False),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                 tie_word_embeddings=False),
}

DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GRPO_BETA = 0.04
OOM_EXIT = 3


def log(message):
    print(f"gpu_reference: {message}", file=sys.stderr, flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device):
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None


def build_model(shape, dtype, device):
    """A random-initialised LlamaForCausalLM built directly on `device` in `dtype` (HF's own
    init: normal(0, 0.02) weights, unit norms), with no EOS so generation never stops early."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=131072, rms_norm_eps=1e-5,
                         rope_parameters=dict(LLAMA3_ROPE), bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    start = time.perf_counter()
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = 0
    sync(device)
    params = sum(p.numel() for p in model.parameters())
    log(f"{shape}: {params / 1e6:.1f}M parameters in {dtype} on {device}, built in "
        f"{time.perf_counter() - start:.1f} s")
    return model


def random_ids(model, batch, length):
    return torch.randint(0, model.config.vocab_size, (batch, length), device=model.device)


def generate(model, ids, new_tokens, sample, processors=()):
    """generate() of exactly `new_tokens` tokens per row (greedy or plain sampling)."""
    from transformers import GenerationConfig, LogitsProcessorList

    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=sample, eos_token_id=None, pad_token_id=0)
    if sample:
        config.temperature, config.top_p, config.top_k = 1.0, 1.0, 0
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                         logits_processor=LogitsProcessorList(processors))
    assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
    return out


class StepClock:
    """A logits processor that stamps the time (after a synchronize) each step's logits arrive:
    stamp 0 follows the prompt's forward, stamp i the i-th single-token decode step."""

    def __init__(self, device):
        self.device, self.stamps = device, []

    def __call__(self, input_ids, scores):
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return scores


def timed_decode(model, ids, steps):
    clock = StepClock(model.device)
    generate(model, ids, steps + 1, sample=False, processors=[clock])
    assert len(clock.stamps) == steps + 1
    return clock.stamps[-1] - clock.stamps[0]


def timed_prefill(model, ids):
    sync(model.device)
    start = time.perf_counter()
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    sync(model.device)
    return time.perf_counter() - start


def repeat(device, runs, run):
    """One untimed warm-up call of run(), then (mean of `runs` timed calls, peak memory)."""
    run()
    reset_peak(device)
    seconds = [run() for _ in range(runs)]
    return sum(seconds) / runs, peak_mib(device)


def rate(tokens, seconds, peak):
    return {"tokens": tokens, "seconds": round(seconds, 6),
            "tokens_per_s": round(tokens / seconds, 2), "peak_gpu_mib": peak}


def report(base, measure):
    """Prints base + measure() as one JSON line; on CUDA out-of-memory, base + an error.
    Returns whether the measurement ran."""
    try:
        record, ok = {**base, **measure()}, True
    except torch.cuda.OutOfMemoryError as error:
        log(f"{base['bench']}: {error}")
        record, ok = {**base, "error": "out of memory"}, False
    if not ok and torch.cuda.is_available():
        torch.cuda.empty_cache()
    print(json.dumps(record), flush=True)
    return ok


def run_engine(args, device):
    model = build_model(args.shape, DTYPES[args.dtype], device).eval()
    base = {"impl": "transformers", "shape": args.shape, "dtype": args.dtype,
            "device": device.type}
    ok = True
    with torch.inference_mode():
        for batch in args.batches:
            ids = random_ids(model, batch, args.prompt_len)

            def decode():
                seconds, peak = repeat(device, args.runs,
                                       lambda: timed_decode(model, ids, args.decode_tokens))
                return rate(batch * args.decode_tokens, seconds, peak)

            ok &= report({**base, "bench": "decode", "batch": batch,
                          "prompt_len": args.prompt_len}, decode)

        ids = random_ids(model, 1, args.prefill_len)

        def prefill():
            seconds, peak = repeat(device, args.runs, lambda: timed_prefill(model, ids))
            return rate(args.prefill_len, seconds, peak)

        ok &= report({**base, "bench": "prefill", "batch": 1}, prefill)
    return ok


def update(loss, optimizer, device):
    """backward, optimizer step and zero_grad, finished on the device; the loss must be finite."""
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    assert math.isfinite(loss.item())


def run_sft(args, device):
    model = build_model(args.shape, torch.float32, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = random_ids(model, args.batch, args.seq_len)

    def step():
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        update(loss, optimizer, device)
        return time.perf_counter() - start

    def measure():
        seconds, peak = repeat(device, args.steps - 1, step)
        return rate(args.batch * args.seq_len, seconds, peak)

    return report({"impl": "pytorch", "bench": "sft_step", "shape": args.shape,
                   "dtype": "f32+bf16-autocast", "device": device.type, "batch": args.batch,
                   "seq_len": args.seq_len}, measure)


class LoraLinear(torch.nn.Module):
    """base(x) + (alpha / rank) * B A x, adapters in f32 (A kaiming-uniform, B zeros, as peft)."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.scaling, self.enabled = base, alpha / rank, True
        kwargs = {"device": base.weight.device, "dtype": torch.float32}
        self.lora_A = torch.nn.Parameter(torch.empty(rank, base.in_features, **kwargs))
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank, **kwargs))
        torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        out = self.base(x)
        if not self.enabled:
            return out
        return out + (x.float() @ self.lora_A.T @ self.lora_B.T * self.scaling).to(out.dtype)


def add_lora(model, rank, alpha, kind):
    """Freezes the model and adds LoRA adapters to LORA_TARGETS. Returns (model, kind used,
    a context-manager factory that disables the adapters)."""
    if kind == "auto":
        kind = "peft" if importlib.util.find_spec("peft") else "manual"
    if kind == "peft":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                            target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        return model, kind, model.disable_adapter
    model.requires_grad_(False)
    wrappers = []
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if name in LORA_TARGETS and isinstance(child, torch.nn.Linear):
                wrappers.append(LoraLinear(child, rank, alpha))
                setattr(parent, name, wrappers[-1])

    @contextlib.contextmanager
    def disabled():
        for wrapper in wrappers:
            wrapper.enabled = False
        try:
            yield
        finally:
            for wrapper in wrappers:
                wrapper.enabled = True

    return model, kind, disabled


def completion_logprobs(model, seqs, n):
    """Per-token log-probabilities of the last n tokens of each row of seqs."""
    logits = model(input_ids=seqs, use_cache=False, logits_to_keep=n + 1).logits[:, :-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(-1, seqs[:, -n:, None]).squeeze(-1)


def grpo_loss(logp, ref_logp, advantages):
    """TRL's GRPO loss: per-token exp(logp - logp.detach()) * A - beta * k3 KL, negated, mean
    over each sequence's completion tokens, then over sequences."""
    delta = ref_logp - logp
    kl = torch.exp(delta) - delta - 1
    per_token = -(torch.exp(logp - logp.detach()) * advantages[:, None] - GRPO_BETA * kl)
    return per_token.mean(dim=1).mean()


def run_grpo(args, device):
    model = build_model(args.shape, torch.bfloat16, device).train()
    model, lora, adapters_disabled = add_lora(model, args.lora_rank, args.lora_alpha, args.lora)
    params = [p for p in model.parameters() if p.requires_grad]
    log(f"LoRA ({lora}): {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    prompt = random_ids(model, 1, args.prompt_len).repeat(args.group, 1)
    n = args.completion_len
    rollout_seconds = []

    def step():
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            seqs = generate(model, prompt, n, sample=True)
        sync(device)
        rollout_seconds.append(time.perf_counter() - start)
        rewards = torch.randn(args.group, device=device)
        advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
        with torch.no_grad(), adapters_disabled():
            ref_logp = completion_logprobs(model, seqs, n)
        loss = grpo_loss(completion_logprobs(model, seqs, n), ref_logp, advantages)
        update(loss, optimizer, device)
        return time.perf_counter() - start

    def measure():
        seconds, peak = repeat(device, args.steps - 1, step)
        rollout = sum(rollout_seconds[1:]) / (args.steps - 1)
        return {**rate(args.group * n, seconds, peak), "rollout_seconds": round(rollout, 6),
                "update_seconds": round(seconds - rollout, 6)}

    return report({"impl": "pytorch", "bench": "grpo_lora_step", "shape": args.shape,
                   "dtype": "bf16", "device": device.type, "group": args.group,
                   "prompt_len": args.prompt_len, "completion_len": n,
                   "lora_rank": args.lora_rank, "lora": lora,
                   "adapter_dtype": DTYPE_NAMES[params[0].dtype]},
                  measure)


def int_at_least(low):
    def parse(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = int_at_least(1)


def batch_list(text):
    try:
        return [positive_int(part) for part in text.split(",")]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,32 of positive integers")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--shape", required=True, choices=SHAPES)
        sub.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
        sub.add_argument("--seed", type=int, default=0)
        return sub

    engine = command("engine", "decode and prefill throughput of transformers' Llama")
    engine.add_argument("--dtype", default="bf16", choices=DTYPES)
    engine.add_argument("--batches", type=batch_list, default=[1, 32])
    engine.add_argument("--prompt-len", type=positive_int, default=128)
    engine.add_argument("--decode-tokens", type=positive_int, default=64)
    engine.add_argument("--prefill-len", type=positive_int, default=2048)
    engine.add_argument("--runs", type=positive_int, default=3, help="timed runs after one warm-up")

    sft = command("sft", "one full fine-tuning step (f32 master weights, bf16 autocast, AdamW)")
    sft.add_argument("--batch", type=positive_int, default=4)
    sft.add_argument("--seq-len", type=positive_int, default=512)
    sft.add_argument("--steps", type=int_at_least(2), default=3, help="steps, the first a warm-up")

    grpo = command("grpo-lora", "one GRPO step with LoRA adapters on a bf16 model")
    grpo.add_argument("--group", type=int_at_least(2), default=8)
    grpo.add_argument("--prompt-len", type=positive_int, default=64)
    grpo.add_argument("--completion-len", type=positive_int, default=128)
    grpo.add_argument("--lora-rank", type=positive_int, default=16)
    grpo.add_argument("--lora-alpha", type=float, default=32.0)
    grpo.add_argument("--lora", default="auto", choices=["auto", "peft", "manual"],
                      help="auto: peft if importable, else the hand-written wrapper")
    grpo.add_argument("--steps", type=int_at_least(2), default=2, help="steps, the first a warm-up")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        log(f"error: --device cuda, but torch {torch.__version__} (CUDA {torch.version.cuda}) "
            "sees no usable CUDA device")
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        log(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    torch.manual_seed(args.seed)
    run = {"engine": run_engine, "sft": run_sft, "grpo-lora": run_grpo}[args.command]
    return 0 if run(args, device) else OOM_EXIT


if __name__ == "__main__":
    sys.exit(main())
