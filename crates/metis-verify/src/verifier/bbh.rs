//! The BIG-Bench Hard verifier ([`crate::bbh`]): both extractions run on every response, the
//! spec's [`BbhExtraction`] decides `correct` (the reward), and both results are reported so
//! that one run gives Metis's number and lm-eval's.

use crate::bbh::{self, BbhAnswer, BbhExtraction};
use crate::extract::{Extraction, InvalidReason};
use crate::reasoning::ThinkStatus;

use super::{extract_unless_truncated, wrong_kind, Gold, GoldError, Task, Verdict};
use super::{Verifier, VerifyOptions};

/// One BBH answer type. Item metrics: `accuracy` (the chosen extraction's exact match),
/// `fixed_match` and `upstream_match` (each extraction's, 0/1). The generic extraction
/// [`Protocol`](crate::Protocol) does not apply: BBH has its own two, chosen by
/// [`BbhExtraction`].
#[derive(Debug, Clone)]
pub struct BbhVerifier {
    pub options: VerifyOptions,
    pub answer: BbhAnswer,
    pub extraction: BbhExtraction,
}

impl Verifier for BbhVerifier {
    fn task(&self) -> Task {
        Task::Bbh
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// The target as the dataset writes it, read as the verifier's answer type.
    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        bbh::parse_gold(gold, self.answer)
            .map(Gold::Bbh)
            .map_err(|detail| GoldError::Bad {
                task: Task::Bbh,
                detail,
            })
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Bbh(gold) = gold else {
            return wrong_kind(Task::Bbh, think);
        };
        let fixed = extract_unless_truncated(think, || bbh::extract_fixed(answer, self.answer));
        let upstream = extract_unless_truncated(think, || upstream_extraction(answer));
        let fixed_match = fixed.value().is_some_and(|v| bbh::matches(v, gold));
        let upstream_match = upstream
            .value()
            .is_some_and(|c| bbh::upstream_matches(c, gold));
        let (mut v, correct) = match self.extraction {
            BbhExtraction::Fixed => (Verdict::new(Task::Bbh, think, &fixed), fixed_match),
            BbhExtraction::Upstream => (Verdict::new(Task::Bbh, think, &upstream), upstream_match),
        };
        v.exact(correct);
        v.metric("fixed_match", f64::from(u8::from(fixed_match)));
        v.metric("upstream_match", f64::from(u8::from(upstream_match)));
        if v.is_valid() && !correct {
            v.reasons.push(format!("expected {:?}", gold.target));
        }
        v
    }
}

/// lm-eval's capture as an extraction: no match is its `[invalid]`, an empty capture an empty
/// answer.
fn upstream_extraction(answer: &str) -> Extraction<String> {
    match bbh::extract_upstream(answer) {
        Some(c) if c.is_empty() => Extraction::invalid(InvalidReason::EmptyAnswer),
        Some(c) => Extraction::proper(c),
        None => Extraction::invalid(InvalidReason::NoMatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{VerifierFactory, VerifierSpec};

    fn verifier(answer: BbhAnswer, extraction: BbhExtraction) -> std::sync::Arc<dyn Verifier> {
        VerifierFactory::new(None)
            .build(&VerifierSpec {
                task: Some(Task::Bbh),
                bbh_answer: Some(answer),
                bbh_extraction: Some(extraction),
                ..VerifierSpec::default()
            })
            .unwrap()
    }

    #[test]
    fn reasoning_is_split_off_before_extraction() {
        let v = verifier(BbhAnswer::Boolean, BbhExtraction::Fixed);
        // The reasoning's own "the answer is" does not count: only the answer part is read.
        let r = v
            .grade(
                "<think>Maybe the answer is False.</think>\nSo the answer is True.",
                "True",
            )
            .unwrap();
        assert!(r.correct && r.is_valid(), "{r:?}");
        assert_eq!(r.metrics["upstream_match"], 1.0);
        let cut = v.grade("<think>the answer is True", "True").unwrap();
        assert_eq!(cut.invalid, Some(InvalidReason::Truncated));
        assert_eq!(cut.metrics["fixed_match"], 0.0);
        assert_eq!(cut.metrics["upstream_match"], 0.0);
    }

    #[test]
    fn the_spec_chooses_the_extraction_and_both_are_reported() {
        let fixed = verifier(BbhAnswer::Boolean, BbhExtraction::Fixed);
        let upstream = verifier(BbhAnswer::Boolean, BbhExtraction::Upstream);
        let text = "<think>x</think>So the answer is True";
        let f = fixed.grade(text, "True").unwrap();
        let u = upstream.grade(text, "True").unwrap();
        assert!(f.correct && !u.correct);
        assert_eq!(u.extracted.as_deref(), Some("Tru"));
        // Both verdicts report both matches; only `accuracy` follows the spec's choice.
        for r in [&f, &u] {
            assert_eq!(r.metrics["fixed_match"], 1.0);
            assert_eq!(r.metrics["upstream_match"], 0.0);
        }
        assert_eq!((f.metrics["accuracy"], u.metrics["accuracy"]), (1.0, 0.0));
        let none = upstream.grade("The answer is True.", "True").unwrap();
        assert_eq!(none.invalid, Some(InvalidReason::NoMatch), "case-sensitive");
        assert!(fixed.grade("x", "maybe").is_err(), "a bad gold is an error");
    }

    #[test]
    fn spec_fields_belong_to_bbh_and_default_in_resolved() {
        let spec = VerifierSpec::for_task(Task::Bbh);
        assert_eq!(spec.bbh_answer, Some(BbhAnswer::MultipleChoice));
        assert_eq!(spec.bbh_extraction, Some(BbhExtraction::Fixed));
        let stray = VerifierSpec {
            task: Some(Task::Mcq),
            bbh_extraction: Some(BbhExtraction::Upstream),
            ..VerifierSpec::default()
        };
        assert!(matches!(
            stray.validate(),
            Err(crate::SpecError::WrongTask {
                field: "bbh_extraction",
                ..
            })
        ));
        let json: VerifierSpec = serde_json::from_str(
            r#"{"task":"bbh","bbh_answer":"yes_no","bbh_extraction":"upstream"}"#,
        )
        .unwrap();
        assert_eq!(json.bbh_answer, Some(BbhAnswer::YesNo));
        assert_eq!(json.bbh_extraction, Some(BbhExtraction::Upstream));
        assert_eq!("bbh".parse::<Task>(), Ok(Task::Bbh));
    }

    #[test]
    fn wrong_answers_are_valid_and_wrong() {
        let v = verifier(BbhAnswer::MultipleChoice, BbhExtraction::Fixed);
        let r = v.grade("So the answer is (C).", "(B)").unwrap();
        assert!(r.is_valid() && !r.correct);
        assert!(r.reasons.iter().any(|x| x.contains("(B)")), "{r:?}");
        let quirk = v.grade("So the answer is (A).", "Monsters, Inc").unwrap();
        assert!(!quirk.correct, "a letter never matches a text target");
    }
}
