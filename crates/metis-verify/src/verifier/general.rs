//! The verifiers of the report's general RL data: instruction following ([`IfEvalVerifier`])
//! and math answers ([`MathVerifier`]). They grade through the same [`Verifier`] interface as
//! the cyber tasks, so the `<think>` split, truncation handling and the binary/graded reward
//! views are shared.

use crate::extract::{Extraction, InvalidReason};
use crate::ifeval::{self, IfEvalGold};
use crate::math::{self, gsm8k, Equivalence, ExtractMethod};
use crate::reasoning::ThinkStatus;
use crate::spec::{IfEvalMode, MathExtraction};

use super::{extract_unless_truncated, gold_text, wrong_kind, Gold, GoldError, Task, Verdict};
use super::{Verifier, VerifyOptions};

/// IFEval: every instruction of the item checked in strict and loose mode.
///
/// Item metrics: `prompt_level_strict_acc` / `prompt_level_loose_acc` (1 when every
/// instruction was followed), and the counts `inst_strict_followed`, `inst_loose_followed`,
/// `inst_total`, which [`aggregate`](super::aggregate) pools into IFEval's instruction-level
/// accuracies (all instructions flattened, not a mean of per-prompt means). `correct` is the
/// prompt-level verdict of the spec's mode; `score` the fraction followed in that mode.
#[derive(Debug, Clone)]
pub struct IfEvalVerifier {
    pub options: VerifyOptions,
    pub mode: IfEvalMode,
}

impl Verifier for IfEvalVerifier {
    fn task(&self) -> Task {
        Task::Ifeval
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// The gold is the JSON object `{"instruction_id_list": [...], "kwargs": [...]}`.
    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        let value: serde_json::Value = serde_json::from_str(gold).map_err(|e| GoldError::Bad {
            task: Task::Ifeval,
            detail: format!("not a JSON instruction object: {e}"),
        })?;
        self.parse_gold_json(&value)
    }

    fn parse_gold_json(&self, gold: &serde_json::Value) -> Result<Gold, GoldError> {
        IfEvalGold::from_json(gold)
            .map(Gold::Instructions)
            .map_err(|e| GoldError::Bad {
                task: Task::Ifeval,
                detail: e.to_string(),
            })
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Instructions(gold) = gold else {
            return wrong_kind(Task::Ifeval, think);
        };
        let n = gold.instructions.len();
        let ex = extract_unless_truncated(think, || {
            if answer.trim().is_empty() {
                Extraction::invalid(InvalidReason::EmptyAnswer)
            } else {
                Extraction::proper(String::new())
            }
        });
        // A truncated or empty answer follows nothing (upstream: strict needs a non-empty
        // response, and every loose variant of an empty one is empty).
        let followed = if ex.is_valid() {
            ifeval::evaluate(gold, answer)
        } else {
            ifeval::Followed {
                strict: vec![false; n],
                loose: vec![false; n],
            }
        };
        let mut v = Verdict::new(Task::Ifeval, think, &ex);
        let count = |b: &[bool]| b.iter().filter(|&&x| x).count();
        let (strict, loose) = (count(&followed.strict), count(&followed.loose));
        v.extracted = ex
            .is_valid()
            .then(|| format!("strict {strict}/{n}, loose {loose}/{n}"));
        v.metric("prompt_level_strict_acc", f64::from(u8::from(strict == n)));
        v.metric("prompt_level_loose_acc", f64::from(u8::from(loose == n)));
        v.metric("inst_strict_followed", strict as f64);
        v.metric("inst_loose_followed", loose as f64);
        v.metric("inst_total", n as f64);
        let (chosen, k) = match self.mode {
            IfEvalMode::Strict => (&followed.strict, strict),
            IfEvalMode::Loose => (&followed.loose, loose),
        };
        v.correct = k == n;
        v.score = if n == 0 { 1.0 } else { k as f64 / n as f64 };
        v.metric("accuracy", f64::from(u8::from(v.correct)));
        for (instruction, ok) in gold.instructions.iter().zip(chosen) {
            if !ok {
                v.reasons.push(format!(
                    "{} not followed ({:?} mode)",
                    instruction.id, self.mode
                ));
            }
        }
        v
    }
}

/// Math answers: the reasoning-model extraction compared by equivalence, and lm-eval's GSM8K
/// strict/flexible string matches, all reported; the spec's [`MathExtraction`] decides
/// `correct`.
///
/// Item metrics: `reasoning_match`, `strict_match`, `flexible_match`, `minerva_match` (0/1),
/// `unknown` (1 when the chosen comparison could not decide; counted as wrong), `accuracy`.
#[derive(Debug, Clone)]
pub struct MathVerifier {
    pub options: VerifyOptions,
    pub extraction: MathExtraction,
}

/// One way of reading and comparing a math answer.
struct MathRead {
    extracted: Option<String>,
    method: Option<ExtractMethod>,
    verdict: Equivalence,
}

impl MathRead {
    fn none() -> Self {
        Self {
            extracted: None,
            method: None,
            verdict: Equivalence::NotEqual,
        }
    }

    fn matched(&self) -> bool {
        self.verdict == Equivalence::Equal
    }
}

impl MathVerifier {
    fn read(&self, how: MathExtraction, answer: &str, gold: &str) -> MathRead {
        let string_match = |pred: Option<String>| match pred {
            Some(p) => MathRead {
                verdict: if gsm8k::exact_match(&p, gold) {
                    Equivalence::Equal
                } else {
                    Equivalence::NotEqual
                },
                extracted: Some(p),
                method: None,
            },
            None => MathRead::none(),
        };
        match how {
            MathExtraction::Reasoning => match math::extract_final_answer(answer) {
                Some(ex) => MathRead {
                    verdict: math::equivalent(gold, &ex.answer),
                    extracted: Some(ex.answer),
                    method: Some(ex.method),
                },
                None => MathRead::none(),
            },
            MathExtraction::Gsm8kStrict => {
                string_match(gsm8k::strict_extract(answer, gsm8k::Variant::ZeroShot))
            }
            MathExtraction::Gsm8kCotStrict => {
                string_match(gsm8k::strict_extract(answer, gsm8k::Variant::CotEightShot))
            }
            MathExtraction::Gsm8kFlexible => string_match(gsm8k::flexible_extract(answer)),
            MathExtraction::Minerva => match math::minerva_candidate(answer) {
                Some(c) => {
                    let pred = math::minerva_normalize(&c);
                    MathRead {
                        verdict: math::equivalent(&math::minerva_normalize(gold), &pred),
                        extracted: Some(pred),
                        method: Some(ExtractMethod::FinalAnswerIs),
                    }
                }
                None => MathRead::none(),
            },
        }
    }
}

impl Verifier for MathVerifier {
    fn task(&self) -> Task {
        Task::Math
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        let gold = gold.trim();
        if gold.is_empty() {
            return Err(GoldError::Bad {
                task: Task::Math,
                detail: "empty answer".to_owned(),
            });
        }
        Ok(Gold::Math(gold.to_owned()))
    }

    fn parse_gold_json(&self, gold: &serde_json::Value) -> Result<Gold, GoldError> {
        match gold {
            // Numeric golds are common in math data (`"gold": 18`).
            serde_json::Value::Number(n) => self.parse_gold(&n.to_string()),
            other => self.parse_gold(&gold_text(other)?),
        }
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Math(gold) = gold else {
            return wrong_kind(Task::Math, think);
        };
        let truncated = think == ThinkStatus::Unterminated;
        let read = |how| {
            if truncated {
                MathRead::none()
            } else {
                self.read(how, answer, gold)
            }
        };
        let chosen = read(self.extraction);
        let ex = extract_unless_truncated(think, || match (&chosen.extracted, chosen.method) {
            (Some(a), Some(m)) if is_lenient(m) => Extraction::lenient(a.clone()),
            (Some(a), _) => Extraction::proper(a.clone()),
            (None, _) if answer.trim().is_empty() => {
                Extraction::invalid(InvalidReason::EmptyAnswer)
            }
            (None, _) => Extraction::invalid(InvalidReason::NoMatch),
        });
        let mut v = Verdict::new(Task::Math, think, &ex);
        v.exact(chosen.matched());
        let unknown = matches!(chosen.verdict, Equivalence::Unknown { .. });
        if let Equivalence::Unknown { reason } = &chosen.verdict {
            v.reasons.push(format!("equivalence undecided: {reason}"));
        }
        if let Some(m) = chosen.method {
            v.reasons.push(format!("answer taken by {m:?}"));
        }
        v.metric("unknown", f64::from(u8::from(unknown)));
        for (name, how) in [
            ("reasoning_match", MathExtraction::Reasoning),
            ("strict_match", self.strict_variant()),
            ("flexible_match", MathExtraction::Gsm8kFlexible),
            ("minerva_match", MathExtraction::Minerva),
        ] {
            let hit = if how == self.extraction {
                chosen.matched()
            } else {
                read(how).matched()
            };
            v.metric(name, f64::from(u8::from(hit)));
        }
        v
    }
}

impl MathVerifier {
    /// The lm-eval strict-match that goes with this verifier's prompt style.
    fn strict_variant(&self) -> MathExtraction {
        match self.extraction {
            MathExtraction::Gsm8kCotStrict => MathExtraction::Gsm8kCotStrict,
            _ => MathExtraction::Gsm8kStrict,
        }
    }
}

/// Answers found without an explicit marker (a last number or line) are lenient.
fn is_lenient(method: ExtractMethod) -> bool {
    matches!(method, ExtractMethod::LastNumber | ExtractMethod::LastLine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{VerifierFactory, VerifierSpec};
    use crate::verifier::aggregate;

    fn build(spec: VerifierSpec) -> std::sync::Arc<dyn Verifier> {
        VerifierFactory::new(None).build(&spec).unwrap()
    }

    const NO_COMMA_3_WORDS: &str = r#"{"instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"], "kwargs": [{}, {"relation": "at least", "num_words": 3}]}"#;

    #[test]
    fn ifeval_modes_scores_and_pooled_instruction_accuracy() {
        let v = build(VerifierSpec::for_task(Task::Ifeval));
        let ok = v
            .grade("<think>plan</think>hello there my friend", NO_COMMA_3_WORDS)
            .unwrap();
        assert!(ok.correct && ok.score == 1.0, "{ok:?}");
        let half = v
            .grade("<think>p</think>hello, there", NO_COMMA_3_WORDS)
            .unwrap();
        assert!(!half.correct);
        assert_eq!(half.score, 0.0, "both fail: a comma, and 2 words");
        let one = v
            .grade("<think>p</think>hello, there my friend", NO_COMMA_3_WORDS)
            .unwrap();
        assert_eq!(one.score, 0.5);
        assert!(one
            .reasons
            .iter()
            .any(|r| r.contains("punctuation:no_comma")));
        let cut = v.grade("<think>never closed", NO_COMMA_3_WORDS).unwrap();
        assert!(!cut.is_valid() && cut.metrics["inst_strict_followed"] == 0.0);
        let agg = aggregate(&[ok, one, cut]);
        assert!((agg["inst_level_strict_acc"] - 3.0 / 6.0).abs() < 1e-12);
        assert!((agg["prompt_level_strict_acc"] - 1.0 / 3.0).abs() < 1e-12);
        assert!(!agg.contains_key("inst_total"));
        assert!(v.grade("x", "not json").is_err());
        assert!(v
            .grade(
                "x",
                r#"{"instruction_id_list": ["nope:nope"], "kwargs": [{}]}"#
            )
            .is_err());
    }

    #[test]
    fn ifeval_loose_mode_decides_correctness_when_asked() {
        let gold = r#"{"instruction_id_list": ["startend:quotation"], "kwargs": [{}]}"#;
        let response = "<think>p</think>Sure:\n\"a quoted answer\"";
        let strict = build(VerifierSpec::for_task(Task::Ifeval));
        let loose = build(VerifierSpec {
            task: Some(Task::Ifeval),
            ifeval_mode: Some(IfEvalMode::Loose),
            ..VerifierSpec::default()
        });
        assert!(!strict.grade(response, gold).unwrap().correct);
        let l = loose.grade(response, gold).unwrap();
        assert!(
            l.correct,
            "dropping the first line quotes the answer: {l:?}"
        );
        assert_eq!(l.metrics["prompt_level_strict_acc"], 0.0);
    }

    #[test]
    fn math_reports_every_extraction_and_unknowns() {
        let v = build(VerifierSpec::for_task(Task::Math));
        let boxed = v.grade("<think>9*2</think>So \\boxed{18}.", "18").unwrap();
        assert!(boxed.correct && boxed.format == Some(crate::AnswerFormat::Proper));
        assert_eq!(boxed.metrics["strict_match"], 0.0, "no #### line");
        let hashes = v
            .grade("<think>x</think>9 * 2 = 18\n#### 18", "18")
            .unwrap();
        assert!(hashes.correct);
        assert_eq!(hashes.metrics["strict_match"], 1.0);
        assert_eq!(hashes.metrics["flexible_match"], 1.0);
        let frac = v.grade("The answer is \\frac{1}{2}.", "0.5").unwrap();
        assert!(frac.correct, "{frac:?}");
        let wrong = v.grade("\\boxed{17}", "18").unwrap();
        assert!(!wrong.correct && wrong.is_valid());
        let none = v.grade("<think>x</think>I cannot tell.", "18").unwrap();
        assert!(!none.is_valid());
        let strict = build(VerifierSpec {
            task: Some(Task::Math),
            math_extraction: Some(MathExtraction::Gsm8kStrict),
            ..VerifierSpec::default()
        });
        let s = strict.grade("\\boxed{18}", "18").unwrap();
        assert!(!s.correct, "lm-eval strict needs ####");
        assert_eq!(s.metrics["reasoning_match"], 1.0);
        assert!(v.parse_gold_json(&serde_json::json!(18)).is_ok());
        assert!(v.grade("x", "  ").is_err());
    }
}
