//! An in-process fake OpenAI-compatible server for tests and benches.
//!
//! Binds `127.0.0.1:0` and serves `POST /v1/chat/completions`, `POST /v1/completions` (string
//! prompts, for classifier judges and guards) and `GET /v1/models`. Every
//! request is handed to a [`Responder`] together with its attempt number (1-based,
//! counted per identical `(messages, seed)`), so a script can fail the first attempt of a
//! prompt and answer the retry. Faults reproduce what real servers do under load: 429 with
//! `Retry-After`, 500, hanging connections, malformed bodies and truncated `<think>` output.
//!
//! A scripted logprob judge ([`FakeServer::start_with_logprobs`]) also gives the top
//! log-probabilities of its first token, returned in `choices[0].logprobs` when the request
//! asks for `logprobs`, as OpenAI does.
//!
//! Requests are read and answers written with the [`crate::wire`] types, so the fake server
//! speaks exactly the JSON the client reads and `metis serve` writes. Built only with the
//! `fake-server` feature (which brings in axum); crates use it from their dev-dependencies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::wire::{
    ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessage, ChoiceLogprobs, Completion,
    CompletionChoice, CompletionRequest, ErrorCode, ErrorObject, ErrorResponse, ModelCard,
    ModelList, Prompt, ResponseMessage, TokenLogprobs, TopLogprob, Usage,
};

/// How long [`Fault::Hang`] sleeps: far longer than any sane client timeout.
const HANG_FOR: Duration = Duration::from_secs(3600);
/// Model id advertised by `GET /v1/models`.
pub const FAKE_MODEL_ID: &str = "fake-model";

/// A scripted failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: <retry_after_s>`.
    TooManyRequests { retry_after_s: u64 },
    /// 500 Internal Server Error.
    ServerError,
    /// Never answers (sleeps an hour, or until the server shuts down).
    Hang,
    /// 200 with the body `{not json`.
    MalformedJson,
    /// 200 with content `<think>reasoning that never closes` and finish_reason `length`.
    TruncatedThink,
    /// Any other status with the given body, e.g. 400 "context too long" or 401.
    /// (Extension beyond the original brief: needed to test non-retryable 4xx.)
    Http { status: u16, body: String },
}

impl Fault {
    /// Name recorded in [`FakeServer::request_log`].
    pub fn name(&self) -> String {
        match self {
            Fault::TooManyRequests { .. } => "TooManyRequests".into(),
            Fault::ServerError => "ServerError".into(),
            Fault::Hang => "Hang".into(),
            Fault::MalformedJson => "MalformedJson".into(),
            Fault::TruncatedThink => "TruncatedThink".into(),
            Fault::Http { status, .. } => format!("Http{status}"),
        }
    }
}

/// A successful scripted answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Scripted {
    pub content: String,
    /// Returned in `message.reasoning_content` when `Some`.
    pub reasoning: Option<String>,
    pub finish_reason: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Scripted {
    /// `content`, finish_reason `stop`, no reasoning, no delay.
    pub fn text(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            reasoning: None,
            finish_reason: "stop".into(),
            delay: Duration::ZERO,
        }
    }
}

/// Decides the answer to a request; the second argument is the attempt number of this same
/// `(messages, seed)` (1-based). Called synchronously on arrival.
pub type Responder = Arc<dyn Fn(&FakeRequest, u64) -> Result<Scripted, Fault> + Send + Sync>;

/// The top log-probabilities `(token, logprob)` of a scripted answer's first token, most likely
/// first (what a logprob judge reads).
pub type TopLogprobs = Vec<(String, f64)>;

/// A [`Responder`] that also scripts the top log-probabilities of the answer's first token.
pub type LogprobResponder =
    Arc<dyn Fn(&FakeRequest, u64) -> Result<(Scripted, TopLogprobs), Fault> + Send + Sync>;

/// A chat request as the fake server received it, with OpenAI's defaults filled in
/// (temperature and top-p 1, `max_tokens` 0 when absent).
#[derive(Clone, Debug, PartialEq)]
pub struct FakeRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub seed: Option<u64>,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: u32,
    /// Chat `logprobs`: whether the client asked for token log-probabilities.
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    /// Set for `POST /v1/completions`: the string prompt arrives as one `user` message.
    pub completion: bool,
}

impl From<ChatCompletionRequest<'_>> for FakeRequest {
    fn from(wire: ChatCompletionRequest<'_>) -> Self {
        Self {
            model: wire.model,
            messages: wire.messages.into_owned(),
            seed: wire.seed,
            temperature: wire.temperature.unwrap_or(1.0),
            top_p: wire.top_p.unwrap_or(1.0),
            max_tokens: wire.max_tokens.unwrap_or(0),
            logprobs: wire.logprobs.unwrap_or(false),
            top_logprobs: wire.top_logprobs,
            completion: false,
        }
    }
}

impl FakeRequest {
    /// A completion request with a string prompt, seen as one `user` message; `None` for a
    /// token-id prompt, which the fake server does not answer.
    fn from_completion(wire: CompletionRequest<'_>) -> Option<Self> {
        let Prompt::Text(prompt) = wire.prompt else {
            return None;
        };
        Some(Self {
            model: wire.model,
            messages: vec![ChatMessage::user(prompt.into_owned())],
            seed: wire.seed,
            temperature: wire.temperature.unwrap_or(1.0),
            top_p: wire.top_p.unwrap_or(1.0),
            max_tokens: wire.max_tokens.unwrap_or(0),
            logprobs: false,
            top_logprobs: None,
            completion: true,
        })
    }

    /// Content of the last `user` message ("" if none).
    pub fn last_user(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())
            .unwrap_or("")
    }
}

type LogEntry = (FakeRequest, Result<(), String>);
/// seed -> messages -> attempts so far.
type AttemptMap = HashMap<Option<u64>, HashMap<Vec<ChatMessage>, u64>>;

struct Shared {
    responder: LogprobResponder,
    total: AtomicU64,
    attempts: Mutex<AttemptMap>,
    log: Mutex<Vec<LogEntry>>,
    shutdown: watch::Receiver<bool>,
}

/// The running fake server. Dropping it also stops it (without waiting).
pub struct FakeServer {
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer")
            .field("base_url", &self.base_url)
            .field("total_requests", &self.total_requests())
            .finish()
    }
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and starts serving on the current Tokio runtime.
    pub async fn start(responder: Responder) -> std::io::Result<FakeServer> {
        Self::start_with_logprobs(Arc::new(move |req, attempt| {
            responder(req, attempt).map(|s| (s, Vec::new()))
        }))
        .await
    }

    /// [`FakeServer::start`] with a responder that also scripts top log-probabilities.
    pub async fn start_with_logprobs(responder: LogprobResponder) -> std::io::Result<FakeServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            responder,
            total: AtomicU64::new(0),
            attempts: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::with_capacity(1024)),
            shutdown: shutdown.clone(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completion))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let mut signal = shutdown;
        let task = tokio::spawn(async move {
            let stopped = async move {
                // Err = sender dropped, which also means stop.
                let _ = signal.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "fake server stopped with an error");
            }
        });
        Ok(FakeServer {
            base_url: format!("http://{addr}/v1"),
            addr,
            shared,
            stop,
            task,
        })
    }

    /// Convenience responder: always answer `content` at once.
    pub fn instant(content: &str) -> Responder {
        let scripted = Scripted::text(content);
        Arc::new(move |_, _| Ok(scripted.clone()))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Chat-completion requests received, faulted ones included (unparseable bodies too;
    /// `GET /v1/models` is not counted).
    pub fn total_requests(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Parsed chat requests in arrival order, with `Err(fault name)` if faulted.
    pub fn request_log(&self) -> Vec<(FakeRequest, Result<(), String>)> {
        lock(&self.shared.log).clone()
    }

    /// Requests per (last user message, seed).
    pub fn counts_by_key(&self) -> HashMap<(String, Option<u64>), u64> {
        let log = lock(&self.shared.log);
        let mut out: HashMap<(String, Option<u64>), u64> = HashMap::new();
        for (req, _) in log.iter() {
            *out.entry((req.last_user().to_string(), req.seed))
                .or_default() += 1;
        }
        out
    }

    /// Stops accepting, releases hanging handlers and waits (up to 5 s) for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The `logprobs` a request asked for: the first whitespace-separated word of the content
/// stands for the first token, with its scripted log-probability (0 when the script does not
/// list it), and the first `top_logprobs` scripted alternatives.
fn choice_logprobs(req_top: Option<u32>, content: &str, top: &TopLogprobs) -> ChoiceLogprobs {
    let token = content.split_whitespace().next().unwrap_or("").to_owned();
    let logprob = top
        .iter()
        .find(|(t, _)| *t == token)
        .map_or(0.0, |(_, lp)| *lp);
    let keep = req_top.map_or(top.len(), |k| k as usize);
    ChoiceLogprobs {
        content: Some(vec![TokenLogprobs {
            token,
            logprob,
            top_logprobs: top
                .iter()
                .take(keep)
                .map(|(token, logprob)| TopLogprob {
                    token: token.clone(),
                    logprob: *logprob,
                })
                .collect(),
        }]),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `value` as a JSON response, or a 500 if it cannot be serialised.
fn ok_json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(b) => json_response(StatusCode::OK, b),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("serialising response: {e}"),
            "server_error",
        ),
    }
}

/// An OpenAI error body whose `code` is the HTTP status (as llama.cpp sends it).
fn error_response(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = ErrorResponse {
        error: ErrorObject {
            message: message.to_owned(),
            kind: kind.to_owned(),
            param: None,
            code: Some(ErrorCode::Status(status.as_u16())),
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| message.as_bytes().to_vec());
    json_response(status, bytes)
}

/// A body that is not the request the route expects: 400.
fn invalid_body(detail: impl std::fmt::Display) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        &format!("invalid request body: {detail}"),
        "invalid_request_error",
    )
}

async fn models() -> Response {
    ok_json(&ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: FAKE_MODEL_ID.into(),
            object: "model".into(),
            created: 0,
            owned_by: "metis".into(),
            max_model_len: None,
        }],
    })
}

/// Counts the attempt, asks the responder, logs the request and turns a scripted fault into
/// its HTTP response; a scripted answer is returned after its delay.
async fn scripted_answer(
    shared: &Shared,
    req: FakeRequest,
) -> Result<(Scripted, TopLogprobs), Response> {
    let attempt = {
        let mut map = lock(&shared.attempts);
        let by_msgs = map.entry(req.seed).or_default();
        match by_msgs.get_mut(req.messages.as_slice()) {
            Some(c) => {
                *c += 1;
                *c
            }
            None => {
                by_msgs.insert(req.messages.clone(), 1);
                1
            }
        }
    };
    let outcome = (shared.responder)(&req, attempt);
    lock(&shared.log).push((
        req,
        match &outcome {
            Ok(_) => Ok(()),
            Err(f) => Err(f.name()),
        },
    ));
    let answer = match outcome {
        Ok(answer) => answer,
        Err(Fault::TooManyRequests { retry_after_s }) => {
            let mut resp = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
                "rate_limit_error",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            return Err(resp);
        }
        Err(Fault::ServerError) => {
            return Err(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error",
                "server_error",
            ))
        }
        Err(Fault::Hang) => {
            let mut stop = shared.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(HANG_FOR) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            return Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "server shutting down",
                "server_error",
            ));
        }
        Err(Fault::MalformedJson) => {
            return Err(json_response(StatusCode::OK, b"{not json".to_vec()));
        }
        Err(Fault::Http { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return Err(error_response(status, &body, "invalid_request_error"));
        }
        Err(Fault::TruncatedThink) => (
            Scripted {
                content: "<think>reasoning that never closes".into(),
                reasoning: None,
                finish_reason: "length".into(),
                delay: Duration::ZERO,
            },
            Vec::new(),
        ),
    };
    if !answer.0.delay.is_zero() {
        tokio::time::sleep(answer.0.delay).await;
    }
    Ok(answer)
}

/// `POST /v1/completions` with a string prompt: the responder sees it as one `user` message
/// with [`FakeRequest::completion`] set; the answer comes back as `choices[0].text`.
async fn completion(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let n = shared.total.fetch_add(1, Ordering::Relaxed) + 1;
    let wire: CompletionRequest<'static> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return invalid_body(e),
    };
    let Some(req) = FakeRequest::from_completion(wire) else {
        return invalid_body("the fake server answers string prompts only");
    };
    let model = req.model.clone();
    let (scripted, _) = match scripted_answer(&shared, req).await {
        Ok(answer) => answer,
        Err(resp) => return resp,
    };
    ok_json(&Completion {
        id: format!("cmpl-fake-{n}"),
        object: "text_completion".into(),
        created: 0,
        model,
        choices: vec![CompletionChoice {
            index: Some(0),
            text: scripted.content,
            finish_reason: Some(scripted.finish_reason),
            logprobs: None,
        }],
        usage: None,
    })
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let n = shared.total.fetch_add(1, Ordering::Relaxed) + 1;
    let req: FakeRequest = match serde_json::from_slice::<ChatCompletionRequest<'static>>(&body) {
        Ok(r) => r.into(),
        Err(e) => return invalid_body(e),
    };
    let prompt_tokens: u64 = req.messages.iter().map(|m| words(&m.content)).sum();
    let model = req.model.clone();
    let asked_logprobs = req.logprobs.then_some(req.top_logprobs);
    let (scripted, top) = match scripted_answer(&shared, req).await {
        Ok(answer) => answer,
        Err(resp) => return resp,
    };
    let completion_tokens =
        words(&scripted.content) + scripted.reasoning.as_deref().map(words).unwrap_or(0);
    ok_json(&ChatCompletion {
        id: format!("chatcmpl-fake-{n}"),
        object: "chat.completion".into(),
        created: 0,
        model,
        choices: vec![ChatChoice {
            index: 0,
            logprobs: asked_logprobs.map(|k| choice_logprobs(k, &scripted.content, &top)),
            message: ResponseMessage {
                role: "assistant".into(),
                content: Some(scripted.content),
                reasoning_content: scripted.reasoning,
                reasoning: None,
            },
            finish_reason: Some(scripted.finish_reason),
        }],
        usage: Some(Usage::new(prompt_tokens, completion_tokens)),
        metis_guard: Vec::new(),
    })
}
