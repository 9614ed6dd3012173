//! The judging stage of a judged benchmark, between generation and the report:
//!
//! 1. [`judge_pass`] asks the judge about every stored answer that has no stored judgment yet
//!    and commits each judgment as it arrives, so a killed pass loses only the requests in
//!    flight and a rerun asks nothing that is stored. An answer the verifier finds empty or cut
//!    off inside its reasoning is not sent: there is nothing to judge.
//! 2. [`grade_judged`] grades the stored answers as every benchmark does, attaches each
//!    judgment to its verdict (item metrics `win_rate`, `discrete_win_rate`, `judge_invalid`),
//!    and adds the per-trial length-controlled win rate to the result row.
//!
//! A judgment is looked up by the exact judge request (judge model, messages, parameters), so a
//! changed answer, reference or template is judged afresh and never matched to a stale verdict.
//! Only an HTTP endpoint can judge: the logprob judge needs `top_logprobs`, which the local
//! engine does not return.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metis_openai::{ChatLogprobsResponse, Client, ClientError};
use metis_verify::{Task, Verdict};
use serde::Serialize;

use super::alpaca::{self, Comparison, JudgeRequest};
use super::winrate::{self, GlmReference, LengthControlled, WinRate};
use crate::benchmarks::{Benchmark, BenchmarkSpec, Item};
use crate::report::ResultRow;
use crate::run::{self, gradable_text};
use crate::stats::Summary;
use crate::store::{JudgmentKey, JudgmentRecord, ResponseRecord, Status, Store, StoreError};

/// A judge model behind an OpenAI-compatible endpoint.
#[derive(Clone, Debug)]
pub struct Judge {
    /// The model name sent to the endpoint (and the judgments' key).
    pub model: String,
    pub client: Client,
}

impl Judge {
    /// The endpoint(s), for reports.
    pub fn url(&self) -> String {
        self.client.endpoints().join(",")
    }
}

/// Whether a benchmark is graded by a judge rather than by its verifier.
pub fn is_judged(spec: &BenchmarkSpec) -> bool {
    spec.task == Task::OpenEnded
}

/// Errors of the judging stage.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "interrupted while judging: {committed} judgments are stored; run the same command again \
         to resume"
    )]
    Interrupted { committed: u64 },
}

/// Counts of one judging pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JudgePassStats {
    /// Judgments already in the store.
    pub reused: u64,
    /// Judge requests answered now.
    pub asked: u64,
    /// Of those, answers with neither `m` nor `M` among the top log-probabilities.
    pub judge_invalid: u64,
    /// Judge requests that failed after all retries (stored as failed; retried next run).
    pub failed: u64,
    /// Answers not sent to the judge because they are empty or truncated.
    pub not_judged: u64,
}

/// The comparison a graded answer makes with its item's reference; `None` when the verifier
/// found no answer to judge.
fn comparison<'a>(item: &'a Item, verdict: &'a Verdict) -> Option<Comparison<'a>> {
    let answer = verdict
        .extracted
        .as_deref()
        .filter(|_| verdict.is_valid())?;
    Some(Comparison {
        instruction: &item.question,
        reference: &item.gold,
        answer,
    })
}

/// The verdict of a stored response, graded by the item's verifier.
fn verdict_of(bench: &Benchmark, item: &Item, record: &ResponseRecord) -> Option<Verdict> {
    let verifier = bench.verifier(item);
    let gold = verifier.parse_gold(&item.gold).ok()?;
    Some(verifier.verify(&gradable_text(record), &gold))
}

struct Job {
    key: JudgmentKey,
    params_hash: String,
    request: JudgeRequest,
}

/// Asks `judge` about every answered record of `records` (one model's responses to `bench`)
/// that has no stored judgment by this judge, committing each judgment to the store at
/// `store_path` as it arrives. `stop` is polled like the querying pass polls it.
pub async fn judge_pass(
    store_path: &Path,
    bench: &Benchmark,
    model: &str,
    records: &[ResponseRecord],
    judge: &Judge,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> Result<JudgePassStats, JudgeError> {
    let mut store = Store::open(store_path)?;
    let mut stats = JudgePassStats::default();
    let jobs = pending_jobs(&store, bench, model, records, judge, &mut stats)?;
    if jobs.is_empty() {
        return Ok(stats);
    }
    let url = judge.url();
    let mut answers = futures::stream::iter(jobs.into_iter().map(|job| {
        let (client, stop) = (judge.client.clone(), stop.clone());
        async move {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let answer = client
                .chat_logprobs(&job.request.request, alpaca::TOP_LOGPROBS)
                .await;
            Some((job, answer))
        }
    }))
    .buffer_unordered(concurrency.max(1));
    let mut committed = 0u64;
    let mut interrupted = false;
    loop {
        let next = tokio::select! {
            next = answers.next() => next,
            () = stopped(&stop) => { interrupted = true; break; }
        };
        let Some(next) = next else { break };
        let Some((job, answer)) = next else {
            interrupted = true;
            continue;
        };
        let record = judgment_record(job, answer, &url, &mut stats);
        // One small transaction per judgment: a commit takes far less than a judge call.
        store.put_judgment(&record)?;
        committed += 1;
    }
    if interrupted {
        return Err(JudgeError::Interrupted { committed });
    }
    Ok(stats)
}

/// The judge requests still to make, counting what is stored or not judgeable.
fn pending_jobs(
    store: &Store,
    bench: &Benchmark,
    model: &str,
    records: &[ResponseRecord],
    judge: &Judge,
    stats: &mut JudgePassStats,
) -> Result<Vec<Job>, JudgeError> {
    let done: HashSet<(u32, String, String)> = store
        .judgments(bench.id(), model)?
        .into_iter()
        .filter(|j| j.status == Status::Ok && j.key.judge == judge.model)
        .map(|j| (j.key.trial, j.key.item, j.key.request_hash))
        .collect();
    let mut jobs = Vec::new();
    for record in records.iter().filter(|r| r.status == Status::Ok) {
        let Some(item) = bench.item(&record.key.item) else {
            continue;
        };
        let Some(verdict) = verdict_of(bench, item, record) else {
            continue;
        };
        let Some(comparison) = comparison(item, &verdict) else {
            stats.not_judged += 1;
            continue;
        };
        let request = comparison.request(&judge.model);
        let key = (record.key.trial, item.id.clone(), request.hash.clone());
        if done.contains(&key) {
            stats.reused += 1;
            continue;
        }
        jobs.push(Job {
            key: JudgmentKey {
                benchmark: bench.id().to_owned(),
                item: item.id.clone(),
                trial: record.key.trial,
                model: model.to_owned(),
                judge: judge.model.clone(),
                request_hash: request.hash.clone(),
            },
            params_hash: record.key.params_hash.clone(),
            request,
        });
    }
    Ok(jobs)
}

/// The stored form of one judge answer (or failure).
fn judgment_record(
    job: Job,
    answer: Result<ChatLogprobsResponse, ClientError>,
    url: &str,
    stats: &mut JudgePassStats,
) -> JudgmentRecord {
    let swapped = job.request.swapped;
    let mut record = JudgmentRecord {
        key: job.key,
        params_hash: job.params_hash,
        judge_url: Some(url.to_owned()),
        status: Status::Ok,
        swapped,
        content: None,
        top_logprobs: Vec::new(),
        preference: None,
        error: None,
        latency_ms: None,
    };
    match answer {
        Ok(r) => {
            stats.asked += 1;
            // max_tokens is 1: the verdict is in the first token's alternatives.
            record.top_logprobs = r
                .tokens
                .into_iter()
                .next()
                .map(|t| t.top_logprobs)
                .unwrap_or_default();
            record.preference =
                alpaca::parse_preference(&record.top_logprobs).map(|p| alpaca::unswap(p, swapped));
            if record.preference.is_none() {
                stats.judge_invalid += 1;
            }
            record.content = Some(r.chat.content);
            record.judge_url = Some(r.chat.endpoint);
            record.latency_ms = Some(r.chat.latency_ms);
        }
        Err(e) => {
            stats.failed += 1;
            record.status = Status::Failed;
            record.error = Some(e.to_string());
        }
    }
    record
}

/// Resolves once `stop` is set (polled: a signal handler sets it).
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One trial's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialJudgment {
    pub trial: u32,
    pub win_rate: WinRate,
    /// The length-controlled fit (its per-instruction predictions left out).
    pub length_controlled: Option<LengthControlled>,
    /// Why there is no length-controlled number, when there is none.
    pub length_controlled_error: Option<String>,
}

/// The judge side of a judged benchmark's result, for reports and `run_info`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeReport {
    pub benchmark: String,
    pub model: String,
    pub judge: String,
    /// The endpoints the used judgments came from.
    pub judge_urls: BTreeSet<String>,
    pub protocol: &'static str,
    /// How the length-controlled number was made ([`GlmReference::describe`]).
    pub glm: String,
    /// Answered (item, trial) pairs, over all trials.
    pub n_answered: usize,
    /// Of those: judged (a judgment with or without a preference) ...
    pub n_judged: usize,
    /// ... of which the judge gave no preference (neither `m` nor `M` in its top 5);
    pub n_judge_invalid: usize,
    /// empty or truncated answers, counted as losses without asking the judge;
    pub n_empty_answers: usize,
    /// and answers without a judgment (the judge failed, or none was asked).
    pub n_unjudged: usize,
    pub trials: Vec<TrialJudgment>,
}

impl JudgeReport {
    /// The judge's identity as reports print it: `model @ url`.
    pub fn judge_identity(&self) -> String {
        match self.judge_urls.iter().collect::<Vec<_>>().as_slice() {
            [] => format!("{} @ (no stored judgment)", self.judge),
            urls => format!(
                "{} @ {}",
                self.judge,
                urls.iter()
                    .map(|u| u.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The line a judged result adds to a text report: the numbers of `row` (its metrics in
    /// percent, mean ± std over trials) with the judge named next to them.
    pub fn summary_line(&self, row: &ResultRow) -> String {
        let pct = |name: &str| {
            row.metrics.get(name).map_or_else(
                || "n/a".to_owned(),
                |s| format!("{:.2}% ± {:.2}", 100.0 * s.mean, 100.0 * s.std),
            )
        };
        format!(
            "{} / {}: LC win rate (judge: {}) = {}; raw win rate = {}; {} judged, {} \
             judge-invalid, {} empty or truncated answers (losses), {} unjudged; LC GLM: {}. A \
             judge other than upstream's gpt-4-1106-preview makes these numbers differ from the \
             official leaderboard.",
            row.benchmark,
            row.model,
            self.judge_identity(),
            pct("lc_win_rate"),
            pct("win_rate"),
            self.n_judged,
            self.n_judge_invalid,
            self.n_empty_answers,
            self.n_unjudged,
            self.glm
        )
    }
}

/// Grades one model's stored responses to a judged benchmark and summarises them with the
/// stored judgments of `judge_model`: the row's primary metric is `lc_win_rate` (a fraction,
/// like every metric of a row), with `win_rate`, `discrete_win_rate` and `judge_invalid`
/// from the items, and upstream's standard errors `lc_standard_error`, `standard_error`.
/// `keep` selects the records as for [`run::grade`].
#[allow(clippy::too_many_arguments)]
pub fn grade_judged(
    bench: &Benchmark,
    model: &str,
    trials: u32,
    records: Vec<ResponseRecord>,
    keep: impl Fn(&Item, u32, &ResponseRecord) -> bool,
    judgments: &[JudgmentRecord],
    judge_model: &str,
    glm: &GlmReference,
) -> (ResultRow, JudgeReport) {
    let answered: HashSet<(String, u32)> = records
        .iter()
        .filter(|r| r.status == Status::Ok)
        .filter(|r| {
            bench
                .item(&r.key.item)
                .is_some_and(|i| keep(i, r.key.trial, r))
        })
        .map(|r| (r.key.item.clone(), r.key.trial))
        .collect();
    let judgments = Judgments::of(judgments, judge_model);
    let mut graded = run::grade(bench, model, trials, records, keep);
    let mut report = JudgeReport {
        benchmark: bench.id().to_owned(),
        model: model.to_owned(),
        judge: judge_model.to_owned(),
        judge_urls: BTreeSet::new(),
        protocol: alpaca::UPSTREAM,
        glm: glm.describe(),
        n_answered: 0,
        n_judged: 0,
        n_judge_invalid: 0,
        n_empty_answers: 0,
        n_unjudged: 0,
        trials: Vec::new(),
    };
    for (t, verdicts) in (0u32..).zip(graded.verdicts.iter_mut()) {
        let mut comparisons = Vec::new();
        for (index, (item, verdict)) in bench.items.iter().zip(verdicts.iter_mut()).enumerate() {
            if !answered.contains(&(item.id.clone(), t)) {
                continue; // the generation failed: no answer to compare
            }
            let Some(preference) = judgments.preference(t, item, verdict, &mut report) else {
                continue;
            };
            attach_preference(verdict, preference);
            comparisons.push(winrate::Comparison {
                index,
                reference_chars: item.gold.chars().count(),
                answer_chars: verdict.metrics.get("answer_chars").copied().unwrap_or(0.0) as usize,
                preference,
            });
        }
        report.trials.push(trial_numbers(t, &comparisons, glm));
    }
    let mut row = run::summarize(&graded, "lc_win_rate");
    add_trial_metrics(&mut row, &report.trials);
    (row, report)
}

/// One judge's stored verdicts, by the exact request they answered.
struct Judgments<'j> {
    judge: &'j str,
    by_request: HashMap<(u32, &'j str, &'j str), &'j JudgmentRecord>,
}

impl<'j> Judgments<'j> {
    fn of(judgments: &'j [JudgmentRecord], judge: &'j str) -> Self {
        let by_request = judgments
            .iter()
            .filter(|j| j.status == Status::Ok && j.key.judge == judge)
            .map(|j| {
                (
                    (
                        j.key.trial,
                        j.key.item.as_str(),
                        j.key.request_hash.as_str(),
                    ),
                    j,
                )
            })
            .collect();
        Self { judge, by_request }
    }

    /// The preference an answered (item, trial) gets, counted in `report`: 1 (a loss, without
    /// asking the judge) for an empty or truncated answer, the stored judgment's (NaN when the
    /// judge gave none) for the exact request this answer makes, `None` when it has none.
    fn preference(
        &self,
        trial: u32,
        item: &Item,
        verdict: &Verdict,
        report: &mut JudgeReport,
    ) -> Option<f64> {
        report.n_answered += 1;
        let Some(comparison) = comparison(item, verdict) else {
            report.n_empty_answers += 1;
            return Some(1.0);
        };
        let hash = comparison.request(self.judge).hash;
        let Some(judgment) = self
            .by_request
            .get(&(trial, item.id.as_str(), hash.as_str()))
        else {
            report.n_unjudged += 1;
            return None;
        };
        report.judge_urls.extend(judgment.judge_url.iter().cloned());
        report.n_judged += 1;
        report.n_judge_invalid += usize::from(judgment.preference.is_none());
        Some(judgment.preference.unwrap_or(f64::NAN))
    }
}

/// Puts a preference on a verdict: `win_rate` = p − 1 (the score), `discrete_win_rate`
/// (ZeroOneScoringRule: ½ for exactly 1.5) and `correct` for a win; a judge-invalid NaN only
/// sets `judge_invalid` (not a win, not a loss).
fn attach_preference(verdict: &mut Verdict, preference: f64) {
    if verdict.is_valid() {
        verdict.metrics.insert(
            "judge_invalid".to_owned(),
            f64::from(u8::from(preference.is_nan())),
        );
    }
    if preference.is_nan() {
        verdict
            .reasons
            .push("judge-invalid: neither m nor M among the judge's top log-probabilities".into());
        return;
    }
    let win = preference - 1.0;
    verdict.score = win;
    verdict.correct = win > 0.5;
    verdict.metrics.insert("win_rate".to_owned(), win);
    verdict
        .metrics
        .insert("discrete_win_rate".to_owned(), winrate::discrete_win(win));
    verdict.reasons.push(format!(
        "judge preference {preference:.4} (2 = this answer wins)"
    ));
}

fn trial_numbers(
    trial: u32,
    comparisons: &[winrate::Comparison],
    glm: &GlmReference,
) -> TrialJudgment {
    let preferences: Vec<f64> = comparisons.iter().map(|c| c.preference).collect();
    let (length_controlled, length_controlled_error) =
        match winrate::length_controlled(comparisons, glm) {
            Ok(mut lc) => {
                lc.predictions.clear();
                (Some(lc), None)
            }
            Err(e) => (None, Some(e.to_string())),
        };
    TrialJudgment {
        trial,
        win_rate: winrate::win_rate(&preferences),
        length_controlled,
        length_controlled_error,
    }
}

/// Adds the per-trial upstream numbers to `row` as fractions summarised over trials (no
/// bootstrap interval: a refit per resample is not worth it): `lc_win_rate`,
/// `lc_standard_error`, `standard_error`.
fn add_trial_metrics(row: &mut ResultRow, trials: &[TrialJudgment]) {
    let lc = |f: fn(&LengthControlled) -> f64| -> Vec<f64> {
        trials
            .iter()
            .filter_map(|t| t.length_controlled.as_ref().map(f))
            .map(|x| x / 100.0)
            .collect()
    };
    let raw_se: Vec<f64> = trials
        .iter()
        .map(|t| t.win_rate.standard_error / 100.0)
        .collect();
    for (name, xs) in [
        ("lc_win_rate", lc(|l| l.lc_win_rate)),
        ("lc_standard_error", lc(|l| l.lc_standard_error)),
        ("standard_error", raw_se),
    ] {
        if !xs.is_empty() {
            row.metrics.insert(
                name.to_owned(),
                Summary::from_trials(&xs, (f64::NAN, f64::NAN)),
            );
        }
    }
}
