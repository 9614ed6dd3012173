//! CTIBench-TAA's verifier: the predicted threat actor against the gold actor, through
//! CTIBench's alias and related-group dictionaries ([`crate::taa`]).

use std::sync::{Arc, LazyLock};

use regex::Regex;

use crate::extract::{normalize, AnswerFormat, Extraction, InvalidReason, Protocol};
use crate::reasoning::ThinkStatus;
use crate::taa::{extract_actor, normalize_actor, ActorCatalog, Attribution, TaaRule};

use super::{extract_unless_truncated, wrong_kind, Gold, GoldError, Task, Verdict};
use super::{Verifier, VerifyOptions};

/// FAITH's TAA answer pattern.
static FAITH_TAA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)threat actor:\s+((?:\w+ )*\w+)").expect("regex"));

/// Threat actor attribution. Item metrics: `accuracy` and `plausible_accuracy` (correct, or a
/// related group) under the fixed rule, `ctibench_accuracy` and `ctibench_plausible_accuracy`
/// under CTIBench's own. `correct` follows the spec's rule; the graded `score` is 1 for the
/// actor or an alias, 0.5 for a related group.
#[derive(Debug, Clone)]
pub struct TaaVerifier {
    pub options: VerifyOptions,
    /// Without the dictionaries only the gold's own name (normalised) counts.
    pub catalog: Option<Arc<ActorCatalog>>,
    pub rule: TaaRule,
}

impl TaaVerifier {
    fn extract(&self, answer: &str) -> Extraction<String> {
        let catalog = self.catalog.as_deref();
        let on_line = |line: &str| match extract_actor(line, catalog) {
            Ok(Some(name)) => Extraction::proper(name),
            Ok(None) => Extraction::invalid(InvalidReason::NoMatch),
            Err(candidates) => Extraction::invalid(InvalidReason::Ambiguous { candidates }),
        };
        match self.options.protocol {
            Protocol::LastLine => {
                let text = normalize(answer);
                let mut lines = text.lines().map(str::trim).rev().filter(|l| !l.is_empty());
                let Some(last) = lines.next() else {
                    return Extraction::invalid(InvalidReason::EmptyAnswer);
                };
                // A long last line naming no known actor is a closing remark: fall back to
                // the last earlier line that names one (lenient).
                let names_one = |l: &str| catalog.is_some_and(|c| !c.names_in(l).is_empty());
                if last.split_whitespace().count() > 8 && !names_one(last) {
                    return match lines.find(|l| names_one(l)).map(on_line) {
                        Some(Extraction::Valid { value, .. }) => Extraction::lenient(value),
                        Some(invalid) => invalid,
                        None => Extraction::invalid(InvalidReason::NoMatch),
                    };
                }
                on_line(last)
            }
            Protocol::Faith | Protocol::FaithStrict => {
                let text = if self.options.protocol == Protocol::Faith {
                    normalize(answer).into_owned()
                } else {
                    answer.to_owned()
                };
                let found: Vec<String> = FAITH_TAA
                    .captures_iter(&text)
                    .filter_map(|c| c.get(1).map(|m| normalize_actor(m.as_str())))
                    .collect();
                match found.last() {
                    Some(name) => Extraction::proper(name.clone()),
                    None => Extraction::invalid(InvalidReason::NoMatch),
                }
            }
        }
    }

    fn judge(&self, predicted: &str, gold: &str, rule: TaaRule) -> Attribution {
        match &self.catalog {
            Some(c) => c.judge(predicted, gold, rule),
            None if normalize_actor(predicted) == normalize_actor(gold) => Attribution::Correct,
            None => Attribution::Incorrect,
        }
    }
}

impl Verifier for TaaVerifier {
    fn task(&self) -> Task {
        Task::Taa
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        if normalize_actor(gold).is_empty() {
            return Err(GoldError::Bad {
                task: Task::Taa,
                detail: format!("{gold:?} names no actor"),
            });
        }
        // Kept as written: CTIBench's rule compares its own lower-cased, stripped spelling.
        Ok(Gold::Actor(gold.to_owned()))
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Actor(gold) = gold else {
            return wrong_kind(Task::Taa, think);
        };
        let ex = extract_unless_truncated(think, || self.extract(answer));
        let mut v = Verdict::new(Task::Taa, think, &ex);
        let judge = |rule| match ex.value() {
            Some(p) => self.judge(p, gold, rule),
            None => Attribution::Incorrect,
        };
        let (fixed, upstream) = (judge(TaaRule::Fixed), judge(TaaRule::Ctibench));
        let flag = |b: bool| f64::from(u8::from(b));
        v.metric("accuracy", flag(fixed == Attribution::Correct));
        v.metric("plausible_accuracy", flag(fixed != Attribution::Incorrect));
        v.metric("ctibench_accuracy", flag(upstream == Attribution::Correct));
        v.metric(
            "ctibench_plausible_accuracy",
            flag(upstream != Attribution::Incorrect),
        );
        let chosen = match self.rule {
            TaaRule::Fixed => fixed,
            TaaRule::Ctibench => upstream,
        };
        v.correct = chosen == Attribution::Correct;
        v.score = match chosen {
            Attribution::Correct => 1.0,
            Attribution::Plausible => 0.5,
            Attribution::Incorrect => 0.0,
        };
        let proper = v.format == Some(AnswerFormat::Proper);
        v.metric("strict_accuracy", flag(v.correct && proper));
        if let Some(p) = ex.value() {
            v.reasons
                .push(format!("{p:?} against {gold:?}: {chosen:?}"));
        }
        v
    }
}
