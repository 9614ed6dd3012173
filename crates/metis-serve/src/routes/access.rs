//! Who may call: the API-key check and the caller's rate limit.

use axum::http::{header, HeaderMap};

use super::AppState;
use crate::error::ApiError;

/// The key id of the caller (None when the server has no keys: loopback only).
pub(super) fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
pub(super) fn admit(st: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let id = authenticate(st, headers)?;
    if !st.limiter.allow(id.as_deref().unwrap_or("")) {
        return Err(ApiError::too_many(
            "rate limit exceeded for this API key; retry later",
            "rate_limit_exceeded",
        ));
    }
    Ok(id)
}
