//! spaCy's English tokenizer (the rules of `spacy.blank("en")`, which `en_core_web_sm`'s
//! tokenizer shares), reimplemented so the copyright judge splits a generation into the same
//! tokens HarmBench's `tokenize` does: the window boundaries are counted in spaCy tokens.
//!
//! The algorithm is `spacy/tokenizer.pyx` (spaCy 3.8): split on whitespace (a single `' '`
//! after a token is absorbed, any other whitespace run becomes a token of its own); strip
//! prefixes and suffixes from each chunk until none is left, stopping early where the rest is
//! a special case; then split the core on infixes unless it is a special case or a URL; finally
//! re-apply special cases that span several tokens (`_apply_special_cases`, e.g. `:)` in
//! `hello:)`). The rule data (literals, character classes, special cases) is generated from
//! spaCy into `spacy_en.rs`; the rule shapes below mirror `spacy/lang/punctuation.py` and
//! `spacy/lang/en/punctuation.py`, whose Python regexes they replace.
//!
//! spaCy's tokenizer cache is not kept: it only memoises results this code recomputes
//! identically. Python's Unicode tables (3.11: Unicode 14) and the `regex` crate's may differ
//! on characters assigned since, which no English text holds.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

use super::spacy_en as data;

/// A prefix rule (`TOKENIZER_PREFIXES`), tried in order at the start of a chunk.
#[derive(Debug, Clone, Copy)]
pub(super) enum Prefix {
    Lit(&'static str),
    /// `\+(?![0-9])`
    PlusNotBeforeDigit,
    /// `\.\.+`
    Dots,
    /// `[{ICONS}]`
    Icon,
}

/// A suffix rule (`TOKENIZER_SUFFIXES`); the suffix is the match starting leftmost.
#[derive(Debug, Clone, Copy)]
pub(super) enum Suffix {
    Lit(&'static str),
    /// `\.\.+`
    Dots,
    /// `[{ICONS}]`
    Icon,
    /// `(?<=[0-9])(?:x|y|…)`: one of the strings right after an ASCII digit.
    AfterDigit(&'static [&'static str]),
    /// `(?<=°[FfCcKk])\.`
    DegreeDot,
    /// `(?<=[0-9{ALPHA_LOWER}%²\-\+{PUNCT}(?:{QUOTES})])\.`
    DotAfterClass,
    /// `(?<=[{ALPHA_UPPER}][{ALPHA_UPPER}])\.`
    DotAfterTwoUpper,
}

/// An infix rule (English `TOKENIZER_INFIXES`), tried in order at each position.
#[derive(Debug, Clone, Copy)]
pub(super) enum Infix {
    Lit(&'static str),
    /// `\.\.+`
    Dots,
    /// `[{ICONS}]`
    Icon,
    /// `(?<=[0-9])[+\-\*^](?=[0-9-])`
    DigitOperator,
    /// `(?<=[{ALPHA_LOWER}{QUOTES}])\.(?=[{ALPHA_UPPER}{QUOTES}])`
    CaseDot,
    /// `(?<=[{ALPHA}]),(?=[{ALPHA}])`
    AlphaComma,
    /// `(?<=[{ALPHA}0-9])(?:-|–|—|--|---|——|~)(?=[{ALPHA}])`
    Hyphen,
    /// `(?<=[{ALPHA}0-9])[:<>=/](?=[{ALPHA}])`
    AlphaSymbol,
}

/// spaCy's tokens of `text`, whitespace tokens included (`[t.text for t in nlp(text)]`).
pub fn tokenize(text: &str) -> Vec<&str> {
    let tokenizer = Tokenizer::get();
    let tokens = tokenizer.tokenize_affixes(text, true);
    tokenizer
        .apply_special_cases(text, tokens)
        .into_iter()
        .map(|t| &text[t.start..t.end])
        .collect()
}

/// Python's `str.split()`: the non-empty runs between whitespace as `str.isspace` defines it.
pub fn split_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_space).filter(|w| !w.is_empty())
}

/// `str.isspace()`: Unicode `White_Space` plus the four ASCII separators U+001C..U+001F.
pub(super) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A token: a byte range of the text, and whether one `' '` follows it (spaCy's `spacy`).
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    space_after: bool,
}

/// The special cases, and those of them that `_apply_special_cases` looks for across tokens.
struct Tokenizer {
    specials: HashMap<&'static str, &'static [&'static str]>,
    /// Multi-token patterns (spaCy's `_special_matcher`), keyed by their first token.
    patterns: HashMap<&'static str, Vec<Vec<&'static str>>>,
    url: UrlMatcher,
}

impl Tokenizer {
    fn get() -> &'static Tokenizer {
        static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
        TOKENIZER.get_or_init(Tokenizer::build)
    }

    fn build() -> Tokenizer {
        let mut tokenizer = Tokenizer {
            specials: data::SPECIAL_CASES.iter().copied().collect(),
            patterns: HashMap::new(),
            url: UrlMatcher::new(),
        };
        // `add_special_case`: a case that affix rules would split (or that holds a space) is
        // also matched across tokens, as the tokens the rules give it without special cases.
        let mut patterns: HashMap<&'static str, Vec<Vec<&'static str>>> = HashMap::new();
        for &(case, _) in data::SPECIAL_CASES {
            if find_prefix(case) == 0
                && find_infixes(case).is_empty()
                && find_suffix(case) == 0
                && !case.contains(' ')
            {
                continue;
            }
            let pattern: Vec<&'static str> = tokenizer
                .tokenize_affixes(case, false)
                .iter()
                .map(|t| &case[t.start..t.end])
                .collect();
            patterns.entry(pattern[0]).or_default().push(pattern);
        }
        tokenizer.patterns = patterns;
        tokenizer
    }

    /// `_tokenize_affixes`: whitespace splitting, then each chunk through the affix rules.
    fn tokenize_affixes(&self, text: &str, specials: bool) -> Vec<Token> {
        let mut tokens = Vec::new();
        let Some(first) = text.chars().next() else {
            return tokens;
        };
        let mut in_space = is_python_space(first);
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if is_python_space(c) == in_space {
                continue;
            }
            if start < i {
                self.tokenize_chunk(text, start, i, specials, &mut tokens);
            }
            if c == ' ' {
                // A single space after a token belongs to it; a longer run leaves the rest.
                if let Some(last) = tokens.last_mut() {
                    last.space_after = true;
                }
                start = i + 1;
            } else {
                start = i;
            }
            in_space = !in_space;
        }
        if start < text.len() {
            self.tokenize_chunk(text, start, text.len(), specials, &mut tokens);
            if let Some(last) = tokens.last_mut() {
                last.space_after = text.ends_with(' ') && !in_space;
            }
        }
        tokens
    }

    /// `_tokenize` of one whitespace-delimited chunk `text[start..end]`.
    fn tokenize_chunk(
        &self,
        text: &str,
        start: usize,
        end: usize,
        specials: bool,
        out: &mut Vec<Token>,
    ) {
        if specials && self.push_special(text, start, end, out) {
            return;
        }
        let split = self.split_affixes(text, start, end, specials);
        out.extend(split.prefixes.iter().map(|&(s, e)| token(s, e)));
        self.attach_core(text, split.start, split.end, specials, out);
        out.extend(split.suffixes.iter().rev().map(|&(s, e)| token(s, e)));
    }

    /// Pushes the special case's pieces if `text[start..end]` is one.
    fn push_special(&self, text: &str, start: usize, end: usize, out: &mut Vec<Token>) -> bool {
        let Some(pieces) = self.specials.get(&text[start..end]) else {
            return false;
        };
        let mut offset = start;
        for piece in pieces.iter() {
            out.push(token(offset, offset + piece.len()));
            offset += piece.len();
        }
        true
    }

    fn is_special(&self, s: &str) -> bool {
        self.specials.contains_key(s)
    }

    /// `_split_affixes`: strips a prefix and a suffix per round until a round strips nothing,
    /// stopping as soon as the rest (or the rest less the affix just found) is a special case.
    fn split_affixes(&self, text: &str, mut start: usize, mut end: usize, specials: bool) -> Split {
        let mut prefixes = Vec::new();
        let mut suffixes = Vec::new();
        let mut last_size = 0;
        while start < end && end - start != last_size {
            let string = &text[start..end];
            if specials && self.is_special(string) {
                break;
            }
            last_size = string.len();
            let pre_len = find_prefix(string);
            if pre_len != 0 {
                let minus_pre = &string[pre_len..];
                if !minus_pre.is_empty() && specials && self.is_special(minus_pre) {
                    prefixes.push((start, start + pre_len));
                    start += pre_len;
                    break;
                }
            }
            let suf_len = find_suffix(&string[pre_len..]);
            if suf_len != 0 {
                let minus_suf = &string[..string.len() - suf_len];
                if !minus_suf.is_empty() && specials && self.is_special(minus_suf) {
                    suffixes.push((end - suf_len, end));
                    end -= suf_len;
                    break;
                }
            }
            if pre_len != 0 {
                prefixes.push((start, start + pre_len));
                start += pre_len;
            }
            if suf_len != 0 {
                suffixes.push((end - suf_len, end));
                end -= suf_len;
            }
        }
        Split {
            prefixes,
            start,
            end,
            suffixes,
        }
    }

    /// `_attach_tokens` for the core left by the affix rules: a special case, a URL (kept
    /// whole), or split on infixes. An infix at the very start is ignored, as spaCy does.
    fn attach_core(
        &self,
        text: &str,
        start: usize,
        end: usize,
        specials: bool,
        out: &mut Vec<Token>,
    ) {
        if start >= end {
            return;
        }
        if specials && self.push_special(text, start, end, out) {
            return;
        }
        let core = &text[start..end];
        if self.url.is_match(core) {
            out.push(token(start, end));
            return;
        }
        let mut piece_start = 0;
        for (infix_start, infix_end) in find_infixes(core) {
            if infix_start == 0 {
                continue;
            }
            if infix_start != piece_start {
                out.push(token(start + piece_start, start + infix_start));
            }
            out.push(token(start + infix_start, start + infix_end));
            piece_start = infix_end;
        }
        if piece_start < core.len() {
            out.push(token(start + piece_start, end));
        }
    }

    /// `_apply_special_cases`: finds the multi-token special-case patterns, keeps the longest
    /// (leftmost among equals) whose first and last tokens are not yet claimed, and replaces
    /// each by the special case's own pieces when the covered text is exactly the case.
    fn apply_special_cases(&self, text: &str, tokens: Vec<Token>) -> Vec<Token> {
        let mut matches = self.find_pattern_matches(text, &tokens);
        if matches.is_empty() {
            return tokens;
        }
        // spaCy sorts by (length, descending start) and walks the list from the back.
        matches.sort_by(|a, b| (a.1 - a.0).cmp(&(b.1 - b.0)).then(b.0.cmp(&a.0)));
        let mut claimed = vec![false; tokens.len()];
        let mut kept = Vec::new();
        for &(start, end) in matches.iter().rev() {
            if !claimed[start] && !claimed[end - 1] {
                kept.push((start, end));
            }
            claimed[start..end].iter_mut().for_each(|c| *c = true);
        }
        kept.sort_unstable();
        self.retokenize(text, &tokens, &kept)
    }

    fn find_pattern_matches(&self, text: &str, tokens: &[Token]) -> Vec<(usize, usize)> {
        let texts: Vec<&str> = tokens.iter().map(|t| &text[t.start..t.end]).collect();
        let mut matches = Vec::new();
        for (i, first) in texts.iter().enumerate() {
            let Some(patterns) = self.patterns.get(first) else {
                continue;
            };
            for pattern in patterns {
                let end = i + pattern.len();
                if end <= texts.len() && texts[i..end] == pattern[..] {
                    matches.push((i, end));
                }
            }
        }
        matches
    }

    fn retokenize(&self, text: &str, tokens: &[Token], spans: &[(usize, usize)]) -> Vec<Token> {
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        for &(start, end) in spans {
            out.extend_from_slice(&tokens[i..start]);
            let (first, last) = (tokens[start], tokens[end - 1]);
            // The span's text is the original text it covers, single spaces included.
            if self.push_special(text, first.start, last.end, &mut out) {
                out.last_mut()
                    .expect("a special case has pieces")
                    .space_after = last.space_after;
            } else {
                out.extend_from_slice(&tokens[start..end]);
            }
            i = end;
        }
        out.extend_from_slice(&tokens[i..]);
        out
    }
}

fn token(start: usize, end: usize) -> Token {
    Token {
        start,
        end,
        space_after: false,
    }
}

/// A chunk after `split_affixes`: prefixes (outermost first), the core, suffixes (outermost
/// first), as byte ranges of the text.
struct Split {
    prefixes: Vec<(usize, usize)>,
    start: usize,
    end: usize,
    suffixes: Vec<(usize, usize)>,
}

fn in_class(table: &[(char, char)], c: char) -> bool {
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

fn is_alpha(c: char) -> bool {
    in_class(data::ALPHA, c)
}

fn is_ascii_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// Byte length of the run of '.' at the start of `s`, if it is at least two long.
fn dot_run(s: &str) -> Option<usize> {
    let run = s.len() - s.trim_start_matches('.').len();
    (run >= 2).then_some(run)
}

/// `prefix_search`: the first rule, in spaCy's order, that matches at the start; its length.
fn find_prefix(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return 0;
    };
    for rule in data::PREFIXES {
        let len = match *rule {
            Prefix::Lit(lit) => s.starts_with(lit).then_some(lit.len()),
            Prefix::PlusNotBeforeDigit => {
                (first == '+' && !is_ascii_digit(chars.clone().next())).then_some(1)
            }
            Prefix::Dots => dot_run(s),
            Prefix::Icon => in_class(data::ICONS, first).then_some(first.len_utf8()),
        };
        if let Some(len) = len {
            return len;
        }
    }
    0
}

/// No suffix rule but `\.\.+` matches more than this many bytes (checked by a test), so only
/// the tail of a long chunk, and a trailing run of dots, can start a suffix.
const MAX_SUFFIX_BYTES: usize = 16;

/// `suffix_search`: every rule is anchored at the end, so the suffix is the match that starts
/// leftmost; the length of `s` from there.
fn find_suffix(s: &str) -> usize {
    let trailing_dots = s.len() - s.trim_end_matches('.').len();
    let first = (s.len() - trailing_dots).min(s.len().saturating_sub(MAX_SUFFIX_BYTES));
    s.char_indices()
        .skip_while(|&(i, _)| i < first)
        .find(|&(i, _)| data::SUFFIXES.iter().any(|rule| suffix_at(s, i, *rule)))
        .map_or(0, |(i, _)| s.len() - i)
}

/// Whether `rule` matches exactly `s[i..]`, its look-behind reading `s[..i]`.
fn suffix_at(s: &str, i: usize, rule: Suffix) -> bool {
    let (before, rest) = s.split_at(i);
    let mut back = before.chars().rev();
    let prev = back.next();
    match rule {
        Suffix::Lit(lit) => rest == lit,
        Suffix::Dots => dot_run(rest) == Some(rest.len()),
        Suffix::Icon => single_char(rest).is_some_and(|c| in_class(data::ICONS, c)),
        Suffix::AfterDigit(options) => is_ascii_digit(prev) && options.contains(&rest),
        Suffix::DegreeDot => {
            rest == "." && prev.is_some_and(|c| "FfCcKk".contains(c)) && back.next() == Some('°')
        }
        Suffix::DotAfterClass => {
            rest == "." && prev.is_some_and(|c| in_class(data::BEFORE_FINAL_DOT, c))
        }
        Suffix::DotAfterTwoUpper => {
            let upper = |c: Option<char>| c.is_some_and(|c| in_class(data::ALPHA_UPPER, c));
            rest == "." && upper(prev) && upper(back.next())
        }
    }
}

fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// `infix_finditer`: scanning left to right, the first rule matching at each position; the
/// scan resumes after a match. Byte ranges within `s`.
fn find_infixes(s: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match data::INFIXES.iter().find_map(|rule| infix_at(s, i, *rule)) {
            Some(len) => {
                found.push((i, i + len));
                i += len;
            }
            None => i += s[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    found
}

/// The length of `rule`'s match at byte `i` of `s`, look-arounds reading the whole of `s`.
fn infix_at(s: &str, i: usize, rule: Infix) -> Option<usize> {
    let rest = &s[i..];
    let c = rest.chars().next()?;
    let prev = s[..i].chars().next_back();
    let next = rest[c.len_utf8()..].chars().next();
    let alpha = |c: Option<char>| c.is_some_and(is_alpha);
    let alpha_or_digit = |c: Option<char>| alpha(c) || is_ascii_digit(c);
    let quote = |c: char| in_class(data::QUOTES, c);
    let single = |ok: bool| ok.then_some(c.len_utf8());
    match rule {
        Infix::Lit(lit) => rest.starts_with(lit).then_some(lit.len()),
        Infix::Dots => dot_run(rest),
        Infix::Icon => single(in_class(data::ICONS, c)),
        Infix::DigitOperator => single(
            is_ascii_digit(prev)
                && "+-*^".contains(c)
                && next.is_some_and(|n| n.is_ascii_digit() || n == '-'),
        ),
        Infix::CaseDot => single(
            c == '.'
                && prev.is_some_and(|p| in_class(data::ALPHA_LOWER, p) || quote(p))
                && next.is_some_and(|n| in_class(data::ALPHA_UPPER, n) || quote(n)),
        ),
        Infix::AlphaComma => single(c == ',' && alpha(prev) && alpha(next)),
        Infix::Hyphen => {
            if !alpha_or_digit(prev) {
                return None;
            }
            data::HYPHENS
                .iter()
                .find(|h| rest.starts_with(**h) && alpha(rest[h.len()..].chars().next()))
                .map(|h| h.len())
        }
        Infix::AlphaSymbol => single(":<>=/".contains(c) && alpha_or_digit(prev) && alpha(next)),
    }
}

/// spaCy's `URL_MATCH` (`spacy/lang/tokenizer_exceptions.py`, after Diego Perini's URL regex).
/// Its negative look-aheads (no private IP address) have no equivalent in the `regex` crate, so
/// the pattern is split where they stand: a scheme/credentials part, then the host-to-end part
/// with an IP-address host (refused when the look-aheads would refuse it) or a domain-name host
/// (which the look-aheads do not guard), tried at every place the host can start (the start,
/// after `://`, after any `@`) as Python's backtracking would.
struct UrlMatcher {
    scheme_and_credentials: Regex,
    private_address: Regex,
    ip_to_end: Regex,
    name_to_end: Regex,
}

impl UrlMatcher {
    fn new() -> Self {
        // Python's `\S` is "not str.isspace()", which also excludes U+001C..U+001F.
        const NOT_SPACE: &str = r"[^\s\x1c-\x1f]";
        // Python's `\w` is `str.isalnum()` or '_': letters and numbers, no combining marks
        // (which Rust's `\w` includes).
        const WORD: &str = r"\p{L}\p{N}_";
        let label = r"[A-Za-z0-9\u{a1}-\u{ffff}]";
        let label_inner = r"[A-Za-z0-9\u{a1}-\u{ffff}_-]";
        let tld = char_class(data::ALPHA_LOWER);
        let port_and_path = format!(r"(?::\d{{2,5}})?(?:[/?#]{NOT_SPACE}*)?$");
        let ip = r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))";
        let name = format!(r"(?:(?:{label}{label_inner}{{0,62}})?{label}\.)+(?:{tld}{{2,63}})");
        UrlMatcher {
            scheme_and_credentials: Regex::new(&format!(
                r"^(?:(?:[{WORD}+\-.]{{2,}})://)?(?:{NOT_SPACE}+(?::{NOT_SPACE}*)?@)?$"
            ))
            .expect("valid URL scheme regex"),
            private_address: Regex::new(
                r"^(?:(?:10|127)(?:\.\d{1,3}){3}|(?:169\.254|192\.168)(?:\.\d{1,3}){2}|172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})",
            )
            .expect("valid private address regex"),
            ip_to_end: Regex::new(&format!("^{ip}{port_and_path}")).expect("valid URL IP regex"),
            name_to_end: regex::RegexBuilder::new(&format!("^{name}{port_and_path}"))
                .size_limit(64 << 20)
                .build()
                .expect("valid URL host regex"),
        }
    }

    fn is_match(&self, s: &str) -> bool {
        let after_scheme = s.match_indices("://").map(|(i, _)| i + 3);
        let after_at = s.match_indices('@').map(|(i, _)| i + 1);
        std::iter::once(0)
            .chain(after_scheme)
            .chain(after_at)
            .any(|host| {
                let rest = &s[host..];
                self.scheme_and_credentials.is_match(&s[..host])
                    && (self.name_to_end.is_match(rest)
                        || (self.ip_to_end.is_match(rest) && !self.private_address.is_match(rest)))
            })
    }
}

/// A regex character class of the given code-point ranges.
fn char_class(table: &[(char, char)]) -> String {
    let mut class = String::from("[");
    for &(lo, hi) in table {
        class.push_str(&format!(r"\u{{{:x}}}-\u{{{:x}}}", lo as u32, hi as u32));
    }
    class.push(']');
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<&str> {
        tokenize(text)
    }

    /// Expected tokens are spaCy 3.8.18's (`spacy.blank("en")`).
    #[test]
    fn contractions_punctuation_and_quotes() {
        assert_eq!(
            toks("don't can't I'm gonna"),
            ["do", "n't", "ca", "n't", "I", "'m", "gon", "na"]
        );
        assert_eq!(
            toks("“Hi,” he said—then left…"),
            ["“", "Hi", ",", "”", "he", "said", "—", "then", "left", "…"]
        );
        assert_eq!(
            toks("(and/or) Hello:)"),
            ["(", "and/or", ")", "Hello", ":)"]
        );
    }

    #[test]
    fn numbers_units_currency_abbreviations() {
        assert_eq!(
            toks("10km $5 US$5 5°C. 3a.m."),
            ["10", "km", "$", "5", "US$", "5", "5", "°", "C", ".", "3", "a.m."]
        );
        assert_eq!(toks("U.S.A. e.g.Foo"), ["U.S.A.", "e.g.", "Foo"]);
    }

    #[test]
    fn urls_hyphens_and_whitespace_tokens() {
        assert_eq!(
            toks("http://www.x-y.com/a-b foo--bar"),
            ["http://www.x-y.com/a-b", "foo", "--", "bar"]
        );
        assert_eq!(toks("A.B.  x\n\ny "), ["A.B.", " ", "x", "\n\n", "y"]);
        assert_eq!(toks(""), Vec::<&str>::new());
        assert_eq!(toks("  lead"), ["  ", "lead"]);
    }

    #[test]
    fn private_addresses_are_not_urls() {
        let url = UrlMatcher::new();
        assert!(url.is_match("example.com"));
        assert!(url.is_match("https://user:pw@example.com:8080/x?y#z"));
        assert!(url.is_match("8.8.8.8"));
        assert!(!url.is_match("10.0.0.1"));
        assert!(!url.is_match("192.168.1.1"));
        // The look-aheads guard the IP branch only: a private address can start a host name.
        assert!(url.is_match("10.0.0.1.com"));
        // Python's `\w` has no combining marks, so this is no scheme.
        assert!(!url.is_match("\u{35d}e.g.http://x.com"));
        assert!(!url.is_match("lower.Upper"));
    }

    #[test]
    fn suffix_literals_fit_the_scanned_tail() {
        let longest = data::SUFFIXES
            .iter()
            .flat_map(|rule| match *rule {
                Suffix::Lit(lit) => vec![lit.len()],
                Suffix::AfterDigit(options) => options.iter().map(|o| o.len()).collect(),
                Suffix::Icon => vec![4],
                Suffix::Dots => vec![],
                Suffix::DegreeDot | Suffix::DotAfterClass | Suffix::DotAfterTwoUpper => vec![1],
            })
            .max();
        assert!(
            longest.is_some_and(|l| l <= MAX_SUFFIX_BYTES),
            "{longest:?}"
        );
        let long = format!("{}xkm", "a".repeat(100));
        assert_eq!(find_suffix(&long), 0);
        assert_eq!(find_suffix(&format!("{}5km", "a".repeat(100))), 2);
        assert_eq!(find_suffix(&format!("word{}", ".".repeat(40))), 40);
    }

    #[test]
    fn python_split_uses_python_whitespace() {
        let words: Vec<&str> = split_words(" a\u{1f}b\u{a0}c  d\n").collect();
        assert_eq!(words, ["a", "b", "c", "d"]);
    }
}
