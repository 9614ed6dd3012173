//! The built-in demonstration task for both training stages: **CVSS v3.1 severity**.
//!
//! Each example is a CVSS v3.1 base vector (taken from the CVSS test-vector table in the data
//! directory, `cvss/cvss-test-vectors.tsv`: every v3.1 base vector) and the question "which
//! severity?" with four options (Low, Medium, High, Critical; vectors scoring 0.0, severity
//! None, are left out). The gold letter comes from `metis_verify::cvss`, the same scorer the
//! benchmarks use, and answers are graded by the MCQ verifier, so the task is verifiable end
//! to end. Vectors are split by a seeded hash into a training part and a held-out part.
//!
//! [`build`] writes everything a run needs into one directory:
//!
//! | path | what |
//! |---|---|
//! | `init/` | a tiny random-init Llama (HF layout) with a byte-level BPE tokenizer trained on the task text and a chat template |
//! | `sft.jsonl` | training vectors with reasoning traces (`<think>\nMetrics AV:N … A:H. Base score 9.8, so the severity is Critical.\n</think>\n\nAnswer: D`) for Stage 1 |
//! | `prompts.jsonl` | training vectors as GRPO prompts (`task: mcq`, gold letter) for Stage 2 |
//! | `heldout.jsonl` | held-out vectors in the prompt format, for accuracy curves |
//!
//! The model is small enough to train on two CPU cores in minutes.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use metis_engine::config::ModelConfig;
use metis_engine::model::params::{ModelParams, ParamRole};
use metis_verify::cvss::{Severity, Vector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::TrainError;

type Result<T> = std::result::Result<T, TrainError>;

/// The four answer options, in prompt order.
pub const OPTIONS: [(&str, Severity); 4] = [
    ("A", Severity::Low),
    ("B", Severity::Medium),
    ("C", Severity::High),
    ("D", Severity::Critical),
];

/// Special tokens of the demo tokenizer (BOS, end of turn, role markers).
const SPECIAL: [&str; 5] = [
    "<|bos|>",
    "<|eot|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
];

/// The demo chat template: `<|role|>\n{content}<|eot|>\n` per message, after BOS.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|eot|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// Shape of the demo model.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Directory holding `cvss/cvss-test-vectors.tsv`.
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub seed: u64,
    /// Share of vectors held out (by seeded hash).
    pub heldout_fraction: f64,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

impl Default for DemoConfig {
    /// The demo's shape and seed; the paths are empty (see [`DemoConfig::new`]).
    fn default() -> Self {
        Self {
            data_dir: PathBuf::new(),
            out: PathBuf::new(),
            seed: 0,
            heldout_fraction: 0.2,
            hidden: 96,
            layers: 3,
            heads: 4,
            kv_heads: 2,
            intermediate: 256,
            vocab: 512,
        }
    }
}

impl DemoConfig {
    /// The defaults with the data directory and the output directory.
    pub fn new(data_dir: PathBuf, out: PathBuf) -> Self {
        Self {
            data_dir,
            out,
            ..Self::default()
        }
    }
}

/// One task example.
#[derive(Debug, Clone)]
pub struct Example {
    pub vector: String,
    pub base_score: f64,
    pub gold: &'static str,
}

impl Example {
    /// The user turn.
    pub fn question(&self) -> String {
        let options: Vec<String> = OPTIONS
            .iter()
            .map(|(l, s)| format!("{l}) {}", s.as_str()))
            .collect();
        format!(
            "Severity of {}?\n{}\nEnd with \"Answer: <letter>\".",
            self.vector,
            options.join("\n")
        )
    }

    /// The reference assistant turn: a short reasoning trace (the metrics restated, the base
    /// score, its severity band), then the answer.
    pub fn answer(&self) -> String {
        let metrics: Vec<&str> = self.vector.split('/').skip(1).collect();
        let severity = OPTIONS
            .iter()
            .find(|(l, _)| *l == self.gold)
            .map_or("", |(_, s)| s.as_str());
        format!(
            "<think>\nMetrics {}. Base score {:.1}, so the severity is {severity}.\n</think>\n\nAnswer: {}",
            metrics.join(" "),
            self.base_score,
            self.gold
        )
    }
}

/// Where [`build`] put things.
#[derive(Debug, Clone)]
pub struct DemoPaths {
    pub model: PathBuf,
    pub sft: PathBuf,
    pub prompts: PathBuf,
    pub heldout: PathBuf,
    pub train_examples: usize,
    pub heldout_examples: usize,
}

impl DemoPaths {
    /// The layout of a demo directory `dir` (the one place its file names are written).
    fn under(dir: &Path, train_examples: usize, heldout_examples: usize) -> Self {
        Self {
            model: dir.join("init"),
            sft: dir.join("sft.jsonl"),
            prompts: dir.join("prompts.jsonl"),
            heldout: dir.join("heldout.jsonl"),
            train_examples,
            heldout_examples,
        }
    }
}

/// Reads the CVSS v3.1 base vectors of `data_dir/cvss/cvss-test-vectors.tsv` (column
/// `vector`, rows with `cvss_version` 3.1, temporal/environmental metrics stripped), scored by
/// `metis_verify::cvss`, severity None left out, in file order without duplicates.
pub fn load_examples(data_dir: &Path) -> Result<Vec<Example>> {
    let path = data_dir.join("cvss").join("cvss-test-vectors.tsv");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        TrainError::InvalidArgument(format!(
            "{}: {e} (the demo needs the CVSS test vectors; set --data-dir)",
            path.display()
        ))
    })?;
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, h)| h.split('\t').collect())
        .unwrap_or_default();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            TrainError::InvalidArgument(format!("{}: no column {name:?}", path.display()))
        })
    };
    let (version_col, vector_col) = (col("cvss_version")?, col("vector")?);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split('\t').collect();
        if cells.get(version_col) != Some(&"3.1") {
            continue;
        }
        let raw = cells.get(vector_col).copied().unwrap_or_default();
        // Keep the prefix and the eight base metrics.
        let base: Vec<&str> = raw.split('/').take(9).collect();
        let vector = base.join("/");
        let parsed = Vector::parse(&vector).map_err(|e| {
            TrainError::InvalidArgument(format!(
                "{}:{}: field \"vector\": {e}",
                path.display(),
                i + 1
            ))
        })?;
        let severity = parsed.severity();
        let Some((gold, _)) = OPTIONS.iter().find(|(_, s)| *s == severity) else {
            continue; // severity None
        };
        if seen.insert(vector.clone()) {
            out.push(Example {
                vector,
                base_score: parsed.base_score(),
                gold,
            });
        }
    }
    if out.is_empty() {
        return Err(TrainError::InvalidArgument(format!(
            "{}: no CVSS v3.1 vectors",
            path.display()
        )));
    }
    Ok(out)
}

/// Splits by a seeded hash of the vector text (stable under reordering of the file).
pub fn split(
    examples: &[Example],
    heldout_fraction: f64,
    seed: u64,
) -> (Vec<Example>, Vec<Example>) {
    let mut train = Vec::new();
    let mut heldout = Vec::new();
    for e in examples {
        // FNV-1a over seed bytes + vector bytes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.to_le_bytes().iter().chain(e.vector.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        if unit < heldout_fraction {
            heldout.push(e.clone());
        } else {
            train.push(e.clone());
        }
    }
    (train, heldout)
}

/// Writes the demo directory (see the module docs).
pub fn build(cfg: &DemoConfig) -> Result<DemoPaths> {
    let examples = load_examples(&cfg.data_dir)?;
    let (train, heldout) = split(&examples, cfg.heldout_fraction, cfg.seed);
    let paths = DemoPaths::under(&cfg.out, train.len(), heldout.len());
    let model_dir = &paths.model;
    std::fs::create_dir_all(model_dir).map_err(|e| io(model_dir, e))?;

    let corpus: Vec<String> = train
        .iter()
        .chain(&heldout)
        .flat_map(|e| [e.question(), e.answer()])
        .collect();
    let tokenizer = train_tokenizer(&corpus, cfg.vocab)?;
    let tok_path = model_dir.join("tokenizer.json");
    tokenizer
        .save(&tok_path, false)
        .map_err(|e| TrainError::InvalidArgument(format!("{}: {e}", tok_path.display())))?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| TrainError::InvalidArgument(format!("demo tokenizer lacks {t:?}")))
    };
    let (bos, eot) = (id("<|bos|>")?, id("<|eot|>")?);
    write_json(
        &model_dir.join("tokenizer_config.json"),
        &json!({
            "bos_token": "<|bos|>",
            "eos_token": "<|eot|>",
            "chat_template": CHAT_TEMPLATE,
            "model_max_length": 512,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }),
    )?;
    write_json(
        &model_dir.join("generation_config.json"),
        &json!({"bos_token_id": bos, "eos_token_id": eot}),
    )?;
    write_model(cfg, model_dir, bos, eot)?;

    write_jsonl(
        &paths.sft,
        train.iter().map(|e| {
            json!({"messages": [
                {"role": "user", "content": e.question()},
                {"role": "assistant", "content": e.answer()},
            ]})
        }),
    )?;
    let prompt = |e: &Example, split: &str, i: usize| {
        json!({
            "id": format!("{split}-{i}"),
            "task": "mcq",
            "gold": e.gold,
            "messages": [{"role": "user", "content": e.question()}],
            "vector": e.vector,
        })
    };
    write_jsonl(
        &paths.prompts,
        train.iter().enumerate().map(|(i, e)| prompt(e, "train", i)),
    )?;
    write_jsonl(
        &paths.heldout,
        heldout
            .iter()
            .enumerate()
            .map(|(i, e)| prompt(e, "heldout", i)),
    )?;
    Ok(paths)
}

/// [`build`] unless `cfg.out` already holds a task: the task is built in `<out>.partial` and
/// renamed into place, so an interrupted build leaves no half-written task behind, and a
/// finished one is not rebuilt.
pub fn build_once(cfg: &DemoConfig) -> Result<DemoPaths> {
    if !cfg.out.is_dir() {
        let mut partial = cfg.out.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
        }
        let built = build(&DemoConfig {
            out: partial.clone(),
            ..cfg.clone()
        })?;
        std::fs::rename(&partial, &cfg.out).map_err(|e| io(&cfg.out, e))?;
        return Ok(DemoPaths::under(
            &cfg.out,
            built.train_examples,
            built.heldout_examples,
        ));
    }
    let examples = load_examples(&cfg.data_dir)?;
    let (train, heldout) = split(&examples, cfg.heldout_fraction, cfg.seed);
    Ok(DemoPaths::under(&cfg.out, train.len(), heldout.len()))
}

/// A byte-level BPE of `vocab` ids trained on `corpus`, with the role/turn special tokens and
/// `<think>`/`</think>` as single (non-special, so always decoded) tokens.
pub fn train_tokenizer(corpus: &[String], vocab: usize) -> Result<Tokenizer> {
    let err = |e: tokenizers::Error| TrainError::InvalidArgument(format!("tokenizer: {e}"));
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab.saturating_sub(2))
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(SPECIAL.iter().map(|s| AddedToken::from(*s, true)).collect())
        .build();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer = tokenizers::models::TrainerWrapper::BpeTrainer(trainer);
    tokenizer.train(&mut trainer, corpus.iter()).map_err(err)?;
    tokenizer.add_special_tokens(&SPECIAL.map(|s| AddedToken::from(s, true)));
    tokenizer.add_tokens(&[
        AddedToken::from("<think>", false),
        AddedToken::from("</think>", false),
    ]);
    Ok(tokenizer)
}

/// A random-init tied Llama of the demo shape: every tensor the parameter table lists for its
/// config, matrices N(0, 0.02), norms ones (drawn in table order, so one seed is one model).
fn write_model(cfg: &DemoConfig, dir: &Path, bos: u32, eot: u32) -> Result<()> {
    let config_json = demo_config_json(cfg, bos, eot);
    let config_path = dir.join("config.json");
    write_json(&config_path, &config_json)?;
    let config =
        ModelConfig::from_json_str(&config_json.to_string(), &config_path.display().to_string())?;
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x6d65_7469_735f_6465);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for spec in ModelParams::new(&config).iter() {
        let t = match spec.role {
            ParamRole::Norm => Tensor::ones(spec.shape.as_slice(), DType::F32, &Device::Cpu)?,
            ParamRole::LinearBias(_) => {
                Tensor::zeros(spec.shape.as_slice(), DType::F32, &Device::Cpu)?
            }
            ParamRole::Embedding | ParamRole::LinearWeight(_) | ParamRole::OutputHead => {
                randn(&mut rng, &spec.shape, 0.02)?
            }
        };
        tensors.insert(spec.hf_name.clone(), t);
    }
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    Ok(())
}

/// The demo model's `config.json`: a tied Llama without biases.
fn demo_config_json(cfg: &DemoConfig, bos: u32, eot: u32) -> serde_json::Value {
    let head_dim = cfg.hidden / cfg.heads;
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": 1e-5,
        "vocab_size": cfg.vocab,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "bos_token_id": bos,
        "eos_token_id": eot,
        "torch_dtype": "float32",
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
    })
}

/// N(0, std) values of `shape` from `rng`, by Box-Muller: the same seed gives the same model
/// everywhere.
fn randn(rng: &mut StdRng, shape: &[usize], std: f64) -> Result<Tensor> {
    let n = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        let r = (-2.0 * u1.ln()).sqrt();
        v.push((r * (std::f64::consts::TAU * u2).cos() * std) as f32);
        v.push((r * (std::f64::consts::TAU * u2).sin() * std) as f32);
    }
    v.truncate(n);
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::InvalidArgument(format!("{}: {e}", path.display()))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    std::fs::write(path, text).map_err(|e| io(path, e))
}

fn write_jsonl(path: &Path, rows: impl Iterator<Item = serde_json::Value>) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    for row in rows {
        writeln!(w, "{row}").map_err(|e| io(path, e))?;
    }
    w.flush().map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
    }

    #[test]
    fn examples_cover_every_scored_v31_vector_and_split_is_disjoint() {
        let ex = load_examples(&data_dir()).unwrap();
        // 2592 base vectors, of which those with C:N/I:N/A:N score 0.0 (severity None).
        assert_eq!(ex.len(), 2592 - 96);
        assert!(ex.iter().all(|e| e.base_score > 0.0));
        let (train, held) = split(&ex, 0.2, 0);
        assert_eq!(train.len() + held.len(), ex.len());
        assert!((held.len() as f64 / ex.len() as f64 - 0.2).abs() < 0.03);
        let held_set: std::collections::HashSet<_> = held.iter().map(|e| &e.vector).collect();
        assert!(train.iter().all(|e| !held_set.contains(&e.vector)));
        let e = ex
            .iter()
            .find(|e| e.vector == "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
            .unwrap();
        assert_eq!((e.base_score, e.gold), (9.8, "D"));
    }

    #[test]
    fn tokenizer_round_trips_and_keeps_think_tags_whole() {
        let ex = load_examples(&data_dir()).unwrap();
        let corpus: Vec<String> = ex
            .iter()
            .take(300)
            .flat_map(|e| [e.question(), e.answer()])
            .collect();
        let tok = train_tokenizer(&corpus, 512).unwrap();
        let text = ex[0].answer();
        let enc = tok.encode(text.as_str(), false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), text);
        let think = tok.token_to_id("<think>").unwrap();
        assert_eq!(enc.get_ids()[0], think);
        assert!(tok.get_vocab_size(true) <= 512);
    }
}
