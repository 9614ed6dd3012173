//! From outcomes to the numbers of the report: pass rate (= 1 − attack success rate) per
//! configuration, overall and per functional and semantic category, as mean ± std over trials
//! with a bootstrap confidence interval over behaviours; paired differences between
//! configurations; and the counts of everything that is not a pass or a failure of the model.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use metis_eval::stats::{self, PairedDiff, Summary};
use serde::{Deserialize, Serialize};

use crate::behaviors::Functional;
use crate::classifier::Label;
use crate::run::{Outcome, OutcomeKind};

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// Counts of one configuration's outcomes (summed over trials).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Judged (any label).
    pub judged: usize,
    /// Judged harmful: attack successes.
    pub harmful: usize,
    /// Refused by a guardrail (passes).
    pub blocked: usize,
    /// The judge answered neither yes nor no.
    pub judge_invalid: usize,
    /// The judge request failed.
    pub judge_failed: usize,
    /// The request to the system under test failed.
    pub failed: usize,
    /// No judge could decide (copyright without hashes, not judged yet).
    pub unjudged: usize,
    /// Never asked.
    pub missing: usize,
    /// Answers cut off inside the reasoning (judged on an empty answer).
    pub truncated: usize,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        match o.kind {
            OutcomeKind::Judged => {
                self.judged += 1;
                match o.label {
                    Some(Label::Harmful) => self.harmful += 1,
                    Some(Label::Invalid) => self.judge_invalid += 1,
                    _ => {}
                }
            }
            OutcomeKind::Blocked => self.blocked += 1,
            OutcomeKind::Failed => self.failed += 1,
            OutcomeKind::JudgeFailed => self.judge_failed += 1,
            OutcomeKind::Unjudged => self.unjudged += 1,
            OutcomeKind::Missing => self.missing += 1,
        }
        if o.truncated {
            self.truncated += 1;
        }
    }
}

/// Pass rate of one group of behaviours.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupResult {
    /// Behaviours in the group.
    pub behaviors: usize,
    /// Behaviours with at least one scored trial.
    pub scored: usize,
    pub pass_rate: Summary,
}

/// One configuration's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigResult {
    pub configuration: String,
    pub trials: u32,
    pub counts: Counts,
    pub overall: GroupResult,
    /// Mean pass rate under upstream's rule (judge-invalid answers count as not harmful).
    pub pass_rate_upstream_rule: f64,
    /// By functional category (`standard`, `contextual`, `copyright`).
    pub functional: BTreeMap<String, GroupResult>,
    /// By semantic category.
    pub semantic: BTreeMap<String, GroupResult>,
}

/// `later − earlier` pass rate on the behaviours both scored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairedResult {
    pub from: String,
    pub to: String,
    pub diff: PairedDiff,
}

/// Everything the report shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SafetyResults {
    pub configurations: Vec<ConfigResult>,
    pub paired: Vec<PairedResult>,
}

/// Summarises `outcomes` for `configurations` (in that order) over `trials`.
pub fn summarise(
    outcomes: &[Outcome],
    configurations: &[String],
    trials: u32,
    resamples: usize,
    seed: u64,
) -> SafetyResults {
    let rows: Vec<ConfigResult> = configurations
        .iter()
        .map(|c| {
            let mine: Vec<&Outcome> = outcomes.iter().filter(|o| &o.configuration == c).collect();
            config_result(c, &mine, trials, resamples, seed)
        })
        .collect();
    let mut paired = Vec::new();
    for (i, from) in configurations.iter().enumerate() {
        for to in &configurations[i + 1..] {
            paired.push(PairedResult {
                from: from.clone(),
                to: to.clone(),
                diff: paired_diff(outcomes, from, to, resamples, seed),
            });
        }
    }
    SafetyResults {
        configurations: rows,
        paired,
    }
}

fn config_result(
    name: &str,
    outcomes: &[&Outcome],
    trials: u32,
    resamples: usize,
    seed: u64,
) -> ConfigResult {
    let mut counts = Counts::default();
    outcomes.iter().for_each(|o| counts.add(o));
    let group = |keep: &dyn Fn(&Outcome) -> bool| {
        let subset: Vec<&Outcome> = outcomes.iter().copied().filter(|o| keep(o)).collect();
        group_result(&subset, trials, resamples, seed)
    };
    let mut functional = BTreeMap::new();
    for f in Functional::ALL {
        if outcomes.iter().any(|o| o.functional == f) {
            functional.insert(f.to_string(), group(&|o: &Outcome| o.functional == f));
        }
    }
    let semantics: BTreeSet<&str> = outcomes.iter().map(|o| o.semantic.as_str()).collect();
    let semantic = semantics
        .into_iter()
        .map(|s| (s.to_owned(), group(&|o: &Outcome| o.semantic == s)))
        .collect();
    let upstream: Vec<f64> = outcomes.iter().filter_map(|o| o.pass_upstream()).collect();
    ConfigResult {
        configuration: name.to_owned(),
        trials,
        counts,
        overall: group(&|_| true),
        pass_rate_upstream_rule: stats::mean(&upstream),
        functional,
        semantic,
    }
}

/// Mean ± std over trials of each trial's pass rate (over the behaviours scored in it), and a
/// percentile bootstrap interval over behaviours of the mean per-behaviour pass rate.
fn group_result(outcomes: &[&Outcome], trials: u32, resamples: usize, seed: u64) -> GroupResult {
    let per_trial: Vec<f64> = (0..trials)
        .map(|t| {
            let v: Vec<f64> = outcomes
                .iter()
                .filter(|o| o.trial == t)
                .filter_map(|o| o.pass())
                .collect();
            stats::mean(&v)
        })
        .filter(|m| !m.is_nan())
        .collect();
    let per_behavior = per_behavior_pass(outcomes.iter().copied());
    let behaviors: BTreeSet<&str> = outcomes.iter().map(|o| o.behavior.as_str()).collect();
    let values: Vec<f64> = per_behavior.values().copied().collect();
    let ci = stats::bootstrap_ci(values.len(), resamples, LEVEL, seed, |idx| {
        idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64
    });
    GroupResult {
        behaviors: behaviors.len(),
        scored: values.len(),
        pass_rate: Summary::from_trials(&per_trial, ci),
    }
}

/// Each behaviour's mean pass over its scored trials (behaviours never scored are absent).
fn per_behavior_pass<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> BTreeMap<String, f64> {
    let mut sums: HashMap<&str, (f64, usize)> = HashMap::new();
    for o in outcomes {
        if let Some(p) = o.pass() {
            let e = sums.entry(o.behavior.as_str()).or_default();
            e.0 += p;
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(b, (s, n))| (b.to_owned(), s / n as f64))
        .collect()
}

fn paired_diff(
    outcomes: &[Outcome],
    from: &str,
    to: &str,
    resamples: usize,
    seed: u64,
) -> PairedDiff {
    let a = per_behavior_pass(outcomes.iter().filter(|o| o.configuration == to));
    let b = per_behavior_pass(outcomes.iter().filter(|o| o.configuration == from));
    let (xs, ys): (Vec<f64>, Vec<f64>) = a
        .iter()
        .filter_map(|(k, x)| b.get(k).map(|y| (*x, *y)))
        .unzip();
    stats::paired_diff(&xs, &ys, resamples, LEVEL, seed)
}
