//! Shared helpers of the server integration tests: fixture paths and a server on a random
//! loopback port.

#![allow(dead_code)]

use std::path::PathBuf;

use metis_serve::{RunningServer, ServeConfig};

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

/// Config for the tiny Llama-3.1 fixture (full Llama 3 vocabulary and chat template) on a
/// random loopback port, without audit log.
pub fn config() -> ServeConfig {
    let mut c = ServeConfig::new(fixtures().join("llama31-tiny-v128k/f32"));
    c.tokenizer_dir = Some(fixtures().join("llama31-tokenizer"));
    c.port = 0;
    c.served_model_name = Some("metis-tiny".into());
    c
}

pub async fn start(config: ServeConfig) -> RunningServer {
    metis_serve::start(config).await.expect("server starts")
}

pub fn url(s: &RunningServer, path: &str) -> String {
    format!("http://{}{path}", s.addr)
}

/// POSTs a raw body and returns (status, parsed JSON body or Null).
pub async fn post_raw(
    s: &RunningServer,
    path: &str,
    body: impl Into<reqwest::Body>,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(url(s, path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

pub async fn post(
    s: &RunningServer,
    path: &str,
    body: &serde_json::Value,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    post_raw(s, path, body.to_string(), key).await
}

/// Asserts OpenAI's error shape and returns the error object.
pub fn error_of(body: &serde_json::Value) -> &serde_json::Value {
    let e = &body["error"];
    assert!(e["message"].is_string(), "no error.message in {body}");
    assert!(e["type"].is_string(), "no error.type in {body}");
    let obj = e.as_object().expect("error object");
    assert!(
        obj.contains_key("param") && obj.contains_key("code"),
        "{body}"
    );
    e
}
