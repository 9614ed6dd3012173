#!/usr/bin/env python3
"""Parity reference for Metis's Rust math equivalence (crates/metis-verify/src/math/).

Builds a deterministic set of (gold, answer) pairs and records Hugging Face math-verify's
verdict `verify(parse("$" + gold + "$"), parse(answer))` for each, where `answer` is a
full model answer part (sentences with a \\boxed{}, "The final answer is ...", "The answer is
...", "#### ..."), as a reasoning model writes it. The Rust side compares
`equivalent(gold, extract_final_answer(answer).answer)`.

Setup (pinned; run in a throwaway venv, nothing is committed):
    python3 -m venv /tmp/mv-venv
    /tmp/mv-venv/bin/pip install math-verify==0.8.0 latex2sympy2_extended==1.10.2 \
        antlr4-python3-runtime==4.13.2        # pulls sympy 1.14.0, mpmath 1.3.0

Usage:
    /tmp/mv-venv/bin/python tools/reference/math_parity.py            # write the fixture
    /tmp/mv-venv/bin/python tools/reference/math_parity.py --time N   # time N pairs from it

Pairs: every GSM8K test gold (shared/data/gsm8k/test.jsonl, 1,319) in 8 spellings (4 equal,
4 not), plus hand-written MATH-style answers (fractions, radicals, pi, powers, tuples,
intervals, sets, expressions, x=, units, text, degrees, percent) each in equal and unequal
spellings. Output: crates/metis-verify/tests/fixtures/math_reference.jsonl.gz, one JSON
object per line: {"gold", "answer", "expected": bool, "mv": bool, "group"}; "expected" is
the intent of the spelling, "mv" math-verify's verdict (the reference).
"""
import argparse
import gzip
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GSM8K = os.environ.get(
    "GSM8K_TEST", os.path.join(ROOT, "..", "shared", "data", "gsm8k", "test.jsonl")
)
FIXTURE = os.path.join(ROOT, "crates/metis-verify/tests/fixtures/math_reference.jsonl.gz")

PREAMBLES = [
    "Let me work through this step by step. First we compute 3 + 4 = 7, then 7 * 2 = 14.\n",
    "We have two cases to consider.\nIn the first, the total is 12; in the second, 15.\n",
    "",
]


def fmt_thousands(n: int) -> str:
    return f"{n:,}"


def gsm8k_pairs(rng):
    pairs = []
    with open(GSM8K) as f:
        for line in f:
            gold = json.loads(line)["answer"].split("####")[-1].strip()
            g = int(gold.replace(",", ""))
            pre = rng.choice(PREAMBLES)
            t = fmt_thousands(g)
            eq = [
                f"{pre}So the total is \\boxed{{{g}}}.",
                f"{pre}Therefore the answer is $\\boxed{{{t}}}$." if abs(g) >= 1000 else f"{pre}Therefore, \\boxed{{{g}.00}}",
                f"{pre}Final Answer: The final answer is $\\${t}$. I hope it is correct.",
                f"{pre}#### {g}",
            ]
            ne = [
                f"{pre}So the total is \\boxed{{{g + 1}}}.",
                f"{pre}The answer is {g * 10 + 3}.",
                f"{pre}Thus the answer is \\boxed{{{g}\\%}}." if g != 0 else f"{pre}\\boxed{{7}}",
                f"{pre}\\boxed{{\\frac{{{g}}}{{7}}}}" if g != 0 else f"{pre}\\boxed{{\\frac{{1}}{{7}}}}",
            ]
            for a in eq:
                pairs.append({"gold": gold, "answer": a, "expected": True, "group": "gsm8k"})
            for a in ne:
                pairs.append({"gold": gold, "answer": a, "expected": False, "group": "gsm8k"})
    return pairs


# (gold, [equal spellings], [unequal spellings]); spellings go into \boxed{} unless they
# already hold an anchor sentence.
MATH = [
    ("\\frac{1}{2}", ["0.5", "\\dfrac{1}{2}", "1/2", "\\tfrac12", "\\frac{2}{4}", "50\\%"], ["\\frac{1}{3}", "2", "0.51", "-\\frac12"]),
    ("\\frac{3}{4}", ["0.75", "\\frac{6}{8}", "3/4", "75\\%"], ["\\frac{4}{3}", "0.7", "34"]),
    ("-\\frac{2}{3}", ["\\frac{-2}{3}", "-2/3", "\\frac{2}{-3}", "-\\dfrac{2}{3}"], ["\\frac{2}{3}", "-0.67", "-\\frac{3}{2}"]),
    ("\\frac{1}{3}", ["0.333333", "\\frac{3}{9}"], ["0.33", "0.3333", "3"]),
    ("\\frac{7}{2}", ["3.5", "3\\frac{1}{2}"[0:0] + "\\frac{14}{4}", "7/2"], ["\\frac{2}{7}", "3.51"]),
    ("12", ["12.0", "12.00", "\\$12", "12 \\text{ dollars}", "12\\text{ cm}", "x = 12", "\\text{12}", "12 cm", "+12"], ["-12", "13", "120", "1.2"]),
    ("1000000", ["1,000,000", "10^6", "10^{6}", "1000000.0"], ["100000", "10^7"]),
    ("-7", ["-7.0", "- 7", "(-7)", "-\\frac{14}{2}"], ["7", "-\\frac{7}{2}"]),
    ("0", ["0.0", "-0", "\\frac{0}{5}"], ["1", "0.001"]),
    ("\\sqrt{2}", ["\\sqrt2", "2^{1/2}", "\\frac{2}{\\sqrt{2}}", "1.414214"], ["2", "\\sqrt{3}", "1.41"]),
    ("2\\sqrt{3}", ["\\sqrt{12}", "2 \\sqrt 3", "\\sqrt{3}\\cdot 2", "\\frac{6}{\\sqrt3}"], ["3\\sqrt{2}", "\\sqrt{6}", "2+\\sqrt3"]),
    ("\\frac{\\sqrt{3}}{2}", ["\\sqrt3/2", "\\frac{1}{2}\\sqrt{3}", "\\frac{3}{2\\sqrt{3}}", "\\dfrac{\\sqrt{3}}{2}"], ["\\frac{\\sqrt{2}}{2}", "\\frac{3}{2}", "\\sqrt{\\frac{3}{2}}"]),
    ("5\\sqrt{2}", ["\\sqrt{50}", "5 \\sqrt{2}"], ["\\sqrt{10}", "10"]),
    ("\\pi", ["3.14159265", "\\frac{2\\pi}{2}"], ["3.14", "\\frac{\\pi}{2}", "2\\pi"]),
    ("2\\pi", ["\\pi \\cdot 2", "6.283185", "\\frac{4\\pi}{2}", "2 \\pi"], ["\\pi", "4\\pi", "6.28"]),
    ("\\frac{\\pi}{4}", ["0.25\\pi", "\\frac{1}{4}\\pi", "\\pi/4"], ["\\frac{\\pi}{2}", "45"]),
    ("4\\pi - 2", ["-2 + 4\\pi", "2(2\\pi - 1)"], ["4\\pi + 2", "2 - 4\\pi"]),
    ("2^{10}", ["1024", "4^5", "2^{5} \\cdot 2^5"], ["1000", "2^{11}", "20"]),
    ("3^4", ["81", "9^2"], ["12", "64"]),
    ("e^2", ["e \\cdot e", "e^{2}"], ["2e", "e^3"]),
    ("\\ln 2", ["\\log 2", "\\ln(2)"], ["\\ln 3", "2"]),
    ("(1, 2)", ["(1,2)", "\\left(1, 2\\right)"], ["(2, 1)", "[1, 2]", "(1, 3)"]),
    ("(3, -1)", ["(3,-1)", "\\left( 3, -1 \\right)"], ["(-1, 3)", "(3, 1)"]),
    ("(1, 2, 3)", ["(1,2,3)", "\\left(1,2,3\\right)"], ["(3,2,1)", "(1,2)"]),
    ("(0, \\frac{1}{2})", ["(0, 0.5)", "\\left(0,\\frac12\\right)"], ["(\\frac12, 0)", "(0, 2)"]),
    ("[2, 5)", ["[2,5)", "\\left[2, 5\\right)"], ["(2, 5]", "[2, 5]", "(2,5)"]),
    ("(-\\infty, 3]", ["(-\\infty,3]", "\\left(-\\infty, 3\\right]"], ["(-\\infty, 3)", "[3, \\infty)"]),
    ("[0, 1]", ["[0,1]", "\\left[0, 1\\right]"], ["(0, 1)", "[0, 2]"]),
    ("(-2, \\infty)", ["(-2,\\infty)"], ["[-2, \\infty)", "(2, \\infty)"]),
    ("\\{1, 2, 3\\}", ["\\{3, 2, 1\\}", "1, 2, 3", "3,1,2", "\\{1,2,3\\}"], ["\\{1, 2\\}", "\\{1, 2, 4\\}"]),
    ("1, -3", ["-3, 1", "1,-3", "-3 \\text{ and } 1", "\\{-3, 1\\}"], ["1, 3", "-1, 3", "1"]),
    ("2, 5", ["5, 2", "2 \\text{ and } 5"], ["2", "5", "2, 6"]),
    ("2x + 1", ["1 + 2x", "x + x + 1", "2 x+1", "\\frac{4x+2}{2}"], ["2x - 1", "x + 1", "2x"]),
    ("x^2 + 2x + 1", ["(x+1)^2", "x^2+1+2x", "(x + 1)(x + 1)"], ["(x-1)^2", "x^2 + 1"]),
    ("x^2 - 9", ["(x-3)(x+3)", "-9 + x^2"], ["(x-3)^2", "x^2 + 9"]),
    ("3a + 2b", ["2b + 3a", "a + 2a + 2b"], ["3a + 3b", "2a + 3b"]),
    ("\\frac{x}{2}", ["0.5x", "x/2", "\\frac{1}{2}x"], ["2x", "\\frac{2}{x}"]),
    ("\\frac{x+1}{x-1}", ["\\frac{1+x}{x-1}", "\\frac{-x-1}{1-x}"], ["\\frac{x-1}{x+1}", "x+1"]),
    ("\\sqrt{x}", ["x^{1/2}", "x^{\\frac{1}{2}}"], ["x^2", "\\sqrt{2x}"]),
    ("6xy", ["6yx", "2x \\cdot 3y", "6 x y"], ["6x", "5xy"]),
    ("x = 5", ["5", "x=5", "x = \\frac{10}{2}"], ["6", "x = 6"]),
    ("y = 2x + 3", ["2x + 3", "y = 3 + 2x"], ["2x - 3", "y = 3x + 2"]),
    ("k = -4", ["-4", "k=-4"], ["4", "k = 4"]),
    ("30^\\circ", ["30", "30^{\\circ}", "30 degrees"], ["60", "\\frac{\\pi}{6}"]),
    ("45", ["45^\\circ", "45^{\\circ}", "45 \\text{ degrees}"], ["135", "\\frac{\\pi}{4}"]),
    ("90", ["90^\\circ", "90^{\\circ}"], ["180", "\\frac{\\pi}{2}"]),
    ("25\\%", ["0.25", "\\frac{1}{4}", "25 \\%"], ["25", "0.025"]),
    ("40", ["40\\text{ meters}", "40 \\text{ m}", "40 \\text{ km}", "40 \\mbox{ inches}", "40\\text{ units}"], ["4", "400 \\text{ m}"]),
    ("18", ["18 \\text{ square units}", "18\\text{ sq units}", "18 \\text{ cm}^2"], ["81", "180 \\text{ cm}^2"]),
    ("\\text{yes}", ["yes", "Yes", "\\text{Yes}"], ["no", "\\text{no}"]),
    ("\\text{(B)}", ["(B)", "B", "\\text{B}"], ["(C)", "A"]),
    ("\\text{even}", ["even", "\\text{even}"], ["odd", "\\text{odd}"]),
    ("3", ["3.0", "\\frac{9}{3}", "\\sqrt{9}", "|-3|", "3!/2"], ["-3", "\\sqrt{3}", "4"]),
    ("120", ["5!", "\\binom{10}{3}", "2 \\cdot 60"], ["24", "\\binom{10}{2}"]),
    ("\\frac{9}{4}", ["2.25", "\\left(\\frac{3}{2}\\right)^2", "2\\frac{1}{4}"[0:0] + "\\frac{18}{8}"], ["\\frac{4}{9}", "2.2"]),
    ("\\frac{1}{1000}", ["0.001", "10^{-3}"], ["0.01", "1000"]),
    ("2.5", ["\\frac52", "\\frac{5}{2}", "2.50", "5/2"], ["2.05", "25"]),
    ("0.125", ["\\frac{1}{8}", "1/8", "12.5\\%"], ["0.12", "\\frac{1}{6}"]),
    ("-1", ["-1.0", "\\cos \\pi", "i^2"[0:0] + "-\\frac{3}{3}"], ["1", "0"]),
    ("\\frac{1}{2}", ["\\sin 30^\\circ"[0:0] + "\\sin(\\frac{\\pi}{6})", "\\cos \\frac{\\pi}{3}"], ["\\sin \\frac{\\pi}{3}"]),
    ("8", ["2^3", "\\sqrt[3]{512}", "\\log_2 256"], ["9", "\\sqrt[3]{8}"]),
    ("\\infty", ["\\infty"], ["-\\infty", "1000000"]),
    ("\\frac{5}{3}", ["1.666667", "\\frac{10}{6}"], ["1.67", "1.6667", "\\frac{3}{5}"]),
]

SENTENCES = [
    "Therefore the answer is $\\boxed{{{}}}$.",
    "So we get \\boxed{{{}}}",
    "Final Answer: The final answer is ${}$. I hope it is correct.",
]


def math_pairs(rng):
    pairs = []
    for gold, eqs, nes in MATH:
        for expected, spellings in ((True, eqs), (False, nes)):
            for a in spellings:
                for tmpl in SENTENCES:
                    text = rng.choice(PREAMBLES) + tmpl.format(a)
                    pairs.append({"gold": gold, "answer": text, "expected": expected, "group": "math"})
    return pairs


def build():
    rng = random.Random(20250611)
    return gsm8k_pairs(rng) + math_pairs(rng)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=int, default=0, help="time N pairs from the existing fixture")
    args = ap.parse_args()
    from math_verify import parse, verify

    if args.time:
        with gzip.open(FIXTURE, "rt") as f:
            rows = [json.loads(l) for l in f]
        rows = (rows * (args.time // len(rows) + 1))[: args.time]
        t0 = time.perf_counter()
        for r in rows:
            verify(parse("$" + r["gold"] + "$"), parse(r["answer"]))
        dt = time.perf_counter() - t0
        print(f"python math-verify: {len(rows)} pairs in {dt:.2f} s = {len(rows) / dt:.1f} pairs/s")
        return
    rows = build()
    agree = 0
    for r in rows:
        r["mv"] = bool(verify(parse("$" + r["gold"] + "$"), parse(r["answer"])))
        agree += r["mv"] == r["expected"]
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with gzip.GzipFile(FIXTURE, "wb", mtime=0) as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode())
    print(f"{len(rows)} pairs written to {FIXTURE}; math-verify agrees with the intended label on {agree}", file=sys.stderr)
    for r in rows:
        if r["mv"] != r["expected"]:
            print("MV != intent:", json.dumps(r, ensure_ascii=False), file=sys.stderr)


if __name__ == "__main__":
    main()
