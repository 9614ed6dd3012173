//! IFEval instruction checkers: Google's 25 registered verifiable instructions, graded exactly as
//! lm-eval's `ifeval` task grades them (strict and loose).
//!
//! Principal types and data flow:
//! - [`IfEvalGold`] is one prompt's list of [`Instruction`]s (id + kwargs), built from a data
//!   row by [`IfEvalGold::from_row`] (the two parallel fields `instruction_id_list` and
//!   `kwargs`) or from its stored object form by [`IfEvalGold::from_json`]. Construction drops
//!   falsy kwargs as lm-eval does and validates every id and kwarg, so a bad gold is an
//!   [`IfEvalError`] up front rather than a silently wrong reward.
//! - [`evaluate`] grades one response (already stripped of any `<think>` block) and returns
//!   [`Followed`]: per instruction, the strict verdict (the checker passes on the raw response,
//!   which must not be blank) and the loose verdict (any of lm-eval's eight variants — the
//!   response, without `*`, without its first and/or last line — passes).
//! - Internally each instruction is compiled once per call into a checker (regexes built,
//!   thresholds parsed) and run on each variant. The text semantics upstream relies on are
//!   reproduced in submodules: Python `str` methods (`pytext`), NLTK's Punkt English sentence
//!   tokenizer (`punkt`) and `nltk.word_tokenize` (`wordtok`), and Python's `json.loads`
//!   (`pyjson`).
//!
//! Fidelity choices (each checked against upstream by `tests/ifeval_parity.rs`, whose fixture
//! `tools/reference/ifeval_parity.py` produces with lm-eval's own code):
//! - Sentence counts use a port of NLTK 3.10's `PunktTokenizer("english")` with the `punkt_tab`
//!   English parameters embedded from `data/punkt_english/`. The port follows NLTK 3.10.4,
//!   which treats curly quotes and guillemets as closing punctuation and compiles its regexes
//!   with the `regex` module; older NLTK 3.9.x does neither, so its counts can differ on such
//!   text.
//! - Word counts use `\w+` with the `regex` module's `\w` (NLTK 3.10 compiles
//!   `RegexpTokenizer(r"\w+")` through `nltk.redos`, i.e. the `regex` module): this is exactly
//!   Rust's `\w` (marks count, `²` does not), not Python `re`'s.
//! - Language detection uses the crate `langdetect`, a bit-exact port of Python `langdetect`
//!   1.0.9 with its 55 profiles, **seeded with 0** and with CPython 3.11 arithmetic
//!   ([`langdetect::Compat::python`]`(11)`). Upstream never seeds langdetect, so its verdict on
//!   a borderline text can change from run to run; ours is the verdict of the seeded run. As
//!   upstream, a text without features (langdetect raises) passes.
//! - Keyword patterns (`keywords:existence`, `keywords:frequency`, `forbidden_words`,
//!   `multiple_sections`' splitter and a custom postscript marker) are raw regexes upstream.
//!   They are compiled with the `regex` crate (case-insensitive where upstream is); a pattern
//!   the crate rejects (look-around, backreferences, Python-only syntax, or too large) is
//!   matched as a literal string instead. Forbidden words that are plain literals get Python
//!   `re`'s `\b` (word = `str.isalnum()` or `_`) exactly; regex forbidden words use Rust's `\b`.
//! - Where upstream is not deterministic we pick a rule: a non-letter `letter` (upstream draws
//!   a random ASCII letter; two data rows use `!` and `#`) counts that character literally;
//!   kwargs upstream would replace by random values (missing, zero, negative, `nth_paragraph >
//!   num_paragraphs`) are rejected by the constructors.
//! - Responses longer than [`MAX_RESPONSE_BYTES`] (256 KiB, roughly 50,000 tokens) follow no
//!   instruction (strict and loose). IFEval generations are capped at 1280 tokens, so only a
//!   degenerate output gets there, and the cap bounds grading time (under a second per response
//!   with all 25 ids on adversarial text; `tests/ifeval_proptest.rs`).

pub(crate) mod punkt;
mod pyjson;
mod pytext;
pub(crate) mod wordtok;

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use pytext::{is_lower, is_re_word, is_upper, lower, split_ws, strip};

/// Responses longer than this (in UTF-8 bytes) are graded as following no instruction: far above
/// any real IFEval answer, and it bounds the time one call can take.
pub const MAX_RESPONSE_BYTES: usize = 1 << 18;

/// The 25 instruction ids registered in lm-eval's `instructions_registry.INSTRUCTION_DICT`.
pub const INSTRUCTION_IDS: [&str; 25] = [
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "startend:quotation",
];

/// One verifiable instruction: its registry id and its (falsy-free) kwargs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instruction {
    pub id: String,
    pub kwargs: Map<String, Value>,
}

/// The instructions of one IFEval prompt, in data order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IfEvalGold {
    pub instructions: Vec<Instruction>,
}

/// Per-instruction verdicts, parallel to [`IfEvalGold::instructions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Followed {
    pub strict: Vec<bool>,
    pub loose: Vec<bool>,
}

/// Why a gold could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IfEvalError {
    #[error("IFEval gold: `{field}` must be a JSON array")]
    NotAnArray { field: &'static str },
    #[error("IFEval gold: {ids} instruction ids but {kwargs} kwargs objects")]
    LengthMismatch { ids: usize, kwargs: usize },
    #[error("IFEval gold: instruction id #{index} is not a string")]
    IdNotString { index: usize },
    #[error("IFEval gold: kwargs #{index} is not a JSON object")]
    KwargsNotObject { index: usize },
    #[error("IFEval gold: unknown instruction id {id:?}")]
    UnknownId { id: String },
    #[error("IFEval gold: {id} needs kwarg `{kwarg}` (missing or falsy)")]
    MissingKwarg { id: String, kwarg: String },
    #[error("IFEval gold: {id} kwarg `{kwarg}` must be {expected}")]
    WrongType {
        id: String,
        kwarg: String,
        expected: &'static str,
    },
    #[error("IFEval gold: {id} kwarg `{kwarg}`: {reason}")]
    BadValue {
        id: String,
        kwarg: String,
        reason: String,
    },
    #[error("IFEval gold: {id} does not take kwarg `{kwarg}`")]
    UnexpectedKwarg { id: String, kwarg: String },
    #[error("IFEval gold: {0}")]
    BadGold(String),
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Str,
    StrList,
    Relation,
    Letter,
}

/// The kwargs each id takes (all required once falsy values are dropped).
fn schema(id: &str) -> Option<&'static [(&'static str, Kind)]> {
    use Kind::*;
    Some(match id {
        "keywords:existence" => &[("keywords", StrList)],
        "keywords:frequency" => &[("keyword", Str), ("frequency", Int), ("relation", Relation)],
        "keywords:forbidden_words" => &[("forbidden_words", StrList)],
        "keywords:letter_frequency" => &[
            ("letter", Letter),
            ("let_frequency", Int),
            ("let_relation", Relation),
        ],
        "language:response_language" => &[("language", Str)],
        "length_constraints:number_sentences" => &[("num_sentences", Int), ("relation", Relation)],
        "length_constraints:number_paragraphs" => &[("num_paragraphs", Int)],
        "length_constraints:number_words" => &[("num_words", Int), ("relation", Relation)],
        "length_constraints:nth_paragraph_first_word" => &[
            ("num_paragraphs", Int),
            ("nth_paragraph", Int),
            ("first_word", Str),
        ],
        "detectable_content:number_placeholders" => &[("num_placeholders", Int)],
        "detectable_content:postscript" => &[("postscript_marker", Str)],
        "detectable_format:number_bullet_lists" => &[("num_bullets", Int)],
        "detectable_format:number_highlighted_sections" => &[("num_highlights", Int)],
        "detectable_format:multiple_sections" => &[("section_spliter", Str), ("num_sections", Int)],
        "combination:repeat_prompt" => &[("prompt_to_repeat", Str)],
        "startend:end_checker" => &[("end_phrase", Str)],
        "change_case:capital_word_frequency" => {
            &[("capital_frequency", Int), ("capital_relation", Relation)]
        }
        "detectable_format:constrained_response"
        | "detectable_format:json_format"
        | "detectable_format:title"
        | "combination:two_responses"
        | "change_case:english_capital"
        | "change_case:english_lowercase"
        | "punctuation:no_comma"
        | "startend:quotation" => &[],
        _ => return None,
    })
}

/// Python truthiness of a kwarg value (lm-eval keeps `{k: v for k, v in kwargs.items() if v}`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn validate(id: &str, kwargs: &Map<String, Value>) -> Result<(), IfEvalError> {
    let schema = schema(id).ok_or_else(|| IfEvalError::UnknownId { id: id.to_string() })?;
    for k in kwargs.keys() {
        if !schema.iter().any(|(name, _)| name == k) {
            return Err(IfEvalError::UnexpectedKwarg {
                id: id.to_string(),
                kwarg: k.clone(),
            });
        }
    }
    let wrong = |kwarg: &str, expected| IfEvalError::WrongType {
        id: id.to_string(),
        kwarg: kwarg.to_string(),
        expected,
    };
    let bad = |kwarg: &str, reason: &str| IfEvalError::BadValue {
        id: id.to_string(),
        kwarg: kwarg.to_string(),
        reason: reason.to_string(),
    };
    for &(name, kind) in schema {
        let v = kwargs.get(name).ok_or_else(|| IfEvalError::MissingKwarg {
            id: id.to_string(),
            kwarg: name.to_string(),
        })?;
        match kind {
            Kind::Int => {
                let n = v.as_i64().ok_or_else(|| wrong(name, "an integer"))?;
                if n < 0 {
                    // upstream replaces a negative threshold by a random one
                    return Err(bad(name, "must not be negative"));
                }
            }
            Kind::Str => {
                v.as_str().ok_or_else(|| wrong(name, "a string"))?;
            }
            Kind::StrList => {
                let a = v
                    .as_array()
                    .ok_or_else(|| wrong(name, "a list of strings"))?;
                if !a.iter().all(Value::is_string) {
                    return Err(wrong(name, "a list of strings"));
                }
            }
            Kind::Relation => {
                let s = v
                    .as_str()
                    .ok_or_else(|| wrong(name, "\"less than\" or \"at least\""))?;
                if s != "less than" && s != "at least" {
                    return Err(bad(name, "must be \"less than\" or \"at least\""));
                }
            }
            Kind::Letter => {
                let s = v
                    .as_str()
                    .ok_or_else(|| wrong(name, "a one-character string"))?;
                if s.chars().count() != 1 {
                    return Err(bad(name, "must be exactly one character"));
                }
            }
        }
    }
    if id == "length_constraints:nth_paragraph_first_word" {
        let num = kwargs.get("num_paragraphs").and_then(Value::as_i64);
        let nth = kwargs.get("nth_paragraph").and_then(Value::as_i64);
        if let (Some(num), Some(nth)) = (num, nth) {
            if nth > num {
                // upstream draws a random paragraph index in that case
                return Err(bad("nth_paragraph", "must not exceed num_paragraphs"));
            }
        }
    }
    Ok(())
}

impl IfEvalGold {
    /// From the two parallel data-row fields; drops falsy kwarg values as lm-eval does;
    /// validates that every id is one of the 25 registered ids and that each has the kwargs it
    /// needs with the right JSON types (the error names the id and the kwarg).
    pub fn from_row(instruction_id_list: &Value, kwargs: &Value) -> Result<Self, IfEvalError> {
        let ids = instruction_id_list
            .as_array()
            .ok_or(IfEvalError::NotAnArray {
                field: "instruction_id_list",
            })?;
        let kws = kwargs
            .as_array()
            .ok_or(IfEvalError::NotAnArray { field: "kwargs" })?;
        if ids.len() != kws.len() {
            return Err(IfEvalError::LengthMismatch {
                ids: ids.len(),
                kwargs: kws.len(),
            });
        }
        let mut instructions = Vec::with_capacity(ids.len());
        let no_kwargs = Map::new();
        for (index, (id, kw)) in ids.iter().zip(kws).enumerate() {
            let id = id.as_str().ok_or(IfEvalError::IdNotString { index })?;
            let kw = match kw {
                Value::Object(o) => o,
                // the HF dataset stores all-None rows; a null row means "no kwargs"
                Value::Null => &no_kwargs,
                _ => return Err(IfEvalError::KwargsNotObject { index }),
            };
            let kwargs: Map<String, Value> = kw
                .iter()
                .filter(|(_, v)| truthy(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            validate(id, &kwargs)?;
            instructions.push(Instruction {
                id: id.to_string(),
                kwargs,
            });
        }
        Ok(IfEvalGold { instructions })
    }

    /// From an object `{"instruction_id_list": [...], "kwargs": [...]}` (the form stored as a
    /// "gold" in prompt files), or a JSON string containing that object.
    pub fn from_json(value: &Value) -> Result<Self, IfEvalError> {
        if let Value::String(s) = value {
            let parsed: Value = serde_json::from_str(s)
                .map_err(|e| IfEvalError::BadGold(format!("gold string is not JSON: {e}")))?;
            if parsed.is_string() {
                return Err(IfEvalError::BadGold("gold string holds a string".into()));
            }
            return Self::from_json(&parsed);
        }
        let obj = value.as_object().ok_or_else(|| {
            IfEvalError::BadGold(
                "gold must be an object with instruction_id_list and kwargs".into(),
            )
        })?;
        let ids = obj
            .get("instruction_id_list")
            .ok_or(IfEvalError::NotAnArray {
                field: "instruction_id_list",
            })?;
        let empty = Value::Array(vec![Value::Null; ids.as_array().map_or(0, Vec::len)]);
        let kwargs = obj.get("kwargs").unwrap_or(&empty);
        Self::from_row(ids, kwargs)
    }

    /// The object form accepted by [`IfEvalGold::from_json`].
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "instruction_id_list": self.instructions.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
            "kwargs": self.instructions.iter().map(|i| Value::Object(i.kwargs.clone())).collect::<Vec<_>>(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// checkers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Rel {
    LessThan,
    AtLeast,
}

impl Rel {
    fn holds(self, count: usize, threshold: i64) -> bool {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        match self {
            Rel::LessThan => count < threshold,
            Rel::AtLeast => count >= threshold,
        }
    }
}

/// A forbidden word: plain words get Python's `\b` exactly, patterns Rust's.
enum Forbidden {
    Literal(Regex),
    Pattern(Regex),
}

/// One instruction with its arguments parsed and its regexes compiled.
enum Check {
    KeywordsExistence(Vec<Regex>),
    KeywordFrequency(Regex, Rel, i64),
    ForbiddenWords(Vec<Forbidden>),
    LetterFrequency(String, Rel, i64),
    Language(String),
    NumberSentences(Rel, i64),
    NumberParagraphs(i64),
    NumberWords(Rel, i64),
    NthParagraph {
        num: i64,
        nth: i64,
        first: String,
    },
    Placeholders(i64),
    Postscript(Regex),
    Bullets(i64),
    Constrained,
    Highlights(i64),
    Sections(Regex, i64),
    Json,
    Title,
    TwoResponses,
    RepeatPrompt(String),
    End(String),
    Quotation,
    CapitalWords(Rel, i64),
    EnglishCapital,
    EnglishLowercase,
    NoComma,
    /// A gold that bypassed validation: never followed.
    Invalid,
}

/// Python `re`'s `\s` (`str.isspace`), for patterns upstream compiles with `re`.
const PY_S: &str = r"[\s\x1C-\x1F]";

/// Compile a raw upstream pattern; fall back to the literal text if the `regex` crate rejects
/// it (see the module doc). Compiled patterns are cached per thread: the same few hundred gold
/// patterns recur for every sample, and compiling dominated grading time without the cache.
fn compile(prefix: &str, pattern: &str, suffix: &str, ci: bool, multi: bool) -> Regex {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static CACHE: RefCell<HashMap<(String, bool, bool), Regex>> = RefCell::new(HashMap::new());
    }
    // bounded: a flood of distinct patterns only costs recompilation
    const CACHE_MAX: usize = 4096;
    let build = |p: &str| {
        RegexBuilder::new(&format!("{prefix}{p}{suffix}"))
            .case_insensitive(ci)
            .multi_line(multi)
            .size_limit(1 << 22)
            .build()
    };
    let key = (format!("{prefix}\u{0}{pattern}\u{0}{suffix}"), ci, multi);
    if let Some(r) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return r;
    }
    let re = match build(pattern) {
        Ok(r) => r,
        Err(_) => build(&regex::escape(pattern))
            .or_else(|_| Regex::new(&regex::escape(pattern)))
            .unwrap_or_else(|_| Regex::new("$^").expect("static regex")),
    };
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, re.clone());
    });
    re
}

fn compile_check(inst: &Instruction) -> Check {
    let kw = &inst.kwargs;
    let int = |k: &str| kw.get(k).and_then(Value::as_i64);
    let string = |k: &str| kw.get(k).and_then(Value::as_str);
    let rel = |k: &str| match string(k) {
        Some("less than") => Some(Rel::LessThan),
        Some("at least") => Some(Rel::AtLeast),
        _ => None,
    };
    let strs = |k: &str| -> Option<Vec<&str>> {
        kw.get(k)?.as_array()?.iter().map(Value::as_str).collect()
    };
    let check = (|| {
        Some(match inst.id.as_str() {
            "keywords:existence" => Check::KeywordsExistence(
                strs("keywords")?
                    .into_iter()
                    .map(|k| compile("", k, "", true, false))
                    .collect(),
            ),
            "keywords:frequency" => Check::KeywordFrequency(
                compile("", strip(string("keyword")?), "", true, false),
                rel("relation")?,
                int("frequency")?,
            ),
            "keywords:forbidden_words" => Check::ForbiddenWords(
                strs("forbidden_words")?
                    .into_iter()
                    .map(|w| {
                        if regex::escape(w) == w {
                            Forbidden::Literal(compile("", w, "", true, false))
                        } else {
                            Forbidden::Pattern(compile(r"\b", w, r"\b", true, false))
                        }
                    })
                    .collect(),
            ),
            "keywords:letter_frequency" => Check::LetterFrequency(
                lower(strip(string("letter")?)),
                rel("let_relation")?,
                int("let_frequency")?,
            ),
            "language:response_language" => Check::Language(string("language")?.to_string()),
            "length_constraints:number_sentences" => {
                Check::NumberSentences(rel("relation")?, int("num_sentences")?)
            }
            "length_constraints:number_paragraphs" => {
                Check::NumberParagraphs(int("num_paragraphs")?)
            }
            "length_constraints:number_words" => {
                Check::NumberWords(rel("relation")?, int("num_words")?)
            }
            "length_constraints:nth_paragraph_first_word" => Check::NthParagraph {
                num: int("num_paragraphs")?,
                nth: int("nth_paragraph")?,
                first: lower(string("first_word")?),
            },
            "detectable_content:number_placeholders" => {
                Check::Placeholders(int("num_placeholders")?)
            }
            "detectable_content:postscript" => {
                let marker = strip(string("postscript_marker")?);
                Check::Postscript(match marker {
                    "P.P.S" => compile(
                        "",
                        &format!(r"{PY_S}*p\.{PY_S}?p\.{PY_S}?s.*$"),
                        "",
                        false,
                        true,
                    ),
                    "P.S." => compile("", &format!(r"{PY_S}*p\.{PY_S}?s\..*$"), "", false, true),
                    m => compile(&format!("{PY_S}*"), &lower(m), ".*$", false, true),
                })
            }
            "detectable_format:number_bullet_lists" => Check::Bullets(int("num_bullets")?),
            "detectable_format:constrained_response" => Check::Constrained,
            "detectable_format:number_highlighted_sections" => {
                Check::Highlights(int("num_highlights")?)
            }
            "detectable_format:multiple_sections" => Check::Sections(
                compile(
                    &format!("{PY_S}?"),
                    strip(string("section_spliter")?),
                    &format!(r"{PY_S}?\d+{PY_S}?"),
                    false,
                    false,
                ),
                int("num_sections")?,
            ),
            "detectable_format:json_format" => Check::Json,
            "detectable_format:title" => Check::Title,
            "combination:two_responses" => Check::TwoResponses,
            "combination:repeat_prompt" => {
                Check::RepeatPrompt(lower(strip(string("prompt_to_repeat")?)))
            }
            "startend:end_checker" => Check::End(lower(strip(string("end_phrase")?))),
            "startend:quotation" => Check::Quotation,
            "change_case:capital_word_frequency" => {
                Check::CapitalWords(rel("capital_relation")?, int("capital_frequency")?)
            }
            "change_case:english_capital" => Check::EnglishCapital,
            "change_case:english_lowercase" => Check::EnglishLowercase,
            "punctuation:no_comma" => Check::NoComma,
            _ => return None,
        })
    })();
    check.unwrap_or(Check::Invalid)
}

macro_rules! static_re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| Regex::new($pat).expect("static regex"));
    };
}

static_re!(RE_WORD, r"\w+");
static_re!(RE_PLACEHOLDER, r"\[.*?\]");
static_re!(RE_BULLET_STAR, r"(?m)^[\s\x1C-\x1F]*\*[^*].*$");
static_re!(RE_BULLET_DASH, r"(?m)^[\s\x1C-\x1F]*-.*$");
static_re!(RE_HIGHLIGHT, r"\*[^\n*]*\*");
static_re!(RE_DOUBLE_HIGHLIGHT, r"\*\*[^\n*]*\*\*");
static_re!(RE_PARAGRAPH_SPLIT, r"[\s\x1C-\x1F]?\*\*\*[\s\x1C-\x1F]?");
static_re!(RE_TITLE, r"<<[^\n]+>>");

static LANGDETECT: LazyLock<langdetect::DetectorFactory> = LazyLock::new(|| {
    let mut f = langdetect::DetectorFactory::new(langdetect::Compat::python(11));
    // The built-in profiles are compiled into the crate; loading them cannot fail, and if it
    // ever did the factory would raise on detect, which upstream grades as "followed".
    let _ = f.load_builtin(&langdetect::DetectorFactory::builtin_files());
    f.seed = langdetect::Seed::Int(0);
    f
});

/// `langdetect.detect(text)`, seeded; `None` where langdetect raises.
fn detect_language(text: &str) -> Option<String> {
    LANGDETECT.detect(text).ok()
}

/// `re.search(r"\b" + word + r"\b", text, re.IGNORECASE)` for a literal word, with Python
/// `re`'s word characters; tries every occurrence, overlapping ones included.
fn literal_word_bounded(re: &Regex, text: &str) -> bool {
    let boundary = |p: usize| {
        let before = text[..p].chars().next_back().is_some_and(is_re_word);
        let after = text[p..].chars().next().is_some_and(is_re_word);
        before != after
    };
    let mut start = 0;
    while start <= text.len() {
        let Some(m) = re.find_at(text, start) else {
            return false;
        };
        if boundary(m.start()) && boundary(m.end()) {
            return true;
        }
        // next candidate starts one character later
        start = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// `re.split(pattern, text)`'s piece count: matches, plus captured groups, plus one.
fn split_pieces(re: &Regex, text: &str) -> usize {
    let groups = re.captures_len().saturating_sub(1);
    re.find_iter(text).count() * (1 + groups) + 1
}

/// Per-text results shared by several checkers (computed at most once per variant).
struct TextCache<'a> {
    text: &'a str,
    sentences: std::cell::OnceCell<Vec<(usize, usize)>>,
    lower: std::cell::OnceCell<String>,
    language: std::cell::OnceCell<Option<String>>,
}

impl<'a> TextCache<'a> {
    fn new(text: &'a str) -> Self {
        TextCache {
            text,
            sentences: Default::default(),
            lower: Default::default(),
            language: Default::default(),
        }
    }
    fn sentences(&self) -> &[(usize, usize)] {
        self.sentences
            .get_or_init(|| punkt::sentence_spans(self.text))
    }
    fn lower(&self) -> &str {
        self.lower.get_or_init(|| lower(self.text))
    }
    fn language(&self) -> Option<&str> {
        self.language
            .get_or_init(|| detect_language(self.text))
            .as_deref()
    }
}

impl Check {
    fn passes(&self, cache: &TextCache) -> bool {
        let value = cache.text;
        match self {
            Check::KeywordsExistence(res) => res.iter().all(|r| r.is_match(value)),
            Check::KeywordFrequency(re, rel, n) => rel.holds(re.find_iter(value).count(), *n),
            Check::ForbiddenWords(words) => !words.iter().any(|w| match w {
                Forbidden::Literal(re) => literal_word_bounded(re, value),
                Forbidden::Pattern(re) => re.is_match(value),
            }),
            Check::LetterFrequency(letter, rel, n) => {
                // Counter(value.lower())[letter]: a one-character key
                let mut it = letter.chars();
                let count = match (it.next(), it.next()) {
                    (Some(l), None) => cache.lower().chars().filter(|&c| c == l).count(),
                    _ => 0,
                };
                rel.holds(count, *n)
            }
            Check::Language(code) => cache.language().is_none_or(|l| l == code),
            Check::NumberSentences(rel, n) => rel.holds(cache.sentences().len(), *n),
            Check::NumberParagraphs(n) => {
                let pieces: Vec<&str> = RE_PARAGRAPH_SPLIT.split(value).collect();
                let mut count = pieces.len() as i64;
                for (i, p) in pieces.iter().enumerate() {
                    if strip(p).is_empty() {
                        if i == 0 || i == pieces.len() - 1 {
                            count -= 1;
                        } else {
                            return false;
                        }
                    }
                }
                count == *n
            }
            Check::NumberWords(rel, n) => rel.holds(RE_WORD.find_iter(value).count(), *n),
            Check::NthParagraph { num, nth, first } => {
                let pieces: Vec<&str> = value.split("\n\n").collect();
                let count = pieces.iter().filter(|p| !strip(p).is_empty()).count() as i64;
                if *nth > count || *nth < 1 {
                    return false;
                }
                let Some(para) = pieces.get((*nth - 1) as usize).map(|p| strip(p)) else {
                    return false;
                };
                let Some(word) = split_ws(para).next() else {
                    return false;
                };
                let word = strip(word).trim_start_matches('\'').trim_start_matches('"');
                let word: String = word
                    .chars()
                    .take_while(|c| !matches!(c, '.' | ',' | '?' | '!' | '\'' | '"'))
                    .collect();
                count == *num && lower(&word) == *first
            }
            Check::Placeholders(n) => (RE_PLACEHOLDER.find_iter(value).count() as i64) >= *n,
            Check::Postscript(re) => re.is_match(cache.lower()),
            Check::Bullets(n) => {
                let count = RE_BULLET_STAR.find_iter(value).count()
                    + RE_BULLET_DASH.find_iter(value).count();
                count as i64 == *n
            }
            Check::Constrained => {
                let v = strip(value);
                [
                    "My answer is yes.",
                    "My answer is no.",
                    "My answer is maybe.",
                ]
                .iter()
                .any(|o| v.contains(o))
            }
            Check::Highlights(n) => {
                let single = RE_HIGHLIGHT
                    .find_iter(value)
                    .filter(|m| !strip(m.as_str().trim_matches('*')).is_empty())
                    .count();
                let double = RE_DOUBLE_HIGHLIGHT
                    .find_iter(value)
                    .filter(|m| {
                        let s = m.as_str();
                        !strip(&s[2..s.len() - 2]).is_empty()
                    })
                    .count();
                (single + double) as i64 >= *n
            }
            Check::Sections(re, n) => (split_pieces(re, value) as i64 - 1) >= *n,
            Check::Json => {
                let mut v = strip(value);
                for prefix in ["```json", "```Json", "```JSON", "```"] {
                    v = v.strip_prefix(prefix).unwrap_or(v);
                }
                v = v.strip_suffix("```").unwrap_or(v);
                pyjson::python_json_loads_ok(strip(v))
            }
            Check::Title => RE_TITLE.find_iter(value).any(|m| {
                let t = m.as_str().trim_start_matches('<').trim_end_matches('>');
                !strip(t).is_empty()
            }),
            Check::TwoResponses => {
                let pieces: Vec<&str> = value.split("******").collect();
                let mut valid = Vec::new();
                for (i, p) in pieces.iter().enumerate() {
                    if strip(p).is_empty() {
                        if i != 0 && i != pieces.len() - 1 {
                            return false;
                        }
                    } else {
                        valid.push(strip(p));
                    }
                }
                valid.len() == 2 && valid[0] != valid[1]
            }
            Check::RepeatPrompt(prompt) => lower(strip(value)).starts_with(prompt.as_str()),
            Check::End(phrase) => lower(strip(value).trim_matches('"')).ends_with(phrase.as_str()),
            Check::Quotation => {
                let v = strip(value);
                v.chars().count() > 1 && v.starts_with('"') && v.ends_with('"')
            }
            Check::CapitalWords(rel, n) => {
                rel.holds(wordtok::count_upper_tokens(value, cache.sentences()), *n)
            }
            Check::EnglishCapital => is_upper(value) && cache.language().is_none_or(|l| l == "en"),
            Check::EnglishLowercase => {
                is_lower(value) && cache.language().is_none_or(|l| l == "en")
            }
            Check::NoComma => !value.contains(','),
            Check::Invalid => false,
        }
    }
}

/// The eight loose variants, in lm-eval's order: the response, it without `*`, it without its
/// first / last / first and last line (joined with "\n" and stripped), and those three without
/// `*`.
fn loose_variants(response: &str) -> [String; 8] {
    let lines: Vec<&str> = response.split('\n').collect();
    let n = lines.len();
    let join = |a: usize, b: usize| {
        if a >= b {
            String::new()
        } else {
            strip(&lines[a..b].join("\n")).to_string()
        }
    };
    let first = join(1, n);
    let last = join(0, n.saturating_sub(1));
    let both = join(1, n.saturating_sub(1));
    let nostar = |s: &str| s.replace('*', "");
    [
        response.to_string(),
        nostar(response),
        nostar(&first),
        nostar(&last),
        nostar(&both),
        first,
        last,
        both,
    ]
}

/// Grades one response (already stripped of any `<think>` block by the caller) against every
/// instruction of `gold`, strict and loose. Never panics. Responses over
/// [`MAX_RESPONSE_BYTES`] follow nothing.
pub fn evaluate(gold: &IfEvalGold, response: &str) -> Followed {
    let n = gold.instructions.len();
    if response.len() > MAX_RESPONSE_BYTES {
        return Followed {
            strict: vec![false; n],
            loose: vec![false; n],
        };
    }
    let checks: Vec<Check> = gold.instructions.iter().map(compile_check).collect();
    let nonblank = !strip(response).is_empty();
    let cache = TextCache::new(response);
    let strict: Vec<bool> = checks
        .iter()
        .map(|c| nonblank && c.passes(&cache))
        .collect();
    // Checkers are pure, so the order of the variants does not change `any`, a variant equal
    // to an earlier one cannot change it either, and variant 0 (the response itself) was
    // already checked by the strict pass.
    let variants = loose_variants(response);
    let mut distinct: Vec<TextCache> = Vec::with_capacity(7);
    for (i, v) in variants.iter().enumerate().skip(1) {
        if !strip(v).is_empty() && v != &variants[0] && !variants[1..i].contains(v) {
            distinct.push(TextCache::new(v));
        }
    }
    let loose = checks
        .iter()
        .zip(&strict)
        .map(|(c, &s)| s || distinct.iter().any(|r| c.passes(r)))
        .collect();
    Followed { strict, loose }
}

#[cfg(test)]
mod tests;
