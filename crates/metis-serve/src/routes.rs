//! HTTP routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health` and
//! `/metrics`, with API-key checks, rate limits, the system-prompt policy, the guardrail,
//! streaming (SSE) and auditing.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metis_engine::chat::{ChatTemplate, Message, RenderOptions};
use metis_engine::sampling::SamplingParams;
use metis_engine::scheduler::{EventSink, GenEvent, GenRequest, Scheduler, SubmitError};
use metis_engine::tokenizer::Tokenizer;
use metis_openai::wire::{self, GuardCheck, Usage};
use metis_verify::reasoning::{self, Delimiters, StreamDelta, StreamSplitter};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::{self, GenParams, Limits};
use crate::audit::{now_ms, AuditLog, AuditRecord};
use crate::auth::{ApiKeys, RateLimiter};
use crate::error::ApiError;
use crate::guard::{self, Guard, Verdict};
use crate::metrics::Metrics;
use crate::system_prompt::{self, SystemPromptPolicy};

/// Shared state of the routes.
pub struct AppState {
    pub model_name: String,
    /// Context length of the model.
    pub max_model_len: usize,
    /// Server start, seconds since the epoch (the model's `created`).
    pub created: u64,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    pub guard: Option<Guard>,
    pub audit: Option<AuditLog>,
    pub keys: ApiKeys,
    pub limiter: RateLimiter,
    pub system_prompt: String,
    pub policy: SystemPromptPolicy,
    pub prefill_think: bool,
    pub limits: Limits,
    pub max_messages: usize,
    /// Special-token strings (`<|eot_id|>`, `<|start_header_id|>`, ...) refused in client
    /// messages: the tokenizer would turn them into real control tokens, letting a client
    /// close its own turn and forge a system or assistant turn.
    pub reserved_tokens: Vec<String>,
}

/// The router over `state`, with the body-size cap.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .with_state(state)
}

const ROUTES: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/metrics",
];

/// Counts every response by route and status; streams are counted by their own task when
/// they end, so their latency covers the whole body.
async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other");
    let t0 = Instant::now();
    let resp = next.run(req).await;
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !sse {
        st.metrics
            .observe(route, resp.status().as_u16(), t0.elapsed().as_secs_f64());
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("unknown route").with_code("not_found")
}

async fn health() -> &'static str {
    "ok"
}

async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&st, &headers) {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&st, &headers) {
        return e.into_response();
    }
    Json(wire::ModelList {
        object: "list".into(),
        data: vec![wire::ModelCard {
            id: st.model_name.clone(),
            object: "model".into(),
            created: st.created,
            owned_by: "metis".into(),
            max_model_len: Some(st.max_model_len),
        }],
    })
    .into_response()
}

/// The key id of the caller (None when the server has no keys: loopback only).
fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if st.keys.is_empty() {
        return Ok(None);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(key) = presented.filter(|k| !k.is_empty()) else {
        return Err(ApiError::unauthorized(
            "missing API key: send it as 'Authorization: Bearer KEY'",
        ));
    };
    st.keys
        .verify(key)
        .map(|id| Some(id.to_owned()))
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))
}

/// Authentication plus the caller's rate limit.
fn admit(st: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let id = authenticate(st, headers)?;
    if !st.limiter.allow(id.as_deref().unwrap_or("")) {
        return Err(ApiError::too_many(
            "rate limit exceeded for this API key; retry later",
            "rate_limit_exceeded",
        ));
    }
    Ok(id)
}

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
enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    fn route(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }
}

/// A validated request ready to run.
struct Job {
    endpoint: Endpoint,
    id: String,
    created: u64,
    params: GenParams,
    prompt_ids: Vec<u32>,
    /// The prompt opened a `<think>` block (chat with a reasoning template or prefill).
    opens_reasoning: bool,
    /// The conversation the guard judges the answer in.
    conversation: Vec<Message>,
    record: AuditRecord,
    verdicts: Vec<Verdict>,
    t0: Instant,
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let t0 = Instant::now();
    match prepare_chat(&st, &headers, body, t0) {
        Ok(job) => run(st, job).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let t0 = Instant::now();
    match prepare_completion(&st, &headers, body, t0) {
        Ok(job) => run(st, job).await,
        Err(e) => e.into_response(),
    }
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

fn prepare_chat(
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
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    if req.messages.len() > st.max_messages {
        return Err(ApiError::invalid_param(
            "messages",
            format!(
                "too many messages: {} (this server allows {})",
                req.messages.len(),
                st.max_messages
            ),
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::invalid_param(
                    "messages",
                    format!(
                        "unsupported message role {other:?} (system, developer, user, assistant)"
                    ),
                ))
            }
        };
        let text = m.text()?;
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
        messages.push(Message::new(role, text));
    }
    let opt_out = req.metis_system_prompt == Some(false);
    let (messages, system_hash) =
        system_prompt::apply(messages, &st.system_prompt, st.policy, opt_out)
            .map_err(|e| ApiError::invalid_param("metis_system_prompt", e.to_string()))?;
    let template = st.template.as_ref().ok_or_else(|| {
        ApiError::bad_request("this model has no chat template; use /v1/completions")
    })?;
    let extra = req.chat_template_kwargs.clone().unwrap_or_default();
    let thinking_off = extra.get("enable_thinking") == Some(&Value::Bool(false));
    let opts = RenderOptions {
        prefill_think: st.prefill_think && !thinking_off,
        extra,
        ..RenderOptions::generation()
    };
    let prompt = template
        .render(&messages, &opts)
        .map_err(|e| ApiError::bad_request(format!("cannot render the conversation: {e}")))?;
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

fn prepare_completion(
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

/// Finishes the audit record of `job` and queues it.
fn audit(st: &AppState, job: &mut Job, status: u16, finish: &str, blocked: bool) {
    if blocked {
        st.metrics.guard_blocks.fetch_add(1, Ordering::Relaxed);
    }
    let Some(log) = &st.audit else { return };
    let mut r = std::mem::take(&mut job.record);
    r.guard = serde_json::to_value(&job.verdicts).unwrap_or(Value::Null);
    r.blocked = blocked;
    r.status = status;
    r.finish_reason = Some(finish.to_owned());
    r.latency_ms = job.t0.elapsed().as_millis() as u64;
    log.log(r);
}

fn fail(st: &AppState, job: &mut Job, err: ApiError) -> Response {
    audit(st, job, err.status.as_u16(), err.kind, false);
    err.into_response()
}

/// Runs a prepared job: input guard, generation, output guard, response.
async fn run(st: Arc<AppState>, mut job: Job) -> Response {
    if let Some(g) = st.guard.as_ref().filter(|g| g.check_input) {
        match g.moderate_input(&job.conversation).await {
            Ok(v) => {
                let safe = v.safe;
                job.verdicts.push(v);
                if !safe {
                    return blocked_input(&st, job);
                }
            }
            Err(e) => {
                let err = ApiError::internal(format!("guardrail unavailable: {e}"))
                    .with_code("guard_unavailable");
                return fail(&st, &mut job, err);
            }
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let p = &job.params;
    let request = GenRequest {
        prompt_ids: job.prompt_ids.clone(),
        max_tokens: p.max_tokens,
        sampling: SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            min_p: p.min_p,
            seed: p.seed,
        },
        stop_strings: p.stop.clone(),
        ignore_eos: p.ignore_eos,
        events: Box::new(ChannelSink(tx)),
    };
    if let Err(e) = st.scheduler.submit(request) {
        let err = match e {
            SubmitError::QueueFull => ApiError::too_many(
                "the server is at capacity (request queue full); retry later",
                "queue_full",
            ),
            SubmitError::Stopped => ApiError::internal("the engine has stopped"),
        };
        return fail(&st, &mut job, err);
    }
    if job.params.stream {
        let (sse_tx, sse_rx) = mpsc::channel::<Event>(64);
        tokio::spawn(stream_job(st, job, rx, sse_tx));
        sse_response(sse_rx)
    } else {
        complete_job(st, job, rx).await
    }
}

/// A request's events on a tokio channel, read by the handler that streams or collects them.
/// The handler dropping its receiver (a client that went away) cancels the sequence.
struct ChannelSink(mpsc::UnboundedSender<GenEvent>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: GenEvent) -> bool {
        self.0.send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

fn sse_response(rx: mpsc::Receiver<Event>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream).into_response()
}

/// Generated text split into reasoning and answer as it streams.
struct Pieces {
    splitter: Option<StreamSplitter>,
}

impl Pieces {
    fn new(endpoint: Endpoint, opens_reasoning: bool) -> Self {
        // Completions are raw text: no reasoning split.
        let splitter = (endpoint == Endpoint::Chat)
            .then(|| StreamSplitter::new(Delimiters::default(), opens_reasoning));
        Self { splitter }
    }

    fn push(&mut self, text: &str) -> Vec<StreamDelta> {
        match &mut self.splitter {
            Some(s) => s.push(text),
            None => vec![StreamDelta::Answer(text.to_owned())],
        }
    }

    fn finish(&mut self) -> Vec<StreamDelta> {
        self.splitter
            .as_mut()
            .map(|s| s.finish())
            .unwrap_or_default()
    }
}

/// Final reasoning and answer of a whole output (FAITH's split, trimmed), as the
/// non-streaming response and the audit log report them.
fn final_split(job: &Job, text: &str) -> (Option<String>, String) {
    if job.endpoint == Endpoint::Completion {
        return (None, text.to_owned());
    }
    let full = if job.opens_reasoning {
        format!("<think>{text}")
    } else {
        text.to_owned()
    };
    let parts = reasoning::split(&full, &Delimiters::default());
    let r = (!parts.reasoning.is_empty()).then(|| parts.reasoning.clone());
    (r, parts.answer.trim().to_owned())
}

/// The output-guard verdict on an answer; Err is the guard failing (fail closed).
async fn check_output(
    st: &AppState,
    job: &mut Job,
    answer: &str,
    reasoning: Option<&str>,
) -> Result<Option<Verdict>, ApiError> {
    let Some(g) = st.guard.as_ref().filter(|g| g.check_output) else {
        return Ok(None);
    };
    let v = g
        .moderate_output(&job.conversation, answer, reasoning)
        .await
        .map_err(|e| {
            ApiError::internal(format!("guardrail unavailable: {e}")).with_code("guard_unavailable")
        })?;
    job.verdicts.push(v.clone());
    Ok((!v.safe).then_some(v))
}

async fn complete_job(
    st: Arc<AppState>,
    mut job: Job,
    mut rx: mpsc::UnboundedReceiver<GenEvent>,
) -> Response {
    let mut text = String::new();
    let (finish, prompt_tokens, completion_tokens) = loop {
        match rx.recv().await {
            Some(GenEvent::Text(t)) => text.push_str(&t),
            Some(GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => break (finish.as_str(), prompt_tokens, completion_tokens),
            Some(GenEvent::Error(e)) => {
                return fail(
                    &st,
                    &mut job,
                    ApiError::internal(format!("generation failed: {e}")),
                )
            }
            None => return fail(&st, &mut job, ApiError::internal("the engine stopped")),
        }
    };
    let (mut reasoning, mut answer) = final_split(&job, &text);
    job.record.completion_tokens = completion_tokens;
    job.record.reasoning = reasoning.clone();
    job.record.answer = Some(answer.clone());
    let mut finish = finish;
    let blocked = match check_output(&st, &mut job, &answer, reasoning.as_deref()).await {
        Ok(Some(v)) => {
            answer = guard::refusal(&v);
            // The reasoning led to a blocked answer: do not hand it out either.
            reasoning = None;
            finish = "content_filter";
            true
        }
        Ok(None) => false,
        Err(e) => return fail(&st, &mut job, e),
    };
    audit(&st, &mut job, 200, finish, blocked);
    let usage = token_usage(prompt_tokens, completion_tokens);
    final_response(&st, &job, answer, reasoning, finish, usage)
}

/// The token counts of a response.
fn token_usage(prompt_tokens: usize, completion_tokens: usize) -> Usage {
    Usage::new(prompt_tokens as u64, completion_tokens as u64)
}

/// The guard's verdicts as the `metis_guard` checks a client reads.
fn guard_checks(verdicts: &[Verdict]) -> Vec<GuardCheck> {
    verdicts.iter().map(GuardCheck::from).collect()
}

/// The whole (non-streamed) response of a job: a chat completion with the reasoning apart
/// from the answer and the guard's checks, or a text completion.
fn final_response(
    st: &AppState,
    job: &Job,
    answer: String,
    reasoning: Option<String>,
    finish: &str,
    usage: Usage,
) -> Response {
    match job.endpoint {
        Endpoint::Chat => Json(wire::ChatCompletion {
            id: job.id.clone(),
            object: "chat.completion".into(),
            created: job.created,
            model: st.model_name.clone(),
            choices: vec![wire::ChatChoice {
                index: 0,
                message: wire::ResponseMessage {
                    role: "assistant".into(),
                    // As vLLM: an empty answer after reasoning (cut off) is null.
                    content: (!(answer.is_empty() && reasoning.is_some())).then_some(answer),
                    reasoning_content: reasoning.clone(),
                    reasoning,
                },
                finish_reason: Some(finish.into()),
                logprobs: None,
            }],
            usage: Some(usage),
            metis_guard: guard_checks(&job.verdicts),
        })
        .into_response(),
        Endpoint::Completion => Json(wire::Completion {
            id: job.id.clone(),
            object: "text_completion".into(),
            created: job.created,
            model: st.model_name.clone(),
            choices: vec![wire::CompletionChoice {
                index: Some(0),
                text: answer,
                finish_reason: Some(finish.into()),
                logprobs: None,
            }],
            usage: Some(usage),
        })
        .into_response(),
    }
}

/// Builds the SSE chunks of a job.
struct Chunker<'a> {
    job_id: &'a str,
    created: u64,
    model: &'a str,
    endpoint: Endpoint,
    include_usage: bool,
}

impl Chunker<'_> {
    fn event<T: Serialize>(value: &T) -> Event {
        Event::default().data(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
    }

    fn chat(&self, delta: wire::Delta, finish: Option<&'static str>) -> Event {
        Self::event(&wire::ChatCompletionChunk {
            id: self.job_id.to_owned(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.to_owned(),
            choices: vec![wire::ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(Into::into),
                logprobs: None,
            }],
            usage: self.include_usage.then_some(None),
        })
    }

    fn text(&self, text: String, finish: Option<&'static str>) -> Event {
        Self::event(&wire::Completion {
            id: self.job_id.to_owned(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.to_owned(),
            choices: vec![wire::CompletionChoice {
                index: Some(0),
                text,
                finish_reason: finish.map(Into::into),
                logprobs: None,
            }],
            usage: None,
        })
    }

    /// One classified piece of output as a chunk.
    fn piece(&self, d: StreamDelta) -> Event {
        match (self.endpoint, d) {
            (Endpoint::Completion, StreamDelta::Answer(t) | StreamDelta::Reasoning(t)) => {
                self.text(t, None)
            }
            (Endpoint::Chat, StreamDelta::Answer(t)) => self.chat(
                wire::Delta {
                    content: Some(t),
                    ..Default::default()
                },
                None,
            ),
            (Endpoint::Chat, StreamDelta::Reasoning(t)) => self.chat(
                wire::Delta {
                    reasoning_content: Some(t.clone()),
                    reasoning: Some(t),
                    ..Default::default()
                },
                None,
            ),
        }
    }

    fn start(&self) -> Option<Event> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.chat(
                wire::Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Default::default()
                },
                None,
            )
        })
    }

    fn end(&self, finish: &'static str) -> Event {
        match self.endpoint {
            Endpoint::Chat => self.chat(wire::Delta::default(), Some(finish)),
            Endpoint::Completion => self.text(String::new(), Some(finish)),
        }
    }

    /// The last chunk, with no choices and the token counts, when the client asked for them.
    fn usage(&self, usage: Usage) -> Option<Event> {
        if !self.include_usage {
            return None;
        }
        Some(match self.endpoint {
            Endpoint::Chat => Self::event(&wire::ChatCompletionChunk {
                id: self.job_id.to_owned(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.to_owned(),
                choices: Vec::new(),
                usage: Some(Some(usage)),
            }),
            Endpoint::Completion => Self::event(&wire::Completion {
                id: self.job_id.to_owned(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.to_owned(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
        })
    }
}

fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// An input the guard blocked: the refusal as the whole answer, finish `content_filter`.
fn blocked_input(st: &AppState, mut job: Job) -> Response {
    let refusal = guard::refusal(job.verdicts.last().expect("a verdict was recorded"));
    job.record.answer = Some(refusal.clone());
    audit(st, &mut job, 200, "content_filter", true);
    let usage = token_usage(job.prompt_ids.len(), 0);
    if !job.params.stream {
        return final_response(st, &job, refusal, None, "content_filter", usage);
    }
    let c = Chunker {
        job_id: &job.id,
        created: job.created,
        model: &st.model_name,
        endpoint: job.endpoint,
        include_usage: job.params.include_usage,
    };
    let mut events: Vec<Event> = c.start().into_iter().collect();
    events.push(c.piece(StreamDelta::Answer(refusal)));
    events.push(c.end("content_filter"));
    events.extend(c.usage(usage));
    events.push(done_event());
    st.metrics
        .observe(job.endpoint.route(), 200, job.t0.elapsed().as_secs_f64());
    let stream = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
    Sse::new(stream).into_response()
}

/// Relays a streaming job's events as SSE chunks. With the output guard on, the answer is
/// held back until the guard has judged it (and the reasoning too when the guard sees it).
async fn stream_job(
    st: Arc<AppState>,
    mut job: Job,
    mut rx: mpsc::UnboundedReceiver<GenEvent>,
    out: mpsc::Sender<Event>,
) {
    let model = st.model_name.clone();
    let job_id = job.id.clone();
    let c = Chunker {
        job_id: &job_id,
        created: job.created,
        model: &model,
        endpoint: job.endpoint,
        include_usage: job.params.include_usage,
    };
    let output_guard = st.guard.as_ref().filter(|g| g.check_output);
    let hold_answer = output_guard.is_some();
    let hold_reasoning = output_guard.is_some_and(|g| g.include_reasoning);
    let mut pieces = Pieces::new(job.endpoint, job.opens_reasoning);
    let mut held: Vec<StreamDelta> = Vec::new();
    let mut text = String::new();
    let route = job.endpoint.route();

    macro_rules! send {
        ($e:expr) => {
            if out.send($e).await.is_err() {
                // The client went away; dropping `rx` cancels the sequence in the engine.
                audit(&st, &mut job, 200, "cancelled", false);
                st.metrics
                    .observe(route, 200, job.t0.elapsed().as_secs_f64());
                return;
            }
        };
    }

    if let Some(e) = c.start() {
        send!(e);
    }
    let (finish, prompt_tokens, completion_tokens) = loop {
        // Watch the client too: while output is held back for the guard nothing is sent, and
        // a client that left must still stop its sequence.
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = out.closed() => {
                audit(&st, &mut job, 200, "cancelled", false);
                st.metrics.observe(route, 200, job.t0.elapsed().as_secs_f64());
                return;
            }
        };
        let deltas = match event {
            Some(GenEvent::Text(t)) => {
                text.push_str(&t);
                pieces.push(&t)
            }
            Some(GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                let rest = pieces.finish();
                for d in rest {
                    let hold = match d {
                        StreamDelta::Answer(_) => hold_answer,
                        StreamDelta::Reasoning(_) => hold_reasoning,
                    };
                    if hold {
                        held.push(d);
                    } else {
                        send!(c.piece(d));
                    }
                }
                break (finish.as_str(), prompt_tokens, completion_tokens);
            }
            other => {
                let msg = match other {
                    Some(GenEvent::Error(e)) => format!("generation failed: {e}"),
                    _ => "the engine stopped".to_owned(),
                };
                let err = ApiError::internal(msg);
                let _ = out.send(Event::default().data(err.body())).await;
                let _ = out.send(done_event()).await;
                audit(&st, &mut job, 500, err.kind, false);
                st.metrics
                    .observe(route, 500, job.t0.elapsed().as_secs_f64());
                return;
            }
        };
        for d in deltas {
            let hold = match d {
                StreamDelta::Answer(_) => hold_answer,
                StreamDelta::Reasoning(_) => hold_reasoning,
            };
            if hold {
                held.push(d);
            } else {
                send!(c.piece(d));
            }
        }
    };
    let (reasoning, answer) = final_split(&job, &text);
    job.record.completion_tokens = completion_tokens;
    job.record.reasoning = reasoning.clone();
    job.record.answer = Some(answer.clone());
    let mut finish = finish;
    let mut blocked = false;
    match check_output(&st, &mut job, &answer, reasoning.as_deref()).await {
        Ok(Some(v)) => {
            send!(c.piece(StreamDelta::Answer(guard::refusal(&v))));
            finish = "content_filter";
            blocked = true;
        }
        Ok(None) => {
            for d in held {
                send!(c.piece(d));
            }
        }
        Err(e) => {
            let _ = out.send(Event::default().data(e.body())).await;
            let _ = out.send(done_event()).await;
            audit(&st, &mut job, 500, e.kind, false);
            st.metrics
                .observe(route, 500, job.t0.elapsed().as_secs_f64());
            return;
        }
    }
    send!(c.end(finish));
    if let Some(e) = c.usage(token_usage(prompt_tokens, completion_tokens)) {
        send!(e);
    }
    send!(done_event());
    audit(&st, &mut job, 200, finish, blocked);
    st.metrics
        .observe(route, 200, job.t0.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted token stream through the streaming splitter: the reasoning/answer deltas
    /// come out as the chunks would carry them, whatever the chunk boundaries.
    #[test]
    fn scripted_stream_splits_reasoning() {
        let script = ["Let me ", "think.</th", "ink>\n\nThe ans", "wer is B."];
        for opens in [true, false] {
            let mut p = Pieces::new(Endpoint::Chat, opens);
            let mut reasoning = String::new();
            let mut answer = String::new();
            let mut feed: Vec<String> = script.iter().map(|s| s.to_string()).collect();
            if !opens {
                feed.insert(0, "<thi".into());
                feed.insert(1, "nk>".into());
            }
            let mut all: Vec<StreamDelta> = feed.iter().flat_map(|t| p.push(t)).collect();
            all.extend(p.finish());
            for d in all {
                match d {
                    StreamDelta::Reasoning(t) => reasoning.push_str(&t),
                    StreamDelta::Answer(t) => answer.push_str(&t),
                }
            }
            assert_eq!(reasoning, "Let me think.");
            assert_eq!(answer, "\n\nThe answer is B.");
        }
        // Completions are not split.
        let mut p = Pieces::new(Endpoint::Completion, true);
        assert_eq!(
            p.push("a</think>b"),
            vec![StreamDelta::Answer("a</think>b".into())]
        );
    }
}
