//! Answer-string normalisation before parsing, modelled on latex2sympy2_extended 1.10.2's
//! `normalize_latex` as math-verify 0.8.0 calls it for LaTeX (boxed contents, basic LaTeX
//! clean-up, its unit list, `and`/`or` as separators, percent words), plus the number
//! conventions math-verify's parser applies (`1,000` and `1{,}000` are thousands groups).

use std::sync::LazyLock;

use regex::Regex;

/// math-verify's unit words (latex2sympy2_extended `math_normalization.units`), used as the
/// regex alternatives they are upstream (so `.` is any character). The first entry keeps
/// upstream's missing comma (`"integer" "point"` concatenates).
const UNITS: &[&str] = &[
    "integerpoint",
    "feet",
    "sue",
    "digit",
    "pound",
    "meal",
    "edge",
    "student",
    "children ticket",
    "multiple",
    "east",
    "degree",
    "mph",
    "kmph",
    "ft",
    "m square",
    " m east",
    "sq m",
    "deg",
    "mile",
    "q .",
    "monkey",
    "prime",
    "ratio",
    "profit of rs",
    "rd",
    "o",
    "gm",
    "p . m",
    "lb",
    "tile",
    "per",
    "dm",
    "lt",
    "gain",
    "ab",
    "way",
    "west",
    "a .",
    "b .",
    "c .",
    "d .",
    "e .",
    "f .",
    "g .",
    "h .",
    "t",
    "h",
    "no change",
    "men",
    "soldier",
    "pie",
    "bc",
    "excess",
    "st",
    "inches",
    "noon",
    "cent",
    "by",
    "gal",
    "kmh",
    "c",
    "acre",
    "rise",
    "a . m",
    "th",
    "π r 2",
    "sq",
    "mark",
    "l",
    "toy",
    "coin",
    "sq . m",
    "gallon",
    "° f",
    "profit",
    "minw",
    "yr",
    "women",
    "am",
    "pm",
    "hr",
    "cu cm",
    "square",
    "v â € ™",
    "are",
    "rupee",
    "rounds",
    "cubic",
    "cc",
    "mtr",
    "s",
    "ohm",
    "number",
    "kmph",
    "day",
    "hour",
    "minute",
    "min",
    "second",
    "man",
    "woman",
    "sec",
    "cube",
    "mt",
    "sq inch",
    "mp",
    "∏ cm ³",
    "hectare",
    "more",
    "sec",
    "unit",
    "cu . m",
    "cm 2",
    "rs .",
    "rs",
    "kg",
    "g",
    "month",
    "km",
    "m",
    "cm",
    "mm",
    "apple",
    "liter",
    "loss",
    "yard",
    "pure",
    "year",
    "increase",
    "decrease",
    "d",
    "less",
    "Surface",
    "litre",
    "pi sq m",
    "s .",
    "metre",
    "meter",
    "inch",
];

static UNITS_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(\d|\}}|\s)\s*(?:(?:{})(?:s|es)?)\s*$",
        UNITS.join("|")
    ))
    .expect("static regex")
});
static UNIT_TEXT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\\(?:text|mbox)\{.*?\})(\^\d|\{\^\d\})?$").expect("static regex")
});
static LEFT_RIGHT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\(?:left|right|big|Big|bigg|Bigg)(\\\{|\\\}|\{|\}|\\\||\||\[|\]|\(|\)|\\langle|\\rangle|\\lfloor|\\rfloor|\\lceil|\\rceil|\.)").expect("static regex")
});
static TEXT_CMD_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\(?:mathrm|mathit|mathbf|textbf|textit|textrm|textnormal|mbox|operatorname)\b")
        .expect("static regex")
});
static AND_OR_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:,?\s*\\text\{\s*(?:and|or)\s*\})|(?:(^|[^a-zA-Z]),?\s*(?:and|or)([^a-zA-Z]|$))")
        .expect("static regex")
});
static PERCENT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\text\{(?:percentage|percent|pct)\}|\s*(?:percentage|percent|pct)")
        .expect("static regex")
});
/// math-verify's malformed-operator fixes: `\frac12`, `\frac1{2}`, `\frac{1}2`, `\sqrt2`.
static MALFORMED: LazyLock<[(Regex, &'static str); 4]> = LazyLock::new(|| {
    [
        (
            Regex::new(r"\\frac\s?(\d)\s?(\d+)").expect("static regex"),
            r"\frac{${1}}{${2}}",
        ),
        (
            Regex::new(r"\\frac\s?\{([^{}]*)\}\s?(\d)").expect("static regex"),
            r"\frac{${1}}{${2}}",
        ),
        (
            Regex::new(r"\\frac\s?(\d)\s?\{").expect("static regex"),
            r"\frac{${1}}{",
        ),
        (
            Regex::new(r"\\sqrt\s?(\d)").expect("static regex"),
            r"\sqrt{${1}}",
        ),
    ]
});
static TEXT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\\text\s*\{([^{}]*)\}").expect("static regex"));

/// The contents of every `\boxed{…}`/`\fbox{…}`, joined by `,` (math-verify's
/// `boxed="all"`); the text itself when there is none.
pub fn boxed_contents(text: &str) -> String {
    let mut results: Vec<&str> = Vec::new();
    let mut end = text.len();
    loop {
        let b = text[..end].rfind("\\boxed");
        let f = text[..end].rfind("\\fbox");
        let (start, cmd_len) = match (b, f) {
            (None, None) => break,
            (Some(b), Some(f)) if f > b => (f, 5),
            (Some(b), _) => (b, 6),
            (None, Some(f)) => (f, 5),
        };
        let rest = &text[start + cmd_len..end];
        let trimmed = rest.trim_start();
        let open = start + cmd_len + (rest.len() - trimmed.len());
        if !trimmed.starts_with('{') {
            if results.is_empty() {
                results.push(trimmed);
            }
            break;
        }
        match matching_brace(&text[..end], open) {
            Some(close) => results.push(text[open + 1..close].trim()),
            None => {
                if results.is_empty() {
                    results.push(&text[open..end]);
                }
                break;
            }
        }
        end = start;
    }
    if results.is_empty() {
        return text.to_string();
    }
    results.reverse();
    results.join(",")
}

/// Byte index of the `}` closing the `{` at `open`.
pub fn matching_brace(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Removes thousands separators: a comma between a 1–3 digit group and a 3-digit group that
/// is not followed by another digit, when the number is not part of a decimal.
fn strip_thousands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b',' && i > 0 && b[i - 1].is_ascii_digit() {
            let digits_after = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            let mut j = i;
            while j > 0 && b[j - 1].is_ascii_digit() {
                j -= 1;
            }
            let lead = i - j;
            let lead_ok = lead <= 3 && !(j > 0 && b[j - 1] == b'.');
            // Already-joined groups before this comma were part of the same number.
            let prev_group = j > 0 && b[j - 1] == b',' || lead <= 3;
            if digits_after == 3 && lead_ok && prev_group && b.get(i + 4) != Some(&b'.') {
                i += 1;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
        // Non-ASCII bytes: copy the whole character.
        if !b[i - 1].is_ascii() {
            out.pop();
            let start = i - 1;
            let ch = s[start..].chars().next().unwrap_or(' ');
            out.push(ch);
            i = start + ch.len_utf8();
        }
    }
    out
}

/// Normalises one answer string for parsing.
pub fn normalize_answer(text: &str) -> String {
    let mut s = boxed_contents(text.trim());
    s = s.replace("\\mathrm{T}", "T").replace("\\mathrm{d}", "d");
    s = LEFT_RIGHT_RE.replace_all(&s, "${1}").into_owned();
    s = s.replace("\\left", "").replace("\\right", "");
    s = s.replace("\\mathrm{th}", "");
    for pat in [
        "\\!",
        "\\displaystyle",
        "\\$",
        "$",
        "\"",
        "\\(",
        "\\)",
        "\\[",
        "\\]",
    ] {
        s = s.replace(pat, "");
    }
    s = TEXT_CMD_RE.replace_all(&s, "\\text").into_owned();
    for (from, to) in [
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\cfrac", "\\frac"),
    ] {
        s = s.replace(from, to);
    }
    s = s.replace("{,}", ",");
    // Degrees are dropped (math-verify reads 30^\circ as 30).
    for pat in ["^{\\circ}", "^\\circ", "\\circ", "°", "\\degree"] {
        s = s.replace(pat, "");
    }
    s = PERCENT_RE.replace_all(&s, "\\%").into_owned();
    s = AND_OR_RE.replace_all(&s, "${1},${2}").into_owned();
    s = s.replace("infinity", "\\infty");
    s = s
        .replace("\\ldots", " ")
        .replace("\\dots", " ")
        .replace("\\cdots", " ");
    // Spacing commands.
    for pat in ["\\,", "\\;", "\\:", "\\quad", "\\qquad", "\\ ", "~"] {
        s = s.replace(pat, " ");
    }
    s = s.replace(['\n', '\t'], " ");
    // Units: a trailing \text{…} (and superscript), then unit words, as math-verify does.
    let t = UNIT_TEXT_RE.replace(&s, "").trim().to_string();
    if !t.is_empty() && t != s {
        s = t;
    }
    for _ in 0..2 {
        let t = UNITS_RE.replace(&s, "${1}").into_owned();
        if !t.is_empty() && t != s {
            s = t;
        }
    }
    s = TEXT_RE.replace_all(&s, "${1}").into_owned();
    s = strip_thousands(&s);
    for (re, rep) in MALFORMED.iter() {
        s = re.replace_all(&s, *rep).into_owned();
    }
    s.trim().trim_end_matches('.').trim().to_string()
}
