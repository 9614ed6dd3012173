//! The small handlers: `/v1/models`, `/health`, `/metrics` and the unknown-route fallback.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use metis_openai::wire;

use super::access::authenticate;
use super::AppState;
use crate::error::ApiError;

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("unknown route").with_code("not_found")
}

pub(super) async fn health() -> &'static str {
    "ok"
}

pub(super) async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&st, &headers) {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

pub(super) async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
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
