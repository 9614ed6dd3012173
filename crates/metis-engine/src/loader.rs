//! The one model loader: weights, tokenizer, chat template and stop ids from a Hugging Face
//! model directory or a llama.cpp `.gguf` file, with one rule for each, for every caller
//! (`metis generate`/`chat`, `metis serve` and its local guard, `metis eval --local-model`,
//! the trainers' base model).
//!
//! * Weights: [`Model::load`] (safetensors directory, or GGUF file computing in f32).
//! * Tokenizer: from `tokenizer_override` when given, else from the model path. A directory
//!   supplies `tokenizer.json` (+ `tokenizer_config.json`, …, see [`Tokenizer::from_dir`]), a
//!   `.gguf` file its metadata ([`Tokenizer::from_gguf`]). A model directory without
//!   `tokenizer.json` or a GGUF declaring no vocabulary is a weights-only checkpoint (raw token
//!   ids still work); an override that supplies no tokenizer is an error.
//! * Chat template: the tokenizer's (`tokenizer_config.json` / `chat_template.jinja`, or the
//!   GGUF's `tokenizer.chat_template`), compiled once.
//! * Stop ids, in this order without repeats: the tokenizer's own (a directory's `eos_token`
//!   and `eos_token_id`s; a GGUF's llama.cpp end-of-generation set), the end-of-sequence ids
//!   the checkpoint declares (`eos_token_id` of the model directory's generation_config.json
//!   and config.json; a GGUF's EOS/EOM/EOT keys), then every token whose text is on
//!   llama.cpp's end-of-generation list (`<|eot_id|>`, `<|im_end|>`, `<|endoftext|>`, …), so
//!   a chat model stops at the end of its turn whichever format it came in.

use std::path::Path;

use candle_core::{DType, Device};

use crate::chat::{ChatError, ChatTemplate};
use crate::gguf::{end_of_sequence_ids_of, is_gguf_path};
use crate::model::{EngineError, Model};
use crate::tokenizer::{eos_ids, read_json, Tokenizer, TokenizerError};

/// Errors of [`load_model`] and [`load_tokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The tokenizer's chat template does not compile.
    #[error("chat template of {source_desc}: {error}")]
    Template {
        source_desc: String,
        #[source]
        error: ChatError,
    },
    /// An explicit tokenizer source holds no tokenizer.
    #[error(
        "no tokenizer in {}: expected a directory with tokenizer.json or a .gguf file with a \
         vocabulary",
        .0.display()
    )]
    NoTokenizer(std::path::PathBuf),
}

/// A tokenizer with what generation needs from it.
#[derive(Debug)]
pub struct LoadedTokenizer {
    pub tokenizer: Tokenizer,
    /// The compiled chat template (None: the tokenizer has none).
    pub template: Option<ChatTemplate>,
    /// Ids that end generation (see the module documentation for the rule).
    pub stop_ids: Vec<u32>,
    /// Where the tokenizer came from, e.g. "tokenizer from the GGUF metadata of m.gguf".
    pub source: String,
}

/// A model ready to generate.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Model,
    /// None for a weights-only checkpoint.
    pub tokenizer: Option<Tokenizer>,
    /// The compiled chat template (None without a tokenizer or when it has none).
    pub template: Option<ChatTemplate>,
    /// Ids that end generation; without a tokenizer, the checkpoint's end-of-sequence ids.
    pub stop_ids: Vec<u32>,
    /// Where the weights and the tokenizer came from, for logs.
    pub source: String,
}

/// Loads the model at `path` (a Hugging Face directory or a `.gguf` file) with its tokenizer,
/// chat template and stop ids; `tokenizer_override` (a directory or a `.gguf` file) replaces
/// the model's own tokenizer. `dtype` as in [`Model::load`].
pub fn load_model(
    path: &Path,
    tokenizer_override: Option<&Path>,
    device: &Device,
    dtype: Option<DType>,
) -> Result<LoadedModel, LoadError> {
    let model = Model::load(path, dtype, device)?;
    let format = if is_gguf_path(path) {
        "GGUF"
    } else {
        "safetensors"
    };
    let weights = format!("weights from {} ({format})", path.display());
    Ok(match load_tokenizer(path, tokenizer_override)? {
        Some(t) => LoadedModel {
            model,
            tokenizer: Some(t.tokenizer),
            template: t.template,
            stop_ids: t.stop_ids,
            source: format!("{weights}, {}", t.source),
        },
        None => LoadedModel {
            stop_ids: model.config().eos_token_ids.clone(),
            model,
            tokenizer: None,
            template: None,
            source: format!("{weights}, no tokenizer"),
        },
    })
}

/// The tokenizer, chat template and stop ids of the model at `path` without its weights (the
/// trainers load those themselves). `None` for a weights-only checkpoint without override.
pub fn load_tokenizer(
    path: &Path,
    tokenizer_override: Option<&Path>,
) -> Result<Option<LoadedTokenizer>, LoadError> {
    let from = tokenizer_override.unwrap_or(path);
    let (tokenizer, source) = if is_gguf_path(from) {
        let source = format!("tokenizer from the GGUF metadata of {}", from.display());
        (Tokenizer::from_gguf(from)?, source)
    } else if from.join("tokenizer.json").is_file() {
        let source = format!("tokenizer from {}", from.join("tokenizer.json").display());
        (Some(Tokenizer::from_dir(from)?), source)
    } else {
        (None, String::new())
    };
    let Some(tokenizer) = tokenizer else {
        return match tokenizer_override {
            Some(dir) => Err(LoadError::NoTokenizer(dir.to_path_buf())),
            None => Ok(None),
        };
    };
    let template = ChatTemplate::from_tokenizer(&tokenizer)
        .transpose()
        .map_err(|error| LoadError::Template {
            source_desc: source.clone(),
            error,
        })?;
    let stop_ids = stop_ids(&tokenizer, &declared_end_of_sequence(path)?);
    Ok(Some(LoadedTokenizer {
        tokenizer,
        template,
        stop_ids,
        source,
    }))
}

/// The stop-id rule of this module: the tokenizer's own stop ids, then `checkpoint_eos`, then
/// the tokens on llama.cpp's end-of-generation list, in that order without repeats.
pub fn stop_ids(tokenizer: &Tokenizer, checkpoint_eos: &[u32]) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::new();
    let listed = tokenizer.end_of_generation_ids();
    for &id in tokenizer
        .stop_ids()
        .iter()
        .chain(checkpoint_eos)
        .chain(&listed)
    {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The end-of-sequence ids the checkpoint at `path` declares: a GGUF's EOS/EOM/EOT keys, or
/// `eos_token_id` (int or list) in a directory's generation_config.json and config.json.
fn declared_end_of_sequence(path: &Path) -> Result<Vec<u32>, LoadError> {
    if is_gguf_path(path) {
        return Ok(end_of_sequence_ids_of(path)?);
    }
    let mut ids = Vec::new();
    for name in ["generation_config.json", "config.json"] {
        if let Some(json) = read_json(&path.join(name))? {
            ids.extend(eos_ids(json.get("eos_token_id")));
        }
    }
    Ok(ids)
}
