//! NLTK's Punkt sentence tokenizer (NLTK 3.10, English `punkt_tab` parameters), tokenizing only.
//!
//! `count_sentences` upstream calls `PunktTokenizer("english").tokenize(text)`; this is a port
//! of exactly that path: `_match_potential_end_contexts` → `text_contains_sentbreak` (first and
//! second annotation passes over the Punkt word tokens of the context) → `_slices_from_text` →
//! `_realign_boundaries`. NLTK's regexes are compiled with the `regex` module (via
//! `nltk.redos`), whose `\s`, `\w`, `\d` match Rust's Unicode definitions; the lookahead-heavy
//! regexes are hand-coded as scanners. Training is not ported: the parameters are NLTK's
//! English model, embedded from `data/punkt_english/` (rebuilt by
//! `tools/reference/ifeval_parity.py setup`).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use super::pytext::{is_regex_word, rstrip, strip};

struct Params {
    abbrev_types: HashSet<&'static str>,
    collocations: HashSet<(&'static str, &'static str)>,
    sent_starters: HashSet<&'static str>,
    ortho_context: HashMap<&'static str, u32>,
}

static PARAMS: LazyLock<Params> = LazyLock::new(|| {
    let lines = |s: &'static str| s.split('\n').filter(|l| !l.is_empty());
    Params {
        abbrev_types: lines(include_str!("data/punkt_english/abbrev_types.txt")).collect(),
        collocations: lines(include_str!("data/punkt_english/collocations.tab"))
            .filter_map(|l| l.split_once('\t'))
            .collect(),
        sent_starters: lines(include_str!("data/punkt_english/sent_starters.txt")).collect(),
        ortho_context: lines(include_str!("data/punkt_english/ortho_context.tab"))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once('\t')?;
                Some((k, v.parse().ok()?))
            })
            .collect(),
    }
});

const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC + ORTHO_MID_UC + ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC + ORTHO_MID_LC + ORTHO_UNK_LC;

/// `PunktLanguageVars._re_non_word_chars` (English: `?` and `!` are the extra end chars).
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// `PunktLanguageVars._re_word_start` excludes these from starting a word token.
fn is_not_word_start(c: char) -> bool {
    matches!(
        c,
        '(' | '"'
            | '`'
            | '{'
            | '['
            | ':'
            | ';'
            | '&'
            | '#'
            | '*'
            | '@'
            | ')'
            | '}'
            | ']'
            | '-'
            | ','
    )
}

/// Length in bytes of a `_re_multi_char_punct` match (`-{2,}|\.{2,}|(?:\.\s){2,}\.`) at the
/// start of `s`, if any.
fn multi_char_at(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() >= 2 && b[0] == b'-' && b[1] == b'-' {
        return Some(b.iter().take_while(|&&x| x == b'-').count());
    }
    if b.len() >= 2 && b[0] == b'.' && b[1] == b'.' {
        return Some(b.iter().take_while(|&&x| x == b'.').count());
    }
    // (?:\.\s){2,}\. : greedy pairs, then backtrack one pair if no final period follows.
    let mut ends = Vec::new(); // byte offset after each complete pair
    let mut it = s.char_indices();
    while let Some((_, c)) = it.next() {
        if c != '.' {
            break;
        }
        match it.next() {
            Some((i, w)) if w.is_whitespace() => ends.push(i + w.len_utf8()),
            _ => break,
        }
    }
    for k in (2..=ends.len()).rev() {
        let end = ends[k - 1];
        if s[end..].starts_with('.') {
            return Some(end + 1);
        }
    }
    None
}

/// `PunktLanguageVars.word_tokenize` (the `_word_tokenize_fmt` regex's `findall`) on one line.
fn word_tokenize(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let Some(c) = rest.chars().next() else { break };
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        if let Some(n) = multi_char_at(rest) {
            out.push(&line[i..i + n]);
            i += n;
            continue;
        }
        if !is_not_word_start(c) {
            // \S+? up to the first position where the end-of-word lookahead holds.
            let mut p = i + c.len_utf8();
            loop {
                let tail = &line[p..];
                let Some(d) = tail.chars().next() else { break };
                if d.is_whitespace() || is_non_word(d) || multi_char_at(tail).is_some() {
                    break;
                }
                if d == ',' {
                    let after = &tail[1..];
                    match after.chars().next() {
                        None => break,
                        Some(e) if e.is_whitespace() || is_non_word(e) => break,
                        Some(_) if multi_char_at(after).is_some() => break,
                        _ => {}
                    }
                }
                p += d.len_utf8();
            }
            out.push(&line[i..p]);
            i = p;
            continue;
        }
        out.push(&line[i..i + c.len_utf8()]);
        i += c.len_utf8();
    }
    out
}

/// `PunktToken` with the annotations the tokenizer uses.
struct Token<'a> {
    tok: &'a str,
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

/// `PunktToken._RE_NUMERIC`: `^-?[\.,]?\d[\d,\.-]*\.?$` (on the lowercased token).
fn is_numeric(s: &str) -> bool {
    let mut it = s.chars().peekable();
    if it.peek() == Some(&'-') {
        it.next();
    }
    if matches!(it.peek(), Some('.') | Some(',')) {
        it.next();
    }
    match it.next() {
        Some(c) if is_decimal(c) => {}
        _ => return false,
    }
    it.all(|c| is_decimal(c) || matches!(c, ',' | '.' | '-'))
}

fn is_decimal(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    static RE: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\A\d\z").expect("static regex"));
    let mut buf = [0u8; 4];
    RE.is_match(c.encode_utf8(&mut buf))
}

impl<'a> Token<'a> {
    fn new(tok: &'a str) -> Self {
        let lower = tok.to_lowercase();
        let typ = if is_numeric(&lower) {
            "##number##".to_string()
        } else {
            lower
        };
        Token {
            tok,
            typ,
            period_final: tok.ends_with('.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }
    fn type_no_period(&self) -> &str {
        if self.typ.chars().count() > 1 && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }
    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }
    fn first_upper(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_uppercase)
    }
    fn first_lower(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_lowercase)
    }
    /// `_RE_ELLIPSIS.match`: `\.\.+$`.
    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.bytes().all(|b| b == b'.')
    }
    /// `_RE_INITIAL.match`: `[^\W\d]\.$`.
    fn is_initial(&self) -> bool {
        let mut it = self.tok.chars();
        match (it.next(), it.next(), it.next()) {
            (Some(c), Some('.'), None) => is_regex_word(c) && !is_decimal(c),
            _ => false,
        }
    }
}

fn first_pass(t: &mut Token, p: &Params) {
    let tok = t.tok;
    if tok == "." || tok == "?" || tok == "!" {
        t.sentbreak = true;
    } else if t.is_ellipsis() {
        t.ellipsis = true;
    } else if t.period_final && !tok.ends_with("..") {
        let stem = tok[..tok.len() - 1].to_lowercase();
        let last = stem.rsplit('-').next().unwrap_or("");
        if p.abbrev_types.contains(stem.as_str()) || p.abbrev_types.contains(last) {
            t.abbr = true;
        } else {
            t.sentbreak = true;
        }
    }
}

enum Ortho {
    Yes,
    No,
    Unknown,
}

fn ortho_heuristic(t: &Token, p: &Params) -> Ortho {
    if matches!(t.tok, ";" | ":" | "," | "." | "!" | "?") {
        return Ortho::No;
    }
    let ctx = p
        .ortho_context
        .get(t.type_no_sentperiod())
        .copied()
        .unwrap_or(0);
    if t.first_upper() && ctx & ORTHO_LC != 0 && ctx & ORTHO_MID_UC == 0 {
        return Ortho::Yes;
    }
    if t.first_lower() && (ctx & ORTHO_UC != 0 || ctx & ORTHO_BEG_LC == 0) {
        return Ortho::No;
    }
    Ortho::Unknown
}

/// `_second_pass_annotation(tok1, tok2)`: updates `toks[i]` using `toks[i + 1]`.
fn second_pass(toks: &mut [Token], i: usize, p: &Params) {
    let (head, tail) = toks.split_at_mut(i + 1);
    let t1 = &mut head[i];
    let Some(t2) = tail.first() else { return };
    if !t1.period_final {
        return;
    }
    let typ = t1.type_no_period().to_string();
    let next_typ = t2.type_no_sentperiod();
    let initial = t1.is_initial();
    if p.collocations.contains(&(typ.as_str(), next_typ)) {
        t1.sentbreak = false;
        t1.abbr = true;
        return;
    }
    if (t1.abbr || t1.ellipsis) && !initial {
        if let Ortho::Yes = ortho_heuristic(t2, p) {
            t1.sentbreak = true;
            return;
        }
        if t2.first_upper() && p.sent_starters.contains(next_typ) {
            t1.sentbreak = true;
            return;
        }
    }
    if initial || typ == "##number##" {
        match ortho_heuristic(t2, p) {
            Ortho::No => {
                t1.sentbreak = false;
                t1.abbr = true;
            }
            Ortho::Unknown
                if initial
                    && t2.first_upper()
                    && p.ortho_context.get(next_typ).copied().unwrap_or(0) & ORTHO_LC == 0 =>
            {
                t1.sentbreak = false;
                t1.abbr = true;
            }
            _ => {}
        }
    }
}

/// `_tokenize_words`: Punkt word tokens of every non-blank line.
fn tokenize_words(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        if strip(line).is_empty() {
            continue;
        }
        out.extend(word_tokenize(line).into_iter().map(Token::new));
    }
    out
}

/// Both annotation passes over the tokens of `text`.
fn annotate<'a>(text: &'a str, p: &Params) -> Vec<Token<'a>> {
    let mut toks = tokenize_words(text);
    for t in toks.iter_mut() {
        first_pass(t, p);
    }
    for i in 0..toks.len() {
        second_pass(&mut toks, i, p);
    }
    toks
}

/// `text_contains_sentbreak`: a sentence break on any token but the last.
fn contains_sentbreak(text: &str, p: &Params) -> bool {
    let toks = annotate(text, p);
    let n = toks.len();
    toks.iter().take(n.saturating_sub(1)).any(|t| t.sentbreak)
}

/// One `period_context_re` match: the end char at `pos`, the end of the `after_tok` group, and
/// where `next_tok` starts (if that alternative matched).
struct EndMatch {
    pos: usize,
    after_end: usize,
    next_tok: Option<usize>,
}

fn period_contexts(text: &str) -> Vec<EndMatch> {
    let mut out = Vec::new();
    for (pos, c) in text.char_indices() {
        if !matches!(c, '.' | '?' | '!') {
            continue;
        }
        let rest = &text[pos + 1..];
        let Some(n) = rest.chars().next() else {
            continue;
        };
        if is_non_word(n) {
            out.push(EndMatch {
                pos,
                after_end: pos + 1 + n.len_utf8(),
                next_tok: None,
            });
        } else if n.is_whitespace() {
            let ws = rest.len() - rest.trim_start_matches(char::is_whitespace).len();
            let after = &rest[ws..];
            let tok = after.len() - after.trim_start_matches(|c: char| !c.is_whitespace()).len();
            if tok > 0 {
                out.push(EndMatch {
                    pos,
                    after_end: pos + 1 + ws + tok,
                    next_tok: Some(pos + 1 + ws),
                });
            }
        }
    }
    out
}

/// Index of the last ASCII whitespace (`string.whitespace`) in `s`, 0 if none.
fn last_whitespace_index(s: &str) -> usize {
    s.bytes()
        .rposition(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .unwrap_or(0)
}

/// `_slices_from_text` as (start, end) byte ranges.
fn slices_from_text(text: &str, p: &Params) -> Vec<(usize, usize)> {
    let mut slices = Vec::new();
    let mut last_break = 0;
    // _match_potential_end_contexts: keep a match only if the next one's preceding word does not
    // overlap it.
    let matches = period_contexts(text);
    let mut prev: Option<(usize, (usize, usize))> = None; // (match index, previous word slice)
    let mut prev_slice = (0usize, 0usize);
    let mut kept: Vec<(usize, (usize, usize))> = Vec::new();
    for (mi, m) in matches.iter().enumerate() {
        let before = &text[prev_slice.1.min(m.pos)..m.pos];
        let idx = last_whitespace_index(before);
        let start = if idx != 0 {
            idx + prev_slice.1 + 1
        } else {
            prev_slice.0
        };
        let word = (start, m.pos);
        if let Some(pm) = prev {
            if prev_slice.1 <= word.0 {
                kept.push(pm);
            }
        }
        prev = Some((mi, word));
        prev_slice = word;
    }
    if let Some(pm) = prev {
        kept.push(pm);
    }
    for (mi, (ws, we)) in kept {
        let m = &matches[mi];
        let mut context = String::new();
        if ws <= we {
            context.push_str(&text[ws..we]);
        }
        // match.group() (the end char) + match.group("after_tok")
        context.push_str(&text[m.pos..m.after_end]);
        if contains_sentbreak(&context, p) {
            slices.push((last_break, m.pos + 1));
            last_break = m.next_tok.unwrap_or(m.pos + 1);
        }
    }
    slices.push((last_break, rstrip(text).len()));
    slices
}

/// Byte length of a `re_boundary_realignment` match at the start of `s`, and the length of its
/// closing punctuation (the match after `rstrip`).
fn realignment(s: &str) -> Option<(usize, usize)> {
    let is_close = |c: char| {
        matches!(
            c,
            '"' | '\''
                | ')'
                | ']'
                | '}'
                | '\u{2018}'
                | '\u{2019}'
                | '\u{201c}'
                | '\u{201d}'
                | '\u{ab}'
                | '\u{bb}'
        )
    };
    let mut p = 0;
    for c in s.chars() {
        if !is_close(c) {
            return None;
        }
        p += c.len_utf8();
        let rest = &s[p..];
        match rest.chars().next() {
            None => return Some((p, p)),
            Some(w) if w.is_whitespace() => {
                let ws = rest.len() - rest.trim_start_matches(char::is_whitespace).len();
                return Some((p + ws, p));
            }
            Some(_) if rest.starts_with("--") => return Some((p, p)),
            _ => {}
        }
    }
    None
}

/// `PunktTokenizer("english").tokenize(text)` as byte ranges: `_realign_boundaries`, then the
/// non-empty sentences.
pub(crate) fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let p = &*PARAMS;
    let slices = slices_from_text(text, p);
    let mut out = Vec::new();
    let mut realign = 0;
    let nonempty = |s: usize, e: usize| s < e;
    for (i, &(s1, e1)) in slices.iter().enumerate() {
        let s1 = s1 + realign;
        match slices.get(i + 1) {
            None => {
                if nonempty(s1, e1) {
                    out.push((s1, e1));
                }
            }
            Some(&(s2, e2)) => {
                let seg = if s2 <= e2 { &text[s2..e2] } else { "" };
                if let Some((full, close)) = realignment(seg) {
                    out.push((s1, s2 + close));
                    realign = full;
                } else {
                    realign = 0;
                    if nonempty(s1, e1) {
                        out.push((s1, e1));
                    }
                }
            }
        }
    }
    out
}

/// `PunktTokenizer("english").tokenize(text)`.
#[cfg(test)]
pub(crate) fn sentences(text: &str) -> Vec<&str> {
    sentence_spans(text)
        .into_iter()
        .filter_map(|(s, e)| text.get(s..e))
        .collect()
}

/// `instructions_util.count_sentences`.
#[cfg(test)]
pub(crate) fn count_sentences(text: &str) -> usize {
    sentence_spans(text).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_examples() {
        assert_eq!(
            sentences("Dr. Smith went home. He slept."),
            ["Dr. Smith went home.", "He slept."]
        );
        assert_eq!(
            sentences("Very bad acting!!! I promise."),
            ["Very bad acting!!!", "I promise."]
        );
        assert_eq!(sentences("(Sent1.) Sent2."), ["(Sent1.)", "Sent2."]);
        assert_eq!(count_sentences(""), 0);
        assert_eq!(count_sentences("   "), 0);
    }
}
