//! The client's errors: [`ClientError`] (what a call returns, with whether another attempt may
//! succeed) and the classification of a failed HTTP exchange into one.

use std::time::Duration;

use reqwest::Url;

/// Maximum number of characters of an error body kept in [`ClientError::Http`].
pub const ERROR_BODY_MAX_CHARS: usize = 500;

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

    pub(super) fn at(self, url: &Url) -> ClientError {
        ClientError::At {
            url: url.to_string(),
            error: Box::new(self),
        }
    }

    /// A body that is not the JSON expected, quoting its start.
    pub(super) fn malformed(e: &serde_json::Error, body: &[u8]) -> ClientError {
        ClientError::Malformed(format!("{e}; body starts: {}", quote_start(body)))
    }

    /// A request that cannot be serialised (it never can fail for the wire types; kept typed
    /// rather than unwrapped).
    pub(super) fn serialising(e: serde_json::Error) -> ClientError {
        ClientError::Malformed(format!("serialising request: {e}"))
    }
}

pub(super) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// Error of one attempt plus the server's requested wait, if any.
pub(super) struct AttemptError {
    pub error: ClientError,
    pub retry_after: Option<Duration>,
}

impl From<ClientError> for AttemptError {
    fn from(error: ClientError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// A failed exchange as a [`ClientError`]: timeouts, HTTP statuses, else a transport error
/// with its whole source chain.
pub(super) fn classify_reqwest(e: reqwest::Error) -> AttemptError {
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

/// The first 200 characters of a body, quoted, for error messages.
pub(super) fn quote_start(body: &[u8]) -> String {
    format!("{:?}", truncate_chars(&String::from_utf8_lossy(body), 200))
}

/// `s` cut to `max` characters (never inside one), with `…` when cut.
pub(super) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn truncation_is_char_safe() {
        let s = "é".repeat(600);
        let t = truncate_chars(&s, ERROR_BODY_MAX_CHARS);
        assert_eq!(t.chars().count(), ERROR_BODY_MAX_CHARS + 1);
        assert_eq!(truncate_chars("abc", 5), "abc");
    }
}
