//! Request preparation: admission, body parsing and validation, the system-prompt policy,
//! prompt rendering and tokenisation, ending in a [`Job`] ready to run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use metis_engine::chat::{Message, RenderOptions};
use serde_json::{json, Value};

use super::access::admit;
use super::AppState;
use crate::api::{self, GenParams};
use crate::audit::{now_ms, AuditRecord};
use crate::error::ApiError;
use crate::guard::Verdict;
use crate::system_prompt;

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request body too large",
            )
            .with_code("request_too_large")
        } else {
            ApiError::bad_request(format!("cannot read request body: {r}"))
        }
    })
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn new_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:06x}", now_ms())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    pub(super) fn route(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }
}

/// A validated request ready to run.
pub(super) struct Job {
    pub(super) endpoint: Endpoint,
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) params: GenParams,
    pub(super) prompt_ids: Vec<u32>,
    /// The prompt opened a `<think>` block (chat with a reasoning template or prefill).
    pub(super) opens_reasoning: bool,
    /// The conversation the guard judges the answer in.
    pub(super) conversation: Vec<Message>,
    pub(super) record: AuditRecord,
    pub(super) verdicts: Vec<Verdict>,
    pub(super) t0: Instant,
}

fn check_model(st: &AppState, model: &str) -> Result<(), ApiError> {
    if model != st.model_name {
        return Err(ApiError::not_found(format!(
            "the model '{model}' does not exist; this server serves '{}'",
            st.model_name
        ))
        .with_param("model")
        .with_code("model_not_found"));
    }
    Ok(())
}

/// Clamps `max_tokens` to the context left after the prompt.
fn fit_context(st: &AppState, prompt_len: usize, params: &mut GenParams) -> Result<(), ApiError> {
    if prompt_len == 0 {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    if prompt_len >= st.max_model_len {
        return Err(ApiError::bad_request(format!(
            "the prompt has {prompt_len} tokens but the model's context is {}",
            st.max_model_len
        ))
        .with_code("context_length_exceeded"));
    }
    params.max_tokens = params.max_tokens.min(st.max_model_len - prompt_len);
    Ok(())
}

fn base_record(endpoint: &str, st: &AppState, key_id: Option<String>) -> AuditRecord {
    AuditRecord {
        unix_ms: now_ms(),
        key_id,
        endpoint: endpoint.into(),
        model: st.model_name.clone(),
        messages: Value::Null,
        guard: json!([]),
        ..Default::default()
    }
}

pub(super) fn prepare_chat(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    t0: Instant,
) -> Result<Job, ApiError> {
    let key_id = admit(st, headers)?;
    let bytes = body_bytes(body)?;
    let req: api::ChatCompletionRequest = api::parse_body(&bytes)?;
    check_model(st, &req.common.model)?;
    let mut params = req.common.validate(st.limits)?;
    let messages = chat_messages(st, &req.messages)?;
    let opt_out = req.metis_system_prompt == Some(false);
    let (messages, system_hash) =
        system_prompt::apply(messages, &st.system_prompt, st.policy, opt_out)
            .map_err(|e| ApiError::invalid_param("metis_system_prompt", e.to_string()))?;
    let prompt = render_chat(st, &messages, req.chat_template_kwargs.clone())?;
    // The template emits BOS itself.
    let prompt_ids = st
        .tokenizer
        .encode(&prompt, false)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    fit_context(st, prompt_ids.len(), &mut params)?;
    let mut record = base_record("chat.completions", st, key_id);
    record.system_prompt_sha256 = system_hash;
    record.messages = serde_json::to_value(&messages).unwrap_or(Value::Null);
    record.prompt_tokens = prompt_ids.len();
    Ok(Job {
        endpoint: Endpoint::Chat,
        id: new_id("chatcmpl"),
        created: (now_ms() / 1000) as u64,
        params,
        prompt_ids,
        opens_reasoning: prompt.trim_end().ends_with("<think>"),
        conversation: messages,
        record,
        verdicts: Vec::new(),
        t0,
    })
}

/// The request's messages as the template takes them, checked for count, role and content.
fn chat_messages(st: &AppState, requested: &[api::ChatMessage]) -> Result<Vec<Message>, ApiError> {
    if requested.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    if requested.len() > st.max_messages {
        return Err(ApiError::invalid_param(
            "messages",
            format!(
                "too many messages: {} (this server allows {})",
                requested.len(),
                st.max_messages
            ),
        ));
    }
    let mut messages = Vec::with_capacity(requested.len());
    for m in requested {
        let role = template_role(&m.role)?;
        let text = m.text()?;
        reject_reserved_tokens(st, &text)?;
        messages.push(Message::new(role, text));
    }
    Ok(messages)
}

/// The template's role for an OpenAI role (`developer` is a system message).
fn template_role(role: &str) -> Result<&'static str, ApiError> {
    match role {
        "system" | "developer" => Ok("system"),
        "user" => Ok("user"),
        "assistant" => Ok("assistant"),
        other => Err(ApiError::invalid_param(
            "messages",
            format!("unsupported message role {other:?} (system, developer, user, assistant)"),
        )),
    }
}

/// Special tokens in a message would be tokenised as control tokens, letting a client forge
/// turns of the conversation.
fn reject_reserved_tokens(st: &AppState, text: &str) -> Result<(), ApiError> {
    if let Some(t) = st
        .reserved_tokens
        .iter()
        .find(|t| text.contains(t.as_str()))
    {
        return Err(ApiError::invalid_param(
            "messages",
            format!("message content contains the reserved special token {t:?}"),
        ));
    }
    Ok(())
}

/// The prompt text of the conversation, rendered by the model's chat template with the
/// request's extra template variables.
fn render_chat(
    st: &AppState,
    messages: &[Message],
    extra: Option<serde_json::Map<String, Value>>,
) -> Result<String, ApiError> {
    let template = st.template.as_ref().ok_or_else(|| {
        ApiError::bad_request("this model has no chat template; use /v1/completions")
    })?;
    let extra = extra.unwrap_or_default();
    let thinking_off = extra.get("enable_thinking") == Some(&Value::Bool(false));
    let opts = RenderOptions {
        prefill_think: st.prefill_think && !thinking_off,
        extra,
        ..RenderOptions::generation()
    };
    template
        .render(messages, &opts)
        .map_err(|e| ApiError::bad_request(format!("cannot render the conversation: {e}")))
}

pub(super) fn prepare_completion(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    t0: Instant,
) -> Result<Job, ApiError> {
    let key_id = admit(st, headers)?;
    let bytes = body_bytes(body)?;
    let req: api::CompletionRequest = api::parse_body(&bytes)?;
    check_model(st, &req.common.model)?;
    let mut params = req.common.validate(st.limits)?;
    let prompt = match req.prompt {
        api::Prompt::One(p) => p,
        api::Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        api::Prompt::Many(_) => {
            return Err(ApiError::invalid_param(
                "prompt",
                "exactly one prompt per request is supported",
            ))
        }
    };
    let prompt_ids = st
        .tokenizer
        .encode(&prompt, true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    fit_context(st, prompt_ids.len(), &mut params)?;
    let mut record = base_record("completions", st, key_id);
    record.messages = Value::String(prompt.clone());
    record.prompt_tokens = prompt_ids.len();
    Ok(Job {
        endpoint: Endpoint::Completion,
        id: new_id("cmpl"),
        created: (now_ms() / 1000) as u64,
        params,
        prompt_ids,
        opens_reasoning: false,
        conversation: vec![Message::user(prompt)],
        record,
        verdicts: Vec::new(),
        t0,
    })
}
