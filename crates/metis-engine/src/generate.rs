//! Autoregressive generation: prefill the prompt into the KV cache, then one token per step
//! until a stop token, a stop string or the token budget; a callback sees every token as it
//! is produced (streaming), with reasoning and answer text kept apart through `metis-verify`.

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use metis_verify::reasoning::{Delimiters, StreamDelta, StreamSplitter};
use serde::Serialize;

use crate::model::{EngineError, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{Tokenizer, TokenizerError};

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
    let mut sampler = Sampler::new(opts.sampling);
    let mut splitter = StreamSplitter::new(Delimiters::default(), prompt_opens_reasoning);
    let mut decoder = tokenizer.map(|t| t.decode_stream(true));
    let mut ids = Vec::new();
    let mut logprobs = Vec::new();
    let mut text = String::new();
    let mut finish = FinishReason::Length;

    if prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let mut input = Tensor::new(prompt_ids, &device)?.unsqueeze(0)?;
    while ids.len() < opts.max_tokens {
        // Logits of the last position of the only sequence: [vocab].
        let last: Vec<f32> = model.forward_last(&input, &mut cache)?.get(0)?.to_vec1()?;
        let choice = sampler.sample(&last);
        if !opts.ignore_eos && opts.stop_ids.contains(&choice.token) {
            finish = FinishReason::Stop;
            break;
        }
        ids.push(choice.token);
        logprobs.push(choice.logprob);
        let mut deltas = Vec::new();
        if let Some(d) = decoder.as_mut() {
            if let Some(piece) = d.push(choice.token)? {
                text.push_str(&piece);
                deltas = splitter.push(&piece);
            }
        }
        let stop_hit = stop_string_end(&text, &opts.stop_strings);
        let event = TokenEvent {
            id: choice.token,
            logprob: choice.logprob,
            deltas: &deltas,
        };
        if on_token(&event).is_break() {
            finish = FinishReason::Cancelled;
            break;
        }
        if let Some(cut) = stop_hit {
            text.truncate(cut);
            finish = FinishReason::Stop;
            break;
        }
        input = Tensor::new(&[choice.token], &device)?.unsqueeze(0)?;
    }
    if let Some(d) = decoder.as_mut() {
        if let Some(piece) = d.finish()? {
            if finish != FinishReason::Stop || opts.stop_strings.is_empty() {
                text.push_str(&piece);
            }
        }
    }
    let (text, reasoning, answer) = match tokenizer {
        Some(_) => {
            // A prompt that opened the block leaves only the closing delimiter in the output.
            let full = if prompt_opens_reasoning {
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
        ids,
        logprobs,
        finish_reason: finish,
        text,
        reasoning,
        answer,
    })
}

/// Where the earliest stop string starts in `text`, if any occurs.
fn stop_string_end(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}
