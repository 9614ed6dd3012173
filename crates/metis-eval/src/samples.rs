//! Per-item output of a benchmark, one JSON line each:
//!
//! - [`write_samples`]: every stored response graded (what lm-eval calls `--log_samples`), so
//!   a user can see *why* an item was wrong: prompt, response, reasoning, extracted answer,
//!   validity and reason, score, correctness and the verdict's metrics. Records are streamed
//!   from the [`Store`] one at a time and graded with the benchmark's own verifiers. A judged
//!   benchmark's samples also carry the stored judgments of the response (judge, order shown,
//!   top log-probabilities, preference).
//! - [`export_prompts`]: a benchmark as a GRPO prompt file, each record carrying the item's
//!   [`VerifierSpec`](metis_verify::VerifierSpec), so RL rewards the item exactly as the
//!   benchmark scores it.

use std::collections::HashMap;
use std::io::{self, Write};

use metis_verify::{InvalidReason, Verdict};
use serde::Serialize;
use serde_json::{json, Value};

use crate::benchmarks::{Benchmark, Item};
use crate::run::gradable_text;
use crate::store::{JudgmentRecord, Status, Store, StoreError};

/// One graded response.
#[derive(Debug, Serialize)]
pub struct Sample<'a> {
    pub benchmark: &'a str,
    pub model: &'a str,
    pub item: &'a str,
    pub trial: u32,
    pub params_hash: &'a str,
    pub prompt: &'a str,
    pub gold: &'a str,
    /// `ok`, or `failed` with the request's error (graded as an empty answer).
    pub status: Status,
    pub error: Option<&'a str>,
    pub response: Option<&'a str>,
    pub reasoning: Option<&'a str>,
    pub finish_reason: Option<&'a str>,
    pub extracted: Option<&'a str>,
    pub valid: bool,
    pub invalid_reason: Option<&'a InvalidReason>,
    pub score: f64,
    pub correct: bool,
    pub reasons: &'a [String],
    pub metrics: &'a std::collections::BTreeMap<String, f64>,
    /// Judged benchmarks: the judgments of this response, by every judge that made one.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub judgments: &'a [JudgmentRecord],
}

/// Errors of [`write_samples`].
#[derive(Debug, thiserror::Error)]
pub enum SamplesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing samples: {0}")]
    Io(#[from] io::Error),
}

/// Grades every stored response of `bench` by `model` (every trial and parameter hash) and
/// writes one JSON line per response to `out`; returns the number written. Records of items
/// the benchmark no longer has are skipped.
pub fn write_samples(
    store: &Store,
    bench: &Benchmark,
    model: &str,
    mut out: impl Write,
) -> Result<usize, SamplesError> {
    let mut written = 0;
    let judgments = judgments_by_response(store, bench, model)?;
    store.for_each_record(bench.id(), model, |record| {
        let Some(item) = bench.item(&record.key.item) else {
            return Ok(());
        };
        let Some(verdict) = grade(bench, item, &record) else {
            return Ok(());
        };
        let sample = Sample {
            benchmark: bench.id(),
            model,
            item: &item.id,
            trial: record.key.trial,
            params_hash: &record.key.params_hash,
            prompt: &item.prompt,
            gold: &item.gold,
            status: record.status,
            error: record.error.as_deref(),
            response: record.response.as_deref(),
            reasoning: record.reasoning.as_deref(),
            finish_reason: record.finish_reason.as_deref(),
            extracted: verdict.extracted.as_deref(),
            valid: verdict.is_valid(),
            invalid_reason: verdict.invalid.as_ref(),
            score: verdict.score,
            correct: verdict.correct,
            reasons: &verdict.reasons,
            metrics: &verdict.metrics,
            judgments: judgments
                .get(&(
                    record.key.params_hash.clone(),
                    record.key.trial,
                    record.key.item.clone(),
                ))
                .map_or(&[], Vec::as_slice),
        };
        let line = serde_json::to_string(&sample).map_err(StoreError::Json)?;
        // A failed write (the reader is gone, the disk is full) stops the scan.
        writeln!(out, "{line}")?;
        written += 1;
        Ok::<(), SamplesError>(())
    })?;
    Ok(written)
}

/// Judgments by the response they judge: (params hash, trial, item).
type JudgmentsByResponse = HashMap<(String, u32, String), Vec<JudgmentRecord>>;

/// The stored judgments of `model`'s responses to a judged benchmark, by the response they
/// judge; empty for other benchmarks.
fn judgments_by_response(
    store: &Store,
    bench: &Benchmark,
    model: &str,
) -> Result<JudgmentsByResponse, StoreError> {
    let mut out: HashMap<_, Vec<_>> = HashMap::new();
    if !crate::judge::is_judged(bench.spec) {
        return Ok(out);
    }
    for j in store.judgments(bench.id(), model)? {
        out.entry((j.params_hash.clone(), j.key.trial, j.key.item.clone()))
            .or_default()
            .push(j);
    }
    Ok(out)
}

/// The verdict the harness gives a stored record (a failed request is an empty answer).
/// `None` only for a gold the verifier rejects, which the loader has already refused.
fn grade(bench: &Benchmark, item: &Item, record: &crate::store::ResponseRecord) -> Option<Verdict> {
    let verifier = bench.verifier(item);
    let text = if record.status == Status::Ok {
        gradable_text(record)
    } else {
        String::new()
    };
    let gold = verifier.parse_gold(&item.gold).ok()?;
    Some(verifier.verify(&text, &gold))
}

/// The GRPO prompt record of one item: `id`, `task`, `gold` (JSON as the verifier reads it),
/// `messages` (the benchmark prompt as the user turn), `verifier` (the item's spec) and
/// `source` (benchmark id, for provenance).
pub fn prompt_record(bench: &Benchmark, item: &Item) -> Value {
    let spec = bench.verifier_spec(item);
    // IFEval's gold is an instruction object kept as JSON text in the item.
    let gold = match serde_json::from_str::<Value>(&item.gold) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(item.gold.clone()),
    };
    json!({
        "id": format!("{}/{}", bench.id(), item.id),
        "task": bench.spec.task,
        "gold": gold,
        "messages": [{"role": "user", "content": item.prompt}],
        "verifier": spec,
        "source": bench.id(),
    })
}

/// Writes every item of `bench` as a GRPO prompt record, one JSON line each; returns the count.
pub fn export_prompts(bench: &Benchmark, mut out: impl Write) -> io::Result<usize> {
    for item in &bench.items {
        writeln!(out, "{}", prompt_record(bench, item))?;
    }
    Ok(bench.items.len())
}
