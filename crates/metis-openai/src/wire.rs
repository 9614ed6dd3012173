//! The JSON of the OpenAI-compatible API, once, for every side of it: the [`crate::client`]
//! serialises requests and deserialises responses, `metis serve` serialises the responses it
//! sends, and the fake server (feature `fake-server`) does the reverse of the client. Every
//! type is `Serialize + Deserialize`, so what one side writes the other reads.
//!
//! Besides OpenAI's fields (<https://platform.openai.com/docs/api-reference/chat/object>,
//! <https://platform.openai.com/docs/api-reference/completions/object>) the types carry the
//! extensions Metis relies on:
//! - reasoning models' `message.reasoning_content` (llama.cpp, DeepSeek, older vLLM) and
//!   `message.reasoning` (vLLM since it renamed the field), in responses and stream deltas;
//! - `metis_guard`, the guardrail checks `metis serve` ran on a request ([`GuardCheck`]);
//! - vLLM's completions parameters `return_tokens_as_token_ids`, `stop_token_ids` and
//!   `skip_special_tokens`, and its `max_model_len` on a model card;
//! - the log-probabilities of chat (`logprobs.content`) and of completions (`tokens`,
//!   `token_logprobs`);
//! - vLLM's runtime LoRA bodies ([`LoadLoraAdapterRequest`], [`UnloadLoraAdapterRequest`]).
//!
//! Errors are OpenAI's `{"error": {...}}` ([`ErrorResponse`]), whose `code` is a name or, from
//! llama.cpp, a status.
//!
//! Readers are lenient where servers differ (a missing `id`, `usage` or `index`; `null` text)
//! and writers skip what OpenAI's schema marks optional, so the JSON the client sends and the
//! JSON `metis serve` answers are what they were before the types were shared. Request bodies
//! borrow their large parts (messages, prompts) through [`Cow`], so the client serialises a
//! caller's request without copying it.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One chat message (`role` is `system`, `user`, `assistant`, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// `POST /v1/chat/completions` body (non-streaming requests; the fields Metis sends).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatCompletionRequest<'a> {
    /// Required by OpenAI; a reader takes a missing one as `""`.
    #[serde(default)]
    pub model: String,
    pub messages: Cow<'a, [ChatMessage]>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_as_integer"
    )]
    pub temperature: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_as_integer"
    )]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    /// Ask for the log-probability of each generated token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// With `logprobs`: how many alternatives to list at each position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

/// `POST /v1/completions` `prompt`: a string, or token ids (vLLM and OpenAI accept both).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Prompt<'a> {
    Text(Cow<'a, str>),
    Tokens(Cow<'a, [u32]>),
}

/// `POST /v1/completions` body (non-streaming; the fields Metis sends, vLLM's included).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CompletionRequest<'a> {
    /// Required by OpenAI; a reader takes a missing one as `""`.
    #[serde(default)]
    pub model: String,
    pub prompt: Prompt<'a>,
    /// Completions of the prompt (vLLM seeds the `i`-th with `seed + i`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_as_integer"
    )]
    pub temperature: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_as_integer"
    )]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Log-probabilities of the sampled token and this many alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// vLLM: tokens as `token_id:N` instead of text pieces, so ids survive the round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_tokens_as_token_ids: Option<bool>,
    /// vLLM: ids that end a completion, besides the model's end-of-sequence ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_token_ids: Option<Cow<'a, [u32]>>,
    /// vLLM: whether special tokens are dropped from the returned text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_special_tokens: Option<bool>,
    #[serde(default)]
    pub stream: bool,
}

/// Token counts of a response. Each is optional because servers differ in what they report;
/// a reader must not take a missing count for zero. Writers fill all three ([`Usage::new`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
}

impl Usage {
    /// All three counts, the total being the sum.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens: Some(prompt_tokens),
            completion_tokens: Some(completion_tokens),
            total_tokens: Some(prompt_tokens + completion_tokens),
        }
    }
}

/// One guardrail check of a deployment: which text it judged, the outcome, the violated
/// categories and the guard model's raw output. `metis serve` returns these as `metis_guard`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuardCheck {
    /// `input` (the request) or `output` (the answer).
    pub stage: String,
    pub safe: bool,
    /// Violated category codes (e.g. `S2`).
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub raw: String,
}

/// One candidate token and its log-probability (an entry of `top_logprobs`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
}

/// One generated token of a chat completion with its log-probability and the most likely
/// alternatives at its position (`choices[0].logprobs.content[k]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenLogprobs {
    pub token: String,
    pub logprob: f64,
    pub top_logprobs: Vec<TopLogprob>,
}

/// `choices[i].logprobs` of a chat completion (`null` when not asked for).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ChoiceLogprobs {
    #[serde(default)]
    pub content: Option<Vec<TokenLogprobs>>,
}

/// The assistant message of a chat completion choice.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ResponseMessage {
    #[serde(default)]
    pub role: String,
    /// `null` when the model gave no answer (e.g. cut off while reasoning, as vLLM sends it).
    #[serde(default)]
    pub content: Option<String>,
    /// The reasoning, under both names clients look for (vLLM renamed the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

/// One choice of a chat completion.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatChoice {
    #[serde(default)]
    pub index: usize,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// `POST /v1/chat/completions` response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    /// `chat.completion`.
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<ChatChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Metis extension: the guardrail checks run on this request (absent without a guard), so
    /// a client measuring the deployment (`metis safety`) sees why an answer was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metis_guard: Vec<GuardCheck>,
}

/// The new text of one streamed chat chunk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

/// One choice of a streamed chat chunk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: usize,
    pub delta: Delta,
    /// `null` until the last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// One server-sent event of a streamed chat completion (`chat.completion.chunk`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletionChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Absent unless the client asked for usage (`stream_options.include_usage`); then `null`
    /// on every chunk but the last, which carries the counts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    pub usage: Option<Option<Usage>>,
}

/// `choices[i].logprobs` of a (legacy) completion: the generated tokens and their
/// log-probabilities, position by position (`null` for a position without one).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct CompletionLogprobs {
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub token_logprobs: Vec<Option<f32>>,
}

/// One choice of a completion (or of a streamed completion chunk).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CompletionChoice {
    /// Optional so that a reader can fall back to the choice's position when a server omits
    /// it; writers always set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// A `null` text reads as `""`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub text: String,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<CompletionLogprobs>,
}

/// `POST /v1/completions` response (`text_completion`; also each chunk of a stream).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelCard {
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub owned_by: String,
    /// vLLM extension: the context length the server runs the model with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
}

/// `GET /v1/models` response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelList {
    #[serde(default)]
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// vLLM `POST /v1/load_lora_adapter` body: serve the PEFT adapter at `lora_path` (as the
/// server sees it) under the model name `lora_name`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadLoraAdapterRequest {
    pub lora_name: String,
    pub lora_path: String,
}

/// vLLM `POST /v1/unload_lora_adapter` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnloadLoraAdapterRequest {
    pub lora_name: String,
}

/// `code` of an error: OpenAI sends a name (`invalid_api_key`), llama.cpp the HTTP status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ErrorCode {
    Name(String),
    Status(u16),
}

/// The `error` object of an error response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorObject {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request parameter at fault, if one is.
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<ErrorCode>,
}

/// An error response body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorResponse {
    pub error: ErrorObject,
}

/// Writes a whole number as a JSON integer (`0`, not `0.0`), as Python and JavaScript clients
/// do; servers read both alike, and a temperature of 0 keeps the form the remote guard always
/// sent.
fn whole_as_integer<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    // Beyond 2^53 not every integer is a distinct f64: keep such values as floats.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Some(v) if v.fract() == 0.0 && v.abs() <= EXACT => s.serialize_i64(*v as i64),
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}

/// Reads `null` as the type's default (serde's `default` covers only a missing field).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads a field that is present as `Some(value)`, `null` included (`Some(None)`); with
/// `default`, a missing field stays `None`.
fn present_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn to_value<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn chat_request_round_trips_and_skips_what_is_unset() {
        let messages = [ChatMessage::system("s"), ChatMessage::user("u")];
        let req = ChatCompletionRequest {
            model: "m".into(),
            messages: Cow::Borrowed(&messages),
            temperature: Some(0.6),
            top_p: Some(1.0),
            max_tokens: Some(8),
            seed: None,
            stream: false,
            logprobs: None,
            top_logprobs: None,
        };
        let v = to_value(&req);
        assert_eq!(
            v,
            json!({"model": "m", "messages": [{"role": "system", "content": "s"},
                   {"role": "user", "content": "u"}],
                   "temperature": 0.6, "top_p": 1, "max_tokens": 8, "stream": false})
        );
        // A whole number goes as an integer, a fraction as a float.
        assert!(v["top_p"].is_i64() && v["temperature"].is_f64());
        let back: ChatCompletionRequest<'static> = serde_json::from_value(v).unwrap();
        assert_eq!(back.top_p, Some(1.0));
        assert_eq!(back.messages.as_ref(), messages.as_slice());
        assert_eq!(
            back,
            ChatCompletionRequest {
                messages: Cow::Owned(messages.to_vec()),
                ..req
            }
        );
    }

    #[test]
    fn completion_prompt_is_text_or_token_ids() {
        let ids = [5u32, 7];
        let req = CompletionRequest {
            model: "m".into(),
            prompt: Prompt::Tokens(Cow::Borrowed(&ids)),
            n: Some(2),
            temperature: Some(1.0),
            top_p: Some(0.5),
            max_tokens: Some(4),
            seed: Some(3),
            logprobs: Some(1),
            return_tokens_as_token_ids: Some(true),
            stop_token_ids: Some(Cow::Borrowed(&[2])),
            skip_special_tokens: Some(false),
            stream: false,
        };
        let v = to_value(&req);
        assert_eq!(v["prompt"], json!([5, 7]));
        assert_eq!(v["stop_token_ids"], json!([2]));
        assert_eq!(v["return_tokens_as_token_ids"], json!(true));
        let back: CompletionRequest<'static> = serde_json::from_value(v).unwrap();
        assert_eq!(back.prompt, Prompt::Tokens(Cow::Owned(vec![5, 7])));
        let text: CompletionRequest<'static> =
            serde_json::from_value(json!({"model": "g", "prompt": "hi", "temperature": 0}))
                .unwrap();
        assert_eq!(text.prompt, Prompt::Text(Cow::Owned("hi".into())));
        assert_eq!(text.temperature, Some(0.0));
        assert_eq!(text.n, None);
        assert!(!text.stream);
    }

    #[test]
    fn lenient_reads_of_sparse_responses() {
        let chat: ChatCompletion = serde_json::from_value(json!({
            "choices": [{"message": {"content": null, "reasoning": "r"}, "finish_reason": "length"}]
        }))
        .unwrap();
        assert_eq!(chat.id, "");
        assert_eq!(chat.usage, None);
        assert_eq!(chat.choices[0].message.content, None);
        assert_eq!(chat.choices[0].message.reasoning.as_deref(), Some("r"));
        assert!(chat.metis_guard.is_empty());

        let usage: Usage = serde_json::from_value(json!({"prompt_tokens": 3})).unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(3), None)
        );

        let done: Completion = serde_json::from_value(json!({
            "choices": [{"text": null, "finish_reason": "stop"}]
        }))
        .unwrap();
        assert_eq!(done.choices[0].text, "");
        assert_eq!(done.choices[0].index, None);

        let models: ModelList = serde_json::from_value(json!({"data": [{"id": "a"}]})).unwrap();
        assert_eq!(models.data[0].id, "a");
        assert_eq!(models.data[0].max_model_len, None);
    }

    #[test]
    fn response_writes_nulls_where_openai_does() {
        let resp = ChatCompletion {
            id: "c".into(),
            object: "chat.completion".into(),
            created: 1,
            model: "m".into(),
            choices: vec![ChatChoice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: None,
                    reasoning_content: Some("r".into()),
                    reasoning: None,
                },
                finish_reason: Some("length".into()),
                logprobs: None,
            }],
            usage: Some(Usage::new(2, 3)),
            metis_guard: Vec::new(),
        };
        let v = to_value(&resp);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["logprobs"], Value::Null);
        assert!(v["choices"][0]["message"].get("reasoning").is_none());
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
        );
        assert!(v.get("metis_guard").is_none());
        assert_eq!(serde_json::from_value::<ChatCompletion>(v).unwrap(), resp);
    }

    #[test]
    fn chunk_usage_is_absent_null_or_counts() {
        let chunk = |usage| ChatCompletionChunk {
            id: "c".into(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: "m".into(),
            choices: Vec::new(),
            usage,
        };
        for usage in [None, Some(None), Some(Some(Usage::new(1, 1)))] {
            let v = to_value(&chunk(usage));
            assert_eq!(v.get("usage").is_some(), usage.is_some(), "{v}");
            let back: ChatCompletionChunk = serde_json::from_value(v).unwrap();
            assert_eq!(back.usage, usage);
        }
    }

    #[test]
    fn error_code_is_a_name_or_a_status() {
        let named: ErrorResponse = serde_json::from_value(json!({
            "error": {"message": "bad key", "type": "authentication_error", "param": null,
                      "code": "invalid_api_key"}
        }))
        .unwrap();
        assert_eq!(
            named.error.code,
            Some(ErrorCode::Name("invalid_api_key".into()))
        );
        let numbered: ErrorResponse = serde_json::from_value(json!({
            "error": {"message": "busy", "type": "server_error", "code": 503}
        }))
        .unwrap();
        assert_eq!(numbered.error.code, Some(ErrorCode::Status(503)));
        assert_eq!(numbered.error.param, None);
        assert_eq!(to_value(&numbered)["error"]["code"], json!(503));
    }
}
