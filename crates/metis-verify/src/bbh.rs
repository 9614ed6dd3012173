//! BIG-Bench Hard (BBH) answers: the answer type of each of the 27 tasks, reading a model's
//! answer as that type, and lm-eval's own extraction for reproducing published numbers.
//!
//! BBH (Suzgun et al., arXiv:2210.09261; data `suzgunmirac/BIG-Bench-Hard@9ee07bd4`) scores
//! exact match of the answer after "So the answer is". Its targets come in eight shapes
//! ([`BbhAnswer`]): an option `(A)`…`(R)`, `True`/`False`, `Yes`/`No`, `valid`/`invalid`, an
//! integer, the closing brackets of a Dyck word, a sorted word list, or free text (three
//! multiple-choice rows have a text target: `movie_recommendation` #163 `Monsters, Inc`,
//! `ruin_names` #99 and #144).
//!
//! Two extractions ([`BbhExtraction`]):
//!
//! - [`BbhExtraction::Upstream`] is lm-eval's `bbh_cot_fewshot` filter and metric byte for byte
//!   (`EleutherAI/lm-evaluation-harness`, `lm_eval/tasks/bbh/cot_fewshot/
//!   _cot_fewshot_template_yaml`, metadata version 4.0): the first match of
//!   `(?<=the answer is )(.*)(?=.)`, stripped (`RegexFilter`, `take_first`), compared with the
//!   target as a raw string. It inherits the regex's bugs: the lookahead gives back the last
//!   character of the line, so a final "True" without a period becomes "Tru", and only the
//!   lower-case "the answer is" is seen.
//! - [`BbhExtraction::Fixed`], the default, reads the answer a model means: the last
//!   "the answer is" / "The answer:" / "The final answer:" (any case, Markdown and LaTeX
//!   wrappers removed) whose text reads as the task's type, else the last line; then compares
//!   by type (option letters, case-insensitive booleans, integers as numbers, brackets and
//!   words as token sequences, free text without case and punctuation).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::extract::{last_line_with_fallback, normalize, Extraction, InvalidReason};

/// The shape of a BBH answer, which decides how it is read and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BbhAnswer {
    /// An option letter, `(A)`…`(Z)` (17 of the 27 tasks, the most common type, hence the default). A gold that is
    /// not a letter (BBH's three text targets) is compared as [`BbhAnswer::FreeText`].
    #[default]
    MultipleChoice,
    /// `True` / `False`.
    Boolean,
    /// `Yes` / `No`.
    YesNo,
    /// `valid` / `invalid`.
    Validity,
    /// An integer, possibly negative; `11,520` and `11520.0` read as 11520.
    Integer,
    /// The closing brackets of a Dyck word (`] ] >`), compared bracket by bracket.
    Dyck,
    /// A word list, compared word by word (case, commas and surrounding punctuation ignored).
    SortedWords,
    /// Any text, compared without case, punctuation and extra whitespace.
    FreeText,
}

impl BbhAnswer {
    pub const ALL: [BbhAnswer; 8] = [
        Self::MultipleChoice,
        Self::Boolean,
        Self::YesNo,
        Self::Validity,
        Self::Integer,
        Self::Dyck,
        Self::SortedWords,
        Self::FreeText,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::MultipleChoice => "multiple_choice",
            Self::Boolean => "boolean",
            Self::YesNo => "yes_no",
            Self::Validity => "validity",
            Self::Integer => "integer",
            Self::Dyck => "dyck",
            Self::SortedWords => "sorted_words",
            Self::FreeText => "free_text",
        }
    }
}

impl fmt::Display for BbhAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BbhAnswer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s || a.name().replace('_', "-") == s)
            .ok_or_else(|| {
                format!(
                    "unknown BBH answer type {s:?} (expected {})",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }
}

/// Which extraction decides a BBH item's `correct`; both are reported as metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BbhExtraction {
    /// The last answer phrase that reads as the task's type (else the last line), compared by
    /// type.
    #[default]
    Fixed,
    /// lm-eval `bbh_cot_fewshot`: first `(?<=the answer is )(.*)(?=.)`, raw exact match.
    Upstream,
}

impl FromStr for BbhExtraction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "upstream" => Ok(Self::Upstream),
            other => Err(format!(
                "unknown BBH extraction {other:?} (expected fixed or upstream)"
            )),
        }
    }
}

/// The 27 BBH tasks (the file stems of `bbh/*.json`) and the answer type of each, as the
/// targets of `suzgunmirac/BIG-Bench-Hard@9ee07bd4` are written.
pub const TASKS: [(&str, BbhAnswer); 27] = {
    use BbhAnswer::*;
    [
        ("boolean_expressions", Boolean),
        ("causal_judgement", YesNo),
        ("date_understanding", MultipleChoice),
        ("disambiguation_qa", MultipleChoice),
        ("dyck_languages", Dyck),
        ("formal_fallacies", Validity),
        ("geometric_shapes", MultipleChoice),
        ("hyperbaton", MultipleChoice),
        ("logical_deduction_five_objects", MultipleChoice),
        ("logical_deduction_seven_objects", MultipleChoice),
        ("logical_deduction_three_objects", MultipleChoice),
        ("movie_recommendation", MultipleChoice),
        ("multistep_arithmetic_two", Integer),
        ("navigate", YesNo),
        ("object_counting", Integer),
        ("penguins_in_a_table", MultipleChoice),
        ("reasoning_about_colored_objects", MultipleChoice),
        ("ruin_names", MultipleChoice),
        ("salient_translation_error_detection", MultipleChoice),
        ("snarks", MultipleChoice),
        ("sports_understanding", YesNo),
        ("temporal_sequences", MultipleChoice),
        ("tracking_shuffled_objects_five_objects", MultipleChoice),
        ("tracking_shuffled_objects_seven_objects", MultipleChoice),
        ("tracking_shuffled_objects_three_objects", MultipleChoice),
        ("web_of_lies", YesNo),
        ("word_sorting", SortedWords),
    ]
};

/// The answer type of BBH task `task` (`None` for a name that is not one of the 27).
pub fn answer_type(task: &str) -> Option<BbhAnswer> {
    TASKS.iter().find(|(t, _)| *t == task).map(|(_, a)| *a)
}

// ---------------------------------------------------------------------------------------------
// Values

/// A BBH answer read as its type: a gold target or a model's prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BbhValue {
    /// An option letter, upper case.
    Letter(char),
    Boolean(bool),
    YesNo(bool),
    Validity(bool),
    Integer(i64),
    /// Bracket characters in order, without separators.
    Brackets(String),
    /// Lower-cased words in order.
    Words(Vec<String>),
    /// Lower-cased text with punctuation turned into spaces and whitespace collapsed.
    Text(String),
}

impl fmt::Display for BbhValue {
    /// The canonical form, as BBH writes its targets (`(B)`, `True`, `Yes`, `valid`, `] ] >`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pick = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
        match self {
            Self::Letter(c) => write!(f, "({c})"),
            Self::Boolean(b) => f.write_str(pick(*b, "True", "False")),
            Self::YesNo(b) => f.write_str(pick(*b, "Yes", "No")),
            Self::Validity(b) => f.write_str(pick(*b, "valid", "invalid")),
            Self::Integer(n) => write!(f, "{n}"),
            Self::Brackets(s) => {
                let spaced: Vec<String> = s.chars().map(String::from).collect();
                f.write_str(&spaced.join(" "))
            }
            Self::Words(w) => f.write_str(&w.join(" ")),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// A parsed BBH gold answer: the target as the dataset writes it (what upstream matching
/// compares against) and its reading as the answer type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BbhGold {
    pub answer: BbhAnswer,
    pub target: String,
    pub value: BbhValue,
}

/// Parses a gold target as `answer`. Multiple choice accepts a text target (BBH's three
/// non-letter targets) as free text; every other type must read as itself.
pub fn parse_gold(target: &str, answer: BbhAnswer) -> Result<BbhGold, String> {
    let trimmed = target.trim();
    if trimmed.is_empty() {
        return Err("empty target".to_owned());
    }
    let value = match answer {
        BbhAnswer::MultipleChoice => read_letter(trimmed, Context::Line)
            .map(BbhValue::Letter)
            .or_else(|| read_text(trimmed)),
        other => read(trimmed, other, Context::Line),
    };
    value
        .map(|value| BbhGold {
            answer,
            target: target.to_owned(),
            value,
        })
        .ok_or_else(|| format!("{target:?} is not a {answer} answer"))
}

/// Whether a prediction is the gold: equal values of the same type.
pub fn matches(prediction: &BbhValue, gold: &BbhGold) -> bool {
    *prediction == gold.value
}

// ---------------------------------------------------------------------------------------------
// Fixed extraction

/// "the answer is", "The answer:", "The final answer is:", "Answer:" in any case. "is" must
/// be a word of its own ("the answer isn't" is no answer).
static ANSWER_PHRASE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?im)\banswer(?:\s+is(?:\s*:|[ \t]+|$)|\s*:)").expect("regex"));

/// Where a candidate answer was found, which decides how much text may follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// After an answer phrase: the answer opens the text, and prose may follow it.
    Phrase,
    /// A line on its own: the whole line must be the answer.
    Line,
}

/// The text each answer phrase introduces, in order: the rest of its line, or the next
/// non-empty line when the phrase ends its line ("**Final answer:**" then "(B)").
fn phrase_candidates(text: &str) -> Vec<&str> {
    ANSWER_PHRASE
        .find_iter(text)
        .filter_map(|m| {
            let rest = &text[m.end()..];
            let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
            let line = line.trim();
            if !line.is_empty() {
                return Some(line);
            }
            after.lines().map(str::trim).find(|l| !l.is_empty())
        })
        .collect()
}

/// Reads the answer of a response's answer part (reasoning already removed) as `answer`.
///
/// In order:
/// 1. the last answer phrase whose text reads as the type (the requested format,
///    [`Extraction::proper`]); a phrase followed by prose ("the answer is consistent with …")
///    is passed over;
/// 2. the last non-empty line when it is exactly an answer, else the last earlier line that is
///    ([`Extraction::lenient`]), as Metis's other verifiers fall back;
/// 3. for multiple choice, the last phrase's text as free text (BBH's text targets);
/// 4. otherwise invalid: `Unparseable` naming the last phrase's text, or `NoMatch`.
pub fn extract_fixed(answer_part: &str, answer: BbhAnswer) -> Extraction<BbhValue> {
    let text = normalize(answer_part);
    if text.trim().is_empty() {
        return Extraction::invalid(InvalidReason::EmptyAnswer);
    }
    let candidates = phrase_candidates(&text);
    if let Some(v) = candidates
        .iter()
        .rev()
        .find_map(|c| read(c, answer, Context::Phrase))
    {
        return Extraction::proper(v);
    }
    let on_line = |line: &str| match read(line, answer, Context::Line) {
        Some(v) => Extraction::lenient(v),
        None => Extraction::invalid(InvalidReason::NoMatch),
    };
    let shaped = |line: &str| read(line, answer, Context::Line).is_some();
    let from_line = last_line_with_fallback(&text, shaped, on_line);
    let Some(last_phrase) = candidates.last().filter(|_| !from_line.is_valid()) else {
        return from_line;
    };
    if answer == BbhAnswer::MultipleChoice {
        if let Some(v) = read_text(first_sentence(last_phrase)) {
            return Extraction::proper(v);
        }
    }
    Extraction::invalid(InvalidReason::Unparseable {
        candidate: (*last_phrase).to_owned(),
        detail: format!("not a {answer} answer"),
    })
}

/// Reads `candidate` as `answer` (`None` when it is not one).
fn read(candidate: &str, answer: BbhAnswer, ctx: Context) -> Option<BbhValue> {
    let c = candidate.trim().trim_start_matches(['"', '\'', ':']).trim();
    match answer {
        BbhAnswer::MultipleChoice => read_letter(c, ctx).map(BbhValue::Letter),
        BbhAnswer::Boolean => read_word(c, ctx, "true", "false").map(BbhValue::Boolean),
        BbhAnswer::YesNo => read_word(c, ctx, "yes", "no").map(BbhValue::YesNo),
        BbhAnswer::Validity => read_word(c, ctx, "valid", "invalid").map(BbhValue::Validity),
        BbhAnswer::Integer => read_integer(c, ctx).map(BbhValue::Integer),
        BbhAnswer::Dyck => read_brackets(c, ctx).map(BbhValue::Brackets),
        BbhAnswer::SortedWords => read_words(first_sentence(c)).map(BbhValue::Words),
        BbhAnswer::FreeText => read_text(first_sentence(c)),
    }
}

/// Whether what follows an answer token allows it: anything after a phrase, only closing
/// punctuation on a line of its own.
fn rest_ok(rest: &str, ctx: Context) -> bool {
    ctx == Context::Phrase
        || rest
            .chars()
            .all(|c| c.is_whitespace() || matches!(c, '.' | '!' | ')' | '"' | '\''))
}

/// An option letter: `(B)`, `(b)`, `B`, `B)`, `B.`, `(B) option text`, optionally after
/// "option"/"choice". On a line of its own, a capital followed by a bare word is prose
/// ("A good question"), not an answer.
fn read_letter(c: &str, ctx: Context) -> Option<char> {
    let lower = c.to_ascii_lowercase();
    let c = ["option", "choice"]
        .iter()
        .find(|w| lower.starts_with(*w))
        .map_or(c, |w| c[w.len()..].trim_start());
    let mut chars = c.chars();
    match (chars.next(), chars.next(), chars.next()) {
        (Some('('), Some(l), Some(')')) if l.is_ascii_alphabetic() => Some(l.to_ascii_uppercase()),
        (Some(l), None, _) if l.is_ascii_uppercase() => Some(l),
        (Some(l), Some(')' | '.' | ':' | ',' | ';'), _) if l.is_ascii_uppercase() => Some(l),
        (Some(l), Some(s), _) if l.is_ascii_uppercase() && s.is_whitespace() => {
            (ctx == Context::Phrase).then_some(l)
        }
        _ => None,
    }
}

/// A two-valued word (`yes`/`no`), any case, as the first word.
fn read_word(c: &str, ctx: Context, yes: &str, no: &str) -> Option<bool> {
    let c = c.trim_start_matches(|ch: char| !ch.is_alphanumeric());
    let end = c.find(|ch: char| !ch.is_alphabetic()).unwrap_or(c.len());
    let (word, rest) = c.split_at(end);
    let value = match word.to_lowercase() {
        w if w == yes => true,
        w if w == no => false,
        _ => return None,
    };
    rest_ok(rest, ctx).then_some(value)
}

static INTEGER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([-+]?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?").expect("regex"));

/// Number words a model may answer a counting question with.
const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// An integer at the start: `-11520`, `+3`, `11,520` (thousands groups only), `8.0`, or a
/// number word up to twenty. A decimal with a non-zero fraction is not an integer answer.
fn read_integer(c: &str, ctx: Context) -> Option<i64> {
    if let Some(caps) = INTEGER.captures(c) {
        let fraction_ok = caps
            .get(3)
            .is_none_or(|f| f.as_str().bytes().all(|b| b == b'0'));
        let rest = &c[caps[0].len()..];
        let digits = caps[2].replace(',', "");
        let magnitude: i64 = digits.parse().ok()?;
        let starts_digit = rest.starts_with(|ch: char| ch.is_ascii_digit());
        return (fraction_ok && !starts_digit && rest_ok(rest, ctx)).then_some(
            if &caps[1] == "-" {
                -magnitude
            } else {
                magnitude
            },
        );
    }
    let end = c.find(|ch: char| !ch.is_alphabetic()).unwrap_or(c.len());
    let (word, rest) = c.split_at(end);
    let n = NUMBER_WORDS
        .iter()
        .position(|w| w.eq_ignore_ascii_case(word))?;
    rest_ok(rest, ctx).then_some(n as i64)
}

const BRACKETS: [char; 8] = ['(', ')', '[', ']', '{', '}', '<', '>'];

/// The brackets at the start, separated by spaces or commas or not at all (`] ] >`, `]]>`).
fn read_brackets(c: &str, ctx: Context) -> Option<String> {
    let end = c
        .find(|ch: char| !(BRACKETS.contains(&ch) || ch.is_whitespace() || ch == ','))
        .unwrap_or(c.len());
    let (run, rest) = c.split_at(end);
    let brackets: String = run.chars().filter(|ch| BRACKETS.contains(ch)).collect();
    (!brackets.is_empty() && rest_ok(rest, ctx)).then_some(brackets)
}

/// Words separated by whitespace or commas, lower-cased, each without surrounding punctuation
/// (inner `'` and `&` stay: `o'connell`, `r&d`).
fn read_words(c: &str) -> Option<Vec<String>> {
    let words: Vec<String> = c
        .split(|ch: char| ch.is_whitespace() || ch == ',')
        .map(|w| {
            w.trim_matches(|ch: char| !ch.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then_some(words)
}

/// Free text compared without case and punctuation: `Monsters, Inc.` → `monsters inc`.
fn read_text(c: &str) -> Option<BbhValue> {
    let spaced: String = c
        .to_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_punctuation() { ' ' } else { ch })
        .collect();
    let text = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(BbhValue::Text(text))
}

/// The text up to the first sentence end (`.`, `!` or `?` followed by a space or the end),
/// so that an explanation after the answer is not read as part of it.
fn first_sentence(c: &str) -> &str {
    let bytes = c.as_bytes();
    let end = (0..bytes.len()).find(|&i| {
        matches!(bytes[i], b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace())
    });
    end.map_or(c, |i| &c[..i])
}

// ---------------------------------------------------------------------------------------------
// Upstream (lm-eval) extraction

/// The literal lm-eval's lookbehind requires, case-sensitive.
const UPSTREAM_LEAD: &str = "the answer is ";

/// lm-eval `bbh_cot_fewshot`'s answer: the first match of `(?<=the answer is )(.*)(?=.)` in
/// the answer part, stripped as Python's `str.strip()` does. `.` stops at `\n`, and the
/// lookahead needs one more character on the line, so the capture is the rest of the line
/// minus its last character; a lead that ends its line does not match and the search goes
/// on. `None` is lm-eval's `[invalid]`.
pub fn extract_upstream(answer_part: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = answer_part[from..].find(UPSTREAM_LEAD) {
        let start = from + i + UPSTREAM_LEAD.len();
        let rest = &answer_part[start..];
        let line = rest.split('\n').next().unwrap_or_default();
        if let Some((last, _)) = line.char_indices().last() {
            return Some(line[..last].trim_matches(python_space).to_owned());
        }
        from = start;
    }
    None
}

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII separators U+001C–U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// lm-eval's `exact_match` without options: the raw strings are equal.
pub fn upstream_matches(capture: &str, gold: &BbhGold) -> bool {
    capture == gold.target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(text: &str, answer: BbhAnswer) -> Option<String> {
        extract_fixed(text, answer).value().map(ToString::to_string)
    }

    #[test]
    fn table_covers_27_tasks_with_17_multiple_choice() {
        assert_eq!(TASKS.len(), 27);
        let mc = TASKS
            .iter()
            .filter(|(_, a)| *a == BbhAnswer::MultipleChoice)
            .count();
        assert_eq!(mc, 17);
        assert_eq!(answer_type("word_sorting"), Some(BbhAnswer::SortedWords));
        assert_eq!(answer_type("dyck_languages"), Some(BbhAnswer::Dyck));
        assert_eq!(answer_type("bogus"), None);
        for a in BbhAnswer::ALL {
            assert_eq!(a.name().parse::<BbhAnswer>(), Ok(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", a.name()),
                "serde uses the same names"
            );
        }
        assert!("mc".parse::<BbhAnswer>().is_err());
    }

    #[test]
    fn multiple_choice_forms() {
        let mc = BbhAnswer::MultipleChoice;
        for text in [
            "So the answer is (B).",
            "The answer is B",
            "the answer is: B) The Princess Bride",
            "The answer is **(B) The Princess Bride**.",
            "The final answer is $\\boxed{B}$",
            "Final Answer:\n\n(B)",
            "The answer is option (b).",
            "The answer is B because the others do not fit.",
        ] {
            assert_eq!(fixed(text, mc).as_deref(), Some("(B)"), "{text}");
        }
        // The last readable phrase wins; prose after it is passed over.
        assert_eq!(
            fixed(
                "At first the answer is (A). Checking again, the answer is (C).\nThe answer is consistent with the table.",
                mc
            )
            .as_deref(),
            Some("(C)")
        );
        // Without a phrase: a last line that is a letter (lenient), never a capital in prose.
        let ex = extract_fixed("Reasoning.\n(D)", mc);
        assert_eq!(ex.value(), Some(&BbhValue::Letter('D')));
        assert_eq!(ex.format(), Some(crate::AnswerFormat::Lenient));
        assert_eq!(fixed("(E)\nI hope this helps.", mc).as_deref(), Some("(E)"));
        assert_eq!(fixed("A good question.", mc), None);
        // A text answer after a phrase is read as free text (BBH's text targets).
        assert_eq!(
            fixed("So the answer is Monsters, Inc.", mc).as_deref(),
            Some("monsters inc")
        );
    }

    #[test]
    fn two_valued_answers_ignore_case() {
        assert_eq!(
            fixed("so the answer is true.", BbhAnswer::Boolean).as_deref(),
            Some("True")
        );
        assert_eq!(
            fixed(
                "The answer is: **FALSE**, since not True is False.",
                BbhAnswer::Boolean
            )
            .as_deref(),
            Some("False")
        );
        assert_eq!(
            fixed("So the answer is yes.", BbhAnswer::YesNo).as_deref(),
            Some("Yes")
        );
        assert_eq!(
            fixed("The answer is Invalid.", BbhAnswer::Validity).as_deref(),
            Some("invalid")
        );
        // "valid" is not the start of "validated"; "no" not of "not".
        assert_eq!(fixed("The answer is validated", BbhAnswer::Validity), None);
        assert_eq!(fixed("The answer is not clear", BbhAnswer::YesNo), None);
        assert_eq!(fixed("...\nNo", BbhAnswer::YesNo).as_deref(), Some("No"));
    }

    #[test]
    fn integers_compare_as_numbers() {
        let n = BbhAnswer::Integer;
        for (text, want) in [
            ("So the answer is -11520.", "-11520"),
            ("The answer is 11,520.", "11520"),
            ("The answer is +8 objects.", "8"),
            ("The answer is 8.0", "8"),
            ("The answer is eight.", "8"),
            ("Total:\n12", "12"),
        ] {
            assert_eq!(fixed(text, n).as_deref(), Some(want), "{text}");
        }
        assert_eq!(fixed("The answer is 8.5", n), None, "not an integer");
        assert_eq!(
            fixed("The answer is 1,2345", n),
            None,
            "not thousands groups"
        );
        let gold = parse_gold("-11520", n).unwrap();
        let pred = extract_fixed("the answer is -11,520", n);
        assert!(matches(pred.value().unwrap(), &gold));
    }

    #[test]
    fn brackets_and_words_are_token_sequences() {
        let gold = parse_gold("] ] >", BbhAnswer::Dyck).unwrap();
        for text in [
            "So the answer is ] ] >.",
            "The answer is: `]]>`",
            "The answer is ], ], >",
        ] {
            let ex = extract_fixed(text, BbhAnswer::Dyck);
            assert!(matches(ex.value().unwrap(), &gold), "{text}: {ex:?}");
        }
        let ex = extract_fixed("The answer is ] >", BbhAnswer::Dyck);
        assert!(!matches(ex.value().unwrap(), &gold));

        let gold = parse_gold("arson o'connell r&d", BbhAnswer::SortedWords).unwrap();
        let ex = extract_fixed(
            "So the answer is: Arson, O'Connell, R&D. These are in order.",
            BbhAnswer::SortedWords,
        );
        assert!(matches(ex.value().unwrap(), &gold), "{ex:?}");
        let swapped = extract_fixed("The answer is o'connell arson r&d", BbhAnswer::SortedWords);
        assert!(!matches(swapped.value().unwrap(), &gold));
    }

    #[test]
    fn gold_parsing() {
        let mc = parse_gold("(C)", BbhAnswer::MultipleChoice).unwrap();
        assert_eq!(mc.value, BbhValue::Letter('C'));
        let quirk = parse_gold("Monsters, Inc", BbhAnswer::MultipleChoice).unwrap();
        assert_eq!(quirk.value, BbhValue::Text("monsters inc".into()));
        assert_eq!(quirk.target, "Monsters, Inc");
        assert!(parse_gold("maybe", BbhAnswer::Boolean).is_err());
        assert!(parse_gold("True.", BbhAnswer::Boolean).is_ok());
        assert!(parse_gold("12 apples", BbhAnswer::Integer).is_err());
        assert!(parse_gold("", BbhAnswer::FreeText).is_err());
        assert!(parse_gold("] x", BbhAnswer::Dyck).is_err());
    }

    #[test]
    fn nothing_usable_is_invalid() {
        assert_eq!(
            extract_fixed("  \n", BbhAnswer::Boolean).reason(),
            Some(&InvalidReason::EmptyAnswer)
        );
        assert_eq!(
            extract_fixed("I cannot tell.", BbhAnswer::Boolean).reason(),
            Some(&InvalidReason::NoMatch)
        );
        assert!(matches!(
            extract_fixed("So the answer is unknowable.", BbhAnswer::Integer).reason(),
            Some(InvalidReason::Unparseable { candidate, .. }) if candidate == "unknowable."
        ));
        // "isn't" is no answer phrase.
        assert_eq!(
            extract_fixed("The answer isn't obvious.", BbhAnswer::YesNo).reason(),
            Some(&InvalidReason::NoMatch)
        );
    }

    #[test]
    fn upstream_reproduces_lm_eval() {
        let gold = parse_gold("True", BbhAnswer::Boolean).unwrap();
        let cap = |t: &str| extract_upstream(t);
        // The lookahead eats the period, as intended…
        assert_eq!(cap("So the answer is True.").as_deref(), Some("True"));
        // …and the last letter when there is no period.
        assert_eq!(cap("So the answer is True").as_deref(), Some("Tru"));
        assert_eq!(cap("the answer is True\nmore").as_deref(), Some("Tru"));
        // Case-sensitive; the first match wins; a lead ending its line is skipped.
        assert_eq!(cap("The answer is True."), None);
        assert_eq!(
            cap("the answer is (A). Later the answer is (B).").as_deref(),
            Some("(A). Later the answer is (B)")
        );
        assert_eq!(
            cap("the answer is \nthe answer is (C).").as_deref(),
            Some("(C)")
        );
        // Stripped like Python's str.strip(), including U+001F.
        assert_eq!(cap("the answer is  True \u{1f}.").as_deref(), Some("True"));
        // Raw match: no case folding, no normalisation.
        assert!(upstream_matches("True", &gold));
        assert!(!upstream_matches("true", &gold));
        assert!(!upstream_matches("**True**", &gold));
    }
}
