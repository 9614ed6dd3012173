#!/usr/bin/env python3
"""PyTorch reference for crates/metis-train/benches/sft_speed.rs: the same full fine-tuning
SFT step (forward, masked mean token cross-entropy, backward, grad-norm clip 1.0, AdamW step)
on the same model directory and batch shape, on CPU. Prints one JSON object:
{"tokens_per_s", "step_ms", "threads", "torch"}.

    python tools/reference/sft_speed_torch.py --model DIR --batch 4 --seq 128 --steps 10
"""
import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.train()
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, foreach=False)
    ids = torch.randint(0, vocab, (args.batch, args.seq))
    # Loss on the second half of every sequence (the "assistant" part), as the Rust bench.
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100

    def step():
        logits = model(input_ids=ids).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    print(
        json.dumps(
            {
                "tokens_per_s": args.batch * args.seq / dt,
                "step_ms": dt * 1e3,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
