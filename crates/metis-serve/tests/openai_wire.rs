//! The server and `metis-openai` on both ends of the wire: the Metis client reads what the
//! server writes (chat with its guard checks, completions, the model list, streamed chunks as
//! `wire` types), and the remote guard goes through the client, so a failed check is retried
//! before the server fails closed.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use metis_engine::chat::Message;
use metis_openai::fake_server::{FakeRequest, FakeServer, Fault, Scripted};
use metis_openai::wire::{ChatCompletionChunk, Completion};
use metis_openai::{
    ChatMessage, ChatRequest, Client, ClientError, Endpoint, GenParams, RetryPolicy,
    TextCompletionRequest,
};
use metis_serve::guard::{Guard, GuardBackend, GuardError, RemoteGuard, CATEGORIES};
use serde_json::json;

/// Judges input checks whose prompt contains `BADINPUT` as `unsafe\nS2`, all else safe.
struct Trigger;

impl GuardBackend for Trigger {
    fn complete<'a>(
        &'a self,
        prompt: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, GuardError>> + Send + 'a>> {
        let input_check = !prompt.contains("ONLY THE LAST Agent");
        let reply = if input_check && prompt.contains("BADINPUT") {
            "unsafe\nS2"
        } else {
            "safe"
        };
        Box::pin(async move { Ok(reply.to_owned()) })
    }
}

fn guard(backend: Arc<dyn GuardBackend>) -> Guard {
    Guard {
        backend,
        categories: CATEGORIES.to_vec(),
        check_input: true,
        check_output: true,
        include_reasoning: false,
    }
}

fn client(s: &metis_serve::RunningServer) -> Client {
    Client::new(
        vec![Endpoint::new(common::url(s, "/v1"))],
        RetryPolicy::default(),
    )
    .unwrap()
}

fn chat(content: &str) -> ChatRequest {
    ChatRequest {
        model: "metis-tiny".into(),
        messages: vec![ChatMessage::user(content)],
        params: GenParams {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 6,
            seed: Some(1),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metis_client_reads_what_the_server_writes() {
    let mut config = common::config();
    config.guard = Some(guard(Arc::new(Trigger)));
    let s = common::start(config).await;
    let c = client(&s);

    let ok = c.chat(&chat("What is XSS?")).await.unwrap();
    assert_eq!(ok.attempts, 1);
    assert!(ok.prompt_tokens.unwrap() > 0);
    // The random fixture may end early, never past `max_tokens`.
    assert!(ok.completion_tokens.unwrap() <= 6, "{ok:?}");
    let stages: Vec<(&str, bool)> = ok
        .guard
        .iter()
        .map(|g| (g.stage.as_str(), g.safe))
        .collect();
    assert_eq!(stages, vec![("input", true), ("output", true)]);

    let blocked = c.chat(&chat("help me BADINPUT a bank")).await.unwrap();
    assert_eq!(blocked.finish_reason.as_deref(), Some("content_filter"));
    assert_eq!(blocked.completion_tokens, Some(0));
    assert_eq!(blocked.guard.len(), 1);
    assert_eq!(
        (
            blocked.guard[0].stage.as_str(),
            blocked.guard[0].safe,
            blocked.guard[0].categories.clone()
        ),
        ("input", false, vec!["S2".to_string()])
    );
    assert!(
        blocked.content.contains("S2: Non-Violent Crimes"),
        "{blocked:?}"
    );

    let text = c
        .text_completion(&TextCompletionRequest {
            model: "metis-tiny".into(),
            prompt: "The capital of France is".into(),
            temperature: 0.0,
            max_tokens: 4,
        })
        .await
        .unwrap();
    assert!(
        matches!(text.finish_reason.as_deref(), Some("length" | "stop")),
        "{text:?}"
    );
    assert_eq!(
        c.list_models().await.unwrap(),
        vec!["metis-tiny".to_string()]
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_read_as_wire_types() {
    let s = common::start(common::config()).await;
    let sse = |path: &'static str, body: serde_json::Value| {
        let url = common::url(&s, path);
        async move {
            let text = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let data: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
                .collect();
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
            data[..data.len() - 1].to_vec()
        }
    };
    let events = sse(
        "/v1/chat/completions",
        json!({"model": "metis-tiny", "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 5, "temperature": 0, "ignore_eos": true, "stream": true,
               "stream_options": {"include_usage": true}}),
    )
    .await;
    let chunks: Vec<ChatCompletionChunk> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
    // Every chunk but the last says `usage: null`; the last has no choice and the counts.
    let (last, rest) = chunks.split_last().unwrap();
    assert!(rest.iter().all(|c| c.usage == Some(None)));
    assert!(last.choices.is_empty());
    assert_eq!(last.usage.unwrap().unwrap().completion_tokens, Some(5));
    let finish: Vec<&str> = rest
        .iter()
        .filter_map(|c| c.choices[0].finish_reason.as_deref())
        .collect();
    assert_eq!(finish, vec!["length"]);

    let events = sse(
        "/v1/completions",
        json!({"model": "metis-tiny", "prompt": "hi", "max_tokens": 3, "temperature": 0,
               "ignore_eos": true, "stream": true}),
    )
    .await;
    let chunks: Vec<Completion> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c.usage.is_none()));
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason.as_deref(),
        Some("length")
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_guard_retries_a_failed_check() {
    let server = FakeServer::start(Arc::new(|req: &FakeRequest, attempt: u64| {
        assert!(req.completion, "the guard sends a raw completion");
        if attempt == 1 {
            Err(Fault::ServerError)
        } else {
            Ok(Scripted::text("unsafe\nS2"))
        }
    }))
    .await
    .unwrap();
    let remote = RemoteGuard::new(&server.base_url, "llama-guard-3", None).unwrap();
    let v = guard(Arc::new(remote))
        .moderate_input(&[Message::user("how do I pick a lock")])
        .await
        .unwrap();
    assert!(!v.safe);
    assert_eq!(v.categories, vec!["S2".to_string()]);
    let log = server.request_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].1, Err("ServerError".to_string()));
    assert_eq!(log[1].1, Ok(()));
    let sent = &log[1].0;
    assert_eq!(sent.model, "llama-guard-3");
    assert_eq!((sent.temperature, sent.max_tokens), (0.0, 20));
    assert!(sent.last_user().contains("'User' messages"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_guard_fails_closed_after_its_attempts_and_at_once_on_a_client_error() {
    let server = FakeServer::start(Arc::new(|req: &FakeRequest, _: u64| {
        if req.last_user().contains("REFUSE") {
            Err(Fault::Http {
                status: 400,
                body: "prompt too long".into(),
            })
        } else {
            Err(Fault::ServerError)
        }
    }))
    .await
    .unwrap();
    let remote = RemoteGuard::new(&server.base_url, "g", None).unwrap();
    let err = remote.complete("judge this").await.unwrap_err();
    let GuardError::Backend(e) = &err else {
        panic!("expected a backend error, got {err:?}");
    };
    assert!(matches!(e, ClientError::At { .. }), "{e}");
    assert_eq!(e.http_status(), Some(500));
    assert_eq!(
        server.total_requests(),
        3,
        "three attempts, then fail closed"
    );

    let err = remote.complete("REFUSE this").await.unwrap_err();
    assert!(err.to_string().contains("prompt too long"), "{err}");
    assert_eq!(server.total_requests(), 4, "a 400 is not retried");
    assert!(matches!(
        RemoteGuard::new("localhost:8001", "g", None),
        Err(GuardError::Backend(ClientError::BadUrl(_)))
    ));
    server.shutdown().await;
}
