//! The HumanEval verifier: the answer's code ([`crate::code::extract`]) joined to the problem's
//! prompt and tests as upstream does ([`CodeProblem::program`]) and run in the sandbox
//! ([`Sandbox`]); the answer is correct when the program runs to its end.

use std::sync::Arc;

use crate::code::extract::{extract, CodeSource, CompletionKind};
use crate::code::sandbox::{Captured, Isolation, Outcome, Sandbox};
use crate::code::CodeProblem;
use crate::extract::{Extraction, InvalidReason};
use crate::reasoning::ThinkStatus;

use super::{extract_unless_truncated, wrong_kind, Gold, GoldError, Task, Verdict};
use super::{Verifier, VerifyOptions};

/// Functional correctness of Python code. Item metrics: `passed` (1 when the tests passed,
/// which is also `correct` and the score; its mean over items and trials is pass@1) and
/// `timed_out`. The reasons give the outcome as upstream words it (`passed`, `failed: …`,
/// `timed out`, `killed: …`), the interpreter, and the sample's output (first
/// [`OUTPUT_CAP`](crate::code::sandbox::OUTPUT_CAP) bytes of each stream).
#[derive(Debug, Clone)]
pub struct CodeVerifier {
    pub options: VerifyOptions,
    pub sandbox: Arc<Sandbox>,
}

impl CodeVerifier {
    /// The code of the answer: a fenced block is the requested form, raw text a fallback.
    fn extract(&self, answer: &str, problem: &CodeProblem) -> Extraction<crate::code::Completion> {
        match extract(answer, &problem.entry_point) {
            Some(c) if c.source == CodeSource::Fenced => Extraction::proper(c),
            Some(c) => Extraction::lenient(c),
            None => Extraction::invalid(InvalidReason::EmptyAnswer),
        }
    }
}

impl Verifier for CodeVerifier {
    fn task(&self) -> Task {
        Task::Code
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// The gold is the JSON object `{"task_id", "prompt", "test", "entry_point"}`.
    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        let value: serde_json::Value = serde_json::from_str(gold).map_err(|e| GoldError::Bad {
            task: Task::Code,
            detail: format!("not a JSON problem object: {e}"),
        })?;
        self.parse_gold_json(&value)
    }

    fn parse_gold_json(&self, gold: &serde_json::Value) -> Result<Gold, GoldError> {
        CodeProblem::from_json(gold)
            .map(Gold::Code)
            .map_err(|e| GoldError::Bad {
                task: Task::Code,
                detail: e.to_string(),
            })
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Code(problem) = gold else {
            return wrong_kind(Task::Code, think);
        };
        let ex = extract_unless_truncated(think, || self.extract(answer, problem));
        let mut v = Verdict::new(Task::Code, think, &ex);
        let mut passed = false;
        let mut timed_out = false;
        if let Some(completion) = ex.value() {
            v.reasons.push(
                match completion.kind {
                    CompletionKind::Body => "code: a function body, appended to the prompt",
                    CompletionKind::Function => "code: the whole function, after the prompt",
                }
                .to_owned(),
            );
            match self.sandbox.run(&problem.program(completion)) {
                Ok(run) => {
                    passed = run.outcome == Outcome::Passed;
                    timed_out = run.outcome == Outcome::TimedOut;
                    v.reasons.push(run.outcome.to_string());
                    v.reasons.extend(output_reason("stdout", &run.stdout));
                    v.reasons.extend(output_reason("stderr", &run.stderr));
                }
                Err(e) => v.reasons.push(format!("not run: {e}")),
            }
        }
        v.reasons
            .push(format!("interpreter: {}", self.sandbox.interpreter()));
        if let Isolation::Unisolated { refused } = self.sandbox.isolation() {
            v.reasons.push(format!(
                "WARNING: ran WITHOUT namespace isolation (no network or file-system \
                 sandbox) because the system refused {refused}"
            ));
        }
        v.correct = passed;
        v.score = f64::from(u8::from(passed));
        v.metric("passed", v.score);
        v.metric("timed_out", f64::from(u8::from(timed_out)));
        v
    }
}

/// A reason showing a non-empty stream, saying when it was cut.
fn output_reason(name: &str, captured: &Captured) -> Option<String> {
    if captured.total == 0 {
        return None;
    }
    let note = if captured.is_truncated() {
        format!(
            " (first {} of {} bytes)",
            captured.head.len(),
            captured.total
        )
    } else {
        String::new()
    };
    Some(format!("{name}{note}: {}", captured.text()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::AnswerFormat;
    use crate::spec::{VerifierFactory, VerifierSpec};

    const GOLD: &str = r#"{"task_id": "T/0", "prompt": "def add(a, b):\n    \"\"\"Sum.\"\"\"\n", "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}"#;

    fn verifier() -> Arc<dyn Verifier> {
        VerifierFactory::new(None)
            .build(&VerifierSpec::for_task(Task::Code))
            .unwrap()
    }

    #[test]
    fn grades_by_running_the_tests() {
        let v = verifier();
        let ok = v
            .grade(
                "<think>Add them.</think>\n```python\n    return a + b\n```",
                GOLD,
            )
            .unwrap();
        assert!(ok.correct && ok.score == 1.0, "{:?}", ok.reasons);
        assert_eq!(ok.format, Some(AnswerFormat::Proper));
        assert_eq!(ok.metrics["passed"], 1.0);
        assert!(
            ok.reasons.contains(&"passed".to_owned()),
            "{:?}",
            ok.reasons
        );
        assert!(ok.reasons.iter().any(|r| r.starts_with("interpreter: /")));

        let wrong = v
            .grade(
                "<think>x</think>def add(a, b):\n    print('hi')\n    return a - b",
                GOLD,
            )
            .unwrap();
        assert!(!wrong.correct && wrong.is_valid());
        assert_eq!(wrong.format, Some(AnswerFormat::Lenient), "raw text");
        assert!(wrong.reasons.contains(&"failed: AssertionError".to_owned()));
        assert!(
            wrong.reasons.contains(&"stdout: hi\n".to_owned()),
            "{:?}",
            wrong.reasons
        );
        assert_eq!(wrong.metrics["passed"], 0.0);
    }

    #[test]
    fn nothing_runs_without_code() {
        let v = verifier();
        let cut = v.grade("<think>never closed", GOLD).unwrap();
        let empty = v.grade("<think>x</think>  ", GOLD).unwrap();
        for verdict in [&cut, &empty] {
            assert!(!verdict.correct && !verdict.is_valid());
            assert!(!verdict.reasons.iter().any(|r| r.starts_with("failed")));
            let names: Vec<_> = verdict.metrics.keys().collect();
            assert_eq!(names, ["passed", "timed_out", "truncated", "valid"]);
        }
        assert_eq!(cut.invalid, Some(InvalidReason::Truncated));
        assert_eq!(empty.invalid, Some(InvalidReason::EmptyAnswer));
    }

    #[test]
    fn unisolated_runs_carry_a_warning() {
        let v = CodeVerifier {
            options: VerifyOptions::default(),
            sandbox: Arc::new(Sandbox::unisolated_for_tests(&Default::default())),
        };
        let verdict = v.grade("```python\n    return a + b\n```", GOLD).unwrap();
        assert!(verdict.correct);
        assert!(
            verdict
                .reasons
                .iter()
                .any(|r| r.starts_with("WARNING: ran WITHOUT namespace isolation")),
            "{:?}",
            verdict.reasons
        );
    }

    #[test]
    fn gold_problems_are_checked() {
        let v = verifier();
        assert!(matches!(v.parse_gold(GOLD), Ok(Gold::Code(p)) if p.entry_point == "add"));
        for bad in ["return a + b", "{}", r#"{"task_id": "t"}"#, "[1]"] {
            let e = v.parse_gold(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    GoldError::Bad {
                        task: Task::Code,
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        let mcq = v.verify("Answer: A", &Gold::Answers(vec!["A".into()]));
        assert!(!mcq.correct && !mcq.is_valid());
    }
}
