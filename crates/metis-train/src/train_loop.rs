//! The loop both trainers run: optimizer steps from the resume point to the end, a progress
//! bar, a checkpoint every `save_every` steps and after the last one, and the test hook that
//! stops a run as if it were killed.
//!
//! A trainer supplies what differs — how one step is taken and logged, what a checkpoint
//! holds — as a [`StepLoop`]; [`run_steps`] owns the order of events, so SFT and GRPO
//! checkpoint, stop and report progress by the same rules.

use indicatif::ProgressBar;

/// One trainer's part of [`run_steps`].
pub(crate) trait StepLoop {
    type Error;
    /// Take optimizer step `step` (0-based; `step + 1` steps are done after it) and log its
    /// metrics. Returns the progress bar's message for it.
    fn step(&mut self, step: u64) -> Result<String, Self::Error>;
    /// Write the checkpoint of the first `done` steps.
    fn checkpoint(&mut self, done: u64) -> Result<(), Self::Error>;
}

/// Which steps a run takes and when it checkpoints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Steps {
    /// Steps already done (the resume point; 0 for a fresh run).
    pub start: u64,
    /// Steps of the whole run.
    pub total: u64,
    /// Checkpoint every this many steps (0: only after the last one).
    pub save_every: u64,
    /// Test hook: stop after this many steps of this invocation, as if killed, unless the
    /// run ends first.
    pub stop_after: Option<u64>,
}

impl Steps {
    /// Whether the checkpoint of `done` steps is written: on multiples of `save_every` and
    /// after the last step.
    pub fn saves_at(&self, done: u64) -> bool {
        done == self.total || (self.save_every > 0 && done.is_multiple_of(self.save_every))
    }
}

/// How [`run_steps`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopEnd {
    /// Every step of the run is done (also when a resumed run had nothing left to do).
    Finished,
    /// Stopped early by [`Steps::stop_after`].
    Stopped,
}

/// Take steps `steps.start .. steps.total` with `trainer`, checkpointing as [`Steps::saves_at`]
/// says, and advance `bar` (which the caller made, so it can print above it first).
pub(crate) fn run_steps<L: StepLoop>(
    trainer: &mut L,
    steps: &Steps,
    bar: &ProgressBar,
) -> Result<LoopEnd, L::Error> {
    for (ran, step) in (steps.start..steps.total).enumerate() {
        if steps.stop_after == Some(ran as u64) {
            bar.abandon();
            return Ok(LoopEnd::Stopped);
        }
        let message = trainer.step(step)?;
        let done = step + 1;
        bar.set_position(done);
        bar.set_message(message);
        if steps.saves_at(done) {
            trainer.checkpoint(done)?;
        }
    }
    bar.finish_and_clear();
    Ok(LoopEnd::Finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls it gets; fails at one step if asked to.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail_at: Option<u64>,
    }

    impl StepLoop for Recorder {
        type Error = String;
        fn step(&mut self, step: u64) -> Result<String, String> {
            if self.fail_at == Some(step) {
                return Err(format!("step {step} failed"));
            }
            self.calls.push(format!("step {step}"));
            Ok(String::new())
        }
        fn checkpoint(&mut self, done: u64) -> Result<(), String> {
            self.calls.push(format!("save {done}"));
            Ok(())
        }
    }

    fn run(steps: Steps) -> (Vec<String>, LoopEnd) {
        let mut r = Recorder::default();
        let end = run_steps(&mut r, &steps, &ProgressBar::hidden()).unwrap();
        (r.calls, end)
    }

    fn steps(start: u64, total: u64, save_every: u64, stop_after: Option<u64>) -> Steps {
        Steps {
            start,
            total,
            save_every,
            stop_after,
        }
    }

    #[test]
    fn checkpoints_on_multiples_and_after_the_last_step() {
        let (calls, end) = run(steps(0, 5, 2, None));
        assert_eq!(end, LoopEnd::Finished);
        assert_eq!(
            calls,
            ["step 0", "step 1", "save 2", "step 2", "step 3", "save 4", "step 4", "save 5"]
        );
        // save_every 0: only the end.
        let (calls, _) = run(steps(0, 3, 0, None));
        assert_eq!(calls, ["step 0", "step 1", "step 2", "save 3"]);
    }

    #[test]
    fn resumes_mid_run_and_a_finished_run_takes_no_step() {
        let (calls, end) = run(steps(3, 5, 2, None));
        assert_eq!(calls, ["step 3", "save 4", "step 4", "save 5"]);
        assert_eq!(end, LoopEnd::Finished);
        let (calls, end) = run(steps(5, 5, 2, None));
        assert!(calls.is_empty());
        assert_eq!(end, LoopEnd::Finished);
    }

    #[test]
    fn stop_after_counts_the_steps_of_this_invocation() {
        let (calls, end) = run(steps(2, 10, 3, Some(2)));
        assert_eq!(calls, ["step 2", "save 3", "step 3"]);
        assert_eq!(end, LoopEnd::Stopped);
        // Reaching the end first is finishing, not stopping.
        let (calls, end) = run(steps(0, 2, 0, Some(2)));
        assert_eq!(calls, ["step 0", "step 1", "save 2"]);
        assert_eq!(end, LoopEnd::Finished);
    }

    #[test]
    fn a_failing_step_ends_the_loop_without_its_checkpoint() {
        let mut r = Recorder {
            fail_at: Some(1),
            ..Recorder::default()
        };
        let err = run_steps(&mut r, &steps(0, 4, 1, None), &ProgressBar::hidden()).unwrap_err();
        assert_eq!(err, "step 1 failed");
        assert_eq!(r.calls, ["step 0", "save 1"]);
    }
}
