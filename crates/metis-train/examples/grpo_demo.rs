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

use std::path::PathBuf;

use metis_plot::{line_chart, Curve, LinePanel};
use metis_train::demo::{build, DemoConfig};
use metis_train::grpo::trainer::{run_grpo, GrpoConfig};
use metis_train::sft::{run_sft, SftConfig};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let data_dir = arg(&args, "--data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    let out = arg(&args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("metis-grpo-demo"));
    let seeds: Vec<u64> = arg(&args, "--seeds")
        .unwrap_or_else(|| "0,1,2".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let sft_steps: u64 = arg(&args, "--sft-steps").map_or(Ok(600), |s| s.parse())?;
    let grpo_steps: u64 = arg(&args, "--grpo-steps").map_or(Ok(80), |s| s.parse())?;
    let grpo_lr: f64 = arg(&args, "--grpo-lr").map_or(Ok(2e-4), |s| s.parse())?;
    let sft_lr: f64 = arg(&args, "--sft-lr").map_or(Ok(3e-3), |s| s.parse())?;
    // Seeds that get a run with the format penalty (default: all), and seeds that get one
    // without it.
    let seed_list = |name: &str| -> Result<Option<Vec<u64>>, std::num::ParseIntError> {
        arg(&args, name)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect()
            })
            .transpose()
    };
    let penalty_seeds = seed_list("--penalty-seeds")?.unwrap_or_else(|| seeds.clone());
    let no_penalty = seed_list("--no-penalty-seeds")?.unwrap_or_default();
    // Suffix of the GRPO run directories, to keep several GRPO settings beside one SFT.
    let tag = arg(&args, "--tag")
        .map(|t| format!("-{t}"))
        .unwrap_or_default();
    let eval_every: u64 = arg(&args, "--eval-every").map_or(Ok(10), |s| s.parse())?;
    let prompts_per_step: usize = arg(&args, "--prompts-per-step").map_or(Ok(16), |s| s.parse())?;

    let demo = build(&DemoConfig::new(data_dir, out.join("task")))?;
    println!(
        "task: {} training vectors, {} held out",
        demo.train_examples, demo.heldout_examples
    );
    let mut summary = Vec::new();
    let mut curves = Vec::new();
    let mut sampled_curves = Vec::new();
    let mut format_curves = Vec::new();
    for &seed in &seeds {
        let sft_out = out.join(format!("sft-seed{seed}"));
        let mut sft = SftConfig::new(&demo.model, &demo.sft, &sft_out);
        sft.max_steps = Some(sft_steps);
        sft.lr = sft_lr;
        sft.batch_size = 16;
        sft.max_len = 128;
        sft.seed = seed;
        sft.save_every = sft_steps;
        let sft_final = sft_out.join("final");
        // An SFT checkpoint from an earlier invocation (same settings) is reused.
        if !sft_final.join("model.safetensors").is_file() {
            run_sft(&sft, false)?;
        }
        let mut runs = Vec::new();
        if penalty_seeds.contains(&seed) {
            runs.push(("penalty", 1.0));
        }
        if no_penalty.contains(&seed) {
            runs.push(("no-penalty", 0.0));
        }
        for (name, penalty) in runs {
            let run_out = out.join(format!("grpo{tag}-{name}-seed{seed}"));
            let mut cfg = GrpoConfig::new(sft_final.clone(), demo.prompts.clone(), run_out);
            cfg.eval_prompts = Some(demo.heldout.clone());
            cfg.max_steps = grpo_steps;
            cfg.lr = grpo_lr;
            cfg.seed = seed;
            cfg.max_completion_len = 80;
            cfg.prompts_per_step = prompts_per_step;
            cfg.micro_batch = 80;
            cfg.eval_every = eval_every;
            cfg.save_every = grpo_steps;
            cfg.reward.format.penalty = penalty;
            // Resuming continues an interrupted run and returns a finished one as it is.
            let outcome = run_grpo(&cfg, true)?;
            let held: Vec<(f64, f64)> = outcome
                .history
                .iter()
                .filter_map(|m| m.heldout_accuracy.map(|a| (m.step as f64, a)))
                .collect();
            let sampled: Vec<(f64, f64)> = outcome
                .history
                .iter()
                .filter_map(|m| m.heldout_sampled_accuracy.map(|a| (m.step as f64, a)))
                .collect();
            let fmt: Vec<(f64, f64)> = outcome
                .history
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
            summary.push(serde_json::json!({
                "seed": seed, "run": name, "heldout_accuracy": held, "heldout_sampled_accuracy": sampled,
                "format_violation_rate": fmt,
            }));
            curves.push(Curve {
                name: format!("greedy, {name}, seed {seed}"),
                points: held,
            });
            sampled_curves.push(Curve {
                name: format!("sampled, {name}, seed {seed}"),
                points: sampled,
            });
            // Per-step rates over 80 rollouts are noisy: a 10-step trailing mean.
            let smoothed = fmt
                .iter()
                .enumerate()
                .map(|(i, &(step, _))| {
                    let window = &fmt[i.saturating_sub(9)..=i];
                    (
                        step,
                        window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64,
                    )
                })
                .collect();
            format_curves.push(Curve {
                name: format!("{name}, seed {seed}"),
                points: smoothed,
            });
        }
    }
    std::fs::write(
        out.join(format!("summary{tag}.json")),
        serde_json::to_string_pretty(&summary)?,
    )?;
    line_chart(
        &[
            LinePanel {
                title: "Held-out accuracy (greedy) during GRPO, from the SFT checkpoint".into(),
                y_label: "accuracy".into(),
                curves,
            },
            LinePanel {
                title: "Held-out accuracy (one sample at the rollout temperature)".into(),
                y_label: "accuracy".into(),
                curves: sampled_curves,
            },
            LinePanel {
                title: "Rollout format-violation rate (10-step trailing mean)".into(),
                y_label: "share of completions".into(),
                curves: format_curves,
            },
        ],
        "GRPO step",
        &out.join(format!("heldout{tag}.png")),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
