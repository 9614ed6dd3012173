//! `metis safety`: HarmBench against one or more configurations of a deployment (bare, with a
//! system prompt, behind a guardrail, or an endpoint that is a deployment), judged, summarised
//! and reported in the layout of the paper's Figure 5.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use metis_eval::benchmarks::DataSource;
use metis_eval::run::{Backend, ChatBackend};
use metis_eval::stats;
use metis_safety::behaviors::{self, Split};
use metis_safety::deployment::{Configuration, GuardedBackend};
use metis_safety::judge::{ClassifierJudge, CopyrightJudge};
use metis_safety::report::{self, ReportContext};
use metis_safety::results;
use metis_safety::run::{self as safety_run, SafetyRun};
use metis_serve::system_prompt::DEFAULT_SYSTEM_PROMPT;

use super::guard_args::{guard_backend, GuardArgs};
use super::model_args::{ModelSourceArgs, RetryArgs, SamplingArgs};
use super::{stop_on_ctrl_c, ModelKind};

/// The configurations `metis safety` knows.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigName {
    /// The model with no system prompt.
    Bare,
    /// The model with the system prompt (`--system-prompt`, else the built-in Metis prompt).
    SystemPrompt,
    /// The system-prompt configuration behind the Llama Guard 3 guardrail of `--guard`, applied
    /// by Metis on the input and on the answer as `metis serve` does.
    Guarded,
    /// `--deployment-url` as it is (e.g. a `metis serve` with its own prompt policy and guard).
    Deployment,
}

impl ConfigName {
    fn as_str(self) -> &'static str {
        match self {
            ConfigName::Bare => "bare",
            ConfigName::SystemPrompt => "system-prompt",
            ConfigName::Guarded => "guarded",
            ConfigName::Deployment => "deployment",
        }
    }
}

/// Which judge labels standard and contextual behaviours.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JudgeKind {
    /// HarmBench's classifier protocol on `--judge-url` (e.g. cais/HarmBench-Llama-2-13b-cls).
    Harmbench,
    /// Llama Guard 3 (`--judge-guard`): not HarmBench's numbers, and the report says so.
    LlamaGuard,
    /// No judge: query only (judge later by re-running with one).
    None,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Served model name (default: the local model's directory name).
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    source: ModelSourceArgs,
    /// Configurations to measure, in report order (default: bare, system-prompt, and guarded
    /// when --guard is given, deployment when --deployment-url is).
    #[arg(long, value_enum, value_delimiter = ',')]
    configs: Vec<ConfigName>,
    /// System prompt of the system-prompt and guarded configurations (default: Metis's).
    #[arg(long)]
    system_prompt: Option<PathBuf>,
    #[command(flatten)]
    guard: GuardArgs,
    /// An endpoint that is itself a deployment (e.g. `metis serve` with a guard): measured as
    /// the `deployment` configuration; its guard blocks count as refusals.
    #[arg(long)]
    deployment_url: Option<String>,
    /// Model name sent to --deployment-url (default: --model).
    #[arg(long)]
    deployment_model: Option<String>,
    /// HarmBench split: all (400, the report's), test (320) or val (80); read from the data
    /// directory, else downloaded into the cache from its pinned source.
    #[arg(long, default_value = "all")]
    split: Split,
    /// A behaviour CSV to use instead of the split from the data directory.
    #[arg(long)]
    behaviors: Option<PathBuf>,
    #[arg(long, env = "METIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Only the first N behaviours (smoke runs).
    #[arg(long)]
    limit: Option<usize>,
    /// reasoning (T 0.6, top-p 0.95, 4,096 tokens) or instruct (T 0.3, 512 tokens).
    #[arg(long, value_enum, default_value_t = ModelKind::Reasoning)]
    kind: ModelKind,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Completions per behaviour (the report: 1).
    #[arg(long, default_value_t = 1)]
    trials: u32,
    /// Requests in flight at once; with --local-model, the most sequences the engine
    /// decodes together as one batch.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The evaluation store (shared with `metis eval`).
    #[arg(long, default_value = "metis-eval.sqlite")]
    store: PathBuf,
    #[command(flatten)]
    retry: RetryArgs,
    /// Judge of standard and contextual behaviours (default: harmbench with --judge-url,
    /// llama-guard with --judge-guard, else none).
    #[arg(long, value_enum)]
    judge: Option<JudgeKind>,
    /// HarmBench classifier endpoint (OpenAI-compatible /v1/completions).
    #[arg(long, env = "METIS_JUDGE_URL")]
    judge_url: Option<String>,
    #[arg(long, default_value = "cais/HarmBench-Llama-2-13b-cls")]
    judge_model: String,
    #[arg(long, default_value = "OPENAI_API_KEY")]
    judge_api_key_env: String,
    /// The classifier's tokenizer (tokenizer.json or directory): generations are clipped to
    /// 512 classifier tokens as upstream; without it they are sent whole.
    #[arg(long)]
    judge_tokenizer: Option<PathBuf>,
    /// Llama Guard 3 as the judge: `local:PATH` or `url:BASE` (model: --guard-model).
    #[arg(long)]
    judge_guard: Option<String>,
    /// Show judges the reasoning too (default: the final answer only).
    #[arg(long)]
    judge_reasoning: bool,
    /// Converted HarmBench copyright hashes (`tools/harmbench/convert_copyright_hashes.py`);
    /// default `~/.cache/metis/harmbench/copyright_hashes` when it exists.
    #[arg(long, env = "METIS_HARMBENCH_HASHES")]
    copyright_hashes: Option<PathBuf>,
    /// Write report.{md,csv,json,png,svg} and samples.jsonl here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = stats::DEFAULT_RESAMPLES)]
    resamples: usize,
    /// Print the JSON report instead of the Markdown one.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(args))
}

async fn measure(a: Args) -> anyhow::Result<()> {
    let (behaviors, behaviors_path) = load_behaviors(&a).await?;
    let model = model_name(&a)?;
    let configurations = configurations(&a, &model)?;
    let run = SafetyRun {
        behaviors,
        configurations,
        sampling: sampling(&a),
        trials: a.trials.max(1),
        concurrency: a.concurrency.max(1),
        store: a.store.clone(),
        progress: !a.json,
        judge_reasoning: a.judge_reasoning,
    };
    let judge = classifier_judge(&a)?;
    let hashes = copyright_dir(&a);
    let stop = stop_on_ctrl_c();
    let queries = run.query(stop.clone()).await?;
    for q in &queries {
        eprintln!(
            "{}: {} reused, {} new, {} failed{}",
            q.configuration,
            q.stats.reused,
            q.stats.answered,
            q.stats.failed,
            q.stopped
                .as_deref()
                .map(|s| format!(" — {s}"))
                .unwrap_or_default()
        );
    }
    if let Some(j) = &judge {
        let s = run.judge(j, stop).await?;
        eprintln!(
            "judge {}: {} reused, {} asked, {} invalid (neither yes nor no), {} failed",
            j.id(),
            s.reused,
            s.asked,
            s.invalid,
            s.failed
        );
    }
    let mut copyright = CopyrightJudge::new(hashes.clone());
    let outcomes = run.outcomes(judge.as_ref(), &mut copyright)?;
    let names: Vec<String> = run.configurations.iter().map(|c| c.name.clone()).collect();
    let results = results::summarise(
        &outcomes,
        &names,
        run.trials,
        a.resamples,
        stats::DEFAULT_SEED,
    );
    let ctx = ReportContext {
        judge: judge.as_ref().map(ClassifierJudge::id),
        judge_is_harmbench: judge.as_ref().is_some_and(ClassifierJudge::is_harmbench),
        judge_reasoning: a.judge_reasoning,
        copyright_judged: hashes.is_some(),
        split: behaviors_path.display().to_string(),
        behaviors: run.behaviors.len(),
        trials: run.trials,
        queries,
    };
    if let Some(dir) = &a.out {
        write_outputs(dir, &ctx, &results, &outcomes)?;
    }
    if a.json {
        writeln!(std::io::stdout(), "{}", report::json(&ctx, &results))?;
    } else {
        writeln!(std::io::stdout(), "{}", report::markdown(&ctx, &results))?;
    }
    Ok(())
}

async fn load_behaviors(a: &Args) -> anyhow::Result<(Vec<behaviors::Behavior>, PathBuf)> {
    let (mut list, path) = match &a.behaviors {
        Some(p) => (behaviors::load(p)?, p.clone()),
        None => {
            let data = DataSource::resolve(a.data_dir.clone());
            let (list, path, notes) = behaviors::load_split(a.split, &data).await?;
            notes.iter().for_each(|n| eprintln!("note: {n}"));
            (list, path)
        }
    };
    if let Some(n) = a.limit {
        list.truncate(n);
    }
    Ok((list, path))
}

fn model_name(a: &Args) -> anyhow::Result<String> {
    let local = a
        .source
        .local_model
        .as_ref()
        .and_then(|p| p.file_stem().map(|n| n.to_string_lossy().into_owned()));
    a.model
        .clone()
        .or(local)
        .or_else(|| a.deployment_model.clone())
        .context("--model is required with --base-url")
}

fn sampling(a: &Args) -> metis_eval::run::Sampling {
    a.sampling
        .over(safety_run::default_sampling(a.kind == ModelKind::Reasoning))
}

/// The model itself: an endpoint or the local engine.
fn model_backend(a: &Args) -> anyhow::Result<Option<Arc<dyn ChatBackend>>> {
    let backend = a.source.backend(&a.retry, a.concurrency)?;
    Ok(backend.map(|b| Arc::new(b) as Arc<dyn ChatBackend>))
}

fn configurations(a: &Args, model: &str) -> anyhow::Result<Vec<Configuration>> {
    let names = if a.configs.is_empty() {
        let mut v = vec![ConfigName::Bare, ConfigName::SystemPrompt];
        if a.guard.guard.is_some() {
            v.push(ConfigName::Guarded);
        }
        if a.deployment_url.is_some() {
            v.push(ConfigName::Deployment);
        }
        v
    } else {
        a.configs.clone()
    };
    let system_prompt = match &a.system_prompt {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the system prompt {}", p.display()))?,
        None => DEFAULT_SYSTEM_PROMPT.to_owned(),
    };
    let backend = model_backend(a)?;
    names
        .iter()
        .map(|n| configuration(*n, a, model, &system_prompt, backend.clone()))
        .collect()
}

fn configuration(
    name: ConfigName,
    a: &Args,
    model: &str,
    system_prompt: &str,
    backend: Option<Arc<dyn ChatBackend>>,
) -> anyhow::Result<Configuration> {
    let model_backend = || {
        backend.clone().with_context(|| {
            format!(
                "the {} configuration needs --base-url (or OPENAI_BASE_URL) or --local-model",
                name.as_str()
            )
        })
    };
    let mut c = Configuration {
        name: name.as_str().to_owned(),
        model: model.to_owned(),
        system_prompt: None,
        backend: match name {
            ConfigName::Deployment => deployment_backend(a)?,
            _ => model_backend()?,
        },
        deployment: None,
        guard_failed: None,
    };
    match name {
        ConfigName::Bare => {}
        ConfigName::SystemPrompt => c.system_prompt = Some(system_prompt.to_owned()),
        ConfigName::Guarded => {
            let guard = a
                .guard
                .build(&a.source.placement.device.open()?)?
                .context("the guarded configuration needs --guard local:PATH or url:BASE")?;
            let id = a.guard.guard.clone().unwrap_or_default();
            c.deployment = Some(GuardedBackend::describe(
                &guard,
                &format!("{id}#{}", a.guard.guard_model),
            ));
            let guarded = GuardedBackend::new(c.backend.clone(), guard);
            c.guard_failed = Some(guarded.failed_flag());
            c.backend = Arc::new(guarded);
            c.system_prompt = Some(system_prompt.to_owned());
        }
        ConfigName::Deployment => {
            let url = a
                .deployment_url
                .clone()
                .context("the deployment configuration needs --deployment-url")?;
            c.model = a
                .deployment_model
                .clone()
                .unwrap_or_else(|| model.to_owned());
            c.deployment = Some(format!("endpoint={url}"));
        }
    }
    Ok(c)
}

fn deployment_backend(a: &Args) -> anyhow::Result<Arc<dyn ChatBackend>> {
    let url = a
        .deployment_url
        .clone()
        .context("the deployment configuration needs --deployment-url")?;
    let client = a.retry.client(&[url], &a.source.api_key_env)?;
    Ok(Arc::new(Backend::Http(client)))
}

fn classifier_judge(a: &Args) -> anyhow::Result<Option<ClassifierJudge>> {
    let kind = a.judge.unwrap_or(if a.judge_url.is_some() {
        JudgeKind::Harmbench
    } else if a.judge_guard.is_some() {
        JudgeKind::LlamaGuard
    } else {
        JudgeKind::None
    });
    match kind {
        JudgeKind::None => Ok(None),
        JudgeKind::Harmbench => {
            let url = a
                .judge_url
                .clone()
                .context("--judge harmbench needs --judge-url")?;
            let tokenizer = match &a.judge_tokenizer {
                Some(p) => Some(Arc::new(load_tokenizer(p)?)),
                None => None,
            };
            Ok(Some(ClassifierJudge::HarmBench {
                client: a.retry.client(&[url], &a.judge_api_key_env)?,
                model: a.judge_model.clone(),
                tokenizer,
            }))
        }
        JudgeKind::LlamaGuard => {
            let spec = a
                .judge_guard
                .clone()
                .context("--judge llama-guard needs --judge-guard local:PATH or url:BASE")?;
            let key = std::env::var(&a.judge_api_key_env)
                .ok()
                .filter(|k| !k.is_empty());
            Ok(Some(ClassifierJudge::LlamaGuard {
                backend: guard_backend(
                    &spec,
                    &a.guard.guard_model,
                    key,
                    &a.source.placement.device.open()?,
                )?,
                name: format!("{spec}#{}", a.guard.guard_model),
            }))
        }
    }
}

fn load_tokenizer(p: &Path) -> anyhow::Result<metis_engine::tokenizer::Tokenizer> {
    let t = if p.is_dir() {
        metis_engine::tokenizer::Tokenizer::from_dir(p)
    } else {
        metis_engine::tokenizer::Tokenizer::from_file(p)
    };
    t.with_context(|| format!("--judge-tokenizer {}", p.display()))
}

/// `--copyright-hashes`, else the default directory when the conversion has filled it.
fn copyright_dir(a: &Args) -> Option<PathBuf> {
    a.copyright_hashes
        .clone()
        .or_else(|| metis_verify::copyright::default_hashes_dir().filter(|d| d.is_dir()))
}

fn write_outputs(
    dir: &Path,
    ctx: &ReportContext,
    results: &results::SafetyResults,
    outcomes: &[metis_safety::run::Outcome],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("report.md", report::markdown(ctx, results))?;
    write("report.csv", report::csv(results))?;
    write("report.json", report::json(ctx, results))?;
    report::chart(results, &dir.join("report.png"))?;
    report::chart(results, &dir.join("report.svg"))?;
    let samples = dir.join("samples.jsonl");
    let f = std::fs::File::create(&samples)
        .with_context(|| format!("creating {}", samples.display()))?;
    report::write_samples(outcomes, std::io::BufWriter::new(f))?;
    eprintln!(
        "wrote report.{{md,csv,json,png,svg}} and samples.jsonl to {}",
        dir.display()
    );
    Ok(())
}
