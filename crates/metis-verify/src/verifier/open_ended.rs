//! The open-ended verifier (AlpacaEval): no rule can grade a free-form answer, so a judge model
//! compares it with a reference answer (`metis-eval`'s judge pass). This verifier does the part
//! that must be the same everywhere: it splits off the reasoning once (reference note §9.3),
//! so that the judge sees only the post-`</think>` answer, and it marks an answer that is empty
//! or was cut off inside its reasoning as invalid, since there is nothing to judge.
//!
//! Its verdict is never `correct` and scores 0: the judge's preference replaces the score.

use crate::extract::{Extraction, InvalidReason};
use crate::reasoning::ThinkStatus;

use super::{extract_unless_truncated, wrong_kind, Gold, GoldError, Task, Verdict};
use super::{Verifier, VerifyOptions};

/// Open-ended answers. `extracted` is the answer the judge sees (the text after the reasoning,
/// trimmed); item metrics: `valid`, `truncated`, `answer_chars` (its length in characters,
/// which AlpacaEval's length control uses).
#[derive(Debug, Clone)]
pub struct OpenEndedVerifier {
    pub options: VerifyOptions,
}

impl OpenEndedVerifier {
    fn extract(answer: &str) -> Extraction<String> {
        match answer.trim() {
            "" => Extraction::invalid(InvalidReason::EmptyAnswer),
            text => Extraction::proper(text.to_owned()),
        }
    }
}

impl Verifier for OpenEndedVerifier {
    fn task(&self) -> Task {
        Task::OpenEnded
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// The reference answer, kept verbatim (the judge prompt quotes it as written); an empty
    /// one cannot be compared with.
    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        if gold.trim().is_empty() {
            return Err(GoldError::Bad {
                task: Task::OpenEnded,
                detail: "empty reference answer".to_owned(),
            });
        }
        Ok(Gold::Reference(gold.to_owned()))
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Reference(_) = gold else {
            return wrong_kind(Task::OpenEnded, think);
        };
        let ex = extract_unless_truncated(think, || Self::extract(answer));
        let mut v = Verdict::new(Task::OpenEnded, think, &ex);
        let chars = ex.value().map_or(0, |a| a.chars().count());
        v.metric("answer_chars", chars as f64);
        if ex.is_valid() {
            v.reasons
                .push("open-ended: graded by a judge model, not by this verifier".to_owned());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{VerifierFactory, VerifierSpec};

    #[test]
    fn keeps_the_post_think_answer_and_refuses_nothing_to_judge() {
        let v = VerifierFactory::new(None)
            .build(&VerifierSpec::for_task(Task::OpenEnded))
            .unwrap();
        let ok = v
            .grade(
                "<think>plan the poem</think>\n  Roses are red.\n",
                "A reference.",
            )
            .unwrap();
        assert!(ok.is_valid(), "{ok:?}");
        assert_eq!(ok.extracted.as_deref(), Some("Roses are red."));
        assert_eq!(ok.metrics["answer_chars"], 14.0);
        assert!(
            !ok.correct && ok.score == 0.0,
            "the judge grades, not the verifier"
        );

        let cut = v.grade("<think>never closes", "A reference.").unwrap();
        assert_eq!(cut.invalid, Some(InvalidReason::Truncated));
        assert_eq!(cut.metrics["answer_chars"], 0.0);
        let empty = v.grade("<think>done</think>  \n", "A reference.").unwrap();
        assert_eq!(empty.invalid, Some(InvalidReason::EmptyAnswer));

        let unicode = v.grade("héllo", "ref").unwrap();
        assert_eq!(
            unicode.metrics["answer_chars"], 5.0,
            "characters, not bytes"
        );
        assert!(v.parse_gold("  \n").is_err());
        assert_eq!(
            v.parse_gold(" kept as is ").unwrap(),
            Gold::Reference(" kept as is ".into())
        );
    }
}
