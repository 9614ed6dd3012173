//! Autoregressive generation: prefill the prompt into the KV cache, then one token per step
//! until a stop token, a stop string or the token budget; a callback sees every token as it
//! is produced (streaming), with reasoning and answer text kept apart through `metis-verify`.

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use metis_verify::reasoning::{Delimiters, StreamDelta, StreamSplitter};
use serde::Serialize;

use crate::model::{EngineError, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{DecodeStream, Tokenizer, TokenizerError};

/// Errors of a generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty: generation needs at least one token")]
    EmptyPrompt,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// The token budget ran out.
    Length,
    /// The callback asked to stop.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "stop",
        }
    }
}

/// Settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end generation (not included in the output).
    pub stop_ids: Vec<u32>,
    /// Strings that end generation (the text is cut before them). Needs a tokenizer.
    pub stop_strings: Vec<String>,
    /// Keep going through stop tokens (benchmarks, parity checks).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_ids: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// One generated token, as given to the streaming callback.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent<'a> {
    pub id: u32,
    pub logprob: f32,
    /// Newly certain text, classified as reasoning or answer (empty without a tokenizer or
    /// while a multi-byte character or a delimiter is still incomplete).
    pub deltas: &'a [StreamDelta],
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Generated ids (stop token excluded).
    pub ids: Vec<u32>,
    /// Log-probability of each generated id under the sampling distribution's logits.
    pub logprobs: Vec<f32>,
    /// The stop id that ended the generation and its log-probability (None unless it ended on
    /// a stop id). Trainers append it: the end of turn is part of what the policy chose.
    pub stop_token: Option<(u32, f32)>,
    pub finish_reason: FinishReason,
    /// Decoded text of `ids` (special tokens skipped), when a tokenizer was given.
    pub text: Option<String>,
    pub reasoning: Option<String>,
    pub answer: Option<String>,
}

/// Generates a continuation of `prompt_ids`. `prompt_opens_reasoning` says whether the prompt
/// already opened a `<think>` block (a template that prefills it), for the reasoning split.
pub fn generate(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    prompt_opens_reasoning: bool,
    mut on_token: impl FnMut(&TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<Generation, GenerateError> {
    let device: Device = model.device().clone();
    let mut cache = model.new_cache(1);
    let mut seq = Sequence::new(tokenizer, opts.sampling, prompt_opens_reasoning);

    if prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let mut input = Tensor::new(prompt_ids, &device)?.unsqueeze(0)?;
    while seq.ids.len() < opts.max_tokens {
        // Logits of the last position of the only sequence: [vocab].
        let last: Vec<f32> = model.forward_last(&input, &mut cache)?.get(0)?.to_vec1()?;
        match seq.step(&last, opts, &mut on_token)? {
            Some(_) => break,
            None => input = Tensor::new(&[seq.last_token()], &device)?.unsqueeze(0)?,
        }
    }
    seq.finish(prompt_ids, opts)
}

/// Generates continuations of several prompts at once, as one left-padded batch through
/// [`Model::forward_batch`] (the shorter prompts are padded on the left and their pads masked,
/// so each continuation is the one [`generate`] gives for that prompt alone, up to float
/// rounding in the batched matmuls).
///
/// Sequence `i` samples with its own sampler seeded `opts.sampling.seed + i` (wrapping), so
/// a one-prompt batch reproduces [`generate`] exactly. A sequence that reaches a stop id, a
/// stop string or the token budget stops with its own `finish_reason`; until the whole batch
/// is done it keeps being fed a filler token (the first stop id, else 0 — also the prompt pad
/// token) whose outputs are ignored. Text decoding and the reasoning/answer split are those
/// of [`generate`]; there is no streaming callback. An empty batch gives an empty result;
/// any empty prompt is [`GenerateError::EmptyPrompt`].
pub fn generate_batch(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    prompt_opens_reasoning: bool,
) -> Result<Vec<Generation>, GenerateError> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(GenerateError::EmptyPrompt);
    }
    let device: Device = model.device().clone();
    let filler = opts.stop_ids.first().copied().unwrap_or(0);
    let (mut input, pads) = left_pad(prompts, filler, &device)?;
    let mut cache = model.new_padded_cache(&pads);
    let mut seqs: Vec<Sequence<'_>> = (0..prompts.len())
        .map(|i| {
            let mut sampling = opts.sampling;
            sampling.seed = sampling.seed.wrapping_add(i as u64);
            Sequence::new(tokenizer, sampling, prompt_opens_reasoning)
        })
        .collect();
    let mut done = vec![false; prompts.len()];
    for _ in 0..opts.max_tokens {
        let logits: Vec<Vec<f32>> = model.forward_batch(&input, &mut cache)?.to_vec2()?; // [b][vocab]
        let mut next = vec![filler; prompts.len()];
        for (i, (seq, row)) in seqs.iter_mut().zip(&logits).enumerate() {
            if done[i] {
                continue;
            }
            match seq.step(row, opts, &mut |_| ControlFlow::Continue(()))? {
                Some(_) => done[i] = true,
                None => next[i] = seq.last_token(),
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        input = Tensor::new(next.as_slice(), &device)?.unsqueeze(1)?; // [b, 1]
    }
    seqs.into_iter()
        .zip(prompts)
        .map(|(seq, prompt)| seq.finish(prompt, opts))
        .collect()
}

/// Left-pads `prompts` with `pad_id` to a common length: returns input_ids [batch, max_len]
/// u32 and the pad count of each prompt, ready for [`Model::new_padded_cache`] and
/// [`Model::forward_batch`].
pub fn left_pad(
    prompts: &[Vec<u32>],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor, Vec<usize>), GenerateError> {
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| max_len - p.len()).collect();
    let flat: Vec<u32> = prompts
        .iter()
        .zip(&pads)
        .flat_map(|(p, &pad)| std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()))
        .collect();
    let input = Tensor::from_vec(flat, (prompts.len(), max_len), device)?;
    Ok((input, pads))
}

/// The decoding state of one sequence: its sampler, the streaming detokenizer and reasoning
/// splitter, and what it generated so far. Shared by [`generate`] and [`generate_batch`].
struct Sequence<'t> {
    tokenizer: Option<&'t Tokenizer>,
    sampler: Sampler,
    splitter: StreamSplitter,
    decoder: Option<DecodeStream<'t>>,
    prompt_opens_reasoning: bool,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    stop_token: Option<(u32, f32)>,
    text: String,
    finish: FinishReason,
}

impl<'t> Sequence<'t> {
    fn new(
        tokenizer: Option<&'t Tokenizer>,
        sampling: SamplingParams,
        prompt_opens_reasoning: bool,
    ) -> Self {
        Self {
            tokenizer,
            sampler: Sampler::new(sampling),
            splitter: StreamSplitter::new(Delimiters::default(), prompt_opens_reasoning),
            decoder: tokenizer.map(|t| t.decode_stream(true)),
            prompt_opens_reasoning,
            ids: Vec::new(),
            logprobs: Vec::new(),
            stop_token: None,
            text: String::new(),
            finish: FinishReason::Length,
        }
    }

    /// The last generated token (only valid after a [`Sequence::step`] that kept going).
    fn last_token(&self) -> u32 {
        *self.ids.last().expect("a token was generated")
    }

    /// Samples the next token from `logits` of the last position, records it and tells
    /// `on_token`. Returns `Some(reason)` (also kept for [`Sequence::finish`]) when the
    /// sequence ends here.
    fn step(
        &mut self,
        logits: &[f32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(&TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Option<FinishReason>, GenerateError> {
        let choice = self.sampler.sample(logits);
        if !opts.ignore_eos && opts.stop_ids.contains(&choice.token) {
            self.stop_token = Some((choice.token, choice.logprob));
            return Ok(Some(self.end(FinishReason::Stop)));
        }
        self.ids.push(choice.token);
        self.logprobs.push(choice.logprob);
        let mut deltas = Vec::new();
        if let Some(d) = self.decoder.as_mut() {
            if let Some(piece) = d.push(choice.token)? {
                self.text.push_str(&piece);
                deltas = self.splitter.push(&piece);
            }
        }
        let stop_hit = stop_string_end(&self.text, &opts.stop_strings);
        let event = TokenEvent {
            id: choice.token,
            logprob: choice.logprob,
            deltas: &deltas,
        };
        if on_token(&event).is_break() {
            return Ok(Some(self.end(FinishReason::Cancelled)));
        }
        if let Some(cut) = stop_hit {
            self.text.truncate(cut);
            return Ok(Some(self.end(FinishReason::Stop)));
        }
        Ok(None)
    }

    fn end(&mut self, reason: FinishReason) -> FinishReason {
        self.finish = reason;
        reason
    }

    /// Flushes the detokenizer and splits reasoning from answer.
    fn finish(
        mut self,
        prompt_ids: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Generation, GenerateError> {
        let finish = self.finish;
        let mut text = std::mem::take(&mut self.text);
        if let Some(d) = self.decoder.as_mut() {
            if let Some(piece) = d.finish()? {
                if finish != FinishReason::Stop || opts.stop_strings.is_empty() {
                    text.push_str(&piece);
                }
            }
        }
        let (text, reasoning, answer) = match self.tokenizer {
            Some(_) => {
                // A prompt that opened the block leaves only the closing delimiter in the output.
                let full = if self.prompt_opens_reasoning {
                    format!("<think>{text}")
                } else {
                    text.clone()
                };
                let parts = metis_verify::reasoning::split(&full, &Delimiters::default());
                let reasoning = (!parts.reasoning.is_empty()).then(|| parts.reasoning.clone());
                let answer = parts.answer.trim().to_owned();
                (Some(text), reasoning, Some(answer))
            }
            None => (None, None, None),
        };
        Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            ids: self.ids,
            logprobs: self.logprobs,
            stop_token: self.stop_token,
            finish_reason: finish,
            text,
            reasoning,
            answer,
        })
    }
}

/// Where the earliest stop string starts in `text`, if any occurs.
fn stop_string_end(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}
