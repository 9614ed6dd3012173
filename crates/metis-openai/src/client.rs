//! OpenAI-compatible client (vLLM, llama.cpp `llama-server`, Ollama, OpenAI, `metis serve`):
//! chat completions ([`Client::chat`]); for a logprob judge, chat completions with the top
//! log-probabilities of each token ([`Client::chat_logprobs`]); plain-text completions for
//! classifier judges and guards ([`Client::text_completion`]); and what an RL trainer needs
//! from a vLLM fleet: token-level completions with per-token log-probabilities
//! ([`Client::token_completions`]) and LoRA adapters hot-loaded on every replica
//! ([`Client::load_lora_adapter`], [`Client::unload_lora_adapter`]).
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
//!
//! The module is split by concern: [`types`] (requests and responses in the caller's terms),
//! `error`, `pool` (replicas and the choice among them), `retry` (policy and loop),
//! `retry_after` (the server's requested wait), `chat`, `completions` (text and token ids) and
//! `vllm` (adapter and model administration).

mod chat;
mod completions;
mod error;
mod pool;
mod retry;
mod retry_after;
pub mod types;
mod vllm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};

pub use error::{ClientError, ERROR_BODY_MAX_CHARS};
pub use retry::{RetryPolicy, RETRY_AFTER_HARD_CAP};
pub use retry_after::parse_retry_after;
pub use types::{
    ChatLogprobsResponse, ChatRequest, ChatResponse, Endpoint, GenParams, TextCompletionRequest,
    TextCompletionResponse, TokenCompletion, TokenCompletionRequest, TokenCompletionResponse,
};

use pool::Pool;

struct Inner {
    http: reqwest::Client,
    pool: Pool,
    retry: RetryPolicy,
}

/// Cheap to clone (`Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("retry", &self.inner.retry)
            .finish()
    }
}

impl Client {
    /// Builds the client. Fails with [`ClientError::NoEndpoints`] on an empty list and
    /// [`ClientError::BadUrl`] on a URL that is not absolute `http(s)` (or an API key that
    /// cannot be sent as a header).
    pub fn new(endpoints: Vec<Endpoint>, retry: RetryPolicy) -> Result<Self, ClientError> {
        let pool = Pool::new(endpoints)?;
        let http = http_client(&retry)?;
        Ok(Self {
            inner: Arc::new(Inner { http, pool, retry }),
        })
    }

    /// The configured endpoints' base URLs (normalised, without trailing `/`).
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .pool
            .endpoints()
            .iter()
            .map(|e| e.base_url.clone())
            .collect()
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }
}

/// The one HTTP client behind every replica: JSON bodies, a large keep-alive pool (a harness
/// keeps hundreds of requests in flight), Nagle off, and a connect timeout no longer than an
/// attempt's.
fn http_client(retry: &RetryPolicy) -> Result<reqwest::Client, ClientError> {
    let mut default_headers = HeaderMap::new();
    default_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reqwest::Client::builder()
        .default_headers(default_headers)
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .connect_timeout(retry.request_timeout.min(Duration::from_secs(30)))
        .user_agent(concat!("metis-openai/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Transport(format!("building HTTP client: {e}")))
}

/// Milliseconds since `start`, saturating.
fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis().min(u64::MAX as u128) as u64
}

const _: () = {
    const fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Client>();
    assert_traits::<ClientError>();
};

#[cfg(test)]
mod tests {
    use super::*;

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
}
