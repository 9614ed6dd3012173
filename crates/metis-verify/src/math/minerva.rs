//! Minerva answer handling as in lm-eval's `minerva_math` task
//! (`lm_eval/tasks/minerva_math/utils.py`, task version 3.0): the candidate regex and
//! `normalize_final_answer` (Lewkowycz et al. 2022, appendix D), reproduced exactly,
//! including their quirks (substitutions act inside words; `.` is any character but `\n`).

use std::sync::LazyLock;

use regex::Regex;

static CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"Final Answer: The final answer is(.*?). I hope it is correct.")
        .expect("static regex")
});

/// `get_unnormalized_answer`: appends "I hope it is correct." and takes group 1 of the first
/// match, stripped; `None` where upstream returns `[invalidanswer]`.
pub fn minerva_candidate(generation: &str) -> Option<String> {
    let text = format!("{generation}I hope it is correct.");
    let caps = CANDIDATE.captures(&text)?;
    Some(py_strip(caps.get(1).map_or("", |m| m.as_str())).to_string())
}

const SUBSTITUTIONS: [(&str, &str); 10] = [
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
];

const REMOVED_EXPRESSIONS: [&str; 42] = [
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "ft",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    "\"",
    "\\dots",
];

static RE_DOLLARS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(.*?)(\$)(.*?)(\$)(.*)").expect("static regex"));
static RE_TEXT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\\text\{)(.*?)(\})").expect("static regex"));
static RE_TEXTBF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\\textbf\{)(.*?)(\})").expect("static regex"));
static RE_OVERLINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\\overline\{)(.*?)(\})").expect("static regex"));
static RE_BOXED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\\boxed\{)(.*)(\})").expect("static regex"));
static RE_FRAC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(frac)([^{])(.)").expect("static regex"));
static RE_SQRT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(sqrt)([^{])").expect("static regex"));

/// `normalize_final_answer`, step for step.
pub fn minerva_normalize(s: &str) -> String {
    let mut a = s.rsplit('=').next().unwrap_or_default().to_string();
    for (before, after) in SUBSTITUTIONS {
        a = a.replace(before, after);
    }
    for expr in REMOVED_EXPRESSIONS {
        a = a.replace(expr, "");
    }
    a = RE_DOLLARS.replace_all(&a, "$$${3}$$").into_owned();
    a = RE_TEXT.replace_all(&a, "${2}").into_owned();
    a = RE_TEXTBF.replace_all(&a, "${2}").into_owned();
    a = RE_OVERLINE.replace_all(&a, "${2}").into_owned();
    a = RE_BOXED.replace_all(&a, "${2}").into_owned();
    a = RE_FRAC.replace_all(&a, "frac{${2}}{${3}}").into_owned();
    a = RE_SQRT.replace_all(&a, "sqrt{${2}}").into_owned();
    a = a.replace('$', "");
    let no_commas = a.replace(',', "");
    if py_isdigit(&no_commas) {
        a = no_commas;
    }
    a
}

/// Python's `str.isdigit()`: non-empty and every character a digit. Non-ASCII digits are
/// approximated by `char::is_numeric` (which also admits e.g. vulgar fractions).
fn py_isdigit(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric()))
}

/// Python's `str.strip()` with no argument (Unicode whitespace).
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}
