//! Error types: [`ServeError`] for starting the server and loading its parts, and
//! [`ApiError`], an HTTP error rendered in OpenAI's shape
//! `{"error":{"message","type","param","code"}}` (`metis_openai::wire::ErrorResponse`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metis_openai::wire::{ErrorCode, ErrorObject, ErrorResponse};

/// Errors while configuring or starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A configuration value is invalid (bad flag, unreadable key file line, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// Listening beyond loopback requires API keys.
    #[error(
        "refusing to listen on {0} without API keys: binding beyond loopback exposes the model \
         to the network; give --api-keys FILE or METIS_API_KEYS, or bind 127.0.0.1"
    )]
    InsecureBind(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] metis_engine::model::EngineError),
    #[error(transparent)]
    Tokenizer(#[from] metis_engine::tokenizer::TokenizerError),
    #[error(transparent)]
    Chat(#[from] metis_engine::chat::ChatError),
    #[error(transparent)]
    Load(#[from] metis_engine::loader::LoadError),
    #[error("audit log: {0}")]
    Audit(#[from] rusqlite::Error),
    #[error("guard: {0}")]
    Guard(#[from] crate::guard::GuardError),
    #[error("server: {0}")]
    Server(std::io::Error),
}

/// An OpenAI-style API error with its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI `type`: `invalid_request_error`, `authentication_error`, `rate_limit_error`, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the offending parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::bad_request(message).with_param(param)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
            .with_code("invalid_api_key")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    pub fn too_many(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message).with_code(code)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body, also used for errors sent inside an SSE stream.
    pub fn body(&self) -> String {
        serde_json::to_string(&ErrorResponse {
            error: ErrorObject {
                message: self.message.clone(),
                kind: self.kind.to_owned(),
                param: self.param.clone(),
                code: self.code.map(|c| ErrorCode::Name(c.to_owned())),
            },
        })
        .unwrap_or_else(|_| {
            String::from(
                r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#,
            )
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // Clients (the openai SDK among them) honour Retry-After for their back-off.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}
