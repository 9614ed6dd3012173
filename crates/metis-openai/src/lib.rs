//! The OpenAI-compatible protocol as Metis speaks it, on both sides of the wire.
//!
//! - [`wire`]: the JSON, once: chat and completion requests and responses (streamed chunks
//!   included), model lists, error bodies and vLLM's LoRA admin bodies, each
//!   `Serialize + Deserialize`, with the extensions Metis relies on (`reasoning_content` /
//!   `reasoning`, `metis_guard`, vLLM's token-id completions and log-probabilities).
//! - [`client`]: [`Client`], which sends [`ChatRequest`]s, [`TextCompletionRequest`]s and
//!   [`TokenCompletionRequest`]s to one or more replica [`Endpoint`]s (least loaded first),
//!   retries under a [`RetryPolicy`] (backoff or the server's `Retry-After`), and loads LoRA
//!   adapters on every vLLM replica; failures are [`ClientError`]s.
//! - `fake_server` (feature `fake-server`): `fake_server::FakeServer`, an in-process server
//!   scripted per request for tests and benches, with the faults real servers have.
//!
//! Data flows from a caller's request through [`client`] into [`wire`] JSON, to a server
//! (vLLM, llama.cpp, OpenAI, `metis serve`, the fake server), and back through [`wire`] into a
//! [`ChatResponse`] (or completions) carrying the call's attempts, latency and replica.
//! `metis serve` writes its responses with the same [`wire`] types, and `metis-eval`,
//! `metis-train` and `metis-safety` query models through the [`Client`].

pub mod client;
#[cfg(feature = "fake-server")]
pub mod fake_server;
pub mod wire;

pub use client::{
    parse_retry_after, ChatLogprobsResponse, ChatRequest, ChatResponse, Client, ClientError,
    Endpoint, GenParams, RetryPolicy, TextCompletionRequest, TextCompletionResponse,
    TokenCompletion, TokenCompletionRequest, TokenCompletionResponse, ERROR_BODY_MAX_CHARS,
    RETRY_AFTER_HARD_CAP,
};
pub use wire::{ChatMessage, GuardCheck, TokenLogprobs, TopLogprob};
