#!/usr/bin/env python3
"""Reference for one training step of metis-train (tests/torch_parity.rs).

From the fixture ``llama31-tiny-v512/f32`` (HF transformers, eager attention, float32, CPU,
one thread) and a fixed batch of 2 right-padded sequences of different lengths with a loss
mask (the first two targets of row 0 are masked as a "prompt", pads are masked):

* ``full``: mean token cross-entropy over the unmasked targets, backward,
  ``clip_grad_norm_(1.0)`` (pre-clip norm recorded), one ``torch.optim.AdamW`` step
  (lr 1e-3, weight decay 0.1 on matrices and embeddings, none on norm weights, betas
  0.9/0.999, eps 1e-8).
* ``lora``: the same with PEFT LoRA (r 4, alpha 8, dropout 0, all 7 projections) whose A and B
  start from fixed values drawn here (B non-zero, so both get gradients) and are stored in the
  fixture, so Metis starts from the identical adapter; AdamW weight decay 0.1 on all adapters.

Writes ``crates/metis-train/tests/fixtures/adamw_step.json`` (loss, grad norm, batch, per-tensor
checksums of every updated parameter) and ``adamw_step.safetensors`` /
``adamw_step_lora.safetensors`` (a few whole updated tensors; the LoRA initial values).

Usage (repo root; Python with torch, transformers, peft, safetensors, numpy)::

    python tools/reference/adamw_step.py [--fixtures ../shared/fixtures] [--out crates/metis-train/tests/fixtures]
"""

import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

IDS = [
    [1, 17, 250, 3, 99, 42, 7, 311, 12],
    [1, 5, 300, 77, 11, 480, 0, 0, 0],
]
LENS = [9, 6]
PROMPT_MASKED = {0: 2}  # row -> number of leading targets excluded from the loss
LR, WD, BETAS, EPS, CLIP = 1e-3, 0.1, (0.9, 0.999), 1e-8, 1.0
FULL_TENSORS = [
    "model.norm.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.1.self_attn.k_proj.weight",
    "model.layers.2.mlp.down_proj.weight",
]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def batch():
    s = len(IDS[0])
    ids = torch.tensor(IDS, dtype=torch.long)
    attn = torch.tensor([[1 if i < n else 0 for i in range(s)] for n in LENS], dtype=torch.long)
    pos = torch.arange(s).unsqueeze(0).repeat(2, 1)
    targets = torch.zeros_like(ids)
    mask = torch.zeros(2, s, dtype=torch.float32)
    for r, n in enumerate(LENS):
        for i in range(s):
            if i + 1 < n:
                targets[r, i] = ids[r, i + 1]
                if i >= PROMPT_MASKED.get(r, 0):
                    mask[r, i] = 1.0
    return ids, attn, pos, targets, mask


def loss_fn(model, ids, attn, pos, targets, mask):
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits.float()
    lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(lp * mask).sum() / mask.sum()


def checksums(named):
    out = {}
    for name, t in named:
        d = t.detach().double()
        out[name] = {"sum": d.sum().item(), "sumsq": (d * d).sum().item()}
    return out


def load(fixtures):
    from transformers import AutoModelForCausalLM

    path = os.path.join(fixtures, "llama31-tiny-v512", "f32")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")


def run_full(fixtures):
    model = load(fixtures)
    model.train()
    ids, attn, pos, targets, mask = batch()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = loss_fn(model, ids, attn, pos, targets, mask)
    loss.backward()
    params = [p for _, p in model.named_parameters()]
    gnorm = torch.nn.utils.clip_grad_norm_(params, CLIP).item()
    decay = [p for n, p in model.named_parameters() if not (n.endswith("norm.weight") or n.endswith(".bias"))]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight") or n.endswith(".bias")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS,
    )
    opt.step()
    named = list(model.named_parameters())
    tensors = {f"updated.{n}": p.detach().clone().contiguous() for n, p in named if n in FULL_TENSORS}
    deltas = [(n, p.detach() - initial[n]) for n, p in named]
    return {
        "loss": loss.item(),
        "grad_norm": gnorm,
        "updated": checksums(named),
        "delta": checksums(deltas),
    }, tensors


def run_lora(fixtures):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    base = load(fixtures)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    rng = np.random.default_rng(20261124)
    init = {}
    for name, p in model.named_parameters():
        if "lora_" not in name:
            continue
        saved = name.replace(".default", "")
        if "lora_A" in name:
            bound = 1.0 / np.sqrt(p.shape[1])
            v = rng.uniform(-bound, bound, size=tuple(p.shape))
        else:
            v = rng.normal(0.0, 0.05, size=tuple(p.shape))
        init[saved] = torch.tensor(v, dtype=torch.float32)
    res = set_peft_model_state_dict(model, init)
    assert not getattr(res, "unexpected_keys", []), res
    model.train()
    ids, attn, pos, targets, mask = batch()
    loss = loss_fn(model, ids, attn, pos, targets, mask)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == len(init), (len(params), len(init))
    gnorm = torch.nn.utils.clip_grad_norm_(params, CLIP).item()
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    opt.step()
    named = [(n.replace(".default", ""), p) for n, p in model.named_parameters() if p.requires_grad]
    tensors = {f"init.{n}": t.contiguous() for n, t in init.items()}
    tensors.update({f"updated.{n}": p.detach().clone().contiguous() for n, p in named})
    return {"loss": loss.item(), "grad_norm": gnorm, "updated": checksums(named)}, tensors


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=os.path.join(root, "..", "shared", "fixtures"))
    ap.add_argument("--out", default=os.path.join(root, "crates", "metis-train", "tests", "fixtures"))
    ap.add_argument("--skip-lora", action="store_true", help="only the full fine-tuning step (no peft)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    import transformers

    info = {
        "generator": "tools/reference/adamw_step.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "batch": {"ids": IDS, "lengths": LENS, "prompt_masked": {str(k): v for k, v in PROMPT_MASKED.items()}},
        "optimizer": {"lr": LR, "weight_decay": WD, "betas": list(BETAS), "eps": EPS, "clip": CLIP},
    }
    full, full_t = run_full(args.fixtures)
    info["full"] = full
    save_file(full_t, os.path.join(args.out, "adamw_step.safetensors"), metadata={"format": "pt"})
    if not args.skip_lora:
        import peft

        info["peft"] = peft.__version__
        lora, lora_t = run_lora(args.fixtures)
        info["lora"] = lora
        save_file(lora_t, os.path.join(args.out, "adamw_step_lora.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "adamw_step.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print(f"full: loss {full['loss']:.8f} grad_norm {full['grad_norm']:.8f}")
    if "lora" in info:
        print(f"lora: loss {info['lora']['loss']:.8f} grad_norm {info['lora']['grad_norm']:.8f}")


if __name__ == "__main__":
    main()
