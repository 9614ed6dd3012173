//! Helpers shared by the GRPO tests: the built-in demo task with a very small model, and a
//! short SFT of it.

use std::path::{Path, PathBuf};

use metis_train::demo::{build, DemoConfig, DemoPaths};
use metis_train::sft::{run_sft, SftConfig};

pub fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

/// The demo task under `dir/task` with a `layers`-layer model (hidden 32, 2 query heads and 1
/// kv head, vocabulary 384).
pub fn tiny_demo(dir: &Path, layers: usize) -> DemoPaths {
    let mut cfg = DemoConfig::new(data_dir(), dir.join("task"));
    cfg.hidden = 32;
    cfg.layers = layers;
    cfg.heads = 2;
    cfg.kv_heads = 1;
    cfg.intermediate = 64;
    cfg.vocab = 384;
    build(&cfg).unwrap()
}

/// The demo model SFT-ed for `steps` steps (lr 1e-2, batch 8) under `dir/sft`; returns the
/// final model directory.
pub fn sft(demo: &DemoPaths, dir: &Path, steps: u64) -> PathBuf {
    let out = dir.join("sft");
    let mut sft = SftConfig::new(&demo.model, &demo.sft, &out);
    sft.max_steps = Some(steps);
    sft.lr = 1e-2;
    sft.batch_size = 8;
    sft.max_len = 128;
    sft.save_every = steps;
    run_sft(&sft, false).unwrap();
    out.join("final")
}
