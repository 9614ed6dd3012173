//! The GRPO prompt mixture: a JSONL file of prompts with gold answers, and a seeded sampler
//! that draws each step's prompts by task weight.
//!
//! One record per line (blank lines are skipped; other keys are kept out of the way and
//! ignored, so datasets may carry metadata):
//!
//! ```json
//! {"id": "vsp-17", "task": "cvss", "gold": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
//!  "messages": [{"role": "user", "content": "Score this CVE: ..."}],
//!  "verifier": {"reward": "graded"}}
//! ```
//!
//! - `messages` (required): a non-empty array of `{"role", "content"}` strings.
//! - `task` (required unless the `verifier` object names it): the verifier, one of
//!   `metis_verify`'s tasks (`mcq`, `cwe`, `cvss`, `attack`, `ifeval`, `math`, `taa`, `qa`).
//! - `gold` (required): the gold answer as the task's verifier parses it (a string, or an array
//!   of strings for sets; for `ifeval` the object `{"instruction_id_list", "kwargs"}`; for
//!   `math` a string or a number); it is parsed at load time, so a bad gold fails the load,
//!   not a step.
//! - `id` (optional, string or number, unique): defaults to `line-N`.
//! - `verifier` (optional): a [`metis_verify::VerifierSpec`] — `protocol` (`last_line`,
//!   `faith`, `faith_strict`; the spelling with `-` is accepted too), `reward` (`binary` or
//!   `graded`; default from [`LoadOptions::rewards`], else binary), and the task's options:
//!   `choices`/`multi` (mcq), `cvss_version` (cvss), `cwe_hierarchy` (cwe), `credit_parent`/
//!   `attack_catalog` (attack), `ifeval_mode` (ifeval), `math_extraction` (math), `taa_rule`
//!   (taa), `qa_rule` (qa). Absent
//!   options take the spec's defaults, the same as a benchmark's, and the verifier is built by
//!   the one [`VerifierFactory`] (catalogs from [`LoadOptions::data_dir`]). `metis eval
//!   export-prompts BENCH` writes records whose `verifier` is the benchmark item's spec.
//!
//! Every bad record is reported as `file:line: field "…": why`.
//!
//! [`PromptSampler`] draws `n` prompts for a step from a generator seeded with `(seed, step)`
//! only, so the prompts of step `k` are the same whether the run got there directly or
//! resumed from a checkpoint. Each slot first picks a task with probability proportional to
//! its weight, then the task's slots are filled from a seeded shuffle of its prompts (no
//! repeats within a step unless a task has fewer prompts than slots).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::BufRead;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use metis_engine::chat::Message;
use metis_verify::record::{record_gold, record_verifier, RecordError};
pub use metis_verify::VerifierSpec;
use metis_verify::{Gold, Task, Verifier, VerifierFactory};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::reward::{RewardJob, RewardKind};
use crate::rng::SplitMix64;

/// A bad prompt file or record, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptError {
    /// The file (or source name).
    pub file: String,
    /// 1-based line number (0 when the error concerns the whole file).
    pub line: usize,
    /// The offending field, when one is to blame.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PromptError {}

/// Settings shared by every record of a mixture.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// Extraction protocol and reasoning delimiters (a record's `protocol` overrides the
    /// protocol).
    pub verify: metis_verify::VerifyOptions,
    /// The data directory the verifiers' catalogs (CWE, ATT&CK) are read from; without one,
    /// specs that ask for a catalog grade without it (noted in [`PromptMixture::notes`]).
    pub data_dir: Option<std::path::PathBuf>,
    /// Reward kind per task (a record's `reward` overrides it); binary when absent.
    pub rewards: BTreeMap<Task, RewardKind>,
}

/// One prompt of the mixture, its gold answer parsed and its verifier built.
#[derive(Clone)]
pub struct PromptRecord {
    pub id: String,
    /// 1-based line in the source file.
    pub line: usize,
    pub messages: Vec<Message>,
    pub task: Task,
    /// How the record is graded (defaults resolved).
    pub spec: VerifierSpec,
    /// The gold answer as written in the file.
    pub gold_json: Value,
    pub gold: Arc<Gold>,
    pub verifier: Arc<dyn Verifier>,
    pub reward: RewardKind,
}

impl fmt::Debug for PromptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptRecord")
            .field("id", &self.id)
            .field("line", &self.line)
            .field("messages", &self.messages)
            .field("task", &self.task)
            .field("gold", &self.gold)
            .field("reward", &self.reward)
            .finish()
    }
}

impl PromptRecord {
    /// The reward job grading `completion` against this prompt's gold.
    pub fn reward_job(&self, completion: impl Into<String>) -> RewardJob {
        RewardJob {
            verifier: Arc::clone(&self.verifier),
            gold: Arc::clone(&self.gold),
            kind: self.reward,
            completion: completion.into(),
        }
    }
}

/// All prompts of a mixture file, in file order.
#[derive(Debug, Clone)]
pub struct PromptMixture {
    pub source: String,
    pub records: Vec<PromptRecord>,
    /// What the verifier factory noted (catalogs loaded or missing).
    pub notes: Vec<String>,
    /// Catalog files the verifiers read, relative to the data directory.
    pub catalogs_used: Vec<String>,
}

impl PromptMixture {
    /// Loads a JSONL mixture file.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, PromptError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| PromptError {
            file: name.clone(),
            line: 0,
            field: None,
            message: format!("cannot open: {e}"),
        })?;
        Self::from_reader(&name, std::io::BufReader::new(file), opts)
    }

    /// Reads a JSONL mixture from `reader`; `name` is used in errors.
    pub fn from_reader(
        name: &str,
        reader: impl BufRead,
        opts: &LoadOptions,
    ) -> Result<Self, PromptError> {
        let mut records = Vec::new();
        let mut factory = VerifierFactory::new(opts.data_dir.as_deref())
            .with_delimiters(opts.verify.delimiters.clone());
        let mut ids = HashSet::new();
        for (i, line) in reader.lines().enumerate() {
            let lineno = i + 1;
            let err = |field: Option<&str>, message: String| PromptError {
                file: name.to_owned(),
                line: lineno,
                field: field.map(str::to_owned),
                message,
            };
            let line = line.map_err(|e| err(None, format!("cannot read: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let rec = parse_record(&line, lineno, opts, &mut factory)
                .map_err(|(field, message)| err(field, message))?;
            if !ids.insert(rec.id.clone()) {
                return Err(err(Some("id"), format!("duplicate id {:?}", rec.id)));
            }
            records.push(rec);
        }
        if records.is_empty() {
            return Err(PromptError {
                file: name.to_owned(),
                line: 0,
                field: None,
                message: "no prompts".to_owned(),
            });
        }
        Ok(Self {
            source: name.to_owned(),
            records,
            notes: factory.notes().to_vec(),
            catalogs_used: factory.catalogs_used().iter().cloned().collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of prompts per task.
    pub fn task_counts(&self) -> BTreeMap<Task, usize> {
        let mut counts = BTreeMap::new();
        for r in &self.records {
            *counts.entry(r.task).or_default() += 1;
        }
        counts
    }
}

type FieldError = (Option<&'static str>, String);

fn parse_record(
    line: &str,
    lineno: usize,
    opts: &LoadOptions,
    factory: &mut VerifierFactory,
) -> Result<PromptRecord, FieldError> {
    let value: Value = serde_json::from_str(line).map_err(|e| (None, format!("bad JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err((None, "a record must be a JSON object".to_owned()));
    };

    let id = match obj.get("id") {
        None | Some(Value::Null) => format!("line-{lineno}"),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err((
                Some("id"),
                format!("must be a non-empty string or a number, got {other}"),
            ))
        }
    };

    let messages = obj
        .get("messages")
        .ok_or_else(|| (Some("messages"), "missing".to_owned()))?;
    let messages: Vec<Message> = serde_json::from_value(messages.clone()).map_err(|e| {
        (
            Some("messages"),
            format!("must be an array of {{\"role\", \"content\"}} strings: {e}"),
        )
    })?;
    if messages.is_empty() {
        return Err((Some("messages"), "must not be empty".to_owned()));
    }

    let to_field = |e: RecordError| (e.field, e.message);
    let run_defaults = |task| VerifierSpec {
        protocol: Some(opts.verify.protocol),
        reward: Some(opts.rewards.get(&task).copied().unwrap_or_default()),
        ..VerifierSpec::default()
    };
    let (spec, verifier) = record_verifier(&obj, run_defaults, factory).map_err(to_field)?;
    let task = spec.task().map_err(|e| (Some("task"), e.to_string()))?;
    let reward = spec.reward.unwrap_or_default();
    let (gold_json, gold) = record_gold(&obj, &*verifier).map_err(to_field)?;

    Ok(PromptRecord {
        id,
        line: lineno,
        messages,
        task,
        spec,
        gold_json,
        gold: Arc::new(gold),
        verifier,
        reward,
    })
}

// ---------------------------------------------------------------------------------------------

/// Mixture weights per task, e.g. `mcq=2,cvss=1` (`--task-weights`). Serialises as a map
/// (`{"mcq": 2.0, "cvss": 1.0}`) and reads back from a map or from the `mcq=2,cvss=1` text.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct TaskWeights(pub BTreeMap<Task, f64>);

impl TaskWeights {
    fn validated(map: BTreeMap<Task, f64>) -> Result<Self, String> {
        for (task, w) in &map {
            if !w.is_finite() || *w < 0.0 {
                return Err(format!("weight of {task} must be finite and ≥ 0, got {w}"));
            }
        }
        Ok(Self(map))
    }
}

impl<'de> Deserialize<'de> for TaskWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Map(BTreeMap<Task, f64>),
        }
        match Repr::deserialize(d)? {
            Repr::Text(s) => s.parse(),
            Repr::Map(m) => Self::validated(m),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl FromStr for TaskWeights {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (task, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("task weight {part:?} is not TASK=WEIGHT"))?;
            let task: Task = task.trim().parse().map_err(|e| format!("{e}"))?;
            let weight: f64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {task} is not a number: {weight:?}"))?;
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!(
                    "weight of {task} must be finite and ≥ 0, got {weight}"
                ));
            }
            if map.insert(task, weight).is_some() {
                return Err(format!("task {task} is weighted twice"));
            }
        }
        Ok(Self(map))
    }
}

impl fmt::Display for TaskWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(t, w)| format!("{t}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// Draws the prompts of each step, deterministically from `(seed, step)`.
#[derive(Debug, Clone)]
pub struct PromptSampler {
    seed: u64,
    /// Tasks with positive weight: (task, weight, record indices).
    tasks: Vec<(Task, f64, Vec<usize>)>,
    total_weight: f64,
}

impl PromptSampler {
    /// A sampler over `mixture`. Empty `weights`: every prompt equally likely (each task
    /// weighted by its prompt count). Otherwise tasks not named get weight 0, and naming a
    /// task the mixture has no prompts for is an error.
    pub fn new(mixture: &PromptMixture, weights: &TaskWeights, seed: u64) -> Result<Self, String> {
        let mut by_task: BTreeMap<Task, Vec<usize>> = BTreeMap::new();
        for (i, r) in mixture.records.iter().enumerate() {
            by_task.entry(r.task).or_default().push(i);
        }
        let mut tasks = Vec::new();
        if weights.0.is_empty() {
            for (task, idx) in by_task {
                tasks.push((task, idx.len() as f64, idx));
            }
        } else {
            for (&task, &w) in &weights.0 {
                let Some(idx) = by_task.remove(&task) else {
                    return Err(format!(
                        "task {task} has weight {w} but {} has no {task} prompts",
                        mixture.source
                    ));
                };
                if w > 0.0 {
                    tasks.push((task, w, idx));
                }
            }
        }
        let total_weight: f64 = tasks.iter().map(|t| t.1).sum();
        if tasks.is_empty() || total_weight <= 0.0 {
            return Err("every task weight is zero".to_owned());
        }
        Ok(Self {
            seed,
            tasks,
            total_weight,
        })
    }

    /// The sampling probability of each task.
    pub fn probabilities(&self) -> BTreeMap<Task, f64> {
        self.tasks
            .iter()
            .map(|(t, w, _)| (*t, w / self.total_weight))
            .collect()
    }

    /// Indices (into the mixture's records) of the `n` prompts of `step`.
    pub fn sample(&self, step: u64, n: usize) -> Vec<usize> {
        let mut rng = step_rng(self.seed, step);
        // 1. A task for every slot.
        let slots: Vec<usize> = (0..n)
            .map(|_| {
                let x = rng.next_f64() * self.total_weight;
                let mut acc = 0.0;
                for (k, (_, w, _)) in self.tasks.iter().enumerate() {
                    acc += w;
                    if x < acc {
                        return k;
                    }
                }
                self.tasks.len() - 1
            })
            .collect();
        // 2. Each task's slots from a shuffle of its prompts (reshuffled when exhausted).
        let mut queues: Vec<Vec<usize>> = vec![Vec::new(); self.tasks.len()];
        slots
            .into_iter()
            .map(|k| {
                if queues[k].is_empty() {
                    let mut perm = self.tasks[k].2.clone();
                    for i in (1..perm.len()).rev() {
                        perm.swap(i, below(&mut rng, i + 1));
                    }
                    perm.reverse();
                    queues[k] = perm;
                }
                queues[k].pop().expect("a task has at least one prompt")
            })
            .collect()
    }

    /// The records of `step`.
    pub fn sample_records<'m>(
        &self,
        mixture: &'m PromptMixture,
        step: u64,
        n: usize,
    ) -> Vec<&'m PromptRecord> {
        self.sample(step, n)
            .into_iter()
            .map(|i| &mixture.records[i])
            .collect()
    }
}

/// The generator of step `step`, keyed by (seed, step) only, so a resumed run draws exactly
/// the prompts the original run would have.
fn step_rng(seed: u64, step: u64) -> SplitMix64 {
    let a = SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15).next_u64();
    SplitMix64::new(a ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Uniform in [0, n) (n ≥ 1), by multiply-shift.
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}
