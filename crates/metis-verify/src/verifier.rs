//! The one interface through which answers are graded, by the benchmark harness and by the RL
//! trainer alike: (response, gold) → [`Verdict`] with a score in [0, 1], the extracted value,
//! its validity and the reasons, plus a binary reward view.
//!
//! Item-level metrics travel in [`Verdict::metrics`] under stable names; [`aggregate`] turns
//! the verdicts of one trial into benchmark metrics (means, pooled micro-F1, MAD).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::attack::{self, AttackCatalog, SetMatchOptions};
use crate::cvss::{self, Vector};
use crate::cwe::{CweCatalog, CweId};
use crate::extract::{self, AnswerFormat, Extraction, InvalidReason, Protocol, TechniqueSet};
use crate::ifeval::IfEvalGold;
use crate::mcq::{ChoiceSpec, LetterSet};
use crate::reasoning::{split, Delimiters, ThinkStatus};

/// The kinds of answer Metis can verify; a task names its verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Multiple choice: a letter, or an exact set of letters.
    Mcq,
    /// CVE description → CWE id.
    Cwe,
    /// CVE description → CVSS vector.
    Cvss,
    /// Text → set of ATT&CK technique ids.
    Attack,
    /// Instruction following (IFEval's 25 verifiable instruction kinds).
    Ifeval,
    /// A math problem's final answer (GSM8K, MATH), compared by equivalence.
    Math,
    /// Threat report → the threat actor responsible (CTIBench-TAA).
    Taa,
    /// Short-answer QA scored by exact match and token F1 (HotpotQA, 2WikiMultihopQA).
    Qa,
    /// BIG-Bench Hard: one of eight answer types (option, booleans, integer, Dyck closing,
    /// sorted words, free text), exact match.
    Bbh,
    /// An open-ended answer (AlpacaEval): graded by a judge model against a reference answer,
    /// not by a rule; the verifier only isolates the answer the judge sees.
    OpenEnded,
    /// Python code run against the problem's tests in a sandbox (HumanEval).
    Code,
}

impl Task {
    pub const ALL: [Task; 11] = [
        Task::Mcq,
        Task::Cwe,
        Task::Cvss,
        Task::Attack,
        Task::Ifeval,
        Task::Math,
        Task::Taa,
        Task::Qa,
        Task::Bbh,
        Task::OpenEnded,
        Task::Code,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Mcq => "mcq",
            Task::Cwe => "cwe",
            Task::Cvss => "cvss",
            Task::Attack => "attack",
            Task::Ifeval => "ifeval",
            Task::Math => "math",
            Task::Taa => "taa",
            Task::Qa => "qa",
            Task::Bbh => "bbh",
            Task::OpenEnded => "open_ended",
            Task::Code => "code",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = GoldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| GoldError::UnknownTask(s.to_owned()))
    }
}

/// A parsed gold answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Gold {
    Letters(LetterSet),
    Cwe(CweId),
    Cvss(Vector),
    Techniques(TechniqueSet),
    /// The instructions an IFEval response must follow.
    Instructions(IfEvalGold),
    /// A math answer as written (LaTeX or plain), trimmed.
    Math(String),
    /// A threat actor's name as the dataset writes it.
    Actor(String),
    /// Accepted short answers (a gold and its aliases).
    Answers(Vec<String>),
    /// A BIG-Bench Hard target and its reading as the task's answer type.
    Bbh(crate::bbh::BbhGold),
    /// The reference answer a judge compares an open-ended answer with, verbatim.
    Reference(String),
    /// A programming problem: prompt, tests and entry point.
    Code(crate::code::CodeProblem),
}

/// A gold answer that cannot be used: a dataset problem, reported, never scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GoldError {
    #[error(
        "unknown task {0:?} (expected one of mcq, cwe, cvss, attack, ifeval, math, taa, qa, bbh, open_ended, code)"
    )]
    UnknownTask(String),
    #[error("bad gold answer for {task}: {detail}")]
    Bad { task: Task, detail: String },
    #[error("gold answer of the wrong kind for {task}")]
    WrongKind { task: Task },
    #[error("gold answer must be a string or an array of strings, got {0}")]
    NotText(String),
}

/// The grade of one response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub task: Task,
    /// Graded score in [0, 1] (1/0 for exact-match tasks).
    pub score: f64,
    /// Whether the answer counts as correct (the binary RL reward).
    pub correct: bool,
    /// The extracted answer in canonical form, when one was found.
    pub extracted: Option<String>,
    /// Format of a valid extraction.
    pub format: Option<AnswerFormat>,
    /// Why the answer is invalid, when it is.
    pub invalid: Option<InvalidReason>,
    /// How the reasoning block was found.
    pub think: ThinkStatus,
    /// Human-readable notes on how the grade came about.
    pub reasons: Vec<String>,
    /// Item-level metrics by name; see [`aggregate`].
    pub metrics: BTreeMap<String, f64>,
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        self.invalid.is_none()
    }

    /// 1.0 for a correct answer, else 0.0.
    pub fn binary_reward(&self) -> f64 {
        if self.correct {
            1.0
        } else {
            0.0
        }
    }

    fn new<T: fmt::Display>(task: Task, think: ThinkStatus, extraction: &Extraction<T>) -> Self {
        let mut v = Verdict {
            task,
            score: 0.0,
            correct: false,
            extracted: extraction.value().map(ToString::to_string),
            format: extraction.format(),
            invalid: extraction.reason().cloned(),
            think,
            reasons: Vec::new(),
            metrics: BTreeMap::new(),
        };
        if let Some(r) = extraction.reason() {
            v.reasons.push(format!("invalid answer: {r}"));
        }
        if extraction.format() == Some(AnswerFormat::Lenient) {
            v.reasons.push(
                "lenient: the answer is not where the format asks (found by a fallback)".to_owned(),
            );
        }
        v.metric("valid", f64::from(u8::from(extraction.is_valid())));
        v.metric(
            "truncated",
            f64::from(u8::from(think == ThinkStatus::Unterminated)),
        );
        v
    }

    fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_owned(), value);
    }

    /// Records exact-match correctness under `accuracy` and, for the proper format only,
    /// `strict_accuracy` (FAITH's `accuracy`).
    fn exact(&mut self, correct: bool) {
        self.correct = correct;
        self.score = f64::from(u8::from(correct));
        self.metric("accuracy", self.score);
        let proper = self.format == Some(AnswerFormat::Proper);
        self.metric("strict_accuracy", f64::from(u8::from(correct && proper)));
    }
}

/// Settings shared by every verifier.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VerifyOptions {
    pub protocol: Protocol,
    pub delimiters: Delimiters,
}

/// Grades responses of one task.
pub trait Verifier: Send + Sync {
    fn task(&self) -> Task;
    fn options(&self) -> &VerifyOptions;

    /// Parses a gold answer as datasets store it.
    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError>;

    /// Grades the answer part of a response (reasoning already removed).
    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict;

    /// Grades a whole response: splits off the reasoning, then grades the answer. A response
    /// whose reasoning never closed is invalid (truncated), as in FAITH.
    fn verify(&self, response: &str, gold: &Gold) -> Verdict {
        let parts = split(response, &self.options().delimiters);
        self.verify_answer(parts.answer, parts.status, gold)
    }

    /// Parses `gold` and grades `response` against it.
    fn grade(&self, response: &str, gold: &str) -> Result<Verdict, GoldError> {
        Ok(self.verify(response, &self.parse_gold(gold)?))
    }

    /// Parses a gold answer given as JSON: a string, or an array of strings (sets).
    fn parse_gold_json(&self, gold: &serde_json::Value) -> Result<Gold, GoldError> {
        self.parse_gold(&gold_text(gold)?)
    }
}

/// The text form of a JSON gold answer: a string as is, an array joined by commas.
pub fn gold_text(gold: &serde_json::Value) -> Result<String, GoldError> {
    match gold {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(","))
            .ok_or_else(|| GoldError::NotText(gold.to_string())),
        other => Err(GoldError::NotText(other.to_string())),
    }
}

/// Extraction unless the reasoning never closed: a truncated response has no answer to
/// extract, and goes through the same grading path as any other invalid answer so that every
/// item reports the same metrics.
fn extract_unless_truncated<T>(
    think: ThinkStatus,
    extract: impl FnOnce() -> Extraction<T>,
) -> Extraction<T> {
    if think == ThinkStatus::Unterminated {
        Extraction::invalid(InvalidReason::Truncated)
    } else {
        extract()
    }
}

fn wrong_kind(task: Task, think: ThinkStatus) -> Verdict {
    let mut v = Verdict::new::<String>(task, think, &Extraction::invalid(InvalidReason::NoMatch));
    v.reasons.push(GoldError::WrongKind { task }.to_string());
    v
}

mod bbh;
mod code;
mod general;
mod open_ended;
mod qa;
mod taa;
pub use bbh::BbhVerifier;
pub use code::CodeVerifier;
pub use general::{IfEvalVerifier, MathVerifier};
pub use open_ended::OpenEndedVerifier;
pub use qa::QaVerifier;
pub use taa::TaaVerifier;

// ---------------------------------------------------------------------------------------------

/// Multiple-choice questions, single-answer or exact-set multi-answer.
#[derive(Debug, Clone)]
pub struct McqVerifier {
    pub options: VerifyOptions,
    pub spec: ChoiceSpec,
}

impl Verifier for McqVerifier {
    fn task(&self) -> Task {
        Task::Mcq
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        let bad = |detail: String| GoldError::Bad {
            task: Task::Mcq,
            detail,
        };
        let set: LetterSet = gold.trim().parse().map_err(|e| bad(format!("{e}")))?;
        if let Some(c) = set.first_outside(&self.spec) {
            return Err(bad(format!(
                "letter {c} is not one of A–{}",
                self.spec.last_letter()
            )));
        }
        if !self.spec.multi && set.len() != 1 {
            return Err(bad(format!(
                "{set:?} has several letters on a single-answer question"
            )));
        }
        Ok(Gold::Letters(set))
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Letters(gold) = gold else {
            return wrong_kind(Task::Mcq, think);
        };
        let ex = extract_unless_truncated(think, || {
            extract::mcq(answer, self.options.protocol, &self.spec)
        });
        let mut v = Verdict::new(Task::Mcq, think, &ex);
        v.exact(ex.value() == Some(gold));
        v
    }
}

/// CVE → CWE mapping: exact id match, plus hierarchy credit when a catalog is given.
#[derive(Debug, Clone)]
pub struct CweVerifier {
    pub options: VerifyOptions,
    pub catalog: Option<Arc<CweCatalog>>,
}

impl Verifier for CweVerifier {
    fn task(&self) -> Task {
        Task::Cwe
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        extract::normalize(gold.trim())
            .parse::<CweId>()
            .map(Gold::Cwe)
            .map_err(|e| GoldError::Bad {
                task: Task::Cwe,
                detail: format!("{gold:?}: {e}"),
            })
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Cwe(gold) = gold else {
            return wrong_kind(Task::Cwe, think);
        };
        let ex = extract_unless_truncated(think, || extract::cwe(answer, self.options.protocol));
        let mut v = Verdict::new(Task::Cwe, think, &ex);
        v.exact(ex.value() == Some(gold));
        if let Some(catalog) = &self.catalog {
            let credit = ex.value().is_some_and(|p| {
                let relation = catalog.relation(*p, *gold);
                if !v.correct && relation.hierarchy_credit() {
                    v.reasons.push(format!("{p} is a {relation:?} of {gold}"));
                }
                relation.hierarchy_credit()
            });
            v.metric("hierarchy_accuracy", f64::from(u8::from(credit)));
        }
        v
    }
}

/// The base metrics compared item by item for `metric_accuracy`, per version.
fn base_metric_names(version: cvss::Version) -> &'static [&'static str] {
    match version {
        cvss::Version::V2_0 => &["AV", "AC", "Au", "C", "I", "A"],
        cvss::Version::V3_0 | cvss::Version::V3_1 => &["AV", "AC", "PR", "UI", "S", "C", "I", "A"],
        cvss::Version::V4_0 => &[
            "AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA",
        ],
    }
}

/// CVE → CVSS vector (CTIBench-VSP). The graded score is FAITH's `1 − |Δbase| / 10` (0 for an
/// invalid vector); `abs_error` (valid answers only) aggregates to CTIBench's MAD; `correct`
/// means every base metric matches the gold vector.
#[derive(Debug, Clone)]
pub struct CvssVerifier {
    pub options: VerifyOptions,
    /// The version a vector written without prefix is read as.
    pub version: cvss::Version,
}

impl Verifier for CvssVerifier {
    fn task(&self) -> Task {
        Task::Cvss
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        Vector::parse_as(gold.trim(), self.version)
            .map(Gold::Cvss)
            .map_err(|e| GoldError::Bad {
                task: Task::Cvss,
                detail: format!("{gold:?}: {e}"),
            })
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Cvss(gold) = gold else {
            return wrong_kind(Task::Cvss, think);
        };
        let ex = extract_unless_truncated(think, || {
            extract::cvss(answer, self.options.protocol, self.version)
        });
        let mut v = Verdict::new(Task::Cvss, think, &ex);
        let Some(pred) = ex.value() else {
            v.metric("cvss_score", 0.0);
            v.metric("exact_vector", 0.0);
            v.metric("metric_accuracy", 0.0);
            return v;
        };
        let (p, g) = (pred.base_score(), gold.base_score());
        let abs_error = ((p - g).abs() * 10.0).round() / 10.0;
        v.score = (1.0 - abs_error / 10.0).clamp(0.0, 1.0);
        v.metric("cvss_score", v.score);
        v.metric("abs_error", abs_error);
        let names = base_metric_names(gold.version());
        let same = names
            .iter()
            .filter(|m| pred.version() == gold.version() && pred.metric(m) == gold.metric(m))
            .count();
        v.metric("metric_accuracy", same as f64 / names.len() as f64);
        v.correct = same == names.len();
        v.metric("exact_vector", f64::from(u8::from(v.correct)));
        if pred.version() != gold.version() {
            v.reasons.push(format!(
                "answered CVSS {} where CVSS {} was asked",
                pred.version(),
                gold.version()
            ));
        }
        v.reasons
            .push(format!("predicted base {p:.1}, gold base {g:.1}"));
        v
    }
}

/// Text → ATT&CK technique set (CTIBench-ATE): exact set, Jaccard, and counts for micro-F1.
#[derive(Debug, Clone)]
pub struct AttackVerifier {
    pub options: VerifyOptions,
    /// Catalog used to map revoked ids to their replacements; without one ids are compared
    /// as written.
    pub catalog: Option<Arc<AttackCatalog>>,
    pub set_options: SetMatchOptions,
}

impl Verifier for AttackVerifier {
    fn task(&self) -> Task {
        Task::Attack
    }
    fn options(&self) -> &VerifyOptions {
        &self.options
    }

    fn parse_gold(&self, gold: &str) -> Result<Gold, GoldError> {
        let mut set = BTreeSet::new();
        for part in gold.split([',', ';', ' ']).filter(|p| !p.trim().is_empty()) {
            let id = part.trim().parse().map_err(|e| GoldError::Bad {
                task: Task::Attack,
                detail: format!("{part:?}: {e}"),
            })?;
            set.insert(id);
        }
        if set.is_empty() {
            return Err(GoldError::Bad {
                task: Task::Attack,
                detail: "empty technique list".to_owned(),
            });
        }
        Ok(Gold::Techniques(TechniqueSet(set)))
    }

    fn verify_answer(&self, answer: &str, think: ThinkStatus, gold: &Gold) -> Verdict {
        let Gold::Techniques(gold) = gold else {
            return wrong_kind(Task::Attack, think);
        };
        let empty = BTreeSet::new();
        let ex = extract_unless_truncated(think, || extract::attack(answer, self.options.protocol));
        let mut v = Verdict::new(Task::Attack, think, &ex);
        let raw: Vec<_> = ex
            .value()
            .map_or(Vec::new(), |s| s.0.iter().copied().collect());
        let pred = attack::normalize_prediction(&raw, self.catalog.as_deref(), &self.set_options);
        let gold_ids: Vec<_> = gold.0.iter().copied().collect();
        let gold =
            attack::normalize_prediction(&gold_ids, self.catalog.as_deref(), &self.set_options);
        let pred = if ex.is_valid() { pred } else { empty };
        if ex.is_valid() {
            v.extracted = Some(TechniqueSet(pred.clone()).to_string());
        }
        let counts = attack::set_counts(&pred, &gold);
        let exact = attack::exact_set_match(&pred, &gold) && ex.is_valid();
        v.correct = exact;
        let denom = 2 * counts.true_positives + counts.false_positives + counts.false_negatives;
        v.score = if denom == 0 {
            1.0
        } else {
            2.0 * counts.true_positives as f64 / denom as f64
        };
        v.metric("exact_set", f64::from(u8::from(exact)));
        v.metric("jaccard", attack::jaccard(&pred, &gold));
        v.metric("f1", v.score);
        v.metric("tp", counts.true_positives as f64);
        v.metric("fp", counts.false_positives as f64);
        v.metric("fn", counts.false_negatives as f64);
        v
    }
}

/// Benchmark metrics over the verdicts of one trial: the mean of every item metric over the
/// verdicts that report it, the mean `score`, `invalid_rate` (1 − mean `valid`), and where the
/// items carry them, pooled `micro_precision`/`micro_recall`/`micro_f1` (from `tp`/`fp`/`fn`)
/// `mad` (the mean of `abs_error`), and IFEval's instruction-level accuracies
/// `inst_level_strict_acc`/`inst_level_loose_acc` (followed instructions over all instructions,
/// pooled across items).
pub fn aggregate(verdicts: &[Verdict]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for v in verdicts {
        for (k, x) in &v.metrics {
            let e = sums.entry(k.as_str()).or_default();
            e.0 += x;
            e.1 += 1;
        }
    }
    let mut out: BTreeMap<String, f64> = sums
        .iter()
        .filter(|(k, _)| {
            !matches!(
                **k,
                "tp" | "fp"
                    | "fn"
                    | "abs_error"
                    | "valid"
                    | "inst_strict_followed"
                    | "inst_loose_followed"
                    | "inst_total"
            )
        })
        .map(|(k, (s, n))| ((*k).to_owned(), s / *n as f64))
        .collect();
    if !verdicts.is_empty() {
        out.insert(
            "score".to_owned(),
            verdicts.iter().map(|v| v.score).sum::<f64>() / verdicts.len() as f64,
        );
    }
    if let Some((s, n)) = sums.get("valid") {
        out.insert("invalid_rate".to_owned(), 1.0 - s / *n as f64);
    }
    if let Some((s, n)) = sums.get("abs_error") {
        out.insert("mad".to_owned(), s / *n as f64);
    }
    if let Some((total, _)) = sums.get("inst_total").filter(|(t, _)| *t > 0.0) {
        for (followed, name) in [
            ("inst_strict_followed", "inst_level_strict_acc"),
            ("inst_loose_followed", "inst_level_loose_acc"),
        ] {
            let (k, _) = sums.get(followed).copied().unwrap_or_default();
            out.insert(name.to_owned(), k / total);
        }
    }
    if sums.contains_key("tp") {
        let counts: Vec<attack::SetCounts> = verdicts
            .iter()
            .map(|v| attack::SetCounts {
                true_positives: v.metrics.get("tp").copied().unwrap_or(0.0) as usize,
                false_positives: v.metrics.get("fp").copied().unwrap_or(0.0) as usize,
                false_negatives: v.metrics.get("fn").copied().unwrap_or(0.0) as usize,
            })
            .collect();
        let m = attack::micro_f1(&counts);
        out.insert("micro_precision".to_owned(), m.precision);
        out.insert("micro_recall".to_owned(), m.recall);
        out.insert("micro_f1".to_owned(), m.f1);
    }
    out
}

/// The verifier for `task` with every option at its default (see
/// [`VerifierSpec::resolved`](crate::spec::VerifierSpec::resolved)) and no data catalogs, built
/// by the one [`VerifierFactory`](crate::spec::VerifierFactory).
pub fn default_verifier(task: Task, options: VerifyOptions) -> Box<dyn Verifier> {
    let spec = crate::spec::VerifierSpec {
        task: Some(task),
        protocol: Some(options.protocol),
        ..Default::default()
    };
    crate::spec::VerifierFactory::new(None)
        .with_delimiters(options.delimiters)
        .build_boxed(&spec)
        .expect("a task's default spec always builds without a data directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(task: Task) -> Box<dyn Verifier> {
        default_verifier(task, VerifyOptions::default())
    }

    #[test]
    fn mcq_grades_and_rewards() {
        let m = v(Task::Mcq);
        let ok = m.grade("<think>reasoning</think>\nAnswer: C", "C").unwrap();
        assert!(ok.correct && ok.is_valid());
        assert_eq!(ok.binary_reward(), 1.0);
        let wrong = m.grade("<think>r</think>Answer: B", "C").unwrap();
        assert!(!wrong.correct && wrong.is_valid());
        let cut = m.grade("<think>never ends", "C").unwrap();
        assert_eq!(cut.invalid, Some(InvalidReason::Truncated));
        assert_eq!(cut.metrics["truncated"], 1.0);
        assert!(m.grade("x", "E").is_err());
        assert!(m.grade("x", "AC").is_err());
    }

    #[test]
    fn multi_answer_exact_set() {
        let m = McqVerifier {
            options: VerifyOptions::default(),
            spec: ChoiceSpec::MULTI_ABCD,
        };
        assert!(m.grade("Answer: A, C", "AC").unwrap().correct);
        assert!(!m.grade("Answer: A", "AC").unwrap().correct);
        assert!(!m.grade("Answer: A, C, D", "AC").unwrap().correct);
    }

    #[test]
    fn cvss_scores_distance() {
        let c = v(Task::Cvss);
        let gold = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"; // 9.8
        let exact = c.grade(&format!("<think>x</think>{gold}"), gold).unwrap();
        assert!(exact.correct);
        assert_eq!(exact.score, 1.0);
        let near = c
            .grade("AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", gold) // 8.8, no prefix → 3.1
            .unwrap();
        assert!(!near.correct);
        assert!((near.score - 0.9).abs() < 1e-12);
        assert!((near.metrics["abs_error"] - 1.0).abs() < 1e-12);
        assert!((near.metrics["metric_accuracy"] - 7.0 / 8.0).abs() < 1e-12);
        let bad = c.grade("I don't know", gold).unwrap();
        assert_eq!(bad.score, 0.0);
        assert!(!bad.metrics.contains_key("abs_error"));
        let agg = aggregate(&[exact, near, bad]);
        assert!((agg["mad"] - 0.5).abs() < 1e-12);
        assert!((agg["cvss_score"] - (1.0 + 0.9) / 3.0).abs() < 1e-12);
        assert!((agg["invalid_rate"] - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn attack_micro_f1_pools_counts() {
        let a = v(Task::Attack);
        let r1 = a.grade("Answer: T1059, T1071", "T1059,T1071").unwrap();
        let r2 = a.grade("Answer: T1059, T1105", "T1059,T1071").unwrap();
        assert!(r1.correct && !r2.correct);
        let agg = aggregate(&[r1, r2]);
        // tp 3, fp 1, fn 1 → P = R = F1 = 0.75
        assert!((agg["micro_f1"] - 0.75).abs() < 1e-12);
        assert!((agg["exact_set"] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn cwe_exact_and_gold_errors() {
        let c = v(Task::Cwe);
        assert!(c.grade("Justification.\nCWE-79", "CWE-79").unwrap().correct);
        assert!(!c.grade("CWE-80", "CWE-79").unwrap().correct);
        assert!(c.grade("CWE-79", "not an id").is_err());
        let j = c.parse_gold_json(&serde_json::json!("CWE-79")).unwrap();
        assert_eq!(j, Gold::Cwe("CWE-79".parse().unwrap()));
        assert!(c.parse_gold_json(&serde_json::json!(79)).is_err());
    }

    #[test]
    fn truncated_answers_report_the_same_metrics_as_others() {
        let golds = [
            "B",
            "CWE-79",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "T1059",
        ];
        for (task, gold) in Task::ALL.into_iter().zip(golds) {
            let ver = v(task);
            let cut = ver.grade("<think>cut off", gold).unwrap();
            let wrong = ver.grade("nothing useful", gold).unwrap();
            assert_eq!(cut.invalid, Some(InvalidReason::Truncated), "{task}");
            let names = |v: &Verdict| v.metrics.keys().cloned().collect::<Vec<_>>();
            assert_eq!(names(&cut), names(&wrong), "{task}");
            assert_eq!(cut.score, 0.0);
        }
    }

    #[test]
    fn wrong_gold_kind_is_not_a_panic() {
        let m = v(Task::Mcq);
        let verdict = m.verify("Answer: A", &Gold::Cwe("CWE-79".parse().unwrap()));
        assert!(!verdict.correct && !verdict.is_valid());
    }
}
