//! What a caller gives the [`Client`](super::Client) and gets back: requests in the terms of
//! the caller (sampling parameters, token ids), responses reduced to what Metis reads from
//! them plus the call's bookkeeping (attempts, latency, which replica answered).

use serde::{Deserialize, Serialize};

use crate::wire::{ChatMessage, GuardCheck, TokenLogprobs};

/// Sampling parameters sent with every request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GenParams {
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: u32,
    pub seed: Option<u64>,
}

/// A chat-completion request.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub params: GenParams,
}

/// A parsed chat-completion response plus bookkeeping about how it was obtained.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatResponse {
    /// `choices[0].message.content`; `null` becomes `""`. Returned verbatim (an unclosed
    /// `<think>` from a truncated generation is kept as is).
    pub content: String,
    /// `message.reasoning_content`, else `message.reasoning` (empty strings count as absent).
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Attempts used, including the successful one (1 = no retry).
    pub attempts: u32,
    /// Wall time of the whole call, retries and backoff included.
    pub latency_ms: u64,
    /// `base_url` of the endpoint that produced the response.
    pub endpoint: String,
    /// The guardrail checks the deployment ran on this request (`metis serve`'s `metis_guard`
    /// extension field, or a guard applied by the caller); empty when no guard ran.
    pub guard: Vec<GuardCheck>,
}

/// A chat completion asked for with `logprobs` and `top_logprobs` (a logprob judge):
/// the response plus the per-token log-probabilities, in generation order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatLogprobsResponse {
    pub chat: ChatResponse,
    /// Empty when the server sent no `logprobs` (some servers ignore the request).
    pub tokens: Vec<TokenLogprobs>,
}

/// A plain-text completion (`POST {base}/completions` with a string prompt): how classifier
/// judges such as HarmBench's are queried, with their own prompt format and no chat template.
#[derive(Clone, Debug, PartialEq)]
pub struct TextCompletionRequest {
    pub model: String,
    pub prompt: String,
    pub temperature: f64,
    pub max_tokens: u32,
}

/// The text of the first choice of a completion, with the call's bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct TextCompletionResponse {
    pub text: String,
    pub finish_reason: Option<String>,
    pub attempts: u32,
    pub latency_ms: u64,
    pub endpoint: String,
}

/// A completion request on token ids (`POST {base}/completions` with vLLM's extensions): the
/// prompt goes as ids and the completions come back as ids, so the server samples from
/// exactly the tokens a trainer scores, with no re-tokenization on either side.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenCompletionRequest {
    /// Served model name: the base model or the name a LoRA adapter was loaded under.
    pub model: String,
    pub prompt: Vec<u32>,
    /// Completions of the prompt (vLLM seeds the `i`-th with `seed + i`).
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: u32,
    /// vLLM only accepts seeds that fit in an `i64`.
    pub seed: Option<u64>,
    /// Ids that end a completion (vLLM's `stop_token_ids`, besides the model's EOS).
    pub stop_token_ids: Vec<u32>,
}

/// One completion as token ids.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenCompletion {
    /// Generated ids. vLLM keeps the stop id that ended a completion as the last id.
    pub ids: Vec<u32>,
    /// The log-probability the server reports for each id. vLLM computes it from the raw
    /// logits (before temperature) unless it runs with `--logprobs-mode processed_logprobs`.
    pub logprobs: Vec<f32>,
    /// `stop`, `length`, ... as the server gave it.
    pub finish_reason: Option<String>,
}

/// A parsed token-level completion response.
#[derive(Clone, Debug)]
pub struct TokenCompletionResponse {
    /// The `n` completions in `index` order.
    pub choices: Vec<TokenCompletion>,
    /// Attempts used, including the successful one (1 = no retry).
    pub attempts: u32,
    /// Wall time of the whole call, retries and backoff included.
    pub latency_ms: u64,
    /// `base_url` of the endpoint that produced the response.
    pub endpoint: String,
}

/// One OpenAI-compatible server (a data-parallel replica).
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
}

impl Endpoint {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
        }
    }
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}
