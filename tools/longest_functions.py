#!/usr/bin/env python3
"""The longest Rust functions of the workspace, by line count.

Scans `crates/**/*.rs` (tests, examples and benches included, as they are code a reader
reads too) for `fn` items and measures each from the line of its `fn` keyword to the line
of the brace that closes its body. The scan is lexical, not a parser: it blanks out
comments, string literals (plain, byte and raw), and character literals first, so braces
inside them are not counted, then matches braces. A `fn` without a body (a trait method
declaration, an extern fn) ends at its `;` and is skipped. Nested functions and closures
count towards their enclosing function as well as (for nested `fn`s) on their own.

    python3 tools/longest_functions.py [-n 10] [ROOT]

prints `lines  path:line  name`, longest first.
"""

import argparse
import os
import re
import sys

FN_RE = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def blank(text):
    """`text` with comments, strings and char literals replaced by spaces (newlines kept),
    so that offsets and line numbers stay those of the original."""
    out = list(text)
    i, n = 0, len(text)

    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            wipe(i, j)
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            wipe(i, j)
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            wipe(i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}', '{') or a lifetime ('a): only the former
            # closes with a quote within a few characters.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                wipe(i, i + m.end())
                i += m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def functions(path):
    """(name, first line, line count) of every `fn` with a body in `path`."""
    with open(path, encoding="utf-8") as f:
        text = blank(f.read())
    line_starts = [0]
    for k, ch in enumerate(text):
        if ch == "\n":
            line_starts.append(k + 1)

    def line_of(offset):
        lo, hi = 0, len(line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    for m in FN_RE.finditer(text):
        # The body opens at the first `{` outside the signature's parentheses/brackets; a
        # `;` first means no body. Generic/where-clause braces do not occur before the body.
        depth, j = 0, m.end()
        while j < len(text):
            ch = text[j]
            if ch in "([<":
                depth += 1
            elif ch in ")]>":
                # `->` is not a closing angle bracket.
                if not (ch == ">" and text[j - 1] == "-"):
                    depth -= 1
            elif ch == ";" and depth <= 0:
                j = -1
                break
            elif ch == "{" and depth <= 0:
                break
            j += 1
        if j < 0 or j >= len(text):
            continue
        braces, k = 0, j
        while k < len(text):
            if text[k] == "{":
                braces += 1
            elif text[k] == "}":
                braces -= 1
                if braces == 0:
                    break
            k += 1
        start, end = line_of(m.start()), line_of(k)
        yield m.group(1), start, end - start + 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10, help="how many to print (default 10)")
    ap.add_argument("root", nargs="?", default=".", help="workspace root (default .)")
    args = ap.parse_args()
    crates = os.path.join(args.root, "crates")
    if not os.path.isdir(crates):
        sys.exit(f"{crates}: not a directory (run from the workspace root or pass it)")
    found = []
    for dirpath, dirnames, filenames in os.walk(crates):
        dirnames[:] = sorted(d for d in dirnames if d != "target")
        for name in sorted(filenames):
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, args.root)
                found.extend((lines, rel, line, fn) for fn, line, lines in functions(path))
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    for lines, rel, line, fn in found[: args.n]:
        print(f"{lines:5}  {rel}:{line}  {fn}")


if __name__ == "__main__":
    main()
