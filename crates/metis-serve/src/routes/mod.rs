//! HTTP routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health` and
//! `/metrics`, with API-key checks, rate limits, the system-prompt policy, the guardrail,
//! streaming (SSE) and auditing.
//!
//! The pieces, in the order a generation request meets them:
//!
//! 1. This module: the [`router`] over the shared [`AppState`], the `observe` middleware that
//!    counts every response by route and status, and the two generation handlers.
//! 2. `prepare`: `access` checks the API key and rate limit, then the body is read, parsed
//!    and validated, the system-prompt policy applied and the prompt rendered and tokenised
//!    into a `Job` (with its audit record started).
//! 3. `run`: the input guard (a block answers with the refusal, see `stream`), then the job
//!    goes to the engine's scheduler and its events come back on a channel.
//! 4. `complete` (non-streaming) collects the output, or `stream` relays it as SSE chunks;
//!    both split reasoning from answer, run the output guard and finish the audit record.
//!
//! `info` holds the small handlers (`/v1/models`, `/health`, `/metrics`, the fallback).

mod access;
mod complete;
mod info;
mod prepare;
mod run;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metis_engine::chat::ChatTemplate;
use metis_engine::scheduler::Scheduler;
use metis_engine::tokenizer::Tokenizer;

use crate::api::Limits;
use crate::audit::AuditLog;
use crate::auth::{ApiKeys, RateLimiter};
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::system_prompt::SystemPromptPolicy;

use info::{health, metrics, models, not_found};
use prepare::{prepare_chat, prepare_completion};
use run::run;

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
