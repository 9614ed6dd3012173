//! The multi-hop QA verifier ([`crate::qa`]): exact match decides `correct` (the binary
//! reward), token F1 is the graded score (the graded reward).

use crate::extract::{normalize, Extraction, InvalidReason, Protocol};
use crate::qa::{best_score, QaRule};
use crate::reasoning::ThinkStatus;

use super::{extract_unless_truncated, wrong_kind, Gold, GoldError, Task, Verdict};
use super::{Verifier, VerifyOptions};

/// Labels a model may put before a short answer on its last line.
const LABELS: [&str; 3] = ["final answer:", "answer:", "a:"];

/// Short-answer QA. Item metrics: `exact_match`, `f1`, `precision`, `recall` (each the best
/// over the gold and its aliases).
#[derive(Debug, Clone)]
pub struct QaVerifier {
    pub options: VerifyOptions,
    pub rule: QaRule,
}

impl QaVerifier {
    /// The predicted answer: the last non-empty line without its `Answer:` label
    /// (`last-line`), or the whole answer part stripped, as LongBench reads it (`faith`).
    fn extract(&self, answer: &str) -> Extraction<String> {
        let text = normalize(answer);
        let candidate = match self.options.protocol {
            Protocol::LastLine => text
                .lines()
                .map(str::trim)
                .rev()
                .find(|l| !l.is_empty())
                .map(|line| {
                    let lower = line.to_lowercase();
                    LABELS
                        .iter()
                        .find(|l| lower.starts_with(*l))
                        .map_or(line, |l| line[l.len()..].trim())
                }),
            Protocol::Faith | Protocol::FaithStrict => Some(text.trim()),
        };
        match candidate.filter(|c| !c.is_empty()) {
            Some(c) => Extraction::proper(c.to_owned()),
            None => Extraction::invalid(InvalidReason::EmptyAnswer),
        }
    }
}

impl Verifier for QaVerifier {
    fn task(&self) -> Task {
        Task::Qa
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// One answer, or a JSON array of accepted answers (a gold and its aliases).
    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        let trimmed = gold.trim();
        if trimmed.starts_with('[') {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) {
                return self.parse_gold_json(&value);
            }
        }
        self.parse_gold_json(&serde_json::Value::String(gold.to_owned()))
    }

    fn parse_gold_json(&self, gold: &serde_json::Value) -> Result<Gold, GoldError> {
        let bad = |detail: String| GoldError::Bad {
            task: Task::Qa,
            detail,
        };
        let answers: Vec<String> = match gold {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("answers must be strings: {gold}")))?,
            other => return Err(GoldError::NotText(other.to_string())),
        };
        if answers.iter().all(|a| a.trim().is_empty()) {
            return Err(bad("no non-empty answer".to_owned()));
        }
        Ok(Gold::Answers(answers))
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Answers(golds) = gold else {
            return wrong_kind(Task::Qa, think);
        };
        let ex = extract_unless_truncated(think, || self.extract(answer));
        let mut v = Verdict::new(Task::Qa, think, &ex);
        let s = ex
            .value()
            .map(|p| best_score(p, golds, self.rule))
            .unwrap_or_default();
        v.exact(s.exact_match == 1.0);
        v.score = s.f1;
        v.metric("exact_match", s.exact_match);
        v.metric("f1", s.f1);
        v.metric("precision", s.precision);
        v.metric("recall", s.recall);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{VerifierFactory, VerifierSpec};

    #[test]
    fn qa_grades_last_line_and_aliases() {
        let v = VerifierFactory::new(None)
            .build(&VerifierSpec::for_task(Task::Qa))
            .unwrap();
        let gold = r#"["Johnny Depp", "John Christopher Depp"]"#;
        let ok = v
            .grade(
                "<think>Both films star him.</think>Reasoning.\nAnswer: Johnny Depp",
                gold,
            )
            .unwrap();
        assert!(ok.correct && ok.score == 1.0, "{ok:?}");
        let part = v.grade("<think>x</think>Depp", gold).unwrap();
        assert!(!part.correct);
        assert!(
            (part.score - 2.0 / 3.0).abs() < 1e-12,
            "best F1 over aliases: {part:?}"
        );
        let yes = v.grade("<think>x</think>yes", "no").unwrap();
        assert_eq!(yes.score, 0.0);
        assert!(!v.grade("<think>cut", "no").unwrap().is_valid());
        assert!(v.grade("x", "[]").is_err());
        assert_eq!(
            v.parse_gold("Paris, France").unwrap(),
            Gold::Answers(vec!["Paris, France".into()]),
            "a comma is part of one answer"
        );
    }
}
