//! OpenAI-compatible chat-completions client (vLLM, llama.cpp `llama-server`, Ollama, OpenAI),
//! plus what an RL trainer needs from a vLLM fleet: token-level completions with per-token
//! log-probabilities ([`Client::token_completions`]) and LoRA adapters hot-loaded on every
//! replica ([`Client::load_lora_adapter`], [`Client::unload_lora_adapter`]); and for a logprob
//! judge, chat completions with the top log-probabilities of each token
//! ([`Client::chat_logprobs`]).
//!
//! One [`Client`] wraps a single pooled `reqwest::Client` (HTTP/1.1 keep-alive, large idle
//! pool) and any number of data-parallel replica [`Endpoint`]s. Each request goes to the
//! replica with the fewest requests in flight (ties broken round-robin); failed attempts are
//! retried with capped, fully jittered exponential backoff (or the server's `Retry-After`),
//! and a retry prefers a different replica than the one that just failed.
//!
//! Reasoning models: vLLM renamed `message.reasoning_content` to `message.reasoning`, and
//! llama.cpp / DeepSeek use `reasoning_content`; the client reads `reasoning_content` first
//! and falls back to `reasoning` (an empty string counts as absent), like the reference
//! cookbook clients.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// Hard cap on how long a server-provided `Retry-After` may make us wait.
pub const RETRY_AFTER_HARD_CAP: Duration = Duration::from_secs(120);
/// Maximum number of characters of an error body kept in [`ClientError::Http`].
pub const ERROR_BODY_MAX_CHARS: usize = 500;

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

/// A chat completion asked for with `logprobs` and `top_logprobs` (a logprob judge):
/// the response plus the per-token log-probabilities, in generation order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatLogprobsResponse {
    pub chat: ChatResponse,
    /// Empty when the server sent no `logprobs` (some servers ignore the request).
    pub tokens: Vec<TokenLogprobs>,
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

/// Retry and timeout policy.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts, the first included (0 is treated as 1).
    pub max_attempts: u32,
    /// Backoff before retry `k` is uniform in `[0, min(max_delay, base_delay * 2^(k-1))]`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Timeout of one attempt (connect + request + full response body).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before the retry that follows failed attempt
    /// `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.backoff_cap(attempt);
        if cap.is_zero() {
            return cap;
        }
        let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    fn backoff_cap(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        self.base_delay
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Delay honouring a server `Retry-After`: what the server asked for, but never more than
    /// `max(max_delay, 120 s)`.
    pub fn retry_after_delay(&self, asked: Duration) -> Duration {
        asked.min(self.max_delay.max(RETRY_AFTER_HARD_CAP))
    }
}

/// Errors of the client. `Clone` so a caller can keep / report the last error.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ClientError {
    #[error("no endpoints configured")]
    NoEndpoints,
    #[error("bad endpoint: {0}")]
    BadUrl(String),
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("request timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(String),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<ClientError>,
    },
    /// A completion choice that cannot be read as token ids and log-probabilities (a server
    /// without vLLM's `return_tokens_as_token_ids`, or inconsistent lists).
    #[error("{endpoint}: choice {choice}: {detail}")]
    BadCompletion {
        endpoint: String,
        choice: usize,
        detail: String,
    },
    /// `error` happened on the request to `url` (the rollout and adapter calls say where,
    /// since each replica of a fleet can fail on its own).
    #[error("{url}: {error}")]
    At {
        url: String,
        error: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether another attempt may succeed: 408, 409, 425, 429, 5xx gateway/overload codes,
    /// timeouts, connection errors and malformed bodies.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Http { status, .. } => is_retryable_status(*status),
            ClientError::Timeout | ClientError::Transport(_) | ClientError::Malformed(_) => true,
            ClientError::At { error, .. } => error.is_retryable(),
            ClientError::NoEndpoints
            | ClientError::BadUrl(_)
            | ClientError::GaveUp { .. }
            | ClientError::BadCompletion { .. } => false,
        }
    }

    /// The HTTP status of the error (looking through retries and the URL wrapper), if it was
    /// an HTTP error.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            ClientError::GaveUp { last, .. } => last.http_status(),
            ClientError::At { error, .. } => error.http_status(),
            _ => None,
        }
    }

    fn at(self, url: &Url) -> ClientError {
        ClientError::At {
            url: url.to_string(),
            error: Box::new(self),
        }
    }
}

fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// Error of one attempt plus the server's requested wait, if any.
struct AttemptError {
    error: ClientError,
    retry_after: Option<Duration>,
}

impl From<ClientError> for AttemptError {
    fn from(error: ClientError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

struct EndpointState {
    base_url: String,
    chat_url: Url,
    models_url: Url,
    completions_url: Url,
    load_lora_url: Url,
    unload_lora_url: Url,
    auth: Option<HeaderValue>,
    in_flight: AtomicUsize,
}

impl EndpointState {
    /// `rb` with this endpoint's `Authorization` header, when it has a key.
    fn authorize(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(auth) => rb.header(AUTHORIZATION, auth.clone()),
            None => rb,
        }
    }
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<EndpointState>,
    retry: RetryPolicy,
    rr: AtomicUsize,
}

/// Cheap to clone (`Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(|e| e.base_url.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// Decrements an endpoint's in-flight counter on drop (also when the future is cancelled).
struct InFlightGuard<'a>(&'a AtomicUsize);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f64,
    top_p: f64,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    stream: bool,
    /// Chat `logprobs`: sent only by [`Client::chat_logprobs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    metis_guard: Vec<GuardCheck>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<WireChoiceLogprobs>,
}

/// `choices[0].logprobs` of a chat completion (`null` when not asked for).
#[derive(Deserialize)]
struct WireChoiceLogprobs {
    #[serde(default)]
    content: Option<Vec<TokenLogprobs>>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Serialize)]
struct WireCompletionRequest<'a> {
    model: &'a str,
    prompt: &'a [u32],
    n: usize,
    temperature: f64,
    top_p: f64,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// The sampled token's log-probability (plus one alternative, which is ignored).
    logprobs: u32,
    /// vLLM: tokens as `token_id:N` instead of text pieces, so ids survive the round trip.
    return_tokens_as_token_ids: bool,
    stop_token_ids: &'a [u32],
    skip_special_tokens: bool,
    stream: bool,
}

#[derive(Deserialize)]
struct WireCompletionResponse {
    choices: Vec<WireCompletionChoice>,
}

#[derive(Deserialize)]
struct WireCompletionChoice {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    logprobs: Option<WireCompletionLogprobs>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireCompletionLogprobs {
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    token_logprobs: Vec<Option<f32>>,
}

#[derive(Serialize)]
struct WireLoadLora<'a> {
    lora_name: &'a str,
    lora_path: &'a str,
}

#[derive(Serialize)]
struct WireUnloadLora<'a> {
    lora_name: &'a str,
}

#[derive(Deserialize)]
struct WireModels {
    data: Vec<WireModel>,
}

#[derive(Deserialize)]
struct WireModel {
    id: String,
}

impl Client {
    /// Builds the client. Fails with [`ClientError::NoEndpoints`] on an empty list and
    /// [`ClientError::BadUrl`] on a URL that is not absolute `http(s)` (or an API key that
    /// cannot be sent as a header).
    pub fn new(endpoints: Vec<Endpoint>, retry: RetryPolicy) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut states = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let base = ep.base_url.trim().trim_end_matches('/').to_string();
            let parsed =
                Url::parse(&base).map_err(|e| ClientError::BadUrl(format!("{base:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.cannot_be_a_base()
                || parsed.host_str().is_none()
            {
                return Err(ClientError::BadUrl(format!(
                    "{base:?}: expected an absolute http(s) URL such as http://127.0.0.1:8000/v1"
                )));
            }
            let join = |suffix: &str| {
                Url::parse(&format!("{base}/{suffix}"))
                    .map_err(|e| ClientError::BadUrl(format!("{base:?}: {e}")))
            };
            let auth = match ep.api_key.as_deref() {
                Some(key) if !key.is_empty() => {
                    let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                        ClientError::BadUrl(format!(
                            "{base:?}: API key contains characters not allowed in a header"
                        ))
                    })?;
                    v.set_sensitive(true);
                    Some(v)
                }
                _ => None,
            };
            states.push(EndpointState {
                chat_url: join("chat/completions")?,
                models_url: join("models")?,
                completions_url: join("completions")?,
                load_lora_url: join("load_lora_adapter")?,
                unload_lora_url: join("unload_lora_adapter")?,
                base_url: base,
                auth,
                in_flight: AtomicUsize::new(0),
            });
        }
        let mut default_headers = HeaderMap::new();
        default_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(default_headers)
            .pool_max_idle_per_host(4096)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(retry.request_timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("metis-eval/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(format!("building HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints: states,
                retry,
                rr: AtomicUsize::new(0),
            }),
        })
    }

    /// The configured endpoints' base URLs (normalised, without trailing `/`).
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.base_url.clone())
            .collect()
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// POST `{base}/chat/completions` (non-streaming) with retries.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ClientError> {
        Ok(self.post_chat(req, None).await?.chat)
    }

    /// [`Client::chat`] asking for the log-probabilities of the generated tokens and the
    /// `top_logprobs` most likely alternatives at each position (OpenAI's chat `logprobs`,
    /// `top_logprobs`; vLLM and llama.cpp serve the same fields). A logprob judge reads its
    /// verdict from them.
    pub async fn chat_logprobs(
        &self,
        req: &ChatRequest,
        top_logprobs: u32,
    ) -> Result<ChatLogprobsResponse, ClientError> {
        self.post_chat(req, Some(top_logprobs)).await
    }

    /// One chat-completions request with retries; `top_logprobs` asks for token logprobs.
    async fn post_chat(
        &self,
        req: &ChatRequest,
        top_logprobs: Option<u32>,
    ) -> Result<ChatLogprobsResponse, ClientError> {
        let start = Instant::now();
        let body = serde_json::to_vec(&WireRequest {
            model: &req.model,
            messages: &req.messages,
            temperature: req.params.temperature,
            top_p: req.params.top_p,
            max_tokens: req.params.max_tokens,
            seed: req.params.seed,
            stream: false,
            logprobs: top_logprobs.map(|_| true),
            top_logprobs,
        })
        .map_err(|e| ClientError::Malformed(format!("serialising request: {e}")))?;
        let timeout = self.inner.retry.request_timeout;
        let http = &self.inner.http;
        let body = &body;
        let (mut resp, attempts, ep) = self
            .with_retries(|ep| async move {
                let rb = ep.authorize(
                    http.post(ep.chat_url.clone())
                        .timeout(timeout)
                        .body(body.clone()),
                );
                let bytes = send(rb).await?;
                parse_chat_body(&bytes).map_err(AttemptError::from)
            })
            .await?;
        resp.chat.attempts = attempts;
        resp.chat.latency_ms = start.elapsed().as_millis().min(u64::MAX as u128) as u64;
        resp.chat.endpoint = ep.base_url.clone();
        Ok(resp)
    }

    /// GET `{base}/models` (on the least-loaded endpoint, with retries); returns the model ids.
    pub async fn list_models(&self) -> Result<Vec<String>, ClientError> {
        let timeout = self.inner.retry.request_timeout;
        let http = &self.inner.http;
        let (models, _, _) = self
            .with_retries(|ep| async move {
                let rb = ep.authorize(http.get(ep.models_url.clone()).timeout(timeout));
                let bytes = send(rb).await?;
                let parsed: WireModels = serde_json::from_slice(&bytes)
                    .map_err(|e| ClientError::Malformed(malformed_msg(&e, &bytes)))?;
                Ok(parsed.data.into_iter().map(|m| m.id).collect())
            })
            .await?;
        Ok(models)
    }

    /// POST `{base}/completions` with the prompt as token ids (vLLM's
    /// `return_tokens_as_token_ids`, `stop_token_ids`), with retries on the least-loaded
    /// replica. Every choice is parsed into ids and per-token log-probabilities; a token that
    /// is not `token_id:N`, or lists of different lengths, is [`ClientError::BadCompletion`].
    /// Errors name the URL ([`ClientError::At`]).
    pub async fn token_completions(
        &self,
        req: &TokenCompletionRequest,
    ) -> Result<TokenCompletionResponse, ClientError> {
        let start = Instant::now();
        let body = serde_json::to_vec(&WireCompletionRequest {
            model: &req.model,
            prompt: &req.prompt,
            n: req.n,
            temperature: req.temperature,
            top_p: req.top_p,
            max_tokens: req.max_tokens,
            seed: req.seed,
            logprobs: 1,
            return_tokens_as_token_ids: true,
            stop_token_ids: &req.stop_token_ids,
            skip_special_tokens: false,
            stream: false,
        })
        .map_err(|e| ClientError::Malformed(format!("serialising request: {e}")))?;
        let timeout = self.inner.retry.request_timeout;
        let http = &self.inner.http;
        let body = &body;
        let n = req.n;
        let (choices, attempts, ep) = self
            .with_retries_on(None, |ep| async move {
                let rb = ep.authorize(
                    http.post(ep.completions_url.clone())
                        .timeout(timeout)
                        .body(body.clone()),
                );
                let bytes = send(rb).await?;
                parse_token_completions(&bytes, ep.completions_url.as_str(), n)
                    .map_err(AttemptError::from)
            })
            .await
            .map_err(|(e, ep)| e.at(&ep.completions_url))?;
        Ok(TokenCompletionResponse {
            choices,
            attempts,
            latency_ms: start.elapsed().as_millis().min(u64::MAX as u128) as u64,
            endpoint: ep.base_url.clone(),
        })
    }

    /// POST `{base}/completions` with a string prompt and no chat template (a classifier
    /// judge's raw prompt), with retries; returns the first choice's text. Errors name the URL.
    pub async fn text_completion(
        &self,
        req: &TextCompletionRequest,
    ) -> Result<TextCompletionResponse, ClientError> {
        let start = Instant::now();
        let body = serde_json::to_vec(&serde_json::json!({
            "model": req.model,
            "prompt": req.prompt,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "stream": false,
        }))
        .map_err(|e| ClientError::Malformed(format!("serialising request: {e}")))?;
        let timeout = self.inner.retry.request_timeout;
        let http = &self.inner.http;
        let body = &body;
        let ((text, finish_reason), attempts, ep) = self
            .with_retries_on(None, |ep| async move {
                let rb = ep.authorize(
                    http.post(ep.completions_url.clone())
                        .timeout(timeout)
                        .body(body.clone()),
                );
                let bytes = send(rb).await?;
                parse_text_completion(&bytes).map_err(AttemptError::from)
            })
            .await
            .map_err(|(e, ep)| e.at(&ep.completions_url))?;
        Ok(TextCompletionResponse {
            text,
            finish_reason,
            attempts,
            latency_ms: start.elapsed().as_millis().min(u64::MAX as u128) as u64,
            endpoint: ep.base_url.clone(),
        })
    }

    /// Loads the LoRA adapter at `path` (a PEFT directory as the servers see it) under `name`
    /// on **every** replica, concurrently: POST `{base}/load_lora_adapter` (vLLM with
    /// `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), so that a completion request naming the
    /// adapter finds it whichever replica it is routed to.
    ///
    /// vLLM refuses a name it already holds with 400. When a load gets a 400, the replica is
    /// asked to unload `name`; if it had it (a name left by an interrupted run, whose step is
    /// now replayed), the load is sent again so the fresh adapter replaces the stale one.
    /// Otherwise the 400 is the error. Errors name the URL of the replica that failed.
    pub async fn load_lora_adapter(&self, name: &str, path: &str) -> Result<(), ClientError> {
        let load = serde_json::to_vec(&WireLoadLora {
            lora_name: name,
            lora_path: path,
        })
        .map_err(|e| ClientError::Malformed(format!("serialising request: {e}")))?;
        let unload = serde_json::to_vec(&WireUnloadLora { lora_name: name })
            .map_err(|e| ClientError::Malformed(format!("serialising request: {e}")))?;
        let (load, unload) = (&load, &unload);
        self.on_every_replica(|idx| async move {
            match self.post_admin(idx, |ep| &ep.load_lora_url, load).await {
                Err(e) if e.http_status() == Some(400) => {
                    if self
                        .post_admin(idx, |ep| &ep.unload_lora_url, unload)
                        .await
                        .is_ok()
                    {
                        self.post_admin(idx, |ep| &ep.load_lora_url, load).await
                    } else {
                        Err(e)
                    }
                }
                other => other,
            }
        })
        .await
    }

    /// Unloads the LoRA adapter `name` from every replica, concurrently: POST
    /// `{base}/unload_lora_adapter`. A 404 (the replica does not hold it) counts as done.
    pub async fn unload_lora_adapter(&self, name: &str) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&WireUnloadLora { lora_name: name })
            .map_err(|e| ClientError::Malformed(format!("serialising request: {e}")))?;
        let body = &body;
        self.on_every_replica(|idx| async move {
            match self.post_admin(idx, |ep| &ep.unload_lora_url, body).await {
                Err(e) if e.http_status() == Some(404) => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// Runs `op` for every replica index concurrently; the first error (in replica order)
    /// wins.
    async fn on_every_replica<F, Fut>(&self, op: F) -> Result<(), ClientError>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<(), ClientError>>,
    {
        let results = futures::future::join_all((0..self.inner.endpoints.len()).map(op)).await;
        results.into_iter().collect()
    }

    /// POSTs `body` to the admin URL `url_of` of replica `idx` (retrying on that replica
    /// only: each one must get the call); the response body is not needed.
    async fn post_admin(
        &self,
        idx: usize,
        url_of: fn(&EndpointState) -> &Url,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let timeout = self.inner.retry.request_timeout;
        let http = &self.inner.http;
        self.with_retries_on(Some(idx), |ep| async move {
            let rb = ep.authorize(
                http.post(url_of(ep).clone())
                    .timeout(timeout)
                    .body(body.to_vec()),
            );
            send(rb).await.map(|_| ())
        })
        .await
        .map(|_| ())
        .map_err(|(e, ep)| e.at(url_of(ep)))
    }

    /// Least in-flight endpoint, ties broken round-robin; `avoid` (the endpoint that just
    /// failed) is skipped when there is another one.
    fn pick(&self, avoid: Option<usize>) -> usize {
        let eps = &self.inner.endpoints;
        let n = eps.len();
        if n == 1 {
            return 0;
        }
        let start = self.inner.rr.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = usize::MAX;
        let mut best_load = usize::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            if Some(i) == avoid {
                continue;
            }
            let load = eps[i].in_flight.load(Ordering::Relaxed);
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        best
    }

    async fn with_retries<'s, T, F, Fut>(
        &'s self,
        attempt_fn: F,
    ) -> Result<(T, u32, &'s EndpointState), ClientError>
    where
        F: FnMut(&'s EndpointState) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        self.with_retries_on(None, attempt_fn)
            .await
            .map_err(|(e, _)| e)
    }

    /// Attempts `attempt_fn` with the retry policy, on the least-loaded replica (`pinned`
    /// None) or always on replica `pinned`. An error comes with the endpoint of the last
    /// attempt.
    async fn with_retries_on<'s, T, F, Fut>(
        &'s self,
        pinned: Option<usize>,
        mut attempt_fn: F,
    ) -> Result<(T, u32, &'s EndpointState), (ClientError, &'s EndpointState)>
    where
        F: FnMut(&'s EndpointState) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let policy = &self.inner.retry;
        let max_attempts = policy.max_attempts.max(1);
        let mut avoid = None;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let idx = pinned.unwrap_or_else(|| self.pick(avoid));
            let ep = &self.inner.endpoints[idx];
            ep.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = {
                let _guard = InFlightGuard(&ep.in_flight);
                attempt_fn(ep).await
            };
            let err = match result {
                Ok(v) => return Ok((v, attempt, ep)),
                Err(e) => e,
            };
            if !err.error.is_retryable() {
                return Err((err.error, ep));
            }
            if attempt >= max_attempts {
                return Err((
                    ClientError::GaveUp {
                        attempts: attempt,
                        last: Box::new(err.error),
                    },
                    ep,
                ));
            }
            let delay = match err.retry_after {
                Some(asked) => policy.retry_after_delay(asked),
                None => policy.backoff(attempt),
            };
            tracing::debug!(
                endpoint = %ep.base_url,
                attempt,
                error = %err.error,
                delay_ms = delay.as_millis() as u64,
                "retrying request"
            );
            avoid = Some(idx);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sends one request; returns the body of a 2xx response or the classified error.
async fn send(rb: reqwest::RequestBuilder) -> Result<Vec<u8>, AttemptError> {
    let resp = rb.send().await.map_err(classify_reqwest)?;
    let status = resp.status();
    if status.is_success() {
        let bytes = resp.bytes().await.map_err(classify_reqwest)?;
        return Ok(bytes.to_vec());
    }
    let retry_after = if is_retryable_status(status.as_u16()) {
        retry_after(resp.headers(), SystemTime::now())
    } else {
        None
    };
    // Best effort: a failure reading an error body still reports the status.
    let body = match resp.bytes().await {
        Ok(b) => truncate_chars(&String::from_utf8_lossy(&b), ERROR_BODY_MAX_CHARS),
        Err(e) => format!("<error body unreadable: {e}>"),
    };
    Err(AttemptError {
        error: ClientError::Http {
            status: status.as_u16(),
            body,
        },
        retry_after,
    })
}

fn classify_reqwest(e: reqwest::Error) -> AttemptError {
    if e.is_timeout() {
        return ClientError::Timeout.into();
    }
    if let Some(status) = e.status() {
        return ClientError::Http {
            status: status.as_u16(),
            body: String::new(),
        }
        .into();
    }
    // Include the source chain: reqwest's top-level message is often just "error sending
    // request".
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ClientError::Transport(msg).into()
}

fn malformed_msg(e: &serde_json::Error, body: &[u8]) -> String {
    format!(
        "{e}; body starts: {:?}",
        truncate_chars(&String::from_utf8_lossy(body), 200)
    )
}

/// Parses a chat-completions response body (without the bookkeeping fields, which the
/// caller fills in).
/// Parses a chat-completions body, with the token logprobs when it carries them (empty
/// otherwise).
fn parse_chat_body(bytes: &[u8]) -> Result<ChatLogprobsResponse, ClientError> {
    let wire: WireResponse = serde_json::from_slice(bytes)
        .map_err(|e| ClientError::Malformed(malformed_msg(&e, bytes)))?;
    let choice = wire.choices.into_iter().next().ok_or_else(|| {
        ClientError::Malformed(format!(
            "no choices in response; body starts: {:?}",
            truncate_chars(&String::from_utf8_lossy(bytes), 200)
        ))
    })?;
    let WireMessage {
        content,
        reasoning_content,
        reasoning,
    } = choice.message;
    let reasoning = reasoning_content
        .filter(|s| !s.is_empty())
        .or(reasoning.filter(|s| !s.is_empty()));
    let (prompt_tokens, completion_tokens) = wire
        .usage
        .map(|u| (u.prompt_tokens, u.completion_tokens))
        .unwrap_or((None, None));
    let chat = ChatResponse {
        content: content.unwrap_or_default(),
        reasoning,
        finish_reason: choice.finish_reason,
        prompt_tokens,
        completion_tokens,
        attempts: 0,
        latency_ms: 0,
        endpoint: String::new(),
        guard: wire.metis_guard,
    };
    let tokens = choice.logprobs.and_then(|l| l.content).unwrap_or_default();
    Ok(ChatLogprobsResponse { chat, tokens })
}

/// Parses a text completions body: the first choice's `text` and `finish_reason`.
fn parse_text_completion(bytes: &[u8]) -> Result<(String, Option<String>), ClientError> {
    let wire: WireCompletionResponse = serde_json::from_slice(bytes)
        .map_err(|e| ClientError::Malformed(malformed_msg(&e, bytes)))?;
    let choice = wire.choices.into_iter().next().ok_or_else(|| {
        ClientError::Malformed(format!(
            "no choices in completion; body starts: {:?}",
            truncate_chars(&String::from_utf8_lossy(bytes), 200)
        ))
    })?;
    Ok((choice.text.unwrap_or_default(), choice.finish_reason))
}

/// Parses a token-level completions body into `n` choices in `index` order (see
/// [`Client::token_completions`]); `endpoint` names the URL in errors.
fn parse_token_completions(
    bytes: &[u8],
    endpoint: &str,
    n: usize,
) -> Result<Vec<TokenCompletion>, ClientError> {
    let wire: WireCompletionResponse = serde_json::from_slice(bytes)
        .map_err(|e| ClientError::Malformed(malformed_msg(&e, bytes)))?;
    if wire.choices.len() != n {
        return Err(ClientError::Malformed(format!(
            "asked for {n} completions, got {} choices",
            wire.choices.len()
        )));
    }
    let mut out: Vec<Option<TokenCompletion>> = vec![None; n];
    for (pos, choice) in wire.choices.into_iter().enumerate() {
        let index = choice.index.unwrap_or(pos);
        let bad = |detail: String| ClientError::BadCompletion {
            endpoint: endpoint.to_string(),
            choice: index,
            detail,
        };
        if index >= n || out[index].is_some() {
            return Err(bad(format!(
                "index out of range or repeated (expected each of 0..{n} once)"
            )));
        }
        let lp = choice
            .logprobs
            .ok_or_else(|| bad("no logprobs (the server ignored \"logprobs\": 1)".to_string()))?;
        if lp.tokens.len() != lp.token_logprobs.len() {
            return Err(bad(format!(
                "{} tokens but {} token_logprobs",
                lp.tokens.len(),
                lp.token_logprobs.len()
            )));
        }
        let mut ids = Vec::with_capacity(lp.tokens.len());
        let mut logprobs = Vec::with_capacity(lp.tokens.len());
        for (k, (token, logprob)) in lp.tokens.iter().zip(&lp.token_logprobs).enumerate() {
            let id = token
                .strip_prefix("token_id:")
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "token {k} is {token:?}, expected \"token_id:N\" (a server without \
                         vLLM's return_tokens_as_token_ids)"
                    ))
                })?;
            let logprob = logprob.ok_or_else(|| bad(format!("token {k} has no logprob")))?;
            ids.push(id);
            logprobs.push(logprob);
        }
        out[index] = Some(TokenCompletion {
            ids,
            logprobs,
            finish_reason: choice.finish_reason,
        });
    }
    Ok(out
        .into_iter()
        .map(|c| c.expect("every index seen once"))
        .collect())
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Reads `retry-after-ms` (OpenAI) or `Retry-After` (delta-seconds or HTTP-date).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(1e9)));
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(value, now)
}

/// Parses a `Retry-After` value: delta-seconds (fractions tolerated) or an HTTP-date
/// (IMF-fixdate, RFC 850 or asctime). A date in the past means "retry now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(1e9)));
        }
        return None;
    }
    let target = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(target.saturating_sub(now).max(0) as u64))
}

/// Unix seconds of an HTTP-date.
fn parse_http_date(s: &str) -> Option<i64> {
    // Drop the weekday ("Sun," / "Sunday," / "Sun ").
    let rest = match s.split_once(',') {
        Some((_, r)) => r.trim(),
        None => s.split_once(' ')?.1.trim(),
    };
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: 06 Nov 1994 08:49:37 GMT
        [d, m, y, t, "GMT"] => (*d, *m, y.parse::<i64>().ok()?, *t),
        // RFC 850: 06-Nov-94 08:49:37 GMT
        [dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?.parse::<i64>().ok()?);
            let y = if y < 100 {
                if y < 70 {
                    2000 + y
                } else {
                    1900 + y
                }
            } else {
                y
            };
            (d, m, y, *t)
        }
        // asctime: Nov  6 08:49:37 1994
        [m, d, t, y] => (*d, *m, y.parse::<i64>().ok()?, *t),
        _ => return None,
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(month))? as i64
        + 1;
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let se: i64 = hms.next()?.parse().ok()?;
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const _: () = {
    const fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Client>();
    assert_traits::<ClientError>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The chat part of a parsed body (the plain chat path's view).
    fn parse_chat_body(bytes: &[u8]) -> Result<ChatResponse, ClientError> {
        super::parse_chat_body(bytes).map(|r| r.chat)
    }

    /// A parsed body with its token logprobs (the judge's view).
    fn parse_chat_logprobs_body(bytes: &[u8]) -> Result<ChatLogprobsResponse, ClientError> {
        super::parse_chat_body(bytes)
    }

    #[test]
    fn parses_reasoning_fields() {
        let a = parse_chat_body(
            br#"{"choices":[{"message":{"content":"x","reasoning_content":"rc","reasoning":"r"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(a.reasoning.as_deref(), Some("rc"));
        assert_eq!((a.prompt_tokens, a.completion_tokens), (Some(3), Some(4)));
        let b = parse_chat_body(
            br#"{"choices":[{"message":{"content":null,"reasoning_content":null,"reasoning":"r"},"finish_reason":"length"}]}"#,
        )
        .unwrap();
        assert_eq!(b.content, "");
        assert_eq!(b.reasoning.as_deref(), Some("r"));
        assert_eq!(b.finish_reason.as_deref(), Some("length"));
        assert!(matches!(
            parse_chat_body(br#"{"choices":[]}"#),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_chat_body(b"{not json"),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn parses_chat_logprobs() {
        // The shape OpenAI returns (alpaca_eval's `logprob_parser` docstring shows the same).
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"M"},"finish_reason":"length","logprobs":{"content":[{"token":"M","bytes":[77],"logprob":-0.0176,"top_logprobs":[{"token":"M","bytes":[77],"logprob":-0.0176},{"token":"m","bytes":[109],"logprob":-4.0488}]}]}}]}"#;
        let r = parse_chat_logprobs_body(body).unwrap();
        assert_eq!(r.chat.content, "M");
        assert_eq!(r.tokens.len(), 1);
        assert_eq!(r.tokens[0].top_logprobs[1].token, "m");
        assert_eq!(r.tokens[0].top_logprobs[1].logprob, -4.0488);
        let none = parse_chat_logprobs_body(
            br#"{"choices":[{"message":{"content":"m"},"logprobs":null}]}"#,
        )
        .unwrap();
        assert!(none.tokens.is_empty() && none.chat.content == "m");
    }

    #[test]
    fn parses_token_completions() {
        let body = br#"{"choices":[
            {"index":1,"text":"b","logprobs":{"tokens":["token_id:7","token_id:2"],"token_logprobs":[-0.5,-0.25]},"finish_reason":"stop"},
            {"index":0,"text":"a","logprobs":{"tokens":["token_id:5"],"token_logprobs":[-1.0]},"finish_reason":"length"}]}"#;
        let c = parse_token_completions(body, "http://h/v1/completions", 2).unwrap();
        assert_eq!(c[0].ids, vec![5]);
        assert_eq!(c[0].logprobs, vec![-1.0]);
        assert_eq!(c[0].finish_reason.as_deref(), Some("length"));
        assert_eq!(c[1].ids, vec![7, 2]);
        assert_eq!(c[1].logprobs, vec![-0.5, -0.25]);

        let text_tokens = br#"{"choices":[{"index":0,"logprobs":{"tokens":["hello"],"token_logprobs":[-1.0]},"finish_reason":"stop"}]}"#;
        let err = parse_token_completions(text_tokens, "http://h/v1/completions", 1).unwrap_err();
        assert!(
            matches!(err, ClientError::BadCompletion { choice: 0, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("http://h/v1/completions") && msg.contains("token_id:N"),
            "{msg}"
        );

        let uneven = br#"{"choices":[{"index":0,"logprobs":{"tokens":["token_id:1","token_id:2"],"token_logprobs":[-1.0]},"finish_reason":"stop"}]}"#;
        let err = parse_token_completions(uneven, "u", 1).unwrap_err();
        assert!(
            err.to_string().contains("2 tokens but 1 token_logprobs"),
            "{err}"
        );
        assert!(!err.is_retryable());

        let no_logprobs = br#"{"choices":[{"index":0,"text":"x","finish_reason":"stop"}]}"#;
        assert!(matches!(
            parse_token_completions(no_logprobs, "u", 1),
            Err(ClientError::BadCompletion { .. })
        ));
        assert!(matches!(
            parse_token_completions(body, "u", 3),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn url_wrapper_keeps_status_and_retryability() {
        let url = Url::parse("http://h:1/v1/load_lora_adapter").unwrap();
        let e = ClientError::GaveUp {
            attempts: 2,
            last: Box::new(ClientError::Http {
                status: 503,
                body: "busy".into(),
            }),
        }
        .at(&url);
        assert_eq!(e.http_status(), Some(503));
        assert!(!e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("http://h:1/v1/load_lora_adapter: "),
            "{e}"
        );
        let e = ClientError::Http {
            status: 400,
            body: "bad".into(),
        }
        .at(&url);
        assert_eq!(e.http_status(), Some(400));
        assert!(e.to_string().contains("HTTP 400: bad"), "{e}");
    }

    #[test]
    fn retry_after_formats() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:42 1994", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_is_capped_and_retry_after_bounded() {
        let p = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(p.backoff_cap(1), Duration::from_millis(500));
        assert_eq!(p.backoff_cap(3), Duration::from_secs(2));
        assert_eq!(p.backoff_cap(60), Duration::from_secs(30));
        for k in 1..10 {
            assert!(p.backoff(k) <= p.backoff_cap(k));
        }
        assert_eq!(
            p.retry_after_delay(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(
            p.retry_after_delay(Duration::from_secs(1000)),
            RETRY_AFTER_HARD_CAP
        );
    }

    #[test]
    fn new_validates() {
        assert_eq!(
            Client::new(vec![], RetryPolicy::default()).unwrap_err(),
            ClientError::NoEndpoints
        );
        for bad in ["", "localhost:8000", "ftp://x/v1", "http://"] {
            assert!(
                matches!(
                    Client::new(vec![Endpoint::new(bad)], RetryPolicy::default()),
                    Err(ClientError::BadUrl(_))
                ),
                "{bad}"
            );
        }
        let c = Client::new(
            vec![Endpoint::new("http://127.0.0.1:8000/v1/")],
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(c.endpoints(), vec!["http://127.0.0.1:8000/v1".to_string()]);
    }

    #[test]
    fn truncation_is_char_safe() {
        let s = "é".repeat(600);
        let t = truncate_chars(&s, ERROR_BODY_MAX_CHARS);
        assert_eq!(t.chars().count(), ERROR_BODY_MAX_CHARS + 1);
        assert_eq!(truncate_chars("abc", 5), "abc");
    }
}
