//! Running an evaluation: query every (benchmark, trial, item) not yet in the store, commit
//! each response as it arrives, then grade everything stored with the benchmark's verifier and
//! summarise across trials.
//!
//! Resumption is by construction: a response is looked up by (benchmark, item, trial, model,
//! hash of prompt + generation parameters) before any request is sent, and the writer commits
//! what arrived since its last commit in one transaction, so a run killed at any moment loses
//! at most the requests in flight, and re-running the same command queries only what is
//! missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metis_openai::{ChatMessage, ChatRequest, ChatResponse, Client, ClientError, GenParams};
use metis_verify::verifier::aggregate;
use metis_verify::{Protocol, Verdict};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::benchmarks::{self, Benchmark, DataSource, Item};
use crate::local::LocalModel;
use crate::report::ResultRow;
use crate::stats::{self, Summary};
use crate::store::{ResponseKey, ResponseRecord, Status, Store};

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Benchmark(#[from] benchmarks::BenchmarkError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{path}:{line}: {detail}")]
    Responses {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the response writer stopped: {0}")]
    Writer(String),
    #[error("interrupted: {committed} responses are stored; run the same command again to resume")]
    Interrupted { committed: u64 },
}

/// Generation settings of a run; the report's defaults are [`Sampling::reasoning`] and
/// [`Sampling::instruct`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: u32,
    /// Trial `t` is sampled with seed `seed + t`.
    pub seed: u64,
}

impl Sampling {
    /// Reasoning models: T = 0.6, top-p 0.95.
    pub fn reasoning() -> Self {
        Self {
            temperature: 0.6,
            top_p: 0.95,
            max_tokens: 10_000,
            seed: 373_363,
        }
    }

    /// Instruct models: T = 0.3, top-p 1.0.
    pub fn instruct() -> Self {
        Self {
            temperature: 0.3,
            top_p: 1.0,
            max_tokens: 5_000,
            seed: 373_363,
        }
    }
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub benchmarks: Vec<String>,
    pub model: String,
    pub sampling: Sampling,
    pub trials: u32,
    pub system_prompt: Option<String>,
    pub concurrency: usize,
    pub protocol: Protocol,
    pub data: DataSource,
    pub store: PathBuf,
    /// Evaluate only the first N items of each benchmark (smoke runs).
    pub limit: Option<usize>,
    pub progress: bool,
}

/// The hash that keys a response: prompt (with system prompt) and generation parameters.
pub fn params_hash(system: Option<&str>, prompt: &str, sampling: &Sampling, trial: u32) -> String {
    hash_fields(system, prompt, sampling, trial, None)
}

/// [`params_hash`] of a request answered by a deployment around the model (e.g. a guardrail):
/// `deployment` describes it, so the same prompt asked bare and through a guard are stored as
/// different responses, and a changed guard is asked again.
pub fn deployment_params_hash(
    system: Option<&str>,
    prompt: &str,
    sampling: &Sampling,
    trial: u32,
    deployment: &str,
) -> String {
    hash_fields(system, prompt, sampling, trial, Some(deployment))
}

fn hash_fields(
    system: Option<&str>,
    prompt: &str,
    sampling: &Sampling,
    trial: u32,
    deployment: Option<&str>,
) -> String {
    let mut fields = serde_json::json!({
        "system": system,
        "prompt": prompt,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed.wrapping_add(u64::from(trial)),
    });
    // Absent (not null) without a deployment, so every hash stored before stays valid.
    if let (Some(d), Some(map)) = (deployment, fields.as_object_mut()) {
        map.insert("deployment".into(), serde_json::Value::from(d));
    }
    let digest = Sha256::digest(fields.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Something that answers chat requests: an OpenAI-compatible endpoint, the local engine, or
/// a deployment wrapped around either (a guardrail, see `metis-safety`). The harness's seam
/// between "what is asked" and "who answers".
pub trait ChatBackend: Send + Sync {
    /// Answers one chat request.
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> futures::future::BoxFuture<'a, Result<ChatResponse, ClientError>>;
}

impl ChatBackend for Client {
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> futures::future::BoxFuture<'a, Result<ChatResponse, ClientError>> {
        Box::pin(Client::chat(self, req))
    }
}

impl ChatBackend for Arc<LocalModel> {
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> futures::future::BoxFuture<'a, Result<ChatResponse, ClientError>> {
        Box::pin(LocalModel::chat(self, req))
    }
}

/// Where responses come from: an OpenAI-compatible endpoint (or several), or a model loaded
/// in-process.
#[derive(Clone)]
pub enum Backend {
    Http(Client),
    Local(Arc<LocalModel>),
}

impl Backend {
    /// Answers one chat request.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ClientError> {
        ChatBackend::chat(self, req).await
    }
}

impl ChatBackend for Backend {
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> futures::future::BoxFuture<'a, Result<ChatResponse, ClientError>> {
        match self {
            Backend::Http(client) => ChatBackend::chat(client, req),
            Backend::Local(model) => ChatBackend::chat(model, req),
        }
    }
}

impl From<Client> for Backend {
    fn from(client: Client) -> Self {
        Backend::Http(client)
    }
}

/// One request to make and the key its response is stored under.
#[derive(Clone, Debug)]
pub struct Job {
    pub key: ResponseKey,
    pub request: ChatRequest,
}

fn messages(system: Option<&str>, item: &Item) -> Vec<ChatMessage> {
    let mut m = Vec::with_capacity(2);
    if let Some(s) = system {
        m.push(ChatMessage {
            role: "system".into(),
            content: s.to_owned(),
        });
    }
    m.push(ChatMessage {
        role: "user".into(),
        content: item.prompt.clone(),
    });
    m
}

/// Loads the configured benchmarks (first `limit` items each).
pub async fn load_benchmarks(
    ids: &[String],
    data: &DataSource,
    protocol: Protocol,
    limit: Option<usize>,
) -> Result<Vec<Benchmark>, RunError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut b = benchmarks::load(id, data, protocol).await?;
        if let Some(n) = limit {
            b.items.truncate(n);
        }
        out.push(b);
    }
    Ok(out)
}

/// Commits records on a dedicated thread: everything that arrived since the last commit goes
/// into one transaction, so throughput does not depend on one fsync per response.
struct Writer {
    tx: Option<mpsc::Sender<ResponseRecord>>,
    handle: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Writer {
    fn start(mut store: Store) -> Self {
        let (tx, rx) = mpsc::channel::<ResponseRecord>();
        let handle = std::thread::spawn(move || {
            let mut committed = 0u64;
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while let Ok(r) = rx.try_recv() {
                    batch.push(r);
                }
                store.put_batch(&batch).map_err(|e| e.to_string())?;
                committed += batch.len() as u64;
            }
            Ok(committed)
        });
        Self {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    fn send(&self, rec: ResponseRecord) -> Result<(), RunError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(rec).ok())
            .ok_or_else(|| RunError::Writer("channel closed".into()))
    }

    fn finish(mut self) -> Result<u64, RunError> {
        drop(self.tx.take());
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(Ok(n))) => Ok(n),
            Some(Ok(Err(e))) => Err(RunError::Writer(e)),
            Some(Err(_)) => Err(RunError::Writer("writer thread panicked".into())),
            None => Ok(0),
        }
    }
}

/// Counts of one querying pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryStats {
    /// Responses already in the store.
    pub reused: u64,
    /// Requests that succeeded now.
    pub answered: u64,
    /// Requests that failed after all retries (stored as failed; retried on the next run).
    pub failed: u64,
}

/// Queries every missing response and commits it. `stop` is polled between requests: when
/// set, no new request starts, in-flight ones are abandoned, and what arrived is committed.
pub async fn query(
    config: &RunConfig,
    benches: &[Benchmark],
    backend: &Backend,
    stop: Arc<AtomicBool>,
) -> Result<QueryStats, RunError> {
    let store = Store::open(&config.store)?;
    let (jobs, reused) = missing_jobs(config, benches, &store)?;
    let opts = JobOptions {
        concurrency: config.concurrency,
        progress: config.progress,
    };
    let mut stats = run_jobs(store, jobs, backend, opts, stop).await?;
    stats.reused += reused;
    Ok(stats)
}

/// The requests of a run whose responses are not stored yet, and how many are.
fn missing_jobs(
    config: &RunConfig,
    benches: &[Benchmark],
    store: &Store,
) -> Result<(Vec<Job>, u64), RunError> {
    let mut jobs = Vec::new();
    let mut reused = 0;
    let system = config.system_prompt.as_deref();
    for b in benches {
        let done = stored_ok(store, b.spec.id, &config.model)?;
        for trial in 0..config.trials {
            for item in &b.items {
                let hash = params_hash(system, &item.prompt, &config.sampling, trial);
                if done.contains(&(item.id.clone(), hash.clone(), trial)) {
                    reused += 1;
                    continue;
                }
                jobs.push(Job {
                    key: ResponseKey {
                        benchmark: b.spec.id.to_owned(),
                        item: item.id.clone(),
                        trial,
                        model: config.model.clone(),
                        params_hash: hash,
                    },
                    request: ChatRequest {
                        model: config.model.clone(),
                        messages: messages(system, item),
                        params: gen_params(&config.sampling, trial),
                    },
                });
            }
        }
    }
    Ok((jobs, reused))
}

/// The (item, params hash, trial) of every successful response stored for a benchmark and
/// model: what a resumed run does not ask again.
pub fn stored_ok(
    store: &Store,
    benchmark: &str,
    model: &str,
) -> Result<HashSet<(String, String, u32)>, RunError> {
    Ok(store
        .records(benchmark, model, None)?
        .into_iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| (r.key.item, r.key.params_hash, r.key.trial))
        .collect())
}

/// Generation parameters of trial `trial` (seeded `seed + trial`).
pub fn gen_params(sampling: &Sampling, trial: u32) -> GenParams {
    GenParams {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        max_tokens: sampling.max_tokens,
        seed: Some(sampling.seed.wrapping_add(u64::from(trial))),
    }
}

/// How [`run_jobs`] sends its requests.
#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// Sends `jobs` to `backend`, `concurrency` at a time, and commits every response (or failure)
/// to `store` as it arrives, on a writer thread. `stop` is polled between requests: when set,
/// no new request starts, in-flight ones are abandoned, what arrived is committed, and the
/// result is [`RunError::Interrupted`]. Any caller that asks an endpoint for stored responses
/// (the benchmarks, `metis safety`) goes through here, so resumption and failure accounting
/// are the same everywhere.
pub async fn run_jobs(
    store: Store,
    jobs: Vec<Job>,
    backend: &dyn ChatBackend,
    opts: JobOptions,
    stop: Arc<AtomicBool>,
) -> Result<QueryStats, RunError> {
    let mut stats = QueryStats::default();
    if jobs.is_empty() {
        return Ok(stats);
    }
    let writer = Writer::start(store);
    let bar = progress_bar(jobs.len() as u64, opts.progress);
    let mut results = futures::stream::iter(jobs.into_iter().map(|job| {
        let stop = stop.clone();
        async move {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let result = backend.chat(&job.request).await;
            Some((job.key, result))
        }
    }))
    .buffer_unordered(opts.concurrency.max(1));

    let mut interrupted = false;
    loop {
        let next = tokio::select! {
            next = results.next() => next,
            () = wait_for(&stop) => {
                interrupted = true;
                break;
            }
        };
        let Some(next) = next else { break };
        let Some((key, result)) = next else {
            interrupted = true;
            continue;
        };
        let record = match result {
            Ok(r) => {
                stats.answered += 1;
                answered_record(key, r)
            }
            Err(e) => {
                stats.failed += 1;
                bar.println(format!(
                    "failed: {} item {} trial {}: {e}",
                    key.benchmark, key.item, key.trial
                ));
                failed_record(key, &e)
            }
        };
        writer.send(record)?;
        bar.inc(1);
    }
    drop(results);
    bar.finish_and_clear();
    let committed = writer.finish()?;
    if interrupted {
        return Err(RunError::Interrupted { committed });
    }
    Ok(stats)
}

fn answered_record(key: ResponseKey, r: ChatResponse) -> ResponseRecord {
    let guard = (!r.guard.is_empty())
        .then(|| serde_json::to_string(&r.guard).ok())
        .flatten();
    ResponseRecord {
        key,
        status: Status::Ok,
        response: Some(r.content),
        reasoning: r.reasoning,
        finish_reason: r.finish_reason,
        error: None,
        attempts: r.attempts,
        latency_ms: Some(r.latency_ms),
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        source: "query".into(),
        guard,
    }
}

fn failed_record(key: ResponseKey, e: &ClientError) -> ResponseRecord {
    ResponseRecord {
        key,
        status: Status::Failed,
        response: None,
        reasoning: None,
        finish_reason: None,
        error: Some(e.to_string()),
        attempts: 0,
        latency_ms: None,
        prompt_tokens: None,
        completion_tokens: None,
        source: "query".into(),
        guard: None,
    }
}

/// Resolves once `stop` is set (polled: the flag is set from a signal handler).
async fn wait_for(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn progress_bar(len: u64, visible: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if !visible {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} requests  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The text a verifier grades: reasoning delivered in a separate field is put back in front of
/// the answer inside delimiters, so the split (and the truncation rule) is the same whether a
/// server separates reasoning or not.
pub fn gradable_text(record: &ResponseRecord) -> String {
    let content = record.response.as_deref().unwrap_or("");
    match record.reasoning.as_deref().filter(|r| !r.is_empty()) {
        Some(r)
            if record.finish_reason.as_deref() == Some("length") && content.trim().is_empty() =>
        {
            format!("<think>{r}")
        }
        Some(r) => format!("<think>{r}</think>{content}"),
        None => content.to_owned(),
    }
}

/// Graded responses of one (benchmark, model): verdicts by trial, in item order.
pub struct Graded {
    pub benchmark: String,
    pub model: String,
    pub item_ids: Vec<String>,
    /// Each item's subject (BBH task, MMLU subject, ATE platform), parallel to `item_ids`.
    pub subjects: Vec<Option<String>>,
    /// `verdicts[trial][item]`.
    pub verdicts: Vec<Vec<Verdict>>,
    pub failed: usize,
    /// Reasoning length in characters of every answered response.
    pub reasoning_chars: Vec<Vec<f64>>,
}

/// Grades stored responses. `keep` decides which stored record answers an (item, trial):
/// the current configuration's hash when running, any when regrading imports.
pub fn grade(
    bench: &Benchmark,
    model: &str,
    trials: u32,
    records: Vec<ResponseRecord>,
    keep: impl Fn(&Item, u32, &ResponseRecord) -> bool,
) -> Graded {
    let mut by_key: HashMap<(&str, u32), ResponseRecord> = HashMap::new();
    let ids: HashMap<&str, &Item> = bench.items.iter().map(|i| (i.id.as_str(), i)).collect();
    for r in records {
        let Some((id, item)) = ids.get_key_value(r.key.item.as_str()) else {
            continue;
        };
        if r.key.trial >= trials || !keep(item, r.key.trial, &r) {
            continue;
        }
        let slot = by_key.entry((id, r.key.trial));
        // Prefer an answered record over a failed one.
        match slot {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if o.get().status != Status::Ok && r.status == Status::Ok {
                    o.insert(r);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(r);
            }
        }
    }
    let mut failed = 0;
    let mut verdicts = Vec::with_capacity(trials as usize);
    let mut reasoning_chars = Vec::with_capacity(trials as usize);
    for t in 0..trials {
        let mut row = Vec::with_capacity(bench.items.len());
        let mut chars = Vec::new();
        for item in &bench.items {
            let verifier = bench.verifier(item);
            let record = by_key.get(&(item.id.as_str(), t));
            let text = match record {
                Some(r) if r.status == Status::Ok => {
                    let text = gradable_text(r);
                    let split =
                        metis_verify::reasoning::split(&text, &verifier.options().delimiters);
                    chars.push(split.reasoning.chars().count() as f64);
                    text
                }
                // Missing or failed: graded as an empty (invalid) answer and counted as failed.
                _ => {
                    failed += 1;
                    String::new()
                }
            };
            let verdict = match verifier.parse_gold(&item.gold) {
                Ok(gold) => verifier.verify(&text, &gold),
                Err(e) => {
                    // Loaders validate gold answers; this is a guard, not a path.
                    tracing::error!("{}: item {}: {e}", bench.spec.id, item.id);
                    continue;
                }
            };
            row.push(verdict);
        }
        verdicts.push(row);
        reasoning_chars.push(chars);
    }
    Graded {
        benchmark: bench.spec.id.to_owned(),
        model: model.to_owned(),
        item_ids: bench.items.iter().map(|i| i.id.clone()).collect(),
        subjects: bench.items.iter().map(|i| i.subject.clone()).collect(),
        verdicts,
        failed,
        reasoning_chars,
    }
}

/// Per-item sums over trials of every item metric, for bootstrapping over items.
struct ItemSums {
    names: Vec<String>,
    /// `sums[metric][item]`, `counts[metric][item]`
    sums: Vec<Vec<f64>>,
    counts: Vec<Vec<f64>>,
    score: Vec<f64>,
    n_trials: f64,
}

impl ItemSums {
    fn new(g: &Graded) -> Self {
        let n = g.item_ids.len();
        let names: Vec<String> = g
            .verdicts
            .iter()
            .flatten()
            .flat_map(|v| v.metrics.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let mut sums = vec![vec![0.0; n]; names.len()];
        let mut counts = vec![vec![0.0; n]; names.len()];
        let mut score = vec![0.0; n];
        for trial in &g.verdicts {
            for (i, v) in trial.iter().enumerate().take(n) {
                score[i] += v.score;
                for (k, x) in &v.metrics {
                    let m = index[k.as_str()];
                    sums[m][i] += x;
                    counts[m][i] += 1.0;
                }
            }
        }
        Self {
            names,
            sums,
            counts,
            score,
            n_trials: g.verdicts.len().max(1) as f64,
        }
    }

    fn total(&self, name: &str, idx: &[usize]) -> Option<(f64, f64)> {
        let m = self.names.iter().position(|n| n == name)?;
        Some(idx.iter().fold((0.0, 0.0), |(s, c), &i| {
            (s + self.sums[m][i], c + self.counts[m][i])
        }))
    }

    /// The pooled value of an aggregate metric over the items `idx` (all trials).
    fn metric(&self, name: &str, idx: &[usize]) -> f64 {
        let ratio = |n: &str| self.total(n, idx).map_or(f64::NAN, |(s, c)| s / c);
        match name {
            "score" => {
                idx.iter().map(|&i| self.score[i]).sum::<f64>() / (idx.len() as f64 * self.n_trials)
            }
            "invalid_rate" => 1.0 - ratio("valid"),
            "mad" => ratio("abs_error"),
            "micro_precision" | "micro_recall" | "micro_f1" => {
                let g = |n: &str| self.total(n, idx).map_or(0.0, |(s, _)| s);
                let (tp, fp, fneg) = (g("tp"), g("fp"), g("fn"));
                let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
                let r = if tp + fneg > 0.0 {
                    tp / (tp + fneg)
                } else {
                    0.0
                };
                match name {
                    "micro_precision" => p,
                    "micro_recall" => r,
                    _ if p + r > 0.0 => 2.0 * p * r / (p + r),
                    _ => 0.0,
                }
            }
            "inst_level_strict_acc" | "inst_level_loose_acc" => {
                // IFEval pools instructions across items, as `aggregate` does.
                let g = |n: &str| self.total(n, idx).map_or(0.0, |(s, _)| s);
                let followed = match name {
                    "inst_level_strict_acc" => g("inst_strict_followed"),
                    _ => g("inst_loose_followed"),
                };
                let total = g("inst_total");
                if total > 0.0 {
                    followed / total
                } else {
                    f64::NAN
                }
            }
            other => ratio(other),
        }
    }
}

/// Bootstrap resamples for confidence intervals.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
const BOOTSTRAP_SEED: u64 = 0x006d_6574_6973;

/// Summarises graded responses: per-trial metrics, then mean, population std and standard
/// error across trials, with a 95% bootstrap CI over items.
pub fn summarize(g: &Graded, primary_metric: &str) -> ResultRow {
    let per_trial: Vec<BTreeMap<String, f64>> = g.verdicts.iter().map(|v| aggregate(v)).collect();
    let sums = ItemSums::new(g);
    let n_items = g.item_ids.len();
    let mut metrics = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> =
        per_trial.iter().flat_map(|m| m.keys()).collect();
    for name in names {
        let xs: Vec<f64> = per_trial
            .iter()
            .filter_map(|m| m.get(name).copied())
            .collect();
        let (ci_low, ci_high) = if n_items > 0 {
            stats::bootstrap_ci(n_items, BOOTSTRAP_RESAMPLES, 0.95, BOOTSTRAP_SEED, |idx| {
                sums.metric(name, idx)
            })
        } else {
            (f64::NAN, f64::NAN)
        };
        metrics.insert(
            name.clone(),
            Summary {
                mean: stats::mean(&xs),
                std: stats::population_std(&xs),
                stderr: stats::standard_error(&xs),
                ci_low,
                ci_high,
            },
        );
    }
    metrics.extend(subject_metrics(g, &sums, primary_metric));
    metrics.extend(pass_at_k_metrics(&sums, n_items));
    // Reasoning length percentiles per trial, summarised like the metrics (no CI).
    for (label, p) in [
        ("reasoning_chars_p50", 50.0),
        ("reasoning_chars_p90", 90.0),
        ("reasoning_chars_p99", 99.0),
    ] {
        let xs: Vec<f64> = g
            .reasoning_chars
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| {
                let mut s = c.clone();
                s.sort_by(f64::total_cmp);
                stats::percentile(&s, p)
            })
            .collect();
        if !xs.is_empty() {
            metrics.insert(
                label.to_owned(),
                Summary {
                    mean: stats::mean(&xs),
                    std: stats::population_std(&xs),
                    stderr: stats::standard_error(&xs),
                    ci_low: f64::NAN,
                    ci_high: f64::NAN,
                },
            );
        }
    }
    let invalid = g
        .verdicts
        .iter()
        .flatten()
        .filter(|v| !v.is_valid())
        .count();
    ResultRow {
        benchmark: g.benchmark.clone(),
        model: g.model.clone(),
        n_items,
        n_trials: g.verdicts.len(),
        invalid,
        failed: g.failed,
        primary_metric: primary_metric.to_owned(),
        metrics,
    }
}

/// The k of pass@k reported for code benchmarks (each only when every problem has ≥ k samples).
pub const PASS_AT_K: [u64; 3] = [1, 10, 100];

/// pass@k of a code benchmark (items whose verdicts carry `passed`): per problem n samples
/// (trials graded) of which c passed, the unbiased estimator averaged over problems, with a
/// bootstrap CI over problems. One estimate from all trials, so no spread across trials.
fn pass_at_k_metrics(sums: &ItemSums, n_items: usize) -> BTreeMap<String, Summary> {
    use metis_verify::code::pass_at_k::pass_at_k_table;
    let mut out = BTreeMap::new();
    let Some(m) = sums.names.iter().position(|n| n == "passed") else {
        return out;
    };
    let counts = |idx: &[usize]| -> Vec<(u64, u64)> {
        idx.iter()
            .map(|&i| (sums.counts[m][i] as u64, sums.sums[m][i].round() as u64))
            .collect()
    };
    let all: Vec<usize> = (0..n_items).collect();
    let Ok(table) = pass_at_k_table(&counts(&all), &PASS_AT_K) else {
        return out;
    };
    for (k, value) in table {
        let (ci_low, ci_high) =
            stats::bootstrap_ci(n_items, BOOTSTRAP_RESAMPLES, 0.95, BOOTSTRAP_SEED, |idx| {
                pass_at_k_table(&counts(idx), &[k])
                    .ok()
                    .and_then(|t| t.get(&k).copied())
                    .unwrap_or(f64::NAN)
            });
        out.insert(
            format!("pass@{k}"),
            Summary {
                mean: value,
                std: f64::NAN,
                stderr: f64::NAN,
                ci_low,
                ci_high,
            },
        );
    }
    out
}

/// The items of each subject, for benchmarks whose items span two or more subjects.
fn subject_groups(g: &Graded) -> BTreeMap<&str, Vec<usize>> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, subject) in g.subjects.iter().enumerate() {
        if let Some(s) = subject {
            groups.entry(s.as_str()).or_default().push(i);
        }
    }
    if groups.len() < 2 {
        groups.clear();
    }
    groups
}

/// The primary metric per subject (`<metric>/<subject>`) and its unweighted mean over
/// subjects (`<metric>_subject_mean`, BBH's mean over its 27 tasks), each as mean ± std over
/// trials with a bootstrap CI over the items (within the subject, or over all items).
fn subject_metrics(g: &Graded, sums: &ItemSums, metric: &str) -> BTreeMap<String, Summary> {
    let groups = subject_groups(g);
    let mut out = BTreeMap::new();
    if groups.is_empty() {
        return out;
    }
    let trial_value = |trial: &[Verdict], idx: &[usize]| {
        let subset: Vec<Verdict> = idx.iter().filter_map(|&i| trial.get(i).cloned()).collect();
        aggregate(&subset).get(metric).copied().unwrap_or(f64::NAN)
    };
    let summary = |xs: Vec<f64>, (ci_low, ci_high): (f64, f64)| Summary {
        mean: stats::mean(&xs),
        std: stats::population_std(&xs),
        stderr: stats::standard_error(&xs),
        ci_low,
        ci_high,
    };
    for (subject, idx) in &groups {
        let xs = g.verdicts.iter().map(|t| trial_value(t, idx)).collect();
        let ci = stats::bootstrap_ci(idx.len(), BOOTSTRAP_RESAMPLES, 0.95, BOOTSTRAP_SEED, |r| {
            let picked: Vec<usize> = r.iter().map(|&k| idx[k]).collect();
            sums.metric(metric, &picked)
        });
        out.insert(format!("{metric}/{subject}"), summary(xs, ci));
    }
    let mean_over_subjects = |value: &dyn Fn(&[usize]) -> f64, members: &[usize]| {
        let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in members {
            if let Some(s) = g.subjects[i].as_deref() {
                by_subject.entry(s).or_default().push(i);
            }
        }
        let values: Vec<f64> = by_subject.values().map(|idx| value(idx)).collect();
        stats::mean(&values)
    };
    let all: Vec<usize> = (0..g.item_ids.len()).collect();
    let xs = g
        .verdicts
        .iter()
        .map(|t| mean_over_subjects(&|idx| trial_value(t, idx), &all))
        .collect();
    let ci = stats::bootstrap_ci(all.len(), BOOTSTRAP_RESAMPLES, 0.95, BOOTSTRAP_SEED, |r| {
        mean_over_subjects(&|idx| sums.metric(metric, idx), r)
    });
    out.insert(format!("{metric}_subject_mean"), summary(xs, ci));
    out
}

/// Per-item mean score over trials (for paired comparisons).
pub fn item_scores(g: &Graded) -> HashMap<String, f64> {
    let n_trials = g.verdicts.len().max(1) as f64;
    let mut out: HashMap<String, f64> = HashMap::new();
    for trial in &g.verdicts {
        for (id, v) in g.item_ids.iter().zip(trial) {
            *out.entry(id.clone()).or_default() += v.score / n_trials;
        }
    }
    out
}

/// One answer produced elsewhere, as given to `--responses`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedResponse {
    pub benchmark: String,
    pub item: serde_json::Value,
    pub trial: u32,
    pub response: String,
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// Reads a `--responses` JSONL file into store records, checking every benchmark and item id.
/// `default_model` names answers without a `model` field. Answers for known benchmarks outside
/// `benches` are skipped and counted (the second value).
pub fn read_responses(
    path: &std::path::Path,
    benches: &HashMap<String, &Benchmark>,
    default_model: &str,
) -> Result<(Vec<ResponseRecord>, usize), RunError> {
    let mut skipped = 0usize;
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |detail: String| RunError::Responses {
            path: path.to_owned(),
            line: n + 1,
            detail,
        };
        let r: ImportedResponse = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let item = match &r.item {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(x) => x.to_string(),
            other => {
                return Err(err(format!(
                    "field item: expected a string or number, got {other}"
                )))
            }
        };
        let Some(bench) = benches.get(&r.benchmark) else {
            if benchmarks::spec(&r.benchmark).is_ok() {
                // A known benchmark this run does not cover (`--bench` narrowed it): skip.
                skipped += 1;
                continue;
            }
            return Err(err(format!(
                "field benchmark: {:?} is not a benchmark (known: {})",
                r.benchmark,
                benchmarks::specs()
                    .iter()
                    .map(|s| s.id)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if bench.item(&item).is_none() {
            return Err(err(format!(
                "field item: {item:?} is not an item of {} (see `metis eval items {}`)",
                r.benchmark, r.benchmark
            )));
        }
        let model = r.model.clone().unwrap_or_else(|| default_model.to_owned());
        if !seen.insert((r.benchmark.clone(), item.clone(), r.trial, model.clone())) {
            return Err(err(format!(
                "duplicate answer for benchmark {}, item {item}, trial {}, model {model}",
                r.benchmark, r.trial
            )));
        }
        out.push(ResponseRecord {
            key: ResponseKey {
                benchmark: r.benchmark,
                item,
                trial: r.trial,
                model,
                params_hash: "import".into(),
            },
            status: Status::Ok,
            response: Some(r.response),
            reasoning: r.reasoning,
            finish_reason: None,
            error: None,
            attempts: 0,
            latency_ms: None,
            prompt_tokens: None,
            completion_tokens: None,
            source: "import".into(),
            guard: None,
        });
    }
    Ok((out, skipped))
}
