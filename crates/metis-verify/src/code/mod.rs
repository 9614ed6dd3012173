//! Functional correctness of generated Python code, as HumanEval grades it
//! (`openai/human-eval` at `6d43fb980f9fee3c892a914eda09951f772ad10d`, Chen et al. 2021).
//!
//! - [`extract`] takes the code out of a model's answer and decides how it joins the prompt;
//! - [`CodeProblem`] is the gold: the problem's prompt, its test code and its entry point, and
//!   builds upstream's program `prompt + completion + "\n" + test + "\n" + check(entry_point)`;
//! - [`sandbox`] runs such a program in an isolated process and says whether it passed;
//! - [`pass_at_k`] turns per-problem pass counts into the unbiased pass@k.
//!
//! The verifier that ties them together is [`CodeVerifier`](crate::verifier::CodeVerifier).

pub mod extract;
pub mod pass_at_k;
pub mod sandbox;

use serde::{Deserialize, Serialize};

pub use extract::{Completion, CompletionKind};

/// A HumanEval-style problem: what the model completes and what checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeProblem {
    /// The problem's id (`HumanEval/0`), for reports.
    pub task_id: String,
    /// The function signature and docstring (with imports and helpers) the model completes.
    pub prompt: String,
    /// Python defining `check(candidate)`, which raises when the candidate is wrong.
    pub test: String,
    /// The name of the function under test.
    pub entry_point: String,
}

/// A gold object that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeProblemError {
    #[error("not a JSON object {{\"task_id\", \"prompt\", \"test\", \"entry_point\"}}: {0}")]
    Json(String),
    #[error("field {0:?} is empty")]
    Empty(&'static str),
    #[error("entry point {0:?} is not a Python identifier")]
    EntryPoint(String),
    #[error("the prompt does not define the entry point {0:?}")]
    NotInPrompt(String),
}

impl CodeProblem {
    /// Reads the gold from its JSON object and checks it.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, CodeProblemError> {
        let problem: CodeProblem = serde_json::from_value(value.clone())
            .map_err(|e| CodeProblemError::Json(e.to_string()))?;
        problem.validate()?;
        Ok(problem)
    }

    /// The JSON object form of the gold (what datasets and GRPO records store).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("four strings serialise")
    }

    fn validate(&self) -> Result<(), CodeProblemError> {
        for (name, value) in [
            ("task_id", &self.task_id),
            ("prompt", &self.prompt),
            ("test", &self.test),
            ("entry_point", &self.entry_point),
        ] {
            if value.trim().is_empty() {
                return Err(CodeProblemError::Empty(name));
            }
        }
        let ep = &self.entry_point;
        let identifier = ep
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_alphabetic())
            && ep.chars().all(|c| c == '_' || c.is_alphanumeric());
        if !identifier {
            return Err(CodeProblemError::EntryPoint(ep.clone()));
        }
        if !self.prompt.contains(&format!("def {ep}(")) {
            return Err(CodeProblemError::NotInPrompt(ep.clone()));
        }
        Ok(())
    }

    /// Upstream's program (`human_eval/execution.py`, `check_correctness`): the prompt, the
    /// completion, a newline, the test code, a newline, then `check(<entry_point>)`.
    pub fn program(&self, completion: &Completion) -> String {
        format!(
            "{}{}\n{}\ncheck({})",
            self.prompt,
            completion.after_prompt(),
            self.test,
            self.entry_point
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problem() -> CodeProblem {
        CodeProblem {
            task_id: "T/0".into(),
            prompt: "import math\n\ndef f(x):\n    \"\"\"Doc.\"\"\"\n".into(),
            test: "def check(candidate):\n    assert candidate(4) == 2\n".into(),
            entry_point: "f".into(),
        }
    }

    #[test]
    fn program_is_upstreams_concatenation() {
        let p = problem();
        let body = extract::extract("    return int(math.sqrt(x))", "f").unwrap();
        assert_eq!(
            p.program(&body),
            "import math\n\ndef f(x):\n    \"\"\"Doc.\"\"\"\n    return int(math.sqrt(x))\n\n\
             def check(candidate):\n    assert candidate(4) == 2\n\ncheck(f)"
        );
        let function = extract::extract("def f(x):\n    return 2", "f").unwrap();
        assert!(p
            .program(&function)
            .starts_with("import math\n\ndef f(x):\n    \"\"\"Doc.\"\"\"\n\ndef f(x):\n"));
    }

    #[test]
    fn gold_json_round_trips_and_is_checked() {
        let p = problem();
        assert_eq!(CodeProblem::from_json(&p.to_json()).unwrap(), p);
        let mut missing = p.to_json();
        missing.as_object_mut().unwrap().remove("test");
        assert!(matches!(
            CodeProblem::from_json(&missing),
            Err(CodeProblemError::Json(m)) if m.contains("test")
        ));
        let bad_name =
            json!({"task_id": "t", "prompt": "def f(x):\n", "test": "x", "entry_point": "f()"});
        assert!(matches!(
            CodeProblem::from_json(&bad_name),
            Err(CodeProblemError::EntryPoint(_))
        ));
        let elsewhere =
            json!({"task_id": "t", "prompt": "def g(x):\n", "test": "x", "entry_point": "f"});
        assert!(matches!(
            CodeProblem::from_json(&elsewhere),
            Err(CodeProblemError::NotInPrompt(_))
        ));
        let empty =
            json!({"task_id": "t", "prompt": "def f(x):\n", "test": " ", "entry_point": "f"});
        assert_eq!(
            CodeProblem::from_json(&empty),
            Err(CodeProblemError::Empty("test"))
        );
    }
}
