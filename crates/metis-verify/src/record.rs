//! The grading half of a JSONL prompt record: its `task`, `verifier` and `gold` fields.
//!
//! GRPO prompt files (`metis train grpo --prompts`) and prompt-file benchmarks (`metis eval
//! --prompts`) read the same records, so a record is graded the same way as an RL reward and
//! as an evaluation score. This module turns those fields into a resolved [`VerifierSpec`], the
//! [`Verifier`] the one [`VerifierFactory`] builds from it, and the parsed [`Gold`]; the
//! callers read the rest of the record (`id`, `messages`) themselves.
//!
//! ```json
//! {"task": "mcq", "gold": "B", "verifier": {"protocol": "last-line", "choices": 4}, ...}
//! ```
//!
//! Every error names the record field at fault (`task`, `gold`, `verifier.choices`, …).

use std::str::FromStr;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::cvss;
use crate::extract::Protocol;
use crate::spec::{RewardShape, SpecError, VerifierFactory, VerifierSpec};
use crate::verifier::{Gold, Task, Verifier};

/// A record field that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.map(|f| format!("field {f:?}: ")).unwrap_or_default())]
pub struct RecordError {
    /// The offending field (`verifier.choices`), when one is to blame.
    pub field: Option<&'static str>,
    pub message: String,
}

impl RecordError {
    fn new(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The record's verifier spec — its `task` and `verifier` object over `defaults(task)` (the
/// run's protocol, reward shape, …), defaults resolved — and the verifier `factory` builds.
pub fn record_verifier(
    obj: &Map<String, Value>,
    defaults: impl FnOnce(Task) -> VerifierSpec,
    factory: &mut VerifierFactory,
) -> Result<(VerifierSpec, Arc<dyn Verifier>), RecordError> {
    let task = match obj.get("task") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(Task::from_str(s).map_err(|e| RecordError::new(Some("task"), e.to_string()))?)
        }
        Some(other) => {
            return Err(RecordError::new(
                Some("task"),
                format!("must be a string, got {other}"),
            ))
        }
    };
    let own: VerifierSpec = match obj.get("verifier") {
        None | Some(Value::Null) => VerifierSpec::default(),
        Some(v) => spec_from_json(v)?,
    };
    let task = match (task, own.task) {
        (Some(t), Some(v)) if t != v => {
            return Err(RecordError::new(
                Some("verifier.task"),
                format!("{v} differs from the record's task {t}"),
            ))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => return Err(RecordError::new(Some("task"), "missing")),
    };
    let run_defaults = VerifierSpec {
        task: Some(task),
        ..defaults(task)
    };
    let spec = run_defaults.overridden_by(&own).resolved();
    let verifier = factory
        .build(&spec)
        .map_err(|e| RecordError::new(Some(spec_error_field(&e)), e.to_string()))?;
    Ok((spec, verifier))
}

/// The record's `gold` as written, and parsed by `verifier` (a string, an array of strings
/// for sets, an object for IFEval, a number for math).
pub fn record_gold(
    obj: &Map<String, Value>,
    verifier: &dyn Verifier,
) -> Result<(Value, Gold), RecordError> {
    let gold_json = obj
        .get("gold")
        .cloned()
        .ok_or_else(|| RecordError::new(Some("gold"), "missing"))?;
    let gold = verifier
        .parse_gold_json(&gold_json)
        .map_err(|e| RecordError::new(Some("gold"), e.to_string()))?;
    Ok((gold_json, gold))
}

/// The record field a spec error is about (`verifier.choices`, …).
fn spec_error_field(e: &SpecError) -> &'static str {
    let field = match e {
        SpecError::WrongTask { field, .. } | SpecError::BadValue { field, .. } => *field,
        _ => "",
    };
    match field {
        "choices" => "verifier.choices",
        "multi" => "verifier.multi",
        "cvss_version" => "verifier.cvss_version",
        "cwe_hierarchy" => "verifier.cwe_hierarchy",
        "credit_parent" => "verifier.credit_parent",
        "attack_catalog" => "verifier.attack_catalog",
        "ifeval_mode" => "verifier.ifeval_mode",
        "math_extraction" => "verifier.math_extraction",
        "taa_rule" => "verifier.taa_rule",
        "qa_rule" => "verifier.qa_rule",
        "bbh_answer" => "verifier.bbh_answer",
        "bbh_extraction" => "verifier.bbh_extraction",
        "code_timeout_ms" => "verifier.code_timeout_ms",
        "code_memory_mib" => "verifier.code_memory_mib",
        "code_interpreter" => "verifier.code_interpreter",
        "code_unsafe_no_isolation" => "verifier.code_unsafe_no_isolation",
        _ => "verifier",
    }
}

/// A record's `verifier` object. Protocol names are accepted in the CLI's spelling too
/// (`last-line`), and errors name the offending field.
fn spec_from_json(v: &Value) -> Result<VerifierSpec, RecordError> {
    let mut v = v.clone();
    if let Some(Value::String(p)) = v.get("protocol") {
        let protocol: Protocol = p
            .parse()
            .map_err(|e: String| RecordError::new(Some("verifier.protocol"), e))?;
        v["protocol"] = serde_json::to_value(protocol)
            .map_err(|e| RecordError::new(Some("verifier"), e.to_string()))?;
    }
    if let Some(Value::String(r)) = v.get("reward") {
        let reward: RewardShape = r
            .parse()
            .map_err(|e: String| RecordError::new(Some("verifier.reward"), e))?;
        v["reward"] = serde_json::to_value(reward)
            .map_err(|e| RecordError::new(Some("verifier"), e.to_string()))?;
    }
    if let Some(Value::String(c)) = v.get("cvss_version") {
        if c.parse::<cvss::Version>().is_err() {
            return Err(RecordError::new(
                Some("verifier.cvss_version"),
                format!("{c:?}: expected 2.0, 3.0, 3.1 or 4.0"),
            ));
        }
    }
    let spec: VerifierSpec =
        serde_json::from_value(v).map_err(|e| RecordError::new(Some("verifier"), e.to_string()))?;
    spec.task
        .map_or(Ok(()), |_| spec.validate().map(|_| ()))
        .map_err(|e| RecordError::new(Some(spec_error_field(&e)), e.to_string()))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn read(v: Value) -> Result<(VerifierSpec, Gold), RecordError> {
        let mut factory = VerifierFactory::new(None);
        let o = obj(v);
        let (spec, verifier) = record_verifier(&o, |_| VerifierSpec::default(), &mut factory)?;
        let (_, gold) = record_gold(&o, &*verifier)?;
        Ok((spec, gold))
    }

    #[test]
    fn the_record_overrides_the_run_defaults() {
        let mut factory = VerifierFactory::new(None);
        let o = obj(json!({"task": "mcq", "gold": "B", "verifier": {"protocol": "faith"}}));
        let defaults = |_| VerifierSpec {
            protocol: Some(Protocol::LastLine),
            reward: Some(RewardShape::Graded),
            ..VerifierSpec::default()
        };
        let (spec, _) = record_verifier(&o, defaults, &mut factory).unwrap();
        assert_eq!(spec.protocol, Some(Protocol::Faith));
        assert_eq!(spec.reward, Some(RewardShape::Graded));
        assert_eq!(spec.task, Some(Task::Mcq));
    }

    #[test]
    fn errors_name_the_field() {
        let field = |v| read(v).err().and_then(|e| e.field);
        assert_eq!(field(json!({"gold": "B"})), Some("task"));
        assert_eq!(field(json!({"task": "nope", "gold": "B"})), Some("task"));
        assert_eq!(field(json!({"task": "mcq"})), Some("gold"));
        assert_eq!(
            field(json!({"task": "mcq", "gold": "B", "verifier": {"task": "cwe"}})),
            Some("verifier.task")
        );
        assert_eq!(
            field(json!({"task": "mcq", "gold": "B", "verifier": {"protocol": "loud"}})),
            Some("verifier.protocol")
        );
        assert_eq!(
            field(json!({"task": "cwe", "gold": "CWE-79", "verifier": {"choices": 4}})),
            Some("verifier.choices")
        );
        let e = read(json!({"task": "mcq"})).err().unwrap();
        assert_eq!(e.to_string(), "field \"gold\": missing");
    }
}
