//! What a GRPO run logs: one `metrics.jsonl` line per step ([`GrpoMetrics`], with per-task
//! metrics), the optional `rollouts.jsonl` audit trail ([`StepRollouts`]) and the curves
//! ([`plot_grpo`]).

use std::collections::BTreeMap;
use std::path::Path;

use metis_plot::{line_chart, Curve, LinePanel};
use metis_verify::Task;
use serde::{Deserialize, Serialize};

use super::reward::{RewardBreakdown, RewardSummary};
use super::rollout::Rollout;
use super::update::UpdateOutcome;
use crate::metrics::{f64_or_nan, StepRecord};
use crate::model::{Result, TrainError};

/// One step's rollouts (`rollouts.jsonl`, with `--log-rollouts`): every completion with its
/// prompt, task and reward breakdown, so a run can be audited — what the policy wrote and
/// why it was rewarded so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRollouts {
    pub step: u64,
    pub rollouts: Vec<RolloutLog>,
}

/// One logged completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutLog {
    pub prompt_id: String,
    pub task: Task,
    pub completion: String,
    pub reward: RewardBreakdown,
}

impl StepRecord for StepRollouts {
    fn step(&self) -> u64 {
        self.step
    }
}

/// One task's share of a GRPO step: how the completions of that task's prompts were rewarded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStepMetrics {
    /// Completions of the task in the step.
    pub n: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_mean: f64,
    /// Population standard deviation of the task's rewards.
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub reward_std: f64,
    /// Mean verifier part (binary correctness or graded score) before the format penalty.
    #[serde(deserialize_with = "f64_or_nan")]
    pub verifier_mean: f64,
    /// Share graded correct by the task's verifier.
    #[serde(deserialize_with = "f64_or_nan")]
    pub accuracy: f64,
    /// Share with a format violation (penalised).
    #[serde(deserialize_with = "f64_or_nan")]
    pub format_penalty_rate: f64,
}

/// Per-task metrics of a step, from each completion's task and reward breakdown.
pub fn task_step_metrics<'a>(
    rewards: impl IntoIterator<Item = (Task, &'a RewardBreakdown)>,
) -> BTreeMap<String, TaskStepMetrics> {
    let mut groups: BTreeMap<String, Vec<&RewardBreakdown>> = BTreeMap::new();
    for (task, r) in rewards {
        groups.entry(task.name().to_owned()).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(task, rs)| {
            let n = rs.len() as f64;
            let mean =
                |f: &dyn Fn(&RewardBreakdown) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
            let totals: Vec<f64> = rs.iter().map(|r| r.total).collect();
            let (reward_mean, reward_std) = mean_std(&totals);
            let m = TaskStepMetrics {
                n: rs.len(),
                reward_mean,
                reward_std,
                verifier_mean: mean(&|r| r.verifier),
                accuracy: mean(&|r| f64::from(u8::from(r.correct))),
                format_penalty_rate: mean(&|r| f64::from(u8::from(r.format_violation))),
            };
            (task, m)
        })
        .collect()
}

/// One line of `metrics.jsonl`. Every float reads `null` (a non-finite value) back as NaN.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrpoMetrics {
    pub step: u64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub grad_norm: f64,
    /// NaN (written as null) on the step-0 line, which only holds the starting evaluation.
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_mean: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_std: f64,
    /// Mean verifier part of the reward (before the penalty).
    #[serde(deserialize_with = "f64_or_nan")]
    pub verifier_mean: f64,
    /// Mean format penalty.
    #[serde(deserialize_with = "f64_or_nan")]
    pub format_penalty_mean: f64,
    /// Share of completions with a format violation.
    #[serde(deserialize_with = "f64_or_nan")]
    pub format_penalty_rate: f64,
    /// Share of completions graded correct.
    #[serde(deserialize_with = "f64_or_nan")]
    pub accuracy: f64,
    pub reward_by_task: BTreeMap<String, (f64, f64)>,
    /// Per task of the mixture: reward, verifier part, accuracy and format-penalty rate of
    /// this step's completions (absent from lines written before it existed).
    #[serde(default)]
    pub task_metrics: BTreeMap<String, TaskStepMetrics>,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kl: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub clip_frac: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub completion_len_mean: f64,
    /// Share of completions cut by the length limit.
    #[serde(deserialize_with = "f64_or_nan")]
    pub truncated_rate: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub frac_reward_zero_std: f64,
    pub reward_timeouts: usize,
    /// Mean |sampler log-probability − policy log-probability| over the completion tokens:
    /// float noise when the sampler serves the policy being trained; more when a server
    /// serves another model (an adapter that did not load) or reports log-probabilities of
    /// other logits (vLLM without `--logprobs-mode processed_logprobs`, at temperature ≠ 1).
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub rollout_logprob_gap: f64,
    /// Training tokens (prompt + completion) per second of the whole step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tokens_per_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub generation_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub step_s: f64,
    /// Held-out accuracy (greedy), on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heldout_accuracy: Option<f64>,
    /// Held-out accuracy with one completion per prompt sampled at the rollout temperature.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heldout_sampled_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heldout_format_violation_rate: Option<f64>,
}

impl StepRecord for GrpoMetrics {
    fn step(&self) -> u64 {
        self.step
    }
}

/// Mean and population std (divided by n, as logged per step; the advantages use Bessel's).
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Every task that appears in a run's per-task metrics.
fn task_names(history: &[GrpoMetrics]) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> =
        history.iter().flat_map(|m| m.task_metrics.keys()).collect();
    names.into_iter().cloned().collect()
}

/// Curves of a run: reward and held-out accuracy, format-violation rate, accuracy by task, KL,
/// completion length.
pub fn plot_grpo(history: &[GrpoMetrics], path: &Path) -> Result<()> {
    let series = |name: &str, f: &dyn Fn(&GrpoMetrics) -> Option<f64>| Curve {
        name: name.to_string(),
        points: history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.step as f64, v)))
            .filter(|(_, v)| v.is_finite())
            .collect(),
    };
    let panels = vec![
        LinePanel {
            title: "Reward and accuracy".into(),
            y_label: "value".into(),
            curves: vec![
                series("reward mean", &|m| Some(m.reward_mean)),
                series("rollout accuracy", &|m| Some(m.accuracy)),
                series("held-out accuracy (greedy)", &|m| m.heldout_accuracy),
                series("held-out accuracy (sampled)", &|m| {
                    m.heldout_sampled_accuracy
                }),
            ],
        },
        LinePanel {
            title: "Format violations".into(),
            y_label: "share".into(),
            curves: vec![series("format-violation rate", &|m| {
                Some(m.format_penalty_rate)
            })],
        },
        LinePanel {
            title: "Rollout accuracy by task".into(),
            y_label: "accuracy".into(),
            curves: task_names(history)
                .iter()
                .map(|t| series(t, &|m| m.task_metrics.get(t).map(|x| x.accuracy)))
                .collect(),
        },
        LinePanel {
            title: "KL to the reference (k3)".into(),
            y_label: "KL".into(),
            curves: vec![series("kl", &|m| Some(m.kl))],
        },
        LinePanel {
            title: "Completion length".into(),
            y_label: "tokens".into(),
            curves: vec![series("mean completion length", &|m| {
                Some(m.completion_len_mean)
            })],
        },
    ];
    line_chart(&panels, "step", path)
        .map_err(|e| TrainError::InvalidArgument(format!("{}: {e}", path.display())))
}

/// Everything a step's metrics line is computed from.
pub(super) struct StepFacts<'a> {
    /// Steps done, this one included.
    pub step: u64,
    pub lr: f64,
    pub rollouts: &'a [Rollout],
    /// The task of each rollout's prompt.
    pub tasks: &'a [Task],
    pub rewards: &'a RewardSummary,
    pub frac_reward_zero_std: f64,
    pub update: &'a UpdateOutcome,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    pub generation_s: f64,
    pub step_s: f64,
}

impl GrpoMetrics {
    /// A step's line, without the held-out fields (set on evaluation steps).
    pub(super) fn of_step(f: &StepFacts<'_>) -> GrpoMetrics {
        let rewards = &f.rewards.rewards;
        let n = rewards.len() as f64;
        let mean = |x: &dyn Fn(&RewardBreakdown) -> f64| rewards.iter().map(x).sum::<f64>() / n;
        let share = |p: &dyn Fn(&RewardBreakdown) -> bool| {
            rewards.iter().filter(|r| p(r)).count() as f64 / n
        };
        let (reward_mean, reward_std) = mean_std(&f.rewards.totals());
        let task_metrics = task_step_metrics(f.tasks.iter().copied().zip(rewards));
        let completion_tokens: usize = f.rollouts.iter().map(|r| r.ids.len()).sum();
        GrpoMetrics {
            step: f.step,
            loss: f.update.loss,
            lr: f.lr,
            grad_norm: f.grad_norm,
            reward_mean,
            reward_std,
            verifier_mean: mean(&|r| r.verifier),
            format_penalty_mean: mean(&|r| r.format_penalty),
            format_penalty_rate: share(&|r| r.format_violation),
            accuracy: share(&|r| r.correct),
            reward_by_task: task_metrics
                .iter()
                .map(|(k, m)| (k.clone(), (m.reward_mean, m.reward_std)))
                .collect(),
            task_metrics,
            kl: f.update.kl,
            clip_frac: f.update.clip_frac,
            completion_len_mean: completion_tokens as f64 / n,
            truncated_rate: f.rollouts.iter().filter(|r| r.truncated).count() as f64 / n,
            frac_reward_zero_std: f.frac_reward_zero_std,
            reward_timeouts: f.rewards.timed_out,
            rollout_logprob_gap: f.update.logprob_gap,
            tokens_per_s: f.update.train_tokens as f64 / f.step_s,
            generation_s: f.generation_s,
            step_s: f.step_s,
            heldout_accuracy: None,
            heldout_sampled_accuracy: None,
            heldout_format_violation_rate: None,
        }
    }

    /// The progress bar's message for this line.
    pub(super) fn progress_message(&self) -> String {
        format!(
            "reward {:.3} acc {:.2}{}",
            self.reward_mean,
            self.accuracy,
            self.heldout_accuracy
                .map(|a| format!(" held-out {a:.3}"))
                .unwrap_or_default()
        )
    }
}

impl StepRollouts {
    /// The audit line of a step: each rollout with its prompt's id and task, and its reward.
    pub(super) fn of_step(
        step: u64,
        rollouts: &[Rollout],
        records: &[&super::prompts::PromptRecord],
        rewards: &[RewardBreakdown],
    ) -> StepRollouts {
        StepRollouts {
            step,
            rollouts: rollouts
                .iter()
                .zip(records)
                .zip(rewards)
                .map(|((r, record), reward)| RolloutLog {
                    prompt_id: record.id.clone(),
                    task: record.task,
                    completion: r.text.clone(),
                    reward: reward.clone(),
                })
                .collect(),
        }
    }
}
