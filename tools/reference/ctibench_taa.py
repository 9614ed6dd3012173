#!/usr/bin/env python3
"""CTIBench-TAA parity reference: CTIBench's own TAA scoring of its published responses.

Writes `crates/metis-verify/tests/fixtures/ctibench_taa_parity.json`, which
`crates/metis-verify/tests/taa_ctibench_parity.rs` compares against
`metis_verify::taa::ActorCatalog::judge(.., TaaRule::Ctibench)`.

Upstream (CC BY-NC-SA 4.0, Alam et al., "CTIBench", NeurIPS 2024 D&B, arXiv:2406.07599):
    repository  xashru/cti-bench
    commit      cb79d156821c63754af50311789d4006905b6aea
    notebook    evaluation/evaluation.ipynb, section "CTI-TAA evaluation":
                  cell 6c9cb7cf-4763-4ce3-bdc3-4ff49192096b (execution_count 13):
                      threat_actor_connection, is_alias_connected, is_related_connected
                  cell 367653f4-175d-4dae-b6d3-21feed5b5af8 (execution_count 14):
                      compute_taa_accuracy
                  cell 7627fbc7-a657-4a31-9faa-6eaca901bb82 (execution_count 15): its output
                      for column ChatGPT-4, "Correct & Plausible Accuracy: (52.0, 86.0)"
    responses   evaluation/responses/cti-taa-responses.tsv (2,309 bytes, 51 lines, LF,
                no final newline): columns GT, ChatGPT-3.5, ChatGPT-4, Gemini-1.5,
                LLAMA3-70B, LLAMA3-8B. Every model column already holds the *extracted*
                prediction (an actor name, or `X` for no answer/refusal), not the full
                response text: the notebook applies no extraction beyond `.lower().strip()`.
                Several cells carry trailing spaces (e.g. `APT36 `, gold `APT19  `), kept.
    dictionaries evaluation/alias_dict.pickle, evaluation/related_dict.pickle, read here as
                their JSON conversions ../shared/data/ctibench/taa-{alias,related}-dict.json
                (see ../shared/data/ctibench/SOURCES.md).

The scoring functions below are transcribed verbatim from the notebook (docstrings shortened);
their quirks are kept: names lower-cased and stripped, both dictionaries made symmetric, the
literal "nan" entries treated as a name, and a BFS that tests only the *neighbours* of visited
nodes (a prediction equal to the gold is found only back through one of the gold's aliases).
The only change is that `compute_taa_accuracy` also returns each row's prediction and verdict.

Reading the TSV: upstream uses `pd.read_csv(fname, sep='\\t')`. pandas is used when it is
installed; otherwise an equivalent reader for this file (csv module, tab-separated, `"`
quoting, pandas' default NA strings become NaN). A NaN cell would make upstream's
`.lower()` raise; this script raises too. The published file has no quotes and no NA cell.

Usage (from the repository root): save the upstream file, e.g.
    https://raw.githubusercontent.com/xashru/cti-bench/cb79d156821c63754af50311789d4006905b6aea/evaluation/responses/cti-taa-responses.tsv
as /tmp/ctibench/cti-taa-responses.tsv (byte-exact; sha256 below), then
    python3 tools/reference/ctibench_taa.py /tmp/ctibench/cti-taa-responses.tsv
Options: --data DIR (default ../shared/data/ctibench), --out FILE (default the fixture).
Only the Python standard library is needed.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import sys

REPO = "xashru/cti-bench"
COMMIT = "cb79d156821c63754af50311789d4006905b6aea"
NOTEBOOK = "evaluation/evaluation.ipynb"
RESPONSES = "evaluation/responses/cti-taa-responses.tsv"
# sha256 of the upstream responses file this fixture was built from.
RESPONSES_SHA256 = "3d776cf7f36fc9890b9fd728a5df786139ae1ad4fe4413d09c7c1b67044ca764"
# The notebook's own printed output (cell 7627fbc7..., column ChatGPT-4): (52.0, 86.0).
NOTEBOOK_CHATGPT4 = (52.0, 86.0)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "ctibench")
DEFAULT_OUT = os.path.join(
    ROOT, "crates", "metis-verify", "tests", "fixtures", "ctibench_taa_parity.json"
)


# --- evaluation.ipynb, cell 6c9cb7cf-4763-4ce3-bdc3-4ff49192096b (verbatim) -------------------
def threat_actor_connection(actor1, actor2, alias_dict, related_dict):
    """
    Determines the connection type between two threat actors based on alias and related group information.

    Returns:
        "C" if the actors are connected via an alias chain.
        "P" if the actors are connected via a related group chain.
        "I" if no connection is found.
    """

    actor1 = actor1.strip().lower()
    actor2 = actor2.strip().lower()

    # Normalize dictionaries and ensure bidirectional alias relationships
    alias_dict = {k.strip().lower(): [v.strip().lower() for v in val] for k, val in alias_dict.items()}
    for actor in list(alias_dict): # Iterate over a copy of the keys
        aliases = alias_dict[actor]
        for alias in aliases:
            if actor not in alias_dict.setdefault(alias, []):  # Avoid duplicates
                alias_dict[alias].append(actor)

    related_dict = {k.strip().lower(): [v.strip().lower() for v in val] for k, val in related_dict.items()}
    for actor in list(related_dict):  # Iterate over a copy of the keys
        related_groups = related_dict[actor]
        for related_actor in related_groups:
            if actor not in related_dict.setdefault(related_actor, []):
                related_dict[related_actor].append(actor)

    if is_alias_connected(actor1, actor2, alias_dict):
        return "C"

    if is_related_connected(actor1, actor2, alias_dict, related_dict):
        return "P"

    return "I"


def is_alias_connected(actor1, actor2, alias_dict):
    """
    Checks if two actors are connected through an alias chain using Breadth First Search (BFS).
    """
    visited = set()
    queue = [actor1]

    while queue:
        current_actor = queue.pop(0)
        visited.add(current_actor)

        for alias in alias_dict.get(current_actor, []):
            if alias == actor2:
                return True
            if alias not in visited:
                queue.append(alias)

    return False


def is_related_connected(actor1, actor2, alias_dict, related_dict) :
    """
    Checks if two actors are connected through a chain of aliases and related groups using BFS.
    """
    visited = set()
    queue = [actor1]

    while queue:
        current_actor = queue.pop(0)
        visited.add(current_actor)

        for alias in alias_dict.get(current_actor, []):
            if alias == actor2:
                return True
            if alias not in visited:
                queue.append(alias)

        for related_actor in related_dict.get(current_actor, []):
            if related_actor == actor2:
                return True
            if related_actor not in visited:
                queue.append(related_actor)

    return False


# --- evaluation.ipynb, cell 367653f4-175d-4dae-b6d3-21feed5b5af8 ------------------------------
# Upstream body unchanged; it also collects (prediction, verdict) per row and takes the frame
# instead of re-reading the file per column.
def compute_taa_accuracy(df, col, alias_dict, related_dict):
    """
    Returns Correct & Plausible Accuracy
    """
    correct = 0
    plausible = 0
    total = 0
    rows = []  # added

    for idx, row in df.iterrows():
        pred = row[col].lower().strip()
        gt = row['GT'].lower().strip()

        res = threat_actor_connection(gt, pred, alias_dict, related_dict)

        if res == 'C':
            correct += 1
        elif res == 'P':
            plausible += 1
        total += 1
        rows.append((row[col], res))  # added

    return correct/total*100, (correct+plausible)/total*100, correct, plausible, total, rows


# --- reading the TSV like pd.read_csv(fname, sep='\t') ---------------------------------------
# pandas' default NA strings (pandas._libs.parsers.STR_NA_VALUES).
PANDAS_NA = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}


class _Frame:
    """The slice of a DataFrame the notebook uses: `iterrows()` and `row[col]`."""

    def __init__(self, header, records):
        self.columns = header
        self._records = [dict(zip(header, r)) for r in records]

    def iterrows(self):
        return enumerate(self._records)


def read_tsv(path):
    try:
        import pandas as pd  # noqa: F401  (upstream's reader, when available)

        df = pd.read_csv(path, sep='\t')
        return df, "pandas " + pd.__version__
    except ImportError:
        pass
    with open(path, encoding="utf-8", newline="") as f:
        lines = [r for r in csv.reader(f, delimiter="\t", quotechar='"') if r]
    header, body = lines[0], lines[1:]
    for i, r in enumerate(body):
        if len(r) != len(header):
            sys.exit(f"row {i + 1}: {len(r)} fields, header has {len(header)}")
    nan = float("nan")
    records = [[nan if c in PANDAS_NA else c for c in r] for r in body]
    return _Frame(header, records), "csv module (pandas read_csv defaults emulated)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("responses", help="upstream evaluation/responses/cti-taa-responses.tsv")
    ap.add_argument("--data", default=DEFAULT_DATA, help="dir with taa-{alias,related}-dict.json")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    raw = open(args.responses, "rb").read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != RESPONSES_SHA256:
        print(f"warning: {args.responses} sha256 {digest} differs from the file the committed "
              f"fixture was built from ({RESPONSES_SHA256})", file=sys.stderr)

    # evaluation.ipynb cells 11-12 unpickle these; the JSON files are their conversions.
    with open(os.path.join(args.data, "taa-alias-dict.json"), encoding="utf-8") as f:
        alias_dict = json.load(f)
    with open(os.path.join(args.data, "taa-related-dict.json"), encoding="utf-8") as f:
        related_dict = json.load(f)

    df, reader = read_tsv(args.responses)
    models = [c for c in df.columns if c != "GT"]
    gold = [row["GT"] for _, row in df.iterrows()]
    for i, g in enumerate(gold):
        if isinstance(g, float) and math.isnan(g):
            sys.exit(f"row {i + 1}: GT is NaN (upstream's .lower() would raise)")

    names = {"C": "correct", "P": "plausible", "I": "incorrect"}
    out_models = []
    for col in models:
        for i, (_, row) in enumerate(df.iterrows()):
            if isinstance(row[col], float):
                sys.exit(f"{col} row {i + 1}: NaN cell (upstream's .lower() would raise)")
        acc, plaus, correct, plausible, total, rows = compute_taa_accuracy(
            df, col, alias_dict, related_dict
        )
        if col == "ChatGPT-4" and (acc, plaus) != NOTEBOOK_CHATGPT4:
            sys.exit(f"ChatGPT-4 scores {(acc, plaus)}, the notebook printed {NOTEBOOK_CHATGPT4}")
        print(f"{col:12s} correct {correct:2d}  correct+plausible {correct + plausible:2d}  "
              f"of {total}  ({acc:.1f}%, {plaus:.1f}%)")
        out_models.append({
            "model": col,
            "rows": [{"prediction": p, "verdict": names[v]} for p, v in rows],
            "correct": correct,
            "plausible": plausible,
            "correct_plus_plausible": correct + plausible,
            "total": total,
            "correct_pct": acc,
            "correct_plus_plausible_pct": plaus,
        })

    fixture = {
        "provenance": {
            "repo": REPO,
            "commit": COMMIT,
            "notebook": NOTEBOOK,
            "notebook_cells": {
                "6c9cb7cf-4763-4ce3-bdc3-4ff49192096b": "threat_actor_connection, "
                "is_alias_connected, is_related_connected",
                "367653f4-175d-4dae-b6d3-21feed5b5af8": "compute_taa_accuracy",
                "7627fbc7-a657-4a31-9faa-6eaca901bb82": "ChatGPT-4 output (52.0, 86.0)",
            },
            "responses": RESPONSES,
            "responses_sha256": digest,
            "dictionaries": ["evaluation/alias_dict.pickle -> ctibench/taa-alias-dict.json",
                             "evaluation/related_dict.pickle -> ctibench/taa-related-dict.json"],
            "license": "CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/); "
                       "Alam et al., CTIBench, NeurIPS 2024 Datasets & Benchmarks, "
                       "arXiv:2406.07599. This fixture is derived from the responses file "
                       "(gold and predictions verbatim) and shares its licence.",
            "generator": "tools/reference/ctibench_taa.py",
            "reader": reader,
            "note": "predictions are the model columns verbatim (already extracted upstream; "
                    "'X' = no answer); verdicts are CTIBench's threat_actor_connection(GT, "
                    "prediction): C/P/I as correct/plausible/incorrect",
        },
        "gold": gold,
        "models": out_models,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
