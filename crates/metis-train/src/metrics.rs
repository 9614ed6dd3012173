//! Training metrics: an append-only `metrics.jsonl` (one JSON object per optimizer step,
//! flushed per line, truncated back to the resumed step on resume), loss / learning-rate
//! curves (PNG via [`metis_plot::line_chart`]) and a progress bar that is hidden when
//! stderr is not a terminal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metis_plot::{line_chart, Curve, LinePanel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One line of a `metrics.jsonl`: a record that knows the optimizer step it belongs to.
pub trait StepRecord: Serialize + DeserializeOwned + Clone {
    /// The optimizer step (0 for a record taken before the first step).
    fn step(&self) -> u64;
}

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based optimizer step.
    pub step: u64,
    /// Fractional epoch reached at the end of the step (epochs done + fraction of this one).
    #[serde(deserialize_with = "f64_or_nan")]
    pub epoch: f64,
    /// Mean cross-entropy over the step's loss tokens.
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    /// Learning rate used for this step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Global gradient L2 norm before clipping.
    #[serde(deserialize_with = "f64_or_nan")]
    pub grad_norm: f64,
    /// Loss (assistant) tokens in the step.
    pub loss_tokens: u64,
    /// Non-padding tokens in the step.
    pub tokens: u64,
    /// Non-padding tokens per second of this step's wall time.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tokens_per_s: f64,
    /// Seconds since the start of training (carried across resumes).
    #[serde(deserialize_with = "f64_or_nan")]
    pub elapsed_s: f64,
}

/// Reads `null` back as NaN: serde_json writes a non-finite float (a diverged loss, the
/// step-0 line's unset reward) as `null`, and such a line must not stop a resume.
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl StepRecord for StepMetrics {
    fn step(&self) -> u64 {
        self.step
    }
}

/// Errors writing metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: invalid metrics line: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Chart(String),
}

/// Append-only writer of `metrics.jsonl` (SFT's [`StepMetrics`] by default; GRPO writes its
/// own records through the same writer).
#[derive(Debug)]
pub struct MetricsWriter<M = StepMetrics> {
    path: PathBuf,
    file: File,
    history: Vec<M>,
    keep_history: bool,
}

impl<M: StepRecord> MetricsWriter<M> {
    /// Open `path`. `resume_step = None` starts a new file (truncating any old one);
    /// `Some(s)` keeps the lines with `step <= s` and drops the rest (steps that ran after
    /// the checkpoint being resumed are replayed, so they must not be duplicated).
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self, MetricsError> {
        let io = |source| MetricsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut history = Vec::new();
        let mut kept = String::new();
        if let Some(s) = resume_step {
            if path.exists() {
                let reader = BufReader::new(File::open(path).map_err(io)?);
                for (i, line) in reader.lines().enumerate() {
                    let line = line.map_err(io)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let m: M = match serde_json::from_str(&line) {
                        Ok(m) => m,
                        // A line cut short by a kill: everything after it is dropped too.
                        Err(_) if !line.ends_with('}') => break,
                        Err(e) => {
                            return Err(MetricsError::Parse {
                                path: path.to_path_buf(),
                                line: i + 1,
                                message: e.to_string(),
                            })
                        }
                    };
                    if m.step() > s {
                        break;
                    }
                    kept.push_str(&line);
                    kept.push('\n');
                    history.push(m);
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Rewrite the kept prefix via a temporary file, then append from there.
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, kept.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        let file = OpenOptions::new().append(true).open(path).map_err(io)?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            file,
            history,
            keep_history: true,
        })
    }

    /// Stop keeping written records in memory (a log of large records, such as rollouts,
    /// that is only ever read back from the file).
    pub fn without_history(mut self) -> Self {
        self.keep_history = false;
        self.history = Vec::new();
        self
    }

    /// Append one step (one line, flushed).
    pub fn write(&mut self, m: &M) -> Result<(), MetricsError> {
        let mut line = serde_json::to_string(m).expect("metrics serialize");
        line.push('\n');
        let io = |source| MetricsError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.flush().map_err(io)?;
        if self.keep_history {
            self.history.push(m.clone());
        }
        Ok(())
    }

    /// Every step written (including those kept from before a resume).
    pub fn history(&self) -> &[M] {
        &self.history
    }

    /// The history, once writing is over.
    pub fn into_history(self) -> Vec<M> {
        self.history
    }
}

impl MetricsWriter<StepMetrics> {
    /// Draw loss and learning rate vs step into `path` (PNG or SVG).
    pub fn plot(&self, path: &Path) -> Result<(), MetricsError> {
        plot_curves(&self.history, path)
    }
}

/// Loss (top) and learning rate (bottom) vs step.
pub fn plot_curves(history: &[StepMetrics], path: &Path) -> Result<(), MetricsError> {
    let curve = |name: &str, f: fn(&StepMetrics) -> f64| Curve {
        name: name.to_string(),
        points: history.iter().map(|m| (m.step as f64, f(m))).collect(),
    };
    let panels = [
        LinePanel {
            title: "Training loss".into(),
            y_label: "loss".into(),
            curves: vec![curve("loss", |m| m.loss)],
        },
        LinePanel {
            title: "Learning rate".into(),
            y_label: "lr".into(),
            curves: vec![curve("lr", |m| m.lr)],
        },
    ];
    line_chart(&panels, "step", path).map_err(|e| MetricsError::Chart(e.to_string()))
}

/// A step progress bar on stderr; hidden when stderr is not a terminal (pipes, tests).
pub fn progress_bar(total_steps: u64, start: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::hidden());
    if std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::stderr());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({eta}) {msg}",
        )
        .expect("valid template"),
    );
    pb.set_position(start);
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: u64) -> StepMetrics {
        StepMetrics {
            step,
            epoch: step as f64 / 10.0,
            loss: 2.0 / step as f64,
            lr: 1e-3,
            grad_norm: 1.0,
            loss_tokens: 3,
            tokens: 10,
            tokens_per_s: 100.0,
            elapsed_s: step as f64,
        }
    }

    #[test]
    fn non_finite_values_survive_a_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut w = MetricsWriter::open(&p, None).unwrap();
        let mut diverged = m(1);
        diverged.loss = f64::NAN;
        diverged.grad_norm = f64::INFINITY;
        w.write(&diverged).unwrap();
        w.write(&m(2)).unwrap();
        drop(w);
        let w = MetricsWriter::<StepMetrics>::open(&p, Some(2)).unwrap();
        assert_eq!(w.history().len(), 2);
        assert!(w.history()[0].loss.is_nan() && w.history()[0].grad_norm.is_nan());
        assert_eq!(w.history()[1], m(2));
    }

    #[test]
    fn resume_truncates_later_steps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut w = MetricsWriter::open(&p, None).unwrap();
        for s in 1..=5 {
            w.write(&m(s)).unwrap();
        }
        drop(w);
        let mut w = MetricsWriter::open(&p, Some(3)).unwrap();
        assert_eq!(w.history().len(), 3);
        w.write(&m(4)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 4);
        let steps: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<StepMetrics>(l).unwrap().step)
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        let png = dir.path().join("curves.png");
        w.plot(&png).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    }
}
