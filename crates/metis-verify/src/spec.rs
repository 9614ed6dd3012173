//! The one description of "how to grade this item", and the one place it becomes a verifier.
//!
//! A [`VerifierSpec`] is plain data (serialisable, hashable): the task, the extraction
//! protocol, the reward shape and the task's options (MCQ option count, CVSS version, ATT&CK
//! sub-technique credit and catalog, CWE hierarchy credit, IFEval mode, math extraction, BBH
//! answer type and extraction).
//! Benchmarks declare one per item, GRPO prompt files carry one per record (a benchmark's
//! exported prompts carry the benchmark's), and `metis score` builds one from its flags.
//!
//! [`VerifierFactory::build`] is the only code that turns a spec into a [`Verifier`]. It loads
//! the data catalogs a spec names (CWE weaknesses, ATT&CK techniques) from the data directory
//! once, shares one verifier between equal specs, and records which catalogs it used and what
//! it could not find, so that an evaluation score and an RL reward for the same item are
//! computed by the same code with the same data.
//!
//! Defaults live here and only here ([`VerifierSpec::resolved`]): a record that says only
//! `"task": "attack"` is graded exactly like a CTIBench-ATE item.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::attack::{AttackCatalog, Domain, SetMatchOptions};
use crate::bbh::{BbhAnswer, BbhExtraction};
use crate::code::sandbox::{self, Sandbox, SandboxConfig, SandboxError};
use crate::cvss;
use crate::cwe::CweCatalog;
use crate::extract::Protocol;
use crate::mcq::ChoiceSpec;
use crate::qa::QaRule;
use crate::reasoning::Delimiters;
use crate::taa::{ActorCatalog, TaaRule};
use crate::verifier::{
    AttackVerifier, BbhVerifier, CodeVerifier, CvssVerifier, CweVerifier, IfEvalVerifier,
    MathVerifier, McqVerifier, OpenEndedVerifier, QaVerifier, TaaVerifier, Task, Verifier,
    VerifyOptions,
};

/// Which view of a verdict is the RL reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardShape {
    /// 1 when the answer is correct, else 0 (RLVR's binary reward).
    #[default]
    Binary,
    /// The graded score in [0, 1] (CVSS `1 − |Δbase|/10`, ATT&CK F1, IFEval fraction followed).
    Graded,
}

impl FromStr for RewardShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "binary" | "correct" => Ok(Self::Binary),
            "graded" | "score" => Ok(Self::Graded),
            other => Err(format!(
                "unknown reward kind {other:?} (expected binary or graded)"
            )),
        }
    }
}

/// IFEval's two ways of deciding whether an instruction was followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfEvalMode {
    /// The checker must pass on the response as written.
    #[default]
    Strict,
    /// Some of the eight variants (markup removed, first/last line dropped) passes.
    Loose,
}

impl FromStr for IfEvalMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "loose" => Ok(Self::Loose),
            other => Err(format!(
                "unknown IFEval mode {other:?} (expected strict or loose)"
            )),
        }
    }
}

/// Which extraction decides a math item's `correct`. Every math verdict reports all of them as
/// metrics; this picks the one that is the accuracy and the reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MathExtraction {
    /// A reasoning model's final answer (`\boxed{}`, "final answer is", "The answer is",
    /// `####`, last line), compared by mathematical equivalence.
    #[default]
    Reasoning,
    /// lm-eval `gsm8k` strict-match: the first `#### N`, string exact match.
    Gsm8kStrict,
    /// lm-eval `gsm8k_cot` strict-match: the first "The answer is N." (upstream regex,
    /// unescaped final dot included), string exact match.
    Gsm8kCotStrict,
    /// lm-eval flexible-extract: the last number anywhere, string exact match.
    Gsm8kFlexible,
    /// lm-eval Minerva: "Final Answer: The final answer is X. I hope it is correct.",
    /// normalised, compared by equivalence.
    Minerva,
}

impl FromStr for MathExtraction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            Self::Reasoning,
            Self::Gsm8kStrict,
            Self::Gsm8kCotStrict,
            Self::Gsm8kFlexible,
            Self::Minerva,
        ];
        all.into_iter()
            .find(|m| m.name() == s || m.name().replace('-', "_") == s)
            .ok_or_else(|| {
                format!(
                    "unknown math extraction {s:?} (expected {})",
                    all.map(Self::name).join(", ")
                )
            })
    }
}

impl MathExtraction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Reasoning => "reasoning",
            Self::Gsm8kStrict => "gsm8k-strict",
            Self::Gsm8kCotStrict => "gsm8k-cot-strict",
            Self::Gsm8kFlexible => "gsm8k-flexible",
            Self::Minerva => "minerva",
        }
    }
}

/// An ATT&CK technique catalog: a domain and a release, e.g. `enterprise-v15.1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttackCatalogRef {
    pub domain: Domain,
    pub version: String,
}

impl AttackCatalogRef {
    /// The release CTIBench-ATE was built on.
    pub const DEFAULT_VERSION: &'static str = "v15.1";

    pub fn new(domain: Domain, version: impl Into<String>) -> Self {
        Self {
            domain,
            version: version.into(),
        }
    }

    /// The two catalog files, relative to the data directory.
    pub fn files(&self) -> [String; 2] {
        let stem = format!("attack/{}-attack-{}", self.domain.as_str(), self.version);
        [
            format!("{stem}-techniques.tsv"),
            format!("{stem}-revoked-map.tsv"),
        ]
    }
}

impl fmt::Display for AttackCatalogRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.domain.as_str(), self.version)
    }
}

impl FromStr for AttackCatalogRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("ATT&CK catalog {s:?} is not DOMAIN-VERSION (e.g. enterprise-v15.1)");
        let (domain, version) = s.split_once('-').ok_or_else(bad)?;
        let domain = match domain.to_ascii_lowercase().as_str() {
            "enterprise" => Domain::Enterprise,
            "mobile" => Domain::Mobile,
            _ => return Err(bad()),
        };
        if version.is_empty() {
            return Err(bad());
        }
        Ok(Self::new(domain, version))
    }
}

impl Serialize for AttackCatalogRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AttackCatalogRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How to grade one item. Absent options take the task's defaults ([`VerifierSpec::resolved`]);
/// an option of another task is an error ([`VerifierSpec::validate`]).
///
/// In JSON (a GRPO record's `verifier` object, a benchmark export, `metis score --spec`):
/// `{"task": "attack", "protocol": "last_line", "reward": "binary", "credit_parent": true,
/// "attack_catalog": "enterprise-v15.1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierSpec {
    /// The verifier. Optional in JSON only where the task is given next to the spec (a GRPO
    /// record's `task` field); [`VerifierSpec::validate`] requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Answer extraction for the letter/id/vector tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The reward shape (GRPO); evaluation reports every metric regardless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<RewardShape>,
    /// mcq: number of options (4 = A–D).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<u8>,
    /// mcq: several letters may be correct together (exact-set match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi: Option<bool>,
    /// cvss: the version an unprefixed vector is read as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_version: Option<String>,
    /// cwe: give hierarchy credit from the CWE catalog of the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwe_hierarchy: Option<bool>,
    /// attack: a predicted sub-technique counts as its parent (CTIBench-ATE golds are
    /// parent-level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_parent: Option<bool>,
    /// attack: the technique catalog that maps revoked ids to their replacements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack_catalog: Option<AttackCatalogRef>,
    /// ifeval: the mode that decides `correct` and the reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifeval_mode: Option<IfEvalMode>,
    /// math: the extraction that decides `correct` and the reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub math_extraction: Option<MathExtraction>,
    /// taa: the scoring rule that decides `correct` (both are reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taa_rule: Option<TaaRule>,
    /// qa: the official HotpotQA/2Wiki scoring (yes/no rule) or LongBench's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa_rule: Option<QaRule>,
    /// bbh: the answer type (how the answer is read and compared); a BBH benchmark item takes
    /// its task's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbh_answer: Option<BbhAnswer>,
    /// bbh: the extraction that decides `correct` (both are reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbh_extraction: Option<BbhExtraction>,
    /// code: the program's time limit in milliseconds (upstream HumanEval: 3000); the sample
    /// is killed one second later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_timeout_ms: Option<u64>,
    /// code: the sample's address-space limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_memory_mib: Option<u64>,
    /// code: the Python interpreter, a name looked up on PATH or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_interpreter: Option<String>,
    /// code: UNSAFE. Where the system refuses the sandbox's namespaces, run samples without
    /// them (no network or file-system isolation; limits and the system-call filter stay)
    /// instead of refusing. Every verdict then carries a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_unsafe_no_isolation: Option<bool>,
}

/// A spec that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("verifier spec has no task")]
    NoTask,
    #[error("verifier field {field:?} applies to {applies_to} only, not {task}")]
    WrongTask {
        field: &'static str,
        applies_to: Task,
        task: Task,
    },
    #[error("verifier field {field:?}: {detail}")]
    BadValue { field: &'static str, detail: String },
    #[error("catalog {path}: {detail}")]
    Catalog { path: String, detail: String },
    #[error("code sandbox: {0}")]
    Sandbox(SandboxError),
}

impl VerifierSpec {
    /// The spec of `task` with every option at its default.
    pub fn for_task(task: Task) -> Self {
        Self {
            task: Some(task),
            ..Self::default()
        }
        .resolved()
    }

    /// The task; an error when absent.
    pub fn task(&self) -> Result<Task, SpecError> {
        self.task.ok_or(SpecError::NoTask)
    }

    /// Checks that every option set belongs to the task and has a usable value.
    pub fn validate(&self) -> Result<Task, SpecError> {
        let task = self.task()?;
        let only = |field: &'static str, set: bool, applies_to: Task| {
            if set && task != applies_to {
                Err(SpecError::WrongTask {
                    field,
                    applies_to,
                    task,
                })
            } else {
                Ok(())
            }
        };
        only("choices", self.choices.is_some(), Task::Mcq)?;
        only("multi", self.multi.is_some(), Task::Mcq)?;
        only("cvss_version", self.cvss_version.is_some(), Task::Cvss)?;
        only("cwe_hierarchy", self.cwe_hierarchy.is_some(), Task::Cwe)?;
        only("credit_parent", self.credit_parent.is_some(), Task::Attack)?;
        only(
            "attack_catalog",
            self.attack_catalog.is_some(),
            Task::Attack,
        )?;
        only("ifeval_mode", self.ifeval_mode.is_some(), Task::Ifeval)?;
        only(
            "math_extraction",
            self.math_extraction.is_some(),
            Task::Math,
        )?;
        only("bbh_answer", self.bbh_answer.is_some(), Task::Bbh)?;
        only("bbh_extraction", self.bbh_extraction.is_some(), Task::Bbh)?;
        only(
            "code_timeout_ms",
            self.code_timeout_ms.is_some(),
            Task::Code,
        )?;
        only(
            "code_memory_mib",
            self.code_memory_mib.is_some(),
            Task::Code,
        )?;
        only(
            "code_interpreter",
            self.code_interpreter.is_some(),
            Task::Code,
        )?;
        only(
            "code_unsafe_no_isolation",
            self.code_unsafe_no_isolation.is_some(),
            Task::Code,
        )?;
        self.validate_code_values()?;
        if let Some(n) = self.choices {
            if !(2..=26).contains(&n) {
                return Err(SpecError::BadValue {
                    field: "choices",
                    detail: format!("must be between 2 and 26, got {n}"),
                });
            }
        }
        if let Some(v) = &self.cvss_version {
            v.parse::<cvss::Version>()
                .map_err(|_| SpecError::BadValue {
                    field: "cvss_version",
                    detail: format!("{v:?}: expected 2.0, 3.0, 3.1 or 4.0"),
                })?;
        }
        Ok(task)
    }

    /// The code options' values: a time limit of 1 ms to 10 min, at least 64 MiB (the
    /// interpreter alone maps tens of MiB), an interpreter name.
    fn validate_code_values(&self) -> Result<(), SpecError> {
        let bad = |field: &'static str, detail: String| Err(SpecError::BadValue { field, detail });
        if let Some(ms) = self.code_timeout_ms {
            if !(1..=600_000).contains(&ms) {
                return bad("code_timeout_ms", format!("must be 1 to 600000, got {ms}"));
            }
        }
        if let Some(mib) = self.code_memory_mib {
            if !(64..=1 << 20).contains(&mib) {
                return bad(
                    "code_memory_mib",
                    format!("must be 64 to 1048576, got {mib}"),
                );
            }
        }
        if self
            .code_interpreter
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return bad("code_interpreter", "empty".to_owned());
        }
        Ok(())
    }

    /// The same spec with every option of its task filled in with the default. This is the
    /// one home of the defaults: a record, a benchmark and `metis score` all go through it.
    pub fn resolved(&self) -> Self {
        let mut s = self.clone();
        s.protocol.get_or_insert(Protocol::default());
        s.reward.get_or_insert(RewardShape::default());
        match s.task {
            Some(Task::Mcq) => {
                s.choices.get_or_insert(ChoiceSpec::SINGLE_ABCD.options);
                s.multi.get_or_insert(false);
            }
            Some(Task::Cvss) => {
                s.cvss_version
                    .get_or_insert_with(|| cvss::Version::V3_1.to_string());
            }
            Some(Task::Cwe) => {
                s.cwe_hierarchy.get_or_insert(true);
            }
            Some(Task::Attack) => {
                s.credit_parent.get_or_insert(true);
                s.attack_catalog.get_or_insert_with(|| {
                    AttackCatalogRef::new(Domain::Enterprise, AttackCatalogRef::DEFAULT_VERSION)
                });
            }
            Some(Task::Ifeval) => {
                s.ifeval_mode.get_or_insert(IfEvalMode::default());
            }
            Some(Task::Math) => {
                s.math_extraction.get_or_insert(MathExtraction::default());
            }
            Some(Task::Taa) => {
                s.taa_rule.get_or_insert(TaaRule::default());
            }
            Some(Task::Qa) => {
                s.qa_rule.get_or_insert(QaRule::default());
            }
            Some(Task::Bbh) => {
                s.bbh_answer.get_or_insert(BbhAnswer::default());
                s.bbh_extraction.get_or_insert(BbhExtraction::default());
            }
            // Nothing to choose: the judge, not the verifier, grades the answer.
            Some(Task::OpenEnded) => {}
            Some(Task::Code) => {
                s.code_timeout_ms
                    .get_or_insert(sandbox::DEFAULT_TIMEOUT.as_millis() as u64);
                s.code_memory_mib.get_or_insert(sandbox::DEFAULT_MEMORY_MIB);
                s.code_interpreter
                    .get_or_insert_with(|| sandbox::DEFAULT_INTERPRETER.to_owned());
                s.code_unsafe_no_isolation.get_or_insert(false);
            }
            None => {}
        }
        s
    }

    /// `self` with the fields set in `over` replaced (a record's own `verifier` object over
    /// its benchmark's or the run's defaults).
    pub fn overridden_by(&self, over: &VerifierSpec) -> Self {
        macro_rules! pick {
            ($($f:ident),*) => { Self { $($f: over.$f.clone().or_else(|| self.$f.clone()),)* } };
        }
        pick!(
            task,
            protocol,
            reward,
            choices,
            multi,
            cvss_version,
            cwe_hierarchy,
            credit_parent,
            attack_catalog,
            ifeval_mode,
            math_extraction,
            taa_rule,
            qa_rule,
            bbh_answer,
            bbh_extraction,
            code_timeout_ms,
            code_memory_mib,
            code_interpreter,
            code_unsafe_no_isolation
        )
    }
}

/// The sandbox configuration of a resolved code spec.
fn code_sandbox_config(spec: &VerifierSpec) -> SandboxConfig {
    let defaults = SandboxConfig::default();
    SandboxConfig {
        interpreter: spec
            .code_interpreter
            .clone()
            .unwrap_or(defaults.interpreter),
        timeout: spec
            .code_timeout_ms
            .map_or(defaults.timeout, std::time::Duration::from_millis),
        memory_mib: spec.code_memory_mib.unwrap_or(defaults.memory_mib),
        allow_unisolated: spec.code_unsafe_no_isolation.unwrap_or(false),
    }
}

/// The CWE weakness table used for hierarchy credit, relative to the data directory.
pub const CWE_CATALOG_FILE: &str = "cwe/cwe-weaknesses.tsv";

/// Builds verifiers from specs: the only place a spec becomes a [`Verifier`].
///
/// Catalogs come from `data_dir` (laid out like `shared/data`) and are loaded once. A spec
/// that asks for a catalog the data directory lacks is graded without it, and the factory
/// says so in [`VerifierFactory::notes`]; a catalog that exists but cannot be read is an error.
pub struct VerifierFactory {
    data_dir: Option<PathBuf>,
    delimiters: Delimiters,
    cwe: Option<Option<Arc<CweCatalog>>>,
    actors: Option<Option<Arc<ActorCatalog>>>,
    attack: HashMap<AttackCatalogRef, Option<Arc<AttackCatalog>>>,
    built: HashMap<VerifierSpec, Arc<dyn Verifier>>,
    catalogs_used: BTreeSet<String>,
    notes: Vec<String>,
}

impl fmt::Debug for VerifierFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierFactory")
            .field("data_dir", &self.data_dir)
            .field("catalogs_used", &self.catalogs_used)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

impl VerifierFactory {
    /// A factory reading catalogs from `data_dir` (none: every catalog is absent).
    pub fn new(data_dir: Option<&Path>) -> Self {
        Self {
            data_dir: data_dir.map(Path::to_owned),
            delimiters: Delimiters::default(),
            cwe: None,
            actors: None,
            attack: HashMap::new(),
            built: HashMap::new(),
            catalogs_used: BTreeSet::new(),
            notes: Vec::new(),
        }
    }

    /// Reasoning delimiters of the model being graded (a property of the model's template,
    /// not of the item).
    pub fn with_delimiters(mut self, delimiters: Delimiters) -> Self {
        self.delimiters = delimiters;
        self.built.clear();
        self
    }

    /// The catalog files used so far, relative to the data directory.
    pub fn catalogs_used(&self) -> &BTreeSet<String> {
        &self.catalogs_used
    }

    /// The data directory catalogs are read from.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// What the factory did beyond building (catalogs loaded or missing), once each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The verifier for `spec` (validated, defaults resolved); equal specs share one.
    pub fn build(&mut self, spec: &VerifierSpec) -> Result<Arc<dyn Verifier>, SpecError> {
        let resolved = spec.resolved();
        if let Some(v) = self.built.get(&resolved) {
            return Ok(Arc::clone(v));
        }
        let verifier: Arc<dyn Verifier> = Arc::from(self.build_boxed(spec)?);
        self.built.insert(resolved, Arc::clone(&verifier));
        Ok(verifier)
    }

    /// [`VerifierFactory::build`] for a caller that owns its verifier (not shared).
    pub fn build_boxed(&mut self, spec: &VerifierSpec) -> Result<Box<dyn Verifier>, SpecError> {
        let task = spec.validate()?;
        let spec = spec.resolved();
        let options = VerifyOptions {
            protocol: spec.protocol.unwrap_or_default(),
            delimiters: self.delimiters.clone(),
        };
        Ok(match task {
            Task::Mcq => Box::new(McqVerifier {
                options,
                spec: ChoiceSpec {
                    options: spec.choices.unwrap_or(ChoiceSpec::SINGLE_ABCD.options),
                    multi: spec.multi.unwrap_or(false),
                },
            }),
            Task::Cwe => Box::new(CweVerifier {
                options,
                catalog: if spec.cwe_hierarchy == Some(true) {
                    self.cwe_catalog()?
                } else {
                    None
                },
            }),
            Task::Cvss => Box::new(CvssVerifier {
                options,
                version: spec
                    .cvss_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(cvss::Version::V3_1),
            }),
            Task::Attack => Box::new(AttackVerifier {
                options,
                catalog: match &spec.attack_catalog {
                    Some(r) => self.attack_catalog(r)?,
                    None => None,
                },
                set_options: SetMatchOptions {
                    credit_parent_for_sub: spec.credit_parent == Some(true),
                },
            }),
            Task::Ifeval => Box::new(IfEvalVerifier {
                options,
                mode: spec.ifeval_mode.unwrap_or_default(),
            }),
            Task::Math => Box::new(MathVerifier {
                options,
                extraction: spec.math_extraction.unwrap_or_default(),
            }),
            Task::Taa => Box::new(TaaVerifier {
                options,
                catalog: self.actor_catalog()?,
                rule: spec.taa_rule.unwrap_or_default(),
            }),
            Task::Qa => Box::new(QaVerifier {
                options,
                rule: spec.qa_rule.unwrap_or_default(),
            }),
            Task::Bbh => Box::new(BbhVerifier {
                options,
                answer: spec.bbh_answer.unwrap_or_default(),
                extraction: spec.bbh_extraction.unwrap_or_default(),
            }),
            Task::OpenEnded => Box::new(OpenEndedVerifier { options }),
            Task::Code => Box::new(CodeVerifier {
                options,
                sandbox: Sandbox::new(&code_sandbox_config(&spec)).map_err(SpecError::Sandbox)?,
            }),
        })
    }

    fn cwe_catalog(&mut self) -> Result<Option<Arc<CweCatalog>>, SpecError> {
        if let Some(c) = &self.cwe {
            return Ok(c.clone());
        }
        let loaded = self.load_catalog(
            &[CWE_CATALOG_FILE.to_owned()],
            |dir| {
                CweCatalog::from_data_dir(dir).map_err(|e| SpecError::Catalog {
                    path: dir.join(CWE_CATALOG_FILE).display().to_string(),
                    detail: e.to_string(),
                })
            },
            |c| {
                format!(
                    "CWE catalog {CWE_CATALOG_FILE} ({} weaknesses) gives hierarchy credit",
                    c.len()
                )
            },
            |at| format!("no CWE catalog at {at}: exact-id grading only, no hierarchy_accuracy"),
        )?;
        self.cwe = Some(loaded.clone());
        Ok(loaded)
    }

    fn actor_catalog(&mut self) -> Result<Option<Arc<ActorCatalog>>, SpecError> {
        use crate::taa::{ALIAS_FILE, RELATED_FILE};
        if let Some(c) = &self.actors {
            return Ok(c.clone());
        }
        let loaded = self.load_catalog(
            &[ALIAS_FILE.to_owned(), RELATED_FILE.to_owned()],
            |dir| {
                ActorCatalog::from_data_dir(dir).map_err(|e| SpecError::Catalog {
                    path: e.file,
                    detail: e.detail,
                })
            },
            |c| {
                format!(
                    "CTIBench-TAA alias and related-group dictionaries ({} names)",
                    c.len()
                )
            },
            |at| format!("no CTIBench-TAA dictionaries at {at}: only the gold's own name counts"),
        )?;
        self.actors = Some(loaded.clone());
        Ok(loaded)
    }

    fn attack_catalog(
        &mut self,
        which: &AttackCatalogRef,
    ) -> Result<Option<Arc<AttackCatalog>>, SpecError> {
        if let Some(c) = self.attack.get(which) {
            return Ok(c.clone());
        }
        let files = which.files();
        let (domain, version) = (which.domain, which.version.as_str());
        let loaded = self.load_catalog(
            &files,
            |dir| {
                AttackCatalog::from_data_dir(dir, domain, version).map_err(|e| SpecError::Catalog {
                    path: dir.join(&files[0]).display().to_string(),
                    detail: e.to_string(),
                })
            },
            |c| {
                format!(
                    "ATT&CK {domain} {version} catalog ({} techniques) maps revoked ids",
                    c.len()
                )
            },
            |at| format!("no ATT&CK {domain} {version} catalog at {at}: ids compared as written"),
        )?;
        self.attack.insert(which.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Loads a catalog made of `files` when the data directory holds them all, noting what was
    /// loaded (`found`) or that it is missing (`missing`, given where the first file was
    /// looked for); a catalog that is there but unreadable is an error.
    fn load_catalog<T>(
        &mut self,
        files: &[String],
        load: impl FnOnce(&Path) -> Result<T, SpecError>,
        found: impl FnOnce(&T) -> String,
        missing: impl FnOnce(&str) -> String,
    ) -> Result<Option<Arc<T>>, SpecError> {
        let Some(dir) = self.present(files) else {
            let at = self.shown(&files[0]);
            self.notes.push(missing(&at));
            return Ok(None);
        };
        let catalog = load(&dir)?;
        self.notes.push(found(&catalog));
        Ok(Some(Arc::new(catalog)))
    }

    /// The data directory when it holds every one of `files` (recorded as used).
    fn present(&mut self, files: &[String]) -> Option<PathBuf> {
        let dir = self.data_dir.clone()?;
        if !files.iter().all(|f| dir.join(f).exists()) {
            return None;
        }
        self.catalogs_used.extend(files.iter().cloned());
        Some(dir)
    }

    fn shown(&self, file: &str) -> String {
        match &self.data_dir {
            Some(d) => d.join(file).display().to_string(),
            None => format!("{file} (no data directory given)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let spec: VerifierSpec = serde_json::from_str(
            r#"{"task":"attack","credit_parent":false,"attack_catalog":"mobile-v15.1"}"#,
        )
        .unwrap();
        assert_eq!(spec.task, Some(Task::Attack));
        assert_eq!(
            spec.attack_catalog,
            Some(AttackCatalogRef::new(Domain::Mobile, "v15.1"))
        );
        let back: VerifierSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert!(serde_json::from_str::<VerifierSpec>(r#"{"task":"mcq","bogus":1}"#).is_err());
    }

    #[test]
    fn options_of_another_task_are_refused() {
        let spec = VerifierSpec {
            task: Some(Task::Cwe),
            choices: Some(5),
            ..VerifierSpec::default()
        };
        assert!(matches!(
            spec.validate(),
            Err(SpecError::WrongTask {
                field: "choices",
                ..
            })
        ));
        assert_eq!(VerifierSpec::default().validate(), Err(SpecError::NoTask));
    }

    #[test]
    fn defaults_live_in_resolved() {
        let attack = VerifierSpec::for_task(Task::Attack);
        assert_eq!(attack.credit_parent, Some(true));
        assert_eq!(
            attack.attack_catalog.unwrap().to_string(),
            "enterprise-v15.1"
        );
        let over = VerifierSpec {
            credit_parent: Some(false),
            ..VerifierSpec::default()
        };
        let mixed = VerifierSpec::for_task(Task::Attack).overridden_by(&over);
        assert_eq!(mixed.credit_parent, Some(false));
        assert_eq!(mixed.task, Some(Task::Attack));
    }

    #[test]
    fn code_options_default_validate_and_build() {
        let code = VerifierSpec::for_task(Task::Code);
        assert_eq!(code.code_timeout_ms, Some(3000));
        assert_eq!(code.code_memory_mib, Some(sandbox::DEFAULT_MEMORY_MIB));
        assert_eq!(code.code_interpreter.as_deref(), Some("python3"));
        assert_eq!(code.code_unsafe_no_isolation, Some(false));
        let spec = |f: fn(&mut VerifierSpec)| {
            let mut s = VerifierSpec {
                task: Some(Task::Code),
                ..VerifierSpec::default()
            };
            f(&mut s);
            s
        };
        let err = |s: VerifierSpec| s.validate().unwrap_err();
        assert!(matches!(
            err(spec(|s| s.code_timeout_ms = Some(0))),
            SpecError::BadValue {
                field: "code_timeout_ms",
                ..
            }
        ));
        assert!(matches!(
            err(spec(|s| s.code_memory_mib = Some(8))),
            SpecError::BadValue {
                field: "code_memory_mib",
                ..
            }
        ));
        assert!(matches!(
            err(spec(|s| s.code_interpreter = Some(" ".into()))),
            SpecError::BadValue {
                field: "code_interpreter",
                ..
            }
        ));
        let on_qa = VerifierSpec {
            task: Some(Task::Qa),
            code_timeout_ms: Some(1000),
            ..VerifierSpec::default()
        };
        assert!(matches!(
            on_qa.validate(),
            Err(SpecError::WrongTask {
                field: "code_timeout_ms",
                ..
            })
        ));
        let missing = spec(|s| s.code_interpreter = Some("metis-no-such-python".into()));
        assert!(matches!(
            VerifierFactory::new(None).build(&missing),
            Err(SpecError::Sandbox(SandboxError::NotFound(_)))
        ));
        let parsed: VerifierSpec = serde_json::from_str(
            r#"{"task":"code","code_timeout_ms":500,"code_unsafe_no_isolation":true}"#,
        )
        .unwrap();
        assert_eq!(
            code_sandbox_config(&parsed.resolved()).timeout.as_millis(),
            500
        );
        assert!(code_sandbox_config(&parsed).allow_unisolated);
    }

    #[test]
    fn equal_specs_share_a_verifier_and_missing_catalogs_are_noted() {
        let mut f = VerifierFactory::new(None);
        let a = f.build(&VerifierSpec::for_task(Task::Attack)).unwrap();
        let b = f
            .build(&VerifierSpec {
                task: Some(Task::Attack),
                ..VerifierSpec::default()
            })
            .unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the unresolved spec resolves to the same"
        );
        assert_eq!(f.notes().len(), 1, "{:?}", f.notes());
        assert!(f.catalogs_used().is_empty());
    }
}
