//! `metis demo`: the whole pipeline on the built-in task, in minutes on a laptop CPU.
//!
//! The built-in task (CVSS v3.1 severity, `metis_train::demo`) goes through every stage a
//! real model does, each a call into the library that owns it:
//!
//! | stage | library call | writes under `--out` |
//! |---|---|---|
//! | task | `metis_train::demo::build` | `task/` (random-init model, tokenizer, SFT data, GRPO and held-out prompts) |
//! | SFT | `metis_train::sft::run_sft` | `sft/` (checkpoints, `metrics.jsonl`, `curves.png`) |
//! | GRPO | `metis_train::grpo::trainer::run_grpo` | `grpo/` (same, with held-out accuracy during training) |
//! | evaluation | `metis_eval` (the harness behind `metis eval --prompts`): each model on the held-out prompts, greedy and sampled | `eval.sqlite` |
//! | report | `metis_eval::report`, `metis_eval::results::compare_models` | `report/` (`results.md/.csv/.json`, `chart.png`, `comparison.md`) |
//!
//! Every stage resumes: the task directory appears by an atomic rename, the trainers continue
//! from their last checkpoint (a finished run is read back, not rerun), and evaluation asks
//! only the answers missing from its store. Rerunning the same command after an interruption
//! picks up where it stopped.
//!
//! The defaults (the shape of the run) live in [`DemoRun::default`]; the flags override them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use metis_eval::benchmarks::prompt_file::load_prompt_file;
use metis_eval::benchmarks::Benchmark;
use metis_eval::local::LocalModel;
use metis_eval::report::{self, ResultRow};
use metis_eval::results::{self, RunKey};
use metis_eval::run::{self, Backend, RunConfig, Sampling};
use metis_eval::store::Store;
use metis_train::demo::{build_once, DemoConfig, DemoPaths};
use metis_train::grpo::trainer::{run_grpo, GrpoConfig};
use metis_train::sft::{run_sft, SftConfig};
use metis_verify::Protocol;

#[derive(clap::Args)]
pub struct Args {
    /// Data directory (the layout of `shared/data`; the task reads `cvss/cvss-test-vectors.tsv`).
    #[arg(long, env = "METIS_DATA_DIR", default_value = "../shared/data")]
    data_dir: PathBuf,
    /// Output directory; rerunning with the same one resumes.
    #[arg(long, default_value = "metis-demo")]
    out: PathBuf,
    /// SFT optimizer steps.
    #[arg(long, default_value_t = DemoRun::default().sft_steps)]
    sft_steps: u64,
    /// GRPO steps.
    #[arg(long, default_value_t = DemoRun::default().grpo_steps)]
    grpo_steps: u64,
    /// Seed of the task split, the initial model and both trainers.
    #[arg(long, default_value_t = DemoRun::default().seed)]
    seed: u64,
    /// Sampled trials per held-out prompt at temperature 1 (greedy is one more).
    #[arg(long, default_value_t = DemoRun::default().sampled_trials)]
    sampled_trials: u32,
    /// Evaluate only the first N held-out prompts (smoke runs).
    #[arg(long)]
    heldout_limit: Option<usize>,
}

/// The shape of a demo run.
#[derive(Debug, Clone)]
pub struct DemoRun {
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub seed: u64,
    pub sft_steps: u64,
    pub sft_lr: f64,
    pub grpo_steps: u64,
    pub grpo_lr: f64,
    /// Held-out accuracy is measured every this many GRPO steps.
    pub grpo_eval_every: u64,
    pub sampled_trials: u32,
    /// Only the first N held-out prompts are evaluated (all when `None`).
    pub heldout_limit: Option<usize>,
    /// Tokens per held-out answer (the task's answers take about 50).
    pub max_tokens: u32,
}

impl Default for DemoRun {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("../shared/data"),
            out: PathBuf::from("metis-demo"),
            seed: 0,
            sft_steps: 400,
            sft_lr: 3e-3,
            grpo_steps: 30,
            grpo_lr: 2e-4,
            grpo_eval_every: 10,
            sampled_trials: 2,
            heldout_limit: None,
            max_tokens: 96,
        }
    }
}

impl DemoRun {
    /// The evaluation's answer store.
    fn store_path(&self) -> PathBuf {
        self.out.join("eval.sqlite")
    }
}

/// The held-out benchmarks: greedy, and sampled at the rollout temperature.
const GREEDY: &str = "heldout-greedy";
const SAMPLED: &str = "heldout-t1";

pub fn run(args: Args) -> anyhow::Result<()> {
    let demo = DemoRun {
        data_dir: args.data_dir,
        out: args.out,
        seed: args.seed,
        sft_steps: args.sft_steps,
        grpo_steps: args.grpo_steps,
        sampled_trials: args.sampled_trials.max(1),
        heldout_limit: args.heldout_limit,
        ..DemoRun::default()
    };
    let started = Instant::now();
    let task = stage("1/5 task", || build_task(&demo))?;
    let sft = stage("2/5 SFT", || train_sft(&demo, &task))?;
    let grpo = stage("3/5 GRPO", || train_grpo(&demo, &task, &sft))?;
    let models = [("init", task.model.clone()), ("sft", sft), ("grpo", grpo)];
    let runs = held_out_runs(&demo, &task)?;
    let rows = stage("4/5 held-out evaluation", || {
        evaluate(&demo, &runs, &models)
    })?;
    stage("5/5 report", || write_report(&demo, &runs, &rows))?;
    eprintln!(
        "done in {:.0} s; the report is {}",
        started.elapsed().as_secs_f64(),
        demo.out.join("report").display()
    );
    Ok(())
}

fn stage<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("== {name}");
    let t = Instant::now();
    let out = f().with_context(|| format!("demo stage {name}"))?;
    eprintln!("   ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(out)
}

/// The task directory, written once (see `metis_train::demo::build_once`).
fn build_task(demo: &DemoRun) -> anyhow::Result<DemoPaths> {
    let dir = demo.out.join("task");
    let task = build_once(&DemoConfig {
        seed: demo.seed,
        ..DemoConfig::new(demo.data_dir.clone(), dir.clone())
    })?;
    eprintln!(
        "   {} training / {} held-out vectors in {}",
        task.train_examples,
        task.heldout_examples,
        dir.display()
    );
    Ok(task)
}

/// Stage 1: SFT on the reasoning traces, from the random init. Returns the final checkpoint.
fn train_sft(demo: &DemoRun, task: &DemoPaths) -> anyhow::Result<PathBuf> {
    let out = demo.out.join("sft");
    let final_dir = out.join("final");
    if final_dir.join("model.safetensors").is_file() {
        eprintln!("   finished earlier: {}", final_dir.display());
        return Ok(final_dir);
    }
    let mut cfg = SftConfig::new(&task.model, &task.sft, &out);
    cfg.max_steps = Some(demo.sft_steps);
    cfg.lr = demo.sft_lr;
    cfg.batch_size = 16;
    cfg.max_len = 128;
    cfg.seed = demo.seed;
    cfg.save_every = (demo.sft_steps / 4).max(1);
    let summary = run_sft(&cfg, true)?;
    eprintln!(
        "   loss {:.3} -> {:.3} over {} steps",
        summary.first_loss, summary.last_loss, summary.steps
    );
    summary
        .final_dir
        .context("SFT stopped before its last step")
}

/// Stage 2: GRPO with the MCQ verifier's reward, from the SFT checkpoint.
fn train_grpo(demo: &DemoRun, task: &DemoPaths, sft: &Path) -> anyhow::Result<PathBuf> {
    let mut cfg = GrpoConfig::new(sft.to_owned(), task.prompts.clone(), demo.out.join("grpo"));
    cfg.eval_prompts = Some(task.heldout.clone());
    cfg.data_dir = Some(demo.data_dir.clone());
    cfg.max_steps = demo.grpo_steps;
    cfg.lr = demo.grpo_lr;
    cfg.seed = demo.seed;
    cfg.max_completion_len = 80;
    cfg.prompts_per_step = 16;
    cfg.micro_batch = 80;
    cfg.eval_every = demo.grpo_eval_every;
    cfg.save_every = (demo.grpo_steps / 3).max(1);
    let outcome = run_grpo(&cfg, true)?;
    let held: Vec<f64> = outcome
        .history
        .iter()
        .filter_map(|m| m.heldout_accuracy)
        .collect();
    if let (Some(first), Some(last)) = (held.first(), held.last()) {
        eprintln!(
            "   held-out accuracy (greedy) during GRPO {first:.3} -> {last:.3} over {} steps",
            outcome.steps
        );
    }
    outcome
        .final_dir
        .context("GRPO stopped before its last step")
}

/// Stage 3: every model on the held-out prompts through the evaluation harness (the store
/// keeps each answer, so a rerun asks only what is missing).
fn evaluate(
    demo: &DemoRun,
    runs: &[HeldOutRun],
    models: &[(&str, PathBuf)],
) -> anyhow::Result<Vec<ResultRow>> {
    let store_path = demo.store_path();
    let mut store = Store::open(&store_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stop = rt.block_on(async { super::stop_on_ctrl_c() });
    let mut rows = Vec::new();
    for (name, dir) in models {
        let local = LocalModel::load(dir, None, &Device::Cpu, None, false, 64)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        let backend = Backend::Local(local);
        for HeldOutRun { bench, key, trials } in runs {
            let config = RunConfig {
                benchmarks: vec![bench.id().to_owned()],
                model: (*name).to_owned(),
                sampling: key.sampling.clone(),
                trials: *trials,
                system_prompt: None,
                concurrency: 64,
                protocol: Protocol::LastLine,
                data: metis_eval::benchmarks::DataSource::Dir(demo.data_dir.clone()),
                store: store_path.clone(),
                limit: None,
                progress: true,
            };
            let q = rt.block_on(run::query(
                &config,
                std::slice::from_ref(bench),
                &backend,
                stop.clone(),
            ))?;
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("interrupted: rerun the same command to resume");
            }
            let row = results::grade_stored(&store, bench, name, *trials, key)?;
            results::record_result(
                &mut store,
                bench,
                key,
                *trials,
                Protocol::LastLine,
                &row,
                None,
            )?;
            eprintln!(
                "   {name} on {}: accuracy {:.3} ({} new answers, {} reused, {} failed)",
                bench.id(),
                row.metrics
                    .get(&row.primary_metric)
                    .map_or(f64::NAN, |s| s.mean),
                q.answered,
                q.reused,
                q.failed
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One evaluation of the held-out prompts: as a benchmark, under a run key, for some trials.
struct HeldOutRun {
    bench: Benchmark,
    key: RunKey,
    trials: u32,
}

/// The held-out prompt file as two benchmarks: greedy (one trial) and at temperature 1.
fn held_out_runs(demo: &DemoRun, task: &DemoPaths) -> anyhow::Result<Vec<HeldOutRun>> {
    let load = |id: &str| -> anyhow::Result<Benchmark> {
        let mut b = load_prompt_file(id, &task.heldout, Some(&demo.data_dir), Protocol::LastLine)?;
        if let Some(n) = demo.heldout_limit {
            b.items.truncate(n);
        }
        Ok(b)
    };
    let key = |temperature: f64| RunKey {
        system_prompt: None,
        sampling: Sampling {
            temperature,
            top_p: 1.0,
            max_tokens: demo.max_tokens,
            seed: demo.seed,
        },
    };
    Ok(vec![
        HeldOutRun {
            bench: load(GREEDY)?,
            key: key(0.0),
            trials: 1,
        },
        HeldOutRun {
            bench: load(SAMPLED)?,
            key: key(1.0),
            trials: demo.sampled_trials,
        },
    ])
}

/// Stage 4: the results table and chart, the paired GRPO − SFT comparison, and where the
/// training curves are.
fn write_report(demo: &DemoRun, runs: &[HeldOutRun], rows: &[ResultRow]) -> anyhow::Result<()> {
    let dir = demo.out.join("report");
    super::eval::write_reports(rows, &dir)?;
    let store = Store::open(&demo.store_path())?;
    let mut comparison = String::from("# Paired differences on the held-out prompts\n\n");
    for HeldOutRun { bench, .. } in runs {
        for (a, b) in [("grpo", "sft"), ("sft", "init")] {
            if let Some(d) = results::compare_models(&store, bench, a, b)? {
                comparison.push_str(&format!(
                    "- {}\n",
                    results::describe_diff(bench.id(), a, b, &d)
                ));
            }
        }
    }
    comparison.push_str(&format!(
        "\nTraining curves: {} (SFT), {} (GRPO, with held-out accuracy during training).\n",
        demo.out.join("sft").join("curves.png").display(),
        demo.out.join("grpo").join("curves.png").display()
    ));
    std::fs::write(dir.join("comparison.md"), &comparison)
        .with_context(|| format!("writing {}", dir.join("comparison.md").display()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", report::markdown(rows))?;
    writeln!(stdout, "{comparison}")?;
    Ok(())
}
