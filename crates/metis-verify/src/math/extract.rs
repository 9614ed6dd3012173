//! Final-answer extraction from the answer part of a response (see
//! [`super::extract_final_answer`] for the order of preference).

use std::sync::LazyLock;

use regex::Regex;

use super::normalize::matching_brace;
use super::{ExtractMethod, MathExtraction};

/// Longest text scanned; longer inputs are cut to their last `MAX_SCAN` bytes (the answer
/// is at the end).
pub const MAX_SCAN: usize = 1 << 20;

static FINAL_ANSWER_IS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)final answer is:?\s*(.*)").expect("static regex"));
static ANSWER_IS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bthe answer is:?\s*(.*)").expect("static regex"));
static HASHES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"####\s*(.*)").expect("static regex"));
static ANSWER_SHAPED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[-+]?(?:[0-9.,\s+\-*/^()\[\]{}=<>|!%]|\\[a-zA-Z]+|\\[{}%$,!]|[a-zA-Z](?:[^a-zA-Z]|$))+$",
    )
    .expect("static regex")
});
static LAST_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-?\d[\d,]*(?:\.\d+)?").expect("static regex"));

/// Content of the last `\boxed{…}` or `\fbox{…}` with balanced braces.
fn last_boxed(text: &str) -> Option<&str> {
    let b = text.rfind("\\boxed");
    let f = text.rfind("\\fbox");
    let (start, len) = match (b, f) {
        (Some(b), Some(f)) if f > b => (f, 5),
        (Some(b), _) => (b, 6),
        (None, Some(f)) => (f, 5),
        (None, None) => return None,
    };
    let rest = &text[start + len..];
    let open = start + len + (rest.len() - rest.trim_start().len());
    if !text[open..].starts_with('{') {
        return None;
    }
    let close = matching_brace(text, open)?;
    Some(&text[open + 1..close])
}

/// Cleans a candidate taken from running text: up to "I hope", without surrounding `$`,
/// `\(`…`\)`, `**`, and a sentence-final period.
fn clean(s: &str) -> String {
    let mut s = s;
    if let Some(i) = s.find("I hope") {
        s = &s[..i];
    }
    let mut s = s.trim().to_string();
    loop {
        let before = s.clone();
        s = s
            .trim()
            .trim_end_matches(['.', ',', ';'])
            .trim()
            .to_string();
        for (l, r) in [
            ("$$", "$$"),
            ("$", "$"),
            ("\\(", "\\)"),
            ("\\[", "\\]"),
            ("**", "**"),
        ] {
            if s.len() >= l.len() + r.len() && s.starts_with(l) && s.ends_with(r) {
                s = s[l.len()..s.len() - r.len()].to_string();
            }
        }
        if s == before {
            return s;
        }
    }
}

fn from_anchor(re: &Regex, text: &str) -> Option<String> {
    let caps = re.captures_iter(text).last()?;
    let line = caps.get(1)?.as_str().lines().next().unwrap_or("");
    let c = clean(line);
    (!c.is_empty()).then_some(c)
}

pub fn extract_final_answer(text: &str) -> Option<MathExtraction> {
    let mut cut = text.len().saturating_sub(MAX_SCAN);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    let text = &text[cut..];
    let found = |answer: String, method| Some(MathExtraction { answer, method });
    if let Some(b) = last_boxed(text) {
        let b = b.trim();
        if !b.is_empty() {
            return found(b.to_string(), ExtractMethod::Boxed);
        }
    }
    if let Some(a) = from_anchor(&FINAL_ANSWER_IS, text) {
        return found(a, ExtractMethod::FinalAnswerIs);
    }
    if let Some(a) = from_anchor(&ANSWER_IS, text) {
        return found(a, ExtractMethod::AnswerIs);
    }
    if let Some(a) = from_anchor(&HASHES, text) {
        return found(a, ExtractMethod::Hashes);
    }
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut line = last.trim();
    for prefix in ["Answer:", "answer:", "**Answer:**", "Answer :"] {
        if let Some(rest) = line.strip_prefix(prefix) {
            line = rest.trim();
        }
    }
    let c = clean(line);
    // A line with an unbalanced box is a broken box, not an answer.
    let has_box = c.contains("\\boxed") || c.contains("\\fbox");
    if !c.is_empty() && c.len() <= 200 && !has_box && ANSWER_SHAPED.is_match(&c) {
        return found(c, ExtractMethod::LastLine);
    }
    let n = LAST_NUMBER.find_iter(line).last()?;
    found(
        n.as_str().trim_end_matches(',').to_string(),
        ExtractMethod::LastNumber,
    )
}
