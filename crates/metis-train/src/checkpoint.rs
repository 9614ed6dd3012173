//! Checkpoints: HF model directories, PEFT adapter directories, LoRA merging, and the training
//! state for an exact resume.
//!
//! * [`save_full`] (via [`TrainModel::save`] / [`TrainModel::save_merged`]): `model.safetensors`
//!   with HF names (LoRA merged in, tied models without `lm_head.weight`), `config.json` copied
//!   from the base with `torch_dtype`/`dtype` updated, `generation_config.json` (copied, or
//!   written from the config's bos/eos) and the tokenizer files of the base directory. Loadable
//!   by `metis_engine::model::Model::load` and transformers.
//! * [`save_adapter`]: a PEFT adapter directory, `adapter_config.json` (peft_type LORA,
//!   task_type CAUSAL_LM, r, lora_alpha, lora_dropout, target_modules, bias none,
//!   fan_in_fan_out false, base_model_name_or_path) and `adapter_model.safetensors`
//!   (`base_model.model.<module>.lora_{A,B}.weight`). [`TrainModel::load_with_adapter`] /
//!   [`load_adapter_weights`] read it back.
//! * [`merge_lora`]: base dir + adapter dir → full HF dir with `W += (alpha / r) * B @ A`.
//! * [`save_train_state`] / [`load_train_state`]: the trainable tensors as they are in memory,
//!   the optimizer state ([`AdamW::save`]), step, dropout-RNG position and an opaque data
//!   cursor. The directory is written under a temporary name and swapped in by renames, so a
//!   kill at any moment leaves either the previous or the new complete state
//!   ([`load_train_state`] falls back to `<dir>.old` if the swap was interrupted).
//!
//! Every file is written to a temporary name, synced and renamed into place.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use metis_engine::model::params::EMBED_TOKENS;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::lora::{LoraConfig, LORA_TARGETS};
use crate::model::{safetensors_files, Result, TrainError, TrainModel};
use crate::optim::AdamW;

/// Tokenizer and chat-template files copied along with every saved model (from the base
/// directory, and by the trainers from the tokenizer directory) when present: the one list
/// SFT, GRPO and merging share.
pub const TOKENIZER_FILES: [&str; 9] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// Copy the [`TOKENIZER_FILES`] present in `src` into `out` (each atomically). A `src` that
/// is not a directory (a `.gguf` tokenizer) has none.
pub fn copy_tokenizer_files(src: &Path, out: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let f = src.join(name);
        if f.is_file() {
            let bytes = std::fs::read(&f).map_err(|e| TrainError::io(&f, e))?;
            write_atomic(&out.join(name), &bytes)?;
        }
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn sync_dir(dir: &Path) {
    // Best effort: persist the rename on filesystems that need a directory fsync.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(TrainError::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON value serialises");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))
}

/// Write named tensors (moved to the CPU) and string metadata as a safetensors file,
/// atomically. `format: pt` is added to the metadata unless given (transformers requires it).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    mut metadata: HashMap<String, String>,
) -> Result<()> {
    metadata
        .entry("format".into())
        .or_insert_with(|| "pt".into());
    let cpu = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .map_err(|e| TrainError::format(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Read a safetensors file: tensors (on `device`) and metadata.
pub fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| TrainError::format(path, e.to_string()))?;
    let md = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| TrainError::format(path, e.to_string()))?;
    Ok((tensors, md))
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// The dtype a model is saved in: its compute dtype, f32 for an f64 model.
fn save_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F32
    } else {
        d
    }
}

/// Copy config (dtype updated), generation config and tokenizer files from `src` to `out`.
fn write_side_files(src: &Path, out: &Path, dtype: DType) -> Result<()> {
    let mut config = read_json(&src.join("config.json"))?;
    if let Some(obj) = config.as_object_mut() {
        obj.insert("torch_dtype".into(), json!(dtype_name(dtype)));
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), json!(dtype_name(dtype)));
        }
    }
    write_json(&out.join("config.json"), &config)?;
    let gen_src = src.join("generation_config.json");
    let gen = if gen_src.is_file() {
        read_json(&gen_src)?
    } else {
        let mut g = serde_json::Map::new();
        for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
            if let Some(v) = config.get(key).filter(|v| !v.is_null()) {
                g.insert(key.into(), v.clone());
            }
        }
        Value::Object(g)
    };
    write_json(&out.join("generation_config.json"), &gen)?;
    copy_tokenizer_files(src, out)
}

/// Save `model` as a full HF directory (LoRA adapters merged in). See the module docs.
pub fn save_full(model: &TrainModel, out_dir: &Path) -> Result<()> {
    create_dir(out_dir)?;
    let dtype = save_dtype(model.dtype());
    let tensors = model
        .merged_weights()?
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_dtype(dtype)?)))
        .collect::<Result<Vec<_>>>()?;
    write_safetensors(&out_dir.join("model.safetensors"), &tensors, HashMap::new())?;
    write_side_files(model.source_dir(), out_dir, dtype)
}

/// Save the LoRA adapters of `model` as a PEFT adapter directory.
pub fn save_adapter(model: &TrainModel, out_dir: &Path) -> Result<()> {
    let Some(cfg) = model.lora_config() else {
        return Err(TrainError::InvalidArgument(
            "save_adapter: the model has no LoRA adapters".into(),
        ));
    };
    create_dir(out_dir)?;
    let tensors = model
        .trainable()
        .into_iter()
        .map(|(n, v)| Ok((n, v.as_tensor().to_dtype(DType::F32)?)))
        .collect::<Result<Vec<_>>>()?;
    write_safetensors(
        &out_dir.join("adapter_model.safetensors"),
        &tensors,
        HashMap::new(),
    )?;
    let base = std::fs::canonicalize(model.source_dir())
        .unwrap_or_else(|_| model.source_dir().to_path_buf());
    let targets: Vec<&str> = LORA_TARGETS
        .iter()
        .copied()
        .filter(|t| cfg.targets(t))
        .collect();
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.display().to_string(),
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    write_json(&out_dir.join("adapter_config.json"), &config)
}

/// Parse a PEFT `adapter_config.json` into a [`LoraConfig`]; rejects what Metis does not
/// implement (DoRA, rsLoRA, fan_in_fan_out, biases, regex targets, rank/alpha patterns).
pub fn read_adapter_config(adapter_dir: &Path) -> Result<LoraConfig> {
    let path = adapter_dir.join("adapter_config.json");
    let v = read_json(&path)?;
    let err = |d: String| TrainError::format(&path, d);
    let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(err(format!("peft_type {peft_type:?} is not LORA")));
    }
    let r = v
        .get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| err("r: missing (expected an integer)".into()))? as usize;
    let alpha = v
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| err("lora_alpha: missing (expected a number)".into()))?;
    let dropout = v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let target_modules = match v.get("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(format!("target_modules: expected strings, got {x}")))
            })
            .collect::<Result<Vec<_>>>()?,
        other => {
            return Err(err(format!(
                "target_modules: expected a list of module names, got {other:?}"
            )))
        }
    };
    for (key, ok) in [
        ("use_dora", Value::Bool(false)),
        ("use_rslora", Value::Bool(false)),
        ("fan_in_fan_out", Value::Bool(false)),
        ("bias", json!("none")),
    ] {
        if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
            if *x != ok {
                return Err(err(format!("{key} = {x} is not supported")));
            }
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if let Some(Value::Object(m)) = v.get(key) {
            if !m.is_empty() {
                return Err(err(format!("{key} is not supported")));
            }
        }
    }
    let cfg = LoraConfig {
        r,
        alpha,
        dropout,
        target_modules,
        init_seed: 0,
    };
    cfg.validate().map_err(|e| err(e.to_string()))?;
    Ok(cfg)
}

/// Load the weights of a PEFT adapter directory into the LoRA Vars of `model` (same targets
/// and rank; every adapter tensor must be present).
pub fn load_adapter_weights(model: &TrainModel, adapter_dir: &Path) -> Result<()> {
    let path = adapter_dir.join("adapter_model.safetensors");
    let (mut tensors, _) = read_safetensors(&path, model.device())?;
    for (name, var) in model.trainable() {
        let t = tensors
            .remove(&name)
            .ok_or_else(|| TrainError::MissingTensor {
                path: path.clone(),
                name: name.clone(),
            })?;
        if t.dims() != var.as_tensor().dims() {
            return Err(TrainError::Shape {
                name,
                expected: var.as_tensor().dims().to_vec(),
                got: t.dims().to_vec(),
            });
        }
        var.set(&t.to_dtype(var.as_tensor().dtype())?)?;
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(TrainError::format(
            &path,
            format!("tensor {extra} does not match any adapter of the model"),
        ));
    }
    Ok(())
}

/// Merge the PEFT adapter in `adapter_dir` into the HF model in `base_dir`, writing a full HF
/// directory to `out_dir`: for every adapted module `W += (lora_alpha / r) * B @ A` (computed
/// in f32, stored in W's dtype). Other tensors are copied unchanged.
pub fn merge_lora(base_dir: &Path, adapter_dir: &Path, out_dir: &Path) -> Result<()> {
    let cfg = read_adapter_config(adapter_dir)?;
    let scaling = cfg.scaling();
    let apath = adapter_dir.join("adapter_model.safetensors");
    let (adapter, _) = read_safetensors(&apath, &Device::Cpu)?;
    let files = safetensors_files(base_dir)?;
    // SAFETY: read-only mmap; the base files must not change while merging.
    let st = unsafe { MmapedSafetensors::multi(&files)? };
    let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    let mut used = 0usize;
    let mut out = Vec::with_capacity(names.len());
    let mut dtype = None;
    for name in names {
        let w = st.load(&name, &Device::Cpu)?;
        let w = match name
            .strip_suffix(".weight")
            .map(|p| (format!("base_model.model.{p}.lora_A.weight"), p))
        {
            Some((a_name, prefix)) if adapter.contains_key(&a_name) => {
                let b_name = format!("base_model.model.{prefix}.lora_B.weight");
                let a = &adapter[&a_name];
                let b = adapter
                    .get(&b_name)
                    .ok_or_else(|| TrainError::MissingTensor {
                        path: apath.clone(),
                        name: b_name.clone(),
                    })?;
                let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * scaling)?;
                if delta.dims() != w.dims() {
                    return Err(TrainError::Shape {
                        name: format!("B @ A of {prefix}"),
                        expected: w.dims().to_vec(),
                        got: delta.dims().to_vec(),
                    });
                }
                used += 2;
                (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?
            }
            _ => w,
        };
        if name == EMBED_TOKENS.hf {
            dtype = Some(w.dtype());
        }
        out.push((name, w));
    }
    if used != adapter.len() {
        return Err(TrainError::format(
            &apath,
            format!(
                "{} adapter tensors do not match any weight of {}",
                adapter.len() - used,
                base_dir.display()
            ),
        ));
    }
    create_dir(out_dir)?;
    write_safetensors(&out_dir.join("model.safetensors"), &out, HashMap::new())?;
    write_side_files(base_dir, out_dir, dtype.unwrap_or(DType::F32))
}

/// The resumable part of a training run besides weights and optimizer moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done (also stored in the optimizer state; checked on load).
    pub step: u64,
    /// [`TrainModel::rng_state`] (LoRA dropout stream position).
    pub rng_state: u64,
    /// Caller-defined data position (epoch, shuffled order seed, index, ...), opaque here.
    pub data_cursor: Value,
}

const STATE_JSON: &str = "train_state.json";
const STATE_OPT: &str = "optimizer.safetensors";
const STATE_PARAMS: &str = "trainable.safetensors";

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    dir.with_file_name(format!("{name}{suffix}"))
}

/// Subdirectory of a `checkpoint-N` directory holding the training state.
pub const STATE_DIR: &str = "state";

/// The latest complete `checkpoint-N` directory in `out` (SFT and GRPO alike): one whose
/// training state ([`save_train_state`], written last) is there, or whose state swap was
/// interrupted between its two renames (`state.old`, which [`load_train_state`] falls back to).
pub fn latest_checkpoint(out: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(out)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
            let state = e.path().join(STATE_DIR);
            let complete = state.join(STATE_JSON).is_file() || with_suffix(&state, ".old").is_dir();
            complete.then(|| (step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
}

/// Save the training state to `dir` (replaced as a whole): `trainable.safetensors` (the
/// trainable tensors exactly as in memory), `optimizer.safetensors` ([`AdamW::save`]) and
/// `train_state.json` ([`TrainState`]). Written to `<dir>.tmp`, then swapped in by renames.
pub fn save_train_state(
    dir: &Path,
    model: &TrainModel,
    opt: &AdamW,
    state: &TrainState,
) -> Result<()> {
    let tmp = with_suffix(dir, ".tmp");
    let old = with_suffix(dir, ".old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    create_dir(&tmp)?;
    let params = model
        .trainable()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().detach()))
        .collect::<Vec<_>>();
    write_safetensors(&tmp.join(STATE_PARAMS), &params, HashMap::new())?;
    opt.save(&tmp.join(STATE_OPT))?;
    let json = serde_json::to_value(state).expect("state serialises");
    write_json(&tmp.join(STATE_JSON), &json)?;
    sync_dir(&tmp);
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent);
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(())
}

/// `dir`, or `<dir>.old` when a save was interrupted between its two renames.
fn state_dir_to_read(dir: &Path) -> PathBuf {
    if !dir.exists() && with_suffix(dir, ".old").is_dir() {
        with_suffix(dir, ".old")
    } else {
        dir.to_path_buf()
    }
}

/// Only the [`TrainState`] of a state directory (the `.old` fallback as in
/// [`load_train_state`]), so a trainer can check that a checkpoint belongs to its run before
/// it loads any weights.
pub fn read_train_state(dir: &Path) -> Result<TrainState> {
    let jpath = state_dir_to_read(dir).join(STATE_JSON);
    serde_json::from_value(read_json(&jpath)?).map_err(|source| TrainError::Json {
        path: jpath.clone(),
        source,
    })
}

/// Restore a state written by [`save_train_state`]: sets the trainable Vars of `model` and its
/// dropout-RNG position, loads `opt`, and returns the [`TrainState`]. If `dir` is missing but
/// `<dir>.old` exists (a save was interrupted between its two renames), that is used.
pub fn load_train_state(dir: &Path, model: &TrainModel, opt: &mut AdamW) -> Result<TrainState> {
    let dir = state_dir_to_read(dir);
    let jpath = dir.join(STATE_JSON);
    let state = read_train_state(&dir)?;
    let ppath = dir.join(STATE_PARAMS);
    let (mut tensors, _) = read_safetensors(&ppath, model.device())?;
    let mut updates = Vec::new();
    for (name, var) in model.trainable() {
        let t = tensors
            .remove(&name)
            .ok_or_else(|| TrainError::MissingTensor {
                path: ppath.clone(),
                name: name.clone(),
            })?;
        let like = var.as_tensor();
        if t.dims() != like.dims() || t.dtype() != like.dtype() {
            return Err(TrainError::format(
                &ppath,
                format!(
                    "{name}: expected {:?} {:?}, got {:?} {:?}",
                    like.dtype(),
                    like.dims(),
                    t.dtype(),
                    t.dims()
                ),
            ));
        }
        updates.push((var, t));
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(TrainError::format(
            &ppath,
            format!("tensor {extra} is not a trainable parameter of the model"),
        ));
    }
    opt.load(&dir.join(STATE_OPT))?;
    if opt.step_count() != state.step {
        return Err(TrainError::format(
            &jpath,
            format!(
                "step {} does not match the optimizer state's step {}",
                state.step,
                opt.step_count()
            ),
        ));
    }
    for (var, t) in updates {
        var.set(&t)?;
    }
    model.set_rng_state(state.rng_state);
    Ok(state)
}
