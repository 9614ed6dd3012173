//! The output directory of a training run, laid out the same way by SFT and GRPO:
//!
//! ```text
//! out/<trainer>_config.json      the run's configuration
//! out/checkpoint-STEP/           the model (full: HF directory; LoRA: PEFT adapter), the
//!                                tokenizer files, and state/ (crate::checkpoint::save_train_state)
//! out/final/                     the trained model and the tokenizer files
//! ```
//!
//! Checkpoints and the final model are written into a hidden `.NAME.tmp` directory and renamed
//! into place, so a directory under its real name is always complete: a kill at any moment
//! leaves the previous checkpoint to resume from. After a checkpoint is complete, older ones
//! beyond the newest `keep_last` are removed (0 keeps them all).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::{
    copy_tokenizer_files, latest_checkpoint, load_train_state, read_train_state, save_train_state,
    write_atomic, TrainState, STATE_DIR,
};
use crate::model::{Result, TrainError, TrainModel};
use crate::optim::AdamW;

/// Where a run writes, and what its saved models carry along.
#[derive(Debug, Clone)]
pub struct RunDir {
    out: PathBuf,
    /// The tokenizer files of every saved model are copied from here (a directory; anything
    /// else, e.g. a `.gguf` tokenizer, has no such files to copy).
    tokenizer_src: PathBuf,
    /// Checkpoints kept (the newest ones); 0 keeps all.
    keep_last: usize,
}

/// A checkpoint to resume from: its step, directory and training state.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub step: u64,
    pub dir: PathBuf,
    pub state: TrainState,
}

impl ResumePoint {
    /// Restore the checkpoint's trainable weights, optimizer state and dropout stream into
    /// `model` and `opt`.
    pub fn restore(&self, model: &TrainModel, opt: &mut AdamW) -> Result<()> {
        load_train_state(&self.dir.join(STATE_DIR), model, opt).map(drop)
    }
}

impl RunDir {
    /// Use (and create) `out`.
    pub fn create(out: &Path, tokenizer_src: &Path, keep_last: usize) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
        Ok(Self {
            out: out.to_path_buf(),
            tokenizer_src: tokenizer_src.to_path_buf(),
            keep_last,
        })
    }

    pub fn path(&self) -> &Path {
        &self.out
    }

    /// Write the run's configuration as pretty JSON to `out/file_name`.
    pub fn write_config<C: Serialize>(&self, file_name: &str, config: &C) -> Result<()> {
        let text = serde_json::to_string_pretty(config).expect("config serialises");
        write_atomic(&self.out.join(file_name), text.as_bytes())
    }

    /// The latest complete checkpoint and its training state, if there is one.
    pub fn resume_point(&self) -> Result<Option<ResumePoint>> {
        let Some((step, dir)) = latest_checkpoint(&self.out) else {
            return Ok(None);
        };
        let state = read_train_state(&dir.join(STATE_DIR))?;
        Ok(Some(ResumePoint { step, dir, state }))
    }

    /// Write `checkpoint-{state.step}`: the model, the tokenizer files and the exact training
    /// state; then prune older checkpoints. Returns the checkpoint's directory.
    pub fn save_checkpoint(
        &self,
        model: &TrainModel,
        opt: &AdamW,
        state: &TrainState,
    ) -> Result<PathBuf> {
        let dir = self.publish(&format!("checkpoint-{}", state.step), |tmp| {
            self.save_model(model, tmp)?;
            save_train_state(&tmp.join(STATE_DIR), model, opt, state)
        })?;
        self.prune(state.step);
        Ok(dir)
    }

    /// Write `final`: the model and the tokenizer files.
    pub fn save_final(&self, model: &TrainModel) -> Result<PathBuf> {
        self.publish("final", |tmp| self.save_model(model, tmp))
    }

    fn save_model(&self, model: &TrainModel, dir: &Path) -> Result<()> {
        model.save(dir)?;
        copy_tokenizer_files(&self.tokenizer_src, dir)
    }

    /// Fill `out/.NAME.tmp` with `fill`, then rename it to `out/NAME` (replacing one there).
    fn publish(&self, name: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let dir = self.out.join(name);
        let tmp = self.out.join(format!(".{name}.tmp"));
        remove_dir_if_present(&tmp)?;
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        fill(&tmp)?;
        remove_dir_if_present(&dir)?;
        std::fs::rename(&tmp, &dir).map_err(|e| TrainError::io(&dir, e))?;
        Ok(dir)
    }

    /// Remove the checkpoints older than `newest` beyond the newest `keep_last`. Best effort:
    /// the new checkpoint is complete, so a directory that cannot be removed costs disk
    /// space, not the run.
    fn prune(&self, newest: u64) {
        if self.keep_last == 0 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.out) else {
            return;
        };
        let mut older: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
                (step < newest).then(|| (step, e.path()))
            })
            .collect();
        older.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
        for (_, dir) in older.into_iter().skip(self.keep_last - 1) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TrainError::io(dir, e)),
        _ => Ok(()),
    }
}
