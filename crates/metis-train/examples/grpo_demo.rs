//! The learning run on the built-in CVSS-severity task: a tiny random-init Llama is SFT-ed on
//! reasoning traces, then GRPO-trained with verifier rewards, for several seeds, with and
//! without the format penalty; held-out accuracy is measured greedily before and during GRPO.
//!
//! ```text
//! cargo run --release -p metis-train --example grpo_demo -- \
//!     [--data-dir ../shared/data] [--out /tmp/metis-grpo-demo] [--seeds 0,1,2] \
//!     [--sft-steps 600] [--grpo-steps 80] [--grpo-lr 2e-4] [--prompts-per-step 16] \
//!     [--penalty-seeds 0,1,2] [--no-penalty-seeds 0] [--eval-every 10] [--tag NAME]
//!
//! An existing `sft-seedN/final` under `--out` is reused, so several GRPO settings (told apart
//! by `--tag`) can start from the same SFT checkpoints; GRPO runs resume, so a finished one is
//! read back instead of run again.
//! ```
//!
//! Writes per run `metrics.jsonl` and `curves.png`, and a summary `summary.json` +
//! `heldout.png` (held-out accuracy and rollout format violations vs GRPO step, one line per
//! run) under `--out`.

use std::path::{Path, PathBuf};

use metis_plot::{line_chart, Curve, LinePanel};
use metis_train::demo::{build, DemoConfig, DemoPaths};
use metis_train::grpo::trainer::{run_grpo, GrpoConfig, GrpoMetrics};
use metis_train::sft::{run_sft, SftConfig};

type Error = Box<dyn std::error::Error>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let opts = Options::parse(&args)?;
    let demo = build(&DemoConfig::new(
        opts.data_dir.clone(),
        opts.out.join("task"),
    ))?;
    println!(
        "task: {} training vectors, {} held out",
        demo.train_examples, demo.heldout_examples
    );
    let mut results = Results::default();
    for &seed in &opts.seeds {
        let sft_final = sft_checkpoint(&opts, &demo, seed)?;
        for (name, penalty) in opts.grpo_runs(seed) {
            let history = grpo_run(&opts, &demo, &sft_final, seed, name, penalty)?;
            results.add(seed, name, &history);
        }
    }
    results.write(&opts.out, &opts.tag)?;
    println!("wrote {}", opts.out.display());
    Ok(())
}

/// The command line, with its defaults.
struct Options {
    data_dir: PathBuf,
    out: PathBuf,
    seeds: Vec<u64>,
    sft_steps: u64,
    grpo_steps: u64,
    grpo_lr: f64,
    sft_lr: f64,
    /// Seeds that get a run with the format penalty (default: all).
    penalty_seeds: Vec<u64>,
    /// Seeds that get a run without it.
    no_penalty_seeds: Vec<u64>,
    /// Suffix of the GRPO run directories, to keep several GRPO settings beside one SFT.
    tag: String,
    eval_every: u64,
    prompts_per_step: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, Error> {
        let data_dir = arg(args, "--data-dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../shared/data"));
        let out = arg(args, "--out")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("metis-grpo-demo"));
        let seeds: Vec<u64> = arg(args, "--seeds")
            .unwrap_or_else(|| "0,1,2".into())
            .split(',')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        let sft_steps: u64 = arg(args, "--sft-steps").map_or(Ok(600), |s| s.parse())?;
        let grpo_steps: u64 = arg(args, "--grpo-steps").map_or(Ok(80), |s| s.parse())?;
        let grpo_lr: f64 = arg(args, "--grpo-lr").map_or(Ok(2e-4), |s| s.parse())?;
        let sft_lr: f64 = arg(args, "--sft-lr").map_or(Ok(3e-3), |s| s.parse())?;
        let seed_list = |name: &str| -> Result<Option<Vec<u64>>, std::num::ParseIntError> {
            arg(args, name)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::parse)
                        .collect()
                })
                .transpose()
        };
        let penalty_seeds = seed_list("--penalty-seeds")?.unwrap_or_else(|| seeds.clone());
        let no_penalty_seeds = seed_list("--no-penalty-seeds")?.unwrap_or_default();
        let tag = arg(args, "--tag")
            .map(|t| format!("-{t}"))
            .unwrap_or_default();
        let eval_every: u64 = arg(args, "--eval-every").map_or(Ok(10), |s| s.parse())?;
        let prompts_per_step: usize =
            arg(args, "--prompts-per-step").map_or(Ok(16), |s| s.parse())?;
        Ok(Self {
            data_dir,
            out,
            seeds,
            sft_steps,
            grpo_steps,
            grpo_lr,
            sft_lr,
            penalty_seeds,
            no_penalty_seeds,
            tag,
            eval_every,
            prompts_per_step,
        })
    }

    /// The GRPO runs of `seed`: their names and format penalties.
    fn grpo_runs(&self, seed: u64) -> Vec<(&'static str, f64)> {
        let mut runs = Vec::new();
        if self.penalty_seeds.contains(&seed) {
            runs.push(("penalty", 1.0));
        }
        if self.no_penalty_seeds.contains(&seed) {
            runs.push(("no-penalty", 0.0));
        }
        runs
    }
}

/// SFT-s the demo model for `seed`; returns the final checkpoint directory.
fn sft_checkpoint(opts: &Options, demo: &DemoPaths, seed: u64) -> Result<PathBuf, Error> {
    let sft_out = opts.out.join(format!("sft-seed{seed}"));
    let mut sft = SftConfig::new(&demo.model, &demo.sft, &sft_out);
    sft.max_steps = Some(opts.sft_steps);
    sft.lr = opts.sft_lr;
    sft.batch_size = 16;
    sft.max_len = 128;
    sft.seed = seed;
    sft.save_every = opts.sft_steps;
    let sft_final = sft_out.join("final");
    // An SFT checkpoint from an earlier invocation (same settings) is reused.
    if !sft_final.join("model.safetensors").is_file() {
        run_sft(&sft, false)?;
    }
    Ok(sft_final)
}

/// GRPO-trains from `sft_final`; returns the run's per-step metrics.
fn grpo_run(
    opts: &Options,
    demo: &DemoPaths,
    sft_final: &Path,
    seed: u64,
    name: &str,
    penalty: f64,
) -> Result<Vec<GrpoMetrics>, Error> {
    let run_out = opts.out.join(format!("grpo{}-{name}-seed{seed}", opts.tag));
    let mut cfg = GrpoConfig::new(sft_final.to_path_buf(), demo.prompts.clone(), run_out);
    cfg.eval_prompts = Some(demo.heldout.clone());
    cfg.max_steps = opts.grpo_steps;
    cfg.lr = opts.grpo_lr;
    cfg.seed = seed;
    cfg.max_completion_len = 80;
    cfg.prompts_per_step = opts.prompts_per_step;
    cfg.micro_batch = 80;
    cfg.eval_every = opts.eval_every;
    cfg.save_every = opts.grpo_steps;
    cfg.reward.format.penalty = penalty;
    // Resuming continues an interrupted run and returns a finished one as it is.
    Ok(run_grpo(&cfg, true)?.history)
}

/// What the runs yield for the summary and the held-out chart, run by run.
#[derive(Default)]
struct Results {
    summary: Vec<serde_json::Value>,
    greedy: Vec<Curve>,
    sampled: Vec<Curve>,
    format: Vec<Curve>,
}

impl Results {
    /// Prints a run's first and last values and adds its curves.
    fn add(&mut self, seed: u64, name: &str, history: &[GrpoMetrics]) {
        let held: Vec<(f64, f64)> = history
            .iter()
            .filter_map(|m| m.heldout_accuracy.map(|a| (m.step as f64, a)))
            .collect();
        let sampled: Vec<(f64, f64)> = history
            .iter()
            .filter_map(|m| m.heldout_sampled_accuracy.map(|a| (m.step as f64, a)))
            .collect();
        let fmt: Vec<(f64, f64)> = history
            .iter()
            .filter(|m| m.step > 0)
            .map(|m| (m.step as f64, m.format_penalty_rate))
            .collect();
        println!(
            "seed {seed} {name}: held-out accuracy greedy {:.3} -> {:.3}, sampled {:.3} -> {:.3}; rollout format-violation rate {:.3} -> {:.3}",
            held.first().map_or(f64::NAN, |x| x.1),
            held.last().map_or(f64::NAN, |x| x.1),
            sampled.first().map_or(f64::NAN, |x| x.1),
            sampled.last().map_or(f64::NAN, |x| x.1),
            fmt.first().map_or(f64::NAN, |x| x.1),
            fmt.last().map_or(f64::NAN, |x| x.1),
        );
        self.summary.push(serde_json::json!({
            "seed": seed, "run": name, "heldout_accuracy": held, "heldout_sampled_accuracy": sampled,
            "format_violation_rate": fmt,
        }));
        self.greedy.push(Curve {
            name: format!("greedy, {name}, seed {seed}"),
            points: held,
        });
        self.sampled.push(Curve {
            name: format!("sampled, {name}, seed {seed}"),
            points: sampled,
        });
        self.format.push(Curve {
            name: format!("{name}, seed {seed}"),
            points: trailing_mean(&fmt),
        });
    }

    /// Writes `summary{tag}.json` and `heldout{tag}.png` under `out`.
    fn write(self, out: &Path, tag: &str) -> Result<(), Error> {
        std::fs::write(
            out.join(format!("summary{tag}.json")),
            serde_json::to_string_pretty(&self.summary)?,
        )?;
        line_chart(
            &[
                LinePanel {
                    title: "Held-out accuracy (greedy) during GRPO, from the SFT checkpoint".into(),
                    y_label: "accuracy".into(),
                    curves: self.greedy,
                },
                LinePanel {
                    title: "Held-out accuracy (one sample at the rollout temperature)".into(),
                    y_label: "accuracy".into(),
                    curves: self.sampled,
                },
                LinePanel {
                    title: "Rollout format-violation rate (10-step trailing mean)".into(),
                    y_label: "share of completions".into(),
                    curves: self.format,
                },
            ],
            "GRPO step",
            &out.join(format!("heldout{tag}.png")),
        )?;
        Ok(())
    }
}

/// Per-step rates over 80 rollouts are noisy: a 10-step trailing mean.
fn trailing_mean(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .enumerate()
        .map(|(i, &(step, _))| {
            let window = &points[i.saturating_sub(9)..=i];
            (
                step,
                window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64,
            )
        })
        .collect()
}
