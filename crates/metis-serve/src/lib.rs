//! The Metis server: an OpenAI-compatible HTTP API over `metis-engine` for reasoning models.
//!
//! A request flows through these pieces:
//!
//! 1. [`routes`] (axum, [`routes::AppState`]) checks the API key ([`auth`]), size and rate
//!    limits, parses the body into the wire types of [`api`] (unknown fields and bad types
//!    named), and applies the deployment's [`system_prompt`] policy.
//! 2. [`guard::Guard`] moderates the input with Llama Guard 3 (a [`guard::GuardBackend`]: the
//!    local engine or a remote `/v1/completions` endpoint); a block returns the refusal with
//!    finish reason `content_filter`.
//! 3. The engine's continuous-batching [`Scheduler`](metis_engine::scheduler::Scheduler)
//!    (shared with local evaluation) batches requests between decode steps on the engine
//!    thread and streams [`GenEvent`](metis_engine::scheduler::GenEvent)s back over a tokio
//!    channel; the reasoning is split from the answer (`reasoning_content` / `reasoning`).
//! 4. The output guard judges the final answer (and the reasoning when configured) before it
//!    is returned, plain or as SSE; every verdict travels in the response's `metis_guard`.
//! 5. [`audit::AuditLog`] records the exchange (messages, reasoning, answer, verdicts, tokens,
//!    latency) in SQLite; [`metrics`] counts for Prometheus.
//!
//! [`start`] loads the model ([`ServeConfig`]), starts the engine thread and serves until
//! [`RunningServer::shutdown`]; `metis serve` is a thin CLI over it.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod routes;
mod server;
pub mod system_prompt;

pub use config::ServeConfig;
pub use error::{ApiError, ServeError};
pub use server::{start, RunningServer};
