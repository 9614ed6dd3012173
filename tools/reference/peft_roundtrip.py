#!/usr/bin/env python3
"""Check that checkpoints written by metis-train load in PEFT / transformers with the same logits.

Input: the directory written by the Rust test ``export_for_peft_roundtrip``::

    METIS_PEFT_OUT=/tmp/metis-peft cargo test --release -p metis-train --test checkpoint export_for_peft_roundtrip
    python tools/reference/peft_roundtrip.py /tmp/metis-peft

It contains

* ``adapter/``: a PEFT adapter dir saved by ``TrainModel::save`` (LoRA on
  ``llama31-tiny-v512/f32``, 3 training steps) plus ``metis_logits.safetensors`` (``input_ids``
  [1, s] and Metis' f32 logits [1, s, vocab] of the model with the adapter);
* ``merged/``: ``checkpoint::merge_lora`` of that adapter into the base (full HF dir), with the
  same reference logits;
* ``full/``: a full fine-tune (1 step) saved as an HF dir, with its own reference logits.

The adapter is loaded with ``PeftModel.from_pretrained`` on the base named by
``base_model_name_or_path`` in ``adapter_config.json`` (override with ``--base``); the two
full dirs with ``AutoModelForCausalLM.from_pretrained`` (eager attention, float32). Prints the
max abs logit difference of each and exits non-zero if any exceeds ``--tol`` (default 1e-4).
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="directory written by export_for_peft_roundtrip")
    ap.add_argument("--base", help="base model dir (default: base_model_name_or_path of the adapter)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def load_full(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()

    worst = 0.0
    results = {}
    adapter = os.path.join(args.dir, "adapter")
    if os.path.isdir(adapter):
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            base = args.base or json.load(f)["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_full(base), adapter).eval()
        ref = load_file(os.path.join(adapter, "metis_logits.safetensors"))
        d = (logits_of(model, ref["input_ids"].long()) - ref["logits"]).abs().max().item()
        results["peft adapter"] = d
        # Adapter disabled must be the base model.
        with model.disable_adapter():
            off = logits_of(model, ref["input_ids"].long())
        plain = logits_of(load_full(base), ref["input_ids"].long())
        results["adapter disabled vs base"] = (off - plain).abs().max().item()
    for sub in ["merged", "full"]:
        path = os.path.join(args.dir, sub)
        if os.path.isdir(path):
            ref = load_file(os.path.join(path, "metis_logits.safetensors"))
            d = (logits_of(load_full(path), ref["input_ids"].long()) - ref["logits"]).abs().max().item()
            results[f"{sub} HF dir (transformers)"] = d
    if not results:
        sys.exit(f"nothing to check in {args.dir}")
    for k, v in results.items():
        print(f"{k}: max abs logit diff {v:.3e}")
        worst = max(worst, v)
    if worst > args.tol:
        sys.exit(f"FAIL: max abs diff {worst:.3e} > {args.tol:g}")
    print("OK")


if __name__ == "__main__":
    main()
