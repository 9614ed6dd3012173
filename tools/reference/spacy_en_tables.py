#!/usr/bin/env python3
"""Generate the spaCy English tokenizer tables for Metis's Rust tokenizer.

HarmBench's copyright judge (`eval_utils.py` at centerforaisafety/HarmBench@8e1604d1)
tokenises generations with spaCy's `en_core_web_sm`, whose tokenizer rules are those of
`spacy.blank("en")`. The Rust reimplementation (crates/metis-verify/src/copyright/tokenizer.rs)
hand-writes the algorithm of `spacy/tokenizer.pyx` and the *shape* of each affix rule
(`spacy/lang/punctuation.py`, `spacy/lang/en/punctuation.py`); this script exports the data
those rules are made of, straight from the installed spaCy, so nothing is transcribed by hand:

* the literal alternatives of the prefix, suffix and infix rules, in spaCy's order;
* the code-point sets of the character classes the rules use (ALPHA, ALPHA_LOWER, ALPHA_UPPER,
  the icon class, the quote class, the class before a sentence-final '.'), computed by
  running Python's `re` on every code point, so Python's reading of spaCy's class strings
  (including its quirks: '|' and '(?:)' taken literally inside `[...]`) is what Rust gets;
* the 1,347 special cases (tokenizer exceptions) with their ORTH pieces.

It first rebuilds spaCy's prefix/suffix/infix regexes from the named parts it exports and
asserts they equal the ones `spacy.blank("en")` compiled, so the Rust rule shapes and these
parts are exactly spaCy's; a spaCy release that changes them makes this script fail.

Setup (throwaway venv; nothing is committed but the generated Rust file):
    python3 -m venv /tmp/hb-venv && /tmp/hb-venv/bin/pip install spacy==3.8.18
Usage:
    /tmp/hb-venv/bin/python tools/reference/spacy_en_tables.py
writes crates/metis-verify/src/copyright/spacy_en.rs (then run `cargo fmt`).
"""
import os
import re
import sys

import spacy
from spacy.lang import char_classes as cc
from spacy.lang.en.punctuation import TOKENIZER_INFIXES
from spacy.lang.punctuation import TOKENIZER_PREFIXES, TOKENIZER_SUFFIXES
from spacy.symbols import ORTH
from spacy.util import compile_infix_regex, compile_prefix_regex, compile_suffix_regex

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates/metis-verify/src/copyright/spacy_en.rs")

# The non-literal rules, by their exact spaCy source text; Rust implements each by name.
ICON = cc.LIST_ICONS[0]
DOTS = r"\.\.+"
PREFIX_NAMED = {r"\+(?![0-9])": "PlusNotBeforeDigit", DOTS: "Dots", ICON: "Icon"}
SUFFIX_DOT_CLASS = r"[0-9{al}{e}{p}(?:{q})]".format(
    al=cc.ALPHA_LOWER, e=r"%²\-\+", q=cc.CONCAT_QUOTES, p=cc.PUNCT
)
SUFFIX_NAMED = {
    DOTS: "Dots",
    ICON: "Icon",
    r"(?<=[0-9])\+": "AfterDigit(&[\"+\"])",
    r"(?<=°[FfCcKk])\.": "DegreeDot",
    r"(?<=[0-9])(?:{c})".format(c=cc.CURRENCY): "AfterDigit(CURRENCY)",
    r"(?<=[0-9])(?:{u})".format(u=cc.UNITS): "AfterDigit(UNITS)",
    r"(?<={c})\.".format(c=SUFFIX_DOT_CLASS): "DotAfterClass",
    r"(?<=[{au}][{au}])\.".format(au=cc.ALPHA_UPPER): "DotAfterTwoUpper",
}
INFIX_NAMED = {
    DOTS: "Dots",
    ICON: "Icon",
    r"(?<=[0-9])[+\-\*^](?=[0-9-])": "DigitOperator",
    r"(?<=[{al}{q}])\.(?=[{au}{q}])".format(
        al=cc.ALPHA_LOWER, au=cc.ALPHA_UPPER, q=cc.CONCAT_QUOTES
    ): "CaseDot",
    r"(?<=[{a}]),(?=[{a}])".format(a=cc.ALPHA): "AlphaComma",
    r"(?<=[{a}0-9])(?:{h})(?=[{a}])".format(a=cc.ALPHA, h=cc.HYPHENS): "Hyphen",
    r"(?<=[{a}0-9])[:<>=/](?=[{a}])".format(a=cc.ALPHA): "AlphaSymbol",
}
CLASSES = {
    "ALPHA": "[" + cc.ALPHA + "]",
    "ALPHA_LOWER": "[" + cc.ALPHA_LOWER + "]",
    "ALPHA_UPPER": "[" + cc.ALPHA_UPPER + "]",
    "ICONS": ICON,
    "QUOTES": "[" + cc.CONCAT_QUOTES + "]",
    "BEFORE_FINAL_DOT": SUFFIX_DOT_CLASS,
}
LITERAL = re.compile(r"^(?:\\.|[^\\.^$*+?{}\[\]|()])+$")


def unescape(piece):
    return re.sub(r"\\(.)", r"\1", piece)


def rules(entries, named):
    out = []
    for piece in entries:
        if not piece.strip():
            continue
        if piece in named:
            out.append(named[piece])
        elif LITERAL.match(piece):
            out.append("Lit(%s)" % rust_str(unescape(piece)))
        else:
            sys.exit(f"unknown spaCy rule {piece[:80]!r}: update tokenizer.rs and this script")
    return out


def rust_str(s):
    out = []
    for ch in s:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable() and ch != "\u00a0":
            out.append(ch)
        else:
            out.append("\\u{%x}" % ord(ch))
    return '"' + "".join(out) + '"'


def ranges(class_regex):
    pattern = re.compile(class_regex)
    members = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF and pattern.fullmatch(chr(cp))]
    out = []
    for cp in members:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def check_against_spacy(tokenizer):
    assert tokenizer.prefix_search.__self__.pattern == compile_prefix_regex(TOKENIZER_PREFIXES).pattern
    assert tokenizer.suffix_search.__self__.pattern == compile_suffix_regex(TOKENIZER_SUFFIXES).pattern
    assert tokenizer.infix_finditer.__self__.pattern == compile_infix_regex(TOKENIZER_INFIXES).pattern
    assert tokenizer.token_match is None
    assert tokenizer.faster_heuristics


def main():
    tokenizer = spacy.blank("en").tokenizer
    check_against_spacy(tokenizer)
    lists = {
        "CURRENCY": cc.CURRENCY.split("|"),
        "UNITS": cc.UNITS.split("|"),
        "HYPHENS": cc.HYPHENS.split("|"),
    }
    lines = [
        "//! spaCy English tokenizer data, GENERATED by `tools/reference/spacy_en_tables.py` from",
        f"//! spaCy {spacy.__version__} (MIT; `spacy/lang/char_classes.py`, `spacy/lang/punctuation.py`,",
        "//! `spacy/lang/en/punctuation.py`, `spacy/lang/{,en/}tokenizer_exceptions.py`). Do not edit.",
        "//! The rule shapes named here are implemented in `tokenizer.rs`.",
        "",
        "use super::tokenizer::{Infix, Prefix, Suffix};",
        "",
    ]
    for name, items in lists.items():
        lines.append(f"pub(super) const {name}: &[&str] = &[{', '.join(rust_str(unescape(x)) for x in items)}];")
    for kind, entries, named in [
        ("Prefix", TOKENIZER_PREFIXES, PREFIX_NAMED),
        ("Suffix", TOKENIZER_SUFFIXES, SUFFIX_NAMED),
        ("Infix", TOKENIZER_INFIXES, INFIX_NAMED),
    ]:
        body = ", ".join(f"{kind}::{r}" for r in rules(entries, named))
        lines.append(f"pub(super) const {kind.upper()}ES: &[{kind}] = &[{body}];")
    for name, regex in CLASSES.items():
        body = ", ".join("('\\u{%x}', '\\u{%x}')" % (a, b) for a, b in ranges(regex))
        lines.append(f"pub(super) const {name}: &[(char, char)] = &[{body}];")
    specials = []
    for orth, pieces in sorted(tokenizer.rules.items()):
        texts = [p[ORTH] for p in pieces]
        assert "".join(texts) == orth
        specials.append(f"({rust_str(orth)}, &[{', '.join(rust_str(t) for t in texts)}])")
    lines.append(f"pub(super) const SPECIAL_CASES: &[(&str, &[&str])] = &[{', '.join(specials)}];")
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {OUT}: {len(specials)} special cases")


if __name__ == "__main__":
    main()
