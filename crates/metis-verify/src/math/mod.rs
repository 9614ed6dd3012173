//! Math answers: extraction, normalisation and equivalence, for GSM8K, MATH and MATH-500
//! scoring and GRPO rewards.
//!
//! Data flow: the caller removes the `<think>` block; [`extract_final_answer`] takes the final
//! answer from the answer part ([`MathExtraction`], with the [`ExtractMethod`] that found it);
//! [`equivalent`] normalises gold and prediction ([`normalize`], after latex2sympy2_extended's
//! `normalize_latex`), parses them into [`equiv::Value`]s (sets, tuples, intervals, relations
//! and expressions over exact rationals, see [`value`]) and compares them the way
//! math-verify 0.8.0's `verify` does, answering [`Equivalence::Unknown`] when it cannot decide
//! (callers count that as wrong and report it separately).
//!
//! The upstream reference procedures are reproduced exactly, for comparisons with published
//! numbers: Hendrycks MATH ([`last_boxed_only_string`], [`remove_boxed`],
//! [`hendrycks_strip_string`], [`hendrycks_is_equiv`]), lm-eval's Minerva task
//! ([`minerva_candidate`], [`minerva_normalize`]) and lm-eval's GSM8K tasks ([`gsm8k`]).
//!
//! Every entry point is total: bounded input sizes, nesting depth and exponents, no panics.

use serde::{Deserialize, Serialize};

pub mod equiv;
mod extract;
pub mod gsm8k;
mod hendrycks;
mod minerva;
pub mod normalize;
pub mod value;

pub use hendrycks::{
    hendrycks_is_equiv, hendrycks_strip_string, last_boxed_only_string, remove_boxed,
    strip_string_checked, StripError,
};
pub use minerva::{minerva_candidate, minerva_normalize};

/// Which rule found the final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtractMethod {
    /// The last `\boxed{…}` or `\fbox{…}`.
    Boxed,
    /// "final answer is X" (the last such phrase).
    FinalAnswerIs,
    /// "The answer is X" (the last such phrase).
    AnswerIs,
    /// "#### X".
    Hashes,
    /// The last number on the last non-empty line, when that line is prose.
    LastNumber,
    /// The last non-empty line, being answer-shaped (a number or an expression).
    LastLine,
}

/// A final answer and how it was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MathExtraction {
    pub answer: String,
    pub method: ExtractMethod,
}

/// Final answer of a reasoning model's answer part (the `<think>` block is already removed by
/// the caller): the last `\boxed{..}` (nested braces; also `\fbox`), else "final answer is X",
/// else "The answer is X", else "#### X", else the last line if it is answer-shaped (a number
/// or expression), else the last number on the last line, in that order of preference. `None`
/// when nothing is found. Inputs over 1 MiB are scanned from their last MiB.
pub fn extract_final_answer(text: &str) -> Option<MathExtraction> {
    extract::extract_final_answer(text)
}

/// The outcome of comparing two answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Equivalence {
    Equal,
    NotEqual,
    /// Undecidable or unparseable here; callers count it wrong and report it separately.
    Unknown {
        reason: String,
    },
}

/// Whether `predicted` is mathematically the same answer as `gold`; both are answer strings
/// (LaTeX or plain). Bounded time and input size (over-long inputs and deep nesting give
/// `Unknown`); never panics.
pub fn equivalent(gold: &str, predicted: &str) -> Equivalence {
    equiv::equivalent(gold, predicted)
}
