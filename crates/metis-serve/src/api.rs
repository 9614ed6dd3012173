//! OpenAI request types for `/v1/chat/completions` and `/v1/completions`, and the validation
//! that turns a request into generation settings. The responses the server sends are
//! `metis_openai::wire`'s types, the ones the Metis client reads.
//!
//! Requests keep types of their own, stricter and richer than the client's wire requests: a
//! server must accept OpenAI's content parts, `stop` lists, vLLM's `top_k`/`min_p` and Metis's
//! extensions, and refuse what it does not implement. Bodies are parsed by hand from bytes (not
//! through axum's `Json` extractor) so that every malformed body gets a 400 in OpenAI's error
//! shape, naming the offending parameter, instead of axum's plain-text 422.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Message content: a string or OpenAI's list of parts (only `text` parts are accepted).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Parameters shared by both completion endpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonParams {
    pub model: String,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// vLLM extension; 0 or -1 = off.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// vLLM extension.
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// vLLM extension: keep generating through end-of-sequence tokens.
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: CommonParams,
    /// Extra chat-template variables (vLLM convention); `enable_thinking: false` also turns
    /// off the server's `<think>` prefill for this request.
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// Metis extension: `false` asks for no default system prompt (honoured only under the
    /// `allow-override` policy).
    #[serde(default)]
    pub metis_system_prompt: Option<bool>,
}

/// `prompt`: a string or a list holding exactly one string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Parses a JSON body; syntax and type errors become 400 with serde's explanation.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Parse to a Value first so that "not JSON" and "JSON of the wrong shape" get distinct
    // messages.
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    };
    // Name the offending parameter: serde's messages do not, through `#[serde(flatten)]`.
    for (key, want, ok) in PARAM_TYPES {
        if let Some(v) = obj.get(*key).filter(|v| !v.is_null()) {
            if !ok(v) {
                return Err(ApiError::invalid_param(
                    key,
                    format!("invalid type for '{key}': expected {want}"),
                ));
            }
        }
    }
    // Features this server does not implement are refused, not silently ignored: a client
    // relying on them would misread the response.
    let unsupported = [
        (
            "logprobs",
            obj.get("logprobs")
                .is_some_and(|v| v.as_bool() == Some(true) || v.is_number()),
        ),
        (
            "top_logprobs",
            obj.get("top_logprobs").is_some_and(|v| !v.is_null()),
        ),
        (
            "tools",
            obj.get("tools")
                .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())),
        ),
        (
            "tool_choice",
            obj.get("tool_choice")
                .is_some_and(|v| !v.is_null() && v != "none"),
        ),
        (
            "response_format",
            obj.get("response_format")
                .is_some_and(|v| !v.is_null() && v["type"] != "text"),
        ),
        (
            "echo",
            obj.get("echo").is_some_and(|v| v.as_bool() == Some(true)),
        ),
        (
            "suffix",
            obj.get("suffix")
                .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty())),
        ),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, used)| *used) {
        return Err(ApiError::invalid_param(
            key,
            format!("'{key}' is not supported by this server"),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let param = ["messages", "prompt", "model"]
            .into_iter()
            .find(|p| msg.contains(&format!("`{p}`")));
        let err = ApiError::bad_request(format!("invalid request: {msg}"));
        match param {
            Some(p) => err.with_param(p),
            None => err,
        }
    })
}

type TypeCheck = fn(&Value) -> bool;

/// Known parameters and the JSON type each must have.
const PARAM_TYPES: &[(&str, &str, TypeCheck)] = &[
    ("model", "a string", Value::is_string),
    ("messages", "an array of messages", Value::is_array),
    ("prompt", "a string or an array of strings", |v| {
        v.is_string() || v.is_array()
    }),
    ("temperature", "a number", Value::is_number),
    ("top_p", "a number", Value::is_number),
    ("min_p", "a number", Value::is_number),
    ("presence_penalty", "a number", Value::is_number),
    ("frequency_penalty", "a number", Value::is_number),
    ("max_tokens", "a non-negative integer", Value::is_u64),
    (
        "max_completion_tokens",
        "a non-negative integer",
        Value::is_u64,
    ),
    ("n", "a non-negative integer", Value::is_u64),
    ("top_k", "an integer", Value::is_i64),
    ("seed", "an integer", Value::is_i64),
    ("stream", "a boolean", Value::is_boolean),
    ("ignore_eos", "a boolean", Value::is_boolean),
    ("metis_system_prompt", "a boolean", Value::is_boolean),
    ("stop", "a string or an array of strings", |v| {
        v.is_string() || v.is_array()
    }),
    ("stream_options", "an object", Value::is_object),
    ("chat_template_kwargs", "an object", Value::is_object),
];

/// Validated sampling/generation settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub min_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
}

/// Limits a deployment puts on requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `max_tokens` a client may ask for.
    pub max_tokens_cap: usize,
    /// `max_tokens` when the client gives none.
    pub default_max_tokens: usize,
}

impl CommonParams {
    /// Checks ranges as OpenAI documents them and applies the deployment's caps.
    pub fn validate(&self, limits: Limits) -> Result<GenParams, ApiError> {
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) | (None, Some(m)) => {
                if m == 0 {
                    return Err(ApiError::invalid_param(
                        "max_tokens",
                        "max_tokens must be at least 1",
                    ));
                }
                if m > limits.max_tokens_cap as u64 {
                    return Err(ApiError::invalid_param(
                        "max_tokens",
                        format!(
                            "max_tokens {m} exceeds this server's limit of {}",
                            limits.max_tokens_cap
                        ),
                    ));
                }
                m as usize
            }
            (None, None) => limits.default_max_tokens.min(limits.max_tokens_cap),
        };
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid_param(
                "temperature",
                format!("temperature must be between 0 and 2, got {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid_param(
                "top_p",
                format!("top_p must be in (0, 1], got {top_p}"),
            ));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => {
                return Err(ApiError::invalid_param(
                    "top_k",
                    format!("top_k must be -1, 0 or positive, got {k}"),
                ))
            }
        };
        let min_p = self.min_p.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_p) {
            return Err(ApiError::invalid_param(
                "min_p",
                format!("min_p must be in [0, 1], got {min_p}"),
            ));
        }
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::invalid_param("n", "only n = 1 is supported"));
            }
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            // Refused rather than silently ignored: a client relying on them would get
            // different text than it asked for.
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid_param(
                    name,
                    format!("{name} is not supported by this server"),
                ));
            }
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid_param(
                "stop",
                "at most 4 stop sequences are allowed",
            ));
        }
        let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
        let seed = match self.seed {
            Some(s) => s as u64,
            // Unseeded requests must not all draw the same sample.
            None => random_seed(),
        };
        Ok(GenParams {
            max_tokens,
            temperature: temperature as f32,
            top_p: top_p as f32,
            top_k,
            min_p: min_p as f32,
            seed,
            stop,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            ignore_eos: self.ignore_eos,
        })
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl ChatMessage {
    /// The text of the message; list content must be text parts only.
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(s)) => Ok(s.clone()),
            Some(Content::Parts(parts)) => {
                let mut out = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(ApiError::invalid_param(
                            "messages",
                            format!("content part type {:?} is not supported", p.kind),
                        ));
                    }
                    out.push_str(p.text.as_deref().unwrap_or(""));
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_tokens_cap: 100,
            default_max_tokens: 50,
        }
    }

    #[test]
    fn parse_and_validate() {
        let r: ChatCompletionRequest = parse_body(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"temperature":0.5,"stop":"x","seed":3}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].text().unwrap(), "hi");
        let p = r.common.validate(limits()).unwrap();
        assert_eq!((p.max_tokens, p.temperature, p.seed), (50, 0.5, 3));
        assert_eq!(p.stop, vec!["x".to_string()]);
    }

    #[test]
    fn errors_are_400_with_param() {
        let e = parse_body::<ChatCompletionRequest>(b"{not json").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = parse_body::<ChatCompletionRequest>(br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let r: ChatCompletionRequest =
            parse_body(br#"{"model":"m","messages":[],"temperature":3}"#).unwrap();
        let e = r.common.validate(limits()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let r: ChatCompletionRequest =
            parse_body(br#"{"model":"m","messages":[],"max_tokens":101}"#).unwrap();
        assert_eq!(
            r.common.validate(limits()).unwrap_err().param.as_deref(),
            Some("max_tokens")
        );
        let e = parse_body::<ChatCompletionRequest>(
            br#"{"model":"m","messages":[],"tools":[{"type":"function"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"));
        let e = parse_body::<ChatCompletionRequest>(
            br#"{"model":"m","messages":[],"temperature":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(parse_body::<ChatCompletionRequest>(
            br#"{"model":"m","messages":[],"logprobs":false,"tool_choice":"none","response_format":{"type":"text"}}"#
        )
        .is_ok());
    }
}
