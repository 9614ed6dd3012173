//! `nltk.word_tokenize` (NLTK 3.10): Punkt English sentences, then `NLTKWordTokenizer` (the
//! improved Treebank tokenizer) on each sentence.
//!
//! The Treebank tokenizer is a fixed list of regex rewrites followed by `str.split()`. The rules
//! are ported in order; the two that need look-around (the opening single quote and the final
//! `$` that Python also matches before a trailing newline) are hand-coded or rewritten into an
//! equivalent form the `regex` crate accepts. `(?#X)` comments are dropped.

use std::sync::LazyLock;

use regex::Regex;

use super::pytext::{is_regex_word, is_upper, split_ws};

struct Rule {
    re: Regex,
    rep: &'static str,
}

fn rules(list: &[(&str, &'static str)]) -> Vec<Rule> {
    list.iter()
        .map(|(p, rep)| Rule {
            re: Regex::new(p).expect("static regex"),
            rep,
        })
        .collect()
}

struct Tables {
    starting_quotes: Vec<Rule>,
    punctuation: Vec<Rule>,
    parens: Rule,
    double_dashes: Rule,
    ending_quotes: Vec<Rule>,
    contractions: Vec<Rule>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| Tables {
    starting_quotes: rules(&[
        ("([«“‘„]|`+)", " $1 "),
        (r#"\A""#, "``"),
        ("(``)", " $1 "),
        (r#"([ (\[{<])("|'{2})"#, "$1 `` "),
    ]),
    punctuation: rules(&[
        // `$` without MULTILINE also matches before a final "\n", but the greedy `\s*` in front
        // of it always consumes that newline, so `\z` is equivalent here.
        (r#"([^.])(\.)([\]\)}>"'»”’ ]*)\s*\z"#, "$1 $2 $3 "),
        (r"([:,])([^\d])", " $1 $2"),
        (r"([:,])(\n?)\z", " $1 $2"),
        (r"\.{2,}", " $0 "),
        (r"[;@#$%&]", " $0 "),
        (r"[\x{2012}-\x{2015}]", " $0 "),
        (r#"([^.])(\.)([\]\)}>"']*)\s*\z"#, "$1 $2$3 "),
        (r"[?!]", " $0 "),
        (r"([^'])' ", "$1 ' "),
        (r"[*]", " $0 "),
    ]),
    parens: rules(&[(r"[\]\[\(\)\{\}<>]", " $0 ")]).remove(0),
    double_dashes: rules(&[("--", " -- ")]).remove(0),
    ending_quotes: rules(&[
        ("([»”’])", " $1 "),
        ("''", " '' "),
        ("\"", " '' "),
        (r"\s+", " "),
        (r"([^' ])('[sS]|'[mM]|'[dD]|') ", "$1 $2 "),
        (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "$1 $2 "),
    ]),
    contractions: rules(&[
        (r"(?i)\b(can)(not)\b", " $1 $2 "),
        (r"(?i)\b(d)('ye)\b", " $1 $2 "),
        (r"(?i)\b(gim)(me)\b", " $1 $2 "),
        (r"(?i)\b(gon)(na)\b", " $1 $2 "),
        (r"(?i)\b(got)(ta)\b", " $1 $2 "),
        (r"(?i)\b(lem)(me)\b", " $1 $2 "),
        (r"(?i)\b(more)('n)\b", " $1 $2 "),
        // `(?=\s)` consumed instead: the next match cannot start on that whitespace anyway.
        (r"(?i)\b(wan)(na)(\s)", " $1 $2 $3"),
        (r"(?i) ('t)(is)\b", " $1 $2 "),
        (r"(?i) ('t)(was)\b", " $1 $2 "),
    ]),
});

fn apply(rule: &Rule, text: String) -> String {
    // `is_match` needs no capture slots; most rules do not fire on most sentences.
    if !rule.re.is_match(&text) {
        return text;
    }
    match rule.re.replace_all(&text, rule.rep) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(s) => s,
    }
}

/// `(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)` → `\1 `: an opening single quote gets a
/// space after it unless it starts a contraction.
fn opening_quotes(text: String) -> String {
    if !text.contains('\'') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        out.push(c);
        if c == '\'' && !prev.is_some_and(is_regex_word) {
            let rest = &text[i + 1..];
            if rest.chars().next().is_some_and(is_regex_word) {
                let contraction = ["re", "ve", "ll", "m", "t", "s", "d", "n"].iter().any(|w| {
                    rest.get(..w.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(w))
                        && !rest[w.len()..].chars().next().is_some_and(is_regex_word)
                });
                if !contraction {
                    out.push(' ');
                }
            }
        }
        prev = Some(c);
    }
    out
}

/// `NLTKWordTokenizer().tokenize(sentence)`.
#[cfg(test)]
pub(crate) fn treebank_tokenize(sentence: &str) -> Vec<String> {
    split_ws(&treebank_text(sentence))
        .map(str::to_string)
        .collect()
}

/// The rewritten sentence whose `str.split()` is the token list.
fn treebank_text(sentence: &str) -> String {
    let t = &*TABLES;
    let mut text = sentence.to_string();
    for r in &t.starting_quotes {
        text = apply(r, text);
    }
    text = opening_quotes(text);
    for r in &t.punctuation {
        text = apply(r, text);
    }
    text = apply(&t.parens, text);
    text = apply(&t.double_dashes, text);
    text = format!(" {text} ");
    for r in &t.ending_quotes {
        text = apply(r, text);
    }
    for r in &t.contractions {
        text = apply(r, text);
    }
    text
}

/// `nltk.word_tokenize(text)`.
#[cfg(test)]
pub(crate) fn word_tokenize(text: &str) -> Vec<String> {
    super::punkt::sentences(text)
        .into_iter()
        .flat_map(treebank_tokenize)
        .collect()
}

/// `len([w for w in nltk.word_tokenize(text) if w.isupper()])`, without building the tokens.
/// A sentence without any uppercase character cannot yield an uppercase token (the rewrites
/// only insert spaces and quote marks), so it is skipped.
/// `sentences` are the Punkt spans of `text` (shared with the sentence counter).
pub(crate) fn count_upper_tokens(text: &str, sentences: &[(usize, usize)]) -> usize {
    if !text.chars().any(char::is_uppercase) {
        return 0;
    }
    sentences
        .iter()
        .filter_map(|&(s, e)| text.get(s..e))
        .filter(|s| s.chars().any(char::is_uppercase))
        .map(|s| split_ws(&treebank_text(s)).filter(|w| is_upper(w)).count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_doc_example() {
        let s = "Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.  Please buy me\ntwo of them.\nThanks.";
        assert_eq!(
            treebank_tokenize(s),
            [
                "Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36", "euros", ")", "in",
                "New", "York.", "Please", "buy", "me", "two", "of", "them.", "Thanks", "."
            ]
        );
        assert_eq!(
            word_tokenize("I CAN'T go. HELLO,WORLD"),
            ["I", "CA", "N'T", "go", ".", "HELLO", ",", "WORLD"]
        );
    }
}
