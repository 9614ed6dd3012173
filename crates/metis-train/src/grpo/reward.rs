//! Rewards for GRPO: the verifier's grade of the answer plus the format penalty of
//! `metis_verify::format`, each reported separately.
//!
//! `total = verifier − format_penalty`, where `verifier` is the verdict's binary reward
//! (`correct`: 1/0) or its graded `score` in [0, 1] (per task, [`RewardKind`]), and
//! `format_penalty` is [`FormatReport::penalty`] (0 when well formed, the policy's penalty
//! otherwise).
//!
//! A batch is graded in parallel, every call on a worker thread with a deadline. A
//! pathological answer (a regex or parser that never finishes) must not stall a training step:
//! when a call passes its timeout the step gives up on it, its reward is 0 and it is marked
//! [`RewardBreakdown::timed_out`] (never silently). A call that panics is reported the same
//! way with [`RewardBreakdown::error`]. Because a Rust thread cannot be killed, a timed-out
//! call keeps its (detached) thread until it returns by itself; its result is then dropped.
//! [`RewardSummary::abandoned`] counts them so a run can log them. (A scoped thread pool would
//! have to join the stuck call before returning, which is exactly the stall to avoid.)

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use metis_verify::format::{check, FormatPolicy, FormatReport};
use metis_verify::{Gold, Verdict, Verifier};
use serde::{Deserialize, Serialize};

/// Which view of the verdict is the reward: the verifier spec's reward shape (one type for
/// the spec, the prompt file and the trainer).
pub use metis_verify::RewardShape as RewardKind;

/// How rewards are computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RewardConfig {
    /// The format check (its `penalty` is the size of the format penalty; 0 disables it).
    pub format: FormatPolicy,
    /// Longest time one verifier call may take.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// Calls graded at the same time.
    pub workers: usize,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            format: FormatPolicy::default(),
            timeout: Duration::from_secs(10),
            workers: 4,
        }
    }
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// One reward, by component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardBreakdown {
    /// The verifier's part: binary correctness or graded score (0 when timed out).
    pub verifier: f64,
    /// The format penalty subtracted (≥ 0).
    pub format_penalty: f64,
    /// `verifier − format_penalty` (0 when timed out or failed).
    pub total: f64,
    /// The format check found at least one violation.
    pub format_violation: bool,
    /// The verifier found no valid answer (or the call timed out or failed).
    pub invalid: bool,
    /// The verdict's correctness.
    pub correct: bool,
    /// The call passed its deadline and was abandoned.
    pub timed_out: bool,
    /// The call panicked (the panic message).
    pub error: Option<String>,
    /// The format violations, as text.
    pub format_reasons: Vec<String>,
}

impl RewardBreakdown {
    /// The breakdown of a call that gave no verdict.
    fn failed(timed_out: bool, error: Option<String>) -> Self {
        Self {
            verifier: 0.0,
            format_penalty: 0.0,
            total: 0.0,
            format_violation: false,
            invalid: true,
            correct: false,
            timed_out,
            error,
            format_reasons: Vec::new(),
        }
    }

    fn from_parts(verdict: &Verdict, format: &FormatReport, kind: RewardKind) -> Self {
        let verifier = match kind {
            RewardKind::Binary => verdict.binary_reward(),
            RewardKind::Graded => verdict.score,
        };
        Self {
            verifier,
            format_penalty: format.penalty,
            total: verifier - format.penalty,
            format_violation: !format.is_ok(),
            invalid: !verdict.is_valid(),
            correct: verdict.correct,
            timed_out: false,
            error: None,
            format_reasons: format.reasons(),
        }
    }
}

/// One completion to grade.
#[derive(Clone)]
pub struct RewardJob {
    pub verifier: Arc<dyn Verifier>,
    pub gold: Arc<Gold>,
    pub kind: RewardKind,
    /// The generated text only (not the prompt).
    pub completion: String,
}

impl std::fmt::Debug for RewardJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewardJob")
            .field("task", &self.verifier.task())
            .field("gold", &self.gold)
            .field("kind", &self.kind)
            .field("completion", &self.completion)
            .finish()
    }
}

/// The reward of one completion, on the calling thread (no timeout).
///
/// When the format policy says the template pre-fills the opening delimiter, the verifier sees
/// the completion with that delimiter put back, so the reasoning is split as the model wrote it.
pub fn compute_reward(job: &RewardJob, format: &FormatPolicy) -> RewardBreakdown {
    let (verdict, report) = grade(job, format);
    RewardBreakdown::from_parts(&verdict, &report, job.kind)
}

fn grade(job: &RewardJob, format: &FormatPolicy) -> (Verdict, FormatReport) {
    let report = check(&job.completion, format);
    let verdict = if format.prefilled_open {
        let full = format!("{}{}", format.delimiters.open, job.completion);
        job.verifier.verify(&full, &job.gold)
    } else {
        job.verifier.verify(&job.completion, &job.gold)
    };
    (verdict, report)
}

/// The rewards of a batch and how the grading went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSummary {
    /// One per job, in job order.
    pub rewards: Vec<RewardBreakdown>,
    /// Calls abandoned at their deadline.
    pub timed_out: usize,
    /// Calls that panicked.
    pub failed: usize,
    /// Abandoned calls (of this and earlier batches) still running in the background.
    pub abandoned: usize,
    /// Wall time of the whole batch.
    #[serde(with = "duration_secs")]
    pub elapsed: Duration,
}

impl RewardSummary {
    /// The totals, the values the advantages are computed from.
    pub fn totals(&self) -> Vec<f64> {
        self.rewards.iter().map(|r| r.total).collect()
    }
}

/// Abandoned calls still running, process-wide.
static ABANDONED_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// States of one call, shared by the batch and the worker thread.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

type Outcome = Result<(Verdict, FormatReport), String>;

/// Rewards of a batch, graded `cfg.workers` at a time, each call on its own worker thread and
/// abandoned after `cfg.timeout`. Returns when every call has finished or been abandoned, so
/// a batch takes at most about `ceil(n / workers) × timeout`.
pub fn compute_rewards(jobs: &[RewardJob], cfg: &RewardConfig) -> RewardSummary {
    let start = Instant::now();
    let workers = cfg.workers.max(1);
    let format = Arc::new(cfg.format.clone());
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    let mut results: Vec<Option<RewardBreakdown>> = vec![None; jobs.len()];
    let mut in_flight: HashMap<usize, (Instant, Arc<AtomicU8>)> = HashMap::new();
    let (mut next, mut timed_out, mut failed) = (0usize, 0usize, 0usize);

    loop {
        while in_flight.len() < workers && next < jobs.len() {
            let idx = next;
            next += 1;
            let job = jobs[idx].clone();
            let format = Arc::clone(&format);
            let tx = tx.clone();
            let state = Arc::new(AtomicU8::new(RUNNING));
            let flag = Arc::clone(&state);
            let spawned = thread::Builder::new()
                .name(format!("reward-{idx}"))
                .spawn(move || {
                    let out = catch_unwind(AssertUnwindSafe(|| grade(&job, &format)))
                        .map_err(|p| panic_message(&*p));
                    let done =
                        flag.compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst);
                    if done.is_err() {
                        // Abandoned at its deadline: no longer running in the background.
                        ABANDONED_RUNNING.fetch_sub(1, Ordering::SeqCst);
                    }
                    // The receiver is gone when the batch already returned: nothing to do.
                    let _ = tx.send((idx, out));
                });
            match spawned {
                Ok(_) => {
                    let now = Instant::now();
                    // A timeout too large to add means "no timeout" (a year).
                    let deadline = now
                        .checked_add(cfg.timeout)
                        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
                    in_flight.insert(idx, (deadline, state));
                }
                Err(e) => {
                    failed += 1;
                    results[idx] = Some(RewardBreakdown::failed(
                        false,
                        Some(format!("cannot start a reward thread: {e}")),
                    ));
                }
            }
        }
        if in_flight.is_empty() {
            break;
        }
        let deadline = in_flight
            .values()
            .map(|(d, _)| *d)
            .min()
            .expect("in_flight is not empty");
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((idx, out)) => {
                if in_flight.remove(&idx).is_some() {
                    results[idx] = Some(match out {
                        Ok((verdict, report)) => {
                            RewardBreakdown::from_parts(&verdict, &report, jobs[idx].kind)
                        }
                        Err(msg) => {
                            failed += 1;
                            RewardBreakdown::failed(false, Some(msg))
                        }
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let expired: Vec<usize> = in_flight
                    .iter()
                    .filter(|(_, (d, _))| *d <= now)
                    .map(|(i, _)| *i)
                    .collect();
                for idx in expired {
                    let state = &in_flight[&idx].1;
                    ABANDONED_RUNNING.fetch_add(1, Ordering::SeqCst);
                    let abandon = state.compare_exchange(
                        RUNNING,
                        ABANDONED,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    if abandon.is_ok() {
                        in_flight.remove(&idx);
                        timed_out += 1;
                        results[idx] = Some(RewardBreakdown::failed(true, None));
                    } else {
                        // It finished just now: its result is on its way.
                        ABANDONED_RUNNING.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                unreachable!("the batch holds a sender")
            }
        }
    }
    RewardSummary {
        rewards: results
            .into_iter()
            .map(|r| r.expect("every job is graded, failed or abandoned"))
            .collect(),
        timed_out,
        failed,
        abandoned: ABANDONED_RUNNING.load(Ordering::SeqCst),
        elapsed: start.elapsed(),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("verifier panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("verifier panicked: {s}")
    } else {
        "verifier panicked".to_owned()
    }
}
