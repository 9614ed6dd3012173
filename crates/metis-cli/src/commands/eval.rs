//! `metis eval`: run the cyber benchmarks against an OpenAI-compatible endpoint (or grade
//! answers produced elsewhere), resumably, and report mean ± std over trials with CIs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::model_args::{ModelSourceArgs, RetryArgs, SamplingArgs};
use super::ModelKind;
use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Subcommand};
use metis_eval::benchmarks::prompt_file::{load_prompt_file, prompt_file_id};
use metis_eval::benchmarks::{self, Benchmark, DataSource};
use metis_eval::judge::{self, GlmReference, Judge, JudgeReport};
use metis_eval::report::{self, ResultRow};
use metis_eval::results::{self, RunKey};
use metis_eval::run::{self, Backend, RunConfig, Sampling};
use metis_eval::store::Store;
use metis_verify::Protocol;

#[derive(ClapArgs)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// List the benchmarks: items, shots, metric, protocol, token budget, source, licence.
    List {
        /// One JSON object per benchmark.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// A Markdown table (the README's).
        #[arg(long)]
        markdown: bool,
    },
    /// Print the item ids of a benchmark, one per line, in data-file order.
    Items {
        benchmark: String,
        #[arg(long, env = "METIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write a benchmark as a GRPO prompt file (JSONL): each item's prompt, gold and verifier
    /// spec, so `metis train grpo` rewards it exactly as the benchmark scores it.
    ExportPrompts {
        benchmark: String,
        #[arg(long, env = "METIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Answer extraction.
        #[arg(long, default_value = "last-line", value_parser = super::protocol_parser())]
        protocol: Protocol,
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Per-sample results: every stored response of a model on a benchmark, graded, one JSON
    /// line each (prompt, response, reasoning, extracted answer, validity, score, correctness).
    Samples {
        benchmark: String,
        #[arg(long)]
        model: String,
        #[arg(long, default_value = "metis-eval.sqlite")]
        store: PathBuf,
        #[arg(long, env = "METIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Answer extraction.
        #[arg(long, default_value = "last-line", value_parser = super::protocol_parser())]
        protocol: Protocol,
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Paired comparison of two models on the benchmarks both have in the store.
    Compare {
        model_a: String,
        model_b: String,
        #[arg(long, default_value = "metis-eval.sqlite")]
        store: PathBuf,
        /// Benchmarks to compare (default: every benchmark both models have).
        #[arg(long = "bench", value_delimiter = ',')]
        benchmarks: Vec<String>,
        #[arg(long, env = "METIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Answer extraction.
        #[arg(long, default_value = "last-line", value_parser = super::protocol_parser())]
        protocol: Protocol,
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs)]
struct RunArgs {
    /// Benchmarks to run, comma-separated or repeated (default: all; see `metis eval list`;
    /// none when --prompts is given).
    #[arg(long = "bench", value_delimiter = ',')]
    benchmarks: Vec<String>,
    /// Prompt files to evaluate as benchmarks, `[NAME=]FILE.jsonl` (repeatable): the GRPO
    /// prompt format (`id`, one user message, `task`, `gold`, `verifier`), graded by each
    /// record's verifier spec exactly as `metis train grpo` rewards it; NAME defaults to the
    /// file stem.
    #[arg(long = "prompts")]
    prompt_files: Vec<String>,
    /// Model name sent to the endpoint and used as the key in the store.
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    source: ModelSourceArgs,
    /// Sampling defaults of the report: reasoning (T 0.6, top-p 0.95) or instruct (T 0.3, top-p 1.0).
    #[arg(long, value_enum, default_value_t = ModelKind::Reasoning)]
    kind: ModelKind,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[arg(long, default_value_t = 5)]
    trials: u32,
    /// Requests in flight at once (over all endpoints); with --local-model, the most
    /// sequences the engine decodes together as one batch.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// File holding a system prompt (recorded with the run).
    #[arg(long)]
    system_prompt: Option<PathBuf>,
    /// SQLite store of responses; rerunning the same command resumes from it.
    #[arg(long, default_value = "metis-eval.sqlite")]
    store: PathBuf,
    /// Data directory in the layout of the shared data; default: METIS_DATA_DIR, else a
    /// cache filled from the pinned public sources.
    #[arg(long, env = "METIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Answer extraction.
    #[arg(long, default_value = "last-line", value_parser = super::protocol_parser())]
    protocol: Protocol,
    /// Only the first N items of each benchmark.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    retry: RetryArgs,
    /// Grade answers produced elsewhere (JSONL: benchmark, item, trial, response, optional
    /// reasoning and model) instead of querying a model.
    #[arg(long)]
    responses: Option<PathBuf>,
    /// Re-grade stored responses without querying.
    #[arg(long)]
    rescore: bool,
    /// Print the final metrics as JSON (one object per benchmark × model).
    #[arg(long)]
    json: bool,
    /// Also write results.{json,md,csv} and chart.png into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Judged benchmarks (alpacaeval2): base URL of the judge's OpenAI-compatible endpoint. It
    /// must return `top_logprobs` on chat completions; upstream's judge is gpt-4-1106-preview.
    #[arg(long, env = "METIS_JUDGE_URL")]
    judge_url: Option<String>,
    /// Judged benchmarks: the judge model's name (also selects the stored judgments to report,
    /// e.g. with --rescore).
    #[arg(long, env = "METIS_JUDGE_MODEL")]
    judge_model: Option<String>,
    /// Environment variable holding the judge endpoint's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    judge_api_key_env: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.command {
            Some(EvalCommand::List { json, markdown }) => {
                with_output(None, |w| {
                    if markdown {
                        write!(w, "{}", benchmarks::catalogue_markdown())?;
                    }
                    for card in benchmarks::specs().iter().map(|s| s.card()) {
                        if json {
                            writeln!(w, "{}", serde_json::to_string(&card)?)?;
                        } else if !markdown {
                            write_card(w, &card)?;
                        }
                    }
                    Ok(benchmarks::specs().len())
                })?;
                Ok(())
            }
            Some(EvalCommand::Items {
                benchmark,
                data_dir,
            }) => {
                let b = benchmarks::load(
                    &benchmark,
                    &DataSource::resolve(data_dir),
                    Protocol::LastLine,
                )
                .await?;
                with_output(None, |w| {
                    for item in &b.items {
                        writeln!(w, "{}", item.id)?;
                    }
                    Ok(b.items.len())
                })?;
                Ok(())
            }
            Some(EvalCommand::ExportPrompts {
                benchmark,
                data_dir,
                protocol,
                out,
            }) => {
                let b = load_for_output(&benchmark, data_dir, protocol).await?;
                let n = with_output(out.as_deref(), |w| {
                    metis_eval::samples::export_prompts(&b, w).map_err(anyhow::Error::from)
                })?;
                eprintln!("{n} prompts from {benchmark}");
                Ok(())
            }
            Some(EvalCommand::Samples {
                benchmark,
                model,
                store,
                data_dir,
                protocol,
                out,
            }) => {
                if !store.exists() {
                    bail!("no response store at {}", store.display());
                }
                let b = load_for_output(&benchmark, data_dir, protocol).await?;
                let store = Store::open(&store)?;
                let n = with_output(out.as_deref(), |w| {
                    Ok(metis_eval::samples::write_samples(&store, &b, &model, w)?)
                })?;
                eprintln!("{n} samples of {model} on {benchmark}");
                Ok(())
            }
            Some(EvalCommand::Compare {
                model_a,
                model_b,
                store,
                benchmarks,
                data_dir,
                protocol,
                json,
            }) => {
                compare(
                    &model_a, &model_b, &store, benchmarks, data_dir, protocol, json,
                )
                .await
            }
            None => evaluate(args.run).await,
        }
    })
}

async fn load_for_output(
    benchmark: &str,
    data_dir: Option<PathBuf>,
    protocol: Protocol,
) -> anyhow::Result<Benchmark> {
    Ok(benchmarks::load(benchmark, &DataSource::resolve(data_dir), protocol).await?)
}

/// Runs `write` on a buffered `path` (written atomically: a temporary file renamed into
/// place) or on standard output. A reader that goes away surfaces as a broken-pipe error,
/// which `main` turns into a quiet exit.
fn with_output(
    path: Option<&Path>,
    write: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<usize>,
) -> anyhow::Result<usize> {
    match path {
        Some(path) => {
            let tmp = path.with_extension("partial");
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let n = write(&mut w)?;
            w.flush()?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            Ok(n)
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let n = write(&mut w)?;
            w.flush()?;
            Ok(n)
        }
    }
}

/// Every benchmark, except — with a data directory, where nothing is downloaded — those whose
/// files it lacks (said on stderr; `--bench ID` asks for one all the same and fails clearly).
fn available_benchmark_ids(data: &DataSource) -> Vec<String> {
    let DataSource::Dir(root) = data else {
        return all_benchmark_ids();
    };
    let (present, missing): (Vec<_>, Vec<_>) = benchmarks::specs()
        .iter()
        .partition(|s| s.files().iter().all(|f| root.join(f.path).exists()));
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|s| s.id).collect();
        eprintln!(
            "note: skipping {}: not in {} (nothing is downloaded into a --data-dir; without \
             --data-dir, benchmarks are fetched from their pinned sources into the cache)",
            names.join(", "),
            root.display()
        );
    }
    present.iter().map(|s| s.id.to_owned()).collect()
}

fn all_benchmark_ids() -> Vec<String> {
    benchmarks::specs()
        .iter()
        .map(|s| s.id.to_owned())
        .collect()
}

/// A benchmark's entry in `metis eval list`.
fn write_card(w: &mut dyn std::io::Write, c: &benchmarks::Card) -> std::io::Result<()> {
    writeln!(w, "{:<18} {}", c.id, c.title)?;
    writeln!(
        w,
        "    task {} · {} items · shots {} · metric {} · max tokens {} (reasoning) / {} (instruct)",
        c.task, c.items, c.shots, c.metric, c.token_budget[0], c.token_budget[1]
    )?;
    writeln!(w, "    protocol: {}", c.protocol)?;
    writeln!(w, "    source: {} · licence {}", c.source, c.licence)
}

fn sampling(a: &RunArgs) -> Sampling {
    a.sampling.over(if a.kind == ModelKind::Instruct {
        Sampling::instruct()
    } else {
        Sampling::reasoning()
    })
}

/// The judge the flags describe: `None` without `--judge-url` (stored judgments can still be
/// reported by `--judge-model`).
fn judge_from_args(a: &RunArgs) -> anyhow::Result<Option<Judge>> {
    let Some(url) = &a.judge_url else {
        return Ok(None);
    };
    let Some(model) = a.judge_model.clone() else {
        bail!("--judge-url needs --judge-model (the judge model's name at that endpoint)");
    };
    let client = a
        .retry
        .client(std::slice::from_ref(url), &a.judge_api_key_env)?;
    Ok(Some(Judge { model, client }))
}

/// Judged benchmarks need a judge: to query and judge (`--judge-url`, `--judge-model`), or at
/// least its name to report stored judgments (`--rescore` or `--responses`). Without
/// `--bench`, they are skipped with a note when no judge is given.
fn check_judge(a: &RunArgs, ids: &mut Vec<String>, judge: Option<&Judge>) -> anyhow::Result<()> {
    let judged: Vec<String> = ids
        .iter()
        .filter(|id| benchmarks::spec(id).is_ok_and(judge::is_judged))
        .cloned()
        .collect();
    let reporting_only = a.rescore || a.responses.is_some();
    let enough = judge.is_some() || (reporting_only && a.judge_model.is_some());
    if judged.is_empty() || enough {
        return Ok(());
    }
    if a.benchmarks.is_empty() {
        eprintln!(
            "note: skipping {}: graded by a judge model (give --judge-url and --judge-model)",
            judged.join(", ")
        );
        ids.retain(|id| !judged.contains(id));
        return Ok(());
    }
    bail!(
        "{} is graded by a judge model: give --judge-url and --judge-model (an OpenAI-compatible \
         endpoint returning top_logprobs){}",
        judged.join(", "),
        if reporting_only {
            ", or --judge-model alone to report the stored judgments"
        } else {
            ""
        }
    )
}

/// Runs the judging pass over `model`'s stored answers to each judged benchmark.
async fn judge_answers(
    benches: &[Benchmark],
    model: &str,
    judge: &Judge,
    a: &RunArgs,
    keep: impl Fn(&benchmarks::Item, u32, &metis_eval::store::ResponseRecord) -> bool,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let store = Store::open(&a.store)?;
    for b in benches.iter().filter(|b| judge::is_judged(b.spec)) {
        let records: Vec<_> = store
            .records(b.spec.id, model, None)?
            .into_iter()
            .filter(|r| {
                r.key.trial < a.trials
                    && b.item(&r.key.item)
                        .is_some_and(|item| keep(item, r.key.trial, r))
            })
            .collect();
        let s = judge::judge_pass(
            &a.store,
            b,
            model,
            &records,
            judge,
            a.concurrency,
            stop.clone(),
        )
        .await?;
        if !a.json {
            eprintln!(
                "judgments ({} by {} @ {}): {} reused from the store, {} new ({} judge-invalid), \
                 {} failed, {} empty or truncated answers not sent",
                b.spec.id,
                judge.model,
                judge.url(),
                s.reused,
                s.asked,
                s.judge_invalid,
                s.failed,
                s.not_judged
            );
        }
    }
    Ok(())
}

async fn evaluate(a: RunArgs) -> anyhow::Result<()> {
    let data = DataSource::resolve(a.data_dir.clone());
    let judge = judge_from_args(&a)?;
    let benches = load_run_benchmarks(&a, &data, judge.as_ref()).await?;
    let glm = if benches.iter().any(|b| judge::is_judged(b.spec)) {
        GlmReference::from_data_dir(data.root())?
    } else {
        GlmReference::Approximation
    };
    let key = RunKey {
        system_prompt: read_system_prompt(&a)?,
        sampling: sampling(&a),
    };
    let mut reports = Vec::new();
    let rows = if let Some(path) = &a.responses {
        grade_imported(path, &benches, &a, judge.as_ref(), &glm, &mut reports).await?
    } else {
        let model = model_name(&a)?;
        if !a.rescore {
            query_model(&a, &model, &benches, &key, judge.as_ref(), &data).await?;
        }
        let graded = grade_run(&a, &model, &benches, &key, judge.as_ref(), &glm)?;
        let (rows, judged): (Vec<_>, Vec<_>) = graded.into_iter().unzip();
        reports.extend(judged.into_iter().flatten());
        rows
    };
    output(&rows, &reports, a.json, a.out.as_deref())
}

/// The benchmarks of the run: `--bench` (default: all available unless `--prompts` is given,
/// judged ones skipped without a judge) and the `--prompts` files.
async fn load_run_benchmarks(
    a: &RunArgs,
    data: &DataSource,
    judge: Option<&Judge>,
) -> anyhow::Result<Vec<Benchmark>> {
    let mut ids = match (a.benchmarks.is_empty(), a.prompt_files.is_empty()) {
        (true, true) => available_benchmark_ids(data),
        _ => a.benchmarks.clone(),
    };
    check_judge(a, &mut ids, judge)?;
    let mut benches = run::load_benchmarks(&ids, data, a.protocol, a.limit).await?;
    for arg in &a.prompt_files {
        let (id, path) = prompt_file_id(arg);
        let mut b = load_prompt_file(&id, &path, Some(data.root()), a.protocol)?;
        if let Some(n) = a.limit {
            b.items.truncate(n);
        }
        benches.push(b);
    }
    Ok(benches)
}

fn read_system_prompt(a: &RunArgs) -> anyhow::Result<Option<String>> {
    a.system_prompt
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the system prompt {}", p.display()))
        })
        .transpose()
}

/// `--model`, else the name of the `--local-model` directory (its parent's for a dtype
/// subdirectory such as `f32/`).
fn model_name(a: &RunArgs) -> anyhow::Result<String> {
    let local_name = a.source.local_model.as_ref().and_then(|p| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != "f32" && n != "bf16" && n != "f16")
            .or_else(|| {
                p.parent()?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
    });
    a.model.clone().or(local_name).context(
        "--model is required (or give --responses FILE to grade answers produced elsewhere)",
    )
}

/// Asks the model every missing (item, trial) and commits the answers; judges them where a
/// benchmark is judged.
async fn query_model(
    a: &RunArgs,
    model: &str,
    benches: &[Benchmark],
    key: &RunKey,
    judge: Option<&Judge>,
    data: &DataSource,
) -> anyhow::Result<()> {
    let config = RunConfig {
        benchmarks: benches.iter().map(|b| b.id().to_owned()).collect(),
        model: model.to_owned(),
        sampling: key.sampling.clone(),
        trials: a.trials,
        system_prompt: key.system_prompt.clone(),
        concurrency: a.concurrency,
        protocol: a.protocol,
        data: data.clone(),
        store: a.store.clone(),
        limit: a.limit,
        progress: !a.json,
    };
    let backend = backend(a)?;
    let stop = super::stop_on_ctrl_c();
    let q = run::query(&config, benches, &backend, stop.clone()).await?;
    if !a.json {
        eprintln!(
            "responses: {} reused from the store, {} new, {} failed",
            q.reused, q.answered, q.failed
        );
        if let Backend::Local(local) = &backend {
            eprintln!("local engine: {}", local.stats());
        }
    }
    if let Some(judge) = judge {
        judge_answers(
            benches,
            model,
            judge,
            a,
            |i, t, r| key.answers(i, t, r),
            stop,
        )
        .await?;
    }
    Ok(())
}

/// The local engine (`--local-model`) or the endpoints (`--base-url`) the run asks.
fn backend(a: &RunArgs) -> anyhow::Result<Backend> {
    a.source.backend(&a.retry, a.concurrency)?.context(
        "--base-url (or OPENAI_BASE_URL) or --local-model is required to query a model; use --rescore to grade stored responses only",
    )
}

/// Grades this run's stored answers per benchmark and records what produced each result.
fn grade_run(
    a: &RunArgs,
    model: &str,
    benches: &[Benchmark],
    key: &RunKey,
    judge: Option<&Judge>,
    glm: &GlmReference,
) -> anyhow::Result<Vec<(ResultRow, Option<JudgeReport>)>> {
    let mut store = Store::open(&a.store)?;
    let mut out = Vec::new();
    for b in benches {
        let (row, report) = if judge::is_judged(b.spec) {
            let records = store.records(b.spec.id, model, None)?;
            let judgments = store.judgments(b.spec.id, model)?;
            let (row, report) = judge::grade_judged(
                b,
                model,
                a.trials,
                records,
                |i, t, r| key.answers(i, t, r),
                &judgments,
                &judge_name(a, judge),
                glm,
            );
            (row, Some(report))
        } else {
            (
                results::grade_stored(&store, b, model, a.trials, key)?,
                None,
            )
        };
        results::record_result(
            &mut store,
            b,
            key,
            a.trials,
            a.protocol,
            &row,
            report.as_ref(),
        )?;
        out.push((row, report));
    }
    Ok(out)
}

/// The judge whose judgments are reported (`check_judge` made sure there is one).
fn judge_name(a: &RunArgs, judge: Option<&Judge>) -> String {
    judge
        .map(|j| j.model.clone())
        .or_else(|| a.judge_model.clone())
        .unwrap_or_default()
}

/// Imports answers produced elsewhere into the store and grades them per model (judged
/// benchmarks: judged first when a judge is given, then reported with the stored judgments).
async fn grade_imported(
    path: &Path,
    benches: &[Benchmark],
    a: &RunArgs,
    judge: Option<&Judge>,
    glm: &GlmReference,
    reports: &mut Vec<JudgeReport>,
) -> anyhow::Result<Vec<ResultRow>> {
    let (default_model, store_path) = (a.model.as_deref(), a.store.as_path());
    let by_id: HashMap<String, &Benchmark> =
        benches.iter().map(|b| (b.spec.id.to_owned(), b)).collect();
    let (records, skipped) =
        run::read_responses(path, &by_id, default_model.unwrap_or("imported"))?;
    if skipped > 0 {
        eprintln!(
            "note: {skipped} answers in {} belong to benchmarks outside --bench and were skipped",
            path.display()
        );
    }
    let mut store = Store::open(store_path)?;
    store.put_batch(&records)?;
    let mut models: Vec<String> = records.iter().map(|r| r.key.model.clone()).collect();
    models.sort();
    models.dedup();
    let mut rows = Vec::new();
    for b in benches {
        for model in &models {
            let recs: Vec<_> = records
                .iter()
                .filter(|r| r.key.benchmark == b.spec.id && &r.key.model == model)
                .cloned()
                .collect();
            if recs.is_empty() {
                continue;
            }
            let trials = recs.iter().map(|r| r.key.trial + 1).max().unwrap_or(1);
            if !judge::is_judged(b.spec) {
                let graded = run::grade(b, model, trials, recs, |_, _, _| true);
                rows.push(run::summarize(&graded, b.spec.primary_metric));
                continue;
            }
            if let Some(judge) = judge {
                let stop = Arc::new(AtomicBool::new(false));
                judge::judge_pass(store_path, b, model, &recs, judge, a.concurrency, stop).await?;
            }
            let judgments = store.judgments(b.spec.id, model)?;
            let (row, report) = judge::grade_judged(
                b,
                model,
                trials,
                recs,
                |_, _, _| true,
                &judgments,
                &judge_name(a, judge),
                glm,
            );
            rows.push(row);
            reports.push(report);
        }
    }
    Ok(rows)
}

fn output(
    rows: &[ResultRow],
    reports: &[JudgeReport],
    json: bool,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let report_of = |r: &ResultRow| {
        reports
            .iter()
            .find(|j| j.benchmark == r.benchmark && j.model == r.model)
    };
    let mut stdout = std::io::stdout().lock();
    if json {
        for r in rows {
            let mut value = serde_json::to_value(r)?;
            if let (Some(j), Some(obj)) = (report_of(r), value.as_object_mut()) {
                obj.insert("judge".to_owned(), serde_json::to_value(j)?);
            }
            writeln!(stdout, "{}", serde_json::to_string(&value)?)?;
        }
    } else {
        writeln!(stdout, "{}", report::markdown(rows))?;
        for r in rows {
            let ci = r.metrics.get(&r.primary_metric);
            if let Some(s) = ci {
                writeln!(
                    stdout,
                    "{} / {}: {} = {:.4} ± {:.4} (stderr {:.4}, 95% CI [{:.4}, {:.4}]); {} items × {} trials, {} invalid, {} failed",
                    r.benchmark, r.model, r.primary_metric, s.mean, s.std, s.stderr, s.ci_low, s.ci_high,
                    r.n_items, r.n_trials, r.invalid, r.failed
                )?;
            }
            if let Some(j) = report_of(r) {
                writeln!(stdout, "{}", j.summary_line(r))?;
            }
        }
    }
    if let Some(dir) = out {
        write_reports(rows, dir)?;
    }
    Ok(())
}

/// Writes results.json, results.md, results.csv and chart.png into `dir`.
pub fn write_reports(rows: &[ResultRow], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("results.json", report::json(rows))?;
    write("results.md", report::markdown(rows))?;
    write("results.csv", report::csv(rows))?;
    report::chart(rows, &dir.join("chart.png"))?;
    Ok(())
}

async fn compare(
    model_a: &str,
    model_b: &str,
    store_path: &Path,
    ids: Vec<String>,
    data_dir: Option<PathBuf>,
    protocol: Protocol,
    json: bool,
) -> anyhow::Result<()> {
    if !store_path.exists() {
        bail!("no store at {}", store_path.display());
    }
    let store = Store::open(store_path)?;
    let ids = if ids.is_empty() {
        all_benchmark_ids()
    } else {
        ids
    };
    let data = DataSource::resolve(data_dir);
    let mut any = false;
    let mut stdout = std::io::stdout().lock();
    for id in ids {
        let has_answers = |m| run::stored_ok(&store, &id, m).map(|s| !s.is_empty());
        if !has_answers(model_a)? || !has_answers(model_b)? {
            continue;
        }
        let b = benchmarks::load(&id, &data, protocol).await?;
        let Some(d) = results::compare_models(&store, &b, model_a, model_b)? else {
            continue;
        };
        any = true;
        if json {
            writeln!(
                stdout,
                "{}",
                serde_json::json!({
                    "benchmark": id, "model_a": model_a, "model_b": model_b,
                    "mean_diff": d.mean_diff, "ci_low": d.ci_low, "ci_high": d.ci_high,
                    "n": d.n, "a_better": d.a_better, "b_better": d.b_better, "ties": d.ties,
                })
            )?;
        } else {
            writeln!(
                stdout,
                "{}",
                results::describe_diff(&id, model_a, model_b, &d)
            )?;
        }
    }
    if !any {
        bail!("the store has no benchmark answered by both {model_a} and {model_b}");
    }
    Ok(())
}
