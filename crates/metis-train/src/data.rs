//! SFT data: chat JSONL in TRL's conversational format, rendered with the model's chat
//! template, tokenized with an assistant-only loss mask, truncated or packed, shuffled per
//! epoch with a seeded permutation, and collated into padded batches.
//!
//! # Input format
//!
//! One JSON object per line (blank lines are skipped):
//!
//! ```json
//! {"messages": [{"role": "system", "content": "..."},
//!               {"role": "user", "content": "..."},
//!               {"role": "assistant", "content": "<think>\n...\n</think>\n\nAnswer"}]}
//! ```
//!
//! TRL's prompt–completion form `{"prompt": [messages], "completion": [messages]}` is
//! accepted too (the two lists are concatenated). Roles are `system`, `user` and
//! `assistant`; `content` must be a string. An assistant message may carry its reasoning in a
//! separate string field `reasoning` (or `reasoning_content`); it is then rendered as
//! `<think>\n{reasoning}\n</think>\n\n{content}`. Every record needs at least one assistant
//! message. Bad records are reported as `FILE:LINE: FIELD: problem`.
//!
//! # Loss mask
//!
//! The conversation is rendered with the chat template (the tokenizer directory's own, else
//! [`BUILTIN_TEMPLATE`]) and tokenized without adding special tokens (the template emits
//! BOS itself). For each assistant message `i` the renderer also renders
//! `messages[..i]` with `add_generation_prompt = true` (where the turn's content starts) and
//! `messages[..=i]` (where the turn ends, including its end-of-turn token, e.g. Llama 3's
//! `<|eot_id|>`); both are tokenized and the tokens between the two lengths are marked as
//! loss tokens. When a prefix does not tokenize to a prefix of the whole conversation (a BPE
//! merge across the boundary), the boundary is the length of the common token prefix. A
//! template that renders earlier turns differently once later turns follow (so a prefix
//! render is not a text prefix of the full render) is rejected with an error.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use metis_engine::chat::{ChatTemplate, Message, RenderOptions};
use metis_engine::tokenizer::Tokenizer;
use serde_json::Value as Json;

pub use crate::rng::SplitMix64;

/// The chat template used when the tokenizer directory has none (Zephyr style): an optional
/// BOS, then per message `<|ROLE|>\n{content}{eos}\n`, and `<|assistant|>\n` as the
/// generation prompt. The end of an assistant turn is the tokenizer's EOS token followed by a
/// newline, so a model trained with it learns to stop.
pub const BUILTIN_TEMPLATE: &str = "{{- bos_token if bos_token is defined else '' -}}\
{%- for message in messages -%}\
{{- '<|' + message['role'] + '|>\\n' + message['content'] + (eos_token if eos_token is defined else '') + '\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}";

/// Errors reading or tokenizing the training data. Record errors name file, line and field.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad record: `path:line: field: message` (field omitted when the whole line is bad).
    #[error("{}:{line}: {}{message}", path.display(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Record {
        path: PathBuf,
        line: usize,
        field: Option<String>,
        message: String,
    },
    #[error("{}: no training examples", path.display())]
    Empty { path: PathBuf },
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// A parsed conversation and the (1-based) line it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub line: usize,
    pub messages: Vec<Message>,
}

/// Parse one JSONL record into messages. The error is `(field, message)`.
pub fn parse_record(line: &str) -> Result<Vec<Message>, (Option<String>, String)> {
    let value: Json =
        serde_json::from_str(line).map_err(|e| (None, format!("invalid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| (None, "record is not a JSON object".to_string()))?;
    let mut raw: Vec<(String, &Json)> = Vec::new();
    if let Some(m) = obj.get("messages") {
        let list = m
            .as_array()
            .ok_or_else(|| (Some("messages".into()), "not an array".into()))?;
        raw.extend(
            list.iter()
                .enumerate()
                .map(|(i, v)| (format!("messages[{i}]"), v)),
        );
    } else if obj.contains_key("prompt") || obj.contains_key("completion") {
        for key in ["prompt", "completion"] {
            let list = obj
                .get(key)
                .ok_or_else(|| (Some(key.to_string()), "missing".to_string()))?
                .as_array()
                .ok_or_else(|| {
                    (
                        Some(key.to_string()),
                        "not an array of messages (only the conversational prompt-completion form is supported)".to_string(),
                    )
                })?;
            raw.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{key}[{i}]"), v)),
            );
        }
    } else {
        return Err((Some("messages".into()), "missing".into()));
    }
    if raw.is_empty() {
        return Err((Some("messages".into()), "empty".into()));
    }
    let mut messages = Vec::with_capacity(raw.len());
    for (name, v) in raw {
        let m = v
            .as_object()
            .ok_or_else(|| (Some(name.clone()), "not an object".to_string()))?;
        let role = match m.get("role") {
            None => return Err((Some(format!("{name}.role")), "missing".into())),
            Some(Json::String(r)) => r.as_str(),
            Some(_) => return Err((Some(format!("{name}.role")), "not a string".into())),
        };
        if !matches!(role, "system" | "user" | "assistant") {
            return Err((
                Some(format!("{name}.role")),
                format!("unknown role {role:?} (expected system, user or assistant)"),
            ));
        }
        let content = match m.get("content") {
            None => return Err((Some(format!("{name}.content")), "missing".into())),
            Some(Json::String(c)) => c.as_str(),
            Some(other) => {
                return Err((
                    Some(format!("{name}.content")),
                    format!("not a string (found {})", json_kind(other)),
                ))
            }
        };
        let mut reasoning = None;
        for key in ["reasoning", "reasoning_content"] {
            match m.get(key) {
                None | Some(Json::Null) => {}
                Some(Json::String(r)) if role == "assistant" => reasoning = Some(r.as_str()),
                Some(Json::String(_)) => {
                    return Err((
                        Some(format!("{name}.{key}")),
                        "only assistant messages may carry reasoning".into(),
                    ))
                }
                Some(other) => {
                    return Err((
                        Some(format!("{name}.{key}")),
                        format!("not a string (found {})", json_kind(other)),
                    ))
                }
            }
        }
        let content = match reasoning {
            Some(r) => format!("<think>\n{r}\n</think>\n\n{content}"),
            None => content.to_string(),
        };
        messages.push(Message::new(role, content));
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err((Some("messages".into()), "no assistant message".into()));
    }
    Ok(messages)
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Read every record of a JSONL file; the first bad record is an error naming file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Conversation>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let messages = parse_record(&line).map_err(|(field, message)| DataError::Record {
            path: path.to_path_buf(),
            line: i + 1,
            field,
            message,
        })?;
        out.push(Conversation {
            line: i + 1,
            messages,
        });
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// A tokenized conversation. `loss_mask[t]` is true when token `t` belongs to an assistant
/// turn (so it is a prediction target: the logits at `t - 1` are scored against it).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
}

impl Example {
    /// Number of loss tokens.
    pub fn n_loss(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }

    /// Keep the first `max_len` tokens.
    pub fn truncate(&mut self, max_len: usize) {
        self.input_ids.truncate(max_len);
        self.loss_mask.truncate(max_len);
    }
}

/// Renders conversations with a chat template and tokenizes them with the assistant mask.
pub struct ChatFormatter {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    builtin: bool,
    pad_id: u32,
}

impl std::fmt::Debug for ChatFormatter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatFormatter")
            .field("builtin_template", &self.builtin)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

impl ChatFormatter {
    /// Load the tokenizer of `dir` (`tokenizer.json` + `tokenizer_config.json`, or a `.gguf`
    /// file's metadata) through the engine's loader; its chat template, else
    /// [`BUILTIN_TEMPLATE`].
    pub fn from_dir(dir: &Path) -> Result<ChatFormatter, DataError> {
        let loaded = metis_engine::loader::load_tokenizer(dir, None)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?
            .ok_or_else(|| DataError::Tokenizer(format!("{}: no tokenizer.json", dir.display())))?;
        Self::new(loaded.tokenizer)
    }

    /// Use a loaded tokenizer (its template, else [`BUILTIN_TEMPLATE`]).
    pub fn new(tokenizer: Tokenizer) -> Result<ChatFormatter, DataError> {
        let (template, builtin) = match ChatTemplate::from_tokenizer(&tokenizer) {
            Some(t) => (t.map_err(|e| DataError::Template(e.to_string()))?, false),
            None => (
                ChatTemplate::new(
                    BUILTIN_TEMPLATE,
                    tokenizer.bos_token(),
                    tokenizer.eos_token(),
                )
                .map_err(|e| DataError::Template(e.to_string()))?,
                true,
            ),
        };
        Ok(Self::with_template(tokenizer, template, builtin))
    }

    /// Use an explicit template.
    pub fn with_template(tokenizer: Tokenizer, template: ChatTemplate, builtin: bool) -> Self {
        // Padding is masked out of attention and loss; any valid id will do.
        let pad_id = ["<|finetune_right_pad_id|>", "<pad>", "<|endoftext|>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .or_else(|| tokenizer.stop_ids().first().copied())
            .unwrap_or(0);
        ChatFormatter {
            tokenizer,
            template,
            builtin,
            pad_id,
        }
    }

    /// Whether the built-in template is in use (the tokenizer had none).
    pub fn uses_builtin_template(&self) -> bool {
        self.builtin
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn render(&self, messages: &[Message], gen: bool) -> Result<String, String> {
        let opts = RenderOptions {
            add_generation_prompt: gen,
            ..RenderOptions::default()
        };
        self.template
            .render(messages, &opts)
            .map_err(|e| e.to_string())
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map_err(|e| e.to_string())
    }

    /// Render and tokenize a conversation with its assistant-token mask (not truncated).
    pub fn tokenize(&self, messages: &[Message]) -> Result<Example, String> {
        let full_text = self.render(messages, false)?;
        let input_ids = self.encode(&full_text)?;
        let mut loss_mask = vec![false; input_ids.len()];
        // Token boundary of a rendered prefix within the full tokenization.
        let boundary = |text: &str, what: &str, i: usize| -> Result<usize, String> {
            if !full_text.starts_with(text) {
                return Err(format!(
                    "the chat template renders messages[..{}] ({what}) differently from the start \
                     of the whole conversation, so the assistant tokens cannot be located",
                    i
                ));
            }
            let ids = self.encode(text)?;
            Ok(ids
                .iter()
                .zip(&input_ids)
                .take_while(|(a, b)| a == b)
                .count())
        };
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let start = boundary(&self.render(&messages[..i], true)?, "generation prompt", i)?;
            let end = boundary(&self.render(&messages[..=i], false)?, "turn end", i + 1)?;
            for flag in &mut loss_mask[start..end.max(start)] {
                *flag = true;
            }
        }
        Ok(Example {
            input_ids,
            loss_mask,
        })
    }
}

/// Tokenized training data.
#[derive(Clone, Debug, Default)]
pub struct TokenizedData {
    /// Examples, in file order, each at most `max_len` tokens.
    pub examples: Vec<Example>,
    /// Source line of each example.
    pub lines: Vec<usize>,
    /// Examples that were longer than `max_len` and were cut.
    pub truncated: usize,
    /// Examples dropped because no assistant token survived truncation.
    pub dropped: usize,
}

/// Read, render and tokenize a JSONL file; examples are truncated to `max_len` tokens.
pub fn load_examples(
    path: &Path,
    formatter: &ChatFormatter,
    max_len: usize,
) -> Result<TokenizedData, DataError> {
    let convs = read_jsonl(path)?;
    let mut out = TokenizedData::default();
    for c in &convs {
        let mut ex = formatter
            .tokenize(&c.messages)
            .map_err(|message| DataError::Record {
                path: path.to_path_buf(),
                line: c.line,
                field: Some("messages".into()),
                message,
            })?;
        if ex.input_ids.len() > max_len {
            ex.truncate(max_len);
            out.truncated += 1;
        }
        // The first token is never a target (nothing precedes it).
        if ex.loss_mask.iter().skip(1).any(|&m| m) {
            out.examples.push(ex);
            out.lines.push(c.line);
        } else {
            out.dropped += 1;
        }
    }
    if out.examples.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// One training sequence: a single example, or several packed ones. `segment_ids` number the
/// documents from 1 (attention never crosses documents); `position_ids` restart at 0 for
/// each document.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequence {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
    pub segment_ids: Vec<u32>,
    pub position_ids: Vec<u32>,
}

impl Sequence {
    /// A sequence holding one example.
    pub fn single(ex: &Example) -> Sequence {
        let n = ex.input_ids.len();
        Sequence {
            input_ids: ex.input_ids.clone(),
            loss_mask: ex.loss_mask.clone(),
            segment_ids: vec![1; n],
            position_ids: (0..n as u32).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Number of tokens scored: loss-mask tokens with a preceding token of the same document.
    pub fn n_targets(&self) -> usize {
        (1..self.len())
            .filter(|&t| self.loss_mask[t] && self.segment_ids[t] == self.segment_ids[t - 1])
            .count()
    }
}

/// Pack examples (each already at most `max_len` long) greedily in order: an example goes
/// into the current pack if it fits, else it starts a new one.
pub fn pack(examples: &[Example], max_len: usize) -> Vec<Sequence> {
    let mut out: Vec<Sequence> = Vec::new();
    let mut cur: Option<Sequence> = None;
    for ex in examples {
        let n = ex.input_ids.len().min(max_len);
        if let Some(c) = &cur {
            if c.len() + n > max_len {
                out.extend(cur.take());
            }
        }
        let c = cur.get_or_insert_with(|| Sequence {
            input_ids: Vec::new(),
            loss_mask: Vec::new(),
            segment_ids: Vec::new(),
            position_ids: Vec::new(),
        });
        let seg = c.segment_ids.last().copied().unwrap_or(0) + 1;
        c.input_ids.extend_from_slice(&ex.input_ids[..n]);
        c.loss_mask.extend_from_slice(&ex.loss_mask[..n]);
        c.segment_ids.resize(c.segment_ids.len() + n, seg);
        c.position_ids.extend(0..n as u32);
    }
    out.extend(cur);
    out
}

/// Build the training sequences: packed (`packing`) or one per example.
pub fn sequences(examples: &[Example], max_len: usize, packing: bool) -> Vec<Sequence> {
    if packing {
        pack(examples, max_len)
    } else {
        examples
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.truncate(max_len);
                Sequence::single(&e)
            })
            .collect()
    }
}

/// A padded batch (right padding), row-major `[batch, seq_len]`. Padding has segment id 0,
/// loss mask false and position 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
    pub segment_ids: Vec<u32>,
    pub position_ids: Vec<u32>,
}

impl Batch {
    /// Shifted targets and weights for next-token loss, `[batch, seq_len]` row-major:
    /// `targets[b, t] = input_ids[b, t + 1]`, `weights[b, t] = 1` when token `t + 1` is a loss
    /// token of the same document as token `t` (the last column is always 0).
    pub fn targets(&self) -> (Vec<u32>, Vec<f32>) {
        let (b, s) = (self.batch, self.seq_len);
        let mut targets = vec![0u32; b * s];
        let mut weights = vec![0f32; b * s];
        for r in 0..b {
            for t in 0..s.saturating_sub(1) {
                let i = r * s + t;
                targets[i] = self.input_ids[i + 1];
                if self.loss_mask[i + 1]
                    && self.segment_ids[i + 1] != 0
                    && self.segment_ids[i + 1] == self.segment_ids[i]
                {
                    weights[i] = 1.0;
                }
            }
        }
        (targets, weights)
    }

    /// Number of scored tokens.
    pub fn n_targets(&self) -> usize {
        self.targets().1.iter().filter(|&&w| w > 0.0).count()
    }

    /// Number of non-padding tokens.
    pub fn n_tokens(&self) -> usize {
        self.segment_ids.iter().filter(|&&s| s != 0).count()
    }
}

/// Pad sequences into a batch.
pub fn collate(seqs: &[&Sequence], pad_id: u32) -> Batch {
    let b = seqs.len();
    let s = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
    let mut batch = Batch {
        batch: b,
        seq_len: s,
        input_ids: vec![pad_id; b * s],
        loss_mask: vec![false; b * s],
        segment_ids: vec![0; b * s],
        position_ids: vec![0; b * s],
    };
    for (r, q) in seqs.iter().enumerate() {
        let o = r * s;
        let n = q.len();
        batch.input_ids[o..o + n].copy_from_slice(&q.input_ids);
        batch.loss_mask[o..o + n].copy_from_slice(&q.loss_mask);
        batch.segment_ids[o..o + n].copy_from_slice(&q.segment_ids);
        batch.position_ids[o..o + n].copy_from_slice(&q.position_ids);
    }
    batch
}

/// The order of the `n` sequences in epoch `epoch` (0-based): a Fisher–Yates shuffle driven
/// by SplitMix64 seeded from `(seed, epoch)`. A pure function, so resuming mid-epoch replays
/// exactly the same order.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ epoch.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_deterministic_and_differs_per_epoch() {
        let a = epoch_permutation(50, 7, 0);
        assert_eq!(a, epoch_permutation(50, 7, 0));
        assert_ne!(a, epoch_permutation(50, 7, 1));
        assert_ne!(a, epoch_permutation(50, 8, 0));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn record_errors_name_fields() {
        let e = parse_record(
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":3}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.0.as_deref(), Some("messages[1].content"));
        let e = parse_record(r#"{"messages":[{"role":"bot","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.0.as_deref(), Some("messages[0].role"));
        let e = parse_record(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert!(e.1.contains("no assistant"));
        let e = parse_record(r#"{"messages":[]}"#).unwrap_err();
        assert_eq!(e.1, "empty");
        let e = parse_record("{").unwrap_err();
        assert!(e.1.starts_with("invalid JSON"));
    }

    #[test]
    fn reasoning_is_wrapped() {
        let m = parse_record(
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","reasoning":"r","content":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(m[1].content, "<think>\nr\n</think>\n\na");
    }

    #[test]
    fn packing_segments_and_positions() {
        let ex = |n: usize| Example {
            input_ids: (0..n as u32).collect(),
            loss_mask: vec![true; n],
        };
        let p = pack(&[ex(3), ex(2), ex(4)], 5);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].segment_ids, vec![1, 1, 1, 2, 2]);
        assert_eq!(p[0].position_ids, vec![0, 1, 2, 0, 1]);
        assert_eq!(p[0].n_targets(), 3);
        assert_eq!(p[1].segment_ids, vec![1; 4]);
        let b = collate(&[&p[0], &p[1]], 9);
        assert_eq!(b.seq_len, 5);
        assert_eq!(b.input_ids[5..], [0, 1, 2, 3, 9]);
        let (t, w) = b.targets();
        assert_eq!(t[..4], [1, 2, 0, 1]);
        assert_eq!(w[..5], [1.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(w[5..], [1.0, 1.0, 1.0, 0.0, 0.0]);
    }
}
