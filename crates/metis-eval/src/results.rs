//! From stored responses to recorded results: which stored response answers a run (the
//! resume key), the run's description saved beside its responses, and paired comparisons of
//! two models.
//!
//! A run is identified by its [`RunKey`] — system prompt and sampling parameters — and each
//! stored response by [`run::params_hash`] of that key, the prompt and the trial. A re-run of
//! the same command finds its responses by that hash and asks only what is missing; a run
//! with other parameters never grades another's answers. [`record_result`] saves what
//! produced a result (sampling, trials, system prompt, protocol, data fingerprint, version)
//! under the run's hash; [`compare_models`] pairs two models' per-item scores on the items
//! both answered.

use std::collections::HashSet;

use metis_verify::Protocol;
use serde::Serialize;

use crate::benchmarks::{Benchmark, Item};
use crate::judge::JudgeReport;
use crate::report::ResultRow;
use crate::run::{self, Sampling};
use crate::stats::{self, PairedDiff};
use crate::store::{ResponseRecord, Status, Store, StoreError};

/// What identifies a run's responses in the store besides the prompt and trial.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunKey {
    pub system_prompt: Option<String>,
    pub sampling: Sampling,
}

impl RunKey {
    /// Whether `record` is this run's answer to (`item`, `trial`).
    pub fn answers(&self, item: &Item, trial: u32, record: &ResponseRecord) -> bool {
        record.key.params_hash
            == run::params_hash(
                self.system_prompt.as_deref(),
                &item.prompt,
                &self.sampling,
                trial,
            )
    }

    /// The hash the run's description is saved under (no prompt, trial 0).
    pub fn run_hash(&self) -> String {
        run::params_hash(self.system_prompt.as_deref(), "", &self.sampling, 0)
    }
}

/// Grades `model`'s stored responses on `bench` that this run produced (a benchmark graded by
/// its verifiers; judged benchmarks go through `judge::grade_judged`).
pub fn grade_stored(
    store: &Store,
    bench: &Benchmark,
    model: &str,
    trials: u32,
    key: &RunKey,
) -> Result<ResultRow, StoreError> {
    let records = store.records(bench.spec.id, model, None)?;
    let graded = run::grade(bench, model, trials, records, |i, t, r| {
        key.answers(i, t, r)
    });
    Ok(run::summarize(&graded, bench.spec.primary_metric))
}

/// Saves the description of the run that produced `row` beside its responses.
pub fn record_result(
    store: &mut Store,
    bench: &Benchmark,
    key: &RunKey,
    trials: u32,
    protocol: Protocol,
    row: &ResultRow,
    judge: Option<&JudgeReport>,
) -> Result<(), StoreError> {
    let info = serde_json::json!({
        "sampling": key.sampling,
        "trials": trials,
        "system_prompt": key.system_prompt,
        "protocol": protocol.to_string(),
        "data_sha256": bench.data_sha256,
        "metis_version": env!("CARGO_PKG_VERSION"),
        "result": row,
        "judge": judge,
    });
    store.save_run_info(bench.spec.id, &row.model, &key.run_hash(), &info)
}

/// Paired comparison of `model_a` and `model_b` on `bench` from every stored answer of
/// each (all trials): per-item mean scores over the items both answered, `a − b`, with a
/// bootstrap interval. `None` when either model has no answered item; with answers but none
/// in common, the difference is `NaN` over 0 items.
pub fn compare_models(
    store: &Store,
    bench: &Benchmark,
    model_a: &str,
    model_b: &str,
) -> Result<Option<PairedDiff>, StoreError> {
    let ra = store.records(bench.spec.id, model_a, None)?;
    let rb = store.records(bench.spec.id, model_b, None)?;
    let (answered_a, answered_b) = (answered(&ra), answered(&rb));
    if answered_a.is_empty() || answered_b.is_empty() {
        return Ok(None);
    }
    let both: HashSet<&String> = answered_a.intersection(&answered_b).collect();
    let (ta, tb) = (trials_of(&ra), trials_of(&rb));
    let sa = run::item_scores(&run::grade(bench, model_a, ta, ra, |_, _, _| true));
    let sb = run::item_scores(&run::grade(bench, model_b, tb, rb, |_, _, _| true));
    let (a_vals, b_vals): (Vec<f64>, Vec<f64>) = bench
        .items
        .iter()
        .filter(|i| both.contains(&i.id))
        .filter_map(|i| Some((*sa.get(&i.id)?, *sb.get(&i.id)?)))
        .unzip();
    Ok(Some(stats::paired_diff(
        &a_vals,
        &b_vals,
        run::BOOTSTRAP_RESAMPLES,
        0.95,
        7,
    )))
}

/// One line for people: `bench: a − b = +0.0123 (95% CI [..]) over n items; ...`.
pub fn describe_diff(benchmark: &str, model_a: &str, model_b: &str, d: &PairedDiff) -> String {
    format!(
        "{benchmark}: {model_a} − {model_b} = {:+.4} (95% CI [{:+.4}, {:+.4}]) over {} items; {} better on {}, {} better on {}, {} ties",
        d.mean_diff, d.ci_low, d.ci_high, d.n, model_a, d.a_better, model_b, d.b_better, d.ties
    )
}

/// Items with at least one answered (status ok) record.
fn answered(records: &[ResponseRecord]) -> HashSet<String> {
    records
        .iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| r.key.item.clone())
        .collect()
}

/// Trials present in `records` (the highest stored trial + 1).
fn trials_of(records: &[ResponseRecord]) -> u32 {
    records.iter().map(|r| r.key.trial + 1).max().unwrap_or(1)
}
