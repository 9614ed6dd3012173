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
