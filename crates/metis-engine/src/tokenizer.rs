//! Tokenizer: a thin wrapper over Hugging Face `tokenizers` plus the special-token facts a
//! serving stack needs (BOS/EOS strings, stop ids, chat template), loaded from a Hugging Face
//! model directory or from the metadata of a llama.cpp GGUF file ([`gguf`]), and an
//! incremental detokenizer for streaming.

mod gguf;

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

/// Errors from loading or running a tokenizer. Loading errors always name the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer.json` could not be parsed / built by the `tokenizers` crate.
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: PathBuf, message: String },
    /// A JSON side file (tokenizer_config.json, generation_config.json, config.json) is invalid.
    #[error("invalid JSON in {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// Encoding failed.
    #[error("encode failed: {0}")]
    Encode(String),
    /// Decoding failed (e.g. an id outside the vocabulary).
    #[error("decode failed: {0}")]
    Decode(String),
    /// A GGUF file's tokenizer metadata is missing a key it needs, or holds a bad value.
    #[error("{}: GGUF key {key}: {detail}", file.display())]
    Metadata {
        file: PathBuf,
        key: String,
        detail: String,
    },
}

/// A tokenizer loaded from `tokenizer.json`, plus special-token information from the
/// surrounding model directory.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token: Option<String>,
    eos_token: Option<String>,
    stop_ids: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("stop_ids", &self.stop_ids)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Option<Json>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenizerError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// A special token in tokenizer_config.json: either a plain string or an AddedToken dict
/// (`{"content": "...", ...}`).
fn special_token_str(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `eos_token_id` as found in generation_config.json / config.json: an int or a list of ints.
pub(crate) fn eos_ids(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(Json::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// The chat template in tokenizer_config.json: a string, or (older multi-template format) a
/// list of `{"name", "template"}` from which the one named "default" is taken.
fn template_from_config(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => {
            let named = |name: &str| {
                list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == name)
                        .then(|| t.get("template")?.as_str().map(str::to_owned))
                        .flatten()
                })
            };
            named("default").or_else(|| {
                list.first()
                    .and_then(|t| t.get("template")?.as_str().map(str::to_owned))
            })
        }
        _ => None,
    }
}

impl Tokenizer {
    /// Load from a model directory: `tokenizer.json` (required), `tokenizer_config.json`
    /// (bos/eos token strings, chat template), `chat_template.jinja` / `chat_template.json`
    /// (newer transformers store the template separately; takes precedence), and
    /// `generation_config.json` / `config.json` (`eos_token_id`, int or list) for stop ids.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let mut tok = Self::from_file(&dir.join("tokenizer.json"))?;

        let cfg_path = dir.join("tokenizer_config.json");
        if let Some(cfg) = read_json(&cfg_path)? {
            tok.bos_token = special_token_str(cfg.get("bos_token"));
            tok.eos_token = special_token_str(cfg.get("eos_token"));
            tok.chat_template = template_from_config(cfg.get("chat_template"));
        }

        let jinja_path = dir.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja_path) {
            Ok(t) => tok.chat_template = Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let json_path = dir.join("chat_template.json");
                if let Some(j) = read_json(&json_path)? {
                    if let Some(t) = template_from_config(j.get("chat_template")) {
                        tok.chat_template = Some(t);
                    }
                }
            }
            Err(source) => {
                return Err(TokenizerError::Io {
                    path: jinja_path,
                    source,
                })
            }
        }

        let mut stop = Vec::new();
        if let Some(id) = tok.eos_token.as_deref().and_then(|t| tok.token_to_id(t)) {
            stop.push(id);
        }
        for name in ["generation_config.json", "config.json"] {
            if let Some(j) = read_json(&dir.join(name))? {
                stop.extend(eos_ids(j.get("eos_token_id")));
            }
        }
        let mut seen = std::collections::HashSet::new();
        stop.retain(|id| seen.insert(*id));
        tok.stop_ids = stop;
        Ok(tok)
    }

    /// Load the tokenizer a llama.cpp GGUF file carries in its metadata (`tokenizer.ggml.*`
    /// and `tokenizer.chat_template`), interpreted as llama.cpp does (see [`gguf`]). `None`
    /// when the file declares no vocabulary (`tokenizer.ggml.model` = `none`, as
    /// [`crate::gguf::write_gguf`] writes for a checkpoint without `tokenizer.json`); a missing
    /// or malformed key is a [`TokenizerError::Metadata`] naming it.
    pub fn from_gguf(path: &Path) -> Result<Option<Tokenizer>, TokenizerError> {
        gguf::load(path)
    }

    /// Load a bare `tokenizer.json` (no special-token metadata: no bos/eos strings, no stop
    /// ids, no chat template). Both merge encodings (`"a b"` and `["a", "b"]`) are accepted.
    pub fn from_file(tokenizer_json: &Path) -> Result<Tokenizer, TokenizerError> {
        let bytes = std::fs::read(tokenizer_json).map_err(|source| TokenizerError::Io {
            path: tokenizer_json.to_path_buf(),
            source,
        })?;
        let inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| TokenizerError::Load {
                path: tokenizer_json.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Tokenizer {
            inner,
            bos_token: None,
            eos_token: None,
            stop_ids: Vec::new(),
            chat_template: None,
        })
    }

    /// Encode text. Special tokens written literally in `text` (e.g. `<|eot_id|>`) are matched
    /// as special tokens, as HF `tokenizers` does. `add_special_tokens` applies the
    /// post-processor (Llama 3: prepend `<|begin_of_text|>`).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Decode ids to text (like HF `tokenizers` `Tokenizer.decode`; no
    /// `clean_up_tokenization_spaces` post-pass).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Id of a token string (vocabulary form, e.g. `"Ġthe"`, or an added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id (vocabulary form).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens (Llama 3: 128256).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// BOS token string from tokenizer_config.json.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// EOS token string from tokenizer_config.json.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Ids that end generation: the tokenizer_config `eos_token`, plus `eos_token_id` (int or
    /// list) from generation_config.json and config.json, deduplicated, in that order. For a
    /// tokenizer read from a GGUF file: llama.cpp's end-of-generation set, ascending.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Ids of the tokens whose text is on llama.cpp's end-of-generation list (`<|eot_id|>`,
    /// `<|im_end|>`, `<|endoftext|>`, `</s>`, …), ascending.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = gguf::EOG_TEXTS
            .iter()
            .filter_map(|t| self.token_to_id(t))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The model's Jinja chat template, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Start an incremental detokenizer (for streaming output).
    pub fn decode_stream(&self, skip_special_tokens: bool) -> DecodeStream<'_> {
        DecodeStream {
            tokenizer: self,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }
}

/// Incremental detokenizer for streaming: push ids one at a time and get the text that is
/// now certain. Text is withheld while the tail decodes to an incomplete UTF-8 sequence
/// (byte-level BPE splits multi-byte characters across tokens), as in HF's `TextStreamer` /
/// vLLM / TGI incremental detokenization: the window `ids[prefix_offset..]` is decoded and
/// compared with the already-emitted `ids[prefix_offset..read_offset]`, so decoders that
/// depend on context (e.g. SentencePiece leading-space handling) stay correct.
/// Concatenating every returned chunk plus `finish()` equals `decode(all_ids)` for
/// byte-level tokenizers.
pub struct DecodeStream<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl DecodeStream<'_> {
    /// All ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The text already emitted from the window start, and the text of the whole window:
    /// what follows the former in the latter is new.
    fn window(&self) -> Result<(String, String), TokenizerError> {
        let prefix = self.tokenizer.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special_tokens,
        )?;
        let full = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        Ok((prefix, full))
    }

    /// Push one id; returns the newly certain text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let (prefix, full) = self.window()?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            let new = suffix_after(&full, &prefix).to_owned();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// Flush whatever is still withheld (an incomplete UTF-8 tail decodes to U+FFFD, as a
    /// full decode would).
    pub fn finish(&mut self) -> Result<Option<String>, TokenizerError> {
        if self.read_offset >= self.ids.len() {
            return Ok(None);
        }
        let (prefix, full) = self.window()?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        if full.len() > prefix.len() {
            Ok(Some(suffix_after(&full, &prefix).to_owned()))
        } else {
            Ok(None)
        }
    }
}

/// `full` minus the leading `prefix`; if `full` does not literally start with `prefix`, cut
/// at the first char boundary at or after `prefix.len()`.
fn suffix_after<'s>(full: &'s str, prefix: &str) -> &'s str {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest;
    }
    let mut cut = prefix.len().min(full.len());
    while !full.is_char_boundary(cut) {
        cut += 1;
    }
    &full[cut..]
}
