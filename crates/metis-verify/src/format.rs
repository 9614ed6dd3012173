//! The format reward: the guard against reward hacking during RL.
//!
//! A policy rewarded only for correct answers learns shortcuts the report describes: skipping
//! the reasoning, emitting an empty or token `<think> No</think>` block, opening several
//! blocks, or looping. A response passes the format check only when its reasoning block is
//! present exactly once and well ordered, the reasoning is long enough and not degenerate
//! (measured by repeated word n-grams and by how well it compresses), and an answer follows.

use std::collections::HashSet;
use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use crate::reasoning::{split, Delimiters, ThinkStatus};

/// What a well-formed response must look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FormatPolicy {
    pub delimiters: Delimiters,
    /// The chat template already opened the block in the prompt, so the completion must hold
    /// only the closing delimiter (and no opening one).
    pub prefilled_open: bool,
    /// Minimum reasoning length in characters, after trimming.
    pub min_reasoning_chars: usize,
    /// Word n-gram size for the repetition measure.
    pub ngram: usize,
    /// Largest allowed share of word n-grams that repeat an earlier n-gram.
    pub max_repeated_ngram_fraction: f64,
    /// Largest allowed raw/deflated size ratio (looping text compresses extremely well).
    pub max_compression_ratio: f64,
    /// Texts shorter than this (bytes) are not judged by compression: too short to measure.
    pub min_bytes_for_compression: usize,
    /// Penalty reported when the format is violated.
    pub penalty: f64,
}

impl Default for FormatPolicy {
    fn default() -> Self {
        Self {
            delimiters: Delimiters::default(),
            prefilled_open: false,
            min_reasoning_chars: 32,
            ngram: 4,
            max_repeated_ngram_fraction: 0.5,
            max_compression_ratio: 5.0,
            min_bytes_for_compression: 256,
            penalty: 1.0,
        }
    }
}

/// One way a response breaks the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FormatViolation {
    #[error("no reasoning block")]
    MissingReasoning,
    #[error("{count} opening delimiters (expected {expected})")]
    OpenCount { count: usize, expected: usize },
    #[error("{count} closing delimiters (expected 1)")]
    CloseCount { count: usize },
    #[error("text before the reasoning block")]
    TextBeforeReasoning,
    #[error("closing delimiter before the opening one")]
    MisorderedDelimiters,
    #[error("reasoning never closes (truncated)")]
    Unterminated,
    #[error("reasoning too short: {chars} characters (minimum {min})")]
    ReasoningTooShort { chars: usize, min: usize },
    #[error("repetitive reasoning: {fraction:.2} of {n}-grams repeat (maximum {max:.2})")]
    RepeatedNgrams { n: usize, fraction: f64, max: f64 },
    #[error("degenerate reasoning: compresses {ratio:.1}x (maximum {max:.1}x)")]
    Compressible { ratio: f64, max: f64 },
    #[error("no answer after the reasoning")]
    MissingAnswer,
}

/// The verdict of the format check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormatReport {
    /// 0 when well formed, else the policy's penalty.
    pub penalty: f64,
    pub violations: Vec<FormatViolation>,
    /// Share of repeated word n-grams in the reasoning (0 when too short to measure).
    pub repeated_ngram_fraction: f64,
    /// Raw/deflated size of the reasoning (1 when too short to measure).
    pub compression_ratio: f64,
}

impl FormatReport {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Human-readable reasons, one per violation.
    pub fn reasons(&self) -> Vec<String> {
        self.violations.iter().map(ToString::to_string).collect()
    }
}

/// Checks the format of a completion (the generated text only, not the prompt).
pub fn check(completion: &str, policy: &FormatPolicy) -> FormatReport {
    let d = &policy.delimiters;
    let parts = split(completion, d);
    let mut violations = Vec::new();

    let expected_open = usize::from(!policy.prefilled_open);
    if parts.open_count != expected_open {
        if parts.open_count == 0 && parts.close_count == 0 {
            violations.push(FormatViolation::MissingReasoning);
        } else {
            violations.push(FormatViolation::OpenCount {
                count: parts.open_count,
                expected: expected_open,
            });
        }
    }
    if parts.close_count > 1 {
        violations.push(FormatViolation::CloseCount {
            count: parts.close_count,
        });
    }
    if parts.status == ThinkStatus::Unterminated {
        violations.push(FormatViolation::Unterminated);
    }
    match (
        completion.find(d.open.as_str()),
        completion.find(d.close.as_str()),
    ) {
        (Some(o), Some(c)) if c < o => violations.push(FormatViolation::MisorderedDelimiters),
        (Some(o), _) if !policy.prefilled_open && !completion[..o].trim().is_empty() => {
            violations.push(FormatViolation::TextBeforeReasoning)
        }
        _ => {}
    }

    let has_block = parts.status != ThinkStatus::Absent;
    let reasoning = parts.reasoning.trim();
    let chars = reasoning.chars().count();
    let (mut fraction, mut ratio) = (0.0, 1.0);
    if has_block {
        if chars < policy.min_reasoning_chars {
            violations.push(FormatViolation::ReasoningTooShort {
                chars,
                min: policy.min_reasoning_chars,
            });
        }
        fraction = repeated_ngram_fraction(reasoning, policy.ngram);
        if fraction > policy.max_repeated_ngram_fraction {
            violations.push(FormatViolation::RepeatedNgrams {
                n: policy.ngram,
                fraction,
                max: policy.max_repeated_ngram_fraction,
            });
        }
        if reasoning.len() >= policy.min_bytes_for_compression {
            ratio = compression_ratio(reasoning);
            if ratio > policy.max_compression_ratio {
                violations.push(FormatViolation::Compressible {
                    ratio,
                    max: policy.max_compression_ratio,
                });
            }
        }
    }
    if parts.status != ThinkStatus::Unterminated && parts.answer.trim().is_empty() {
        violations.push(FormatViolation::MissingAnswer);
    }

    FormatReport {
        penalty: if violations.is_empty() {
            0.0
        } else {
            policy.penalty
        },
        violations,
        repeated_ngram_fraction: fraction,
        compression_ratio: ratio,
    }
}

/// Share of the word n-grams of `text` that already occurred earlier in it. Texts with fewer
/// than `2n` words give 0: too short for repetition to mean anything.
pub fn repeated_ngram_fraction(text: &str, n: usize) -> f64 {
    let n = n.max(1);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < 2 * n {
        return 0.0;
    }
    let mut seen: HashSet<&[&str]> = HashSet::with_capacity(words.len());
    let total = words.len() - n + 1;
    let repeated = words.windows(n).filter(|w| !seen.insert(*w)).count();
    repeated as f64 / total as f64
}

/// Raw size over deflate-compressed size.
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 1.0;
    }
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = enc
        .write_all(text.as_bytes())
        .and_then(|()| enc.finish())
        .map(|v| v.len())
        .unwrap_or(text.len());
    text.len() as f64 / compressed.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "<think>\nThe description mentions a crafted URL parameter reflected into the page \
        without encoding, which is cross-site scripting.\n</think>\n\nCWE-79";

    fn kinds(r: &FormatReport) -> Vec<String> {
        r.violations
            .iter()
            .map(|v| {
                serde_json::to_value(v).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn well_formed_passes() {
        let r = check(GOOD, &FormatPolicy::default());
        assert!(r.is_ok(), "{:?}", r.violations);
        assert_eq!(r.penalty, 0.0);
    }

    #[test]
    fn report_hacks_are_caught() {
        let p = FormatPolicy::default();
        assert_eq!(kinds(&check("CWE-79", &p)), ["missing_reasoning"]);
        assert_eq!(
            kinds(&check("<think> No</think>CWE-79", &p)),
            ["reasoning_too_short"]
        );
        assert_eq!(
            kinds(&check("<think></think>CWE-79", &p)),
            ["reasoning_too_short"]
        );
        let two = format!("{GOOD}<think>more thoughts here that are long enough</think>CWE-79");
        assert!(kinds(&check(&two, &p)).contains(&"open_count".to_owned()));
        assert_eq!(
            kinds(&check(&GOOD.replace("CWE-79", ""), &p)),
            ["missing_answer"]
        );
        assert_eq!(
            kinds(&check("<think>a long chain of thought that got cut", &p)),
            ["unterminated"]
        );
        let loop_text = format!("<think>{}</think>B", "I think the answer is B. ".repeat(60));
        let k = kinds(&check(&loop_text, &p));
        assert!(
            k.contains(&"repeated_ngrams".to_owned()) && k.contains(&"compressible".to_owned())
        );
        assert_eq!(
            kinds(&check(&format!("Sure! {GOOD}"), &p)),
            ["text_before_reasoning"]
        );
        assert_eq!(
            kinds(&check(
                "</think>reasoning goes here and it is long enough<think>B",
                &p
            )),
            ["unterminated", "misordered_delimiters"]
        );
    }

    #[test]
    fn prefilled_template() {
        let p = FormatPolicy {
            prefilled_open: true,
            ..FormatPolicy::default()
        };
        let completion = GOOD.trim_start_matches("<think>");
        assert!(check(completion, &p).is_ok());
        // With the block prefilled, an extra opening tag is a violation.
        assert_eq!(kinds(&check(GOOD, &p)), ["open_count"]);
    }

    #[test]
    fn repetition_measures() {
        assert_eq!(repeated_ngram_fraction("a b c", 4), 0.0);
        let rep = "x y z w ".repeat(20);
        assert!(repeated_ngram_fraction(&rep, 4) > 0.9);
        assert!(compression_ratio(&rep) > 5.0);
        let prose = "Attackers exploit deserialization flaws by sending crafted objects; \
            defenders validate types, sign payloads and avoid native serializers where possible.";
        assert!(compression_ratio(prose) < 2.0);
    }
}
