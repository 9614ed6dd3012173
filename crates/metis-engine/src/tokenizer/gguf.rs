//! The tokenizer a llama.cpp GGUF file carries in its metadata, rebuilt as a Hugging Face
//! `tokenizers` pipeline that tokenizes the way llama.cpp's `llama_vocab` does, so that a
//! `.gguf` file alone is a complete model (weights, vocabulary, special tokens, chat template).
//!
//! The keys are interpreted as llama.cpp's `llama_vocab::impl::load` interprets them:
//!
//! * `tokenizer.ggml.model = gpt2`: byte-level BPE. `tokens` is the vocabulary, `merges` the
//!   merges in rank order (each `"left right"`, split at the first space after the first byte).
//!   The text is cut by the regex list llama.cpp uses for `tokenizer.ggml.pre`, applied in
//!   sequence, each regex re-splitting every piece and keeping both its matches and the gaps
//!   between them (`Split` with `Isolated`), then mapped through the GPT-2 byte alphabet. An
//!   unknown `pre` is an error naming it; a missing one means `default`, as in llama.cpp.
//! * `tokenizer.ggml.model = llama`: SentencePiece BPE. llama.cpp repeatedly merges the
//!   adjacent pair whose concatenation is the highest-scoring piece (leftmost on ties); a BPE
//!   model is given the same order as merges ranked by that score (HF's `GGUFLlamaConverter`
//!   does the same). Spaces become `▁`, a `▁` is prefixed to each text run (`add_space_prefix`)
//!   and a character outside the vocabulary falls back to its `<0xNN>` byte pieces.
//! * Control and unknown tokens (types 3 and 2) become special added tokens and user-defined
//!   ones (4) added tokens matched verbatim, so `<|im_start|>` written in text maps to its id as
//!   llama.cpp tokenizes with `parse_special = true`. Tokens llama.cpp recognises by their text
//!   as end-of-turn, end-of-generation or fill-in-the-middle markers are made control tokens,
//!   as it does.
//! * BOS/EOS are added by the post-processor when `add_bos`/`add_eos` hold: the per-model
//!   defaults (SentencePiece adds BOS; byte-level BPE only for the Llama-3 family and tekken),
//!   overridden by `tokenizer.ggml.add_bos_token` / `add_eos_token`.
//! * The stop ids are llama.cpp's end-of-generation set: EOS, EOT and EOM (keys), the FIM pad,
//!   repo and separator tokens (keys, else found by text), and every token whose text is on
//!   llama.cpp's end-of-generation list (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `</s>`…),
//!   less the two exceptions llama.cpp makes (gpt-oss's `<|end|>`, Gemma 4's `</s>`).
//!
//! Known differences from llama.cpp, all on inputs real vocabularies avoid: special tokens are
//! found leftmost-longest in one pass (llama.cpp cuts them out longest first); SentencePiece
//! pieces with exactly equal scores are merged in id order rather than leftmost first; when
//! several tokens match one FIM text list, all of them are stop ids (llama.cpp keeps one).

use std::collections::{BTreeSet, HashMap};
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{Tokenizer, TokenizerError};

type Result<T> = std::result::Result<T, TokenizerError>;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";
const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";
const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
const KEY_FIM_PAD: &str = "tokenizer.ggml.fim_pad_token_id";
const KEY_FIM_REP: &str = "tokenizer.ggml.fim_rep_token_id";
const KEY_FIM_SEP: &str = "tokenizer.ggml.fim_sep_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// llama.cpp's token types (`tokenizer.ggml.token_type`, `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_i32(t: i32) -> TokenType {
        match t {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

// Texts llama.cpp recognises (`llama_vocab::impl::load`, "auto-detect special tokens by text").
// The end-of-turn and end-of-message texts are all on the end-of-generation list below.

/// Texts that end generation.
pub(super) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
    "[e~[",
];
/// Fill-in-the-middle markers: prefix, suffix, middle (made control tokens, not stops).
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<\u{FF5C}fim\u{2581}begin\u{FF5C}>",
    "<PRE>",
    "\u{2581}<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<\u{FF5C}fim\u{2581}hole\u{FF5C}>",
    "<SUF>",
    "\u{2581}<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<\u{FF5C}fim\u{2581}end\u{FF5C}>",
    "<MID>",
    "\u{2581}<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
/// Fill-in-the-middle pad, repository and file-separator markers: these also end generation.
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// gpt-oss channel markers, which llama.cpp always renders (user-defined).
const RENDERED_TEXTS: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

// Pre-tokenizer regexes, spelled as in llama.cpp's `llm_tokenizer_bpe` (case-insensitive
// contractions written with explicit case classes).

/// GPT-2's split.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's split: numbers in groups of up to three digits.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: Llama 3's with one digit per piece.
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's tekken split.
const RE_TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What llama.cpp does for a `tokenizer.ggml.pre` value: its split regexes (applied in
/// sequence) and the flags it sets.
#[derive(Debug)]
struct PreTokenizer {
    regexes: &'static [&'static str],
    /// A piece that is already a token is emitted whole, without merging.
    ignore_merges: bool,
    /// Add BOS by default.
    add_bos: bool,
}

const fn pre(regexes: &'static [&'static str]) -> PreTokenizer {
    PreTokenizer {
        regexes,
        ignore_merges: false,
        add_bos: false,
    }
}

static PRE_DEFAULT: PreTokenizer = pre(&[
    r"[\p{P}\$\+<=>\^~\|]+",
    RE_GPT2,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
]);
static PRE_LLAMA3: PreTokenizer = PreTokenizer {
    regexes: &[RE_LLAMA3],
    ignore_merges: true,
    add_bos: true,
};
static PRE_LLAMA3_REGEX: PreTokenizer = pre(&[RE_LLAMA3]);
static PRE_QWEN2: PreTokenizer = pre(&[RE_QWEN2]);
static PRE_STARCODER: PreTokenizer = pre(&[r"\p{N}", RE_GPT2]);
static PRE_GPT2: PreTokenizer = pre(&[RE_GPT2]);
static PRE_FALCON: PreTokenizer = pre(&[r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, r"[0-9][0-9][0-9]"]);
static PRE_DEEPSEEK_CODER: PreTokenizer = pre(&[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    "[\u{4E00}-\u{9FA5}\u{0800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
    r"\p{N}",
]);
static PRE_TEKKEN: PreTokenizer = PreTokenizer {
    regexes: &[RE_TEKKEN],
    ignore_merges: true,
    add_bos: true,
};

/// The pre-tokenizer llama.cpp uses for `name` (the `tokenizer.ggml.pre` mapping of
/// `llama_vocab::impl::load`), for the names whose behaviour is regexes and flags alone.
fn pre_tokenizer(name: &str) -> Option<&'static PreTokenizer> {
    Some(match name {
        "default" => &PRE_DEFAULT,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => &PRE_LLAMA3,
        "dbrx" | "smaug-bpe" => &PRE_LLAMA3_REGEX,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" => &PRE_QWEN2,
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => &PRE_STARCODER,
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais" | "exaone4"
        | "trillion" | "granite-docling" => &PRE_GPT2,
        "falcon" => &PRE_FALCON,
        "deepseek-coder" => &PRE_DEEPSEEK_CODER,
        "tekken" => &PRE_TEKKEN,
        _ => return None,
    })
}

/// The tokenizer family (`tokenizer.ggml.model`).
#[derive(Debug)]
enum Family {
    /// `gpt2`: byte-level BPE with ranked merges.
    Bpe {
        pre: &'static PreTokenizer,
        merges: Vec<(String, String)>,
    },
    /// `llama`: SentencePiece BPE with piece scores.
    Spm { scores: Vec<f32> },
}

/// The vocabulary as llama.cpp holds it after loading: texts, types (with its corrections),
/// special ids, flags, end-of-generation set.
#[derive(Debug)]
struct Vocab {
    family: Family,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    eog: BTreeSet<u32>,
    chat_template: Option<String>,
}

/// Loads the tokenizer of the GGUF file at `path` (`None`: the file declares no vocabulary).
pub(super) fn load(path: &Path) -> Result<Option<Tokenizer>> {
    let content = read_header(path)?;
    from_metadata(&content.metadata, path)
}

/// Builds the tokenizer described by GGUF `metadata` (read from `file`, named in errors).
pub(super) fn from_metadata(
    metadata: &HashMap<String, Value>,
    file: &Path,
) -> Result<Option<Tokenizer>> {
    let keys = Keys { md: metadata, file };
    let Some(vocab) = Vocab::read(&keys)? else {
        return Ok(None);
    };
    let inner = vocab.build().map_err(|message| TokenizerError::Load {
        path: file.to_path_buf(),
        message,
    })?;
    let text = |id: Option<u32>| id.map(|id| vocab.tokens[id as usize].clone());
    Ok(Some(Tokenizer {
        inner,
        bos_token: text(vocab.bos),
        eos_token: text(vocab.eos),
        stop_ids: vocab.eog.iter().copied().collect(),
        chat_template: vocab.chat_template,
    }))
}

fn read_header(path: &Path) -> Result<Content> {
    let file = std::fs::File::open(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Content::read(&mut BufReader::new(file)).map_err(|e| TokenizerError::Load {
        path: path.to_path_buf(),
        message: format!("not a readable GGUF file: {e}"),
    })
}

/// Typed access to the metadata; every error names the file and the key.
struct Keys<'a> {
    md: &'a HashMap<String, Value>,
    file: &'a Path,
}

impl Keys<'_> {
    fn error(&self, key: &str, detail: impl Into<String>) -> TokenizerError {
        TokenizerError::Metadata {
            file: self.file.to_path_buf(),
            key: key.to_owned(),
            detail: detail.into(),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.error(key, format!("expected a string, got {}", kind(v)))),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.error(key, format!("expected an array, got {}", kind(v)))),
        }
    }

    /// An array whose elements `item` converts, naming the first element it rejects.
    fn elements<T>(
        &self,
        key: &str,
        what: &str,
        item: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(values) = self.array(key)? else {
            return Ok(None);
        };
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                item(v).ok_or_else(|| {
                    self.error(
                        key,
                        format!("element {i}: expected {what}, got {}", kind(v)),
                    )
                })
            })
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }

    fn flag(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.error(key, format!("expected a bool, got {}", kind(v)))),
        }
    }

    /// A token id, which must lie inside the vocabulary of `n_tokens`.
    fn id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        let id = crate::gguf::value_u64(v)
            .ok_or_else(|| self.error(key, format!("expected a token id, got {}", kind(v))))?;
        if id >= n_tokens as u64 {
            return Err(self.error(
                key,
                format!("id {id} is outside the vocabulary of {n_tokens} tokens"),
            ));
        }
        Ok(Some(id as u32))
    }
}

/// A value's GGUF type, for error messages (never the value: arrays are the whole vocabulary).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F32(_) => "f32",
        Value::F64(_) => "f64",
        Value::Bool(_) => "bool",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    }
}

impl Vocab {
    /// Reads the vocabulary; `None` when the file declares none.
    fn read(keys: &Keys) -> Result<Option<Vocab>> {
        let model = keys
            .string(KEY_MODEL)?
            .ok_or_else(|| keys.error(KEY_MODEL, "missing (the file carries no tokenizer)"))?;
        let spm = match model {
            "none" | "no_vocab" => return Ok(None),
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(keys.error(
                    KEY_MODEL,
                    format!("unsupported tokenizer model {other:?} (supported: gpt2, llama)"),
                ))
            }
        };
        let tokens = read_tokens(keys)?;
        let n = tokens.len();
        let types = read_types(keys, n)?;
        let family = if spm {
            Family::Spm {
                scores: read_scores(keys, n)?,
            }
        } else {
            Family::Bpe {
                pre: read_pre(keys)?,
                merges: read_merges(keys)?,
            }
        };
        // Per-family defaults (llama.cpp: SPM bos 1, eos 2, unk 0; BPE bos = eos = 11), each
        // dropped when outside the vocabulary, then overridden by the keys.
        let in_vocab = |id: u32| (id < n as u32).then_some(id);
        let (bos, eos, unk) = if spm {
            (in_vocab(1), in_vocab(2), in_vocab(0))
        } else {
            (in_vocab(11), in_vocab(11), None)
        };
        let (default_add_bos, add_space_prefix) = match &family {
            Family::Spm { .. } => (true, true),
            Family::Bpe { pre, .. } => (pre.add_bos, false),
        };
        let mut vocab = Vocab {
            family,
            tokens,
            types,
            bos: keys.id(KEY_BOS, n)?.or(bos),
            eos: keys.id(KEY_EOS, n)?.or(eos),
            unk: keys.id(KEY_UNK, n)?.or(unk),
            add_bos: keys.flag(KEY_ADD_BOS)?.unwrap_or(default_add_bos),
            add_eos: keys.flag(KEY_ADD_EOS)?.unwrap_or(false),
            add_space_prefix: keys.flag(KEY_ADD_SPACE_PREFIX)?.unwrap_or(add_space_prefix),
            eog: BTreeSet::new(),
            chat_template: keys.string(KEY_CHAT_TEMPLATE)?.map(str::to_owned),
        };
        // The padding id is read only to be checked: padding is the caller's business.
        keys.id(KEY_PAD, n)?;
        if vocab.add_bos && vocab.bos.is_none() {
            return Err(keys.error(KEY_BOS, format!("missing, but {KEY_ADD_BOS} is true")));
        }
        if vocab.add_eos && vocab.eos.is_none() {
            return Err(keys.error(KEY_EOS, format!("missing, but {KEY_ADD_EOS} is true")));
        }
        vocab.find_end_of_generation(keys)?;
        Ok(Some(vocab))
    }

    /// llama.cpp's end-of-generation set, with the token types it corrects on the way.
    fn find_end_of_generation(&mut self, keys: &Keys) -> Result<()> {
        let n = self.tokens.len();
        let by_text: HashMap<&str, u32> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let matches = |texts: &[&str]| -> Vec<u32> {
            texts
                .iter()
                .filter_map(|t| by_text.get(t).copied())
                .collect()
        };
        // A FIM marker given by key is taken as is; one found by text becomes a control token.
        let mut control = Vec::new();
        let mut fim = |key: &str, texts: &[&str]| -> Result<Vec<u32>> {
            Ok(match keys.id(key, n)? {
                Some(id) => vec![id],
                None => {
                    let found = matches(texts);
                    control.extend_from_slice(&found);
                    found
                }
            })
        };
        fim("tokenizer.ggml.fim_pre_token_id", FIM_PRE_TEXTS)?;
        fim("tokenizer.ggml.fim_suf_token_id", FIM_SUF_TEXTS)?;
        fim("tokenizer.ggml.fim_mid_token_id", FIM_MID_TEXTS)?;
        let fim_stops = [
            fim(KEY_FIM_PAD, FIM_PAD_TEXTS)?,
            fim(KEY_FIM_REP, FIM_REP_TEXTS)?,
            fim(KEY_FIM_SEP, FIM_SEP_TEXTS)?,
        ];
        // The listed texts include every end-of-turn/-message text llama.cpp looks for when
        // the EOT/EOM keys are absent.
        let listed = matches(EOG_TEXTS);
        control.extend_from_slice(&listed);
        for id in control {
            self.types[id as usize] = TokenType::Control;
        }
        for id in matches(RENDERED_TEXTS) {
            self.types[id as usize] = TokenType::UserDefined;
        }

        let mut eog: BTreeSet<u32> = fim_stops.into_iter().flatten().collect();
        eog.extend(listed);
        eog.extend(self.eos);
        eog.extend(keys.id(KEY_EOT, n)?);
        eog.extend(keys.id(KEY_EOM, n)?);
        for (id, new_type) in eog_exceptions(&eog, &by_text) {
            eog.remove(&id);
            self.types[id as usize] = new_type;
        }
        self.eog = eog;
        Ok(())
    }

    /// The `tokenizers` pipeline. Errors are the `tokenizers` crate's messages.
    fn build(&self) -> std::result::Result<tokenizers::Tokenizer, String> {
        let vocab: BpeVocab = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut tok = match &self.family {
            Family::Bpe { pre, merges } => byte_level_bpe(vocab, merges.clone(), pre)?,
            Family::Spm { scores } => {
                let merges = spm_merges(&self.tokens, scores, &vocab);
                let unk = self.unk.map(|id| self.tokens[id as usize].clone());
                sentencepiece_bpe(vocab, merges, unk, self.add_space_prefix)?
            }
        };
        tok.with_post_processor(self.post_processor()?);
        let of_type = |wanted: &[TokenType]| -> Vec<&str> {
            self.tokens
                .iter()
                .zip(&self.types)
                .filter(|(_, t)| wanted.contains(t))
                .map(|(text, _)| text.as_str())
                .collect()
        };
        let special: Vec<AddedToken> = of_type(&[TokenType::Control, TokenType::Unknown])
            .into_iter()
            .map(|t| AddedToken::from(t, true))
            .collect();
        let user: Vec<AddedToken> = of_type(&[TokenType::UserDefined])
            .into_iter()
            .map(|t| AddedToken::from(t, false).normalized(false))
            .collect();
        tok.add_special_tokens(&special);
        tok.add_tokens(&user);
        Ok(tok)
    }

    /// `BOS $A [EOS]` as the model's flags ask (None: nothing added).
    fn post_processor(&self) -> std::result::Result<Option<TemplateProcessing>, String> {
        let bos = self.bos.filter(|_| self.add_bos);
        let eos = self.eos.filter(|_| self.add_eos);
        if bos.is_none() && eos.is_none() {
            return Ok(None);
        }
        let mut specials = Vec::new();
        let (mut single, mut pair) = (Vec::new(), Vec::new());
        for (label, id) in [("bos", bos), ("eos", eos)] {
            if let Some(id) = id {
                let text = self.tokens[id as usize].clone();
                specials.push(
                    SpecialToken::new(label.to_owned(), vec![id], vec![text])
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        let wrap = |seq: &str, out: &mut Vec<String>| {
            out.extend(bos.map(|_| "bos".to_owned()));
            out.push(seq.to_owned());
            out.extend(eos.map(|_| "eos".to_owned()));
        };
        wrap("$A", &mut single);
        wrap("$A", &mut pair);
        wrap("$B:1", &mut pair);
        TemplateProcessing::builder()
            .try_single(single)?
            .try_pair(pair)?
            .special_tokens(specials)
            .build()
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

fn read_tokens(keys: &Keys) -> Result<Vec<String>> {
    let mut tokens = keys
        .elements(KEY_TOKENS, "a string", |v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })?
        .ok_or_else(|| keys.error(KEY_TOKENS, "missing (the vocabulary)"))?;
    if tokens.is_empty() {
        return Err(keys.error(KEY_TOKENS, "empty vocabulary"));
    }
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(tokens.len());
    for (i, token) in tokens.iter_mut().enumerate() {
        // llama.cpp names empty tokens so that every id keeps a distinct text.
        if token.is_empty() {
            *token = format!("[EMPTY_{i}]");
        }
        if let Some(first) = seen.insert(token.clone(), i) {
            return Err(keys.error(
                KEY_TOKENS,
                format!("duplicate token {token:?} at ids {first} and {i}"),
            ));
        }
    }
    Ok(tokens)
}

/// Token types; all normal when the key is absent (as in llama.cpp).
fn read_types(keys: &Keys, n: usize) -> Result<Vec<TokenType>> {
    let Some(types) = keys.elements(KEY_TYPES, "an i32", |v| match v {
        Value::I32(t) => Some(*t),
        _ => None,
    })?
    else {
        return Ok(vec![TokenType::Normal; n]);
    };
    if types.len() < n {
        return Err(keys.error(KEY_TYPES, format!("{} types for {n} tokens", types.len())));
    }
    Ok(types[..n].iter().map(|&t| TokenType::from_i32(t)).collect())
}

/// SentencePiece scores (f32, or i32 as some converters write them): they order the merges.
fn read_scores(keys: &Keys, n: usize) -> Result<Vec<f32>> {
    let scores = keys
        .elements(KEY_SCORES, "a number", |v| match v {
            Value::F32(x) => Some(*x),
            Value::I32(x) => Some(*x as f32),
            _ => None,
        })?
        .ok_or_else(|| {
            keys.error(
                KEY_SCORES,
                "missing (a llama vocabulary is merged by piece score)",
            )
        })?;
    if scores.len() < n {
        return Err(keys.error(
            KEY_SCORES,
            format!("{} scores for {n} tokens", scores.len()),
        ));
    }
    Ok(scores[..n].to_vec())
}

fn read_pre(keys: &Keys) -> Result<&'static PreTokenizer> {
    let name = keys.string(KEY_PRE)?.unwrap_or("default");
    pre_tokenizer(name).ok_or_else(|| {
        keys.error(
            KEY_PRE,
            format!(
                "unsupported pre-tokenizer type {name:?} (not one whose llama.cpp regexes \
                 Metis knows)"
            ),
        )
    })
}

/// Ranked merges, each split at the first space after its first byte (llama.cpp:
/// `word.find(' ', 1)`), so a piece may itself start with a space.
fn read_merges(keys: &Keys) -> Result<Vec<(String, String)>> {
    let merges = keys
        .elements(KEY_MERGES, "a string", |v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })?
        .ok_or_else(|| keys.error(KEY_MERGES, "missing (a gpt2 vocabulary needs its merges)"))?;
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // Bytewise: the first byte may start a multi-byte character ("Ġ t").
            let cut = m
                .bytes()
                .skip(1)
                .position(|b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| {
                    keys.error(
                        KEY_MERGES,
                        format!("element {i} ({m:?}) is not \"left right\""),
                    )
                })?;
            Ok((m[..cut].to_owned(), m[cut + 1..].to_owned()))
        })
        .collect()
}

/// The tokens llama.cpp takes back out of the end-of-generation set, with their new type:
/// gpt-oss (and solar-open) end a message with `<|end|>`, not the generation, and Gemma 4
/// uses `</s>` as text; each is dropped only when its companions are in the set.
fn eog_exceptions(eog: &BTreeSet<u32>, by_text: &HashMap<&str, u32>) -> Vec<(u32, TokenType)> {
    let in_eog = |t: &str| by_text.get(t).filter(|id| eog.contains(id)).copied();
    let mut out = Vec::new();
    let call = in_eog("<|call|>").or(in_eog("<|calls|>")).is_some();
    let companion = in_eog("<|return|>").or(in_eog("<|flush|>")).is_some();
    if let Some(end) = in_eog("<|end|>").filter(|_| call && companion) {
        out.push((end, TokenType::UserDefined));
    }
    if let Some(s) = in_eog("</s>").filter(|_| in_eog("<|tool_response>").is_some()) {
        out.push((s, TokenType::Normal));
    }
    out
}

/// Byte-level BPE with llama.cpp's split regexes for the pre-tokenizer type.
fn byte_level_bpe(
    vocab: BpeVocab,
    merges: Vec<(String, String)>,
    pre: &PreTokenizer,
) -> std::result::Result<tokenizers::Tokenizer, String> {
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| e.to_string())?;
    let mut steps = pre
        .regexes
        .iter()
        .map(|re| {
            Split::new(
                SplitPattern::Regex((*re).to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map(PreTokenizerWrapper::Split)
            .map_err(|e| format!("pre-tokenizer regex {re:?}: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    // The regexes did the splitting; ByteLevel only maps bytes to its alphabet.
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, false,
    )));
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(PreSequence::new(steps)))
        .with_decoder(Some(ByteLevel::default()));
    Ok(tok)
}

/// SentencePiece BPE: spaces as `▁`, optionally one prefixed, byte fallback, merges by score.
fn sentencepiece_bpe(
    vocab: BpeVocab,
    merges: Vec<(String, String)>,
    unk: Option<String>,
    add_space_prefix: bool,
) -> std::result::Result<tokenizers::Tokenizer, String> {
    let mut model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        model = model.unk_token(unk);
    }
    let model = model.build().map_err(|e| e.to_string())?;
    let err = |e: tokenizers::Error| e.to_string();
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new("\u{2581}".into())));
    }
    normalizers.push(NormalizerWrapper::Replace(
        Replace::new(" ", "\u{2581}").map_err(err)?,
    ));
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new("\u{2581}", " ").map_err(err)?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_normalizer(Some(NormSequence::new(normalizers)))
        .with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// Merges equivalent to llama.cpp's SentencePiece loop: every split of a piece into two
/// pieces, ranked by the merged piece's score (highest first; equal scores by piece id, then
/// by where the split falls).
fn spm_merges(tokens: &[String], scores: &[f32], vocab: &BpeVocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        for (cut, _) in text.char_indices().skip(1) {
            let (left, right) = text.split_at(cut);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                ranked.push((scores[id], id, cut, left, right));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_owned(), r.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String((*s).into())).collect())
    }

    fn metadata(entries: Vec<(&str, Value)>) -> HashMap<String, Value> {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    fn build(md: &HashMap<String, Value>) -> Result<Option<Tokenizer>> {
        from_metadata(md, Path::new("test.gguf"))
    }

    #[test]
    fn merges_split_at_the_first_space_after_the_first_byte() {
        let md = metadata(vec![(
            KEY_MERGES,
            strings(&["a b", "  x", "ab c d", "Ġ t"]),
        )]);
        let keys = Keys {
            md: &md,
            file: Path::new("m.gguf"),
        };
        let merges = read_merges(&keys).unwrap();
        assert_eq!(
            merges,
            vec![
                ("a".into(), "b".into()),
                (" ".into(), "x".into()),
                ("ab".into(), "c d".into()),
                ("Ġ".into(), "t".into())
            ]
        );
        let md = metadata(vec![(KEY_MERGES, strings(&["ab", "a b"]))]);
        let keys = Keys {
            md: &md,
            file: Path::new("m.gguf"),
        };
        let err = read_merges(&keys).unwrap_err().to_string();
        assert!(
            err.contains(KEY_MERGES) && err.contains("element 0"),
            "{err}"
        );
    }

    #[test]
    fn every_listed_pre_tokenizer_regex_compiles() {
        for name in [
            "default",
            "llama-bpe",
            "dbrx",
            "qwen2",
            "smollm",
            "gpt-2",
            "falcon",
            "deepseek-coder",
            "tekken",
        ] {
            let pre = pre_tokenizer(name).unwrap();
            for re in pre.regexes {
                Split::new(
                    SplitPattern::Regex((*re).to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: {re}: {e}"));
            }
        }
        assert!(pre_tokenizer("deepseek-llm").is_none());
    }

    #[test]
    fn sentencepiece_merges_follow_scores() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let vocab: BpeVocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // "bc" outranks "ab"; "abc" splits two ways and both splits are merges.
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let merges = spm_merges(&tokens, &scores, &vocab);
        let pair = |l: &str, r: &str| (l.to_owned(), r.to_owned());
        assert_eq!(
            merges,
            vec![
                pair("b", "c"),
                pair("a", "b"),
                pair("a", "bc"),
                pair("ab", "c")
            ]
        );
    }

    #[test]
    fn end_of_generation_follows_llama_cpp() {
        let tokens = [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<reponame>",
            "<|call|>",
            "<|return|>",
            "<|end|>",
            "a",
            "b",
        ];
        let mut types = vec![Value::I32(3); 7];
        types.extend([Value::I32(1), Value::I32(1)]);
        // <|end|> is written as a normal token: llama.cpp makes it control, then (with
        // <|call|> and <|return|> present) drops it from the stops as gpt-oss needs.
        types[6] = Value::I32(1);
        let md = metadata(vec![
            (KEY_MODEL, Value::String("gpt2".into())),
            (KEY_PRE, Value::String("gpt-2".into())),
            (KEY_TOKENS, strings(&tokens)),
            (KEY_TYPES, Value::Array(types)),
            (KEY_MERGES, strings(&[])),
            (KEY_EOS, Value::U32(2)),
            (KEY_BOS, Value::U32(1)),
        ]);
        let tok = build(&md).unwrap().unwrap();
        // <|endoftext|> and <|im_end|> by text, <reponame> as the FIM repo marker, the
        // harmony markers by text; <|end|> removed.
        assert_eq!(tok.stop_ids(), &[0, 2, 3, 4, 5]);
        assert_eq!(tok.bos_token(), Some("<|im_start|>"));
        assert_eq!(tok.eos_token(), Some("<|im_end|>"));
        // <|end|> is user-defined now: still matched in text, shown when decoding.
        assert_eq!(tok.encode("a<|end|>", false).unwrap(), vec![7, 6]);
        assert_eq!(tok.decode(&[6, 2], true).unwrap(), "<|end|>");
    }
}
