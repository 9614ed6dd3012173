//! Finding the answer in the answer part of a response.
//!
//! Two protocols, chosen per run:
//! - [`Protocol::LastLine`], the report's: the answer is on the last non-empty line;
//! - [`Protocol::Faith`], FAITH-compatible: FAITH's ordered patterns (the first is the "proper"
//!   format, later ones "lenient"), each with its unique-match rule, applied after
//!   [`normalize`] so that `Answer: **B**` or `CWE‑79` (U+2011) are read as intended.
//!   [`Protocol::FaithStrict`] applies the same patterns to the raw text, reproducing FAITH's
//!   own numbers (including its misses) when comparing with published results.
//!
//! Every extraction ends as [`Extraction::Valid`] with its format, or [`Extraction::Invalid`]
//! with the reason, so an invalid answer is never silently scored as merely wrong.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::attack::{find_technique_ids, TechniqueId};
use crate::cvss::{self, Vector};
use crate::cwe::{find_cwe_ids, CweId};
use crate::mcq::{ChoiceSpec, LetterSet};

/// Which answer-extraction protocol to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The answer is on the last non-empty line of the answer part.
    #[default]
    LastLine,
    /// FAITH's ordered patterns and unique-match rules on normalised text.
    Faith,
    /// FAITH's patterns on the raw text, exactly as FAITH applies them.
    FaithStrict,
}

/// The CLI's spelling (`last-line`, `faith`, `faith-strict`), which [`FromStr`] reads back.
///
/// [`FromStr`]: std::str::FromStr
impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LastLine => "last-line",
            Self::Faith => "faith",
            Self::FaithStrict => "faith-strict",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "last-line" | "last_line" => Ok(Self::LastLine),
            "faith" => Ok(Self::Faith),
            "faith-strict" | "faith_strict" => Ok(Self::FaithStrict),
            other => Err(format!(
                "unknown extraction protocol {other:?} (expected last-line, faith or faith-strict)"
            )),
        }
    }
}

/// How well the answer followed the requested format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// The requested format (the last line; FAITH's first pattern).
    Proper,
    /// Found by a fallback pattern.
    Lenient,
}

/// Why no answer could be taken from a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InvalidReason {
    #[error("reasoning was cut off before the answer")]
    Truncated,
    #[error("the answer is empty")]
    EmptyAnswer,
    #[error("no answer in the expected form")]
    NoMatch,
    #[error("several different answers: {}", candidates.join(", "))]
    Ambiguous { candidates: Vec<String> },
    #[error("{value:?} is not one of the options")]
    OutOfRange { value: String },
    #[error("{candidate:?} is not valid: {detail}")]
    Unparseable { candidate: String, detail: String },
}

/// The outcome of extracting an answer of type `T`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "validity", rename_all = "snake_case")]
pub enum Extraction<T> {
    Valid { value: T, format: AnswerFormat },
    Invalid { reason: InvalidReason },
}

impl<T> Extraction<T> {
    pub fn proper(value: T) -> Self {
        Self::Valid {
            value,
            format: AnswerFormat::Proper,
        }
    }

    pub fn lenient(value: T) -> Self {
        Self::Valid {
            value,
            format: AnswerFormat::Lenient,
        }
    }

    pub fn invalid(reason: InvalidReason) -> Self {
        Self::Invalid { reason }
    }

    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Valid { value, .. } => Some(value),
            Self::Invalid { .. } => None,
        }
    }

    pub fn format(&self) -> Option<AnswerFormat> {
        match self {
            Self::Valid { format, .. } => Some(*format),
            Self::Invalid { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&InvalidReason> {
        match self {
            Self::Valid { .. } => None,
            Self::Invalid { reason } => Some(reason),
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Extraction<U> {
        match self {
            Self::Valid { value, format } => Extraction::Valid {
                value: f(value),
                format,
            },
            Self::Invalid { reason } => Extraction::Invalid { reason },
        }
    }
}

impl<T: fmt::Display> fmt::Display for Extraction<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Valid { value, format } => write!(f, "{value} ({format:?})"),
            Self::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

static BOXED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\\(?:boxed|text|textbf|mathrm)\{([^{}]*)\}").expect("regex"));

/// Undoes the formatting models put around answers: Unicode dashes become `-`, full-width
/// ASCII becomes ASCII, odd spaces become spaces, zero-width characters go, Markdown emphasis
/// (`*`, `__`, backticks) and LaTeX `\boxed{…}` are removed. Line structure is kept.
pub fn normalize(text: &str) -> Cow<'_, str> {
    let needs = text.contains("__")
        || text
            .chars()
            .any(|c| !c.is_ascii() || matches!(c, '*' | '`' | '\\' | '\r'));
    if !needs {
        return Cow::Borrowed(text);
    }
    let unboxed = BOXED.replace_all(text, "$1");
    let mut out = String::with_capacity(unboxed.len());
    let mut chars = unboxed.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => {
                out.push('-')
            }
            '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => {
                out.push(' ')
            }
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\r' => {}
            '\u{FF01}'..='\u{FF5E}' => {
                out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c));
            }
            '\u{2018}' | '\u{2019}' => out.push('\''),
            '\u{201C}' | '\u{201D}' => out.push('"'),
            '*' | '`' => {}
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
            }
            '$' => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The last line of `text` that is not blank, trimmed.
pub fn last_nonempty_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rev().find(|l| !l.is_empty())
}

/// The last-line protocol with its fallback chain. The last non-empty line decides when it
/// holds an answer (proper format) or several different ones (ambiguous). When it holds none —
/// real models often close with a remark after the answer ("CWE-79" then "This CWE entry
/// covers …") — the last earlier line that is answer-shaped (`shaped`) and holds exactly one
/// answer is taken, marked [`AnswerFormat::Lenient`]; the verdict says so in its reasons.
/// Unlike FAITH's whole-text patterns, two different answers on that line are still ambiguous,
/// and lines above it are never consulted.
pub(crate) fn last_line_with_fallback<T>(
    text: &str,
    shaped: impl Fn(&str) -> bool,
    on_line: impl Fn(&str) -> Extraction<T>,
) -> Extraction<T> {
    let mut lines = text.lines().map(str::trim).rev().filter(|l| !l.is_empty());
    let Some(last) = lines.next() else {
        return Extraction::invalid(InvalidReason::EmptyAnswer);
    };
    let first = on_line(last);
    if first.reason() != Some(&InvalidReason::NoMatch) {
        return first;
    }
    match lines.find(|l| shaped(l)).map(&on_line) {
        Some(Extraction::Valid { value, .. }) => Extraction::lenient(value),
        Some(invalid @ Extraction::Invalid { .. })
            if invalid.reason() != Some(&InvalidReason::NoMatch) =>
        {
            invalid
        }
        _ => first,
    }
}

/// How several matches of one pattern are resolved (FAITH's `disambiguation`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// All matches must give the same value.
    Unique,
    /// There must be exactly one match.
    Singular,
}

/// Outcome of one pattern over a text.
enum PatternHit<T> {
    None,
    Ambiguous(Vec<String>),
    One(T),
}

/// Applies `regex` to `text`, turning each first capture into a value with `transform`, and
/// resolves several matches with `rule`. Values that fail to transform are dropped.
fn apply_pattern<T: PartialEq + fmt::Display>(
    regex: &Regex,
    rule: Rule,
    text: &str,
    transform: impl Fn(&str) -> Option<T>,
) -> PatternHit<T> {
    let mut values: Vec<T> = Vec::new();
    let mut matches = 0usize;
    for caps in regex.captures_iter(text) {
        let Some(m) = caps.get(1) else { continue };
        matches += 1;
        if let Some(v) = transform(m.as_str()) {
            if !values.contains(&v) {
                values.push(v);
            }
        }
    }
    match (values.len(), rule) {
        (0, _) => PatternHit::None,
        (1, Rule::Unique) => PatternHit::One(values.remove(0)),
        (1, Rule::Singular) if matches == 1 => PatternHit::One(values.remove(0)),
        _ => PatternHit::Ambiguous(values.iter().map(ToString::to_string).collect()),
    }
}

/// Runs FAITH's ordered patterns: the first pattern with a result wins; the first pattern is
/// the proper format, later ones lenient.
fn sequential<T: PartialEq + fmt::Display>(
    text: &str,
    patterns: &[(&Regex, Rule)],
    transform: impl Fn(usize, &str) -> Option<T>,
) -> Extraction<T> {
    let mut ambiguous: Option<Vec<String>> = None;
    for (i, (regex, rule)) in patterns.iter().enumerate() {
        match apply_pattern(regex, *rule, text, |s| transform(i, s)) {
            PatternHit::One(v) if i == 0 => return Extraction::proper(v),
            PatternHit::One(v) => return Extraction::lenient(v),
            PatternHit::Ambiguous(c) => {
                ambiguous.get_or_insert(c);
            }
            PatternHit::None => {}
        }
    }
    Extraction::invalid(match ambiguous {
        Some(candidates) => InvalidReason::Ambiguous { candidates },
        None => InvalidReason::NoMatch,
    })
}

fn empty_check(answer: &str) -> Option<InvalidReason> {
    answer
        .trim()
        .is_empty()
        .then_some(InvalidReason::EmptyAnswer)
}

// ---------------------------------------------------------------------------------------------
// Multiple choice

static MCQ_PROPER_ABCD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\banswer\s*:\s*\(?([A-D])\b").expect("regex"));
static MCQ_PROPER_MULTI: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i:\banswer)\s*:\s*\(?((?:[A-Z]\)?\s*(?:,|;|/|&|\band\b)\s*\(?)*[A-Z]+)\b")
        .expect("regex")
});
static MCQ_ANSWER_IS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\banswer\s+is:?\s+(?:\(|\*\*)?([A-Z])\b").expect("regex"));
static MCQ_PAREN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\(([A-Z])\)").expect("regex"));
static MCQ_OPTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\boption\s+([A-Z])\b").expect("regex"));
static MCQ_ONLY_LETTER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\W*([A-Z])\W*$").expect("regex"));
/// Words that introduce the answer on the last line ("Final answer: B", "The answer is C").
static MCQ_LEAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:final\s+answer|correct\s+answers?|answers?|correct\s+options?|options?|choices?)\b(?:\s*(?:is|are|would\s+be|:|=|-))*\s*",
    )
    .expect("regex")
});

/// The letters one line answers with.
fn mcq_on_line(line: &str, spec: &ChoiceSpec) -> Extraction<LetterSet> {
    // Prefer what follows the last "answer is"/"Answer:" lead; a line such as
    // "C. This option is right" has a lead word inside its prose, so fall back to the
    // whole line.
    let after_lead = MCQ_LEAD.find_iter(line).last().map(|m| &line[m.end()..]);
    let parsed = match after_lead {
        Some(segment) => parse_letter_list(segment, spec)
            .or_else(|e| parse_letter_list(line, spec).map_err(|_| e)),
        None => parse_letter_list(line, spec),
    };
    match parsed {
        Ok(set) => Extraction::proper(set),
        Err(r) => Extraction::invalid(r),
    }
}

/// Extracts option letters from the answer part of a multiple-choice response.
pub fn mcq(answer: &str, protocol: Protocol, spec: &ChoiceSpec) -> Extraction<LetterSet> {
    if let Some(r) = empty_check(answer) {
        return Extraction::invalid(r);
    }
    let extraction = match protocol {
        Protocol::LastLine => {
            // An earlier line counts only when it announces its letter ("Answer: B"): prose
            // lines are full of single capitals ("A vector …").
            let shaped =
                |line: &str| MCQ_PROPER_ABCD.is_match(line) || MCQ_ANSWER_IS.is_match(line);
            last_line_with_fallback(&normalize(answer), shaped, |line| mcq_on_line(line, spec))
        }
        Protocol::Faith | Protocol::FaithStrict => {
            let text = match protocol {
                Protocol::Faith => normalize(answer),
                _ => Cow::Borrowed(answer),
            };
            let proper: &Regex = if spec.multi {
                &MCQ_PROPER_MULTI
            } else {
                &MCQ_PROPER_ABCD
            };
            let patterns = [
                (proper, Rule::Unique),
                (&*MCQ_ANSWER_IS, Rule::Unique),
                (&*MCQ_PAREN, Rule::Singular),
                (&*MCQ_OPTION, Rule::Singular),
                (&*MCQ_ONLY_LETTER, Rule::Singular),
            ];
            sequential(&text, &patterns, |i, s| {
                if i == 0 && spec.multi {
                    let mut set = LetterSet::default();
                    s.chars().filter(char::is_ascii_uppercase).for_each(|c| {
                        set.insert(c);
                    });
                    Some(set)
                } else {
                    s.chars().next().and_then(LetterSet::single)
                }
            })
        }
    };
    // FAITH itself keeps out-of-range letters from its lenient patterns (they then score as
    // wrong); the other protocols call them invalid.
    match extraction {
        Extraction::Valid { value, .. } if !spec.multi && value.len() > 1 => {
            Extraction::invalid(InvalidReason::Ambiguous {
                candidates: value.letters().map(String::from).collect(),
            })
        }
        Extraction::Valid { value, .. }
            if protocol != Protocol::FaithStrict && value.first_outside(spec).is_some() =>
        {
            Extraction::invalid(InvalidReason::OutOfRange {
                value: value.to_string(),
            })
        }
        other => other,
    }
}

/// Reads a list of option letters at the start of `segment`: `B`, `(B)`, `B.`, `B) text`,
/// `A, C`, `A and C`, `AC` (multi only). A letter directly followed by a word without any
/// punctuation (`A buffer overflow`) is prose, not an answer.
fn parse_letter_list(segment: &str, spec: &ChoiceSpec) -> Result<LetterSet, InvalidReason> {
    const OPENERS: &[char] = &['(', '[', '{', '"', '\'', ':', '>', '#', '-'];
    const CLOSERS: &[char] = &[')', ']', '}', '"', '\''];
    let s: Vec<char> = segment.chars().collect();
    let n = s.len();
    let skip = |mut i: usize, set: &[char]| {
        while i < n && (s[i].is_whitespace() || set.contains(&s[i])) {
            i += 1;
        }
        i
    };
    let mut set = LetterSet::default();
    let mut i = skip(0, OPENERS);
    // Position just after the last accepted letter token (before any separator).
    let mut end_of_list = i;
    // Whether the last accepted token was closed by punctuation, so prose may follow it.
    let mut delimited = false;
    loop {
        let start = i;
        while i < n && s[i].is_alphanumeric() {
            i += 1;
        }
        let word = &s[start..i];
        let before = start.checked_sub(1).map(|j| s[j]);
        let after = s.get(i).copied();
        let accepted = match word {
            [c] if c.is_ascii_uppercase() => set.insert(*c),
            // A lone lower-case letter is often an article: accept it only when marked up.
            [c] if c.is_ascii_lowercase()
                && (matches!(before, Some('(' | '['))
                    || matches!(after, None | Some(')' | '.' | ']' | ','))) =>
            {
                set.insert(*c)
            }
            w if spec.multi
                && w.len() > 1
                && w.iter().all(|c| spec.allows(*c))
                && (1..w.len()).all(|k| !w[..k].contains(&w[k])) =>
            {
                for c in w {
                    set.insert(*c);
                }
                true
            }
            _ => false,
        };
        if !accepted {
            break;
        }
        let mut j = i;
        delimited = false;
        while j < n && (CLOSERS.contains(&s[j]) || s[j] == '.') {
            j += 1;
            delimited = true;
        }
        i = j;
        end_of_list = i;
        // A separator continues the list.
        let k = skip(i, &[]);
        let next = if k < n && matches!(s[k], ',' | ';' | '/' | '&' | '+') {
            Some(k + 1)
        } else {
            let word_at = |w: &str| {
                let len = w.chars().count();
                k + len <= n
                    && s[k..k + len]
                        .iter()
                        .zip(w.chars())
                        .all(|(a, b)| a.to_ascii_lowercase() == b)
                    && s.get(k + len).is_none_or(|c| !c.is_alphanumeric())
            };
            if word_at("and") {
                Some(k + 3)
            } else if word_at("or") {
                Some(k + 2)
            } else {
                None
            }
        };
        match next {
            Some(p) => i = skip(p, OPENERS),
            None => break,
        }
    }
    if set.is_empty() {
        return Err(InvalidReason::NoMatch);
    }
    let rest: String = s[end_of_list..].iter().collect();
    let rest = rest.trim();
    let explanation_follows = delimited
        || rest.is_empty()
        || rest.starts_with([':', '-', ',', ';', '(', '\u{2013}', '\u{2014}']);
    if !explanation_follows {
        return Err(InvalidReason::NoMatch);
    }
    Ok(set)
}

// ---------------------------------------------------------------------------------------------
// CWE

static CWE_PROPER_STRICT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(cwe[\x{2011}-]\d+)\b").expect("regex"));
static CWE_LENIENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:cwe|id):\s+(\d+)\b").expect("regex"));

/// The one CWE id a line answers with.
fn cwe_on_line(line: &str) -> Extraction<CweId> {
    let mut ids: Vec<CweId> = Vec::new();
    for (id, _) in find_cwe_ids(line) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    match ids.len() {
        0 => Extraction::invalid(InvalidReason::NoMatch),
        1 => Extraction::proper(ids[0]),
        _ => Extraction::invalid(InvalidReason::Ambiguous {
            candidates: ids.iter().map(ToString::to_string).collect(),
        }),
    }
}

/// Extracts a CWE id from the answer part of a CVE→CWE response.
pub fn cwe(answer: &str, protocol: Protocol) -> Extraction<CweId> {
    if let Some(r) = empty_check(answer) {
        return Extraction::invalid(r);
    }
    match protocol {
        Protocol::LastLine => last_line_with_fallback(&normalize(answer), |_| true, cwe_on_line),
        Protocol::Faith | Protocol::FaithStrict => {
            let text = match protocol {
                Protocol::Faith => normalize(answer),
                _ => Cow::Borrowed(answer),
            };
            let patterns = [
                (&*CWE_PROPER_STRICT, Rule::Unique),
                (&*CWE_LENIENT, Rule::Unique),
            ];
            sequential(&text, &patterns, |i, s| {
                if i == 0 {
                    let digits = s.trim_start_matches(|c: char| !c.is_ascii_digit());
                    format!("CWE-{digits}").parse().ok()
                } else {
                    format!("CWE-{s}").parse().ok()
                }
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CVSS

/// Anything shaped like a CVSS vector: optional `CVSS:x.y/` prefix, then `M:V` pairs.
static CVSS_CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\bcvss:\d+(?:\.\d+)?/)?\b\w+:\w+(?:/\w+:\w+)+").expect("regex")
});
static CVSS_PROPER_STRICT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(cvss:3\.\d(?:/\w+:\w+)+)\b").expect("regex"));
static CVSS_PROPER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(cvss:\d\.\d(?:/\w+:\w+)+)\b").expect("regex"));
static CVSS_LENIENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)((?:/\w+:\w+){2,})\b").expect("regex"));

/// The one vector-shaped candidate a line answers with.
fn cvss_on_line(line: &str) -> Extraction<String> {
    let mut found: Vec<String> = Vec::new();
    for m in CVSS_CANDIDATE.find_iter(line) {
        // Case is kept: CVSS v2 has a mixed-case metric (`Au`); the parser folds an
        // all-lowercase vector itself.
        let v = m.as_str().to_owned();
        if !found.contains(&v) {
            found.push(v);
        }
    }
    match found.len() {
        0 => Extraction::invalid(InvalidReason::NoMatch),
        1 => Extraction::proper(found.remove(0)),
        _ => Extraction::invalid(InvalidReason::Ambiguous { candidates: found }),
    }
}

/// Extracts and validates a CVSS vector. A vector written without its `CVSS:x.y/` prefix is
/// read as `default_version` (the version the benchmark asks for).
pub fn cvss(
    answer: &str,
    protocol: Protocol,
    default_version: cvss::Version,
) -> Extraction<Vector> {
    if let Some(r) = empty_check(answer) {
        return Extraction::invalid(r);
    }
    let candidate: Extraction<String> = match protocol {
        Protocol::LastLine => last_line_with_fallback(&normalize(answer), |_| true, cvss_on_line),
        Protocol::Faith | Protocol::FaithStrict => {
            let strict = protocol == Protocol::FaithStrict;
            let text = if strict {
                Cow::Borrowed(answer)
            } else {
                normalize(answer)
            };
            let proper: &Regex = if strict {
                &CVSS_PROPER_STRICT
            } else {
                &CVSS_PROPER
            };
            let patterns = [(proper, Rule::Unique), (&*CVSS_LENIENT, Rule::Unique)];
            // FAITH prefixes an unprefixed vector with "CVSS:3.0"; Metis uses the version the
            // benchmark asks for unless reproducing FAITH exactly.
            let prefix = if strict {
                "CVSS:3.0".to_owned()
            } else {
                format!("CVSS:{default_version}")
            };
            sequential(&text, &patterns, |i, s| {
                // FAITH upper-cases the match (which breaks v2's `Au`); only `faith-strict`
                // reproduces that.
                let v = if strict {
                    s.trim().to_ascii_uppercase()
                } else {
                    s.trim().to_owned()
                };
                Some(if i == 0 { v } else { format!("{prefix}{v}") })
            })
        }
    };
    match candidate {
        Extraction::Valid { value, format } => match Vector::parse_as(&value, default_version) {
            Ok(vector) => Extraction::Valid {
                value: vector,
                format,
            },
            Err(e) => Extraction::invalid(InvalidReason::Unparseable {
                candidate: value,
                detail: e.to_string(),
            }),
        },
        Extraction::Invalid { reason } => Extraction::invalid(reason),
    }
}

// ---------------------------------------------------------------------------------------------
// ATT&CK

static ATTACK_ANSWER_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?im)\banswer\s*:([^\n]*)").expect("regex"));
static ATTACK_PROPER_STRICT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\banswer\s*:\s*((?:t\d+,\s*)*t\d+)\b").expect("regex"));

/// A set of technique ids, displayed comma-separated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TechniqueSet(pub BTreeSet<TechniqueId>);

impl fmt::Display for TechniqueSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

fn ids_in(text: &str) -> TechniqueSet {
    TechniqueSet(
        find_technique_ids(text)
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
    )
}

/// Extracts the set of ATT&CK technique ids a response names as its answer.
pub fn attack(answer: &str, protocol: Protocol) -> Extraction<TechniqueSet> {
    if let Some(r) = empty_check(answer) {
        return Extraction::invalid(r);
    }
    match protocol {
        Protocol::LastLine => last_line_with_fallback(
            &normalize(answer),
            |_| true,
            |line| {
                let set = ids_in(line);
                if set.0.is_empty() {
                    Extraction::invalid(InvalidReason::NoMatch)
                } else {
                    Extraction::proper(set)
                }
            },
        ),
        Protocol::Faith => {
            let text = normalize(answer);
            match apply_pattern(&ATTACK_ANSWER_LINE, Rule::Unique, &text, |rest| {
                let set = ids_in(rest);
                (!set.0.is_empty()).then_some(set)
            }) {
                PatternHit::One(set) => Extraction::proper(set),
                PatternHit::Ambiguous(candidates) => {
                    Extraction::invalid(InvalidReason::Ambiguous { candidates })
                }
                PatternHit::None => {
                    // Fall back to the last line that names any technique.
                    match text.lines().rev().map(ids_in).find(|s| !s.0.is_empty()) {
                        Some(set) => Extraction::lenient(set),
                        None => Extraction::invalid(InvalidReason::NoMatch),
                    }
                }
            }
        }
        Protocol::FaithStrict => {
            sequential(answer, &[(&*ATTACK_PROPER_STRICT, Rule::Unique)], |_, s| {
                let ids: Option<BTreeSet<TechniqueId>> = s
                    .split(',')
                    .map(|t| t.trim().to_ascii_uppercase().parse().ok())
                    .collect();
                ids.map(TechniqueSet)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(answer: &str, protocol: Protocol) -> Option<String> {
        mcq(answer, protocol, &ChoiceSpec::SINGLE_ABCD)
            .value()
            .map(ToString::to_string)
    }

    #[test]
    fn normalize_undoes_model_formatting() {
        assert_eq!(normalize("Answer: **B**"), "Answer: B");
        assert_eq!(normalize("CWE\u{2011}79"), "CWE-79");
        assert_eq!(normalize("ＡＮＳＷＥＲ：Ｃ"), "ANSWER:C");
        assert_eq!(normalize("$\\boxed{D}$"), "D");
        assert_eq!(normalize("a\u{00A0}b\u{200B}c"), "a bc");
        assert!(matches!(normalize("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn last_line_falls_back_to_the_last_answer_line_as_lenient() {
        let p = Protocol::LastLine;
        let cwe_ex = cwe(
            "Analysis.\nCWE-79\nThis CWE entry covers cross-site scripting.",
            p,
        );
        assert_eq!(
            cwe_ex.value().map(ToString::to_string).as_deref(),
            Some("CWE-79")
        );
        assert_eq!(cwe_ex.format(), Some(AnswerFormat::Lenient));
        assert_eq!(cwe("CWE-79", p).format(), Some(AnswerFormat::Proper));
        // Two ids on the fallback line stay ambiguous; a last line with two stays ambiguous too.
        assert!(matches!(
            cwe("CWE-79 or CWE-80\nHard to say.", p).reason(),
            Some(InvalidReason::Ambiguous { .. })
        ));
        let v = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
        let cv = cvss(
            &format!("{v}\nThis vector indicates a critical issue."),
            p,
            cvss::Version::V3_1,
        );
        assert_eq!(cv.format(), Some(AnswerFormat::Lenient));
        let at = attack("Answer: T1059, T1071\nThese cover execution and C2.", p);
        assert_eq!(at.format(), Some(AnswerFormat::Lenient));
        assert_eq!(at.value().map(|s| s.0.len()), Some(2));
        assert_eq!(
            cwe("No id anywhere.\nStill none.", p).reason(),
            Some(&InvalidReason::NoMatch)
        );
    }

    #[test]
    fn last_line_mcq_formats() {
        let p = Protocol::LastLine;
        for (text, want) in [
            ("Some reasoning.\n\nAnswer: B", Some("B")),
            ("Answer: **B**", Some("B")),
            ("Answer: (B).", Some("B")),
            ("**Answer:** B", Some("B")),
            ("The correct answer is C.", Some("C")),
            ("Final answer: (d)", Some("D")),
            ("B", Some("B")),
            ("B) Buffer overflow", Some("B")),
            ("C. Use parameterised queries", Some("C")),
            ("D - because it is", Some("D")),
            ("C. This option is right", Some("C")),
            ("ＡＮＳＷＥＲ：Ｃ", Some("C")),
            ("The answer is a buffer overflow.", None),
            ("A buffer overflow", None),
            ("Answer: E", None),
            ("Answer: A, C", None),
            // The fallback chain (issue 12): an announced answer above a closing remark is
            // taken, as lenient (checked below).
            ("Answer: B\n\nI hope this helps!", Some("B")),
            ("B is tempting.\nI am not sure.", None),
            ("", None),
        ] {
            assert_eq!(letters(text, p).as_deref(), want, "{text:?}");
        }
        let closing = mcq(
            "Answer: B\n\nI hope this helps!",
            p,
            &ChoiceSpec::SINGLE_ABCD,
        );
        assert_eq!(closing.format(), Some(AnswerFormat::Lenient));
        let amb = mcq("Answer: A, C", p, &ChoiceSpec::SINGLE_ABCD);
        assert!(matches!(
            amb.reason(),
            Some(InvalidReason::Ambiguous { .. })
        ));
        let out = mcq("Answer: E", p, &ChoiceSpec::SINGLE_ABCD);
        assert!(matches!(
            out.reason(),
            Some(InvalidReason::OutOfRange { .. })
        ));
        let empty = mcq("  \n", p, &ChoiceSpec::SINGLE_ABCD);
        assert_eq!(empty.reason(), Some(&InvalidReason::EmptyAnswer));
    }

    #[test]
    fn last_line_multi_answer() {
        let spec = ChoiceSpec::MULTI_ABCD;
        for (text, want) in [
            ("Answer: A, C", "AC"),
            ("Answer: AC", "AC"),
            ("Answer: A and D", "AD"),
            ("Answer: (B), (D)", "BD"),
            ("Answer: C", "C"),
        ] {
            let got = mcq(text, Protocol::LastLine, &spec);
            assert_eq!(
                got.value().map(ToString::to_string).as_deref(),
                Some(want),
                "{text:?}"
            );
        }
    }

    #[test]
    fn faith_strict_reproduces_faith_table() {
        // The behaviour table in FAITH's protocol notes, pattern by pattern.
        let p = Protocol::FaithStrict;
        let spec = ChoiceSpec::SINGLE_ABCD;
        let f = |t: &str| mcq(t, p, &spec);
        assert_eq!(
            f("Answer: B"),
            Extraction::proper(LetterSet::single('B').unwrap())
        );
        assert_eq!(
            f("answer: (c)"),
            Extraction::proper(LetterSet::single('C').unwrap())
        );
        assert!(!f("Answer: **B**").is_valid());
        assert_eq!(
            f("The answer is **C**"),
            Extraction::lenient(LetterSet::single('C').unwrap())
        );
        assert_eq!(
            f("The answer is a buffer overflow."),
            Extraction::lenient(LetterSet::single('A').unwrap())
        );
        assert!(!f("Answer: A … Answer: B").is_valid());
        assert!(!f("Answer: E").is_valid());
        assert_eq!(
            f("B."),
            Extraction::lenient(LetterSet::single('B').unwrap())
        );
    }

    #[test]
    fn faith_normalised_fixes_markdown() {
        let got = mcq("Answer: **B**", Protocol::Faith, &ChoiceSpec::SINGLE_ABCD);
        assert_eq!(got, Extraction::proper(LetterSet::single('B').unwrap()));
    }

    #[test]
    fn cwe_extraction() {
        let ok = |t: &str, p| cwe(t, p).value().map(ToString::to_string);
        assert_eq!(
            ok("Justification...\nCWE-79", Protocol::LastLine).as_deref(),
            Some("CWE-79")
        );
        assert_eq!(
            ok("**CWE\u{2011}787**", Protocol::LastLine).as_deref(),
            Some("CWE-787")
        );
        assert_eq!(
            ok("Maps to CWE-79.\nAnswer: CWE-79", Protocol::Faith).as_deref(),
            Some("CWE-79")
        );
        let amb = cwe("This is CWE-79 not CWE-80", Protocol::FaithStrict);
        assert!(matches!(
            amb.reason(),
            Some(InvalidReason::Ambiguous { .. })
        ));
        assert_eq!(ok("cwe: 89", Protocol::Faith).as_deref(), Some("CWE-89"));
        assert_eq!(
            cwe("cwe: 89", Protocol::Faith).format(),
            Some(AnswerFormat::Lenient)
        );
        assert!(!cwe("no id here", Protocol::LastLine).is_valid());
    }

    #[test]
    fn cvss_extraction() {
        let v31 = cvss::Version::V3_1;
        let got = cvss(
            "Vector:\n`CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`",
            Protocol::LastLine,
            v31,
        );
        assert_eq!(got.value().map(|v| v.base_score()), Some(9.8));
        let bare = cvss(
            "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            Protocol::LastLine,
            v31,
        );
        assert_eq!(bare.value().map(|v| v.version()), Some(v31));
        let bad = cvss(
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            Protocol::LastLine,
            v31,
        );
        assert!(matches!(
            bad.reason(),
            Some(InvalidReason::Unparseable { .. })
        ));
        let strict = cvss(
            "/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            Protocol::FaithStrict,
            v31,
        );
        assert_eq!(
            strict.value().map(|v| v.version()),
            Some(cvss::Version::V3_0)
        );
        assert_eq!(strict.format(), Some(AnswerFormat::Lenient));
        // CVSS v2's mixed-case `Au` survives extraction (as written, or all lowercase).
        let v2 = cvss::Version::V2_0;
        for answer in [
            "Answer: AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "av:n/ac:l/au:n/c:p/i:p/a:p",
        ] {
            let got = cvss(answer, Protocol::LastLine, v2);
            assert_eq!(
                got.value().map(|v| v.base_score()),
                Some(7.5),
                "{answer}: {got:?}"
            );
        }
    }

    #[test]
    fn attack_extraction() {
        let got = attack(
            "Reasoning\nAnswer: T1059.001, T1071 and T1105",
            Protocol::LastLine,
        );
        assert_eq!(
            got.value().map(ToString::to_string).as_deref(),
            Some("T1059.001, T1071, T1105")
        );
        let strict = attack("Answer: T1059.001, T1071", Protocol::FaithStrict);
        // FAITH stops at the dot of a sub-technique.
        assert_eq!(
            strict.value().map(ToString::to_string).as_deref(),
            Some("T1059")
        );
        let faith = attack("**Answer:** [T1566, T1204]", Protocol::Faith);
        assert_eq!(
            faith.value().map(ToString::to_string).as_deref(),
            Some("T1204, T1566")
        );
    }
}
