#!/usr/bin/env python3
"""Reference numbers for Metis's AlpacaEval 2 judge and win rates (crates/metis-eval/src/judge/).

Runs the code of the `alpaca-eval` package itself (upstream tatsu-lab/alpaca_eval; the PyPI
0.6.6 wheel, whose judge prompt, processors, parser and metrics this script checks) on small
synthetic inputs and writes what it computes, so that a Rust test can compare:

- judge prompts: `RandomSwitchTwoColumnsProcessor` configured as `SinglePairwiseAnnotator`
  configures it, `utils.make_prompts` with `alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`,
  `utils.prompt_to_chatml`: the chat messages and the swap of a few items;
- `completion_parsers.logprob_parser` (weighted_alpaca_eval_gpt4_turbo's arguments) on a few
  top-logprob lists;
- `metrics.get_winrate` and `metrics.get_length_controlled_winrate` on three synthetic
  annotation sets: the upstream fit (liblinear's default tol 1e-4) and the same pipeline with
  tol 1e-10 (the optimum Metis solves for), with the chosen C, the weights and the summed
  cross-validation scores. `df_gamed.csv`, which upstream downloads from the Hugging Face hub,
  is replaced by a synthetic file (hf_hub_download is patched to return it).

No AlpacaEval data is used or written (CC BY-NC 4.0): every input is synthetic.

Setup (a throwaway venv; nothing from it is committed):
    python3 -m venv /tmp/alpaca-venv
    /tmp/alpaca-venv/bin/pip install alpaca-eval==0.6.6
    # resolved here to scikit-learn 1.9.1, numpy 2.4.6, pandas 3.1.1, patsy 1.0.3

Usage:
    /tmp/alpaca-venv/bin/python tools/reference/alpacaeval_lc.py
Output: crates/metis-eval/tests/fixtures/alpacaeval_reference.json
"""
import hashlib
import json
import math
import os
import random
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

import alpaca_eval
from alpaca_eval import completion_parsers, processors, utils
from alpaca_eval.metrics import glm_winrate
from alpaca_eval.metrics.winrate import get_winrate

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "crates/metis-eval/tests/fixtures/alpacaeval_reference.json"
PROMPT = (
    Path(alpaca_eval.__file__).parent
    / "evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
)
PARSER_KWARGS = dict(numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)
GLM_INFO = glm_winrate.GLM_INFO["length_controlled_v1"]
# scikit-learn 1.8+ deprecates `penalty` in favour of `l1_ratios`; upstream still passes it.
warnings.filterwarnings("ignore", category=FutureWarning)


def num(x):
    """JSON number, NaN as null."""
    x = float(x)
    return None if math.isnan(x) else x


# ---------------------------------------------------------------------------------------------
# Judge prompts


def judge_prompts():
    items = [
        ("What is 2+2?", "2 + 2 = 4.", "Four."),
        ("Write a haiku about the sea.", "Waves fold into foam", "Salt wind,\ngrey water."),
        ("Translate 'héllo wörld' ✓", "Bonjour le monde.", "  Hallo Welt!  "),
        ("Echo {output_1} back", "reference {x}", "answer"),
        ("List three colours.", "Red, green, blue.", "1. Cyan\n2. Magenta\n3. Yellow"),
        ("Explain TCP in one line.", "A reliable byte stream.", "Handshakes and acks."),
    ]
    df = pd.DataFrame(
        [dict(instruction=i, output_1=r, output_2=a) for i, r, a in items]
    )
    # As annotators/pairwise_evaluator.py: SinglePairwiseAnnotator sets it up (seed 123).
    swap = processors.RandomSwitchTwoColumnsProcessor(
        two_columns_to_switch=["output_1", "output_2"],
        random_seed_columns=["instruction"],
        _switch_column="is_switched_outputs",
        seed=123,
    )
    switched = swap.preprocess(df)
    template = PROMPT.read_text()
    prompts, _ = utils.make_prompts(switched, template=template, batch_size=1)
    out = []
    for (i, r, a), prompt, is_switched in zip(
        items, prompts, switched["is_switched_outputs"]
    ):
        messages = utils.prompt_to_chatml(prompt.strip())
        out.append(
            dict(
                instruction=i,
                reference=r,
                answer=a,
                swapped=bool(is_switched),
                messages=[dict(role=m["role"], content=m["content"]) for m in messages],
            )
        )
    return out


def parser_cases():
    lists = [
        [("M", -0.017597131), ("m", -4.048847), ("Both", -14.9), ("The", -15.7)],
        [("m", -0.3), ("M", -1.4)],
        [("m", -0.05), ("Model", -3.0)],
        [("M", -0.2), ("The", -2.0)],
        [(" m", -0.1), ("The", -2.5)],
        [("m", -1.0), ("M", -1.0)],
    ]
    out = []
    for top in lists:
        completion = dict(
            logprobs=dict(
                content=[
                    dict(
                        token=top[0][0],
                        logprob=top[0][1],
                        top_logprobs=[dict(token=t, logprob=lp) for t, lp in top],
                    )
                ]
            )
        )
        (p,) = completion_parsers.logprob_parser(completion, **PARSER_KWARGS)
        out.append(dict(top_logprobs=[[t, lp] for t, lp in top], preference=num(p)))
    return out


def seeds():
    out = []
    for s in ["metis", "is_switched_outputs2+2123", "héllo ✓", ""]:
        r = random.Random(s)
        out.append(dict(seed=s, random=[r.random(), r.random(), r.random()]))
    return out


# ---------------------------------------------------------------------------------------------
# Win rates


def synthetic_case(name, n, rng, with_difficulty, gamed_models, length_effect, nan_at, draw_at):
    ref_len = rng.integers(50, 2000, size=n)
    ans_len = rng.integers(0, 3000, size=n)
    difficulty = rng.normal(0.0, 1.0, size=n) if with_difficulty else np.zeros(n)
    delta = (ref_len - ans_len) / np.std(ref_len - ans_len)
    logit = -length_effect * np.tanh(delta) - 0.8 * difficulty + rng.normal(0, 0.7, size=n)
    pref = 1.0 + 1.0 / (1.0 + np.exp(-logit))
    pref = np.round(pref, 6)
    pref[nan_at] = np.nan
    pref[draw_at] = 0.0  # an old-style draw, read as 1.5
    gamed = []
    for m in range(gamed_models):
        g_sdl = rng.normal(0.0, 1.5, size=n)
        g_logit = -1.2 * np.tanh(g_sdl) - 0.8 * difficulty + rng.normal(0, 0.5, size=n) - 0.3 * m
        g_pref = np.round(1.0 / (1.0 + np.exp(-g_logit)), 6)
        for i in range(n):
            gamed.append(
                dict(
                    model=f"gamed_{m}",
                    index=i,
                    preference=num(g_pref[i]),
                    std_delta_len=float(g_sdl[i]),
                    instruction_difficulty=float(difficulty[i]),
                    not_gamed_baseline=False,
                )
            )
    if not gamed:  # upstream always reads df_gamed for the difficulty
        gamed = [
            dict(
                model="none",
                index=i,
                preference=0.5,
                std_delta_len=0.0,
                instruction_difficulty=float(difficulty[i]),
                not_gamed_baseline=False,
            )
            for i in range(n)
        ]
    return dict(
        name=name,
        reference_chars=[int(x) for x in ref_len],
        answer_chars=[int(x) for x in ans_len],
        preference=[num(p) for p in pref],
        instruction_difficulty=[float(d) for d in difficulty],
        gamed=gamed if gamed_models else None,
        _gamed_for_upstream=gamed,
    )


def run_upstream(case, tight):
    """get_length_controlled_winrate with the case's df_gamed; returns (metrics, model)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "df_gamed.csv")
        pd.DataFrame(case["_gamed_for_upstream"]).to_csv(path, index=False)
        glm_winrate.hf_hub_download = lambda **_: path
        glm_info = dict(GLM_INFO)
        if case["gamed"] is None:
            glm_info["regularize_to_baseline_lambda"] = None
        kwargs = dict(glm_info["kwargs"])
        if tight:
            kwargs.update(tol=1e-10, max_iter=1_000_000)
        glm_info["kwargs"] = kwargs
        annotations = pd.DataFrame(
            dict(
                preference=[np.nan if p is None else p for p in case["preference"]],
                output_1=["x" * k for k in case["reference_chars"]],
                output_2=["y" * k for k in case["answer_chars"]],
                generator_1="gpt4_1106_preview",
                generator_2="model",
                annotator="synthetic",
            )
        )
        metrics = glm_winrate.get_length_controlled_winrate(
            annotations, save_weights_dir=None, glm_info=glm_info, is_warn_extreme_changes=False
        )
        # The same fit again, to read the chosen C, the weights and the CV scores.
        train, test, weight = glm_winrate._get_featurized_data(
            annotations,
            formula=glm_info["formula"],
            regularize_to_baseline_lambda=glm_info["regularize_to_baseline_lambda"],
        )
        keep = train["preference"].notna()
        model = glm_winrate.fit_LogisticRegressionCV(
            train[keep],
            "preference",
            is_ytrue_proba=True,
            sample_weight=None if weight is None else weight[keep],
            **kwargs,
        )
    return metrics, model


def expected(case):
    out = {}
    for label, tight in [("upstream", False), ("tight", True)]:
        metrics, model = run_upstream(case, tight)
        out[label] = dict(
            length_controlled_winrate=metrics["length_controlled_winrate"],
            lc_standard_error=metrics["lc_standard_error"],
            c=float(model.C_[0]),
            weights=[float(w) for w in model.coef_[0]],
            cv_scores=[float(s) for s in model.scores_[1].sum(axis=0)],
        )
    metrics, _ = run_upstream(case, False)
    out["win_rate"] = {
        k: num(metrics[k])
        for k in [
            "win_rate",
            "standard_error",
            "n_wins",
            "n_wins_base",
            "n_draws",
            "n_total",
            "discrete_win_rate",
        ]
    }
    return out


# The scripted run of crates/metis-eval/tests/alpacaeval.rs: ten instructions, a truncated
# answer (a loss, length 0) and one judge-invalid verdict (NaN); no df_gamed.csv.
END_TO_END = dict(
    reference_chars=[120, 300, 80, 500, 250, 60, 410, 150, 90, 220],
    answer_chars=[200, 90, 300, 480, 100, 400, 50, 0, 260, 210],
    preference=[1.9, 1.35, 1.85, 1.7, None, 1.8, 1.6, 1.0, 1.95, 1.75],
)


def end_to_end_case():
    n = len(END_TO_END["preference"])
    return dict(
        name="end_to_end",
        **END_TO_END,
        instruction_difficulty=[0.0] * n,
        gamed=None,
        _gamed_for_upstream=[
            dict(
                model="none",
                index=i,
                preference=0.5,
                std_delta_len=0.0,
                instruction_difficulty=0.0,
                not_gamed_baseline=False,
            )
            for i in range(n)
        ],
    )


def main():
    rng = np.random.default_rng(20240501)
    cases = [
        synthetic_case("approximation", 40, rng, False, 0, 0.9, [3, 17], [8]),
        synthetic_case("upstream_regularised", 60, rng, True, 2, 1.1, [5], [11, 30]),
        synthetic_case("strong_length_effect", 30, rng, True, 0, 3.0, [], []),
        end_to_end_case(),
    ]
    for case in cases:
        case["expected"] = expected(case)
        del case["_gamed_for_upstream"]
    fixture = dict(
        generated_by="tools/reference/alpacaeval_lc.py",
        versions={
            p: version(p) for p in ["alpaca-eval", "scikit-learn", "numpy", "pandas", "patsy"]
        },
        template_sha256=hashlib.sha256(PROMPT.read_bytes()).hexdigest(),
        cs=[float(c) for c in np.logspace(-4, 4, 10)],
        judge_prompts=judge_prompts(),
        parser=parser_cases(),
        seeds=seeds(),
        cases=cases,
    )
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
    for case in cases:
        e = case["expected"]
        print(
            f"{case['name']}: LC {e['upstream']['length_controlled_winrate']:.6f} "
            f"(tight {e['tight']['length_controlled_winrate']:.6f}), C {e['upstream']['c']:.4g} "
            f"(tight {e['tight']['c']:.4g}), raw {e['win_rate']['win_rate']:.4f}"
        )


if __name__ == "__main__":
    main()
