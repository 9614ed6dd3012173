#!/usr/bin/env python3
"""Reference values for Metis' GRPO loss, computed by TRL itself.

Writes `crates/metis-train/tests/fixtures/grpo_loss_trl.json`, which
`crates/metis-train/tests/grpo_loss.rs` compares against `metis_train::grpo`.

Loss: the reference IS TRL. For every case this calls the real, unmodified
`trl.GRPOTrainer._compute_loss` (unbound) on a minimal stand-in `self` that carries the
attributes `GRPOTrainer.__init__` derives from a real `trl.GRPOConfig` (epsilon_low/high, beta,
loss_type, max_completion_length, ...). The stand-in's `_get_per_token_logps_and_entropies`
returns a fixed float32 `logp` leaf tensor with `requires_grad=True` instead of running a
model, so the recorded loss, `d loss / d logp` (from `loss.backward()`) and the metrics TRL logs
(`kl`, `clip_ratio/*`) are exactly what TRL computes from those log-probabilities.

Advantages: TRL computes them inline in `GRPOTrainer._generate_and_score_completions`, which
cannot be called in isolation (it generates completions and calls reward functions). The
`sum_then_normalize` block of that method is therefore copied here line for line (see
`trl_advantages`) and uses TRL's own `trl.trainer.utils.nanstd`; the installed TRL source is
checked to still contain those lines, so a TRL change fails this script instead of silently
diverging.

Inputs: B=6 completions in 2 groups of 3, T=7, ragged lengths via the mask (7, 5, 2, 7, 1, 0
tokens), seeded random log-probabilities; `old_logp` perturbed so that ratios leave the clip
range [0.8, 1.28] in both directions, `ref_logp` perturbed for the KL. Every loss type is run
with beta 0 and 0.04 (epsilon 0.2, epsilon_high 0.28), on- and off-policy, with gradient
accumulation, and with and without `use_bias_correction_kl` (set explicitly in every case:
TRL 1.16 defaults it to True, older TRL had no such option, i.e. False).

Usage: /tmp/pyref/bin/python tools/reference/grpo_loss_trl.py [OUT.json]
"""

import inspect
import json
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import torch
import trl
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanstd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/metis-train/tests/fixtures/grpo_loss_trl.json"

B, T, G = 6, 7, 3
LENGTHS = [7, 5, 2, 7, 1, 0]
EPSILON, EPSILON_HIGH = 0.2, 0.28
MAX_COMPLETION_LENGTH = 16
LOSS_TYPES = ["grpo", "dr_grpo", "dapo", "bnpo"]
BETAS = [0.0, 0.04]


def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str):
    """`GRPOTrainer._generate_and_score_completions`, sum_then_normalize branch, with one reward
    function of weight 1 whose NaN entries are the unscorable completions."""
    rewards_per_func = rewards.unsqueeze(1)
    reward_weights = torch.ones(1)
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    # --- copied from TRL ---
    rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        if rewards.numel() > 1:
            std_rewards = nanstd(rewards).expand_as(rewards)
        else:
            std_rewards = torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    advantages = torch.nan_to_num(advantages, nan=0.0)
    # --- end of copy ---
    return {
        "advantages": advantages.tolist(),
        "frac_reward_zero_std": is_std_zero.float().mean().item(),
        "reward_mean": torch.nanmean(rewards).item(),
        "reward_std": nanstd(rewards).item(),
    }


def check_trl_source():
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for line in [
        "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
        "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
        "std_rewards = nanstd(rewards).expand_as(rewards)",
        "advantages = rewards - mean_grouped_rewards",
        "advantages = advantages / (std_rewards + 1e-4)",
        "is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))",
        "advantages = torch.nan_to_num(advantages, nan=0.0)",
    ]:
        if line not in src:
            sys.exit(f"TRL's advantage code changed; update trl_advantages: missing {line!r}")


def stand_in(args: GRPOConfig, logp: torch.Tensor, ga: int):
    """The attributes `_compute_loss` reads, set the way `GRPOTrainer.__init__` sets them."""

    def per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **kw):
        assert logits_to_keep == T
        return logp, torch.zeros_like(logp), None

    accelerator = SimpleNamespace(
        num_processes=1,
        reduce=lambda t, reduction="sum": t,
        gather=lambda t: t,
        gather_for_metrics=lambda t: t,
        sync_gradients=True,
    )
    return SimpleNamespace(
        args=args,
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        _get_per_token_logps_and_entropies=per_token_logps_and_entropies,
        aux_loss_enabled=False,
        top_entropy_quantile=args.top_entropy_quantile,
        off_policy_mask_threshold=args.off_policy_mask_threshold,
        importance_sampling_level=args.importance_sampling_level,
        beta=args.beta,
        loss_type=args.loss_type,
        epsilon_low=args.epsilon,
        epsilon_high=args.epsilon_high if args.epsilon_high is not None else args.epsilon,
        use_vllm=args.use_vllm,
        vllm_importance_sampling_correction=args.vllm_importance_sampling_correction,
        max_completion_length=args.max_completion_length,
        current_gradient_accumulation_steps=ga,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )


def nan_to_null(x):
    """JSON has no NaN: NaN (an unscored reward, an undefined std) is written as null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, list):
        return [nan_to_null(v) for v in x]
    if isinstance(x, dict):
        return {k: nan_to_null(v) for k, v in x.items()}
    return x


def f32_list(t: torch.Tensor):
    return [[float(x) for x in row] for row in t.tolist()]


def main():
    check_trl_source()
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    torch.manual_seed(20260724)

    mask = torch.zeros(B, T)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = 1.0
    logp = -3.0 * torch.rand(B, T) - 0.01
    old_logp = logp + 0.3 * torch.randn(B, T)
    ref_logp = logp + 0.4 * torch.randn(B, T)
    # Padding positions hold garbage, as real batches do; the mask must make it irrelevant.
    logp = torch.where(mask.bool(), logp, torch.full_like(logp, -7.5))

    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 0.0])
    adv = trl_advantages(rewards, G, "group")
    advantages = torch.tensor(adv["advantages"], dtype=torch.float32)

    advantage_cases = []
    for name, r in [
        ("mixed", [1.0, 0.0, 0.5, 1.0, 1.0, 0.0]),
        ("zero_std_group", [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
        ("nan_rewards", [1.0, float("nan"), 0.0, float("nan"), float("nan"), 0.25]),
        ("graded", [0.9, 0.42, 0.0, 0.77, 0.31, 0.58]),
    ]:
        for scale in ["group", "batch", "none"]:
            res = trl_advantages(torch.tensor(r), G, scale)
            advantage_cases.append({"name": name, "scale_rewards": scale, "rewards": r, **res})

    cases = []
    # (loss_type, beta, old_logp given, GA, steps_per_generation, use_bias_correction_kl)
    variants = [(lt, beta, True, 1, None, False) for lt in LOSS_TYPES for beta in BETAS]
    # On-policy: old = logp.detach() inside TRL.
    variants += [(lt, 0.04, False, 1, None, False) for lt in LOSS_TYPES]
    # Gradient accumulation with steps_per_generation != GA.
    variants += [(lt, 0.04, True, 3, 6, False) for lt in LOSS_TYPES]
    # TRL's DeepSeek-V3.2 KL bias correction (k3 * coef_1), the default of recent TRL versions.
    variants += [(lt, 0.04, old, 1, None, True) for lt in LOSS_TYPES for old in [True, False]]
    with tempfile.TemporaryDirectory() as tmp:
        for loss_type, beta, with_old, ga, spg, bias_kl in variants:
            args = GRPOConfig(
                output_dir=tmp,
                loss_type=loss_type,
                beta=beta,
                epsilon=EPSILON,
                epsilon_high=EPSILON_HIGH,
                max_completion_length=MAX_COMPLETION_LENGTH,
                num_generations=G,
                per_device_train_batch_size=B,
                gradient_accumulation_steps=ga,
                steps_per_generation=spg,
                use_bias_correction_kl=bias_kl,
                report_to="none",
                use_cpu=True,
                bf16=False,
            )
            leaf = logp.clone().requires_grad_(True)
            me = stand_in(args, leaf, ga)
            num_items = float(mask.sum()) if ga == 1 else float(mask.sum()) * 4 + 3
            inputs = {
                "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
                "prompt_mask": torch.ones(B, 2, dtype=torch.long),
                "completion_ids": torch.zeros(B, T, dtype=torch.long),
                "completion_mask": mask.clone(),
                "advantages": advantages.clone(),
                "num_items_in_batch": torch.tensor(num_items),
            }
            if with_old:
                inputs["old_per_token_logps"] = old_logp.clone()
            if beta != 0.0:
                inputs["ref_per_token_logps"] = ref_logp.clone()
            loss = GRPOTrainer._compute_loss(me, None, inputs)
            loss.backward()
            m = {k: v[-1] for k, v in me._metrics["train"].items()}
            cases.append(
                {
                    "loss_type": loss_type,
                    "beta": beta,
                    "with_old_logp": with_old,
                    "use_bias_correction_kl": bias_kl,
                    "gradient_accumulation_steps": ga,
                    "steps_per_generation": args.steps_per_generation,
                    "num_items_in_batch": num_items,
                    "loss": loss.item(),
                    "grad": f32_list(leaf.grad),
                    "metrics": {k: v for k, v in m.items() if k != "entropy"},
                }
            )

    fixture = {
        "generator": "tools/reference/grpo_loss_trl.py",
        "trl_version": trl.__version__,
        "torch_version": torch.__version__,
        "B": B,
        "T": T,
        "group_size": G,
        "epsilon": EPSILON,
        "epsilon_high": EPSILON_HIGH,
        "max_completion_length": MAX_COMPLETION_LENGTH,
        "mask": f32_list(mask),
        "logp": f32_list(logp),
        "old_logp": f32_list(old_logp),
        "ref_logp": f32_list(ref_logp),
        "rewards": rewards.tolist(),
        "advantages": advantages.tolist(),
        "advantage_cases": advantage_cases,
        "cases": cases,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(nan_to_null(fixture), indent=1, allow_nan=False)
    out.write_text(text + "\n")
    print(f"wrote {out} ({len(cases)} loss cases, {len(advantage_cases)} advantage cases, "
          f"trl {trl.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
